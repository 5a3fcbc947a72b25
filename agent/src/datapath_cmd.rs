//! `cipherlane-agent datapath ...`: programs a given desired input (local node, peers, keys) from
//! a JSON state file, so the real netlink adapter can be exercised before (and apart from) the
//! key exchange. Wiring only: the layout and plan come from `cipherlane-datapath`, the kernel
//! I/O from `cipherlane-xfrm`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cipherlane_datapath::{
    adopt_keys, desired_state, hash_thresholds, parse_xfrm_stat, plan, render_metrics,
    MetricsInput, StateFile,
};
use cipherlane_xfrm::{diagnose_missing_support, read_kernel_config, Kernel};
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Subcommand, Debug)]
pub enum DatapathCommand {
    /// Program the kernel to match a state file (adopting kernel SAs of peers given without keys).
    Apply(ApplyArgs),
    /// Print the datapath metrics (Prometheus text) for a state file's peers.
    Metrics(StateArg),
    /// Check that the kernel can do ESP; prints one line naming what is missing if not.
    Probe,
}

#[derive(Args, Debug)]
pub struct StateArg {
    /// JSON state file (see cipherlane_datapath::state_file).
    #[arg(long)]
    pub state: PathBuf,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[arg(long)]
    pub state: PathBuf,
    /// Keep running: re-apply when the file changes, print SA expiry events, serve /metrics.
    #[arg(long)]
    pub hold: bool,
    /// With --hold: address for Prometheus /metrics.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// Exit code when the kernel cannot do ESP (the agent stays not ready, installs nothing).
pub const EXIT_NO_ESP: i32 = 3;

fn read_state(path: &Path) -> anyhow::Result<StateFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading state file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing state file {}", path.display()))
}

async fn probe(kernel: &Kernel, file: Option<&StateFile>) -> Result<(), String> {
    let suites: Vec<cipherlane_core::Suite> = match file {
        Some(f) => {
            let mut s: Vec<_> = f
                .peers
                .iter()
                .filter_map(|p| p.keys.as_ref().map(|k| k.suite))
                .collect();
            s.sort();
            s.dedup();
            if s.is_empty() {
                s.push(Default::default());
            }
            s
        }
        None => vec![Default::default()],
    };
    let v6 = file.is_some_and(|f| f.local.node_ip.is_ipv6());
    for suite in suites {
        if let Err(failure) = kernel.probe_esp(suite, v6).await {
            let config = read_kernel_config();
            return Err(
                diagnose_missing_support(failure, config.as_deref(), suite, v6).to_string(),
            );
        }
    }
    Ok(())
}

async fn apply_once(kernel: &Kernel, file: &StateFile) -> anyhow::Result<(usize, usize, usize)> {
    let ifindex = kernel.underlay_ifindex(file.local.node_ip).await?;
    let mut input = file.to_input(ifindex)?;
    let observed = kernel.observe(&[file.local.node_ip]).await?;
    let adopted = adopt_keys(&observed.datapath, &file.peer_specs());
    for peer in input.peers.iter_mut().filter(|p| p.keys.is_none()) {
        peer.keys = adopted.get(&peer.spec.name).cloned();
    }
    let desired = desired_state(&input)?;
    kernel
        .set_hash_thresholds(
            hash_thresholds(&input, false),
            hash_thresholds(&input, true),
        )
        .await?;
    let p = plan(&desired, &observed.datapath);
    kernel.apply(&p).await?;
    Ok(p.summary())
}

async fn metrics_text(kernel: &Kernel, file: &StateFile) -> anyhow::Result<String> {
    let observed = kernel.observe(&[file.local.node_ip]).await?;
    let stat = std::fs::read_to_string("/proc/net/xfrm_stat").unwrap_or_default();
    let counters = parse_xfrm_stat(&stat)?;
    let peers = file.peer_specs();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(render_metrics(&MetricsInput {
        xfrm_stat: &counters,
        observed: &observed,
        peers: &peers,
        now_unix: now,
    }))
}

/// Runs a `datapath` subcommand; returns the process exit code.
pub async fn run(cmd: DatapathCommand) -> anyhow::Result<i32> {
    let kernel = Kernel::connect()?;
    match cmd {
        DatapathCommand::Probe => match probe(&kernel, None).await {
            Ok(()) => {
                println!("kernel supports ESP");
                Ok(0)
            }
            Err(line) => {
                eprintln!("{line}");
                Ok(EXIT_NO_ESP)
            }
        },
        DatapathCommand::Metrics(a) => {
            let file = read_state(&a.state)?;
            print!("{}", metrics_text(&kernel, &file).await?);
            Ok(0)
        }
        DatapathCommand::Apply(a) => {
            let file = read_state(&a.state)?;
            if let Err(line) = probe(&kernel, Some(&file)).await {
                eprintln!("{line}");
                return Ok(EXIT_NO_ESP);
            }
            let (add, change, del) = apply_once(&kernel, &file).await?;
            println!("applied: {add} added, {change} changed, {del} deleted");
            if !a.hold {
                return Ok(0);
            }
            hold(kernel, a).await
        }
    }
}

async fn hold(kernel: Kernel, a: ApplyArgs) -> anyhow::Result<i32> {
    let mut events = kernel.events()?;
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let cipherlane_xfrm::XfrmEvent::Expiry(e) = ev else {
                continue;
            };
            println!(
                "expire {} src {} dst {} spi {:#x}",
                if e.hard { "hard" } else { "soft" },
                e.src,
                e.dst,
                e.spi
            );
        }
    });
    if let Some(addr) = a.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics address {addr}"))?;
        let k = kernel.clone();
        let path = a.state.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let body = match read_state(&path) {
                    Ok(f) => metrics_text(&k, &f)
                        .await
                        .unwrap_or_else(|e| format!("# error: {e:#}\n")),
                    Err(e) => format!("# error: {e:#}\n"),
                };
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            }
        });
    }
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = mtime(&a.state);
    println!("holding; re-applying when {} changes", a.state.display());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(0),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let now = mtime(&a.state);
        if now != last {
            last = now;
            match read_state(&a.state) {
                Ok(file) => match apply_once(&kernel, &file).await {
                    Ok((add, change, del)) => {
                        println!("applied: {add} added, {change} changed, {del} deleted")
                    }
                    Err(e) => eprintln!("apply failed: {e:#}"),
                },
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
}

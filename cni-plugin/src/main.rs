//! `cipherlane`: the CNI plugin. The container runtime runs it with `CNI_COMMAND` and friends in
//! the environment and the network configuration on stdin (CNI spec 1.1); it prints a result or
//! a CNI error JSON on stdout, and logs to stderr and its log file.
//!
//! This file only wires: read stdin and the environment, pick the operation, print the outcome.
#![forbid(unsafe_code)]

mod commands;
mod fault;
mod ipam_store;
mod log;
mod netlink;

use std::io::{Read, Write};
use std::process::ExitCode;

use cipherlane_cni::config::{self, requested_version};
use cipherlane_cni::version::{version_result, LATEST};
use cipherlane_cni::{CniError, Command, ErrorCode, Invocation, NetConf};

const HELP: &str = "cipherlane: the Cipherlane CNI plugin (CNI spec 0.4.0, 1.0.0, 1.1.0)

Invoked by the container runtime with CNI_COMMAND (ADD, DEL, CHECK, VERSION, STATUS, GC),
CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME in the environment and the network configuration on
stdin. cipherlane-agent writes the configuration to /etc/cni/net.d/05-cipherlane.conflist once
the node encrypts; ADD fails with CNI error 50 while it does not.
";

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    if let Some(arg) = std::env::args().nth(1) {
        match arg.as_str() {
            "--version" | "-V" => println!("cipherlane {}", env!("CARGO_PKG_VERSION")),
            _ => print!("{HELP}"),
        }
        return ExitCode::SUCCESS;
    }
    let mut log = log::Log::new(String::new());
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (outcome, version) = match read {
        Err(e) => (
            Err(CniError::new(
                ErrorCode::IoFailure,
                format!("reading the network configuration from stdin: {e}"),
            )),
            LATEST.to_string(),
        ),
        Ok(_) => run(&stdin, &mut log, started),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            log.error(&e.to_string());
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// Runs one invocation; returns the stdout JSON (if any) and the cniVersion to answer with.
fn run(
    stdin: &[u8],
    log: &mut log::Log,
    started: std::time::Instant,
) -> (Result<Option<serde_json::Value>, CniError>, String) {
    let obj = config::parse_object(stdin);
    let version = obj
        .as_ref()
        .ok()
        .and_then(|o| requested_version(o).map(str::to_string))
        .unwrap_or_else(|| LATEST.to_string());
    let inv = match Invocation::from_env(|k| std::env::var(k).ok()) {
        Ok(inv) => inv,
        Err(e) => return (Err(e), version),
    };
    let attachment_text = inv
        .attachment
        .as_ref()
        .map(|a| format!(" container={} ifname={}", a.container_id, a.ifname))
        .unwrap_or_default()
        + &inv
            .pod
            .as_ref()
            .map(|p| format!(" pod={p}"))
            .unwrap_or_default();
    log.set_context(format!("{}{attachment_text}", inv.command.as_str()));
    if inv.command == Command::Version {
        return (obj.map(|_| Some(version_result(&version))), version);
    }
    let conf = match obj.and_then(|o| NetConf::from_object(&o)) {
        Ok(c) => c,
        Err(e) => return (Err(e), version),
    };
    log.open_file(conf.log_file.as_deref(), conf.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return (
                Err(CniError::new(
                    ErrorCode::IoFailure,
                    format!("starting the async runtime: {e}"),
                )),
                version,
            )
        }
    };
    let outcome = runtime.block_on(dispatch(&inv, &conf, log));
    if outcome.is_ok() {
        log.info(&format!("done in {} µs", started.elapsed().as_micros()));
    }
    (outcome, version)
}

async fn dispatch(
    inv: &Invocation,
    conf: &NetConf,
    log: &mut log::Log,
) -> Result<Option<serde_json::Value>, CniError> {
    // Invocation::from_env guarantees these for the per-attachment commands.
    let missing = || {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS are required",
        )
    };
    match inv.command {
        Command::Add => {
            let att = inv.attachment.as_ref().ok_or_else(missing)?;
            let netns = inv.netns.as_deref().ok_or_else(missing)?;
            let result = commands::add(conf, att, netns, log).await?;
            log.info(&format!(
                "wired {} with {:?}",
                netns,
                result
                    .ips
                    .iter()
                    .map(|i| i.address.to_string())
                    .collect::<Vec<_>>()
            ));
            Ok(Some(result.to_json(conf.cni_version)))
        }
        Command::Del => {
            let att = inv.attachment.as_ref().ok_or_else(missing)?;
            commands::del(conf, att, inv.netns.as_deref(), log).await?;
            Ok(None)
        }
        Command::Check => {
            let att = inv.attachment.as_ref().ok_or_else(missing)?;
            let netns = inv.netns.as_deref().ok_or_else(missing)?;
            commands::check(conf, att, netns).await?;
            Ok(None)
        }
        Command::Status => commands::status(conf).map(|()| None),
        Command::Gc => commands::gc(conf, log).await.map(|()| None),
        Command::Version => Ok(Some(version_result(conf.cni_version.as_str()))),
    }
}

//! `cipherlane-operator`: parses arguments and runs `cipherlane_operator::run::run`.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cipherlane_operator::http::{serve, Metrics};

use cipherlane_operator::run::{run, Settings};
use clap::Parser;

/// Cipherlane operator: schedules key rotations, revocations and status for RotationPolicy
/// objects, and removes the CipherlaneNodes of deleted Nodes. Several replicas may run; one
/// leads (a coordination.k8s.io Lease), the others wait.
#[derive(Parser, Debug)]
#[command(name = "cipherlane-operator", version)]
struct Args {
    /// This replica's identity in the Lease (default: $POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "cipherlane-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "cipherlane-operator")]
    lease_name: String,
    /// Seconds after which a leader that stopped renewing is replaced.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds between garbage-collection sweeps without watch events.
    #[arg(long, default_value_t = 60)]
    gc_interval_seconds: u64,
    /// Serve /healthz, /readyz and /metrics on this address (e.g. 0.0.0.0:8080); off when unset.
    #[arg(long, env = "CIPHERLANE_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Only AES-GCM suites are allowed; a policy asking for another is reported Degraded.
    #[arg(long, env = "CIPHERLANE_FIPS", default_value_t = false, action = clap::ArgAction::Set)]
    fips: bool,
    /// Log format: text or json.
    #[arg(long, env = "CIPHERLANE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = args.http_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP endpoint to {addr}"))?;
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(listener, m).await {
                tracing::error!(error = %err, "the HTTP endpoint stopped");
            }
        });
    }
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let client = kube::Client::try_default().await?;
    let settings = Settings {
        identity,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        lease_duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
        gc_interval: Duration::from_secs(args.gc_interval_seconds.max(1)),
        fips: args.fips,
        metrics,
    };
    run(client, settings, shutdown_signal()).await?;
    Ok(())
}

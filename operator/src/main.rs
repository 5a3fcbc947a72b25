//! `cipherlane-operator`: parses arguments and runs `cipherlane_operator::run::run`.
use std::time::Duration;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
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
    };
    run(client, settings, shutdown_signal()).await?;
    Ok(())
}

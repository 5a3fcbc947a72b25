//! `kubectl-cipherlane`: parses arguments and calls the library (`kubectl cipherlane ...`).
use anyhow::Context;
use cipherlane_kubectl_plugin::commands;
use cipherlane_kubectl_plugin::render::{render_status, StatusOptions};
use clap::{Parser, Subcommand};

/// Cipherlane's kubectl plugin: the encryption matrix, on-demand rotation, node revocation.
#[derive(Parser, Debug)]
#[command(name = "kubectl-cipherlane", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Policies, nodes and the node x node matrix (epoch/oldest key age), or a summary for big clusters.
    Status {
        /// Only nodes matching this label selector (e.g. topology.kubernetes.io/zone=a).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Show the matrix up to this many nodes, a summary above.
        #[arg(long, default_value_t = 20)]
        matrix_max: usize,
    },
    /// Rotate keys now: POLICY, or every policy when omitted.
    Rotate { policy: Option<String> },
    /// Revoke NODE: every peer drops its SAs with it and refuses its handshakes.
    Revoke {
        node: String,
        /// The policy to record the revocation in (default: the node's own policy).
        #[arg(long)]
        policy: Option<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (is KUBECONFIG set?)")?;
    match args.command {
        Command::Status {
            selector,
            matrix_max,
        } => {
            let snap = commands::snapshot(client, selector.as_deref()).await?;
            print!("{}", render_status(&snap, StatusOptions { matrix_max }));
        }
        Command::Rotate { policy } => {
            for name in commands::rotate(client, policy.as_deref()).await? {
                println!("rotationpolicy/{name}: rotation requested; `kubectl get rp {name} -w` shows the epoch advance");
            }
        }
        Command::Revoke { node, policy } => {
            let name = commands::revoke(client, &node, policy.as_deref()).await?;
            println!("node/{node} revoked in rotationpolicy/{name}; its peers drop their SAs with it within seconds");
        }
    }
    Ok(())
}

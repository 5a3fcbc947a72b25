//! `cipherlane-agent`: the node agent. Wires the identity, key exchange and datapath together.
use clap::{Parser, Subcommand};

/// Cipherlane node agent: node identity, pairwise key exchange, kernel IPsec datapath.
#[derive(Parser, Debug)]
#[command(name = "cipherlane-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Remove everything the agent installed in the kernel (the chart runs this on uninstall).
    Uninstall,
}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}

//! `cipherlane`: the CNI plugin. The container runtime runs it with CNI_COMMAND and friends in the
//! environment and the network config on stdin; `--help` is for people.
use clap::Parser;

/// Cipherlane CNI plugin: wires a pod into the node's encrypted pod network.
///
/// The container runtime invokes this binary with CNI_COMMAND (ADD, DEL, CHECK, VERSION, STATUS,
/// GC) in the environment and the network configuration on stdin, as the CNI spec 1.1 says.
#[derive(Parser, Debug)]
#[command(name = "cipherlane", version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    Ok(())
}

//! `cipherlane-agent`: the node agent. Parses arguments and hands over to `cipherlane-agent-runtime`.
use clap::{Parser, Subcommand};

mod datapath_cmd;
use cipherlane_agent_runtime::maintenance::{
    install_cni, uninstall, InstallCniArgs, UninstallArgs,
};
use cipherlane_agent_runtime::RunArgs;

/// Cipherlane node agent: node identity, pairwise key exchange, kernel IPsec datapath.
#[derive(Parser, Debug)]
#[command(name = "cipherlane-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent.
    Run(Box<RunArgs>),
    /// Install the CNI plugin binary into the host's CNI folder (atomically).
    InstallCni(InstallCniArgs),
    /// Remove everything the agent installed: conflist, XFRM policies/SAs, routes (the chart's uninstall hook).
    Uninstall(UninstallArgs),
    /// Program or inspect the kernel datapath directly from a state file (lab and debugging).
    #[command(subcommand)]
    Datapath(datapath_cmd::DatapathCommand),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cipherlane_agent_runtime::logging::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.command {
        Command::Run(run) => rt.block_on(cipherlane_agent_runtime::run(*run)),
        Command::InstallCni(a) => {
            let dest = install_cni(&a)?;
            println!("installed {}", dest.display());
            Ok(())
        }
        Command::Uninstall(a) => {
            println!("{}", rt.block_on(uninstall(&a))?);
            Ok(())
        }
        Command::Datapath(cmd) => {
            let code = rt.block_on(datapath_cmd::run(cmd))?;
            std::process::exit(code)
        }
    }
}

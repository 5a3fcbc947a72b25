//! The agent's one-shot commands: `install-cni` (the DaemonSet's init container) and `uninstall`
//! (the chart's pre-delete hook).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cipherlane_xfrm::Kernel;

use crate::config::NodePaths;

/// `cipherlane-agent install-cni`: copy the CNI plugin binary into the host's CNI folder atomically.
#[derive(clap::Args, Clone, Debug)]
pub struct InstallCniArgs {
    /// The plugin binary to install.
    #[arg(long, default_value = "/usr/local/bin/cipherlane")]
    pub source: PathBuf,
    /// The host's CNI binary folder.
    #[arg(long, env = "CIPHERLANE_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub dest_dir: PathBuf,
}

/// Copies to a temporary file in the destination folder, syncs it, then renames it over the old
/// binary, so a runtime never executes a half-written plugin.
pub fn install_cni(args: &InstallCniArgs) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let name = args
        .source
        .file_name()
        .context("--source has no file name")?;
    let dest = args.dest_dir.join(name);
    let tmp = args
        .dest_dir
        .join(format!(".{}.tmp", name.to_string_lossy()));
    let bytes = std::fs::read(&args.source)
        .with_context(|| format!("reading the plugin binary {}", args.source.display()))?;
    std::fs::create_dir_all(&args.dest_dir)
        .with_context(|| format!("creating {}", args.dest_dir.display()))?;
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    Ok(dest)
}

/// `cipherlane-agent uninstall`: what to remove besides the kernel state.
#[derive(clap::Args, Clone, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub paths: NodePaths,
}

fn remove_if_present(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes the conflist first (no new pod may start), then every kernel object Cipherlane
/// installed (and nothing else), the nftables fence last (it held until the XFRM state was gone),
/// then the agent-state file. Safe to run twice.
pub async fn uninstall(args: &UninstallArgs) -> anyhow::Result<String> {
    let conf = remove_if_present(&args.paths.cni_conf_dir.join(&args.paths.cni_conf_name))?;
    let kernel = Kernel::connect().context("opening netlink (uninstall needs CAP_NET_ADMIN)")?;
    let report = kernel
        .uninstall()
        .await
        .context("removing Cipherlane's XFRM state")?;
    let fence = cipherlane_xfrm::nft::remove().context("removing the nftables fence")?;
    let state = remove_if_present(&args.paths.state_dir.join("agent-state.json"))?;
    Ok(format!(
        "removed {} policies, {} SAs, {} routes; nftables fence removed: {fence}; conflist removed: {conf}; agent state removed: {state}",
        report.policies, report.states, report.routes
    ))
}

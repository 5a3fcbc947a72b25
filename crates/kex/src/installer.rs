//! The seam between the handshake and the datapath: the gRPC layer executes the state
//! machine's SA actions through [`SaInstaller`], which the agent implements with XFRM. An
//! in-memory implementation records what was asked, for tests and the benchmark.

use std::future::Future;
use std::sync::Mutex;

use cipherlane_core::{Epoch, NodeName, SaDirection, SaPair};

/// The datapath refused an SA change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("installing SA state for peer {peer} failed: {reason}")]
pub struct InstallError {
    pub peer: NodeName,
    pub reason: String,
}

/// Installs the SAs a handshake produces. Called in protocol order: `install_inbound` before
/// the peer can use the SA, `switch_outbound` only once the peer's inbound SA exists,
/// `established` when the pair is complete. Deleting old SAs after the grace period is the
/// implementor's job (it knows the policy's grace period).
pub trait SaInstaller: Send + Sync + 'static {
    /// Adds a new inbound SA (peer → local) next to the current one.
    fn install_inbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> impl Future<Output = Result<(), InstallError>> + Send;

    /// Makes `sa` the SA used to send to `peer`; the old one stays until the grace period ends.
    fn switch_outbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> impl Future<Output = Result<(), InstallError>> + Send;

    /// The pair is complete on this side.
    fn established(
        &self,
        peer: &NodeName,
        pair: &SaPair,
    ) -> impl Future<Output = Result<(), InstallError>> + Send;
}

/// One call an [`InMemoryInstaller`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerCall {
    InstallInbound(NodeName, Epoch, SaDirection),
    SwitchOutbound(NodeName, Epoch, SaDirection),
    Established(NodeName, SaPair),
}

/// Records calls in order; optionally refuses inbound installs or outbound switches (to test
/// failure paths).
#[derive(Debug, Default)]
pub struct InMemoryInstaller {
    calls: Mutex<Vec<InstallerCall>>,
    fail_inbound: Mutex<bool>,
    fail_outbound: Mutex<bool>,
}

impl InMemoryInstaller {
    pub fn new() -> InMemoryInstaller {
        InMemoryInstaller::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<InstallerCall> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The last pair established with `peer`.
    pub fn established_pair(&self, peer: &NodeName) -> Option<SaPair> {
        self.calls().into_iter().rev().find_map(|c| match c {
            InstallerCall::Established(p, pair) if &p == peer => Some(pair),
            _ => None,
        })
    }

    /// Makes every later `install_inbound` fail.
    pub fn fail_inbound_installs(&self) {
        *self
            .fail_inbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }

    /// Makes every later `switch_outbound` fail.
    pub fn fail_outbound_switches(&self) {
        *self
            .fail_outbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }

    fn record(&self, call: InstallerCall) {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(call);
    }
}

impl SaInstaller for InMemoryInstaller {
    async fn install_inbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> Result<(), InstallError> {
        if *self
            .fail_inbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            return Err(InstallError {
                peer: peer.clone(),
                reason: "refused by the test installer".into(),
            });
        }
        self.record(InstallerCall::InstallInbound(
            peer.clone(),
            epoch,
            sa.clone(),
        ));
        Ok(())
    }

    async fn switch_outbound(
        &self,
        peer: &NodeName,
        epoch: Epoch,
        sa: &SaDirection,
    ) -> Result<(), InstallError> {
        if *self
            .fail_outbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            return Err(InstallError {
                peer: peer.clone(),
                reason: "refused by the test installer".into(),
            });
        }
        self.record(InstallerCall::SwitchOutbound(
            peer.clone(),
            epoch,
            sa.clone(),
        ));
        Ok(())
    }

    async fn established(&self, peer: &NodeName, pair: &SaPair) -> Result<(), InstallError> {
        self.record(InstallerCall::Established(peer.clone(), pair.clone()));
        Ok(())
    }
}

//! The initiator side: runs a handshake with a peer over one bidirectional stream, on a
//! connection kept per peer address and reused, and executes the state machine's actions
//! through the `SaInstaller` in protocol order. Also the retry loop (backoff with jitter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cipherlane_core::{NodeName, SaPair};
use cipherlane_kex::{
    Action, Endpoint, InstallError, KexError, RejectionKind, RetrySchedule, SaInstaller,
};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

use crate::proto::key_exchange_client::KeyExchangeClient;
use crate::proto::Frame;
use crate::status::rejection_label;
use crate::MAX_GRPC_MESSAGE;

/// Client tunables.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// TCP connect timeout to a peer.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive interval on idle connections.
    pub keepalive: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            keepalive: Duration::from_secs(30),
        }
    }
}

/// Why a handshake this node started did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake refused locally: {0}")]
    Local(#[from] KexError),
    #[error("peer {peer} refused the handshake ({code:?}): {message}")]
    Rejected {
        peer: NodeName,
        code: tonic::Code,
        kind: Option<RejectionKind>,
        message: String,
    },
    #[error("cannot reach the key exchange of peer {peer} at {addr}: {reason}")]
    Unreachable {
        peer: NodeName,
        addr: String,
        reason: String,
    },
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The confirm was sent and the outbound SA switched, but the peer did not acknowledge; the
    /// pair is usable in our direction only. Keep the old inbound SA and handshake again.
    #[error("peer {peer} did not acknowledge the confirm: {reason}")]
    Unconfirmed {
        peer: NodeName,
        pair: Box<SaPair>,
        reason: String,
    },
}

impl HandshakeError {
    /// The handshake did not start because another one of the same pair is in flight (locally, or
    /// the peer's own, which wins): not a failure, that other handshake keys the pair.
    pub fn is_collision(&self) -> bool {
        match self {
            HandshakeError::Local(e) => e.kind() == RejectionKind::Collision,
            HandshakeError::Rejected { kind, .. } => *kind == Some(RejectionKind::Collision),
            _ => false,
        }
    }

    /// Whether the retry loop should try again.
    pub fn is_retryable(&self) -> bool {
        match self {
            HandshakeError::Local(e) => e.is_transient(),
            HandshakeError::Rejected { kind, code, .. } => match kind {
                Some(k) => !matches!(
                    k,
                    RejectionKind::Reflection
                        | RejectionKind::Misdirected
                        | RejectionKind::Revoked
                        | RejectionKind::Collision
                ),
                None => *code != tonic::Code::Unimplemented,
            },
            HandshakeError::Unreachable { .. }
            | HandshakeError::Install(_)
            | HandshakeError::Unconfirmed { .. } => true,
        }
    }
}

/// Starts handshakes with peers. Cheap to share (`Arc`); one connection per peer address.
pub struct KexClient<I> {
    endpoint: Arc<Endpoint>,
    installer: Arc<I>,
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
    rng: SystemRandom,
}

impl<I: SaInstaller> KexClient<I> {
    pub fn new(endpoint: Arc<Endpoint>, installer: Arc<I>, config: ClientConfig) -> KexClient<I> {
        KexClient {
            endpoint,
            installer,
            config,
            channels: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The (lazily connecting, reused) channel to `addr` (`host:port`).
    fn channel(&self, peer: &NodeName, addr: &str) -> Result<Channel, HandshakeError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| HandshakeError::Unreachable {
                peer: peer.clone(),
                addr: addr.to_string(),
                reason: format!("bad address: {e}"),
            })?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(self.config.keepalive)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// Forgets the connection to `addr` (the peer moved or is gone).
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(addr);
    }

    /// One handshake with `peer` at `addr`. On success the new pair is installed on this side
    /// (inbound installed, outbound switched) and the peer acknowledged its switch.
    pub async fn handshake(&self, peer: &NodeName, addr: &str) -> Result<SaPair, HandshakeError> {
        let channel = self.channel(peer, addr)?;
        let ep = &self.endpoint;
        let step_timeout = ep.config().step_timeout;
        let (initiator, actions) = ep.initiate(peer)?;
        let (tx, rx) = mpsc::channel::<Frame>(2);
        for action in actions {
            if let Action::Send(message) = action {
                // The channel has room for two frames and this is the first.
                let _ = tx.try_send(Frame { message });
            }
        }
        let mut client = KeyExchangeClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let unreachable = |reason: String| HandshakeError::Unreachable {
            peer: peer.clone(),
            addr: addr.to_string(),
            reason,
        };
        let rejected = |status: Status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown
                if rejection_label(&status).is_none() =>
            {
                unreachable(status.message().to_string())
            }
            code => HandshakeError::Rejected {
                peer: peer.clone(),
                code,
                kind: rejection_label(&status),
                message: status.message().to_string(),
            },
        };
        let first = tokio::time::timeout(step_timeout, async {
            let mut inbound = client
                .handshake(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let frame = inbound.message().await?;
            Ok::<_, Status>((inbound, frame))
        })
        .await;
        let (mut inbound, frame) = match first {
            Ok(Ok((inbound, Some(frame)))) => (inbound, frame),
            Ok(Ok((_, None))) => {
                initiator.abandon(ep);
                return Err(unreachable(
                    "the peer ended the stream without a response".into(),
                ));
            }
            Ok(Err(status)) => {
                initiator.abandon(ep);
                return Err(rejected(status));
            }
            Err(_) => return Err(initiator.abandon(ep).into()),
        };
        // `_pair` keeps this pair's other handshakes out until this one is fully done
        let (actions, _pair) = initiator.on_response_guarded(ep, &frame.message)?;
        let mut pair = None;
        for action in actions {
            match action {
                Action::InstallInbound { peer, epoch, sa } => {
                    self.installer.install_inbound(&peer, epoch, &sa).await?
                }
                Action::SwitchOutbound { peer, epoch, sa } => {
                    self.installer.switch_outbound(&peer, epoch, &sa).await?
                }
                Action::Send(message) => {
                    let _ = tx.send(Frame { message }).await;
                }
                Action::Established { pair: p, .. } => pair = Some(p),
            }
        }
        drop(tx);
        let pair = pair.ok_or_else(|| {
            HandshakeError::Local(KexError::Timeout {
                peer: peer.clone(),
                step: "state machine produced no pair",
            })
        })?;
        let unconfirmed = |reason: String| HandshakeError::Unconfirmed {
            peer: peer.clone(),
            pair: Box::new(pair.clone()),
            reason,
        };
        match tokio::time::timeout(step_timeout, inbound.message()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(_))) => {
                return Err(unconfirmed("unexpected frame after the response".into()))
            }
            Ok(Err(status)) => return Err(unconfirmed(status.message().to_string())),
            Err(_) => {
                return Err(unconfirmed(format!(
                    "no acknowledgement within {step_timeout:?}"
                )))
            }
        }
        self.installer.established(peer, &pair).await?;
        Ok(pair)
    }

    /// Handshakes until success, a non-retryable refusal, or the schedule's last attempt;
    /// waits between attempts with exponential backoff and jitter.
    pub async fn handshake_with_retry(
        &self,
        peer: &NodeName,
        addr: &str,
        schedule: &RetrySchedule,
    ) -> Result<SaPair, HandshakeError> {
        let mut retry = 0;
        loop {
            let err = match self.handshake(peer, addr).await {
                Ok(pair) => return Ok(pair),
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let mut jitter = [0u8; 8];
            let _ = self.rng.fill(&mut jitter);
            let Some(delay) = schedule.delay(retry, u64::from_be_bytes(jitter)) else {
                return Err(err);
            };
            tracing::info!(%peer, addr, retry, ?delay, error = %err, "handshake failed; retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

//! The handshake state machine: an [`Endpoint`] per node, an [`Initiator`] or [`Responder`] per
//! handshake in flight. Inputs are message bytes; outputs are [`Action`]s the caller executes in
//! order (send bytes, install an inbound SA, switch the outbound SA, report the pair).
//!
//! ```text
//!  Initiator                                     Responder
//!  initiate() ── Send(init) ───────────────────> respond(init)
//!                                                  InstallInbound(i→r SA)
//!  on_response(resp) <──────────── Send(resp) ──┘
//!    InstallInbound(r→i SA)
//!    SwitchOutbound(i→r SA)
//!    Send(confirm) ────────────────────────────> on_confirm(confirm)
//!    Established(pair)                             SwitchOutbound(r→i SA)
//!                                                  Established(pair)
//! ```
//!
//! The endpoint's shared state (nonce cache, rate limits, SPIs in use) sits behind short
//! mutexes; all cryptography runs outside them, so handshakes proceed in parallel.
//! Every refusal is logged once, counted in [`KexMetrics`] and returned as a [`KexError`].
//!
//! The group and the wire version of a handshake follow from the directory alone
//! ([`crate::negotiate`]): version 1 (X25519) with a peer that publishes no groups (the previous
//! release), version 2 with the selected group otherwise. Nothing the network says can change
//! that choice, and a failed hybrid handshake is retried as a hybrid one.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cipherlane_core::{Epoch, KexGroup, NodeName, SaDirection, SaPair, Spi, Suite};
use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

use crate::clock::Clock;
use crate::directory::{PeerDirectory, PeerEntry};
use crate::error::{GroupRefusal, KexError, KexMetrics};
use crate::negotiate::{self, effective, same_groups};
use crate::pacing::{ConcurrencyLimit, HandshakeSlot, PairGuard, PairGuards, PeerRateLimit};
use crate::replay::{Freshness, NonceCache};
use crate::schedule::{self, KeyContext, Keys, TranscriptHash};
use crate::share::{self, InitiatorShare, ShareError, SharedSecret};
use crate::spi::SpiAllocator;
use crate::wire::{
    group_codes, known_groups, Confirm, DecodeError, Init, Response, Version, EPHEMERAL_LEN,
    MAC_LEN, NONCE_LEN,
};

/// Tunables of an endpoint. The defaults suit a production cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct KexConfig {
    /// Inits whose timestamp is further than this from the local clock are refused.
    pub freshness_window: Duration,
    /// Each step (waiting for the response, waiting for the confirm) must finish within this.
    pub step_timeout: Duration,
    /// At most this many nonces are remembered.
    pub nonce_cache_capacity: usize,
    /// Handshakes in flight on this node, both roles together.
    pub max_concurrent_handshakes: usize,
    /// Responder's per-peer rate: tokens per second and burst.
    pub peer_rate_per_second: f64,
    pub peer_rate_burst: u32,
    /// The key-exchange groups this node supports and publishes, strongest first; by default
    /// every group the build implements ([`share::SUPPORTED_GROUPS`]).
    pub groups: Vec<KexGroup>,
}

impl Default for KexConfig {
    fn default() -> Self {
        KexConfig {
            freshness_window: Duration::from_secs(30),
            step_timeout: Duration::from_secs(5),
            nonce_cache_capacity: 1 << 16,
            max_concurrent_handshakes: 64,
            peer_rate_per_second: 1.0,
            peer_rate_burst: 5,
            groups: share::SUPPORTED_GROUPS.to_vec(),
        }
    }
}

/// What the caller must do next, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to the peer (on the handshake's stream).
    Send(Vec<u8>),
    /// Install a new inbound SA (peer → local) beside the current one.
    InstallInbound {
        peer: NodeName,
        epoch: Epoch,
        sa: SaDirection,
    },
    /// Start sending to the peer with this SA.
    SwitchOutbound {
        peer: NodeName,
        epoch: Epoch,
        sa: SaDirection,
    },
    /// The handshake is complete on this side.
    Established { peer: NodeName, pair: SaPair },
}

/// One node's key-exchange endpoint: identity, peers, and the replay/rate/SPI state.
pub struct Endpoint {
    local: NodeName,
    identity: Ed25519KeyPair,
    directory: Arc<dyn PeerDirectory>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn SecureRandom + Send + Sync>,
    config: KexConfig,
    nonces: Mutex<NonceCache>,
    rate: Mutex<PeerRateLimit>,
    spis: Mutex<SpiAllocator>,
    slots: ConcurrencyLimit,
    pairs: PairGuards,
    metrics: KexMetrics,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.local)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks cannot leave the data half-updated in a
    // way that matters more than refusing service; keep going with the inner value.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Endpoint {
    pub fn new(
        local: NodeName,
        identity: Ed25519KeyPair,
        directory: Arc<dyn PeerDirectory>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn SecureRandom + Send + Sync>,
        config: KexConfig,
    ) -> Endpoint {
        Endpoint {
            nonces: Mutex::new(NonceCache::new(
                config.freshness_window,
                config.nonce_cache_capacity,
            )),
            rate: Mutex::new(PeerRateLimit::new(
                config.peer_rate_per_second,
                config.peer_rate_burst,
            )),
            spis: Mutex::new(SpiAllocator::new()),
            slots: ConcurrencyLimit::new(config.max_concurrent_handshakes),
            pairs: PairGuards::default(),
            metrics: KexMetrics::default(),
            local,
            identity,
            directory,
            clock,
            rng,
            config,
        }
    }

    pub fn local(&self) -> &NodeName {
        &self.local
    }

    /// This node's identity public key (what its CipherlaneNode publishes).
    pub fn identity_public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.identity.public_key().as_ref());
        out
    }

    pub fn config(&self) -> &KexConfig {
        &self.config
    }

    pub fn metrics(&self) -> &KexMetrics {
        &self.metrics
    }

    /// Marks an SPI as in use (an SA adopted from the kernel on start).
    pub fn reserve_spi(&self, spi: Spi) -> bool {
        lock(&self.spis).reserve(spi)
    }

    /// Frees an SPI once the agent deleted its SA.
    pub fn release_spi(&self, spi: Spi) {
        lock(&self.spis).release(spi)
    }

    /// Logs and counts a refusal, then hands it back.
    fn reject(&self, role: &'static str, err: KexError) -> KexError {
        let kind = err.kind();
        self.metrics.count_rejection(kind);
        if self
            .metrics
            .should_warn(kind, self.clock.monotonic().as_secs())
        {
            tracing::warn!(
                local = %self.local,
                role,
                reason = kind.as_str(),
                error = %err,
                "key-exchange handshake rejected (further ones of this kind this second at debug)"
            );
        } else {
            tracing::debug!(
                local = %self.local,
                role,
                reason = kind.as_str(),
                error = %err,
                "key-exchange handshake rejected"
            );
        }
        err
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], KexError> {
        let mut out = [0u8; N];
        self.rng.fill(&mut out).map_err(|_| KexError::Random)?;
        Ok(out)
    }

    /// The groups this node supports (what it publishes).
    pub fn groups(&self) -> &[KexGroup] {
        &self.config.groups
    }

    /// The group a handshake with this peer uses, as both ends compute it from the directory.
    fn select_group(&self, peer: &NodeName, entry: &PeerEntry) -> Result<KexGroup, KexError> {
        let policy = &entry.policy.key_exchange;
        negotiate::select(policy, &self.config.groups, entry.groups.as_deref()).ok_or_else(|| {
            KexError::GroupNotAllowed {
                peer: peer.clone(),
                refusal: GroupRefusal::NoCommonGroup {
                    local: self.config.groups.clone(),
                    peer: entry.groups.clone(),
                    strict: policy.strict,
                },
            }
        })
    }

    /// The responder's checks of the init's group and offered groups against the directory.
    fn check_offer(&self, peer: &NodeName, init: &Init, entry: &PeerEntry) -> Result<(), KexError> {
        let mismatch = |sent: Vec<KexGroup>| KexError::GroupMismatch {
            peer: peer.clone(),
            message: if init.version == Version::V1 {
                "version-1 init"
            } else {
                "init"
            },
            sent,
            published: entry.groups.clone(),
        };
        match (init.version, &entry.groups) {
            (Version::V1, None) => {}
            (Version::V1, Some(_)) => return Err(mismatch(vec![KexGroup::X25519])),
            (Version::V2, published) => {
                let sent = known_groups(&init.offered);
                if !published.as_deref().is_some_and(|p| same_groups(&sent, p))
                    || !sent.contains(&init.group)
                {
                    return Err(mismatch(sent));
                }
            }
        }
        let refuse = |refusal| KexError::GroupNotAllowed {
            peer: peer.clone(),
            refusal,
        };
        let policy = &entry.policy.key_exchange;
        if !self.config.groups.contains(&init.group) || !share::supports(init.group) {
            return Err(refuse(GroupRefusal::Unsupported {
                offered: init.group,
                local: self.config.groups.clone(),
            }));
        }
        if !policy.allows(init.group) {
            return Err(refuse(GroupRefusal::Strict {
                offered: init.group,
            }));
        }
        let expected = self.select_group(peer, entry)?;
        if !negotiate::acceptable(policy, init.group, expected) {
            return Err(refuse(GroupRefusal::Downgrade {
                offered: init.group,
                expected,
            }));
        }
        Ok(())
    }

    fn slot(&self) -> Result<HandshakeSlot, KexError> {
        self.slots.try_acquire().ok_or(KexError::Overloaded {
            what: "concurrent handshakes",
            limit: self.config.max_concurrent_handshakes,
        })
    }

    /// Whether a handshake with `peer` is in flight, in either role (the agent does not start
    /// another one meanwhile).
    pub fn handshake_active(&self, peer: &NodeName) -> bool {
        self.pairs.is_active(peer)
    }

    fn peer_entry(&self, peer: &NodeName) -> Result<PeerEntry, KexError> {
        let entry = self
            .directory
            .lookup(peer)
            .ok_or_else(|| KexError::UnknownNode(peer.clone()))?;
        if entry.revoked {
            return Err(KexError::Revoked(peer.clone()));
        }
        Ok(entry)
    }

    /// Starts a handshake with `peer` at the pair policy's epoch and suite. The one action is
    /// `Send(init)`.
    pub fn initiate(&self, peer: &NodeName) -> Result<(Initiator, Vec<Action>), KexError> {
        self.initiate_inner(peer)
            .map_err(|e| self.reject("initiator", e))
    }

    fn initiate_inner(&self, peer: &NodeName) -> Result<(Initiator, Vec<Action>), KexError> {
        if peer == &self.local {
            return Err(KexError::Reflection(peer.clone()));
        }
        let entry = self.peer_entry(peer)?;
        let suite = entry.policy.suite;
        if !entry.policy.allowed.contains(&suite) {
            return Err(KexError::SuiteNotAllowed {
                peer: peer.clone(),
                suite,
                allowed: entry.policy.allowed.clone(),
            });
        }
        let group = self.select_group(peer, &entry)?;
        // A peer that publishes no groups runs the previous release: version 1, X25519.
        let version = if entry.groups.is_some() {
            Version::V2
        } else {
            Version::V1
        };
        let pair_guard = self
            .pairs
            .try_initiate(peer)
            .map_err(|crossing| KexError::Collision {
                peer: peer.clone(),
                crossing,
            })?;
        let slot = self.slot()?;
        let share =
            InitiatorShare::generate(group, &*self.rng).map_err(|e| share_error(peer, e))?;
        let nonce = self.random::<NONCE_LEN>()?;
        let spi = lock(&self.spis).allocate(&*self.rng)?;
        let mut init = Init {
            version,
            initiator: self.local.clone(),
            responder: peer.clone(),
            epoch: entry.policy.epoch,
            suite,
            group,
            offered: match version {
                Version::V1 => Vec::new(),
                Version::V2 => group_codes(&self.config.groups),
            },
            share: share.public().to_vec(),
            nonce,
            initiator_spi: spi,
            timestamp_ms: self.clock.unix_millis(),
            signature: [0; 64],
        };
        let h1 = schedule::init_hash(version, &init.encode_unsigned());
        init.signature.copy_from_slice(
            self.identity
                .sign(&schedule::init_signature_input(version, &h1))
                .as_ref(),
        );
        let init_bytes = init.encode();
        self.metrics.count_initiated();
        let deadline = self.clock.monotonic() + self.config.step_timeout;
        Ok((
            Initiator {
                peer: peer.clone(),
                peer_key: entry.identity_key,
                peer_groups: entry.groups,
                init,
                init_bytes: init_bytes.clone(),
                share,
                deadline,
                _slot: slot,
                _pair: pair_guard,
            },
            vec![Action::Send(init_bytes)],
        ))
    }

    /// Answers an init. The actions are `InstallInbound` (the responder's new inbound SA) then
    /// `Send(response)`; the caller must finish the install before sending.
    pub fn respond(&self, init_bytes: &[u8]) -> Result<(Responder, Vec<Action>), KexError> {
        self.respond_inner(init_bytes)
            .map_err(|e| self.reject("responder", e))
    }

    fn respond_inner(&self, init_bytes: &[u8]) -> Result<(Responder, Vec<Action>), KexError> {
        let init = Init::decode(init_bytes).map_err(KexError::Malformed)?;
        let peer = init.initiator.clone();
        if peer == self.local {
            return Err(KexError::Reflection(peer));
        }
        if init.responder != self.local {
            return Err(KexError::Misdirected {
                addressed: init.responder,
                local: self.local.clone(),
            });
        }
        let entry = self.peer_entry(&peer)?;
        let version = init.version;
        let h1 = schedule::init_hash(version, &init.encode_unsigned());
        signature::UnparsedPublicKey::new(&signature::ED25519, &entry.identity_key)
            .verify(
                &schedule::init_signature_input(version, &h1),
                &init.signature,
            )
            .map_err(|_| KexError::BadSignature {
                peer: peer.clone(),
                message: "init",
            })?;
        let now = self.clock.monotonic();
        lock(&self.rate)
            .check(&peer, now)
            .map_err(|retry_after| KexError::RateLimited {
                peer: peer.clone(),
                retry_after,
            })?;
        lock(&self.nonces)
            .check_and_record(
                &init.nonce,
                init.timestamp_ms,
                self.clock.unix_millis(),
                now,
            )
            .map_err(|f| match f {
                Freshness::Replayed => KexError::Replay { peer: peer.clone() },
                Freshness::OutsideWindow { skew_ms } => KexError::OutsideWindow {
                    peer: peer.clone(),
                    skew_ms,
                },
                Freshness::Full => KexError::Overloaded {
                    what: "remembered nonces",
                    limit: self.config.nonce_cache_capacity,
                },
            })?;
        if init.epoch < entry.policy.epoch {
            return Err(KexError::StaleEpoch {
                peer,
                offered: init.epoch,
                current: entry.policy.epoch,
            });
        }
        if !entry.policy.allowed.contains(&init.suite) {
            return Err(KexError::SuiteNotAllowed {
                peer,
                suite: init.suite,
                allowed: entry.policy.allowed,
            });
        }
        self.check_offer(&peer, &init, &entry)?;
        let pair_guard = self
            .pairs
            .try_respond(&self.local, &peer)
            .map_err(|crossing| KexError::Collision {
                peer: peer.clone(),
                crossing,
            })?;
        let slot = self.slot()?;
        let answer = share::respond(init.group, &init.share, &*self.rng)
            .map_err(|e| share_error(&peer, e))?;
        let nonce = self.random::<NONCE_LEN>()?;
        let spi = lock(&self.spis).allocate(&*self.rng)?;
        let mut response = Response {
            version,
            group: init.group,
            supported: match version {
                Version::V1 => Vec::new(),
                Version::V2 => group_codes(&self.config.groups),
            },
            share: answer.public,
            nonce,
            responder_spi: spi,
            signature: [0; 64],
        };
        let h2 = schedule::response_hash(version, init_bytes, &response.encode_unsigned());
        response.signature.copy_from_slice(
            self.identity
                .sign(&schedule::response_signature_input(version, &h2))
                .as_ref(),
        );
        let response_bytes = response.encode();
        let h3 = schedule::confirm_hash(version, init_bytes, &response_bytes);
        let keys = match derive(&init, &response, &answer.secret, &h3) {
            Ok(keys) => keys,
            Err(e) => {
                lock(&self.spis).release(spi);
                return Err(e);
            }
        };
        let inbound = SaDirection {
            spi,
            key: keys.initiator_to_responder.clone(),
        };
        let outbound = SaDirection {
            spi: init.initiator_spi,
            key: keys.responder_to_initiator.clone(),
        };
        let actions = vec![
            Action::InstallInbound {
                peer: peer.clone(),
                epoch: init.epoch,
                sa: inbound.clone(),
            },
            Action::Send(response_bytes),
        ];
        Ok((
            Responder {
                pair: SaPair {
                    epoch: init.epoch,
                    suite: init.suite,
                    inbound,
                    outbound,
                },
                version,
                group: init.group,
                peer,
                confirm_key: keys.confirm_key,
                h3,
                deadline: self.clock.monotonic() + self.config.step_timeout,
                _slot: slot,
                _pair: pair_guard,
            },
            actions,
        ))
    }
}

fn share_error(peer: &NodeName, error: ShareError) -> KexError {
    match error {
        ShareError::Random => KexError::Random,
        error => KexError::BadShare {
            peer: peer.clone(),
            error,
        },
    }
}

/// The keys of a handshake from its two messages (unsigned parts are what matter) and the
/// shared secret: version 1 binds them to the listed fields, version 2 to the transcript H3.
fn derive(
    init: &Init,
    response: &Response,
    secret: &SharedSecret,
    h3: &TranscriptHash,
) -> Result<Keys, KexError> {
    match init.version {
        Version::V1 => {
            let ephemeral = |share: &[u8]| -> Result<[u8; EPHEMERAL_LEN], KexError> {
                share.try_into().map_err(|_| {
                    KexError::Malformed(DecodeError::Field {
                        field: "ephemeral",
                        reason: "not a 32-byte X25519 key".into(),
                    })
                })
            };
            let ctx = KeyContext {
                initiator: init.initiator.clone(),
                responder: init.responder.clone(),
                epoch: init.epoch,
                suite: init.suite,
                initiator_spi: init.initiator_spi,
                responder_spi: response.responder_spi,
                initiator_ephemeral: ephemeral(&init.share)?,
                responder_ephemeral: ephemeral(&response.share)?,
                initiator_nonce: init.nonce,
                responder_nonce: response.nonce,
            };
            Ok(schedule::derive_keys(secret, &ctx))
        }
        Version::V2 => Ok(schedule::derive_keys_v2(
            secret,
            init.suite,
            &init.nonce,
            &response.nonce,
            h3,
        )),
    }
}

/// A handshake this node started, waiting for the response.
pub struct Initiator {
    peer: NodeName,
    peer_key: [u8; 32],
    /// What the peer publishes, to check the response's supported groups against.
    peer_groups: Option<Vec<KexGroup>>,
    init: Init,
    init_bytes: Vec<u8>,
    share: InitiatorShare,
    deadline: Duration,
    _slot: HandshakeSlot,
    _pair: PairGuard,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("peer", &self.peer)
            .field("epoch", &self.init.epoch)
            .field("suite", &self.init.suite)
            .field("group", &self.init.group)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    pub fn peer(&self) -> &NodeName {
        &self.peer
    }

    pub fn epoch(&self) -> Epoch {
        self.init.epoch
    }

    pub fn suite(&self) -> Suite {
        self.init.suite
    }

    /// The key-exchange group of this handshake.
    pub fn group(&self) -> KexGroup {
        self.init.group
    }

    /// Monotonic time by which the response must arrive.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Handles the response. The actions are `InstallInbound`, `SwitchOutbound`,
    /// `Send(confirm)` and `Established`, in that order. On error the handshake is over and its
    /// SPI is freed (nothing was installed).
    pub fn on_response(self, ep: &Endpoint, bytes: &[u8]) -> Result<Vec<Action>, KexError> {
        self.on_response_guarded(ep, bytes)
            .map(|(actions, _)| actions)
    }

    /// [`Initiator::on_response`], also handing over the handshake's claim on its pair: the
    /// caller holds it until the actions are carried out (the SAs installed, the peer's
    /// acknowledgement in, the pair established), so no other handshake of the pair can start
    /// or be answered meanwhile ([`PairGuards`]).
    pub fn on_response_guarded(
        self,
        ep: &Endpoint,
        bytes: &[u8],
    ) -> Result<(Vec<Action>, PairGuard), KexError> {
        let spi = self.init.initiator_spi;
        self.on_response_inner(ep, bytes).map_err(|e| {
            ep.release_spi(spi);
            ep.reject("initiator", e)
        })
    }

    /// The response did not come in time (or the stream broke): frees the SPI and counts it.
    pub fn abandon(self, ep: &Endpoint) -> KexError {
        ep.release_spi(self.init.initiator_spi);
        ep.reject(
            "initiator",
            KexError::Timeout {
                peer: self.peer,
                step: "response",
            },
        )
    }

    fn on_response_inner(
        self,
        ep: &Endpoint,
        bytes: &[u8],
    ) -> Result<(Vec<Action>, PairGuard), KexError> {
        if ep.clock.monotonic() > self.deadline {
            return Err(KexError::Timeout {
                peer: self.peer,
                step: "response",
            });
        }
        let response = Response::decode(bytes).map_err(KexError::Malformed)?;
        let init = &self.init;
        if response.version != init.version || response.group != init.group {
            return Err(KexError::Malformed(DecodeError::Field {
                field: "group",
                reason: format!(
                    "a version-{} {} response to a version-{} {} init",
                    response.version.byte(),
                    response.group,
                    init.version.byte(),
                    init.group
                ),
            }));
        }
        let version = init.version;
        let h2 = schedule::response_hash(version, &self.init_bytes, &response.encode_unsigned());
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.peer_key)
            .verify(
                &schedule::response_signature_input(version, &h2),
                &response.signature,
            )
            .map_err(|_| KexError::BadSignature {
                peer: self.peer.clone(),
                message: "response",
            })?;
        if version == Version::V2 {
            let sent = known_groups(&response.supported);
            if !same_groups(&sent, effective(self.peer_groups.as_deref())) {
                return Err(KexError::GroupMismatch {
                    peer: self.peer.clone(),
                    message: "response",
                    sent,
                    published: self.peer_groups.clone(),
                });
            }
        }
        let secret = self
            .share
            .finish(&response.share)
            .map_err(|e| share_error(&self.peer, e))?;
        let h3 = schedule::confirm_hash(version, &self.init_bytes, bytes);
        let keys = derive(init, &response, &secret, &h3)?;
        let confirm = Confirm {
            version,
            mac: schedule::confirm_mac(&keys.confirm_key, &h3),
        };
        let pair = SaPair {
            epoch: init.epoch,
            suite: init.suite,
            inbound: SaDirection {
                spi: init.initiator_spi,
                key: keys.responder_to_initiator,
            },
            outbound: SaDirection {
                spi: response.responder_spi,
                key: keys.initiator_to_responder,
            },
        };
        ep.metrics.count_established(true, init.group);
        tracing::debug!(local = %ep.local, peer = %self.peer, epoch = %init.epoch, group = %init.group, "handshake established as initiator");
        let actions = vec![
            Action::InstallInbound {
                peer: self.peer.clone(),
                epoch: init.epoch,
                sa: pair.inbound.clone(),
            },
            Action::SwitchOutbound {
                peer: self.peer.clone(),
                epoch: init.epoch,
                sa: pair.outbound.clone(),
            },
            Action::Send(confirm.encode()),
            Action::Established {
                peer: self.peer,
                pair,
            },
        ];
        Ok((actions, self._pair))
    }
}

/// A handshake this node answered: its inbound SA is installed, it waits for the confirm.
pub struct Responder {
    peer: NodeName,
    pair: SaPair,
    version: Version,
    group: KexGroup,
    confirm_key: [u8; MAC_LEN],
    h3: TranscriptHash,
    deadline: Duration,
    _slot: HandshakeSlot,
    _pair: PairGuard,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.peer)
            .field("epoch", &self.pair.epoch)
            .finish_non_exhaustive()
    }
}

impl Responder {
    pub fn peer(&self) -> &NodeName {
        &self.peer
    }

    /// Monotonic time by which the confirm must arrive.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The key-exchange group of this handshake.
    pub fn group(&self) -> KexGroup {
        self.group
    }

    /// The inbound SA this responder installed (kept even if the confirm never comes: the
    /// initiator may already send on it; the agent deletes it when a later pair replaces it).
    pub fn inbound(&self) -> &SaDirection {
        &self.pair.inbound
    }

    /// Handles the confirm. The actions are `SwitchOutbound` then `Established`.
    pub fn on_confirm(self, ep: &Endpoint, bytes: &[u8]) -> Result<Vec<Action>, KexError> {
        self.on_confirm_guarded(ep, bytes)
            .map(|(actions, _)| actions)
    }

    /// [`Responder::on_confirm`], also handing over the handshake's claim on its pair, to hold
    /// until the outbound SA is switched and the pair established (see
    /// [`Initiator::on_response_guarded`]).
    pub fn on_confirm_guarded(
        self,
        ep: &Endpoint,
        bytes: &[u8],
    ) -> Result<(Vec<Action>, PairGuard), KexError> {
        self.on_confirm_inner(ep, bytes)
            .map_err(|e| ep.reject("responder", e))
    }

    /// The confirm did not come in time: the outbound SA stays the old one.
    pub fn abandon(self, ep: &Endpoint) -> KexError {
        ep.reject(
            "responder",
            KexError::Timeout {
                peer: self.peer,
                step: "confirm",
            },
        )
    }

    fn on_confirm_inner(
        self,
        ep: &Endpoint,
        bytes: &[u8],
    ) -> Result<(Vec<Action>, PairGuard), KexError> {
        if ep.clock.monotonic() > self.deadline {
            return Err(KexError::Timeout {
                peer: self.peer,
                step: "confirm",
            });
        }
        let confirm = Confirm::decode(bytes).map_err(KexError::Malformed)?;
        if confirm.version != self.version {
            return Err(KexError::Malformed(DecodeError::Field {
                field: "version",
                reason: format!(
                    "a version-{} confirm in a version-{} handshake",
                    confirm.version.byte(),
                    self.version.byte()
                ),
            }));
        }
        if !schedule::verify_confirm_mac(&self.confirm_key, &self.h3, &confirm.mac) {
            return Err(KexError::BadConfirm { peer: self.peer });
        }
        ep.metrics.count_established(false, self.group);
        tracing::debug!(local = %ep.local, peer = %self.peer, epoch = %self.pair.epoch, group = %self.group, "handshake established as responder");
        let actions = vec![
            Action::SwitchOutbound {
                peer: self.peer.clone(),
                epoch: self.pair.epoch,
                sa: self.pair.outbound.clone(),
            },
            Action::Established {
                peer: self.peer,
                pair: self.pair,
            },
        ];
        Ok((actions, self._pair))
    }
}

//! Two key-exchange endpoints talk real gRPC over 127.0.0.1 (no root needed): handshakes,
//! refusals carried back to the initiator, concurrency on one reused connection, re-keying and
//! the retry loop.

use std::sync::Arc;
use std::time::Duration;

use cipherlane_core::{Epoch, NodeName, Suite};
use cipherlane_kex::{
    Endpoint, InMemoryDirectory, InMemoryInstaller, InstallerCall, KexConfig, PairPolicy,
    PeerEntry, RejectionKind, RetrySchedule, SystemClock,
};
use cipherlane_kex_grpc::{serve, ClientConfig, HandshakeError, KexClient};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::net::TcpListener;

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("valid node name")
}

struct Agent {
    endpoint: Arc<Endpoint>,
    directory: Arc<InMemoryDirectory>,
    installer: Arc<InMemoryInstaller>,
    client: KexClient<InMemoryInstaller>,
    addr: String,
    key: [u8; 32],
}

async fn agent(node: &str, config: KexConfig) -> Agent {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
    let key: [u8; 32] = kp.public_key().as_ref().try_into().expect("32 bytes");
    let directory = Arc::new(InMemoryDirectory::new());
    let endpoint = Arc::new(Endpoint::new(
        name(node),
        kp,
        directory.clone(),
        Arc::new(SystemClock::new()),
        Arc::new(rng),
        config,
    ));
    let installer = Arc::new(InMemoryInstaller::new());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(serve(
        listener,
        endpoint.clone(),
        installer.clone(),
        std::future::pending(),
    ));
    let client = KexClient::new(endpoint.clone(), installer.clone(), ClientConfig::default());
    Agent {
        endpoint,
        directory,
        installer,
        client,
        addr,
        key,
    }
}

fn introduce(a: &Agent, b: &Agent, policy: PairPolicy) {
    let entry = |key| PeerEntry {
        identity_key: key,
        revoked: false,
        policy: policy.clone(),
        groups: Some(cipherlane_kex::SUPPORTED_GROUPS.to_vec()),
    };
    a.directory.insert(b.endpoint.local().clone(), entry(b.key));
    b.directory.insert(a.endpoint.local().clone(), entry(a.key));
}

async fn pair_of_agents(config: KexConfig) -> (Agent, Agent) {
    let a = agent("node-a", config.clone()).await;
    let b = agent("node-b", config).await;
    introduce(&a, &b, PairPolicy::only(Epoch(1), Suite::AesGcm128));
    (a, b)
}

async fn wait_for_established(installer: &InMemoryInstaller, peer: &NodeName, count: usize) {
    for _ in 0..200 {
        let n = installer
            .calls()
            .iter()
            .filter(|c| matches!(c, InstallerCall::Established(p, _) if p == peer))
            .count();
        if n >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("responder never reported {count} established pairs with {peer}");
}

#[tokio::test]
async fn two_agents_complete_a_handshake_over_grpc_and_install_mirrored_sas_in_order() {
    let (a, b) = pair_of_agents(KexConfig::default()).await;
    let pair_a = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect("handshake");
    wait_for_established(&b.installer, &name("node-a"), 1).await;
    let pair_b = b
        .installer
        .established_pair(&name("node-a"))
        .expect("responder established");
    assert_eq!(pair_a.inbound, pair_b.outbound);
    assert_eq!(pair_a.outbound, pair_b.inbound);
    let kinds = |calls: Vec<InstallerCall>| -> Vec<&'static str> {
        calls
            .into_iter()
            .map(|c| match c {
                InstallerCall::InstallInbound(..) => "inbound",
                InstallerCall::SwitchOutbound(..) => "outbound",
                InstallerCall::Established(..) => "established",
            })
            .collect()
    };
    assert_eq!(
        kinds(a.installer.calls()),
        ["inbound", "outbound", "established"]
    );
    assert_eq!(
        kinds(b.installer.calls()),
        ["inbound", "outbound", "established"]
    );
}

#[tokio::test]
async fn a_refusal_by_the_responder_reaches_the_initiator_with_its_kind() {
    let (a, b) = pair_of_agents(KexConfig::default()).await;
    b.directory.update(&name("node-a"), |e| e.revoked = true);
    let err = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect_err("revoked");
    match &err {
        HandshakeError::Rejected { kind, code, .. } => {
            assert_eq!(*kind, Some(RejectionKind::Revoked));
            assert_eq!(*code, tonic::Code::PermissionDenied);
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(b.endpoint.metrics().rejections(RejectionKind::Revoked), 1);
    assert!(
        b.installer.calls().is_empty(),
        "nothing installed on refusal"
    );
    b.directory.remove(&name("node-a"));
    let err = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect_err("unknown");
    assert!(
        matches!(
            err,
            HandshakeError::Rejected {
                kind: Some(RejectionKind::UnknownNode),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_peer_is_reported_as_such_and_is_retryable() {
    let (a, _b) = pair_of_agents(KexConfig::default()).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let err = a
        .client
        .handshake(&name("node-b"), &addr)
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, HandshakeError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn one_node_answers_many_peers_at_once_and_each_pair_runs_one_handshake_at_a_time() {
    let config = KexConfig {
        peer_rate_per_second: 1000.0,
        peer_rate_burst: 1000,
        max_concurrent_handshakes: 256,
        ..KexConfig::default()
    };
    let b = agent("node-b", config.clone()).await;
    let mut peers = Vec::new();
    for i in 0..16 {
        let a = agent(&format!("node-a-{i}"), config.clone()).await;
        introduce(&a, &b, PairPolicy::only(Epoch(1), Suite::AesGcm128));
        peers.push(Arc::new(a));
    }
    // 16 peers at once, 4 handshakes each, one after the other
    let mut tasks = Vec::new();
    for a in &peers {
        let (a, addr) = (a.clone(), b.addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut spis = Vec::new();
            for _ in 0..4 {
                let pair = a.client.handshake(&name("node-b"), &addr).await?;
                spis.push(pair.outbound.spi);
            }
            Ok::<_, cipherlane_kex_grpc::HandshakeError>(spis)
        }));
    }
    let mut spis = std::collections::HashSet::new();
    for t in tasks {
        for spi in t.await.expect("task").expect("handshake") {
            assert!(spis.insert(spi), "b's inbound SPIs are unique");
        }
    }
    for i in 0..16 {
        wait_for_established(&b.installer, &name(&format!("node-a-{i}")), 4).await;
    }
    // two handshakes of one pair at once: one runs, the other is refused locally as a collision
    let a = &peers[0];
    let node_b = name("node-b");
    let (first, second) = tokio::join!(
        a.client.handshake(&node_b, &b.addr),
        a.client.handshake(&node_b, &b.addr)
    );
    let (ok, refused) = match (first, second) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e),
        other => panic!("exactly one of two concurrent handshakes must run: {other:?}"),
    };
    assert!(
        refused.is_collision() && !refused.is_retryable(),
        "{refused}"
    );
    assert_eq!(ok.epoch, Epoch(1));
}

#[tokio::test]
async fn crossing_handshakes_over_grpc_leave_both_nodes_with_the_same_pair() {
    for round in 0..5 {
        let (a, b) = pair_of_agents(KexConfig::default()).await;
        let (node_a, node_b) = (name("node-a"), name("node-b"));
        let (from_a, from_b) = tokio::join!(
            a.client.handshake(&node_b, &b.addr),
            b.client.handshake(&node_a, &a.addr)
        );
        let completed = usize::from(from_a.is_ok()) + usize::from(from_b.is_ok());
        assert!(completed >= 1, "round {round}: {from_a:?} {from_b:?}");
        for r in [&from_a, &from_b] {
            if let Err(e) = r {
                assert!(
                    e.is_collision(),
                    "round {round}: only a collision may refuse one: {e}"
                );
            }
        }
        // whatever ran, the last pair each side established is the same pair, mirrored
        let last = |inst: &InMemoryInstaller, peer: &str| {
            inst.calls().iter().rev().find_map(|c| match c {
                InstallerCall::Established(p, pair) if p == &name(peer) => Some(pair.clone()),
                _ => None,
            })
        };
        for _ in 0..200 {
            let (pa, pb) = (last(&a.installer, "node-b"), last(&b.installer, "node-a"));
            if let (Some(pa), Some(pb)) = (&pa, &pb) {
                if pa.outbound == pb.inbound && pa.inbound == pb.outbound {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (pa, pb) = (last(&a.installer, "node-b"), last(&b.installer, "node-a"));
        let (pa, pb) = (pa.expect("a established"), pb.expect("b established"));
        assert_eq!(pa.outbound, pb.inbound, "round {round}");
        assert_eq!(pa.inbound, pb.outbound, "round {round}");
    }
}

#[tokio::test]
async fn re_keying_over_grpc_replaces_keys_and_moves_to_the_new_epoch() {
    let (a, b) = pair_of_agents(KexConfig::default()).await;
    let first = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect("first");
    introduce(&a, &b, PairPolicy::only(Epoch(2), Suite::AesGcm256));
    let second = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect("rekey");
    assert_eq!((second.epoch, second.suite), (Epoch(2), Suite::AesGcm256));
    assert_ne!(first.outbound.key, second.outbound.key);
    assert_eq!(second.inbound.key.bytes().len(), 36);
    wait_for_established(&b.installer, &name("node-a"), 2).await;
    assert_eq!(
        b.installer
            .established_pair(&name("node-a"))
            .map(|p| p.inbound),
        Some(second.outbound)
    );
}

#[tokio::test]
async fn a_rate_limited_initiator_retries_with_backoff_and_gets_through() {
    let config = KexConfig {
        peer_rate_per_second: 10.0,
        peer_rate_burst: 1,
        ..KexConfig::default()
    };
    let (a, b) = pair_of_agents(config).await;
    a.client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect("first uses the burst");
    let err = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect_err("second is limited");
    assert!(
        matches!(
            err,
            HandshakeError::Rejected {
                kind: Some(RejectionKind::RateLimited),
                ..
            }
        ),
        "{err}"
    );
    let schedule = RetrySchedule {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_attempts: 10,
    };
    a.client
        .handshake_with_retry(&name("node-b"), &b.addr, &schedule)
        .await
        .expect("gets through after backoff");
}

/// A raw client that speaks the gRPC service directly, to send what a real client never would.
async fn raw_stream(
    addr: &str,
    frames: Vec<Vec<u8>>,
    keep_open: bool,
) -> (
    tonic::Result<tonic::Streaming<cipherlane_kex_grpc::proto::Frame>>,
    tokio::sync::mpsc::Sender<cipherlane_kex_grpc::proto::Frame>,
) {
    use cipherlane_kex_grpc::proto::{key_exchange_client::KeyExchangeClient, Frame};
    let mut client = KeyExchangeClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for message in frames {
        tx.send(Frame { message }).await.expect("queue");
    }
    let keep = tx.clone();
    if !keep_open {
        drop(tx);
    }
    let response = client
        .handshake(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (response, keep)
}

#[tokio::test]
async fn malformed_and_oversized_frames_are_refused_over_grpc_with_their_label() {
    let (_a, b) = pair_of_agents(KexConfig::default()).await;
    let (res, _tx) = raw_stream(&b.addr, vec![vec![1, 1, 200]], false).await;
    let status = res.expect_err("malformed");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("malformed:"),
        "{}",
        status.message()
    );
    // over the protocol's 2048-byte limit, under the 4 KiB gRPC limit
    let (res, _tx) = raw_stream(&b.addr, vec![vec![1u8; 3000]], false).await;
    let status = res.expect_err("oversized");
    assert!(
        status.message().starts_with("oversized:"),
        "{}",
        status.message()
    );
    assert_eq!(b.endpoint.metrics().rejections(RejectionKind::Malformed), 1);
    assert_eq!(b.endpoint.metrics().rejections(RejectionKind::Oversized), 1);
    // Beyond the gRPC limit tonic itself refuses the message.
    let (res, _tx) = raw_stream(&b.addr, vec![vec![1u8; 64 * 1024]], false).await;
    assert!(res.is_err(), "a 64 KiB frame must be refused");
    assert!(b.installer.calls().is_empty());
}

#[tokio::test]
async fn a_lost_confirm_leaves_the_responder_on_its_old_outbound_sa_with_the_new_inbound_kept() {
    let (a, b) = pair_of_agents(KexConfig {
        step_timeout: Duration::from_millis(300),
        ..KexConfig::default()
    })
    .await;
    let (_initiator, actions) = a.endpoint.initiate(&name("node-b")).expect("initiate");
    let init = match &actions[0] {
        cipherlane_kex::Action::Send(bytes) => bytes.clone(),
        other => panic!("expected Send, got {other:?}"),
    };
    // The initiator sends its init, gets the response, and its confirm is lost.
    let (res, tx) = raw_stream(&b.addr, vec![init], true).await;
    let mut inbound = res.expect("response stream");
    let response = inbound.message().await.expect("frame").expect("a response");
    assert!(!response.message.is_empty());
    let end = inbound.message().await;
    drop(tx);
    let status = end.expect_err("the responder gives up waiting for the confirm");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    let calls = b.installer.calls();
    assert!(
        matches!(calls.as_slice(), [InstallerCall::InstallInbound(..)]),
        "responder must keep its new inbound SA and not switch outbound: {calls:?}"
    );
    assert_eq!(b.endpoint.metrics().rejections(RejectionKind::Timeout), 1);
}

#[tokio::test]
async fn an_initiator_whose_confirm_is_not_acknowledged_reports_unconfirmed_and_retries() {
    let (a, b) = pair_of_agents(KexConfig::default()).await;
    b.installer.fail_outbound_switches();
    let err = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect_err("the responder could not switch");
    match &err {
        HandshakeError::Unconfirmed { pair, .. } => assert_eq!(pair.epoch, Epoch(1)),
        other => panic!("expected Unconfirmed, got {other}"),
    }
    assert!(err.is_retryable());
    // The initiator switched (the responder's inbound exists) but reports no established pair.
    let calls = a.installer.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [
                InstallerCall::InstallInbound(..),
                InstallerCall::SwitchOutbound(..)
            ]
        ),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_responder_that_cannot_install_its_inbound_sa_sends_no_response() {
    let (a, b) = pair_of_agents(KexConfig::default()).await;
    b.installer.fail_inbound_installs();
    let err = a
        .client
        .handshake(&name("node-b"), &b.addr)
        .await
        .expect_err("no inbound SA, no response");
    assert!(
        matches!(
            err,
            HandshakeError::Rejected {
                code: tonic::Code::Internal,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        a.installer.calls().is_empty(),
        "the initiator installed nothing"
    );
}

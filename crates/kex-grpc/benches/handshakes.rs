//! Key-exchange benchmark: many concurrent handshakes between two agents over real gRPC on
//! loopback, against the crypto-only limit measured in the same run, for the classical group
//! (x25519, the previous release's version-1 handshake) and the hybrid one (x25519-mlkem768,
//! version 2).
//!
//! Run: `cargo bench -p cipherlane-kex-grpc --bench handshakes` (release profile). Writes
//! bench/results/kex.txt. CPU time is getrusage(RUSAGE_SELF) user+system of this process,
//! which runs both agents (initiator and responder), so it counts both sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cipherlane_core::{Epoch, KexGroup, NodeName, SaDirection, SaPair, Suite};
use cipherlane_kex::schedule::{self, KeyContext};
use cipherlane_kex::share::{self, InitiatorShare};
use cipherlane_kex::wire::Version;
use cipherlane_kex::{
    Action, Endpoint, InMemoryDirectory, InstallError, KexConfig, PairPolicy, PeerEntry,
    SaInstaller, SystemClock, SUPPORTED_GROUPS,
};
use cipherlane_kex_grpc::{serve, ClientConfig, KexClient};
use nix::sys::resource::{getrusage, UsageWho};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// The two handshakes compared: the previous release's (version 1, X25519) and the hybrid.
const GROUPS: [KexGroup; 2] = [KexGroup::X25519, KexGroup::X25519MlKem768];

/// What a peer publishes for a handshake in `group`: nothing (previous release) for X25519,
/// this build's groups for the hybrid.
fn published(group: KexGroup) -> Option<Vec<KexGroup>> {
    group.is_post_quantum().then(|| SUPPORTED_GROUPS.to_vec())
}

fn version(group: KexGroup) -> Version {
    if group.is_post_quantum() {
        Version::V2
    } else {
        Version::V1
    }
}

/// Installs nothing: the benchmark measures the key exchange, not the kernel.
struct NullInstaller;

impl SaInstaller for NullInstaller {
    async fn install_inbound(
        &self,
        _: &NodeName,
        _: Epoch,
        _: &SaDirection,
    ) -> Result<(), InstallError> {
        Ok(())
    }
    async fn switch_outbound(
        &self,
        _: &NodeName,
        _: Epoch,
        _: &SaDirection,
    ) -> Result<(), InstallError> {
        Ok(())
    }
    async fn established(&self, _: &NodeName, _: &SaPair) -> Result<(), InstallError> {
        Ok(())
    }
}

fn cpu_seconds() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF)");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(usage.user_time()) + tv(usage.system_time())
}

fn name(s: &str) -> NodeName {
    NodeName::new(s).expect("valid")
}

fn keypair() -> (Ed25519KeyPair, [u8; 32]) {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
    let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
    let public = kp.public_key().as_ref().try_into().expect("32 bytes");
    (kp, public)
}

fn config() -> KexConfig {
    KexConfig {
        peer_rate_per_second: 1e9,
        peer_rate_burst: u32::MAX,
        max_concurrent_handshakes: 4096,
        nonce_cache_capacity: 1 << 22,
        ..KexConfig::default()
    }
}

/// `peers` initiating endpoints (`node-a-0`, ...) and the responder `node-b` that knows them all.
/// A node runs one handshake per pair at a time, so concurrency comes from many peers, as in a
/// cluster.
fn endpoints(peers: usize, group: KexGroup) -> (Vec<Arc<Endpoint>>, Arc<Endpoint>) {
    let (kp_b, pub_b) = keypair();
    let policy = PairPolicy::only(Epoch(1), Suite::AesGcm128);
    let entry = |key| PeerEntry {
        identity_key: key,
        revoked: false,
        policy: policy.clone(),
        groups: published(group),
    };
    let clock = Arc::new(SystemClock::new());
    let dir_b = Arc::new(InMemoryDirectory::new());
    let mut initiators = Vec::new();
    for i in 0..peers {
        let (kp_a, pub_a) = keypair();
        let dir_a = Arc::new(InMemoryDirectory::new());
        dir_a.insert(name("node-b"), entry(pub_b));
        dir_b.insert(name(&format!("node-a-{i}")), entry(pub_a));
        initiators.push(Arc::new(Endpoint::new(
            name(&format!("node-a-{i}")),
            kp_a,
            dir_a,
            clock.clone(),
            Arc::new(SystemRandom::new()),
            config(),
        )));
    }
    let b = Endpoint::new(
        name("node-b"),
        kp_b,
        dir_b,
        clock,
        Arc::new(SystemRandom::new()),
        config(),
    );
    (initiators, Arc::new(b))
}

/// The cryptography of one handshake, both sides, with messages of the group's real sizes:
/// the key shares (X25519 key generation and agreement; for the hybrid also ML-KEM-768 key
/// generation, encapsulation with the FIPS 203 key check, decapsulation), 2 Ed25519 signatures,
/// 2 verifications, the transcript hashes of both sides (H1, H2, H3 each), the key schedule of
/// both sides and the confirm MAC (made and checked).
fn crypto_of_one_handshake(
    group: KexGroup,
    rng: &SystemRandom,
    kp_a: &Ed25519KeyPair,
    kp_b: &Ed25519KeyPair,
    ctx: &KeyContext,
) {
    let v = version(group);
    let (share_i, share_r) = share::share_lengths(group);
    let init_body = vec![7u8; 100 + share_i];
    let resp_body = vec![8u8; 40 + share_r];
    let derive = |secret: &[u8], h3: &schedule::TranscriptHash| match v {
        Version::V1 => schedule::derive_keys(secret, ctx),
        Version::V2 => schedule::derive_keys_v2(
            secret,
            ctx.suite,
            &ctx.initiator_nonce,
            &ctx.responder_nonce,
            h3,
        ),
    };
    // initiator
    let a = InitiatorShare::generate(group, rng).expect("share");
    let h1 = schedule::init_hash(v, &init_body);
    let sig_a = kp_a.sign(&schedule::init_signature_input(v, &h1));
    // responder
    signature::UnparsedPublicKey::new(&signature::ED25519, kp_a.public_key().as_ref())
        .verify(
            &schedule::init_signature_input(v, &schedule::init_hash(v, &init_body)),
            sig_a.as_ref(),
        )
        .expect("verify");
    let b = share::respond(group, a.public(), rng).expect("respond");
    let h2 = schedule::response_hash(v, &init_body, &resp_body);
    let sig_b = kp_b.sign(&schedule::response_signature_input(v, &h2));
    let h3_b = schedule::confirm_hash(v, &init_body, &resp_body);
    let keys_b = derive(&b.secret, &h3_b);
    // initiator
    signature::UnparsedPublicKey::new(&signature::ED25519, kp_b.public_key().as_ref())
        .verify(
            &schedule::response_signature_input(
                v,
                &schedule::response_hash(v, &init_body, &resp_body),
            ),
            sig_b.as_ref(),
        )
        .expect("verify");
    let secret_a = a.finish(&b.public).expect("finish");
    let h3 = schedule::confirm_hash(v, &init_body, &resp_body);
    let keys_a = derive(&secret_a, &h3);
    let mac = schedule::confirm_mac(&keys_a.confirm_key, &h3);
    assert!(schedule::verify_confirm_mac(
        &keys_b.confirm_key,
        &h3_b,
        &mac
    ));
}

fn crypto_only(group: KexGroup, iterations: u32) -> (f64, f64) {
    let rng = SystemRandom::new();
    let (kp_a, _) = keypair();
    let (kp_b, _) = keypair();
    let mut nonce = [0u8; 32];
    rng.fill(&mut nonce).expect("rng");
    let ctx = KeyContext {
        initiator: name("node-a"),
        responder: name("node-b"),
        epoch: Epoch(1),
        suite: Suite::AesGcm128,
        initiator_spi: cipherlane_core::Spi::new(0x1000).expect("spi"),
        responder_spi: cipherlane_core::Spi::new(0x2000).expect("spi"),
        initiator_ephemeral: [1; 32],
        responder_ephemeral: [2; 32],
        initiator_nonce: nonce,
        responder_nonce: nonce,
    };
    for _ in 0..100 {
        crypto_of_one_handshake(group, &rng, &kp_a, &kp_b, &ctx);
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..iterations {
        crypto_of_one_handshake(group, &rng, &kp_a, &kp_b, &ctx);
    }
    let cpu = cpu_seconds() - cpu0;
    (
        f64::from(iterations) / cpu,
        t0.elapsed().as_secs_f64() / f64::from(iterations),
    )
}

fn sent(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .find_map(|x| match x {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .expect("send")
}

/// The sizes of the init, response and confirm of one handshake in `group`.
fn message_sizes(group: KexGroup) -> (usize, usize, usize) {
    let (a, b) = endpoints(1, group);
    let a = &a[0];
    let (i, a1) = a.initiate(&name("node-b")).expect("init");
    let (_r, b1) = b.respond(&sent(&a1)).expect("respond");
    let a2 = i.on_response(a, &sent(&b1)).expect("response");
    (sent(&a1).len(), sent(&b1).len(), sent(&a2).len())
}

/// The whole state machine in memory (crypto plus codec, nonce cache, SPIs), no gRPC.
fn state_machine_only(group: KexGroup, iterations: u32) -> f64 {
    let (a, b) = endpoints(1, group);
    let a = &a[0];
    let cpu0 = cpu_seconds();
    for _ in 0..iterations {
        let (i, a1) = a.initiate(&name("node-b")).expect("init");
        assert_eq!(i.group(), group);
        let (r, b1) = b.respond(&sent(&a1)).expect("respond");
        let a2 = i.on_response(a, &sent(&b1)).expect("response");
        r.on_confirm(&b, &sent(&a2)).expect("confirm");
    }
    f64::from(iterations) / (cpu_seconds() - cpu0)
}

struct GrpcRun {
    handshakes: usize,
    wall: f64,
    cpu: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Two single-threaded runtimes on two threads: the responder serves on one; on the other,
/// `concurrency` peers each run a handshake loop with it, each over its own reused HTTP/2
/// connection.
fn grpc_run(group: KexGroup, concurrency: usize, total: usize) -> GrpcRun {
    let (peers, b) = endpoints(concurrency, group);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr").to_string())
                .expect("hand over the address");
            serve(listener, b, Arc::new(NullInstaller), async {
                let _ = stop_rx.await;
            })
            .await
            .expect("serve");
        });
    });
    let addr = addr_rx.recv().expect("server address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let run = rt.block_on(async move {
        let clients: Vec<_> = peers
            .into_iter()
            .map(|a| {
                Arc::new(KexClient::new(
                    a,
                    Arc::new(NullInstaller),
                    ClientConfig::default(),
                ))
            })
            .collect();
        for i in 0..200 {
            clients[i % clients.len()]
                .handshake(&name("node-b"), &addr)
                .await
                .expect("warm-up handshake");
        }
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let per_task = total / concurrency;
        let mut tasks = Vec::new();
        for client in &clients {
            let client = client.clone();
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    client
                        .handshake(&name("node-b"), &addr)
                        .await
                        .expect("handshake");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        GrpcRun {
            handshakes: lat.len(),
            wall,
            cpu,
            p50: pct(0.50),
            p99: pct(0.99),
            max: lat[lat.len() - 1],
        }
    });
    drop(rt);
    let _ = stop_tx.send(());
    server.join().expect("server thread");
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Round {
    crypto: f64,
    wall_us: f64,
    machine: f64,
    grpc: f64,
    p50: f64,
    p99: f64,
}

fn round(group: KexGroup, crypto_iters: u32, grpc_total: usize) -> Round {
    let (crypto, wall) = crypto_only(group, crypto_iters);
    let machine = state_machine_only(group, crypto_iters);
    let r = grpc_run(group, 16, grpc_total);
    Round {
        crypto,
        wall_us: wall * 1e6,
        machine,
        grpc: r.handshakes as f64 / r.cpu,
        p50: r.p50.as_secs_f64() * 1e3,
        p99: r.p99.as_secs_f64() * 1e3,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // The machine is shared: measure the crypto-only limit and the gRPC rate of both groups back
    // to back in each round and compare within rounds, then take the median over rounds.
    let (rounds, crypto_iters, grpc_total) = if quick {
        (2, 300, 1_600)
    } else {
        (7, 1_500, 8_000)
    };
    let mut report = String::new();
    for line in [
        "# cipherlane key exchange benchmark (crates/kex-grpc/benches/handshakes.rs)",
        "# command: cargo bench -p cipherlane-kex-grpc --bench handshakes",
        "# classical = group x25519 as the previous release runs it (wire version 1); hybrid = x25519-mlkem768",
        "# (wire version 2: ML-KEM-768 from libcrux-ml-kem, AVX2 chosen at run time, X25519/Ed25519/SHA-256 from ring).",
        "# both agents in one process, each on its own single-threaded tokio runtime and thread, gRPC over 127.0.0.1, one",
        "# reused HTTP/2 connection per peer, one bidirectional stream per handshake, no-op SA installer.",
        "# CPU = getrusage(RUSAGE_SELF) user+system, i.e. initiator and responder together.",
        "# crypto-only = the cryptography of one handshake (both sides: key shares incl. ML-KEM keygen/encaps/decaps for",
        "# the hybrid, 2 Ed25519 sign, 2 verify, transcript hashes over the real message sizes, key schedule, confirm HMAC),",
        "# one thread. Each round measures crypto-only, the in-memory state machine and gRPC (16 peers handshaking with one",
        "# node at once) for both groups back to back; ratios are within a round, the summary is the median over rounds.",
    ] {
        report.push_str(line);
        report.push('\n');
    }
    report.push_str(&format!(
        "date: {}\nmachine: {} CPUs (shared with other engineers' builds; load at start {})\n\n",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%dT%H:%M:%SZ")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    ));
    report.push_str("message sizes (bytes on the wire inside the gRPC frame):\n");
    report.push_str("group            version  init  response  confirm\n");
    for group in GROUPS {
        let (i, r, c) = message_sizes(group);
        report.push_str(&format!(
            "{:<15}  {:>7}  {i:>4}  {r:>8}  {c:>7}\n",
            group.name(),
            version(group).byte()
        ));
    }
    report.push('\n');
    report.push_str("round  group            crypto_only/CPU-s  us/hs  state_machine/CPU-s  grpc/CPU-s  grpc/crypto  grpc_p50_ms  grpc_p99_ms\n");
    let mut per_group: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
    let mut cpu_ratio = Vec::new();
    let mut grpc_cpu_ratio = Vec::new();
    for n in 1..=rounds {
        for (gi, group) in GROUPS.into_iter().enumerate() {
            let r = round(group, crypto_iters, grpc_total);
            report.push_str(&format!(
                "{n:>5}  {:<15}  {:>17.0}  {:>5.0}  {:>19.0}  {:>10.0}  {:>10.0}%  {:>11.2}  {:>11.2}\n",
                group.name(),
                r.crypto,
                r.wall_us,
                r.machine,
                r.grpc,
                100.0 * r.grpc / r.crypto,
                r.p50,
                r.p99,
            ));
            eprint!(".");
            per_group[gi].push(r);
        }
        let (c, h) = (&per_group[0][n - 1], &per_group[1][n - 1]);
        cpu_ratio.push(c.crypto / h.crypto);
        grpc_cpu_ratio.push(c.grpc / h.grpc);
    }
    report.push('\n');
    for (gi, group) in GROUPS.into_iter().enumerate() {
        let rs = &per_group[gi];
        let col = |f: fn(&Round) -> f64| median(rs.iter().map(f).collect());
        report.push_str(&format!(
            "median {}: crypto-only limit {:.0} handshakes/CPU-s; state machine in memory {:.0}; gRPC {:.0} handshakes/CPU-s = {:.0}% of its crypto-only limit; p50 {:.2} ms, p99 {:.2} ms with 16 peers at once\n",
            group.name(),
            col(|r| r.crypto),
            col(|r| r.machine),
            col(|r| r.grpc),
            100.0 * median(rs.iter().map(|r| r.grpc / r.crypto).collect()),
            col(|r| r.p50),
            col(|r| r.p99),
        ));
    }
    report.push_str(&format!(
        "median CPU per handshake, hybrid / classical: crypto-only {:.2}x, whole gRPC handshake {:.2}x (target <= 1.3x)\n",
        median(cpu_ratio),
        median(grpc_cpu_ratio),
    ));
    report.push_str(&format!(
        "target: the hybrid gRPC path >= 70% of the hybrid crypto-only limit: {:.0}%\n\n",
        100.0 * median(per_group[1].iter().map(|r| r.grpc / r.crypto).collect()),
    ));
    report.push_str("latency by concurrency (one run each, gRPC):\n");
    report.push_str("group            concurrency  handshakes  wall_s  handshakes/s  CPU_s  handshakes/CPU-s  p50_ms  p99_ms  max_ms\n");
    for group in GROUPS {
        for concurrency in [1usize, 16, 64] {
            let total = if concurrency == 1 {
                grpc_total / 4
            } else {
                grpc_total
            };
            let r = grpc_run(group, concurrency, total);
            report.push_str(&format!(
                "{:<15}  {concurrency:>11}  {:>10}  {:>6.2}  {:>12.0}  {:>5.2}  {:>16.0}  {:>6.2}  {:>6.2}  {:>6.2}\n",
                group.name(),
                r.handshakes,
                r.wall,
                r.handshakes as f64 / r.wall,
                r.cpu,
                r.handshakes as f64 / r.cpu,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.max.as_secs_f64() * 1e3,
            ));
        }
    }
    eprintln!();
    print!("{report}");
    if !quick {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results");
        std::fs::create_dir_all(dir).expect("results folder");
        std::fs::write(format!("{dir}/kex.txt"), &report).expect("write bench/results/kex.txt");
        println!("wrote bench/results/kex.txt");
    }
}

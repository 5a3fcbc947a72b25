//! Key-exchange benchmark: many concurrent handshakes between two agents over real gRPC on
//! loopback, against the crypto-only limit measured in the same run.
//!
//! Run: `cargo bench -p cipherlane-kex-grpc --bench handshakes` (release profile). Writes
//! bench/results/kex.txt. CPU time is getrusage(RUSAGE_SELF) user+system of this process,
//! which runs both agents (initiator and responder), so it counts both sides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cipherlane_core::{Epoch, NodeName, SaDirection, SaPair, Suite};
use cipherlane_kex::schedule::{self, KeyContext};
use cipherlane_kex::{
    Endpoint, InMemoryDirectory, InstallError, KexConfig, PairPolicy, PeerEntry, SaInstaller,
    SystemClock,
};
use cipherlane_kex_grpc::{serve, ClientConfig, KexClient};
use nix::sys::resource::{getrusage, UsageWho};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, Ed25519KeyPair, KeyPair};

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
fn endpoints(peers: usize) -> (Vec<Arc<Endpoint>>, Arc<Endpoint>) {
    let (kp_b, pub_b) = keypair();
    let policy = PairPolicy::only(Epoch(1), Suite::AesGcm128);
    let entry = |key| PeerEntry {
        identity_key: key,
        revoked: false,
        policy: policy.clone(),
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

/// The ring operations of one handshake, both sides: 2 X25519 key generations and 2
/// agreements with HKDF, 2 Ed25519 signatures, 2 verifications, 2 transcript hashes per side
/// and the confirm MAC (made and checked).
fn crypto_of_one_handshake(
    rng: &SystemRandom,
    kp_a: &Ed25519KeyPair,
    kp_b: &Ed25519KeyPair,
    ctx: &KeyContext,
) {
    let init_body = [7u8; 180];
    let resp_body = [8u8; 70];
    let ea = EphemeralPrivateKey::generate(&X25519, rng).expect("x25519");
    let pa = ea.compute_public_key().expect("pub");
    let h1 = schedule::init_hash(&init_body);
    let sig_a = kp_a.sign(&schedule::init_signature_input(&h1));
    // responder
    signature::UnparsedPublicKey::new(&signature::ED25519, kp_a.public_key().as_ref())
        .verify(
            &schedule::init_signature_input(&schedule::init_hash(&init_body)),
            sig_a.as_ref(),
        )
        .expect("verify");
    let eb = EphemeralPrivateKey::generate(&X25519, rng).expect("x25519");
    let pb = eb.compute_public_key().expect("pub");
    let keys_b =
        agreement::agree_ephemeral(eb, &UnparsedPublicKey::new(&X25519, pa.as_ref()), |s| {
            schedule::derive_keys(s, ctx)
        })
        .expect("agree");
    let h2 = schedule::response_hash(&init_body, &resp_body);
    let sig_b = kp_b.sign(&schedule::response_signature_input(&h2));
    // initiator
    signature::UnparsedPublicKey::new(&signature::ED25519, kp_b.public_key().as_ref())
        .verify(
            &schedule::response_signature_input(&schedule::response_hash(&init_body, &resp_body)),
            sig_b.as_ref(),
        )
        .expect("verify");
    let keys_a =
        agreement::agree_ephemeral(ea, &UnparsedPublicKey::new(&X25519, pb.as_ref()), |s| {
            schedule::derive_keys(s, ctx)
        })
        .expect("agree");
    let h3 = schedule::confirm_hash(&init_body, &resp_body);
    let mac = schedule::confirm_mac(&keys_a.confirm_key, &h3);
    assert!(schedule::verify_confirm_mac(&keys_b.confirm_key, &h3, &mac));
}

fn crypto_only(iterations: u32) -> (f64, f64) {
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
        crypto_of_one_handshake(&rng, &kp_a, &kp_b, &ctx);
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..iterations {
        crypto_of_one_handshake(&rng, &kp_a, &kp_b, &ctx);
    }
    let cpu = cpu_seconds() - cpu0;
    (
        f64::from(iterations) / cpu,
        t0.elapsed().as_secs_f64() / f64::from(iterations),
    )
}

/// The whole state machine in memory (crypto plus codec, nonce cache, SPIs), no gRPC.
fn state_machine_only(iterations: u32) -> f64 {
    let (a, b) = endpoints(1);
    let a = &a[0];
    let send = |actions: &[cipherlane_kex::Action]| {
        actions
            .iter()
            .find_map(|x| match x {
                cipherlane_kex::Action::Send(m) => Some(m.clone()),
                _ => None,
            })
            .expect("send")
    };
    let cpu0 = cpu_seconds();
    for _ in 0..iterations {
        let (i, a1) = a.initiate(&name("node-b")).expect("init");
        let (r, b1) = b.respond(&send(&a1)).expect("respond");
        let a2 = i.on_response(a, &send(&b1)).expect("response");
        r.on_confirm(&b, &send(&a2)).expect("confirm");
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
fn grpc_run(concurrency: usize, total: usize) -> GrpcRun {
    let (peers, b) = endpoints(concurrency);
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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // The machine is shared: measure the crypto-only limit and the gRPC rate back to back in
    // each round and compare within rounds, then take the median over rounds.
    let (rounds, crypto_iters, grpc_total) = if quick {
        (2, 300, 1_600)
    } else {
        (7, 1_500, 8_000)
    };
    let mut report = String::new();
    report
        .push_str("# cipherlane key exchange benchmark (crates/kex-grpc/benches/handshakes.rs)\n");
    report.push_str("# command: cargo bench -p cipherlane-kex-grpc --bench handshakes\n");
    report.push_str(
        "# both agents in one process, each on its own single-threaded tokio runtime and thread, gRPC over 127.0.0.1, one reused\n",
    );
    report.push_str(
        "# HTTP/2 connection, one bidirectional stream per handshake, no-op SA installer.\n",
    );
    report.push_str(
        "# CPU = getrusage(RUSAGE_SELF) user+system, i.e. initiator and responder together.\n",
    );
    report.push_str(
        "# crypto-only = the ring operations of one handshake (both sides: 2 X25519 keygen+agree\n",
    );
    report.push_str(
        "# with HKDF, 2 Ed25519 sign, 2 verify, transcript hashes, confirm HMAC), one thread.\n",
    );
    report.push_str(
        "# Each round measures crypto-only, the in-memory state machine and gRPC (16 peers handshaking with one node at once)\n",
    );
    report.push_str(
        "# back to back; ratios are within a round, the summary is the median over rounds.\n",
    );
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
    report.push_str("round  crypto_only/CPU-s  us/hs  state_machine/CPU-s  grpc/CPU-s  grpc/crypto  grpc_p50_ms  grpc_p99_ms\n");
    let (mut crypto, mut machine, mut grpc, mut ratio, mut p50s, mut p99s) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for round in 1..=rounds {
        let (c, wall) = crypto_only(crypto_iters);
        let m = state_machine_only(crypto_iters);
        let r = grpc_run(16, grpc_total);
        let g = r.handshakes as f64 / r.cpu;
        report.push_str(&format!(
            "{round:>5}  {c:>17.0}  {:>5.0}  {m:>19.0}  {g:>10.0}  {:>10.0}%  {:>11.2}  {:>11.2}\n",
            wall * 1e6,
            100.0 * g / c,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        ));
        eprint!(".");
        crypto.push(c);
        machine.push(m);
        grpc.push(g);
        ratio.push(g / c);
        p50s.push(r.p50.as_secs_f64() * 1e3);
        p99s.push(r.p99.as_secs_f64() * 1e3);
    }
    report.push_str(&format!(
        "\nmedian: crypto-only limit {:.0} handshakes/CPU-s; state machine in memory {:.0}; gRPC {:.0} handshakes/CPU-s = {:.0}% of the crypto-only limit (target >= 70%); p50 {:.2} ms, p99 {:.2} ms with 16 peers at once\n\n",
        median(crypto.clone()),
        median(machine),
        median(grpc),
        100.0 * median(ratio),
        median(p50s),
        median(p99s),
    ));
    report.push_str("latency by concurrency (one run each, gRPC):\n");
    report.push_str("concurrency  handshakes  wall_s  handshakes/s  CPU_s  handshakes/CPU-s  p50_ms  p99_ms  max_ms\n");
    for concurrency in [1usize, 16, 64] {
        let total = if concurrency == 1 {
            grpc_total / 4
        } else {
            grpc_total
        };
        let r = grpc_run(concurrency, total);
        report.push_str(&format!(
            "{concurrency:>11}  {:>10}  {:>6.2}  {:>12.0}  {:>5.2}  {:>16.0}  {:>6.2}  {:>6.2}  {:>6.2}\n",
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
    eprintln!();
    print!("{report}");
    if !quick {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results");
        std::fs::create_dir_all(dir).expect("results folder");
        std::fs::write(format!("{dir}/kex.txt"), &report).expect("write bench/results/kex.txt");
        println!("wrote bench/results/kex.txt");
    }
}

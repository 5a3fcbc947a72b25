//! The operator's HTTP endpoint: `/healthz` (the process runs), `/readyz` (it has talked to the
//! API server: it leads or follows), and Prometheus `/metrics`. A minimal HTTP/1.1 responder on
//! a TCP listener; it reads only the request line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters and gauges the operator exports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub leader: AtomicBool,
    /// Set after the first successful leader-election round.
    pub ready: AtomicBool,
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub rotations: AtomicU64,
    pub garbage_collected: AtomicU64,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |v: bool| u8::from(v);
        format!(
            "# HELP cipherlane_operator_leader 1 when this replica holds the leader Lease.\n\
             # TYPE cipherlane_operator_leader gauge\n\
             cipherlane_operator_leader {}\n\
             # HELP cipherlane_operator_reconciles_total RotationPolicy reconciles.\n\
             # TYPE cipherlane_operator_reconciles_total counter\n\
             cipherlane_operator_reconciles_total {}\n\
             # HELP cipherlane_operator_reconcile_errors_total RotationPolicy reconciles that failed.\n\
             # TYPE cipherlane_operator_reconcile_errors_total counter\n\
             cipherlane_operator_reconcile_errors_total {}\n\
             # HELP cipherlane_operator_rotations_total Epoch advances.\n\
             # TYPE cipherlane_operator_rotations_total counter\n\
             cipherlane_operator_rotations_total {}\n\
             # HELP cipherlane_operator_garbage_collected_total CipherlaneNodes of deleted Nodes deleted.\n\
             # TYPE cipherlane_operator_garbage_collected_total counter\n\
             cipherlane_operator_garbage_collected_total {}\n",
            g(self.leader.load(Ordering::Relaxed)),
            self.reconciles.load(Ordering::Relaxed),
            self.reconcile_errors.load(Ordering::Relaxed),
            self.rotations.load(Ordering::Relaxed),
            self.garbage_collected.load(Ordering::Relaxed),
        )
    }
}

/// The response to a request line.
pub fn respond(request_line: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (200, "text/plain", "ok\n".into()),
        "/readyz" => (
            503,
            "text/plain",
            "not connected to the API server yet\n".into(),
        ),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
        _ => (
            404,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match sock.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let line = req.lines().next().unwrap_or_default();
            let (code, ctype, body) = respond(line, &metrics);
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_first_election_round_and_metrics_show_leadership() {
        let m = Metrics::default();
        assert_eq!(respond("GET /healthz HTTP/1.1", &m).0, 200);
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).0, 503);
        m.ready.store(true, Ordering::Relaxed);
        m.leader.store(true, Ordering::Relaxed);
        assert_eq!(respond("GET /readyz HTTP/1.1", &m).0, 200);
        let (code, _, body) = respond("GET /metrics HTTP/1.1", &m);
        assert_eq!(code, 200);
        assert!(body.contains("cipherlane_operator_leader 1"), "{body}");
        assert_eq!(respond("GET /nope HTTP/1.1", &m).0, 404);
    }
}

//! Prometheus text rendering of the datapath: the kernel's XFRM error counters, counts of our
//! policies and SAs, and per-peer bytes, packets and SA age. Pure: the agent gathers the inputs.

use std::fmt::Write;

use cipherlane_core::PeerSpec;

use crate::model::{Flow, Observed};
use crate::xfrm_stat::XfrmCounter;

/// Everything one scrape renders.
pub struct MetricsInput<'a> {
    pub xfrm_stat: &'a [XfrmCounter],
    pub observed: &'a Observed,
    pub peers: &'a [PeerSpec],
    /// Unix seconds, for SA ages.
    pub now_unix: u64,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render_metrics(input: &MetricsInput<'_>) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose below.
    let _ = writeln!(
        s,
        "# HELP cipherlane_xfrm_stat Kernel XFRM counters from /proc/net/xfrm_stat.\n# TYPE cipherlane_xfrm_stat counter"
    );
    for c in input.xfrm_stat {
        let _ = writeln!(
            s,
            "cipherlane_xfrm_stat{{counter=\"{}\"}} {}",
            escape(&c.name),
            c.value
        );
    }
    let dp = &input.observed.datapath;
    let _ = writeln!(
        s,
        "# HELP cipherlane_xfrm_policies XFRM policies installed by Cipherlane.\n# TYPE cipherlane_xfrm_policies gauge\ncipherlane_xfrm_policies {}",
        dp.policies.len()
    );
    let _ = writeln!(
        s,
        "# HELP cipherlane_xfrm_states XFRM states (SAs) installed by Cipherlane.\n# TYPE cipherlane_xfrm_states gauge\ncipherlane_xfrm_states {}",
        dp.states.len()
    );

    struct PeerRow {
        name: String,
        bytes: [u64; 2],
        packets: [u64; 2],
        sas: [u64; 2],
        newest_out_add: Option<u64>,
    }
    let mut rows: Vec<PeerRow> = input
        .peers
        .iter()
        .map(|p| PeerRow {
            name: p.name.to_string(),
            bytes: [0; 2],
            packets: [0; 2],
            sas: [0; 2],
            newest_out_add: None,
        })
        .collect();
    for key in &dp.state_order {
        let (Some(state), Some(counters)) = (dp.states.get(key), input.observed.counters.get(key))
        else {
            continue;
        };
        let Some(i) = input.peers.iter().position(|p| p.node_ip == state.peer) else {
            continue;
        };
        let d = match state.flow {
            Flow::Inbound => 0,
            Flow::Outbound => 1,
        };
        let row = &mut rows[i];
        row.bytes[d] += counters.bytes;
        row.packets[d] += counters.packets;
        row.sas[d] += 1;
        if state.flow == Flow::Outbound {
            row.newest_out_add = Some(counters.add_time);
        }
    }
    let dirs = ["in", "out"];
    for (metric, help, kind) in [
        (
            "cipherlane_peer_bytes_total",
            "ESP payload bytes per peer and direction.",
            "counter",
        ),
        (
            "cipherlane_peer_packets_total",
            "ESP packets per peer and direction.",
            "counter",
        ),
        (
            "cipherlane_peer_sas",
            "SAs per peer and direction (2 during a rotation).",
            "gauge",
        ),
    ] {
        let _ = writeln!(s, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for row in &rows {
            for (d, dir) in dirs.iter().enumerate() {
                let v = match metric {
                    "cipherlane_peer_bytes_total" => row.bytes[d],
                    "cipherlane_peer_packets_total" => row.packets[d],
                    _ => row.sas[d],
                };
                let _ = writeln!(
                    s,
                    "{metric}{{peer=\"{}\",direction=\"{dir}\"}} {v}",
                    escape(&row.name)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "# HELP cipherlane_peer_sa_age_seconds Age of the outbound SA in use per peer.\n# TYPE cipherlane_peer_sa_age_seconds gauge"
    );
    for row in &rows {
        if let Some(added) = row.newest_out_add {
            let _ = writeln!(
                s,
                "cipherlane_peer_sa_age_seconds{{peer=\"{}\"}} {}",
                escape(&row.name),
                input.now_unix.saturating_sub(added)
            );
        }
    }
    s
}

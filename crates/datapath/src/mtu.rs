//! ESP tunnel-mode overhead and the pod MTU that avoids fragmentation. Pure arithmetic.
//!
//! An ESP tunnel packet is: outer IP header (20 bytes IPv4, 40 IPv6) + ESP header (SPI and
//! sequence number, 8) + explicit IV + inner packet + padding + pad length and next header (2) +
//! ICV. The AEAD suites here have a block size of 1, so the kernel pads the encrypted part
//! (inner packet + 2) to a multiple of 4 (`esp4_get_mtu`/`esp6_get_mtu`).

use cipherlane_core::Suite;

/// The address family of the outer (tunnel) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OuterFamily {
    V4,
    V6,
}

impl OuterFamily {
    pub fn header_len(self) -> u32 {
        match self {
            OuterFamily::V4 => 20,
            OuterFamily::V6 => 40,
        }
    }

    pub fn of(ip: std::net::IpAddr) -> OuterFamily {
        if ip.is_ipv4() {
            OuterFamily::V4
        } else {
            OuterFamily::V6
        }
    }
}

const ESP_HEADER: u32 = 8;
const ESP_TRAILER: u32 = 2;
const ALIGN: u32 = 4;

/// The worst-case bytes ESP tunnel mode adds to a packet (maximum padding included).
pub fn tunnel_overhead(suite: Suite, outer: OuterFamily) -> u32 {
    outer.header_len()
        + ESP_HEADER
        + suite.iv_len() as u32
        + ESP_TRAILER
        + (ALIGN - 1)
        + suite.icv_len() as u32
}

/// The largest inner packet that fits the underlay MTU without fragmenting, exactly as the
/// kernel computes it. Returns 0 when the underlay MTU is too small for any payload.
pub fn pod_mtu(underlay_mtu: u32, suite: Suite, outer: OuterFamily) -> u32 {
    let fixed = outer.header_len() + ESP_HEADER + suite.iv_len() as u32 + suite.icv_len() as u32;
    let room = underlay_mtu.saturating_sub(fixed) & !(ALIGN - 1);
    room.saturating_sub(ESP_TRAILER)
}

/// The pod MTU that fits every suite a node may negotiate (the CNI sets it once per pod).
pub fn pod_mtu_for_all(underlay_mtu: u32, suites: &[Suite], outer: OuterFamily) -> u32 {
    suites
        .iter()
        .map(|s| pod_mtu(underlay_mtu, *s, outer))
        .min()
        .unwrap_or_else(|| pod_mtu(underlay_mtu, Suite::default(), outer))
}

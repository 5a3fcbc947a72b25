//! The kernel's XFRM notifications, as Cipherlane needs them: expiries (`XFRMNLGRP_EXPIRE`), SAs
//! deleted or flushed (`XFRMNLGRP_SA`) and policies deleted or flushed (`XFRMNLGRP_POLICY`).
//!
//! A soft expiry means "re-key now". Every removal (including the agent's own deletions, which the
//! kernel reports too) only says "look again": the agent compares the kernel with what it wants and
//! decides from that (an SA it still wants and no longer finds is lost, a missing policy is put
//! back). Additions and updates are not passed on (they are mostly the agent's own). Events for SAs
//! outside Cipherlane's reqid range and for policies outside its priority band are dropped here.

use std::net::IpAddr;

use cipherlane_datapath::{is_our_reqid, Priority};
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_xfrm::{
    constants::{XFRMNLGRP_EXPIRE, XFRMNLGRP_POLICY, XFRMNLGRP_SA},
    XfrmAttrs, XfrmMessage,
};
use netlink_proto::sys::{AsyncSocket, SocketAddr};

use crate::convert::ip_of;
use crate::XfrmError;

/// An SA reached a byte, packet or time limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryEvent {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub reqid: u32,
    /// `false`: soft limit (rekey); `true`: hard limit (the kernel deleted the SA).
    pub hard: bool,
}

/// One kernel notification about Cipherlane's XFRM objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XfrmEvent {
    Expiry(ExpiryEvent),
    /// One SA was deleted (by anyone, the agent included).
    SaDeleted {
        dst: IpAddr,
        spi: u32,
    },
    /// Every SA (of a protocol) was flushed.
    SasFlushed,
    /// One policy was deleted (by anyone, the agent included).
    PolicyDeleted,
    /// Every policy was flushed.
    PoliciesFlushed,
}

impl XfrmEvent {
    /// Whether the event removed something (the agent must compare the kernel with what it wants).
    pub fn is_removal(&self) -> bool {
        !matches!(self, XfrmEvent::Expiry(ExpiryEvent { hard: false, .. }))
    }
}

/// The stream of XFRM notifications for Cipherlane's objects.
pub struct XfrmEvents {
    messages: UnboundedReceiver<(NetlinkMessage<XfrmMessage>, SocketAddr)>,
    _handle: xfrmnetlink::Handle,
}

/// Ours, or of unknown owner (the notification did not carry the SA): passed on.
fn our_sa(nlas: &[XfrmAttrs]) -> bool {
    nlas.iter()
        .find_map(|a| match a {
            XfrmAttrs::SaInfo(info) => Some(is_our_reqid(info.reqid)),
            _ => None,
        })
        .unwrap_or(true)
}

fn our_policy(nlas: &[XfrmAttrs]) -> bool {
    nlas.iter()
        .find_map(|a| match a {
            XfrmAttrs::PolicyInfo(info) => Some(Priority::from_value(info.priority).is_some()),
            _ => None,
        })
        .unwrap_or(true)
}

/// The event a notification stands for, if it concerns Cipherlane's objects.
pub(crate) fn event_of(msg: XfrmMessage) -> Option<XfrmEvent> {
    match msg {
        XfrmMessage::Expire(e) => {
            let info = &e.expire.state;
            if !is_our_reqid(info.reqid) {
                return None;
            }
            Some(XfrmEvent::Expiry(ExpiryEvent {
                src: ip_of(&info.saddr, info.family)?,
                dst: ip_of(&info.id.daddr, info.family)?,
                spi: info.id.spi,
                reqid: info.reqid,
                hard: e.expire.hard != 0,
            }))
        }
        XfrmMessage::DeleteSa(d) => {
            if !our_sa(&d.nlas) {
                return None;
            }
            Some(XfrmEvent::SaDeleted {
                dst: ip_of(&d.user_sa_id.daddr, d.user_sa_id.family)?,
                spi: d.user_sa_id.spi,
            })
        }
        XfrmMessage::FlushSa(_) => Some(XfrmEvent::SasFlushed),
        XfrmMessage::DeletePolicy(d) => our_policy(&d.nlas).then_some(XfrmEvent::PolicyDeleted),
        XfrmMessage::FlushPolicy(_) => Some(XfrmEvent::PoliciesFlushed),
        _ => None,
    }
}

impl XfrmEvents {
    /// The next event for our objects; `None` when the socket closed (the caller subscribes
    /// again and compares the kernel with what it wants: events may have been missed).
    pub async fn next(&mut self) -> Option<XfrmEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(m) = msg.payload {
                if let Some(ev) = event_of(m) {
                    return Some(ev);
                }
            }
        }
        None
    }
}

pub(crate) fn subscribe() -> Result<XfrmEvents, XfrmError> {
    let (mut conn, handle, messages) =
        xfrmnetlink::new_connection().map_err(|source| XfrmError::Socket {
            what: "NETLINK_XFRM (notifications)",
            source,
        })?;
    let groups = [XFRMNLGRP_EXPIRE, XFRMNLGRP_SA, XFRMNLGRP_POLICY]
        .iter()
        .fold(0u32, |g, n| g | (1 << (n - 1)));
    let socket = conn.socket_mut().socket_mut();
    // a flush of thousands of SAs the agent then deletes one by one is a burst of notifications
    let _ = socket.set_rx_buf_sz(4 << 20);
    socket
        .bind(&SocketAddr::new(0, groups))
        .map_err(|source| XfrmError::Socket {
            what: "NETLINK_XFRM bind to XFRMNLGRP_EXPIRE|SA|POLICY",
            source,
        })?;
    tokio::spawn(conn);
    Ok(XfrmEvents {
        messages,
        _handle: handle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader};

    fn parse(bytes: &[u8]) -> XfrmMessage {
        let mut header = NetlinkHeader::default();
        header.message_type = u16::from_ne_bytes([bytes[4], bytes[5]]);
        XfrmMessage::deserialize(&header, &bytes[16..]).expect("an XFRM notification")
    }

    /// `ip xfrm state flush` as `ip xfrm monitor` receives it (XFRM_MSG_FLUSHSA, proto any).
    const FLUSH_SA: [u8; 20] = [
        0x14, 0, 0, 0, 0x1c, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0,
    ];
    /// `ip xfrm policy flush` (XFRM_MSG_FLUSHPOLICY, no payload).
    const FLUSH_POLICY: [u8; 16] = [0x10, 0, 0, 0, 0x1d, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn flushes_are_removals_the_agent_must_look_at() {
        assert_eq!(event_of(parse(&FLUSH_SA)), Some(XfrmEvent::SasFlushed));
        assert_eq!(
            event_of(parse(&FLUSH_POLICY)),
            Some(XfrmEvent::PoliciesFlushed)
        );
        assert!(XfrmEvent::SasFlushed.is_removal());
        assert!(XfrmEvent::PoliciesFlushed.is_removal());
    }
}

//! Subscription to the kernel's XFRM expiry events (`XFRM_MSG_EXPIRE` on the `XFRMNLGRP_EXPIRE`
//! multicast group): a soft expiry means "rekey now", a hard one means the SA is gone.
//! Only events for SAs in Cipherlane's reqid range are passed on.

use std::net::IpAddr;

use cipherlane_datapath::is_our_reqid;
use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_xfrm::{constants::XFRMNLGRP_EXPIRE, XfrmMessage};
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

/// The stream of expiry events for Cipherlane's SAs.
pub struct ExpiryEvents {
    messages: UnboundedReceiver<(NetlinkMessage<XfrmMessage>, SocketAddr)>,
    _handle: xfrmnetlink::Handle,
}

impl ExpiryEvents {
    /// The next event for one of our SAs; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<ExpiryEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(XfrmMessage::Expire(e)) = msg.payload {
                let info = &e.expire.state;
                if !is_our_reqid(info.reqid) {
                    continue;
                }
                let (Some(src), Some(dst)) = (
                    ip_of(&info.saddr, info.family),
                    ip_of(&info.id.daddr, info.family),
                ) else {
                    continue;
                };
                return Some(ExpiryEvent {
                    src,
                    dst,
                    spi: info.id.spi,
                    reqid: info.reqid,
                    hard: e.expire.hard != 0,
                });
            }
        }
        None
    }
}

pub(crate) fn subscribe() -> Result<ExpiryEvents, XfrmError> {
    let (mut conn, handle, messages) =
        xfrmnetlink::new_connection().map_err(|source| XfrmError::Socket {
            what: "NETLINK_XFRM (expiry events)",
            source,
        })?;
    let groups = 1u32 << (XFRMNLGRP_EXPIRE - 1);
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))
        .map_err(|source| XfrmError::Socket {
            what: "NETLINK_XFRM bind to XFRMNLGRP_EXPIRE",
            source,
        })?;
    tokio::spawn(conn);
    Ok(ExpiryEvents {
        messages,
        _handle: handle,
    })
}

//! UDP receive loop.

use super::Inbound;
use crate::sip::endpoint::{Peer, TransportKind};
use crate::sip::message::MAX_MESSAGE_SIZE;
use bytes::Bytes;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Reads datagrams from `socket` and forwards them until the endpoint goes away.
pub fn spawn_udp_receiver(
    socket: Arc<UdpSocket>,
    to_endpoint: mpsc::Sender<Inbound>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_MESSAGE_SIZE + 1];
        loop {
            let (n, addr) = match socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable from an earlier send shows up here on Linux; it
                    // concerns that peer only.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            };
            if n == 0 || n > MAX_MESSAGE_SIZE {
                tracing::debug!(peer = %addr, len = n, "dropping empty or oversized datagram");
                continue;
            }
            // Bare CRLF keep-alives from phones behind NAT need no answer.
            if buf[..n].iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
                continue;
            }
            let peer = Peer {
                transport: TransportKind::Udp,
                addr,
                conn: None,
            };
            let msg = Inbound::Message {
                peer,
                data: Bytes::copy_from_slice(&buf[..n]),
            };
            if to_endpoint.send(msg).await.is_err() {
                return;
            }
        }
    })
}

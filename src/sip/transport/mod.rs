//! Transports: the only SIP code that touches sockets.
//!
//! - UDP: one receive task per socket feeding the endpoint; sends go straight out of the
//!   endpoint task with `try_send_to` (a full socket buffer drops the datagram, which the
//!   transaction layer's retransmissions cover, rather than stalling every call).
//! - TCP: one task per connection reading into a [`framing::StreamFramer`], with an idle
//!   timeout and a connection limit; writes go through a bounded per-connection queue so a
//!   slow peer cannot hold up anyone else.

pub mod framing;
mod tcp;
mod udp;

pub use tcp::{spawn_tcp_listener, TcpConnections};
pub use udp::spawn_udp_receiver;

use crate::sip::endpoint::Peer;
use bytes::Bytes;

/// What the transports hand to the endpoint task.
#[derive(Debug)]
pub enum Inbound {
    /// A message (datagram or framed stream message).
    Message {
        /// Where it came from.
        peer: Peer,
        /// The bytes.
        data: Bytes,
    },
    /// A TCP connection opened: its writer.
    Opened {
        /// Connection id.
        conn: u64,
        /// Queue to the connection's writer.
        writer: tokio::sync::mpsc::Sender<Bytes>,
    },
    /// A TCP connection closed.
    Closed {
        /// Connection id.
        conn: u64,
    },
}

//! Transports: the only SIP code that touches sockets.
//!
//! - UDP: one receive task per socket feeding the endpoint; sends go straight out of the
//!   endpoint task with `try_send_to` (a full socket buffer drops the datagram, which the
//!   transaction layer's retransmissions cover, rather than stalling every call).
//! - TCP: one task per connection reading into a [`framing::StreamFramer`], with an idle
//!   timeout and a connection limit; writes go through a bounded per-connection queue so a
//!   slow peer cannot hold up anyone else.
//! - WebSocket (RFC 7118, `ws:` and `wss:`): like TCP, one SIP message per WebSocket message;
//!   the `sip` subprotocol is required. Browsers are reachable only over the connection they
//!   registered on, so requests to them use it too.

pub mod framing;
mod tcp;
mod udp;
mod ws;

pub use tcp::{spawn_tcp_listener, TcpConnections};
pub use udp::spawn_udp_receiver;
pub use ws::{spawn_ws_listener, tls_acceptor, TlsSetupError};

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A new id for a stream connection (TCP or WebSocket): one sequence for both, so the
/// endpoint can tell any two connections apart.
pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

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

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

/// Accepts connections on `listener` until the process ends, at most `max_connections` at a
/// time (extra ones are closed at once), running `serve` for each in a task of its own.
pub(crate) fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    what: &'static str,
    max_connections: usize,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "{what} accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(peer = %addr, "{what} connection limit reached: closing new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let fut = serve(stream, addr);
            tokio::spawn(async move {
                fut.await;
                drop(permit);
            });
        }
    })
}

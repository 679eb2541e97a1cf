//! Transports: the only SIP code that touches sockets.
//!
//! - UDP: one receive task per socket feeding the endpoint; sends go straight out of the
//!   endpoint task with `try_send_to` (a full socket buffer drops the datagram, which the
//!   transaction layer's retransmissions cover, rather than stalling every call).
//! - TCP: one task per connection reading into a [`framing::StreamFramer`], with an idle
//!   timeout and a connection limit; writes go through a bounded per-connection queue so a
//!   slow peer cannot hold up anyone else.
//! - TLS (`tls:`): a handshake (the certificate reloaded when its files change), then a
//!   connection like a TCP one. Towards trunks this node opens TLS connections itself
//!   (`tls_client.rs`), verifying the provider's certificate.
//! - WebSocket (RFC 7118, `ws:` and `wss:`): like TCP, one SIP message per WebSocket message;
//!   the `sip` subprotocol is required. Browsers are reachable only over the connection they
//!   registered on, so requests to them use it too.

pub mod framing;
mod tcp;
mod tls;
mod tls_client;
mod udp;
mod ws;

pub use tcp::{spawn_tcp_listener, TcpConnections};
pub use tls::{
    handshake_failures as tls_handshake_failures, spawn_tls_listener, tls_acceptor, TlsSetupError,
};
pub use tls_client::{tls_connector, TlsClientFiles};
pub use udp::spawn_udp_receiver;
pub use ws::spawn_ws_listener;

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
        /// A TLS peer's certificate, verified against `sip.tls_client_ca` (RFC 5923
        /// aliases are taken only for names it holds).
        certified: Option<std::sync::Arc<dyn crate::sip::endpoint::CertifiedPeer>>,
    },
    /// A TCP connection closed.
    Closed {
        /// Connection id.
        conn: u64,
    },
    /// A connection this node tried to open (TCP, or TLS with its handshake) failed.
    Unreachable {
        /// Where to.
        peer: Peer,
    },
}

/// Bounds on stream connections (TCP, WebSocket), from `[sip]` settings.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one address (an office NAT needs a few dozen; a flood needs more).
    pub max_per_ip: usize,
    /// Idle time before a connection that has sent a SIP message is closed.
    pub idle: std::time::Duration,
}

/// How long a new connection may stay silent before its first SIP message: a socket that was
/// opened and left (to use up connection slots) goes long before the normal idle timeout.
pub const FIRST_MESSAGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

impl StreamLimits {
    /// How long to wait for the next read, before or after the first message.
    pub fn wait(&self, got_message: bool) -> std::time::Duration {
        if got_message {
            self.idle
        } else {
            self.idle.min(FIRST_MESSAGE_WITHIN)
        }
    }
}

/// Connections per source address, released when a connection's task ends.
#[derive(Clone, Default)]
struct PerIp(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection's place in [`PerIp`]; dropping it gives the place back.
struct PerIpSlot(PerIp, std::net::IpAddr);

impl PerIp {
    fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot(self.clone(), ip))
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut m = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Accepts connections on `listener` until the process ends, at most `limits.max_connections`
/// at a time and `limits.max_per_ip` from one address (extra ones are closed at once), running
/// `serve` for each in a task of its own.
pub(crate) fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    what: &'static str,
    limits: StreamLimits,
    serve: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_ip = PerIp::default();
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
            let Some(slot) = per_ip.take(addr.ip(), limits.max_per_ip) else {
                tracing::warn!(peer = %addr, "{what} connections from this address at their limit: closing new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let fut = serve(stream, addr);
            tokio::spawn(async move {
                fut.await;
                drop(permit);
                drop(slot);
            });
        }
    })
}

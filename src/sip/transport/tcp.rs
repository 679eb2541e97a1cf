//! TCP listener and stream connections (TCP, and TLS once its handshake is done), and the
//! connections this node opens itself: TCP to phones whose own connection closed, TCP and
//! TLS to trunks.

use super::framing::{Frame, StreamFramer};
use super::{Inbound, StreamLimits};
use crate::sip::endpoint::{Peer, TransportKind};
use crate::sip::message::MAX_MESSAGE_SIZE;
use bytes::Bytes;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long opening a connection to a phone may take.
const DIAL_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Writers of open connections, owned by the endpoint task; and the connections this node
/// opened itself (to TCP phones whose own connection closed, to TCP and TLS trunks), by
/// where they go, reused for every later request there.
#[derive(Default)]
pub struct TcpConnections {
    writers: HashMap<u64, mpsc::Sender<Bytes>>,
    dialled: HashMap<DialKey, u64>,
    dialer: Option<(mpsc::Sender<Inbound>, StreamLimits)>,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// A connection this node opens: address, transport and (TLS) the certificate's name, so
/// two trunks naming one server differently never share a connection verified for the other.
type DialKey = (std::net::SocketAddr, TransportKind, Option<Arc<str>>);

impl TcpConnections {
    /// Connections that can also be opened: new ones report to `to_endpoint` like accepted
    /// ones, at most `limits.max_connections` at a time; TLS ones with `tls`.
    pub fn with_dialer(
        to_endpoint: mpsc::Sender<Inbound>,
        limits: StreamLimits,
        tls: Option<tokio_rustls::TlsConnector>,
    ) -> Self {
        TcpConnections {
            dialer: Some((to_endpoint, limits)),
            tls,
            ..Default::default()
        }
    }

    /// Queues bytes for `addr` over `transport` (TCP, or TLS checked for `server_name`) on
    /// the connection this node opened there, opening one first if there is none; false when
    /// that can't be done (no dialer, TLS without a name or connector, at the limit, queue
    /// full).
    pub fn send_to(
        &mut self,
        addr: std::net::SocketAddr,
        transport: TransportKind,
        server_name: Option<Arc<str>>,
        data: Bytes,
    ) -> bool {
        let name = match transport {
            TransportKind::Tls => server_name,
            _ => None,
        };
        let key = (addr, transport, name.clone());
        if let Some(conn) = self.dialled.get(&key) {
            return self.send(*conn, data);
        }
        let Some((to_endpoint, limits)) = &self.dialer else {
            return false;
        };
        let tls = match (transport, name) {
            (TransportKind::Tcp, _) => None,
            (TransportKind::Tls, Some(name)) => {
                let Some(connector) = self.tls.clone() else {
                    return false;
                };
                let Ok(server_name) = ServerName::try_from(name.to_string()) else {
                    tracing::warn!(peer = %addr, name = %name, "not a name a certificate can carry: message dropped");
                    return false;
                };
                Some((connector, server_name))
            }
            _ => return false,
        };
        if self.dialled.len() >= limits.max_connections {
            tracing::warn!(peer = %addr, "outgoing connections at their limit: message dropped");
            return false;
        }
        let conn = super::next_conn_id();
        let (wtx, wrx) = mpsc::channel::<Bytes>(256);
        let queued = wtx.try_send(data).is_ok();
        self.writers.insert(conn, wtx.clone());
        self.dialled.insert(key, conn);
        tokio::spawn(dial(
            addr,
            tls,
            conn,
            (wtx, wrx),
            to_endpoint.clone(),
            *limits,
        ));
        queued
    }

    /// Registers a connection's writer.
    pub fn opened(&mut self, conn: u64, writer: mpsc::Sender<Bytes>) {
        self.writers.insert(conn, writer);
    }

    /// Forgets a connection.
    pub fn closed(&mut self, conn: u64) {
        self.writers.remove(&conn);
        self.dialled.retain(|_, c| *c != conn);
    }

    /// Queues bytes on a connection; false when it is gone or its queue is full.
    pub fn send(&self, conn: u64, data: Bytes) -> bool {
        self.writers
            .get(&conn)
            .is_some_and(|w| w.try_send(data).is_ok())
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.writers.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }
}

/// Accepts connections on `listener` until the endpoint goes away.
pub fn spawn_tcp_listener(
    listener: TcpListener,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) -> tokio::task::JoinHandle<()> {
    super::accept_loop(listener, "tcp", limits, move |stream, addr| {
        connection(
            stream,
            addr,
            TransportKind::Tcp,
            None,
            to_endpoint.clone(),
            limits,
        )
    })
}

/// One stream connection (TCP, or TLS after its handshake, with the peer's verified
/// certificate if it sent one) until it closes: framed messages to the endpoint, the
/// endpoint's bytes through a bounded queue to the peer.
pub(super) async fn connection<S>(
    stream: S,
    addr: std::net::SocketAddr,
    transport: TransportKind,
    certified: Option<Arc<dyn crate::sip::endpoint::CertifiedPeer>>,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn = super::next_conn_id();
    let (wtx, wrx) = mpsc::channel::<Bytes>(256);
    if to_endpoint
        .send(Inbound::Opened {
            conn,
            writer: wtx.clone(),
            certified,
        })
        .await
        .is_err()
    {
        return;
    }
    serve(
        stream,
        addr,
        transport,
        conn,
        (wtx, wrx),
        to_endpoint,
        limits,
    )
    .await;
}

/// Opens a connection to `addr` for the endpoint (its writer already registered as `conn`,
/// with the first message queued): TCP, then the TLS handshake when `tls` is given; then
/// serves it like an accepted one. A connection that cannot be opened is reported as
/// unreachable (the endpoint moves its calls on) and as closed.
async fn dial(
    addr: std::net::SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conn: u64,
    queue: (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>),
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) {
    let transport = if tls.is_some() {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    };
    let failed = |why: String| {
        let to_endpoint = to_endpoint.clone();
        async move {
            tracing::info!(peer = %addr, ?transport, reason = %why, "could not open a connection");
            let peer = Peer {
                transport,
                addr,
                conn: None,
            };
            let _ = to_endpoint.send(Inbound::Unreachable { peer }).await;
            let _ = to_endpoint.send(Inbound::Closed { conn }).await;
        }
    };
    let stream = match tokio::time::timeout(DIAL_WITHIN, tokio::net::TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(e.to_string()).await,
        Err(_) => return failed("connecting timed out".into()).await,
    };
    let _ = stream.set_nodelay(true);
    let Some((connector, name)) = tls else {
        tracing::info!(peer = %addr, conn, "tcp connection opened");
        return serve(stream, addr, transport, conn, queue, to_endpoint, limits).await;
    };
    let shown = format!("{name:?}");
    match tokio::time::timeout(
        super::tls::HANDSHAKE_WITHIN,
        connector.connect(name, stream),
    )
    .await
    {
        Ok(Ok(stream)) => {
            tracing::info!(peer = %addr, conn, server = %shown, "tls connection opened");
            serve(stream, addr, transport, conn, queue, to_endpoint, limits).await
        }
        Ok(Err(e)) => {
            super::tls::handshake_failed(addr, &e.to_string());
            failed(format!("TLS handshake: {e}")).await
        }
        Err(_) => {
            super::tls::handshake_failed(addr, "timed out");
            failed("TLS handshake timed out".into()).await
        }
    }
}

/// Reads framed messages from a connection to the endpoint and writes the endpoint's queue
/// to it, until either side ends.
async fn serve<S>(
    stream: S,
    addr: std::net::SocketAddr,
    transport: TransportKind,
    conn: u64,
    (wtx, mut wrx): (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>),
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let peer = Peer {
        transport,
        addr,
        conn: Some(conn),
    };
    let mut framer = StreamFramer::new(MAX_MESSAGE_SIZE);
    let mut buf = vec![0u8; 16 * 1024];
    let mut got_message = false;
    'read: loop {
        let wait = limits.wait(got_message);
        let n = match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Err(_) => {
                tracing::debug!(peer = %addr, ?transport, "connection idle: closing");
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(data))) => {
                    got_message = true;
                    if to_endpoint
                        .send(Inbound::Message { peer, data })
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    let _ = wtx.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(peer = %addr, ?transport, error = %e, "closing connection on framing error");
                    break 'read;
                }
            }
        }
    }
    drop(wtx);
    let _ = to_endpoint.send(Inbound::Closed { conn }).await;
    let _ = writer.await;
}

//! TCP listener and stream connections (TCP, and TLS once its handshake is done).

use super::framing::{Frame, StreamFramer};
use super::{Inbound, StreamLimits};
use crate::sip::endpoint::{Peer, TransportKind};
use crate::sip::message::MAX_MESSAGE_SIZE;
use bytes::Bytes;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long opening a connection to a phone may take.
const DIAL_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Writers of open connections, owned by the endpoint task; and the connections this node
/// opened itself (to TCP phones whose own connection closed), by the address dialled, reused
/// for every later request there.
#[derive(Default)]
pub struct TcpConnections {
    writers: HashMap<u64, mpsc::Sender<Bytes>>,
    dialled: HashMap<std::net::SocketAddr, u64>,
    dialer: Option<(mpsc::Sender<Inbound>, StreamLimits)>,
}

impl TcpConnections {
    /// Connections that can also be opened: new ones report to `to_endpoint` like accepted
    /// ones, at most `limits.max_connections` at a time.
    pub fn with_dialer(to_endpoint: mpsc::Sender<Inbound>, limits: StreamLimits) -> Self {
        TcpConnections {
            dialer: Some((to_endpoint, limits)),
            ..Default::default()
        }
    }

    /// Queues bytes for `addr` over TCP on the connection this node opened there, opening
    /// one first if there is none; false when that can't be done (no dialer, at the limit,
    /// queue full).
    pub fn send_to(&mut self, addr: std::net::SocketAddr, data: Bytes) -> bool {
        if let Some(conn) = self.dialled.get(&addr) {
            return self.send(*conn, data);
        }
        let Some((to_endpoint, limits)) = &self.dialer else {
            return false;
        };
        if self.dialled.len() >= limits.max_connections {
            tracing::warn!(peer = %addr, "outgoing tcp connections at their limit: message dropped");
            return false;
        }
        let conn = super::next_conn_id();
        let (wtx, wrx) = mpsc::channel::<Bytes>(256);
        let queued = wtx.try_send(data).is_ok();
        self.writers.insert(conn, wtx.clone());
        self.dialled.insert(addr, conn);
        tokio::spawn(dial(addr, conn, (wtx, wrx), to_endpoint.clone(), *limits));
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
            to_endpoint.clone(),
            limits,
        )
    })
}

/// One stream connection (TCP, or TLS after its handshake) until it closes: framed messages
/// to the endpoint, the endpoint's bytes through a bounded queue to the peer.
pub(super) async fn connection<S>(
    stream: S,
    addr: std::net::SocketAddr,
    transport: TransportKind,
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

/// Opens a TCP connection to `addr` for the endpoint (its writer already registered as
/// `conn`, with the first message queued), then serves it like an accepted one. A failed
/// connect is reported as the connection closing.
async fn dial(
    addr: std::net::SocketAddr,
    conn: u64,
    queue: (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>),
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) {
    match tokio::time::timeout(DIAL_WITHIN, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            tracing::info!(peer = %addr, conn, "tcp connection opened to a phone");
            serve(
                stream,
                addr,
                TransportKind::Tcp,
                conn,
                queue,
                to_endpoint,
                limits,
            )
            .await;
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %addr, error = %e, "could not open a tcp connection");
            let _ = to_endpoint.send(Inbound::Closed { conn }).await;
        }
        Err(_) => {
            tracing::info!(peer = %addr, "opening a tcp connection timed out");
            let _ = to_endpoint.send(Inbound::Closed { conn }).await;
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

//! TCP listener and connections.

use super::framing::{Frame, StreamFramer};
use super::{Inbound, StreamLimits};
use crate::sip::endpoint::{Peer, TransportKind};
use crate::sip::message::MAX_MESSAGE_SIZE;
use bytes::Bytes;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Writers of open connections, owned by the endpoint task.
#[derive(Default)]
pub struct TcpConnections {
    writers: HashMap<u64, mpsc::Sender<Bytes>>,
}

impl TcpConnections {
    /// Registers a connection's writer.
    pub fn opened(&mut self, conn: u64, writer: mpsc::Sender<Bytes>) {
        self.writers.insert(conn, writer);
    }

    /// Forgets a connection.
    pub fn closed(&mut self, conn: u64) {
        self.writers.remove(&conn);
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
        connection(stream, addr, to_endpoint.clone(), limits)
    })
}

async fn connection(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) {
    let conn = super::next_conn_id();
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::channel::<Bytes>(256);
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
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let peer = Peer {
        transport: TransportKind::Tcp,
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
                tracing::debug!(peer = %addr, "tcp connection idle: closing");
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
                    tracing::info!(peer = %addr, error = %e, "closing tcp connection on framing error");
                    break 'read;
                }
            }
        }
    }
    drop(wtx);
    let _ = to_endpoint.send(Inbound::Closed { conn }).await;
    let _ = writer.await;
}

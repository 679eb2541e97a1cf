//! SIP over WebSocket (RFC 7118), plain (`ws:`) or over TLS (`wss:`), for browser softphones.
//!
//! Each WebSocket message carries exactly one SIP message, so no framing is needed. The
//! handshake must agree on the `sip` subprotocol (Chromium drops a connection whose answer
//! lacks it); a client that does not offer it is refused. Any request path is accepted.
//! A connection is handed to the endpoint like a TCP one (`Inbound::Opened` with its writer,
//! messages, `Inbound::Closed`): answers, and requests to a browser registered over it, go
//! back on the same connection, which is the only way to reach a browser.

use super::{next_conn_id, Inbound, StreamLimits};
use crate::sip::endpoint::{Peer, TransportKind};
use crate::sip::message::MAX_MESSAGE_SIZE;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Accepts WebSocket connections on `listener` (TLS first when `tls` is given) until the
/// endpoint goes away.
pub fn spawn_ws_listener(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) -> tokio::task::JoinHandle<()> {
    super::accept_loop(listener, "websocket", limits, move |stream, addr| {
        let tx = to_endpoint.clone();
        let tls = tls.clone();
        async move {
            match tls {
                Some(acceptor) => {
                    // A stalled TLS handshake must not hold a connection slot forever.
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => connection(s, addr, TransportKind::Wss, tx, limits).await,
                        Ok(Err(e)) => super::tls::handshake_failed(addr, &e.to_string()),
                        Err(_) => super::tls::handshake_failed(addr, "timed out"),
                    }
                }
                None => connection(stream, addr, TransportKind::Ws, tx, limits).await,
            }
        }
    })
}

/// The handshake answer: the `sip` subprotocol, or 400 for a client that does not speak it.
#[allow(clippy::result_large_err)]
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        let mut r = ErrorResponse::new(Some(
            "this WebSocket speaks SIP only (Sec-WebSocket-Protocol: sip)".into(),
        ));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Err(r);
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

async fn connection<S>(
    stream: S,
    addr: SocketAddr,
    transport: TransportKind,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config));
    let ws = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "websocket handshake refused");
            return;
        }
        Err(_) => return,
    };
    let conn = next_conn_id();
    let (mut sink, mut source) = ws.split();
    let (wtx, mut wrx) = mpsc::channel::<Bytes>(256);
    if to_endpoint
        .send(Inbound::Opened {
            conn,
            writer: wtx.clone(),
            certified: None,
        })
        .await
        .is_err()
    {
        return;
    }
    tracing::debug!(peer = %addr, conn, ?transport, "websocket opened");
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            // SIP is text; a message that is not UTF-8 (a binary body) goes as binary.
            let msg = match String::from_utf8(b.to_vec()) {
                Ok(s) => Message::Text(s.into()),
                Err(e) => Message::Binary(e.into_bytes().into()),
            };
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let peer = Peer {
        transport,
        addr,
        conn: Some(conn),
    };
    let mut got_message = false;
    loop {
        let msg = match tokio::time::timeout(limits.wait(got_message), source.next()).await {
            Err(_) => {
                tracing::debug!(peer = %addr, "websocket idle: closing");
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(m))) => m,
        };
        let data = match msg {
            Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
            Message::Binary(b) => Bytes::copy_from_slice(&b),
            Message::Close(_) => break,
            // Pings are answered by the library; pongs and raw frames carry nothing for us.
            _ => continue,
        };
        // A keep-alive CRLF (some clients send one) is not a message.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        got_message = true;
        if to_endpoint
            .send(Inbound::Message { peer, data })
            .await
            .is_err()
        {
            break;
        }
    }
    drop(wtx);
    let _ = to_endpoint.send(Inbound::Closed { conn }).await;
    let _ = writer.await;
    tracing::debug!(peer = %addr, conn, "websocket closed");
}

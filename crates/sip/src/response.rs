//! Writing responses (RFC 3261 §8.2.6) and the few requests the server originates.
//!
//! Messages are written as text directly: it is the shortest path from the request's own
//! header values (which must be echoed byte for byte) to the wire, and keeps the hot path free
//! of re-parsing.

use super::headers::stamp_via;
use super::message::{ReplyHeaders, SipRequest};
use bytes::Bytes;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Standard reason phrase for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A response under construction (cloned to resend a reliable provisional as it was).
#[derive(Clone)]
pub struct ResponseBuilder {
    code: u16,
    reason: String,
    to_tag: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(String, Vec<u8>)>,
}

impl ResponseBuilder {
    /// A response with the standard reason phrase.
    pub fn new(code: u16) -> Self {
        ResponseBuilder {
            code,
            reason: reason_phrase(code).to_string(),
            to_tag: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Replaces the reason phrase.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Adds a To tag when the request's To has none.
    pub fn to_tag(mut self, tag: &str) -> Self {
        self.to_tag = Some(tag.to_string());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some((content_type.to_string(), body.into()));
        self
    }

    /// Status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Writes the response to `req`, received from `source`.
    pub fn build(self, req: &SipRequest, source: SocketAddr, server: &str) -> Bytes {
        let to = req.header("To").unwrap_or_default();
        // RFC 3261 §12.1.1: a response that makes a dialog carries the request's
        // Record-Route, so the caller learns the route set (a proxy that record-routes).
        let record_route = if (101..300).contains(&self.code) {
            req.header_values_raw("Record-Route")
        } else {
            Vec::new()
        };
        self.write(
            &req.vias,
            &record_route,
            req.header("From").unwrap_or_default(),
            to,
            req.to.tag().is_some(),
            &req.call_id,
            req.header("CSeq").unwrap_or_default(),
            source,
            server,
        )
    }

    /// Writes the response from scraped headers of a request that failed to parse.
    pub fn build_raw(self, h: &ReplyHeaders, source: SocketAddr, server: &str) -> Bytes {
        let has_tag = h.to.to_ascii_lowercase().contains(";tag=");
        self.write(
            &h.vias,
            &[],
            &h.from,
            &h.to,
            has_tag,
            &h.call_id,
            &h.cseq,
            source,
            server,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        self,
        vias: &[String],
        record_route: &[String],
        from: &str,
        to: &str,
        to_has_tag: bool,
        call_id: &str,
        cseq: &str,
        source: SocketAddr,
        server: &str,
    ) -> Bytes {
        let mut s = String::with_capacity(512);
        let _ = write!(s, "SIP/2.0 {} {}\r\n", self.code, self.reason);
        for (i, v) in vias.iter().enumerate() {
            if i == 0 {
                let _ = write!(s, "Via: {}\r\n", stamp_via(v, source));
            } else {
                let _ = write!(s, "Via: {v}\r\n");
            }
        }
        for r in record_route {
            let _ = write!(s, "Record-Route: {r}\r\n");
        }
        let _ = write!(s, "From: {from}\r\n");
        match (&self.to_tag, to_has_tag) {
            (Some(tag), false) if self.code > 100 => {
                let _ = write!(s, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(s, "To: {to}\r\n");
            }
        }
        let _ = write!(s, "Call-ID: {call_id}\r\nCSeq: {cseq}\r\n");
        for (n, v) in &self.headers {
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Server: {server}\r\n");
        let mut out = match &self.body {
            Some((ct, body)) => {
                let _ = write!(
                    s,
                    "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let mut b = s.into_bytes();
                b.extend_from_slice(body);
                b
            }
            None => {
                s.push_str("Content-Length: 0\r\n\r\n");
                s.into_bytes()
            }
        };
        out.shrink_to_fit();
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, SipMessage};

    #[test]
    fn echoes_headers_and_adds_tag() {
        let m = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;rport\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKb\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(req) = parse(m.as_bytes()).expect("parse") else {
            panic!()
        };
        let src: SocketAddr = "192.0.2.9:1234".parse().expect("addr");
        let out = ResponseBuilder::new(200)
            .to_tag("xyz")
            .build(&req, src, "switchyard");
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;received=192.0.2.9;rport=1234\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKb\r\n"));
        assert!(text.contains("To: <sip:x@y>;tag=xyz\r\n"));
        let SipMessage::Response(r) = parse(&out).expect("reparse") else {
            panic!()
        };
        assert_eq!(r.code, 200);
    }

    #[test]
    fn dialog_making_responses_carry_the_record_route() {
        let m = "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP p;branch=z9hG4bKa\r\nRecord-Route: <sip:p2;lr>, <sip:p1;lr>\r\nRecord-Route: <sip:p0;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Request(req) = parse(m.as_bytes()).expect("parse") else {
            panic!()
        };
        let src: SocketAddr = "192.0.2.9:1234".parse().expect("addr");
        let rr = "Record-Route: <sip:p2;lr>, <sip:p1;lr>\r\nRecord-Route: <sip:p0;lr>\r\n";
        for (code, carries) in [(100, false), (180, true), (200, true), (486, false)] {
            let out = ResponseBuilder::new(code)
                .to_tag("t")
                .build(&req, src, "switchyard");
            let text = String::from_utf8(out.to_vec()).expect("utf8");
            assert_eq!(text.contains(rr), carries, "{code}: {text}");
        }
    }
}

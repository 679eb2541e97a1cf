//! SIP message intake: from bytes on the wire to a validated [`SipRequest`] or [`SipResponse`].
//!
//! rsip tokenizes the start line, URIs and headers, but it reads neither folded header lines,
//! nor compact header names (`v:`, `i:`, `m:` …), nor `Content-Length`. Those are RFC 3261
//! §7.3 rules every phone relies on, so this module normalises the header section first
//! (unfolds, expands compact names, applies size limits, cuts the body at `Content-Length`) and
//! only then hands the bytes to rsip. After parsing it extracts and checks the headers every
//! transaction needs (Via, From, To, Call-ID, CSeq), so the rest of the stack works with
//! fields that are known to be present.
//!
//! When a message cannot be parsed, [`ParseFailure::reply_headers`] still scrapes the headers
//! needed to answer `400 Bad Request` (or `501` for an unknown method): a phone that sent a
//! broken request gets told why instead of retransmitting into silence.

use super::headers::{split_comma_list, NameAddr, Via};
use rsip::Method;

/// Largest message we accept on any transport. A UDP datagram cannot exceed this anyway.
pub const MAX_MESSAGE_SIZE: usize = 65_535;
/// Most header lines a message may carry (after unfolding).
pub const MAX_HEADER_LINES: usize = 256;
/// Longest single header line (after unfolding).
pub const MAX_HEADER_LINE: usize = 8_192;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace arrived.
    #[error("empty message")]
    Empty,
    /// The message is larger than [`MAX_MESSAGE_SIZE`].
    #[error("message larger than {MAX_MESSAGE_SIZE} bytes")]
    TooLarge,
    /// The header section has no terminating empty line.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// Header bytes are not UTF-8 (SIP headers are UTF-8 text).
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// More header lines than [`MAX_HEADER_LINES`], or one longer than [`MAX_HEADER_LINE`].
    #[error("header section too large")]
    HeadersTooLarge,
    /// A header line without a `name:` part.
    #[error("malformed header line")]
    MalformedHeaderLine,
    /// Content-Length is not a number, is negative or appears twice with different values.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Fewer body bytes arrived than Content-Length announced.
    #[error("body shorter than Content-Length")]
    ShortBody,
    /// The start line is not `METHOD URI SIP/2.0` or `SIP/2.0 CODE REASON`.
    #[error("malformed start line")]
    BadStartLine,
    /// A protocol version other than SIP/2.0.
    #[error("unsupported SIP version")]
    BadVersion,
    /// rsip refused the message (bad URI, bad header syntax).
    #[error("unparsable message: {0}")]
    Syntax(String),
    /// A header every request and response needs is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A mandatory header is present but unusable.
    #[error("invalid {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    /// A method this server does not know (answered 501 when possible).
    #[error("unknown method {0}")]
    UnknownMethod(String),
    /// Status code outside 100..=699.
    #[error("invalid status code")]
    BadStatusCode,
    /// A control character (NUL, …) outside an escaped quoted-pair.
    #[error("control character in header {0}")]
    ControlCharacter(String),
}

/// A refused message, with what is needed to tell the sender.
#[derive(Debug, Clone)]
pub struct ParseFailure {
    /// What was wrong.
    pub error: ParseError,
    /// When the message was a request whose Via/From/To/Call-ID/CSeq could be read, the raw
    /// header lines to copy into an error response.
    pub reply_headers: Option<Box<ReplyHeaders>>,
}

/// The raw header values an error response must echo (RFC 3261 §8.2.6.2).
#[derive(Debug, Clone)]
pub struct ReplyHeaders {
    /// All Via values, in order.
    pub vias: Vec<String>,
    /// From header value.
    pub from: String,
    /// To header value.
    pub to: String,
    /// Call-ID value.
    pub call_id: String,
    /// CSeq value.
    pub cseq: String,
    /// The request method token as sent (not ACK: an ACK is never answered).
    pub method: String,
}

/// A parsed, validated SIP request.
#[derive(Debug, Clone)]
pub struct SipRequest {
    /// The rsip representation (method, Request-URI, all headers, body).
    pub raw: rsip::Request,
    /// Header lines after unfolding and compact-name expansion, in order, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Every Via value, top first, one entry per hop even when a line held several.
    pub vias: Vec<String>,
    /// The parsed top Via.
    pub via: Via,
    /// From header.
    pub from: NameAddr,
    /// To header.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// Max-Forwards, when present.
    pub max_forwards: Option<u32>,
}

/// A parsed, validated SIP response.
#[derive(Debug, Clone)]
pub struct SipResponse {
    /// The rsip representation.
    pub raw: rsip::Response,
    /// Header lines after unfolding and compact-name expansion.
    pub headers: Vec<(String, String)>,
    /// Status code 100..=699.
    pub code: u16,
    /// Every Via value, top first.
    pub vias: Vec<String>,
    /// The parsed top Via.
    pub via: Via,
    /// From header.
    pub from: NameAddr,
    /// To header.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: Method,
}

/// Either kind of message.
#[derive(Debug, Clone)]
pub enum SipMessage {
    /// A request.
    Request(SipRequest),
    /// A response.
    Response(SipResponse),
}

impl SipRequest {
    /// The request method.
    pub fn method(&self) -> Method {
        self.raw.method
    }

    /// The Request-URI.
    pub fn uri(&self) -> &rsip::Uri {
        &self.raw.uri
    }

    /// First header with this name (case-insensitive), as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// All values of a header with this name, each comma-separated entry on its own.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }

    /// Each occurrence of a header, whole (for values such as digest credentials whose commas
    /// do not separate entries).
    pub fn header_values_raw(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.raw.body
    }
}

impl SipResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.raw.body
    }
}

/// First value of the named header (case-insensitive name).
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every comma-separated value of every header with this name, in order.
pub fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| split_comma_list(v))
        .collect()
}

/// Long form of a compact header name (RFC 3261 §7.3.3 and extensions).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        _ => name,
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// A header section split into unfolded `(name, value)` lines.
struct HeaderSection<'a> {
    start_line: &'a str,
    headers: Vec<(String, String)>,
}

fn split_headers(head: &str) -> Result<HeaderSection<'_>, ParseError> {
    let mut lines = head.split("\r\n");
    let start_line = lines.next().ok_or(ParseError::BadStartLine)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            // Folded continuation (RFC 3261 §7.3.1): joins the previous line with one space.
            let last = headers.last_mut().ok_or(ParseError::MalformedHeaderLine)?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            if last.1.len() > MAX_HEADER_LINE {
                return Err(ParseError::HeadersTooLarge);
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.len() > MAX_HEADER_LINE {
            return Err(ParseError::HeadersTooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::MalformedHeaderLine)?;
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ParseError::MalformedHeaderLine);
        }
        let value = value.trim();
        if has_bare_control(value) {
            return Err(ParseError::ControlCharacter(name.to_string()));
        }
        headers.push((expand_compact(name).to_string(), value.to_string()));
        if headers.len() > MAX_HEADER_LINES {
            return Err(ParseError::HeadersTooLarge);
        }
    }
    Ok(HeaderSection {
        start_line,
        headers,
    })
}

/// RFC 3261 §25.1 allows control characters in a header value only as a quoted-pair
/// (`\` then the byte) inside a quoted string; tab is linear whitespace.
fn has_bare_control(value: &str) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    for b in value.bytes() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'\t' => {}
            0..=0x1f | 0x7f => return true,
            _ => {}
        }
    }
    false
}

/// rsip's URI grammar refuses `;` and `=` in the user part (RFC 3261 allows them, RFC 4475
/// §3.1.1.9). Escaping them keeps the meaning: user parts are compared after `%` decoding.
fn escape_request_uri_user(start_line: &str) -> std::borrow::Cow<'_, str> {
    let mut parts = start_line.splitn(3, ' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return start_line.into();
    };
    let Some(at) = uri.rfind('@') else {
        return start_line.into();
    };
    let Some(colon) = uri.find(':') else {
        return start_line.into();
    };
    if colon >= at || !uri[colon + 1..at].contains([';', '=', '?']) {
        return start_line.into();
    }
    let user = uri[colon + 1..at]
        .replace(';', "%3B")
        .replace('=', "%3D")
        .replace('?', "%3F");
    format!(
        "{method} {}{user}{} {version}",
        &uri[..colon + 1],
        &uri[at..]
    )
    .into()
}

/// Where the header section ends: index of the first byte of the body.
fn find_body_start(data: &[u8]) -> Option<(usize, usize)> {
    // Returns (end of header text, start of body).
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, p + 4))
}

/// Content-Length as announced, if any. Several equal values are tolerated, different ones
/// are not.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            let n: usize = value.parse().map_err(|_| ParseError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Scrapes what an error response needs from a header section that failed to parse.
fn scrape_reply_headers(start_line: &str, headers: &[(String, String)]) -> Option<ReplyHeaders> {
    let method = start_line.split(' ').next()?.to_string();
    if method.is_empty() || method.starts_with("SIP/") || method == "ACK" {
        return None;
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let vias: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Via"))
        .flat_map(|(_, v)| split_comma_list(v))
        .collect();
    if vias.is_empty() {
        return None;
    }
    // Only answer when the top Via can be read, or we do not know where to send the answer.
    Via::parse(&vias[0]).ok()?;
    Some(ReplyHeaders {
        vias,
        from: get("From")?,
        to: get("To")?,
        call_id: get("Call-ID")?,
        cseq: get("CSeq")?,
        method,
    })
}

/// Parses one complete message (a datagram, or one message cut from a stream).
pub fn parse(data: &[u8]) -> Result<SipMessage, ParseFailure> {
    let fail = |error| ParseFailure {
        error,
        reply_headers: None,
    };
    if data.len() > MAX_MESSAGE_SIZE {
        return Err(fail(ParseError::TooLarge));
    }
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let skip = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or_else(|| fail(ParseError::Empty))?;
    let data = &data[skip..];
    let (head_end, body_start) =
        find_body_start(data).ok_or_else(|| fail(ParseError::Unterminated))?;
    let head = std::str::from_utf8(&data[..head_end]).map_err(|_| fail(ParseError::NotUtf8))?;
    let section = split_headers(head).map_err(fail)?;
    let with_reply = |error| ParseFailure {
        error,
        reply_headers: scrape_reply_headers(section.start_line, &section.headers).map(Box::new),
    };
    let rest = &data[body_start..];
    let body = match content_length(&section.headers).map_err(with_reply)? {
        Some(n) if n > rest.len() => return Err(with_reply(ParseError::ShortBody)),
        Some(n) => &rest[..n],
        None => rest,
    };

    let mut normalised = String::with_capacity(head.len() + 32);
    normalised.push_str(&escape_request_uri_user(section.start_line));
    normalised.push_str("\r\n");
    for (name, value) in &section.headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        normalised.push_str(name);
        normalised.push_str(": ");
        normalised.push_str(value);
        normalised.push_str("\r\n");
    }
    normalised.push_str("\r\n");
    let mut bytes = normalised.into_bytes();
    bytes.extend_from_slice(body);

    let is_response = section.start_line.starts_with("SIP/");
    if is_response {
        let parts: Vec<&str> = section.start_line.splitn(3, ' ').collect();
        if parts.len() < 2 {
            return Err(fail(ParseError::BadStartLine));
        }
        if parts[0] != "SIP/2.0" {
            return Err(fail(ParseError::BadVersion));
        }
        let code: u16 = parts[1]
            .parse()
            .map_err(|_| fail(ParseError::BadStatusCode))?;
        if !(100..=699).contains(&code) {
            return Err(fail(ParseError::BadStatusCode));
        }
    } else {
        let parts: Vec<&str> = section.start_line.split(' ').collect();
        if parts.len() != 3 {
            return Err(with_reply(ParseError::BadStartLine));
        }
        if !parts[2].eq_ignore_ascii_case("SIP/2.0") {
            return Err(with_reply(ParseError::BadVersion));
        }
        if !parts[0].bytes().all(is_token_char) || parts[0].is_empty() {
            return Err(with_reply(ParseError::BadStartLine));
        }
        if parts[0].parse::<Method>().is_err() {
            return Err(with_reply(ParseError::UnknownMethod(parts[0].to_string())));
        }
    }

    let message = rsip::SipMessage::try_from(bytes.as_slice())
        .map_err(|e| with_reply(ParseError::Syntax(short_error(&e.to_string()))))?;
    let headers = section.headers.clone();
    let message = match message {
        rsip::SipMessage::Request(r) => validate_request(r, headers).map(SipMessage::Request),
        rsip::SipMessage::Response(r) => validate_response(r, headers).map(SipMessage::Response),
    };
    message.map_err(with_reply)
}

fn short_error(e: &str) -> String {
    // rsip's nom errors quote the remaining input; keep logs and Warning headers short.
    e.chars().take(80).collect()
}

struct Common {
    vias: Vec<String>,
    via: Via,
    from: NameAddr,
    to: NameAddr,
    call_id: String,
    cseq: u32,
    cseq_method: Method,
}

fn common_headers(headers: &[(String, String)]) -> Result<Common, ParseError> {
    let vias = header_values(headers, "Via");
    let top = vias.first().ok_or(ParseError::MissingHeader("Via"))?;
    let via = Via::parse(top).map_err(|_| ParseError::BadHeader("Via"))?;
    let from = header_value(headers, "From").ok_or(ParseError::MissingHeader("From"))?;
    let from = NameAddr::parse(from).map_err(|_| ParseError::BadHeader("From"))?;
    let to = header_value(headers, "To").ok_or(ParseError::MissingHeader("To"))?;
    let to = NameAddr::parse(to).map_err(|_| ParseError::BadHeader("To"))?;
    let call_id = header_value(headers, "Call-ID")
        .ok_or(ParseError::MissingHeader("Call-ID"))?
        .trim()
        .to_string();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(ParseError::BadHeader("Call-ID"));
    }
    let cseq = header_value(headers, "CSeq").ok_or(ParseError::MissingHeader("CSeq"))?;
    let mut it = cseq.split_whitespace();
    let num: u32 = it
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(ParseError::BadHeader("CSeq"))?;
    let cseq_method: Method = it
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or(ParseError::BadHeader("CSeq"))?;
    if it.next().is_some() || num > 0x7fff_ffff {
        return Err(ParseError::BadHeader("CSeq"));
    }
    Ok(Common {
        vias,
        via,
        from,
        to,
        call_id,
        cseq: num,
        cseq_method,
    })
}

fn validate_request(
    raw: rsip::Request,
    headers: Vec<(String, String)>,
) -> Result<SipRequest, ParseError> {
    let c = common_headers(&headers)?;
    if c.cseq_method != raw.method {
        return Err(ParseError::CSeqMismatch);
    }
    let max_forwards = match header_value(&headers, "Max-Forwards") {
        Some(v) => Some(
            v.trim()
                .parse::<u32>()
                .map_err(|_| ParseError::BadHeader("Max-Forwards"))?,
        ),
        None => None,
    };
    Ok(SipRequest {
        raw,
        headers,
        vias: c.vias,
        via: c.via,
        from: c.from,
        to: c.to,
        call_id: c.call_id,
        cseq: c.cseq,
        max_forwards,
    })
}

fn validate_response(
    raw: rsip::Response,
    headers: Vec<(String, String)>,
) -> Result<SipResponse, ParseError> {
    let c = common_headers(&headers)?;
    let code = raw.status_code.code();
    if !(100..=699).contains(&code) {
        return Err(ParseError::BadStatusCode);
    }
    Ok(SipResponse {
        raw,
        headers,
        code,
        vias: c.vias,
        via: c.via,
        from: c.from,
        to: c.to,
        call_id: c.call_id,
        cseq: c.cseq,
        cseq_method: c.cseq_method,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:500@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: <sip:500@example.com>\r\n\
From: Alice <sip:100@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:100@10.0.0.1>\r\n\
Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn parses_a_plain_invite() {
        let SipMessage::Request(r) = parse(INVITE.as_bytes()).expect("parse") else {
            panic!("not a request")
        };
        assert_eq!(r.method(), Method::Invite);
        assert_eq!(r.cseq, 314159);
        assert_eq!(r.call_id, "a84b4c76e66710");
        assert_eq!(r.from.tag(), Some("1928301774"));
        assert_eq!(r.via.branch.as_deref(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.body(), b"v=0\n");
    }

    #[test]
    fn unfolds_and_expands_compact_headers() {
        let msg = "OPTIONS sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\nf: <sip:a@b>;tag=1\r\nt: <sip:x@y>\r\ni: abc\r\nSubject: a\r\n  folded\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        let SipMessage::Request(r) = parse(msg.as_bytes()).expect("parse") else {
            panic!()
        };
        assert_eq!(r.call_id, "abc");
        assert_eq!(r.header("Subject"), Some("a folded"));
    }

    #[test]
    fn short_body_is_refused_with_reply_headers() {
        let msg = INVITE.replace("Content-Length: 4", "Content-Length: 400");
        let err = parse(msg.as_bytes()).expect_err("must fail");
        assert_eq!(err.error, ParseError::ShortBody);
        assert!(err.reply_headers.is_some());
    }

    #[test]
    fn cseq_mismatch_is_refused() {
        let msg = INVITE.replace("314159 INVITE", "314159 BYE");
        assert_eq!(
            parse(msg.as_bytes()).expect_err("fail").error,
            ParseError::CSeqMismatch
        );
    }

    #[test]
    fn junk_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000 {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push((seed & 0xff) as u8);
            }
            let _ = parse(&buf);
            // Junk appended to a valid head, too.
            let mut mixed = INVITE.as_bytes()[..(len % INVITE.len())].to_vec();
            mixed.extend_from_slice(&buf);
            let _ = parse(&mixed);
        }
    }
}

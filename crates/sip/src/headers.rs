//! Small readers for the header values the core acts on: Via, name-addr (From/To/Contact),
//! generic `;param=value` lists and comma-separated header lists.
//!
//! They are deliberately forgiving about whitespace and case (phones differ) and strict about
//! what the transaction layer depends on (a Via must have a protocol and a sent-by).

use std::net::SocketAddr;

/// Why a header value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct HeaderError(pub &'static str);

/// Splits a header value at top-level commas: not inside quotes or `<…>`.
pub fn split_comma_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if in_quotes => {
                escaped = true;
                cur.push(c)
            }
            '"' => {
                in_quotes = !in_quotes;
                cur.push(c)
            }
            '<' if !in_quotes => {
                in_angle = true;
                cur.push(c)
            }
            '>' if !in_quotes => {
                in_angle = false;
                cur.push(c)
            }
            ',' if !in_quotes && !in_angle => {
                let t = cur.trim();
                if !t.is_empty() {
                    out.push(t.to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
    out
}

/// Parses `;a=b;c;d="e"` into pairs (names lower-cased, quotes kept off values).
pub fn parse_params(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for part in split_outside_quotes(s, ';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) => out.push((
                k.trim().to_ascii_lowercase(),
                Some(v.trim().trim_matches('"').to_string()),
            )),
            None => out.push((part.to_ascii_lowercase(), None)),
        }
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// A parsed Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `WS`, `WSS`, upper-cased.
    pub transport: String,
    /// sent-by host (brackets stripped for IPv6).
    pub host: String,
    /// sent-by port, if given.
    pub port: Option<u16>,
    /// branch parameter.
    pub branch: Option<String>,
    /// `rport` present (with or without a value).
    pub rport: bool,
    /// `rport`'s value: the source port a proxy saw (RFC 3581).
    pub rport_value: Option<u16>,
    /// `received` parameter.
    pub received: Option<String>,
    /// `alias` present: the client that opened this connection offers it for requests
    /// back to sent-by (RFC 5923).
    pub alias: bool,
}

impl Via {
    /// Parses one Via value (not a comma list).
    pub fn parse(value: &str) -> Result<Via, HeaderError> {
        let err = HeaderError("Via");
        // sent-protocol is `name / version / transport`, with optional whitespace around the
        // slashes (RFC 3261 §25.1 SLASH); sent-by follows after whitespace.
        let mut fields = Vec::with_capacity(3);
        let mut rest = value.trim();
        for i in 0..3 {
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start();
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or(err.clone())?.trim_start();
            }
        }
        let (name, version, transport) = (fields[0], fields[1], fields[2]);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(err);
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i + 1..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by).ok_or(err.clone())?;
        if host.is_empty() {
            return Err(err);
        }
        let mut via = Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            branch: None,
            rport: false,
            rport_value: None,
            received: None,
            alias: false,
        };
        for (k, v) in parse_params(params) {
            match k.as_str() {
                "branch" => via.branch = v,
                "rport" => {
                    via.rport = true;
                    via.rport_value = v.and_then(|p| p.parse().ok());
                }
                "received" => via.received = v,
                "alias" => via.alias = true,
                _ => {}
            }
        }
        Ok(via)
    }

    /// Where the request this Via names came from, as the next hop saw it: `received` and
    /// `rport` when that hop recorded them (RFC 3261 §18.2.1, RFC 3581), else sent-by (port
    /// 5060 when none). None when no address is written there (a host name).
    pub fn source_address(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = match &self.received {
            Some(r) => r.trim_matches(['[', ']']).parse().ok()?,
            None => self.host.parse().ok()?,
        };
        let port = self.rport_value.or(self.port).unwrap_or(5060);
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// True for a branch with the RFC 3261 magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .as_deref()
            .is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// Splits `host[:port]`, `[v6][:port]`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = rest[..end].to_string();
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.trim().is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            Some((h.trim().to_string(), Some(p.trim().parse().ok()?)))
        }
        Some(_) => Some((s.to_string(), None)), // bare IPv6 without brackets
        None => Some((s.to_string(), None)),
    }
}

/// Adds `received` and fills `rport` in a top Via value as RFC 3261 §18.2.1 and RFC 3581 ask.
pub fn stamp_via(value: &str, source: SocketAddr) -> String {
    let Ok(via) = Via::parse(value) else {
        return value.to_string();
    };
    let ip = source.ip().to_string();
    let mut out = String::with_capacity(value.len() + 40);
    // Rebuild params: drop existing received/rport, re-add ours.
    let (head, params) = match value.find(';') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, ""),
    };
    out.push_str(head.trim_end());
    for p in split_outside_quotes(params, ';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let name = p
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "received" || name == "rport" {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    if via.host != ip || via.rport {
        out.push_str(";received=");
        out.push_str(&ip);
    }
    if via.rport {
        out.push_str(";rport=");
        out.push_str(&source.port().to_string());
    }
    out
}

/// A name-addr or addr-spec with parameters: `"Name" <sip:u@h>;tag=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted.
    pub display: Option<String>,
    /// The URI text between the angle brackets (or the bare addr-spec).
    pub uri: String,
    /// Header parameters (after the URI).
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses a From/To/Contact value (one entry).
    pub fn parse(value: &str) -> Result<NameAddr, HeaderError> {
        let err = HeaderError("name-addr");
        let value = value.trim();
        if let Some(lt) = find_unquoted(value, '<') {
            let gt = value[lt..].find('>').ok_or(err.clone())? + lt;
            let display = value[..lt].trim().trim_matches('"').trim();
            // RFC 3261: no whitespace inside the angle brackets (RFC 4475 §3.1.2.14).
            let uri = value[lt + 1..gt].to_string();
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(err);
            }
            Ok(NameAddr {
                display: (!display.is_empty()).then(|| display.to_string()),
                uri,
                params: parse_params(value[gt + 1..].trim_start_matches(';')),
            })
        } else {
            // addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
            let (uri, params) = match value.find(';') {
                Some(i) => (&value[..i], &value[i + 1..]),
                None => (value, ""),
            };
            if uri.is_empty() || !uri.contains(':') {
                return Err(err);
            }
            Ok(NameAddr {
                display: None,
                uri: uri.trim().to_string(),
                params: parse_params(params),
            })
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// A parameter value (empty string for a flag parameter).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// User part of the URI (`sip:user@host`), unescaped only for `%xx`.
    pub fn user(&self) -> Option<String> {
        uri_user(&self.uri)
    }

    /// Host part of the URI.
    pub fn host(&self) -> Option<String> {
        uri_host(&self.uri)
    }
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == needle && !in_quotes {
            return Some(i);
        }
    }
    None
}

/// `user` from `sip:user:pw@host;params`, percent-decoded, unless decoding would produce
/// control characters: such a user (`x%0d%0aCall-Info:…`) is kept as it was sent, still
/// escaped, so no raw CR, LF or other control byte ever reaches a log line, a call record or
/// a message built from it.
pub fn uri_user(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let at = rest.find('@')?;
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next()?;
    let decoded = percent_decode(user);
    if decoded.chars().any(char::is_control) {
        return Some(user.to_string());
    }
    Some(decoded)
}

/// `host` from `sip:user@host:port;params`, lower-cased.
pub fn uri_host(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let rest = match rest.find('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let hostport = rest.split([';', '?']).next()?;
    let (host, _) = split_host_port(hostport)?;
    Some(host.to_ascii_lowercase())
}

/// RFC 3261 `unreserved` and `user-unreserved` bytes that mean nothing special anywhere in a
/// header (`;` and `?` are left out: they end a user part in many parsers).
pub fn is_user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
        )
}

/// Writes `user` as the user part of a SIP URI we send: every byte outside RFC 3261's
/// unreserved and user-unreserved sets (CR, LF, `@`, `<`, `>`, `;`, `?`, `%`, spaces, ...) is
/// `%XX`-escaped, so a value that came from another message can never end the header or add
/// one (a From user of `%0d%0aCall-Info:...` stays inside the URI as escapes).
pub fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if is_user_char(b) || b == b'/' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes `display` as a quoted display name (RFC 3261 `quoted-string`): control characters
/// are dropped, `"` and `\` are escaped, and the whole is kept short.
pub fn quote_display(display: &str) -> String {
    let mut out = String::with_capacity(display.len() + 2);
    out.push('"');
    for c in display.chars().filter(|c| !c.is_control()).take(64) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes `%xx` escapes; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_rport_and_ipv6() {
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9]:5061;branch=z9hG4bKx;rport").expect("via");
        assert_eq!(v.host, "2001:db8::9");
        assert_eq!(v.port, Some(5061));
        assert!(v.rport);
        assert!(v.has_rfc3261_branch());
        let v = Via::parse("SIP / 2.0 / tcp host.example;branch=abc").expect("spaced via");
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.source_address(), None, "a host name is no address");
        assert!(!v.alias);
        let v = Via::parse("SIP/2.0/TLS edge.example:5061;branch=z9hG4bKy;alias").expect("alias");
        assert!(v.alias, "RFC 5923 alias offered");
    }

    #[test]
    fn a_via_names_where_its_request_came_from() {
        let at = |s: &str| Via::parse(s).expect("via").source_address();
        assert_eq!(
            at("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa;received=192.0.2.7;rport=40000"),
            Some("192.0.2.7:40000".parse().expect("addr"))
        );
        assert_eq!(
            at("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKa"),
            Some("10.0.0.1:5062".parse().expect("addr"))
        );
        assert_eq!(
            at("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa;rport"),
            Some("10.0.0.1:5060".parse().expect("addr"))
        );
        assert_eq!(
            at("SIP/2.0/UDP [2001:db8::1]:5062;received=[2001:db8::9];rport=7"),
            Some("[2001:db8::9]:7".parse().expect("addr"))
        );
        assert_eq!(at("SIP/2.0/UDP 10.0.0.1;received=not-an-ip"), None);
    }

    #[test]
    fn stamps_received_and_rport() {
        let src: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        let s = stamp_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport", src);
        assert_eq!(
            s,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;received=192.0.2.7;rport=40000"
        );
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A, B\" <sip:100@ex.com;transport=tcp>;tag=xy").expect("na");
        assert_eq!(n.display.as_deref(), Some("A, B"));
        assert_eq!(n.tag(), Some("xy"));
        assert_eq!(n.user().as_deref(), Some("100"));
        assert_eq!(n.host().as_deref(), Some("ex.com"));
        let n = NameAddr::parse("sip:+1555@10.0.0.1:5060;tag=9").expect("addr-spec");
        assert_eq!(n.tag(), Some("9"));
        assert_eq!(n.user().as_deref(), Some("+1555"));
        assert_eq!(
            split_comma_list("<sip:a@b>;q=1, \"x,y\" <sip:c@d>").len(),
            2
        );
    }

    #[test]
    fn users_with_control_characters_stay_escaped() {
        assert_eq!(uri_user("sip:%2B1555@h").as_deref(), Some("+1555"));
        assert_eq!(
            uri_user("sip:x%0d%0aCall-Info%3A%20a@h").as_deref(),
            Some("x%0d%0aCall-Info%3A%20a")
        );
    }

    #[test]
    fn values_copied_into_messages_cannot_add_lines() {
        let hostile = percent_decode("x%0d%0aCall-Info: <sip:a>;answer-after=0");
        let user = escape_user(&hostile);
        assert!(
            !user.contains(['\r', '\n', ' ', '<', '>', ':', ';']),
            "{user}"
        );
        assert_eq!(percent_decode(&user), hostile, "escapes round-trip");
        assert_eq!(escape_user("+1-555.(0)"), "+1-555.(0)");
        assert_eq!(escape_user("a@b%c"), "a%40b%25c");
        let d = quote_display("Eve\r\nAlert-Info: x \"\\");
        assert_eq!(d, "\"EveAlert-Info: x \\\"\\\\\"");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("sip%3Aa"), "sip:a");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
    }
}

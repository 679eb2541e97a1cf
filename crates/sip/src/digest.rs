//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges, credential checks,
//! nonces that expire, nonce-count replay protection (single use without qop) and the digest
//! `uri` checked against the request. Counting failures is [`super::auth_guard`]'s job.
//!
//! Nonces are stateless to issue: `base64url(issued_at ‖ random ‖ HMAC-SHA256(secret, issued_at ‖
//! random ‖ realm))` (the random part makes every challenge unique, even within one second),
//! so a restart or a second node with the same secret can verify them. Only the highest
//! nonce-count seen per nonce is kept (RFC 7616 §3.4.5), and that table is swept as nonces expire.
//!
//! The server never sees a password: users carry `HA1 = H(username:realm:password)` for MD5 and
//! for SHA-256, which is all digest verification needs.

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::Duration;

use super::headers::split_comma_list;

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DigestAlgorithm {
    /// MD5, what most deployed phones speak.
    #[serde(rename = "MD5")]
    Md5,
    /// SHA-256 (RFC 8760).
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl DigestAlgorithm {
    /// The token used in `algorithm=`.
    pub fn token(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` token (absent means MD5).
    pub fn from_token(t: &str) -> Option<Self> {
        if t.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if t.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            DigestAlgorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// `HA1 = H(username:realm:password)`, what user records store instead of a password.
pub fn ha1(alg: DigestAlgorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&format!("{username}:{realm}:{password}"))
}

/// The credentials a client sent in `Authorization` or `Proxy-Authorization`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestCredentials {
    /// `username`
    pub username: String,
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `uri` (digest-uri)
    pub uri: String,
    /// `response`
    pub response: String,
    /// `algorithm`, MD5 when absent.
    pub algorithm: String,
    /// `cnonce`
    pub cnonce: Option<String>,
    /// `nc` as sent (8 hex digits).
    pub nc: Option<String>,
    /// `qop`
    pub qop: Option<String>,
    /// `opaque`
    pub opaque: Option<String>,
}

/// Why credentials could not even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not the `Digest` scheme.
    #[error("authorization scheme is not Digest")]
    NotDigest,
    /// A required parameter is missing.
    #[error("digest parameter {0} missing")]
    Missing(&'static str),
}

impl DigestCredentials {
    /// Parses `Digest username="…", realm="…", …`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(char::is_whitespace)
            .ok_or(DigestError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let mut c = DigestCredentials {
            algorithm: "MD5".into(),
            ..Default::default()
        };
        for (k, v) in digest_params(rest) {
            match k.as_str() {
                "username" => c.username = v,
                "realm" => c.realm = v,
                "nonce" => c.nonce = v,
                "uri" => c.uri = v,
                "response" => c.response = v.to_ascii_lowercase(),
                "algorithm" => c.algorithm = v,
                "cnonce" => c.cnonce = Some(v),
                "nc" => c.nc = Some(v),
                "qop" => c.qop = Some(v),
                "opaque" => c.opaque = Some(v),
                _ => {}
            }
        }
        for (name, val) in [
            ("username", &c.username),
            ("nonce", &c.nonce),
            ("uri", &c.uri),
            ("response", &c.response),
        ] {
            if val.is_empty() {
                return Err(DigestError::Missing(name));
            }
        }
        Ok(c)
    }

    /// The expected `response` for these credentials, given the user's HA1.
    pub fn expected_response(&self, alg: DigestAlgorithm, method: &str, ha1: &str) -> String {
        let ha2 = alg.hash_hex(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                alg.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            _ => alg.hash_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }
}

/// `k=v, k="v"` parameters of a Digest header: lower-case names, unquoted values.
fn digest_params(rest: &str) -> impl Iterator<Item = (String, String)> + '_ {
    split_comma_list(rest).into_iter().filter_map(|part| {
        let (k, v) = part.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        Some((k.trim().to_ascii_lowercase(), v.to_string()))
    })
}

/// The `Authorization` (or `Proxy-Authorization`) value answering a server's `challenge` (a
/// `WWW-Authenticate`/`Proxy-Authenticate` value) for `method` on `uri` — what we send when a
/// provider challenges our INVITE. `None` for a challenge we cannot answer (not Digest, an
/// algorithm other than MD5/SHA-256, no nonce). `cnonce` is our client nonce (random) for a
/// challenge with `qop=auth`.
pub fn authorization_for(
    challenge: &str,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: u64,
) -> Option<String> {
    let (scheme, rest) = challenge.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let (mut realm, mut nonce, mut opaque, mut qop, mut algorithm) =
        (String::new(), String::new(), None, None, "MD5".to_string());
    for (k, v) in digest_params(rest) {
        match k.as_str() {
            "realm" => realm = v,
            "nonce" => nonce = v,
            "opaque" => opaque = Some(v),
            "qop" => qop = Some(v),
            "algorithm" => algorithm = v,
            _ => {}
        }
    }
    let alg = DigestAlgorithm::from_token(&algorithm)?;
    if nonce.is_empty() {
        return None;
    }
    let auth_qop = qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
    let ha1 = ha1(alg, username, &realm, password);
    let creds = DigestCredentials {
        username: username.to_string(),
        realm: realm.clone(),
        nonce: nonce.clone(),
        uri: uri.to_string(),
        algorithm: algorithm.clone(),
        cnonce: auth_qop.then(|| format!("{cnonce:016x}")),
        nc: auth_qop.then(|| "00000001".to_string()),
        qop: auth_qop.then(|| "auth".to_string()),
        ..Default::default()
    };
    let response = creds.expected_response(alg, method, &ha1);
    let mut out = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
response=\"{response}\", algorithm={algorithm}"
    );
    if let (Some(cnonce), Some(nc)) = (&creds.cnonce, &creds.nc) {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(o) = opaque {
        out.push_str(&format!(", opaque=\"{o}\""));
    }
    Some(out)
}

/// Constant-time comparison of two ASCII strings.
fn ct_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// What became of a nonce presented by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, unexpired, nonce-count fresh.
    Fresh,
    /// Ours but expired: re-challenge with `stale=true` (the client may retry silently).
    Stale,
    /// Ours, but the nonce-count was seen before: a replay.
    Replayed,
    /// Not a nonce we issued.
    Invalid,
}

/// Issues and checks nonces.
pub struct NonceIssuer {
    secret: [u8; 32],
    lifetime: Duration,
    /// Highest nonce-count seen per nonce, with the nonce's expiry (unix seconds).
    counts: HashMap<String, (u32, u64)>,
    next_sweep: u64,
}

/// Bound on the replay table; beyond it the oldest half is dropped (those nonces become stale
/// for their clients, who re-authenticate once).
const MAX_TRACKED_NONCES: usize = 200_000;

impl NonceIssuer {
    /// A nonce issuer with this secret and nonce lifetime.
    pub fn new(secret: [u8; 32], lifetime: Duration) -> Self {
        NonceIssuer {
            secret,
            lifetime,
            counts: HashMap::new(),
            next_sweep: 0,
        }
    }

    fn mac(&self, issued: u64, salt: &[u8], realm: &str) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        m.update(&issued.to_be_bytes());
        m.update(salt);
        m.update(realm.as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A fresh nonce for `realm`, issued at `unix_now` (seconds), made unique by `salt` (random:
    /// see [`crate::ids::Ids::salt`]).
    pub fn issue(&self, realm: &str, unix_now: u64, salt: [u8; 8]) -> String {
        let mut raw = Vec::with_capacity(32);
        raw.extend_from_slice(&unix_now.to_be_bytes());
        raw.extend_from_slice(&salt);
        raw.extend_from_slice(&self.mac(unix_now, &salt, realm));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` is one we issued for `realm` and still unexpired: [`NonceCheck::Fresh`],
    /// [`NonceCheck::Stale`] or [`NonceCheck::Invalid`]. Records nothing.
    pub fn validate(&self, nonce: &str, realm: &str, unix_now: u64) -> NonceCheck {
        match self.expiry(nonce, realm, unix_now) {
            Ok(_) => NonceCheck::Fresh,
            Err(c) => c,
        }
    }

    fn expiry(&self, nonce: &str, realm: &str, unix_now: u64) -> Result<u64, NonceCheck> {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return Err(NonceCheck::Invalid);
        };
        if raw.len() != 32 {
            return Err(NonceCheck::Invalid);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(ts);
        let expected = self.mac(issued, &raw[8..16], realm);
        if raw[16..]
            .iter()
            .zip(expected.iter())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
        {
            return Err(NonceCheck::Invalid);
        }
        let expires = issued.saturating_add(self.lifetime.as_secs());
        if unix_now >= expires || issued > unix_now + 60 {
            return Err(NonceCheck::Stale);
        }
        Ok(expires)
    }

    /// Checks a nonce and its nonce-count (`nc`, hex) for `realm` at `unix_now`, and records the
    /// use when fresh. An answer without qop has no nonce-count: its nonce is then good for one
    /// use only (RFC 7616 §5.13: a sniffed header must not work again).
    pub fn check(
        &mut self,
        nonce: &str,
        nc: Option<&str>,
        realm: &str,
        unix_now: u64,
    ) -> NonceCheck {
        let expires = match self.expiry(nonce, realm, unix_now) {
            Ok(e) => e,
            Err(c) => return c,
        };
        self.sweep(unix_now);
        let nc = match nc {
            Some(nc) => match u32::from_str_radix(nc, 16) {
                Ok(n) if n > 0 && n < u32::MAX => n,
                _ => return NonceCheck::Invalid,
            },
            None => u32::MAX,
        };
        let entry = self.counts.entry(nonce.to_string()).or_insert((0, expires));
        if nc <= entry.0 || entry.0 == u32::MAX {
            return NonceCheck::Replayed;
        }
        entry.0 = nc;
        NonceCheck::Fresh
    }

    fn sweep(&mut self, unix_now: u64) {
        if unix_now < self.next_sweep && self.counts.len() < MAX_TRACKED_NONCES {
            return;
        }
        self.next_sweep = unix_now + 30;
        self.counts.retain(|_, (_, exp)| *exp > unix_now);
        if self.counts.len() >= MAX_TRACKED_NONCES {
            let mut exps: Vec<u64> = self.counts.values().map(|(_, e)| *e).collect();
            exps.sort_unstable();
            let cut = exps[exps.len() / 2];
            self.counts.retain(|_, (_, e)| *e > cut);
        }
    }

    /// How many nonces are being tracked for replay (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

/// The `WWW-Authenticate`/`Proxy-Authenticate` values for one challenge: one per algorithm, in
/// the configured order (RFC 8760 §2.4: the server lists them in its order of preference).
pub fn challenge_values(
    realm: &str,
    nonce: &str,
    algorithms: &[DigestAlgorithm],
    stale: bool,
) -> Vec<String> {
    algorithms
        .iter()
        .map(|alg| {
            let mut v = format!(
                "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                alg.token()
            );
            if stale {
                v.push_str(", stale=true");
            }
            v
        })
        .collect()
}

/// Result of checking credentials against a user's hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The response matched.
    Valid,
    /// The nonce is ours but expired: challenge again with `stale=true`.
    Stale,
    /// A real guess that failed: our nonce, the right request, a wrong response (wrong
    /// password or unknown user). Only these count toward blocking.
    WrongPassword,
    /// Not a guess: a nonce we never issued, a replayed nonce-count or qop-less nonce, a
    /// digest `uri` that is not this request's, or malformed credentials. Challenged again and
    /// not counted, so forged nonces cannot lock anybody out.
    Rejected(&'static str),
}

/// Checks `creds` for a request with `method` to `request_uri`, given the user's HA1 for each
/// algorithm.
///
/// The order matters: the nonce is checked before the response, so a forged or stale nonce is
/// answered without ever comparing a password (no oracle, nothing to count); a stale nonce
/// gets `stale=true` whatever the response was (the client retries with its stored password
/// once, and a wrong one is then counted on a fresh nonce). The replay table is touched only
/// after the response matched, so a wrong guess cannot burn a legitimate client's
/// nonce-count.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    nonces: &mut NonceIssuer,
    creds: &DigestCredentials,
    method: &str,
    request_uri: &str,
    realm: &str,
    ha1_for: impl Fn(DigestAlgorithm) -> Option<String>,
    allowed: &[DigestAlgorithm],
    unix_now: u64,
) -> Verdict {
    let Some(alg) = DigestAlgorithm::from_token(&creds.algorithm) else {
        return Verdict::Rejected("unknown algorithm");
    };
    if !allowed.contains(&alg) || creds.realm != realm {
        return Verdict::Rejected("algorithm or realm not ours");
    }
    if let Some(qop) = &creds.qop {
        if !qop.eq_ignore_ascii_case("auth") || creds.nc.is_none() || creds.cnonce.is_none() {
            return Verdict::Rejected("qop parameters missing");
        }
    }
    if !digest_uri_matches(&creds.uri, request_uri) {
        return Verdict::Rejected("digest uri is not the request's");
    }
    match nonces.validate(&creds.nonce, realm, unix_now) {
        NonceCheck::Fresh => {}
        NonceCheck::Stale => return Verdict::Stale,
        NonceCheck::Replayed | NonceCheck::Invalid => return Verdict::Rejected("not our nonce"),
    }
    let Some(ha1) = ha1_for(alg) else {
        return Verdict::WrongPassword;
    };
    if !ct_eq(&creds.expected_response(alg, method, &ha1), &creds.response) {
        return Verdict::WrongPassword;
    }
    match nonces.check(&creds.nonce, creds.nc.as_deref(), realm, unix_now) {
        NonceCheck::Fresh => Verdict::Valid,
        NonceCheck::Stale => Verdict::Stale,
        NonceCheck::Replayed | NonceCheck::Invalid => Verdict::Rejected("nonce replayed"),
    }
}

/// Whether the digest `uri` names the request's Request-URI (RFC 7616 §3.4.6), tolerating what
/// real clients send: scheme and host must agree (case-insensitive), and the user too when the
/// digest uri has one (escapes decoded); a bare `sip:host:port` (SIPp and some phones answer
/// with the server's address) is accepted for any user at that host. A port on one side only,
/// parameters and headers are ignored.
pub fn digest_uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    fn parts(uri: &str) -> Option<(String, Option<String>, String, Option<u16>)> {
        let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
        let (scheme, rest) = uri.split_once(':')?;
        let rest = rest.split(['?']).next()?;
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (
                Some(super::headers::percent_decode(u.split(':').next()?)),
                h,
            ),
            None => (None, rest),
        };
        let hostport = hostport.split(';').next()?;
        let (host, port) = super::headers::split_host_port(hostport)?;
        Some((
            scheme.to_ascii_lowercase(),
            user,
            host.to_ascii_lowercase(),
            port,
        ))
    }
    match (parts(digest_uri), parts(request_uri)) {
        (Some((s1, u1, h1, p1)), Some((s2, u2, h2, p2))) => {
            s1 == s2
                && (u1.is_none() || u1 == u2)
                && h1 == h2
                && (p1.is_none() || p2.is_none() || p1 == p2)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn our_authorization_answers_a_challenge() {
        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            let ch = &challenge_values("carrier.example", "abc123", &[alg], false)[0];
            let v = authorization_for(
                ch,
                "INVITE",
                "sip:+4420@carrier.example",
                "acct",
                "s3cret",
                0x1234,
            )
            .expect("answerable");
            let c = DigestCredentials::parse(&v).expect("parses");
            assert_eq!(c.qop.as_deref(), Some("auth"));
            assert_eq!(c.cnonce.as_deref(), Some("0000000000001234"));
            let ha1 = ha1(alg, "acct", "carrier.example", "s3cret");
            assert_eq!(c.response, c.expected_response(alg, "INVITE", &ha1));
        }
        assert!(authorization_for("Basic realm=x", "INVITE", "sip:a", "u", "p", 1).is_none());
    }

    use super::*;

    /// RFC 2617 §3.5 example, the classic reference value for MD5 with qop=auth.
    #[test]
    fn rfc2617_reference_response() {
        let creds = DigestCredentials {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: "MD5".into(),
            cnonce: Some("0a4f113b".into()),
            nc: Some("00000001".into()),
            qop: Some("auth".into()),
            opaque: None,
        };
        let h = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(
            creds.expected_response(DigestAlgorithm::Md5, "GET", &h),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    /// RFC 7616 §3.9.1 SHA-256 example.
    #[test]
    fn rfc7616_sha256_reference_response() {
        let creds = DigestCredentials {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: "SHA-256".into(),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            nc: Some("00000001".into()),
            qop: Some("auth".into()),
            opaque: None,
        };
        let h = ha1(
            DigestAlgorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            creds.expected_response(DigestAlgorithm::Sha256, "GET", &h),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    fn client_creds(nonce: &str, nc: &str, password: &str) -> DigestCredentials {
        let mut c = DigestCredentials {
            username: "100".into(),
            realm: "demo".into(),
            nonce: nonce.into(),
            uri: "sip:demo".into(),
            response: String::new(),
            algorithm: "MD5".into(),
            cnonce: Some("abc".into()),
            nc: Some(nc.into()),
            qop: Some("auth".into()),
            opaque: None,
        };
        let h = ha1(DigestAlgorithm::Md5, "100", "demo", password);
        c.response = c.expected_response(DigestAlgorithm::Md5, "REGISTER", &h);
        c
    }

    #[test]
    fn nonce_expiry_replay_and_wrong_password() {
        let mut n = NonceIssuer::new([7; 32], Duration::from_secs(300));
        let nonce = n.issue("demo", 1_000, [3; 8]);
        let stored = |_alg| Some(ha1(DigestAlgorithm::Md5, "100", "demo", "demo100"));
        let algs = [DigestAlgorithm::Md5, DigestAlgorithm::Sha256];
        let ruri = "sip:demo";
        let ok = client_creds(&nonce, "00000001", "demo100");
        assert_eq!(
            verify(&mut n, &ok, "REGISTER", ruri, "demo", stored, &algs, 1_010),
            Verdict::Valid
        );
        // Same nc again: replay (not a guess).
        assert!(matches!(
            verify(&mut n, &ok, "REGISTER", ruri, "demo", stored, &algs, 1_011),
            Verdict::Rejected(_)
        ));
        let next = client_creds(&nonce, "00000002", "demo100");
        assert_eq!(
            verify(&mut n, &next, "REGISTER", ruri, "demo", stored, &algs, 1_012),
            Verdict::Valid
        );
        let wrong = client_creds(&nonce, "00000003", "guess");
        assert_eq!(
            verify(&mut n, &wrong, "REGISTER", ruri, "demo", stored, &algs, 1_013),
            Verdict::WrongPassword
        );
        // A stale nonce is answered stale whatever the response: no oracle, no count.
        for pw in ["demo100", "guess"] {
            let late = client_creds(&nonce, "00000004", pw);
            assert_eq!(
                verify(&mut n, &late, "REGISTER", ruri, "demo", stored, &algs, 1_300),
                Verdict::Stale
            );
        }
        // A nonce from another secret is not ours: rejected before any password is compared.
        let other =
            NonceIssuer::new([8; 32], Duration::from_secs(300)).issue("demo", 1_000, [3; 8]);
        for pw in ["demo100", "guess"] {
            let foreign = client_creds(&other, "00000001", pw);
            assert!(matches!(
                verify(&mut n, &foreign, "REGISTER", ruri, "demo", stored, &algs, 1_010),
                Verdict::Rejected(_)
            ));
        }
    }

    #[test]
    fn sniffed_answers_do_not_work_again_or_elsewhere() {
        let mut n = NonceIssuer::new([7; 32], Duration::from_secs(300));
        let stored = |_alg| Some(ha1(DigestAlgorithm::Md5, "100", "demo", "demo100"));
        let algs = [DigestAlgorithm::Md5];
        // Without qop: one use only.
        let nonce = n.issue("demo", 1_000, [3; 8]);
        let mut c = client_creds(&nonce, "00000001", "demo100");
        (c.qop, c.nc, c.cnonce) = (None, None, None);
        let h = ha1(DigestAlgorithm::Md5, "100", "demo", "demo100");
        c.response = c.expected_response(DigestAlgorithm::Md5, "REGISTER", &h);
        assert_eq!(
            verify(&mut n, &c, "REGISTER", "sip:demo", "demo", stored, &algs, 1_001),
            Verdict::Valid
        );
        assert!(matches!(
            verify(&mut n, &c, "REGISTER", "sip:demo", "demo", stored, &algs, 1_002),
            Verdict::Rejected(_)
        ));
        // The digest uri must be the request's.
        let nonce = n.issue("demo", 1_000, [3; 8]);
        let c = client_creds(&nonce, "00000001", "demo100");
        assert!(matches!(
            verify(
                &mut n,
                &c,
                "REGISTER",
                "sip:other.example",
                "demo",
                stored,
                &algs,
                1_001
            ),
            Verdict::Rejected(_)
        ));
        assert!(digest_uri_matches(
            "sip:100@10.0.0.1",
            "sip:100@10.0.0.1:5060"
        ));
        assert!(digest_uri_matches(
            "sip:100@Host;transport=tcp",
            "sip:100@host"
        ));
        assert!(digest_uri_matches("sip:%31%30%30@host", "sip:100@host"));
        assert!(!digest_uri_matches(
            "sip:100@host:5070",
            "sip:100@host:5060"
        ));
        assert!(!digest_uri_matches("sip:9001@host", "sip:100@host"));
        assert!(digest_uri_matches("sip:host:5060", "sip:+4420@host:5060"));
        assert!(!digest_uri_matches("sip:other:5060", "sip:+4420@host:5060"));
        assert!(!digest_uri_matches("sips:100@host", "sip:100@host"));
        assert!(!digest_uri_matches("garbage", "sip:100@host"));
    }

    #[test]
    fn parses_credentials_and_challenges() {
        let c = DigestCredentials::parse(
            "Digest username=\"100\", realm=\"demo\", nonce=\"n\", uri=\"sip:x\", response=\"ABC\", algorithm=MD5, cnonce=\"c\", qop=auth, nc=00000001",
        )
        .expect("creds");
        assert_eq!(c.response, "abc");
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert!(DigestCredentials::parse("Basic dXNlcg==").is_err());
        let v = challenge_values(
            "r",
            "n",
            &[DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
            true,
        );
        assert_eq!(v.len(), 2);
        assert!(v[0].contains("algorithm=MD5") && v[0].ends_with("stale=true"));
    }
}

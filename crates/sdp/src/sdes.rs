//! SRTP keys carried in SDP (SDES, RFC 4568): the `a=crypto` attribute of an `RTP/SAVP`
//! audio stream.
//!
//! Each side names the key it *sends* with; the answerer picks one of the offered lines (we
//! take the first whose suite we support, as RFC 4568 §7.1.2 lets us), echoes its tag and
//! suite, and gives its own key. Keys travel in the clear inside the SDP, so they are only as
//! secret as the signalling: the SIP side answers `RTP/SAVP` only over TLS.
//!
//! Supported suites: `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32` (RFC 4568) and
//! `AEAD_AES_128_GCM` (RFC 7714). A key with an MKI, several keys in one line, or any
//! session parameter (`UNENCRYPTED_SRTP`, `KDR=`, …) is not something we implement: such a
//! line is skipped like an unknown suite, never half-honoured.

use base64::Engine as _;

/// An SRTP crypto suite we can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    /// AES-128 counter mode, 80-bit HMAC-SHA1 tag (the one every SRTP phone offers).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, 32-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_32,
    /// AES-128 GCM (RFC 7714).
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite a name stands for (names are case-sensitive, RFC 4568 §9.2).
    pub fn from_name(name: &str) -> Option<SrtpSuite> {
        [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Master key length, bytes.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length, bytes.
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Length of the inline key material (master key then master salt).
    pub fn material_len(self) -> usize {
        self.key_len() + self.salt_len()
    }
}

/// One `a=crypto` line as the peer wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The line's tag (echoed in the answer).
    pub tag: u32,
    /// Suite name.
    pub suite: String,
    /// Key parameters (`inline:…`), unparsed.
    pub key_params: String,
    /// The line carried session parameters.
    pub session_params: bool,
}

/// At most this many `a=crypto` lines are kept per media line.
pub(crate) const MAX_CRYPTO_LINES: usize = 16;

/// Reads the value of an `a=crypto:` attribute.
pub(crate) fn parse_crypto(arg: &str) -> Option<CryptoAttr> {
    let mut parts = arg.split_whitespace();
    let tag = parts.next()?.parse::<u32>().ok()?;
    let suite = parts.next()?.to_string();
    let key_params = parts.next()?.to_string();
    Some(CryptoAttr {
        tag,
        suite,
        key_params,
        session_params: parts.next().is_some(),
    })
}

/// The SRTP keys of one audio stream: the suite and tag agreed, the peer's key material (what
/// it sends with) and ours (what we send with; empty until the answerer's side makes one).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Tag of the chosen `a=crypto` line.
    pub tag: u32,
    /// The suite.
    pub suite: SrtpSuite,
    /// The peer's master key and salt.
    pub remote: Vec<u8>,
    /// Our master key and salt.
    pub local: Vec<u8>,
}

/// Keys never reach a log line.
impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("remote", &"<redacted>")
            .field("local", &"<redacted>")
            .finish()
    }
}

impl SrtpKeys {
    /// The `a=crypto` line that gives our key.
    pub fn crypto_line(&self) -> String {
        format!(
            "a=crypto:{} {} inline:{}\r\n",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(&self.local)
        )
    }
}

/// The first offered line we can run, with the peer's key; `None` when there is none.
pub fn choose(offered: &[CryptoAttr]) -> Option<SrtpKeys> {
    offered.iter().find_map(|c| {
        if c.session_params {
            return None;
        }
        let suite = SrtpSuite::from_name(&c.suite)?;
        Some(SrtpKeys {
            tag: c.tag,
            suite,
            remote: inline_key(&c.key_params, suite)?,
            local: Vec::new(),
        })
    })
}

/// The key material of `inline:KEY[|LIFETIME]`: exactly one key, no MKI, of the suite's length.
fn inline_key(params: &str, suite: SrtpSuite) -> Option<Vec<u8>> {
    if params.contains(';') {
        return None; // several keys: only meaningful with MKIs
    }
    let rest = params.strip_prefix("inline:")?;
    let mut fields = rest.split('|');
    let key = fields.next()?;
    if let Some(lifetime) = fields.next() {
        // A lifetime is fine (we never send 2^31 packets on one key); an MKI is not ours.
        if lifetime.contains(':') || fields.next().is_some() {
            return None;
        }
    }
    let material = base64::engine::general_purpose::STANDARD
        .decode(key)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(key))
        .ok()?;
    (material.len() == suite.material_len()).then_some(material)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY80: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn attr(line: &str) -> CryptoAttr {
        parse_crypto(line).expect("crypto attribute")
    }

    #[test]
    fn the_first_supported_line_is_chosen_with_its_tag() {
        let offered = vec![
            attr("1 AES_256_CM_HMAC_SHA1_80 inline:AAAA"),
            attr(&format!("2 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|2^20")),
            attr(&format!("3 AES_CM_128_HMAC_SHA1_32 inline:{KEY80}")),
        ];
        let k = choose(&offered).expect("chosen");
        assert_eq!((k.tag, k.suite), (2, SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(k.remote.len(), 30);
        assert!(!format!("{k:?}").contains(KEY80), "keys stay out of Debug");
    }

    #[test]
    fn lines_we_cannot_honour_are_skipped() {
        for line in [
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|2^20|1:4"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80};inline:{KEY80}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} UNENCRYPTED_SRTP"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!".to_string(),
            format!("1 AEAD_AES_128_GCM inline:{KEY80}"),
            format!("1 aes_cm_128_hmac_sha1_80 inline:{KEY80}"),
        ] {
            assert!(choose(&[attr(&line)]).is_none(), "{line}");
        }
        assert!(parse_crypto("x AES_CM_128_HMAC_SHA1_80 inline:k").is_none());
        assert!(parse_crypto("1 AES_CM_128_HMAC_SHA1_80").is_none());
    }

    #[test]
    fn our_line_round_trips() {
        let k = SrtpKeys {
            tag: 7,
            suite: SrtpSuite::AeadAes128Gcm,
            remote: Vec::new(),
            local: vec![9; 28],
        };
        let line = k.crypto_line();
        let value = line
            .trim_end()
            .strip_prefix("a=crypto:")
            .expect("attribute");
        let back = choose(&[attr(value)]).expect("parses");
        assert_eq!(back.remote, vec![9; 28]);
        assert_eq!(back.tag, 7);
    }
}

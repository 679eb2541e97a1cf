//! The `Replaces` header (RFC 3891), as a transferor puts it into the `Refer-To` URI of an
//! attended transfer (`<sip:C@host?Replaces=CALLID%3Bto-tag%3DT%3Bfrom-tag%3DF>`): it names
//! a dialog by Call-ID and the two tags, seen from the sender (`to-tag` is the other end's).

use crate::headers::percent_decode;

/// A dialog named by `Replaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    /// The dialog's Call-ID.
    pub call_id: String,
    /// The tag of the sender's peer in that dialog.
    pub to_tag: String,
    /// The sender's own tag.
    pub from_tag: String,
    /// `early-only`: replace the dialog only while it is not yet answered.
    pub early_only: bool,
}

/// Longest value we read (Call-IDs and tags are short; anything longer is not a dialog of ours).
const MAX_LEN: usize = 512;

impl Replaces {
    /// Parses a `Replaces` header value: `callid;to-tag=…;from-tag=…[;early-only]`.
    pub fn parse(value: &str) -> Option<Replaces> {
        if value.len() > MAX_LEN {
            return None;
        }
        let mut parts = value.split(';').map(str::trim);
        let call_id = parts.next().filter(|c| !c.is_empty())?.to_string();
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for p in parts {
            let (name, val) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p, None),
            };
            match (name.to_ascii_lowercase().as_str(), val) {
                ("to-tag", Some(v)) if !v.is_empty() => to_tag = Some(v.to_string()),
                ("from-tag", Some(v)) if !v.is_empty() => from_tag = Some(v.to_string()),
                ("early-only", None) => early_only = true,
                _ => {}
            }
        }
        Some(Replaces {
            call_id,
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }

    /// The `Replaces` among a URI's headers (`?name=value&…`, values %-encoded), if any.
    pub fn in_uri(uri: &str) -> Option<Replaces> {
        let (_, headers) = uri.split_once('?')?;
        headers.split('&').find_map(|h| {
            let (name, value) = h.split_once('=')?;
            name.eq_ignore_ascii_case("replaces")
                .then(|| Replaces::parse(&percent_decode(value)))
                .flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refer_to_uri_names_the_dialog() {
        let uri = "sip:101@10.0.0.1:5060?Replaces=a84b4c76e66710%40pc33.atlanta.com%3Bto-tag%3D314159%3Bfrom-tag%3D1234567";
        let r = Replaces::in_uri(uri).expect("replaces");
        assert_eq!(r.call_id, "a84b4c76e66710@pc33.atlanta.com");
        assert_eq!(
            (r.to_tag.as_str(), r.from_tag.as_str()),
            ("314159", "1234567")
        );
        assert!(!r.early_only);
        let early = Replaces::parse("x;from-tag=1;to-tag=2;early-only").expect("parses");
        assert!(early.early_only && early.to_tag == "2");
    }

    #[test]
    fn incomplete_or_absent_replaces_is_none() {
        assert!(Replaces::in_uri("sip:101@host").is_none());
        assert!(Replaces::in_uri("sip:101@host?Subject=hi").is_none());
        assert!(Replaces::parse("callid;to-tag=1").is_none());
        assert!(Replaces::parse(";to-tag=1;from-tag=2").is_none());
        assert!(Replaces::parse(&"x".repeat(600)).is_none());
    }
}

//! Fuzzes digest parsing: credentials from Authorization headers, challenges we answer as a
//! client (providers' WWW-Authenticate), and the digest-uri comparison.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sip::digest::{authorization_for, digest_uri_matches, DigestCredentials};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = DigestCredentials::parse(s) {
        let _ = c.expected_response(switchyard::sip::digest::DigestAlgorithm::Md5, "INVITE", "00");
        let _ = digest_uri_matches(&c.uri, "sip:100@127.0.0.1:5060");
    }
    if let Some(v) = authorization_for(s, "INVITE", "sip:+15551234567@192.0.2.1", "user", "pw", 7) {
        // Our answer goes into a header: it must never carry a line break.
        assert!(!v.contains(['\r', '\n']), "{v:?}");
    }
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid -= 1;
    }
    let (a, b) = s.split_at(mid);
    let _ = digest_uri_matches(a, b);
});

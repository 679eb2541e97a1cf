//! Fuzzes offer/answer: parse an offer, negotiate, build our answer, and the answer must
//! parse and negotiate again (what a re-INVITE does with it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sdp::{build_answer, negotiate, LocalMedia, SessionDescription};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let Ok(mut neg) = negotiate(&offer) else {
        return;
    };
    if let Some(keys) = neg.srtp.as_mut() {
        // As the endpoint does for an SRTP offer it answers: our key in the answer.
        keys.local = vec![7; keys.suite.material_len()];
    }
    let local = LocalMedia {
        address: "192.0.2.1".parse().expect("ip"),
        port: 20_000,
        session_id: 1,
        session_version: 2,
    };
    let answer = build_answer(&offer, &neg, &local);
    let parsed = SessionDescription::parse(answer.as_bytes()).expect("our answer parses");
    assert!(!parsed.media.is_empty());
});

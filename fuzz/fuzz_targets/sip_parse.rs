//! Fuzzes the whole intake path: normalisation, rsip, validation, and the header readers the
//! endpoint uses afterwards. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run sip_parse` (from the repo
//! root; seed with `tests/torture/*/*.sip`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sip::headers::{NameAddr, Via};
use switchyard::sip::message::{parse, SipMessage};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(SipMessage::Request(r)) => {
            for v in r.header_values("Contact") {
                let _ = NameAddr::parse(&v);
            }
            let _ = r.header_values_raw("Authorization");
            let _ = switchyard::sdp::SessionDescription::parse(r.body()).map(|o| switchyard::sdp::negotiate(&o));
        }
        Ok(SipMessage::Response(r)) => {
            let _ = r.header("Contact").map(NameAddr::parse);
        }
        Err(f) => {
            if let Some(h) = f.reply_headers {
                let _ = Via::parse(&h.vias[0]);
            }
        }
    }
});

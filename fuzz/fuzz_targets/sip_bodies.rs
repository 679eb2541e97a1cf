//! Fuzzes values copied between messages: SIP INFO DTMF bodies, Refer-To name-addrs and URI
//! users. An escaped user must never carry a character that ends a header or a URI.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::sip::endpoint::info_digit;
use switchyard::sip::headers::{escape_user, percent_decode, quote_display, uri_user, NameAddr};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for ct in ["application/dtmf-relay", "application/dtmf", "text/plain"] {
        if let Ok(Some(d)) = info_digit(ct, s) {
            assert!(switchyard::media::dtmf::digit_code(d).is_some());
        }
    }
    if let Ok(n) = NameAddr::parse(s) {
        if let Some(user) = uri_user(&n.uri) {
            let escaped = escape_user(&user);
            assert!(!escaped.contains(['\r', '\n', ' ', '<', '>', '@', ';', '?', '"']));
            assert_eq!(percent_decode(&escaped), user);
        }
    }
    let quoted = quote_display(s);
    assert!(!quoted.contains(['\r', '\n']));
});

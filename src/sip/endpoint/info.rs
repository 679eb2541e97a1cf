//! DTMF we send by SIP INFO: a digit the media engine could not relay in RTP (the receiving
//! party negotiated no telephone-event) goes to that party as `application/dtmf-relay`, the
//! de-facto format Cisco, Asterisk and FreeSWITCH send and accept.

use super::{Endpoint, Now};
use bytes::Bytes;

/// How long each relayed digit lasts, in ms (the usual value; receivers mostly ignore it).
const DIGIT_MS: u32 = 160;

impl Endpoint {
    /// Sends `digit` to call or leg `id` in an INFO inside its dialog. Nothing happens for a
    /// call that is gone or a character that is not a DTMF digit.
    pub fn send_digit_info(&mut self, now: Now, id: u64, digit: char) {
        let digit = digit.to_ascii_uppercase();
        if !super::invite::is_dtmf_digit(digit) {
            return;
        }
        let Some(transport) = self.party_peer(id).map(|p| p.transport) else {
            return;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let extra = format!("User-Agent: {}\r\n", self.cfg.server_name);
        let body = format!("Signal={digit}\r\nDuration={DIGIT_MS}\r\n");
        let Some((peer, bytes)) = self.in_dialog_request(
            id,
            "INFO",
            &via,
            &extra,
            Some(("application/dtmf-relay", body.as_bytes())),
        ) else {
            return;
        };
        tracing::debug!(call = id, %digit, "digit relayed by INFO");
        self.send_request(now, peer, branch, Bytes::from(bytes));
    }
}

//! Reliable provisional responses (RFC 3262, 100rel/PRACK) on the legs we place: our INVITE
//! says `Supported: 100rel`; a provisional response that requires it (`Require: 100rel`
//! with an `RSeq`, as carriers that send early media often do) is acknowledged with a PRACK
//! in its early dialog (`RAck: RSeq CSeq INVITE`, CSeq above the INVITE's), once per RSeq;
//! retransmissions and anything older are not acknowledged again (§4). The dialog that the
//! 2xx makes continues the CSeq numbering after the PRACKs.

use super::{Endpoint, Now};
use crate::sip::dialog::Dialog;
use crate::sip::message::SipResponse;
use bytes::Bytes;

/// Whether a provisional response must be acknowledged by PRACK.
pub(super) fn is_reliable(resp: &SipResponse) -> bool {
    resp.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("Require")
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("100rel"))
    })
}

impl Endpoint {
    /// Sends PRACK for a reliable provisional response to leg `id`'s INVITE.
    pub(super) fn prack(&mut self, now: Now, id: u64, resp: &SipResponse) {
        let Some(rseq) = resp
            .header("RSeq")
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            tracing::info!(
                leg = id,
                "reliable provisional response without a valid RSeq: not acknowledged"
            );
            return;
        };
        let Some(transport) = self.out_calls.get(&id).map(|c| c.peer.transport) else {
            return;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        if c.last_rseq.is_some_and(|last| rseq <= last) {
            return; // a retransmission (our PRACK's transaction covers its loss)
        }
        let Ok(mut early) = Dialog::new_uac(
            &c.local_party,
            &c.remote_party,
            &c.local_tag,
            c.cseq.max(c.prack_cseq),
            resp,
        ) else {
            c.span.in_scope(|| {
                tracing::info!("reliable provisional response without To tag: not acknowledged")
            });
            return;
        };
        c.last_rseq = Some(rseq);
        let rack = format!("RAck: {rseq} {} INVITE\r\n", c.cseq);
        let bytes = early.request("PRACK", &via, &rack, None);
        c.prack_cseq = early.local_cseq;
        c.span
            .in_scope(|| tracing::info!(rseq, "reliable provisional response: PRACK sent"));
        let peer = c.peer;
        self.send_request(now, peer, branch, Bytes::from(bytes));
    }
}

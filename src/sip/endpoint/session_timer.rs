//! Session timers (RFC 4028) on the calls we answer, and UPDATE (RFC 3311) as their refresh.
//!
//! A caller that supports timers (`Supported: timer`) and asks for a `Session-Expires` gets it
//! in our 2xx with `refresher=uac` and `Require: timer`: the caller keeps the session alive
//! with a re-INVITE or an UPDATE before the interval ends. A request below our minimum
//! (`sip.session_min_secs`, RFC 4028's 90 s by default) gets `422` with `Min-SE`. When no
//! refresh comes, the call is hung up (BYE, cause `session_expired`) at the interval minus
//! min(32 s, a third of it) after the last refresh (§10): a caller that vanished without a BYE
//! (a crashed phone, a proxy that lost the dialog) stops holding media ports and a tenant's
//! call slot long before the RTP timeout would notice on a silent call on hold.
//!
//! A caller that does not say it supports timers gets none (§9 lets the UAS decline). The
//! legs we place have their own (`leg_timer.rs`). An UPDATE carrying an SDP offer (RFC 3311
//! §5.2) is answered like a re-INVITE's (hold, resume, a new address, SRTP keys) in its 200,
//! once the call is answered; before that, or while our 2xx awaits its ACK, it gets 491.

use super::invite::CallState;
use super::{Endpoint, Now, TimerRef, TxKey};
use crate::records::call::HangupCause;
use crate::sip::message::SipRequest;
use crate::sip::response::ResponseBuilder;
use std::time::Duration;

/// The interval a request's `Session-Expires` (compact form `x`) asks for, in seconds.
fn requested_interval(req: &SipRequest) -> Option<u32> {
    let value = req.header("Session-Expires").or_else(|| req.header("x"))?;
    value.split(';').next()?.trim().parse().ok()
}

/// Whether the request says its sender supports session timers (`Supported: timer`, compact
/// `k`).
fn supports_timer(req: &SipRequest) -> bool {
    req.header_values("Supported")
        .into_iter()
        .chain(req.header_values("k"))
        .any(|v| v.trim().eq_ignore_ascii_case("timer"))
}

/// How long after a refresh the session lasts without another: the interval less
/// min(32 s, interval / 3) (RFC 4028 §10, the non-refresher's side).
pub(super) fn expiry_after(interval: u32) -> Duration {
    Duration::from_secs(u64::from(interval - (interval / 3).min(32)))
}

/// A 2xx of a session with `interval`: the caller refreshes.
pub(super) fn with_session_headers(b: ResponseBuilder, interval: Option<u32>) -> ResponseBuilder {
    match interval {
        Some(n) => b
            .header("Session-Expires", format!("{n};refresher=uac"))
            .header("Require", "timer"),
        None => b,
    }
}

/// What a new call's INVITE asks of session timers.
pub(super) enum SessionAsk {
    /// No timer for this call.
    None,
    /// A timer of this many seconds.
    Interval(u32),
    /// Too short: 422 with our minimum.
    TooBrief(u32),
}

impl Endpoint {
    /// The session timer a new call's INVITE asks for, judged against `sip.session_min_secs`.
    pub(super) fn session_ask(&self, req: &SipRequest) -> SessionAsk {
        if !supports_timer(req) {
            return SessionAsk::None;
        }
        match requested_interval(req) {
            None => SessionAsk::None,
            Some(n) if n < self.cfg.session_min_secs => {
                SessionAsk::TooBrief(self.cfg.session_min_secs)
            }
            Some(n) => SessionAsk::Interval(n),
        }
    }

    /// The 422 for a Session-Expires below our minimum (RFC 4028 §8.1 as the UAS).
    pub(super) fn session_too_brief(min: u32) -> ResponseBuilder {
        ResponseBuilder::new(422)
            .reason("Session Interval Too Small")
            .header("Min-SE", min.to_string())
    }

    /// Call `id` was answered or refreshed: the session lasts another interval. A refresh may
    /// ask for a new interval (`req`), taken when it is not below our minimum.
    pub(super) fn session_refreshed(&mut self, now: Now, id: u64, req: Option<&SipRequest>) {
        let min = self.cfg.session_min_secs;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(mut interval) = call.session_interval else {
            return;
        };
        if let Some(n) = req.and_then(requested_interval).filter(|n| *n >= min) {
            interval = n;
            call.session_interval = Some(n);
        }
        let deadline = now.instant + expiry_after(interval);
        call.session_deadline = Some(deadline);
        self.schedule(Some(deadline), TimerRef::SessionExpiry(id));
    }

    /// Call `id`'s session timer fired: hung up unless a refresh moved the deadline on.
    pub(super) fn session_timer_fired(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !call
            .session_deadline
            .is_some_and(|d| now.instant >= d && call.state != CallState::Ringing)
        {
            return;
        }
        call.span
            .in_scope(|| tracing::warn!("no session refresh in time: hanging up"));
        self.hangup(
            now,
            id,
            HangupCause::SessionExpired,
            "session timer expired",
        );
    }

    /// UPDATE in a dialog (RFC 3311): a session refresh, and an offer when it has a body.
    pub(super) fn handle_update(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let Some(id) = self.dialog_of(&req) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(481));
        };
        if !self.calls.contains_key(&id) {
            if !req.body().is_empty() && self.out_calls.contains_key(&id) {
                // The called party's offer: answered as its re-INVITE would be.
                return self.leg_reinvite(now, key, id, req);
            }
            // An outgoing leg's party refreshing the session it asked for (`leg_timer.rs`).
            self.leg_session_refreshed_by_peer(now, id);
            return self.respond(now, &key, &req, ResponseBuilder::new(200));
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.dialog.accept_remote_cseq(req.cseq).is_err() {
            let b = ResponseBuilder::new(500).reason("Out of order CSeq");
            return self.respond(now, &key, &req, b);
        }
        let mut answer = None;
        if !req.body().is_empty() {
            if call.state != CallState::Confirmed || call.webrtc_answer.is_some() {
                // Offers before the answer is confirmed cross ours; a browser's media is its
                // WebRTC transport's (re-INVITE only).
                let b = ResponseBuilder::new(491).header("Retry-After", "1");
                return self.respond(now, &key, &req, b);
            }
            call.dialog.refresh_target(req.header("Contact"));
            let Some(offer) = self.take_offer(now, &key, &req, id, "UPDATE") else {
                return;
            };
            answer = Some(self.local_sdp(id, Some(&offer)));
        } else {
            call.dialog.refresh_target(req.header("Contact"));
        }
        self.session_refreshed(now, id, Some(&req));
        let interval = self.calls.get(&id).and_then(|c| c.session_interval);
        let mut b = with_session_headers(self.dialog_response(id, 200), interval);
        if let Some(sdp) = answer {
            b = b.body("application/sdp", sdp);
            if let Some(c) = self.calls.get(&id).filter(|c| c.media_started) {
                if let Some(audio) = c.audio.clone() {
                    self.events
                        .push_back(crate::sip::endpoint::CallEvent::MediaUpdate {
                            call: id,
                            audio,
                        });
                }
            }
        }
        self.respond(now, &key, &req, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_ends_a_third_early_but_never_more_than_32_seconds_early() {
        assert_eq!(expiry_after(90), Duration::from_secs(60));
        assert_eq!(expiry_after(1800), Duration::from_secs(1768));
        assert_eq!(expiry_after(6), Duration::from_secs(4));
    }
}

//! Reliable provisional responses on calls we answer (RFC 3262, UAS): a caller whose INVITE
//! says `Require: 100rel` gets its 180 and 183 with `Require: 100rel` and an `RSeq`,
//! resent at T1, 2·T1, 4·T1 … until its PRACK arrives; after 64·T1 without one the call is
//! refused with 500 (§3). One is outstanding at a time: a later provisional waits for the
//! earlier one's PRACK, and so does the 200 when the unacknowledged one carried our SDP
//! (the caller has the answer only once it acknowledged it). A PRACK that matches nothing
//! outstanding gets 481. Callers that only *support* 100rel get ordinary provisionals, as
//! the RFC allows.

use super::{Endpoint, Now, TimerRef, TxKey};
use crate::sip::message::SipRequest;
use crate::sip::response::ResponseBuilder;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A call's reliable provisional responses.
#[derive(Default)]
pub(super) struct Reliable {
    /// RSeq of the last one sent (the first is 1).
    rseq: u32,
    /// The one not acknowledged yet.
    pending: Option<Pending>,
    /// Provisionals waiting for the pending one's PRACK, with whether they carry SDP.
    queued: VecDeque<(ResponseBuilder, bool)>,
    /// The call was answered while an SDP-carrying provisional was unacknowledged.
    pub(super) answer_waiting: bool,
}

struct Pending {
    response: ResponseBuilder,
    rseq: u32,
    carries_sdp: bool,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

impl Reliable {
    /// Whether the 200 must wait for a PRACK (an unacknowledged provisional carried SDP).
    pub(super) fn holds_answer(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.carries_sdp)
            || self.queued.iter().any(|(_, sdp)| *sdp)
    }
}

/// Whether an INVITE requires reliable provisional responses.
pub(super) fn required(req: &SipRequest) -> bool {
    req.header_values("Require")
        .iter()
        .any(|r| r.trim().eq_ignore_ascii_case("100rel"))
}

impl Endpoint {
    /// Sends a provisional response (`b`, 101-199) on call `id`: reliably when the caller
    /// required it, else as it is.
    pub(super) fn send_provisional(&mut self, now: Now, id: u64, b: ResponseBuilder, sdp: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (key, invite) = (call.invite_key.clone(), call.invite.clone());
        let Some(rel) = call.reliable.as_mut() else {
            return self.respond(now, &key, &invite, b);
        };
        if rel.pending.is_some() {
            rel.queued.push_back((b, sdp));
            return;
        }
        rel.rseq += 1;
        let rseq = rel.rseq;
        let b = b
            .header("Require", "100rel")
            .header("RSeq", rseq.to_string());
        let t1 = self.cfg.timers.t1;
        rel.pending = Some(Pending {
            response: b.clone(),
            rseq,
            carries_sdp: sdp,
            next: now.instant + t1,
            interval: t1,
            give_up: now.instant + t1 * 64,
        });
        self.respond(now, &key, &invite, b);
        self.schedule(Some(now.instant + t1), TimerRef::Reliable(id));
    }

    /// Resends the call's unacknowledged provisional, or gives up on it.
    pub(super) fn reliable_timeout(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let (key, invite) = (call.invite_key.clone(), call.invite.clone());
        let ringing = call.state == super::invite::CallState::Ringing;
        let Some(rel) = call.reliable.as_mut() else {
            return;
        };
        if !ringing {
            // Answered or ended: a provisional has nothing more to say.
            rel.pending = None;
            rel.queued.clear();
            return;
        }
        let Some(p) = rel.pending.as_mut() else {
            return;
        };
        if now.instant < p.next {
            return;
        }
        if now.instant >= p.give_up {
            call.span.in_scope(|| {
                tracing::warn!(
                    rseq = p.rseq,
                    "no PRACK for a reliable provisional response: call refused"
                )
            });
            if let Some(r) = call.reliable.as_mut() {
                r.pending = None;
                r.queued.clear();
            }
            return self.reject_call(now, id, 500, "No PRACK");
        }
        p.interval *= 2;
        p.next = (now.instant + p.interval).min(p.give_up);
        let (again, next) = (p.response.clone(), p.next);
        self.respond(now, &key, &invite, again);
        self.schedule(Some(next), TimerRef::Reliable(id));
    }

    /// A PRACK (RFC 3262 §3): acknowledges the outstanding provisional it names in `RAck`.
    pub(super) fn handle_prack(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let rack: Option<(u32, u32)> = req.header("RAck").and_then(|v| {
            let mut parts = v.split_whitespace();
            let rseq = parts.next()?.parse().ok()?;
            let cseq = parts.next()?.parse().ok()?;
            parts
                .next()
                .filter(|m| m.eq_ignore_ascii_case("INVITE"))
                .map(|_| (rseq, cseq))
        });
        let id = self.dialog_of(&req);
        let matched = id.and_then(|id| {
            let call = self.calls.get_mut(&id)?;
            let invite_cseq = call.invite.cseq;
            let rel = call.reliable.as_mut()?;
            let p = rel.pending.as_ref()?;
            (Some((p.rseq, invite_cseq)) == rack).then(|| {
                rel.pending = None;
                (
                    id,
                    rel.queued.pop_front(),
                    std::mem::take(&mut rel.answer_waiting),
                )
            })
        });
        let Some((id, next, answer_waiting)) = matched else {
            let b = ResponseBuilder::new(481).reason("No Matching Reliable Response");
            return self.respond(now, &key, &req, b);
        };
        self.respond(now, &key, &req, ResponseBuilder::new(200));
        if let Some((b, sdp)) = next {
            // Sent as a new reliable provisional (the next RSeq); the 200 keeps waiting
            // if it still has to.
            if let Some(rel) = self.calls.get_mut(&id).and_then(|c| c.reliable.as_mut()) {
                rel.answer_waiting = answer_waiting;
            }
            return self.send_provisional(now, id, b, sdp);
        }
        if answer_waiting {
            self.answer_call(now, id);
        }
    }
}

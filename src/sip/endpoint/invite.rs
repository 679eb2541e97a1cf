//! INVITE as UAS and the dialog that follows: auth (users by digest, trunks by source
//! address), tenant and target resolution, SDP offer/answer, 180/200, 2xx retransmission until
//! ACK (RFC 3261 §13.3.1.4), CANCEL → 487, BYE either way, re-INVITE for hold/resume.

use super::{CallEvent, Endpoint, LiveCall, Now, Peer, TimerRef, TxKey};
use crate::records::call::{Caller, HangupCause};
use crate::sdp::{
    browser_audio, build_answer, is_browser_offer, negotiate, Direction, LocalMedia,
    NegotiatedAudio, SessionDescription,
};
use crate::sip::dialog::Dialog;
use crate::sip::headers::uri_user;
use crate::sip::message::SipRequest;
use crate::sip::response::ResponseBuilder;
use crate::sip::transaction::ServerInviteState;
use crate::tenant::model::Target;
use bytes::Bytes;
use rsip::Method;
use std::time::{Duration, Instant};

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    /// 180 sent, no final answer yet.
    Ringing,
    /// 200 sent, waiting for the ACK.
    Answered,
    /// ACK received: the call is up.
    Confirmed,
}

/// A 2xx being retransmitted until its ACK (the UAS core's job, not the transaction's).
struct PendingAck {
    bytes: Bytes,
    cseq: u32,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// The server side of one call: its dialog, its media port and where it stands.
pub(super) struct Call {
    pub(super) span: tracing::Span,
    pub(super) tenant: String,
    pub(super) dialog: Dialog,
    pub(super) peer: Peer,
    /// The caller's own address: `peer`, or the client behind a trusted proxy.
    client: std::net::SocketAddr,
    pub(super) state: CallState,
    pub(super) invite_key: TxKey,
    pub(super) invite: SipRequest,
    pending_ack: Option<PendingAck>,
    /// Our RTP port (announced in every SDP of the call); the media backend holds the ports
    /// under the call's id until the call layer starts its media.
    pub(super) rtp_port: u16,
    /// True once `CallEvent::MediaStart` was emitted (the call layer takes the reserved media).
    pub(super) media_started: bool,
    /// Where the call was routed.
    target: Target,
    pub(super) audio: Option<NegotiatedAudio>,
    pub(super) session_id: u64,
    pub(super) session_version: u64,
    /// True when we made the offer (INVITE without SDP) and the ACK carries the answer.
    late_offer: bool,
    started: Instant,
    contact_user: String,
    /// Final error status sent, when the call ended unanswered.
    final_code: Option<u16>,
    /// 183 with SDP sent: media flows before the answer.
    early_media: bool,
    /// Our answer to a browser's offer (made by its WebRTC transport); every SDP we send
    /// in the call is this one.
    pub(super) webrtc_answer: Option<String>,
    /// The session timer's interval (RFC 4028), seconds, when the caller asked for one.
    pub(super) session_interval: Option<u32>,
    /// When the session ends without a refresh.
    pub(super) session_deadline: Option<Instant>,
    /// Reliable provisional responses (RFC 3262), when the caller required them.
    pub(super) reliable: Option<super::reliable::Reliable>,
    /// The tenant's SRTP policy, for the offers of later re-INVITEs.
    srtp_policy: crate::tenant::model::SrtpPolicy,
    /// The SRTP keys in our last offer (a late-offer INVITE under a policy that requires
    /// SRTP, or a re-INVITE without SDP on an SRTP call): the answer in the ACK is held to
    /// them.
    offered_srtp: Option<crate::sdp::SrtpKeys>,
}

/// Seconds a node out of media ports asks callers to wait: calls end and free ports all the
/// time, so soon.
const NO_PORTS_RETRY_AFTER_SECS: u32 = 2;

impl Endpoint {
    pub(super) fn handle_invite(&mut self, now: Now, key: TxKey, peer: Peer, req: SipRequest) {
        if req.to.tag().is_some() {
            return self.handle_reinvite(now, key, req);
        }
        self.respond(now, &key, &req, ResponseBuilder::new(100));
        if self.draining {
            let b = ResponseBuilder::new(503)
                .reason("Service Unavailable (shutting down)")
                .header("Retry-After", self.cfg.drain_retry_after.to_string());
            return self.respond(now, &key, &req, b);
        }
        let session_interval = match self.session_ask(&req) {
            super::session_timer::SessionAsk::None => None,
            super::session_timer::SessionAsk::Interval(n) => Some(n),
            super::session_timer::SessionAsk::TooBrief(min) => {
                let b = Self::session_too_brief(min);
                return self.respond(now, &key, &req, b);
            }
        };
        let dialed = uri_user(&req.uri().to_string()).unwrap_or_default();
        let host = req.uri().host().to_string();
        let snap = self.tenants.load();
        let Some(tenant) = snap.resolve(Some(&host), Some(&dialed)).cloned() else {
            return self.respond(
                now,
                &key,
                &req,
                ResponseBuilder::new(404).reason("Unknown Domain"),
            );
        };

        // Who is calling: a caller the call layer trusts by address (a trunk), or a user
        // proving a password. Anything else is challenged.
        let has_credentials = !req.header_values_raw("Proxy-Authorization").is_empty();
        let from_user = uri_user(&req.from.uri).unwrap_or_default();
        let client = self.client_of(&peer, &req);
        let trusted = (!has_credentials)
            .then(|| {
                self.policy
                    .trusted_caller(&tenant, client.ip(), &from_user, &dialed)
            })
            .flatten();
        let caller = match trusted {
            Some(c) => c,
            None => {
                let Some(u) = self.authenticate_or_answer(now, &key, peer, &req, &tenant, true)
                else {
                    return;
                };
                Caller::User(
                    tenant
                        .user_by_username(&u)
                        .map(|x| x.extension.clone())
                        .unwrap_or(u),
                )
            }
        };
        let target = match self.policy.route(&tenant, &caller, &dialed) {
            Ok(t) => t,
            Err(refusal) => {
                tracing::info!(tenant = %tenant.id(), %caller, %dialed, code = refusal.code, "no such destination");
                return self.refuse(now, &key, &req, &refusal);
            }
        };
        let active = self.active_calls_of(tenant.id());
        let longest = match self.policy.admit(&tenant, active) {
            Ok(longest) => longest,
            Err(refusal) => {
                tracing::warn!(tenant = %tenant.id(), active, "tenant call limit reached");
                return self.refuse(now, &key, &req, &refusal);
            }
        };

        // A trunk's own SRTP policy, else the tenant's.
        let srtp_policy = match &caller {
            Caller::Trunk { trunk, .. } => tenant
                .config
                .trunks
                .iter()
                .find(|t| &t.id == trunk)
                .and_then(|t| t.srtp),
            _ => None,
        }
        .unwrap_or(tenant.config.settings.srtp);

        // Offer/answer. An INVITE without a body asks us to offer in the 200 (late offer).
        let mut audio = None;
        let mut browser_offer = None;
        let mut offered_srtp = None;
        if !req.body().is_empty() {
            let is_sdp = req.header("Content-Type").is_some_and(|ct| {
                ct.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/sdp")
            });
            if !is_sdp {
                let b = ResponseBuilder::new(415).header("Accept", "application/sdp");
                return self.respond(now, &key, &req, b);
            }
            let offer = match SessionDescription::parse(req.body()) {
                Ok(o) => o,
                Err(e) => return self.refuse_sdp(now, &key, &req, &e),
            };
            if is_browser_offer(&offer, req.body()) {
                // A browser: answered by the media side's WebRTC transport once ports exist.
                browser_offer = Some(offer);
            } else {
                match negotiate(&offer) {
                    Ok(mut n) => {
                        let policy = srtp_policy;
                        if let Err(e) = super::srtp::admit(&mut n, peer.transport, policy, None) {
                            return self.refuse_srtp(now, &key, &req, &peer, &e);
                        }
                        if let Some(k) = &n.srtp {
                            tracing::info!(call_id = %req.call_id, suite = k.suite.name(), "SRTP answered (SDES)");
                        }
                        audio = Some((offer, n));
                    }
                    Err(e) => return self.refuse_sdp(now, &key, &req, &e),
                }
            }
        } else {
            // No offer: ours goes in the 200, with our key under a policy that requires
            // SRTP (over TLS only; refused otherwise).
            match super::srtp::for_our_offer(peer.transport, srtp_policy) {
                Ok(keys) => {
                    tracing::info!(call_id = %req.call_id, srtp = keys.is_some(), "late offer: our offer goes in the 200");
                    offered_srtp = keys
                }
                Err(e) => return self.refuse_srtp(now, &key, &req, &peer, &e),
            }
        }
        let id = self.next_call;
        let rtp_port = match self.media.reserve(id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot answer call");
                // This node is full, not the service: with Retry-After, a balancer in front
                // (RFC 3261 §21.5.4) tries another node rather than fail the call.
                return self.respond(
                    now,
                    &key,
                    &req,
                    ResponseBuilder::new(503)
                        .reason("Service Unavailable (no media ports)")
                        .header("Retry-After", NO_PORTS_RETRY_AFTER_SECS.to_string()),
                );
            }
        };
        self.next_call += 1;

        let mut webrtc_answer = None;
        if let Some(offer) = browser_offer {
            let local = std::net::SocketAddr::new(self.cfg.public_ip, rtp_port);
            let answered = self
                .media
                .answer_browser(id, &String::from_utf8_lossy(req.body()), now.instant)
                .map_err(|e| e.to_string())
                .and_then(|answer| {
                    browser_audio(&answer, local, Direction::SendRecv)
                        .map(|neg| (answer, neg))
                        .map_err(|e| e.to_string())
                });
            match answered {
                Ok((answer, neg)) => {
                    webrtc_answer = Some(answer);
                    audio = Some((offer, neg));
                }
                Err(e) => {
                    tracing::info!(error = %e, "browser offer refused");
                    self.media.release(id);
                    return self.refuse_sdp(now, &key, &req, &e);
                }
            }
        }

        let span = tracing::info_span!("call", call_id = %req.call_id, tenant = %tenant.id());
        span.in_scope(|| tracing::info!(%caller, from = %caller.number(), %dialed, target = ?target, source = %peer.addr, "call started"));
        let local_tag = self.ids.token();
        let Ok(dialog) = Dialog::new_uas(&req, &local_tag, self.ids.first_cseq()) else {
            self.media.release(id);
            let b = ResponseBuilder::new(400).reason("Bad Request (From without tag)");
            return self.respond(now, &key, &req, b);
        };
        let contact_user = match &target {
            Target::User { extension } => extension.clone(),
            _ => dialed.clone(),
        };
        let reliable = super::reliable::required(&req);
        let call = Call {
            span,
            tenant: tenant.id().to_string(),
            dialog,
            peer,
            client,
            state: CallState::Ringing,
            invite_key: key.clone(),
            invite: req,
            pending_ack: None,
            rtp_port,
            media_started: false,
            target: target.clone(),
            audio: audio.as_ref().map(|(_, n)| n.clone()),
            session_id: self.ids.session_id(),
            session_version: 1,
            late_offer: audio.is_none(),
            started: now.instant,
            contact_user,
            final_code: None,
            early_media: false,
            webrtc_answer,
            session_interval,
            session_deadline: None,
            reliable: reliable.then(Default::default),
            srtp_policy,
            offered_srtp,
        };
        self.dialogs
            .insert((call.dialog.call_id.clone(), local_tag.clone()), id);
        self.invite_calls.insert(key.clone(), id);
        self.tenant_call_started(&call.tenant);
        self.schedule(Some(now.instant + longest), TimerRef::MaxLength(id));
        self.calls.insert(id, call);
        self.stats.calls_started += 1;

        let call_id = self.calls[&id].dialog.call_id.clone();
        self.events.push_back(CallEvent::Incoming {
            call: id,
            tenant,
            caller,
            dialed,
            call_id,
            target,
        });
    }

    /// Sends 180 Ringing for a call still ringing.
    pub fn ring_call(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.state != CallState::Ringing {
            return;
        }
        let ringing = self.dialog_response(id, 180);
        self.send_provisional(now, id, ringing, false);
    }

    /// Early media: 183 Session Progress with our SDP to a ringing call, and its media starts
    /// before the answer (the called side's ringback or announcements reach the caller).
    /// Nothing happens for a call without an offer in its INVITE.
    pub fn early_media_call(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.state != CallState::Ringing || call.early_media || call.audio.is_none() {
            return;
        }
        let offer = SessionDescription::parse(call.invite.body()).ok();
        let Some(offer) = offer else {
            return;
        };
        let sdp = self.local_sdp(id, Some(&offer));
        let b = self.dialog_response(id, 183).body("application/sdp", sdp);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.early_media = true;
        self.send_provisional(now, id, b, true);
        self.start_media(id);
    }

    /// Answers a ringing call (200 with our SDP); media starts once the offer/answer is done.
    pub fn answer_call(&mut self, now: Now, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.state != CallState::Ringing {
            return;
        }
        if let Some(rel) = call.reliable.as_mut().filter(|r| r.holds_answer()) {
            // Our SDP went in a provisional the caller has not acknowledged yet: the 200
            // follows its PRACK.
            rel.answer_waiting = true;
            return;
        }
        let call = &self.calls[&id];
        let offer = if call.invite.body().is_empty() {
            None
        } else {
            SessionDescription::parse(call.invite.body()).ok()
        };
        self.answer(now, id, offer.as_ref());
    }

    /// Refuses a ringing call with a final error (an answered call is hung up instead).
    pub fn reject_call(&mut self, now: Now, id: u64, code: u16, reason: &str) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.state != CallState::Ringing || !(300..700).contains(&code) {
            return self.hangup(now, id, HangupCause::AppRefused, "rejected by the call app");
        }
        let (key, invite) = (call.invite_key.clone(), call.invite.clone());
        call.span
            .in_scope(|| tracing::info!(code, reason, "call refused"));
        let b = self.dialog_response(id, code).reason(reason);
        self.respond(now, &key, &invite, b);
        if let Some(c) = self.calls.get_mut(&id) {
            c.final_code = Some(code);
        }
        self.end_call(id, HangupCause::AppRefused, "refused");
    }

    /// A response in the dialog of call `id` (To tag and Contact set).
    pub(super) fn dialog_response(&self, id: u64, code: u16) -> ResponseBuilder {
        let call = &self.calls[&id];
        ResponseBuilder::new(code)
            .to_tag(&call.dialog.local_tag)
            .header(
                "Contact",
                self.contact_for(&call.contact_user, call.peer.transport),
            )
    }

    /// The SDP we send: an answer to `offer`, or an offer of our own.
    pub(super) fn local_sdp(&mut self, id: u64, offer: Option<&SessionDescription>) -> String {
        let public_ip = self.cfg.public_ip;
        let Some(call) = self.calls.get_mut(&id) else {
            return String::new();
        };
        let local = LocalMedia {
            address: public_ip,
            port: call.rtp_port,
            session_id: call.session_id,
            session_version: call.session_version,
        };
        call.session_version += 1;
        if let Some(a) = &call.webrtc_answer {
            return a.clone();
        }
        match (offer, &call.audio) {
            (Some(offer), Some(neg)) => build_answer(offer, neg, &local),
            _ => {
                // Our offer: an SRTP call keeps its key (a re-INVITE without SDP), a late
                // offer has the one chosen when it came in.
                if let Some(k) = call.audio.as_ref().and_then(|a| a.srtp.clone()) {
                    call.offered_srtp = Some(k);
                }
                our_offer(&local, call.offered_srtp.as_ref())
            }
        }
    }

    /// Sends the 200 for the initial INVITE and starts retransmitting it until the ACK.
    fn answer(&mut self, now: Now, id: u64, offer: Option<&SessionDescription>) {
        let sdp = self.local_sdp(id, offer);
        let interval = self.calls.get(&id).and_then(|c| c.session_interval);
        let b = self
            .dialog_response(id, 200)
            .header("Allow", super::ALLOW)
            .header("Supported", super::SUPPORTED)
            .body("application/sdp", sdp);
        let b = super::session_timer::with_session_headers(b, interval);
        let call = &self.calls[&id];
        let bytes = b.build(&call.invite, call.peer.addr, &self.cfg.server_name);
        let key = call.invite_key.clone();
        let cseq = call.invite.cseq;
        self.send_2xx(now, id, &key, cseq, bytes);
        if let Some(call) = self.calls.get_mut(&id) {
            call.state = CallState::Answered;
        }
        self.session_refreshed(now, id, None);
        self.start_media(id);
    }

    /// Hands the RTP port and the negotiated audio to the call layer once both sides of the
    /// offer/answer are known (at the 200, or at the ACK for a late offer).
    fn start_media(&mut self, id: u64) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.media_started || (call.state == CallState::Ringing && !call.early_media) {
            return;
        }
        let Some(audio) = call.audio.clone() else {
            return;
        };
        call.media_started = true;
        self.events.push_back(CallEvent::MediaStart {
            call: id,
            audio,
            signalling_ip: call.client.ip(),
        });
    }

    /// Sends a 2xx to an INVITE through its transaction and arms the UAS retransmission.
    fn send_2xx(&mut self, now: Now, id: u64, key: &TxKey, cseq: u32, bytes: Bytes) {
        let t1 = self.cfg.timers.t1;
        let give_up = now.instant + self.cfg.timers.t64();
        if let Some(entry) = self.server_txs.get_mut(key) {
            if let super::ServerTx::Invite(tx) = &mut entry.tx {
                let _ = tx.send_response(200, bytes.clone(), now.instant);
                let next = tx.poll_timeout();
                self.schedule(next, TimerRef::Server(key.clone()));
            }
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let peer = call.peer;
        let reliable = peer.transport.is_reliable();
        call.pending_ack = Some(PendingAck {
            bytes: bytes.clone(),
            cseq,
            next: if reliable { give_up } else { now.instant + t1 },
            interval: t1,
            give_up,
        });
        let next = call.pending_ack.as_ref().map(|p| p.next);
        self.send(peer, bytes);
        self.schedule(next, TimerRef::Call(id));
    }

    pub(super) fn call_timeout(&mut self, now: Now, id: u64) {
        let t2 = self.cfg.timers.t2;
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(p) = call.pending_ack.as_mut() else {
            return;
        };
        if p.next > now.instant {
            return;
        }
        if now.instant >= p.give_up {
            call.pending_ack = None;
            call.span
                .in_scope(|| tracing::warn!("no ACK for 200 OK within 64*T1: hanging up"));
            self.hangup(now, id, HangupCause::NoAck, "no ACK for 200 OK");
            return;
        }
        let bytes = p.bytes.clone();
        p.interval = (p.interval * 2).min(t2);
        p.next = (now.instant + p.interval).min(p.give_up);
        let next = p.next;
        let peer = call.peer;
        self.send(peer, bytes);
        self.schedule(Some(next), TimerRef::Call(id));
    }

    pub(super) fn handle_ack(&mut self, now: Now, _peer: Peer, req: SipRequest) {
        let key = TxKey::for_request(&req, &Method::Ack);
        if let Some(entry) = self.server_txs.get_mut(&key) {
            if let super::ServerTx::Invite(tx) = &mut entry.tx {
                if tx.state() == ServerInviteState::Completed {
                    let events = tx.on_ack(now.instant);
                    let next = tx.poll_timeout();
                    let peer = entry.peer;
                    self.apply_server_events(&key, peer, events);
                    self.schedule(next, TimerRef::Server(key));
                    return;
                }
            }
        }
        // ACK for a 2xx: a request of its own inside the dialog.
        let Some(tag) = req.to.tag() else { return };
        let Some(&id) = self.dialogs.get(&(req.call_id.clone(), tag.to_string())) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call
            .pending_ack
            .as_ref()
            .is_some_and(|p| p.cseq == req.cseq)
        {
            call.pending_ack = None;
            if call.state == CallState::Answered {
                call.state = CallState::Confirmed;
                call.span
                    .in_scope(|| tracing::info!("call answered and confirmed"));
            }
            if call.late_offer && !req.body().is_empty() {
                call.late_offer = false;
                let answer = SessionDescription::parse(req.body())
                    .and_then(|a| negotiate(&a))
                    .map_err(|e| e.to_string())
                    .and_then(|mut neg| {
                        super::srtp::accept_answer(&mut neg, call.offered_srtp.as_ref())
                            .map(|()| neg)
                            .map_err(|e| e.to_string())
                    });
                match answer {
                    Ok(neg) => {
                        call.audio = Some(neg);
                        self.start_media(id);
                    }
                    Err(e) => {
                        call.span.in_scope(
                            || tracing::info!(error = %e, "unusable SDP answer in ACK: hanging up"),
                        );
                        self.hangup(now, id, HangupCause::Server, "bad SDP answer in ACK");
                    }
                }
            }
        }
    }

    pub(super) fn handle_cancel(&mut self, now: Now, peer: Peer, req: SipRequest) {
        let cancel_key = TxKey::for_request(&req, &Method::Cancel);
        if let Some(entry) = self.server_txs.get_mut(&cancel_key) {
            if let super::ServerTx::NonInvite(tx) = &mut entry.tx {
                if let Some(b) = tx.on_request_retransmission() {
                    self.send(peer, b);
                }
            }
            return;
        }
        let reliable = peer.transport.is_reliable();
        if !self.may_open_transaction(peer.addr.ip()) {
            return;
        }
        self.insert_server_tx(
            cancel_key.clone(),
            super::ServerTxEntry {
                tx: super::ServerTx::NonInvite(super::ServerNonInviteTransaction::new(
                    reliable,
                    self.cfg.timers,
                )),
                peer,
            },
        );
        let invite_key = TxKey::for_request(&req, &Method::Invite);
        let proceeding = matches!(
            self.server_txs.get(&invite_key).map(|e| &e.tx),
            Some(super::ServerTx::Invite(tx)) if tx.state() == ServerInviteState::Proceeding
        );
        if !self.server_txs.contains_key(&invite_key) {
            return self.respond(now, &cancel_key, &req, ResponseBuilder::new(481));
        }
        let tag = self.ids.token();
        self.respond(
            now,
            &cancel_key,
            &req,
            ResponseBuilder::new(200).to_tag(&tag),
        );
        if !proceeding {
            return; // Too late: the final response is out; the caller will BYE.
        }
        let Some(id) = self.invite_calls.get(&invite_key).copied() else {
            return;
        };
        let b = self.dialog_response(id, 487);
        let invite = self.calls[&id].invite.clone();
        self.respond(now, &invite_key, &invite, b);
        if let Some(c) = self.calls.get_mut(&id) {
            c.final_code = Some(487);
        }
        self.end_call(id, HangupCause::CallerCancel, "cancelled by caller");
    }

    /// The call whose dialog an in-dialog request belongs to (Call-ID and our To tag).
    pub(super) fn dialog_of(&self, req: &SipRequest) -> Option<u64> {
        let tag = req.to.tag()?;
        self.dialogs
            .get(&(req.call_id.clone(), tag.to_string()))
            .copied()
    }

    pub(super) fn handle_bye(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let Some(id) = self.dialog_of(&req) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(481));
        };
        self.respond(now, &key, &req, ResponseBuilder::new(200));
        if self.out_calls.contains_key(&id) {
            return self.end_leg(id, HangupCause::CalleeHangup, "callee hung up");
        }
        // A BYE before the 2xx was ACKed still ends the INVITE transaction cleanly: the ACK
        // (if it ever comes) finds no dialog and is dropped.
        self.end_call(id, HangupCause::CallerHangup, "caller hung up");
    }

    /// INFO in a dialog: DTMF as `application/dtmf-relay` or `application/dtmf` joins the
    /// call's digit stream; other bodies are acknowledged (phones send INFO for many things,
    /// and refusing them does not help the call).
    pub(super) fn handle_info(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let Some(id) = self.dialog_of(&req) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(481));
        };
        let content_type = req
            .header("Content-Type")
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = String::from_utf8_lossy(req.body());
        match info_digit(&content_type, &body) {
            Ok(Some(digit)) => self.events.push_back(CallEvent::Digit { call: id, digit }),
            Ok(None) => {}
            Err(()) => {
                let b = ResponseBuilder::new(400).reason("Bad Request (unreadable DTMF in INFO)");
                return self.respond(now, &key, &req, b);
            }
        }
        self.respond(now, &key, &req, ResponseBuilder::new(200));
    }

    /// The final status a policy refusal names.
    fn refuse(&mut self, now: Now, key: &TxKey, req: &SipRequest, refusal: &super::Refusal) {
        let mut b = ResponseBuilder::new(refusal.code);
        if let Some(reason) = refusal.reason {
            b = b.reason(reason);
        }
        self.respond(now, key, req, b);
    }

    /// `488 Not Acceptable Here` with a Warning naming what is wrong with the offer.
    pub(super) fn refuse_sdp(
        &mut self,
        now: Now,
        key: &TxKey,
        req: &SipRequest,
        e: &dyn std::fmt::Display,
    ) {
        let b = ResponseBuilder::new(488)
            .header("Warning", format!("304 {} \"{e}\"", self.cfg.public_host));
        self.respond(now, key, req, b);
    }

    /// 488 for an offer whose SRTP (or lack of it) we may not answer; logged and counted.
    pub(super) fn refuse_srtp(
        &mut self,
        now: Now,
        key: &TxKey,
        req: &SipRequest,
        peer: &Peer,
        e: &super::srtp::SrtpRefused,
    ) {
        tracing::info!(call_id = %req.call_id, source = %peer.addr, transport = ?peer.transport, reason = %e, "media offer refused");
        self.stats.srtp_offers_refused += 1;
        self.refuse_sdp(now, key, req, e);
    }

    /// A browser's re-INVITE (hold, resume, a refreshed session): the ICE and DTLS session
    /// stays as negotiated, so the answer is our first one with the direction that answers the
    /// new offer.
    fn browser_reinvite(&mut self, now: Now, key: TxKey, id: u64, req: SipRequest) {
        let offered = match SessionDescription::parse(req.body()) {
            Ok(o) => o
                .media
                .iter()
                .find(|m| m.kind == "audio" && m.port != 0)
                .and_then(|m| m.direction)
                .or(o.direction)
                .unwrap_or(crate::sdp::Direction::SendRecv),
            Err(e) => {
                return self.refuse_sdp(now, &key, &req, &e);
            }
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let was_hold = call.audio.as_ref().is_some_and(|a| a.is_hold());
        let answer_dir = offered.answer();
        if let Some(a) = call.audio.as_mut() {
            a.offered_direction = offered;
            a.direction = answer_dir;
        }
        let hold = call.audio.as_ref().is_some_and(|a| a.is_hold());
        call.span.in_scope(|| {
            tracing::info!(hold, direction = answer_dir.as_str(), "browser re-INVITE")
        });
        let sdp = call
            .webrtc_answer
            .as_deref()
            .map(|a| with_direction(a, answer_dir))
            .unwrap_or_default();
        let audio = call.audio.clone();
        let started = call.media_started;
        if hold != was_hold {
            self.events
                .push_back(CallEvent::HoldChanged { call: id, hold });
        }
        let b = self
            .dialog_response(id, 200)
            .header("Allow", super::ALLOW)
            .body("application/sdp", sdp);
        let peer = self.calls[&id].peer;
        let bytes = b.build(&req, peer.addr, &self.cfg.server_name);
        self.send_2xx(now, id, &key, req.cseq, bytes);
        if let (true, Some(audio)) = (started, audio) {
            self.events
                .push_back(CallEvent::MediaUpdate { call: id, audio });
        }
    }

    fn handle_reinvite(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let Some(id) = self.dialog_of(&req) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(481));
        };
        if self.out_calls.contains_key(&id) {
            return self.leg_reinvite(now, key, id, req);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.pending_ack.is_some() || call.state == CallState::Ringing {
            // RFC 3261 §14.2: an offer while ours is unanswered.
            let b = ResponseBuilder::new(491).header("Retry-After", "1");
            return self.respond(now, &key, &req, b);
        }
        if call.dialog.accept_remote_cseq(req.cseq).is_err() {
            let b = ResponseBuilder::new(500).reason("Out of order CSeq");
            return self.respond(now, &key, &req, b);
        }
        call.dialog.refresh_target(req.header("Contact"));
        let mut offer = None;
        if !req.body().is_empty() && call.webrtc_answer.is_some() {
            return self.browser_reinvite(now, key, id, req);
        }
        if !req.body().is_empty() {
            let Some(o) = self.take_offer(now, &key, &req, id, "re-INVITE") else {
                return;
            };
            offer = Some(o);
        }
        let sdp = self.local_sdp(id, offer.as_ref());
        // A re-INVITE refreshes the session too (RFC 4028 §10).
        self.session_refreshed(now, id, Some(&req));
        let interval = self.calls.get(&id).and_then(|c| c.session_interval);
        let b = self
            .dialog_response(id, 200)
            .header("Allow", super::ALLOW)
            .body("application/sdp", sdp);
        let b = super::session_timer::with_session_headers(b, interval);
        let peer = self.calls[&id].peer;
        let bytes = b.build(&req, peer.addr, &self.cfg.server_name);
        let cseq = req.cseq;
        self.send_2xx(now, id, &key, cseq, bytes);
        if let Some(call) = self.calls.get_mut(&id) {
            call.late_offer = offer.is_none();
            if let (true, Some(audio)) = (call.media_started, &call.audio) {
                if offer.is_some() {
                    self.events.push_back(CallEvent::MediaUpdate {
                        call: id,
                        audio: audio.clone(),
                    });
                }
            }
        }
        self.start_media(id);
    }

    /// An offer from the caller inside its call (re-INVITE, UPDATE): negotiated, held to the
    /// SRTP rules, and kept as the call's audio; a hold or resume is passed on. `None` when it
    /// was refused (the 488 is sent here).
    pub(super) fn take_offer(
        &mut self,
        now: Now,
        key: &TxKey,
        req: &SipRequest,
        id: u64,
        method: &'static str,
    ) -> Option<SessionDescription> {
        let (o, mut neg) = match SessionDescription::parse(req.body())
            .and_then(|o| negotiate(&o).map(|n| (o, n)))
        {
            Ok(p) => p,
            Err(e) => {
                self.refuse_sdp(now, key, req, &e);
                return None;
            }
        };
        let call = self.calls.get_mut(&id)?;
        let ours = call.audio.as_ref().and_then(|a| a.srtp.as_ref());
        let (transport, policy) = (call.peer.transport, call.srtp_policy);
        if let Err(e) = super::srtp::admit(&mut neg, transport, policy, ours) {
            let peer = call.peer;
            self.refuse_srtp(now, key, req, &peer, &e);
            return None;
        }
        call.span.in_scope(|| {
            tracing::info!(
                hold = neg.is_hold(),
                direction = neg.direction.as_str(),
                "{method} with an offer"
            )
        });
        let was_hold = call.audio.as_ref().is_some_and(|a| a.is_hold());
        let hold = neg.is_hold();
        call.audio = Some(neg);
        if hold != was_hold {
            self.events
                .push_back(CallEvent::HoldChanged { call: id, hold });
        }
        Some(o)
    }

    /// Ends a call from our side: BYE once it is answered, a final error while ringing.
    pub(super) fn hangup(&mut self, now: Now, id: u64, cause: HangupCause, why: &str) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.state == CallState::Ringing {
            let b = self
                .dialog_response(id, 480)
                .reason("Temporarily Unavailable (server hung up)");
            let key = call.invite_key.clone();
            let invite = call.invite.clone();
            self.respond(now, &key, &invite, b);
            if let Some(c) = self.calls.get_mut(&id) {
                c.final_code = Some(480);
            }
            return self.end_call(id, cause, why);
        }
        let branch = self.ids.branch();
        let peer = call.peer;
        let bytes = self.build_bye(id, &branch);
        self.send_request(now, peer, branch, bytes);
        self.end_call(id, cause, why);
    }

    fn build_bye(&mut self, id: u64, branch: &str) -> Bytes {
        let via = {
            let call = &self.calls[&id];
            self.via_for(call.peer.transport, branch)
        };
        let extra = format!("User-Agent: {}\r\n", self.cfg.server_name);
        let Some(call) = self.calls.get_mut(&id) else {
            return Bytes::new();
        };
        Bytes::from(call.dialog.request("BYE", &via, &extra, None))
    }

    /// Forgets a call and frees its media port.
    pub(super) fn end_call(&mut self, id: u64, cause: HangupCause, why: &str) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.media.release(id);
        self.dialogs
            .remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.invite_calls.remove(&call.invite_key);
        self.stats.calls_ended += 1;
        self.tenant_call_ended(&call.tenant);
        let by = match cause {
            HangupCause::CallerHangup | HangupCause::CallerCancel => super::EndedBy::Caller,
            _ => super::EndedBy::Server,
        };
        self.events.push_back(CallEvent::Ended {
            call: id,
            by,
            code: call.final_code,
            cause,
            reason: why.to_string(),
        });
        let secs = self.secs_since(call.started);
        call.span.in_scope(|| {
            tracing::info!(
                reason = why,
                duration_s = format!("{secs:.1}"),
                "call ended"
            )
        });
        drop(call); // releases the RTP port lease
    }

    /// Hangs up one call from our side (media timeout, admin request).
    pub fn hangup_call(&mut self, now: Now, id: u64, cause: HangupCause, why: &str) {
        if self.out_calls.contains_key(&id) {
            return self.hangup_leg(now, id, cause, why);
        }
        self.hangup(now, id, cause, why);
    }

    /// A tenant's calls in progress.
    pub fn calls_of(&self, tenant: &str, now: Now) -> Vec<LiveCall> {
        let mut out: Vec<LiveCall> = self
            .calls
            .iter()
            .filter(|(_, c)| c.tenant == tenant)
            .map(|(&id, c)| LiveCall {
                id,
                call_id: c.dialog.call_id.clone(),
                from: c.dialog.remote_party.clone(),
                to: c.dialog.local_party.clone(),
                state: match c.state {
                    CallState::Ringing => "ringing",
                    CallState::Answered => "answered",
                    CallState::Confirmed => "up",
                },
                duration_secs: now.instant.saturating_duration_since(c.started).as_secs(),
                codec: c.audio.as_ref().map(|a| a.codec.name()),
                target: format!("{:?}", c.target),
                on_hold: c.audio.as_ref().is_some_and(|a| a.is_hold()),
                source: c.client,
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// The tenant of a live call.
    pub fn call_tenant(&self, id: u64) -> Option<&str> {
        self.calls.get(&id).map(|c| c.tenant.as_str())
    }

    /// Hangs up every call (drain timeout reached).
    pub fn hangup_all(&mut self, now: Now) {
        let ids: Vec<u64> = self
            .calls
            .keys()
            .chain(self.out_calls.keys())
            .copied()
            .collect();
        for id in ids {
            self.hangup_call(now, id, HangupCause::Shutdown, "server shutting down");
        }
    }
}

/// The digit carried by an INFO body: `Ok(None)` for bodies that are not DTMF,
/// `Err` for DTMF bodies that cannot be read.
#[allow(clippy::result_unit_err)]
pub fn info_digit(content_type: &str, body: &str) -> Result<Option<char>, ()> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let raw = match ct {
        // Signal=5\r\nDuration=160 (the de-facto format from Cisco, Asterisk, FreeSWITCH).
        "application/dtmf-relay" => body
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("signal")
                    .then(|| v.trim().to_string())
            })
            .ok_or(())?,
        // Just the digit.
        "application/dtmf" => body.trim().to_string(),
        _ => return Ok(None),
    };
    let mut chars = raw.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if is_dtmf_digit(c.to_ascii_uppercase()) => {
            Ok(Some(c.to_ascii_uppercase()))
        }
        // Some phones send the event number ("10" for *, "11" for #).
        _ => raw
            .parse::<usize>()
            .ok()
            .and_then(|n| DTMF_EVENTS.get(n).map(|&b| b as char))
            .map(Some)
            .ok_or(()),
    }
}

/// DTMF digits by RFC 4733 event number (INFO bodies use the same numbering).
const DTMF_EVENTS: &[u8; 16] = b"0123456789*#ABCD";

/// True for the sixteen DTMF digits (upper case letters).
pub(super) fn is_dtmf_digit(c: char) -> bool {
    c.is_ascii() && DTMF_EVENTS.contains(&(c as u8))
}

/// Our own offer (late-offer INVITE, outgoing legs): PCMU, PCMA and telephone-event.
/// Our offer: PCMU, PCMA and telephone-event; with `srtp`, on `RTP/SAVP` with our key.
pub(super) fn our_offer(local: &LocalMedia, srtp: Option<&crate::sdp::SrtpKeys>) -> String {
    let ip_kind = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let (proto, crypto) = match srtp {
        Some(k) => ("RTP/SAVP", k.crypto_line()),
        None => ("RTP/AVP", String::new()),
    };
    format!(
        "v=0\r\no=switchyard {sid} {ver} IN {ip_kind} {ip}\r\ns=switchyard\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\n\
m=audio {port} {proto} 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n{crypto}a=sendrecv\r\n",
        sid = local.session_id,
        ver = local.session_version,
        ip = local.address,
        port = local.port
    )
}

/// `sdp` with its direction attributes set to `dir`.
fn with_direction(sdp: &str, dir: crate::sdp::Direction) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let bare = line.trim_end();
        if matches!(
            bare,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            out.push_str(&format!("a={}\r\n", dir.as_str()));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod info_tests {
    use super::info_digit;

    #[test]
    fn info_dtmf_bodies() {
        assert_eq!(
            info_digit("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            Ok(Some('5'))
        );
        assert_eq!(
            info_digit("application/dtmf-relay", "Signal= #\r\nDuration=100"),
            Ok(Some('#'))
        );
        assert_eq!(
            info_digit("application/dtmf-relay", "Signal=11\r\n"),
            Ok(Some('#'))
        );
        assert_eq!(info_digit("application/dtmf", "7"), Ok(Some('7')));
        assert_eq!(info_digit("application/dtmf;charset=x", "a"), Ok(Some('A')));
        assert_eq!(
            info_digit("application/media_control+xml", "<x/>"),
            Ok(None)
        );
        assert_eq!(
            info_digit("application/dtmf-relay", "Duration=100"),
            Err(())
        );
        assert_eq!(info_digit("application/dtmf", "77"), Err(()));
    }
}

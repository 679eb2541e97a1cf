//! Outgoing calls: the B2BUA's second legs. [`Endpoint::dial_user`] sends an INVITE (with our
//! SDP offer) to every registered contact of a user at once; each is its own leg with its own
//! client INVITE transaction and, once answered, its own dialog. The call layer hears of them
//! as `CallEvent::LegStarted/LegProgress/LegAnswered/LegFailed`, then `MediaStart` and `Ended`
//! with the leg's id, and ends them with [`Endpoint::hangup_call`] (CANCEL while ringing, BYE
//! once answered).

use super::{CallEvent, Endpoint, Now, Peer, TimerRef, TransportKind};
use crate::records::call::HangupCause;
use crate::sdp::{build_answer, negotiate, LocalMedia, NegotiatedAudio, SessionDescription};
use crate::sip::dialog::Dialog;
use crate::sip::digest::authorization_for;
use crate::sip::headers::{escape_user, quote_display};
use crate::sip::message::{SipRequest, SipResponse};
use crate::sip::response::ResponseBuilder;
use crate::sip::transaction::ClientInviteTransaction;
use bytes::Bytes;
use std::time::Instant;

/// Where an outgoing leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutState {
    /// INVITE sent, nothing but 100 yet.
    Calling,
    /// A provisional response (ringing) arrived.
    Early,
    /// 2xx received and ACKed.
    Confirmed,
}

/// One outgoing leg.
pub(super) struct OutCall {
    pub(super) span: tracing::Span,
    /// The parent call's tenant: the leg counts toward its concurrent-call limit.
    pub(super) tenant: String,
    pub(super) peer: Peer,
    pub(super) request_uri: String,
    /// `Route` header lines for requests outside the dialog (INVITE, its ACK and CANCEL): the
    /// Path of a contact registered through a proxy; empty otherwise.
    route: String,
    pub(super) local_party: String,
    pub(super) remote_party: String,
    call_id: String,
    pub(super) local_tag: String,
    pub(super) cseq: u32,
    pub(super) via: String,
    pub(super) state: OutState,
    pub(super) cancelled: bool,
    dialog: Option<Dialog>,
    ack: Option<Bytes>,
    /// True once `CallEvent::MediaStart` was emitted (early media or the answer); until then
    /// the media backend holds the leg's ports under its id.
    pub(super) media_started: bool,
    rtp_port: u16,
    session_id: u64,
    session_version: u64,
    pub(super) started: Instant,
    pub(super) contact: String,
    /// The user part of our Contact (the caller), to make it again for another transport.
    pub(super) contact_user: String,
    sdp: String,
    /// Digest credentials towards a provider (trunk legs).
    credentials: Option<(String, String)>,
    /// True once we answered a challenge (a second one is a failure).
    pub(super) auth_sent: bool,
    /// A trunk leg's targets not tried yet, in order (RFC 3263): the next is tried when
    /// this one stays silent, cannot be reached, times out or answers 503.
    pub(super) alternates: Vec<super::locate::Target>,
    /// Some response to the current INVITE arrived (the target is alive).
    pub(super) heard: bool,
    /// Our SRTP keys on this leg (offered under a policy that requires SRTP, or answered to
    /// the callee's SRTP re-offer); `None` for plain RTP.
    pub(super) srtp: Option<crate::sdp::SrtpKeys>,
    /// Our last offer in the leg put it on hold (a hold passed through): a refresh by
    /// re-INVITE offers the same.
    pub(super) offered_hold: bool,
    /// The last RSeq acknowledged by PRACK (RFC 3262).
    pub(super) last_rseq: Option<u32>,
    /// The CSeq of our last PRACK (0: none): the dialog's numbering continues after it.
    pub(super) prack_cseq: u32,
    /// The session timer the called party's 2xx asked for (RFC 4028).
    pub(super) session: Option<super::leg_timer::LegSession>,
    /// The callee put the call on hold (its last re-INVITE).
    on_hold: bool,
    /// A browser leg: our offer came from the media side's WebRTC transport, and the
    /// browser's answer completes it there.
    browser: bool,
}

impl OutCall {
    /// Our RTP port, session id and the next session version (for a new SDP).
    pub(super) fn bump_version(&mut self) -> (u16, u64, u64) {
        self.session_version += 1;
        (self.rtp_port, self.session_id, self.session_version)
    }

    /// Our INVITE (again, for a challenge: with a new branch, CSeq and the credentials).
    pub(super) fn invite_bytes(
        &self,
        authorization: Option<(&str, &str)>,
        allow: &str,
        ua: &str,
    ) -> Bytes {
        let auth = authorization
            .map(|(h, v)| format!("{h}: {v}\r\n"))
            .unwrap_or_default();
        Bytes::from(format!(
            "INVITE {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{route}\
From: {from};tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\n\
Contact: {contact}\r\n{auth}Allow: {allow}\r\nSupported: {supported}\r\nUser-Agent: {ua}\r\n\
Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            ruri = self.request_uri,
            via = self.via,
            route = self.route,
            from = self.local_party,
            tag = self.local_tag,
            to = self.remote_party,
            cid = self.call_id,
            cseq = self.cseq,
            contact = self.contact,
            supported = super::leg_timer::UAC_SUPPORTED,
            len = self.sdp.len(),
            sdp = self.sdp,
        ))
    }
}

/// Who an outgoing call says it is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId {
    /// User part (extension or number).
    pub user: String,
    /// Display name.
    pub display: Option<String>,
    /// Chosen by the call app (a user's own caller ID): a trunk's `caller_id` does not
    /// replace it.
    pub fixed: bool,
}

impl Endpoint {
    /// Calls every registered contact of `extension` in `tenant` at once, for the call
    /// `parent`. Returns how many legs were started (0: the user has no registered phone).
    pub fn dial_user(
        &mut self,
        now: Now,
        parent: u64,
        tenant: &str,
        extension: &str,
        caller: &CallerId,
    ) -> usize {
        let snap = self.tenants.load();
        let Some(t) = snap.tenant(tenant).cloned() else {
            return 0;
        };
        let domain = t
            .config
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| self.cfg.public_host.clone());
        let mut started = 0;
        for b in self.registrar.lookup(tenant, extension, now.unix) {
            let Some(peer) = binding_peer(&b) else {
                continue;
            };
            let to = format!("<sip:{}@{domain}>", escape_user(extension));
            if self
                .start_leg(
                    now, parent, peer, &b.uri, &b.path, &to, caller, &domain, None, None,
                )
                .is_some()
            {
                started += 1;
            }
        }
        started
    }

    #[allow(clippy::too_many_arguments)]
    fn start_leg(
        &mut self,
        now: Now,
        parent: u64,
        peer: Peer,
        request_uri: &str,
        route: &[String],
        to: &str,
        caller: &CallerId,
        domain: &str,
        credentials: Option<(String, String)>,
        srtp_policy: Option<crate::tenant::model::SrtpPolicy>,
    ) -> Option<u64> {
        // Outgoing legs count toward the tenant's concurrent calls like incoming ones: a
        // forwarding loop or a dial fan-out cannot run past the limit.
        let tenant = match (self.calls.get(&parent), self.out_calls.get(&parent)) {
            (Some(c), _) => c.tenant.clone(),
            (None, Some(l)) => l.tenant.clone(),
            (None, None) => {
                tracing::warn!(parent, "outgoing leg for a call that is gone: not started");
                return None;
            }
        };
        let active = self.active_calls_of(&tenant);
        let admitted = match self.tenants.load().tenant(&tenant) {
            Some(t) => self.policy.admit(t, active),
            None => Err(super::Refusal {
                code: 404,
                reason: None,
            }),
        };
        let longest = match admitted {
            Ok(longest) => longest,
            Err(_) => {
                tracing::warn!(%tenant, active, "tenant call limit reached: outgoing leg refused");
                return None;
            }
        };
        // A trunk's own SRTP policy, else the tenant's.
        let policy = srtp_policy.unwrap_or_else(|| {
            self.tenants
                .load()
                .tenant(&tenant)
                .map(|t| t.config.settings.srtp)
                .unwrap_or_default()
        });
        let srtp = match super::srtp::for_our_offer(peer.transport, policy) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::info!(%tenant, peer = %peer.addr, transport = ?peer.transport, reason = %e, "outgoing leg not placed");
                self.stats.srtp_offers_refused += 1;
                return None;
            }
        };
        let id = self.next_call;
        let rtp_port = match self.media.reserve(id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "no RTP port for an outgoing leg");
                return None;
            }
        };
        self.next_call += 1;
        let branch = self.ids.branch();
        let via = self.via_for(peer.transport, &branch);
        let local_tag = self.ids.token();
        let call_id = format!("{}@{}", self.ids.token(), self.cfg.public_host);
        let display = caller
            .display
            .as_deref()
            .map(|d| format!("{} ", quote_display(d)))
            .unwrap_or_default();
        // The caller's user part came from another message (decoded): escape it again.
        let local_party = format!("{display}<sip:{}@{domain}>", escape_user(&caller.user));
        let session_id = self.ids.session_id();
        let browser = matches!(peer.transport, TransportKind::Ws | TransportKind::Wss);
        let sdp = if browser {
            // A browser: DTLS-SRTP and ICE, offered by the media side's WebRTC transport.
            match self.media.offer_browser(id, now.instant) {
                Ok(offer) => offer,
                Err(e) => {
                    tracing::error!(error = %e, "cannot make an offer to a browser");
                    self.media.release(id);
                    return None;
                }
            }
        } else {
            super::invite::our_offer(
                &LocalMedia {
                    address: self.cfg.public_ip,
                    port: rtp_port,
                    session_id,
                    session_version: 1,
                },
                srtp.as_ref(),
            )
        };
        let contact = self.contact_for(&caller.user, peer.transport);
        let span = tracing::info_span!("leg", call_id = %call_id, parent);
        span.in_scope(|| tracing::info!(to = %request_uri, peer = %peer.addr, "dialing"));
        self.tenant_call_started(&tenant);
        let leg = OutCall {
            span,
            tenant,
            peer,
            request_uri: request_uri.to_string(),
            route: route.iter().map(|r| format!("Route: {r}\r\n")).collect(),
            local_party,
            remote_party: to.to_string(),
            call_id,
            local_tag,
            cseq: 1,
            via,
            state: OutState::Calling,
            cancelled: false,
            dialog: None,
            ack: None,
            rtp_port,
            media_started: false,
            session_id,
            session_version: 2,
            started: now.instant,
            contact,
            contact_user: caller.user.clone(),
            sdp,
            credentials,
            auth_sent: false,
            alternates: Vec::new(),
            heard: false,
            srtp,
            offered_hold: false,
            last_rseq: None,
            prack_cseq: 0,
            session: None,
            on_hold: false,
            browser,
        };
        let bytes = leg.invite_bytes(None, super::ALLOW, &self.cfg.server_name);
        self.out_calls.insert(id, leg);
        self.schedule(Some(now.instant + longest), TimerRef::MaxLength(id));
        self.start_invite_tx(now, id, branch, peer, bytes.clone());
        self.events
            .push_back(CallEvent::LegStarted { leg: id, parent });
        self.send(peer, bytes);
        Some(id)
    }

    pub(super) fn start_invite_tx(
        &mut self,
        now: Now,
        id: u64,
        branch: String,
        peer: Peer,
        bytes: Bytes,
    ) {
        let tx = ClientInviteTransaction::new(
            bytes,
            peer.transport.is_reliable(),
            self.cfg.timers,
            now.instant,
        );
        let next = tx.poll_timeout();
        self.client_invites.insert(branch.clone(), (tx, id));
        self.schedule(next, TimerRef::ClientInvite(branch));
    }

    /// Calls an external `number` through the tenant's outbound route that allows it (the
    /// toll-fraud gate is checked again here), with the trunk's digest credentials and caller
    /// ID. Returns 1 when the INVITE left, 0 otherwise.
    pub fn dial_number(
        &mut self,
        now: Now,
        parent: u64,
        tenant: &str,
        number: &str,
        caller: &CallerId,
    ) -> usize {
        let snap = self.tenants.load();
        let Some(t) = snap.tenant(tenant).cloned() else {
            return 0;
        };
        let Some(plan) = t.outbound_route_for(number) else {
            tracing::warn!(%tenant, %number, "outbound call refused: no outbound route allows this number");
            return 0;
        };
        let Some(address) = plan.trunk.address.clone() else {
            return 0;
        };
        let mut targets = self.trunk_targets_for(plan.trunk).into_iter();
        let Some(first) = targets.next() else {
            self.stats.trunk_unresolved += 1;
            tracing::warn!(trunk = %plan.trunk.id, %address, "outbound call failed: the trunk's address has no target (DNS name not resolved, or resolving to nothing)");
            return 0;
        };
        self.remember_tls_name(&first);
        let peer = Peer {
            transport: first.transport,
            addr: first.addr,
            conn: None,
        };
        let ruri = format!("sip:{}@{address}", escape_user(&plan.dial));
        let to = format!("<{ruri}>");
        let shown = CallerId {
            user: match (&plan.trunk.caller_id, caller.fixed) {
                (Some(trunk_cid), false) => trunk_cid.clone(),
                _ => caller.user.clone(),
            },
            display: caller.display.clone(),
            fixed: caller.fixed,
        };
        let credentials = plan.trunk.username.clone().zip(plan.trunk.password.clone());
        let host = crate::sip::headers::split_host_port(&address)
            .map(|(h, _)| h)
            .unwrap_or_else(|| address.clone());
        let Some(id) = self.start_leg(
            now,
            parent,
            peer,
            &ruri,
            &[],
            &to,
            &shown,
            &host,
            credentials,
            plan.trunk.srtp,
        ) else {
            return 0;
        };
        self.set_alternates(now, id, targets.collect());
        1
    }

    /// Answers a provider's 401/407 once with the trunk's credentials: a new INVITE (new
    /// branch, next CSeq) in the same call.
    fn retry_with_auth(&mut self, now: Now, id: u64, resp: &SipResponse) -> bool {
        let cnonce = self.ids.cnonce();
        let Some(c) = self.out_calls.get(&id) else {
            return false;
        };
        let Some((user, pass)) = c.credentials.clone() else {
            return false;
        };
        if c.auth_sent {
            return false;
        }
        let (challenge_header, answer_header) = if resp.code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        // Whole header values: a challenge's commas separate its parameters, not entries.
        let Some(value) = resp
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(challenge_header))
            .find_map(|(_, ch)| {
                authorization_for(ch, "INVITE", &c.request_uri, &user, &pass, cnonce)
            })
        else {
            return false;
        };
        let branch = self.ids.branch();
        let via = self.via_for(c.peer.transport, &branch);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return false;
        };
        c.auth_sent = true;
        c.cseq += 1;
        c.via = via;
        let bytes = c.invite_bytes(
            Some((answer_header, &value)),
            super::ALLOW,
            &self.cfg.server_name,
        );
        let peer = c.peer;
        c.span.in_scope(|| {
            tracing::info!(
                code = resp.code,
                "provider challenged: answering with the trunk's credentials"
            )
        });
        self.start_invite_tx(now, id, branch, peer, bytes.clone());
        self.send(peer, bytes);
        true
    }

    /// A response to one of our INVITEs.
    pub(super) fn handle_invite_response(&mut self, now: Now, resp: SipResponse) {
        let branch = resp.via.branch.clone().unwrap_or_default();
        let Some((tx, id)) = self.client_invites.get_mut(&branch) else {
            // A retransmitted 2xx (the transaction ended at the first): ACK it again.
            if (200..300).contains(&resp.code) {
                if let Some(c) = self
                    .out_calls
                    .values()
                    .find(|c| c.call_id == resp.call_id && c.state == OutState::Confirmed)
                {
                    if let Some(ack) = c.ack.clone() {
                        let peer = c.peer;
                        self.send(peer, ack);
                    }
                }
            }
            return;
        };
        let id = *id;
        let ack_for_error = {
            let Some(c) = self.out_calls.get(&id) else {
                return;
            };
            let to = resp
                .header("To")
                .map(str::to_string)
                .unwrap_or_else(|| c.remote_party.clone());
            Bytes::from(format!(
                "ACK {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{}From: {};tag={}\r\nTo: {to}\r\n\
Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
                c.request_uri, c.via, c.route, c.local_party, c.local_tag, c.call_id, c.cseq
            ))
        };
        let d = tx.on_response(resp.code, || ack_for_error, now.instant);
        let next = tx.poll_timeout();
        let peer = self.out_calls.get(&id).map(|c| c.peer);
        if self.client_invite_events(peer, d.events) {
            self.client_invites.remove(&branch);
        }
        if self.client_invites.contains_key(&branch) {
            self.schedule(next, TimerRef::ClientInvite(branch));
        }
        if let Some(c) = self.out_calls.get_mut(&id) {
            c.heard = true;
        }
        if !d.pass_to_user {
            return;
        }
        match resp.code {
            100 => {}
            101..=199 => {
                if let Some(c) = self.out_calls.get_mut(&id) {
                    let was_calling = c.state == OutState::Calling;
                    c.state = OutState::Early;
                    if c.cancelled {
                        if !was_calling {
                            return;
                        }
                        // CANCEL may only follow a provisional response (RFC 3261 §9.1).
                        self.send_cancel(now, id);
                        return;
                    }
                    self.events.push_back(CallEvent::LegProgress {
                        leg: id,
                        code: resp.code,
                    });
                }
                if super::prack::is_reliable(&resp) {
                    self.prack(now, id, &resp);
                }
                // Early media: a provisional answer with SDP (ringback, announcements).
                if !resp.raw.body.is_empty() {
                    self.leg_early_media(id, &resp);
                }
            }
            200..=299 => self.leg_answered(now, id, &resp),
            401 | 407 if self.retry_with_auth(now, id, &resp) => {}
            503 if self.try_next_target(now, id, "503 Service Unavailable") => {}
            code => {
                if let Some(c) = self.out_calls.get(&id) {
                    c.span.in_scope(|| tracing::info!(code, "leg refused"));
                    if !c.cancelled {
                        self.events
                            .push_back(CallEvent::LegFailed { leg: id, code });
                    }
                }
                self.end_leg_with(id, HangupCause::CalleeRefused, "refused", Some(code));
            }
        }
    }

    fn leg_early_media(&mut self, id: u64, resp: &SipResponse) {
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        if c.cancelled || c.media_started {
            return;
        }
        let public_ip = self.cfg.public_ip;
        let Ok(audio) = leg_audio(self.media.as_mut(), id, c, &resp.raw.body, public_ip) else {
            return;
        };
        c.media_started = true;
        c.span.in_scope(|| tracing::info!("early media"));
        self.events.push_back(CallEvent::LegEarlyMedia { leg: id });
        self.events.push_back(CallEvent::MediaStart {
            call: id,
            audio,
            signalling_ip: c.peer.addr.ip(),
        });
    }

    fn leg_answered(&mut self, now: Now, id: u64, resp: &SipResponse) {
        let Some(transport) = self.out_calls.get(&id).map(|c| c.peer.transport) else {
            return;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        if c.state == OutState::Confirmed {
            return; // a second 2xx (forked by a proxy): the first one won
        }
        let Ok(mut dialog) =
            Dialog::new_uac(&c.local_party, &c.remote_party, &c.local_tag, c.cseq, resp)
        else {
            c.span
                .in_scope(|| tracing::warn!("2xx without To tag: ignored"));
            return;
        };
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        let ack = Bytes::from(dialog.request("ACK", &via, "", None));
        // After the INVITE's ACK, in-dialog requests number on from our PRACKs (RFC 3262).
        dialog.local_cseq = dialog.local_cseq.max(c.prack_cseq);
        c.ack = Some(ack.clone());
        c.state = OutState::Confirmed;
        let peer = c.peer;
        let cancelled = c.cancelled;
        let call_id = c.call_id.clone();
        let local_tag = c.local_tag.clone();
        c.dialog = Some(dialog);
        self.send(peer, ack);
        self.dialogs.insert((call_id, local_tag), id);
        if cancelled {
            // Answered while we were cancelling it (another phone won): hang it up at once.
            return self.hangup_leg(now, id, HangupCause::Server, "answered after cancel");
        }
        let public_ip = self.cfg.public_ip;
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        let audio = leg_audio(self.media.as_mut(), id, c, &resp.raw.body, public_ip);
        let started = std::mem::replace(&mut c.media_started, true);
        match (audio, started) {
            (Ok(audio), false) => {
                c.span.in_scope(|| tracing::info!("leg answered"));
                self.events.push_back(CallEvent::LegAnswered { leg: id });
                self.events.push_back(CallEvent::MediaStart {
                    call: id,
                    audio,
                    signalling_ip: c.peer.addr.ip(),
                });
                self.leg_session_started(now, id, resp);
            }
            (Ok(audio), true) => {
                // Media started with early media; the final answer may change it.
                c.span.in_scope(|| tracing::info!("leg answered"));
                self.events.push_back(CallEvent::LegAnswered { leg: id });
                self.events
                    .push_back(CallEvent::MediaUpdate { call: id, audio });
                self.leg_session_started(now, id, resp);
            }
            (Err(e), _) => {
                c.span
                    .in_scope(|| tracing::warn!(error = %e, "unusable SDP answer: hanging up"));
                self.events
                    .push_back(CallEvent::LegFailed { leg: id, code: 488 });
                self.hangup_leg(now, id, HangupCause::Server, "bad SDP answer");
            }
        }
    }

    fn send_cancel(&mut self, now: Now, id: u64) {
        let Some(c) = self.out_calls.get(&id) else {
            return;
        };
        let branch = c
            .via
            .split(";branch=")
            .nth(1)
            .and_then(|b| b.split(';').next())
            .unwrap_or_default()
            .to_string();
        let bytes = Bytes::from(format!(
            "CANCEL {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{}From: {};tag={}\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: {} CANCEL\r\nContent-Length: 0\r\n\r\n",
            c.request_uri,
            c.via,
            c.route,
            c.local_party,
            c.local_tag,
            c.remote_party,
            c.call_id,
            c.cseq
        ));
        let peer = c.peer;
        // Keyed apart from the INVITE's transaction, which shares the branch.
        self.send_request(now, peer, format!("{branch}-cancel"), bytes);
    }

    /// Ends an outgoing leg from our side: CANCEL while it rings, BYE once answered.
    pub(super) fn hangup_leg(&mut self, now: Now, id: u64, cause: HangupCause, why: &str) {
        let Some(transport) = self.out_calls.get(&id).map(|c| c.peer.transport) else {
            return;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let extra = format!("User-Agent: {}\r\n", self.cfg.server_name);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        match c.state {
            OutState::Calling => {
                // Sent once a provisional response arrives (or the INVITE times out).
                c.cancelled = true;
            }
            OutState::Early => {
                if !c.cancelled {
                    c.cancelled = true;
                    self.send_cancel(now, id);
                }
            }
            OutState::Confirmed => {
                let peer = c.peer;
                let Some(dialog) = c.dialog.as_mut() else {
                    return;
                };
                let bytes = Bytes::from(dialog.request("BYE", &via, &extra, None));
                self.send_request(now, peer, branch, bytes);
                self.end_leg(id, cause, why);
            }
        }
    }

    /// Forgets a leg and frees its port.
    pub(super) fn end_leg(&mut self, id: u64, cause: HangupCause, why: &str) {
        self.end_leg_with(id, cause, why, None);
    }

    pub(super) fn end_leg_with(
        &mut self,
        id: u64,
        cause: HangupCause,
        why: &str,
        code: Option<u16>,
    ) {
        let Some(c) = self.out_calls.remove(&id) else {
            return;
        };
        self.media.release(id);
        self.tenant_call_ended(&c.tenant);
        self.dialogs
            .remove(&(c.call_id.clone(), c.local_tag.clone()));
        self.client_invites.retain(|_, (_, leg)| *leg != id);
        let by = match cause {
            HangupCause::CalleeHangup | HangupCause::CalleeRefused => super::EndedBy::Callee,
            _ => super::EndedBy::Server,
        };
        self.events.push_back(CallEvent::Ended {
            call: id,
            by,
            code,
            cause,
            reason: why.to_string(),
        });
        let secs = self.secs_since(c.started);
        c.span.in_scope(|| {
            tracing::info!(reason = why, duration_s = format!("{secs:.1}"), "leg ended")
        });
    }

    /// The INVITE of leg `id` timed out (Timer B): nobody answered the request at all.
    pub(super) fn leg_timed_out(&mut self, now: Now, id: u64) {
        if self.try_next_target(now, id, "no response") {
            return;
        }
        let cancelled = self.out_calls.get(&id).is_some_and(|c| c.cancelled);
        if !cancelled {
            self.events
                .push_back(CallEvent::LegFailed { leg: id, code: 408 });
        }
        self.end_leg_with(id, HangupCause::Server, "no response", Some(408));
    }

    /// A re-INVITE inside an outgoing leg's dialog (the callee holds or resumes): answered
    /// with our media, and the call layer hears of the new direction.
    pub(super) fn leg_reinvite(&mut self, now: Now, key: super::TxKey, id: u64, req: SipRequest) {
        // A re-INVITE refreshes the session too (RFC 4028), whatever it does to media.
        self.leg_session_refreshed_by_peer(now, id);
        let public_ip = self.cfg.public_ip;
        let Some(transport) = self.out_calls.get(&id).map(|c| c.peer.transport) else {
            return;
        };
        let contact = self.contact_for("", transport);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        let parsed =
            SessionDescription::parse(req.body()).and_then(|o| negotiate(&o).map(|n| (o, n)));
        let (offer, mut audio): (SessionDescription, NegotiatedAudio) = match parsed {
            Ok(p) => p,
            Err(e) => return self.refuse_sdp(now, &key, &req, &e),
        };
        // A leg on SRTP stays on it; a plain one may move to SRTP keys over TLS.
        let policy = match c.srtp {
            Some(_) => crate::tenant::model::SrtpPolicy::Required,
            None => crate::tenant::model::SrtpPolicy::Optional,
        };
        if let Err(e) = super::srtp::admit(&mut audio, transport, policy, c.srtp.as_ref()) {
            let peer = c.peer;
            return self.refuse_srtp(now, &key, &req, &peer, &e);
        }
        c.srtp = audio.srtp.clone();
        if let Some(d) = c.dialog.as_mut() {
            if d.accept_remote_cseq(req.cseq).is_err() {
                let b = ResponseBuilder::new(500).reason("Out of order CSeq");
                return self.respond(now, &key, &req, b);
            }
        }
        let local = LocalMedia {
            address: public_ip,
            port: c.rtp_port,
            session_id: c.session_id,
            session_version: c.session_version,
        };
        c.session_version += 1;
        let sdp = build_answer(&offer, &audio, &local);
        let b = ResponseBuilder::new(200)
            .to_tag(&c.local_tag)
            .header("Contact", contact)
            .body("application/sdp", sdp);
        let hold = audio.is_hold();
        let was_hold = std::mem::replace(&mut c.on_hold, hold);
        self.events
            .push_back(CallEvent::MediaUpdate { call: id, audio });
        if hold != was_hold {
            self.events
                .push_back(CallEvent::HoldChanged { call: id, hold });
        }
        self.respond(now, &key, &req, b);
    }

    /// An in-dialog request on an answered outgoing leg (and where to send it).
    pub(super) fn leg_request(
        &mut self,
        id: u64,
        method: &str,
        via: &str,
        extra: &str,
        body: Option<(&str, &[u8])>,
    ) -> Option<(Peer, Vec<u8>)> {
        let c = self.out_calls.get_mut(&id)?;
        let peer = c.peer;
        let d = c.dialog.as_mut()?;
        Some((peer, d.request(method, via, extra, body)))
    }

    /// Outgoing legs alive.
    pub fn outgoing_legs(&self) -> usize {
        self.out_calls.len()
    }
}

/// Where to send a request for a registered contact: its source address over UDP, or the
/// stream connection (TCP, TLS, WebSocket) it registered on. A TCP contact whose connection
/// closed is reached at its Contact's port, on the address it registered from only (the
/// runtime opens a connection): a Contact naming another host would make this node connect
/// wherever a user likes. None for any other stream contact without its connection.
pub(super) fn binding_peer(b: &crate::sip::registrar::Binding) -> Option<Peer> {
    let transport = TransportKind::from_token(&b.transport)?;
    if transport == TransportKind::Tcp && b.conn.is_none() && b.path.is_empty() {
        let addr = contact_address(&b.uri).filter(|a| a.ip() == b.source.ip())?;
        return Some(Peer {
            transport,
            addr,
            conn: None,
        });
    }
    if transport.is_stream() && b.conn.is_none() {
        return None;
    }
    Some(Peer {
        transport,
        addr: b.source,
        conn: if transport.is_stream() { b.conn } else { None },
    })
}

/// The IP address and port (5060 when none) in a Contact URI: `sip:user@192.0.2.7:5062;…`.
/// None for a host name (not resolved here) or anything unparsable.
fn contact_address(uri: &str) -> Option<std::net::SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?', '>']).next()?;
    let (host, port) = crate::sip::headers::split_host_port(hostport)?;
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// The audio a called party answered with; for a browser, its answer completes the WebRTC
/// transport's offer on the media side.
fn leg_audio(
    media: &mut dyn super::MediaBackend,
    id: u64,
    c: &OutCall,
    body: &[u8],
    public_ip: std::net::IpAddr,
) -> Result<NegotiatedAudio, String> {
    if !c.browser {
        let mut audio = SessionDescription::parse(body)
            .and_then(|a| negotiate(&a))
            .map_err(|e| e.to_string())?;
        super::srtp::accept_answer(&mut audio, c.srtp.as_ref()).map_err(|e| e.to_string())?;
        return Ok(audio);
    }
    let text = String::from_utf8_lossy(body);
    media
        .browser_answered(id, &text)
        .map_err(|e| e.to_string())?;
    crate::sdp::browser_audio(
        &text,
        std::net::SocketAddr::new(public_ip, c.rtp_port),
        crate::sdp::Direction::SendRecv,
    )
    .map_err(|e| e.to_string())
}

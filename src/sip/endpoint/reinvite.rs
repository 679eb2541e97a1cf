//! Hold and resume passed through the B2BUA: when one party's re-INVITE puts the call on hold
//! (or resumes it), the call layer asks us to re-INVITE the other party with `sendonly` (or
//! `sendrecv`), so its phone shows the hold too. This is our own INVITE inside an existing
//! dialog — of a caller's call (we are its UAS) or of an outgoing leg (we are its UAC).
//! The same re-INVITE refreshes a leg's session timer towards a peer that does not allow
//! UPDATE (`leg_timer.rs`); its outcome is reported there.

use super::{CallEvent, Endpoint, Now, Peer, TimerRef};
use crate::sdp::{negotiate, LocalMedia, SessionDescription};
use crate::sip::message::SipResponse;
use crate::sip::transaction::{ClientInviteTransaction, TxEvent};
use bytes::Bytes;

impl Endpoint {
    /// Re-INVITEs call or leg `id` to put it on hold (`sendonly` from us) or take it off.
    pub fn reinvite_hold(&mut self, now: Now, id: u64, hold: bool) {
        if let Some(c) = self.out_calls.get_mut(&id) {
            c.offered_hold = hold;
        }
        if self.send_reinvite(now, id, hold, "").is_some() {
            tracing::info!(call = id, hold, "re-INVITE to pass hold through");
        }
    }

    /// Sends our re-INVITE in call or leg `id`'s dialog: our offer (`sendonly` when `hold`),
    /// with `extra` header lines. Returns its branch.
    pub(super) fn send_reinvite(
        &mut self,
        now: Now,
        id: u64,
        hold: bool,
        extra_headers: &str,
    ) -> Option<String> {
        let direction = if hold { "sendonly" } else { "sendrecv" };
        let public_ip = self.cfg.public_ip;
        let (transport, port, session_id, version) = if let Some(c) = self.calls.get_mut(&id) {
            c.session_version += 1;
            (
                c.peer.transport,
                c.rtp_port,
                c.session_id,
                c.session_version,
            )
        } else if let Some(c) = self.out_calls.get_mut(&id) {
            let (p, sid, v) = c.bump_version();
            (c.peer.transport, p, sid, v)
        } else {
            return None;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let contact = self.contact_for("", transport);
        let keys = self.media_keys(id);
        let sdp = super::invite::our_offer(
            &LocalMedia {
                address: public_ip,
                port,
                session_id,
                session_version: version,
            },
            keys.as_ref(),
        )
        .replace("a=sendrecv", &format!("a={direction}"));
        let extra = format!(
            "Contact: {contact}\r\nAllow: {}\r\nUser-Agent: {}\r\n{extra_headers}",
            super::ALLOW,
            self.cfg.server_name
        );
        let (peer, bytes) = self.in_dialog_request(
            id,
            "INVITE",
            &via,
            &extra,
            Some(("application/sdp", sdp.as_bytes())),
        )?;
        let bytes = Bytes::from(bytes);
        let tx = ClientInviteTransaction::new(
            bytes.clone(),
            peer.transport.is_reliable(),
            self.cfg.timers,
            now.instant,
        );
        let next = tx.poll_timeout();
        self.client_reinvites.insert(branch.clone(), (tx, id));
        self.schedule(next, TimerRef::ClientReinvite(branch.clone()));
        self.send(peer, bytes);
        Some(branch)
    }

    /// Our SRTP keys in call or leg `id` (what our offers in it carry), `None` for plain RTP.
    fn media_keys(&self, id: u64) -> Option<crate::sdp::SrtpKeys> {
        match self.calls.get(&id) {
            Some(c) => c.audio.as_ref().and_then(|a| a.srtp.clone()),
            None => self.out_calls.get(&id).and_then(|c| c.srtp.clone()),
        }
    }

    /// A request inside the dialog of a caller's call or of an outgoing leg.
    pub(super) fn in_dialog_request(
        &mut self,
        id: u64,
        method: &str,
        via: &str,
        extra: &str,
        body: Option<(&str, &[u8])>,
    ) -> Option<(Peer, Vec<u8>)> {
        if let Some(c) = self.calls.get_mut(&id) {
            let peer = c.peer;
            return Some((peer, c.dialog.request(method, via, extra, body)));
        }
        self.leg_request(id, method, via, extra, body)
    }

    /// Where a caller's call or an outgoing leg is reached.
    pub(super) fn party_peer(&self, id: u64) -> Option<Peer> {
        self.calls
            .get(&id)
            .map(|c| c.peer)
            .or_else(|| self.out_calls.get(&id).map(|c| c.peer))
    }

    /// Sends a client INVITE transaction's retransmissions; true when it terminated (or
    /// timed out) and should be forgotten.
    pub(super) fn client_invite_events(
        &mut self,
        peer: Option<Peer>,
        events: Vec<TxEvent>,
    ) -> bool {
        let mut over = false;
        for ev in events {
            match ev {
                TxEvent::Transmit(b) => {
                    if let Some(p) = peer {
                        self.send(p, b);
                    }
                }
                TxEvent::Terminated | TxEvent::TimedOut => over = true,
            }
        }
        over
    }

    /// A response to one of our re-INVITEs; false when it is not one.
    pub(super) fn handle_reinvite_response(&mut self, now: Now, resp: &SipResponse) -> bool {
        let branch = resp.via.branch.clone().unwrap_or_default();
        let Some(id) = self.client_reinvites.get(&branch).map(|(_, id)| *id) else {
            return false;
        };
        let ack_branch = self.ids.branch();
        let Some(transport) = self.party_peer(id).map(|p| p.transport) else {
            self.client_reinvites.remove(&branch);
            return true;
        };
        // ACK for a non-2xx is part of the transaction (same branch); for a 2xx a new one.
        let same_via = self.via_for(transport, &branch);
        let ack_err = self
            .in_dialog_request(id, "ACK", &same_via, "", None)
            .map(|(_, b)| Bytes::from(b))
            .unwrap_or_default();
        let Some((tx, _)) = self.client_reinvites.get_mut(&branch) else {
            return true;
        };
        let d = tx.on_response(resp.code, || ack_err, now.instant);
        let next = tx.poll_timeout();
        let peer = self.party_peer(id);
        if self.client_invite_events(peer, d.events) {
            self.client_reinvites.remove(&branch);
        }
        if self.client_reinvites.contains_key(&branch) {
            self.schedule(next, TimerRef::ClientReinvite(branch.clone()));
        }
        if d.pass_to_user && (200..300).contains(&resp.code) {
            let via = self.via_for(transport, &ack_branch);
            if let Some((p, ack)) = self.in_dialog_request(id, "ACK", &via, "", None) {
                self.send(p, Bytes::from(ack));
            }
            if let Ok(mut audio) =
                SessionDescription::parse(&resp.raw.body).and_then(|a| negotiate(&a))
            {
                match super::srtp::accept_answer(&mut audio, self.media_keys(id).as_ref()) {
                    Ok(()) => self
                        .events
                        .push_back(CallEvent::MediaUpdate { call: id, audio }),
                    Err(e) => {
                        tracing::info!(call = id, reason = %e, "answer to our re-INVITE refused: media stays as it was");
                    }
                }
            }
        } else if d.pass_to_user && resp.code >= 300 {
            tracing::info!(call = id, code = resp.code, "re-INVITE refused by the peer");
        }
        if d.pass_to_user && resp.code >= 200 {
            // A session refresh by re-INVITE: its outcome keeps or ends the leg.
            self.leg_refresh_result(now, &branch, Some(resp));
        }
        true
    }

    /// Timers of our re-INVITE transactions.
    pub(super) fn reinvite_timeout(&mut self, now: Now, branch: String) {
        let Some((tx, id)) = self.client_reinvites.get_mut(&branch) else {
            return;
        };
        let id = *id;
        let events = tx.handle_timeout(now.instant);
        let next = tx.poll_timeout();
        let peer = self.party_peer(id);
        let had = !events.is_empty();
        let timed_out = events.iter().any(|e| matches!(e, TxEvent::TimedOut));
        if self.client_invite_events(peer, events) {
            self.client_reinvites.remove(&branch);
        }
        if timed_out {
            self.leg_refresh_result(now, &branch, None);
        }
        if had && self.client_reinvites.contains_key(&branch) {
            self.schedule(next, TimerRef::ClientReinvite(branch));
        }
    }
}

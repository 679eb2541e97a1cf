//! Transfer (RFC 3515): a `REFER` inside a call's dialog. The called party (an outgoing leg)
//! may transfer the caller: we accept with `202`, report progress with NOTIFY
//! (`message/sipfrag`, `100 Trying`, then `200 OK` with the subscription terminated).
//! A caller's own REFER is refused: in a B2BUA the caller is the party that stays.
//!
//! - Blind: the call layer connects the caller to the `Refer-To` destination and ends the
//!   transferor's leg.
//! - Attended (RFC 3891, a desk phone's Transfer key after a consultation call): `Refer-To`
//!   carries `Replaces` naming the transferor's dialog with us in the consultation call. The
//!   call layer joins the caller to the party consulted and ends both of the transferor's
//!   dialogs. The named dialog must be a call the same phone (tenant and address) placed
//!   through us and that is answered: nobody can take over someone else's call by naming
//!   its Call-ID and tags. Anything else gets a final NOTIFY `481` and is logged and counted.

use super::{CallEvent, Endpoint, Now, TxKey};
use crate::sip::headers::{uri_user, NameAddr};
use crate::sip::message::SipRequest;
use crate::sip::replaces::Replaces;
use crate::sip::response::ResponseBuilder;
use bytes::Bytes;

impl Endpoint {
    pub(super) fn handle_refer(&mut self, now: Now, key: TxKey, req: SipRequest) {
        let Some(id) = self.dialog_of(&req) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(481));
        };
        if !self.out_calls.contains_key(&id) {
            let b = ResponseBuilder::new(403).reason("Forbidden (only the called party transfers)");
            return self.respond(now, &key, &req, b);
        }
        let refer_to = req.header("Refer-To").and_then(|v| NameAddr::parse(v).ok());
        if let Some(replaces) = refer_to.as_ref().and_then(|n| Replaces::in_uri(&n.uri)) {
            return self.attended_transfer(now, key, req, id, replaces);
        }
        let target = refer_to.and_then(|n| uri_user(&n.uri));
        let Some(target) = target.filter(|t| !t.is_empty()) else {
            let b = ResponseBuilder::new(400).reason("Bad Request (Refer-To without a user)");
            return self.respond(now, &key, &req, b);
        };
        self.respond(now, &key, &req, ResponseBuilder::new(202));
        tracing::info!(leg = id, %target, "blind transfer requested");
        // Blind transfer: the transferor needs no more than to know we took it over.
        self.notify_refer(now, id, "SIP/2.0 100 Trying", "active;expires=60");
        self.notify_refer(now, id, "SIP/2.0 200 OK", "terminated;reason=noresource");
        self.events
            .push_back(CallEvent::Transfer { call: id, target });
    }

    /// REFER with `Replaces`: see the module documentation.
    fn attended_transfer(
        &mut self,
        now: Now,
        key: TxKey,
        req: SipRequest,
        id: u64,
        replaces: Replaces,
    ) {
        self.respond(now, &key, &req, ResponseBuilder::new(202));
        self.notify_refer(now, id, "SIP/2.0 100 Trying", "active;expires=60");
        match self.consultation_call(id, &replaces) {
            Ok(other) => {
                tracing::info!(
                    leg = id,
                    consultation = other,
                    "attended transfer requested"
                );
                self.notify_refer(now, id, "SIP/2.0 200 OK", "terminated;reason=noresource");
                self.events.push_back(CallEvent::AttendedTransfer {
                    call: id,
                    replaces: other,
                });
            }
            Err(why) => {
                let peer = self.out_calls.get(&id).map(|c| c.peer.addr);
                tracing::info!(leg = id, ?peer, call_id = ?replaces.call_id, reason = why, "attended transfer refused");
                self.stats.replaces_refused += 1;
                self.notify_refer(
                    now,
                    id,
                    "SIP/2.0 481 Call/Transaction Does Not Exist",
                    "terminated;reason=noresource",
                );
            }
        }
    }

    /// The call `Replaces` names, if the transferor (leg `leg`) may hand it over.
    fn consultation_call(&self, leg: u64, r: &Replaces) -> Result<u64, &'static str> {
        let transferor = self.out_calls.get(&leg).ok_or("no such leg")?;
        // The transferor placed the consultation call: we are its UAS, our tag is its to-tag.
        let other = *self
            .dialogs
            .get(&(r.call_id.clone(), r.to_tag.clone()))
            .ok_or("no such dialog")?;
        let call = self
            .calls
            .get(&other)
            .ok_or("not a call the transferor placed")?;
        if call.dialog.remote_tag != r.from_tag {
            return Err("tags do not match");
        }
        if call.tenant != transferor.tenant || call.peer.addr.ip() != transferor.peer.addr.ip() {
            return Err("the dialog belongs to another phone");
        }
        if call.state != super::invite::CallState::Confirmed {
            return Err("the consultation call is not answered");
        }
        Ok(other)
    }

    fn notify_refer(&mut self, now: Now, id: u64, frag: &str, state: &str) {
        let Some(transport) = self.out_calls.get(&id).map(|c| c.peer.transport) else {
            return;
        };
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let extra = format!(
            "Event: refer\r\nSubscription-State: {state}\r\nUser-Agent: {}\r\n",
            self.cfg.server_name
        );
        let Some((peer, bytes)) = self.leg_request(
            id,
            "NOTIFY",
            &via,
            &extra,
            Some(("message/sipfrag;version=2.0", frag.as_bytes())),
        ) else {
            return;
        };
        self.send_request(now, peer, branch, Bytes::from(bytes));
    }
}

//! Blind transfer (RFC 3515): a `REFER` inside a call's dialog. The called party (an outgoing
//! leg) may transfer the caller: we accept with `202`, report progress with NOTIFY
//! (`message/sipfrag`, `100 Trying`, then `200 OK` with the subscription terminated), and the
//! call layer connects the caller to the `Refer-To` destination and ends the transferor's leg.
//! A caller's own REFER is refused: in a B2BUA the caller is the party that stays.

use super::{CallEvent, Endpoint, Now, TxKey};
use crate::sip::headers::{uri_user, NameAddr};
use crate::sip::message::SipRequest;
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
        let target = req
            .header("Refer-To")
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|n| uri_user(&n.uri));
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

//! Dialogs (RFC 3261 §12): the state two user agents share once an INVITE succeeds — Call-ID,
//! tags, CSeq counters, route set and remote target — and the requests built from it.
//!
//! Both sides are modelled: [`Dialog::new_uas`] from a received INVITE (route set from its
//! Record-Route in order), [`Dialog::new_uac`] from the INVITE we sent and the 2xx we got
//! (route set from the response's Record-Route, reversed). Pure data: no clock, no I/O.

use super::headers::NameAddr;
use super::message::{SipRequest, SipResponse};
use std::fmt::Write as _;

/// Why a request does not fit the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// The remote CSeq went backwards (RFC 3261 §12.2.2: answer 500).
    #[error("CSeq lower than the dialog's remote CSeq")]
    OutOfOrder,
    /// The response or request lacks a tag the dialog needs.
    #[error("missing tag")]
    MissingTag,
}

/// One dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// Our party as it appears in From of our requests (name-addr without tag).
    pub local_party: String,
    /// The peer's party as it appears in To of our requests (name-addr without tag).
    pub remote_party: String,
    /// Where our in-dialog requests go (the peer's Contact), refreshed by target refresh.
    pub remote_target: String,
    /// Route set, in the order Route headers are written.
    pub route_set: Vec<String>,
    /// Last CSeq we used.
    pub local_cseq: u32,
    /// Last CSeq the peer used (None until it sends a request).
    pub remote_cseq: Option<u32>,
}

/// Removes a `;tag=…` parameter from a From/To value (we write our own tags).
fn without_tag(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    match lower.find(";tag=") {
        Some(i) => {
            let rest = &value[i + 5..];
            let end = rest.find(';').map(|e| i + 5 + e).unwrap_or(value.len());
            format!("{}{}", &value[..i], &value[end..])
        }
        None => value.to_string(),
    }
}

fn contact_uri(value: Option<&str>) -> Option<String> {
    value.and_then(|c| NameAddr::parse(c).ok()).map(|n| n.uri)
}

impl Dialog {
    /// The dialog a UAS creates when it answers `invite` with To tag `local_tag`.
    pub fn new_uas(
        invite: &SipRequest,
        local_tag: &str,
        initial_local_cseq: u32,
    ) -> Result<Dialog, DialogError> {
        let remote_tag = invite
            .from
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_string();
        Ok(Dialog {
            call_id: invite.call_id.clone(),
            local_tag: local_tag.to_string(),
            remote_tag,
            local_party: without_tag(invite.header("To").unwrap_or_default()),
            remote_party: without_tag(invite.header("From").unwrap_or_default()),
            remote_target: contact_uri(invite.header("Contact"))
                .unwrap_or_else(|| invite.from.uri.clone()),
            route_set: invite.header_values("Record-Route"),
            local_cseq: initial_local_cseq,
            remote_cseq: Some(invite.cseq),
        })
    }

    /// The dialog a UAC creates from the INVITE it sent (`from`, `to`, `cseq`) and the 2xx (or
    /// tagged 1xx) it received.
    pub fn new_uac(
        local_party: &str,
        remote_party: &str,
        local_tag: &str,
        cseq: u32,
        resp: &SipResponse,
    ) -> Result<Dialog, DialogError> {
        let remote_tag = resp.to.tag().ok_or(DialogError::MissingTag)?.to_string();
        let mut route_set: Vec<String> =
            super::message::header_values(&resp.headers, "Record-Route");
        route_set.reverse();
        Ok(Dialog {
            call_id: resp.call_id.clone(),
            local_tag: local_tag.to_string(),
            remote_tag,
            local_party: without_tag(local_party),
            remote_party: without_tag(remote_party),
            remote_target: contact_uri(resp.header("Contact"))
                .unwrap_or_else(|| resp.to.uri.clone()),
            route_set,
            local_cseq: cseq,
            remote_cseq: None,
        })
    }

    /// Accepts a request from the peer: checks and records its CSeq (ACK and CANCEL reuse the
    /// INVITE's number and are not checked).
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> Result<(), DialogError> {
        if self.remote_cseq.is_some_and(|r| cseq <= r) {
            return Err(DialogError::OutOfOrder);
        }
        self.remote_cseq = Some(cseq);
        Ok(())
    }

    /// A target refresh (re-INVITE, UPDATE) carried this Contact.
    pub fn refresh_target(&mut self, contact: Option<&str>) {
        if let Some(uri) = contact_uri(contact) {
            self.remote_target = uri;
        }
    }

    /// Writes an in-dialog request (new CSeq unless `method` is ACK) with the given top Via.
    /// `extra` holds further header lines, each ending in CRLF.
    pub fn request(
        &mut self,
        method: &str,
        via: &str,
        extra: &str,
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        if method != "ACK" {
            self.local_cseq += 1;
        }
        // A loose-routing first hop keeps the Request-URI at the remote target (RFC 3261 §12.2.1.1).
        let mut s = String::with_capacity(512);
        let _ = write!(
            s,
            "{method} {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n",
            self.remote_target
        );
        for r in &self.route_set {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(
            s,
            "From: {};tag={}\r\nTo: {};tag={}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n{extra}",
            self.local_party,
            self.local_tag,
            self.remote_party,
            self.remote_tag,
            self.call_id,
            self.local_cseq
        );
        match body {
            Some((ct, b)) => {
                let _ = write!(
                    s,
                    "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                );
                let mut out = s.into_bytes();
                out.extend_from_slice(b);
                out
            }
            None => {
                s.push_str("Content-Length: 0\r\n\r\n");
                s.into_bytes()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, SipMessage};

    const INVITE: &str = "INVITE sip:500@sy.example SIP/2.0\r\nVia: SIP/2.0/UDP p1.example;branch=z9hG4bKp1\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa\r\nRecord-Route: <sip:p1.example;lr>, <sip:p0.example;lr>\r\nFrom: \"Alice\" <sip:100@sy.example>;tag=a1\r\nTo: <sip:500@sy.example>\r\nCall-ID: d1\r\nCSeq: 10 INVITE\r\nContact: <sip:100@10.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uas_dialog_keeps_record_route_order_and_checks_cseq() {
        let SipMessage::Request(inv) = parse(INVITE.as_bytes()).expect("parse") else {
            panic!()
        };
        let mut d = Dialog::new_uas(&inv, "b2", 100).expect("dialog");
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example;lr>", "<sip:p0.example;lr>"]
        );
        assert_eq!(d.remote_target, "sip:100@10.0.0.1:5062");
        assert_eq!(d.accept_remote_cseq(10), Err(DialogError::OutOfOrder));
        assert!(d.accept_remote_cseq(11).is_ok());
        d.refresh_target(Some("<sip:100@192.0.2.5:5062>"));
        let bye = String::from_utf8(d.request("BYE", "SIP/2.0/UDP sy;branch=z9hG4bKx", "", None))
            .expect("utf8");
        assert!(bye.starts_with("BYE sip:100@192.0.2.5:5062 SIP/2.0\r\n"));
        assert!(bye.contains("Route: <sip:p1.example;lr>\r\nRoute: <sip:p0.example;lr>\r\n"));
        assert!(bye.contains(
            "From: <sip:500@sy.example>;tag=b2\r\nTo: \"Alice\" <sip:100@sy.example>;tag=a1\r\n"
        ));
        assert!(bye.contains("CSeq: 101 BYE"));
        // The request we wrote parses as valid SIP.
        assert!(matches!(
            parse(&d.request("BYE", "SIP/2.0/UDP sy;branch=z9hG4bKy", "", None)),
            Ok(SipMessage::Request(_))
        ));
    }

    #[test]
    fn uac_dialog_reverses_record_route() {
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP sy;branch=z9hG4bKo\r\nRecord-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\nFrom: <sip:100@sy>;tag=ours\r\nTo: <sip:+1555@carrier>;tag=theirs\r\nCall-ID: out1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@203.0.113.9>\r\nContent-Length: 0\r\n\r\n";
        let SipMessage::Response(r) = parse(resp.as_bytes()).expect("parse") else {
            panic!()
        };
        let mut d = Dialog::new_uac(
            "<sip:100@sy>;tag=ours",
            "<sip:+1555@carrier>",
            "ours",
            1,
            &r,
        )
        .expect("dialog");
        assert_eq!(
            d.route_set,
            vec!["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
        );
        assert_eq!(d.remote_tag, "theirs");
        let ack = String::from_utf8(d.request("ACK", "SIP/2.0/UDP sy;branch=z9hG4bKack", "", None))
            .expect("utf8");
        assert!(ack.starts_with("ACK sip:gw@203.0.113.9 SIP/2.0"));
        assert!(
            ack.contains("CSeq: 1 ACK"),
            "ACK reuses the INVITE's CSeq number"
        );
        assert!(ack.contains("From: <sip:100@sy>;tag=ours\r\n"));
    }
}

//! Message waiting (RFC 3842): `SUBSCRIBE` to the `message-summary` event package, the NOTIFYs
//! that follow in the subscription's dialog, and an unsolicited NOTIFY to every registered
//! contact of the mailbox's users (what most desk phones expect without subscribing) whenever
//! a mailbox's counts change.
//!
//! The endpoint reads no mailbox: it asks the runtime to count one ([`super::Work::CountMailbox`])
//! and is given the counts back ([`Endpoint::mailbox_counts`]), which it keeps. A new
//! subscription whose mailbox it has no counts for gets its first NOTIFY when they arrive.

use super::{Endpoint, Now, Peer, TxKey};
use crate::sip::dialog::Dialog;
use crate::sip::message::SipRequest;
use crate::sip::registrar::Binding;
use crate::sip::response::ResponseBuilder;
use crate::tenant::Tenant;
use bytes::Bytes;

/// Most contacts of one mailbox waiting for its counts after registering.
const MAX_WAITING_CONTACTS: usize = 32;

/// Longest subscription we grant.
const MAX_EXPIRES: u64 = 3600;

/// One message-summary subscription.
pub(super) struct Subscription {
    tenant: String,
    mailbox: String,
    account: String,
    dialog: Dialog,
    peer: Peer,
    expires_at: u64,
    /// The first NOTIFY went out (it waits for the mailbox's counts).
    notified: bool,
}

impl Endpoint {
    /// Offer message waiting: the runtime will answer [`super::Work::CountMailbox`] (without
    /// it, SUBSCRIBE to message-summary gets 489).
    pub fn enable_message_waiting(&mut self) {
        self.message_waiting = true;
    }

    /// A mailbox's messages changed (a message left, heard, saved or deleted): its counts are
    /// asked for, and its phones told when they come back.
    pub fn mailbox_changed(&mut self, tenant: &str, mailbox: &str) {
        if self.message_waiting {
            self.work.push_back(super::Work::CountMailbox {
                tenant: tenant.to_string(),
                mailbox: mailbox.to_string(),
                changed: true,
            });
        }
    }

    /// The counts the runtime found for a mailbox ([`super::Work::CountMailbox`]): kept, sent
    /// to subscriptions still waiting for their first NOTIFY, and when `changed` to every
    /// subscription and registered phone of the mailbox.
    pub fn mailbox_counts(
        &mut self,
        now: Now,
        tenant: &str,
        mailbox: &str,
        counts: (usize, usize),
        changed: bool,
    ) {
        let key = (tenant.to_string(), mailbox.to_string());
        // Only mailboxes of configured users are kept: the table cannot grow past the config.
        let known = self.tenants.load().tenant(tenant).is_some_and(|t| {
            t.config
                .users
                .iter()
                .any(|u| u.mailbox.as_deref() == Some(mailbox))
        });
        if !known {
            self.mailbox_counts.remove(&key);
            return;
        }
        self.mailbox_counts.insert(key.clone(), counts);
        // Phones that registered while the counts were unknown.
        let registered = self.mwi_after_register.remove(&key).unwrap_or_default();
        if changed {
            return self.notify_message_waiting(now, tenant, mailbox);
        }
        if counts.0 > 0 {
            if let Some(t) = self.tenants.load().tenant(tenant).cloned() {
                for (ext, binding) in &registered {
                    self.notify_binding(now, &t, mailbox, ext, binding);
                }
            }
        }
        let waiting: Vec<(String, String)> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| !s.notified && s.tenant == tenant && s.mailbox == mailbox)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &waiting {
            self.notify_subscription(now, id, false);
        }
    }

    /// Message-summary subscriptions alive.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.len()
    }

    pub(super) fn handle_subscribe(&mut self, now: Now, key: TxKey, peer: Peer, req: SipRequest) {
        let event = req
            .header("Event")
            .or_else(|| req.header("o"))
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if event != "message-summary" || !self.message_waiting {
            let b = ResponseBuilder::new(489)
                .reason("Bad Event")
                .header("Allow-Events", "message-summary");
            return self.respond(now, &key, &req, b);
        }
        let expires = req
            .header("Expires")
            .and_then(|e| e.trim().parse::<u64>().ok())
            .unwrap_or(MAX_EXPIRES)
            .min(MAX_EXPIRES);

        // A refresh (or an unsubscribe) inside an existing subscription dialog.
        if let Some(tag) = req.to.tag() {
            let id = (req.call_id.clone(), tag.to_string());
            let Some(sub) = self.subscriptions.get_mut(&id) else {
                return self.respond(now, &key, &req, ResponseBuilder::new(481));
            };
            sub.expires_at = now.unix + expires;
            let b = ResponseBuilder::new(200).header("Expires", expires.to_string());
            self.respond(now, &key, &req, b);
            return self.notify_subscription(now, &id, expires == 0);
        }

        let snap = self.tenants.load();
        let host = req.uri().host().to_string();
        let Some(tenant) = snap.resolve(Some(&host), None).cloned() else {
            let b = ResponseBuilder::new(404).reason("Unknown Domain");
            return self.respond(now, &key, &req, b);
        };
        let Some(username) = self.authenticate_or_answer(now, &key, peer, &req, &tenant, false)
        else {
            return;
        };
        // A user may watch only their own mailbox.
        let Some(mailbox) = tenant
            .user_by_username(&username)
            .and_then(|u| u.mailbox.clone())
        else {
            return self.respond(now, &key, &req, ResponseBuilder::new(404));
        };
        // Each subscription holds state and draws NOTIFYs: a user (or a stolen password)
        // cannot pile them up.
        let held = self
            .subscriptions
            .values()
            .filter(|s| s.tenant == tenant.id() && s.mailbox == mailbox)
            .count();
        if held >= self.cfg.max_subscriptions_per_user {
            tracing::warn!(tenant = %tenant.id(), %mailbox, held, "too many message-summary subscriptions");
            let b = ResponseBuilder::new(403).reason("Forbidden (too many subscriptions)");
            return self.respond(now, &key, &req, b);
        }
        let local_tag = self.ids.token();
        let Ok(dialog) = Dialog::new_uas(&req, &local_tag, 1) else {
            let b = ResponseBuilder::new(400).reason("Bad Request (From without tag)");
            return self.respond(now, &key, &req, b);
        };
        let contact = self.contact_for(&mailbox, peer.transport);
        let b = ResponseBuilder::new(200)
            .to_tag(&local_tag)
            .header("Expires", expires.to_string())
            .header("Contact", contact);
        self.respond(now, &key, &req, b);
        let id = (req.call_id.clone(), local_tag);
        tracing::info!(tenant = %tenant.id(), %mailbox, expires, "message-summary subscription");
        let counts_known = self
            .mailbox_counts
            .contains_key(&(tenant.id().to_string(), mailbox.clone()));
        if !counts_known && expires != 0 {
            self.work.push_back(super::Work::CountMailbox {
                tenant: tenant.id().to_string(),
                mailbox: mailbox.clone(),
                changed: false,
            });
        }
        self.subscriptions.insert(
            id.clone(),
            Subscription {
                tenant: tenant.id().to_string(),
                account: format!("sip:{mailbox}@{}", tenant_domain(&tenant)),
                mailbox,
                dialog,
                peer,
                expires_at: now.unix + expires,
                notified: false,
            },
        );
        // RFC 6665 §4.2.1: the first NOTIFY follows the 200 at once, or as soon as the
        // mailbox is counted.
        if counts_known || expires == 0 {
            self.notify_subscription(now, &id, expires == 0);
        }
    }

    /// Sends the current counts in a subscription's dialog; `terminate` ends it.
    fn notify_subscription(&mut self, now: Now, id: &(String, String), terminate: bool) {
        let Some(sub) = self.subscriptions.get(id) else {
            return;
        };
        let body = self.summary_body(&sub.tenant, &sub.mailbox, &sub.account);
        let remaining = sub.expires_at.saturating_sub(now.unix);
        let state = if terminate || remaining == 0 {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={remaining}")
        };
        let branch = self.ids.branch();
        let via = self.via_for(sub.peer.transport, &branch);
        let contact = self.contact_for(&sub.mailbox, sub.peer.transport);
        let extra = format!(
            "Event: message-summary\r\nSubscription-State: {state}\r\nContact: {contact}\r\nUser-Agent: {}\r\n",
            self.cfg.server_name
        );
        let Some(sub) = self.subscriptions.get_mut(id) else {
            return;
        };
        sub.notified = true;
        let peer = sub.peer;
        let bytes = Bytes::from(sub.dialog.request(
            "NOTIFY",
            &via,
            &extra,
            Some(("application/simple-message-summary", body.as_bytes())),
        ));
        if terminate || remaining == 0 {
            self.subscriptions.remove(id);
        }
        self.send_request(now, peer, branch, bytes);
    }

    /// `Messages-Waiting` body (RFC 3842 §5.2).
    fn summary_body(&self, tenant: &str, mailbox: &str, account: &str) -> String {
        let (new, saved) = self
            .mailbox_counts
            .get(&(tenant.to_string(), mailbox.to_string()))
            .copied()
            .unwrap_or((0, 0));
        format!(
            "Messages-Waiting: {}\r\nMessage-Account: {account}\r\nVoice-Message: {new}/{saved} (0/0)\r\n",
            if new > 0 { "yes" } else { "no" }
        )
    }

    /// Counts of a mailbox changed: NOTIFY its subscriptions, and every registered contact of
    /// the users whose mailbox it is (unsolicited, for phones that never subscribe).
    pub(super) fn notify_message_waiting(&mut self, now: Now, tenant_id: &str, mailbox: &str) {
        let subs: Vec<(String, String)> = self
            .subscriptions
            .iter()
            .filter(|(_, s)| s.tenant == tenant_id && s.mailbox == mailbox)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &subs {
            self.notify_subscription(now, id, false);
        }
        let snap = self.tenants.load();
        let Some(tenant) = snap.tenant(tenant_id).cloned() else {
            return;
        };
        let owners: Vec<String> = tenant
            .config
            .users
            .iter()
            .filter(|u| u.mailbox.as_deref() == Some(mailbox))
            .map(|u| u.extension.clone())
            .collect();
        for ext in owners {
            for binding in self.registrar.lookup(tenant_id, &ext, now.unix) {
                self.notify_binding(now, &tenant, mailbox, &ext, &binding);
            }
        }
    }

    /// A phone of `extension` (whose mailbox is `mailbox`) registered a contact it did not
    /// have: when the mailbox holds new messages it is told at once, as Asterisk does (a phone
    /// that rebooted would otherwise show no message-waiting lamp until the next message; a
    /// phone starts with the lamp off, so "no new messages" is not sent). Counts not yet known
    /// are asked for, and the contact told when they come.
    pub(super) fn tell_new_registration(
        &mut self,
        now: Now,
        tenant: &Tenant,
        mailbox: &str,
        extension: &str,
        new_bindings: &[Binding],
    ) {
        if !self.message_waiting || new_bindings.is_empty() {
            return;
        }
        let key = (tenant.id().to_string(), mailbox.to_string());
        match self.mailbox_counts.get(&key) {
            Some((new, _)) if *new > 0 => {
                for binding in new_bindings {
                    self.notify_binding(now, tenant, mailbox, extension, binding);
                }
            }
            Some(_) => {}
            None => {
                let waiting = self.mwi_after_register.entry(key).or_default();
                let first = waiting.is_empty();
                for b in new_bindings {
                    waiting.retain(|(_, w)| w.uri != b.uri);
                    waiting.push((extension.to_string(), b.clone()));
                }
                // Bounded: a mailbox's users' contacts, newest kept.
                let excess = waiting.len().saturating_sub(MAX_WAITING_CONTACTS);
                waiting.drain(..excess);
                if first {
                    self.work.push_back(super::Work::CountMailbox {
                        tenant: tenant.id().to_string(),
                        mailbox: mailbox.to_string(),
                        changed: false,
                    });
                }
            }
        }
    }

    /// An unsolicited message-summary NOTIFY (no subscription) to one registered contact.
    fn notify_binding(
        &mut self,
        now: Now,
        tenant: &Tenant,
        mailbox: &str,
        ext: &str,
        binding: &Binding,
    ) {
        let Some(peer) = super::outbound::binding_peer(binding) else {
            return;
        };
        let domain = tenant_domain(tenant);
        let account = format!("sip:{mailbox}@{domain}");
        let body = self.summary_body(tenant.id(), mailbox, &account);
        let transport = peer.transport;
        let branch = self.ids.branch();
        let via = self.via_for(transport, &branch);
        let bytes = format!(
            "NOTIFY {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
From: <{account}>;tag={tag}\r\nTo: <sip:{ext}@{domain}>\r\nCall-ID: {cid}\r\nCSeq: 1 NOTIFY\r\n\
Contact: {contact}\r\nEvent: message-summary\r\nSubscription-State: active\r\n\
User-Agent: {ua}\r\nContent-Type: application/simple-message-summary\r\nContent-Length: {len}\r\n\r\n{body}",
            uri = binding.uri,
            tag = self.ids.token(),
            cid = self.ids.token(),
            contact = self.contact_for(mailbox, transport),
            ua = self.cfg.server_name,
            len = body.len(),
        );
        tracing::debug!(tenant = %tenant.id(), %mailbox, %ext, to = %binding.source, "message-waiting NOTIFY");
        self.send_request(now, peer, branch, Bytes::from(bytes));
    }

    /// Drops expired subscriptions (housekeeping).
    pub(super) fn expire_subscriptions(&mut self, now: Now) {
        self.subscriptions.retain(|_, s| s.expires_at > now.unix);
    }
}

fn tenant_domain(t: &Tenant) -> String {
    t.config
        .domains
        .first()
        .cloned()
        .unwrap_or_else(|| t.id().to_string())
}

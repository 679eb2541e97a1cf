//! Registration to providers: a trunk with `register: true` keeps a REGISTER binding at its
//! `address` for `username`, answering the provider's digest challenge with the trunk's
//! credentials, refreshing before expiry and retrying a minute after a failure. Tenant changes
//! are picked up by [`Endpoint::sync_trunk_registrations`], which the runtime calls often.

use super::{Endpoint, Now, Peer, TimerRef};
use crate::sip::digest::authorization_for;
use crate::sip::message::SipResponse;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Expiry we ask providers for.
const REQUESTED_EXPIRES: u64 = 300;
/// Wait after a failure before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Where one trunk's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkRegState {
    /// REGISTER sent, no final answer yet.
    Registering,
    /// Registered until this unix second.
    Registered {
        /// Expiry, unix seconds.
        until: u64,
    },
    /// The last attempt failed (status, or 408 for no answer); retried later.
    Failed {
        /// SIP status.
        code: u16,
    },
}

pub(super) struct TrunkRegistration {
    peer: Peer,
    registrar_uri: String,
    aor: String,
    username: String,
    password: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    auth_sent: bool,
    pub(super) state: TrunkRegState,
}

/// `(tenant, trunk)`.
pub(super) type TrunkKey = (String, String);

impl Endpoint {
    /// Starts, keeps or drops provider registrations to match the tenants' trunks.
    pub fn sync_trunk_registrations(&mut self, now: Now) {
        let snap = self.tenants.load();
        let targets = self.trunk_targets.load_full();
        fn same<T>(a: &Option<Arc<T>>, b: &Arc<T>) -> bool {
            a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
        }
        if same(&self.trunk_reg_snapshot, &snap) && same(&self.trunk_reg_targets, &targets) {
            return;
        }
        self.trunk_reg_snapshot = Some(snap.clone());
        self.trunk_reg_targets = Some(targets);
        let mut wanted = Vec::new();
        for t in snap.tenants() {
            for trunk in t.config.trunks.iter().filter(|t| t.register) {
                let (Some(address), Some(user)) = (&trunk.address, &trunk.username) else {
                    continue;
                };
                let key = (t.id().to_string(), trunk.id.clone());
                // A name not resolved yet: kept as it is until the runtime's answers arrive
                // (this runs again when they do).
                let Some(target) = self.trunk_targets_for(trunk).into_iter().next() else {
                    tracing::debug!(trunk = %trunk.id, %address, "trunk registration waits for DNS");
                    if self.trunk_regs.contains_key(&key) {
                        wanted.push(key);
                    }
                    continue;
                };
                self.remember_tls_name(&target);
                let host = crate::sip::headers::split_host_port(address)
                    .map(|(h, _)| h)
                    .unwrap_or_else(|| address.clone());
                wanted.push(key.clone());
                let reg = TrunkRegistration {
                    peer: Peer {
                        transport: target.transport,
                        addr: target.addr,
                        conn: None,
                    },
                    registrar_uri: format!("sip:{address}"),
                    aor: format!("sip:{user}@{host}"),
                    username: user.clone(),
                    password: trunk.password.clone().unwrap_or_default(),
                    call_id: format!("{}@{}", self.ids.token(), self.cfg.public_host),
                    from_tag: self.ids.token(),
                    cseq: 0,
                    auth_sent: false,
                    state: TrunkRegState::Registering,
                };
                let changed = self.trunk_regs.get(&key).is_none_or(|r| {
                    r.registrar_uri != reg.registrar_uri
                        || r.peer.addr != reg.peer.addr
                        || r.peer.transport != reg.peer.transport
                        || r.username != reg.username
                        || r.password != reg.password
                });
                if changed {
                    self.trunk_regs.insert(key.clone(), reg);
                    self.send_trunk_register(now, &key, None);
                }
            }
        }
        self.trunk_regs.retain(|k, _| wanted.contains(k));
    }

    /// Registration states, for the admin API and tests.
    pub fn trunk_registrations(&self) -> Vec<(String, String, TrunkRegState)> {
        let mut v: Vec<_> = self
            .trunk_regs
            .iter()
            .map(|((t, k), r)| (t.clone(), k.clone(), r.state))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    fn send_trunk_register(
        &mut self,
        now: Now,
        key: &TrunkKey,
        authorization: Option<(&str, String)>,
    ) {
        let branch = self.ids.branch();
        let Some(transport) = self.trunk_regs.get(key).map(|r| r.peer.transport) else {
            return;
        };
        let via = self.via_for(transport, &branch);
        let contact = self.contact_for(
            &self
                .trunk_regs
                .get(key)
                .map(|r| r.username.clone())
                .unwrap_or_default(),
            transport,
        );
        let ua = self.cfg.server_name.clone();
        let Some(r) = self.trunk_regs.get_mut(key) else {
            return;
        };
        r.cseq += 1;
        r.state = TrunkRegState::Registering;
        let auth = authorization
            .map(|(h, v)| format!("{h}: {v}\r\n"))
            .unwrap_or_default();
        let bytes = Bytes::from(format!(
            "REGISTER {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag={tag}\r\nTo: <{aor}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: {contact}\r\nExpires: {REQUESTED_EXPIRES}\r\n{auth}User-Agent: {ua}\r\nContent-Length: 0\r\n\r\n",
            ruri = r.registrar_uri,
            aor = r.aor,
            tag = r.from_tag,
            cid = r.call_id,
            cseq = r.cseq,
        ));
        let peer = r.peer;
        self.reg_branches.insert(branch.clone(), key.clone());
        self.send_request(now, peer, branch, bytes);
    }

    /// A final response to one of our REGISTERs (`None`: the transaction timed out).
    pub(super) fn trunk_register_result(
        &mut self,
        now: Now,
        branch: &str,
        resp: Option<&SipResponse>,
    ) {
        let Some(key) = self.reg_branches.remove(branch) else {
            return;
        };
        let cnonce = self.ids.cnonce();
        let Some(r) = self.trunk_regs.get_mut(&key) else {
            return;
        };
        let code = resp.map(|r| r.code).unwrap_or(408);
        match (code, resp) {
            (200..=299, Some(resp)) => {
                let expires = resp
                    .header("Expires")
                    .and_then(|e| e.trim().parse::<u64>().ok())
                    .or_else(|| {
                        resp.header("Contact").and_then(|c| {
                            c.split(';')
                                .find_map(|p| p.trim().strip_prefix("expires="))
                                .and_then(|e| e.trim().parse().ok())
                        })
                    })
                    .unwrap_or(REQUESTED_EXPIRES)
                    .max(10);
                r.auth_sent = false;
                r.state = TrunkRegState::Registered {
                    until: now.unix + expires,
                };
                tracing::info!(tenant = %key.0, trunk = %key.1, expires, "registered to the provider");
                // Refresh at 80 % of the granted time.
                let refresh = Duration::from_secs(expires * 4 / 5);
                self.schedule(Some(now.instant + refresh), TimerRef::TrunkReg(key));
            }
            (401 | 407, Some(resp)) if !r.auth_sent => {
                let (ch, answer) = if code == 407 {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                } else {
                    ("WWW-Authenticate", "Authorization")
                };
                let value = resp
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(ch))
                    .find_map(|(_, v)| {
                        authorization_for(
                            v,
                            "REGISTER",
                            &r.registrar_uri,
                            &r.username,
                            &r.password,
                            cnonce,
                        )
                    });
                match value {
                    Some(v) => {
                        r.auth_sent = true;
                        self.send_trunk_register(now, &key, Some((answer, v)));
                    }
                    None => self.trunk_register_failed(now, key, code),
                }
            }
            _ => self.trunk_register_failed(now, key, code),
        }
    }

    fn trunk_register_failed(&mut self, now: Now, key: TrunkKey, code: u16) {
        if let Some(r) = self.trunk_regs.get_mut(&key) {
            r.auth_sent = false;
            r.state = TrunkRegState::Failed { code };
        }
        tracing::warn!(tenant = %key.0, trunk = %key.1, code, "registration to the provider failed; retrying in 60 s");
        self.schedule(Some(now.instant + RETRY_AFTER), TimerRef::TrunkReg(key));
    }

    /// Refresh or retry time for a trunk registration.
    pub(super) fn trunk_reg_timeout(&mut self, now: Now, key: TrunkKey) {
        if self.trunk_regs.contains_key(&key) {
            self.send_trunk_register(now, &key, None);
        }
    }
}

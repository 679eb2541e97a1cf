//! REGISTER: tenant by To domain, digest auth, then the registrar.

use super::{Endpoint, Now, Peer, TxKey};
use crate::sip::auth_guard::Blocked;
use crate::sip::digest::{verify, DigestAlgorithm, DigestCredentials, Verdict};
use crate::sip::message::SipRequest;
use crate::sip::registrar::RegisterOutcome;
use crate::sip::response::ResponseBuilder;
use crate::tenant::Tenant;
use std::sync::Arc;

/// Outcome of checking a request's digest credentials.
pub(super) enum AuthResult {
    /// Valid credentials for this username.
    User(String),
    /// No (usable) credentials, or wrong ones: challenge (stale or not).
    Challenge { stale: bool },
    /// The source address is blocked.
    Blocked,
}

impl Endpoint {
    /// Checks `Authorization` (or `Proxy-Authorization` when `proxy`) against `tenant`,
    /// counting only real password guesses (see [`crate::sip::auth_guard`]).
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        peer: Peer,
        req: &SipRequest,
        tenant: &Tenant,
        proxy: bool,
    ) -> AuthResult {
        // Behind a trusted proxy, the client it relayed: one bad phone must not block the
        // proxy (and with it every phone behind it).
        let ip = self.client_of(&peer, req).ip();
        if self.limiter.source_blocked(ip, now.instant) {
            // A scanner: not even a challenge (it would only feed the scan).
            let _ = self.limiter.check(ip, "", now.instant);
            self.stats.auth_blocked += 1;
            return AuthResult::Blocked;
        }
        let header = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let realm = tenant.realm();
        // A client may send several credentials (one per realm); use the one for ours.
        let candidates: Vec<DigestCredentials> = req
            .header_values_raw(header)
            .into_iter()
            .filter_map(|v| DigestCredentials::parse(&v).ok())
            .collect();
        let Some(creds) = candidates.into_iter().find(|c| c.realm == realm) else {
            return AuthResult::Challenge { stale: false };
        };
        if let Some(what) = self.limiter.check(ip, &creds.username, now.instant) {
            self.stats.auth_blocked += 1;
            tracing::debug!(source = %ip, username = ?creds.username, ?what, "authentication refused: blocked");
            return AuthResult::Blocked;
        }
        let user = tenant.user_by_username(&creds.username);
        let (md5, sha) = user
            .map(|u| (u.ha1_md5.clone(), u.ha1_sha256.clone()))
            .unwrap_or((None, None));
        let verdict = verify(
            &mut self.nonces,
            &creds,
            req.method().to_string().as_str(),
            &req.uri().to_string(),
            realm,
            |alg| match alg {
                DigestAlgorithm::Md5 => md5.clone(),
                DigestAlgorithm::Sha256 => sha.clone(),
            },
            &self.cfg.algorithms,
            now.unix,
        );
        match verdict {
            Verdict::Valid => {
                self.limiter.success(ip, &creds.username);
                AuthResult::User(creds.username)
            }
            Verdict::Stale => AuthResult::Challenge { stale: true },
            Verdict::Rejected(why) => {
                // Not a password guess (forged or replayed nonce, another request's digest):
                // challenged, never counted, so nobody can lock a user out with junk.
                tracing::info!(source = %ip, username = ?creds.username, tenant = %tenant.id(), why, digest_uri = ?creds.uri, request_uri = %req.uri(), "digest credentials rejected");
                AuthResult::Challenge { stale: false }
            }
            Verdict::WrongPassword => {
                self.stats.auth_failures += 1;
                // The username is the phone's (Debug-escaped: it is hostile text); never log
                // what it sent as response or nonce.
                tracing::info!(source = %ip, username = ?creds.username, tenant = %tenant.id(), "digest authentication failed");
                if let Some((what, lasts)) = self.limiter.failure(ip, &creds.username, now.instant)
                {
                    let scope = match what {
                        Blocked::User => "this username from this address",
                        Blocked::Source => "every username from this address (scanning)",
                    };
                    tracing::warn!(source = %ip, username = ?creds.username, secs = lasts.as_secs(), scope, "too many failed authentications: refused for a while");
                    self.stats.auth_blocks_started += 1;
                    return AuthResult::Blocked;
                }
                AuthResult::Challenge { stale: false }
            }
        }
    }

    /// Authenticates `req`, or answers it: a challenge (401, or 407 when `proxy`), or 403 while
    /// the source address is blocked. `Some(username)` when the caller proved its password.
    pub(super) fn authenticate_or_answer(
        &mut self,
        now: Now,
        key: &TxKey,
        peer: Peer,
        req: &SipRequest,
        tenant: &Tenant,
        proxy: bool,
    ) -> Option<String> {
        match self.authenticate(now, peer, req, tenant, proxy) {
            AuthResult::User(u) => Some(u),
            AuthResult::Challenge { stale } => {
                let realm = tenant.realm().to_string();
                self.challenge(now, key, req, &realm, stale, proxy);
                None
            }
            AuthResult::Blocked => {
                let b = ResponseBuilder::new(403).reason("Forbidden (too many failed attempts)");
                self.respond_once(now, key, req, b);
                None
            }
        }
    }

    fn resolve_tenant_for(&self, req: &SipRequest) -> Option<Arc<Tenant>> {
        let snap = self.tenants.load();
        let host = req.to.host();
        snap.resolve(host.as_deref(), None).cloned()
    }

    pub(super) fn handle_register(&mut self, now: Now, key: TxKey, peer: Peer, req: SipRequest) {
        let Some(tenant) = self.resolve_tenant_for(&req) else {
            let b = ResponseBuilder::new(404).reason("Unknown Domain");
            return self.respond(now, &key, &req, b);
        };
        let Some(username) = self.authenticate_or_answer(now, &key, peer, &req, &tenant, false)
        else {
            return;
        };
        let Some(user) = tenant.user_by_username(&username) else {
            return self.respond(now, &key, &req, ResponseBuilder::new(403));
        };
        // A user registers its own address of record only (extension or username).
        let aor_user = req.to.user().unwrap_or_default();
        if aor_user != user.extension && aor_user != user.username {
            let b = ResponseBuilder::new(403).reason("Forbidden (not your address of record)");
            return self.respond(now, &key, &req, b);
        }
        let extension = user.extension.clone();
        let mailbox = user.mailbox.clone();
        let known: Vec<String> = self
            .registrar
            .lookup(tenant.id(), &extension, now.unix)
            .into_iter()
            .map(|b| b.uri)
            .collect();
        let path = self.trusted_path(&peer, &req);
        let outcome = self.registrar.register_on(
            tenant.id(),
            &extension,
            &req,
            peer.addr,
            peer.conn.filter(|_| peer.transport.is_stream()),
            path.clone(),
            now.unix,
        );
        let mut new_bindings = Vec::new();
        let b = match outcome {
            RegisterOutcome::Ok(bindings) => {
                new_bindings = bindings
                    .iter()
                    .filter(|(b, remaining)| *remaining > 0 && !known.contains(&b.uri))
                    .map(|(b, _)| b.clone())
                    .collect();
                let client = self.client_of(&peer, &req);
                tracing::info!(tenant = %tenant.id(), user = %extension, contacts = bindings.len(), source = %client, via = %peer.addr, path = path.len(), "registered");
                let mut b = ResponseBuilder::new(200).to_tag(&self.ids.token());
                for (binding, remaining) in bindings {
                    b = b.header("Contact", format!("<{}>;expires={remaining}", binding.uri));
                }
                // RFC 3327 §5.3: the registrar returns the Path it stored.
                for p in path {
                    b = b.header("Path", p);
                }
                b
            }
            RegisterOutcome::IntervalTooBrief(min) => {
                ResponseBuilder::new(423).header("Min-Expires", min.to_string())
            }
            RegisterOutcome::BadRequest(why) => {
                ResponseBuilder::new(400).reason(format!("Bad Request ({why})"))
            }
            RegisterOutcome::OutOfOrder => {
                ResponseBuilder::new(500).reason("Out of order REGISTER")
            }
            RegisterOutcome::TooManyContacts => {
                ResponseBuilder::new(403).reason("Forbidden (too many contacts)")
            }
        };
        self.respond(now, &key, &req, b);
        if let Some(mailbox) = mailbox {
            self.tell_new_registration(now, &tenant, &mailbox, &extension, &new_bindings);
        }
    }
}

impl Endpoint {
    /// A stream connection closed: contacts registered over it are unreachable now (a
    /// browser tab closed), so they are dropped at once rather than at their expiry. Calls
    /// whose party was on it are over too: nothing can reach that party again (the BYE we
    /// send is dropped), and the call should not wait for the RTP timeout.
    pub fn connection_closed(&mut self, now: Now, conn: u64) {
        self.aliases.closed(conn);
        let (dropped, kept) = self.registrar.connection_closed(conn);
        if dropped > 0 {
            tracing::info!(
                conn,
                contacts = dropped,
                "connection closed: its registrations removed"
            );
        }
        if kept > 0 {
            tracing::debug!(
                conn,
                contacts = kept,
                "connection closed: its TCP contacts stay, reached by a new connection"
            );
        }
        let calls: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.peer.conn == Some(conn))
            .map(|(&id, _)| id)
            .chain(
                self.out_calls
                    .iter()
                    .filter(|(_, c)| c.peer.conn == Some(conn))
                    .map(|(&id, _)| id),
            )
            .collect();
        for id in calls {
            self.hangup_call(
                now,
                id,
                crate::records::call::HangupCause::ConnectionLost,
                "the party's connection closed",
            );
        }
    }
}

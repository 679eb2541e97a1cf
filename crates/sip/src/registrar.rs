//! The registrar's bindings (RFC 3261 §10.3): which contacts a user is reachable at, until when.
//!
//! Bindings live in memory for the call path. Every change is also queued as a
//! [`BindingsChanged`] for the runtime to write to disk off the SIP loop, and what was written
//! is handed back to [`Registrar::new`] at start, so a restart keeps phones reachable without
//! waiting for them to re-register. The registrar itself touches no disk. Expiry is wall
//! clock (unix seconds) because it must mean the same thing after a restart.

use super::message::SipRequest;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Contact URI as registered.
    pub uri: String,
    /// Unix second when it expires.
    pub expires_at: u64,
    /// Source address the REGISTER came from (where to reach a phone behind NAT).
    pub source: SocketAddr,
    /// Transport the REGISTER used (`UDP`, `TCP`).
    pub transport: String,
    /// Call-ID of the registering REGISTER (RFC 3261 §10.3 step 7).
    pub call_id: String,
    /// CSeq of the registering REGISTER.
    pub cseq: u32,
    /// `q` value, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// User-Agent of the phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The stream connection (TCP, WebSocket) the REGISTER came on: requests to this contact
    /// go on it (a browser is reachable no other way). Not shown in the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// The REGISTER's `Path` (RFC 3327), when a trusted proxy put one there: the route to
    /// send requests for this contact along (to `source`, the proxy that holds the phone's
    /// connection or NAT pinhole, with these as `Route`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
}

/// Registrar limits.
#[derive(Debug, Clone, Copy)]
pub struct RegistrarConfig {
    /// Shortest registration accepted; shorter ones get `423 Interval Too Brief`.
    pub min_expires: u32,
    /// Longest registration granted (longer requests are cut to this).
    pub max_expires: u32,
    /// Expiry when the phone names none.
    pub default_expires: u32,
    /// Most contacts one user may register.
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// What to answer a REGISTER with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// 200 OK listing these bindings (with their remaining seconds).
    Ok(Vec<(Binding, u64)>),
    /// 423 with this Min-Expires.
    IntervalTooBrief(u32),
    /// 400 with this reason.
    BadRequest(&'static str),
    /// A stale REGISTER (older CSeq for the same Call-ID): 500 per RFC 3261 §10.3 step 7.
    OutOfOrder,
    /// Too many contacts for one user.
    TooManyContacts,
}

/// A user's bindings changed: the whole list to store under `key` (empty: delete the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingsChanged {
    /// Opaque storage key (tenant and user).
    pub key: String,
    /// The user's bindings now.
    pub bindings: Vec<Binding>,
}

/// Registered contacts for every tenant's users.
pub struct Registrar {
    config: RegistrarConfig,
    bindings: HashMap<String, Vec<Binding>>,
    /// Changes not yet taken by the runtime for writing.
    changes: VecDeque<BindingsChanged>,
    /// Bindings other nodes of a cluster took, by key, then by node (see [`Self::set_remote`]).
    remote: HashMap<String, HashMap<String, Vec<Binding>>>,
}

/// Most nodes whose bindings one user's key keeps (more means a misbehaving cluster).
const MAX_REMOTE_NODES: usize = 64;

fn key(tenant: &str, user: &str) -> String {
    format!("{tenant}\u{0}{user}")
}

/// The tenant and user of a [`BindingsChanged::key`].
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('\u{0}')
}

impl Registrar {
    /// A registrar starting from `stored`: what earlier [`BindingsChanged`] wrote, by key.
    pub fn new(config: RegistrarConfig, stored: Vec<(String, Vec<Binding>)>) -> Registrar {
        let bindings = stored
            .into_iter()
            .map(|(k, list)| {
                // Connections do not survive a restart: their bindings are unreachable.
                let list: Vec<Binding> = list.into_iter().filter(|b| b.conn.is_none()).collect();
                (k, list)
            })
            .filter(|(_, list)| !list.is_empty())
            .collect();
        Registrar {
            config,
            bindings,
            changes: VecDeque::new(),
            remote: HashMap::new(),
        }
    }

    /// Every user's bindings as this node holds them, for a cluster's shared table when the
    /// node starts.
    pub fn local_bindings(&self) -> Vec<BindingsChanged> {
        self.bindings
            .iter()
            .map(|(k, list)| BindingsChanged {
                key: k.clone(),
                bindings: list.clone(),
            })
            .collect()
    }

    /// The bindings another node of the cluster (`node`) holds for `tenant`'s `user` now
    /// (empty: none). They join [`Self::lookup`], so a phone registered through any node is
    /// reached from this one, until they expire, whether or not that node is still up.
    /// Bindings on a stream connection stay with the node holding the connection and are
    /// left out. They are not this node's to persist or count.
    pub fn set_remote(&mut self, tenant: &str, user: &str, node: &str, bindings: Vec<Binding>) {
        let k = key(tenant, user);
        let mut bindings: Vec<Binding> =
            bindings.into_iter().filter(|b| b.conn.is_none()).collect();
        bindings.truncate(self.config.max_contacts);
        if bindings.is_empty() {
            if let Some(nodes) = self.remote.get_mut(&k) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.remote.remove(&k);
                }
            }
            return;
        }
        let nodes = self.remote.entry(k).or_default();
        if nodes.len() < MAX_REMOTE_NODES || nodes.contains_key(node) {
            nodes.insert(node.to_string(), bindings);
        }
    }

    /// Live bindings other nodes took, across all users (for metrics).
    pub fn remote_count(&self) -> usize {
        self.remote
            .values()
            .flat_map(|nodes| nodes.values())
            .map(Vec::len)
            .sum()
    }

    /// The next change to write, oldest first.
    pub fn poll_change(&mut self) -> Option<BindingsChanged> {
        self.changes.pop_front()
    }

    fn persist(&mut self, k: &str) {
        let bindings = self.bindings.get(k).cloned().unwrap_or_default();
        self.changes.push_back(BindingsChanged {
            key: k.to_string(),
            bindings,
        });
    }

    /// Applies a REGISTER from an authenticated `user` of `tenant`.
    pub fn register(
        &mut self,
        tenant: &str,
        user: &str,
        req: &SipRequest,
        source: SocketAddr,
        unix_now: u64,
    ) -> RegisterOutcome {
        self.register_on(tenant, user, req, source, None, Vec::new(), unix_now)
    }

    /// [`Registrar::register`] for a REGISTER that came on stream connection `conn`, with
    /// the `Path` a trusted proxy added (empty otherwise: a Path from anyone else is not
    /// honoured).
    #[allow(clippy::too_many_arguments)]
    pub fn register_on(
        &mut self,
        tenant: &str,
        user: &str,
        req: &SipRequest,
        source: SocketAddr,
        conn: Option<u64>,
        path: Vec<String>,
        unix_now: u64,
    ) -> RegisterOutcome {
        let k = key(tenant, user);
        let header_expires = req.header("Expires").map(|v| v.trim().parse::<u32>());
        let header_expires = match header_expires {
            Some(Ok(v)) => Some(v),
            Some(Err(_)) => return RegisterOutcome::BadRequest("invalid Expires"),
            None => None,
        };
        let contacts = req.header_values("Contact");
        let list = self.bindings.entry(k.clone()).or_default();
        list.retain(|b| b.expires_at > unix_now);

        if contacts.iter().any(|c| c.trim() == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return RegisterOutcome::BadRequest(
                    "Contact: * needs Expires: 0 and no other contact",
                );
            }
            list.clear();
            self.persist(&k);
            return RegisterOutcome::Ok(Vec::new());
        }

        let mut parsed = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Ok(na) = super::headers::NameAddr::parse(c) else {
                return RegisterOutcome::BadRequest("invalid Contact");
            };
            let expires = match na.param("expires").map(str::parse::<u32>) {
                Some(Ok(e)) => e,
                Some(Err(_)) => return RegisterOutcome::BadRequest("invalid Contact expires"),
                None => header_expires.unwrap_or(self.config.default_expires),
            };
            if expires != 0 && expires < self.config.min_expires {
                return RegisterOutcome::IntervalTooBrief(self.config.min_expires);
            }
            parsed.push((na, expires.min(self.config.max_expires)));
        }

        // Check everything before changing anything: a REGISTER applies whole or not at all.
        let mut added = 0;
        for (na, expires) in &parsed {
            match list.iter().find(|b| same_contact(&b.uri, &na.uri)) {
                Some(b) if b.call_id == req.call_id && b.cseq >= req.cseq => {
                    return RegisterOutcome::OutOfOrder
                }
                None if *expires > 0 => added += 1,
                _ => {}
            }
        }
        if list.len() + added > self.config.max_contacts {
            return RegisterOutcome::TooManyContacts;
        }
        for (na, expires) in parsed {
            let existing = list.iter().position(|b| same_contact(&b.uri, &na.uri));
            if expires == 0 {
                if let Some(i) = existing {
                    list.remove(i);
                }
                continue;
            }
            let binding = Binding {
                uri: na.uri.clone(),
                expires_at: unix_now + u64::from(expires),
                source,
                transport: req.via.transport.clone(),
                call_id: req.call_id.clone(),
                cseq: req.cseq,
                q: na.param("q").map(str::to_string),
                user_agent: req.header("User-Agent").map(str::to_string),
                conn,
                path: path.clone(),
            };
            match existing {
                Some(i) => list[i] = binding,
                None => list.push(binding),
            }
        }
        let current = list
            .iter()
            .map(|b| (b.clone(), b.expires_at.saturating_sub(unix_now)))
            .collect();
        self.persist(&k);
        RegisterOutcome::Ok(current)
    }

    /// Connection `conn` closed. Contacts registered over it on WebSocket or TLS are dropped:
    /// nothing can reach them any more (a browser is reachable only on its own connection;
    /// this node opens no TLS connection to a phone). Contacts registered over TCP stay until
    /// they expire, without the connection: a phone listening on its Contact's address is
    /// reached by a new connection (RFC 3261 §18.1.1). Returns (dropped, kept).
    pub fn connection_closed(&mut self, conn: u64) -> (usize, usize) {
        let mut changed = Vec::new();
        let (mut dropped, mut kept) = (0, 0);
        for (k, list) in self.bindings.iter_mut() {
            let before = list.len();
            list.retain(|b| b.conn != Some(conn) || b.transport.eq_ignore_ascii_case("TCP"));
            dropped += before - list.len();
            let mut touched = list.len() != before;
            for b in list.iter_mut().filter(|b| b.conn == Some(conn)) {
                b.conn = None;
                kept += 1;
                touched = true;
            }
            if touched {
                changed.push(k.clone());
            }
        }
        for k in changed {
            self.persist(&k);
        }
        (dropped, kept)
    }

    /// Live bindings of a user: this node's, then other nodes' (a contact registered through
    /// two nodes, as after a failover, counts once: the latest registration wins).
    pub fn lookup(&self, tenant: &str, user: &str, unix_now: u64) -> Vec<Binding> {
        let k = key(tenant, user);
        let mut out: Vec<Binding> = self
            .bindings
            .get(&k)
            .map(|l| {
                l.iter()
                    .filter(|b| b.expires_at > unix_now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let remote = self
            .remote
            .get(&k)
            .into_iter()
            .flat_map(|nodes| nodes.values().flatten())
            .filter(|b| b.expires_at > unix_now);
        for b in remote {
            match out.iter_mut().find(|o| same_contact(&o.uri, &b.uri)) {
                Some(o) if o.expires_at < b.expires_at => *o = b.clone(),
                Some(_) => {}
                None => out.push(b.clone()),
            }
        }
        out
    }

    /// Drops expired bindings everywhere (called from a periodic timer).
    pub fn expire(&mut self, unix_now: u64) {
        let mut changed = Vec::new();
        for (k, list) in self.bindings.iter_mut() {
            let before = list.len();
            list.retain(|b| b.expires_at > unix_now);
            if list.len() != before {
                changed.push(k.clone());
            }
        }
        for k in changed {
            self.persist(&k);
        }
        self.bindings.retain(|_, l| !l.is_empty());
        for nodes in self.remote.values_mut() {
            for list in nodes.values_mut() {
                list.retain(|b| b.expires_at > unix_now);
            }
            nodes.retain(|_, l| !l.is_empty());
        }
        self.remote.retain(|_, nodes| !nodes.is_empty());
    }

    /// Number of live bindings (for metrics).
    pub fn count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }
}

/// Contact URIs compare by scheme, user, host and port (RFC 3261 §19.1.4 simplified: the
/// parameters phones add, such as `transport` or `ob`, do not make a new binding).
fn same_contact(a: &str, b: &str) -> bool {
    let base = |s: &str| s.split(';').next().unwrap_or(s).trim().to_ascii_lowercase();
    base(a) == base(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse, SipMessage};

    fn register(contact: &str, expires: &str, cseq: u32) -> SipRequest {
        register_via("UDP", contact, expires, cseq)
    }

    fn register_via(transport: &str, contact: &str, expires: &str, cseq: u32) -> SipRequest {
        let m = format!(
            "REGISTER sip:demo SIP/2.0\r\nVia: SIP/2.0/{transport} 10.0.0.1:5060;branch=z9hG4bK{cseq}\r\nFrom: <sip:100@demo>;tag=a\r\nTo: <sip:100@demo>\r\nCall-ID: reg1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(m.as_bytes()).expect("parse") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("response"),
        }
    }

    #[test]
    fn register_refresh_unregister() {
        let mut r = Registrar::new(RegistrarConfig::default(), Vec::new());
        let src: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let out = r.register(
            "demo",
            "100",
            &register("<sip:100@10.0.0.1>", "3600", 1),
            src,
            1000,
        );
        assert!(matches!(out, RegisterOutcome::Ok(ref b) if b.len() == 1 && b[0].1 == 3600));
        // Second phone.
        let out = r.register(
            "demo",
            "100",
            &register("<sip:100@10.0.0.2>;expires=120", "3600", 2),
            src,
            1000,
        );
        assert!(matches!(out, RegisterOutcome::Ok(ref b) if b.len() == 2));
        assert_eq!(r.lookup("demo", "100", 1100).len(), 2);
        assert_eq!(r.lookup("demo", "100", 1121).len(), 1);
        // Too brief.
        let out = r.register(
            "demo",
            "100",
            &register("<sip:100@10.0.0.1>", "10", 3),
            src,
            1000,
        );
        assert_eq!(out, RegisterOutcome::IntervalTooBrief(60));
        // Out of order CSeq for the same Call-ID.
        let out = r.register(
            "demo",
            "100",
            &register("<sip:100@10.0.0.1>", "3600", 1),
            src,
            1000,
        );
        assert_eq!(out, RegisterOutcome::OutOfOrder);
        // Remove all.
        let out = r.register("demo", "100", &register("*", "0", 4), src, 1000);
        assert_eq!(out, RegisterOutcome::Ok(vec![]));
        assert!(r.lookup("demo", "100", 1000).is_empty());
    }

    #[test]
    fn other_nodes_bindings_join_lookups_until_they_expire() {
        let mut r = Registrar::new(RegistrarConfig::default(), Vec::new());
        let src: SocketAddr = "192.0.2.7:5060".parse().expect("addr");
        let out = r.register(
            "t",
            "101",
            &register("<sip:101@192.0.2.7>", "600", 1),
            src,
            1000,
        );
        assert!(matches!(out, RegisterOutcome::Ok(_)));
        assert_eq!(split_key(&r.local_bindings()[0].key), Some(("t", "101")));
        let theirs = |uri: &str, expires_at: u64, conn: Option<u64>| Binding {
            uri: uri.into(),
            expires_at,
            source: "198.51.100.9:5062".parse().expect("addr"),
            transport: "UDP".into(),
            call_id: "x".into(),
            cseq: 1,
            q: None,
            user_agent: None,
            conn,
            path: Vec::new(),
        };
        r.set_remote(
            "t",
            "101",
            "node-b",
            vec![
                theirs("sip:101@198.51.100.9:5062", 1300, None),
                // The same phone re-registered through node B later than through us.
                theirs("sip:101@192.0.2.7", 2000, None),
                // A WebSocket phone is reachable only through the node holding its socket.
                theirs("sip:ws@example.invalid;transport=ws", 2000, Some(4)),
            ],
        );
        let found = r.lookup("t", "101", 1100);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0].expires_at, 2000,
            "latest registration of one contact wins"
        );
        assert_eq!(r.count(), 1, "only this node's own are counted");
        assert_eq!(r.remote_count(), 2);
        // Not this node's to persist: only the REGISTER above was queued.
        assert_eq!(std::iter::from_fn(|| r.poll_change()).count(), 1);
        assert_eq!(
            r.lookup("t", "101", 1400).len(),
            1,
            "remote ones expire too"
        );
        r.expire(2100);
        assert_eq!(r.remote_count(), 0);
        r.set_remote("t", "101", "node-b", vec![theirs("sip:a@b", 3000, None)]);
        r.set_remote("t", "101", "node-b", Vec::new());
        assert!(
            r.lookup("t", "101", 2200).is_empty(),
            "an empty list removes them"
        );
    }

    #[test]
    fn a_closed_connection_keeps_tcp_contacts_without_it_and_drops_websocket_ones() {
        let src: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
        let mut r = Registrar::new(RegistrarConfig::default(), Vec::new());
        let over = |transport: &str, contact: &str| register_via(transport, contact, "3600", 1);
        let tcp = over("TCP", "<sip:100@10.0.0.2:5062;transport=tcp>");
        r.register_on("demo", "100", &tcp, src, Some(7), Vec::new(), 1000);
        let ws = over("WSS", "<sip:abc@df7jal23ls0d.invalid;transport=ws>");
        r.register_on("demo", "101", &ws, src, Some(7), Vec::new(), 1000);
        while r.poll_change().is_some() {}
        assert_eq!(r.connection_closed(7), (1, 1));
        let kept = r.lookup("demo", "100", 1001);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0].conn, None,
            "reached by a new connection from now on"
        );
        assert!(
            r.lookup("demo", "101", 1001).is_empty(),
            "a browser is gone"
        );
        assert_eq!(
            std::iter::from_fn(|| r.poll_change()).count(),
            2,
            "both users' lists are written again"
        );
        assert_eq!(r.connection_closed(7), (0, 0), "nothing left on it");
    }

    #[test]
    fn every_change_is_queued_and_a_new_registrar_starts_from_what_was_written() {
        let src: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let mut written: HashMap<String, Vec<Binding>> = HashMap::new();
        let mut r = Registrar::new(RegistrarConfig::default(), Vec::new());
        r.register(
            "demo",
            "100",
            &register("<sip:100@10.0.0.1>", "3600", 1),
            src,
            1000,
        );
        let over_tcp = register("<sip:101@10.0.0.2;transport=tcp>", "3600", 1);
        r.register_on("demo", "101", &over_tcp, src, Some(7), Vec::new(), 1000);
        while let Some(c) = r.poll_change() {
            written.insert(c.key, c.bindings);
        }
        assert_eq!(written.len(), 2);
        let r = Registrar::new(
            RegistrarConfig::default(),
            written.clone().into_iter().collect(),
        );
        assert_eq!(r.lookup("demo", "100", 1001).len(), 1);
        assert!(
            r.lookup("demo", "101", 1001).is_empty(),
            "a binding over a connection does not survive a restart"
        );
        // Expiry is a change too: the key is written empty (deleted).
        let mut r = r;
        r.expire(1000 + 3601);
        let c = r.poll_change().expect("change");
        assert!(c.bindings.is_empty());
        assert!(r.poll_change().is_none());
    }
}

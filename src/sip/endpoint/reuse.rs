//! Connection reuse (RFC 5923): a peer that opened a TLS connection to us, proved who it is
//! with a client certificate, and put `alias` in its Via is reached over that connection:
//! a new request to the name and port in its sent-by goes down the connection it opened
//! instead of a new one (what carriers that take no connections from customers expect).
//!
//! Only a name the peer's certificate is valid for is taken (§5.3: anyone can write any
//! sent-by; an alias for a name it cannot prove would let it take another server's calls).
//! The certificate itself is checked at the edge (the TLS listener verified the chain
//! against `sip.tls_client_ca`); this table only asks it, through [`CertifiedPeer`], whether
//! it holds a name. A peer without a verified certificate, or offering a name its
//! certificate does not hold, keeps its connection for the answers and nothing else: the
//! refusal is logged and counted.
//!
//! The other direction, our own `alias` on connections we open while presenting a
//! certificate, is written into our Via (`Endpoint::via_for`).

use std::collections::HashMap;
use std::sync::Arc;

/// A connection's peer that proved an identity with a certificate this node verified.
pub trait CertifiedPeer: Send + Sync + std::fmt::Debug {
    /// True when the certificate is valid for `host` (a DNS name or an IP address).
    fn certifies(&self, host: &str) -> bool;
}

/// Aliased names in all: one or two per peer proxy; a bound, not a working size.
const MAX_ALIASES: usize = 4096;

/// Names one connection may alias (a server with a few names; more is someone probing).
const MAX_PER_CONNECTION: usize = 4;

/// Where an offered alias went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// Taken (or already there): requests to the name go down the connection.
    Taken,
    /// The connection has no verified certificate (no `sip.tls_client_ca`, or the peer
    /// sent none).
    Unproven,
    /// The certificate does not hold the sent-by host.
    NotItsName,
    /// The table (or the connection's share of it) is full.
    Full,
}

/// Verified peers' connections and the names they aliased.
#[derive(Debug, Default)]
pub(super) struct Aliases {
    certified: HashMap<u64, Arc<dyn CertifiedPeer>>,
    /// (lower-cased host, port) to connection.
    names: HashMap<(String, u16), u64>,
}

impl Aliases {
    /// A connection whose peer presented a certificate the TLS listener verified.
    pub(super) fn certified(&mut self, conn: u64, peer: Arc<dyn CertifiedPeer>) {
        self.certified.insert(conn, peer);
    }

    /// A request on `conn` offered its sent-by (`host`, `port`) as an alias.
    pub(super) fn offered(&mut self, conn: u64, host: &str, port: u16) -> Offer {
        let key = (host.to_ascii_lowercase(), port);
        if self.names.get(&key) == Some(&conn) {
            return Offer::Taken;
        }
        let Some(peer) = self.certified.get(&conn) else {
            return Offer::Unproven;
        };
        if !peer.certifies(host) {
            return Offer::NotItsName;
        }
        let mine = self.names.values().filter(|&&c| c == conn).count();
        if mine >= MAX_PER_CONNECTION || self.names.len() >= MAX_ALIASES {
            return Offer::Full;
        }
        // A newer proven connection for the name replaces an older one (the peer
        // reconnected; the old one is on its way out).
        self.names.insert(key, conn);
        Offer::Taken
    }

    /// The connection aliased for `name` and `port`, if any.
    pub(super) fn route(&self, name: &str, port: u16) -> Option<u64> {
        if self.names.is_empty() {
            return None;
        }
        self.names.get(&(name.to_ascii_lowercase(), port)).copied()
    }

    /// A connection closed: its certificate and aliases go.
    pub(super) fn closed(&mut self, conn: u64) {
        if self.certified.remove(&conn).is_some() {
            self.names.retain(|_, c| *c != conn);
        }
    }

    /// Names aliased now.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Holds(&'static [&'static str]);

    impl CertifiedPeer for Holds {
        fn certifies(&self, host: &str) -> bool {
            self.0.iter().any(|n| n.eq_ignore_ascii_case(host))
        }
    }

    #[test]
    fn only_a_name_the_certificate_holds_is_aliased_and_only_while_the_connection_lives() {
        let mut a = Aliases::default();
        assert_eq!(a.offered(1, "edge.carrier.test", 5061), Offer::Unproven);
        a.certified(1, Arc::new(Holds(&["edge.carrier.test"])));
        assert_eq!(a.offered(1, "other.test", 5061), Offer::NotItsName);
        assert_eq!(a.route("other.test", 5061), None);
        assert_eq!(a.offered(1, "Edge.Carrier.Test", 5061), Offer::Taken);
        assert_eq!(a.route("edge.carrier.test", 5061), Some(1));
        assert_eq!(a.route("edge.carrier.test", 5062), None, "another port");

        // The peer reconnects: the newer proven connection takes the name.
        a.certified(2, Arc::new(Holds(&["edge.carrier.test"])));
        assert_eq!(a.offered(2, "edge.carrier.test", 5061), Offer::Taken);
        assert_eq!(a.route("edge.carrier.test", 5061), Some(2));
        a.closed(1);
        assert_eq!(
            a.route("edge.carrier.test", 5061),
            Some(2),
            "1 no longer had it"
        );
        a.closed(2);
        assert_eq!(a.route("edge.carrier.test", 5061), None);
        assert_eq!(a.offered(2, "edge.carrier.test", 5061), Offer::Unproven);
    }

    #[test]
    fn one_connection_cannot_fill_the_table() {
        let mut a = Aliases::default();
        a.certified(7, Arc::new(Holds(&["a", "b", "c", "d", "e"])));
        for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
            assert_eq!(a.offered(7, n, 5061), Offer::Taken, "{i}");
        }
        assert_eq!(a.offered(7, "e", 5061), Offer::Full);
        assert_eq!(a.offered(7, "a", 5061), Offer::Taken, "a name it has stays");
        assert_eq!(a.len(), 4);
    }
}

//! Requests relayed by a trusted proxy: a SIP load balancer in front of the node (Kamailio's
//! `dispatcher`), listed in `sip.trusted_proxies`.
//!
//! Behind a proxy every request's transport source is the proxy. Decisions keyed by the
//! client's address — trunk trust by source, the digest failure limiter, NAT handling for
//! media — must use the client's own address, which the proxy records in the client's Via
//! (`received`/`rport`, RFC 3261 §18.2.1, RFC 3581): the Via under the proxy's own. Only a
//! configured proxy is believed; anyone else's Vias are theirs to write and mean nothing.
//!
//! A REGISTER relayed by a trusted proxy may carry `Path` (RFC 3327): the proxies that hold
//! the phone's connection or NAT pinhole. The registrar keeps it with the binding, and
//! requests for that contact go to the proxy the REGISTER came from with the Path as `Route`
//! (from this node or any other of a cluster).

use super::{Endpoint, Peer};
use crate::sip::headers::{NameAddr, Via};
use crate::sip::message::SipRequest;
use std::net::{IpAddr, SocketAddr};

/// Most proxies a Path may name (more is not a deployment, it is a loop or an attack).
const MAX_PATH: usize = 4;

impl Endpoint {
    /// Whether `ip` is one of the configured proxies in front of this node.
    pub(super) fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.cfg
            .trusted_proxies
            .iter()
            .any(|(net, len)| crate::tenant::snapshot::ip_in(ip, *net, *len))
    }

    /// The address of the client that sent `req`: the transport peer, or, when that is a
    /// trusted proxy, the address the proxy recorded in the client's Via (walking past
    /// further trusted proxies). The peer itself when the Via says nothing usable.
    pub(super) fn client_of(&self, peer: &Peer, req: &SipRequest) -> SocketAddr {
        let mut client = peer.addr;
        if !self.is_trusted_proxy(client.ip()) {
            return client;
        }
        for value in req.header_values("Via").iter().skip(1) {
            let Some(addr) = Via::parse(value).ok().and_then(|v| v.source_address()) else {
                return client;
            };
            client = addr;
            if !self.is_trusted_proxy(addr.ip()) {
                break;
            }
        }
        client
    }

    /// The `Path` of a REGISTER relayed by a trusted proxy, as `Route` values to send along;
    /// empty from anyone else, and when a value is not a `<sip:…;lr>`-style name-addr.
    pub(super) fn trusted_path(&self, peer: &Peer, req: &SipRequest) -> Vec<String> {
        if !self.is_trusted_proxy(peer.addr.ip()) {
            return Vec::new();
        }
        let path: Vec<String> = req.header_values("Path");
        let usable = path.len() <= MAX_PATH
            && path.iter().all(|p| {
                NameAddr::parse(p)
                    .is_ok_and(|na| na.uri.starts_with("sip:") || na.uri.starts_with("sips:"))
            });
        if usable {
            path.into_iter().map(|p| p.trim().to_string()).collect()
        } else {
            tracing::warn!(proxy = %peer.addr, "REGISTER with a Path that is not a route: Path ignored");
            Vec::new()
        }
    }
}

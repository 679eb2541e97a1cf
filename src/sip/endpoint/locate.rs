//! Where a trunk's requests go (RFC 3263 §4): its address as written (an IP or a name, a
//! port, a transport) and, for a name, the DNS answers that turn it into an ordered list of
//! targets, which a call tries one after the other (next on silence, a failed connection,
//! a transaction timeout or a 503).
//!
//! The lookups are the runtime's (`server::trunk_dns`, with hickory-resolver); this module
//! decides which lookups a trunk needs and orders their answers, so it is tested without a
//! DNS server. The endpoint reads the runtime's answers from a [`TargetTable`] and never
//! waits for DNS: a name not resolved yet fails the call at once, with a log line.

use super::TransportKind;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Most targets one trunk name yields (NAPTR choices × SRV records × addresses): a hostile
/// zone cannot make a call try for minutes or the table grow without bound.
pub const MAX_TARGETS: usize = 16;

/// One server to send a trunk's requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// The transport to reach it with.
    pub transport: TransportKind,
    /// The name its TLS certificate must carry (the SRV target or the trunk's host).
    pub server_name: Arc<str>,
}

/// The lookups a trunk's address needs (RFC 3263 §4.1, §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// An IP address: used as it is.
    Direct(Target),
    /// A name with a port: its A/AAAA records, on the given transport (UDP when none).
    Address {
        /// The name.
        host: String,
        /// The port.
        port: u16,
        /// The transport.
        transport: TransportKind,
    },
    /// A name with a transport but no port: the SRV records for that transport, or the
    /// name's own addresses on the transport's default port when there are none.
    Srv {
        /// The name.
        host: String,
        /// The transport.
        transport: TransportKind,
    },
    /// A name alone: NAPTR first, then SRV for each transport we speak (TLS, TCP, UDP),
    /// then the name's addresses on UDP 5060.
    Naptr {
        /// The name.
        host: String,
    },
}

/// The transports a trunk may name, best first when DNS leaves the choice to us.
pub const TRUNK_TRANSPORTS: [TransportKind; 3] =
    [TransportKind::Tls, TransportKind::Tcp, TransportKind::Udp];

/// The lookups for a trunk `address` (`host[:port]`, already validated) and its configured
/// `transport`; None when the address does not parse.
pub fn plan(address: &str, transport: Option<TransportKind>) -> Option<Plan> {
    let (host, port) = crate::sip::headers::split_host_port(address)?;
    let host = host.trim_matches(|c| c == '[' || c == ']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        let transport = transport.unwrap_or(TransportKind::Udp);
        return Some(Plan::Direct(Target {
            addr: SocketAddr::new(ip, port.unwrap_or(default_port(transport))),
            transport,
            server_name: Arc::from(host),
        }));
    }
    let host = host.to_ascii_lowercase();
    Some(match (port, transport) {
        (Some(port), t) => Plan::Address {
            host,
            port,
            transport: t.unwrap_or(TransportKind::Udp),
        },
        (None, Some(transport)) => Plan::Srv { host, transport },
        (None, None) => Plan::Naptr { host },
    })
}

/// 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2).
pub fn default_port(transport: TransportKind) -> u16 {
    if transport == TransportKind::Tls {
        5061
    } else {
        5060
    }
}

/// The SRV name for `transport` at `host` (RFC 3263 §4.2): `_sips._tcp`, `_sip._tcp`,
/// `_sip._udp`.
pub fn srv_name(transport: TransportKind, host: &str) -> String {
    let prefix = match transport {
        TransportKind::Tls => "_sips._tcp",
        TransportKind::Tcp => "_sip._tcp",
        _ => "_sip._udp",
    };
    format!("{prefix}.{host}")
}

/// A NAPTR record as the resolver returned it.
#[derive(Debug, Clone)]
pub struct NaptrRecord {
    /// Order (lower first).
    pub order: u16,
    /// Preference within an order (lower first).
    pub preference: u16,
    /// Flags (`s`: the replacement is an SRV name).
    pub flags: String,
    /// Service (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, …).
    pub service: String,
    /// The SRV name to look up next.
    pub replacement: String,
}

/// The NAPTR records that lead to a transport we speak (flag `s`, service `SIP+D2U`,
/// `SIP+D2T` or `SIPS+D2T`), best first, as (transport, SRV name); the rest are ignored
/// (RFC 3263 §4.1: a client discards records for services it does not support).
pub fn naptr_choices(records: &[NaptrRecord]) -> Vec<(TransportKind, String)> {
    let mut usable: Vec<&NaptrRecord> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s") && !r.replacement.is_empty())
        .filter(|r| naptr_transport(&r.service).is_some())
        .collect();
    usable.sort_by_key(|r| (r.order, r.preference));
    let mut out: Vec<(TransportKind, String)> = Vec::new();
    for r in usable {
        let Some(t) = naptr_transport(&r.service) else {
            continue;
        };
        let name = r.replacement.trim_end_matches('.').to_ascii_lowercase();
        if !out.iter().any(|(_, n)| *n == name) {
            out.push((t, name));
        }
    }
    out
}

fn naptr_transport(service: &str) -> Option<TransportKind> {
    match service.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(TransportKind::Udp),
        "SIP+D2T" => Some(TransportKind::Tcp),
        "SIPS+D2T" => Some(TransportKind::Tls),
        _ => None,
    }
}

/// An SRV record as the resolver returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Priority (lower first).
    pub priority: u16,
    /// Weight within a priority (higher: chosen first more often).
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target name (`.`: the service is not offered here).
    pub target: String,
}

/// SRV records in the order to try them (RFC 2782): by priority, and within a priority
/// drawn by weight, `roll(n)` giving a number in `0..=n`. A target of `.` means "not
/// here" and is dropped.
pub fn srv_order(mut records: Vec<SrvRecord>, roll: &mut impl FnMut(u32) -> u32) -> Vec<SrvRecord> {
    records.retain(|r| !r.target.trim_end_matches('.').is_empty());
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<SrvRecord> = records.drain(..end).collect();
        // Zero weights first, so they are chosen only rarely (RFC 2782).
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = roll(total).min(total);
            let mut sum = 0;
            let at = group
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(at));
        }
    }
    out
}

/// Whether a trunk may be sent to `ip`: the same rule as for a trunk written as an IP
/// address. Unspecified, multicast, broadcast and link-local (cloud metadata) addresses
/// reach the node's own host or nothing, not a provider; a DNS answer naming them is
/// dropped.
pub fn acceptable(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !(v4.is_link_local() || v4.is_broadcast()),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// Which resolved target list a trunk's address maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// The address as configured, in lower case.
    pub address: String,
    /// The configured transport.
    pub transport: Option<TransportKind>,
}

/// A name's resolved targets and when to look again.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Targets, in the order to try them; empty when the name leads nowhere.
    pub targets: Arc<[Target]>,
    /// When the answers' time to live runs out (or a failed lookup is retried).
    pub refresh_at: Instant,
}

/// Every trunk name's targets, as the runtime last resolved them. Names are looked up in
/// the background; the endpoint only reads.
#[derive(Debug, Clone, Default)]
pub struct TargetTable {
    /// By trunk address.
    pub by_key: HashMap<TargetKey, Resolved>,
}

impl TargetTable {
    /// The targets for a trunk's `address` on `transport`, in order; empty when it is a name
    /// not resolved (yet) or resolving to nothing.
    pub fn targets(&self, address: &str, transport: Option<TransportKind>) -> Vec<Target> {
        match plan(address, transport) {
            Some(Plan::Direct(t)) => vec![t],
            Some(_) => self
                .by_key
                .get(&TargetKey {
                    address: address.to_ascii_lowercase(),
                    transport,
                })
                .map(|r| r.targets.to_vec())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_is_used_as_it_is_and_a_name_is_planned_by_what_it_says() {
        let Some(Plan::Direct(t)) = plan("192.0.2.7", Some(TransportKind::Tls)) else {
            panic!("ip")
        };
        assert_eq!(t.addr, "192.0.2.7:5061".parse().unwrap());
        assert_eq!(
            plan("[2001:db8::1]:5070", None),
            Some(Plan::Direct(Target {
                addr: "[2001:db8::1]:5070".parse().unwrap(),
                transport: TransportKind::Udp,
                server_name: Arc::from("2001:db8::1"),
            }))
        );
        assert_eq!(
            plan("SIP.Carrier.example:5080", None),
            Some(Plan::Address {
                host: "sip.carrier.example".into(),
                port: 5080,
                transport: TransportKind::Udp
            })
        );
        assert_eq!(
            plan("carrier.example", Some(TransportKind::Tcp)),
            Some(Plan::Srv {
                host: "carrier.example".into(),
                transport: TransportKind::Tcp
            })
        );
        assert_eq!(
            plan("carrier.example", None),
            Some(Plan::Naptr {
                host: "carrier.example".into()
            })
        );
        assert_eq!(
            srv_name(TransportKind::Tls, "carrier.example"),
            "_sips._tcp.carrier.example"
        );
    }

    #[test]
    fn naptr_keeps_what_we_speak_in_order_and_preference() {
        let r = |order, preference, flags: &str, service: &str, replacement: &str| NaptrRecord {
            order,
            preference,
            flags: flags.into(),
            service: service.into(),
            replacement: replacement.into(),
        };
        let got = naptr_choices(&[
            r(20, 10, "s", "SIP+D2U", "_sip._udp.c.example."),
            r(10, 20, "s", "SIP+D2T", "_sip._tcp.c.example."),
            r(10, 10, "s", "SIPS+D2T", "_sips._tcp.c.example."),
            r(5, 10, "s", "SIP+D2S", "_sip._sctp.c.example."),
            r(5, 10, "u", "SIP+D2U", "!^.*$!sip:x@y!"),
            r(30, 10, "s", "SIP+D2T", "_sip._tcp.c.example."),
        ]);
        assert_eq!(
            got,
            vec![
                (TransportKind::Tls, "_sips._tcp.c.example".to_string()),
                (TransportKind::Tcp, "_sip._tcp.c.example".to_string()),
                (TransportKind::Udp, "_sip._udp.c.example".to_string()),
            ]
        );
    }

    #[test]
    fn srv_goes_by_priority_then_weight_and_drops_the_dot() {
        let r = |priority, weight, port, target: &str| SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        };
        let records = vec![
            r(20, 0, 5003, "c.example."),
            r(10, 10, 5001, "a.example."),
            r(10, 90, 5002, "b.example."),
            r(5, 0, 5000, "."),
        ];
        // Rolling high picks the heavy one first; rolling 0 the first with weight.
        let ports = |mut roll: Box<dyn FnMut(u32) -> u32>| {
            srv_order(records.clone(), &mut roll)
                .into_iter()
                .map(|r| r.port)
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(Box::new(|n| n)), vec![5002, 5001, 5003]);
        assert_eq!(ports(Box::new(|_| 1)), vec![5001, 5002, 5003]);
        // A roll past the total is clamped, never a panic.
        assert_eq!(ports(Box::new(|_| u32::MAX)), vec![5002, 5001, 5003]);
    }

    #[test]
    fn answers_pointing_into_the_host_are_not_targets() {
        for bad in [
            "0.0.0.0",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
        ] {
            assert!(!acceptable(bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.0.2.1", "127.0.0.1", "2001:db8::1"] {
            assert!(acceptable(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn the_table_answers_names_it_holds_and_nothing_else() {
        let mut table = TargetTable::default();
        let t = Target {
            addr: "192.0.2.9:5061".parse().unwrap(),
            transport: TransportKind::Tls,
            server_name: Arc::from("sip1.c.example"),
        };
        table.by_key.insert(
            TargetKey {
                address: "c.example".into(),
                transport: None,
            },
            Resolved {
                targets: Arc::from(vec![t.clone()]),
                refresh_at: Instant::now(),
            },
        );
        assert_eq!(table.targets("C.example", None), vec![t]);
        assert!(table
            .targets("c.example", Some(TransportKind::Udp))
            .is_empty());
        assert!(table.targets("other.example", None).is_empty());
        assert_eq!(table.targets("192.0.2.1:5070", None).len(), 1);
    }
}

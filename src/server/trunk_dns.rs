//! Trunk names kept resolved in the background (RFC 3263 with hickory-resolver), so a call
//! never waits for DNS on the SIP loop.
//!
//! Every trunk address that is a name is looked up when it appears and again when its
//! answers' time to live runs out (held between [`MIN_REFRESH`] and [`MAX_REFRESH`]). A
//! lookup that fails or finds nothing keeps the targets it had (a DNS outage must not take
//! a working trunk down), is logged with the trunk's address and reason, counted, and tried
//! again after [`RETRY_AFTER`]. What to look up and in which order to use the answers is
//! `sip::endpoint::locate`'s; this module only asks and publishes the [`TargetTable`] the
//! endpoint reads.

use crate::sip::endpoint::locate::{
    self, NaptrRecord, Plan, Resolved, SrvRecord, Target, TargetKey, TargetTable, TRUNK_TRANSPORTS,
};
use crate::sip::endpoint::TransportKind;
use crate::tenant::model::TrunkTransport;
use crate::tenant::SnapshotCell;
use arc_swap::ArcSwap;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest time answers are kept before asking again, whatever their TTL says.
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Longest time answers are kept before asking again.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// When a failed lookup is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// One trunk's whole lookup (NAPTR, SRVs, addresses) may take this long.
const LOOKUP_WITHIN: Duration = Duration::from_secs(10);
/// How often the tenants' trunks are looked at for new names.
const CHECK_EVERY: Duration = Duration::from_secs(1);

static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Trunk name lookups that failed or found nothing since start-up, for the metrics.
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Why the resolver cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct DnsSetupError(String);

/// A resolver asking `servers` (`IP:port`), or the system's (`/etc/resolv.conf`) when none.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, DnsSetupError> {
    if servers.is_empty() {
        return TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| DnsSetupError(e.to_string()));
    }
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            ns
        })
        .collect();
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map_err(|e| DnsSetupError(e.to_string()))
}

/// The node's own addresses, which a trunk's DNS answers may not name unless the operator
/// allows trunks on this machine (`tenant.allow_local_trunks`): the same rule as for a
/// trunk written as an IP, so a name cannot get round it.
#[derive(Debug, Clone)]
pub struct OwnAddresses {
    /// The node's public and bound addresses (loopback is always its own).
    pub ips: Vec<std::net::IpAddr>,
    /// `tenant.allow_local_trunks`.
    pub allowed: bool,
}

impl OwnAddresses {
    fn refuses(&self, ip: std::net::IpAddr) -> bool {
        !self.allowed && (ip.is_loopback() || self.ips.contains(&ip))
    }
}

/// Keeps `table` filled with the targets of every trunk name in the tenants' configuration.
pub fn spawn(
    tenants: SnapshotCell,
    table: Arc<ArcSwap<TargetTable>>,
    resolver: TokioResolver,
    own: OwnAddresses,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            refresh(&tenants, &table, &resolver, &own).await;
            tokio::time::sleep(CHECK_EVERY).await;
        }
    })
}

/// The trunk addresses that need DNS.
fn names_in(tenants: &SnapshotCell) -> HashSet<TargetKey> {
    let snap = tenants.load();
    let mut keys = HashSet::new();
    for t in snap.tenants() {
        for trunk in &t.config.trunks {
            let Some(address) = &trunk.address else {
                continue;
            };
            let transport = trunk.transport.map(|t| match t {
                TrunkTransport::Udp => TransportKind::Udp,
                TrunkTransport::Tcp => TransportKind::Tcp,
                TrunkTransport::Tls => TransportKind::Tls,
            });
            if matches!(
                locate::plan(address, transport),
                Some(Plan::Address { .. } | Plan::Srv { .. } | Plan::Naptr { .. })
            ) {
                keys.insert(TargetKey {
                    address: address.to_ascii_lowercase(),
                    transport,
                });
            }
        }
    }
    keys
}

/// Looks up the names that are new or due, and publishes the table when anything changed.
async fn refresh(
    tenants: &SnapshotCell,
    table: &ArcSwap<TargetTable>,
    resolver: &TokioResolver,
    own: &OwnAddresses,
) {
    let keys = names_in(tenants);
    let mut next = (*table.load_full()).clone();
    let before = next.by_key.len();
    next.by_key.retain(|k, _| keys.contains(k));
    let mut changed = next.by_key.len() != before;
    for key in keys {
        let now = Instant::now();
        if next.by_key.get(&key).is_some_and(|r| r.refresh_at > now) {
            continue;
        }
        changed = true;
        let outcome = tokio::time::timeout(LOOKUP_WITHIN, lookup(resolver, &key, own)).await;
        let old = next.by_key.get(&key).map(|r| r.targets.clone());
        let resolved = match outcome {
            Ok(Ok((targets, valid_until))) if !targets.is_empty() => {
                let refresh_at = valid_until.clamp(now + MIN_REFRESH, now + MAX_REFRESH);
                if old.as_deref() != Some(&targets[..]) {
                    let shown: Vec<String> = targets
                        .iter()
                        .map(|t| format!("{} {}", t.transport.token(), t.addr))
                        .collect();
                    tracing::info!(trunk = %key.address, targets = ?shown, "trunk address resolved");
                }
                Resolved {
                    targets: Arc::from(targets),
                    refresh_at,
                }
            }
            failed => {
                let why = match failed {
                    Ok(Ok(_)) => "no usable target".to_string(),
                    Ok(Err(e)) => e,
                    Err(_) => "timed out".to_string(),
                };
                FAILURES.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(trunk = %key.address, reason = %why, kept = old.as_ref().map_or(0, |t| t.len()), "trunk address lookup failed: keeping the previous targets");
                Resolved {
                    targets: old.unwrap_or_else(|| Arc::from(Vec::new())),
                    refresh_at: now + RETRY_AFTER,
                }
            }
        };
        next.by_key.insert(key, resolved);
    }
    if changed {
        table.store(Arc::new(next));
    }
}

/// One trunk address's targets in order, and until when they hold.
async fn lookup(
    r: &TokioResolver,
    key: &TargetKey,
    own: &OwnAddresses,
) -> Result<(Vec<Target>, Instant), String> {
    let plan = locate::plan(&key.address, key.transport).ok_or("not host[:port]")?;
    let mut found = Found {
        own: own.clone(),
        targets: Vec::new(),
        until: Instant::now() + MAX_REFRESH,
        last_error: None,
    };
    match plan {
        Plan::Direct(t) => found.targets.push(t),
        Plan::Address {
            host,
            port,
            transport,
        } => found.addresses(r, &host, port, transport).await,
        Plan::Srv { host, transport } => {
            found
                .srv(r, &locate::srv_name(transport, &host), transport)
                .await;
            if found.targets.is_empty() {
                found
                    .addresses(r, &host, locate::default_port(transport), transport)
                    .await;
            }
        }
        Plan::Naptr { host } => {
            let mut choices = found.naptr(r, &host).await;
            if choices.is_empty() {
                // No NAPTR: SRV for each transport we speak, best first (RFC 3263 §4.1).
                choices = TRUNK_TRANSPORTS
                    .iter()
                    .map(|t| (*t, locate::srv_name(*t, &host)))
                    .collect();
            }
            for (transport, name) in choices {
                if found.targets.len() >= locate::MAX_TARGETS {
                    break;
                }
                found.srv(r, &name, transport).await;
            }
            if found.targets.is_empty() {
                found.addresses(r, &host, 5060, TransportKind::Udp).await;
            }
        }
    }
    found.targets.truncate(locate::MAX_TARGETS);
    if found.targets.is_empty() {
        return Err(found.last_error.unwrap_or_else(|| "no records".into()));
    }
    Ok((found.targets, found.until))
}

/// What a lookup gathered so far.
struct Found {
    own: OwnAddresses,
    targets: Vec<Target>,
    until: Instant,
    last_error: Option<String>,
}

impl Found {
    fn failed(&mut self, name: &str, e: impl std::fmt::Display) {
        self.last_error = Some(format!("{name}: {e}"));
    }

    /// NAPTR records of `host` that lead somewhere we speak, in order.
    async fn naptr(&mut self, r: &TokioResolver, host: &str) -> Vec<(TransportKind, String)> {
        let lookup = match r.lookup(host, RecordType::NAPTR).await {
            Ok(l) => l,
            Err(e) => {
                self.failed(host, e);
                return Vec::new();
            }
        };
        self.until = self.until.min(lookup.valid_until());
        let records: Vec<NaptrRecord> = lookup
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::NAPTR(n) => Some(NaptrRecord {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    service: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .take(locate::MAX_TARGETS)
            .collect();
        locate::naptr_choices(&records)
    }

    /// The SRV records at `name`, in RFC 2782 order, each target's addresses added.
    async fn srv(&mut self, r: &TokioResolver, name: &str, transport: TransportKind) {
        let lookup = match r.lookup(name, RecordType::SRV).await {
            Ok(l) => l,
            Err(e) => return self.failed(name, e),
        };
        self.until = self.until.min(lookup.valid_until());
        let records: Vec<SrvRecord> = lookup
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                }),
                _ => None,
            })
            .take(locate::MAX_TARGETS)
            .collect();
        // The generator is not kept across an await (it is not Send).
        let ordered = {
            let mut rng = rand::thread_rng();
            locate::srv_order(records, &mut |n| rand::Rng::gen_range(&mut rng, 0..=n))
        };
        for s in ordered {
            if self.targets.len() >= locate::MAX_TARGETS {
                break;
            }
            let host = s.target.trim_end_matches('.').to_ascii_lowercase();
            self.addresses(r, &host, s.port, transport).await;
        }
    }

    /// The A/AAAA addresses of `host` as targets on `port`; answers no provider can have
    /// (see [`locate::acceptable`]) or naming this node are dropped and logged.
    async fn addresses(
        &mut self,
        r: &TokioResolver,
        host: &str,
        port: u16,
        transport: TransportKind,
    ) {
        let lookup = match r.lookup_ip(host).await {
            Ok(l) => l,
            Err(e) => return self.failed(host, e),
        };
        self.until = self.until.min(lookup.valid_until());
        let name: Arc<str> = Arc::from(host);
        for ip in lookup.iter() {
            if !locate::acceptable(ip) {
                tracing::warn!(%host, %ip, "DNS answer for a trunk is not a provider's address: dropped");
                continue;
            }
            if self.own.refuses(ip) {
                tracing::warn!(%host, %ip, "DNS answer for a trunk is this node's own address (tenant.allow_local_trunks is off): dropped");
                continue;
            }
            let t = Target {
                addr: SocketAddr::new(ip, port),
                transport,
                server_name: name.clone(),
            };
            if self.targets.len() < locate::MAX_TARGETS && !self.targets.contains(&t) {
                self.targets.push(t);
            }
        }
    }
}

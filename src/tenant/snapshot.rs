//! The read side of tenant configuration: an immutable [`Snapshot`] with the indexes the call
//! path needs (domain → tenant, DID → tenant, username → user, dialed string → target).
//!
//! A call takes one `Arc<Snapshot>` when it starts and keeps it to its end, which is what makes
//! a configuration change apply to new calls at once and never to a call in progress.

use super::model::{Target, TenantConfig, Trunk, User};
use super::validate::parse_cidr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One tenant's configuration with lookup indexes.
#[derive(Debug)]
pub struct Tenant {
    /// The validated document.
    pub config: TenantConfig,
    users_by_ext: HashMap<String, usize>,
    users_by_name: HashMap<String, usize>,
    dialable: HashMap<String, Target>,
    numbers: HashMap<String, Target>,
    trusted: Vec<(IpAddr, u8, usize)>,
}

impl Tenant {
    /// Builds the indexes of a validated document.
    pub fn new(config: TenantConfig) -> Tenant {
        let users_by_ext = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.extension.clone(), i))
            .collect();
        let users_by_name = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.username.clone(), i))
            .collect();
        let mut dialable: HashMap<String, Target> = config
            .extensions
            .iter()
            .map(|e| (e.extension.clone(), e.target.clone()))
            .collect();
        for u in &config.users {
            dialable.insert(
                u.extension.clone(),
                Target::User {
                    extension: u.extension.clone(),
                },
            );
        }
        let numbers = config
            .numbers
            .iter()
            .map(|n| (n.number.clone(), n.target.clone()))
            .collect();
        let mut trusted = Vec::new();
        for (i, t) in config.trunks.iter().enumerate() {
            for s in &t.allowed_sources {
                if let Some((ip, len)) = parse_cidr(s) {
                    trusted.push((ip, len, i));
                }
            }
        }
        Tenant {
            config,
            users_by_ext,
            users_by_name,
            dialable,
            numbers,
            trusted,
        }
    }

    /// Tenant id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Digest realm.
    pub fn realm(&self) -> &str {
        self.config.realm()
    }

    /// The user phones authenticate as `username`.
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users_by_name
            .get(username)
            .map(|&i| &self.config.users[i])
    }

    /// The user with this extension.
    pub fn user_by_extension(&self, ext: &str) -> Option<&User> {
        self.users_by_ext.get(ext).map(|&i| &self.config.users[i])
    }

    /// What dialing `dialed` from inside the tenant reaches: an extension, or one of the
    /// tenant's own DIDs.
    pub fn resolve_dialed(&self, dialed: &str) -> Option<&Target> {
        self.dialable
            .get(dialed)
            .or_else(|| self.resolve_number(dialed))
    }

    /// Where a call to DID `number` goes (`+` optional in the dialed form).
    pub fn resolve_number(&self, number: &str) -> Option<&Target> {
        let n = normalize_number(number);
        self.numbers.get(&n)
    }

    /// The outbound route and trunk that may carry a call to `number`, and the string to dial.
    ///
    /// This is the toll-fraud gate: the longest route prefix that matches wins, its trunk must
    /// exist, and the number as dialed out must start with one of the trunk's allowed prefixes. Anything else is `None`, and the caller is refused.
    pub fn outbound_route_for(&self, number: &str) -> Option<OutboundPlan<'_>> {
        let dialed: String = number
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        if dialed.is_empty() || dialed != number.trim() {
            return None;
        }
        let route = self
            .config
            .outbound_routes
            .iter()
            .filter(|r| !r.prefix.is_empty() && dialed.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())?;
        let trunk = self.config.trunks.iter().find(|t| t.id == route.trunk)?;
        let rest: String = dialed.chars().skip(route.strip as usize).collect();
        let out = format!("{}{rest}", route.prepend);
        // A trunk without allowed prefixes dials nothing (model: "empty means none").
        if !trunk
            .allowed_prefixes
            .iter()
            .any(|p| !p.is_empty() && out.starts_with(p.as_str()))
        {
            return None;
        }
        Some(OutboundPlan {
            route,
            trunk,
            dial: out,
        })
    }

    /// The trunk whose allowed sources contain `ip`.
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trusted
            .iter()
            .find(|(net, len, _)| ip_in(ip, *net, *len))
            .map(|(_, _, i)| &self.config.trunks[*i])
    }
}

/// An allowed outbound call: which route and trunk carry it and what is dialed.
#[derive(Debug, Clone)]
pub struct OutboundPlan<'a> {
    /// The matching route.
    pub route: &'a crate::tenant::model::OutboundRoute,
    /// Its trunk.
    pub trunk: &'a crate::tenant::model::Trunk,
    /// Number sent to the trunk (after strip/prepend).
    pub dial: String,
}

/// `+1 (555) 0100` → `+15550100`; a bare digit string gains a `+`.
pub fn normalize_number(s: &str) -> String {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("+{digits}")
}

/// Whether `ip` lies in the network `net`/`len` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn ip_in(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|v4| ip_in(IpAddr::V4(v4), net, len)),
        _ => false,
    }
}

/// The current [`Snapshot`], shared: the tenant store swaps in a new one on every change and
/// readers (the SIP endpoint, the API) load whichever is current. Holding one needs no access
/// to where documents are stored, so the SIP core reads configuration without a database.
#[derive(Clone, Default)]
pub struct SnapshotCell(Arc<arc_swap::ArcSwap<Snapshot>>);

impl SnapshotCell {
    /// A cell holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> SnapshotCell {
        SnapshotCell(Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)))
    }

    /// The current snapshot. Cheap: one atomic load and a reference count.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Replaces the current snapshot (readers holding the old one keep it).
    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }

    /// Current revision.
    pub fn revision(&self) -> u64 {
        self.0.load().revision
    }
}

impl std::fmt::Debug for SnapshotCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCell")
            .field("revision", &self.revision())
            .finish()
    }
}

/// Every tenant at one revision.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Revision number: increases with every change.
    pub revision: u64,
    tenants: HashMap<String, Arc<Tenant>>,
    by_domain: HashMap<String, Arc<Tenant>>,
    by_number: HashMap<String, Arc<Tenant>>,
    default_tenant: Option<String>,
    /// Each tenant's revision at the configuration authority of a cluster (the NATS KV
    /// bucket), for compare-and-set writes; absent for documents written on this node only.
    source_revisions: HashMap<String, u64>,
}

impl Snapshot {
    /// Builds a snapshot from validated documents.
    pub fn new(
        revision: u64,
        configs: Vec<TenantConfig>,
        default_tenant: Option<String>,
    ) -> Snapshot {
        let mut s = Snapshot {
            revision,
            default_tenant,
            ..Default::default()
        };
        for cfg in configs {
            let t = Arc::new(Tenant::new(cfg));
            for d in &t.config.domains {
                s.by_domain.insert(d.to_ascii_lowercase(), t.clone());
            }
            for n in &t.config.numbers {
                s.by_number.insert(n.number.clone(), t.clone());
            }
            s.tenants.insert(t.config.id.clone(), t);
        }
        s
    }

    /// The same snapshot, knowing each tenant's revision at the cluster's configuration
    /// authority.
    pub fn with_source_revisions(mut self, revisions: HashMap<String, u64>) -> Snapshot {
        self.source_revisions = revisions;
        self
    }

    /// Tenant `id`'s revision at the cluster's configuration authority, if it came from there.
    /// A write based on this snapshot's document names it, so a change made meanwhile on
    /// another node makes the write fail instead of being overwritten.
    pub fn source_revision_of(&self, id: &str) -> Option<u64> {
        self.source_revisions.get(id).copied()
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// All tenants.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }

    /// The tenant answering for SIP domain `host`.
    pub fn by_domain(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.by_domain.get(&host.to_ascii_lowercase())
    }

    /// The tenant owning DID `number`.
    pub fn by_number(&self, number: &str) -> Option<&Arc<Tenant>> {
        self.by_number.get(&normalize_number(number))
    }

    /// The `tenant.default` tenant, used for IP-address hosts and unknown domains.
    pub fn default_tenant(&self) -> Option<&Arc<Tenant>> {
        self.default_tenant
            .as_deref()
            .and_then(|id| self.tenants.get(id))
    }

    /// Resolves the tenant for a request: by domain, then by DID, then the default.
    pub fn resolve(&self, host: Option<&str>, user: Option<&str>) -> Option<&Arc<Tenant>> {
        host.and_then(|h| self.by_domain(h))
            .or_else(|| {
                user.filter(|u| u.chars().filter(|c| c.is_ascii_digit()).count() >= 6)
                    .and_then(|u| self.by_number(u))
            })
            .or_else(|| self.default_tenant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let net: IpAddr = "10.1.0.0".parse().expect("ip");
        assert!(ip_in("10.1.200.3".parse().expect("ip"), net, 16));
        assert!(!ip_in("10.2.0.1".parse().expect("ip"), net, 16));
        assert!(ip_in("::ffff:10.1.0.9".parse().expect("ip"), net, 16));
        assert!(ip_in(
            "127.0.0.1".parse().expect("ip"),
            "127.0.0.1".parse().expect("ip"),
            32
        ));
    }

    #[test]
    fn number_normalization() {
        assert_eq!(normalize_number("+1 (555) 0100"), "+15550100");
        assert_eq!(normalize_number("15550100"), "+15550100");
    }
}

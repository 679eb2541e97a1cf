//! The write side: tenant documents in the local database, versioned by a revision number, and
//! the live [`Snapshot`] swapped atomically after each change.

use super::model::TenantConfig;
use super::snapshot::{Snapshot, SnapshotCell};
use super::validate::{validate, ValidationError, ValidationErrors};
use crate::localdb::{LocalDb, LocalDbError};
use std::sync::{Arc, Mutex};

/// Why a change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantStoreError {
    /// The document is invalid; each error names its path.
    #[error("invalid tenant: {0}")]
    Invalid(#[from] ValidationErrors),
    /// The local database failed.
    #[error(transparent)]
    Db(#[from] LocalDbError),
    /// No such tenant.
    #[error("no tenant {0}")]
    NotFound(String),
}

impl From<sled::Error> for TenantStoreError {
    fn from(e: sled::Error) -> Self {
        TenantStoreError::Db(LocalDbError::Sled(e))
    }
}

/// Tenant documents plus the current snapshot.
pub struct TenantStore {
    db: LocalDb,
    tenants: sled::Tree,
    meta: sled::Tree,
    current: SnapshotCell,
    default_tenant: Option<String>,
    /// Serialises writers so revision numbers and snapshots are built in order.
    write_lock: Mutex<()>,
    /// The node's own addresses, which trunks may not point at (see [`Self::set_node_addresses`]).
    node_addresses: Mutex<NodeAddresses>,
}

/// The node's addresses, for refusing trunks that would point back at it.
#[derive(Debug, Clone, Default)]
struct NodeAddresses {
    ips: Vec<std::net::IpAddr>,
    allow_local_trunks: bool,
}

const REVISION_KEY: &[u8] = b"revision";

impl TenantStore {
    /// Opens the store and builds the snapshot from what is on disk.
    pub fn open(
        db: LocalDb,
        default_tenant: Option<String>,
    ) -> Result<TenantStore, TenantStoreError> {
        let tenants = db.tree("tenants")?;
        let meta = db.tree("tenant_meta")?;
        let store = TenantStore {
            db,
            tenants,
            meta,
            current: SnapshotCell::default(),
            default_tenant,
            write_lock: Mutex::new(()),
            node_addresses: Mutex::new(NodeAddresses::default()),
        };
        store.rebuild()?;
        Ok(store)
    }

    /// The node's own addresses (besides loopback): trunks pointing at them are refused unless
    /// `allow_local_trunks` (a provider or test peer on this machine).
    pub fn set_node_addresses(&self, ips: Vec<std::net::IpAddr>, allow_local_trunks: bool) {
        let mut n = self
            .node_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n = NodeAddresses {
            ips,
            allow_local_trunks,
        };
    }

    /// Trunks must reach a provider, not this node (a tenant could otherwise make the node
    /// call itself, or reach services bound to loopback).
    fn check_trunks_leave_the_node(&self, cfg: &TenantConfig) -> Vec<ValidationError> {
        let n = self
            .node_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if n.allow_local_trunks {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for (i, t) in cfg.trunks.iter().enumerate() {
            let ip = t
                .address
                .as_deref()
                .and_then(crate::sip::headers::split_host_port)
                .and_then(|(h, _)| h.parse::<std::net::IpAddr>().ok());
            if let Some(ip) = ip.filter(|ip| ip.is_loopback() || n.ips.contains(ip)) {
                errors.push(ValidationError {
                    path: format!("trunks.{i}.address"),
                    message: format!(
                        "{ip} is this node's own address (the operator can allow it with tenant.allow_local_trunks)"
                    ),
                });
            }
        }
        errors
    }

    /// The current snapshot. Cheap: one atomic load and a reference count.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load()
    }

    /// The cell this store swaps its snapshots into, for readers that must not see the store
    /// itself (the SIP endpoint).
    pub fn snapshots(&self) -> SnapshotCell {
        self.current.clone()
    }

    /// Current revision.
    pub fn revision(&self) -> u64 {
        self.current.revision()
    }

    fn read_revision(&self) -> Result<u64, TenantStoreError> {
        Ok(self
            .meta
            .get(REVISION_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    fn load_all(&self) -> Result<Vec<TenantConfig>, TenantStoreError> {
        let mut out = Vec::new();
        for item in self.tenants.iter() {
            let (k, v) = item?;
            let cfg: TenantConfig =
                serde_json::from_slice(&v).map_err(|source| LocalDbError::Decode {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })?;
            out.push(cfg);
        }
        Ok(out)
    }

    fn rebuild(&self) -> Result<(), TenantStoreError> {
        let snap = Snapshot::new(
            self.read_revision()?,
            self.load_all()?,
            self.default_tenant.clone(),
        );
        self.current.store(snap);
        Ok(())
    }

    /// A tenant's stored document.
    pub fn get(&self, id: &str) -> Result<Option<TenantConfig>, TenantStoreError> {
        Ok(self.snapshot().tenant(id).map(|t| t.config.clone()))
    }

    /// Ids of all tenants.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .snapshot()
            .tenants()
            .map(|t| t.config.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Validates and stores a tenant (creating or replacing it); returns the new revision.
    /// Clear-text secrets in `cfg` are hashed first.
    pub fn put(&self, mut cfg: TenantConfig) -> Result<u64, TenantStoreError> {
        cfg.hash_secrets();
        validate(&cfg)?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_cross_tenant(&cfg)?;
        let value = serde_json::to_vec(&cfg).map_err(|source| LocalDbError::Decode {
            key: cfg.id.clone(),
            source,
        })?;
        let revision = self.read_revision()? + 1;
        self.tenants.insert(cfg.id.as_bytes(), value)?;
        self.meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
        self.db.flush()?;
        self.rebuild()?;
        tracing::info!(tenant = %cfg.id, revision, "tenant stored");
        Ok(revision)
    }

    /// Deletes a tenant; returns the new revision.
    pub fn delete(&self, id: &str) -> Result<u64, TenantStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.tenants.remove(id.as_bytes())?.is_none() {
            return Err(TenantStoreError::NotFound(id.to_string()));
        }
        let revision = self.read_revision()? + 1;
        self.meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
        self.db.flush()?;
        self.rebuild()?;
        tracing::info!(tenant = %id, revision, "tenant deleted");
        Ok(revision)
    }

    /// Domains and DIDs must each belong to one tenant only.
    fn check_cross_tenant(&self, cfg: &TenantConfig) -> Result<(), TenantStoreError> {
        let snap = self.snapshot();
        let mut errors = self.check_trunks_leave_the_node(cfg);
        for (i, d) in cfg.domains.iter().enumerate() {
            if let Some(t) = snap.by_domain(d).filter(|t| t.id() != cfg.id) {
                errors.push(ValidationError {
                    path: format!("domains.{i}"),
                    message: format!("domain {d} belongs to another tenant ({})", t.id()),
                });
            }
        }
        // A realm names whose passwords a challenge asks for: two tenants sharing one (or one
        // tenant's realm being another's domain) would let one tenant's users be challenged
        // as the other's.
        let realm = cfg.realm();
        for t in snap.tenants().filter(|t| t.id() != cfg.id) {
            if t.realm() == realm || t.config.domains.iter().any(|d| d == realm) {
                errors.push(ValidationError {
                    path: "realm".into(),
                    message: format!("realm {realm} is another tenant's ({})", t.id()),
                });
            }
            for (i, d) in cfg.domains.iter().enumerate() {
                if t.realm() == d {
                    errors.push(ValidationError {
                        path: format!("domains.{i}"),
                        message: format!("domain {d} is another tenant's realm ({})", t.id()),
                    });
                }
            }
        }
        for (i, n) in cfg.numbers.iter().enumerate() {
            if snap.by_number(&n.number).is_some_and(|t| t.id() != cfg.id) {
                errors.push(ValidationError {
                    path: format!("numbers.{i}.number"),
                    message: format!("number {} belongs to another tenant", n.number),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_serves_the_snapshot_on_disk_and_revisions_increase() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store =
                TenantStore::open(LocalDb::open(dir.path()).expect("db"), None).expect("store");
            assert_eq!(store.revision(), 0);
            let rev = store
                .put(crate::server::demo_tenant().expect("demo"))
                .expect("put");
            assert_eq!(rev, 1);
            let before = store.snapshot();
            let mut cfg = store.get("demo").expect("get").expect("demo");
            cfg.name = "Renamed".into();
            assert_eq!(store.put(cfg).expect("put"), 2);
            // A snapshot taken before the change is untouched by it.
            assert_eq!(
                before.tenant("demo").expect("demo").config.name,
                "Demo tenant"
            );
        }
        let store = TenantStore::open(LocalDb::open(dir.path()).expect("db"), Some("demo".into()))
            .expect("reopen");
        assert_eq!(store.revision(), 2);
        let snap = store.snapshot();
        assert_eq!(
            snap.default_tenant().expect("default").config.name,
            "Renamed"
        );
        assert!(snap.by_domain("DEMO.switchyard.test").is_some());
        assert!(snap.by_number("15550100").is_some());
    }

    #[test]
    fn invalid_documents_and_cross_tenant_conflicts_are_refused_with_paths() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = TenantStore::open(LocalDb::open(dir.path()).expect("db"), None).expect("store");
        store
            .put(crate::server::demo_tenant().expect("demo"))
            .expect("put");
        let mut other = crate::server::demo_tenant().expect("demo");
        other.id = "other".into();
        let err = store
            .put(other.clone())
            .expect_err("same domain and numbers");
        let text = err.to_string();
        assert!(
            text.contains(
                "domains.0: domain demo.switchyard.test belongs to another tenant (demo)"
            ),
            "{text}"
        );
        assert!(text.contains("numbers.0.number"), "{text}");
        other.domains = vec!["other.example".into()];
        other.numbers.clear();
        other.ivrs.get_mut("main").expect("main").routes[0].target =
            crate::tenant::model::Target::User {
                extension: "107".into(),
            };
        other.users[1].extension = "100".into();
        let text = store.put(other).expect_err("invalid").to_string();
        assert!(
            text.contains("ivrs.main.routes.0: unknown user 107"),
            "{text}"
        );
        assert!(
            text.contains("users.1.extension: duplicate extension 100"),
            "{text}"
        );
        assert_eq!(store.revision(), 1, "a refused document changes nothing");
    }

    #[test]
    fn menus_without_exit_are_refused() {
        use crate::tenant::model::{DigitRoute, IvrMenu, Target};
        let mut cfg = crate::server::demo_tenant().expect("demo");
        let menu = |to: &str| IvrMenu {
            name: String::new(),
            prompts: vec![],
            routes: vec![DigitRoute {
                digits: "1".into(),
                target: Target::Ivr { menu: to.into() },
            }],
            timeout_secs: 5,
            max_retries: 1,
            invalid_prompt: None,
            on_exhausted: Target::Ivr { menu: to.into() },
            schedule: vec![],
        };
        cfg.ivrs.insert("a".into(), menu("b"));
        cfg.ivrs.insert("b".into(), menu("a"));
        let err = crate::tenant::validate::validate(&cfg).expect_err("loop");
        assert!(
            err.to_string().contains("ivrs.a: menu loop without exit"),
            "{err}"
        );
    }
}

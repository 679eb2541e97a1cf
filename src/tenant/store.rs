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
    /// Tenant id → its revision at the cluster's configuration authority (see
    /// [`Self::apply_replicated`]); a tenant written on this node only has none.
    sources: sled::Tree,
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
/// The last revision of the cluster's configuration authority applied here.
const SOURCE_REVISION_KEY: &[u8] = b"source_revision";

/// What became of a change read from the cluster's configuration authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOutcome {
    /// The document was stored and the snapshot swapped.
    Stored,
    /// The tenant was removed and the snapshot swapped.
    Deleted,
    /// At or before the last revision applied (a watch that started over): nothing to do.
    AlreadyApplied,
    /// The document failed validation here: nothing of it was applied, the revision counts
    /// as seen. The reason is for the log.
    Rejected(String),
}

fn be_u64(v: Option<sled::IVec>) -> Option<u64> {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
}

impl TenantStore {
    /// Opens the store and builds the snapshot from what is on disk.
    pub fn open(
        db: LocalDb,
        default_tenant: Option<String>,
    ) -> Result<TenantStore, TenantStoreError> {
        let tenants = db.tree("tenants")?;
        let meta = db.tree("tenant_meta")?;
        let sources = db.tree("tenant_sources")?;
        let store = TenantStore {
            db,
            tenants,
            meta,
            sources,
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
        Ok(be_u64(self.meta.get(REVISION_KEY)?).unwrap_or(0))
    }

    /// The last revision of the cluster's configuration authority applied here (0: none).
    pub fn source_revision(&self) -> Result<u64, TenantStoreError> {
        Ok(be_u64(self.meta.get(SOURCE_REVISION_KEY)?).unwrap_or(0))
    }

    fn load_sources(&self) -> Result<std::collections::HashMap<String, u64>, TenantStoreError> {
        let mut out = std::collections::HashMap::new();
        for item in self.sources.iter() {
            let (k, v) = item?;
            if let Some(rev) = be_u64(Some(v)) {
                out.insert(String::from_utf8_lossy(&k).into_owned(), rev);
            }
        }
        Ok(out)
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
        )
        .with_source_revisions(self.load_sources()?);
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
    ///
    /// In a cluster this is a write on this node only (the tenant is then pushed to the
    /// configuration authority if it has no copy yet, see [`Self::local_only`]); the admin API
    /// writes through the authority instead.
    pub fn put(&self, cfg: TenantConfig) -> Result<u64, TenantStoreError> {
        let (cfg, value) = self.prepare(cfg)?;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_cross_tenant(&cfg)?;
        let revision = self.read_revision()? + 1;
        self.tenants.insert(cfg.id.as_bytes(), value)?;
        self.sources.remove(cfg.id.as_bytes())?;
        self.meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
        self.db.flush()?;
        self.rebuild()?;
        tracing::info!(tenant = %cfg.id, revision, "tenant stored");
        Ok(revision)
    }

    /// Hashes clear-text secrets and checks a document as [`Self::put`] would, without storing
    /// it; returns it with the JSON to store. A cluster writes that JSON to its configuration
    /// authority, and every node (this one included) applies it from there.
    pub fn prepare(
        &self,
        mut cfg: TenantConfig,
    ) -> Result<(TenantConfig, Vec<u8>), TenantStoreError> {
        cfg.hash_secrets();
        validate(&cfg)?;
        self.check_cross_tenant(&cfg)?;
        let value = serde_json::to_vec(&cfg).map_err(|source| LocalDbError::Decode {
            key: cfg.id.clone(),
            source,
        })?;
        Ok((cfg, value))
    }

    /// Tenants this node holds that did not come from the cluster's configuration authority
    /// (written before the node joined a cluster, by `tenant import`, or `--demo`).
    pub fn local_only(&self) -> Result<Vec<(String, Vec<u8>)>, TenantStoreError> {
        let mut out = Vec::new();
        for item in self.tenants.iter() {
            let (k, v) = item?;
            if !self.sources.contains_key(&k)? {
                out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Applies a change read from the cluster's configuration authority at `revision` (its
    /// sequence: it grows with every change to any tenant): `doc` is the tenant's JSON, or
    /// `None` when it was deleted. The document came over the network and is checked as an
    /// API write would be: a document that fails is logged by the caller and counted, never
    /// applied in part, and its revision still counts as seen so the node moves on. Every node
    /// applies the same changes in the same order, so they refuse the same ones.
    pub fn apply_replicated(
        &self,
        id: &str,
        doc: Option<&[u8]>,
        revision: u64,
    ) -> Result<ReplicaOutcome, TenantStoreError> {
        self.apply_one(id, doc, revision, true)
    }

    /// Takes the authority's latest version of one tenant (read on its own, not from the
    /// watch) in place of this node's: for a tenant the node pushed and found there already.
    /// The last revision applied stays where it is, so the watch still sees every change.
    pub fn adopt_replicated(
        &self,
        id: &str,
        doc: Option<&[u8]>,
        revision: u64,
    ) -> Result<ReplicaOutcome, TenantStoreError> {
        self.apply_one(id, doc, revision, false)
    }

    fn apply_one(
        &self,
        id: &str,
        doc: Option<&[u8]>,
        revision: u64,
        advance: bool,
    ) -> Result<ReplicaOutcome, TenantStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if advance && revision <= self.source_revision()? {
            return Ok(ReplicaOutcome::AlreadyApplied);
        }
        let checked = match doc {
            None => Ok(None),
            Some(bytes) => self.check_replicated(id, bytes).map(Some),
        };
        let outcome = match checked {
            Err(reason) => {
                // The bad document stays the key's latest at the authority: a write that
                // replaces it must name its revision.
                self.sources
                    .insert(id.as_bytes(), &revision.to_be_bytes())?;
                ReplicaOutcome::Rejected(reason)
            }
            Ok(None) => {
                self.tenants.remove(id.as_bytes())?;
                self.sources.remove(id.as_bytes())?;
                ReplicaOutcome::Deleted
            }
            Ok(Some(bytes)) => {
                self.tenants.insert(id.as_bytes(), bytes)?;
                self.sources
                    .insert(id.as_bytes(), &revision.to_be_bytes())?;
                ReplicaOutcome::Stored
            }
        };
        if advance {
            self.meta
                .insert(SOURCE_REVISION_KEY, &revision.to_be_bytes())?;
        }
        if !matches!(outcome, ReplicaOutcome::Rejected(_)) {
            let local = self.read_revision()? + 1;
            self.meta.insert(REVISION_KEY, &local.to_be_bytes())?;
        }
        self.db.flush()?;
        self.rebuild()?;
        Ok(outcome)
    }

    /// A replicated document as bytes to store, or why it is refused.
    fn check_replicated(&self, id: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let cfg: TenantConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("not a tenant document: {e}"))?;
        if cfg.id != id {
            return Err(format!("the document's id {:?} is not its key", cfg.id));
        }
        // Writers hash secrets before they publish; hashing here would give each node its
        // own salt, and a different document.
        if cfg.users.iter().any(|u| u.password.is_some())
            || cfg.mailboxes.iter().any(|m| m.pin.is_some())
        {
            return Err("a clear-text password or PIN (writers publish hashes)".into());
        }
        validate(&cfg).map_err(|e| e.to_string())?;
        self.check_cross_tenant(&cfg).map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }

    /// Forgets every revision of the configuration authority (its bucket was made anew): the
    /// node reads it again from the start, and pushes what the bucket lacks.
    pub fn reset_source(&self) -> Result<(), TenantStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sources.clear()?;
        self.meta.remove(SOURCE_REVISION_KEY)?;
        self.db.flush()?;
        self.rebuild()
    }

    /// Deletes a tenant; returns the new revision.
    pub fn delete(&self, id: &str) -> Result<u64, TenantStoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.tenants.remove(id.as_bytes())?.is_none() {
            return Err(TenantStoreError::NotFound(id.to_string()));
        }
        self.sources.remove(id.as_bytes())?;
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

    fn json(cfg: &TenantConfig) -> Vec<u8> {
        serde_json::to_vec(cfg).expect("json")
    }

    #[test]
    fn replicated_changes_apply_in_order_once_and_bad_ones_change_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = TenantStore::open(LocalDb::open(dir.path()).expect("db"), None).expect("store");
        let (demo, _) = store
            .prepare(crate::server::demo_tenant().expect("demo"))
            .expect("prepare");
        assert_eq!(
            store
                .apply_replicated("demo", Some(&json(&demo)), 3)
                .expect("apply"),
            ReplicaOutcome::Stored
        );
        assert_eq!(store.source_revision().expect("rev"), 3);
        assert_eq!(store.snapshot().source_revision_of("demo"), Some(3));
        // A watch that starts over delivers old revisions again: nothing happens.
        assert_eq!(
            store.apply_replicated("demo", None, 2).expect("apply"),
            ReplicaOutcome::AlreadyApplied
        );
        assert!(store.snapshot().tenant("demo").is_some());

        // Hostile or broken documents are refused whole; the revision still counts.
        let mut renamed = demo.clone();
        renamed.name = "Renamed".into();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("demo", b"{not json".to_vec()),
            ("other", json(&renamed)),
            ("demo", {
                let mut bad = serde_json::to_value(&renamed).expect("value");
                bad["users"][0]["password"] = serde_json::json!("clear-text");
                serde_json::to_vec(&bad).expect("json")
            }),
            ("demo", {
                let mut bad = renamed.clone();
                bad.users[1].extension = bad.users[0].extension.clone();
                json(&bad)
            }),
        ];
        for (i, (key, doc)) in cases.iter().enumerate() {
            let rev = 4 + i as u64;
            let outcome = store.apply_replicated(key, Some(doc), rev).expect("apply");
            assert!(
                matches!(outcome, ReplicaOutcome::Rejected(_)),
                "case {i}: {outcome:?}"
            );
            assert_eq!(store.source_revision().expect("rev"), rev);
        }
        let snap = store.snapshot();
        assert_eq!(
            snap.tenant("demo").expect("demo").config.name,
            "Demo tenant"
        );
        assert!(snap.tenant("other").is_none());
        // The refused document is the key's latest at the authority: a write replacing it
        // must name its revision.
        assert_eq!(snap.source_revision_of("demo"), Some(7));

        // Another tenant claiming demo's domain is refused on every node alike.
        let mut thief = renamed.clone();
        thief.id = "thief".into();
        thief.numbers.clear();
        thief.realm = Some("thief.example".into());
        let outcome = store
            .apply_replicated("thief", Some(&json(&thief)), 8)
            .expect("apply");
        assert!(
            matches!(&outcome, ReplicaOutcome::Rejected(why) if why.contains("belongs to another tenant")),
            "{outcome:?}"
        );

        assert_eq!(
            store
                .apply_replicated("demo", Some(&json(&renamed)), 9)
                .expect("apply"),
            ReplicaOutcome::Stored
        );
        assert_eq!(
            store.get("demo").expect("get").expect("demo").name,
            "Renamed"
        );
        assert_eq!(
            store.apply_replicated("demo", None, 10).expect("apply"),
            ReplicaOutcome::Deleted
        );
        assert!(store.get("demo").expect("get").is_none());
        drop(store);
        let store =
            TenantStore::open(LocalDb::open(dir.path()).expect("db"), None).expect("reopen");
        assert_eq!(
            store.source_revision().expect("rev"),
            10,
            "kept across restarts"
        );
    }

    #[test]
    fn local_writes_are_local_only_until_the_cluster_has_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = TenantStore::open(LocalDb::open(dir.path()).expect("db"), None).expect("store");
        store
            .put(crate::server::demo_tenant().expect("demo"))
            .expect("put");
        let local = store.local_only().expect("local");
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].0, "demo");
        // The cluster's copy (read on its own) replaces it without moving the watch position.
        let mut theirs: TenantConfig = serde_json::from_slice(&local[0].1).expect("json");
        theirs.name = "Cluster's".into();
        assert_eq!(
            store
                .adopt_replicated("demo", Some(&json(&theirs)), 42)
                .expect("adopt"),
            ReplicaOutcome::Stored
        );
        assert_eq!(store.source_revision().expect("rev"), 0);
        assert!(store.local_only().expect("local").is_empty());
        assert_eq!(store.snapshot().source_revision_of("demo"), Some(42));
        assert_eq!(
            store.get("demo").expect("get").expect("demo").name,
            "Cluster's"
        );
        // A local write makes it local-only again; a reset forgets every cluster revision.
        store.put(theirs).expect("put");
        assert_eq!(store.local_only().expect("local").len(), 1);
        store.reset_source().expect("reset");
        assert_eq!(store.snapshot().source_revision_of("demo"), None);
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

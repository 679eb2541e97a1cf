//! `switchyard backup FILE` and `switchyard restore FILE`: the node's configuration (tenant
//! documents with their revision, and the admin API's hashed keys) and, when the history
//! store is the embedded SQLite, a consistent copy of it, in one tar file:
//!
//! - `manifest.json`: [`Manifest`] (format and schema versions, what is inside);
//! - `config.json`: the local database's configuration trees, entry by entry;
//! - `history.sqlite`: the history (SQLite only; `VACUUM INTO`, so it is consistent while
//!   the server writes). A PostgreSQL history is the database's own business (`pg_dump`).
//!
//! Audio lives in blob storage and is not copied: object stores have their own versioning and
//! replication, and a backup of the local folder is a plain file copy.
//!
//! Restore refuses a file written by a newer schema (configuration or history), and a data
//! directory whose database a running server holds. The file holds secrets (digest hashes,
//! trunk passwords): it is created readable by its owner only.

use crate::history::{schema_version, HistoryError, HistoryStore};
use crate::localdb::{LocalDb, LocalDbError};
use crate::tenant::TenantConfig;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use std::io::Read;
use std::path::Path;

/// Version of the configuration layout in `config.json` this build writes and reads.
pub const CONFIG_SCHEMA: u32 = 1;

/// The local database trees a backup carries (registrations are left: phones re-register).
pub const TREES: &[&str] = &["tenants", "tenant_meta", "api_keys"];

const FORMAT: &str = "switchyard-backup";

/// Errors of backup and restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The local database.
    #[error(transparent)]
    Db(#[from] LocalDbError),
    /// The history store.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Not a backup, or a damaged one.
    #[error("not a usable Switchyard backup: {0}")]
    Bad(String),
    /// Written by a newer Switchyard.
    #[error("the backup's {what} schema is version {found}; this build knows up to {known}: restore it with a newer switchyard")]
    Newer {
        /// Which schema.
        what: &'static str,
        /// In the file.
        found: i64,
        /// This build.
        known: i64,
    },
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `switchyard-backup`.
    pub format: String,
    /// The build that wrote it.
    pub switchyard_version: String,
    /// When, unix seconds.
    pub created_unix: u64,
    /// [`CONFIG_SCHEMA`] of the writer.
    pub config_schema: u32,
    /// History schema version in `history.sqlite`, when it is included.
    pub history_schema: Option<i64>,
    /// Tenant ids.
    pub tenants: Vec<String>,
    /// `sqlite` (included) or `postgres` (not included).
    pub history_backend: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct TreeDump {
    name: String,
    /// (key, value), hex-encoded.
    entries: Vec<(String, String)>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn append(tar: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(unix_now());
    h.set_cksum();
    tar.append_data(&mut h, name, bytes)
}

/// Writes a backup of `db` (and `history` when it is SQLite) to `dest`.
pub async fn create(
    db: &LocalDb,
    history: &HistoryStore,
    dest: &Path,
) -> Result<Manifest, BackupError> {
    let mut trees = Vec::new();
    let mut tenants = Vec::new();
    for name in TREES {
        let tree = db.tree(name)?;
        let mut entries = Vec::new();
        for item in tree.iter() {
            let (k, v) = item.map_err(LocalDbError::from)?;
            if *name == "tenants" {
                tenants.push(String::from_utf8_lossy(&k).into_owned());
            }
            entries.push((hex::encode(&k), hex::encode(&v)));
        }
        trees.push(TreeDump {
            name: name.to_string(),
            entries,
        });
    }
    let sqlite = history.backend() == crate::history::Backend::Sqlite;
    let tmp_db = dest.with_extension("history-tmp.sqlite");
    let _ = std::fs::remove_file(&tmp_db);
    if sqlite {
        history.snapshot_sqlite(&tmp_db).await?;
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        switchyard_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: unix_now(),
        config_schema: CONFIG_SCHEMA,
        history_schema: sqlite.then(schema_version),
        tenants,
        history_backend: if sqlite { "sqlite" } else { "postgres" }.into(),
    };
    let tmp = dest.with_extension("partial");
    let result = (|| -> Result<(), BackupError> {
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        let mut tar = tar::Builder::new(file);
        let m = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        append(&mut tar, "manifest.json", &m)?;
        let c = serde_json::to_vec(&trees).map_err(std::io::Error::other)?;
        append(&mut tar, "config.json", &c)?;
        if sqlite {
            let mut f = std::fs::File::open(&tmp_db)?;
            tar.append_file("history.sqlite", &mut f)?;
        }
        let f = tar.into_inner()?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp_db);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| manifest)
}

/// The parts of a backup file.
struct Contents {
    manifest: Manifest,
    trees: Vec<TreeDump>,
    history: Option<Vec<u8>>,
}

fn read(file: &Path) -> Result<Contents, BackupError> {
    let mut tar = tar::Archive::new(std::fs::File::open(file)?);
    let (mut manifest, mut config, mut history) = (None, None, None);
    for entry in tar.entries().map_err(|e| BackupError::Bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| BackupError::Bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| BackupError::Bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| BackupError::Bad(e.to_string()))?;
        match name.as_str() {
            "manifest.json" => manifest = Some(bytes),
            "config.json" => config = Some(bytes),
            "history.sqlite" => history = Some(bytes),
            _ => {}
        }
    }
    let manifest: Manifest = serde_json::from_slice(
        &manifest.ok_or_else(|| BackupError::Bad("no manifest.json".into()))?,
    )
    .map_err(|e| BackupError::Bad(format!("manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BackupError::Bad(format!("format is {}", manifest.format)));
    }
    if i64::from(manifest.config_schema) > i64::from(CONFIG_SCHEMA) {
        return Err(BackupError::Newer {
            what: "configuration",
            found: manifest.config_schema.into(),
            known: CONFIG_SCHEMA.into(),
        });
    }
    if let Some(h) = manifest.history_schema.filter(|h| *h > schema_version()) {
        return Err(BackupError::Newer {
            what: "history",
            found: h,
            known: schema_version(),
        });
    }
    let trees: Vec<TreeDump> =
        serde_json::from_slice(&config.ok_or_else(|| BackupError::Bad("no config.json".into()))?)
            .map_err(|e| BackupError::Bad(format!("config.json: {e}")))?;
    Ok(Contents {
        manifest,
        trees,
        history,
    })
}

/// Domains, realms and numbers each belong to one restored tenant (what the store enforces
/// on every write).
fn check_tenants_apart(tenants: &[TenantConfig]) -> Result<(), BackupError> {
    let mut owner: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for t in tenants {
        let names = t
            .domains
            .iter()
            .map(|d| format!("domain or realm {d}"))
            .chain(std::iter::once(format!("domain or realm {}", t.realm())))
            .chain(t.numbers.iter().map(|n| format!("number {}", n.number)));
        let mut own = std::collections::HashSet::new();
        for name in names {
            if !own.insert(name.clone()) {
                continue; // a tenant's realm is usually its first domain
            }
            if let Some(other) = owner.insert(name.clone(), &t.id) {
                return Err(BackupError::Bad(format!(
                    "{name} belongs to tenants {other} and {}",
                    t.id
                )));
            }
        }
    }
    Ok(())
}

/// A tree's name and its (key, value) entries, decoded from a backup.
type DecodedTree = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Replaces the trees' contents in one sled transaction: a crash or an error part way leaves
/// the old configuration whole, never a mix of old and new trees.
fn replace_trees(db: &LocalDb, decoded: Vec<DecodedTree>) -> Result<(), BackupError> {
    use sled::transaction::{ConflictableTransactionError, TransactionError};
    let mut trees = Vec::new();
    let mut old_keys = Vec::new();
    for (name, _) in &decoded {
        let tree = db.tree(name)?;
        let keys: Vec<sled::IVec> = tree
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(LocalDbError::from)?;
        old_keys.push(keys);
        trees.push(tree);
    }
    let result: Result<(), TransactionError<()>> = trees.as_slice().transaction(|views| {
        for ((view, keys), (_, entries)) in views.iter().zip(&old_keys).zip(&decoded) {
            for k in keys {
                view.remove(k.clone())?;
            }
            for (k, v) in entries {
                view.insert(k.as_slice(), v.as_slice())?;
            }
        }
        Ok::<(), ConflictableTransactionError<()>>(())
    });
    match result {
        Ok(()) => {}
        Err(TransactionError::Storage(e)) => return Err(LocalDbError::from(e).into()),
        Err(TransactionError::Abort(())) => {
            return Err(BackupError::Bad("restore transaction aborted".into()))
        }
    }
    db.flush()?;
    Ok(())
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// The history database was replaced.
    pub history_restored: bool,
}

/// Replaces the configuration in `db` with the backup's and, when `sqlite_history` names the
/// embedded history file and the backup has one, that file. Everything is checked before
/// anything is written.
pub fn restore(
    file: &Path,
    db: &LocalDb,
    sqlite_history: Option<&Path>,
) -> Result<Restored, BackupError> {
    let c = read(file)?;
    let mut decoded = Vec::new();
    let mut tenants = Vec::new();
    for t in &c.trees {
        if !TREES.contains(&t.name.as_str()) {
            return Err(BackupError::Bad(format!("unknown tree {}", t.name)));
        }
        let mut entries = Vec::new();
        for (k, v) in &t.entries {
            let k = hex::decode(k).map_err(|e| BackupError::Bad(e.to_string()))?;
            let v = hex::decode(v).map_err(|e| BackupError::Bad(e.to_string()))?;
            if t.name == "tenants" {
                let cfg = serde_json::from_slice::<TenantConfig>(&v).map_err(|e| {
                    BackupError::Bad(format!("tenant {}: {e}", String::from_utf8_lossy(&k)))
                })?;
                // The same rules as any write: a hand-edited or hostile backup cannot bring
                // in a tenant the API would refuse.
                crate::tenant::validate::validate(&cfg).map_err(|e| {
                    BackupError::Bad(format!("tenant {}: {e}", String::from_utf8_lossy(&k)))
                })?;
                tenants.push(cfg);
            }
            entries.push((k, v));
        }
        decoded.push((t.name.clone(), entries));
    }
    check_tenants_apart(&tenants)?;
    if let Some(bytes) = &c.history {
        if !bytes.starts_with(b"SQLite format 3\0") {
            return Err(BackupError::Bad(
                "history.sqlite is not a SQLite file".into(),
            ));
        }
    }
    replace_trees(db, decoded)?;
    let mut history_restored = false;
    if let (Some(bytes), Some(path)) = (&c.history, sqlite_history) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("restoring");
        std::fs::write(&tmp, bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        std::fs::rename(&tmp, path)?;
        history_restored = true;
    }
    Ok(Restored {
        manifest: c.manifest,
        history_restored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{AuditEntry, HistoryOp};

    #[tokio::test]
    async fn backup_and_restore_round_trip_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(&a).unwrap();
        let db = LocalDb::open(&a).unwrap();
        let demo: TenantConfig =
            serde_json::from_str(crate::server::DEMO_TENANT).expect("demo tenant");
        let store = crate::tenant::TenantStore::open(db.clone(), None).unwrap();
        store.put(demo).unwrap();
        let hist_path = a.join("history.sqlite");
        let history = HistoryStore::open(&format!("sqlite://{}", hist_path.display()), 1).unwrap();
        history
            .apply(&[HistoryOp::Audit {
                tenant: "demo".into(),
                entry: AuditEntry {
                    id: "x1".into(),
                    at_unix: 5,
                    actor: "admin".into(),
                    action: "PUT".into(),
                    target: "/v1/tenants/demo".into(),
                    status: 200,
                },
            }])
            .await
            .unwrap();
        let file = dir.path().join("node.backup");
        let m = create(&db, &history, &file).await.unwrap();
        assert_eq!(m.tenants, vec!["demo".to_string()]);
        assert_eq!(m.history_schema, Some(schema_version()));
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "backup readable by its owner only");
        }
        history.close().await;
        drop(store);
        drop(db);

        // Into an empty data directory.
        let b = dir.path().join("b");
        std::fs::create_dir_all(&b).unwrap();
        let db_b = LocalDb::open(&b).unwrap();
        let hist_b = b.join("history.sqlite");
        let r = restore(&file, &db_b, Some(&hist_b)).unwrap();
        assert!(r.history_restored);
        let store_b = crate::tenant::TenantStore::open(db_b.clone(), None).unwrap();
        assert!(store_b.get("demo").unwrap().is_some());
        let history_b = HistoryStore::open(&format!("sqlite://{}", hist_b.display()), 1).unwrap();
        assert_eq!(history_b.audit("demo", 10).await.unwrap().len(), 1);

        // A file from a newer schema is refused before anything changes.
        let mut c = read(&file).unwrap();
        c.manifest.history_schema = Some(schema_version() + 1);
        let newer = dir.path().join("newer.backup");
        {
            let mut tar = tar::Builder::new(std::fs::File::create(&newer).unwrap());
            append(
                &mut tar,
                "manifest.json",
                &serde_json::to_vec(&c.manifest).unwrap(),
            )
            .unwrap();
            append(&mut tar, "config.json", b"[]").unwrap();
            tar.into_inner().unwrap();
        }
        let err = restore(&newer, &db_b, Some(&hist_b)).unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Newer {
                    what: "history",
                    ..
                }
            ),
            "{err}"
        );
        assert!(store_b.get("demo").unwrap().is_some());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(matches!(
            restore(&junk, &db_b, None),
            Err(BackupError::Bad(_))
        ));

        // A hand-edited backup whose tenant claims the node's address (or two tenants with one
        // domain) is refused as a whole: nothing of it is written.
        let c = read(&file).unwrap();
        let mut trees = c.trees.clone();
        let t = trees.iter_mut().find(|t| t.name == "tenants").unwrap();
        let (k, v) = t.entries[0].clone();
        let mut cfg: TenantConfig = serde_json::from_slice(&hex::decode(&v).unwrap()).unwrap();
        cfg.name = "Changed".into();
        let mut twin = cfg.clone();
        twin.id = "twin".into();
        t.entries.push((
            hex::encode("twin"),
            hex::encode(serde_json::to_vec(&twin).unwrap()),
        ));
        let twins = dir.path().join("twins.backup");
        let write = |path: &Path, trees: &Vec<TreeDump>| {
            let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
            append(
                &mut tar,
                "manifest.json",
                &serde_json::to_vec(&c.manifest).unwrap(),
            )
            .unwrap();
            append(&mut tar, "config.json", &serde_json::to_vec(trees).unwrap()).unwrap();
            tar.into_inner().unwrap();
        };
        write(&twins, &trees);
        let err = restore(&twins, &db_b, None).unwrap_err();
        assert!(err.to_string().contains("belongs to tenants"), "{err}");
        let t = trees.iter_mut().find(|t| t.name == "tenants").unwrap();
        t.entries.truncate(1);
        cfg.domains = vec!["127.0.0.1".into()];
        t.entries[0] = (k, hex::encode(serde_json::to_vec(&cfg).unwrap()));
        let bad = dir.path().join("bad.backup");
        write(&bad, &trees);
        assert!(matches!(
            restore(&bad, &db_b, None),
            Err(BackupError::Bad(_))
        ));
        let kept = crate::tenant::TenantStore::open(db_b.clone(), None).unwrap();
        assert_eq!(kept.get("demo").unwrap().unwrap().name, "Demo tenant");
        assert!(kept.get("twin").unwrap().is_none());
    }
}

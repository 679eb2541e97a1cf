//! Changes this node made that the cluster has not confirmed yet, kept on disk.
//!
//! A change made while NATS is away waits in [`publish_latest`](super::nats::publish_latest)'s
//! memory; if the process dies before NATS returns, it would be gone, and worse, the bucket's
//! older state would be applied over it when the node rejoins. The outbox keeps each waiting
//! change in a file (written whole, fsynced, renamed into place) until the bucket has it: on
//! start the node publishes what is left, and while a key waits here the bucket's version of
//! it is not applied (ours is newer). Only the latest change of a key is kept, so the file is
//! bounded by the number of keys this node changed while away. Changes are human actions
//! (a message saved or deleted), so a file write per change is cheap.

use super::nats::KeyChange;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why the outbox could not keep a change.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file could not be written or read.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// Waiting changes by bucket key (value `None`: a deletion).
#[derive(Clone)]
pub struct Outbox {
    path: PathBuf,
    waiting: Arc<Mutex<BTreeMap<String, Option<Vec<u8>>>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    key: String,
    /// Hex of the value; absent for a deletion.
    value: Option<String>,
}

impl Outbox {
    /// The outbox kept in `path` (what an earlier run left there is waiting again; an
    /// unreadable file is set aside, not fatal).
    pub fn open(path: impl Into<PathBuf>) -> Outbox {
        let path = path.into();
        let mut waiting = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Entry>>(&bytes) {
                Ok(entries) => {
                    for e in entries {
                        let value = match e.value.map(hex::decode) {
                            Some(Ok(v)) => Some(v),
                            Some(Err(_)) => continue,
                            None => None,
                        };
                        waiting.insert(e.key, value);
                    }
                }
                Err(e) => {
                    let aside = path.with_extension("unreadable");
                    tracing::error!(error = %e, file = %path.display(), "cluster outbox unreadable: set aside");
                    let _ = std::fs::rename(&path, aside);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "cluster outbox not read")
            }
        }
        Outbox {
            path,
            waiting: Arc::new(Mutex::new(waiting)),
        }
    }

    /// Keeps `change` until [`Self::published`] says the bucket has it. Returns once it is
    /// on disk.
    pub fn keep(&self, change: &KeyChange) -> Result<(), OutboxError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.insert(change.0.clone(), change.1.clone());
        self.write(&waiting)
    }

    /// The bucket has `change`: forget it, unless a newer change of the key waits.
    pub fn published(&self, change: &KeyChange) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.get(&change.0) == Some(&change.1) {
            waiting.remove(&change.0);
            if let Err(e) = self.write(&waiting) {
                // Left in the file: published again at the next start, which is harmless.
                tracing::warn!(error = %e, "cluster outbox not rewritten");
            }
        }
    }

    /// Whether a change of `key` waits (the bucket's version of it is older than ours).
    pub fn waits(&self, key: &str) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.contains_key(key)
    }

    /// Every waiting change.
    pub fn waiting(&self) -> Vec<KeyChange> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn write(&self, waiting: &BTreeMap<String, Option<Vec<u8>>>) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if waiting.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        }
        let entries: Vec<Entry> = waiting
            .iter()
            .map(|(key, value)| Entry {
                key: key.clone(),
                value: value.as_ref().map(hex::encode),
            })
            .collect();
        let json = serde_json::to_vec(&entries).map_err(|e| io(e.into()))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_changes_outlive_the_process_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        let o = Outbox::open(&path);
        let saved: KeyChange = ("t.31.32".into(), Some(b"{\"folder\":\"saved\"}".to_vec()));
        let deleted: KeyChange = ("t.31.33".into(), None);
        o.keep(&saved).unwrap();
        o.keep(&deleted).unwrap();
        // A new process finds both.
        let again = Outbox::open(&path);
        assert_eq!(again.waiting(), vec![saved.clone(), deleted.clone()]);
        assert!(again.waits("t.31.32") && !again.waits("t.31.34"));
        // A newer change of a key is not forgotten when the older one is published.
        let newer: KeyChange = ("t.31.32".into(), Some(b"{\"folder\":\"new\"}".to_vec()));
        again.keep(&newer).unwrap();
        again.published(&saved);
        assert!(again.waits("t.31.32"));
        again.published(&newer);
        again.published(&deleted);
        assert!(again.waiting().is_empty());
        assert!(!path.exists(), "nothing waits: no file");
        assert!(Outbox::open(&path).waiting().is_empty());
    }

    #[test]
    fn an_unreadable_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        std::fs::write(&path, b"{not json").unwrap();
        let o = Outbox::open(&path);
        assert!(o.waiting().is_empty());
        assert!(path.with_extension("unreadable").exists());
    }
}

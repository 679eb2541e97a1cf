//! Voicemail messages on local disk: `DIR/TENANT/MAILBOX/ID.wav` with `ID.json` beside it
//! (caller, time, duration, folder). The JSON is written last (fsynced, then renamed into
//! place), so a message is listed only once its audio is complete; a crash mid-recording leaves
//! a WAV without metadata, which listing ignores.
//!
//! These files are the node's working copy, which the voicemail apps, message waiting and the
//! admin API read. With a spool attached ([`MailStore::with_spool`]) every change is also sent
//! to the stores: the metadata (upserts and deletes) to the history store, the audio to blob
//! storage under [`crate::blob::voicemail_key`].

use crate::blob::voicemail_key;
use crate::history::HistoryOp;
use crate::spool::{BlobJob, Spool};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the message store.
#[derive(Debug, thiserror::Error)]
pub enum MailStoreError {
    /// File system error.
    #[error("voicemail store: {0}")]
    Io(#[from] std::io::Error),
    /// A metadata file that cannot be read.
    #[error("voicemail store: bad metadata {path}: {error}")]
    Metadata {
        /// File.
        path: String,
        /// Why.
        error: String,
    },
    /// No such message.
    #[error("no such message")]
    NotFound,
}

pub use crate::records::voicemail::{Folder, Message};

/// Counts for message waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// New messages.
    pub new: usize,
    /// Saved messages.
    pub saved: usize,
}

/// The message store. See the module documentation.
#[derive(Debug, Clone)]
pub struct MailStore {
    dir: PathBuf,
    spool: Option<Spool>,
}

fn safe(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'))
        && !part.starts_with('.')
}

impl MailStore {
    /// A store under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> MailStore {
        MailStore {
            dir: dir.into(),
            spool: None,
        }
    }

    /// Mirrors every change to the stores through `spool`.
    pub fn with_spool(mut self, spool: Spool) -> MailStore {
        self.spool = Some(spool);
        self
    }

    fn mirror(&self, tenant: &str, msg: &Message) {
        if let Some(sp) = &self.spool {
            sp.push_history(HistoryOp::Voicemail {
                tenant: tenant.to_string(),
                message: msg.clone(),
            });
        }
    }

    fn mailbox_dir(&self, tenant: &str, mailbox: &str) -> Result<PathBuf, MailStoreError> {
        if !safe(tenant) || !safe(mailbox) {
            return Err(MailStoreError::NotFound);
        }
        Ok(self.dir.join(tenant).join(mailbox))
    }

    /// Removes every mailbox of `tenant` on this node (the tenant was deleted; the stores are
    /// told separately).
    pub fn forget_tenant(&self, tenant: &str) {
        if safe(tenant) {
            let _ = std::fs::remove_dir_all(self.dir.join(tenant));
        }
    }

    /// Where a new message's audio goes; returns the new id and the path.
    pub fn new_message(
        &self,
        tenant: &str,
        mailbox: &str,
        unix: u64,
        call: u64,
    ) -> Result<(String, PathBuf), MailStoreError> {
        let dir = self.mailbox_dir(tenant, mailbox)?;
        std::fs::create_dir_all(&dir)?;
        let id = format!("{unix}-{call}-{:04x}", rand::random::<u16>());
        let path = dir.join(format!("{id}.wav"));
        Ok((id, path))
    }

    /// Records a finished message's metadata (the audio is already written).
    pub fn commit(&self, tenant: &str, msg: &Message) -> Result<(), MailStoreError> {
        let dir = self.mailbox_dir(tenant, &msg.mailbox)?;
        write_json(&dir.join(format!("{}.json", msg.id)), msg)?;
        self.mirror(tenant, msg);
        if let Some(sp) = &self.spool {
            sp.upload(
                voicemail_key(tenant, &msg.mailbox, &msg.id),
                dir.join(format!("{}.wav", msg.id)),
                false,
            );
        }
        Ok(())
    }

    /// Messages of a mailbox, oldest first.
    pub fn list(&self, tenant: &str, mailbox: &str) -> Result<Vec<Message>, MailStoreError> {
        let dir = self.mailbox_dir(tenant, mailbox)?;
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            match serde_json::from_slice::<Message>(&bytes) {
                Ok(m) => out.push(m),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable voicemail metadata skipped")
                }
            }
        }
        out.sort_by(|a, b| (a.received_unix, &a.id).cmp(&(b.received_unix, &b.id)));
        Ok(out)
    }

    /// New and saved counts.
    pub fn counts(&self, tenant: &str, mailbox: &str) -> Counts {
        let mut c = Counts::default();
        for m in self.list(tenant, mailbox).unwrap_or_default() {
            match m.folder {
                Folder::New => c.new += 1,
                Folder::Saved => c.saved += 1,
            }
        }
        c
    }

    /// The audio file of a message.
    pub fn audio_path(
        &self,
        tenant: &str,
        mailbox: &str,
        id: &str,
    ) -> Result<PathBuf, MailStoreError> {
        if !safe(id) {
            return Err(MailStoreError::NotFound);
        }
        let p = self.mailbox_dir(tenant, mailbox)?.join(format!("{id}.wav"));
        if !self
            .mailbox_dir(tenant, mailbox)?
            .join(format!("{id}.json"))
            .exists()
        {
            return Err(MailStoreError::NotFound);
        }
        Ok(p)
    }

    /// Moves a message to a folder.
    pub fn set_folder(
        &self,
        tenant: &str,
        mailbox: &str,
        id: &str,
        folder: Folder,
    ) -> Result<Message, MailStoreError> {
        if !safe(id) {
            return Err(MailStoreError::NotFound);
        }
        let path = self
            .mailbox_dir(tenant, mailbox)?
            .join(format!("{id}.json"));
        let bytes = std::fs::read(&path).map_err(|_| MailStoreError::NotFound)?;
        let mut m: Message =
            serde_json::from_slice(&bytes).map_err(|e| MailStoreError::Metadata {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
        if m.folder != folder {
            m.folder = folder;
            write_json(&path, &m)?;
            self.mirror(tenant, &m);
        }
        Ok(m)
    }

    /// Deletes a message (metadata first, so it is never listed without its audio).
    pub fn delete(&self, tenant: &str, mailbox: &str, id: &str) -> Result<(), MailStoreError> {
        if !safe(id) {
            return Err(MailStoreError::NotFound);
        }
        let dir = self.mailbox_dir(tenant, mailbox)?;
        std::fs::remove_file(dir.join(format!("{id}.json")))
            .map_err(|_| MailStoreError::NotFound)?;
        let _ = std::fs::remove_file(dir.join(format!("{id}.wav")));
        if let Some(sp) = &self.spool {
            sp.push_history(HistoryOp::VoicemailDeleted {
                tenant: tenant.to_string(),
                mailbox: mailbox.to_string(),
                id: id.to_string(),
            });
            sp.push_blob(BlobJob::Delete {
                key: voicemail_key(tenant, mailbox, id),
            });
        }
        Ok(())
    }

    /// Where a mailbox's own recorded greeting lives.
    pub fn greeting_path(&self, tenant: &str, mailbox: &str) -> Result<PathBuf, MailStoreError> {
        let dir = self.mailbox_dir(tenant, mailbox)?;
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join("greeting.wav"))
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), MailStoreError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| MailStoreError::Metadata {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable only once the folder's entry is: without this a power cut can
    // leave the message's audio with no metadata (or the old folder) after the caller
    // heard "message saved".
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = MailStore::new(dir.path());
        let (id, path) = s.new_message("t1", "100", 1000, 7).unwrap();
        std::fs::write(&path, b"RIFF").unwrap();
        assert!(s.list("t1", "100").unwrap().is_empty(), "no metadata yet");
        let m = Message {
            id: id.clone(),
            mailbox: "100".into(),
            caller: "101".into(),
            received_unix: 1000,
            duration_ms: 2500,
            folder: Folder::New,
            call: 7,
        };
        s.commit("t1", &m).unwrap();
        assert_eq!(s.list("t1", "100").unwrap(), vec![m.clone()]);
        assert_eq!(s.counts("t1", "100"), Counts { new: 1, saved: 0 });
        s.set_folder("t1", "100", &id, Folder::Saved).unwrap();
        assert_eq!(s.counts("t1", "100"), Counts { new: 0, saved: 1 });
        assert!(s.audio_path("t1", "100", &id).is_ok());
        assert!(s.audio_path("t2", "100", &id).is_err(), "other tenant");
        assert!(s.audio_path("t1", "100", "../x").is_err());
        s.delete("t1", "100", &id).unwrap();
        assert!(s.list("t1", "100").unwrap().is_empty());
        assert!(!path.exists());
    }
}

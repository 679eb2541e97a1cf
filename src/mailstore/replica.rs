//! The mailbox store as one of a cluster's nodes: what it tells the other nodes, and how it
//! takes what they tell it (`crate::cluster::voicemail` carries both over NATS).
//!
//! Changes made here (a message left, moved to a folder, deleted) go to the
//! [`ReplicationHook`] once they are on disk. Changes made on another node are applied with
//! the `*_remote` methods: written as a local change would be (fsynced, indexed, and
//! announced to message waiting) but neither mirrored to the stores again nor announced back.

use super::{safe, write_json, MailStore, MailStoreError, Message};
use std::io::Write;
use std::sync::Arc;

/// A change to a message made on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailChange {
    /// Stored or moved to a folder: the message as it is now.
    Stored {
        /// Tenant id.
        tenant: String,
        /// The message.
        message: Message,
    },
    /// Deleted.
    Deleted {
        /// Tenant id.
        tenant: String,
        /// Mailbox id.
        mailbox: String,
        /// Message id.
        id: String,
    },
}

/// Told each [`MailChange`] made on this node, once it is on disk.
pub type ReplicationHook = Arc<dyn Fn(MailChange) + Send + Sync>;

/// The hook, set once and late, shared by every handle of the store.
#[derive(Clone, Default)]
pub(super) struct Replicate(Arc<std::sync::OnceLock<ReplicationHook>>);

impl std::fmt::Debug for Replicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Replicate(set)"
        } else {
            "Replicate(none)"
        })
    }
}

impl MailStore {
    /// From now on every change made on this node is also handed to `hook`.
    pub fn replicate_to(&self, hook: ReplicationHook) {
        let _ = self.replicate.0.set(hook);
    }

    pub(super) fn replicate(&self, change: MailChange) {
        if let Some(hook) = self.replicate.0.get() {
            hook(change);
        }
    }

    /// Every message on this node, with its tenant.
    pub fn all_messages(&self) -> Vec<(String, Message)> {
        self.index()
            .messages
            .iter()
            .flat_map(|((tenant, _), m)| m.values().map(move |msg| (tenant.clone(), msg.clone())))
            .collect()
    }

    /// Message `id` as this node has it.
    pub fn message(&self, tenant: &str, mailbox: &str, id: &str) -> Option<Message> {
        self.indexed(tenant, mailbox, id)
    }

    /// A message another node took: its audio (from blob storage) and metadata, written and
    /// listed here.
    pub fn import_remote(
        &self,
        tenant: &str,
        msg: &Message,
        wav: &[u8],
    ) -> Result<(), MailStoreError> {
        let dir = self.mailbox_dir(tenant, &msg.mailbox)?;
        if !safe(&msg.id) {
            return Err(MailStoreError::NotFound);
        }
        std::fs::create_dir_all(&dir)?;
        let audio = dir.join(format!("{}.wav", msg.id));
        let tmp = dir.join(format!("{}.wav.fetch", msg.id));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(wav)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &audio)?;
        // Metadata last (it fsyncs the folder too): never listed without its audio.
        write_json(&dir.join(format!("{}.json", msg.id)), msg)?;
        self.index_put(tenant, msg);
        self.changed.tell(tenant, &msg.mailbox);
        Ok(())
    }

    /// A message moved to a folder on another node; false when this node does not have it
    /// or already shows that.
    pub fn update_remote(&self, tenant: &str, msg: &Message) -> Result<bool, MailStoreError> {
        let dir = self.mailbox_dir(tenant, &msg.mailbox)?;
        match self.indexed(tenant, &msg.mailbox, &msg.id) {
            Some(m) if m != *msg => {
                write_json(&dir.join(format!("{}.json", msg.id)), msg)?;
                self.index_put(tenant, msg);
                self.changed.tell(tenant, &msg.mailbox);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A message deleted on another node; true when this node had it.
    pub fn delete_remote(&self, tenant: &str, mailbox: &str, id: &str) -> bool {
        let Ok(dir) = self.mailbox_dir(tenant, mailbox) else {
            return false;
        };
        if !safe(id) || self.indexed(tenant, mailbox, id).is_none() {
            return false;
        }
        let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        self.index_remove(tenant, mailbox, id);
        let _ = std::fs::remove_file(dir.join(format!("{id}.wav")));
        self.changed.tell(tenant, mailbox);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::message;
    use super::*;
    use crate::mailstore::Folder;
    use std::sync::Mutex;

    #[test]
    fn local_changes_are_told_and_remote_ones_are_applied_without_an_echo() {
        let dir = tempfile::tempdir().expect("tmp");
        let told: Arc<Mutex<Vec<MailChange>>> = Arc::default();
        let changed: Arc<Mutex<Vec<String>>> = Arc::default();
        let c = changed.clone();
        let store = MailStore::new(dir.path()).with_changes(Arc::new(move |t: &str, m: &str| {
            c.lock().expect("lock").push(format!("{t}/{m}"))
        }));
        let t = told.clone();
        store.replicate_to(Arc::new(move |ch| t.lock().expect("lock").push(ch)));

        // Local: left, saved, deleted — each told once it is on disk.
        let (id, path) = store.new_message("t1", "100", 1000, 7).expect("new");
        std::fs::write(&path, b"RIFF").expect("audio");
        store.commit("t1", &message(&id)).expect("commit");
        store
            .set_folder("t1", "100", &id, Folder::Saved)
            .expect("folder");
        store.delete("t1", "100", &id).expect("delete");
        let kinds: Vec<&str> = told
            .lock()
            .expect("lock")
            .iter()
            .map(|c| match c {
                MailChange::Stored { message, .. } if message.folder == Folder::New => "left",
                MailChange::Stored { .. } => "saved",
                MailChange::Deleted { .. } => "deleted",
            })
            .collect();
        assert_eq!(kinds, ["left", "saved", "deleted"]);

        // Remote: imported, listed with its audio, moved, deleted; message waiting is told of
        // each, the cluster of none (it came from there).
        told.lock().expect("lock").clear();
        changed.lock().expect("lock").clear();
        let theirs = message("1000-9-ab");
        store
            .import_remote("t1", &theirs, b"RIFF....WAVE")
            .expect("import");
        assert_eq!(store.list("t1", "100").expect("list"), vec![theirs.clone()]);
        assert!(store
            .audio_path("t1", "100", &theirs.id)
            .expect("audio")
            .exists());
        let mut saved = theirs.clone();
        saved.folder = Folder::Saved;
        assert!(store.update_remote("t1", &saved).expect("update"));
        assert!(
            !store.update_remote("t1", &saved).expect("again"),
            "no change"
        );
        assert_eq!(store.counts("t1", "100").saved, 1);
        assert!(store.delete_remote("t1", "100", &theirs.id));
        assert!(!store.delete_remote("t1", "100", &theirs.id));
        assert!(store.list("t1", "100").expect("list").is_empty());
        assert!(
            told.lock().expect("lock").is_empty(),
            "no echo to the cluster"
        );
        assert_eq!(changed.lock().expect("lock").len(), 3);
        // Hostile ids from the network never name a path outside the store.
        let mut evil = message("../../etc");
        evil.mailbox = "100".into();
        assert!(store.import_remote("t1", &evil, b"x").is_err());
        assert!(!store.delete_remote("t1", "..", "x"));
    }
}

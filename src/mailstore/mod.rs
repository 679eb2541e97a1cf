//! Voicemail messages on local disk: `DIR/TENANT/MAILBOX/ID.wav` with `ID.json` beside it
//! (caller, time, duration, folder). The JSON is written last (fsynced, then renamed into
//! place), so a message is listed only once its audio is complete; a crash mid-recording leaves
//! a WAV without metadata, which listing ignores.
//!
//! These files are the node's working copy, which the voicemail apps, message waiting and the
//! admin API read. With a spool attached ([`MailStore::with_spool`]) every change is also sent
//! to the stores: the metadata (upserts and deletes) to the history store, the audio to blob
//! storage under [`crate::blob::voicemail_key`].
//!
//! Writes (a new message's metadata, a folder change, a delete) fsync, and a slow disk must
//! not stall the SIP loop that runs the voicemail apps: with a writer
//! ([`MailStore::with_writer`]) they are queued to a thread of their own and the call returns
//! at once. Folder changes and deletes are visible to every read at once (a table of pending
//! changes is laid over the disk), a new message when it is fsynced; the change callback
//! ([`MailStore::with_changes`], message waiting) runs once the write is on disk.
//!
//! Reads never wait for a disk either: the store keeps an index of every message's metadata
//! in memory, loaded by scanning the folder once when the store opens (at start-up, before
//! any call) and changed by the same code that writes a file, after the write. Listing a
//! mailbox, counting it for message waiting and finding a message are lookups. The store must
//! be the only writer of its folder (every handle of one store shares the index: the apps',
//! the admin API's [`MailStore::direct`] and the writer thread's).

use crate::blob::voicemail_key;
use crate::history::HistoryOp;
use crate::spool::{BlobJob, Spool};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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

pub use crate::records::voicemail::{Folder, Message, MIN_MESSAGE_MS, UNKNOWN_CALLER};

mod replica;
pub use replica::{MailChange, ReplicationHook};

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
    /// Every message's metadata as on disk (see the module docs).
    index: Arc<RwLock<Index>>,
    spool: Option<Spool>,
    changed: Changed,
    /// Who hears of changes made on this node, for a cluster's other nodes (set once, late:
    /// shared by every handle, the writer thread's included).
    replicate: replica::Replicate,
    writer: Option<Arc<Writer>>,
    /// Fault injection for tests: every write first waits this long (a slow disk).
    write_delay: Duration,
}

/// Called with (tenant, mailbox) when a mailbox's messages changed on disk.
pub type ChangeHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Told (tenant, mailbox) when a mailbox's messages changed on disk.
#[derive(Clone, Default)]
struct Changed(Option<ChangeHook>);

/// A message by (tenant, mailbox, id).
type MessageKey = (String, String, String);

/// What is on disk, for reads that must not wait for it.
#[derive(Debug, Default)]
struct Index {
    /// (tenant, mailbox) → id → metadata.
    messages: HashMap<(String, String), HashMap<String, Message>>,
    /// Mailboxes with a recorded greeting of their own.
    greetings: std::collections::HashSet<(String, String)>,
}

/// The folders in `d` whose names are safe (tenants, mailboxes), with their paths.
fn subdirs(d: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(name, _)| safe(name))
        .collect()
}

/// The index of the messages under `dir` (start-up: the one time the store reads the folder
/// for its listings). Unreadable metadata is skipped with a warning, as listing always did.
fn scan(dir: &Path) -> Index {
    let mut index = Index::default();
    for (tenant, tdir) in subdirs(dir) {
        for (mailbox, mdir) in subdirs(&tdir) {
            if mdir.join("greeting.wav").is_file() {
                index.greetings.insert((tenant.clone(), mailbox.clone()));
            }
            let Ok(entries) = std::fs::read_dir(&mdir) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()) {
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let parsed = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Message>(&b).map_err(|e| e.to_string()));
                match parsed {
                    Ok(m) => {
                        index
                            .messages
                            .entry((tenant.clone(), mailbox.clone()))
                            .or_default()
                            .insert(m.id.clone(), m);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unreadable voicemail metadata skipped")
                    }
                }
            }
        }
    }
    index
}

/// Pending changes by message, with the sequence number of the latest.
type PendingTable = HashMap<MessageKey, (u64, Pending)>;

impl std::fmt::Debug for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Changed(set)"
        } else {
            "Changed(none)"
        })
    }
}

impl Changed {
    fn tell(&self, tenant: &str, mailbox: &str) {
        if let Some(f) = &self.0 {
            f(tenant, mailbox);
        }
    }
}

/// A write for the writer thread.
#[derive(Debug)]
enum MailWrite {
    Commit {
        tenant: String,
        msg: Message,
    },
    Folder {
        tenant: String,
        mailbox: String,
        id: String,
        folder: Folder,
        seq: u64,
    },
    Delete {
        tenant: String,
        mailbox: String,
        id: String,
        seq: u64,
    },
    /// Audio nobody lists yet: a message too short to keep, a greeting kept or dropped.
    File(FileOp),
}

/// A change to a recording's file that no read waits for.
#[derive(Debug)]
enum FileOp {
    Remove(PathBuf),
    Rename { from: PathBuf, to: PathBuf },
}

impl FileOp {
    /// Makes the change; true when it was made.
    fn run(&self) -> bool {
        let done = match self {
            FileOp::Remove(p) => std::fs::remove_file(p),
            FileOp::Rename { from, to } => std::fs::rename(from, to),
        };
        match done {
            Ok(()) => true,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(op = ?self, error = %e, "voicemail: file change not made");
                }
                false
            }
        }
    }
}

/// What a read must already show of a change not yet on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Folder(Folder),
    Deleted,
}

/// The writer thread's queue and the changes it has not finished.
#[derive(Debug)]
struct Writer {
    tx: std::sync::mpsc::Sender<MailWrite>,
    /// (tenant, mailbox, id) → the latest pending change and its sequence number.
    pending: Mutex<PendingTable>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl Writer {
    fn table(&self) -> std::sync::MutexGuard<'_, PendingTable> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self, tenant: &str, mailbox: &str, id: &str) -> Option<Pending> {
        self.table()
            .get(&(tenant.to_string(), mailbox.to_string(), id.to_string()))
            .map(|(_, p)| *p)
    }

    /// Notes a change as pending; returns its sequence number.
    fn note(&self, tenant: &str, mailbox: &str, id: &str, p: Pending) -> u64 {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.table().insert(
            (tenant.to_string(), mailbox.to_string(), id.to_string()),
            (seq, p),
        );
        seq
    }

    /// The change numbered `seq` is on disk (a later one for the same message stays).
    fn done(&self, tenant: &str, mailbox: &str, id: &str, seq: u64) {
        let key = (tenant.to_string(), mailbox.to_string(), id.to_string());
        let mut t = self.table();
        if t.get(&key).is_some_and(|(s, _)| *s == seq) {
            t.remove(&key);
        }
    }
}

fn safe(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'))
        && !part.starts_with('.')
}

impl MailStore {
    /// A store under `dir`. The `SWITCHYARD_FAULT_MAILBOX_WRITE_MS` environment variable
    /// makes every write wait that long first (a slow disk): the slow-disk test uses it.
    pub fn new(dir: impl Into<PathBuf>) -> MailStore {
        let write_delay = std::env::var("SWITCHYARD_FAULT_MAILBOX_WRITE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let dir: PathBuf = dir.into();
        let index = Arc::new(RwLock::new(scan(&dir)));
        MailStore {
            dir,
            index,
            spool: None,
            changed: Changed::default(),
            replicate: replica::Replicate::default(),
            writer: None,
            write_delay,
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

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Message `id` as last written (no pending change applied).
    fn indexed(&self, tenant: &str, mailbox: &str, id: &str) -> Option<Message> {
        self.index()
            .messages
            .get(&(tenant.to_string(), mailbox.to_string()))
            .and_then(|m| m.get(id))
            .cloned()
    }

    /// Records in the index what was just written to disk.
    fn index_put(&self, tenant: &str, msg: &Message) {
        self.index_mut()
            .messages
            .entry((tenant.to_string(), msg.mailbox.clone()))
            .or_default()
            .insert(msg.id.clone(), msg.clone());
    }

    /// Removes from the index what was just removed from disk.
    fn index_remove(&self, tenant: &str, mailbox: &str, id: &str) {
        let mut index = self.index_mut();
        let key = (tenant.to_string(), mailbox.to_string());
        if let Some(m) = index.messages.get_mut(&key) {
            m.remove(id);
            if m.is_empty() {
                index.messages.remove(&key);
            }
        }
    }

    /// Removes every mailbox of `tenant` on this node (the tenant was deleted; the stores are
    /// told separately).
    pub fn forget_tenant(&self, tenant: &str) {
        if safe(tenant) {
            let _ = std::fs::remove_dir_all(self.dir.join(tenant));
            let mut index = self.index_mut();
            index.messages.retain(|(t, _), _| t != tenant);
            index.greetings.retain(|(t, _)| t != tenant);
        }
    }

    /// Lists again the messages whose audio was recorded but whose metadata never reached the
    /// disk: the server stopped between the end of a recording and the writer's fsync (a
    /// crash, a kill, power). Each becomes a new message from [`UNKNOWN_CALLER`], with the
    /// time and call taken from its id and its length from its WAV header (the recorder keeps
    /// the header valid as it writes); audio shorter than [`MIN_MESSAGE_MS`] was being
    /// dropped and is removed. Run once when the server starts, before it takes calls (a
    /// recording in progress would look the same); returns how many were recovered.
    pub fn recover_unlisted(&self) -> usize {
        let mut recovered = 0;
        for (tenant, mailbox, path) in self.unlisted_audio() {
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let mut parts = id.splitn(3, '-');
            let (Some(Ok(unix)), Some(Ok(call))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(str::parse::<u64>),
            ) else {
                tracing::warn!(path = %path.display(), "voicemail audio without metadata and not named by us: left alone");
                continue;
            };
            let duration_ms = wav_duration_ms(&path).unwrap_or(0);
            if duration_ms < MIN_MESSAGE_MS {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let msg = Message {
                id: id.to_string(),
                mailbox: mailbox.clone(),
                caller: UNKNOWN_CALLER.to_string(),
                received_unix: unix,
                duration_ms,
                folder: Folder::New,
                call,
            };
            match self.direct().commit(&tenant, &msg) {
                Ok(()) => {
                    tracing::warn!(%tenant, %mailbox, id = %msg.id, duration_ms, "voicemail recovered: its audio was on disk but not its metadata (the server stopped first); caller unknown");
                    recovered += 1;
                }
                Err(e) => {
                    tracing::error!(%tenant, %mailbox, id = %msg.id, error = %e, "voicemail not recovered")
                }
            }
        }
        recovered
    }

    /// Message audio files (`ID.wav`, not greetings) with no metadata beside them.
    fn unlisted_audio(&self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        for (tenant, tdir) in subdirs(&self.dir) {
            for (mailbox, mdir) in subdirs(&tdir) {
                for path in std::fs::read_dir(&mdir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                {
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    let is_message_audio = path.extension().is_some_and(|e| e == "wav")
                        && safe(stem)
                        && !stem.starts_with("greeting");
                    if is_message_audio && !path.with_extension("json").exists() {
                        out.push((tenant.clone(), mailbox.clone(), path));
                    }
                }
            }
        }
        out
    }

    /// A new message's id: the time, the call and a random part. No disk work (the recorder
    /// makes the mailbox folder when it writes the audio).
    pub fn new_message_id(
        &self,
        tenant: &str,
        mailbox: &str,
        unix: u64,
        call: u64,
    ) -> Result<String, MailStoreError> {
        self.mailbox_dir(tenant, mailbox)?;
        Ok(format!("{unix}-{call}-{:04x}", rand::random::<u16>()))
    }

    /// Where message `id`'s audio is written while it is recorded (nothing is checked on disk;
    /// the message is listed once committed).
    pub fn message_wav(
        &self,
        tenant: &str,
        mailbox: &str,
        id: &str,
    ) -> Result<PathBuf, MailStoreError> {
        if !safe(id) {
            return Err(MailStoreError::NotFound);
        }
        Ok(self.mailbox_dir(tenant, mailbox)?.join(format!("{id}.wav")))
    }

    /// Where a new greeting is recorded until [`MailStore::finish_greeting`] keeps or drops it.
    pub fn greeting_draft(&self, tenant: &str, mailbox: &str) -> Result<PathBuf, MailStoreError> {
        Ok(self.mailbox_dir(tenant, mailbox)?.join("greeting.new.wav"))
    }

    /// Drops the audio of message `id`, recorded but not to be committed (too short).
    pub fn discard_recording(
        &self,
        tenant: &str,
        mailbox: &str,
        id: &str,
    ) -> Result<(), MailStoreError> {
        let path = self.message_wav(tenant, mailbox, id)?;
        self.file_op(FileOp::Remove(path))
    }

    /// Keeps the greeting recorded last (it replaces the mailbox's greeting) or drops it.
    pub fn finish_greeting(
        &self,
        tenant: &str,
        mailbox: &str,
        keep: bool,
    ) -> Result<(), MailStoreError> {
        let draft = self.greeting_draft(tenant, mailbox)?;
        self.file_op(if keep {
            FileOp::Rename {
                from: draft,
                to: self.mailbox_dir(tenant, mailbox)?.join("greeting.wav"),
            }
        } else {
            FileOp::Remove(draft)
        })
    }

    /// A file change: on the writer thread when there is one.
    fn file_op(&self, op: FileOp) -> Result<(), MailStoreError> {
        if let Some(w) = &self.writer {
            return self.queue(w, MailWrite::File(op));
        }
        self.slow_disk();
        self.run_file_op(&op);
        Ok(())
    }

    /// Makes a file change and notes a greeting that now exists.
    fn run_file_op(&self, op: &FileOp) {
        if op.run() {
            if let FileOp::Rename { to, .. } = op {
                let mailbox = to.parent();
                let tenant = mailbox.and_then(Path::parent);
                let name = |p: Option<&Path>| {
                    p.and_then(Path::file_name)
                        .and_then(|n| n.to_str())
                        .map(str::to_string)
                };
                if let (Some(t), Some(m)) = (name(tenant), name(mailbox)) {
                    self.index_mut().greetings.insert((t, m));
                }
            }
        }
    }

    /// Where a new message's audio goes, its folder made; returns the new id and the path (for
    /// tools and tests that write messages themselves).
    pub fn new_message(
        &self,
        tenant: &str,
        mailbox: &str,
        unix: u64,
        call: u64,
    ) -> Result<(String, PathBuf), MailStoreError> {
        let id = self.new_message_id(tenant, mailbox, unix, call)?;
        let path = self.message_wav(tenant, mailbox, &id)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok((id, path))
    }

    /// The same store writing synchronously (no writer thread): for callers that must answer
    /// only once a change is fsynced (the admin API).
    pub fn direct(&self) -> MailStore {
        MailStore {
            writer: None,
            ..self.clone()
        }
    }

    /// Who to tell when a mailbox's messages changed on disk (message waiting).
    pub fn with_changes(mut self, f: ChangeHook) -> MailStore {
        self.changed = Changed(Some(f));
        self
    }

    /// Moves writes to a thread of their own (see the module documentation).
    pub fn with_writer(self) -> std::io::Result<MailStore> {
        let delay = self.write_delay;
        self.with_writer_delayed(delay)
    }

    fn with_writer_delayed(mut self, delay: Duration) -> std::io::Result<MailStore> {
        self.write_delay = delay;
        let (tx, rx) = std::sync::mpsc::channel::<MailWrite>();
        let writer = Arc::new(Writer {
            tx,
            pending: Mutex::new(HashMap::new()),
            next_seq: std::sync::atomic::AtomicU64::new(1),
        });
        // The thread's copy writes synchronously; it holds the table only weakly so the
        // thread ends when the last store handle is dropped.
        let mut sync = self.clone();
        sync.writer = None;
        let table = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("voicemail-writer".into())
            .spawn(move || {
                for w in rx {
                    sync.apply(w, &table);
                }
            })?;
        self.writer = Some(writer);
        Ok(self)
    }

    /// Does one queued write (on the writer thread) and tells who listens.
    fn apply(&self, w: MailWrite, table: &std::sync::Weak<Writer>) {
        match w {
            MailWrite::Commit { tenant, msg } => {
                if let Err(e) = self.commit(&tenant, &msg) {
                    tracing::error!(%tenant, mailbox = %msg.mailbox, id = %msg.id, error = %e, "voicemail: cannot store the message");
                }
            }
            MailWrite::Folder {
                tenant,
                mailbox,
                id,
                folder,
                seq,
            } => {
                if let Err(e) = self.set_folder(&tenant, &mailbox, &id, folder) {
                    tracing::warn!(%tenant, %mailbox, %id, error = %e, "voicemail: folder change not stored");
                }
                if let Some(t) = table.upgrade() {
                    t.done(&tenant, &mailbox, &id, seq);
                }
            }
            MailWrite::Delete {
                tenant,
                mailbox,
                id,
                seq,
            } => {
                if let Err(e) = self.delete(&tenant, &mailbox, &id) {
                    tracing::warn!(%tenant, %mailbox, %id, error = %e, "voicemail: delete not stored");
                }
                if let Some(t) = table.upgrade() {
                    t.done(&tenant, &mailbox, &id, seq);
                }
            }
            MailWrite::File(op) => {
                self.slow_disk();
                self.run_file_op(&op);
            }
        }
    }

    fn queue(&self, w: &Writer, write: MailWrite) -> Result<(), MailStoreError> {
        w.tx.send(write)
            .map_err(|_| MailStoreError::Io(std::io::Error::other("voicemail writer stopped")))
    }

    /// Waits as long as the fault injection says (a slow disk), on whatever thread writes.
    fn slow_disk(&self) {
        if !self.write_delay.is_zero() {
            std::thread::sleep(self.write_delay);
        }
    }

    /// Records a finished message's metadata (the audio is already written). With a writer it
    /// is queued: listed, counted and announced once fsynced.
    pub fn commit(&self, tenant: &str, msg: &Message) -> Result<(), MailStoreError> {
        let dir = self.mailbox_dir(tenant, &msg.mailbox)?;
        if !safe(&msg.id) {
            return Err(MailStoreError::NotFound);
        }
        if let Some(w) = &self.writer {
            return self.queue(
                w,
                MailWrite::Commit {
                    tenant: tenant.to_string(),
                    msg: msg.clone(),
                },
            );
        }
        self.slow_disk();
        write_json(&dir.join(format!("{}.json", msg.id)), msg)?;
        self.index_put(tenant, msg);
        self.mirror(tenant, msg);
        self.replicate(MailChange::Stored {
            tenant: tenant.to_string(),
            message: msg.clone(),
        });
        if let Some(sp) = &self.spool {
            sp.upload(
                voicemail_key(tenant, &msg.mailbox, &msg.id),
                dir.join(format!("{}.wav", msg.id)),
                false,
            );
        }
        self.changed.tell(tenant, &msg.mailbox);
        Ok(())
    }

    /// Messages of a mailbox, oldest first.
    pub fn list(&self, tenant: &str, mailbox: &str) -> Result<Vec<Message>, MailStoreError> {
        self.mailbox_dir(tenant, mailbox)?;
        let mut out: Vec<Message> = self
            .index()
            .messages
            .get(&(tenant.to_string(), mailbox.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        if let Some(w) = &self.writer {
            out.retain_mut(|m| match w.pending(tenant, mailbox, &m.id) {
                Some(Pending::Deleted) => false,
                Some(Pending::Folder(f)) => {
                    m.folder = f;
                    true
                }
                None => true,
            });
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
        let p = self.message_wav(tenant, mailbox, id)?;
        if let Some(w) = &self.writer {
            if w.pending(tenant, mailbox, id) == Some(Pending::Deleted) {
                return Err(MailStoreError::NotFound);
            }
        }
        if self.indexed(tenant, mailbox, id).is_none() {
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
        let mut m = self
            .indexed(tenant, mailbox, id)
            .ok_or(MailStoreError::NotFound)?;
        if let Some(w) = &self.writer {
            match w.pending(tenant, mailbox, id) {
                Some(Pending::Deleted) => return Err(MailStoreError::NotFound),
                Some(Pending::Folder(f)) => m.folder = f,
                None => {}
            }
            if m.folder != folder {
                m.folder = folder;
                let seq = w.note(tenant, mailbox, id, Pending::Folder(folder));
                self.queue(
                    w,
                    MailWrite::Folder {
                        tenant: tenant.to_string(),
                        mailbox: mailbox.to_string(),
                        id: id.to_string(),
                        folder,
                        seq,
                    },
                )?;
            }
            return Ok(m);
        }
        if m.folder != folder {
            m.folder = folder;
            self.slow_disk();
            write_json(&path, &m)?;
            self.index_put(tenant, &m);
            self.mirror(tenant, &m);
            self.replicate(MailChange::Stored {
                tenant: tenant.to_string(),
                message: m.clone(),
            });
            self.changed.tell(tenant, mailbox);
        }
        Ok(m)
    }

    /// Deletes a message (metadata first, so it is never listed without its audio).
    pub fn delete(&self, tenant: &str, mailbox: &str, id: &str) -> Result<(), MailStoreError> {
        if !safe(id) {
            return Err(MailStoreError::NotFound);
        }
        let dir = self.mailbox_dir(tenant, mailbox)?;
        if let Some(w) = &self.writer {
            let listed = self.indexed(tenant, mailbox, id).is_some()
                && w.pending(tenant, mailbox, id) != Some(Pending::Deleted);
            if !listed {
                return Err(MailStoreError::NotFound);
            }
            let seq = w.note(tenant, mailbox, id, Pending::Deleted);
            return self.queue(
                w,
                MailWrite::Delete {
                    tenant: tenant.to_string(),
                    mailbox: mailbox.to_string(),
                    id: id.to_string(),
                    seq,
                },
            );
        }
        self.slow_disk();
        std::fs::remove_file(dir.join(format!("{id}.json")))
            .map_err(|_| MailStoreError::NotFound)?;
        self.index_remove(tenant, mailbox, id);
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
        self.replicate(MailChange::Deleted {
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            id: id.to_string(),
        });
        self.changed.tell(tenant, mailbox);
        Ok(())
    }

    /// True when the mailbox has a recorded greeting of its own (from the index: no disk).
    pub fn has_greeting(&self, tenant: &str, mailbox: &str) -> bool {
        self.index()
            .greetings
            .contains(&(tenant.to_string(), mailbox.to_string()))
    }

    /// Where a mailbox's own recorded greeting lives (nothing is checked on disk).
    pub fn greeting_path(&self, tenant: &str, mailbox: &str) -> Result<PathBuf, MailStoreError> {
        Ok(self.mailbox_dir(tenant, mailbox)?.join("greeting.wav"))
    }
}

/// The length of the audio in a WAV file with a canonical 44-byte header (what our recorder
/// writes), from the header's format and data size.
fn wav_duration_ms(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut h = [0u8; 44];
    std::fs::File::open(path).ok()?.read_exact(&mut h).ok()?;
    if &h[..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[36..40] != b"data" {
        return None;
    }
    let channels = u64::from(u16::from_le_bytes([h[22], h[23]]));
    let rate = u64::from(u32::from_le_bytes([h[24], h[25], h[26], h[27]]));
    let bits = u64::from(u16::from_le_bytes([h[34], h[35]]));
    let data = u64::from(u32::from_le_bytes([h[40], h[41], h[42], h[43]]));
    let bytes_per_second = rate * channels * bits / 8;
    (bytes_per_second > 0).then(|| data * 1000 / bytes_per_second)
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

    /// A new message from 101 to mailbox 100, left at unix 1000 by call 7.
    pub(super) fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            mailbox: "100".into(),
            caller: "101".into(),
            received_unix: 1000,
            duration_ms: 2500,
            folder: Folder::New,
            call: 7,
        }
    }

    #[test]
    fn messages_round_trip_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let s = MailStore::new(dir.path());
        let (id, path) = s.new_message("t1", "100", 1000, 7).unwrap();
        std::fs::write(&path, b"RIFF").unwrap();
        assert!(s.list("t1", "100").unwrap().is_empty(), "no metadata yet");
        let m = message(&id);
        s.commit("t1", &m).unwrap();
        assert_eq!(s.list("t1", "100").unwrap(), vec![m.clone()]);
        assert_eq!(s.counts("t1", "100"), Counts { new: 1, saved: 0 });
        s.set_folder("t1", "100", &id, Folder::Saved).unwrap();
        assert_eq!(s.counts("t1", "100"), Counts { new: 0, saved: 1 });
        assert!(s.audio_path("t1", "100", &id).is_ok());
        assert!(s.audio_path("t2", "100", &id).is_err(), "other tenant");
        assert!(s.audio_path("t1", "100", "../x").is_err());
        // Reads come from the index, which a store opening on the folder rebuilds.
        std::fs::write(path.with_file_name("junk.json"), b"{not json").unwrap();
        let reopened = MailStore::new(dir.path());
        assert_eq!(reopened.counts("t1", "100"), Counts { new: 0, saved: 1 });
        assert_eq!(reopened.list("t1", "100").unwrap()[0].id, id);
        s.delete("t1", "100", &id).unwrap();
        assert!(s.list("t1", "100").unwrap().is_empty());
        assert!(!path.exists());
    }

    /// A mono 16-bit 8 kHz WAV of `ms` milliseconds of silence, as the recorder writes it.
    fn wav(ms: u32) -> Vec<u8> {
        let data = ms * 16;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8000u32.to_le_bytes());
        b.extend_from_slice(&16000u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        b.resize(44 + data as usize, 0);
        b
    }

    #[test]
    fn audio_whose_metadata_never_reached_the_disk_is_listed_again_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mbox = dir.path().join("t1/100");
        std::fs::create_dir_all(&mbox).unwrap();
        std::fs::write(mbox.join("1000-7-00ab.wav"), wav(1500)).unwrap();
        std::fs::write(mbox.join("1001-8-00cd.wav"), wav(100)).unwrap();
        std::fs::write(mbox.join("greeting.wav"), wav(2000)).unwrap();
        std::fs::write(mbox.join("greeting.new.wav"), wav(2000)).unwrap();
        std::fs::write(mbox.join("foreign.wav"), wav(2000)).unwrap();
        std::fs::write(mbox.join("1002-9-00ef.wav"), b"RIFF-cut").unwrap();
        let s = MailStore::new(dir.path());
        assert!(s.list("t1", "100").unwrap().is_empty());
        assert_eq!(s.recover_unlisted(), 1);
        let listed = s.list("t1", "100").unwrap();
        assert_eq!(
            listed,
            vec![Message {
                id: "1000-7-00ab".into(),
                mailbox: "100".into(),
                caller: UNKNOWN_CALLER.into(),
                received_unix: 1000,
                duration_ms: 1500,
                folder: Folder::New,
                call: 7,
            }]
        );
        assert!(
            mbox.join("1000-7-00ab.json").exists(),
            "written, not only indexed"
        );
        assert!(
            !mbox.join("1001-8-00cd.wav").exists(),
            "too short: it was being dropped"
        );
        assert!(!mbox.join("1002-9-00ef.wav").exists(), "no audio in it");
        assert!(mbox.join("foreign.wav").exists() && mbox.join("greeting.new.wav").exists());
        assert_eq!(s.recover_unlisted(), 0, "once");
    }

    #[test]
    fn recordings_are_kept_or_dropped_by_id_on_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let s = MailStore::new(dir.path()).with_writer().unwrap();
        let id = s.new_message_id("t1", "100", 1000, 7).unwrap();
        let wav = s.message_wav("t1", "100", &id).unwrap();
        assert!(!wav.parent().unwrap().exists(), "an id costs no disk work");
        assert!(s.new_message_id("t1", "../x", 1000, 7).is_err());
        assert!(s.message_wav("t1", "100", "../../x").is_err());
        std::fs::create_dir_all(wav.parent().unwrap()).unwrap();
        std::fs::write(&wav, b"RIFF").unwrap();
        let draft = s.greeting_draft("t1", "100").unwrap();
        std::fs::write(&draft, b"RIFF-greeting").unwrap();
        s.discard_recording("t1", "100", &id).unwrap();
        s.finish_greeting("t1", "100", true).unwrap();
        let greeting = s.greeting_path("t1", "100").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (wav.exists() || !greeting.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!wav.exists(), "a message too short to keep leaves no audio");
        assert_eq!(std::fs::read(&greeting).unwrap(), b"RIFF-greeting");
        assert!(!draft.exists());
        assert!(s.has_greeting("t1", "100") && !s.has_greeting("t1", "101"));
        assert!(
            MailStore::new(dir.path()).has_greeting("t1", "100"),
            "found again when the store opens"
        );
        // A greeting not kept leaves the old one.
        std::fs::write(&draft, b"RIFF-other").unwrap();
        s.finish_greeting("t1", "100", false).unwrap();
        while draft.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!draft.exists());
        assert_eq!(std::fs::read(&greeting).unwrap(), b"RIFF-greeting");
    }

    #[test]
    fn with_a_writer_changes_return_at_once_and_reads_see_them_before_the_disk_does() {
        let dir = tempfile::tempdir().unwrap();
        let told: Arc<Mutex<Vec<String>>> = Arc::default();
        let t = told.clone();
        let s = MailStore::new(dir.path())
            .with_changes(Arc::new(move |tenant: &str, mailbox: &str| {
                t.lock().unwrap().push(format!("{tenant}/{mailbox}"))
            }))
            .with_writer_delayed(Duration::from_millis(300))
            .unwrap();
        let msg = message;
        s.new_message("t1", "100", 1000, 7).unwrap(); // makes the mailbox folder
        let started = std::time::Instant::now();
        s.commit("t1", &msg("1000-7-0001")).unwrap();
        s.commit("t1", &msg("1000-7-0002")).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "commit waits for no disk"
        );
        assert!(
            s.list("t1", "100").unwrap().is_empty(),
            "listed once fsynced"
        );
        // Both land within a bounded time, each announced.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        // The file is listed a moment before the listener is told, so wait for both.
        while (s.list("t1", "100").unwrap().len() < 2 || told.lock().unwrap().len() < 2)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(s.counts("t1", "100"), Counts { new: 2, saved: 0 });
        assert_eq!(told.lock().unwrap().len(), 2);
        // A folder change and a delete are seen by reads at once, and land later.
        let started = std::time::Instant::now();
        let m = s
            .set_folder("t1", "100", "1000-7-0001", Folder::Saved)
            .unwrap();
        assert_eq!(m.folder, Folder::Saved);
        s.delete("t1", "100", "1000-7-0002").unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(s.counts("t1", "100"), Counts { new: 0, saved: 1 });
        assert!(s.audio_path("t1", "100", "1000-7-0002").is_err());
        assert!(matches!(
            s.delete("t1", "100", "1000-7-0002"),
            Err(MailStoreError::NotFound)
        ));
        while dir.path().join("t1/100/1000-7-0002.json").exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir.path().join("t1/100/1000-7-0002.json").exists());
        let on_disk: Message = serde_json::from_slice(
            &std::fs::read(dir.path().join("t1/100/1000-7-0001.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(on_disk.folder, Folder::Saved);
        assert_eq!(s.counts("t1", "100"), Counts { new: 0, saved: 1 });
    }
}

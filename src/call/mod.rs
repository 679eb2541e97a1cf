//! Call control: what happens to a call once SIP has authenticated and routed it.
//!
//! - [`control`]: the call-control API — [`Verb`](control::Verb)s an app issues (ring, answer,
//!   reject, play, gather, record, dial and bridge, route, hang up) and the
//!   [`AppEvent`](control::AppEvent)s it gets back. Apps (in [`crate::apps`]) are written
//!   against this and nothing else.
//! - [`session`]: one call's control state machine, sans-IO: runs the app, collects digits
//!   with their timeouts, queues media verbs until the audio is up, hands the call from app to
//!   app, and emits [`Effect`](session::Effect)s.
//! - [`runner`]: the edge — turns effects into SIP actions for the endpoint and commands for
//!   the media engine, and media/SIP events back into session input; keeps each call's
//!   outgoing legs (B2BUA: legs created beside the caller's on one media worker and bridged)
//!   and builds its call record.
//! - [`policy`]: routing policy for new calls (trunk trust, where a dialed string goes, call
//!   limits), which the SIP endpoint asks through its `CallPolicy` interface.
//! - [`cdr`]: the call record (written through [`crate::spool`] to the history store).
//!
//! The SIP endpoint only ever reports calls to this module (`CallEvent`) and takes its actions
//! ([`CallAction`]); it never calls an app, and apps never see SIP.

pub mod cdr;
pub mod control;
pub mod events;
pub mod media;
pub mod policy;
pub mod runner;
pub mod session;

pub use media::{CallMedia, EngineMedia};
pub use runner::{CallAction, CallRunner, FinishedCall};

use crate::mailstore::MailStore;
use crate::promptstore::PromptStore;
use crate::spool::Stores;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Services apps share: the voicemail message store, and the list of mailboxes whose counts
/// changed (for message-waiting notifications).
pub struct Services {
    /// Voicemail messages and greetings.
    pub mail: MailStore,
    changed: Arc<Mutex<Vec<(String, String)>>>,
    /// Finished calls by disposition (in [`cdr::Disposition::ALL`] order), for metrics.
    pub finished: [std::sync::atomic::AtomicU64; 6],
    /// Tenants' uploaded prompts (`data_dir/prompts`).
    pub prompts: PromptStore,
    /// Voicemail left per call (`MAILBOX/MESSAGE`), for the call record.
    left: Mutex<Vec<(u64, String)>>,
    /// Where call recordings are written (`DIR/TENANT/ID.wav`) before they move to blob
    /// storage.
    pub recordings_dir: PathBuf,
    /// The history store, blob storage and the spool in front of them (None in unit tests
    /// that need no stores).
    pub stores: Option<Stores>,
    /// Wrong voicemail PINs per mailbox, across calls (see [`Services::pin_allowed`]).
    pins: Mutex<crate::sip::auth_guard::AuthGuard>,
    /// Calls' steps, out to the tenants' event streams.
    pub events: events::EventHub,
}

/// Wrong PINs a mailbox takes within [`PIN_WINDOW`] before PIN entry is locked (the lock
/// starts at 15 minutes and doubles, up to a day).
pub const PIN_MAX_FAILURES: u32 = 5;
const PIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(900);

/// PIN attempts are counted per mailbox, whatever address the call came from.
const PIN_KEY_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Adds (tenant, mailbox) to the changed list once.
fn note_change(changed: &Mutex<Vec<(String, String)>>, tenant: &str, mailbox: &str) {
    let mut c = changed.lock().unwrap_or_else(|e| e.into_inner());
    let entry = (tenant.to_string(), mailbox.to_string());
    if !c.contains(&entry) {
        c.push(entry);
    }
}

impl Services {
    /// The file an app's recording is written to (apps name what they record, never a path).
    pub fn recording_path(
        &self,
        tenant: &str,
        into: &control::RecordTarget,
    ) -> Result<PathBuf, crate::mailstore::MailStoreError> {
        match into {
            control::RecordTarget::Message { mailbox, id } => {
                self.mail.message_wav(tenant, mailbox, id)
            }
            control::RecordTarget::Greeting { mailbox } => {
                self.mail.greeting_draft(tenant, mailbox)
            }
        }
    }

    /// Services with voicemail under `voicemail_dir` and call recordings beside it in
    /// `recordings/`, without stores.
    pub fn new(voicemail_dir: PathBuf) -> Services {
        let data_dir = voicemail_dir
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let changed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let told = changed.clone();
        // The store says when a mailbox changed on disk; message waiting reads it from here.
        let mail = MailStore::new(voicemail_dir).with_changes(Arc::new(
            move |tenant: &str, mailbox: &str| note_change(&told, tenant, mailbox),
        ));
        Services {
            recordings_dir: data_dir.join("recordings"),
            stores: None,
            finished: Default::default(),
            prompts: PromptStore::new(data_dir.join("prompts")),
            mail,
            changed,
            left: Mutex::new(Vec::new()),
            events: events::EventHub::default(),
            pins: Mutex::new(crate::sip::auth_guard::AuthGuard::new(
                crate::sip::auth_guard::GuardLimits {
                    max_failures: PIN_MAX_FAILURES,
                    max_users: u32::MAX,
                    window: PIN_WINDOW,
                    block: PIN_WINDOW,
                    block_max: std::time::Duration::from_secs(86_400),
                },
            )),
        }
    }

    /// Whether PIN entry for `tenant`'s `mailbox` is open now (not locked by wrong PINs from
    /// earlier calls: guessing a PIN takes more than hanging up and calling again). Reads the
    /// monotonic clock: apps see only unix seconds.
    pub fn pin_allowed(&self, tenant: &str, mailbox: &str) -> bool {
        let mut g = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        g.check(
            PIN_KEY_IP,
            &format!("{tenant}/{mailbox}"),
            std::time::Instant::now(),
        )
        .is_none()
    }

    /// Records a PIN attempt for a mailbox; returns true when this failure locked it.
    pub fn pin_result(&self, tenant: &str, mailbox: &str, ok: bool) -> bool {
        let now = std::time::Instant::now();
        let mut g = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{tenant}/{mailbox}");
        if ok {
            g.success(PIN_KEY_IP, &key);
            return false;
        }
        g.failure(PIN_KEY_IP, &key, now).is_some()
    }

    /// The same, with every record and audio file going through `stores`.
    pub fn with_stores(voicemail_dir: PathBuf, stores: Stores) -> Services {
        let mut s = Services::new(voicemail_dir);
        s.mail = s.mail.with_spool(stores.spool.clone());
        // Messages whose metadata a stop cut off are listed again (and mirrored) before the
        // first call.
        let recovered = s.mail.recover_unlisted();
        if recovered > 0 {
            tracing::warn!(recovered, "voicemail messages recovered from audio alone");
        }
        // Voicemail writes fsync: on a thread of their own, never on the SIP loop.
        match s.mail.clone().with_writer() {
            Ok(m) => s.mail = m,
            Err(e) => {
                tracing::error!(error = %e, "no voicemail writer thread: voicemail writes block the call loop")
            }
        }
        s.prompts = s.prompts.with_spool(stores.spool.clone());
        s.stores = Some(stores);
        s
    }

    /// Counts a finished call.
    pub fn call_finished(&self, d: cdr::Disposition) {
        if let Some(i) = cdr::Disposition::ALL.iter().position(|x| *x == d) {
            self.finished[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Notes that a mailbox's message counts changed.
    pub fn mailbox_changed(&self, tenant: &str, mailbox: &str) {
        note_change(&self.changed, tenant, mailbox);
    }

    /// Notes the voicemail message a call left (for its call record).
    pub fn voicemail_left(&self, call: u64, message: String) {
        self.left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((call, message));
    }

    /// The voicemail message call `call` left, if any.
    pub fn take_voicemail(&self, call: u64) -> Option<String> {
        let mut l = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let i = l.iter().position(|(c, _)| *c == call)?;
        Some(l.swap_remove(i).1)
    }

    /// A deleted tenant's data goes: its voicemail and recordings on this node, and
    /// everything it had in the history store and blob storage.
    pub fn forget_tenant(&self, tenant: &str) {
        self.mail.forget_tenant(tenant);
        self.prompts.forget_tenant(tenant);
        if !tenant.is_empty() && !tenant.contains(['/', '.']) {
            let _ = std::fs::remove_dir_all(self.recordings_dir.join(tenant));
        }
        if let Some(s) = &self.stores {
            s.tenant_deleted(tenant);
        }
    }

    /// Mailboxes changed since the last call (tenant, mailbox).
    pub fn take_changes(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

//! The seams between layers that must not know each other, which only the server (it wires
//! the layers) sees both sides of: the SIP endpoint's view of media ([`EndpointMedia`])
//! implemented with the media side's reservations, and the endpoint's disk work
//! ([`EndpointWork`]: registrations written, mailboxes counted) done off the SIP loop.

use crate::call::Services;
use crate::localdb::LocalDbError;
use crate::media::{MediaReservations, ReserveError};
use crate::sip::endpoint::{MediaBackend, MediaRefused, Work};
use crate::sip::registrar::{Binding, BindingsChanged};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The endpoint's [`MediaBackend`]: ports and WebRTC transports reserved in
/// [`MediaReservations`], which the call runner takes from when media starts.
pub struct EndpointMedia(pub MediaReservations);

fn refused(e: ReserveError) -> MediaRefused {
    match e {
        ReserveError::Ports(_) => MediaRefused::NoPorts,
        other => MediaRefused::BrowserSdp(other.to_string()),
    }
}

impl MediaBackend for EndpointMedia {
    fn reserve(&mut self, id: u64) -> Result<u16, MediaRefused> {
        self.0.reserve(id).map_err(refused)
    }

    fn answer_browser(
        &mut self,
        id: u64,
        offer: &str,
        now: Instant,
    ) -> Result<String, MediaRefused> {
        self.0.answer_browser(id, offer, now).map_err(refused)
    }

    fn offer_browser(&mut self, id: u64, now: Instant) -> Result<String, MediaRefused> {
        self.0.offer_browser(id, now).map_err(refused)
    }

    fn browser_answered(&mut self, id: u64, answer: &str) -> Result<(), MediaRefused> {
        self.0.browser_answered(id, answer).map_err(refused)
    }

    fn release(&mut self, id: u64) {
        self.0.release(id);
    }
}

/// Disk work the endpoint asks for ([`Work`]), done on threads of its own so the SIP loop never
/// waits on a disk: registrations are written to sled by one thread, in order; mailboxes are
/// counted by another, in order, and the counts come back on the loop's channel as
/// [`WorkDone`].
pub struct EndpointWork {
    bindings: Option<std::sync::mpsc::Sender<BindingsChanged>>,
    counts: Option<std::sync::mpsc::Sender<(String, String, bool)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A result of [`EndpointWork`] for the endpoint.
#[derive(Debug)]
pub enum WorkDone {
    /// A mailbox's (new, saved) counts: for [`crate::sip::endpoint::Endpoint::mailbox_counts`].
    MailboxCounts {
        /// Tenant id.
        tenant: String,
        /// Mailbox id.
        mailbox: String,
        /// (new, saved).
        counts: (usize, usize),
        /// As asked.
        changed: bool,
    },
}

/// Reads what [`EndpointWork`] wrote for the registrar, for [`Registrar::new`] at start.
pub fn stored_bindings(tree: &sled::Tree) -> Result<Vec<(String, Vec<Binding>)>, LocalDbError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let list: Vec<Binding> =
            serde_json::from_slice(&v).map_err(|source| LocalDbError::Decode {
                key: key.clone(),
                source,
            })?;
        out.push((key, list));
    }
    Ok(out)
}

impl EndpointWork {
    /// Starts the threads: registrations into `tree`, mailbox counts from `services`.
    pub fn start(
        tree: sled::Tree,
        services: Arc<Services>,
    ) -> std::io::Result<(EndpointWork, mpsc::UnboundedReceiver<WorkDone>)> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (bind_tx, bind_rx) = std::sync::mpsc::channel::<BindingsChanged>();
        let writer = std::thread::Builder::new()
            .name("registrations".into())
            .spawn(move || {
                for c in bind_rx {
                    let result = if c.bindings.is_empty() {
                        tree.remove(c.key.as_bytes()).map(|_| ())
                    } else {
                        match serde_json::to_vec(&c.bindings) {
                            Ok(v) => tree.insert(c.key.as_bytes(), v).map(|_| ()),
                            Err(_) => Ok(()),
                        }
                    };
                    if let Err(e) = result {
                        tracing::error!(error = %e, "could not persist registration");
                    }
                }
            })?;
        let (count_tx, count_rx) = std::sync::mpsc::channel::<(String, String, bool)>();
        let counter = std::thread::Builder::new()
            .name("mailbox-counts".into())
            .spawn(move || {
                for (tenant, mailbox, changed) in count_rx {
                    let c = services.mail.counts(&tenant, &mailbox);
                    let done = WorkDone::MailboxCounts {
                        tenant,
                        mailbox,
                        counts: (c.new, c.saved),
                        changed,
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })?;
        Ok((
            EndpointWork {
                bindings: Some(bind_tx),
                counts: Some(count_tx),
                threads: vec![writer, counter],
            },
            done_rx,
        ))
    }

    /// Hands one piece of work to its thread.
    pub fn submit(&self, work: Work) {
        let sent = match work {
            Work::SaveBindings(c) => self.bindings.as_ref().map(|t| t.send(c).is_ok()),
            Work::CountMailbox {
                tenant,
                mailbox,
                changed,
            } => self
                .counts
                .as_ref()
                .map(|t| t.send((tenant, mailbox, changed)).is_ok()),
        };
        if sent != Some(true) {
            tracing::error!("endpoint work thread gone: work dropped");
        }
    }

    /// Lets the threads finish what they were given (before the database is flushed).
    pub fn finish(mut self) {
        self.bindings = None;
        self.counts = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

//! What happens to calls, as a tenant's dashboards and CRMs follow it: call started,
//! answered, on to an app, a digit pressed, call ended. The runner queues a [`CallNotice`] at each step
//! (pure, like its actions); the server loop hands them to the [`EventHub`], whose
//! subscribers (the admin API's event stream) each see their own tenant's only.
//!
//! A subscriber that falls behind loses the oldest notices, never holds up calls: the hub
//! is a bounded broadcast, and a lagging reader is told how many it missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Notices kept for slow readers before the oldest are dropped.
const BACKLOG: usize = 1024;

/// Streams one tenant may hold open at once (a dashboard or two, a CRM connector).
pub const MAX_STREAMS_PER_TENANT: usize = 16;

/// What happened.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A call arrived (routed, not yet answered).
    Started,
    /// The call was answered (by an app, a phone or a trunk).
    Answered,
    /// The call went on to an app (the first one, or the next: an IVR's choice, voicemail,
    /// dialling users).
    App,
    /// The caller pressed a key (not sent while an app collects a PIN).
    Digit,
    /// The call ended; its record is written.
    Ended,
}

impl NoticeKind {
    /// The name, as the event stream gives it (the same as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Started => "started",
            NoticeKind::Answered => "answered",
            NoticeKind::App => "app",
            NoticeKind::Digit => "digit",
            NoticeKind::Ended => "ended",
        }
    }
}

/// One step of one call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CallNotice {
    /// What happened.
    pub event: NoticeKind,
    /// The call's id (as `GET /v1/tenants/{tenant}/calls` lists it).
    pub call: u64,
    /// The node the call runs on (`cluster.node_id`; absent on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its SIP Call-ID.
    pub call_id: String,
    /// The tenant (whose stream carries it; not shown in it).
    #[serde(skip)]
    pub tenant: String,
    /// When (Unix seconds).
    pub at_unix: u64,
    /// `started`: the caller (number or extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `started`: the number or extension dialled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `started`: `inbound`, `outbound` or `internal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// `digit`: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// `app`: the app running now (`ivr`, `voicemail`, `dial`, `echo`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `app`: the apps the call went through (`ivr:main:1 > voicemail:100`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ended`: `answered`, `busy`, `no_answer`, `failed`, …, as the call record says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// `ended`: why it ended, as the call record says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hangup_cause: Option<String>,
    /// `ended`: seconds from start to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// `ended`: the call record's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl CallNotice {
    /// A notice of `event` with nothing but the call's identity.
    pub fn new(event: NoticeKind, call: u64, call_id: &str, tenant: &str, at_unix: u64) -> Self {
        CallNotice {
            event,
            call,
            node: None,
            call_id: call_id.to_string(),
            tenant: tenant.to_string(),
            at_unix,
            from: None,
            to: None,
            direction: None,
            digit: None,
            app: None,
            path: None,
            disposition: None,
            hangup_cause: None,
            duration_secs: None,
            record: None,
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The tenant has [`MAX_STREAMS_PER_TENANT`] open.
    #[error("this tenant has {MAX_STREAMS_PER_TENANT} event streams open")]
    TooMany,
}

/// Where notices go out to subscribers.
#[derive(Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<CallNotice>>,
    open: Arc<Mutex<HashMap<String, usize>>>,
    /// Notices readers missed by falling behind, since start-up.
    missed: Arc<std::sync::atomic::AtomicU64>,
    /// This node's name, stamped on its own notices once it is one of several.
    node: std::sync::OnceLock<String>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(BACKLOG).0,
            open: Arc::default(),
            missed: Arc::default(),
            node: std::sync::OnceLock::new(),
        }
    }
}

impl EventHub {
    /// Hands a notice to every subscriber (none listening: dropped). One of this node's own
    /// is stamped with its name when it has one.
    pub fn publish(&self, mut n: CallNotice) {
        if n.node.is_none() {
            n.node = self.node.get().cloned();
        }
        let _ = self.tx.send(Arc::new(n));
    }

    /// This node is `node` of a cluster: its notices carry the name from now on.
    pub fn set_node(&self, node: &str) {
        let _ = self.node.set(node.to_string());
    }

    /// Whether a notice is this node's own (not one heard from another node).
    pub fn is_own(&self, n: &CallNotice) -> bool {
        n.node.as_deref() == self.node.get().map(String::as_str)
    }

    /// Every notice, all tenants, uncounted: for passing this node's on to the others.
    pub fn feed(&self) -> broadcast::Receiver<Arc<CallNotice>> {
        self.tx.subscribe()
    }

    /// A subscription to `tenant`'s notices, counted until dropped.
    pub fn subscribe(&self, tenant: &str) -> Result<Subscription, StreamRefused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(tenant.to_string()).or_default();
        if *n >= MAX_STREAMS_PER_TENANT {
            return Err(StreamRefused::TooMany);
        }
        *n += 1;
        Ok(Subscription {
            rx: self.tx.subscribe(),
            tenant: tenant.to_string(),
            open: self.open.clone(),
            missed: self.missed.clone(),
        })
    }

    /// Streams open now, all tenants.
    pub fn open_streams(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().sum()
    }

    /// Notices readers missed by falling behind, since start-up.
    pub fn missed(&self) -> u64 {
        self.missed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One reader of one tenant's notices.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<CallNotice>>,
    tenant: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
    missed: Arc<std::sync::atomic::AtomicU64>,
}

/// What a subscription reads next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A notice of its tenant's.
    Notice(Arc<CallNotice>),
    /// It fell behind: this many notices (of any tenant) were dropped.
    Lagged(u64),
    /// The hub is gone (the node stops).
    Closed,
}

impl Subscription {
    /// The next of its tenant's notices.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.rx.recv().await {
                Ok(n) if n.tenant == self.tenant => return Next::Notice(n),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(k)) => {
                    self.missed
                        .fetch_add(k, std::sync::atomic::Ordering::Relaxed);
                    return Next::Lagged(k);
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_sees_its_own_calls_only_and_its_streams_are_bounded() {
        let hub = EventHub::default();
        let mut a = hub.subscribe("a").expect("a");
        let mut b = hub.subscribe("b").expect("b");
        hub.publish(CallNotice::new(NoticeKind::Started, 1, "x@a", "a", 10));
        hub.publish(CallNotice::new(NoticeKind::Started, 2, "y@b", "b", 11));
        hub.publish(CallNotice::new(NoticeKind::Ended, 1, "x@a", "a", 12));
        let call_of = |n: Next| match n {
            Next::Notice(n) => (n.call, n.event),
            other => panic!("{other:?}"),
        };
        assert_eq!(call_of(a.next().await), (1, NoticeKind::Started));
        assert_eq!(call_of(a.next().await), (1, NoticeKind::Ended));
        assert_eq!(call_of(b.next().await), (2, NoticeKind::Started));

        let mut more: Vec<Subscription> = (1..MAX_STREAMS_PER_TENANT)
            .map(|_| hub.subscribe("a").expect("room"))
            .collect();
        assert_eq!(hub.subscribe("a").err(), Some(StreamRefused::TooMany));
        assert!(hub.subscribe("b").is_ok(), "another tenant is not affected");
        assert_eq!(
            hub.open_streams(),
            MAX_STREAMS_PER_TENANT + 1,
            "a's, and b's first (the second closed again)"
        );
        more.pop();
        assert!(
            hub.subscribe("a").is_ok(),
            "a closed stream frees its place"
        );
    }

    #[test]
    fn an_events_name_is_its_json_tag() {
        for k in [
            NoticeKind::Started,
            NoticeKind::Answered,
            NoticeKind::App,
            NoticeKind::Digit,
            NoticeKind::Ended,
        ] {
            assert_eq!(serde_json::to_value(k).ok(), Some(k.as_str().into()));
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_and_goes_on() {
        let hub = EventHub::default();
        let mut a = hub.subscribe("a").expect("a");
        for i in 0..(BACKLOG as u64 + 10) {
            hub.publish(CallNotice::new(NoticeKind::Digit, i, "x", "a", i));
        }
        assert_eq!(a.next().await, Next::Lagged(10));
        assert_eq!(hub.missed(), 10);
        assert!(matches!(a.next().await, Next::Notice(n) if n.call == 10));
    }
}

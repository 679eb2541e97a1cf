//! Test helpers: a call context from a tenant document, and a script runner that feeds an app
//! events the way a session would.

use crate::call::control::{App, AppEvent, CallContext, Caller, Verb};
use crate::call::Services;
use crate::tenant::{Tenant, TenantConfig};
use std::sync::Arc;

/// A context for a call from user 100 of the tenant in `json`.
pub fn context(json: serde_json::Value) -> CallContext {
    context_in(json, tempfile::tempdir().unwrap().keep())
}

/// Same, with the message store under `dir`.
pub fn context_in(json: serde_json::Value, dir: std::path::PathBuf) -> CallContext {
    let mut cfg: TenantConfig = serde_json::from_value(json).expect("tenant document");
    cfg.hash_secrets();
    CallContext {
        call: 1,
        tenant: Arc::new(Tenant::new(cfg)),
        caller: Caller::User("100".into()),
        dialed: "500".into(),
        unix_now: 1_795_422_600,
        services: Arc::new(Services::new(dir)),
    }
}

/// Feeds events to one app.
pub struct Script<A: App> {
    /// The app.
    pub app: A,
    /// Its context.
    pub cx: CallContext,
}

impl<A: App> Script<A> {
    /// Wraps `app`.
    pub fn new(app: A, cx: CallContext) -> Self {
        Script { app, cx }
    }

    /// One event; the verbs it produced.
    pub fn event(&mut self, ev: AppEvent) -> Vec<Verb> {
        self.app.on_event(ev, &self.cx)
    }
}

//! Live calls across a cluster: what the call endpoints of `live` ask this node's endpoint
//! task, and, in a cluster, every other node over the call bus ([`crate::cluster::calls`]).
//!
//! A listing is this node's calls plus every other node's answer; an action on a call goes
//! to this node's endpoint first and, when the call is not here, to the node that holds it
//! (only that node answers). Each call names the node it runs on.

use super::error::Problem;
use super::live::{CallInfo, Control};
use super::ApiState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::oneshot;

/// What one node asks another about calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallOp {
    /// A tenant's calls.
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Hang a call up.
    Hangup {
        /// Tenant id (the call must be this tenant's).
        tenant: String,
        /// Call id.
        id: u64,
    },
    /// Blind-transfer a call.
    Transfer {
        /// Tenant id.
        tenant: String,
        /// Call id.
        id: u64,
        /// Dial string.
        destination: String,
    },
    /// Start or stop recording a call.
    Recording {
        /// Tenant id.
        tenant: String,
        /// Call id.
        id: u64,
        /// Start or stop.
        start: bool,
    },
}

/// The answer to a [`CallOp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpAnswer {
    /// A listing.
    Calls(Vec<CallInfo>),
    /// An action: None when the call is not here, else whether it was done.
    Outcome(Option<bool>),
}

fn unavailable() -> Problem {
    Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "sip-unavailable",
        "the SIP endpoint is not running",
    )
}

pub(super) async fn ask<T>(
    st: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Control,
) -> Result<T, Problem> {
    let tx = st.control.as_ref().ok_or_else(unavailable)?;
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

/// `op` on this node's endpoint only.
pub(super) async fn on_this_node(st: &ApiState, op: CallOp) -> Result<OpAnswer, Problem> {
    Ok(match op {
        CallOp::List { tenant } => {
            let mut calls = ask(st, |reply| Control::Calls { tenant, reply }).await?;
            let node = st.node_id();
            for c in &mut calls {
                c.node = node.clone();
            }
            OpAnswer::Calls(calls)
        }
        CallOp::Hangup { tenant, id } => {
            let found = ask(st, |reply| Control::Hangup { tenant, id, reply }).await?;
            OpAnswer::Outcome(found.then_some(true))
        }
        CallOp::Transfer {
            tenant,
            id,
            destination,
        } => OpAnswer::Outcome(
            ask(st, |reply| Control::Transfer {
                tenant,
                id,
                destination,
                reply,
            })
            .await?,
        ),
        CallOp::Recording { tenant, id, start } => OpAnswer::Outcome(
            ask(st, |reply| Control::Recording {
                tenant,
                id,
                start,
                reply,
            })
            .await?,
        ),
    })
}

/// `op` wherever the call is: this node, then (in a cluster) the others.
pub(super) async fn anywhere(st: &ApiState, op: CallOp) -> Result<OpAnswer, Problem> {
    let here = on_this_node(st, op.clone()).await?;
    let Some(bus) = st.call_bus() else {
        return Ok(here);
    };
    let Ok(request) = serde_json::to_vec(&op) else {
        return Ok(here);
    };
    match here {
        OpAnswer::Calls(mut calls) => {
            for answer in bus.gather(request, false).await {
                if let Ok(OpAnswer::Calls(theirs)) = serde_json::from_slice(&answer) {
                    calls.extend(theirs);
                }
            }
            Ok(OpAnswer::Calls(calls))
        }
        OpAnswer::Outcome(None) => {
            let answer = bus.gather(request, true).await;
            Ok(answer
                .first()
                .and_then(|a| serde_json::from_slice::<OpAnswer>(a).ok())
                .filter(|a| matches!(a, OpAnswer::Outcome(Some(_))))
                .unwrap_or(OpAnswer::Outcome(None)))
        }
        done => Ok(done),
    }
}

/// Answers the other nodes' questions about this node's calls, for as long as the process
/// runs: every listing, and actions on calls that are here.
pub fn serve_call_bus(st: Arc<ApiState>, bus: crate::cluster::calls::CallBus) {
    tokio::spawn(bus.serve(move |request| {
        let st = st.clone();
        async move {
            let op: CallOp = match serde_json::from_slice(&request) {
                Ok(op) => op,
                Err(e) => {
                    tracing::warn!(error = %e, "call bus: not a request of ours; ignored");
                    return None;
                }
            };
            match on_this_node(&st, op).await {
                Ok(OpAnswer::Outcome(None)) | Err(_) => None,
                Ok(answer) => serde_json::to_vec(&answer).ok(),
            }
        }
    }));
}

//! Call control: what happens to a call once SIP has authenticated and routed it.
//!
//! Today this decides, for a resolved [`Target`], how the UAS leg behaves — answer, ring
//! without answer (the ring test), or refuse with a SIP status — and [`runner`] gives answered
//! calls their media: echo test, looping prompt, voicemail deposit (greeting, beep, record until
//! `#`, 5 s of silence or 120 s), silence for the rest until the IVR and mailbox apps land. The call-control verbs (answer, play, gather,
//! record, dial, bridge, transfer, hangup) that apps are written against grow here, so the SIP
//! endpoint only ever asks this module what to do, never an app directly.

pub mod runner;

pub use runner::{CallAction, CallRunner};

use crate::tenant::model::Target;

/// How the server leg of an incoming call proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPlan {
    /// Ring, then answer and keep the call up until the caller hangs up.
    AnswerAndHold,
    /// Ring until the caller gives up (CANCEL) — the ringback test extension.
    RingOnly,
    /// Refuse with this status and reason.
    Reject(u16, &'static str),
}

/// The plan for a call to `target`.
pub fn plan_for(target: &Target) -> CallPlan {
    match target {
        Target::Ivr { .. }
        | Target::Echo
        | Target::PromptLoop { .. }
        | Target::Voicemail { .. }
        | Target::VoicemailMain { .. } => CallPlan::AnswerAndHold,
        Target::RingTest => CallPlan::RingOnly,
        // Ringing users and dialing out through trunks need the B2BUA (call apps issue); until
        // then the caller is told plainly that the destination cannot be reached.
        Target::User { .. } => CallPlan::Reject(480, "Temporarily Unavailable"),
        Target::External { .. } => CallPlan::Reject(403, "Forbidden (no outbound route)"),
        Target::Hangup | Target::Repeat => CallPlan::Reject(603, "Decline"),
    }
}

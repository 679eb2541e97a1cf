//! Call records (CDR): one [`CallRecord`] per call, with its outgoing legs, built by the
//! runner as the call happens and written when the caller's leg and every outgoing leg are
//! gone (so each leg's RTP figures are in it).
//!
//! Records go to the local durable spool first ([`crate::spool`]), which moves them to the
//! history store; the record id is the key there, so a write repeated after a crash never
//! duplicates.
//!
//! Hang-up causes are stable codes (documented in the README): `caller_hangup`,
//! `caller_cancel`, `callee_hangup`, `callee_refused`, `no_answer`, `app_hangup`,
//! `app_refused`, `media_timeout`, `no_ack`, `admin`, `shutdown`, `transferred`, `server`.

use crate::media::leg::LegQuality;
use crate::sip::endpoint::EndedBy;
use serde::{Deserialize, Serialize};

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From a trunk into the tenant.
    Inbound,
    /// From a user out through a trunk.
    Outbound,
    /// Between the tenant's users and apps.
    Internal,
}

/// How a call ended, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Answered (by a person or an app).
    Answered,
    /// Rang, nobody answered.
    NoAnswer,
    /// The callee was busy.
    Busy,
    /// The caller gave up before the answer.
    Cancelled,
    /// Refused (no route, not allowed, unknown destination).
    Rejected,
    /// Failed (errors, timeouts).
    Failed,
}

impl Disposition {
    /// Every disposition, in a fixed order (metrics).
    pub const ALL: [Disposition; 6] = [
        Disposition::Answered,
        Disposition::NoAnswer,
        Disposition::Busy,
        Disposition::Cancelled,
        Disposition::Rejected,
        Disposition::Failed,
    ];

    /// The name used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::NoAnswer => "no_answer",
            Disposition::Busy => "busy",
            Disposition::Cancelled => "cancelled",
            Disposition::Rejected => "rejected",
            Disposition::Failed => "failed",
        }
    }
}

/// RTP figures of one leg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quality {
    /// Packets we sent.
    pub packets_sent: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Packets lost (from sequence numbers).
    pub packets_lost: u64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Estimated MOS (E-model).
    pub mos: f64,
}

impl From<&LegQuality> for Quality {
    fn from(q: &LegQuality) -> Quality {
        Quality {
            packets_sent: q.packets_sent,
            packets_received: q.packets_received,
            packets_lost: q.packets_lost,
            jitter_ms: (f64::from(q.jitter_ms) * 10.0).round() / 10.0,
            mos: (f64::from(q.mos) * 100.0).round() / 100.0,
        }
    }
}

/// One outgoing leg of a call (a phone rung, a trunk call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegRecord {
    /// The leg's id in the endpoint.
    pub leg: u64,
    /// When it was started, unix seconds.
    pub start_unix: u64,
    /// When it answered.
    pub answer_unix: Option<u64>,
    /// When it ended.
    pub end_unix: Option<u64>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// Its final SIP status when unanswered.
    pub sip_code: Option<u16>,
    /// RTP figures, when it had media.
    pub quality: Option<Quality>,
}

/// One call. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallRecord {
    /// Record id (unique; the key in every store).
    pub id: String,
    /// Tenant id.
    pub tenant: String,
    /// SIP Call-ID of the caller's dialog.
    pub call_id: String,
    /// Inbound, outbound or internal.
    pub direction: Direction,
    /// Caller (extension or number).
    pub from: String,
    /// The user who called, when a user called.
    pub from_user: Option<String>,
    /// What was dialed.
    pub to: String,
    /// Arrival, unix seconds.
    pub start_unix: u64,
    /// Answer (200 sent to the caller), unix seconds.
    pub answer_unix: Option<u64>,
    /// End, unix seconds.
    pub end_unix: u64,
    /// End − start.
    pub duration_secs: u64,
    /// End − answer (0 unanswered).
    pub billed_secs: u64,
    /// How it ended.
    pub disposition: Disposition,
    /// Who hung up.
    pub ended_by: EndedBy,
    /// Stable hang-up cause code.
    pub hangup_cause: String,
    /// Final SIP status sent to the caller when unanswered.
    pub sip_code: Option<u16>,
    /// The apps the call went through, with IVR digits (`ivr:main:1 > user:100`).
    pub path: String,
    /// Voicemail message left in the call (`MAILBOX/MESSAGE`).
    pub voicemail: Option<String>,
    /// Recording of the call (file name).
    pub recording: Option<String>,
    /// The caller's leg RTP figures.
    pub quality: Option<Quality>,
    /// Outgoing legs.
    pub legs: Vec<LegRecord>,
}

/// The stable cause code for how a call ended.
pub fn hangup_cause(by: EndedBy, code: Option<u16>, reason: &str) -> &'static str {
    match by {
        EndedBy::Caller if code == Some(487) => "caller_cancel",
        EndedBy::Caller => "caller_hangup",
        EndedBy::Callee if code.is_some() => "callee_refused",
        EndedBy::Callee => "callee_hangup",
        EndedBy::Server => {
            let r = reason.to_ascii_lowercase();
            if r.contains("media timeout") {
                "media_timeout"
            } else if r.contains("maximum call length") {
                "max_duration"
            } else if r.contains("no ack") {
                "no_ack"
            } else if r.contains("admin api") {
                "admin"
            } else if r.contains("shutting down") {
                "shutdown"
            } else if r.contains("called party hung up") {
                "callee_hangup"
            } else if r.contains("transfer") {
                "transferred"
            } else if r == "refused" || r.contains("rejected") {
                "app_refused"
            } else if !r.is_empty() {
                "app_hangup"
            } else {
                "server"
            }
        }
    }
}

/// The disposition of a call from what is known at its end.
pub fn disposition(answered: bool, by: EndedBy, code: Option<u16>) -> Disposition {
    if answered {
        return Disposition::Answered;
    }
    match (by, code) {
        (EndedBy::Caller, _) => Disposition::Cancelled,
        (_, Some(486 | 600)) => Disposition::Busy,
        (_, Some(480 | 408)) => Disposition::NoAnswer,
        (_, Some(403 | 404 | 484 | 603)) => Disposition::Rejected,
        _ => Disposition::Failed,
    }
}

/// Logs a finished call (one line per call, no secrets).
pub fn log(rec: &CallRecord) {
    tracing::info!(
        id = %rec.id,
        tenant = %rec.tenant,
        disposition = ?rec.disposition,
        cause = %rec.hangup_cause,
        duration_s = rec.duration_secs,
        billed_s = rec.billed_secs,
        path = %rec.path,
        "call record"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_and_dispositions() {
        assert_eq!(
            hangup_cause(EndedBy::Caller, Some(487), ""),
            "caller_cancel"
        );
        assert_eq!(
            hangup_cause(
                EndedBy::Server,
                None,
                "no RTP from the caller (media timeout)"
            ),
            "media_timeout"
        );
        assert_eq!(
            hangup_cause(EndedBy::Server, None, "hung up through the admin API"),
            "admin"
        );
        assert_eq!(
            hangup_cause(EndedBy::Server, Some(403), "refused"),
            "app_refused"
        );
        assert_eq!(
            disposition(false, EndedBy::Server, Some(486)),
            Disposition::Busy
        );
        assert_eq!(
            disposition(false, EndedBy::Caller, Some(487)),
            Disposition::Cancelled
        );
        assert_eq!(
            disposition(true, EndedBy::Caller, None),
            Disposition::Answered
        );
    }
}

//! What a call leaves behind and who took part: the call record with its legs and RTP
//! figures, how and by whom it ended, and who called. Plain data (serde, plus the schema
//! derives the admin API's OpenAPI document is generated from).

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

impl Direction {
    /// As stored and shown (`inbound`, `outbound`, `internal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
        }
    }
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

/// Why a call or leg ended: the stable codes call records carry (README, "Call records").
/// Set where the end happens (a BYE, a CANCEL, a timer, an app's verb, the admin API), never
/// derived from log text, so rewording a message cannot change billing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HangupCause {
    /// The caller sent BYE.
    CallerHangup,
    /// The caller sent CANCEL before the answer.
    CallerCancel,
    /// The called party hung up (its BYE, or the bridged party left).
    CalleeHangup,
    /// The called party refused (a final error to our INVITE).
    CalleeRefused,
    /// An app ended the call (voicemail left, IVR goodbye, menu done, …).
    AppHangup,
    /// An app refused the call (a reject verb, no route, not allowed).
    AppRefused,
    /// No RTP arrived for `media.rtp_timeout_secs`.
    MediaTimeout,
    /// `limits.max_call_secs` was reached.
    MaxDuration,
    /// Our 2xx was never acknowledged (RFC 3261 64·T1).
    NoAck,
    /// Hung up through the admin API.
    Admin,
    /// The server was shutting down (drain timeout).
    Shutdown,
    /// The call was transferred away.
    Transferred,
    /// The party's stream connection (TCP, WebSocket) closed under the call.
    ConnectionLost,
    /// The server could not go on with the call (no media, a failed bridge, a missing prompt).
    Server,
    /// The caller's session timer (RFC 4028) ran out without a refresh.
    SessionExpired,
}

impl HangupCause {
    /// The code as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupCause::CallerHangup => "caller_hangup",
            HangupCause::CallerCancel => "caller_cancel",
            HangupCause::CalleeHangup => "callee_hangup",
            HangupCause::CalleeRefused => "callee_refused",
            HangupCause::AppHangup => "app_hangup",
            HangupCause::AppRefused => "app_refused",
            HangupCause::MediaTimeout => "media_timeout",
            HangupCause::MaxDuration => "max_duration",
            HangupCause::NoAck => "no_ack",
            HangupCause::Admin => "admin",
            HangupCause::Shutdown => "shutdown",
            HangupCause::Transferred => "transferred",
            HangupCause::ConnectionLost => "connection_lost",
            HangupCause::Server => "server",
            HangupCause::SessionExpired => "session_expired",
        }
    }
}

impl std::fmt::Display for HangupCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Why it ended.
    pub hangup_cause: HangupCause,
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

/// Who ended a call or leg.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The calling party (BYE or CANCEL from the caller).
    Caller,
    /// The called party (BYE or a final error from the callee's phone or provider).
    Callee,
    /// Switchyard (an app hung up or refused, a timeout, the admin API, shutdown).
    Server,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A registered user of the tenant (by extension).
    User(String),
    /// A call from one of the tenant's trunks.
    Trunk {
        /// Trunk id.
        trunk: String,
        /// The caller's number as the trunk gave it.
        number: String,
    },
}

impl std::fmt::Display for Caller {
    /// `user:100` or `trunk:sandbox` (the form logs and call records use).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::User(ext) => write!(f, "user:{ext}"),
            Caller::Trunk { trunk, .. } => write!(f, "trunk:{trunk}"),
        }
    }
}

impl Caller {
    /// The number to show (extension or external number).
    pub fn number(&self) -> &str {
        match self {
            Caller::User(ext) => ext,
            Caller::Trunk { number, .. } => number,
        }
    }
}

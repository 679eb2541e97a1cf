//! Call records (CDR): one [`CallRecord`] per call, with its outgoing legs, built by the
//! runner as the call happens and written when the caller's leg and every outgoing leg are
//! gone (so each leg's RTP figures are in it).
//!
//! Records go to the local durable spool first ([`crate::spool`]), which moves them to the
//! history store; the record id is the key there, so a write repeated after a crash never
//! duplicates.
//!
//! Hang-up causes are a typed [`crate::records::call::HangupCause`] set where the call ends,
//! not read back from log text.

use crate::media::leg::LegQuality;
use crate::records::call::EndedBy;

pub use crate::records::call::{
    CallRecord, Direction, Disposition, HangupCause, LegRecord, Quality,
};

/// A leg's RTP figures as the call record keeps them (rounded for reading).
pub fn quality(q: &LegQuality) -> Quality {
    Quality {
        packets_sent: q.packets_sent,
        packets_received: q.packets_received,
        packets_lost: q.packets_lost,
        jitter_ms: (f64::from(q.jitter_ms) * 10.0).round() / 10.0,
        mos: (f64::from(q.mos) * 100.0).round() / 100.0,
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
    fn dispositions() {
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

    #[test]
    fn causes_serialize_as_their_stable_codes() {
        for (cause, code) in [
            (HangupCause::CallerCancel, "caller_cancel"),
            (HangupCause::MediaTimeout, "media_timeout"),
            (HangupCause::ConnectionLost, "connection_lost"),
            (HangupCause::SessionExpired, "session_expired"),
        ] {
            assert_eq!(cause.as_str(), code);
            assert_eq!(
                serde_json::to_value(cause).expect("json"),
                serde_json::json!(code)
            );
        }
    }
}

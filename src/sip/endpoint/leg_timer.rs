//! Session timers (RFC 4028) on the legs we place. Our INVITEs say `Supported: timer`; when
//! the called party's 2xx carries a `Session-Expires`:
//!
//! - `refresher=uac` (we refresh): a refresh with the interval goes out at half of it (§10),
//!   and again after each accepted refresh: an UPDATE when the 2xx's `Allow` lists UPDATE,
//!   else a re-INVITE with our offer as it stands (§7.4). A refresh that fails (an error
//!   response or no response at all) ends the leg: BYE, cause `session_expired`, and a
//!   warning in the log.
//! - otherwise the called party refreshes: a re-INVITE or UPDATE from it must come within
//!   the interval less min(32 s, a third of it); when none does, the leg is hung up the same
//!   way.
//!
//! An interval below `sip.session_min_secs` is raised to it: a hostile or broken peer cannot
//! make us refresh many times a second.

use super::session_timer::expiry_after;
use super::{Endpoint, Now, TimerRef};
use crate::records::call::HangupCause;
use crate::sip::message::SipResponse;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Option tags our INVITEs offer: reliable provisionals (see `prack.rs`) and timers.
pub(super) const UAC_SUPPORTED: &str = "100rel, timer";

/// A leg's session timer.
#[derive(Debug, Clone, Copy)]
pub(super) struct LegSession {
    /// Interval, seconds.
    interval: u32,
    /// True when we refresh.
    we_refresh: bool,
    /// When our next refresh is due, or (the peer refreshing) when the session ends;
    /// None while our refresh is in flight.
    due: Option<Instant>,
    /// The peer allows UPDATE: we refresh with it, else with a re-INVITE.
    by_update: bool,
}

/// True when a response's `Allow` lists UPDATE.
fn allows_update(resp: &SipResponse) -> bool {
    crate::sip::message::header_values(&resp.headers, "Allow")
        .iter()
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
}

/// The interval and refresher a 2xx's `Session-Expires` (compact `x`) names.
fn session_expires(resp: &SipResponse) -> Option<(u32, bool)> {
    let value = resp
        .header("Session-Expires")
        .or_else(|| resp.header("x"))?;
    let mut parts = value.split(';');
    let interval: u32 = parts.next()?.trim().parse().ok()?;
    let we_refresh = parts
        .filter_map(|p| p.trim().split_once('='))
        .any(|(k, v)| {
            k.trim().eq_ignore_ascii_case("refresher") && v.trim().eq_ignore_ascii_case("uac")
        });
    (interval > 0).then_some((interval, we_refresh))
}

impl Endpoint {
    /// Leg `id` was answered with `resp`: its session timer starts, if it has one.
    pub(super) fn leg_session_started(&mut self, now: Now, id: u64, resp: &SipResponse) {
        let Some((interval, we_refresh)) = session_expires(resp) else {
            return;
        };
        let interval = interval.max(self.cfg.session_min_secs);
        let due = now.instant + Self::leg_wait(interval, we_refresh);
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        let by_update = allows_update(resp);
        c.session = Some(LegSession {
            interval,
            we_refresh,
            due: Some(due),
            by_update,
        });
        c.span
            .in_scope(|| tracing::info!(interval, we_refresh, by_update, "session timer"));
        self.schedule(Some(due), TimerRef::LegSession(id));
    }

    /// How long until our refresh (half the interval) or, the peer refreshing, until the
    /// session ends.
    fn leg_wait(interval: u32, we_refresh: bool) -> Duration {
        if we_refresh {
            Duration::from_millis(u64::from(interval) * 500)
        } else {
            expiry_after(interval)
        }
    }

    /// The called party refreshed the session (re-INVITE or UPDATE in the leg's dialog).
    pub(super) fn leg_session_refreshed_by_peer(&mut self, now: Now, id: u64) {
        let Some(s) = self
            .out_calls
            .get_mut(&id)
            .and_then(|c| c.session.as_mut())
            .filter(|s| !s.we_refresh)
        else {
            return;
        };
        let due = now.instant + expiry_after(s.interval);
        s.due = Some(due);
        self.schedule(Some(due), TimerRef::LegSession(id));
    }

    /// Leg `id`'s session timer fired: our refresh goes out, or the session has expired.
    pub(super) fn leg_session_timer(&mut self, now: Now, id: u64) {
        let Some(c) = self.out_calls.get(&id) else {
            return;
        };
        let Some(s) = c.session else {
            return;
        };
        if s.due.is_none_or(|d| now.instant < d) {
            return; // moved on by a refresh, or ours is in flight
        }
        if !s.we_refresh {
            c.span.in_scope(|| {
                tracing::warn!("no session refresh from the called party in time: hanging up")
            });
            return self.hangup_leg(now, id, HangupCause::SessionExpired, "session expired");
        }
        let transport = c.peer.transport;
        let extra = format!(
            "Session-Expires: {};refresher=uac\r\nSupported: timer\r\n",
            s.interval
        );
        let branch = if s.by_update {
            let branch = self.ids.branch();
            let via = self.via_for(transport, &branch);
            let Some((peer, bytes)) = self.leg_request(id, "UPDATE", &via, &extra, None) else {
                return;
            };
            self.send_request(now, peer, branch.clone(), Bytes::from(bytes));
            branch
        } else {
            let hold = c.offered_hold;
            let Some(branch) = self.send_reinvite(now, id, hold, &extra) else {
                return;
            };
            branch
        };
        if let Some(s) = self.out_calls.get_mut(&id).and_then(|c| c.session.as_mut()) {
            s.due = None;
        }
        self.leg_refreshes.insert(branch, id);
    }

    /// The outcome of our refresh on `branch` (None: no response in time).
    pub(super) fn leg_refresh_result(
        &mut self,
        now: Now,
        branch: &str,
        resp: Option<&SipResponse>,
    ) {
        let Some(id) = self.leg_refreshes.remove(branch) else {
            return;
        };
        let min = self.cfg.session_min_secs;
        let Some(c) = self.out_calls.get_mut(&id) else {
            return;
        };
        let Some(s) = c.session.as_mut() else {
            return;
        };
        match resp {
            Some(r) if (200..300).contains(&r.code) => {
                if let Some((n, _)) = session_expires(r) {
                    s.interval = n.max(min);
                }
                let due = now.instant + Self::leg_wait(s.interval, true);
                s.due = Some(due);
                c.span
                    .in_scope(|| tracing::debug!(interval = s.interval, "session refreshed"));
                self.schedule(Some(due), TimerRef::LegSession(id));
            }
            failed => {
                let code = failed.map(|r| r.code);
                c.span
                    .in_scope(|| tracing::warn!(?code, "session refresh failed: hanging up"));
                self.hangup_leg(
                    now,
                    id,
                    HangupCause::SessionExpired,
                    "session refresh failed",
                );
            }
        }
    }
}

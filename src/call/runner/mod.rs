//! The edge of call control: one [`CallSession`] per call, fed by endpoint events
//! ([`CallEvent`]) and media events ([`MediaEvent`]); their effects become media engine
//! commands (here) and SIP actions ([`CallAction`], applied by the server loop to the endpoint).

use super::cdr::{self, CallRecord, Direction, HangupCause, LegRecord, Quality};
use super::control::{CallContext, Caller};
use super::media::CallMedia;
use super::session::{AppFactory, CallSession, Effect};
use super::Services;
use crate::media::leg::LegEvent;
use crate::media::{Audio, LegId, MediaEvent};
use crate::sip::endpoint::CallEvent;
use crate::sip::endpoint::CallerId;
use crate::sip::endpoint::EndedBy;
use crate::tenant::model::Target;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Something the SIP side must do for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Send 180.
    Ring {
        /// Call id (the endpoint's).
        call: u64,
    },
    /// Send 183 with SDP; media starts before the answer.
    EarlyMedia {
        /// Call id.
        call: u64,
    },
    /// Answer with 200 and SDP.
    Answer {
        /// Call id.
        call: u64,
    },
    /// Refuse a ringing call.
    Reject {
        /// Call id.
        call: u64,
        /// SIP status.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// Hang the call up (BYE).
    Hangup {
        /// Call id.
        call: u64,
        /// Why, for the call record.
        cause: HangupCause,
        /// Why, for the log.
        reason: String,
    },
    /// Ring users' phones for `call` (the server reports back with [`CallRunner::dial_done`]).
    Dial {
        /// The call the legs belong to.
        call: u64,
        /// Tenant id.
        tenant: String,
        /// Users and numbers to ring.
        targets: Vec<super::control::DialTarget>,
        /// Caller ID to present.
        caller: crate::sip::endpoint::CallerId,
    },
    /// Pass a hold (or resume) on to this call or leg with a re-INVITE.
    Hold {
        /// Call or leg id.
        call: u64,
        /// Hold or resume.
        hold: bool,
    },
    /// Send a DTMF digit to this call or leg by SIP INFO (it takes no RFC 4733 events).
    SendDigit {
        /// Call or leg id.
        call: u64,
        /// The digit.
        digit: char,
    },
    /// A mailbox's message counts changed: tell its owner's phones (message waiting).
    MailboxChanged {
        /// Tenant id.
        tenant: String,
        /// Mailbox id.
        mailbox: String,
    },
}

/// A call that is over: its record and the recordings made in it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedCall {
    /// The call record.
    pub record: CallRecord,
    /// Recording files written during the call (local paths), for blob storage.
    pub recordings: Vec<std::path::PathBuf>,
}

/// An outgoing leg of a call.
struct Child {
    parent: u64,
    media: Option<LegId>,
}

/// What the call record will say, gathered as the call happens.
struct Draft {
    id: String,
    call_id: String,
    direction: Direction,
    from: String,
    from_user: Option<String>,
    to: String,
    start_unix: u64,
    answer_unix: Option<u64>,
    end: Option<(u64, EndedBy, Option<u16>, HangupCause)>,
    quality: Option<Quality>,
    legs: Vec<LegRecord>,
    media_closed: bool,
}

struct Entry {
    session: CallSession,
    draft: Draft,
    leg: Option<LegId>,
    /// The SIP side is gone; the entry stays until the media leg has closed (a recording in
    /// progress still reports its end to the app).
    ended: bool,
    /// Apps run when last told to the event stream (0: none yet).
    apps_told: usize,
}

/// Every live call's session and media leg.
pub struct CallRunner {
    /// Media, through the call layer's interface (the engine, or a fake in tests).
    media: Box<dyn CallMedia>,
    services: Arc<Services>,
    factory: AppFactory,
    calls: HashMap<u64, Entry>,
    children: HashMap<u64, Child>,
    by_leg: HashMap<LegId, u64>,
    actions: VecDeque<CallAction>,
    /// Finished calls' records, for the server to store.
    finished: VecDeque<FinishedCall>,
    /// Steps of calls for the tenants' event streams, for the server to publish.
    notices: VecDeque<super::events::CallNotice>,
    /// Digit-collection deadlines (call, when); entries whose session moved on are skipped
    /// when they come due, so the server loop never scans every call.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl CallRunner {
    /// A runner driving `media`, with apps built by `factory`.
    pub fn new(
        media: Box<dyn CallMedia>,
        services: Arc<Services>,
        factory: AppFactory,
    ) -> CallRunner {
        CallRunner {
            media,
            services,
            factory,
            calls: HashMap::new(),
            children: HashMap::new(),
            by_leg: HashMap::new(),
            actions: VecDeque::new(),
            notices: VecDeque::new(),
            finished: VecDeque::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// Live media legs.
    pub fn legs(&self) -> usize {
        self.by_leg.len()
    }

    /// Name of the app a call runs now.
    pub fn app_of(&self, call: u64) -> Option<&'static str> {
        self.calls.get(&call).map(|e| e.session.app_name())
    }

    /// The apps a call went through (`ivr:main:1 > voicemail:100`).
    pub fn path_of(&self, call: u64) -> Option<String> {
        self.calls.get(&call).map(|e| e.session.path())
    }

    /// Next finished call, whose record (and recordings) the server hands to the stores.
    /// Calls whose record is not written yet (a call ended on the wire waits for its media's
    /// last figures).
    pub fn unfinished(&self) -> usize {
        self.calls.len()
    }

    pub fn poll_finished(&mut self) -> Option<FinishedCall> {
        self.finished.pop_front()
    }

    /// Next step of a call for the tenants' event streams.
    pub fn poll_notice(&mut self) -> Option<super::events::CallNotice> {
        self.notices.pop_front()
    }

    /// Next SIP action.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed (possibly early: a
    /// deadline that no longer holds wakes the loop once for nothing).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Fires digit-collection timeouts due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix: u64) {
        while let Some(&Reverse((at, call))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(e) = self.calls.get_mut(&call) else {
                continue;
            };
            if e.session.poll_timeout().is_some_and(|t| t <= now) {
                e.session.handle_timeout(now, unix);
                self.apply(call);
            }
        }
    }

    /// Applies an endpoint event.
    pub fn on_call_event(&mut self, ev: CallEvent, now: Instant, unix: u64) {
        match ev {
            CallEvent::Incoming {
                call,
                tenant,
                caller,
                dialed,
                call_id,
                target,
            } => {
                let direction = match (&caller, &target) {
                    (Caller::Trunk { .. }, _) => Direction::Inbound,
                    (Caller::User(_), Target::External { .. }) => Direction::Outbound,
                    _ => Direction::Internal,
                };
                let mut notice = super::events::CallNotice::new(
                    super::events::NoticeKind::Started,
                    call,
                    &call_id,
                    tenant.id(),
                    unix,
                );
                notice.from = Some(caller.number().to_string());
                notice.to = Some(dialed.clone());
                notice.direction = Some(direction.as_str().to_string());
                self.notices.push_back(notice);
                let draft = Draft {
                    id: format!("{unix}-{call}-{:04x}", rand::random::<u16>()),
                    call_id,
                    direction,
                    from: caller.number().to_string(),
                    from_user: match &caller {
                        Caller::User(ext) => Some(ext.clone()),
                        Caller::Trunk { .. } => None,
                    },
                    to: dialed.clone(),
                    start_unix: unix,
                    answer_unix: None,
                    end: None,
                    quality: None,
                    legs: Vec::new(),
                    media_closed: false,
                };
                let cx = CallContext {
                    call,
                    tenant,
                    caller,
                    dialed,
                    unix_now: unix,
                    services: self.services.clone(),
                };
                let mut session = CallSession::new(cx, &target, self.factory);
                session.start(now, unix);
                self.calls.insert(
                    call,
                    Entry {
                        session,
                        draft,
                        leg: None,
                        ended: false,
                        apps_told: 0,
                    },
                );
                self.apply(call);
            }
            CallEvent::MediaStart {
                call,
                audio,
                signalling_ip,
            } => {
                // Bridged legs must live on one media worker: the second is created beside
                // the first.
                let beside = match self.children.get(&call) {
                    Some(c) => self.calls.get(&c.parent).and_then(|e| e.leg),
                    None => self
                        .calls
                        .get(&call)
                        .and_then(|e| e.session.media_peer())
                        .and_then(|p| self.children.get(&p))
                        .and_then(|c| c.media),
                };
                let leg = match self.media.start(call, &audio, signalling_ip, beside) {
                    Ok(Some(leg)) => leg,
                    Ok(None) => {
                        // The call ended before its media could start (its ports are free).
                        tracing::debug!(call, "media start for a call with nothing reserved");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(call, error = %e, "no media for call");
                        self.actions.push_back(CallAction::Hangup {
                            call,
                            cause: HangupCause::Server,
                            reason: "no media".into(),
                        });
                        return;
                    }
                };
                self.by_leg.insert(leg, call);
                if let Some(c) = self.children.get_mut(&call) {
                    c.media = Some(leg);
                    let parent = c.parent;
                    self.try_bridge(parent);
                    return;
                }
                let Some(entry) = self.calls.get_mut(&call) else {
                    let _ = self.media.destroy(leg);
                    return;
                };
                entry.leg = Some(leg);
                entry.session.on_media_ready(now, unix);
                self.apply(call);
                self.try_bridge(call);
            }
            CallEvent::LegStarted { leg, parent } => {
                self.children.insert(
                    leg,
                    Child {
                        parent,
                        media: None,
                    },
                );
                if let Some(e) = self.calls.get_mut(&parent) {
                    e.draft.legs.push(LegRecord {
                        leg,
                        start_unix: unix,
                        answer_unix: None,
                        end_unix: None,
                        ended_by: None,
                        sip_code: None,
                        quality: None,
                    });
                    e.session.on_dial_started(&[leg], now, unix);
                }
                self.apply(parent);
            }
            CallEvent::LegProgress { leg, .. } => {
                let Some(parent) = self.children.get(&leg).map(|c| c.parent) else {
                    return;
                };
                if let Some(e) = self.calls.get_mut(&parent) {
                    e.session.on_leg_progress(leg);
                }
                self.apply(parent);
            }
            CallEvent::LegEarlyMedia { leg } => {
                let Some(parent) = self.children.get(&leg).map(|c| c.parent) else {
                    return;
                };
                if let Some(e) = self.calls.get_mut(&parent) {
                    e.session.on_leg_early_media(leg);
                }
                self.apply(parent);
            }
            CallEvent::LegAnswered { leg } => {
                let Some(parent) = self.children.get(&leg).map(|c| c.parent) else {
                    return;
                };
                match self.calls.get_mut(&parent) {
                    Some(e) => {
                        if let Some(l) = e.draft.legs.iter_mut().find(|l| l.leg == leg) {
                            l.answer_unix = Some(unix);
                        }
                        e.session.on_leg_answered(leg, now, unix)
                    }
                    None => self.actions.push_back(CallAction::Hangup {
                        call: leg,
                        cause: HangupCause::Server,
                        reason: "caller gone".into(),
                    }),
                }
                self.apply(parent);
            }
            CallEvent::HoldChanged { call, hold } => {
                // The other party of a bridged call hears of it.
                let other = match self.children.get(&call) {
                    Some(c) => Some(c.parent),
                    None => self.calls.get(&call).and_then(|e| e.session.peer()),
                };
                if let Some(other) = other {
                    self.actions
                        .push_back(CallAction::Hold { call: other, hold });
                }
            }
            CallEvent::Transfer { call: leg, target } => {
                let Some(parent) = self.children.get(&leg).map(|c| c.parent) else {
                    return;
                };
                if !self.transfer(parent, &target, now, unix) {
                    tracing::info!(call = parent, %target, "transfer target reaches nothing: the call goes on");
                }
            }
            CallEvent::AttendedTransfer {
                call: leg,
                replaces,
            } => {
                if let Err(why) = self.attended_transfer(leg, replaces) {
                    tracing::warn!(
                        leg,
                        consultation = replaces,
                        reason = why,
                        "attended transfer not done: the calls go on"
                    );
                }
            }
            CallEvent::LegFailed { leg, code } => {
                let Some(parent) = self.children.get(&leg).map(|c| c.parent) else {
                    return;
                };
                if let Some(e) = self.calls.get_mut(&parent) {
                    e.session.on_leg_gone(leg, Some(code), now, unix);
                }
                self.apply(parent);
            }
            CallEvent::MediaUpdate { call, audio } => {
                let media = match self.children.get(&call) {
                    Some(c) => c.media,
                    None => self.calls.get(&call).and_then(|e| e.leg),
                };
                if let Some(leg) = media {
                    let _ = self.media.update(leg, &audio);
                }
            }
            CallEvent::Digit { call, digit } => {
                let secret = self
                    .calls
                    .get(&call)
                    .is_some_and(|e| e.session.digits_are_secret());
                tracing::info!(call, digit = %masked(digit, secret), source = "SipInfo", "digit received");
                if let Some(e) = self.calls.get_mut(&call) {
                    Self::digit_notice(&mut self.notices, call, e, digit, unix);
                    e.session.on_digit(digit, false, now, unix);
                }
                self.apply(call);
            }
            CallEvent::Ended {
                call,
                by,
                code,
                cause,
                ..
            } => {
                if let Some(child) = self.children.get(&call) {
                    let (parent, media) = (child.parent, child.media);
                    match media {
                        // Kept until its media closes, for its RTP figures.
                        Some(m) => {
                            let _ = self.media.destroy(m);
                        }
                        None => {
                            self.children.remove(&call);
                        }
                    }
                    if let Some(e) = self.calls.get_mut(&parent) {
                        if let Some(l) = e.draft.legs.iter_mut().find(|l| l.leg == call) {
                            l.end_unix = Some(unix);
                            l.ended_by = Some(by);
                            l.sip_code = code;
                        }
                        e.session.on_leg_gone(call, None, now, unix);
                    }
                    self.apply(parent);
                    self.maybe_finish(parent);
                    return;
                }
                let Some(e) = self.calls.get_mut(&call) else {
                    return;
                };
                e.session.on_ended();
                e.ended = true;
                e.draft.end = Some((unix, by, code, cause));
                let leg = e.leg;
                // The caller's other legs (ringing phones, the bridged party) end with it.
                self.apply(call);
                match leg {
                    Some(leg) => {
                        let _ = self.media.destroy(leg);
                    }
                    None => {
                        if let Some(e) = self.calls.get_mut(&call) {
                            e.draft.media_closed = true;
                        }
                        self.maybe_finish(call);
                    }
                }
            }
        }
    }

    /// Writes the call record and forgets the call once the caller's leg and every outgoing
    /// leg are gone with their media.
    fn maybe_finish(&mut self, call: u64) {
        let done = self.calls.get(&call).is_some_and(|e| {
            e.ended && e.draft.media_closed && !self.children.values().any(|c| c.parent == call)
        });
        if !done {
            return;
        }
        let Some(e) = self.calls.remove(&call) else {
            return;
        };
        self.collect_changes();
        let d = e.draft;
        let (end_unix, by, code, cause) =
            d.end
                .unwrap_or((d.start_unix, EndedBy::Server, None, HangupCause::Server));
        let cx = e.session.context();
        let tenant = cx.tenant.id().to_string();
        let recordings = e.session.call_recordings();
        let rec = CallRecord {
            id: d.id,
            tenant: tenant.clone(),
            call_id: d.call_id,
            direction: d.direction,
            from: d.from,
            from_user: d.from_user,
            to: d.to,
            start_unix: d.start_unix,
            answer_unix: d.answer_unix,
            end_unix,
            duration_secs: end_unix.saturating_sub(d.start_unix),
            billed_secs: d
                .answer_unix
                .map(|a| end_unix.saturating_sub(a))
                .unwrap_or(0),
            disposition: cdr::disposition(d.answer_unix.is_some(), by, code),
            ended_by: by,
            hangup_cause: cause,
            sip_code: code,
            path: e.session.path(),
            voicemail: self.services.take_voicemail(call),
            recording: recordings
                .first()
                .and_then(|p| p.file_name())
                .map(|f| format!("{tenant}/{}", f.to_string_lossy())),
            quality: d.quality,
            legs: d.legs,
        };
        cdr::log(&rec);
        let mut notice = super::events::CallNotice::new(
            super::events::NoticeKind::Ended,
            call,
            &rec.call_id,
            &rec.tenant,
            end_unix,
        );
        notice.disposition = Some(rec.disposition.as_str().to_string());
        notice.hangup_cause = Some(rec.hangup_cause.as_str().to_string());
        notice.duration_secs = Some(rec.duration_secs);
        notice.record = Some(rec.id.clone());
        self.notices.push_back(notice);
        self.services.call_finished(rec.disposition);
        self.finished.push_back(FinishedCall {
            record: rec,
            recordings: recordings.to_vec(),
        });
    }

    /// A digit for the event stream, unless the call's app is collecting a secret (a PIN).
    fn digit_notice(
        notices: &mut VecDeque<super::events::CallNotice>,
        call: u64,
        e: &Entry,
        digit: char,
        unix: u64,
    ) {
        if e.session.digits_are_secret() {
            return;
        }
        let mut n = super::events::CallNotice::new(
            super::events::NoticeKind::Digit,
            call,
            &e.draft.call_id,
            e.session.context().tenant.id(),
            unix,
        );
        n.digit = Some(digit.to_string());
        notices.push_back(n);
    }

    /// Bridges a call with the leg it answered to once both have media.
    fn try_bridge(&mut self, call: u64) {
        let Some(e) = self.calls.get(&call) else {
            return;
        };
        let (Some(a), Some(peer)) = (e.leg, e.session.media_peer()) else {
            return;
        };
        let Some(b) = self.children.get(&peer).and_then(|c| c.media) else {
            return;
        };
        if let Err(err) = self.media.bridge(a, b) {
            tracing::error!(call, error = %err, "cannot bridge the call's legs");
            self.actions.push_back(CallAction::Hangup {
                call,
                cause: HangupCause::Server,
                reason: "bridge failed".into(),
            });
        }
    }

    /// Blind-transfers call `call` to what `dialed` reaches (REFER from the called party, or
    /// the admin API). False when there is no such call or `dialed` reaches nothing.
    pub fn transfer(&mut self, call: u64, dialed: &str, now: Instant, unix: u64) -> bool {
        let ok = self
            .calls
            .get_mut(&call)
            .is_some_and(|e| !e.ended && e.session.transfer(dialed, now, unix));
        self.apply(call);
        ok
    }

    /// Attended transfer: the transferor (leg `leg` of one call) consulted someone in call
    /// `consultation` (its own call, bridged to that party's leg). The first call's caller is
    /// joined to the consulted party's leg, which moves to the first call (its record lists
    /// it), and both of the transferor's dialogs end with cause `transferred`.
    fn attended_transfer(&mut self, leg: u64, consultation: u64) -> Result<(), &'static str> {
        let call = self
            .children
            .get(&leg)
            .map(|c| c.parent)
            .ok_or("no such leg")?;
        if call == consultation {
            return Err("the leg's own call");
        }
        let consulted = self
            .calls
            .get(&consultation)
            .filter(|e| !e.ended)
            .and_then(|e| e.session.peer())
            .filter(|p| {
                self.children
                    .get(p)
                    .is_some_and(|c| c.parent == consultation)
            })
            .ok_or("the consultation call is not bridged to anyone")?;
        let first = self.calls.get(&call).filter(|e| !e.ended);
        if first.and_then(|e| e.session.peer()) != Some(leg) {
            return Err("the transferor is not bridged to the caller");
        }
        let second = self.calls.get_mut(&consultation).ok_or("gone")?;
        if !second.session.release_peer(consulted) {
            return Err("the consulted party is not the consultation call's");
        }
        let moved = second.draft.legs.iter().position(|l| l.leg == consulted);
        let record = moved.map(|i| second.draft.legs.remove(i));
        if let Some(c) = self.children.get_mut(&consulted) {
            c.parent = call;
        }
        let e = self.calls.get_mut(&call).ok_or("gone")?;
        e.draft.legs.extend(record);
        e.session.adopt_peer(consulted);
        for (ended, why) in [
            (leg, "attended transfer: the transferor's leg"),
            (consultation, "attended transfer: the consultation call"),
        ] {
            self.actions.push_back(CallAction::Hangup {
                call: ended,
                cause: HangupCause::Transferred,
                reason: why.into(),
            });
        }
        // The transferor usually held the caller while it consulted: the caller is taken off
        // hold (a re-INVITE with sendrecv; harmless when it was not held).
        self.actions
            .push_back(CallAction::Hold { call, hold: false });
        tracing::info!(
            call,
            consulted,
            transferor = leg,
            consultation,
            "attended transfer"
        );
        self.apply(call);
        Ok(())
    }

    /// Starts (`start`) or stops the recording of call `call` (admin API, on-demand policy).
    /// None when there is no such call; Some(false) when it already is (not) recording.
    pub fn record_call(&mut self, call: u64, start: bool, unix: u64) -> Option<bool> {
        let e = self.calls.get_mut(&call).filter(|e| !e.ended)?;
        let done = if start {
            e.session.start_call_recording(unix)
        } else {
            e.session.stop_call_recording()
        };
        self.apply(call);
        Some(done)
    }

    /// How many outgoing legs a [`CallAction::Dial`] started (0: nobody to ring).
    pub fn dial_done(&mut self, call: u64, started: usize, now: Instant, unix: u64) {
        if started == 0 {
            if let Some(e) = self.calls.get_mut(&call) {
                e.session.on_dial_started(&[], now, unix);
            }
            self.apply(call);
        }
    }

    /// Applies a media event.
    pub fn on_media_event(&mut self, ev: MediaEvent, now: Instant, unix: u64) {
        match ev {
            MediaEvent::Leg { leg, event } => {
                let Some(&call) = self.by_leg.get(&leg) else {
                    return;
                };
                if self.children.contains_key(&call) {
                    // The called party's leg: only its silence matters to us.
                    if event == LegEvent::RtpTimeout {
                        self.actions.push_back(CallAction::Hangup {
                            call,
                            cause: HangupCause::MediaTimeout,
                            reason: "no RTP from the called party (media timeout)".into(),
                        });
                    }
                    return;
                }
                let Some(e) = self.calls.get_mut(&call) else {
                    return;
                };
                match event {
                    LegEvent::RtpTimeout => {
                        if !e.ended {
                            self.actions.push_back(CallAction::Hangup {
                                call,
                                cause: HangupCause::MediaTimeout,
                                reason: "no RTP from the caller (media timeout)".into(),
                            });
                        }
                    }
                    LegEvent::Digit { digit, source } => {
                        let shown = masked(digit, e.session.digits_are_secret());
                        tracing::info!(call, digit = %shown, ?source, "digit received");
                        Self::digit_notice(&mut self.notices, call, e, digit, unix);
                        e.session.on_digit(digit, true, now, unix);
                    }
                    LegEvent::PlaybackDone { interrupted, tag } => {
                        e.session.on_playback_done(tag, interrupted, now, unix);
                    }
                    LegEvent::RecordingDone {
                        path,
                        duration_ms,
                        reason,
                    } => {
                        tracing::info!(call, path = %path.display(), duration_ms, ?reason, "recording finished");
                        e.session.on_recorded(path, duration_ms, reason, now, unix);
                    }
                }
                self.apply(call);
            }
            MediaEvent::PlaybackFailed { leg, tag, error } => {
                let Some(&call) = self.by_leg.get(&leg) else {
                    return;
                };
                tracing::error!(call, tag, %error, "prompt unavailable");
                if self.calls.get(&call).is_some_and(|e| !e.ended) {
                    // A prompt that cannot play would leave the caller in silence forever.
                    self.actions.push_back(CallAction::Hangup {
                        call,
                        cause: HangupCause::Server,
                        reason: "prompt unavailable".into(),
                    });
                }
            }
            MediaEvent::Closed { leg, quality } => {
                let Some(call) = self.by_leg.remove(&leg) else {
                    return;
                };
                tracing::info!(
                    call,
                    sent = quality.packets_sent,
                    received = quality.packets_received,
                    lost = quality.packets_lost,
                    jitter_ms = format!("{:.1}", quality.jitter_ms),
                    mos = format!("{:.2}", quality.mos),
                    "media closed"
                );
                if let Some(child) = self.children.remove(&call) {
                    if let Some(e) = self.calls.get_mut(&child.parent) {
                        if let Some(l) = e.draft.legs.iter_mut().find(|l| l.leg == call) {
                            l.quality = Some(cdr::quality(&quality));
                        }
                    }
                    self.maybe_finish(child.parent);
                    return;
                }
                if let Some(e) = self.calls.get_mut(&call) {
                    e.draft.quality = Some(cdr::quality(&quality));
                    if e.ended {
                        e.draft.media_closed = true;
                    } else {
                        e.leg = None;
                    }
                }
                self.maybe_finish(call);
            }
            MediaEvent::RelayDigitByInfo { to, digit } => {
                // The receiving party negotiated no telephone-event: the digit goes by INFO.
                if let Some(&call) = self.by_leg.get(&to) {
                    self.actions
                        .push_back(CallAction::SendDigit { call, digit });
                }
            }
        }
    }

    /// Carries out a session's effects.
    fn apply(&mut self, call: u64) {
        let Some(e) = self.calls.get_mut(&call) else {
            return;
        };
        // The call moved on to another app (an IVR's choice, voicemail, a dial): a step for
        // the event stream.
        if e.session.apps_run() != e.apps_told && !e.ended {
            e.apps_told = e.session.apps_run();
            let mut n = super::events::CallNotice::new(
                super::events::NoticeKind::App,
                call,
                &e.draft.call_id,
                e.session.context().tenant.id(),
                unix_now(),
            );
            n.app = Some(e.session.app_name().to_string());
            n.path = Some(e.session.path());
            self.notices.push_back(n);
        }
        let leg = e.leg;
        let ended = e.ended;
        if let Some(at) = e.session.poll_timeout() {
            self.deadlines.push(Reverse((at, call)));
        }
        let mut bridge = false;
        while let Some(effect) = e.session.poll_effect() {
            let media = match (&effect, leg) {
                (Effect::Ring, _) if !ended => {
                    self.actions.push_back(CallAction::Ring { call });
                    Ok(())
                }
                (Effect::EarlyMedia, _) if !ended => {
                    self.actions.push_back(CallAction::EarlyMedia { call });
                    Ok(())
                }
                (Effect::Answer, _) if !ended => {
                    if e.draft.answer_unix.is_none() {
                        self.notices.push_back(super::events::CallNotice::new(
                            super::events::NoticeKind::Answered,
                            call,
                            &e.draft.call_id,
                            e.session.context().tenant.id(),
                            unix_now(),
                        ));
                    }
                    e.draft.answer_unix.get_or_insert_with(unix_now);
                    self.actions.push_back(CallAction::Answer { call });
                    Ok(())
                }
                (Effect::Reject { code, reason }, _) if !ended => {
                    self.actions.push_back(CallAction::Reject {
                        call,
                        code: *code,
                        reason: reason.clone(),
                    });
                    Ok(())
                }
                (Effect::Hangup { cause, reason }, _) if !ended => {
                    self.actions.push_back(CallAction::Hangup {
                        call,
                        cause: *cause,
                        reason: reason.clone(),
                    });
                    Ok(())
                }
                (
                    Effect::Play {
                        audio,
                        repeat,
                        barge_in,
                        tag,
                    },
                    Some(leg),
                ) => {
                    let audio = tenant_prompts(e.session.context().tenant.id(), audio);
                    self.media.play(leg, &audio, *repeat, *barge_in, *tag)
                }
                (Effect::StopPlayback, Some(leg)) => self.media.stop_playback(leg),
                (Effect::Echo, Some(leg)) => self.media.echo(leg),
                (Effect::Record { path, opts }, Some(leg)) => {
                    self.media.record(leg, path.clone(), opts.clone())
                }
                (Effect::StopRecording(which), Some(leg)) => self.media.stop_recording(leg, *which),
                (Effect::HangupLeg { leg }, _) => {
                    self.actions.push_back(CallAction::Hangup {
                        call: *leg,
                        cause: HangupCause::Server,
                        reason: "caller's call ended or another phone answered".into(),
                    });
                    Ok(())
                }
                (Effect::Dial { targets, caller_id }, _) if !ended => {
                    let cx = e.session.context();
                    let caller = match &cx.caller {
                        Caller::User(ext) => CallerId {
                            user: ext.clone(),
                            display: cx
                                .tenant
                                .user_by_extension(ext)
                                .map(|u| u.display_name.clone())
                                .filter(|d| !d.is_empty()),
                            fixed: false,
                        },
                        Caller::Trunk { number, .. } => CallerId {
                            user: number.clone(),
                            display: None,
                            fixed: false,
                        },
                    };
                    let caller = match caller_id {
                        Some(user) => CallerId {
                            user: user.clone(),
                            display: None,
                            fixed: true,
                        },
                        None => caller,
                    };
                    self.actions.push_back(CallAction::Dial {
                        call,
                        tenant: cx.tenant.id().to_string(),
                        targets: targets.clone(),
                        caller,
                    });
                    Ok(())
                }
                (Effect::Bridge { .. }, _) => {
                    bridge = true;
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(err) = media {
                tracing::error!(call, error = %err, effect = ?effect, "media command failed");
                if matches!(effect, Effect::Play { .. }) && !ended {
                    // A prompt that cannot play would leave the caller in silence forever.
                    self.actions.push_back(CallAction::Hangup {
                        call,
                        cause: HangupCause::Server,
                        reason: "prompt unavailable".into(),
                    });
                }
            }
        }
        if bridge {
            self.try_bridge(call);
        }
        self.collect_changes();
    }

    /// Turns mailbox changes (from calls or the admin API) into message-waiting actions.
    pub fn collect_changes(&mut self) {
        for (tenant, mailbox) in self.services.take_changes() {
            self.actions
                .push_back(CallAction::MailboxChanged { tenant, mailbox });
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Prompt names as tenant documents write them, made engine names: `system/…` stays, a bare
/// name is the tenant's uploaded prompt (`tenants/TENANT/NAME`).
fn tenant_prompts(tenant: &str, audio: &[Audio]) -> Vec<Audio> {
    audio
        .iter()
        .map(|a| match a {
            Audio::Prompt(p) if !p.starts_with("system/") => Audio::Prompt(format!(
                "{}{tenant}/{p}",
                crate::media::prompts::TENANT_PREFIX
            )),
            other => other.clone(),
        })
        .collect()
}

/// A digit as the log shows it: `*` while a PIN is being entered (logs are read by more
/// people than may open a mailbox).
fn masked(digit: char, secret: bool) -> char {
    if secret {
        '*'
    } else {
        digit
    }
}

#[cfg(test)]
mod tests;

//! One call's control state: its app, digit collection with its timers, what is playing or
//! recording. Sans-IO: events and the current time go in, [`Effect`]s come out
//! ([`CallSession::poll_effect`]), and [`CallSession::poll_timeout`] says when to call
//! [`CallSession::handle_timeout`]. The runner turns effects into SIP actions and media engine
//! commands.

use super::control::{
    App, AppEvent, CallContext, DialOutcome, DialTarget, GatherEnd, GatherSpec, RecordTarget, Verb,
};
use crate::media::leg::{RecordOptions, RecordSlot, RecordStop};
use crate::media::Audio;
use crate::records::call::HangupCause;
use crate::tenant::model::Target;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Builds the app for a routing target.
pub type AppFactory = fn(&Target, &CallContext) -> Box<dyn App>;

/// What the session needs done outside itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send 180.
    Ring,
    /// Send 183 with SDP and start the caller's media before the answer.
    EarlyMedia,
    /// Send 200 with SDP.
    Answer,
    /// Refuse with a final response.
    Reject {
        /// SIP status.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// End the call (BYE, or a final error while ringing).
    Hangup {
        /// Why, for the call record.
        cause: HangupCause,
        /// Why, for the log.
        reason: String,
    },
    /// Start playback.
    Play {
        /// Audio.
        audio: Vec<Audio>,
        /// Loop.
        repeat: bool,
        /// Key press stops it.
        barge_in: bool,
        /// Tag echoed in the engine's "done" event.
        tag: u64,
    },
    /// Stop playback.
    StopPlayback,
    /// Echo the caller's audio.
    Echo,
    /// Start recording.
    Record {
        /// File.
        path: PathBuf,
        /// Options.
        opts: RecordOptions,
    },
    /// Stop one of the leg's recordings (the app's or the call's).
    StopRecording(RecordSlot),
    /// Start outgoing legs to these destinations.
    Dial {
        /// Users and numbers.
        targets: Vec<DialTarget>,
        /// Caller ID to present instead of the caller's.
        caller_id: Option<String>,
    },
    /// End an outgoing leg (CANCEL or BYE).
    HangupLeg {
        /// Leg id.
        leg: u64,
    },
    /// Connect the caller's audio with this answered leg.
    Bridge {
        /// Leg id.
        leg: u64,
    },
}

/// A dial in progress.
struct Dialing {
    legs: BTreeSet<u64>,
    /// Users rung (their recording policy counts once one answers).
    users: Vec<String>,
    codes: Vec<u16>,
    deadline: Instant,
    /// Targets still to try, one after the other (sequential dial).
    next: VecDeque<DialTarget>,
    ring_timeout: Duration,
    caller_id: Option<String>,
}

struct Gathering {
    spec: GatherSpec,
    digits: String,
    /// None while the prompt before it still plays.
    deadline: Option<Instant>,
    /// The overall limit, from the start of the collection.
    overall: Option<Instant>,
}

/// One call's control state. See the module documentation.
pub struct CallSession {
    cx: CallContext,
    app: Box<dyn App>,
    factory: AppFactory,
    answered: bool,
    media_ready: bool,
    /// Media verbs issued before the audio was up.
    waiting: VecDeque<Verb>,
    /// Tag of the playback in progress.
    playing: Option<u64>,
    play_barge_in: bool,
    next_tag: u64,
    gather: Option<Gathering>,
    /// The app's recording in progress.
    recording: Option<RecordTarget>,
    dialing: Option<Dialing>,
    /// The leg the caller is bridged to.
    peer: Option<u64>,
    /// A ringing leg whose early media the caller hears.
    early: Option<u64>,
    rung: bool,
    /// The call recording (stereo: caller, other party) in progress or done.
    call_recording: Option<PathBuf>,
    /// Every recording file of the call (stopping and starting again makes a new one).
    call_recordings: Vec<PathBuf>,
    call_recording_active: bool,
    /// A call recording asked for before the caller's audio was up.
    pending_record: Option<Effect>,
    effects: VecDeque<Effect>,
    ended: bool,
    /// Apps the call went through, with their trails, for the call record.
    path: Vec<String>,
    /// Guards against routing loops the validator could not see (e.g. through data).
    routes: u32,
}

/// Longest chain of app hand-overs in one call.
const MAX_ROUTES: u32 = 64;

impl CallSession {
    /// A session for a call routed to `target`.
    pub fn new(cx: CallContext, target: &Target, factory: AppFactory) -> CallSession {
        let app = factory(target, &cx);
        CallSession {
            path: vec![app.name().to_string()],
            cx,
            app,
            factory,
            answered: false,
            media_ready: false,
            waiting: VecDeque::new(),
            playing: None,
            play_barge_in: false,
            next_tag: 1,
            gather: None,
            recording: None,
            dialing: None,
            peer: None,
            early: None,
            rung: false,
            call_recording: None,
            call_recordings: Vec::new(),
            call_recording_active: false,
            pending_record: None,
            effects: VecDeque::new(),
            ended: false,
            routes: 0,
        }
    }

    /// The context apps see.
    pub fn context(&self) -> &CallContext {
        &self.cx
    }

    /// Name of the app running now.
    pub fn app_name(&self) -> &'static str {
        self.app.name()
    }

    /// How many apps the call has run so far (the current one included): a cheap way to
    /// tell that it moved on, without building [`path`](Self::path).
    pub fn apps_run(&self) -> usize {
        self.path.len()
    }

    /// The apps the call went through, with their trails (`ivr:main:1 > voicemail:100`).
    pub fn path(&self) -> String {
        let mut p = self.path.clone();
        if let (Some(last), Some(trail)) = (p.last_mut(), self.app.trail()) {
            *last = format!("{}:{trail}", self.app.name());
        }
        p.join(" > ")
    }

    /// True once the session asked for the call to end.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Starts the app.
    pub fn start(&mut self, now: Instant, unix: u64) {
        self.deliver(AppEvent::Start, now, unix);
    }

    /// The call is answered and its audio is up.
    pub fn on_media_ready(&mut self, now: Instant, unix: u64) {
        if self.media_ready {
            return;
        }
        self.media_ready = true;
        if let Some(e) = self.pending_record.take() {
            self.effects.push_back(e);
        }
        let waiting: Vec<Verb> = self.waiting.drain(..).collect();
        self.run(waiting, now, unix);
        self.deliver(AppEvent::MediaReady, now, unix);
    }

    /// A playback with this tag ended.
    pub fn on_playback_done(&mut self, tag: u64, interrupted: bool, now: Instant, unix: u64) {
        if self.playing != Some(tag) {
            return; // A playback we already replaced or stopped.
        }
        self.playing = None;
        self.arm_gather(now);
        self.deliver(AppEvent::PlaybackDone { interrupted }, now, unix);
    }

    /// A key press (RFC 4733, in-band or SIP INFO).
    pub fn on_digit(&mut self, digit: char, from_media: bool, now: Instant, unix: u64) {
        if self.ended {
            return;
        }
        // The engine cuts barge-in playback on media digits itself; SIP INFO digits never pass
        // through it, so the session does the same for them.
        if let (Some(tag), true) = (self.playing, self.play_barge_in) {
            if !from_media {
                self.effects.push_back(Effect::StopPlayback);
            }
            self.on_playback_done(tag, true, now, unix);
        }
        if self.recording.is_some() && !from_media {
            // A stop digit by INFO ends the recording like one sent in the audio would.
            self.effects
                .push_back(Effect::StopRecording(RecordSlot::App));
            return;
        }
        let Some(g) = self.gather.as_mut() else {
            return self.deliver(AppEvent::Digit(digit), now, unix);
        };
        if g.spec.terminators.contains(digit) {
            return self.finish_gather(GatherEnd::Terminator, now, unix);
        }
        g.digits.push(digit);
        if g.digits.len() >= g.spec.max_digits {
            return self.finish_gather(GatherEnd::MaxDigits, now, unix);
        }
        g.deadline = Some(now + g.spec.inter_digit_timeout);
    }

    /// A recording ended.
    pub fn on_recorded(
        &mut self,
        path: PathBuf,
        duration_ms: u64,
        reason: RecordStop,
        now: Instant,
        unix: u64,
    ) {
        if self.call_recording.as_ref() == Some(&path) {
            if reason != RecordStop::Stopped {
                self.call_recording_active = false;
            }
            tracing::info!(
                call = self.cx.call,
                duration_ms,
                ?reason,
                "call recording finished"
            );
            return;
        }
        let Some(into) = self.recording.take() else {
            tracing::warn!(call = self.cx.call, path = %path.display(), "a recording nobody asked for ended");
            return;
        };
        let ev = AppEvent::Recorded {
            into,
            duration_ms,
            reason,
        };
        if self.ended {
            // The caller hung up while being recorded — the usual end of a voicemail. The app
            // still learns of the recording (to keep the message); what it asks next is moot.
            self.cx.unix_now = unix;
            let _ = self.app.on_event(ev, &self.cx);
            return;
        }
        self.deliver(ev, now, unix);
    }

    /// The call is gone (the caller hung up, or we did): nothing more will be delivered.
    pub fn on_ended(&mut self) {
        self.ended = true;
        self.gather = None;
        self.waiting.clear();
        // The other legs go with the caller.
        if let Some(d) = self.dialing.take() {
            for leg in d.legs {
                self.effects.push_back(Effect::HangupLeg { leg });
            }
        }
        if let Some(leg) = self.peer.take() {
            self.effects.push_back(Effect::HangupLeg { leg });
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let g = self
            .gather
            .as_ref()
            .and_then(|g| g.deadline.into_iter().chain(g.overall).min());
        let d = self.dialing.as_ref().map(|d| d.deadline);
        g.into_iter().chain(d).min()
    }

    /// The leg the caller is bridged to.
    pub fn peer(&self) -> Option<u64> {
        self.peer
    }

    /// The leg whose audio the caller exchanges: the bridged party, or early media.
    pub fn media_peer(&self) -> Option<u64> {
        self.peer.or(self.early)
    }

    /// A ringing leg sends early media: the caller gets 183 and hears it (the first such leg).
    pub fn on_leg_early_media(&mut self, leg: u64) {
        let dialing = self.dialing.as_ref().is_some_and(|d| d.legs.contains(&leg));
        if dialing && !self.answered && self.early.is_none() && !self.ended {
            self.early = Some(leg);
            self.effects.push_back(Effect::EarlyMedia);
            self.effects.push_back(Effect::Bridge { leg });
        }
    }

    /// Legs being dialed.
    pub fn dialing_legs(&self) -> Vec<u64> {
        self.dialing
            .as_ref()
            .map(|d| d.legs.iter().copied().collect())
            .unwrap_or_default()
    }

    /// How many legs a [`Effect::Dial`] started (0: nobody to ring).
    pub fn on_dial_started(&mut self, legs: &[u64], now: Instant, unix: u64) {
        let Some(d) = self.dialing.as_mut() else {
            return;
        };
        d.legs.extend(legs);
        if d.legs.is_empty() {
            d.codes.push(480);
            self.next_target_or_finish(DialOutcome::Unavailable(480), now, unix);
        }
    }

    /// The tenant's recording policy for a bridged call: `always` for any party (caller or a
    /// user rung) records; the tenant's `always` records unless a party says `never`.
    fn recording_policy_says_record(&self, called: &[String]) -> bool {
        use crate::tenant::model::RecordingPolicy;
        let t = &self.cx.tenant;
        let mut parties: Vec<Option<RecordingPolicy>> = called
            .iter()
            .filter_map(|u| t.user_by_extension(u))
            .map(|u| u.recording)
            .collect();
        if let super::control::Caller::User(ext) = &self.cx.caller {
            parties.push(t.user_by_extension(ext).and_then(|u| u.recording));
        }
        if parties.contains(&Some(RecordingPolicy::Always)) {
            return true;
        }
        t.config.settings.recording == RecordingPolicy::Always
            && !parties.contains(&Some(RecordingPolicy::Never))
    }

    /// Starts recording the call (stereo: the caller, and whoever it is bridged to — the same
    /// file goes on across a transfer). False when it is already recording or not answered.
    pub fn start_call_recording(&mut self, unix: u64) -> bool {
        if self.call_recording_active || !self.answered || self.ended {
            return false;
        }
        let path = self
            .cx
            .services
            .recordings_dir
            .join(self.cx.tenant.id())
            .join(format!("{unix}-{}-{}.wav", self.cx.call, self.next_tag));
        self.next_tag += 1;
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::error!(call = self.cx.call, error = %e, "cannot create the recordings folder");
                return false;
            }
        }
        tracing::info!(call = self.cx.call, path = %path.display(), "call recording started");
        self.call_recording = Some(path.clone());
        self.call_recordings.push(path.clone());
        self.call_recording_active = true;
        let effect = Effect::Record {
            path,
            opts: RecordOptions {
                stop_digits: String::new(),
                max_length: Duration::from_secs(4 * 3600),
                max_silence: None,
                stereo: true,
            },
        };
        if self.media_ready {
            self.effects.push_back(effect);
        } else {
            self.pending_record = Some(effect);
        }
        true
    }

    /// Stops the call recording; false when none is running.
    pub fn stop_call_recording(&mut self) -> bool {
        if !self.call_recording_active {
            return false;
        }
        self.call_recording_active = false;
        self.effects
            .push_back(Effect::StopRecording(RecordSlot::Call));
        true
    }

    /// The call's (latest) recording file, once one was started.
    pub fn call_recording(&self) -> Option<&PathBuf> {
        self.call_recording.as_ref()
    }

    /// Every recording file the call made, oldest first.
    pub fn call_recordings(&self) -> &[PathBuf] {
        &self.call_recordings
    }

    /// Blind transfer: the caller leaves whoever it is bridged to (or ringing) and goes to what
    /// `dialed` reaches in the tenant (an extension, a tenant number, or an external number an
    /// outbound route allows). False when `dialed` reaches nothing.
    pub fn transfer(&mut self, dialed: &str, now: Instant, unix: u64) -> bool {
        let tenant = &self.cx.tenant;
        let target = tenant.resolve_dialed(dialed).cloned().or_else(|| {
            tenant.outbound_route_for(dialed).map(|_| Target::External {
                number: dialed.to_string(),
            })
        });
        let Some(target) = target else {
            return false;
        };
        if self.ended {
            return false;
        }
        if let Some(d) = self.dialing.take() {
            for leg in d.legs {
                self.effects.push_back(Effect::HangupLeg { leg });
            }
        }
        if let Some(leg) = self.peer.take() {
            self.effects.push_back(Effect::HangupLeg { leg });
        }
        tracing::info!(call = self.cx.call, %dialed, ?target, "call transferred");
        self.run(vec![Verb::Route(target)], now, unix);
        true
    }

    /// Attended transfer: the caller is joined to `leg`, an answered leg that belonged to
    /// another call (the transferor's consultation call). Returns the leg bridged so far
    /// (the transferor), which the call layer ends; false when the call is over.
    pub fn adopt_peer(&mut self, leg: u64) -> Option<Option<u64>> {
        if self.ended || !self.answered {
            return None;
        }
        let old = self.peer.replace(leg);
        self.early = None;
        self.playing = None;
        self.gather = None;
        self.effects.push_back(Effect::Bridge { leg });
        tracing::info!(call = self.cx.call, leg, transferor = ?old, "caller joined to the consulted party");
        Some(old)
    }

    /// The bridged leg `leg` leaves this call for another (attended transfer): forgotten,
    /// not hung up. False when it is not this call's bridged leg.
    pub fn release_peer(&mut self, leg: u64) -> bool {
        if self.peer != Some(leg) || self.ended {
            return false;
        }
        self.peer = None;
        true
    }

    /// An outgoing leg rings.
    pub fn on_leg_progress(&mut self, leg: u64) {
        let dialing = self.dialing.as_ref().is_some_and(|d| d.legs.contains(&leg));
        if dialing && !self.rung && !self.answered {
            self.rung = true;
            self.effects.push_back(Effect::Ring);
        }
    }

    /// An outgoing leg answered: it wins, the others are cancelled, the caller is answered and
    /// bridged to it.
    pub fn on_leg_answered(&mut self, leg: u64, now: Instant, unix: u64) {
        let ours = self.dialing.as_ref().is_some_and(|d| d.legs.contains(&leg));
        if !ours || self.ended {
            self.effects.push_back(Effect::HangupLeg { leg });
            return;
        }
        let mut users = Vec::new();
        if let Some(d) = self.dialing.take() {
            for other in d.legs.into_iter().filter(|&l| l != leg) {
                self.effects.push_back(Effect::HangupLeg { leg: other });
            }
            users = d.users;
        }
        self.peer = Some(leg);
        self.early = None;
        self.playing = None;
        self.gather = None;
        if !self.answered {
            self.answered = true;
            self.effects.push_back(Effect::Answer);
        }
        self.effects.push_back(Effect::Bridge { leg });
        if self.recording_policy_says_record(&users) {
            self.start_call_recording(unix);
        }
        self.deliver(AppEvent::DialResult(DialOutcome::Answered), now, unix);
    }

    /// An outgoing leg failed or ended.
    pub fn on_leg_gone(&mut self, leg: u64, code: Option<u16>, now: Instant, unix: u64) {
        if self.peer == Some(leg) {
            self.peer = None;
            return self.deliver(AppEvent::PeerHungUp, now, unix);
        }
        if self.early == Some(leg) {
            self.early = None;
        }
        let Some(d) = self.dialing.as_mut() else {
            return;
        };
        if !d.legs.remove(&leg) {
            return;
        }
        d.codes.extend(code);
        if d.legs.is_empty() {
            let outcome = if d.codes.iter().any(|c| matches!(c, 486 | 600)) {
                DialOutcome::Busy
            } else {
                DialOutcome::Unavailable(d.codes.last().copied().unwrap_or(480))
            };
            self.next_target_or_finish(outcome, now, unix);
        }
    }

    /// Sequential dial: on to the next target (the current legs are ended), or the end.
    fn next_target_or_finish(&mut self, outcome: DialOutcome, now: Instant, unix: u64) {
        let next = self.dialing.as_mut().and_then(|d| d.next.pop_front());
        let Some(target) = next else {
            return self.finish_dial(outcome, now, unix);
        };
        let Some(d) = self.dialing.as_mut() else {
            return;
        };
        for leg in std::mem::take(&mut d.legs) {
            self.effects.push_back(Effect::HangupLeg { leg });
        }
        d.deadline = now + d.ring_timeout;
        if let DialTarget::User(u) = &target {
            d.users.push(u.clone());
        }
        let caller_id = d.caller_id.clone();
        self.effects.push_back(Effect::Dial {
            targets: vec![target],
            caller_id,
        });
    }

    fn finish_dial(&mut self, outcome: DialOutcome, now: Instant, unix: u64) {
        if let Some(d) = self.dialing.take() {
            for leg in d.legs {
                self.effects.push_back(Effect::HangupLeg { leg });
            }
        }
        self.deliver(AppEvent::DialResult(outcome), now, unix);
    }

    /// Fires a digit-collection or ring timeout due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix: u64) {
        if self.dialing.as_ref().is_some_and(|d| d.deadline <= now) {
            self.next_target_or_finish(DialOutcome::NoAnswer, now, unix);
        }
        if self
            .gather
            .as_ref()
            .and_then(|g| g.deadline.into_iter().chain(g.overall).min())
            .is_some_and(|d| d <= now)
        {
            self.finish_gather(GatherEnd::Timeout, now, unix);
        }
    }

    /// Next thing to do outside.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Whether a digit pressed now goes into a secret collection (a PIN): the log masks it.
    pub fn digits_are_secret(&self) -> bool {
        self.gather.as_ref().is_some_and(|g| g.spec.secret)
    }

    fn finish_gather(&mut self, end: GatherEnd, now: Instant, unix: u64) {
        let Some(g) = self.gather.take() else { return };
        self.deliver(
            AppEvent::Gathered {
                digits: g.digits,
                end,
            },
            now,
            unix,
        );
    }

    /// Starts the first-digit timer once nothing plays before the gather.
    fn arm_gather(&mut self, now: Instant) {
        if self.playing.is_some() {
            return;
        }
        if let Some(g) = self.gather.as_mut() {
            if g.deadline.is_none() {
                g.deadline = Some(
                    now + if g.digits.is_empty() {
                        g.spec.first_digit_timeout
                    } else {
                        g.spec.inter_digit_timeout
                    },
                );
            }
        }
    }

    fn deliver(&mut self, ev: AppEvent, now: Instant, unix: u64) {
        if self.ended {
            return;
        }
        self.cx.unix_now = unix;
        let verbs = self.app.on_event(ev, &self.cx);
        self.run(verbs, now, unix);
    }

    fn run(&mut self, verbs: Vec<Verb>, now: Instant, unix: u64) {
        let mut verbs: VecDeque<Verb> = verbs.into();
        while let Some(v) = verbs.pop_front() {
            if self.ended {
                return;
            }
            let needs_media = matches!(
                v,
                Verb::Play { .. }
                    | Verb::StopPlayback
                    | Verb::Echo
                    | Verb::Gather(_)
                    | Verb::Record { .. }
                    | Verb::StopRecording
            );
            if needs_media && !self.media_ready {
                if !self.answered {
                    // Media verbs imply the answer (as `play` does in most call-control APIs).
                    self.answered = true;
                    self.effects.push_back(Effect::Answer);
                }
                self.waiting.push_back(v);
                continue;
            }
            match v {
                Verb::Ring => self.effects.push_back(Effect::Ring),
                Verb::Answer => {
                    if !self.answered {
                        self.answered = true;
                        self.effects.push_back(Effect::Answer);
                    }
                }
                Verb::Reject { code, reason } => {
                    self.ended = true;
                    let e = if self.answered {
                        Effect::Hangup {
                            cause: HangupCause::AppRefused,
                            reason,
                        }
                    } else {
                        Effect::Reject { code, reason }
                    };
                    self.effects.push_back(e);
                }
                Verb::Hangup { cause, reason } => {
                    self.ended = true;
                    self.effects.push_back(Effect::Hangup { cause, reason });
                    if let Some(leg) = self.peer.take() {
                        self.effects.push_back(Effect::HangupLeg { leg });
                    }
                }
                Verb::Play {
                    audio,
                    repeat,
                    barge_in,
                } => {
                    let tag = self.next_tag;
                    self.next_tag += 1;
                    self.playing = Some(tag);
                    self.play_barge_in = barge_in;
                    self.effects.push_back(Effect::Play {
                        audio,
                        repeat,
                        barge_in,
                        tag,
                    });
                }
                Verb::StopPlayback => {
                    self.playing = None;
                    self.effects.push_back(Effect::StopPlayback);
                    self.arm_gather(now);
                }
                Verb::Echo => {
                    self.playing = None;
                    self.effects.push_back(Effect::Echo);
                }
                Verb::Gather(spec) => {
                    let overall = spec.overall_timeout.map(|t| now + t);
                    self.gather = Some(Gathering {
                        spec,
                        digits: String::new(),
                        deadline: None,
                        overall,
                    });
                    self.arm_gather(now);
                }
                Verb::Record {
                    into,
                    stop_digits,
                    max_length,
                    max_silence,
                } => {
                    let path = match self.cx.services.recording_path(self.cx.tenant.id(), &into) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(call = self.cx.call, error = %e, ?into, "nowhere to record");
                            self.ended = true;
                            self.effects.push_back(Effect::Hangup {
                                cause: HangupCause::Server,
                                reason: "voicemail store unavailable".into(),
                            });
                            continue;
                        }
                    };
                    self.recording = Some(into);
                    self.effects.push_back(Effect::Record {
                        path,
                        opts: RecordOptions {
                            stop_digits,
                            max_length,
                            max_silence,
                            stereo: false,
                        },
                    });
                }
                Verb::StopRecording => self
                    .effects
                    .push_back(Effect::StopRecording(RecordSlot::App)),
                Verb::Dial {
                    targets,
                    ring_timeout,
                    sequential,
                    caller_id,
                } => {
                    let mut queue: VecDeque<DialTarget> = targets.into();
                    let now_targets: Vec<DialTarget> = if sequential {
                        queue.pop_front().into_iter().collect()
                    } else {
                        queue.drain(..).collect()
                    };
                    self.dialing = Some(Dialing {
                        legs: BTreeSet::new(),
                        users: now_targets
                            .iter()
                            .filter_map(|t| match t {
                                DialTarget::User(u) => Some(u.clone()),
                                DialTarget::Number(_) => None,
                            })
                            .collect(),
                        codes: Vec::new(),
                        deadline: now + ring_timeout,
                        next: queue,
                        ring_timeout,
                        caller_id: caller_id.clone(),
                    });
                    self.effects.push_back(Effect::Dial {
                        targets: now_targets,
                        caller_id,
                    });
                }
                Verb::Transfer { destination } => {
                    if !self.transfer(&destination, now, unix) {
                        tracing::info!(call = self.cx.call, %destination, "transfer destination reaches nothing");
                    }
                    return;
                }
                Verb::Route(target) => {
                    self.routes += 1;
                    if self.routes > MAX_ROUTES {
                        tracing::warn!(call = self.cx.call, "routing loop: hanging up");
                        self.ended = true;
                        self.effects.push_back(Effect::Hangup {
                            cause: HangupCause::AppHangup,
                            reason: "routing loop".into(),
                        });
                        return;
                    }
                    // The old app's pending work is void: its gather and its queued verbs.
                    verbs.clear();
                    self.gather = None;
                    if let Some(trail) = self.app.trail() {
                        if let Some(last) = self.path.last_mut() {
                            *last = format!("{}:{trail}", self.app.name());
                        }
                    }
                    self.app = (self.factory)(&target, &self.cx);
                    self.path.push(self.app.name().to_string());
                    self.deliver(AppEvent::Start, now, unix);
                    if self.media_ready {
                        self.deliver(AppEvent::MediaReady, now, unix);
                    }
                    return;
                }
            }
        }
    }
}

/// Digit collection timeouts used by the system apps.
pub const MENU_DIGIT_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::context;
    use crate::call::control::App;
    use std::sync::{Arc, Mutex};

    /// A fake app: answers Start with a scripted list of verbs and records what it was told.
    struct Fake {
        on_start: Vec<Verb>,
        seen: Arc<Mutex<Vec<AppEvent>>>,
    }

    impl App for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
            self.seen.lock().unwrap().push(ev.clone());
            match ev {
                AppEvent::Start => std::mem::take(&mut self.on_start),
                _ => vec![],
            }
        }
    }

    type Seen = Arc<Mutex<Vec<AppEvent>>>;

    thread_local! {
        static SCRIPT: std::cell::RefCell<Option<(Vec<Verb>, Seen)>> =
            const { std::cell::RefCell::new(None) };
    }

    fn factory(_: &Target, _: &CallContext) -> Box<dyn App> {
        let (on_start, seen) = SCRIPT.with(|s| s.borrow_mut().take()).expect("script");
        Box::new(Fake { on_start, seen })
    }

    fn session(verbs: Vec<Verb>) -> (CallSession, Arc<Mutex<Vec<AppEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        SCRIPT.with(|s| *s.borrow_mut() = Some((verbs, seen.clone())));
        let cx = context(serde_json::json!({"id": "t1", "name": "T1", "domains": ["t1.example"]}));
        (CallSession::new(cx, &Target::Echo, factory), seen)
    }

    fn effects(s: &mut CallSession) -> Vec<Effect> {
        std::iter::from_fn(|| s.poll_effect()).collect()
    }

    fn spec() -> GatherSpec {
        GatherSpec {
            max_digits: 3,
            terminators: "#".into(),
            first_digit_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(2),
            overall_timeout: None,
            secret: false,
        }
    }

    #[test]
    fn media_verbs_wait_for_the_answer_and_the_timer_starts_after_the_prompt() {
        let (mut s, seen) = session(vec![
            Verb::play(&["system/welcome"], true),
            Verb::Gather(spec()),
        ]);
        let t0 = Instant::now();
        s.start(t0, 0);
        assert_eq!(effects(&mut s), vec![Effect::Answer], "play implies answer");
        assert_eq!(s.poll_timeout(), None);
        s.on_media_ready(t0, 0);
        let e = effects(&mut s);
        let Effect::Play { tag, .. } = e[0] else {
            panic!("{e:?}")
        };
        assert_eq!(s.poll_timeout(), None, "no timer while the prompt plays");
        // A stale "done" of another playback changes nothing.
        s.on_playback_done(tag + 100, false, t0, 0);
        assert_eq!(s.poll_timeout(), None);
        let t1 = t0 + Duration::from_secs(7);
        s.on_playback_done(tag, false, t1, 0);
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(5)));
        // Nothing pressed: the gather ends empty at the deadline.
        s.handle_timeout(t1 + Duration::from_secs(5), 0);
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&AppEvent::Gathered {
                digits: String::new(),
                end: GatherEnd::Timeout
            })
        );
    }

    #[test]
    fn digits_during_a_barge_in_prompt_count_and_info_digits_stop_it() {
        let (mut s, seen) = session(vec![
            Verb::Answer,
            Verb::play(&["system/welcome"], true),
            Verb::Gather(spec()),
        ]);
        let t0 = Instant::now();
        s.start(t0, 0);
        s.on_media_ready(t0, 0);
        effects(&mut s);
        // A SIP INFO digit: the session stops the prompt itself.
        s.on_digit('4', false, t0, 0);
        assert_eq!(effects(&mut s), vec![Effect::StopPlayback]);
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + Duration::from_secs(2)),
            "inter-digit"
        );
        s.on_digit('2', true, t0 + Duration::from_secs(1), 0);
        s.on_digit('#', true, t0 + Duration::from_secs(2), 0);
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&AppEvent::Gathered {
                digits: "42".into(),
                end: GatherEnd::Terminator
            })
        );
        assert_eq!(s.poll_timeout(), None);
        // Outside a gather, a digit is just a digit.
        s.on_digit('9', true, t0, 0);
        assert_eq!(seen.lock().unwrap().last(), Some(&AppEvent::Digit('9')));
    }

    #[test]
    fn the_overall_timeout_ends_a_slow_entry() {
        let mut g = spec();
        g.overall_timeout = Some(Duration::from_secs(6));
        let (mut s, seen) = session(vec![Verb::Answer, Verb::Gather(g)]);
        let t0 = Instant::now();
        s.start(t0, 0);
        s.on_media_ready(t0, 0);
        // A digit every 1.5 s never trips the 2 s inter-digit timer, but 6 s is the limit.
        s.on_digit('1', true, t0 + Duration::from_millis(4500), 0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        s.handle_timeout(t0 + Duration::from_secs(6), 0);
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&AppEvent::Gathered {
                digits: "1".into(),
                end: GatherEnd::Timeout
            })
        );
    }

    #[test]
    fn max_digits_ends_collection_and_hangup_stops_everything() {
        let (mut s, seen) = session(vec![Verb::Answer, Verb::Gather(spec())]);
        let t0 = Instant::now();
        s.start(t0, 0);
        s.on_media_ready(t0, 0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        for d in ['1', '2', '3'] {
            s.on_digit(d, true, t0, 0);
        }
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&AppEvent::Gathered {
                digits: "123".into(),
                end: GatherEnd::MaxDigits
            })
        );
        s.on_ended();
        let n = seen.lock().unwrap().len();
        s.on_digit('5', true, t0, 0);
        assert_eq!(
            seen.lock().unwrap().len(),
            n,
            "nothing delivered after the end"
        );
    }
}

#[cfg(test)]
mod dial_tests {
    use super::*;
    use crate::apps::testing::context;
    use crate::call::control::App;

    struct Dialer;
    impl App for Dialer {
        fn name(&self) -> &'static str {
            "dialer"
        }
        fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
            match ev {
                AppEvent::Start => vec![Verb::Dial {
                    targets: vec![
                        DialTarget::User("100".into()),
                        DialTarget::User("101".into()),
                    ],
                    ring_timeout: Duration::from_secs(10),
                    sequential: true,
                    caller_id: Some("+15550100".into()),
                }],
                _ => vec![],
            }
        }
    }

    fn factory(_: &Target, _: &CallContext) -> Box<dyn App> {
        Box::new(Dialer)
    }

    #[test]
    fn sequential_dial_moves_on_after_the_ring_timeout_and_a_failure() {
        let cx = context(serde_json::json!({"id": "t1", "name": "T1", "domains": ["t1.example"]}));
        let mut s = CallSession::new(cx, &Target::Echo, factory);
        let t0 = Instant::now();
        s.start(t0, 0);
        let e: Vec<Effect> = std::iter::from_fn(|| s.poll_effect()).collect();
        assert_eq!(
            e,
            vec![Effect::Dial {
                targets: vec![DialTarget::User("100".into())],
                caller_id: Some("+15550100".into())
            }]
        );
        s.on_dial_started(&[10], t0, 0);
        s.on_leg_progress(10);
        assert_eq!(s.poll_effect(), Some(Effect::Ring));
        // 100 does not answer in 10 s: its leg is ended and 101 is tried.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.poll_timeout(), Some(t1));
        s.handle_timeout(t1, 0);
        let e: Vec<Effect> = std::iter::from_fn(|| s.poll_effect()).collect();
        assert_eq!(
            e,
            vec![
                Effect::HangupLeg { leg: 10 },
                Effect::Dial {
                    targets: vec![DialTarget::User("101".into())],
                    caller_id: Some("+15550100".into())
                }
            ]
        );
        // The first leg's end arrives late: it changes nothing.
        s.on_leg_gone(10, Some(487), t1, 0);
        s.on_dial_started(&[11], t1, 0);
        s.on_leg_answered(11, t1, 0);
        let e: Vec<Effect> = std::iter::from_fn(|| s.poll_effect()).collect();
        assert_eq!(e, vec![Effect::Answer, Effect::Bridge { leg: 11 }]);
        assert_eq!(s.peer(), Some(11));
    }
}

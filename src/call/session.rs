//! One call's control state: its app, digit collection with its timers, what is playing or
//! recording. Sans-IO: events and the current time go in, [`Effect`]s come out
//! ([`CallSession::poll_effect`]), and [`CallSession::poll_timeout`] says when to call
//! [`CallSession::handle_timeout`]. The runner turns effects into SIP actions and media engine
//! commands.

use super::control::{App, AppEvent, CallContext, GatherEnd, GatherSpec, Verb};
use crate::media::leg::{RecordOptions, RecordStop};
use crate::media::Audio;
use crate::tenant::model::Target;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Builds the app for a routing target.
pub type AppFactory = fn(&Target, &CallContext) -> Box<dyn App>;

/// What the session needs done outside itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send 180.
    Ring,
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
        /// Why.
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
    /// Stop recording.
    StopRecording,
}

struct Gathering {
    spec: GatherSpec,
    digits: String,
    /// None while the prompt before it still plays.
    deadline: Option<Instant>,
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
    recording: bool,
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
            recording: false,
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
        if self.recording && !from_media {
            // A stop digit by INFO ends the recording like one sent in the audio would.
            self.effects.push_back(Effect::StopRecording);
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
        self.recording = false;
        self.deliver(
            AppEvent::Recorded {
                path,
                duration_ms,
                reason,
            },
            now,
            unix,
        );
    }

    /// The call is gone (the caller hung up, or we did): nothing more will be delivered.
    pub fn on_ended(&mut self) {
        self.ended = true;
        self.gather = None;
        self.waiting.clear();
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.gather.as_ref().and_then(|g| g.deadline)
    }

    /// Fires a digit-collection timeout due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix: u64) {
        if self
            .gather
            .as_ref()
            .and_then(|g| g.deadline)
            .is_some_and(|d| d <= now)
        {
            self.finish_gather(GatherEnd::Timeout, now, unix);
        }
    }

    /// Next thing to do outside.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
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
                        Effect::Hangup { reason }
                    } else {
                        Effect::Reject { code, reason }
                    };
                    self.effects.push_back(e);
                }
                Verb::Hangup { reason } => {
                    self.ended = true;
                    self.effects.push_back(Effect::Hangup { reason });
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
                    self.gather = Some(Gathering {
                        spec,
                        digits: String::new(),
                        deadline: None,
                    });
                    self.arm_gather(now);
                }
                Verb::Record {
                    path,
                    stop_digits,
                    max_length,
                    max_silence,
                } => {
                    self.recording = true;
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
                Verb::StopRecording => self.effects.push_back(Effect::StopRecording),
                Verb::Route(target) => {
                    self.routes += 1;
                    if self.routes > MAX_ROUTES {
                        tracing::warn!(call = self.cx.call, "routing loop: hanging up");
                        self.ended = true;
                        self.effects.push_back(Effect::Hangup {
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

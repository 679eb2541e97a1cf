//! The call-control API: the verbs an app issues and the events it receives.
//!
//! An app is a plain state machine ([`App`]): it gets an [`AppEvent`] and the call's
//! [`CallContext`] and answers with [`Verb`]s. It never sees SIP or RTP, a socket or a clock;
//! the [`CallSession`](super::session::CallSession) turns verbs into SIP and media commands and
//! back, and owns the timers (digit collection). That is what lets every app be tested by feeding
//! it scripted events, and what lets one app hand the call to another ([`Verb::Route`]) — the IVR
//! sending a caller to a mailbox, say.

use crate::media::leg::RecordStop;
use crate::media::Audio;
use crate::tenant::model::Target;
use crate::tenant::Tenant;
use std::sync::Arc;
use std::time::Duration;

/// What an app asks of its call. `Dial` bridges the caller to whoever answers (the `bridge`
/// of the call-control API); `Transfer` moves the caller on.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    /// Tell the caller we are ringing (180).
    Ring,
    /// Answer (200 with SDP); media verbs issued before the audio is up wait for it.
    Answer,
    /// Refuse the call before answering (a final SIP error).
    Reject {
        /// SIP status.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// Play audio, replacing whatever was playing.
    Play {
        /// What to play, in order.
        audio: Vec<Audio>,
        /// Start again at the end, until stopped.
        repeat: bool,
        /// A key press stops playback.
        barge_in: bool,
    },
    /// Stop playback.
    StopPlayback,
    /// Send the caller's audio back (echo test).
    Echo,
    /// Collect digits; ends with [`AppEvent::Gathered`]. Digits pressed during a barge-in
    /// prompt issued just before count.
    Gather(GatherSpec),
    /// Record the caller; ends with [`AppEvent::Recorded`].
    Record {
        /// What the recording is (the call layer decides where it is kept).
        into: RecordTarget,
        /// Digits that stop the recording (and are not recorded).
        stop_digits: String,
        /// Longest recording.
        max_length: Duration,
        /// Stop after this much silence.
        max_silence: Option<Duration>,
    },
    /// Stop recording.
    StopRecording,
    /// Ring destinations and bridge the caller to the first that answers; ends with
    /// [`AppEvent::DialResult`]. The caller hears 180 while they ring and is answered when one
    /// answers. A user rings every registered phone at once.
    Dial {
        /// Who to ring.
        targets: Vec<DialTarget>,
        /// Ring time (per target when sequential).
        ring_timeout: Duration,
        /// One target after the other instead of all at once.
        sequential: bool,
        /// Caller ID to present instead of the caller's own.
        caller_id: Option<String>,
    },
    /// Blind-transfer the caller to what `destination` reaches in the tenant (extension, tenant
    /// number, or an external number a route allows); whoever it was bridged to is hung up.
    Transfer {
        /// Dial string.
        destination: String,
    },
    /// Hand the call to the app for `target` (a sub-menu, a mailbox, a user).
    Route(Target),
    /// End the call.
    Hangup {
        /// Why, for the call record.
        cause: HangupCause,
        /// Why, for the log.
        reason: String,
    },
}

impl Verb {
    /// `Play` of prompts by name.
    pub fn play(prompts: &[&str], barge_in: bool) -> Verb {
        Verb::Play {
            audio: prompts
                .iter()
                .map(|p| Audio::Prompt((*p).to_string()))
                .collect(),
            repeat: false,
            barge_in,
        }
    }

    /// `Dial` of these targets all at once, with the caller's own caller ID.
    pub fn dial(targets: Vec<DialTarget>, ring_timeout: Duration) -> Verb {
        Verb::Dial {
            targets,
            ring_timeout,
            sequential: false,
            caller_id: None,
        }
    }

    /// `Hangup` with a reason.
    pub fn hangup(reason: &str) -> Verb {
        Verb::Hangup {
            cause: HangupCause::AppHangup,
            reason: reason.to_string(),
        }
    }

    /// End the call because the party it was bridged to hung up.
    pub fn hangup_after_peer() -> Verb {
        Verb::Hangup {
            cause: HangupCause::CalleeHangup,
            reason: "called party hung up".to_string(),
        }
    }
}

/// How digits are collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherSpec {
    /// Stop after this many digits.
    pub max_digits: usize,
    /// Digits that end collection early (not included in the result), e.g. `#`.
    pub terminators: String,
    /// Wait for the first digit, counted from the end of the prompt.
    pub first_digit_timeout: Duration,
    /// Wait between digits.
    pub inter_digit_timeout: Duration,
    /// Longest the whole collection may take, prompt included (None: no limit).
    pub overall_timeout: Option<Duration>,
    /// The digits are a secret (a PIN): the log shows `*` for each.
    pub secret: bool,
}

impl GatherSpec {
    /// One key press within `timeout`.
    pub fn one_digit(timeout: Duration) -> GatherSpec {
        GatherSpec {
            max_digits: 1,
            terminators: String::new(),
            first_digit_timeout: timeout,
            inter_digit_timeout: timeout,
            overall_timeout: None,
            secret: false,
        }
    }

    /// Up to `max` digits ended by `#`.
    pub fn until_pound(max: usize, timeout: Duration) -> GatherSpec {
        GatherSpec {
            max_digits: max,
            terminators: "#".into(),
            first_digit_timeout: timeout,
            inter_digit_timeout: Duration::from_secs(5),
            overall_timeout: None,
            secret: false,
        }
    }

    /// The same collection, with the digits masked in the log (PIN entry).
    pub fn secret(mut self) -> GatherSpec {
        self.secret = true;
        self
    }
}

/// Why digit collection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherEnd {
    /// A terminator digit was pressed.
    Terminator,
    /// `max_digits` reached.
    MaxDigits,
    /// A timeout passed (the digits so far are reported).
    Timeout,
}

/// What happens to a call, as its app sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// The app has the call (first event, also after a [`Verb::Route`]).
    Start,
    /// The call is answered and audio flows.
    MediaReady,
    /// A playback ended.
    PlaybackDone {
        /// True when a key press cut it short.
        interrupted: bool,
    },
    /// Digit collection ended.
    Gathered {
        /// The digits, without terminator.
        digits: String,
        /// Why it ended.
        end: GatherEnd,
    },
    /// A key press outside digit collection.
    Digit(char),
    /// A [`Verb::Dial`] ended.
    DialResult(DialOutcome),
    /// The party the caller was bridged to hung up.
    PeerHungUp,
    /// A recording ended.
    Recorded {
        /// What was recorded (as asked in [`Verb::Record`]).
        into: RecordTarget,
        /// Audio length.
        duration_ms: u64,
        /// Why it stopped.
        reason: RecordStop,
    },
}

/// What an app records. Apps never see file paths: the call layer maps this to the storage
/// that keeps it, and the app then keeps or drops it through the mailbox store by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordTarget {
    /// The audio of voicemail message `id` of `mailbox` (an id from
    /// `MailStore::new_message_id`); listed once the app commits the message.
    Message {
        /// Mailbox id.
        mailbox: String,
        /// Message id.
        id: String,
    },
    /// A new greeting for `mailbox`: it replaces the old one only when the app keeps it.
    Greeting {
        /// Mailbox id.
        mailbox: String,
    },
}

/// One destination of a [`Verb::Dial`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// Every registered phone of this extension.
    User(String),
    /// An external number, through the outbound route that allows it.
    Number(String),
}

/// How a [`Verb::Dial`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// Someone answered; the caller is bridged to them.
    Answered,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// Every phone said busy (486, 600).
    Busy,
    /// No phone registered, or every one failed (the last SIP status).
    Unavailable(u16),
}

pub use crate::records::call::{Caller, HangupCause};

/// What an app knows about its call. The tenant is the snapshot taken when the call arrived:
/// a menu changed while the call is in it does not change under the caller.
#[derive(Clone)]
pub struct CallContext {
    /// The endpoint's call id.
    pub call: u64,
    /// The tenant, as it was when the call arrived.
    pub tenant: Arc<Tenant>,
    /// Who is calling.
    pub caller: Caller,
    /// What was dialed.
    pub dialed: String,
    /// Wall clock at the event, unix seconds (for time-of-day routing and message dates).
    pub unix_now: u64,
    /// Shared services apps use (message store).
    pub services: Arc<super::Services>,
}

/// A call app. See the module documentation.
pub trait App: Send {
    /// Short name, shown in the live call list and the call record (`ivr`, `voicemail`, …).
    fn name(&self) -> &'static str;

    /// Reacts to an event with verbs, executed in order.
    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb>;

    /// A label for the call record's path (the IVR menu and digits, the mailbox), if any.
    fn trail(&self) -> Option<String> {
        None
    }
}

//! Connects calls to the media engine: starts a leg when the endpoint says a call's audio is
//! negotiated, gives it its behaviour from the routing target, and turns media events back
//! into call actions (an RTP timeout hangs the call up).

use crate::media::engine::params_from_sdp;
use crate::media::leg::{InbandDtmf, LegEvent, RecordOptions};
use crate::media::{LegId, MediaEngine, MediaEvent};
use crate::sip::endpoint::CallEvent;
use crate::tenant::model::Target;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Something the SIP side must do because of media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Hang the call up (BYE).
    Hangup {
        /// Call id (the endpoint's).
        call: u64,
        /// Why, for the log.
        reason: &'static str,
    },
}

/// Where a voicemail deposit stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deposit {
    /// Greeting and beep playing.
    Greeting { path: PathBuf },
    /// Recording the caller.
    Recording,
    /// Goodbye playing; hang up when it ends.
    Goodbye,
}

/// Media side of every live call.
pub struct CallRunner {
    engine: MediaEngine,
    legs: HashMap<u64, LegId>,
    calls: HashMap<LegId, u64>,
    deposits: HashMap<LegId, Deposit>,
    rtp_timeout: Duration,
    inband: InbandDtmf,
    voicemail_dir: PathBuf,
}

impl CallRunner {
    /// A runner driving `engine`.
    /// Voicemail messages are written under `voicemail_dir/TENANT/MAILBOX/`.
    pub fn new(
        engine: MediaEngine,
        rtp_timeout: Duration,
        inband: InbandDtmf,
        voicemail_dir: PathBuf,
    ) -> CallRunner {
        CallRunner {
            engine,
            legs: HashMap::new(),
            calls: HashMap::new(),
            deposits: HashMap::new(),
            rtp_timeout,
            inband,
            voicemail_dir,
        }
    }

    /// Live media legs.
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// Applies an endpoint event.
    pub fn on_call_event(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::MediaStart {
                call,
                lease,
                audio,
                target,
                tenant,
            } => {
                let params = params_from_sdp(&audio, self.rtp_timeout, self.inband);
                let leg = match self.engine.create_leg(lease, params) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(call, error = %e, "no media for call");
                        return;
                    }
                };
                self.legs.insert(call, leg);
                self.calls.insert(leg, call);
                let started = match &target {
                    Target::Echo => self.engine.echo(leg),
                    Target::PromptLoop { prompt } => {
                        self.engine.play(leg, &[prompt.as_str()], true, false)
                    }
                    Target::Voicemail { mailbox } => {
                        let path = self
                            .voicemail_dir
                            .join(&tenant)
                            .join(mailbox)
                            .join(format!("{}-{call}.wav", unix_secs()));
                        self.deposits.insert(leg, Deposit::Greeting { path });
                        // A key press skips the greeting (barge-in); recording starts after it.
                        self.engine
                            .play(leg, &["system/leave-message", "system/beep"], false, true)
                    }
                    // The IVR and mailbox menus are driven by the call apps; until they run, the
                    // caller hears silence (the call is held open).
                    _ => Ok(()),
                };
                if let Err(e) = started {
                    tracing::error!(call, %tenant, error = %e, "cannot start the call's media behaviour");
                }
            }
            CallEvent::MediaUpdate { call, audio } => {
                if let Some(&leg) = self.legs.get(&call) {
                    let _ = self
                        .engine
                        .update(leg, params_from_sdp(&audio, self.rtp_timeout, self.inband));
                }
            }
            CallEvent::Digit { call, digit } => {
                tracing::info!(call, %digit, source = "SipInfo", "digit received");
                // Barge-in and digit collection see INFO digits like any other.
                if let Some(&leg) = self.legs.get(&call) {
                    if matches!(self.deposits.get(&leg), Some(Deposit::Recording)) && digit == '#' {
                        let _ = self.engine.stop_recording(leg);
                    }
                }
            }
            CallEvent::Ended { call } => {
                if let Some(leg) = self.legs.remove(&call) {
                    let _ = self.engine.destroy(leg);
                }
            }
        }
    }

    /// Advances a voicemail deposit after playback or recording ends.
    fn deposit_step(&mut self, leg: LegId, call: u64, recorded: Option<()>) -> Option<CallAction> {
        match (self.deposits.get(&leg).cloned(), recorded) {
            (Some(Deposit::Greeting { path }), None) => {
                let opts = RecordOptions {
                    stop_digits: "#".into(),
                    max_length: Duration::from_secs(120),
                    max_silence: Some(Duration::from_secs(5)),
                    stereo: false,
                };
                self.deposits.insert(leg, Deposit::Recording);
                if let Err(e) = self.engine.record(leg, path, opts) {
                    tracing::error!(call, error = %e, "cannot record voicemail");
                }
                None
            }
            (Some(Deposit::Recording), Some(())) => {
                self.deposits.insert(leg, Deposit::Goodbye);
                if self
                    .engine
                    .play(leg, &["system/goodbye"], false, false)
                    .is_err()
                {
                    return Some(CallAction::Hangup {
                        call,
                        reason: "voicemail done",
                    });
                }
                None
            }
            (Some(Deposit::Goodbye), None) => {
                self.deposits.remove(&leg);
                Some(CallAction::Hangup {
                    call,
                    reason: "voicemail done",
                })
            }
            _ => None,
        }
    }

    /// Applies a media event; returns what the SIP side must do.
    pub fn on_media_event(&mut self, ev: MediaEvent) -> Option<CallAction> {
        match ev {
            MediaEvent::Leg { leg, event } => {
                let call = *self.calls.get(&leg)?;
                match event {
                    LegEvent::RtpTimeout => Some(CallAction::Hangup {
                        call,
                        reason: "no RTP from the caller (media timeout)",
                    }),
                    LegEvent::Digit { digit, source } => {
                        tracing::info!(call, %digit, ?source, "digit received");
                        None
                    }
                    LegEvent::PlaybackDone { .. } => self.deposit_step(leg, call, None),
                    LegEvent::RecordingDone {
                        path,
                        duration_ms,
                        reason,
                    } => {
                        tracing::info!(call, path = %path.display(), duration_ms, ?reason, "voicemail recorded");
                        self.deposit_step(leg, call, Some(()))
                    }
                }
            }
            MediaEvent::Closed { leg, quality } => {
                self.deposits.remove(&leg);
                if let Some(call) = self.calls.remove(&leg) {
                    tracing::info!(
                        call,
                        sent = quality.packets_sent,
                        received = quality.packets_received,
                        lost = quality.packets_lost,
                        jitter_ms = format!("{:.1}", quality.jitter_ms),
                        mos = format!("{:.2}", quality.mos),
                        "media closed"
                    );
                    self.legs.remove(&call);
                }
                None
            }
            MediaEvent::RelayDigitByInfo { .. } => None,
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

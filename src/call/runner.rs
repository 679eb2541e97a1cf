//! Connects calls to the media engine: starts a leg when the endpoint says a call's audio is
//! negotiated, gives it its behaviour from the routing target, and turns media events back
//! into call actions (an RTP timeout hangs the call up).

use crate::media::engine::params_from_sdp;
use crate::media::leg::{InbandDtmf, LegEvent};
use crate::media::{LegId, MediaEngine, MediaEvent};
use crate::sip::endpoint::CallEvent;
use crate::tenant::model::Target;
use std::collections::HashMap;
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

/// Media side of every live call.
pub struct CallRunner {
    engine: MediaEngine,
    legs: HashMap<u64, LegId>,
    calls: HashMap<LegId, u64>,
    rtp_timeout: Duration,
    inband: InbandDtmf,
}

impl CallRunner {
    /// A runner driving `engine`.
    pub fn new(engine: MediaEngine, rtp_timeout: Duration, inband: InbandDtmf) -> CallRunner {
        CallRunner {
            engine,
            legs: HashMap::new(),
            calls: HashMap::new(),
            rtp_timeout,
            inband,
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
                    // IVR, voicemail and the rest are driven by the call apps; until they run, the
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
            CallEvent::Ended { call } => {
                if let Some(leg) = self.legs.remove(&call) {
                    let _ = self.engine.destroy(leg);
                }
            }
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
                    _ => None,
                }
            }
            MediaEvent::Closed { leg, quality } => {
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

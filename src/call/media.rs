//! Media as the call layer drives it: start the leg the SIP side reserved, play, record,
//! echo, bridge, destroy. [`CallMedia`] is the runner's only way to media, so the runner runs
//! in unit tests against a fake that records what it was asked ([`FakeMedia`]) and in the
//! server against the engine ([`EngineMedia`]).

use crate::media::engine::params_from_sdp;
use crate::media::leg::{InbandDtmf, RecordOptions, RecordSlot};
use crate::media::{Audio, LegId, MediaEngine, MediaError, MediaReservations};
use crate::sdp::NegotiatedAudio;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the runner asks of media. Each call returns at once (commands are queued to the
/// engine's workers); results arrive later as media events.
pub trait CallMedia: Send {
    /// Starts the media reserved for call or leg `call` with the negotiated `audio`; `beside`
    /// names a leg it will be bridged to (on its worker, so the bridge costs no hand-over).
    /// `None` when nothing is reserved any more (the call ended before its media started).
    fn start(
        &mut self,
        call: u64,
        audio: &NegotiatedAudio,
        signalling_ip: IpAddr,
        beside: Option<LegId>,
    ) -> Result<Option<LegId>, MediaError>;
    /// The audio was renegotiated (re-INVITE: hold, resume, new address).
    fn update(&mut self, leg: LegId, audio: &NegotiatedAudio) -> Result<(), MediaError>;
    /// Plays prompts and files in order; `tag` comes back in the playback-done event.
    fn play(
        &mut self,
        leg: LegId,
        items: &[Audio],
        looped: bool,
        barge_in: bool,
        tag: u64,
    ) -> Result<(), MediaError>;
    /// Stops playback.
    fn stop_playback(&mut self, leg: LegId) -> Result<(), MediaError>;
    /// Sends the leg's audio back to it.
    fn echo(&mut self, leg: LegId) -> Result<(), MediaError>;
    /// Starts recording into `path`.
    fn record(&mut self, leg: LegId, path: PathBuf, opts: RecordOptions) -> Result<(), MediaError>;
    /// Stops a recording.
    fn stop_recording(&mut self, leg: LegId, which: RecordSlot) -> Result<(), MediaError>;
    /// Connects two legs' audio both ways (across workers when they were made apart).
    fn bridge(&mut self, a: LegId, b: LegId) -> Result<(), MediaError>;
    /// Ends a leg's media (its closed event follows with its figures).
    fn destroy(&mut self, leg: LegId) -> Result<(), MediaError>;
}

/// [`CallMedia`] on the real engine, with the reservations the SIP endpoint made.
pub struct EngineMedia {
    /// The engine.
    pub engine: MediaEngine,
    /// What the SIP side reserved per call.
    pub reservations: MediaReservations,
    /// A leg is dropped after this long without RTP.
    pub rtp_timeout: Duration,
    /// In-band DTMF detection policy.
    pub inband: InbandDtmf,
}

impl CallMedia for EngineMedia {
    fn start(
        &mut self,
        call: u64,
        audio: &NegotiatedAudio,
        signalling_ip: IpAddr,
        beside: Option<LegId>,
    ) -> Result<Option<LegId>, MediaError> {
        let Some(reserved) = self.reservations.take(call) else {
            return Ok(None);
        };
        let mut params = params_from_sdp(audio, self.rtp_timeout, self.inband);
        // Browser legs are vouched for by ICE; their signalling may come through a reverse
        // proxy on another host.
        if reserved.webrtc.is_none() {
            params.signalling_ip = Some(signalling_ip);
        }
        let leg = match beside {
            Some(other) => self.engine.create_leg_beside(other, reserved, params)?,
            None => self.engine.create_leg(reserved, params)?,
        };
        Ok(Some(leg))
    }

    fn update(&mut self, leg: LegId, audio: &NegotiatedAudio) -> Result<(), MediaError> {
        self.engine
            .update(leg, params_from_sdp(audio, self.rtp_timeout, self.inband))
    }

    fn play(
        &mut self,
        leg: LegId,
        items: &[Audio],
        looped: bool,
        barge_in: bool,
        tag: u64,
    ) -> Result<(), MediaError> {
        self.engine.play_audio(leg, items, looped, barge_in, tag)
    }

    fn stop_playback(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.engine.stop_playback(leg)
    }

    fn echo(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.engine.echo(leg)
    }

    fn record(&mut self, leg: LegId, path: PathBuf, opts: RecordOptions) -> Result<(), MediaError> {
        self.engine.record(leg, path, opts)
    }

    fn stop_recording(&mut self, leg: LegId, which: RecordSlot) -> Result<(), MediaError> {
        self.engine.stop_recording(leg, which)
    }

    fn bridge(&mut self, a: LegId, b: LegId) -> Result<(), MediaError> {
        self.engine.bridge(a, b)
    }

    fn destroy(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.engine.destroy(leg)
    }
}

/// What a [`FakeMedia`] was asked, in order.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCall {
    /// A leg started for this call or leg id, beside another leg or not.
    Start {
        call: u64,
        leg: LegId,
        beside: Option<LegId>,
    },
    /// Renegotiated.
    Update { leg: LegId, hold: bool },
    /// Playback of these items.
    Play {
        leg: LegId,
        items: Vec<Audio>,
        tag: u64,
    },
    /// Playback stopped.
    StopPlayback(LegId),
    /// Echo.
    Echo(LegId),
    /// Recording into this path.
    Record { leg: LegId, path: PathBuf },
    /// Recording stopped.
    StopRecording(LegId),
    /// Two legs bridged.
    Bridge(LegId, LegId),
    /// A leg destroyed.
    Destroy(LegId),
}

/// A [`CallMedia`] that does nothing but remember what it was asked (a shared log, so a test
/// keeps a clone) and hand out leg ids from 1. Every call id has media reserved unless the
/// test said otherwise ([`FakeMedia::unreserve`]).
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct FakeMedia {
    log: std::sync::Arc<std::sync::Mutex<Vec<MediaCall>>>,
    legs: std::sync::Arc<std::sync::atomic::AtomicU64>,
    unreserved: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

#[cfg(test)]
impl FakeMedia {
    /// Everything asked so far (and forgets it).
    pub fn take(&self) -> Vec<MediaCall> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Call `call` has nothing reserved (it ended before its media started).
    pub fn unreserve(&self, call: u64) {
        self.unreserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call);
    }

    fn push(&self, c: MediaCall) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    fn next_leg(&self) -> LegId {
        LegId(1000 + self.legs.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

#[cfg(test)]
impl CallMedia for FakeMedia {
    fn start(
        &mut self,
        call: u64,
        _audio: &NegotiatedAudio,
        _signalling_ip: IpAddr,
        beside: Option<LegId>,
    ) -> Result<Option<LegId>, MediaError> {
        if self
            .unreserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&call)
        {
            return Ok(None);
        }
        let leg = self.next_leg();
        self.push(MediaCall::Start { call, leg, beside });
        Ok(Some(leg))
    }

    fn update(&mut self, leg: LegId, audio: &NegotiatedAudio) -> Result<(), MediaError> {
        self.push(MediaCall::Update {
            leg,
            hold: audio.is_hold(),
        });
        Ok(())
    }

    fn play(
        &mut self,
        leg: LegId,
        items: &[Audio],
        _looped: bool,
        _barge_in: bool,
        tag: u64,
    ) -> Result<(), MediaError> {
        self.push(MediaCall::Play {
            leg,
            items: items.to_vec(),
            tag,
        });
        Ok(())
    }

    fn stop_playback(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.push(MediaCall::StopPlayback(leg));
        Ok(())
    }

    fn echo(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.push(MediaCall::Echo(leg));
        Ok(())
    }

    fn record(
        &mut self,
        leg: LegId,
        path: PathBuf,
        _opts: RecordOptions,
    ) -> Result<(), MediaError> {
        self.push(MediaCall::Record { leg, path });
        Ok(())
    }

    fn stop_recording(&mut self, leg: LegId, _which: RecordSlot) -> Result<(), MediaError> {
        self.push(MediaCall::StopRecording(leg));
        Ok(())
    }

    fn bridge(&mut self, a: LegId, b: LegId) -> Result<(), MediaError> {
        self.push(MediaCall::Bridge(a, b));
        Ok(())
    }

    fn destroy(&mut self, leg: LegId) -> Result<(), MediaError> {
        self.push(MediaCall::Destroy(leg));
        Ok(())
    }
}

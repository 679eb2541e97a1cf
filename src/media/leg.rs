//! One call leg's media, with no I/O: received datagrams and 20 ms ticks in, datagrams to send
//! and events out. The worker owns sockets and the clock; everything here is testable by
//! handing in bytes and instants.
//!
//! Per tick the worker asks each leg for its received frame ([`Leg::pull_frame`]), decides what
//! each leg hears (silence, a prompt, its own audio for the echo test, or its bridge partner's
//! frame) and hands that to [`Leg::send_frame`], which encodes it — or sends queued RFC 4733
//! digits instead — with continuous sequence numbers and timestamps.

use super::dtmf::{digit_code, EventDeduplicator, TelephoneEvent, ToneDetector};
use super::g711::Law;
use super::jitter::JitterBuffer;
use super::prompts::PromptAudio;
use super::rtcp::{self, PeerReport};
use super::rtp::{Latch, ReceiveStats, RtcpLatch, RtpPacket, RtpSender};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;

/// When the in-band tone detector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InbandDtmf {
    /// Only when the peer did not negotiate telephone-event (what phones that send tones need,
    /// without spending the CPU on every call).
    Auto,
    /// Always.
    Always,
    /// Never.
    Off,
}

/// How a leg sends and receives, from the SDP negotiation.
#[derive(Debug, Clone)]
pub struct LegParams {
    /// Codec.
    pub law: Law,
    /// Payload type of the codec.
    pub pt: u8,
    /// Payload type of telephone-event, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Peer's RTP address from SDP.
    pub remote_rtp: SocketAddr,
    /// Peer's RTCP address (RTP port + 1, or the RTP address with rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// RTCP multiplexed on the RTP port.
    pub rtcp_mux: bool,
    /// We may send (our direction is sendrecv or sendonly).
    pub send: bool,
    /// The peer will send (its direction is sendrecv or sendonly): RTP timeout applies.
    pub expect_rx: bool,
    /// Hang-up after this long without RTP from the peer.
    pub rtp_timeout: Duration,
    /// In-band DTMF detection.
    pub inband: InbandDtmf,
    /// Where the peer's signalling came from: besides the SDP host, the only host whose
    /// packets may teach the latch a new source (a phone behind NAT sends media from there).
    /// `None` lets any host prove itself.
    pub signalling_ip: Option<std::net::IpAddr>,
    /// SRTP keys from SDES (RFC 4568); the engine protects and unprotects, the leg sees
    /// plain RTP.
    pub srtp: Option<crate::sdp::SrtpKeys>,
}

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitSource {
    /// RFC 4733 telephone-event.
    Rfc4733,
    /// In-band tone.
    Inband,
}

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStop {
    /// A stop digit was pressed.
    Digit(char),
    /// Maximum length reached.
    MaxLength,
    /// Silence lasted too long.
    Silence,
    /// Stopped by command or the leg ended.
    Stopped,
}

/// Something the call layer should know.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// A key press.
    Digit {
        /// The digit.
        digit: char,
        /// How it arrived.
        source: DigitSource,
    },
    /// Playback finished (or was interrupted by a digit).
    PlaybackDone {
        /// True when barge-in cut it short.
        interrupted: bool,
        /// The tag given to [`Player::with_tag`], so a caller that replaced one playback with
        /// another can tell a late "done" of the old one from the new one's.
        tag: u64,
    },
    /// A recording ended.
    RecordingDone {
        /// File written.
        path: PathBuf,
        /// Audio length in ms.
        duration_ms: u64,
        /// Why it stopped.
        reason: RecordStop,
    },
    /// No RTP from the peer for the configured time.
    RtpTimeout,
}

/// One item of a playback: audio at hand, or audio the engine's loader is still reading.
///
/// Files (voicemail messages, greetings) and prompts not yet cached are read off the media
/// workers and off the caller's thread; the leg starts the playback at once and plays
/// silence until the clip's audio arrives, so a slow disk delays a prompt but never a packet
/// or a SIP answer. A clip that cannot be read is skipped (the loader reports why).
#[derive(Debug, Clone)]
pub enum Clip {
    /// Decoded 8 kHz audio.
    Ready(PromptAudio),
    /// Filled once by the loader: `Some` audio, or `None` when it cannot be read.
    Loading(Arc<OnceLock<Option<PromptAudio>>>),
}

impl Clip {
    /// The audio, once known (`Some(None)`: unreadable, skip it; `None`: still loading).
    fn audio(&self) -> Option<Option<&PromptAudio>> {
        match self {
            Clip::Ready(a) => Some(Some(a)),
            Clip::Loading(slot) => slot.get().map(Option::as_ref),
        }
    }

    /// True when the clip has (or may yet have) samples to play.
    fn may_have_audio(&self) -> bool {
        match self.audio() {
            Some(Some(a)) => !a.is_empty(),
            Some(None) => false,
            None => true,
        }
    }
}

/// Playback state.
#[derive(Debug, Clone)]
pub struct Player {
    items: Vec<Clip>,
    index: usize,
    pos: usize,
    looped: bool,
    barge_in: bool,
    tag: u64,
}

impl Player {
    /// Plays `items` in order (forever when `looped`); a digit stops it when `barge_in`.
    pub fn new(items: Vec<PromptAudio>, looped: bool, barge_in: bool) -> Player {
        Player::of_clips(
            items.into_iter().map(Clip::Ready).collect(),
            looped,
            barge_in,
        )
    }

    /// [`Player::new`] of clips some of which may still be loading.
    pub fn of_clips(items: Vec<Clip>, looped: bool, barge_in: bool) -> Player {
        Player {
            items,
            index: 0,
            pos: 0,
            looped,
            barge_in,
            tag: 0,
        }
    }

    /// Sets the tag reported in [`LegEvent::PlaybackDone`].
    pub fn with_tag(mut self, tag: u64) -> Player {
        self.tag = tag;
        self
    }

    /// Fills one frame; false once everything was played (the rest of the frame is silence).
    fn next(&mut self, out: &mut [i16; FRAME]) -> bool {
        let mut filled = 0;
        while filled < FRAME {
            let Some(clip) = self.items.get(self.index) else {
                if self.looped && self.items.iter().any(Clip::may_have_audio) {
                    self.index = 0;
                    self.pos = 0;
                    continue;
                }
                out[filled..].fill(0);
                return filled > 0;
            };
            let item = match clip.audio() {
                Some(Some(a)) => a,
                Some(None) => {
                    // Unreadable: skip it.
                    self.index += 1;
                    self.pos = 0;
                    continue;
                }
                None => {
                    // Still loading: silence until it is here, and the playback goes on.
                    out[filled..].fill(0);
                    return true;
                }
            };
            let n = (item.len() - self.pos).min(FRAME - filled);
            out[filled..filled + n].copy_from_slice(&item[self.pos..self.pos + n]);
            filled += n;
            self.pos += n;
            if self.pos >= item.len() {
                self.index += 1;
                self.pos = 0;
            }
        }
        true
    }
}

/// What a leg sends when not bridged.
#[derive(Debug, Clone)]
pub enum Source {
    /// Encoded silence (keeps NAT bindings and the peer's RTP timeout happy).
    Silence,
    /// The leg's own received audio (echo test).
    Echo,
    /// A prompt sequence.
    Play(Player),
}

/// Recording options.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOptions {
    /// Stop when one of these digits is pressed (the digit is not recorded as a digit event).
    pub stop_digits: String,
    /// Longest recording.
    pub max_length: Duration,
    /// Stop after this much continuous silence (None: never).
    pub max_silence: Option<Duration>,
    /// Two channels (this leg, its bridge partner) instead of one.
    pub stereo: bool,
}

/// Which of a leg's two recordings: an app's (a voicemail message, a greeting; mono) or the
/// call's own (by policy or on demand; stereo with the bridge partner). Both can run at once,
/// so a recorded call that reaches voicemail keeps its call recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSlot {
    /// An app's recording.
    App = 0,
    /// The call recording.
    Call = 1,
}

impl RecordOptions {
    /// The slot these options record into: the stereo call recording or an app's.
    pub fn slot(&self) -> RecordSlot {
        if self.stereo {
            RecordSlot::Call
        } else {
            RecordSlot::App
        }
    }
}

/// A recording in progress (the file itself is written by the recorder thread).
#[derive(Debug)]
pub struct Recording {
    /// Writer id.
    pub id: u64,
    /// Path.
    pub path: PathBuf,
    opts: RecordOptions,
    /// Interleaved samples not yet handed to the writer.
    pub pending: Vec<i16>,
    frames: u64,
    silent_frames: u64,
}

impl Recording {
    /// A new recording.
    pub fn new(id: u64, path: PathBuf, opts: RecordOptions) -> Recording {
        Recording {
            id,
            path,
            opts,
            pending: Vec::with_capacity(8000 * 2),
            frames: 0,
            silent_frames: 0,
        }
    }

    /// Channels in the file.
    pub fn channels(&self) -> u16 {
        if self.opts.stereo {
            2
        } else {
            1
        }
    }

    fn duration_ms(&self) -> u64 {
        self.frames * 20
    }
}

/// Sending an RFC 4733 digit.
#[derive(Debug, Clone, Copy)]
struct DtmfSend {
    code: u8,
    start_ts: u32,
    ticks: u32,
}

/// Comfort noise (RFC 3389) is the peer's media too, though we never decode it.
const COMFORT_NOISE_PT: u8 = 13;

/// How long we send to a peer that has sent us nothing we believe. Past this the SDP address
/// may be anyone's (a `c=` line is the caller's word), so we go quiet until the peer speaks.
pub const UNHEARD_SEND_GRACE: Duration = Duration::from_secs(10);

/// Ticks a sent digit lasts (100 ms) and the pause after it (40 ms).
const DTMF_TICKS: u32 = 5;
const DTMF_GAP_TICKS: u32 = 2;

/// One leg. See the module docs.
pub struct Leg {
    /// Negotiated parameters.
    pub params: LegParams,
    latch: Latch,
    rtcp_latch: RtcpLatch,
    /// Our stream.
    pub sender: RtpSender,
    /// The peer's stream.
    pub rx: ReceiveStats,
    jitter: JitterBuffer,
    dedup: EventDeduplicator,
    tones: ToneDetector,
    /// What the leg sends when not bridged.
    pub source: Source,
    /// Recordings in progress, by [`RecordSlot`].
    pub recordings: [Option<Recording>; 2],
    /// Frame received this tick.
    pub frame_in: [i16; FRAME],
    /// How many samples of `frame_in` were real audio.
    pub frame_in_real: usize,
    started: Instant,
    last_rx: Instant,
    /// Since when the peer has sent nothing we believe (none at all since the leg began or its
    /// address changed); `None` once it has.
    unheard_since: Option<Instant>,
    /// We stopped sending because the peer stayed unheard past [`UNHEARD_SEND_GRACE`].
    unheard_muted: bool,
    timeout_reported: bool,
    next_rtcp: Instant,
    last_sr: Option<(u32, u64)>,
    /// The peer's last report about our stream.
    pub peer_report: Option<PeerReport>,
    dtmf_queue: VecDeque<u8>,
    dtmf_sending: Option<DtmfSend>,
    dtmf_gap: u32,
    encoded: Vec<u8>,
    decoded: Vec<i16>,
    digits: Vec<char>,
}

/// Packets a leg wants sent.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// RTP packets to the peer's RTP address.
    pub rtp: Vec<(SocketAddr, Vec<u8>)>,
    /// RTCP packets.
    pub rtcp: Vec<(SocketAddr, Vec<u8>)>,
}

impl Leg {
    /// A new leg at `now`.
    pub fn new(params: LegParams, now: Instant) -> Leg {
        Leg {
            latch: Latch::new(params.remote_rtp, params.signalling_ip),
            rtcp_latch: RtcpLatch::new(params.remote_rtcp),
            params,
            sender: RtpSender::new(),
            rx: ReceiveStats::default(),
            jitter: JitterBuffer::new(2),
            dedup: EventDeduplicator::default(),
            tones: ToneDetector::new(),
            source: Source::Silence,
            recordings: [None, None],
            frame_in: [0; FRAME],
            frame_in_real: 0,
            started: now,
            last_rx: now,
            unheard_since: Some(now),
            unheard_muted: false,
            timeout_reported: false,
            next_rtcp: now + Duration::from_millis(2500 + u64::from(rand::random::<u16>() % 2000)),
            last_sr: None,
            peer_report: None,
            dtmf_queue: VecDeque::new(),
            dtmf_sending: None,
            dtmf_gap: 0,
            encoded: Vec::with_capacity(FRAME + 12),
            decoded: Vec::with_capacity(FRAME * 2),
            digits: Vec::new(),
        }
    }

    /// New negotiation (re-INVITE): new addresses and codec; the latch starts again.
    pub fn update(&mut self, mut params: LegParams) {
        params.signalling_ip = params.signalling_ip.or(self.params.signalling_ip);
        if params.remote_rtp != self.params.remote_rtp {
            self.latch.reset(params.remote_rtp);
            self.rtcp_latch.reset(params.remote_rtcp);
            self.jitter.reset();
            // The grace for the new address runs from the last packet of the old one (about
            // now on a live call; no clock is read here).
            if self.unheard_since.is_none() {
                self.unheard_since = Some(self.last_rx);
            }
        }
        self.params = params;
        self.sender.mark_next = true;
    }

    fn arrival_ts(&self, now: Instant) -> u32 {
        (now.duration_since(self.started).as_micros() / 125) as u32
    }

    /// A datagram arrived on the RTP port.
    pub fn on_rtp(
        &mut self,
        src: SocketAddr,
        data: &[u8],
        now: Instant,
        events: &mut Vec<LegEvent>,
    ) {
        if self.params.rtcp_mux && data.len() >= 2 && (200..=204).contains(&data[1]) {
            return self.on_rtcp(src, data, now, unix_micros());
        }
        let Some(p) = RtpPacket::parse(data) else {
            return;
        };
        // Only the payload types we negotiated (and comfort noise) count as the peer's media:
        // anything else is dropped before it can teach the latch a source.
        let negotiated = p.payload_type == self.params.pt
            || Some(p.payload_type) == self.params.dtmf_pt
            || p.payload_type == COMFORT_NOISE_PT;
        if !negotiated || !self.latch.accept(src, p.ssrc, p.sequence, now) {
            return;
        }
        self.last_rx = now;
        self.unheard_since = None;
        self.unheard_muted = false;
        self.timeout_reported = false;
        let arrival = self.arrival_ts(now);
        if Some(p.payload_type) == self.params.dtmf_pt {
            self.rx
                .record(p.ssrc, p.sequence, p.timestamp, arrival, p.payload.len());
            if let Some(digit) = TelephoneEvent::parse(p.payload)
                .and_then(|ev| self.dedup.on_packet(p.timestamp, ev))
            {
                self.on_digit(digit, DigitSource::Rfc4733, events);
            }
            return;
        }
        if p.payload_type != self.params.pt {
            return; // comfort noise or a codec we did not agree on
        }
        self.rx
            .record(p.ssrc, p.sequence, p.timestamp, arrival, p.payload.len());
        self.decoded.clear();
        self.params.law.decode(p.payload, &mut self.decoded);
        self.jitter.insert(p.timestamp, &self.decoded);
    }

    /// A datagram arrived on the RTCP port.
    pub fn on_rtcp(&mut self, src: SocketAddr, data: &[u8], _now: Instant, unix_us: u64) {
        if !self.rtcp_latch.accept(src, self.latch.latched()) {
            return;
        }
        let now_ntp = rtcp::ntp_from_unix_micros(unix_us);
        if let Some(inc) = rtcp::parse(data, self.sender.ssrc, now_ntp) {
            if let Some(lsr) = inc.sender_report {
                self.last_sr = Some((lsr, now_ntp));
            }
            if let Some(r) = inc.about_us {
                self.peer_report = Some(r);
            }
        }
    }

    fn on_digit(&mut self, digit: char, source: DigitSource, events: &mut Vec<LegEvent>) {
        if let Source::Play(p) = &self.source {
            if p.barge_in {
                let tag = p.tag;
                self.source = Source::Silence;
                events.push(LegEvent::PlaybackDone {
                    interrupted: true,
                    tag,
                });
            }
        }
        if let Some(rec) = &self.recordings[RecordSlot::App as usize] {
            if rec.opts.stop_digits.contains(digit) {
                self.finish_recording(RecordSlot::App, RecordStop::Digit(digit), events);
                return;
            }
        }
        events.push(LegEvent::Digit { digit, source });
    }

    /// Takes this tick's received frame from the jitter buffer into `frame_in` and runs in-band
    /// detection on it.
    pub fn pull_frame(&mut self, events: &mut Vec<LegEvent>) {
        self.frame_in_real = self.jitter.pop_frame(&mut self.frame_in);
        let detect = match self.params.inband {
            InbandDtmf::Always => true,
            InbandDtmf::Auto => self.params.dtmf_pt.is_none(),
            InbandDtmf::Off => false,
        };
        if detect && self.frame_in_real > 0 {
            self.digits.clear();
            self.tones.feed(&self.frame_in, &mut self.digits);
            for i in 0..self.digits.len() {
                let d = self.digits[i];
                self.on_digit(d, DigitSource::Inband, events);
            }
        }
    }

    /// The frame this leg's own source produces (prompt, echo, silence); `None` while bridged
    /// audio should be used instead.
    pub fn own_frame(&mut self, out: &mut [i16; FRAME], events: &mut Vec<LegEvent>) {
        match &mut self.source {
            Source::Silence => out.fill(0),
            Source::Echo => out.copy_from_slice(&self.frame_in),
            Source::Play(p) => {
                if !p.next(out) {
                    let tag = p.tag;
                    self.source = Source::Silence;
                    events.push(LegEvent::PlaybackDone {
                        interrupted: false,
                        tag,
                    });
                }
            }
        }
    }

    /// Queues digits to send as RFC 4733 events (ignored without telephone-event).
    pub fn queue_dtmf(&mut self, digits: &str) {
        for d in digits.chars() {
            if let Some(c) = digit_code(d) {
                self.dtmf_queue.push_back(c);
            }
        }
    }

    /// Encodes and sends one frame of what the peer should hear (or a DTMF event packet).
    pub fn send_frame(&mut self, frame: &[i16; FRAME], out: &mut Outgoing) {
        if !self.params.send || self.unheard_muted {
            return;
        }
        let target = self.latch.target();
        if let Some(pt) = self.params.dtmf_pt {
            if self.dtmf_sending.is_none() && self.dtmf_gap == 0 {
                if let Some(code) = self.dtmf_queue.pop_front() {
                    self.dtmf_sending = Some(DtmfSend {
                        code,
                        start_ts: self.sender.timestamp,
                        ticks: 0,
                    });
                }
            }
            if let Some(mut s) = self.dtmf_sending {
                s.ticks += 1;
                let end = s.ticks >= DTMF_TICKS;
                let ev = TelephoneEvent {
                    event: s.code,
                    end,
                    volume: 10,
                    duration: (s.ticks * FRAME as u32) as u16,
                };
                // The end packet goes three times (RFC 4733 §2.5.1.4).
                for _ in 0..if end { 3 } else { 1 } {
                    let mut pkt = Vec::with_capacity(16);
                    self.sender
                        .event(&mut pkt, pt, s.ticks == 1, s.start_ts, &ev.to_bytes());
                    out.rtp.push((target, pkt));
                }
                if end {
                    self.dtmf_sending = None;
                    self.dtmf_gap = DTMF_GAP_TICKS;
                    self.sender.timestamp = s.start_ts.wrapping_add(s.ticks * FRAME as u32);
                    self.sender.mark_next = true;
                } else {
                    self.dtmf_sending = Some(s);
                }
                return;
            }
            self.dtmf_gap = self.dtmf_gap.saturating_sub(1);
        }
        self.encoded.clear();
        self.params.law.encode(frame, &mut self.encoded);
        let mut pkt = Vec::with_capacity(12 + FRAME);
        self.sender
            .audio(&mut pkt, self.params.pt, &self.encoded, FRAME as u32);
        out.rtp.push((target, pkt));
    }

    /// Appends this tick's audio to each recording: `frame_in` alone, or with the partner's
    /// frame as the second channel. Returns the (writer id, samples) chunks due for the writer.
    pub fn record_frame(
        &mut self,
        partner: Option<&[i16; FRAME]>,
        events: &mut Vec<LegEvent>,
    ) -> Vec<(u64, Vec<i16>)> {
        let mut chunks = Vec::new();
        for which in [RecordSlot::App, RecordSlot::Call] {
            let Some(rec) = self.recordings[which as usize].as_mut() else {
                continue;
            };
            if rec.opts.stereo {
                let other = partner.copied().unwrap_or([0; FRAME]);
                for (mine, theirs) in self.frame_in.iter().zip(other.iter()) {
                    rec.pending.push(*mine);
                    rec.pending.push(*theirs);
                }
            } else {
                rec.pending.extend_from_slice(&self.frame_in);
            }
            rec.frames += 1;
            let loud = self.frame_in.iter().any(|s| s.unsigned_abs() > 300)
                || partner.is_some_and(|p| p.iter().any(|s| s.unsigned_abs() > 300));
            rec.silent_frames = if loud { 0 } else { rec.silent_frames + 1 };
            let full = Duration::from_millis(rec.duration_ms()) >= rec.opts.max_length;
            let silent = rec
                .opts
                .max_silence
                .is_some_and(|m| Duration::from_millis(rec.silent_frames * 20) >= m);
            if rec.pending.len() >= 8000 * rec.channels() as usize {
                chunks.push((rec.id, std::mem::take(&mut rec.pending)));
            }
            if full {
                self.finish_recording(which, RecordStop::MaxLength, events);
            } else if silent {
                self.finish_recording(which, RecordStop::Silence, events);
            }
        }
        chunks
    }

    /// Ends a recording (the worker sends the remaining samples and closes the file).
    pub fn finish_recording(
        &mut self,
        which: RecordSlot,
        reason: RecordStop,
        events: &mut Vec<LegEvent>,
    ) {
        if let Some(rec) = &self.recordings[which as usize] {
            events.push(LegEvent::RecordingDone {
                path: rec.path.clone(),
                duration_ms: rec.duration_ms(),
                reason,
            });
        }
        // The worker takes the recording out after seeing the event (to flush and close it).
    }

    /// RTCP and RTP-timeout housekeeping; call once per tick.
    pub fn housekeeping(
        &mut self,
        now: Instant,
        unix_us: u64,
        out: &mut Outgoing,
        events: &mut Vec<LegEvent>,
    ) {
        if self.params.expect_rx
            && !self.timeout_reported
            && now.duration_since(self.last_rx) >= self.params.rtp_timeout
        {
            self.timeout_reported = true;
            events.push(LegEvent::RtpTimeout);
        }
        if let Some(since) = self.unheard_since {
            if !self.unheard_muted && now.saturating_duration_since(since) >= UNHEARD_SEND_GRACE {
                // The SDP may name a stranger's address: don't keep sending 50 packets a
                // second to a place that never answered.
                self.unheard_muted = true;
                tracing::info!(peer = %self.latch.target(), "no media from the peer: stopped sending to it until it sends");
            }
        }
        if now >= self.next_rtcp && !self.unheard_muted {
            self.next_rtcp =
                now + Duration::from_millis(4000 + u64::from(rand::random::<u16>() % 2000));
            let ntp = rtcp::ntp_from_unix_micros(unix_us);
            let mut pkt = Vec::with_capacity(80);
            rtcp::build_report(
                &mut pkt,
                &self.sender,
                &mut self.rx,
                ntp,
                self.sender.timestamp,
                self.last_sr,
                ntp,
            );
            let dest = if self.params.rtcp_mux {
                self.latch.target()
            } else {
                self.rtcp_latch.target()
            };
            out.rtcp.push((dest, pkt));
        }
    }

    /// Quality figures for the call log.
    pub fn quality(&self) -> LegQuality {
        let expected = self.rx.expected();
        let loss = if expected == 0 {
            0.0
        } else {
            self.rx.lost() as f32 / expected as f32
        };
        let jitter_ms = self.rx.jitter() as f32 / 8.0;
        let rtt = self.peer_report.and_then(|r| r.rtt_ms);
        LegQuality {
            packets_sent: self.sender.packets,
            packets_received: self.rx.packets,
            packets_lost: self.rx.lost(),
            jitter_ms,
            rtt_ms: rtt,
            mos: rtcp::mos(loss, jitter_ms, rtt.unwrap_or(0.0)),
        }
    }
}

/// Per-leg quality figures (what the call log records).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegQuality {
    /// RTP packets we sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets lost on the way to us.
    pub packets_lost: u64,
    /// Interarrival jitter of the peer's stream, ms.
    pub jitter_ms: f32,
    /// Round-trip time from RTCP, ms.
    pub rtt_ms: Option<f32>,
    /// Estimated MOS.
    pub mos: f32,
}

/// Wall clock in microseconds (RTCP's NTP timestamps).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LegParams {
        LegParams {
            law: Law::Ulaw,
            pt: 0,
            dtmf_pt: Some(101),
            remote_rtp: "127.0.0.1:40000".parse().expect("a"),
            remote_rtcp: "127.0.0.1:40001".parse().expect("a"),
            rtcp_mux: false,
            send: true,
            expect_rx: true,
            rtp_timeout: Duration::from_secs(10),
            inband: InbandDtmf::Auto,
            signalling_ip: None,
            srtp: None,
        }
    }

    fn rtp(seq: u16, ts: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        super::super::rtp::write_packet(&mut v, false, pt, seq, ts, 77, payload);
        v
    }

    #[test]
    fn echo_returns_what_arrived_with_our_own_sequence() {
        let now = Instant::now();
        let mut leg = Leg::new(params(), now);
        leg.source = Source::Echo;
        let src: SocketAddr = "127.0.0.1:40000".parse().expect("a");
        let mut ev = Vec::new();
        let mut enc = Vec::new();
        Law::Ulaw.encode(&[1000; FRAME], &mut enc);
        for i in 0..5u32 {
            leg.on_rtp(src, &rtp(i as u16, i * 160, 0, &enc), now, &mut ev);
        }
        let mut out = Outgoing::default();
        let mut frame = [0i16; FRAME];
        let mut seqs = Vec::new();
        for _ in 0..5 {
            leg.pull_frame(&mut ev);
            leg.own_frame(&mut frame, &mut ev);
            leg.send_frame(&frame, &mut out);
        }
        for (dst, pkt) in &out.rtp {
            assert_eq!(*dst, src, "latched to the real source");
            let p = RtpPacket::parse(pkt).expect("rtp");
            seqs.push(p.sequence);
        }
        // Two frames of jitter-buffer delay, then the echoed audio.
        let last = RtpPacket::parse(&out.rtp[4].1).expect("rtp");
        let mut dec = Vec::new();
        Law::Ulaw.decode(last.payload, &mut dec);
        assert!(dec.iter().all(|&s| (s - 1000).abs() < 40));
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    }

    #[test]
    fn rfc4733_digits_once_barge_in_and_sending() {
        let now = Instant::now();
        let mut leg = Leg::new(params(), now);
        leg.source = Source::Play(Player::new(vec![vec![500i16; 8000].into()], true, true));
        let src: SocketAddr = "127.0.0.1:40000".parse().expect("a");
        let mut ev = Vec::new();
        let start = TelephoneEvent {
            event: 1,
            end: false,
            volume: 10,
            duration: 160,
        };
        let end = TelephoneEvent {
            end: true,
            duration: 800,
            ..start
        };
        for (i, e) in [start, start, start, end, end, end].iter().enumerate() {
            leg.on_rtp(src, &rtp(i as u16, 4000, 101, &e.to_bytes()), now, &mut ev);
        }
        assert_eq!(
            ev,
            vec![
                LegEvent::PlaybackDone {
                    interrupted: true,
                    tag: 0
                },
                LegEvent::Digit {
                    digit: '1',
                    source: DigitSource::Rfc4733
                }
            ]
        );
        // Sending "5": 5 event packets (last one three times), one timestamp, then audio resumes
        // with the timestamp moved past the event.
        leg.queue_dtmf("5");
        let mut out = Outgoing::default();
        let frame = [0i16; FRAME];
        let ts0 = leg.sender.timestamp;
        for _ in 0..6 {
            leg.send_frame(&frame, &mut out);
        }
        let pkts: Vec<RtpPacket> = out
            .rtp
            .iter()
            .map(|(_, p)| RtpPacket::parse(p).expect("rtp"))
            .collect();
        let events: Vec<_> = pkts.iter().filter(|p| p.payload_type == 101).collect();
        assert_eq!(events.len(), 7);
        assert!(events.iter().all(|p| p.timestamp == ts0));
        assert!(events[0].marker);
        assert_eq!(
            TelephoneEvent::parse(events[6].payload)
                .expect("ev")
                .duration,
            800
        );
        // Audio resumes right after, its timestamp moved past the event, marker set.
        let audio: Vec<_> = pkts.iter().filter(|p| p.payload_type == 0).collect();
        assert_eq!(audio.len(), 1);
        assert_eq!(audio[0].timestamp, ts0.wrapping_add(800));
        assert!(audio[0].marker);
        // A second digit waits for the 40 ms inter-digit gap.
        leg.queue_dtmf("6");
        let mut more = Outgoing::default();
        for _ in 0..2 {
            leg.send_frame(&frame, &mut more);
        }
        let p = RtpPacket::parse(&more.rtp[1].1).expect("rtp");
        assert_eq!(p.payload_type, 101);
    }

    #[test]
    fn rtp_timeout_fires_once_unless_on_hold() {
        let now = Instant::now();
        let mut leg = Leg::new(params(), now);
        let mut ev = Vec::new();
        let mut out = Outgoing::default();
        leg.housekeeping(now + Duration::from_secs(9), 0, &mut out, &mut ev);
        assert!(ev.is_empty());
        leg.housekeeping(now + Duration::from_secs(10), 0, &mut out, &mut ev);
        leg.housekeeping(now + Duration::from_secs(11), 0, &mut out, &mut ev);
        assert_eq!(ev, vec![LegEvent::RtpTimeout]);
        let mut held = Leg::new(
            LegParams {
                expect_rx: false,
                ..params()
            },
            now,
        );
        ev.clear();
        held.housekeeping(now + Duration::from_secs(5), 0, &mut out, &mut ev);
        assert!(!out.rtcp.is_empty(), "RTCP report sent");
        held.housekeeping(now + Duration::from_secs(60), 0, &mut out, &mut ev);
        assert!(ev.is_empty());
    }

    #[test]
    fn strangers_are_not_heard_and_silent_peers_not_flooded() {
        let now = Instant::now();
        let mut leg = Leg::new(params(), now);
        leg.source = Source::Echo;
        let mut ev = Vec::new();
        let mut enc = Vec::new();
        Law::Ulaw.encode(&[3000; FRAME], &mut enc);
        // A scanner sprays one packet per source port, and digits from its own port with a
        // payload type we never agreed on: none is heard, none teaches the latch.
        for i in 0..20u16 {
            let from: SocketAddr = format!("127.0.0.9:{}", 30000 + i).parse().expect("a");
            leg.on_rtp(from, &rtp(i, u32::from(i) * 160, 0, &enc), now, &mut ev);
            let spy: SocketAddr = "127.0.0.9:29999".parse().expect("a");
            leg.on_rtp(spy, &rtp(i, 0, 96, &[1, 0, 0, 160]), now, &mut ev);
        }
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(leg.rx.packets, 0);
        let mut out = Outgoing::default();
        let mut frame = [0i16; FRAME];
        leg.pull_frame(&mut ev);
        leg.own_frame(&mut frame, &mut ev);
        leg.send_frame(&frame, &mut out);
        assert_eq!(out.rtp[0].0, leg.params.remote_rtp, "still the SDP address");
        // Nothing from the peer for the grace period: we stop sending (RTP and RTCP).
        leg.housekeeping(now + UNHEARD_SEND_GRACE, 0, &mut out, &mut ev);
        let mut quiet = Outgoing::default();
        leg.send_frame(&frame, &mut quiet);
        leg.housekeeping(now + UNHEARD_SEND_GRACE * 2, 0, &mut quiet, &mut ev);
        assert!(quiet.rtp.is_empty() && quiet.rtcp.is_empty());
        // The peer speaks from its SDP address: we answer again.
        let peer = leg.params.remote_rtp;
        leg.on_rtp(peer, &rtp(1, 160, 0, &enc), now, &mut ev);
        leg.send_frame(&frame, &mut quiet);
        assert_eq!(quiet.rtp.len(), 1);
    }

    #[test]
    fn player_sequences_and_finishes() {
        let mut p = Player::new(
            vec![vec![1i16; 100].into(), vec![2i16; 100].into()],
            false,
            false,
        );
        let mut f = [0i16; FRAME];
        assert!(p.next(&mut f));
        assert_eq!((f[99], f[100], f[159]), (1, 2, 2));
        assert!(p.next(&mut f));
        assert_eq!((f[39], f[40]), (2, 0));
        assert!(!p.next(&mut f));
    }

    #[test]
    fn a_loading_clip_plays_silence_until_it_arrives_and_an_unreadable_one_is_skipped() {
        let (slow, bad) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
        let mut p = Player::of_clips(
            vec![
                Clip::Ready(vec![1i16; 100].into()),
                Clip::Loading(slow.clone()),
                Clip::Loading(bad.clone()),
                Clip::Ready(vec![3i16; 20].into()),
            ],
            false,
            false,
        );
        let mut f = [0i16; FRAME];
        assert!(p.next(&mut f));
        assert_eq!((f[99], f[100]), (1, 0), "silence after the first clip");
        assert!(p.next(&mut f), "still playing while the second loads");
        assert_eq!(f, [0; FRAME]);
        let _ = slow.set(Some(vec![2i16; 150].into()));
        let _ = bad.set(None);
        assert!(p.next(&mut f));
        assert_eq!((f[0], f[149], f[150], f[159]), (2, 2, 3, 3));
        assert!(p.next(&mut f));
        assert_eq!((f[9], f[10]), (3, 0));
        assert!(!p.next(&mut f));
    }

    #[test]
    fn recording_stops_on_digit_and_silence() {
        let now = Instant::now();
        let mut leg = Leg::new(params(), now);
        let opts = RecordOptions {
            stop_digits: "#".into(),
            max_length: Duration::from_secs(60),
            max_silence: Some(Duration::from_millis(200)),
            stereo: false,
        };
        leg.recordings[RecordSlot::App as usize] =
            Some(Recording::new(1, "/tmp/x.wav".into(), opts));
        let mut ev = Vec::new();
        for _ in 0..9 {
            leg.record_frame(None, &mut ev);
        }
        assert!(ev.is_empty());
        leg.record_frame(None, &mut ev);
        assert!(matches!(
            ev[0],
            LegEvent::RecordingDone {
                reason: RecordStop::Silence,
                duration_ms: 200,
                ..
            }
        ));
    }
}

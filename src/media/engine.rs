//! The media engine: a few worker threads (one per core by default), each running many legs.
//!
//! A worker waits on one mio poll for all of its legs' sockets and its command queue, with a
//! timeout at the next 20 ms grid point. Packets are read as they arrive (into each leg's
//! jitter buffer); at each grid point every leg is ticked once: received frame out of the
//! jitter buffer, in-band DTMF, what the peer should hear (prompt, echo, bridge partner,
//! silence), encode, send, record, RTCP. No thread, task or timer per call.
//!
//! The call layer talks to the engine with [`MediaEngine`] methods (fire-and-forget commands)
//! and hears back through the [`MediaEvent`] channel returned by [`MediaEngine::start`].
//! Bridged legs live on the same worker ([`MediaEngine::create_leg_beside`]), so a bridge is
//! two legs reading each other's frames in one tick. Legs set up apart (an attended transfer
//! joins parties of two calls) are bridged through a [`CrossLink`] instead.

use super::crosslink::CrossLink;
use super::leg::{
    unix_micros, InbandDtmf, Leg, LegEvent, LegParams, LegQuality, Outgoing, Player, RecordOptions,
    RecordSlot, RecordStop, Recording, Source, FRAME,
};
use super::loader::{clip_for, spawn_loader, LoadJob};
use super::prompts::{PromptCache, PromptError};
use super::recorder::{spawn_writer, WriterMsg};
use super::sdes::{SdesCrypto, Unprotected};
use super::{ReservedMedia, RtpPortLease};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The 20 ms grid.
const TICK: Duration = Duration::from_millis(20);
const WAKER: Token = Token(usize::MAX);

/// Identifies a leg across the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

/// Something to play: a prompt by name (`system/beep`, resolved in the prompt folder and
/// cached) or a WAV file anywhere (a voicemail message, a mailbox greeting; read each time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audio {
    /// A prompt by name.
    Prompt(String),
    /// A WAV file.
    File(PathBuf),
}

impl LegId {
    fn worker(self) -> usize {
        (self.0 >> 48) as usize
    }
}

/// Errors of engine calls.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A prompt could not be loaded.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The engine's workers are gone (shutdown).
    #[error("media engine stopped")]
    Stopped,
    /// The lease's sockets were already taken.
    #[error("RTP sockets unavailable")]
    NoSockets,
    /// OS error starting workers or registering sockets.
    #[error("media I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A leg's SRTP keys could not be used.
    #[error(transparent)]
    Srtp(#[from] super::sdes::SdesError),
}

/// What the engine tells the call layer.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Something happened on a leg.
    Leg {
        /// The leg.
        leg: LegId,
        /// What.
        event: LegEvent,
    },
    /// A digit arrived on a bridged leg whose partner has no telephone-event: the call layer
    /// should relay it with SIP INFO to `to`.
    RelayDigitByInfo {
        /// The leg that should receive the digit.
        to: LegId,
        /// The digit.
        digit: char,
    },
    /// Audio of a playback could not be read (missing or not a usable WAV); the leg skips it.
    PlaybackFailed {
        /// The leg.
        leg: LegId,
        /// The playback's tag.
        tag: u64,
        /// Why.
        error: String,
    },
    /// A leg was destroyed; its port is free again.
    Closed {
        /// The leg.
        leg: LegId,
        /// Its quality figures.
        quality: LegQuality,
    },
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Where system prompts are read from.
    pub prompts_dir: PathBuf,
    /// Where tenants' uploaded prompts are read from (`DIR/TENANT/NAME.wav`).
    pub tenant_prompts_dir: Option<PathBuf>,
}

enum Command {
    Create {
        id: LegId,
        media: ReservedMedia,
        params: LegParams,
    },
    Update {
        id: LegId,
        params: LegParams,
    },
    Source {
        id: LegId,
        source: Source,
    },
    Record {
        id: LegId,
        path: PathBuf,
        opts: RecordOptions,
    },
    StopRecord {
        id: LegId,
        which: RecordSlot,
    },
    Bridge {
        a: LegId,
        b: LegId,
    },
    /// One side of a bridge across workers.
    BridgeRemote {
        id: LegId,
        link: Arc<CrossLink>,
        side: usize,
    },
    Unbridge {
        id: LegId,
    },
    Dtmf {
        id: LegId,
        digits: String,
    },
    Destroy {
        id: LegId,
    },
    Shutdown,
}

/// Per-worker counters, read by benchmarks and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Legs on the worker.
    pub legs: AtomicUsize,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Ticks that started more than 2 ms after their grid point.
    pub late_ticks: AtomicU64,
    /// Largest tick lateness seen, µs.
    pub max_lateness_us: AtomicU64,
    /// Time spent inside ticks, µs (work per tick = this / ticks).
    pub busy_us: AtomicU64,
    /// RTP packets received.
    pub packets_in: AtomicU64,
    /// RTP packets sent.
    pub packets_out: AtomicU64,
    /// SRTP/SRTCP packets dropped: failed authentication, replays, not SRTP.
    pub srtp_refused: AtomicU64,
}

struct WorkerHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    stats: Arc<WorkerStats>,
}

/// The engine handle (cheap to clone).
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    workers: Vec<WorkerHandle>,
    next_worker: AtomicUsize,
    next_leg: AtomicU64,
    prompts: Arc<PromptCache>,
    /// Reads clips for playbacks (see `loader.rs`).
    loader: mpsc::Sender<LoadJob>,
}

impl MediaEngine {
    /// Starts the workers and the recording writer.
    pub fn start(
        cfg: MediaConfig,
    ) -> Result<
        (
            MediaEngine,
            tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
        ),
        MediaError,
    > {
        let n = if cfg.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            cfg.workers
        };
        let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = spawn_writer();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            let stats = Arc::new(WorkerStats::default());
            let worker = Worker {
                poll,
                commands: rx,
                events: ev_tx.clone(),
                writer: writer.clone(),
                slots: Vec::new(),
                free: Vec::new(),
                by_id: HashMap::new(),
                stats: stats.clone(),
            };
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || worker.run())?;
            workers.push(WorkerHandle { tx, waker, stats });
        }
        tracing::info!(workers = n, prompts = %cfg.prompts_dir.display(), "media engine started");
        let prompts =
            Arc::new(PromptCache::new(cfg.prompts_dir).with_tenant_dir(cfg.tenant_prompts_dir));
        let loader = spawn_loader(prompts.clone(), ev_tx)?;
        Ok((
            MediaEngine {
                inner: Arc::new(EngineInner {
                    workers,
                    next_worker: AtomicUsize::new(0),
                    next_leg: AtomicU64::new(1),
                    prompts,
                    loader,
                }),
            },
            ev_rx,
        ))
    }

    fn send(&self, worker: usize, cmd: Command) -> Result<(), MediaError> {
        let w = self.inner.workers.get(worker).ok_or(MediaError::Stopped)?;
        w.tx.send(cmd).map_err(|_| MediaError::Stopped)?;
        w.waker.wake().map_err(MediaError::Io)
    }

    fn new_id(&self, worker: usize) -> LegId {
        LegId(((worker as u64) << 48) | self.inner.next_leg.fetch_add(1, Ordering::Relaxed))
    }

    /// The prompt cache.
    pub fn prompts(&self) -> &PromptCache {
        &self.inner.prompts
    }

    /// Starts media for a leg on the least recently chosen worker. The reserved sockets (and a
    /// browser's WebRTC transport) move into the engine; the port is freed when the leg is
    /// destroyed.
    pub fn create_leg(&self, media: ReservedMedia, params: LegParams) -> Result<LegId, MediaError> {
        let n = self.inner.workers.len().max(1);
        let worker = self.inner.next_worker.fetch_add(1, Ordering::Relaxed) % n;
        let id = self.new_id(worker);
        discard_early(&media);
        self.send(worker, Command::Create { id, media, params })?;
        Ok(id)
    }

    /// Starts media for a leg on the same worker as `other`, so the two can be bridged.
    pub fn create_leg_beside(
        &self,
        other: LegId,
        media: ReservedMedia,
        params: LegParams,
    ) -> Result<LegId, MediaError> {
        let id = self.new_id(other.worker());
        discard_early(&media);
        self.send(other.worker(), Command::Create { id, media, params })?;
        Ok(id)
    }

    /// New negotiation (re-INVITE).
    pub fn update(&self, id: LegId, params: LegParams) -> Result<(), MediaError> {
        self.send(id.worker(), Command::Update { id, params })
    }

    /// Plays prompts (by name, loaded once and cached).
    pub fn play(
        &self,
        id: LegId,
        prompts: &[&str],
        looped: bool,
        barge_in: bool,
    ) -> Result<(), MediaError> {
        self.play_tagged(id, prompts, looped, barge_in, 0)
    }

    /// [`play`](Self::play) with a tag that comes back in `LegEvent::PlaybackDone`.
    pub fn play_tagged(
        &self,
        id: LegId,
        prompts: &[&str],
        looped: bool,
        barge_in: bool,
        tag: u64,
    ) -> Result<(), MediaError> {
        let items: Vec<Audio> = prompts
            .iter()
            .map(|p| Audio::Prompt(p.to_string()))
            .collect();
        self.play_audio(id, &items, looped, barge_in, tag)
    }

    /// Plays system/tenant prompts and files (voicemail messages, greetings) in order, with a
    /// tag that comes back in `LegEvent::PlaybackDone`. Returns at once without reading a
    /// disk: audio not in the cache is read by the clip loader while the leg waits in silence
    /// (`MediaEvent::PlaybackFailed` if it cannot be read). A prompt name that can never be
    /// valid is refused here.
    pub fn play_audio(
        &self,
        id: LegId,
        items: &[Audio],
        looped: bool,
        barge_in: bool,
        tag: u64,
    ) -> Result<(), MediaError> {
        for a in items {
            if let Audio::Prompt(p) = a {
                let bare = p.strip_prefix(super::prompts::TENANT_PREFIX).unwrap_or(p);
                if !crate::records::names::valid_prompt_name(bare) {
                    return Err(PromptError::BadName(p.clone()).into());
                }
            }
        }
        let clips = items
            .iter()
            .map(|a| clip_for(&self.inner.prompts, &self.inner.loader, id, tag, a))
            .collect();
        self.send(
            id.worker(),
            Command::Source {
                id,
                source: Source::Play(Player::of_clips(clips, looped, barge_in).with_tag(tag)),
            },
        )
    }

    /// Stops playback (the leg sends silence).
    pub fn stop_playback(&self, id: LegId) -> Result<(), MediaError> {
        self.send(
            id.worker(),
            Command::Source {
                id,
                source: Source::Silence,
            },
        )
    }

    /// Echo test: the leg hears itself.
    pub fn echo(&self, id: LegId) -> Result<(), MediaError> {
        self.send(
            id.worker(),
            Command::Source {
                id,
                source: Source::Echo,
            },
        )
    }

    /// Records the leg (and its bridge partner with `opts.stereo`) to a 16-bit 8 kHz WAV.
    pub fn record(&self, id: LegId, path: PathBuf, opts: RecordOptions) -> Result<(), MediaError> {
        self.send(id.worker(), Command::Record { id, path, opts })
    }

    /// Stops one of a leg's recordings.
    pub fn stop_recording(&self, id: LegId, which: RecordSlot) -> Result<(), MediaError> {
        self.send(id.worker(), Command::StopRecord { id, which })
    }

    /// Bridges two legs created beside each other.
    pub fn bridge(&self, a: LegId, b: LegId) -> Result<(), MediaError> {
        if a.worker() != b.worker() {
            // Apart (an attended transfer): each worker reaches the other through a link.
            let link = Arc::new(CrossLink::default());
            self.send(
                a.worker(),
                Command::BridgeRemote {
                    id: a,
                    link: link.clone(),
                    side: 0,
                },
            )?;
            return self.send(
                b.worker(),
                Command::BridgeRemote {
                    id: b,
                    link,
                    side: 1,
                },
            );
        }
        self.send(a.worker(), Command::Bridge { a, b })
    }

    /// Undoes a bridge (both legs fall back to their own sources).
    pub fn unbridge(&self, id: LegId) -> Result<(), MediaError> {
        self.send(id.worker(), Command::Unbridge { id })
    }

    /// Sends digits as RFC 4733 events.
    pub fn send_dtmf(&self, id: LegId, digits: &str) -> Result<(), MediaError> {
        self.send(
            id.worker(),
            Command::Dtmf {
                id,
                digits: digits.to_string(),
            },
        )
    }

    /// Ends a leg: sockets closed, port freed, recording closed, [`MediaEvent::Closed`] sent.
    pub fn destroy(&self, id: LegId) -> Result<(), MediaError> {
        self.send(id.worker(), Command::Destroy { id })
    }

    /// Legs across workers.
    pub fn legs(&self) -> usize {
        self.inner
            .workers
            .iter()
            .map(|w| w.stats.legs.load(Ordering::Relaxed))
            .sum()
    }

    /// Worker counters.
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.inner.workers.iter().map(|w| w.stats.clone()).collect()
    }

    /// Stops the workers.
    pub fn shutdown(&self) {
        for (i, _) in self.inner.workers.iter().enumerate() {
            let _ = self.send(i, Command::Shutdown);
        }
    }
}

struct Entry {
    id: LegId,
    leg: Leg,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    /// Held for the leg's life: dropping it frees the port pair.
    _lease: RtpPortLease,
    partner: Option<usize>,
    /// A browser leg's DTLS-SRTP/ICE transport: datagrams pass through it.
    webrtc: Option<Box<super::webrtc::WebRtcTransport>>,
    /// A phone or trunk leg's SDES-keyed SRTP.
    sdes: Option<Box<SdesCrypto>>,
    /// SRTP packets refused on this leg (the first and every 500th are logged).
    srtp_refused: u64,
    /// A bridge partner on another worker, and our side of the link.
    remote: Option<(Arc<CrossLink>, usize)>,
}

struct Worker {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
    writer: mpsc::Sender<WriterMsg>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_id: HashMap<LegId, usize>,
    stats: Arc<WorkerStats>,
}

static RECORDING_IDS: AtomicU64 = AtomicU64::new(1);

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut buf = vec![0u8; 2048];
        loop {
            // epoll's timeout has millisecond resolution (mio rounds up), which alone would
            // start ticks up to 1 ms late: poll until just before the grid point, then sleep
            // the remainder with nanosecond resolution.
            let remaining = next_tick.saturating_duration_since(Instant::now());
            let timeout = remaining.saturating_sub(Duration::from_millis(1));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media worker poll failed");
                    return;
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {
                        if !self.commands() {
                            return;
                        }
                    }
                    Token(t) => self.readable(t, &mut buf),
                }
            }
            let before = next_tick.saturating_duration_since(Instant::now());
            if !before.is_zero() && before <= Duration::from_millis(1) {
                std::thread::sleep(before);
            }
            let now = Instant::now();
            if now >= next_tick {
                let late = now.duration_since(next_tick);
                let late_us = late.as_micros() as u64;
                self.stats
                    .max_lateness_us
                    .fetch_max(late_us, Ordering::Relaxed);
                if late > Duration::from_millis(2) {
                    self.stats.late_ticks.fetch_add(1, Ordering::Relaxed);
                }
                self.tick(now);
                self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .busy_us
                    .fetch_add(now.elapsed().as_micros() as u64, Ordering::Relaxed);
                next_tick += TICK;
                if Instant::now() > next_tick + TICK * 5 {
                    // Far behind (machine stalled): keep the grid, skip the missed points.
                    while next_tick < Instant::now() {
                        next_tick += TICK;
                    }
                }
            }
        }
    }

    fn emit(&self, leg: LegId, event: LegEvent) {
        let _ = self.events.send(MediaEvent::Leg { leg, event });
    }

    /// Drains the command queue; false on shutdown.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Create { id, media, params } => {
                    if let Err(e) = self.create(id, media, params) {
                        tracing::error!(error = %e, "cannot start media for a leg");
                        let _ = self.events.send(MediaEvent::Closed {
                            leg: id,
                            quality: LegQuality::default(),
                        });
                    }
                }
                Command::Update { id, params } => {
                    if let Some(e) = self.entry(id) {
                        if let Err(err) = rekey(&mut e.sdes, params.srtp.as_ref()) {
                            tracing::warn!(leg = id.0, error = %err, "SRTP keys of a new offer refused: media stays as it was");
                        } else {
                            e.leg.update(params);
                        }
                    }
                }
                Command::Source { id, source } => {
                    if let Some(e) = self.entry(id) {
                        e.leg.source = source;
                    }
                }
                Command::Record { id, path, opts } => {
                    let rec_id = RECORDING_IDS.fetch_add(1, Ordering::Relaxed);
                    let writer = self.writer.clone();
                    let which = opts.slot();
                    if let Some(&slot) = self.by_id.get(&id) {
                        // A new recording in an occupied slot ends the old one properly.
                        self.close_recording(slot, which, RecordStop::Stopped);
                    }
                    if let Some(e) = self.entry(id) {
                        let rec = Recording::new(rec_id, path.clone(), opts);
                        let _ = writer.send(WriterMsg::Open {
                            id: rec_id,
                            path,
                            channels: rec.channels(),
                        });
                        e.leg.recordings[which as usize] = Some(rec);
                    }
                }
                Command::StopRecord { id, which } => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.close_recording(slot, which, RecordStop::Stopped);
                    }
                }
                Command::Bridge { a, b } => {
                    if let (Some(&sa), Some(&sb)) = (self.by_id.get(&a), self.by_id.get(&b)) {
                        // Whoever they were bridged to before falls back to its own source.
                        self.unlink(sa);
                        self.unlink(sb);
                        if let Some(Some(e)) = self.slots.get_mut(sa) {
                            e.partner = Some(sb);
                        }
                        if let Some(Some(e)) = self.slots.get_mut(sb) {
                            e.partner = Some(sa);
                        }
                    }
                }
                Command::BridgeRemote { id, link, side } => {
                    if let Some(&s) = self.by_id.get(&id) {
                        self.unlink(s);
                        if let Some(Some(e)) = self.slots.get_mut(s) {
                            e.remote = Some((link, side));
                        }
                    }
                }
                Command::Unbridge { id } => {
                    if let Some(&s) = self.by_id.get(&id) {
                        self.unlink(s);
                    }
                }
                Command::Dtmf { id, digits } => {
                    if let Some(e) = self.entry(id) {
                        e.leg.queue_dtmf(&digits);
                    }
                }
                Command::Destroy { id } => self.destroy(id),
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn entry(&mut self, id: LegId) -> Option<&mut Entry> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Registers a leg; on error the lease is dropped, which frees its port.
    fn create(
        &mut self,
        id: LegId,
        media: ReservedMedia,
        params: LegParams,
    ) -> Result<(), MediaError> {
        let ReservedMedia { mut lease, webrtc } = media;
        let sdes = match (&webrtc, &params.srtp) {
            (None, Some(keys)) => Some(Box::new(SdesCrypto::new(keys)?)),
            _ => None,
        };
        let (rtp, rtcp) = lease.take_sockets().ok_or(MediaError::NoSockets)?;
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        let mut rtp = UdpSocket::from_std(rtp);
        let mut rtcp = UdpSocket::from_std(rtcp);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.poll
            .registry()
            .register(&mut rtp, Token(slot * 2), Interest::READABLE)?;
        self.poll
            .registry()
            .register(&mut rtcp, Token(slot * 2 + 1), Interest::READABLE)?;
        self.slots[slot] = Some(Entry {
            id,
            webrtc,
            sdes,
            srtp_refused: 0,
            remote: None,
            leg: Leg::new(params, Instant::now()),
            rtp,
            rtcp,
            _lease: lease,
            partner: None,
        });
        self.by_id.insert(id, slot);
        self.stats.legs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn readable(&mut self, token: usize, buf: &mut [u8]) {
        let slot = token / 2;
        let is_rtcp = token % 2 == 1;
        let Some(Some(e)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut events = Vec::new();
        loop {
            let sock = if is_rtcp { &e.rtcp } else { &e.rtp };
            match sock.recv_from(buf) {
                Ok((n, src)) => {
                    let now = Instant::now();
                    if let Some(w) = e.webrtc.as_mut() {
                        // Everything of a browser leg (STUN, DTLS, SRTP, SRTCP) comes on the
                        // RTP port; what it carries reaches the leg as plain RTP.
                        let mut out = super::webrtc::WebRtcOutput::default();
                        w.receive(src, &buf[..n], now, &mut out);
                        for (dst, d) in &out.transmits {
                            let _ = e.rtp.send_to(d, *dst);
                        }
                        for (from, pkt) in &out.rtp {
                            self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
                            e.leg.on_rtp(*from, pkt, now, &mut events);
                        }
                    } else if let Some(s) = e.sdes.as_mut() {
                        let data = &buf[..n];
                        let control = is_rtcp
                            || (e.leg.params.rtcp_mux
                                && data.len() >= 2
                                && (200..=204).contains(&data[1]));
                        let plain = if control {
                            s.unprotect_rtcp(data)
                        } else {
                            s.unprotect_rtp(data)
                        };
                        match plain {
                            Unprotected::Plain(p) if control => {
                                e.leg.on_rtcp(src, &p, now, unix_micros())
                            }
                            Unprotected::Plain(p) => {
                                self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
                                e.leg.on_rtp(src, &p, now, &mut events);
                            }
                            Unprotected::Refused(why) => {
                                self.stats.srtp_refused.fetch_add(1, Ordering::Relaxed);
                                if e.srtp_refused % 500 == 0 {
                                    tracing::info!(leg = e.id.0, peer = %src, reason = %why, refused = e.srtp_refused + 1, "SRTP packet dropped");
                                }
                                e.srtp_refused += 1;
                            }
                        }
                    } else if is_rtcp {
                        e.leg.on_rtcp(src, &buf[..n], now, unix_micros());
                    } else {
                        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
                        e.leg.on_rtp(src, &buf[..n], now, &mut events);
                    }
                }
                Err(ref err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break, // ICMP errors from a peer that went away: nothing to read
            }
        }
        let (id, partner) = (e.id, e.partner);
        self.dispatch(slot, id, partner, events);
    }

    /// Emits leg events, relaying RFC 4733 digits to a bridge partner and closing finished
    /// recordings.
    fn dispatch(&mut self, slot: usize, id: LegId, partner: Option<usize>, events: Vec<LegEvent>) {
        for ev in events {
            match &ev {
                LegEvent::Digit {
                    digit,
                    source: super::leg::DigitSource::Rfc4733,
                } => {
                    if let Some(Some(p)) = partner.and_then(|p| self.slots.get_mut(p)) {
                        if p.leg.params.dtmf_pt.is_some() {
                            p.leg.queue_dtmf(&digit.to_string());
                        } else {
                            let _ = self.events.send(MediaEvent::RelayDigitByInfo {
                                to: p.id,
                                digit: *digit,
                            });
                        }
                    }
                }
                LegEvent::RecordingDone { path, .. } => self.flush_recording(slot, path),
                _ => {}
            }
            self.emit(id, ev);
        }
    }

    fn flush_recording(&mut self, slot: usize, path: &std::path::Path) {
        let Some(Some(e)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(held) = e
            .leg
            .recordings
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|r| r.path == path))
        else {
            return;
        };
        if let Some(rec) = held.take() {
            if !rec.pending.is_empty() {
                let _ = self.writer.send(WriterMsg::Append {
                    id: rec.id,
                    samples: rec.pending,
                });
            }
            let _ = self.writer.send(WriterMsg::Close { id: rec.id });
        }
    }

    fn close_recording(&mut self, slot: usize, which: RecordSlot, reason: RecordStop) {
        let Some(Some(e)) = self.slots.get_mut(slot) else {
            return;
        };
        let mut events = Vec::new();
        e.leg.finish_recording(which, reason, &mut events);
        let (id, partner) = (e.id, e.partner);
        self.dispatch(slot, id, partner, events);
    }

    /// Ends `slot`'s bridge, local or remote; its partner (if it still points back) too.
    fn unlink(&mut self, slot: usize) {
        let partner = self
            .slots
            .get_mut(slot)
            .and_then(|e| e.as_mut())
            .and_then(|e| {
                e.remote = None;
                e.partner.take()
            });
        if let Some(Some(p)) = partner.and_then(|p| self.slots.get_mut(p)) {
            if p.partner == Some(slot) {
                p.partner = None;
            }
        }
    }

    fn destroy(&mut self, id: LegId) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        self.close_recording(slot, RecordSlot::App, RecordStop::Stopped);
        self.close_recording(slot, RecordSlot::Call, RecordStop::Stopped);
        self.unlink(slot);
        if let Some(mut e) = self.slots[slot].take() {
            let _ = self.poll.registry().deregister(&mut e.rtp);
            let _ = self.poll.registry().deregister(&mut e.rtcp);
            let _ = self.events.send(MediaEvent::Closed {
                leg: id,
                quality: e.leg.quality(),
            });
            self.free.push(slot);
            self.stats.legs.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn tick(&mut self, now: Instant) {
        let unix = unix_micros();
        // Phase 1: every leg takes its received frame, so bridge partners can read each other's.
        for slot in 0..self.slots.len() {
            let Some(Some(e)) = self.slots.get_mut(slot) else {
                continue;
            };
            let mut events = Vec::new();
            e.leg.pull_frame(&mut events);
            if let Some((link, side)) = &e.remote {
                link.put(*side, &e.leg.frame_in);
            }
            if !events.is_empty() {
                let (id, partner) = (e.id, e.partner);
                self.dispatch(slot, id, partner, events);
            }
        }
        // Phase 2: what each peer hears, encoded and sent; recording; RTCP.
        let mut out = Outgoing::default();
        let mut frame = [0i16; FRAME];
        for slot in 0..self.slots.len() {
            let partner_frame = match self.slots.get(slot) {
                // A partner on another worker: what it heard, silence while nothing came.
                Some(Some(Entry {
                    remote: Some((link, side)),
                    ..
                })) => Some(link.take(*side).unwrap_or([0; FRAME])),
                Some(Some(e)) => e
                    .partner
                    .and_then(|p| self.slots.get(p))
                    .and_then(|p| p.as_ref())
                    .map(|p| p.leg.frame_in),
                _ => continue,
            };
            let Some(Some(e)) = self.slots.get_mut(slot) else {
                continue;
            };
            let mut events = Vec::new();
            match &partner_frame {
                Some(pf) => frame = *pf,
                None => e.leg.own_frame(&mut frame, &mut events),
            }
            out.rtp.clear();
            out.rtcp.clear();
            e.leg.send_frame(&frame, &mut out);
            let chunks = e.leg.record_frame(partner_frame.as_ref(), &mut events);
            e.leg.housekeeping(now, unix, &mut out, &mut events);
            if let Some(w) = e.webrtc.as_mut() {
                // A browser leg: the leg's RTP goes through SRTP; RTCP is str0m's own.
                let mut wout = super::webrtc::WebRtcOutput::default();
                for (_, pkt) in &out.rtp {
                    w.send_rtp(pkt, now, &mut wout);
                    self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                }
                w.timeout(now, &mut wout);
                for (dst, d) in &wout.transmits {
                    let _ = e.rtp.send_to(d, *dst);
                }
                out.rtp.clear();
                out.rtcp.clear();
            }
            if let Some(s) = e.sdes.as_mut() {
                // Nothing leaves a secure leg in the clear: what cannot be protected is dropped.
                out.rtp.retain_mut(|(_, pkt)| match s.protect_rtp(pkt) {
                    Some(p) => {
                        *pkt = p;
                        true
                    }
                    None => false,
                });
                out.rtcp.retain_mut(|(_, pkt)| match s.protect_rtcp(pkt) {
                    Some(p) => {
                        *pkt = p;
                        true
                    }
                    None => false,
                });
            }
            for (dst, pkt) in &out.rtp {
                if e.rtp.send_to(pkt, *dst).is_ok() {
                    self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            for (dst, pkt) in &out.rtcp {
                let sock = if e.leg.params.rtcp_mux {
                    &e.rtp
                } else {
                    &e.rtcp
                };
                let _ = sock.send_to(pkt, *dst);
            }
            for (id, samples) in chunks {
                let _ = self.writer.send(WriterMsg::Append { id, samples });
            }
            if !events.is_empty() {
                let (id, partner) = (e.id, e.partner);
                self.dispatch(slot, id, partner, events);
            }
        }
    }
}

/// Builds [`LegParams`] from an SDP negotiation.
pub fn params_from_sdp(
    neg: &crate::sdp::NegotiatedAudio,
    rtp_timeout: Duration,
    inband: InbandDtmf,
) -> LegParams {
    use crate::sdp::{AudioCodec, Direction};
    let remote_rtp = SocketAddr::new(neg.remote_addr, neg.remote_port);
    let remote_rtcp = if neg.rtcp_mux {
        remote_rtp
    } else {
        SocketAddr::new(neg.remote_addr, neg.remote_port.wrapping_add(1))
    };
    LegParams {
        law: match neg.codec {
            AudioCodec::Pcmu => super::g711::Law::Ulaw,
            AudioCodec::Pcma => super::g711::Law::Alaw,
        },
        pt: neg.codec_pt,
        dtmf_pt: neg.dtmf_pt,
        remote_rtp,
        remote_rtcp,
        rtcp_mux: neg.rtcp_mux,
        send: matches!(neg.direction, Direction::SendRecv | Direction::SendOnly)
            && !neg.remote_addr.is_unspecified(),
        expect_rx: matches!(
            neg.offered_direction,
            Direction::SendRecv | Direction::SendOnly
        ) && !neg.remote_addr.is_unspecified(),
        rtp_timeout,
        inband,
        signalling_ip: None,
        srtp: neg.srtp.clone().filter(|_| !neg.browser),
    }
}

/// A leg's SDES contexts after a new offer/answer: started, rekeyed, or ended (a re-INVITE
/// that moved the stream to plain RTP).
fn rekey(
    sdes: &mut Option<Box<SdesCrypto>>,
    keys: Option<&crate::sdp::SrtpKeys>,
) -> Result<(), super::sdes::SdesError> {
    match (sdes.as_mut(), keys) {
        (Some(s), Some(k)) => s.rekey(k),
        (None, Some(k)) => {
            *sdes = Some(Box::new(SdesCrypto::new(k)?));
            Ok(())
        }
        (_, None) => {
            *sdes = None;
            Ok(())
        }
    }
}

/// Whatever reached a leg's ports before the leg existed came from someone who guessed them
/// (the peer sends only once it has our answer, which goes out after this): it is dropped
/// unread, here on the caller's thread so nothing the peer sends later is lost. Browser legs
/// keep theirs; ICE and DTLS vouch for those packets.
fn discard_early(media: &ReservedMedia) {
    if media.webrtc.is_none() {
        media.lease.discard_queued();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::TelephoneEvent;
    use crate::media::g711::Law;
    use crate::media::leg::{DigitSource, InbandDtmf};
    use crate::media::rtp::{write_packet, RtpPacket};
    use crate::media::RtpPortPool;
    use std::net::UdpSocket as StdUdp;

    fn setup(
        base: u16,
    ) -> (
        MediaEngine,
        tokio::sync::mpsc::UnboundedReceiver<MediaEvent>,
        RtpPortPool,
    ) {
        let (engine, events) = MediaEngine::start(MediaConfig {
            workers: 1,
            prompts_dir: "prompts".into(),
            tenant_prompts_dir: None,
        })
        .expect("engine");
        let pool = RtpPortPool::new("127.0.0.1".parse().expect("ip"), base, base + 9);
        (engine, events, pool)
    }

    fn peer() -> StdUdp {
        let s = StdUdp::bind("127.0.0.1:0").expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        s
    }

    fn params(remote: SocketAddr, law: Law, pt: u8, dtmf: Option<u8>) -> LegParams {
        LegParams {
            law,
            pt,
            dtmf_pt: dtmf,
            remote_rtp: remote,
            remote_rtcp: SocketAddr::new(remote.ip(), remote.port() + 1),
            rtcp_mux: false,
            send: true,
            expect_rx: true,
            rtp_timeout: Duration::from_millis(600),
            inband: InbandDtmf::Auto,
            signalling_ip: None,
            srtp: None,
        }
    }

    fn tone_packets(law: Law, freq: f32, n: usize, seq0: u16) -> Vec<Vec<u8>> {
        (0..n)
            .map(|k| {
                let pcm: Vec<i16> = (0..160)
                    .map(|i| {
                        ((2.0 * std::f32::consts::PI * freq * (k * 160 + i) as f32 / 8000.0).sin()
                            * 8000.0) as i16
                    })
                    .collect();
                let mut enc = Vec::new();
                law.encode(&pcm, &mut enc);
                let mut p = Vec::new();
                write_packet(
                    &mut p,
                    k == 0,
                    if law == Law::Ulaw { 0 } else { 8 },
                    seq0.wrapping_add(k as u16),
                    (k * 160) as u32,
                    4242,
                    &enc,
                );
                p
            })
            .collect()
    }

    /// Sends packets paced at 20 ms and collects what comes back, decoded.
    fn exchange(
        sock: &StdUdp,
        to: SocketAddr,
        packets: &[Vec<u8>],
        extra_ms: u64,
    ) -> (Vec<i16>, Vec<(u16, u32, u8)>) {
        let mut audio = Vec::new();
        let mut headers = Vec::new();
        let mut buf = [0u8; 2048];
        let mut recv = |sock: &StdUdp, audio: &mut Vec<i16>, headers: &mut Vec<(u16, u32, u8)>| {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                if let Some(p) = RtpPacket::parse(&buf[..n]) {
                    headers.push((p.sequence, p.timestamp, p.payload_type));
                    let law = if p.payload_type == 8 {
                        Law::Alaw
                    } else {
                        Law::Ulaw
                    };
                    if p.payload_type == 0 || p.payload_type == 8 {
                        law.decode(p.payload, audio);
                    }
                }
            }
        };
        for p in packets {
            sock.send_to(p, to).expect("send");
            std::thread::sleep(Duration::from_millis(20));
            recv(sock, &mut audio, &mut headers);
        }
        let end = Instant::now() + Duration::from_millis(extra_ms);
        while Instant::now() < end {
            recv(sock, &mut audio, &mut headers);
            std::thread::sleep(Duration::from_millis(5));
        }
        (audio, headers)
    }

    fn freq(s: &[i16]) -> f32 {
        crate::media::wav::tests::zero_crossing_freq(s, 8000)
    }

    #[test]
    fn echo_leg_returns_the_callers_tone_with_continuous_numbering() {
        let (engine, mut events, pool) = setup(43000);
        let phone = peer();
        let lease = pool.allocate().expect("lease");
        let port = lease.port();
        let leg = engine
            .create_leg(
                lease.into(),
                params(phone.local_addr().expect("a"), Law::Ulaw, 0, Some(101)),
            )
            .expect("leg");
        engine.echo(leg).expect("echo");
        let (audio, headers) = exchange(
            &phone,
            SocketAddr::from(([127, 0, 0, 1], port)),
            &tone_packets(Law::Ulaw, 700.0, 50, 1),
            200,
        );
        let loud: Vec<i16> = audio
            .into_iter()
            .skip_while(|s| s.unsigned_abs() < 1000)
            .collect();
        assert!(loud.len() > 4000, "echoed audio: {} samples", loud.len());
        let f = freq(&loud[..4000]);
        assert!((f - 700.0).abs() < 15.0, "echo at {f} Hz");
        assert!(headers
            .windows(2)
            .all(|w| w[1].0 == w[0].0.wrapping_add(1) && w[1].1 == w[0].1.wrapping_add(160)));
        engine.destroy(leg).expect("destroy");
        let closed = loop {
            match events.blocking_recv() {
                Some(MediaEvent::Closed { leg: l, quality }) if l == leg => break quality,
                Some(_) => continue,
                None => panic!("engine gone"),
            }
        };
        assert!(
            closed.packets_received >= 50 && closed.packets_lost == 0 && closed.mos > 4.0,
            "{closed:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(pool.in_use(), 0, "port returned");
    }

    #[test]
    fn bridge_transcodes_and_relays_rfc4733_or_asks_for_info() {
        let (engine, mut events, pool) = setup(43020);
        let (pa, pb) = (peer(), peer());
        let (la, lb) = (pool.allocate().expect("a"), pool.allocate().expect("b"));
        let (port_a, port_b) = (la.port(), lb.port());
        let a = engine
            .create_leg(
                la.into(),
                params(pa.local_addr().expect("a"), Law::Ulaw, 0, Some(101)),
            )
            .expect("a");
        let b = engine
            .create_leg_beside(
                a,
                lb.into(),
                params(pb.local_addr().expect("b"), Law::Alaw, 8, None),
            )
            .expect("b");
        engine.bridge(a, b).expect("bridge");
        // A speaks µ-law at 600 Hz: B must hear it, A-law encoded.
        let sender = std::thread::spawn(move || {
            let pkts = tone_packets(Law::Ulaw, 600.0, 40, 10);
            for p in &pkts {
                pa.send_to(p, SocketAddr::from(([127, 0, 0, 1], port_a)))
                    .expect("send");
                std::thread::sleep(Duration::from_millis(20));
            }
            let ev = TelephoneEvent {
                event: 9,
                end: true,
                volume: 10,
                duration: 800,
            };
            let mut p = Vec::new();
            write_packet(&mut p, true, 101, 60, 9999, 4242, &ev.to_bytes());
            pa.send_to(&p, SocketAddr::from(([127, 0, 0, 1], port_a)))
                .expect("send");
            pa
        });
        let (audio_b, headers_b) =
            exchange(&pb, SocketAddr::from(([127, 0, 0, 1], port_b)), &[], 1200);
        let _pa = sender.join().expect("join");
        assert!(headers_b.iter().all(|h| h.2 == 8), "B gets A-law");
        let loud: Vec<i16> = audio_b
            .into_iter()
            .skip_while(|s| s.unsigned_abs() < 1000)
            .collect();
        // Under a loaded test run the exchange may catch less: a quarter second is enough to
        // tell the frequency.
        assert!(loud.len() > 2000, "B heard {} loud samples", loud.len());
        assert!((freq(&loud[..2000]) - 600.0).abs() < 15.0);
        // The digit is reported on A, and since B has no telephone-event, relayed by INFO.
        let mut saw_digit = false;
        let mut saw_relay = false;
        while let Ok(ev) = events.try_recv() {
            match ev {
                MediaEvent::Leg {
                    leg,
                    event:
                        LegEvent::Digit {
                            digit: '9',
                            source: DigitSource::Rfc4733,
                        },
                } if leg == a => saw_digit = true,
                MediaEvent::RelayDigitByInfo { to, digit: '9' } if to == b => saw_relay = true,
                _ => {}
            }
        }
        assert!(saw_digit && saw_relay);
        engine.destroy(a).expect("d");
        engine.destroy(b).expect("d");
    }

    /// An attended transfer's shape: two legs made apart, on two workers, then bridged (the
    /// leg each was bridged to before falls back to its own source).
    #[test]
    fn legs_on_two_workers_hear_each_other_through_a_link() {
        let (engine, _events) = MediaEngine::start(MediaConfig {
            workers: 2,
            prompts_dir: "prompts".into(),
            tenant_prompts_dir: None,
        })
        .expect("engine");
        let pool = RtpPortPool::new("127.0.0.1".parse().expect("ip"), 43200, 43209);
        let (pa, pb) = (peer(), peer());
        let (la, lb) = (pool.allocate().expect("a"), pool.allocate().expect("b"));
        let (port_a, port_b) = (la.port(), lb.port());
        let a = engine
            .create_leg(
                la.into(),
                params(pa.local_addr().expect("a"), Law::Ulaw, 0, None),
            )
            .expect("a");
        let b = engine
            .create_leg(
                lb.into(),
                params(pb.local_addr().expect("b"), Law::Ulaw, 0, None),
            )
            .expect("b");
        assert_ne!(a.worker(), b.worker(), "made apart");
        engine.bridge(a, b).expect("bridge");
        let sender = std::thread::spawn(move || {
            for p in &tone_packets(Law::Ulaw, 600.0, 60, 10) {
                pa.send_to(p, SocketAddr::from(([127, 0, 0, 1], port_a)))
                    .expect("send");
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (heard, _) = exchange(&pb, SocketAddr::from(([127, 0, 0, 1], port_b)), &[], 1200);
        sender.join().expect("join");
        let loud: Vec<i16> = heard
            .into_iter()
            .skip_while(|s| s.unsigned_abs() < 1000)
            .collect();
        assert!(loud.len() > 2000, "B heard {} loud samples", loud.len());
        // Two workers' grids under a loaded test run may cost a frame here and there: the
        // tone is judged by the median of 50 ms blocks.
        let mut f: Vec<f32> = loud.chunks_exact(400).map(freq).collect();
        f.sort_by(|a, b| a.total_cmp(b));
        assert!((f[f.len() / 2] - 600.0).abs() < 15.0, "{f:?}");
        engine.destroy(a).expect("d");
        engine.destroy(b).expect("d");
    }

    #[test]
    fn recording_holds_the_tone_and_rtp_timeout_is_reported() {
        let (engine, mut events, pool) = setup(43040);
        let phone = peer();
        let lease = pool.allocate().expect("lease");
        let port = lease.port();
        let leg = engine
            .create_leg(
                lease.into(),
                params(phone.local_addr().expect("a"), Law::Alaw, 8, Some(101)),
            )
            .expect("leg");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("rec/test.wav");
        let opts = RecordOptions {
            stop_digits: "#".into(),
            max_length: Duration::from_secs(30),
            max_silence: None,
            stereo: false,
        };
        engine.record(leg, path.clone(), opts).expect("record");
        exchange(
            &phone,
            SocketAddr::from(([127, 0, 0, 1], port)),
            &tone_packets(Law::Alaw, 1000.0, 50, 0),
            100,
        );
        // '#' stops the recording.
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let mut p = Vec::new();
        write_packet(&mut p, true, 101, 50, 50 * 160, 4242, &ev.to_bytes());
        phone
            .send_to(&p, SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("send");
        let mut done = None;
        let mut timeout = false;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !(done.is_some() && timeout) {
            match events.try_recv() {
                Ok(MediaEvent::Leg {
                    event:
                        LegEvent::RecordingDone {
                            duration_ms,
                            reason,
                            ..
                        },
                    ..
                }) => done = Some((duration_ms, reason)),
                Ok(MediaEvent::Leg {
                    event: LegEvent::RtpTimeout,
                    ..
                }) => timeout = true,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let (ms, reason) = done.expect("recording done");
        assert_eq!(reason, RecordStop::Digit('#'));
        assert!((900..=1400).contains(&ms), "{ms}");
        assert!(timeout, "no RTP for 600 ms must be reported");
        std::thread::sleep(Duration::from_millis(200));
        let wav =
            crate::media::wav::decode(&std::fs::read(&path).expect("file")).expect("valid wav");
        assert_eq!(wav.rate, 8000);
        let loud: Vec<i16> = wav
            .samples
            .iter()
            .copied()
            .skip_while(|s| s.unsigned_abs() < 1000)
            .collect();
        assert!(loud.len() >= 7000, "{}", loud.len());
        assert!((freq(&loud[..7000]) - 1000.0).abs() < 15.0);
        engine.destroy(leg).expect("d");
    }
}

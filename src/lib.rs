//! # Switchyard
//!
//! A telephony call-control server: SIP registrar and B2BUA, RTP media, IVR and voicemail,
//! multi-tenant, with an HTTP admin API. This page is the short manual of the code; the
//! README is the manual for users.
//!
//! ## Shape
//!
//! ```text
//!  sockets ──► sip::transport ──► sip::endpoint (sans-IO) ──► call ──► apps
//!     ▲                               │  │  │                   │
//!     └──────── transmits ────────────┘  │  └─► Work (disk) ──► server threads
//!                                     │  └─► MediaBackend ◄── media reservations ◄── call
//!                                     └─► CallPolicy ◄── call::policy (routing, trust, limits)
//! ```
//!
//! ## Layers
//!
//! Dependencies point down; `tests/layers.rs` reads every import and fails when one points
//! up (the README's "Layout" has the table). From the bottom: [`records`]; [`sdp`] and the SIP
//! protocol pieces in [`sip`] (crates of their own: `crates/sdp`, `crates/sip`, so the
//! compiler keeps them from naming anything above) and [`localdb`]; [`media`]; [`tenant`]; storage ([`blob`],
//! [`history`], [`spool`], [`mailstore`], [`promptstore`], [`retention`]); the SIP endpoint
//! ([`sip::endpoint`]: no sockets, no disk, no clock, seeded randomness ([`sip::ids`]); media
//! through [`sip::endpoint::MediaBackend`] in SDP terms, routing decisions through
//! [`sip::endpoint::CallPolicy`], disk work as [`sip::endpoint::Work`]);
//! [`call`] (the runner reaches media only through [`call::CallMedia`]); [`apps`];
//! [`cluster`] (beside them, above the tenant store); [`api`];
//! and the wiring ([`server`], [`settings`], [`doctor`], [`backup`]), which sees everything.
//!
//! - [`sip`]: RFC 3261 message intake, transaction state machines, digest auth, registrar and
//!   the [`sip::endpoint::Endpoint`] that takes bytes and time and returns bytes to send.
//! - [`records`]: the plain data every layer passes around (call records, voicemail
//!   messages, who called, how a call ended); imports nothing.
//! - [`sdp`]: offer/answer for audio.
//! - [`media`]: the RTP engine (G.711, RTP/RTCP, DTMF, jitter buffer, prompts, recording,
//!   bridging) and RTP port allocation.
//! - [`call`]: the call-control API (verbs and events), the sans-IO per-call session that runs
//!   an app, and the runner that connects sessions to the endpoint and the media engine.
//! - [`apps`]: IVR, voicemail (deposit and mailbox menu), echo, prompt loop, ring test, and the
//!   user and external destinations — written against [`call::control`] only.
//! - [`tenant`]: configuration model, validation, sled store and the immutable snapshot.
//! - [`history`]: the history store (call records, voicemail and recording metadata, audit)
//!   in SQLite or PostgreSQL.
//! - [`blob`]: blob storage for audio (local folder, S3, Azure) through `object_store`.
//! - [`mailstore`], [`promptstore`]: voicemail messages and greetings, tenants' prompts (local
//!   working copies, mirrored to the stores through the spool).
//! - [`spool`]: the local durable queue that moves records and audio to those stores, so
//!   nothing is lost while they are down.
//! - [`retention`]: each tenant's retention settings applied across the stores.
//! - [`backup`]: `switchyard backup`/`restore`: configuration and the SQLite history in one
//!   file.
//! - [`cluster`]: several nodes as one service: tenant configuration from a NATS JetStream
//!   key-value bucket applied into each node's snapshot, registrations shared between nodes,
//!   and the call bus the admin API asks about other nodes' calls.
//! - [`settings`]: the TOML file and `SWITCHYARD_*` environment overrides.
//! - [`server`]: the runtime: sockets, the clock, signals and drain.
//!
//! ## Rules the code keeps
//!
//! - Protocol logic never reads the clock or touches a socket: it receives [`sip::endpoint::Now`]
//!   and returns transmits and deadlines, so RFC timers are tested on a fake clock. Its random
//!   values come from a seed it is given, so a test sees the same bytes on every run.
//! - Nothing on the SIP loop waits for a disk write: registrations, mailbox counts, voicemail
//!   writes, call records and audio go to threads of their own, and audio to play is read by
//!   the media engine's clip loader (see the README's "Layout" for the small reads that
//!   remain).
//! - A call takes one tenant snapshot when it starts and keeps it: configuration changes reach
//!   new calls at once and never disturb a call in progress.
//! - Input from the network never panics the server: bad messages get `400` (with a Warning
//!   naming the problem) when they can be answered, and are dropped and logged otherwise.
//! - Secrets (digest HA1, PINs, trunk passwords) never reach a log line.

pub mod api;
pub mod apps;
pub mod backup;
pub mod blob;
pub mod call;
pub mod cluster;
pub mod doctor;
pub mod history;
pub mod localdb;
pub mod mailstore;
pub mod media;
pub mod promptstore;
pub mod records;
pub mod retention;
pub use switchyard_sdp as sdp;
pub mod server;
pub mod settings;
pub mod sip;
pub mod spool;
pub mod tenant;
#[doc(hidden)]
pub mod test_support;

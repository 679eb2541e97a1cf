//! Media: RTP ports and the RTP engine (playback, DTMF, recording, bridging, RTCP).
//!
//! Pieces, each testable alone:
//! - [`g711`]: µ-law/A-law tables; [`rtp`]: packets, sender state, receive statistics
//!   (RFC 3550 A.8 jitter), symmetric-RTP latching; [`rtcp`]: reports, RTT and MOS.
//! - [`dtmf`]: RFC 4733 events (once per press) and the Goertzel in-band detector;
//!   [`jitter`]: the sample-based jitter buffer that aligns everything on the 20 ms grid.
//! - [`wav`] and [`prompts`]: prompts decoded and resampled once, shared by all calls;
//!   [`recorder`]: the thread that writes recordings, header always valid.
//! - [`reserve`]: what the SIP side reserved for a call (ports, a browser's WebRTC
//!   transport) until the call layer starts its leg.
//! - [`sdes`]: SRTP for phone and trunk legs keyed in SDP (RFC 4568).
//! - [`leg`]: one leg's media logic with no I/O; [`engine`]: the workers that run many legs on
//!   one shared 20 ms tick per core, and the command/event API the call layer uses.

mod crosslink;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod jitter;
pub mod leg;
mod loader;
pub mod ports;
pub mod prompts;
pub mod recorder;
pub mod reserve;
pub mod rtcp;
pub mod rtp;
pub mod sdes;
pub mod wav;
pub mod webrtc;

pub use engine::{Audio, LegId, MediaConfig, MediaEngine, MediaError, MediaEvent};
pub use ports::{PortError, RtpPortLease, RtpPortPool};
pub use reserve::{MediaReservations, ReserveError, ReservedMedia};

//! Media: RTP port allocation today; the RTP engine (playback, DTMF, recording, bridging)
//! grows here.

pub mod ports;

pub use ports::{PortError, RtpPortLease, RtpPortPool};

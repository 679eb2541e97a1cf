//! Media as the SIP endpoint sees it: a port to write into SDP, and for a browser the SDP its
//! WebRTC transport makes. Nothing else crosses: the endpoint holds no socket and no DTLS
//! state, so it runs (and is tested) without binding anything.
//!
//! The backend keeps what it made for a call under the call's id. When the endpoint says
//! media may start ([`super::CallEvent::MediaStart`]) the call layer takes it from the backend
//! with the negotiated audio; when a call or leg ends, the endpoint calls
//! [`MediaBackend::release`], which frees whatever was not taken.

use std::time::Instant;

/// Why media could not be set up for a call or leg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaRefused {
    /// No RTP port pair is free (the call is answered 503).
    #[error("no media ports free")]
    NoPorts,
    /// A browser's SDP could not be answered, or its answer could not be accepted (488).
    #[error("browser SDP refused: {0}")]
    BrowserSdp(String),
}

/// The media side, in SDP terms. See the module documentation.
pub trait MediaBackend: Send {
    /// Reserves an RTP port pair for call or leg `id` and returns the port to announce.
    fn reserve(&mut self, id: u64) -> Result<u16, MediaRefused>;

    /// Answers a browser's WebRTC offer on `id`'s reserved ports: our answer SDP.
    fn answer_browser(
        &mut self,
        id: u64,
        offer: &str,
        now: Instant,
    ) -> Result<String, MediaRefused>;

    /// Makes a WebRTC offer to a browser on `id`'s reserved ports: our offer SDP.
    fn offer_browser(&mut self, id: u64, now: Instant) -> Result<String, MediaRefused>;

    /// The browser answered our offer for `id`.
    fn browser_answered(&mut self, id: u64, answer: &str) -> Result<(), MediaRefused>;

    /// Call or leg `id` is over: free whatever the call layer did not take.
    fn release(&mut self, id: u64);
}

/// A backend that reserves nothing real: ports count up from 40000 and browsers get a
/// placeholder SDP. For tests of the endpoint, which then bind no socket. Clones share their
/// state, so a test keeps one to check that every ended call released its media.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct FakeMedia(std::sync::Arc<std::sync::Mutex<FakeState>>);

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeState {
    next_port: u16,
    reserved: std::collections::BTreeSet<u64>,
    exhausted: bool,
}

#[cfg(test)]
impl FakeMedia {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids holding a reservation.
    pub fn reserved(&self) -> Vec<u64> {
        self.state().reserved.iter().copied().collect()
    }

    /// Refuse every reservation from now on (as when the port range is exhausted).
    pub fn exhaust(&self) {
        self.state().exhausted = true;
    }

    /// The call layer took `id`'s media to start it.
    pub fn take(&self, id: u64) -> bool {
        self.state().reserved.remove(&id)
    }
}

#[cfg(test)]
impl MediaBackend for FakeMedia {
    fn reserve(&mut self, id: u64) -> Result<u16, MediaRefused> {
        let mut s = self.state();
        if s.exhausted {
            return Err(MediaRefused::NoPorts);
        }
        s.next_port = s.next_port.max(40_000).wrapping_add(2);
        s.reserved.insert(id);
        Ok(s.next_port)
    }

    fn answer_browser(
        &mut self,
        id: u64,
        _offer: &str,
        _now: Instant,
    ) -> Result<String, MediaRefused> {
        self.state()
            .reserved
            .contains(&id)
            .then(|| browser_sdp(id))
            .ok_or(MediaRefused::BrowserSdp("nothing reserved".into()))
    }

    fn offer_browser(&mut self, id: u64, now: Instant) -> Result<String, MediaRefused> {
        self.answer_browser(id, "", now)
    }

    fn browser_answered(&mut self, id: u64, _answer: &str) -> Result<(), MediaRefused> {
        self.state()
            .reserved
            .contains(&id)
            .then_some(())
            .ok_or(MediaRefused::BrowserSdp("nothing reserved".into()))
    }

    fn release(&mut self, id: u64) {
        self.state().reserved.remove(&id);
    }
}

/// The SDP [`FakeMedia`] gives a browser: PCMU and telephone-event over DTLS-SRTP.
#[cfg(test)]
fn browser_sdp(id: u64) -> String {
    format!(
        "v=0\r\no=- {id} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\na=fingerprint:sha-256 00\r\na=sendrecv\r\n"
    )
}

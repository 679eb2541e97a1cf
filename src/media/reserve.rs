//! Media reserved for a call before it starts: the RTP port pair and, for a browser, the
//! WebRTC transport whose SDP the SIP side sent.
//!
//! The SIP endpoint works in SDP terms only. When it needs a port to announce (or a browser's
//! DTLS/ICE answer or offer), the server's adapter asks [`MediaReservations`], which binds the
//! ports and keeps what it made under the call's id. The call layer takes it
//! ([`MediaReservations::take`]) when the endpoint says media may start, and hands it to the
//! engine with the leg; if the call ends first, the endpoint releases it and the ports go back
//! to the pool. Sockets and DTLS state never travel through SIP code.

use super::ports::{PortError, RtpPortLease, RtpPortPool};
use super::webrtc::{WebRtcError, WebRtcTransport};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What was reserved for one call or leg.
#[derive(Debug)]
pub struct ReservedMedia {
    /// The bound RTP/RTCP port pair; dropping it frees the ports.
    pub lease: RtpPortLease,
    /// A browser leg's WebRTC transport (DTLS-SRTP, ICE).
    pub webrtc: Option<Box<WebRtcTransport>>,
}

impl From<RtpPortLease> for ReservedMedia {
    /// A plain RTP leg's media: its ports alone.
    fn from(lease: RtpPortLease) -> ReservedMedia {
        ReservedMedia {
            lease,
            webrtc: None,
        }
    }
}

/// Why a reservation could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// No port pair could be bound.
    #[error(transparent)]
    Ports(#[from] PortError),
    /// The browser's SDP could not be answered, or its answer accepted.
    #[error(transparent)]
    WebRtc(#[from] WebRtcError),
    /// Nothing (or no WebRTC transport) is reserved under this id.
    #[error("no media reserved for call {0}")]
    NotReserved(u64),
}

/// Reservations by call or leg id. Cloning shares the table (the SIP side fills it, the call
/// layer empties it).
#[derive(Clone)]
pub struct MediaReservations {
    pool: RtpPortPool,
    public_ip: IpAddr,
    held: Arc<Mutex<HashMap<u64, ReservedMedia>>>,
}

impl MediaReservations {
    /// Reservations from `pool`; `public_ip` is the address browsers reach the ports on.
    pub fn new(pool: RtpPortPool, public_ip: IpAddr) -> MediaReservations {
        MediaReservations {
            pool,
            public_ip,
            held: Arc::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ReservedMedia>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds a port pair for `id` and returns its RTP port.
    pub fn reserve(&self, id: u64) -> Result<u16, ReserveError> {
        let lease = self.pool.allocate()?;
        let port = lease.port();
        self.table().insert(
            id,
            ReservedMedia {
                lease,
                webrtc: None,
            },
        );
        Ok(port)
    }

    fn local(&self, id: u64) -> Result<SocketAddr, ReserveError> {
        self.table()
            .get(&id)
            .map(|r| SocketAddr::new(self.public_ip, r.lease.port()))
            .ok_or(ReserveError::NotReserved(id))
    }

    /// Answers a browser's offer on `id`'s ports; returns our answer SDP.
    pub fn answer_browser(
        &self,
        id: u64,
        offer: &str,
        now: Instant,
    ) -> Result<String, ReserveError> {
        let local = self.local(id)?;
        let (t, answer) = WebRtcTransport::answer(offer, local, now)?;
        if let Some(r) = self.table().get_mut(&id) {
            r.webrtc = Some(Box::new(t));
        }
        Ok(answer)
    }

    /// Makes an offer to a browser on `id`'s ports; returns our offer SDP.
    pub fn offer_browser(&self, id: u64, now: Instant) -> Result<String, ReserveError> {
        let local = self.local(id)?;
        let (t, offer) = WebRtcTransport::offer(local, now)?;
        if let Some(r) = self.table().get_mut(&id) {
            r.webrtc = Some(Box::new(t));
        }
        Ok(offer)
    }

    /// The browser answered our offer on `id`.
    pub fn browser_answered(&self, id: u64, answer: &str) -> Result<(), ReserveError> {
        let mut table = self.table();
        let t = table
            .get_mut(&id)
            .and_then(|r| r.webrtc.as_mut())
            .ok_or(ReserveError::NotReserved(id))?;
        t.accept_answer(answer)?;
        Ok(())
    }

    /// Takes what was reserved for `id`, to start its media.
    pub fn take(&self, id: u64) -> Option<ReservedMedia> {
        self.table().remove(&id)
    }

    /// Frees what was reserved for `id` (the call ended before its media started).
    pub fn release(&self, id: u64) {
        self.table().remove(&id);
    }

    /// Reservations waiting for their media to start.
    pub fn held(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_holds_its_ports_until_taken_or_released() {
        let pool = RtpPortPool::new("127.0.0.1".parse().expect("ip"), 47100, 47109);
        let r = MediaReservations::new(pool.clone(), "127.0.0.1".parse().expect("ip"));
        let a = r.reserve(1).expect("reserve");
        let b = r.reserve(2).expect("reserve");
        assert_ne!(a, b);
        assert_eq!(pool.in_use(), 2);
        let taken = r.take(1).expect("taken");
        assert_eq!(taken.lease.port(), a);
        r.release(2);
        assert_eq!(pool.in_use(), 1, "the taken lease still holds its port");
        drop(taken);
        assert_eq!(pool.in_use(), 0);
        assert!(r.take(2).is_none());
        assert!(matches!(
            r.browser_answered(9, "v=0"),
            Err(ReserveError::NotReserved(9))
        ));
    }
}

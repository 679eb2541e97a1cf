//! RTP port allocation from `media.rtp_ports`.
//!
//! A lease binds the even RTP port and the odd RTCP port above it, so the port named in an SDP
//! answer is really ours and nobody else can take it while the call lives. Dropping the lease
//! (however the call ended) closes both sockets and returns the pair to the back of the free
//! list, which delays reuse and keeps late packets of a finished call away from the next one.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

/// Why no port could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every pair in the range is in use (or could not be bound).
    #[error("no free RTP port pair in range")]
    Exhausted,
}

struct PoolInner {
    free: VecDeque<u16>,
    in_use: usize,
}

/// The pool of RTP/RTCP port pairs.
#[derive(Clone)]
pub struct RtpPortPool {
    bind_ip: IpAddr,
    inner: Arc<Mutex<PoolInner>>,
}

/// A bound RTP/RTCP port pair, held for the life of a call leg.
pub struct RtpPortLease {
    port: u16,
    rtp: Option<UdpSocket>,
    rtcp: Option<UdpSocket>,
    pool: Arc<Mutex<PoolInner>>,
}

impl std::fmt::Debug for RtpPortLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtpPortLease({})", self.port)
    }
}

impl RtpPortPool {
    /// A pool over `first..=last` (even ports used for RTP), binding on `bind_ip`.
    pub fn new(bind_ip: IpAddr, first: u16, last: u16) -> RtpPortPool {
        let start = first + (first % 2);
        let free = (start..last).step_by(2).collect();
        RtpPortPool {
            bind_ip,
            inner: Arc::new(Mutex::new(PoolInner { free, in_use: 0 })),
        }
    }

    /// Takes and binds a free pair.
    pub fn allocate(&self) -> Result<RtpPortLease, PortError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A port another program holds is skipped and tried again later.
        for _ in 0..inner.free.len() {
            let Some(port) = inner.free.pop_front() else {
                break;
            };
            let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port));
            let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    inner.in_use += 1;
                    return Ok(RtpPortLease {
                        port,
                        rtp: Some(rtp),
                        rtcp: Some(rtcp),
                        pool: self.inner.clone(),
                    });
                }
                _ => inner.free.push_back(port),
            }
        }
        Err(PortError::Exhausted)
    }

    /// Pairs currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).in_use
    }

    /// Pairs free.
    pub fn available(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free
            .len()
    }
}

impl RtpPortLease {
    /// The RTP port (RTCP is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Hands the bound sockets to the media engine.
    pub fn take_sockets(&mut self) -> Option<(UdpSocket, UdpSocket)> {
        Some((self.rtp.take()?, self.rtcp.take()?))
    }
}

impl Drop for RtpPortLease {
    fn drop(&mut self) {
        self.rtp = None;
        self.rtcp = None;
        let mut inner = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        inner.in_use = inner.in_use.saturating_sub(1);
        inner.free.push_back(self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_bind_and_return() {
        let pool = RtpPortPool::new("127.0.0.1".parse().expect("ip"), 41000, 41010);
        let total = pool.available();
        assert_eq!(total, 5);
        let a = pool.allocate().expect("lease");
        assert_eq!(a.port() % 2, 0);
        // The port is really bound.
        assert!(UdpSocket::bind(("127.0.0.1", a.port())).is_err());
        assert_eq!(pool.in_use(), 1);
        let port = a.port();
        drop(a);
        assert_eq!(pool.in_use(), 0);
        assert!(UdpSocket::bind(("127.0.0.1", port)).is_ok());
        let all: Vec<_> = (0..total).filter_map(|_| pool.allocate().ok()).collect();
        assert_eq!(all.len(), total);
        assert_eq!(pool.allocate().err(), Some(PortError::Exhausted));
    }
}

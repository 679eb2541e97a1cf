//! RTP port allocation from `media.rtp_ports`.
//!
//! A lease binds the even RTP port and the odd RTCP port above it, so the port named in an SDP
//! answer is really ours and nobody else can take it while the call lives.
//!
//! Pairs are handed out at random from the free set: with sequential ports anyone who sees one
//! call's port knows the next call's, which is half of an RTP-bleed attack. Dropping the lease
//! (however the call ended) closes both sockets and parks the pair in a short cool-down queue
//! before it may be chosen again, which keeps late packets of a finished call away from the
//! next one.

use rand::Rng;
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
    /// Pairs that may be chosen (at random).
    free: Vec<u16>,
    /// Recently released pairs, oldest first; they rejoin `free` as others are released.
    cooling: VecDeque<u16>,
    cooling_cap: usize,
    in_use: usize,
}

impl PoolInner {
    fn release(&mut self, port: u16) {
        self.cooling.push_back(port);
        while self.cooling.len() > self.cooling_cap {
            if let Some(p) = self.cooling.pop_front() {
                self.free.push(p);
            }
        }
    }

    /// A random free pair, or the longest-cooled one when none is free.
    fn take(&mut self) -> Option<u16> {
        if self.free.is_empty() {
            return self.cooling.pop_front();
        }
        let i = rand::thread_rng().gen_range(0..self.free.len());
        Some(self.free.swap_remove(i))
    }
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
        let free: Vec<u16> = (start..last).step_by(2).collect();
        // A quarter of the range cools down (at most 256 pairs), so a small range still has
        // pairs to choose from.
        let cooling_cap = (free.len() / 4).min(256);
        RtpPortPool {
            bind_ip,
            inner: Arc::new(Mutex::new(PoolInner {
                free,
                cooling: VecDeque::new(),
                cooling_cap,
                in_use: 0,
            })),
        }
    }

    /// Takes and binds a free pair.
    pub fn allocate(&self) -> Result<RtpPortLease, PortError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A port another program holds is skipped and tried again later.
        let total = inner.free.len() + inner.cooling.len();
        for _ in 0..total {
            let Some(port) = inner.take() else {
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
                _ => inner.release(port),
            }
        }
        Err(PortError::Exhausted)
    }

    /// Pairs currently leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).in_use
    }

    /// Pairs free (cooling ones included).
    pub fn available(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.free.len() + inner.cooling.len()
    }
}

impl RtpPortLease {
    /// The RTP port (RTCP is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Reads and drops every datagram queued on both ports (bounded, so a flood cannot hold
    /// the caller); the sockets are left non-blocking, as the engine wants them.
    pub fn discard_queued(&self) {
        let mut buf = [0u8; 2048];
        for sock in [&self.rtp, &self.rtcp].into_iter().flatten() {
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            for _ in 0..4096 {
                if sock.recv_from(&mut buf).is_err() {
                    break;
                }
            }
        }
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
        inner.release(self.port);
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

    #[test]
    fn ports_are_not_predictable_and_not_reused_at_once() {
        let pool = RtpPortPool::new("127.0.0.1".parse().expect("ip"), 42000, 42400);
        let ports: Vec<u16> = (0..20)
            .map(|_| {
                let l = pool.allocate().expect("lease");
                l.port()
            })
            .collect();
        // Sequential allocation would give 42000, 42002, ...: the next port is a guess away.
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(sequential < 5, "ports look sequential: {ports:?}");
        // A released pair cools down: the next few allocations do not get it back.
        let first = pool.allocate().expect("lease");
        let port = first.port();
        drop(first);
        let next: Vec<RtpPortLease> = (0..20).filter_map(|_| pool.allocate().ok()).collect();
        assert!(next.iter().all(|l| l.port() != port));
    }
}

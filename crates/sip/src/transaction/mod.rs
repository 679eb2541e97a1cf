//! RFC 3261 §17 transactions as plain state machines.
//!
//! Nothing here reads a clock, owns a socket or spawns a task. Each transaction is fed what
//! happened (a request retransmission, a response from the transaction user, an ACK, a
//! response from the network) together with `now`, and answers with [`TxEvent`]s: bytes to
//! transmit, a timeout to report, or its own termination. [`poll_timeout`] says when it next
//! wants [`handle_timeout`] to be called. That is the whole contract, so the 32-second Timer
//! B or H of RFC 3261 is tested in microseconds by handing in a later `now`.
//!
//! Timers (RFC 3261 Table 4), all derived from [`TimerConfig`]:
//!
//! | timer | transaction | meaning | value |
//! |---|---|---|---|
//! | A | client INVITE | request retransmission (unreliable) | T1, doubling |
//! | B | client INVITE | give up waiting for a response | 64·T1 |
//! | D | client INVITE | absorb final-response retransmissions | 32 s unreliable, 0 reliable |
//! | E | client non-INVITE | request retransmission (unreliable) | T1, doubling to T2 |
//! | F | client non-INVITE | give up | 64·T1 |
//! | G | server INVITE | final-response retransmission (unreliable) | T1, doubling to T2 |
//! | H | server INVITE | give up waiting for ACK | 64·T1 |
//! | I | server INVITE | absorb ACK retransmissions | T4 unreliable, 0 reliable |
//! | J | server non-INVITE | absorb request retransmissions | 64·T1 unreliable, 0 reliable |
//! | K | client non-INVITE | absorb response retransmissions | T4 unreliable, 0 reliable |
//! | L | server INVITE (RFC 6026) | absorb INVITE retransmissions after 2xx | 64·T1 |
//!
//! [`poll_timeout`]: ServerInviteTransaction::poll_timeout
//! [`handle_timeout`]: ServerInviteTransaction::handle_timeout

mod client;
mod server;

pub use client::{
    ClientInviteState, ClientInviteTransaction, ClientNonInviteState, ClientNonInviteTransaction,
    ResponseDisposition,
};
pub use server::{
    ServerInviteState, ServerInviteTransaction, ServerNonInviteState, ServerNonInviteTransaction,
};

use bytes::Bytes;
use std::time::Duration;

/// The RFC 3261 base timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate, 500 ms by default.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J and L.
    pub fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// The transaction gave up (Timer B, F or H): report it to the transaction user.
    TimedOut,
    /// The transaction is over and can be forgotten.
    Terminated,
}

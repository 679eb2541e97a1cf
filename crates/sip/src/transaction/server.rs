//! Server transactions (RFC 3261 §17.2, with the RFC 6026 Accepted state).

use super::{TimerConfig, TxEvent};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// States of an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// Waiting for the transaction user's final answer; provisional responses may be sent.
    Proceeding,
    /// A 300–699 was sent; retransmitting it until the ACK arrives.
    Completed,
    /// A 2xx was sent (RFC 6026): INVITE retransmissions are absorbed; the dialog layer
    /// retransmits the 2xx itself until its ACK.
    Accepted,
    /// The ACK for a non-2xx arrived; absorbing ACK retransmissions.
    Confirmed,
    /// Done.
    Terminated,
}

/// An INVITE server transaction.
#[derive(Debug)]
pub struct ServerInviteTransaction {
    state: ServerInviteState,
    reliable: bool,
    timers: TimerConfig,
    /// Last response sent: what a retransmitted INVITE is answered with.
    last_response: Option<Bytes>,
    /// Timer G: next retransmission and current interval.
    timer_g: Option<(Instant, Duration)>,
    /// Timer H (waiting for ACK), Timer I (absorbing ACKs) or Timer L (Accepted): one deadline
    /// ends the current state.
    state_deadline: Option<Instant>,
}

impl ServerInviteTransaction {
    /// A transaction for a newly received INVITE, over a reliable transport or not.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerInviteTransaction {
            state: ServerInviteState::Proceeding,
            reliable,
            timers,
            last_response: None,
            timer_g: None,
            state_deadline: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// The INVITE arrived again. Returns what to retransmit, if anything.
    pub fn on_request_retransmission(&mut self) -> Option<Bytes> {
        match self.state {
            ServerInviteState::Proceeding | ServerInviteState::Completed => {
                self.last_response.clone()
            }
            _ => None,
        }
    }

    /// The transaction user sends a response with this status code. Returns the bytes to
    /// transmit now (none when the transaction is past the point of sending responses).
    pub fn send_response(&mut self, code: u16, response: Bytes, now: Instant) -> Option<Bytes> {
        if self.state != ServerInviteState::Proceeding {
            // Only the 2xx retransmissions of the dialog layer pass once Accepted.
            return (self.state == ServerInviteState::Accepted && (200..300).contains(&code))
                .then_some(response);
        }
        self.last_response = Some(response.clone());
        match code {
            100..=199 => {}
            200..=299 => {
                self.state = ServerInviteState::Accepted;
                self.state_deadline = Some(now + self.timers.t64());
            }
            _ => {
                self.state = ServerInviteState::Completed;
                if !self.reliable {
                    self.timer_g = Some((now + self.timers.t1, self.timers.t1));
                }
                self.state_deadline = Some(now + self.timers.t64());
            }
        }
        Some(response)
    }

    /// Like [`send_response`](Self::send_response), but a final error response is sent once,
    /// not repeated on Timer G: for challenges and refusals to sources that proved nothing
    /// (spoofed addresses must not turn a 500-byte INVITE into kilobytes sent elsewhere). A
    /// real client retransmits its INVITE if the response is lost, and that retransmission
    /// is answered again.
    pub fn send_response_once(
        &mut self,
        code: u16,
        response: Bytes,
        now: Instant,
    ) -> Option<Bytes> {
        let out = self.send_response(code, response, now);
        if self.state == ServerInviteState::Completed {
            self.timer_g = None;
        }
        out
    }

    /// An ACK matched this transaction (ACK for a non-2xx final response).
    pub fn on_ack(&mut self, now: Instant) -> Vec<TxEvent> {
        if self.state != ServerInviteState::Completed {
            return Vec::new();
        }
        self.timer_g = None;
        if self.reliable {
            self.state = ServerInviteState::Terminated;
            return vec![TxEvent::Terminated];
        }
        self.state = ServerInviteState::Confirmed;
        self.state_deadline = Some(now + self.timers.t4);
        Vec::new()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let g = self.timer_g.map(|(at, _)| at);
        match (g, self.state_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxEvent> {
        let mut out = Vec::new();
        if self.state_deadline.is_some_and(|d| d <= now) {
            self.timer_g = None;
            self.state_deadline = None;
            if self.state == ServerInviteState::Completed {
                // Timer H: no ACK ever came.
                out.push(TxEvent::TimedOut);
            }
            self.state = ServerInviteState::Terminated;
            out.push(TxEvent::Terminated);
            return out;
        }
        if let Some((at, interval)) = self.timer_g {
            if at <= now {
                if let Some(r) = &self.last_response {
                    out.push(TxEvent::Transmit(r.clone()));
                }
                let next = (interval * 2).min(self.timers.t2);
                self.timer_g = Some((now + next, next));
            }
        }
        out
    }

    /// True once the transaction can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }
}

/// States of a non-INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// No response sent yet.
    Trying,
    /// A provisional response was sent.
    Proceeding,
    /// A final response was sent; absorbing retransmissions (Timer J).
    Completed,
    /// Done.
    Terminated,
}

/// A non-INVITE server transaction.
#[derive(Debug)]
pub struct ServerNonInviteTransaction {
    state: ServerNonInviteState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl ServerNonInviteTransaction {
    /// A transaction for a newly received non-INVITE request.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerNonInviteTransaction {
            state: ServerNonInviteState::Trying,
            reliable,
            timers,
            last_response: None,
            timer_j: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// The request arrived again: answer with the last response, if one was sent.
    pub fn on_request_retransmission(&mut self) -> Option<Bytes> {
        match self.state {
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed => {
                self.last_response.clone()
            }
            _ => None,
        }
    }

    /// The transaction user responds. Returns what to transmit, plus `Terminated` at once
    /// for a final response over a reliable transport.
    pub fn send_response(&mut self, code: u16, response: Bytes, now: Instant) -> Vec<TxEvent> {
        if matches!(
            self.state,
            ServerNonInviteState::Completed | ServerNonInviteState::Terminated
        ) {
            return Vec::new();
        }
        self.last_response = Some(response.clone());
        let mut out = vec![TxEvent::Transmit(response)];
        if code < 200 {
            self.state = ServerNonInviteState::Proceeding;
        } else if self.reliable {
            self.state = ServerNonInviteState::Terminated;
            out.push(TxEvent::Terminated);
        } else {
            self.state = ServerNonInviteState::Completed;
            self.timer_j = Some(now + self.timers.t64());
        }
        out
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    /// Fires Timer J when due.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxEvent> {
        if self.timer_j.is_some_and(|j| j <= now) {
            self.timer_j = None;
            self.state = ServerNonInviteState::Terminated;
            return vec![TxEvent::Terminated];
        }
        Vec::new()
    }

    /// True once the transaction can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    /// Drives a transaction's timers until `until`, collecting what it transmits and when.
    fn run_until(
        tx: &mut ServerInviteTransaction,
        start: Instant,
        until: Duration,
    ) -> Vec<(Duration, TxEvent)> {
        let mut out = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            if at > start + until {
                break;
            }
            for ev in tx.handle_timeout(at) {
                out.push((at - start, ev));
            }
        }
        out
    }

    #[test]
    fn invite_retransmission_is_answered_from_the_transaction() {
        let now = Instant::now();
        let mut tx = ServerInviteTransaction::new(false, TimerConfig::default());
        assert_eq!(tx.on_request_retransmission(), None);
        tx.send_response(100, b("100"), now);
        assert_eq!(tx.on_request_retransmission(), Some(b("100")));
        tx.send_response(180, b("180"), now);
        assert_eq!(tx.on_request_retransmission(), Some(b("180")));
        tx.send_response(200, b("200"), now);
        // RFC 6026: after a 2xx the INVITE retransmission is absorbed, not answered.
        assert_eq!(tx.state(), ServerInviteState::Accepted);
        assert_eq!(tx.on_request_retransmission(), None);
        let evs = run_until(&mut tx, now, Duration::from_secs(40));
        assert_eq!(evs, vec![(Duration::from_secs(32), TxEvent::Terminated)]);
    }

    #[test]
    fn a_response_sent_once_is_repeated_only_for_a_retransmitted_invite() {
        let t0 = Instant::now();
        let mut tx = ServerInviteTransaction::new(false, TimerConfig::default());
        let resp = Bytes::from_static(b"SIP/2.0 407 Proxy Authentication Required\r\n\r\n");
        assert!(tx.send_response_once(407, resp.clone(), t0).is_some());
        // No Timer G: the next deadline is Timer H only.
        assert_eq!(tx.poll_timeout(), Some(t0 + TimerConfig::default().t64()));
        assert_eq!(tx.on_request_retransmission(), Some(resp));
        let ev = tx.handle_timeout(t0 + TimerConfig::default().t64());
        assert!(ev.contains(&TxEvent::TimedOut) || tx.is_terminated());
    }

    #[test]
    fn timer_g_doubles_to_t2_and_timer_h_gives_up() {
        let now = Instant::now();
        let mut tx = ServerInviteTransaction::new(false, TimerConfig::default());
        tx.send_response(487, b("487"), now);
        let evs = run_until(&mut tx, now, Duration::from_secs(40));
        let retransmits: Vec<u64> = evs
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| t.as_millis() as u64)
            .collect();
        assert_eq!(
            retransmits,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        let tail: Vec<_> = evs
            .iter()
            .filter(|(_, e)| !matches!(e, TxEvent::Transmit(_)))
            .cloned()
            .collect();
        assert_eq!(
            tail,
            vec![
                (Duration::from_secs(32), TxEvent::TimedOut),
                (Duration::from_secs(32), TxEvent::Terminated)
            ]
        );
    }

    #[test]
    fn ack_stops_retransmission_then_timer_i_ends() {
        let now = Instant::now();
        let mut tx = ServerInviteTransaction::new(false, TimerConfig::default());
        tx.send_response(486, b("486"), now);
        assert!(tx.on_ack(now + Duration::from_millis(100)).is_empty());
        assert_eq!(tx.state(), ServerInviteState::Confirmed);
        let evs = run_until(&mut tx, now, Duration::from_secs(10));
        assert_eq!(
            evs,
            vec![(Duration::from_millis(5100), TxEvent::Terminated)]
        );
    }

    #[test]
    fn reliable_transport_has_no_retransmissions() {
        let now = Instant::now();
        let mut tx = ServerInviteTransaction::new(true, TimerConfig::default());
        tx.send_response(404, b("404"), now);
        assert_eq!(tx.on_ack(now), vec![TxEvent::Terminated]);
        let mut nit = ServerNonInviteTransaction::new(true, TimerConfig::default());
        assert_eq!(
            nit.send_response(200, b("200"), now),
            vec![TxEvent::Transmit(b("200")), TxEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_absorbs_retransmissions_until_timer_j() {
        let now = Instant::now();
        let mut tx = ServerNonInviteTransaction::new(false, TimerConfig::default());
        assert_eq!(tx.on_request_retransmission(), None);
        tx.send_response(200, b("200"), now);
        assert_eq!(tx.on_request_retransmission(), Some(b("200")));
        assert!(tx.send_response(500, b("500"), now).is_empty());
        assert!(tx.handle_timeout(now + Duration::from_secs(31)).is_empty());
        assert_eq!(
            tx.handle_timeout(now + Duration::from_secs(32)),
            vec![TxEvent::Terminated]
        );
    }
}

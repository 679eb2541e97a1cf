//! Client transactions (RFC 3261 §17.1).

use super::{TimerConfig, TxEvent};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// What the owner should do with a response a client transaction received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseDisposition {
    /// Hand the response to the transaction user (false for retransmissions it already saw).
    pub pass_to_user: bool,
    /// Events caused by the response (an ACK to transmit, termination).
    pub events: Vec<TxEvent>,
}

/// States of an INVITE client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// INVITE sent, nothing heard yet (Timers A and B run).
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A 300–699 arrived and was ACKed; absorbing its retransmissions (Timer D).
    Completed,
    /// Done (a 2xx ends the transaction: the dialog ACKs it).
    Terminated,
}

/// An INVITE client transaction.
#[derive(Debug)]
pub struct ClientInviteTransaction {
    state: ClientInviteState,
    reliable: bool,
    request: Bytes,
    ack: Option<Bytes>,
    timer_a: Option<(Instant, Duration)>,
    /// Timer B while calling, Timer D once completed.
    state_deadline: Option<Instant>,
}

impl ClientInviteTransaction {
    /// Starts the transaction; the caller transmits `request` once now.
    pub fn new(request: Bytes, reliable: bool, timers: TimerConfig, now: Instant) -> Self {
        ClientInviteTransaction {
            state: ClientInviteState::Calling,
            reliable,
            request,
            ack: None,
            timer_a: (!reliable).then_some((now + timers.t1, timers.t1)),
            state_deadline: Some(now + timers.t64()),
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// A response matched this transaction. `make_ack` builds the ACK for a non-2xx final
    /// response (same branch, To with the response's tag); it is called once.
    pub fn on_response(
        &mut self,
        code: u16,
        make_ack: impl FnOnce() -> Bytes,
        now: Instant,
    ) -> ResponseDisposition {
        let mut events = Vec::new();
        let pass_to_user = match (self.state, code) {
            (ClientInviteState::Calling | ClientInviteState::Proceeding, 100..=199) => {
                self.state = ClientInviteState::Proceeding;
                self.timer_a = None;
                true
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, 200..=299) => {
                self.terminate(&mut events);
                true
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, _) => {
                let ack = make_ack();
                events.push(TxEvent::Transmit(ack.clone()));
                self.ack = Some(ack);
                self.timer_a = None;
                if self.reliable {
                    self.terminate(&mut events);
                } else {
                    self.state = ClientInviteState::Completed;
                    self.state_deadline = Some(now + Duration::from_secs(32));
                }
                true
            }
            (ClientInviteState::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    events.push(TxEvent::Transmit(ack.clone()));
                }
                false
            }
            _ => false,
        };
        ResponseDisposition {
            pass_to_user,
            events,
        }
    }

    fn terminate(&mut self, events: &mut Vec<TxEvent>) {
        self.state = ClientInviteState::Terminated;
        self.timer_a = None;
        self.state_deadline = None;
        events.push(TxEvent::Terminated);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.timer_a.map(|(at, _)| at);
        match (a, self.state_deadline) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxEvent> {
        let mut out = Vec::new();
        if self.state_deadline.is_some_and(|d| d <= now) {
            if self.state == ClientInviteState::Calling {
                out.push(TxEvent::TimedOut); // Timer B
            }
            self.terminate(&mut out);
            return out;
        }
        if let Some((at, interval)) = self.timer_a {
            if at <= now {
                out.push(TxEvent::Transmit(self.request.clone()));
                let next = interval * 2;
                self.timer_a = Some((now + next, next));
            }
        }
        out
    }

    /// True once the transaction can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }
}

/// States of a non-INVITE client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// Request sent, nothing heard.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions (Timer K).
    Completed,
    /// Done.
    Terminated,
}

/// A non-INVITE client transaction (BYE, OPTIONS, NOTIFY, REGISTER to a provider…).
#[derive(Debug)]
pub struct ClientNonInviteTransaction {
    state: ClientNonInviteState,
    reliable: bool,
    timers: TimerConfig,
    request: Bytes,
    timer_e: Option<(Instant, Duration)>,
    /// Timer F while waiting, Timer K once completed.
    state_deadline: Option<Instant>,
}

impl ClientNonInviteTransaction {
    /// Starts the transaction; the caller transmits `request` once now.
    pub fn new(request: Bytes, reliable: bool, timers: TimerConfig, now: Instant) -> Self {
        ClientNonInviteTransaction {
            state: ClientNonInviteState::Trying,
            reliable,
            timers,
            request,
            timer_e: (!reliable).then_some((now + timers.t1, timers.t1)),
            state_deadline: Some(now + timers.t64()),
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    /// A response matched this transaction.
    pub fn on_response(&mut self, code: u16, now: Instant) -> ResponseDisposition {
        let mut events = Vec::new();
        let pass_to_user = match self.state {
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding if code < 200 => {
                self.state = ClientNonInviteState::Proceeding;
                true
            }
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding => {
                self.timer_e = None;
                if self.reliable {
                    self.state = ClientNonInviteState::Terminated;
                    self.state_deadline = None;
                    events.push(TxEvent::Terminated);
                } else {
                    self.state = ClientNonInviteState::Completed;
                    self.state_deadline = Some(now + self.timers.t4);
                }
                true
            }
            _ => false,
        };
        ResponseDisposition {
            pass_to_user,
            events,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let e = self.timer_e.map(|(at, _)| at);
        match (e, self.state_deadline) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxEvent> {
        let mut out = Vec::new();
        if self.state_deadline.is_some_and(|d| d <= now) {
            if self.state != ClientNonInviteState::Completed {
                out.push(TxEvent::TimedOut); // Timer F
            }
            self.state = ClientNonInviteState::Terminated;
            self.timer_e = None;
            self.state_deadline = None;
            out.push(TxEvent::Terminated);
            return out;
        }
        if let Some((at, interval)) = self.timer_e {
            if at <= now {
                out.push(TxEvent::Transmit(self.request.clone()));
                // In Proceeding the interval is T2 straight away (RFC 3261 §17.1.2.2).
                let next = if self.state == ClientNonInviteState::Proceeding {
                    self.timers.t2
                } else {
                    (interval * 2).min(self.timers.t2)
                };
                self.timer_e = Some((now + next, next));
            }
        }
        out
    }

    /// True once the transaction can be dropped.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive<F: FnMut(Instant) -> Vec<TxEvent>>(
        mut poll: impl FnMut() -> Option<Instant>,
        mut fire: F,
        start: Instant,
    ) -> Vec<(u64, TxEvent)> {
        let mut out = Vec::new();
        while let Some(at) = poll() {
            for e in fire(at) {
                out.push(((at - start).as_millis() as u64, e));
            }
        }
        out
    }

    #[test]
    fn timer_a_doubles_and_timer_b_fires_at_32s() {
        let now = Instant::now();
        let req = Bytes::from_static(b"INVITE");
        let tx = std::cell::RefCell::new(ClientInviteTransaction::new(
            req.clone(),
            false,
            TimerConfig::default(),
            now,
        ));
        let evs = drive(
            || tx.borrow().poll_timeout(),
            |t| tx.borrow_mut().handle_timeout(t),
            now,
        );
        let sends: Vec<u64> = evs
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(evs[evs.len() - 2], (32000, TxEvent::TimedOut));
        assert_eq!(evs[evs.len() - 1], (32000, TxEvent::Terminated));
    }

    #[test]
    fn non_2xx_final_is_acked_inside_the_transaction() {
        let now = Instant::now();
        let mut tx = ClientInviteTransaction::new(
            Bytes::from_static(b"INVITE"),
            false,
            TimerConfig::default(),
            now,
        );
        let d = tx.on_response(180, || unreachable!(), now);
        assert!(d.pass_to_user);
        let d = tx.on_response(486, || Bytes::from_static(b"ACK"), now);
        assert!(d.pass_to_user);
        assert_eq!(
            d.events,
            vec![TxEvent::Transmit(Bytes::from_static(b"ACK"))]
        );
        // The retransmitted 486 is ACKed again and not passed up.
        let d = tx.on_response(486, || unreachable!(), now);
        assert!(!d.pass_to_user);
        assert_eq!(
            d.events,
            vec![TxEvent::Transmit(Bytes::from_static(b"ACK"))]
        );
        // Timer D ends it after 32 s.
        assert!(tx.handle_timeout(now + Duration::from_secs(31)).is_empty());
        assert_eq!(
            tx.handle_timeout(now + Duration::from_secs(32)),
            vec![TxEvent::Terminated]
        );
    }

    #[test]
    fn timer_e_caps_at_t2_and_timer_f_fires() {
        let now = Instant::now();
        let tx = std::cell::RefCell::new(ClientNonInviteTransaction::new(
            Bytes::from_static(b"BYE"),
            false,
            TimerConfig::default(),
            now,
        ));
        let evs = drive(
            || tx.borrow().poll_timeout(),
            |t| tx.borrow_mut().handle_timeout(t),
            now,
        );
        let sends: Vec<u64> = evs
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Transmit(_)))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            sends,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(evs.last(), Some(&(32000, TxEvent::Terminated)));
        assert!(evs.contains(&(32000, TxEvent::TimedOut)));
    }

    #[test]
    fn non_invite_final_response_then_timer_k() {
        let now = Instant::now();
        let mut tx = ClientNonInviteTransaction::new(
            Bytes::from_static(b"BYE"),
            false,
            TimerConfig::default(),
            now,
        );
        assert!(tx.on_response(200, now).pass_to_user);
        assert!(!tx.on_response(200, now).pass_to_user);
        assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(5)));
        assert_eq!(
            tx.handle_timeout(now + Duration::from_secs(5)),
            vec![TxEvent::Terminated]
        );
        let mut rel = ClientNonInviteTransaction::new(
            Bytes::from_static(b"BYE"),
            true,
            TimerConfig::default(),
            now,
        );
        assert_eq!(rel.poll_timeout(), Some(now + Duration::from_secs(32)));
        assert_eq!(rel.on_response(200, now).events, vec![TxEvent::Terminated]);
    }
}

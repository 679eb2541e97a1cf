//! A trunk leg moving on to the next of its trunk's targets (RFC 3263 §4.3): when the
//! current one cannot be reached (its connection failed), stays silent (no response at all
//! within [`SILENT_AFTER_T1`] × T1), times out, or answers 503, the same INVITE goes to the
//! next target as a new client transaction (new branch; the Call-ID, tags and offer stay).
//! A target that answered anything else has decided the call.

use super::locate::Target;
use super::outbound::OutState;
use super::{Endpoint, Now, Peer, TimerRef, TransportKind};
use crate::tenant::model::{Trunk, TrunkTransport};
use std::net::SocketAddr;

/// T1 multiples a target may stay silent before the next one is tried, when there is one:
/// 4 s at the default T1. A provider answers 100 Trying at once; waiting for Timer B
/// (64 × T1) would leave the caller in silence for half a minute.
const SILENT_AFTER_T1: u32 = 8;

impl Endpoint {
    /// The targets for a trunk's address, in order: the address itself when it is an IP,
    /// else what the runtime last resolved (empty when nothing yet).
    pub(super) fn trunk_targets_for(&self, trunk: &Trunk) -> Vec<Target> {
        let Some(address) = trunk.address.as_deref() else {
            return Vec::new();
        };
        let transport = trunk.transport.map(|t| match t {
            TrunkTransport::Udp => TransportKind::Udp,
            TrunkTransport::Tcp => TransportKind::Tcp,
            TrunkTransport::Tls => TransportKind::Tls,
        });
        self.trunk_targets.load().targets(address, transport)
    }

    /// Gives a new trunk leg the targets after the one it is calling.
    pub(super) fn set_alternates(&mut self, now: Now, id: u64, alternates: Vec<Target>) {
        if alternates.is_empty() {
            return;
        }
        if let Some(c) = self.out_calls.get_mut(&id) {
            c.alternates = alternates;
        }
        self.schedule(
            Some(now.instant + self.cfg.timers.t1 * SILENT_AFTER_T1),
            TimerRef::TargetSilent(id),
        );
    }

    /// The leg's current target said nothing yet: the next one is tried.
    pub(super) fn target_silent(&mut self, now: Now, id: u64) {
        let silent = self
            .out_calls
            .get(&id)
            .is_some_and(|c| !c.heard && c.state == OutState::Calling);
        if silent {
            self.try_next_target(now, id, "no response yet");
        }
    }

    /// The runtime could not open a connection to `addr`: legs calling it move on to their
    /// next target, or fail at once (503) instead of waiting for a timeout.
    pub fn peer_unreachable(&mut self, now: Now, transport: TransportKind, addr: SocketAddr) {
        let stuck: Vec<u64> = self
            .out_calls
            .iter()
            .filter(|(_, c)| {
                c.peer.transport == transport
                    && c.peer.addr == addr
                    && c.state == OutState::Calling
                    && !c.heard
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stuck {
            if self.try_next_target(now, id, "unreachable") {
                continue;
            }
            if let Some(c) = self.out_calls.get(&id) {
                c.span
                    .in_scope(|| tracing::info!(peer = %addr, "leg failed: peer unreachable"));
                if !c.cancelled {
                    self.events
                        .push_back(super::CallEvent::LegFailed { leg: id, code: 503 });
                }
            }
            self.end_leg_with(id, super::HangupCause::Server, "unreachable", Some(503));
        }
    }

    /// Sends the leg's INVITE to its next target; false when there is none (or the leg is
    /// past the point where another server may take it).
    pub(super) fn try_next_target(&mut self, now: Now, id: u64, why: &str) -> bool {
        let Some(c) = self.out_calls.get_mut(&id) else {
            return false;
        };
        if c.cancelled
            || c.media_started
            || c.state == OutState::Confirmed
            || c.alternates.is_empty()
        {
            return false;
        }
        let next = c.alternates.remove(0);
        let left = c.alternates.len();
        let (from, contact_user) = (c.peer.addr, c.contact_user.clone());
        // The silent or unreachable target's transaction stops retransmitting; one that
        // answered 503 keeps its completed transaction to absorb retransmissions.
        let silent = !c.heard;
        if silent {
            self.client_invites.retain(|_, (_, leg)| *leg != id);
        }
        self.stats.trunk_failovers += 1;
        self.remember_tls_name(&next);
        let branch = self.ids.branch();
        let via = self.via_for(next.transport, &branch);
        let contact = self.contact_for(&contact_user, next.transport);
        let peer = Peer {
            transport: next.transport,
            addr: next.addr,
            conn: None,
        };
        let Some(c) = self.out_calls.get_mut(&id) else {
            return false;
        };
        c.span.in_scope(|| {
            tracing::warn!(%from, to = %next.addr, transport = next.transport.token(), reason = why, "trunk target failed: trying the next one")
        });
        c.peer = peer;
        c.via = via;
        c.contact = contact;
        c.cseq += 1;
        c.auth_sent = false;
        c.heard = false;
        c.state = OutState::Calling;
        let bytes = c.invite_bytes(None, super::ALLOW, &self.cfg.server_name);
        self.start_invite_tx(now, id, branch, peer, bytes.clone());
        self.send(peer, bytes);
        if left > 0 {
            self.schedule(
                Some(now.instant + self.cfg.timers.t1 * SILENT_AFTER_T1),
                TimerRef::TargetSilent(id),
            );
        }
        true
    }
}

//! SIP protocol pieces (RFC 3261) that take bytes and time and return what to do: message
//! intake, headers, digest authentication, transaction state machines, dialogs, registrar
//! bindings and the brute-force guard. No sockets, no runtime, no disk, no clock.
//!
//! This crate is the layer below Switchyard's SIP endpoint (`switchyard::sip::endpoint`,
//! which ties these together) and the transports (`switchyard::sip::transport`, the only
//! place that does I/O). Being a crate of its own, it cannot name anything above it: the
//! compiler keeps the direction.
//!
//! - [`message`]: bytes → validated request/response (rsip underneath), or a reasoned refusal.
//! - [`headers`]: the header grammar we need beyond rsip (name-addr, Via, escaping).
//! - [`transaction`]: RFC 3261 §17 state machines with time as input.
//! - [`dialog`]: dialog state and in-dialog requests.
//! - [`digest`]: RFC 8760 digest (MD5, SHA-256), nonces, our answers to challenges.
//! - [`registrar`]: bindings and their rules (expiry, limits), as plain data.
//! - [`auth_guard`]: the failure limiter against password guessing.
//! - [`response`]: responses built from requests.
//! - [`ids`]: tags, branches and Call-IDs from a seeded generator (randomness as an input).

pub mod auth_guard;
pub mod dialog;
pub mod digest;
pub mod headers;
pub mod ids;
pub mod message;
pub mod registrar;
pub mod replaces;
pub mod response;
pub mod transaction;

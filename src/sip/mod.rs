//! SIP signalling (RFC 3261): message intake, transactions, digest auth, the registrar and the
//! sans-IO [`Endpoint`](endpoint::Endpoint) that ties them together; transports at the edge.
//!
//! Layers, each knowing only the one below:
//! 1. [`transport`]: UDP sockets and TCP connections (framing by Content-Length); the only
//!    place that does I/O.
//! 2. [`message`]: bytes → validated request/response (rsip underneath), or a reasoned refusal.
//! 3. [`transaction`]: RFC 3261 §17 state machines with time as input.
//! 4. [`endpoint`]: dispatch by method, digest auth, registrar, UAS dialogs; asks
//!    [`crate::call`] what to do with a routed call.

pub mod auth_guard;
pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod headers;
pub mod ids;
pub mod message;
pub mod registrar;
pub mod response;
pub mod transaction;
pub mod transport;

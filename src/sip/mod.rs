//! SIP signalling (RFC 3261): the protocol pieces (crate `switchyard-sip`: messages, headers,
//! digest, transactions, dialogs, registrar bindings; re-exported here), the sans-IO
//! [`Endpoint`](endpoint::Endpoint) that ties them together, and the transports at the edge.
//!
//! Layers, each knowing only the one below:
//! 1. [`transport`]: UDP sockets, TCP and WebSocket connections; the only place that does I/O.
//! 2. [`message`], [`transaction`], [`dialog`], [`digest`], [`registrar`]: in their own crate,
//!    so the compiler keeps them from naming anything above.
//! 3. [`endpoint`]: dispatch by method, digest auth, registrar, UAS dialogs, outgoing legs;
//!    tells the call layer about calls and takes its actions.

pub use switchyard_sip::{
    auth_guard, dialog, digest, headers, ids, message, registrar, replaces, response, transaction,
};
pub mod endpoint;
pub mod transport;

//! The call layer's rules for new calls, as the endpoint asks for them.
//!
//! Answering an INVITE takes decisions that are not SIP: whether a source address is a
//! trusted trunk (no challenge), where a dialed string goes, and whether the tenant may take
//! another call. They belong to the call layer (`crate::call::policy` implements them from the
//! tenant configuration); the endpoint only knows this interface, asks it at the points where
//! the protocol needs an answer, and turns a refusal into the SIP status it names. Outgoing
//! legs ask [`CallPolicy::admit`] too, so a forwarding loop or a fan-out cannot run past the
//! tenant's limit.

use crate::records::call::Caller;
use crate::tenant::model::Target;
use crate::tenant::Tenant;
use std::net::IpAddr;
use std::time::Duration;

/// Why a call is refused, as the SIP status the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Final status code (4xx–6xx).
    pub code: u16,
    /// Reason phrase, when it says more than the status' default (e.g. which limit).
    pub reason: Option<&'static str>,
}

/// The call layer's decisions about a new call (see the module docs).
pub trait CallPolicy: Send {
    /// A caller trusted without a password: a trunk calling from one of its addresses to one
    /// of the tenant's numbers. `None` means the caller must prove a password.
    fn trusted_caller(
        &self,
        tenant: &Tenant,
        source: IpAddr,
        from_user: &str,
        dialed: &str,
    ) -> Option<Caller>;

    /// Where `dialed` goes when `caller` dials it (`Err` is usually 404).
    fn route(&self, tenant: &Tenant, caller: &Caller, dialed: &str) -> Result<Target, Refusal>;

    /// Whether the tenant may take one more call while `active` are up (incoming calls and
    /// outgoing legs alike), and for how long at most.
    fn admit(&self, tenant: &Tenant, active: usize) -> Result<Duration, Refusal>;
}

//! What only the operator (the admin key) may give a tenant: its SIP domains, its digest realm,
//! which numbers it owns and its limits. A tenant's own write key manages everything else
//! (users, IVRs, mailboxes, trunks, routes, where its numbers lead) but cannot claim another
//! tenant's names or numbers, or raise its own limits.

use super::error::{FieldError, Problem};
use super::keys::Principal;
use crate::tenant::TenantConfig;
use axum::http::StatusCode;

/// `Ok` when `p` is the admin, or when `new` leaves the operator's fields of `old` unchanged;
/// otherwise 403 naming each field the tenant key tried to change.
pub fn check_operator_fields(
    p: &Principal,
    old: &TenantConfig,
    new: &TenantConfig,
) -> Result<(), Problem> {
    if matches!(p, Principal::Admin) {
        return Ok(());
    }
    let mut changed = Vec::new();
    if old.domains != new.domains {
        changed.push("domains");
    }
    if old.realm != new.realm {
        changed.push("realm");
    }
    let owned = |c: &TenantConfig| {
        let mut n: Vec<String> = c.numbers.iter().map(|n| n.number.clone()).collect();
        n.sort();
        n
    };
    if owned(old) != owned(new) {
        changed.push("numbers");
    }
    if serde_json::to_value(&old.limits).ok() != serde_json::to_value(&new.limits).ok() {
        changed.push("limits");
    }
    if changed.is_empty() {
        return Ok(());
    }
    let mut prob = Problem::new(
        StatusCode::FORBIDDEN,
        "operator-only",
        "domains, realm, which numbers a tenant owns and its limits are set with the admin key",
    );
    for path in changed {
        prob.errors.push(FieldError {
            path: path.into(),
            message: "only the operator (admin key) may change this".into(),
        });
    }
    Err(prob)
}

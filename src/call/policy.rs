//! Routing policy for new calls, from the tenant's configuration: trunk trust, where a dialed
//! string goes, and call limits. The SIP endpoint asks these through its
//! [`CallPolicy`] interface while it answers an INVITE or starts an outgoing leg; nothing here
//! knows SIP beyond the status a refusal maps to.

use crate::records::call::Caller;
use crate::sip::endpoint::{CallPolicy, Refusal};
use crate::tenant::model::Target;
use crate::tenant::Tenant;
use std::net::IpAddr;
use std::time::Duration;

/// The policy every tenant's calls follow (it keeps no state: the tenant snapshot handed in
/// is the whole input).
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantPolicy;

impl CallPolicy for TenantPolicy {
    fn trusted_caller(
        &self,
        tenant: &Tenant,
        source: IpAddr,
        from_user: &str,
        dialed: &str,
    ) -> Option<Caller> {
        let trunk = tenant.trunk_for_source(source)?;
        // A trunk's address is trusted only for calls to the tenant's own numbers: a host that
        // shares the address cannot use it to reach extensions or dial out.
        tenant.resolve_number(dialed)?;
        Some(Caller::Trunk {
            trunk: trunk.id.clone(),
            number: from_user.to_string(),
        })
    }

    fn route(&self, tenant: &Tenant, caller: &Caller, dialed: &str) -> Result<Target, Refusal> {
        let target = match caller {
            Caller::Trunk { .. } => tenant.resolve_number(dialed).cloned(),
            // A user may dial anything that looks like a phone number: whether it may leave
            // through a trunk is the outbound routes' decision (refused with 403 if none
            // allows).
            Caller::User(_) => tenant.resolve_dialed(dialed).cloned().or_else(|| {
                looks_external(tenant, dialed).then(|| Target::External {
                    number: dialed.to_string(),
                })
            }),
        };
        target.ok_or(Refusal {
            code: 404,
            reason: None,
        })
    }

    fn admit(&self, tenant: &Tenant, active: usize) -> Result<Duration, Refusal> {
        let limits = &tenant.config.limits;
        if active >= limits.max_concurrent_calls as usize {
            return Err(Refusal {
                code: 503,
                reason: Some("Service Unavailable (tenant call limit)"),
            });
        }
        Ok(Duration::from_secs(u64::from(limits.max_call_secs)))
    }
}

/// True for a dial string that is not a local extension but a phone number: one an outbound
/// route prefix matches, or one that looks international or national (`+…`, `00…`, seven
/// digits or more). Those go to the outbound route check (403 when no route allows them);
/// a short unknown number is an unknown extension (404).
fn looks_external(tenant: &Tenant, s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    s.starts_with('+')
        || s.starts_with("00")
        || digits.len() >= 7
        || tenant
            .config
            .outbound_routes
            .iter()
            .any(|r| !r.prefix.is_empty() && s.starts_with(&r.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Tenant {
        Tenant::new(crate::server::demo_tenant().expect("demo tenant"))
    }

    #[test]
    fn users_reach_extensions_and_numbers_short_unknowns_are_404() {
        let t = demo();
        let user = Caller::User("101".into());
        assert_eq!(
            TenantPolicy.route(&t, &user, "100"),
            Ok(Target::User {
                extension: "100".into()
            })
        );
        assert_eq!(
            TenantPolicy.route(&t, &user, "+4930123456"),
            Ok(Target::External {
                number: "+4930123456".into()
            })
        );
        assert_eq!(
            TenantPolicy.route(&t, &user, "55").map_err(|r| r.code),
            Err(404)
        );
        assert_eq!(
            TenantPolicy.route(&t, &user, "12ab").map_err(|r| r.code),
            Err(404)
        );
    }

    #[test]
    fn limits_refuse_with_503_at_the_ceiling() {
        let mut cfg = crate::server::demo_tenant().expect("demo tenant");
        cfg.limits.max_concurrent_calls = 2;
        cfg.limits.max_call_secs = 60;
        let t = Tenant::new(cfg);
        assert_eq!(TenantPolicy.admit(&t, 1), Ok(Duration::from_secs(60)));
        let refused = TenantPolicy.admit(&t, 2).expect_err("at the limit");
        assert_eq!(refused.code, 503);
    }

    #[test]
    fn only_a_trunk_address_calling_a_tenant_number_is_trusted() {
        let t = demo();
        let stranger: IpAddr = "192.0.2.77".parse().expect("ip");
        assert_eq!(
            TenantPolicy.trusted_caller(&t, stranger, "+1555", "+15550100"),
            None
        );
        let trunk: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(matches!(
            TenantPolicy.trusted_caller(&t, trunk, "+1555", "+15550100"),
            Some(Caller::Trunk { number, .. }) if number == "+1555"
        ));
        assert_eq!(
            TenantPolicy.trusted_caller(&t, trunk, "+1555", "100"),
            None,
            "a trunk address reaches only the tenant's numbers"
        );
    }
}

//! What a user's mailbox should be, and what becomes of it when the user goes. Pure: the
//! reconciler feeds it the resource and its tenant and carries out the answer.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::conditions::Observed;
use crate::{
    backend::DesiredAccount,
    crd::{CleanmailUser, DeletionPolicy, EffectiveSettings, PROTECTED_ANNOTATION},
    tenant::{BackendChoice, Tenant},
};

/// The mailbox a user maps to, and how status describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub account: DesiredAccount,
    pub effective: EffectiveSettings,
    pub state: State,
    /// The names of the overrides in effect, as in `spec.overrides`.
    pub overridden: Vec<String>,
}

/// The mailbox's effective state, as `status.state` and the `STATE` column show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Enabled,
    /// Disabled by the identity provider (or by an override agreeing with it).
    Disabled,
    /// Disabled by an override while the identity provider says active.
    Suspended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Enabled => "Enabled",
            State::Disabled => "Disabled",
            State::Suspended => "Suspended",
        }
    }

    /// The reason of `Ready=True` for a mailbox in this state.
    pub fn ready_reason(self) -> &'static str {
        match self {
            State::Enabled => "MailboxProvisioned",
            State::Disabled => "MailboxDisabled",
            State::Suspended => "MailboxSuspended",
        }
    }
}

/// The account a user should map to, or why it cannot map to one.
pub fn plan(user: &CleanmailUser, tenant: Option<&Tenant>) -> Result<Plan, Observed> {
    let namespace = user.namespace().unwrap_or_default();
    let tenant = tenant.ok_or_else(|| {
        Observed::ready(false, "TenantNotFound", format!("no CleanmailTenant exists in namespace {namespace}"))
    })?;
    if let BackendChoice::Unresolved(message) = &tenant.backend {
        return Err(Observed::ready(
            false,
            "BackendUnavailable",
            format!("the tenant's backend is not configured: {message}"),
        ));
    }
    let invalid = |message: String| Observed::ready(false, "InvalidSpec", message);
    if !tenant.allows(&user.spec.user_name) {
        return Err(invalid(format!(
            "userName {:?} is not a mail address in the tenant's domains ({})",
            user.spec.user_name,
            tenant.domains.join(", ")
        )));
    }
    let account_id = user.uid().ok_or_else(|| invalid("the resource has no uid".into()))?;
    let overrides = user.spec.overrides.clone().unwrap_or_default();
    let mut aliases: Vec<String> = overrides.aliases.iter().map(|a| a.trim().to_lowercase()).collect();
    aliases.sort();
    aliases.dedup();
    if let Some(foreign) = aliases.iter().find(|alias| !tenant.allows(alias)) {
        return Err(invalid(format!(
            "alias {foreign:?} in spec.overrides.aliases is not a mail address in the tenant's domains ({})",
            tenant.domains.join(", ")
        )));
    }
    let quota = overrides.quota.clone().or_else(|| tenant.default_quota.clone());
    let quota_bytes = quota
        .as_ref()
        .map(|q| bytes(q).map_err(|why| invalid(format!("quota {:?} is not a storage size: {why}", q.0))))
        .transpose()?;
    let identity_active = user.spec.active != Some(false);
    let active = overrides.active.unwrap_or(identity_active);
    let state = match (active, identity_active) {
        (true, _) => State::Enabled,
        (false, true) => State::Suspended,
        (false, false) => State::Disabled,
    };
    let overridden = [
        ("active", overrides.active.is_some()),
        ("quota", overrides.quota.is_some()),
        ("aliases", !overrides.aliases.is_empty()),
        ("deletionPolicy", overrides.deletion_policy.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| name.to_owned())
    .collect();
    Ok(Plan {
        account: DesiredAccount {
            account_id,
            address: user.spec.user_name.to_lowercase(),
            display_name: user.spec.display_name.clone(),
            enabled: active,
            quota_bytes,
            aliases: aliases.clone(),
            owner: format!("{namespace}/{}", user.name_any()),
        },
        effective: EffectiveSettings {
            active,
            quota,
            aliases,
            deletion_policy: overrides.deletion_policy.unwrap_or(tenant.deletion_policy),
        },
        state,
        overridden,
    })
}

/// What becomes of a deleted user's mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// The user is protected: it stays (Terminating) and its mailbox is untouched.
    Hold,
    /// Follow this policy; `why` says where it came from.
    Follow { policy: DeletionPolicy, why: String },
}

/// The user's own policy wins, then the tenant's. Mail is never deleted on the tenant's policy
/// while the tenant's namespace is being deleted, nor without a tenant: tearing down a tenant must
/// not cascade into its mailboxes.
pub fn disposal(user: &CleanmailUser, tenant: Option<&Tenant>, namespace_terminating: bool) -> Disposal {
    if user.annotations().get(PROTECTED_ANNOTATION).is_some_and(|v| v == "true") {
        return Disposal::Hold;
    }
    let own = user.spec.overrides.as_ref().and_then(|o| o.deletion_policy);
    let (policy, why) = match (tenant, own) {
        (None, _) => (DeletionPolicy::Retain, "no tenant says which backend or policy applies".to_owned()),
        (Some(_), Some(policy)) => (policy, "the user's deletion policy".to_owned()),
        (Some(_), None) if namespace_terminating => {
            (DeletionPolicy::Retain, "the namespace is being deleted and the user sets no policy".to_owned())
        }
        (Some(tenant), None) => (tenant.deletion_policy, "the tenant's deletion policy".to_owned()),
    };
    Disposal::Follow { policy, why }
}

/// A Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1.5Gi`) in bytes, rounded up.
pub fn bytes(quantity: &Quantity) -> Result<i64, String> {
    let text = quantity.0.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{number:?} is not a non-negative number"))?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| format!("unknown suffix {suffix:?}"))?;
            10f64.powi(power)
        }
        _ => return Err(format!("unknown suffix {suffix:?} (use Ki, Mi, Gi, Ti, k, M, G or T)")),
    };
    let value = (number * factor).ceil();
    if !value.is_finite() || value > i64::MAX as f64 {
        return Err("too large".into());
    }
    Ok(value as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CleanmailUserSpec, UserOverrides};

    fn tenant(backend: BackendChoice) -> Tenant {
        let mut tenant = crate::tenant::tests_support::tenant("contoso", &["contoso.ch"]);
        tenant.backend = backend;
        tenant
    }

    fn user(user_name: &str, active: bool) -> CleanmailUser {
        let mut user = CleanmailUser::new(
            "u",
            CleanmailUserSpec { user_name: user_name.into(), active: Some(active), ..Default::default() },
        );
        user.metadata.namespace = Some("contoso".into());
        user.metadata.uid = Some("uid-1".into());
        user
    }

    fn with_overrides(mut user: CleanmailUser, overrides: UserOverrides) -> CleanmailUser {
        user.spec.overrides = Some(Box::new(overrides));
        user
    }

    #[test]
    fn an_active_user_in_a_tenant_domain_maps_to_an_enabled_lower_cased_account() {
        let plan = plan(&user("Alice@Contoso.ch", true), Some(&tenant(BackendChoice::Default))).expect("plan");
        assert_eq!(
            plan.account,
            DesiredAccount {
                account_id: "uid-1".into(),
                address: "alice@contoso.ch".into(),
                display_name: None,
                enabled: true,
                quota_bytes: None,
                aliases: vec![],
                owner: "contoso/u".into(),
            }
        );
        assert_eq!((plan.state, plan.overridden.len()), (State::Enabled, 0));
        let disabled = super::plan(&user("a@contoso.ch", false), Some(&tenant(BackendChoice::Default))).expect("plan");
        assert_eq!((disabled.account.enabled, disabled.state), (false, State::Disabled));
    }

    #[test]
    fn users_that_cannot_be_provisioned_say_why() {
        let reason = |u: &CleanmailUser, t: Option<&Tenant>| plan(u, t).expect_err("refused").reason;
        assert_eq!(reason(&user("a@contoso.ch", true), None), "TenantNotFound");
        assert_eq!(reason(&user("a@fabrikam.ch", true), Some(&tenant(BackendChoice::Default))), "InvalidSpec");
        let unresolved = tenant(BackendChoice::Unresolved("Secret db missing".into()));
        assert_eq!(reason(&user("a@contoso.ch", true), Some(&unresolved)), "BackendUnavailable");
        let foreign_alias = with_overrides(
            user("a@contoso.ch", true),
            UserOverrides { aliases: vec!["a@fabrikam.ch".into()], ..Default::default() },
        );
        assert_eq!(reason(&foreign_alias, Some(&tenant(BackendChoice::Default))), "InvalidSpec");
        let bad_quota = with_overrides(
            user("a@contoso.ch", true),
            UserOverrides { quota: Some(Quantity("lots".into())), ..Default::default() },
        );
        assert_eq!(reason(&bad_quota, Some(&tenant(BackendChoice::Default))), "InvalidSpec");
    }

    #[test]
    fn overrides_win_over_the_identity_provider_and_the_tenant() {
        let mut contoso = tenant(BackendChoice::Default);
        contoso.default_quota = Some(Quantity("1Gi".into()));
        let suspended = with_overrides(
            user("a@contoso.ch", true),
            UserOverrides {
                active: Some(false),
                aliases: vec!["Info@Contoso.ch".into(), "info@contoso.ch".into()],
                deletion_policy: Some(DeletionPolicy::Retain),
                ..Default::default()
            },
        );
        let plan = plan(&suspended, Some(&contoso)).expect("plan");
        assert_eq!((plan.state, plan.account.enabled), (State::Suspended, false));
        assert_eq!(plan.account.quota_bytes, Some(1 << 30), "the tenant's default quota");
        assert_eq!(plan.account.aliases, ["info@contoso.ch"]);
        assert_eq!(plan.effective.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(plan.overridden, ["active", "aliases", "deletionPolicy"]);

        let kept_open = with_overrides(
            user("a@contoso.ch", false),
            UserOverrides { active: Some(true), quota: Some(Quantity("50Gi".into())), ..Default::default() },
        );
        let plan = super::plan(&kept_open, Some(&contoso)).expect("plan");
        assert_eq!((plan.state, plan.account.enabled), (State::Enabled, true));
        assert_eq!(plan.account.quota_bytes, Some(50 << 30));
        assert_eq!(plan.overridden, ["active", "quota"]);
    }

    #[test]
    fn deletion_follows_the_user_then_the_tenant_and_never_cascades_from_a_tenant_teardown() {
        let follow = |policy, why: &str| Disposal::Follow { policy, why: why.into() };
        let contoso = tenant(BackendChoice::Default);
        let plain = user("a@contoso.ch", true);
        assert_eq!(
            disposal(&plain, Some(&contoso), false),
            follow(DeletionPolicy::Delete, "the tenant's deletion policy")
        );
        assert_eq!(
            disposal(&plain, Some(&contoso), true),
            follow(DeletionPolicy::Retain, "the namespace is being deleted and the user sets no policy")
        );
        assert_eq!(
            disposal(&plain, None, false),
            follow(DeletionPolicy::Retain, "no tenant says which backend or policy applies")
        );
        let own = with_overrides(
            plain.clone(),
            UserOverrides { deletion_policy: Some(DeletionPolicy::Disable), ..Default::default() },
        );
        assert_eq!(disposal(&own, Some(&contoso), true), follow(DeletionPolicy::Disable, "the user's deletion policy"));
        let mut protected = own;
        protected.annotations_mut().insert(PROTECTED_ANNOTATION.into(), "true".into());
        assert_eq!(disposal(&protected, Some(&contoso), false), Disposal::Hold);
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        let read = |s: &str| bytes(&Quantity(s.into()));
        assert_eq!(read("10Gi"), Ok(10 << 30));
        assert_eq!(read("1.5Ki"), Ok(1536));
        assert_eq!(read("500M"), Ok(500_000_000));
        assert_eq!(read("1e3"), Ok(1000));
        assert_eq!(read("2048"), Ok(2048));
        assert_eq!(read("0.5"), Ok(1), "rounded up");
        for bad in ["", "-1Gi", "10GB", "Gi", "1e", "9999999Ei"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}

//! Reconciling a `CleanmailGroup` into a distribution list delivering to its members' mailboxes.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};

use super::{
    Context, Error, RECHECK, Result, apply_status,
    conditions::{self, Observed},
    object_key,
};
use crate::{
    backend::DesiredList,
    crd::{CleanmailGroup, CleanmailGroupStatus, CleanmailUser, LIST_FINALIZER},
    tenant::{BackendChoice, Tenant},
};

/// See [`conditions::settled`].
pub fn settled(group: &CleanmailGroup) -> bool {
    let observed = group.status.as_ref().map(|s| (s.observed_generation, s.conditions.as_slice()));
    conditions::settled(&group.metadata, observed, LIST_FINALIZER)
}

pub async fn reconcile(group: Arc<CleanmailGroup>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<CleanmailGroup> = Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    finalizer(&api, LIST_FINALIZER, group, |event| async {
        match event {
            Finalizer::Apply(group) => apply(&group, &ctx).await,
            Finalizer::Cleanup(group) => cleanup(&group, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// Pure: the list address, `spec.address` or the display name made address-safe in the tenant's
/// first domain; it must lie in one of the tenant's domains.
pub fn list_address(group: &CleanmailGroup, tenant: &Tenant) -> Result<String, Observed> {
    let address = match &group.spec.address {
        Some(address) => address.to_lowercase(),
        None => {
            let domain = tenant
                .domains
                .first()
                .ok_or_else(|| Observed::ready(false, "InvalidSpec", "the tenant lists no mail domain"))?;
            format!("{}@{domain}", local_part(&group.spec.display_name))
        }
    };
    if tenant.allows(&address) {
        Ok(address)
    } else {
        Err(Observed::ready(
            false,
            "InvalidSpec",
            format!("list address {address} is not in the tenant's domains ({})", tenant.domains.join(", ")),
        ))
    }
}

fn local_part(display_name: &str) -> String {
    let mapped: String =
        display_name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let collapsed = mapped.split('-').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-");
    if collapsed.is_empty() { "list".to_string() } else { collapsed }
}

/// The account ids of the members that name a user of the namespace, and how many do not.
fn resolve_members(group: &CleanmailGroup, users: &Store<CleanmailUser>) -> (Vec<String>, usize) {
    let namespace = group.namespace().unwrap_or_default();
    let mut unresolved = 0;
    let ids = group
        .spec
        .members
        .iter()
        .filter_map(|member| {
            let uid = users.get(&ObjectRef::new(&member.value).within(&namespace)).and_then(|u| u.uid());
            unresolved += usize::from(uid.is_none());
            uid
        })
        .collect();
    (ids, unresolved)
}

async fn apply(group: &CleanmailGroup, ctx: &Context) -> Result<Action> {
    let namespace = group.namespace().unwrap_or_default();
    let Some(tenant) = ctx.tenants.tenant(&namespace) else {
        let observed =
            Observed::ready(false, "TenantNotFound", format!("no CleanmailTenant exists in namespace {namespace}"));
        write_status(group, ctx, &observed, None, (0, 0)).await?;
        return Ok(Action::requeue(RECHECK));
    };
    let address = match list_address(group, &tenant) {
        Ok(address) => address,
        Err(observed) => {
            write_status(group, ctx, &observed, None, (0, 0)).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let Some(users) = ctx.users.get() else { return Ok(Action::requeue(RECHECK)) };
    let _ = users.wait_until_ready().await;
    let (member_account_ids, unresolved) = resolve_members(group, users);
    let desired = DesiredList {
        list_id: group.uid().unwrap_or_default(),
        address: address.clone(),
        display_name: Some(group.spec.display_name.clone()),
        member_account_ids,
    };
    let url = match &tenant.backend {
        BackendChoice::Default => None,
        BackendChoice::Url(url) => Some(url.as_str()),
        BackendChoice::Unresolved(message) => {
            let observed = Observed::ready(false, "BackendUnavailable", message.clone());
            write_status(group, ctx, &observed, None, (0, 0)).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let result = match ctx.backends.get(url).await {
        Ok(backend) => backend.ensure_list(&desired).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(list) => {
            let message = format!("list {} delivers to {} member(s)", list.address, list.member_count);
            if group.status.as_ref().and_then(|s| s.address.as_ref()).is_none() {
                ctx.publish(group, EventType::Normal, "ListProvisioned", message.clone()).await;
            }
            let observed = Observed::ready(true, "ListProvisioned", message);
            write_status(group, ctx, &observed, Some(list.address), (list.member_count, unresolved)).await?;
            ctx.succeeded(&object_key(group));
            // Members may name users that do not exist yet; look again soon. Otherwise the
            // resync sweep comes back to it.
            Ok(if unresolved > 0 { Action::requeue(RECHECK) } else { Action::await_change() })
        }
        Err(error) => {
            let reason = if error.is_transient() { "BackendUnavailable" } else { "ProvisioningFailed" };
            let observed = Observed::ready(false, reason, error.to_string());
            // On entering the failure, not on every retry.
            let ready = group.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY));
            if ready.is_none_or(|c| c.reason != reason) {
                ctx.publish(group, EventType::Warning, reason, error.to_string()).await;
            }
            write_status(group, ctx, &observed, None, (0, 0)).await?;
            Err(Error::Backend(error))
        }
    }
}

/// A list holds no mail, so it is removed whatever the deletion policy.
async fn cleanup(group: &CleanmailGroup, ctx: &Context) -> Result<Action> {
    let namespace = group.namespace().unwrap_or_default();
    let url = match ctx.tenants.tenant(&namespace).map(|t| t.backend.clone()) {
        Some(BackendChoice::Url(url)) => Some(url),
        Some(BackendChoice::Default) => None,
        _ => {
            let note = format!(
                "no usable tenant in namespace {namespace}; list {} left in the backend",
                group.spec.display_name
            );
            ctx.publish(group, EventType::Warning, "ListRetained", note).await;
            return Ok(Action::await_change());
        }
    };
    let backend = ctx.backends.get(url.as_deref()).await.map_err(Error::Backend)?;
    backend.delete_list(&group.uid().unwrap_or_default()).await.map_err(Error::Backend)?;
    let note = format!("list {} removed", group.spec.display_name);
    tracing::info!(group = %object_key(group), "{note}");
    ctx.publish(group, EventType::Normal, "ListDeleted", note).await;
    ctx.succeeded(&object_key(group));
    Ok(Action::await_change())
}

async fn write_status(
    group: &CleanmailGroup,
    ctx: &Context,
    observed: &Observed,
    address: Option<String>,
    (member_count, unresolved): (usize, usize),
) -> Result<()> {
    let old = group.status.clone().unwrap_or_default();
    let generation = group.metadata.generation;
    let status = CleanmailGroupStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, observed, generation, Timestamp::now()),
        address: address.or(old.address.clone()),
        member_count: member_count as i64,
        unresolved_members: unresolved as i64,
    };
    if status == old {
        return Ok(());
    }
    apply_status(ctx, group, &status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanmailGroupSpec;

    fn group(display_name: &str, address: Option<&str>) -> CleanmailGroup {
        CleanmailGroup::new(
            "g",
            CleanmailGroupSpec {
                display_name: display_name.into(),
                address: address.map(Into::into),
                ..Default::default()
            },
        )
    }

    #[test]
    fn the_list_address_comes_from_the_display_name_in_the_first_domain() {
        let tenant = crate::tenant::tests_support::tenant("contoso", &["contoso.ch", "contoso.com"]);
        assert_eq!(
            list_address(&group("Sales Team (EMEA)", None), &tenant).expect("address"),
            "sales-team-emea@contoso.ch"
        );
        assert_eq!(list_address(&group("Über", None), &tenant).expect("address"), "ber@contoso.ch");
        assert_eq!(list_address(&group("x", Some("Team@Contoso.com")), &tenant).expect("address"), "team@contoso.com");
        assert_eq!(
            list_address(&group("x", Some("team@fabrikam.ch")), &tenant).expect_err("foreign").reason,
            "InvalidSpec"
        );
    }
}

//! Reconciling a `CleanmailUser` into a mailbox account.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};

use super::{
    Context, Error, RECHECK, RESYNC, Result, USER_FINALIZER,
    conditions::{self, Observed},
    object_key,
};
use crate::{
    backend::{DesiredAccount, MailboxBackend},
    crd::{CleanmailUser, CleanmailUserStatus, DeletionPolicy, MailboxRef},
    tenant::{BackendChoice, Tenant},
};

pub async fn reconcile(user: Arc<CleanmailUser>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = user.namespace().unwrap_or_default();
    let api: Api<CleanmailUser> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, USER_FINALIZER, user, |event| async {
        match event {
            Finalizer::Apply(user) => apply(&user, &ctx).await,
            Finalizer::Cleanup(user) => cleanup(&user, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// Pure: the account a user should map to, or why it cannot map to one.
pub fn plan(user: &CleanmailUser, tenant: Option<&Tenant>) -> Result<DesiredAccount, Observed> {
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
    if !tenant.allows(&user.spec.user_name) {
        return Err(Observed::ready(
            false,
            "InvalidSpec",
            format!(
                "userName {:?} is not a mail address in the tenant's domains ({})",
                user.spec.user_name,
                tenant.domains.join(", ")
            ),
        ));
    }
    let account_id = user.uid().ok_or_else(|| Observed::ready(false, "InvalidSpec", "the resource has no uid"))?;
    Ok(DesiredAccount {
        account_id,
        address: user.spec.user_name.to_lowercase(),
        display_name: user.spec.display_name.clone(),
        enabled: user.spec.active != Some(false),
        quota_bytes: None,
        aliases: vec![],
        owner: format!("{namespace}/{}", user.name_any()),
    })
}

fn backend_url(tenant: &Tenant) -> Option<&str> {
    match &tenant.backend {
        BackendChoice::Url(url) => Some(url),
        _ => None,
    }
}

async fn apply(user: &CleanmailUser, ctx: &Context) -> Result<Action> {
    let tenant = ctx.tenants.tenant(&user.namespace().unwrap_or_default());
    let desired = match plan(user, tenant.as_deref()) {
        Ok(desired) => desired,
        Err(observed) => {
            // Not the user's fault alone (the tenant may change), so look again later.
            report_failure(user, ctx, &observed).await?;
            write_status(user, ctx, &observed, previous_mailbox(user)).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let tenant = tenant.as_deref().map(backend_url).unwrap_or_default();
    let result = match ctx.backends.get(tenant).await {
        Ok(backend) => backend.ensure(&desired).await.map(|ensured| ensured.account),
        Err(error) => Err(error),
    };
    match result {
        Ok(account) => {
            let mailbox =
                MailboxRef { account_id: account.account_id, address: account.address, enabled: account.enabled };
            let observed = if mailbox.enabled {
                Observed::ready(true, "MailboxProvisioned", format!("mailbox {} is enabled", mailbox.address))
            } else {
                Observed::ready(
                    true,
                    "MailboxDisabled",
                    format!("mailbox {} is disabled; its mail is kept", mailbox.address),
                )
            };
            announce_transition(user, ctx, previous_mailbox(user).as_ref(), &mailbox).await;
            write_status(user, ctx, &observed, Some(mailbox)).await?;
            ctx.succeeded(&object_key(user));
            Ok(Action::requeue(RESYNC))
        }
        Err(error) => {
            let reason = if error.is_transient() { "BackendUnavailable" } else { "ProvisioningFailed" };
            let observed = Observed::ready(false, reason, error.to_string());
            report_failure(user, ctx, &observed).await?;
            write_status(user, ctx, &observed, previous_mailbox(user)).await?;
            Err(Error::Backend(error))
        }
    }
}

async fn cleanup(user: &CleanmailUser, ctx: &Context) -> Result<Action> {
    let namespace = user.namespace().unwrap_or_default();
    let Some(tenant) = ctx.tenants.tenant(&namespace) else {
        // Without a tenant nobody can say which backend or policy applies: keep the mail.
        let note = format!("no tenant in namespace {namespace}; the mailbox of {} is kept", user.spec.user_name);
        ctx.publish(user, EventType::Warning, "MailboxRetained", note).await;
        return Ok(Action::await_change());
    };
    let account_id = user.uid().unwrap_or_default();
    match tenant.deletion_policy {
        DeletionPolicy::Retain => {
            let note = format!("mailbox {} is kept (deletion policy Retain)", user.spec.user_name);
            tracing::info!(user = %object_key(user), "mailbox retained");
            ctx.publish(user, EventType::Normal, "MailboxRetained", note).await;
        }
        DeletionPolicy::Delete => {
            if let BackendChoice::Unresolved(message) = &tenant.backend {
                return Err(Error::Backend(crate::backend::BackendError {
                    kind: crate::backend::ErrorKind::Transient,
                    operation: "delete",
                    account_id,
                    message: message.clone(),
                    source: None,
                }));
            }
            let backend: Arc<dyn MailboxBackend> =
                ctx.backends.get(backend_url(&tenant)).await.map_err(Error::Backend)?;
            backend.delete(&account_id).await.map_err(Error::Backend)?;
            tracing::info!(user = %object_key(user), %account_id, "mailbox deleted");
            let note = format!("mailbox {} and its mail were deleted", user.spec.user_name);
            ctx.publish(user, EventType::Normal, "MailboxDeleted", note).await;
        }
    }
    ctx.succeeded(&object_key(user));
    Ok(Action::await_change())
}

fn previous_mailbox(user: &CleanmailUser) -> Option<MailboxRef> {
    user.status.as_ref().and_then(|s| s.mailbox.clone())
}

fn previous_reason(user: &CleanmailUser) -> Option<&str> {
    let status = user.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == conditions::READY).map(|c| c.reason.as_str())
}

/// An Event when the account changed state, not on every resync.
async fn announce_transition(user: &CleanmailUser, ctx: &Context, before: Option<&MailboxRef>, after: &MailboxRef) {
    let (reason, note) = match before {
        None => ("MailboxProvisioned", format!("mailbox {} created", after.address)),
        Some(b) if b.enabled && !after.enabled => {
            ("MailboxDisabled", format!("mailbox {} disabled; mail kept", after.address))
        }
        Some(b) if !b.enabled && after.enabled => ("MailboxEnabled", format!("mailbox {} enabled", after.address)),
        Some(b) if b.address != after.address => {
            ("MailboxRenamed", format!("mailbox {} is now {}", b.address, after.address))
        }
        Some(_) => return,
    };
    ctx.publish(user, EventType::Normal, reason, note).await;
}

/// A Warning Event when the user enters a failure state (repeats are counted by the Recorder).
async fn report_failure(user: &CleanmailUser, ctx: &Context, observed: &Observed) -> Result<()> {
    if previous_reason(user) != Some(observed.reason.as_str()) {
        ctx.publish(user, EventType::Warning, &observed.reason, observed.message.clone()).await;
    }
    Ok(())
}

async fn write_status(
    user: &CleanmailUser,
    ctx: &Context,
    observed: &Observed,
    mailbox: Option<MailboxRef>,
) -> Result<()> {
    let old = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let status = CleanmailUserStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, observed, generation, Timestamp::now()),
        mailbox,
    };
    if status == old {
        return Ok(());
    }
    super::apply_status(ctx, user, &status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CleanmailUserSpec;

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

    #[test]
    fn an_active_user_in_a_tenant_domain_maps_to_an_enabled_lower_cased_account() {
        let desired = plan(&user("Alice@Contoso.ch", true), Some(&tenant(BackendChoice::Default))).expect("plan");
        assert_eq!(
            desired,
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
        assert!(!plan(&user("a@contoso.ch", false), Some(&tenant(BackendChoice::Default))).expect("plan").enabled);
    }

    #[test]
    fn users_that_cannot_be_provisioned_say_why() {
        let reason = |u: &CleanmailUser, t: Option<&Tenant>| plan(u, t).expect_err("refused").reason;
        assert_eq!(reason(&user("a@contoso.ch", true), None), "TenantNotFound");
        assert_eq!(reason(&user("a@fabrikam.ch", true), Some(&tenant(BackendChoice::Default))), "InvalidSpec");
        let unresolved = tenant(BackendChoice::Unresolved("Secret db missing".into()));
        assert_eq!(reason(&user("a@contoso.ch", true), Some(&unresolved)), "BackendUnavailable");
    }
}

//! Reconciling a `CleanmailUser` into a mailbox account.

use std::sync::Arc;

use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};

use super::{
    Context, Error, RECHECK, Result,
    conditions::{self, Observed},
    object_key,
    plan::{Disposal, Plan, State, disposal, plan},
};
use crate::{
    backend::{Change, MailboxBackend},
    crd::{CleanmailUser, CleanmailUserStatus, DeletionPolicy, MailboxRef, PROTECTED_ANNOTATION, USER_FINALIZER},
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

/// See [`conditions::settled`].
pub fn settled(user: &CleanmailUser) -> bool {
    let observed = user.status.as_ref().map(|s| (s.observed_generation, s.conditions.as_slice()));
    conditions::settled(&user.metadata, observed, USER_FINALIZER)
}

async fn apply(user: &CleanmailUser, ctx: &Context) -> Result<Action> {
    let tenant = ctx.tenants.tenant(&user.namespace().unwrap_or_default());
    let plan = match plan(user, tenant.as_deref()) {
        Ok(plan) => plan,
        Err(observed) => {
            // Not the user's fault alone (the tenant may change), so look again later.
            report_failure(user, ctx, &observed).await?;
            write_status(user, ctx, &observed, previous_mailbox(user), None).await?;
            return Ok(Action::requeue(RECHECK));
        }
    };
    let tenant = tenant.as_deref().and_then(Tenant::backend_url);
    let result = match ctx.backends.get(tenant).await {
        Ok(backend) => backend.ensure(&plan.account).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(ensured) => {
            let account = ensured.account;
            let mailbox =
                MailboxRef { account_id: account.account_id, address: account.address, enabled: account.enabled };
            announce_change(user, ctx, &plan, &ensured.change).await;
            announce_transition(user, ctx, previous_mailbox(user).as_ref(), &mailbox).await;
            let observed = Observed::ready(true, plan.state.ready_reason(), ready_message(&plan, &mailbox.address));
            write_status(user, ctx, &observed, Some(mailbox), Some(&plan)).await?;
            ctx.succeeded(&object_key(user));
            // The resync sweep comes back to it.
            Ok(Action::await_change())
        }
        Err(error) => {
            let reason = if error.is_transient() { "BackendUnavailable" } else { "ProvisioningFailed" };
            let observed = Observed::ready(false, reason, error.to_string());
            report_failure(user, ctx, &observed).await?;
            write_status(user, ctx, &observed, previous_mailbox(user), Some(&plan)).await?;
            Err(Error::Backend(error))
        }
    }
}

/// A sentence for people: the state, and what of it comes from overrides.
fn ready_message(plan: &Plan, address: &str) -> String {
    let state = match plan.state {
        State::Enabled => format!("mailbox {address} is enabled"),
        State::Suspended => format!("mailbox {address} is suspended by spec.overrides.active; its mail is kept"),
        State::Disabled => format!("mailbox {address} is disabled; its mail is kept"),
    };
    if plan.overridden.is_empty() {
        return state;
    }
    format!("{state} (overridden in the cluster: {})", plan.overridden.join(", "))
}

/// Events for what the backend had to do beyond following the spec: adopting an existing
/// account, or repairing one that was changed behind the operator's back.
async fn announce_change(user: &CleanmailUser, ctx: &Context, plan: &Plan, change: &Change) {
    let address = &plan.account.address;
    match change {
        Change::Adopted { previous_account_id } => {
            tracing::info!(user = %object_key(user), %address, previous_account_id, "existing mailbox adopted");
            let note = format!("existing mailbox {address} (account {previous_account_id}) adopted with its mail");
            ctx.publish(user, EventType::Normal, "MailboxAdopted", note).await;
        }
        // The last status already described this very plan, so the backend had drifted from it.
        Change::Updated if already_applied(user, plan) => {
            tracing::warn!(user = %object_key(user), %address, "mailbox drifted from its resource; restored");
            let note = format!("mailbox {address} had been changed in the backend; restored to the resource's state");
            ctx.publish(user, EventType::Warning, "MailboxRepaired", note).await;
        }
        _ => {}
    }
}

fn already_applied(user: &CleanmailUser, plan: &Plan) -> bool {
    let Some(status) = &user.status else { return false };
    status.observed_generation == user.metadata.generation
        && status.effective.as_ref() == Some(&plan.effective)
        && conditions::is_true(&status.conditions, conditions::READY)
}

async fn cleanup(user: &CleanmailUser, ctx: &Context) -> Result<Action> {
    let namespace = user.namespace().unwrap_or_default();
    let tenant = ctx.tenants.tenant(&namespace);
    let terminating = match &tenant {
        Some(_) => namespace_terminating(ctx, &namespace).await?,
        None => false,
    };
    let (policy, why) = match disposal(user, tenant.as_deref(), terminating) {
        Disposal::Hold => return hold(user, ctx).await,
        Disposal::Follow { policy, why } => (policy, why),
    };
    let address = &user.spec.user_name;
    let Some(tenant) = tenant else {
        let note = format!("mailbox {address} is kept and left as it is: {why}");
        tracing::info!(user = %object_key(user), %address, why, "mailbox retained");
        ctx.publish(user, EventType::Normal, "MailboxRetained", note).await;
        ctx.succeeded(&object_key(user));
        return Ok(Action::await_change());
    };
    let account_id = user.uid().unwrap_or_default();
    if let BackendChoice::Unresolved(message) = &tenant.backend {
        return Err(Error::Backend(crate::backend::BackendError {
            kind: crate::backend::ErrorKind::Transient,
            operation: "delete",
            account_id,
            message: message.clone(),
            source: None,
        }));
    }
    let backend: Arc<dyn MailboxBackend> = ctx.backends.get(tenant.backend_url()).await.map_err(Error::Backend)?;
    let (reason, note) = match policy {
        DeletionPolicy::Delete => {
            backend.delete(&account_id).await.map_err(Error::Backend)?;
            ("MailboxDeleted", format!("mailbox {address} and its mail were deleted ({why})"))
        }
        DeletionPolicy::Disable => {
            backend.release(&account_id, true).await.map_err(Error::Backend)?;
            ("MailboxDisabled", format!("mailbox {address} was disabled and kept with its mail ({why})"))
        }
        DeletionPolicy::Retain => {
            backend.release(&account_id, false).await.map_err(Error::Backend)?;
            ("MailboxRetained", format!("mailbox {address} is kept and left as it is ({why})"))
        }
    };
    tracing::info!(user = %object_key(user), %address, %account_id, ?policy, why, "{note}");
    ctx.publish(user, EventType::Normal, reason, note).await;
    ctx.succeeded(&object_key(user));
    Ok(Action::await_change())
}

/// Keeps a protected user (and its mailbox) until the annotation is removed; the error keeps the
/// finalizer, and removing the annotation is a change that reconciles it again at once.
async fn hold(user: &CleanmailUser, ctx: &Context) -> Result<Action> {
    let message = format!(
        "deletion is held: the user is protected by annotation {PROTECTED_ANNOTATION}; its mailbox is untouched until the annotation is removed"
    );
    let observed = Observed::ready(false, "DeletionProtected", message.clone());
    report_failure(user, ctx, &observed).await?;
    write_status(user, ctx, &observed, previous_mailbox(user), None).await?;
    Err(Error::Held(message))
}

/// Whether the namespace is being deleted, which must not turn into deleting its mailboxes.
async fn namespace_terminating(ctx: &Context, namespace: &str) -> Result<bool> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(namespace).await {
        Ok(found) => Ok(found.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())),
        // Without the right to look, assume the worst: keeping mail is the mistake that can be undone.
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            tracing::warn!(%namespace, "cannot read the namespace; treating it as being deleted, so mail is kept");
            Ok(true)
        }
        Err(error) => Err(Error::Kube(error)),
    }
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
    tracing::info!(user = %object_key(user), address = %after.address, "{note}");
    ctx.publish(user, EventType::Normal, reason, note).await;
}

/// A Warning Event when the user enters a failure state (repeats are counted by the Recorder).
async fn report_failure(user: &CleanmailUser, ctx: &Context, observed: &Observed) -> Result<()> {
    if previous_reason(user) != Some(observed.reason.as_str()) {
        ctx.publish(user, EventType::Warning, &observed.reason, observed.message.clone()).await;
    }
    Ok(())
}

/// Writes the status; without a `plan` (one could not be made) the effective settings stay as
/// last reported.
async fn write_status(
    user: &CleanmailUser,
    ctx: &Context,
    observed: &Observed,
    mailbox: Option<MailboxRef>,
    plan: Option<&Plan>,
) -> Result<()> {
    let old = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let status = CleanmailUserStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, observed, generation, Timestamp::now()),
        mailbox,
        state: plan.map_or(old.state.clone(), |p| Some(p.state.as_str().to_owned())),
        effective: plan.map_or(old.effective.clone(), |p| Some(p.effective.clone())),
        overridden: plan.map_or(old.overridden.clone(), |p| p.overridden.clone()),
    };
    if status == old {
        return Ok(());
    }
    super::apply_status(ctx, user, &status).await
}

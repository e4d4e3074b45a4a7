//! Reporting whether a `CleanmailTenant` can be used: its token Secret, domains and backend.

use std::{collections::HashSet, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Result,
    conditions::{self, Observed},
};
use crate::{
    crd::{CleanmailTenant, CleanmailTenantStatus},
    tenant::BackendChoice,
};

/// Secrets and backends change without touching the tenant object, so look again this often.
const RECHECK: Duration = Duration::from_secs(30);
/// How many orphaned addresses the status and the Event name.
const ORPHANS_LISTED: usize = 20;

pub async fn reconcile(tenant: Arc<CleanmailTenant>, ctx: Arc<Context>) -> Result<Action> {
    let observed = observe(&tenant, &ctx).await;
    let old = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let orphans = if observed.status { scan_for_orphans(&tenant, &ctx).await } else { None };
    let (orphaned_accounts, orphaned_addresses) = match &orphans {
        Some(addresses) => (Some(addresses.len() as i64), addresses.iter().take(ORPHANS_LISTED).cloned().collect()),
        None => (old.orphaned_accounts, old.orphaned_addresses.clone()),
    };
    let status = CleanmailTenantStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &observed, generation, Timestamp::now()),
        orphaned_accounts,
        orphaned_addresses,
    };
    if status != old {
        super::apply_status(&ctx, tenant.as_ref(), &status).await?;
    }
    if let Some(addresses) = orphans {
        report_orphans(&tenant, &ctx, old.orphaned_accounts, &addresses).await;
    }
    Ok(Action::requeue(RECHECK.min(ctx.resync)))
}

/// The addresses of the accounts in the tenant's domains that no user of its namespace maps to,
/// at most once per resync period; `None` when not due or when the backend cannot be read.
async fn scan_for_orphans(object: &CleanmailTenant, ctx: &Context) -> Option<Vec<String>> {
    let namespace = object.namespace().unwrap_or_default();
    if !ctx.orphan_scan_due(&namespace) {
        return None;
    }
    let tenant = ctx.tenants.tenant(&namespace)?;
    let users = ctx.users.get()?;
    let _ = users.wait_until_ready().await;
    let accounts = match ctx.backends.get(tenant.backend_url()).await {
        Ok(backend) => backend.accounts_in(&tenant.domains).await,
        Err(error) => Err(error),
    };
    let accounts = match accounts {
        Ok(accounts) => accounts,
        Err(error) => {
            tracing::warn!(%error, tenant = %namespace, "cannot list the backend's accounts for the orphan report");
            return None;
        }
    };
    let live: HashSet<String> = users
        .state()
        .iter()
        .filter(|u| u.namespace().as_deref() == Some(namespace.as_str()))
        .filter_map(|u| u.uid())
        .collect();
    let mut orphans: Vec<String> =
        accounts.into_iter().filter(|a| !live.contains(&a.account_id)).map(|a| a.address).collect();
    orphans.sort();
    ctx.metrics.set_orphaned_accounts(&namespace, orphans.len());
    Some(orphans)
}

/// A Warning Event (and a log line) when the number of orphans changes; they are never deleted.
async fn report_orphans(tenant: &CleanmailTenant, ctx: &Context, before: Option<i64>, orphans: &[String]) {
    let count = orphans.len() as i64;
    if before == Some(count) || (before.is_none() && count == 0) {
        return;
    }
    let sample = orphans.iter().take(ORPHANS_LISTED).cloned().collect::<Vec<_>>().join(", ");
    let note = format!(
        "{count} account(s) in the tenant's domains have no CleanmailUser and are kept: {sample}{}",
        if orphans.len() > ORPHANS_LISTED { ", …" } else { "" }
    );
    tracing::warn!(tenant = %tenant.namespace().unwrap_or_default(), count, "{note}");
    let type_ = if count == 0 { EventType::Normal } else { EventType::Warning };
    ctx.publish(tenant, type_, "OrphanedAccounts", note).await;
}

async fn observe(object: &CleanmailTenant, ctx: &Context) -> Observed {
    let namespace = object.namespace().unwrap_or_default();
    let Some(tenant) = ctx.tenants.tenant(&namespace) else {
        return Observed::ready(false, "Pending", "the tenant has not been loaded yet");
    };
    if tenant.name != object.name_any() {
        return Observed::ready(
            false,
            "DuplicateTenant",
            format!("namespace {namespace} already has tenant {}; this one is ignored", tenant.name),
        );
    }
    if let Some((reason, message)) = &tenant.problem {
        return Observed::ready(false, reason.clone(), message.clone());
    }
    let url = match &tenant.backend {
        BackendChoice::Default => None,
        BackendChoice::Url(url) => Some(url.as_str()),
        BackendChoice::Unresolved(message) => return Observed::ready(false, "BackendUnavailable", message.clone()),
    };
    match ctx.backends.get(url).await {
        Ok(_) => Observed::ready(
            true,
            "TenantReady",
            format!("{} token(s); provisions {}", tenant.token_count(), tenant.domains.join(", ")),
        ),
        Err(error) => Observed::ready(false, "BackendUnavailable", error.to_string()),
    }
}

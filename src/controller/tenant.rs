//! Reporting whether a `CleanmailTenant` can be used: its token Secret, domains and backend.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::controller::Action};

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

pub async fn reconcile(tenant: Arc<CleanmailTenant>, ctx: Arc<Context>) -> Result<Action> {
    let observed = observe(&tenant, &ctx).await;
    let old = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let status = CleanmailTenantStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &observed, generation, Timestamp::now()),
    };
    if status != old {
        super::apply_status(&ctx, tenant.as_ref(), &status).await?;
    }
    Ok(Action::requeue(RECHECK))
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

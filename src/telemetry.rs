//! Logging and metrics.

use std::sync::Arc;

use crate::tenant::TenantRegistry;
use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// What is logged when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info,kube=warn,sqlx=warn";

/// Installs the global log subscriber; `RUST_LOG` filters, `json` selects structured output.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour codes only for a terminal; in files and log collectors they garble the fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    // A second init (as in tests that start several operators) keeps the first subscriber.
    let _ = result;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
    /// The tenant's namespace; empty when the request carried no valid token.
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    /// The tenant's namespace.
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendErrorLabels {
    operation: &'static str,
    transient: bool,
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    scim_requests: Family<RequestLabels, Counter>,
    scim_latency: Family<RequestLabels, Histogram>,
    leader: Gauge,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<KindLabel, Histogram>,
    backlog: Family<KindLabel, Gauge>,
    backend_errors: Family<BackendErrorLabels, Counter>,
    orphaned_accounts: Family<TenantLabel, Gauge>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cleanmail");
        let scim_requests = Family::<RequestLabels, Counter>::default();
        let scim_latency = Family::<RequestLabels, Histogram>::new_with_constructor(latency_buckets);
        let leader = Gauge::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabel, Histogram>::new_with_constructor(latency_buckets);
        let backlog = Family::<KindLabel, Gauge>::default();
        let backend_errors = Family::<BackendErrorLabels, Counter>::default();
        let orphaned_accounts = Family::<TenantLabel, Gauge>::default();
        registry.register("scim_requests", "SCIM requests by method, route, status and tenant", scim_requests.clone());
        registry.register("scim_request_duration_seconds", "SCIM request latency", scim_latency.clone());
        registry.register("leader", "1 while this replica holds the Lease and runs the controllers", leader.clone());
        registry.register("reconciles", "Reconciles by kind and result (success, error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by kind", reconcile_duration.clone());
        registry.register(
            "reconcile_backlog",
            "Objects whose current spec has not been reconciled yet (status.observedGeneration behind metadata.generation)",
            backlog.clone(),
        );
        registry.register(
            "backend_errors",
            "Mailbox backend errors by operation and whether they are transient",
            backend_errors.clone(),
        );
        registry.register(
            "orphaned_accounts",
            "Accounts in a tenant's domains that no user maps to (kept, never deleted), by tenant",
            orphaned_accounts.clone(),
        );
        Metrics {
            registry,
            scim_requests,
            scim_latency,
            leader,
            reconciles,
            reconcile_duration,
            backlog,
            backend_errors,
            orphaned_accounts,
        }
    }
}

impl Metrics {
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn observe_reconcile(&self, kind: &'static str, succeeded: bool, duration: std::time::Duration) {
        let result = if succeeded { "success" } else { "error" };
        self.reconciles.get_or_create(&ReconcileLabels { kind, result }).inc();
        self.reconcile_duration.get_or_create(&KindLabel { kind }).observe(duration.as_secs_f64());
    }

    pub fn count_backend_error(&self, operation: &'static str, transient: bool) {
        self.backend_errors.get_or_create(&BackendErrorLabels { operation, transient }).inc();
    }

    pub fn set_backlog(&self, kind: &'static str, pending: usize) {
        self.backlog.get_or_create(&KindLabel { kind }).set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub fn set_orphaned_accounts(&self, tenant: &str, count: usize) {
        let labels = TenantLabel { tenant: tenant.to_owned() };
        self.orphaned_accounts.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }
}

/// Axum middleware counting and timing every SCIM request, by the tenant its token belongs to.
pub async fn observe_request(
    State((metrics, tenants)): State<(Arc<Metrics>, TenantRegistry)>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let tenant = crate::tenant::bearer_token(request.headers())
        .and_then(|token| tenants.authenticate(token))
        .map(|tenant| tenant.namespace.clone())
        .unwrap_or_default();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16(), tenant };
    metrics.scim_requests.get_or_create(&labels).inc();
    metrics.scim_latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// The log span of one SCIM request: method, path (never the query, which may hold filter
/// values, nor any header, which would include the token) and the request id.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("scim", method = %request.method(), path = %request.uri().path(), request_id = %id)
}

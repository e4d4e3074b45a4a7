//! Logging and metrics.

use std::sync::Arc;

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

/// Installs the global log subscriber; `RUST_LOG` filters, `json` selects structured output.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    // A second init (as in tests that start several operators) keeps the first subscriber.
    let _ = result;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    scim_requests: Family<RequestLabels, Counter>,
    scim_latency: Family<RequestLabels, Histogram>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cleanmail");
        let scim_requests = Family::<RequestLabels, Counter>::default();
        let scim_latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        });
        registry.register("scim_requests", "SCIM requests by method, route and status", scim_requests.clone());
        registry.register("scim_request_duration_seconds", "SCIM request latency", scim_latency.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the Lease and runs the controllers", leader.clone());
        Metrics { registry, scim_requests, scim_latency, leader }
    }
}

impl Metrics {
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }
}

/// Axum middleware counting and timing every SCIM request.
pub async fn observe_request(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    metrics.scim_requests.get_or_create(&labels).inc();
    metrics.scim_latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

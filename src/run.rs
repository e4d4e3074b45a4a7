//! The `run` subcommand: the SCIM server, the read model, the tenant registry and the controllers
//! in one process, plus health and metrics endpoints. Also used in-process by integration tests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use kube::{Client, api::ListParams, runtime::watcher};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    cache::{GroupStore, UserStore},
    controller::{
        Caches, Settings,
        leader::{self, LeaseSettings, Term},
    },
    crd::{CleanmailGroup, CleanmailUser},
    scim::{self, ScimState},
    scope::Scope,
    telemetry::{self, Metrics},
    tenant::TenantRegistry,
};

/// Settings of `cleanmail-operator run`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Where the SCIM endpoint listens.
    #[arg(long, env = "CLEANMAIL_SCIM_ADDR", default_value = "0.0.0.0:8080")]
    pub scim_addr: SocketAddr,
    /// Where /healthz, /readyz and /metrics listen.
    #[arg(long, env = "CLEANMAIL_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// The mailbox backend of tenants that name none (`sqlite://PATH` or `postgres://…`).
    #[arg(long, env = "CLEANMAIL_DEFAULT_BACKEND", default_value = "sqlite://cleanmail.db")]
    pub default_backend: String,
    /// How many users are reconciled at once. Where the API server shares two cores with the
    /// operator, throughput grows little beyond 8 (docs/benchmarks.md); a reconcile mostly waits
    /// on the API server and the mailbox database, so where those are remote, more in flight
    /// keeps the work flowing.
    #[arg(long, env = "CLEANMAIL_CONTROLLER_CONCURRENCY", default_value_t = 16)]
    pub controller_concurrency: u16,
    /// At most this many requests per second to the API server from this replica (SCIM writes,
    /// reconciles, watches), so that provisioning a whole directory at once leaves the API server
    /// room for the rest of the cluster; 0 sets no limit.
    #[arg(long, env = "CLEANMAIL_API_QPS", default_value_t = 0)]
    pub api_qps: u32,
    /// How often every healthy user, group and tenant is reconciled anyway: the period of drift
    /// repair in the backend and of the tenant's orphan report.
    #[arg(long, env = "CLEANMAIL_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub resync_seconds: u64,
    /// This replica's name in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "CLEANMAIL_LOG_JSON")]
    pub log_json: bool,
    /// Namespace of the leader-election Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "CLEANMAIL_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease; replicas sharing it elect one controller among them.
    #[arg(long, env = "CLEANMAIL_LEASE_NAME", default_value = "cleanmail-operator")]
    pub lease_name: String,
    /// Seconds the leader's Lease holds without renewal: how long a crashed leader can delay its
    /// successor.
    #[arg(long, env = "CLEANMAIL_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
    /// Watch only these namespaces (comma-separated), for RBAC with Roles in the tenant
    /// namespaces only; empty watches the whole cluster.
    #[arg(long, env = "CLEANMAIL_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
}

/// A client for the cluster of the current kubeconfig (or the pod's service account), limited to
/// `api_qps` requests per second when that is not 0.
pub async fn client(api_qps: u32) -> anyhow::Result<Client> {
    let config = kube::Config::infer().await.context("no kubeconfig and not in a cluster")?;
    let builder = kube::client::ClientBuilder::try_from(config).context("cannot build a client from the kubeconfig")?;
    Ok(if api_qps == 0 {
        builder.build()
    } else {
        builder.with_layer(&tower::limit::RateLimitLayer::new(u64::from(api_qps), Duration::from_secs(1))).build()
    })
}

/// A started operator; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    pub scim_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones finish, stops the controllers and waits.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until a task ends by itself (which only happens on a fatal error) or `stop` is called.
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr} (is the port already in use?)"))
}

/// Starts everything and returns once the listeners are bound.
pub async fn start(client: Client, args: RunArgs) -> anyhow::Result<Running> {
    let scim_listener = bind(args.scim_addr, "SCIM").await?;
    let metrics_listener = bind(args.metrics_addr, "metrics").await?;
    let scope = Scope::from_list(&args.watch_namespaces);
    for partition in scope.partitions() {
        Scope::api::<CleanmailUser>(&client, &partition).list(&ListParams::default().limit(1)).await.with_context(|| {
            format!(
                "cannot list CleanmailUsers in {}: are the CRDs installed (cleanmail-operator crd | kubectl apply -f -) and may this identity list them?",
                partition.as_deref().unwrap_or("the cluster")
            )
        })?;
    }

    let (shutdown, _) = watch::channel(false);
    let stopped = || until_stopped(&shutdown);
    let users = UserStore::default();
    let groups = GroupStore::default();
    let tenants = TenantRegistry::new();
    let metrics = Arc::new(Metrics::default());
    let mut tasks = JoinSet::new();

    let partitions = scope.partitions().len();
    let watch = scope.watch::<CleanmailUser>(&client, &watcher::Config::default());
    tasks.spawn({
        let (users, stop) = (users.clone(), stopped());
        async move {
            tokio::select! { _ = users.follow(watch, partitions) => {}, _ = stop => {} }
        }
    });
    let group_watch = scope.watch::<CleanmailGroup>(&client, &watcher::Config::default());
    tasks.spawn({
        let (groups, stop) = (groups.clone(), stopped());
        async move {
            tokio::select! { _ = groups.follow(group_watch, partitions) => {}, _ = stop => {} }
        }
    });
    tasks.spawn({
        let (tenants, client, scope, stop) = (tenants.clone(), client.clone(), scope.clone(), stopped());
        async move {
            tokio::select! { _ = tenants.run(client, scope) => {}, _ = stop => {} }
        }
    });

    let instance = args.instance.clone().unwrap_or_else(|| format!("cleanmail-operator-{}", std::process::id()));
    let term = Term {
        client: client.clone(),
        tenants: tenants.clone(),
        default_backend: args.default_backend.clone(),
        settings: Settings {
            concurrency: args.controller_concurrency,
            resync: Duration::from_secs(args.resync_seconds),
        },
        metrics: metrics.clone(),
        scope,
        caches: Caches { users: users.clone(), groups: groups.clone() },
    };
    let lease = LeaseSettings {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        // Unique per process, so a restarted pod never mistakes its predecessor's Lease for its own.
        identity: format!("{instance}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        duration_seconds: args.lease_duration_seconds,
    };
    tasks.spawn(leader::run(term, lease, stopped()));

    let state = ScimState { client, users: users.clone(), groups: groups.clone(), tenants: tenants.clone() };
    let app = scim::router(state)
        .layer(axum::middleware::from_fn_with_state((metrics.clone(), tenants.clone()), telemetry::observe_request))
        // Outermost first: every request gets an id (or keeps the client's), logs carry it, and
        // the response returns it so a client report can be matched to the log lines.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(telemetry::request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
    let scim_addr = scim_listener.local_addr()?;
    tasks.spawn({
        let until_stopped = stopped();
        async move {
            if let Err(error) = axum::serve(scim_listener, app).with_graceful_shutdown(until_stopped).await {
                tracing::error!(%error, "SCIM server failed");
            }
        }
    });

    let health = health_routes(users, groups, tenants, metrics);
    let metrics_addr = metrics_listener.local_addr()?;
    tasks.spawn({
        let until_stopped = stopped();
        async move {
            if let Err(error) = axum::serve(metrics_listener, health).with_graceful_shutdown(until_stopped).await {
                tracing::error!(%error, "metrics server failed");
            }
        }
    });
    tracing::info!(%scim_addr, %metrics_addr, "cleanmail-operator started");
    Ok(Running { scim_addr, metrics_addr, shutdown, tasks })
}

fn until_stopped(shutdown: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = shutdown.subscribe();
    async move {
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

fn health_routes(users: UserStore, groups: GroupStore, tenants: TenantRegistry, metrics: Arc<Metrics>) -> Router {
    let (users_for_metrics, groups_for_metrics) = (users.clone(), groups.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = users.is_ready() && groups.is_ready() && tenants.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                metrics.set_backlog("CleanmailUser", users_for_metrics.backlog());
                metrics.set_backlog("CleanmailGroup", groups_for_metrics.backlog());
                let text = metrics.render();
                async move {
                    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                        .into_response()
                }
            }),
        )
}

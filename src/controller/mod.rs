//! The controllers: `CleanmailUser` → mailbox account, and `CleanmailTenant` → usability status.
//!
//! Reconciles are idempotent. Outcomes surface as the `Ready` condition (with `observedGeneration`)
//! written through the status subresource by server-side apply, and as Events on transitions. Errors
//! requeue with capped exponential backoff; a spec that cannot work waits for a change.

pub mod conditions;
mod group;
pub mod leader;
pub mod plan;
mod tenant;
mod user;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
        finalizer,
        reflector::{self, ObjectRef},
        watcher::{self, watcher},
    },
};

use crate::{
    backend::{BackendError, BackendRegistry},
    cache::{GroupStore, Indexed, ResourceStore, UserStore},
    crd::{CleanmailTenant, CleanmailUser},
    scope::{Partition, Scope},
    telemetry::Metrics,
    tenant::TenantRegistry,
};

/// The field manager of every status write the controller makes.
pub const FIELD_MANAGER: &str = "cleanmail-controller";
/// How soon a user blocked on something outside its own spec (its tenant) is looked at again.
const RECHECK: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mailbox backend: {0}")]
    Backend(#[source] BackendError),
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    // Boxed: finalizer::Error embeds this very type.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// A deletion that must wait (a protected user); retried with backoff and at its next change.
    #[error("{0}")]
    Held(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How many objects are reconciled at once.
    pub concurrency: u16,
    /// How often a healthy object is reconciled anyway, to repair drift in the backend.
    pub resync: Duration,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub tenants: TenantRegistry,
    pub backends: BackendRegistry,
    reporter: Reporter,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The user controller's cache, set when the controllers start.
    users: std::sync::OnceLock<kube::runtime::reflector::Store<CleanmailUser>>,
    metrics: Arc<Metrics>,
    /// The resync period, which also paces each tenant's orphan scan.
    resync: Duration,
    /// When each tenant's backend was last searched for orphaned accounts.
    orphan_scans: Mutex<HashMap<String, std::time::Instant>>,
}

impl Context {
    pub fn new(
        client: Client,
        tenants: TenantRegistry,
        backends: BackendRegistry,
        instance: String,
        metrics: Arc<Metrics>,
        resync: Duration,
    ) -> Self {
        let reporter = Reporter { controller: "cleanmail-operator".into(), instance: Some(instance) };
        Context {
            reporter,
            client,
            tenants,
            backends,
            failures: Mutex::default(),
            users: std::sync::OnceLock::new(),
            metrics,
            resync,
            orphan_scans: Mutex::default(),
        }
    }

    /// Publishes an Event about `object`. The reconcilers publish on changes of state only, never
    /// the same one twice in a row, so each Event is created afresh: kube's shared `Recorder`
    /// would keep every Event for six minutes to count repeats that never come, and scan all it
    /// keeps on each publish, which at thousands of users a minute costs more than the writes.
    async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, type_: EventType, reason: &str, note: String) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Whether the tenant in `namespace` is due an orphan scan (once per resync period); marks it done.
    fn orphan_scan_due(&self, namespace: &str) -> bool {
        let mut scans = self.orphan_scans.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match scans.get(namespace) {
            Some(last) if now.duration_since(*last) < self.resync => false,
            _ => {
                scans.insert(namespace.to_owned(), now);
                true
            }
        }
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// 1 s, 2 s, 4 s … capped at [`MAX_BACKOFF`].
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        Duration::from_secs(1u64 << (*count - 1).min(9)).min(MAX_BACKOFF)
    }
}

/// Writes `status` through the status subresource with server-side apply, as the controller's
/// field manager (which owns the whole status, so omitted fields are removed).
async fn apply_status<K>(ctx: &Context, object: &K, status: &impl serde::Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), object.meta().namespace.as_deref().unwrap_or_default());
    let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let name = object.meta().name.as_deref().unwrap_or_default();
    api.patch_status(name, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(&body))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

fn object_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

fn error_policy<K: Resource<DynamicType = ()>>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&object_key(object.as_ref()));
    tracing::warn!(%error, object = %object_key(object.as_ref()), ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// How long a group must stay unchanged before it is reconciled.
const GROUP_DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the controllers until `shutdown` resolves.
/// The caches the user and group controllers read, shared with the SCIM edge.
#[derive(Clone)]
pub struct Caches {
    pub users: UserStore,
    pub groups: GroupStore,
}

pub async fn run(
    ctx: Arc<Context>,
    partition: Partition,
    settings: Settings,
    caches: Caches,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    // A reconcile must not act on a half-listed cache (a group would lose the members not yet seen).
    let synced = async { futures::join!(caches.users.wait_until_ready(), caches.groups.wait_until_ready()) };
    if let futures::future::Either::Right(_) = futures::future::select(std::pin::pin!(synced), shutdown.clone()).await {
        return;
    }
    let config = controller::Config::default().concurrency(settings.concurrency);
    // Groups resolve their members through the same cache.
    let _ = ctx.users.set(caches.users.reader());
    let users = Controller::for_shared_stream(futures::stream::pending(), caches.users.reader())
        .reconcile_on(caches.users.changes(&partition, &|u| !user::settled(u)).map(|u| trigger(u.as_ref())))
        .reconcile_on(sweep(caches.users.clone(), partition.clone(), settings.resync, user::settled))
        .with_config(config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(|o, c| observed("CleanmailUser", user::reconcile(o, c.clone()), c), error_policy, ctx.clone())
        .for_each(log_outcome);
    // Entra changes a group's membership in bursts of PATCHes; each reconcile of a large group
    // costs the API server a whole-object write, so a burst is reconciled once, after it settles.
    let groups = Controller::for_shared_stream(futures::stream::pending(), caches.groups.reader())
        // Groups are few, so a new leader looks at every one at once.
        .reconcile_on(caches.groups.changes(&partition, &|_| true).map(|group| trigger(group.as_ref())))
        .reconcile_on(sweep(caches.groups.clone(), partition.clone(), settings.resync, group::settled))
        .with_config(config.clone().debounce(GROUP_DEBOUNCE))
        .graceful_shutdown_on(shutdown.clone())
        .run(group::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);
    let tenants = lean_controller::<CleanmailTenant>(&ctx.client, &partition)
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(tenant::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);
    futures::join!(users, groups, tenants);
}

/// The reconcile request for a changed `object`: its namespace and name, all a reconciler looks it
/// up by. kube's own trigger copies the uid and resourceVersion too, and while a large backlog
/// drains the scheduler holds a request per object, several times over: at 100,000 users those
/// copies alone cost about 10 MB.
fn trigger<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let (namespace, name) = (object.meta().namespace.as_deref(), object.meta().name.as_deref());
    let reference = ObjectRef::new(name.unwrap_or_default());
    match namespace {
        Some(namespace) => reference.within(namespace),
        None => reference,
    }
}

/// Every `settled` object of `partition` in `store`, over and over, each once per `period`: the
/// resync that repairs drift in the backend. Unsettled objects are left to their own retries and
/// backoff. A steady walk over the cache, a slice a second, rather than a timer per object: kube's
/// scheduler would otherwise hold a queued request for every user at all times (about 60 MB at
/// 100,000 users), and a new leader would queue them all at once.
fn sweep<K: Indexed>(
    store: ResourceStore<K>,
    partition: Partition,
    period: Duration,
    settled: fn(&K) -> bool,
) -> impl Stream<Item = ObjectRef<K>> {
    const TICK: Duration = Duration::from_secs(1);
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold((ticks, None), move |(mut ticks, cursor): (_, Option<ObjectRef<K>>)| {
        let (store, partition) = (store.clone(), partition.clone());
        async move {
            ticks.tick().await;
            let share = store.count(&partition) as f64 * TICK.as_secs_f64() / period.as_secs_f64();
            let slice_len = share.ceil().max(1.0) as usize;
            let slice = store.slice_after(&partition, cursor.as_ref(), slice_len);
            // A short slice ends the walk; the next one starts over.
            let next = if slice.len() < slice_len { None } else { slice.last().map(|o| trigger(o.as_ref())) };
            let due: Vec<_> = slice.iter().filter(|o| settled(o)).map(|o| trigger(o.as_ref())).collect();
            Some((futures::stream::iter(due), (ticks, next)))
        }
    })
    .flatten()
}

/// A controller over `K` in `partition` with a cache of its own, for kinds the SCIM edge does not
/// serve; the cache holds objects without `managedFields` or `kubectl apply`'s copy, which
/// reconciles never read.
fn lean_controller<K>(client: &Client, partition: &Partition) -> Controller<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let writer = reflector::store::Writer::<K>::default();
    let reader = writer.as_reader();
    let events =
        watcher(Scope::api::<K>(client, partition), watcher::Config::default().any_semantic()).modify(|object| {
            object.meta_mut().managed_fields = None;
            crate::scope::drop_last_applied(object.meta_mut());
        });
    Controller::for_stream(reflector::reflector(writer, events).applied_objects(), reader)
}

/// Runs one reconcile and records its result, duration and any backend error.
async fn observed(
    kind: &'static str,
    reconcile: impl Future<Output = Result<Action>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics.observe_reconcile(kind, result.is_ok(), started.elapsed());
    if let Some(error) = result.as_ref().err().and_then(backend_error) {
        ctx.metrics.count_backend_error(error.operation, error.is_transient());
    }
    result
}

fn backend_error(error: &Error) -> Option<&BackendError> {
    match error {
        Error::Backend(error) => Some(error),
        Error::Finalizer(boxed) => match boxed.as_ref() {
            finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => backend_error(inner),
            _ => None,
        },
        Error::Kube(_) | Error::Held(_) => None,
    }
}

async fn log_outcome<K, E: std::fmt::Display, W: std::fmt::Display>(
    outcome: std::result::Result<(kube::runtime::reflector::ObjectRef<K>, Action), controller::Error<E, W>>,
) where
    K: Resource,
    K::DynamicType: std::fmt::Debug + Eq + std::hash::Hash + Clone,
{
    match outcome {
        Ok((object, _)) => tracing::debug!(%object, "reconciled"),
        Err(controller::Error::ReconcilerFailed(error, object)) => tracing::debug!(%error, %object, "reconcile failed"),
        Err(error) => tracing::warn!(%error, "controller error"),
    }
}

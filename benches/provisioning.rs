//! Provisioning end to end and the operator at scale, against the API server's own create
//! throughput measured in the same run.
//!
//! - **Ceiling**: `CleanmailUser` creates sent straight to the API server (no operator running).
//! - **End to end**, for SQLite and PostgreSQL mailboxes: users POSTed as Entra posts them until
//!   every one is `Ready=True` with an enabled mailbox row, then every user disabled with Entra's
//!   PATCH until every mailbox is disabled.
//! - **Tuning**: how fast the controllers alone provision users already present, at several reconcile
//!   concurrencies and with an API QPS limit.
//! - **Scale**: with 10,000 and 100,000 `CleanmailUser` resources present, how long a replica takes
//!   to become ready (caches synced, SCIM answering) and its peak memory, for a SCIM-only replica
//!   and for the leader while it starts provisioning.
//!
//! `just bench` measures and writes its section of `docs/benchmarks.md` (`BENCH_ONLY` naming some
//! of [`PARTS`] runs those and writes nothing); under `cargo test` the same code runs on a few users.

use crate::{common, support};
use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use cleanmail_operator::{
    backend::{MailboxBackend, sql::SqlBackend},
    crd::CleanmailUser,
    scim::resource::FIELD_MANAGER,
};
use common::{Outcome, Request, Sample, Until, verdict};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use reqwest::Method;
use serde_json::json;
use support::{cluster, mailstack::Postgres, process, scim::entra_user};

/// The parts `BENCH_ONLY` can name.
pub const PARTS: [&str; 3] = ["e2e", "tuning", "scale"];

const DOMAIN: &str = "provision.ch";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// How long the controllers may take to converge before the run fails.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(1_200);

struct Settings {
    measuring: bool,
    /// Users provisioned end to end on each backend.
    users: usize,
    /// How many users are present in each scale step.
    scale: Vec<usize>,
    /// How long the leader is watched provisioning at each scale step.
    window: Duration,
    /// Whether the scale steps' users carry a `Ready` status, as provisioned users do.
    scale_with_status: bool,
    /// Users present for each setting of the controllers' knobs.
    tuning_users: usize,
    concurrency: usize,
}

impl Settings {
    /// What the scale steps' users look like (`BENCH_SCALE_WITH_STATUS=1` for provisioned ones).
    fn scale_shape(&self) -> &'static str {
        if self.scale_with_status {
            "as SCIM stores them, each with a Ready status, as provisioned"
        } else {
            "as SCIM stores them, no status yet"
        }
    }
}

fn settings() -> Settings {
    let measuring = common::measuring();
    let scale =
        std::env::var("BENCH_SCALE_USERS").unwrap_or_else(|_| (if measuring { "10000,100000" } else { "40" }).into());
    Settings {
        measuring,
        users: common::env_or("BENCH_PROVISION_USERS", if measuring { 10_000 } else { 30 }),
        scale: scale.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        window: Duration::from_secs_f64(common::env_or(
            "BENCH_SCALE_WINDOW_SECONDS",
            if measuring { 5.0 } else { 1.0 },
        )),
        scale_with_status: std::env::var("BENCH_SCALE_WITH_STATUS").is_ok_and(|v| v == "1"),
        tuning_users: common::env_or("BENCH_TUNING_USERS", if measuring { 1_000 } else { 20 }),
        concurrency: 16,
    }
}

fn user_name(n: usize) -> String {
    format!("user{n:06}@{DOMAIN}")
}

fn object_name(n: usize) -> String {
    format!("user{n:06}")
}

// === The API server alone ===

/// `count` creates straight to the API server in `namespace`, numbered from `first`, of the
/// objects SCIM stores for the users Entra POSTs in the end-to-end part.
async fn raw_creates(
    client: &kube::Client,
    namespace: &str,
    (first, count): (usize, usize),
    concurrency: usize,
) -> Outcome {
    let api: Api<CleanmailUser> = Api::namespaced(client.clone(), namespace);
    common::run_workers(concurrency, Until::Count(count), move |n| {
        let api = api.clone();
        async move {
            let n = first + n;
            let user = common::stored_user(&object_name(n), &entra_user(&user_name(n), &format!("ext-{n:06}")));
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            let result = api.create(&params, &user).await.map(|_| None).map_err(|e| e.to_string());
            Sample { n, result }
        }
    })
    .await
}

/// A status as the controller writes it for a provisioned user, `n` making each one different.
fn ready_status(n: usize) -> serde_json::Value {
    json!({
        "observedGeneration": 1, "state": "Enabled",
        "conditions": [{"type": "Ready", "status": "True", "reason": "MailboxReady", "observedGeneration": 1,
            "message": format!("mailbox {} is enabled", user_name(n)),
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}],
        "mailbox": {"accountId": format!("{n:036}"), "address": user_name(n), "enabled": true},
        "effective": {"active": true, "deletionPolicy": "Delete"},
    })
}

/// What the API server alone does per user, with no operator running: creates, then the status
/// write every provisioned user needs, as a server-side apply (as the controller writes it) and
/// as a merge patch. The users stay: every replica started later watches only its own namespace.
async fn ceiling(client: &kube::Client, settings: &Settings) -> Ceiling {
    let (namespace, _) = cluster::tenant(client, "raw", &[DOMAIN], "Delete").await;
    let api: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let create =
        with_control_plane_cpu(raw_creates(client, &namespace, (0, settings.users), settings.concurrency)).await;
    // On half the users: the rate is steady long before, and each half-run saves `just bench` 10 s.
    let status_writes = |apply| raw_status_writes(&api, 0, settings.users / 2, settings.concurrency, apply);
    let apply_status = with_control_plane_cpu(status_writes(true)).await;
    let merge_status = with_control_plane_cpu(status_writes(false)).await;
    Ceiling { create, apply_status, merge_status }
}

/// Runs `writes` and records the API server's and etcd's CPU over it; any failed write fails the run.
async fn with_control_plane_cpu(writes: impl Future<Output = Outcome>) -> Outcome {
    let pids = common::control_plane_pids();
    let before = common::cpu_of(&pids);
    let mut outcome = writes.await;
    outcome.helper_cpu = common::cpu_of(&pids).saturating_sub(before);
    assert_eq!(outcome.errors, 0, "raw writes failed: {:?}", outcome.first_error);
    outcome
}

/// A `Ready` status written to `count` users of `api` numbered from `first`: a server-side apply
/// as the controller writes it, or else a merge patch (of a different status, so that it changes
/// something).
async fn raw_status_writes(
    api: &Api<CleanmailUser>,
    first: usize,
    count: usize,
    concurrency: usize,
    apply: bool,
) -> Outcome {
    let api = api.clone();
    common::run_workers(concurrency, Until::Count(count), move |n| {
        let api = api.clone();
        async move {
            let n = first + n;
            let (params, body) = if apply {
                let body =
                    json!({"apiVersion": "cleanmail.ch/v1alpha1", "kind": "CleanmailUser", "status": ready_status(n)});
                (PatchParams::apply("bench").force(), Patch::Apply(body))
            } else {
                let params = PatchParams { field_manager: Some("bench".into()), ..Default::default() };
                (params, Patch::Merge(json!({"status": ready_status(n + 1)})))
            };
            let result = api.patch_status(&object_name(n), &params, &body).await.map(|_| None);
            Sample { n, result: result.map_err(|e| e.to_string()) }
        }
    })
    .await
}

/// The API server's own rates for the writes provisioning makes.
#[derive(Default)]
struct Ceiling {
    create: Outcome,
    apply_status: Outcome,
    merge_status: Outcome,
}

impl Ceiling {
    /// Users per second the API server could take if each needed one create and one status
    /// apply and nothing else ran: the most any controller writing a status can reach.
    fn create_and_status(&self) -> f64 {
        let cost =
            1.0 / self.create.per_second().max(f64::EPSILON) + 1.0 / self.apply_status.per_second().max(f64::EPSILON);
        1.0 / cost
    }
}

// === End to end ===

/// Where a tenant's mailboxes live.
enum Mailboxes {
    Sqlite,
    Postgres(Postgres),
}

impl Mailboxes {
    fn name(&self) -> &'static str {
        match self {
            Mailboxes::Sqlite => "SQLite",
            Mailboxes::Postgres(_) => "PostgreSQL",
        }
    }
}

/// What provisioning and then disabling every user cost on one backend.
struct EndToEnd {
    backend: &'static str,
    posted: Outcome,
    /// From the first POST until every user is Ready with an enabled mailbox.
    to_ready: Duration,
    patched: Outcome,
    /// From the first disabling PATCH until every mailbox is disabled.
    to_disabled: Duration,
    /// CPU of the operator, and of the API server and etcd, while provisioning and while disabling.
    operator_cpu: [Duration; 2],
    control_plane_cpu: [Duration; 2],
    peak_rss_mib: f64,
    /// API server requests per user while provisioning, and while disabling, by verb and resource.
    provision_requests: Vec<(String, f64)>,
    disable_requests: Vec<(String, f64)>,
}

/// A leader replica watching only its own tenant's namespace, so the phases do not see each other.
async fn leader(
    client: &kube::Client,
    name: &str,
    mailboxes: &Mailboxes,
) -> (process::Replica, String, String, String) {
    let backend_url = match mailboxes {
        Mailboxes::Sqlite => common::replica_mailboxes(name),
        Mailboxes::Postgres(pg) => pg.url.clone(),
    };
    let tenant_backend = matches!(mailboxes, Mailboxes::Postgres(_)).then_some(backend_url.as_str());
    let (namespace, token) = cluster::tenant_with_backend(client, name, &[DOMAIN], "Delete", tenant_backend).await;
    let replica = common::start_replica(name, &namespace, &[]);
    replica.wait_until_ready(Duration::from_secs(120)).await;
    support::scim::Scim::new(&replica.scim_url, &token).wait_until_usable().await;
    (replica, namespace, token, backend_url)
}

async fn end_to_end(client: &kube::Client, settings: &Settings, mailboxes: Mailboxes) -> EndToEnd {
    let name = format!("e2e-{}", mailboxes.name().to_lowercase());
    let (replica, namespace, token, backend_url) = leader(client, &name, &mailboxes).await;
    let pids = common::control_plane_pids();
    let operator = replica.child.id();
    let cpu = || (common::cpu_time(operator), common::cpu_of(&pids));
    let users = settings.users;

    common::progress(format_args!("provisioning, {name}: POSTing {users} users until all are Ready"));
    let requests_before = common::api_requests();
    let cpu_before = cpu();
    let started = Instant::now();
    let mut posted = common::scim_load(&replica.scim_url, &token, settings.concurrency, Until::Count(users), |n| {
        let body = entra_user(&user_name(n), &format!("ext-{n:06}"));
        Request { capture: true, ..Request::new(Method::POST, "/Users".into(), Some(body), &[201]) }
    })
    .await;
    assert_eq!(posted.errors, 0, "{name}: POST failed: {:?}", posted.first_error);
    converge(client, &replica, &namespace, &backend_url, "Enabled").await;
    let to_ready = started.elapsed();
    let requests_ready = common::api_requests();
    let cpu_ready = cpu();

    common::progress(format_args!("provisioning, {name}: disabling {users} users until all are Disabled"));
    let ids = Arc::new(posted.take_ids(users));
    let started = Instant::now();
    let patched = common::scim_load(&replica.scim_url, &token, settings.concurrency, Until::Count(users), move |n| {
        // Entra's disable: a Replace of `active`.
        let body = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": false}]});
        Request::new(Method::PATCH, format!("/Users/{}", ids[n]), Some(body), &[200, 204])
    })
    .await;
    assert_eq!(patched.errors, 0, "{name}: PATCH failed: {:?}", patched.first_error);
    converge(client, &replica, &namespace, &backend_url, "Disabled").await;
    let to_disabled = started.elapsed();
    let requests_disabled = common::api_requests();
    let cpu_disabled = cpu();

    EndToEnd {
        backend: mailboxes.name(),
        posted,
        to_ready,
        patched,
        to_disabled,
        operator_cpu: [cpu_ready.0 - cpu_before.0, cpu_disabled.0 - cpu_ready.0],
        control_plane_cpu: [cpu_ready.1 - cpu_before.1, cpu_disabled.1 - cpu_ready.1],
        peak_rss_mib: common::peak_rss_mib(operator),
        provision_requests: common::requests_per(&requests_before, &requests_ready, users),
        disable_requests: common::requests_per(&requests_ready, &requests_disabled, users),
    }
}

/// Waits until the replica reports no backlog and then checks, once, what converged means: every
/// user reports `state` with `Ready=True` for its current generation, and the mailbox rows agree.
/// Polling the replica's metric keeps the check itself from loading the API server.
async fn converge(client: &kube::Client, replica: &process::Replica, namespace: &str, backend_url: &str, state: &str) {
    let http = reqwest::Client::new();
    let api: Api<CleanmailUser> = Api::namespaced(client.clone(), namespace);
    cluster::eventually(&format!("every user {state}"), CONVERGE_TIMEOUT, || async {
        if common::backlog(&http, &replica.metrics_url, "CleanmailUser").await? != 0 {
            return None;
        }
        let users = api.list(&ListParams::default()).await.ok()?;
        let converged = users.items.iter().all(|user| {
            let Some(status) = &user.status else { return false };
            let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            ready && status.state.as_deref() == Some(state) && status.observed_generation == user.metadata.generation
        });
        converged.then_some(())
    })
    .await;
    let backend = SqlBackend::connect(backend_url).await.expect("open the mailbox database");
    let accounts = backend.accounts_in(&[DOMAIN.to_owned()]).await.expect("list mailboxes");
    let users = api.list(&ListParams::default()).await.expect("list users").items.len();
    let expected_enabled = state == "Enabled";
    assert_eq!(accounts.len(), users, "a mailbox row per user");
    assert!(accounts.iter().all(|a| a.enabled == expected_enabled), "every mailbox {state}");
}

// === Tuning ===

/// The settings of `--controller-concurrency` and `--api-qps` (0: no limit) compared, the default
/// (16, no limit) among them.
const TUNINGS: [(u16, u32); 6] = [(1, 0), (4, 0), (8, 0), (16, 0), (32, 0), (16, 200)];

/// How fast the controllers alone provisioned users already present, with one setting.
struct Tuning {
    concurrency: u16,
    api_qps: u32,
    users: usize,
    /// From starting the replica until every user is Ready with a mailbox row.
    to_ready: Duration,
    operator_cpu: Duration,
    control_plane_cpu: Duration,
}

async fn tuning(client: &kube::Client, settings: &Settings) -> Vec<Tuning> {
    let mut tunings = Vec::new();
    for (concurrency, api_qps) in TUNINGS {
        let name = format!("tune-c{concurrency}-q{api_qps}");
        common::progress(format_args!("provisioning, {name}: {} users", settings.tuning_users));
        let (namespace, _token) = cluster::tenant(client, &name, &[DOMAIN], "Delete").await;
        let fill = raw_creates(client, &namespace, (0, settings.tuning_users), settings.concurrency).await;
        assert_eq!(fill.errors, 0, "{name}: creating the users failed: {:?}", fill.first_error);
        let env =
            [("CLEANMAIL_CONTROLLER_CONCURRENCY", concurrency.to_string()), ("CLEANMAIL_API_QPS", api_qps.to_string())];
        let pids = common::control_plane_pids();
        let control_plane_before = common::cpu_of(&pids);
        // Timed from the start: the controllers begin the moment the caches are synced, before
        // any poll of readiness could notice.
        let started = Instant::now();
        let replica = common::start_replica(&name, &namespace, &env);
        converge(client, &replica, &namespace, &common::replica_mailboxes(&name), "Enabled").await;
        tunings.push(Tuning {
            concurrency,
            api_qps,
            users: settings.tuning_users,
            to_ready: started.elapsed(),
            operator_cpu: common::cpu_time(replica.child.id()),
            control_plane_cpu: common::cpu_of(&pids) - control_plane_before,
        });
    }
    tunings
}

// === Scale ===

/// How one replica started with a number of users present.
struct Start {
    users: usize,
    replica: &'static str,
    /// From starting the process until `/readyz` answers 200 (caches synced).
    to_ready: Duration,
    /// From starting the process until a filtered GET finds the most recently created user.
    to_serving: Duration,
    peak_rss_mib: f64,
    /// For the leader: how many mailboxes it created in the window after SCIM answered.
    provisioned: Option<usize>,
}

/// Users created in a scale step and how fast, then how many were present and how long the API
/// server alone took to page through them.
type Fill = (usize, Outcome, usize, Duration);

async fn scale(client: &kube::Client, settings: &Settings) -> (Vec<Start>, Vec<Fill>) {
    let (namespace, token) = cluster::tenant(client, "scale", &[DOMAIN], "Delete").await;
    let (mut starts, mut fills) = (Vec::new(), Vec::new());
    let mut present = 0;
    for &users in &settings.scale {
        let added = users - present.min(users);
        common::progress(format_args!("provisioning, scale: creating {added} users, {users} in all"));
        let fill = raw_creates(client, &namespace, (present, added), settings.concurrency).await;
        assert_eq!(fill.errors, 0, "creating the users failed: {:?}", fill.first_error);
        if settings.scale_with_status {
            let api = Api::namespaced(client.clone(), &namespace);
            let status = raw_status_writes(&api, present, added, settings.concurrency, true).await;
            assert_eq!(status.errors, 0, "writing the users' status failed: {:?}", status.first_error);
        }
        common::progress(format_args!("provisioning, scale: the API server alone lists {users} users"));
        let listed = raw_list(client, &namespace).await;
        fills.push((added, fill, present.max(users), listed));
        present = present.max(users);
        for leads in [false, true] {
            starts.push(start(client, settings, &namespace, &token, present, leads).await);
        }
    }
    (starts, fills)
}

/// How long the API server alone takes to page through every user of `namespace`, 500 a page as a
/// replica's watch lists them: the floor under a replica's time to ready. Only each page's
/// continue token is decoded.
async fn raw_list(client: &kube::Client, namespace: &str) -> Duration {
    #[derive(serde::Deserialize)]
    struct Page {
        metadata: ListMeta,
    }
    let url = Api::<CleanmailUser>::namespaced(client.clone(), namespace).resource_url().to_owned();
    let started = Instant::now();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(&url).list(&params).expect("a list request");
        let page: Page = client.request(request).await.expect("a page of users");
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return started.elapsed();
        }
    }
}

async fn start(
    client: &kube::Client,
    settings: &Settings,
    namespace: &str,
    token: &str,
    users: usize,
    leads: bool,
) -> Start {
    let name = format!("scale-{users}-{}", if leads { "leader" } else { "edge" });
    common::progress(format_args!("provisioning, {name}: starting with {users} users present"));
    if !leads {
        common::hold_lease(client, &name).await;
    }
    let started = Instant::now();
    let replica = common::start_replica(&name, namespace, &[]);
    cluster::eventually(&format!("{name} ready"), Duration::from_secs(600), || replica.ready()).await;
    let to_ready = started.elapsed();
    let scim = support::scim::Scim::new(&replica.scim_url, token);
    let last = user_name(users - 1).replace('@', "%40");
    cluster::eventually(&format!("{name} answers"), Duration::from_secs(120), || async {
        let reply = scim.get(&format!("/Users?filter=userName%20eq%20%22{last}%22")).await;
        (reply.body["totalResults"] == 1).then_some(())
    })
    .await;
    let to_serving = started.elapsed();
    let provisioned = if leads {
        let backend = SqlBackend::connect(&common::replica_mailboxes(&name)).await.expect("open mailboxes");
        let mailboxes = || async { backend.accounts_in(&[DOMAIN.to_owned()]).await.expect("list mailboxes").len() };
        let before = mailboxes().await;
        tokio::time::sleep(settings.window).await;
        Some(mailboxes().await - before)
    } else {
        None
    };
    Start {
        users,
        replica: if leads { "leader (provisioning)" } else { "SCIM only" },
        to_ready,
        to_serving,
        peak_rss_mib: common::peak_rss_mib(replica.child.id()),
        provisioned,
    }
}

// === Report ===

struct Run {
    ceiling: Ceiling,
    end_to_end: Vec<EndToEnd>,
    tunings: Vec<Tuning>,
    starts: Vec<Start>,
    fills: Vec<Fill>,
}

impl Run {
    fn tuning_table(&self) -> String {
        let mut out = String::from(
            "| reconcile concurrency | API QPS limit | users | all Ready after s | users Ready /s | operator CPU \
             µs/user | API server + etcd CPU µs/user |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for t in &self.tunings {
            let users = t.users.max(1) as f64;
            let limit = if t.api_qps == 0 { "none".to_owned() } else { t.api_qps.to_string() };
            let _ = writeln!(
                out,
                "| {} | {limit} | {} | {:.1} | {:.0} | {:.0} | {:.0} |",
                t.concurrency,
                t.users,
                t.to_ready.as_secs_f64(),
                users / t.to_ready.as_secs_f64().max(f64::EPSILON),
                t.operator_cpu.as_secs_f64() * 1e6 / users,
                t.control_plane_cpu.as_secs_f64() * 1e6 / users,
            );
        }
        out
    }

    fn end_to_end_table(&self) -> String {
        let raw = self.ceiling.create.per_second().max(f64::EPSILON);
        let mut out = String::from(
            "| backend | users | SCIM POST /s | all Ready after s | users Ready /s | / API server creates | \
             SCIM disables /s | all disabled after s | disabled /s | operator CPU µs/user | API server + etcd CPU \
             µs/user | peak RSS MiB |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for e in &self.end_to_end {
            let users = e.posted.requests.max(1) as f64;
            // Provisioning, then disabling.
            let per_user = |cpu: &[Duration; 2]| {
                format!("{:.0} / {:.0}", cpu[0].as_secs_f64() * 1e6 / users, cpu[1].as_secs_f64() * 1e6 / users)
            };
            let ready_rate = users / e.to_ready.as_secs_f64().max(f64::EPSILON);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.1} | {ready_rate:.0} | {:.2} | {:.0} | {:.1} | {:.0} | {} | {} | {:.1} |",
                e.backend,
                e.posted.requests,
                e.posted.per_second(),
                e.to_ready.as_secs_f64(),
                ready_rate / raw,
                e.patched.per_second(),
                e.to_disabled.as_secs_f64(),
                users / e.to_disabled.as_secs_f64().max(f64::EPSILON),
                per_user(&e.operator_cpu),
                per_user(&e.control_plane_cpu),
                e.peak_rss_mib,
            );
        }
        for e in &self.end_to_end {
            let list = |requests: &[(String, f64)]| {
                requests.iter().map(|(what, per)| format!("{what} {per:.2}")).collect::<Vec<_>>().join(", ")
            };
            let _ = write!(
                out,
                "\nAPI server requests per user on {}: provisioning: {}; disabling: {}.\n",
                e.backend,
                list(&e.provision_requests),
                list(&e.disable_requests)
            );
        }
        out
    }

    fn ceiling_table(&self) -> String {
        let mut out = String::from(
            "| API server alone, concurrency 16 | requests | requests/s | p50 ms | p99 ms | API server + etcd CPU µs/request |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for (what, o) in [
            ("create `CleanmailUser`", &self.ceiling.create),
            ("status, server-side apply", &self.ceiling.apply_status),
            ("status, merge patch", &self.ceiling.merge_status),
        ] {
            let _ = writeln!(
                out,
                "| {what} | {} | {:.0} | {:.1} | {:.1} | {:.0} |",
                o.requests,
                o.per_second(),
                o.percentile(0.5).as_secs_f64() * 1e3,
                o.percentile(0.99).as_secs_f64() * 1e3,
                o.helper_cpu.as_secs_f64() * 1e6 / o.requests.max(1) as f64,
            );
        }
        let _ = writeln!(
            out,
            "\nOne create and one status apply per user, and nothing else on the machine, would allow at most \
             {:.0} users/s, {:.0}% of the create rate.",
            self.ceiling.create_and_status(),
            self.ceiling.create_and_status() / self.ceiling.create.per_second().max(f64::EPSILON) * 100.0
        );
        out
    }

    fn scale_table(&self) -> String {
        let mut out = String::from(
            "| users present | replica | ready after s | SCIM answers after s | peak RSS MiB | mailboxes created in the window |\n\
             | ---: | --- | ---: | ---: | ---: | ---: |\n",
        );
        for s in &self.starts {
            let provisioned = s.provisioned.map_or("—".to_owned(), |p| p.to_string());
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {provisioned} |",
                s.users,
                s.replica,
                s.to_ready.as_secs_f64(),
                s.to_serving.as_secs_f64(),
                s.peak_rss_mib
            );
        }
        for (created, fill, present, listed) in &self.fills {
            let _ = writeln!(
                out,
                "\nFilling: {created} creates at {:.0}/s. The API server alone pages through all {present} users, 500 a \
                 page as a replica lists them, in {:.1} s.",
                fill.per_second(),
                listed.as_secs_f64()
            );
        }
        out
    }

    fn goals(&self, settings: &Settings) -> String {
        let raw = self.ceiling.create.per_second().max(f64::EPSILON);
        let mut lines = Vec::new();
        if let Some(e) = self.end_to_end.iter().find(|e| e.backend == "SQLite") {
            let ratio = e.posted.requests as f64 / e.to_ready.as_secs_f64().max(f64::EPSILON) / raw;
            lines.push(format!(
                "- {} users to Ready ≥ 50% of the API server's create throughput (SQLite): {:.0}% — {}",
                e.posted.requests,
                ratio * 100.0,
                verdict(ratio >= 0.5)
            ));
        }
        if let Some(largest) = self.starts.iter().map(|s| s.users).max() {
            let at_largest = self.starts.iter().filter(|s| s.users == largest);
            let rss = at_largest.clone().map(|s| s.peak_rss_mib).fold(0.0, f64::max);
            let ready = at_largest.map(|s| s.to_serving).max().unwrap_or_default();
            let shape = settings.scale_shape();
            lines.push(format!(
                "- Peak RSS ≤ 300 MiB with {largest} users ({shape}): {rss:.1} MiB — {}",
                verdict(rss <= 300.0)
            ));
            let listed = self.fills.iter().find(|f| f.2 == largest).map_or(0.0, |f| f.3.as_secs_f64());
            lines.push(format!(
                "- Ready (caches synced, SCIM answering) ≤ 30 s with {largest} users ({shape}): {:.1} s — {} (the API \
                 server alone pages through them in {listed:.1} s)",
                ready.as_secs_f64(),
                verdict(ready <= Duration::from_secs(30))
            ));
        }
        lines.join("\n")
    }
}

fn write_report(settings: &Settings, run: &Run) {
    let text = format!(
        "## Provisioning end to end and scale\n\nWritten by `just bench`.\n\n\
         - Machine: {}, shared with the load generator, the API server and etcd (and PostgreSQL).\n\
         - Load: {} users POSTed as Entra posts them at concurrency {}, until every one is `Ready=True` with an \
         enabled mailbox row; then all disabled with Entra's PATCH (`Replace active false`) until every mailbox row \
         is disabled. One leader replica per backend, watching only its tenant's namespace.\n\
         - Users created straight through the API server (the API server alone, tuning, scale) are the objects SCIM \
         stores for those POSTs: spec, label and finalizer.\n\
         - Tuning: for each setting of `--controller-concurrency` and `--api-qps`, {} users created straight \
         through the API server, then a leader started with that setting, timed from its start until every \
         user is Ready with a mailbox row (SQLite).\n\
         - Scale: users created straight through the API server ({}), then a replica started: SCIM only (its Lease \
         held elsewhere), then the leader, which is watched provisioning the users for {:?}.\n\n\
         ### End to end\n\n{}\n{}\n### Tuning the controllers\n\n{}\n### Scale\n\n{}\n### Goals\n\n{}\n",
        common::machine(),
        settings.users,
        settings.concurrency,
        settings.tuning_users,
        settings.scale_shape(),
        settings.window,
        run.ceiling_table(),
        run.end_to_end_table(),
        run.tuning_table(),
        run.scale_table(),
        run.goals(settings),
    );
    common::write_section("provisioning", &text);
}

async fn run(settings: &Settings) -> Run {
    let client = cluster::client().await;
    let mut run = Run {
        ceiling: Ceiling::default(),
        end_to_end: Vec::new(),
        tunings: Vec::new(),
        starts: Vec::new(),
        fills: Vec::new(),
    };
    if common::selected("e2e") {
        common::progress("provisioning: the API server alone");
        run.ceiling = ceiling(&client, settings).await;
        run.end_to_end.push(end_to_end(&client, settings, Mailboxes::Sqlite).await);
        run.end_to_end.push(end_to_end(&client, settings, Mailboxes::Postgres(Postgres::start())).await);
    }
    if common::selected("tuning") {
        common::progress("provisioning: tuning");
        run.tunings = tuning(&client, settings).await;
    }
    if common::selected("scale") {
        (run.starts, run.fills) = scale(&client, settings).await;
    }
    run
}

/// Runs this part: measures under `cargo bench`, else the smoke run.
pub fn bench() {
    let settings = settings();
    common::progress("provisioning: starting the control plane");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let run = runtime.block_on(run(&settings));
    println!(
        "{}\n{}\n{}\n{}\n{}",
        run.ceiling_table(),
        run.end_to_end_table(),
        run.tuning_table(),
        run.scale_table(),
        run.goals(&settings)
    );
    // The section is whole only when every part ran.
    if settings.measuring && PARTS.iter().all(|part| common::selected(part)) {
        write_report(&settings, &run);
    }
}

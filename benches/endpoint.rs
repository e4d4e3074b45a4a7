//! The SCIM endpoint under load, against peer SCIM servers and against the API server's own
//! ceiling, all measured in one run on one machine so that only ratios are reported.
//!
//! - **Peers**: `scim2-server` (PyPI) and `scimmy` + `scimmy-routers` (npm), installed by
//!   `tools/bench/install-peers.sh` and started by `tools/bench/run-peer.sh`. Every server gets the
//!   same users through SCIM and the same requests from the same load generator (this file): filtered
//!   GETs, GET by id, a paged list, POST, Entra's PATCH and DELETE; requests/s, p50/p99, errors,
//!   server CPU per request and peak RSS.
//! - **API server ceiling**: `CleanmailUser` creates and merge patches sent straight to the API
//!   server with the SCIM writes' concurrency, against SCIM POST and PATCH end to end.
//!
//! `just bench` (`BENCH_ONLY=endpoint` for this part alone) measures and writes its section of
//! `docs/benchmarks.md`; under `cargo test` the same code runs on a few users for a moment so the
//! benchmark cannot rot.

use crate::{common, support};
use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use cleanmail_operator::crd::CleanmailUser;
use common::{Outcome, Request, Sample, Until, cpu_time, peak_rss_mib, run_workers, verdict};
use kube::api::{Patch, PatchParams, PostParams};
use reqwest::Method;
use serde_json::{Value, json};
use support::{cluster, process};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const DOMAIN: &str = "bench.ch";
/// The scenario name of Entra's PATCH.
const PATCH: &str = "PATCH displayName (Entra)";

struct Settings {
    measuring: bool,
    /// Users seeded into every server.
    users: usize,
    /// How long each timed scenario runs.
    duration: Duration,
    read_concurrency: usize,
    write_concurrency: usize,
}

fn settings() -> Settings {
    let measuring = common::measuring();
    Settings {
        measuring,
        users: common::env_or("BENCH_USERS", if measuring { 2_000 } else { 40 }),
        duration: Duration::from_secs_f64(common::env_or("BENCH_SECONDS", if measuring { 5.0 } else { 0.5 })),
        read_concurrency: 32,
        write_concurrency: 16,
    }
}

/// A SCIM server under load: where it answers, and the processes whose CPU and memory it costs.
struct Target {
    name: String,
    base: String,
    token: String,
    /// The server process itself.
    pid: u32,
    /// Processes it depends on, reported beside it (the API server and etcd for the operator).
    helpers: Vec<u32>,
    /// Where the operator reports its reconcile backlog; peers have none.
    metrics_url: Option<String>,
    _process: ServerProcess,
}

/// Whatever keeps a server running; dropping it stops the server.
enum ServerProcess {
    Operator(#[allow(dead_code)] process::Replica),
    Peer(Child),
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let ServerProcess::Peer(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SCIM requests against `target`, with its CPU time over the run.
async fn drive(
    target: &Target,
    concurrency: usize,
    until: Until,
    request: impl Fn(usize) -> Request + Send + Sync + 'static,
) -> Outcome {
    let cpu_before = cpu_time(target.pid);
    let helpers_before = common::cpu_of(&target.helpers);
    let mut outcome = common::scim_load(&target.base, &target.token, concurrency, until, request).await;
    outcome.cpu = cpu_time(target.pid).saturating_sub(cpu_before);
    outcome.helper_cpu = common::cpu_of(&target.helpers).saturating_sub(helpers_before);
    outcome
}

fn user_name(n: usize) -> String {
    format!("user{n:06}@{DOMAIN}")
}

fn new_user(n: usize) -> Value {
    json!({
        "schemas": [USER_SCHEMA], "userName": user_name(n), "externalId": format!("user{n:06}"), "active": true,
        "displayName": format!("User {n:06}"), "name": {"givenName": "User", "familyName": format!("{n:06}")},
        "emails": [{"primary": true, "type": "work", "value": user_name(n)}],
    })
}

/// A well-spread pseudo-random index below `n`, so reads do not walk the users in order.
fn spread(sequence: usize, n: usize) -> usize {
    sequence.wrapping_mul(2_654_435_761) % n.max(1)
}

/// POSTs `count` users; the ids the server gave them, by user number.
async fn seed(target: &Target, count: usize, concurrency: usize) -> (Outcome, Vec<String>) {
    let mut outcome = drive(target, concurrency, Until::Count(count), |n| Request {
        capture: true,
        ..Request::new(Method::POST, "/Users".into(), Some(new_user(n)), &[201])
    })
    .await;
    let ids = outcome.take_ids(count);
    assert!(
        ids.iter().all(|id| !id.is_empty()),
        "{}: every seeded user has an id ({:?})",
        target.name,
        outcome.first_error
    );
    (outcome, ids)
}

/// The scenarios every server runs, in order, with the user ids from seeding.
fn scenarios_of(settings: &Settings, ids: &Arc<Vec<String>>) -> Vec<(&'static str, usize, Until, RequestFn)> {
    let users = settings.users;
    let timed = Until::Elapsed(settings.duration);
    let (reads, writes) = (settings.read_concurrency, settings.write_concurrency);
    let by_id = ids.clone();
    let patched = ids.clone();
    vec![
        (
            "GET filter userName eq",
            reads,
            timed,
            Box::new(move |n| {
                let filter = format!("userName%20eq%20%22{}%22", user_name(spread(n, users)).replace('@', "%40"));
                Request::new(Method::GET, format!("/Users?filter={filter}"), None, &[200])
            }),
        ),
        (
            "GET filter externalId eq",
            reads,
            timed,
            Box::new(move |n| {
                let filter = format!("externalId%20eq%20%22user{:06}%22", spread(n, users));
                Request::new(Method::GET, format!("/Users?filter={filter}"), None, &[200])
            }),
        ),
        (
            "GET by id",
            reads,
            timed,
            Box::new(move |n| Request::new(Method::GET, format!("/Users/{}", by_id[spread(n, users)]), None, &[200])),
        ),
        (
            "GET page of 100",
            reads,
            timed,
            Box::new(move |n| {
                let start = spread(n, users.div_ceil(100)) * 100 + 1;
                Request::new(Method::GET, format!("/Users?startIndex={start}&count=100"), None, &[200])
            }),
        ),
        (
            PATCH,
            writes,
            timed,
            // Every PATCH changes the user (a PATCH that changes nothing costs no write). Users are
            // taken in turn, so that concurrent PATCHes rarely meet on one user: that contention
            // (answered with 409 after a few attempts) is not what is measured here.
            Box::new(move |n| {
                let body = json!({"schemas": [PATCH_OP], "Operations": [
                    {"op": "Replace", "path": "displayName", "value": format!("User {n}")}]});
                Request::new(Method::PATCH, format!("/Users/{}", patched[n % users.max(1)]), Some(body), &[200, 204])
            }),
        ),
    ]
}

type RequestFn = Box<dyn Fn(usize) -> Request + Send + Sync>;

/// Seeds the users, runs every scenario, then deletes the users: one row of results per scenario.
async fn measure(settings: &Settings, target: &Target) -> Vec<(&'static str, Outcome)> {
    common::progress(format_args!("endpoint, {}: seeding {} users", target.name, settings.users));
    let (posted, ids) = seed(target, settings.users, settings.write_concurrency).await;
    settle(target).await;
    let ids = Arc::new(ids);
    let mut results = vec![("POST", posted)];
    for (name, concurrency, until, request) in scenarios_of(settings, &ids) {
        common::progress(format_args!("endpoint, {}: {name}", target.name));
        results.push((name, drive(target, concurrency, until, request).await));
    }
    common::progress(format_args!("endpoint, {}: DELETE", target.name));
    let deleted = ids.clone();
    let delete = drive(target, settings.write_concurrency, Until::Count(settings.users), move |n| {
        Request::new(Method::DELETE, format!("/Users/{}", deleted[n]), None, &[204])
    })
    .await;
    results.push(("DELETE", delete));
    results
}

/// Waits until the operator has provisioned what was just written, so that reads are measured
/// on their own rather than beside the controller's catching up.
async fn settle(target: &Target) {
    let Some(url) = &target.metrics_url else { return };
    let http = reqwest::Client::new();
    cluster::eventually("the operator's backlog drained", Duration::from_secs(600), || async {
        (common::backlog(&http, url, "CleanmailUser").await? == 0).then_some(())
    })
    .await;
}

// === Servers ===

/// This operator as it runs in a cluster: the release binary against the control plane.
/// With `controllers` false it serves SCIM only: its Lease is held elsewhere, so the cost of the
/// SCIM edge is measured apart from the provisioning it causes.
async fn operator(client: &kube::Client, controllers: bool) -> Target {
    let name = if controllers { "bench-operator" } else { "bench-edge" };
    let (namespace, token) = cluster::tenant(client, name, &[DOMAIN], "Delete").await;
    if !controllers {
        common::hold_lease(client, name).await;
    }
    let replica = common::start_replica(name, &namespace, &[]);
    replica.wait_until_ready(Duration::from_secs(120)).await;
    let base = replica.scim_url.clone();
    let pid = replica.child.id();
    let probe = support::scim::Scim::new(&base, &token);
    probe.wait_until_usable().await;
    let helpers = common::control_plane_pids();
    Target {
        name: if controllers { "cleanmail-operator" } else { "cleanmail-operator, SCIM edge alone" }.into(),
        base,
        token,
        pid,
        helpers,
        metrics_url: controllers.then(|| replica.metrics_url.clone()),
        _process: ServerProcess::Operator(replica),
    }
}

/// POST and Entra's PATCH on the operator with its controllers off.
async fn measure_edge(settings: &Settings, target: &Target) -> Measured {
    common::progress(format_args!("endpoint, {}: POST, then PATCH", target.name));
    let (posted, ids) = seed(target, settings.users, settings.write_concurrency).await;
    let ids = Arc::new(ids);
    let mut scenarios = vec![("POST", posted)];
    for (name, concurrency, until, request) in scenarios_of(settings, &ids).into_iter().filter(|s| s.0 == PATCH) {
        scenarios.push((name, drive(target, concurrency, until, request).await));
    }
    Measured { name: target.name.clone(), peak_rss_mib: peak_rss_mib(target.pid), scenarios }
}

/// A peer installed by `tools/bench/install-peers.sh`, started by `tools/bench/run-peer.sh`.
async fn peer(name: &str, root_path: &str) -> Target {
    let port = support::mailstack::free_port();
    let log = std::fs::File::create(cluster::control_plane().dir.join(format!("{name}.log"))).expect("peer log");
    let child = Command::new("bash")
        .arg(Path::new(cluster::REPO).join("tools/bench/run-peer.sh"))
        .args([name, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name} (run `just deps`): {e}"));
    let base = format!("http://127.0.0.1:{port}{root_path}");
    let target = Target {
        name: name.into(),
        base: base.clone(),
        token: "bench-token".into(),
        pid: child.id(),
        helpers: Vec::new(),
        metrics_url: None,
        _process: ServerProcess::Peer(child),
    };
    let http = reqwest::Client::new();
    cluster::eventually(&format!("{name} answers"), Duration::from_secs(60), || async {
        let reply = http.get(format!("{base}/Users?count=1")).bearer_auth("bench-token").send().await.ok()?;
        reply.status().is_success().then_some(())
    })
    .await;
    target
}

// === The API server's ceiling ===

/// Creates of the objects SCIM POST stores, then merge patches of `spec.displayName`, straight to
/// the API server with the SCIM writes' concurrency: what no SCIM endpoint persisting there can beat.
async fn api_server_ceiling(client: &kube::Client, settings: &Settings) -> (Outcome, Outcome) {
    let (namespace, _) = cluster::tenant(client, "bench-raw", &[DOMAIN], "Delete").await;
    let api: kube::Api<CleanmailUser> = kube::Api::namespaced(client.clone(), &namespace);
    let count = settings.users;
    let create = run_workers(settings.write_concurrency, Until::Count(count), {
        let api = api.clone();
        move |n| {
            let api = api.clone();
            async move {
                let user = common::stored_user(&format!("user{n:06}"), &new_user(n));
                let params = PostParams { field_manager: Some("bench".into()), ..Default::default() };
                let result = api.create(&params, &user).await.map(|_| None).map_err(|e| e.to_string());
                Sample { n, result }
            }
        }
    })
    .await;
    let patch = run_workers(settings.write_concurrency, Until::Elapsed(settings.duration), move |n| {
        let api = api.clone();
        async move {
            let body = json!({"spec": {"displayName": format!("User {n}")}});
            let params = PatchParams { field_manager: Some("bench".into()), ..Default::default() };
            let name = format!("user{:06}", n % count.max(1));
            let result = api.patch(&name, &params, &Patch::Merge(&body)).await.map(|_| None).map_err(|e| e.to_string());
            Sample { n, result }
        }
    })
    .await;
    (create, patch)
}

// === Report ===

/// What one server did in a run.
struct Measured {
    name: String,
    peak_rss_mib: f64,
    scenarios: Vec<(&'static str, Outcome)>,
}

/// Everything one run measured.
struct Run {
    /// This operator first, then the peers.
    servers: Vec<Measured>,
    /// This operator's SCIM writes with its controllers off.
    edge: Measured,
    raw_create: Outcome,
    raw_patch: Outcome,
}

impl Run {
    fn outcome(&self, server: usize, scenario: &str) -> Option<&Outcome> {
        self.servers.get(server)?.scenarios.iter().find(|(name, _)| *name == scenario).map(|(_, o)| o)
    }

    /// The markdown table of every scenario on every server, ours first, with ours/peer ratios.
    fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | server | requests/s | p50 ms | p99 ms | errors | server CPU µs/request | ours / this |\n",
        );
        out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let scenarios: Vec<&str> = self.servers[0].scenarios.iter().map(|(name, _)| *name).collect();
        for scenario in scenarios {
            for (index, Measured { name: server, .. }) in self.servers.iter().enumerate() {
                let Some(o) = self.outcome(index, scenario) else { continue };
                let ours = self.outcome(0, scenario).map_or(0.0, Outcome::per_second);
                let ratio = if index == 0 {
                    "—".to_owned()
                } else {
                    format!("{:.2}×", ours / o.per_second().max(f64::EPSILON))
                };
                let cpu = o.cpu_per_request().as_secs_f64() * 1e6;
                let cpu = if o.helper_cpu.is_zero() {
                    format!("{cpu:.0}")
                } else {
                    let helpers = o.helper_cpu.as_secs_f64() * 1e6 / o.requests.max(1) as f64;
                    format!("{cpu:.0} (+{helpers:.0} API server, etcd)")
                };
                let _ = writeln!(
                    out,
                    "| {scenario} | {server} | {:.0} | {:.2} | {:.2} | {} | {cpu} | {ratio} |",
                    o.per_second(),
                    o.percentile(0.5).as_secs_f64() * 1e3,
                    o.percentile(0.99).as_secs_f64() * 1e3,
                    o.errors,
                );
            }
        }
        out
    }

    fn memory(&self) -> String {
        let mut out = String::from("| server | peak RSS MiB |\n| --- | ---: |\n");
        for server in &self.servers {
            let _ = writeln!(out, "| {} | {:.1} |", server.name, server.peak_rss_mib);
        }
        out
    }

    /// SCIM writes per second against the API server alone: (provisioning too, edge alone, raw).
    fn write_rates(&self, scenario: &str, raw: &Outcome) -> (f64, f64, f64) {
        let edge = self.edge.scenarios.iter().find(|(name, _)| *name == scenario).map_or(0.0, |(_, o)| o.per_second());
        (self.outcome(0, scenario).map_or(0.0, Outcome::per_second), edge, raw.per_second().max(f64::EPSILON))
    }

    fn ceiling(&self) -> String {
        let mut out = String::from(
            "| write | SCIM, controllers provisioning /s | SCIM edge alone /s | API server alone /s | ratios |\n\
             | --- | ---: | ---: | ---: | ---: |\n",
        );
        for (what, scenario, raw) in
            [("create (POST)", "POST", &self.raw_create), ("patch (PATCH displayName)", PATCH, &self.raw_patch)]
        {
            let (full, edge, raw) = self.write_rates(scenario, raw);
            let _ =
                writeln!(out, "| {what} | {full:.0} | {edge:.0} | {raw:.0} | {:.2} / {:.2} |", full / raw, edge / raw);
        }
        out
    }

    /// Whether the goals hold in this run, one line each.
    fn goals(&self) -> String {
        let peers = 1..self.servers.len();
        let filtered = "GET filter userName eq";
        let ours = self.outcome(0, filtered);
        let fastest_peer =
            peers.clone().filter_map(|i| self.outcome(i, filtered)).map(Outcome::per_second).fold(0.0, f64::max);
        let leanest_peer = peers.map(|i| self.servers[i].peak_rss_mib).fold(f64::INFINITY, f64::min);
        let get_ratio = ours.map_or(0.0, Outcome::per_second) / fastest_peer.max(f64::EPSILON);
        let p99 = ours.map_or(Duration::ZERO, |o| o.percentile(0.99));
        let write = |what: &str, scenario: &str, raw: &Outcome| {
            let (full, edge, raw) = self.write_rates(scenario, raw);
            format!(
                "- SCIM {what} ≥ 80% of the API server's: SCIM edge alone {:.0}% — {}; with the controllers \
                 provisioning at the same time {:.0}% — {}",
                edge / raw * 100.0,
                verdict(edge / raw >= 0.8),
                full / raw * 100.0,
                verdict(full / raw >= 0.8)
            )
        };
        [
            format!("- Filtered GET ≥ 10× the fastest peer: {get_ratio:.2}× — {}", verdict(get_ratio >= 10.0)),
            format!(
                "- Filtered GET p99 ≤ 5 ms at concurrency 32: {:.2} ms — {}",
                p99.as_secs_f64() * 1e3,
                verdict(p99 <= Duration::from_millis(5))
            ),
            write("POST", "POST", &self.raw_create),
            write("PATCH", PATCH, &self.raw_patch),
            format!(
                "- Peak RSS ≤ the leanest peer's: {:.1} MiB vs {leanest_peer:.1} MiB — {}",
                self.servers[0].peak_rss_mib,
                verdict(self.servers[0].peak_rss_mib <= leanest_peer)
            ),
        ]
        .join("\n")
    }
}

// === Main ===

/// The peers and the SCIM root each serves below its address.
const PEERS: [(&str, &str); 2] = [("scim2-server", "/v2"), ("scimmy", "/scim/v2")];

async fn run(settings: &Settings) -> Run {
    let client = cluster::client().await;
    let mut servers = Vec::new();
    // Stopped before anything else runs, so that neither the API server ceiling nor the peers
    // share the machine with its controllers.
    servers.push(measured(settings, &operator(&client, true).await, true).await);
    let edge = measure_edge(settings, &operator(&client, false).await).await;
    common::progress("endpoint: the API server alone");
    let (raw_create, raw_patch) = api_server_ceiling(&client, settings).await;
    for (name, root) in PEERS {
        let target = peer(name, root).await;
        servers.push(measured(settings, &target, false).await);
    }
    Run { servers, edge, raw_create, raw_patch }
}

/// Runs every scenario on `target`. Our own errors fail the smoke run; a peer only has to answer.
async fn measured(settings: &Settings, target: &Target, ours: bool) -> Measured {
    let scenarios = measure(settings, target).await;
    for (scenario, outcome) in &scenarios {
        let acceptable = if ours { outcome.errors == 0 } else { outcome.errors < outcome.requests };
        assert!(
            settings.measuring || acceptable,
            "{} {scenario}: {} errors in {} requests, first: {:?}",
            target.name,
            outcome.errors,
            outcome.requests,
            outcome.first_error
        );
    }
    Measured { name: target.name.clone(), peak_rss_mib: peak_rss_mib(target.pid), scenarios }
}

/// This benchmark's section of `docs/benchmarks.md`: the machine, the versions, the command and
/// the figures of this run.
fn write_report(settings: &Settings, run: &Run) {
    let text = format!(
        "## SCIM endpoint against peers and the API server\n\nWritten by `just bench`.\n\n\
         - Machine: {}, shared with the load generator (same process as the benchmark, on loopback) and, for this \
         operator, with the API server and etcd.\n\
         - Versions: cleanmail-operator {}, peers as pinned in `tools/bench/peers/`, kube-apiserver and etcd as in \
         `tools/controlplane/go.mod`.\n\
         - Load: {} users seeded through SCIM POST into each server (concurrency {}), then each read scenario for {:?} at \
         concurrency {}, Entra's PATCH for {:?} at concurrency {}, then every user deleted.\n\n\
         ### Requests\n\n{}\n### Memory\n\n{}\n### Against the API server's own ceiling\n\nThe same writes sent straight to the API \
         server with no operator running (creates of the very objects SCIM stores for these users: spec, label and \
         finalizer; then merge patches of `displayName`), against SCIM end to end: once while the controllers provision \
         what SCIM writes (each user also gets a status write, an Event and a mailbox row), and once on a replica \
         whose Lease is held elsewhere, so that only the SCIM edge works.\n\n{}\n### Goals\n\n{}\n",
        common::machine(),
        env!("CARGO_PKG_VERSION"),
        settings.users,
        settings.write_concurrency,
        settings.duration,
        settings.read_concurrency,
        settings.duration,
        settings.write_concurrency,
        run.table(),
        run.memory(),
        run.ceiling(),
        run.goals(),
    );
    common::write_section("endpoint", &text);
}

/// Runs this part: measures under `cargo bench`, else the smoke run.
pub fn bench() {
    let settings = settings();
    common::progress("endpoint: starting the control plane");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let run = runtime.block_on(run(&settings));
    println!("{}\n{}\n{}\n{}", run.table(), run.memory(), run.ceiling(), run.goals());
    if settings.measuring {
        write_report(&settings, &run);
    }
}

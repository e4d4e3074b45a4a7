//! What every benchmark shares: the load generator, the server processes' CPU and memory, a held
//! Lease for SCIM-only replicas, and the report in `docs/benchmarks.md`, where each benchmark owns
//! one section.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use cleanmail_operator::crd::{CleanmailUser, PROVISIONED_BY_LABEL, PROVISIONED_BY_SCIM, USER_FINALIZER};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use reqwest::Method;
use serde_json::{Value, json};

use super::support::{cluster, process};

/// Whether this is a measuring run (`cargo bench`) rather than the smoke run under `cargo test`.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Says on stderr, in a measuring run, what the benchmark starts now and how long after its own
/// start, so that a run of many minutes shows where it is and where its time goes.
pub fn progress(what: impl std::fmt::Display) {
    static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let began = *BEGAN.get_or_init(Instant::now);
    if measuring() {
        eprintln!("[{:>6.1} s] {what}", began.elapsed().as_secs_f64());
    }
}

/// Whether the part named runs: every part does unless `BENCH_ONLY` names some.
pub fn selected(part: &str) -> bool {
    only().is_none_or(|only| only.split(',').any(|p| p.trim() == part))
}

/// The parts `BENCH_ONLY` names, if it is set.
pub fn only() -> Option<String> {
    std::env::var("BENCH_ONLY").ok().filter(|only| !only.trim().is_empty())
}

/// A number from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// === Load ===

/// What one scenario measured on one server.
#[derive(Default)]
pub struct Outcome {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// Server CPU time spent during the scenario.
    pub cpu: Duration,
    /// CPU time of the processes the server depends on (the API server and etcd for ours).
    pub helper_cpu: Duration,
    /// The first unexpected status and body, to explain errors.
    pub first_error: Option<String>,
    /// Bodies of successful requests that asked to be kept, by sequence number.
    pub captured: Vec<(usize, Value)>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round().max(0.0) as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    pub fn cpu_per_request(&self) -> Duration {
        self.cpu.checked_div(self.requests.max(1) as u32).unwrap_or_default()
    }

    /// The `id` of each captured reply, by sequence number, for `count` requests; empty where
    /// none was captured. Takes the captured bodies.
    pub fn take_ids(&mut self, count: usize) -> Vec<String> {
        let mut ids = vec![String::new(); count];
        for (n, body) in std::mem::take(&mut self.captured) {
            if let Some(slot) = ids.get_mut(n) {
                *slot = body["id"].as_str().unwrap_or_default().to_owned();
            }
        }
        ids
    }

    fn record(&mut self, latency: Duration, sample: Sample) {
        self.latencies.push(latency);
        self.requests += 1;
        match sample.result {
            Ok(Some(body)) => self.captured.push((sample.n, body)),
            Ok(None) => {}
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.chars().take(300).collect());
            }
        }
    }

    fn absorb(&mut self, part: Outcome) {
        self.requests += part.requests;
        self.errors += part.errors;
        self.latencies.extend(part.latencies);
        self.captured.extend(part.captured);
        self.first_error = self.first_error.take().or(part.first_error);
    }
}

/// How a scenario ends: after a number of requests, or after a while.
#[derive(Clone, Copy)]
pub enum Until {
    Count(usize),
    Elapsed(Duration),
}

/// What one call reported.
pub struct Sample {
    pub n: usize,
    /// `Err` with the status and body (or transport error) of a failure.
    pub result: Result<Option<Value>, String>,
}

/// The load generator: `concurrency` workers, each taking the next sequence number and making its
/// call, until `until`. The same loop drives every server and the API server.
///
/// A timed run ends at its deadline: calls still in flight then are cancelled and not counted, so
/// a server that leaves some requests waiting for seconds cannot stretch the run (one peer's
/// listen queue overflows under load, and a refused connection is retried only after 1, 3, 7 s).
pub async fn run_workers<F, Fut>(concurrency: usize, until: Until, call: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Sample> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let deadline = match until {
        Until::Count(_) => None,
        Until::Elapsed(limit) => Some(started + limit),
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if matches!(until, Until::Count(count) if n >= count) {
                        return outcome;
                    }
                    let began = Instant::now();
                    let sample = match deadline {
                        Some(deadline) => match tokio::time::timeout_at(deadline, call(n)).await {
                            Ok(sample) => sample,
                            Err(_) => return outcome,
                        },
                        None => call(n).await,
                    };
                    outcome.record(began.elapsed(), sample);
                }
            })
        })
        .collect();
    let mut total = Outcome::default();
    for worker in workers {
        total.absorb(worker.await.expect("load worker"));
    }
    total.elapsed = started.elapsed();
    total.latencies.sort();
    total
}

/// One request of a scenario, built from its sequence number.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// Statuses that count as success.
    pub ok: &'static [u16],
    /// Whether the body of a successful reply is kept.
    pub capture: bool,
}

impl Request {
    pub fn new(method: Method, path: String, body: Option<Value>, ok: &'static [u16]) -> Request {
        Request { method, path, body, ok, capture: false }
    }
}

/// SCIM requests to `base` with `token` from the load generator.
pub async fn scim_load(
    base: &str,
    token: &str,
    concurrency: usize,
    until: Until,
    request: impl Fn(usize) -> Request + Send + Sync + 'static,
) -> Outcome {
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("http client");
    let (base, token) = (Arc::new(base.to_owned()), Arc::new(token.to_owned()));
    let request = Arc::new(request);
    run_workers(concurrency, until, move |n| {
        let (http, base, token, request) = (http.clone(), base.clone(), token.clone(), request.clone());
        async move { Sample { n, result: send(&http, &base, &token, request(n)).await } }
    })
    .await
}

async fn send(http: &reqwest::Client, base: &str, token: &str, request: Request) -> Result<Option<Value>, String> {
    let mut builder = http
        .request(request.method, format!("{base}{}", request.path))
        .bearer_auth(token)
        .header("content-type", "application/scim+json");
    if let Some(body) = &request.body {
        builder = builder.body(body.to_string());
    }
    let reply = builder.send().await.map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let body = reply.bytes().await.map_err(|e| e.to_string())?;
    if !request.ok.contains(&status) {
        return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
    }
    Ok(request.capture.then(|| serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

// === Objects ===

/// The object SCIM POST stores under `name` for the SCIM user `body`: its spec, with the label and
/// the finalizer the endpoint puts on every user it creates. Raw creates of it cost the API server
/// what SCIM's creates cost it, so that the two compare.
pub fn stored_user(name: &str, body: &Value) -> CleanmailUser {
    let spec = cleanmail_operator::scim::user::spec_from_scim(body).expect("the SCIM user converts");
    let mut user = CleanmailUser::new(name, spec);
    user.metadata.labels = Some([(PROVISIONED_BY_LABEL.to_owned(), PROVISIONED_BY_SCIM.to_owned())].into());
    user.metadata.finalizers = Some(vec![USER_FINALIZER.to_owned()]);
    user
}

// === Processes ===

/// The pid of the control plane's `program`, found by its command line naming the plane's dir.
pub fn pid_of(program: &str, dir: &Path) -> Option<u32> {
    let dir = dir.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let command = std::fs::read(entry.path().join("cmdline")).ok()?;
        let command = String::from_utf8_lossy(&command).replace('\0', " ");
        let executable = command.split_whitespace().next()?;
        (executable.ends_with(program) && command.contains(dir.as_ref())).then_some(pid)
    })
}

/// The API server's and etcd's pids, whose CPU every write through them costs.
pub fn control_plane_pids() -> Vec<u32> {
    let dir = &cluster::control_plane().dir;
    ["kube-apiserver", "etcd"].iter().filter_map(|name| pid_of(name, dir)).collect()
}

/// User plus system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

/// The summed CPU time of `pids` so far.
pub fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|&pid| cpu_time(pid)).sum()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = Command::new("getconf").arg("CLK_TCK").output().ok();
        output.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
    })
}

/// The process's peak resident memory (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The operator binary as deployed (logging at its default level, not the tests' debug level),
/// using the Lease `name` and watching only `namespace`, so that no part of the run sees another
/// part's users, with its SQLite default backend at [`replica_mailboxes`] and the extra
/// environment `env`.
pub fn start_replica(name: &str, namespace: &str, env: &[(&str, String)]) -> process::Replica {
    let mut env = env.to_vec();
    env.push(("CLEANMAIL_LEASE_NAME", name.to_owned()));
    env.push(("CLEANMAIL_WATCH_NAMESPACES", namespace.to_owned()));
    env.push(("RUST_LOG", cleanmail_operator::telemetry::DEFAULT_LOG_FILTER.to_owned()));
    process::start(name, &cluster::control_plane().kubeconfig, &replica_database(name), &env)
}

/// The URL of the default mailbox database of the replica `name`, to check what it provisioned.
pub fn replica_mailboxes(name: &str) -> String {
    format!("sqlite://{}", replica_database(name).display())
}

fn replica_database(name: &str) -> PathBuf {
    cluster::control_plane().dir.join(format!("{name}.db"))
}

/// A Lease `name` held by another identity for an hour, so the operator using it never leads.
pub async fn hold_lease(client: &kube::Client, name: &str) {
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 3600,
                 "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()},
    }))
    .expect("lease");
    leases.create(&PostParams::default(), &lease).await.expect("create the held lease");
}

/// The reconcile backlog of `kind` the replica at `metrics_url` reports, once it answers.
pub async fn backlog(http: &reqwest::Client, metrics_url: &str, kind: &str) -> Option<usize> {
    let text = http.get(metrics_url).send().await.ok()?.text().await.ok()?;
    let prefix = format!("cleanmail_reconcile_backlog{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?.trim().parse().ok()
}

/// The API server's request counts so far, by verb and resource (with subresource), from its
/// `apiserver_request_total` metric.
pub fn api_requests() -> BTreeMap<String, f64> {
    let text = cluster::kubectl(&["get", "--raw", "/metrics"]);
    let mut counts = BTreeMap::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once("} ") else { continue };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            labels[start..].split('"').next()
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else { continue };
        let key = match label("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *counts.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// The requests made between two [`api_requests`] snapshots, per `unit`, largest first, as
/// "PATCH cleanmailusers/status 1.00".
pub fn requests_per(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, unit: usize) -> Vec<(String, f64)> {
    let mut per: Vec<(String, f64)> = after
        .iter()
        .map(|(key, count)| (key.clone(), (count - before.get(key).copied().unwrap_or(0.0)) / unit.max(1) as f64))
        .filter(|(_, per)| *per >= 0.005)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    per
}

// === Report ===

const REPORT: &str = "docs/benchmarks.md";
const REPORT_HEADER: &str = "# Benchmarks\n\nWritten by `just bench`. Each section comes from one run of one \
    benchmark on one machine, so compare the ratios inside a section, not absolute numbers across sections.\n";

/// Replaces the section `name` of `docs/benchmarks.md` (between its markers) with `markdown`,
/// appending it when absent, so that each benchmark rewrites only what it measured.
pub fn write_section(name: &str, markdown: &str) {
    let path = PathBuf::from(cluster::REPO).join(REPORT);
    let current = std::fs::read_to_string(&path).unwrap_or_else(|_| REPORT_HEADER.to_owned());
    let (begin, end) = (format!("<!-- begin {name} -->"), format!("<!-- end {name} -->"));
    let section = format!("{begin}\n{}\n{end}", markdown.trim_end());
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(from), Some(to)) if from < to => {
            format!("{}{section}{}", &current[..from], &current[to + end.len()..])
        }
        _ => format!("{}\n{section}\n", current.trim_end()),
    };
    std::fs::write(&path, updated).expect("write docs/benchmarks.md");
    println!("wrote section {name} of {}", path.display());
    progress(format_args!("{name}: done"));
}

/// The machine the figures come from, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |m| m.trim_start_matches([' ', '\t', ':']))
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = memory.lines().next().unwrap_or_default().trim_start_matches("MemTotal:").trim().to_owned();
    format!("{model}, {cores} cores, {memory} memory")
}

/// "met" or "not met".
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

//! A real kube-apiserver + etcd (tools/controlplane/run.sh) started once per test binary, and one
//! in-process operator on its own runtime thread. The control plane stops by itself when the test
//! process exits (run.sh watches our pid), so nothing outlives the tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use cleanmail_operator::run::{self, RunArgs};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
const READY_TIMEOUT: Duration = Duration::from_secs(240);

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

/// The control plane of this test binary, started on first use with the CRDs installed.
pub fn control_plane() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| {
        remove_dirs_of_finished_runs();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create control plane dir");
        let log = std::fs::File::create(dir.join("run.log")).expect("create run.log");
        // Never waited for: run.sh outlives every test and stops itself when this process exits.
        #[allow(clippy::zombie_processes)]
        Command::new("bash")
            .arg(Path::new(REPO).join("tools/controlplane/run.sh"))
            .arg("--dir")
            .arg(&dir)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start tools/controlplane/run.sh (run `just deps` first)");
        let started = Instant::now();
        while !dir.join("ready").exists() {
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "control plane not ready after {READY_TIMEOUT:?}; see {}",
                dir.join("run.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let kubeconfig = dir.join("kubeconfig");
        let status = Command::new("bash")
            .arg(Path::new(REPO).join("tools/controlplane/install-crds.sh"))
            .arg(&kubeconfig)
            .arg(Path::new(REPO).join("crds"))
            .stdout(Stdio::null())
            .status()
            .expect("run install-crds.sh");
        assert!(status.success(), "installing the CRDs failed");
        ControlPlane { dir, kubeconfig }
    })
}

const DIR_PREFIX: &str = "cleanmail-test-";

/// Control-plane directories are kept after a run for their logs, and removed by the next test
/// binary once the process that owned them is gone, so they never pile up.
fn remove_dirs_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A client for the admin of the test control plane, bound to the caller's runtime.
pub async fn client() -> Client {
    let plane = control_plane();
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

pub struct Operator {
    /// e.g. `http://127.0.0.1:PORT/scim/v2`
    pub scim_url: String,
    pub metrics_url: String,
    /// The default backend's database file.
    pub database: PathBuf,
}

/// The operator of this test binary, running on a runtime of its own so it outlives every test.
pub fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let plane = control_plane();
        let database = plane.dir.join("mailboxes.db");
        let default_backend = format!("sqlite://{}", database.display());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async move {
                let args = RunArgs {
                    scim_addr: "127.0.0.1:0".parse().expect("addr"),
                    metrics_addr: "127.0.0.1:0".parse().expect("addr"),
                    default_backend,
                    controller_concurrency: 4,
                    api_qps: 0,
                    // Short, so drift repair and orphan reports are seen within a test.
                    resync_seconds: 3,
                    instance: Some("test-operator".into()),
                    log_json: false,
                    lease_namespace: "default".into(),
                    lease_name: "cleanmail-operator".into(),
                    lease_duration_seconds: 15,
                    watch_namespaces: Vec::new(),
                };
                let running = run::start(client().await, args).await.expect("start operator");
                tx.send((running.scim_addr, running.metrics_addr)).expect("report addresses");
                std::future::pending::<()>().await;
            });
        });
        let (scim, metrics) = rx.recv_timeout(Duration::from_secs(60)).expect("operator started");
        Operator { scim_url: format!("http://{scim}/scim/v2"), metrics_url: format!("http://{metrics}"), database }
    })
}

/// A fresh namespace with a tenant for `domains` whose token is returned.
pub async fn tenant(client: &Client, prefix: &str, domains: &[&str], deletion_policy: &str) -> (String, String) {
    tenant_with_backend(client, prefix, domains, deletion_policy, None).await
}

/// Like [`tenant`], with the mailbox database URL in a Secret when `backend_url` is given.
pub async fn tenant_with_backend(
    client: &Client,
    prefix: &str,
    domains: &[&str],
    deletion_policy: &str,
    backend_url: Option<&str>,
) -> (String, String) {
    let namespace = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let token = uuid::Uuid::new_v4().to_string();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("namespace");
    namespaces.create(&PostParams::default(), &ns).await.expect("create namespace");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut data = std::collections::BTreeMap::new();
    data.insert("token".to_string(), ByteString(token.clone().into_bytes()));
    let secret = Secret {
        metadata: kube::core::ObjectMeta { name: Some("scim-token".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("create token secret");
    let mut spec =
        json!({"tokenSecretRef": {"name": "scim-token"}, "domains": domains, "deletionPolicy": deletion_policy});
    if let Some(url) = backend_url {
        let mut data = std::collections::BTreeMap::new();
        data.insert("url".to_string(), ByteString(url.as_bytes().to_vec()));
        let secret = Secret {
            metadata: kube::core::ObjectMeta { name: Some("mailbox-db".into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await.expect("create backend secret");
        spec["backend"] = json!({"sql": {"urlSecretRef": {"name": "mailbox-db", "key": "url"}}});
    }
    let tenants: Api<cleanmail_operator::crd::CleanmailTenant> = Api::namespaced(client.clone(), &namespace);
    let tenant = serde_json::from_value(json!({
        "apiVersion": "cleanmail.ch/v1alpha1", "kind": "CleanmailTenant",
        "metadata": {"name": "tenant", "namespace": namespace}, "spec": spec,
    }))
    .expect("tenant");
    tenants.create(&PostParams::default(), &tenant).await.expect("create tenant");
    (namespace, token)
}

/// Polls `check` every 100 ms until it yields a value, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs kubectl against the test control plane and returns stdout.
pub fn kubectl(args: &[&str]) -> String {
    try_kubectl(args).unwrap_or_else(|stderr| panic!("kubectl {args:?} failed: {stderr}"))
}

/// Runs kubectl against the test control plane: stdout, or stderr when it fails.
pub fn try_kubectl(args: &[&str]) -> Result<String, String> {
    let plane = control_plane();
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The cells of the row of a `kubectl get` table whose first cell is `first`, by column header.
/// Cells are cut at the header's column offsets, so an empty cell reads as "".
pub fn table_row(table: &str, first: &str) -> std::collections::BTreeMap<String, String> {
    let mut lines = table.lines();
    let header = lines.next().expect("table header");
    let row = lines
        .find(|line| line.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{table}"));
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let cell = |from: usize, to: Option<usize>| {
        let to = to.unwrap_or(row.len()).min(row.len());
        row.get(from.min(to)..to).unwrap_or_default().trim().to_owned()
    };
    starts
        .iter()
        .enumerate()
        .map(|(n, &from)| {
            let name = header[from..].split_whitespace().next().unwrap_or_default().to_owned();
            (name, cell(from, starts.get(n + 1).copied()))
        })
        .collect()
}

/// The helm binary `just deps` installs.
pub fn helm_path() -> PathBuf {
    cache_dir().join("bin/helm")
}

/// Where `just deps` caches what it builds and installs (`CLEANMAIL_CACHE`, by default
/// `~/.cache/cleanmail-operator`).
pub fn cache_dir() -> PathBuf {
    std::env::var("CLEANMAIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cleanmail-operator"))
}

fn kubectl_path() -> PathBuf {
    let go_mod = std::fs::read_to_string(Path::new(REPO).join("tools/controlplane/go.mod")).expect("go.mod");
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes ").map(|v| v.trim().to_string()))
        .expect("kubernetes version in go.mod");
    cache_dir().join(format!("k8s-{version}")).join("kubectl")
}

/// `(status, reason)` of the user's `Ready` condition.
pub async fn ready_reason(api: &Api<cleanmail_operator::crd::CleanmailUser>, name: &str) -> Option<(String, String)> {
    let user = api.get_opt(name).await.ok()??;
    let ready = user.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status, ready.reason))
}

/// Waits until the user is `Ready=True` with `reason`, failing the test after 120 s.
pub async fn wait_for_reason(api: &Api<cleanmail_operator::crd::CleanmailUser>, name: &str, reason: &str) {
    eventually(&format!("{name} Ready with reason {reason}"), Duration::from_secs(120), || async {
        ready_reason(api, name).await.filter(|(status, r)| status == "True" && r == reason)
    })
    .await;
}

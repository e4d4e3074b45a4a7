//! The operator binary as a separate process against the test control plane, as it runs in a
//! cluster: from a kubeconfig, configured through its environment.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// An operator process, killed when dropped so no test leaves one behind.
pub struct Replica {
    pub name: String,
    pub child: Child,
    pub scim_url: String,
    pub metrics_url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cleanmail-operator run` with `kubeconfig`, an SQLite default backend at `database`, and
/// the extra environment `env` (lease, namespaces, …). Its log is `<control plane dir>/<name>.log`.
pub fn start(name: &str, kubeconfig: &Path, database: &Path, env: &[(&str, String)]) -> Replica {
    let plane = super::cluster::control_plane();
    let (scim_port, metrics_port) = (super::mailstack::free_port(), super::mailstack::free_port());
    let log = std::fs::File::create(plane.dir.join(format!("{name}.log"))).expect("replica log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cleanmail-operator"));
    command
        .arg("run")
        .env("KUBECONFIG", kubeconfig)
        .env("CLEANMAIL_SCIM_ADDR", format!("127.0.0.1:{scim_port}"))
        .env("CLEANMAIL_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("CLEANMAIL_DEFAULT_BACKEND", format!("sqlite://{}", database.display()))
        .env("POD_NAME", name)
        .env("RUST_LOG", "info,tower_http=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().expect("start the operator binary");
    Replica {
        name: name.to_string(),
        child,
        scim_url: format!("http://127.0.0.1:{scim_port}/scim/v2"),
        metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
    }
}

impl Replica {
    /// `Some(())` once the replica's caches have synced (`/readyz` answers 200).
    pub async fn ready(&self) -> Option<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
        let url = self.metrics_url.replace("/metrics", "/readyz");
        http.get(url).send().await.ok()?.status().is_success().then_some(())
    }

    /// `Some(true)` when the replica reports it leads, `None` while it does not answer.
    pub async fn leads(&self) -> Option<bool> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
        let text = http.get(&self.metrics_url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix("cleanmail_leader ")).map(|v| v.trim() == "1")
    }

    /// Waits until the replica serves: caches synced, within `timeout`.
    pub async fn wait_until_ready(&self, timeout: Duration) {
        super::cluster::eventually(&format!("{} ready", self.name), timeout, || self.ready()).await;
    }
}

//! Independent SCIM conformance checkers (the PyPI packages `scim2-tester` and `scim-sanity`, installed
//! by `just deps` into a venv under the cache directory) run against the real endpoint on loopback.
//!
//! Every check must pass or be listed in the "Known differences" table of the README; a
//! listed check that no longer fails is an error too, so the table never goes stale.

mod support;

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    cluster::{self, REPO, eventually},
    scim::Scim,
};

/// A whole checker run; each makes a few hundred requests at most.
const CHECKER_TIMEOUT: Duration = Duration::from_secs(300);
const DOC: &str = "README.md";

#[tokio::test]
async fn scim2_tester_finds_no_unlisted_difference() {
    conformance("scim2-tester").await;
}

#[tokio::test]
async fn scim_sanity_finds_no_unlisted_difference() {
    conformance("scim-sanity").await;
}

#[derive(Debug)]
struct Check {
    name: String,
    outcome: String,
    status: String,
    detail: String,
}

async fn conformance(tool: &str) {
    let python = venv_python();
    let operator = cluster::operator();
    let client = cluster::client().await;
    let domain = format!("{}.conformance.test", tool.replace('-', ""));
    let (_namespace, token) = cluster::tenant(&client, tool, &[domain.as_str()], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    eventually("tenant usable", Duration::from_secs(60), || async {
        (scim.get("/Users?count=1").await.status == 200).then_some(())
    })
    .await;

    let url = operator.scim_url.clone();
    let tool_name = tool.to_string();
    let checks = tokio::task::spawn_blocking(move || run_checker(&python, &tool_name, &url, &token, &domain))
        .await
        .expect("checker thread");
    report(tool, &checks);
    let listed = known_differences(tool);
    let problems = compare(&checks, &listed);
    assert!(problems.is_empty(), "{tool}: {} problem(s) against {DOC}:\n{}", problems.len(), problems.join("\n"));
}

fn venv_python() -> PathBuf {
    let cache = cluster::cache_dir();
    let python = cache.join("venv-conformance/bin/python");
    assert!(python.exists(), "{} missing: run `just deps` (tools/install-deps.sh)", python.display());
    python
}

/// Runs tests/conformance/driver.py for `tool` in a process group of its own, killed as a whole
/// when it outlives [`CHECKER_TIMEOUT`].
fn run_checker(python: &Path, tool: &str, url: &str, token: &str, domain: &str) -> Vec<Check> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(python)
        .arg(Path::new(REPO).join("tests/conformance/driver.py"))
        .arg(tool)
        .args(["--url", url, "--token", token, "--domain", domain])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the conformance driver");
    // Drain both pipes on threads so a chatty checker cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver") {
            break status;
        }
        if started.elapsed() > CHECKER_TIMEOUT {
            // The whole group: the driver and any process it started.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            panic!(
                "{tool} did not finish within {CHECKER_TIMEOUT:?} and was killed; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(status.success(), "{tool} driver failed ({status}):\nstderr:\n{stderr}\nstdout:\n{stdout}");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{tool} driver printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    let checks: Vec<Check> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| Check {
            name: c["name"].as_str().expect("name").to_string(),
            outcome: c["outcome"].as_str().expect("outcome").to_string(),
            status: c["status"].as_str().unwrap_or_default().to_string(),
            detail: c["detail"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    assert!(
        checks.iter().any(|c| c.outcome == "pass"),
        "{tool} passed no check at all, so it probably never reached the endpoint: {checks:#?}"
    );
    eprintln!("{tool} {}: {} checks", report["version"].as_str().unwrap_or("?"), checks.len());
    checks
}

fn report(tool: &str, checks: &[Check]) {
    for check in checks {
        let detail: String = check.detail.split_whitespace().collect::<Vec<_>>().join(" ");
        let detail: String = detail.chars().take(300).collect();
        eprintln!("{tool}\t{}\t{}\t{}\t{detail}", check.outcome, check.status, check.name);
    }
}

/// The check names of `tool` in the "Known differences" table of the README: rows
/// `| tool | `check name` | classification | reason |`.
fn known_differences(tool: &str) -> BTreeMap<String, String> {
    let path = Path::new(REPO).join(DOC);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut in_table = false;
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            in_table = line.trim_start_matches('#').trim() == "Known differences";
            continue;
        }
        if !in_table || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").map(str::trim).collect();
        if cells.len() < 3 || cells[0] != tool {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        assert!(listed.insert(name.clone(), cells[2].to_string()).is_none(), "{DOC} lists `{name}` of {tool} twice");
    }
    listed
}

/// Unlisted failures and listed checks that do not fail, one line each.
fn compare(checks: &[Check], listed: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for check in checks.iter().filter(|c| c.outcome == "fail") {
        if !listed.contains_key(&check.name) {
            problems.push(format!(
                "NEW FAILURE `{}` ({}): {}  -> fix it, or list it in {DOC} with the RFC text",
                check.name, check.status, check.detail
            ));
        }
    }
    for name in listed.keys() {
        match checks.iter().find(|c| &c.name == name) {
            Some(check) if check.outcome == "fail" => {}
            Some(check) => problems.push(format!(
                "STALE `{name}` is listed in {DOC} but now {} ({}): remove its row",
                check.outcome, check.status
            )),
            None => problems.push(format!("STALE `{name}` is listed in {DOC} but was not run: remove its row")),
        }
    }
    problems
}

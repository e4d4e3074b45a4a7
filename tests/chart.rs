//! The Helm chart lints and renders manifests the real API server accepts.

mod support;

use std::{path::PathBuf, process::Command};

use support::cluster::{self, REPO};

fn helm() -> PathBuf {
    let cache = std::env::var("CLEANMAIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/cleanmail-operator"));
    cache.join("bin/helm")
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run helm");
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn chart_lints_and_its_manifests_pass_server_side_validation() {
    let chart = PathBuf::from(REPO).join("charts/cleanmail-operator");
    run(Command::new(helm()).arg("lint").arg("--strict").arg(&chart));
    let rendered = run(Command::new(helm()).args(["template", "cleanmail", "--namespace", "default"]).arg(&chart));
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"] {
        assert!(rendered.contains(&format!("kind: {kind}\n")), "{kind} missing from the chart");
    }
    let manifests = cluster::control_plane().dir.join("chart.yaml");
    std::fs::write(&manifests, rendered).expect("write manifests");
    let applied = cluster::kubectl(&["apply", "--dry-run=server", "-f", manifests.to_str().expect("utf-8 path")]);
    assert_eq!(applied.lines().count(), 5, "{applied}");
}

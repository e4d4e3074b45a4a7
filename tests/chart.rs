//! The Helm chart: it lints, renders manifests the real API server accepts for its defaults and for
//! every documented example, refuses bad values at install time, keeps the first tenant's token, ships
//! the top-level CRDs unchanged and a dashboard that queries only metrics the operator exports.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde::Deserialize as _;
use serde_json::Value;
use support::cluster::{self, REPO};

const RELEASE: &str = "cleanmail";
const RELEASE_NAMESPACE: &str = "cleanmail-system";
/// Every example the chart README documents; any other examples/*.yaml is tested too.
const DOCUMENTED_EXAMPLES: [&str; 5] = ["default", "namespaced", "ingress-tls", "ha-observability", "first-tenant"];

fn helm() -> PathBuf {
    cluster::helm_path()
}

fn chart() -> PathBuf {
    PathBuf::from(REPO).join("charts/cleanmail-operator")
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn run(command: &mut Command) -> String {
    let output = output(command);
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm template` of the chart in the release namespace, with `extra` arguments.
fn template(extra: &[&str]) -> Command {
    let mut command = Command::new(helm());
    command.args(["template", RELEASE, "--namespace", RELEASE_NAMESPACE]).arg(chart()).args(extra);
    command
}

/// The documents of a rendered manifest stream, as JSON values.
fn documents(rendered: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|document| {
            let value = serde_yaml::Value::deserialize(document).expect("rendered YAML parses");
            serde_json::to_value(value).expect("rendered YAML is JSON-compatible")
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// (kind, namespace, name) of every document, sorted.
fn inventory(docs: &[Value]) -> BTreeSet<(String, String, String)> {
    docs.iter().map(|d| (kind(d).to_string(), namespace(d).to_string(), name(d).to_string())).collect()
}

fn item(kind: &str, namespace: &str, name: &str) -> (String, String, String) {
    (kind.to_string(), namespace.to_string(), name.to_string())
}

fn only<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| kind(d) == wanted);
    let first = found.next().unwrap_or_else(|| panic!("no {wanted} rendered"));
    assert!(found.next().is_none(), "more than one {wanted} rendered");
    first
}

fn env<'a>(container: &'a Value, variable: &str) -> Option<&'a Value> {
    container["env"].as_array().expect("env list").iter().find(|e| e["name"] == variable)
}

/// Creates namespaces (idempotently) on the test control plane. Tests ensure the same namespace
/// at once, so this is a server-side apply: a client-side apply reads, then creates, and the
/// slower of two racing creates fails with AlreadyExists.
fn ensure_namespaces(names: &[&str]) {
    let plane = cluster::control_plane();
    let manifest: String =
        names.iter().map(|n| format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n")).collect();
    let file = plane.dir.join(format!("namespaces-{}.yaml", names.join("-")));
    std::fs::write(&file, manifest).expect("write namespaces");
    cluster::kubectl(&["apply", "--server-side", "-f", file.to_str().expect("utf-8 path")]);
}

/// A minimal ServiceMonitor CRD (the Prometheus Operator's, reduced to the fields the chart sets), so
/// the server validates the chart's ServiceMonitor the way a cluster with the Prometheus Operator does.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                jobLabel: {type: string}
                targetLabels: {type: array, items: {type: string}}
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                    matchExpressions: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      scheme: {type: string, enum: [http, https]}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      honorLabels: {type: boolean}
                      relabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
                      metricRelabelings: {type: array, items: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

fn install_service_monitor_crd() {
    let plane = cluster::control_plane();
    let file = plane.dir.join("servicemonitor-crd.yaml");
    std::fs::write(&file, SERVICE_MONITOR_CRD).expect("write ServiceMonitor CRD");
    cluster::kubectl(&["apply", "--server-side", "-f", file.to_str().expect("utf-8 path")]);
    cluster::kubectl(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut count, mut out) = (0u32, 0u32, Vec::new());
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte).unwrap_or_else(|| panic!("not base64: {text:?}"));
        bits = (bits << 6) | value as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn secret_token(docs: &[Value]) -> String {
    let secret = docs.iter().find(|d| kind(d) == "Secret" && name(d) == "scim-token").expect("token Secret rendered");
    let encoded = secret["data"]["token"].as_str().expect("data.token");
    String::from_utf8(base64_decode(encoded)).expect("utf-8 token")
}

/// What every rendering must satisfy whatever the values.
fn assert_invariants(case: &str, docs: &[Value]) {
    let deployment = only(docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{case}");
    assert_eq!(security["runAsUser"], 65532, "{case}");
    assert_eq!(security["runAsGroup"], 65532, "{case}");
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{case}");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30, "{case}");
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{case}");
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false, "{case}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{case}");
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{case}");
    assert!(container["resources"]["requests"]["memory"].is_string(), "{case}: no memory request");
    assert!(container["resources"]["limits"]["memory"].is_string(), "{case}: no memory limit");
    assert_eq!(container["startupProbe"]["httpGet"]["path"], "/readyz", "{case}");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{case}");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{case}");
    let startup = &container["startupProbe"];
    let patience = startup["periodSeconds"].as_i64().unwrap_or(10) * startup["failureThreshold"].as_i64().unwrap_or(3);
    assert!(patience >= 300, "{case}: the startup probe gives the caches only {patience}s to sync");
    let lease_namespace = env(container, "CLEANMAIL_LEASE_NAMESPACE").expect("CLEANMAIL_LEASE_NAMESPACE");
    assert_eq!(lease_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace", "{case}");
    assert_eq!(env(container, "CLEANMAIL_LEASE_NAME").expect("CLEANMAIL_LEASE_NAME")["value"], RELEASE, "{case}");
    assert!(env(container, "CLEANMAIL_LEASE_DURATION_SECONDS").is_some(), "{case}");
    assert!(env(container, "CLEANMAIL_RESYNC_SECONDS").is_some(), "{case}");
    assert_eq!(env(container, "POD_NAME").expect("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    // Leader election is allowed in the release namespace only, whatever the scope.
    let lease_role = docs
        .iter()
        .find(|d| kind(d) == "Role" && namespace(d) == RELEASE_NAMESPACE && name(d).ends_with("-leader-election"))
        .unwrap_or_else(|| panic!("{case}: no leader-election Role in the release namespace"));
    assert_eq!(
        lease_role["rules"],
        serde_json::json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update", "patch"]}]),
        "{case}"
    );
    for doc in docs.iter().filter(|d| matches!(kind(d), "Role" | "ClusterRole")) {
        for rule in doc["rules"].as_array().expect("rules") {
            let resources = rule["resources"].as_array().expect("resources");
            assert!(
                !resources.iter().any(|r| r == "leases") || doc == lease_role,
                "{case}: leases granted beyond the release namespace"
            );
            assert!(!resources.iter().any(|r| r == "*"), "{case}: wildcard resource in {}", name(doc));
            assert!(!rule["verbs"].as_array().expect("verbs").iter().any(|v| v == "*"), "{case}: wildcard verb");
        }
    }
    // The SCIM Service reaches the SCIM port; metrics never go through it.
    let scim = docs.iter().find(|d| kind(d) == "Service" && name(d) == RELEASE).expect("SCIM Service");
    assert_eq!(
        scim["spec"]["ports"],
        serde_json::json!([{"name": "scim", "port": 80, "targetPort": "scim", "protocol": "TCP"}])
    );
}

/// What each documented example renders beyond the invariants.
fn assert_example(case: &str, docs: &[Value]) {
    let objects = inventory(docs);
    let container = &only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let replicas = only(docs, "Deployment")["spec"]["replicas"].as_i64().expect("replicas");
    let ns = RELEASE_NAMESPACE;
    let lease = format!("{RELEASE}-leader-election");
    let common = [
        item("ServiceAccount", ns, RELEASE),
        item("Role", ns, &lease),
        item("RoleBinding", ns, &lease),
        item("Service", ns, RELEASE),
        item("Service", ns, &format!("{RELEASE}-metrics")),
        item("Deployment", ns, RELEASE),
        // Reading its namespaces (to tell a namespace teardown from a user's deletion), in every scope.
        item("ClusterRole", "", &format!("{RELEASE}-namespaces")),
        item("ClusterRoleBinding", "", &format!("{RELEASE}-namespaces")),
    ];
    let cluster_rbac = [item("ClusterRole", "", RELEASE), item("ClusterRoleBinding", "", RELEASE)];
    let expected =
        |extra: &[(String, String, String)]| -> BTreeSet<_> { common.iter().chain(extra.iter()).cloned().collect() };
    match case {
        "defaults" | "default" => {
            assert_eq!(objects, expected(&cluster_rbac), "{case}");
            assert_eq!(replicas, 2, "{case}");
            assert!(env(container, "CLEANMAIL_WATCH_NAMESPACES").is_none(), "{case}: cluster-wide watches everything");
        }
        "namespaced" => {
            let mut extra = Vec::new();
            for watched in ["contoso", "fabrikam"] {
                extra.push(item("Role", watched, RELEASE));
                extra.push(item("RoleBinding", watched, RELEASE));
            }
            assert_eq!(objects, expected(&extra), "{case}: one Role per namespace, no cluster-wide rules");
            let reader = docs
                .iter()
                .find(|d| kind(d) == "ClusterRole" && name(d) == format!("{RELEASE}-namespaces"))
                .expect("namespace reader");
            assert_eq!(
                reader["rules"],
                serde_json::json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"],
                                    "resourceNames": ["contoso", "fabrikam"]}]),
                "{case}: only the watched namespaces can be read"
            );
            assert_eq!(env(container, "CLEANMAIL_WATCH_NAMESPACES").expect("watch list")["value"], "contoso,fabrikam");
        }
        "ingress-tls" => {
            let mut extra = cluster_rbac.to_vec();
            extra.push(item("Ingress", ns, RELEASE));
            assert_eq!(objects, expected(&extra), "{case}");
            let ingress = only(docs, "Ingress");
            assert_eq!(ingress["spec"]["tls"][0]["hosts"], serde_json::json!(["scim.example.com"]));
            assert_eq!(ingress["spec"]["tls"][0]["secretName"], "scim-example-com-tls");
            let paths: Vec<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
                .as_array()
                .expect("paths")
                .iter()
                .map(|p| p["path"].as_str().expect("path"))
                .collect();
            assert_eq!(paths, ["/api/v3/scim2", "/scim/v2"], "{case}: only SCIM is exposed");
        }
        "ha-observability" => {
            let mut extra = cluster_rbac.to_vec();
            extra.extend([
                item("PodDisruptionBudget", ns, RELEASE),
                item("NetworkPolicy", ns, RELEASE),
                item("ServiceMonitor", ns, RELEASE),
                item("ConfigMap", ns, &format!("{RELEASE}-dashboard")),
            ]);
            assert_eq!(objects, expected(&extra), "{case}");
            assert_eq!(replicas, 3, "{case}");
            assert!(
                only(docs, "PodDisruptionBudget")["spec"]["minAvailable"].as_i64().expect("minAvailable") < replicas
            );
            let dashboard = only(docs, "ConfigMap");
            assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
            let embedded: Value =
                serde_json::from_str(dashboard["data"]["cleanmail-operator.json"].as_str().expect("dashboard data"))
                    .expect("the embedded dashboard is JSON");
            assert_eq!(embedded, dashboard_json(), "{case}: the ConfigMap embeds dashboards/cleanmail-operator.json");
            let monitor = only(docs, "ServiceMonitor");
            let metrics = docs.iter().find(|d| name(d) == format!("{RELEASE}-metrics")).expect("metrics Service");
            for (label, value) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("selector") {
                assert_eq!(
                    &metrics["metadata"]["labels"][label], value,
                    "the ServiceMonitor selects the metrics Service"
                );
            }
            assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
        }
        "first-tenant" => {
            let mut extra = cluster_rbac.to_vec();
            extra.extend([
                item("Namespace", "", "contoso"),
                item("Secret", "contoso", "scim-token"),
                item("CleanmailTenant", "contoso", "contoso"),
            ]);
            assert_eq!(objects, expected(&extra), "{case}");
            let tenant = only(docs, "CleanmailTenant");
            assert_eq!(tenant["apiVersion"], "cleanmail.ch/v1alpha1");
            assert_eq!(
                tenant["spec"],
                serde_json::json!({"tokenSecretRef": {"name": "scim-token"}, "domains": ["contoso.ch"], "deletionPolicy": "Delete"})
            );
            let token = secret_token(docs);
            assert!(token.len() == 48 && token.chars().all(|c| c.is_ascii_alphanumeric()), "generated token {token:?}");
            for doc in docs.iter().filter(|d| namespace(d) == "contoso" || kind(d) == "Namespace") {
                assert_eq!(
                    doc["metadata"]["annotations"]["helm.sh/resource-policy"],
                    "keep",
                    "{} survives uninstall",
                    name(doc)
                );
            }
        }
        _ => {}
    }
}

#[test]
fn chart_crds_are_the_top_level_crds() {
    let top = std::fs::read_to_string(Path::new(REPO).join("crds/cleanmail.ch.yaml")).expect("crds/cleanmail.ch.yaml");
    let chart_crds = chart().join("crds");
    let files: Vec<_> =
        std::fs::read_dir(&chart_crds).expect("chart crds/").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(files, ["cleanmail.ch.yaml"], "the chart's crds/ holds exactly the top-level CRD file");
    let copy = std::fs::read_to_string(chart_crds.join("cleanmail.ch.yaml")).expect("chart CRDs");
    assert!(
        copy == top,
        "charts/cleanmail-operator/crds/cleanmail.ch.yaml differs from crds/cleanmail.ch.yaml (the source of truth): \
         cp crds/cleanmail.ch.yaml charts/cleanmail-operator/crds/"
    );
}

#[test]
fn chart_and_every_example_lint_and_pass_server_side_validation() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(chart().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    let stems: Vec<String> =
        examples.iter().map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned()).collect();
    for documented in DOCUMENTED_EXAMPLES {
        assert!(stems.iter().any(|s| s == documented), "examples/{documented}.yaml is missing");
    }

    // What the examples expect to exist before an install.
    ensure_namespaces(&[RELEASE_NAMESPACE, "contoso", "fabrikam"]);
    install_service_monitor_crd();
    let plane = cluster::control_plane();

    let cases = std::iter::once(("defaults".to_string(), None)).chain(stems.into_iter().zip(examples.iter().map(Some)));
    for (case, values) in cases {
        let values_args: Vec<&str> = values.map(|v| vec!["-f", v.to_str().expect("utf-8 path")]).unwrap_or_default();
        run(Command::new(helm())
            .args(["lint", "--strict", "--namespace", RELEASE_NAMESPACE])
            .arg(chart())
            .args(&values_args));
        let rendered = run(&mut template(&values_args));
        let docs = documents(&rendered);
        assert_invariants(&case, &docs);
        assert_example(&case, &docs);

        let manifests = plane.dir.join(format!("chart-{case}.yaml"));
        std::fs::write(&manifests, &rendered).expect("write manifests");
        let applied = cluster::kubectl(&["apply", "--dry-run=server", "-f", manifests.to_str().expect("utf-8 path")]);
        assert_eq!(applied.lines().count(), docs.len(), "{case}: every object accepted: {applied}");
        assert!(applied.lines().all(|l| l.ends_with("(server dry run)")), "{case}: {applied}");
    }
}

#[test]
fn values_schema_and_checks_refuse_bad_values() {
    let tenant =
        ["--set", "tenant.create=true", "--set", "tenant.namespace=contoso", "--set", "tenant.domains={contoso.ch}"];
    let release_namespace_tenant = format!("tenant.namespace={RELEASE_NAMESPACE}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--set", "rbac.scope=bogus"], "/rbac/scope"),
        (vec!["--set", "replicaCount=-1"], "/replicaCount"),
        (vec!["--set", "replicaCount=two"], "/replicaCount"),
        (vec!["--set", "leaderElection.leaseDurationSeconds=1"], "/leaderElection/leaseDurationSeconds"),
        (vec!["--set", "resyncSeconds=0"], "/resyncSeconds"),
        (vec!["--set", "unknownKey=1"], "unknownKey"),
        (vec!["--set", "ingres.enabled=true"], "ingres"),
        (vec!["--set", "rbac.scope=namespaced"], "/watchNamespaces"),
        (vec!["--set", "rbac.scope=namespaced", "--set", "watchNamespaces={a,a}"], "/watchNamespaces"),
        (vec!["--set", "service.type=External"], "/service/type"),
        (vec!["--set", "ingress.enabled=true"], "/ingress/host"),
        (vec!["--set", "resources.limits=null"], "/resources"),
        (vec!["--set", "tenant.create=true"], "/tenant/"),
        ([&tenant[..], &["--set", "tenant.deletionPolicy=Destroy"]].concat(), "/tenant/deletionPolicy"),
        ([&tenant[..], &["--set", "tenant.domains={not a domain}"]].concat(), "/tenant/domains"),
        // Cross-field checks in the templates.
        ([&tenant[..], &["--set", "watchNamespaces={fabrikam}"]].concat(), "not in watchNamespaces"),
        ([&tenant[..], &["--set", &release_namespace_tenant]].concat(), "createNamespace=false"),
        (vec!["--set", "podDisruptionBudget.enabled=true", "--set", "replicaCount=1"], "must be below replicaCount"),
        (
            vec!["--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
            "metrics.service.enabled",
        ),
    ];
    for (args, expected) in cases {
        let result = output(&mut template(&args));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "helm template {args:?} succeeded but must fail");
        assert!(stderr.contains(expected), "helm template {args:?} failed without mentioning {expected:?}: {stderr}");
    }
    // The same values that are valid render.
    run(&mut template(&tenant));
    run(&mut template(&["--set", "rbac.scope=namespaced", "--set", "watchNamespaces={contoso}"]));
}

/// `helm template --dry-run=server` runs `lookup` against the cluster as install and upgrade do.
#[test]
fn first_tenant_token_is_generated_once_and_kept() {
    let plane = cluster::control_plane();
    let kubeconfig = plane.kubeconfig.to_str().expect("utf-8 path");
    let namespace = "chart-token-kept";
    ensure_namespaces(&[RELEASE_NAMESPACE, namespace]);
    let render = |extra: &[&str]| {
        let tenant = format!("tenant.namespace={namespace}");
        let rendered = run(&mut template(
            &[
                &["--dry-run=server", "--kubeconfig", kubeconfig],
                &["--set", "tenant.create=true", "--set", &tenant, "--set", "tenant.domains={kept.example}"][..],
                &["--set", "tenant.createNamespace=false"][..],
                extra,
            ]
            .concat(),
        ));
        secret_token(&documents(&rendered))
    };
    // No Secret yet: a fresh random token on each rendering.
    let first = render(&[]);
    let second = render(&[]);
    for token in [&first, &second] {
        assert!(token.len() == 48 && token.chars().all(|c| c.is_ascii_alphanumeric()), "generated token {token:?}");
    }
    assert_ne!(first, second, "tokens are random");

    // Once installed, an upgrade renders the token the Secret already holds.
    let secret = plane.dir.join("chart-token-secret.yaml");
    std::fs::write(
        &secret,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: scim-token\n  namespace: {namespace}\n  \
             labels: {{app.kubernetes.io/managed-by: Helm}}\n  \
             annotations: {{meta.helm.sh/release-name: {RELEASE}, meta.helm.sh/release-namespace: {RELEASE_NAMESPACE}}}\n\
             stringData: {{token: {first}}}\n"
        ),
    )
    .expect("write Secret");
    cluster::kubectl(&["apply", "-f", secret.to_str().expect("utf-8 path")]);
    assert_eq!(render(&[]), first, "the existing token is kept");
    // An explicit token wins.
    assert_eq!(render(&["--set", "tenant.token=explicit-token-from-values"]), "explicit-token-from-values");
}

fn dashboard_json() -> Value {
    let text = std::fs::read_to_string(chart().join("dashboards/cleanmail-operator.json")).expect("dashboard file");
    serde_json::from_str(&text).expect("dashboards/cleanmail-operator.json is JSON")
}

/// The series names src/telemetry.rs exports: `Registry::with_prefix` + each `register`ed name, with
/// the suffixes the OpenMetrics encoding adds for the metric's type.
fn exported_series() -> BTreeSet<String> {
    let source = std::fs::read_to_string(Path::new(REPO).join("src/telemetry.rs")).expect("src/telemetry.rs");
    let literal = |text: &str| -> Option<(String, usize)> {
        let start = text.find('"')? + 1;
        let end = start + text[start..].find('"')?;
        Some((text[start..end].to_string(), end + 1))
    };
    let prefix_at = source.find("with_prefix(").expect("Registry::with_prefix in src/telemetry.rs");
    let (prefix, _) = literal(&source[prefix_at..]).expect("prefix literal");
    let mut series = BTreeSet::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".register(") {
        rest = &rest[at + ".register(".len()..];
        let (metric, after_name) = literal(rest).expect("metric name literal");
        let (_help, after_help) = literal(&rest[after_name..]).expect("help literal");
        let argument = rest[after_name + after_help..].trim_start_matches([',', ' ', '\n']);
        let variable: String = argument.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let declaration = source
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{variable}:")))
            .unwrap_or_else(|| panic!("no declaration of {variable} in src/telemetry.rs"));
        let base = format!("{prefix}_{metric}");
        let suffixes: &[&str] = if declaration.contains("Histogram") {
            &["_bucket", "_sum", "_count"]
        } else if declaration.contains("Counter") {
            &["_total"]
        } else if declaration.contains("Gauge") {
            &[""]
        } else {
            panic!("unknown metric type of {variable}: {declaration}")
        };
        series.extend(suffixes.iter().map(|s| format!("{base}{s}")));
    }
    assert!(!series.is_empty(), "no metrics found in src/telemetry.rs");
    series
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping clauses that are neither functions, keywords nor numbers.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];
    // Aggregators may put their grouping clause before the parenthesis: `sum by (le) (…)`.
    const AGGREGATORS: [&str; 12] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let skip_to = |from: usize, close: char| -> usize {
        let mut i = from;
        let mut quote = None;
        while i < chars.len() {
            match (quote, chars[i]) {
                (Some(_), '\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'' | '`') => quote = Some(chars[i]),
                (None, c) if c == close => return i + 1,
                _ => {}
            }
            i += 1;
        }
        panic!("unbalanced {close:?} in {expr:?}")
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_to(i + 1, c);
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
                if matches!(chars.get(i - 1), Some('e' | 'E')) && matches!(chars.get(i), Some('+' | '-')) {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = skip_to(next + 1, ')');
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) && !AGGREGATORS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|child| collect_exprs(child, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_metrics_the_operator_exports() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket{x=~"5.."}[$__rate_interval]))) / b offset 5m"#
        ),
        ["a_bucket", "b"],
        "the PromQL scanner itself"
    );
    let exported = exported_series();
    let dashboard = dashboard_json();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string(), "a dashboard needs a uid and a title");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 4, "the dashboard has too few queries: {exprs:?}");
    // Template variables query label values of a metric as well.
    for variable in dashboard["templating"]["list"].as_array().expect("templating.list") {
        if let Some(query) = variable["definition"].as_str() {
            let inner = query.strip_prefix("label_values(").and_then(|q| q.split(',').next()).unwrap_or(query);
            exprs.push(inner.to_string());
        }
    }
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "query selects no metric: {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "query uses {name}, which src/telemetry.rs does not export ({exported:?}): {expr}"
            );
        }
    }
}

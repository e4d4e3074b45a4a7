//! The chart installed for real: `helm install` into the test control plane, then the operator
//! binary runs out of cluster with the chart's ServiceAccount token (from a TokenRequest), so every
//! API call it makes is checked against the chart's RBAC. It completes Entra's lifecycle in both
//! RBAC modes, is refused what it must not do, and `helm upgrade`/`helm uninstall` behave as the
//! chart's README says. (The control plane runs no kubelet: the Deployment's pods never start, the
//! process below stands in for them with the same identity and settings.)

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use cleanmail_operator::crd::{CleanmailTenant, CleanmailUser};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, Secret, ServiceAccount},
    rbac::v1::ClusterRole,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use support::{
    cluster::{self, REPO, eventually, wait_for_reason},
    process::{self, Replica},
    scim::{Scim, entra_user},
};

const CONVERGE: Duration = Duration::from_secs(120);
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn helm(args: &[&str]) -> String {
    let plane = cluster::control_plane();
    let output = Command::new(cluster::helm_path())
        .args(args)
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .env("HELM_CACHE_HOME", plane.dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", plane.dir.join("helm/config"))
        .env("HELM_DATA_HOME", plane.dir.join("helm/data"))
        .output()
        .expect("run helm");
    assert!(output.status.success(), "helm {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A kubeconfig for the same API server that authenticates with `token` only.
fn kubeconfig_with_token(token: &str, name: &str) -> PathBuf {
    let plane = cluster::control_plane();
    let admin = std::fs::read_to_string(&plane.kubeconfig).expect("admin kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).expect("kubeconfig YAML");
    let users = config.get_mut("users").and_then(|u| u.as_sequence_mut()).expect("kubeconfig users");
    for user in users.iter_mut() {
        if let Some(entry) = user.as_mapping_mut() {
            entry.insert("user".into(), serde_yaml::to_value(json!({"token": token})).expect("user"));
        }
    }
    let path = plane.dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).expect("kubeconfig")).expect("write kubeconfig");
    path
}

async fn client_from(kubeconfig: &PathBuf) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

/// The chart's ServiceAccount, as the pods would authenticate: a bound token from a TokenRequest.
async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let granted = accounts.create_token_request(name, &PostParams::default(), &request).await.expect("TokenRequest");
    granted.status.expect("token status").token
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what} must be forbidden, got {other:?}"),
    }
}

/// Entra's lifecycle through `replica`: create → provisioned, disable → disabled, delete → gone.
async fn entra_lifecycle(replica: &Replica, token: &str, users: &Api<CleanmailUser>, user_name: &str) {
    let scim = Scim::new(&replica.scim_url, token);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user(user_name, user_name)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    wait_for_reason(users, &id, "MailboxProvisioned").await;
    let disable = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(scim.patch(&format!("/Users/{id}"), &disable).await.status, 200);
    wait_for_reason(users, &id, "MailboxDisabled").await;
    assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    eventually("deleted", CONVERGE, || async { users.get_opt(&id).await.ok()?.is_none().then_some(()) }).await;
}

#[tokio::test]
async fn the_installed_chart_grants_exactly_what_the_operator_needs() {
    let admin = cluster::client().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let (release, namespace, tenant_ns) =
        (format!("cm-{suffix}"), format!("cleanmail-{suffix}"), format!("tenant-{suffix}"));
    let other_ns = format!("other-{suffix}");
    let scim_token = uuid::Uuid::new_v4().to_string();
    let chart = format!("{REPO}/charts/cleanmail-operator");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let other: Namespace = serde_json::from_value(json!({"metadata": {"name": other_ns}})).expect("namespace");
    namespaces.create(&PostParams::default(), &other).await.expect("create namespace");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})).expect("secret");
    Api::<Secret>::namespaced(admin.clone(), &other_ns).create(&PostParams::default(), &secret).await.expect("secret");

    // Install, cluster-wide RBAC, with a first tenant.
    helm(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &namespace,
        "--create-namespace",
        "--set",
        "tenant.create=true",
        "--set",
        &format!("tenant.namespace={tenant_ns}"),
        "--set",
        "tenant.domains={helm.ch}",
        "--set",
        &format!("tenant.token={scim_token}"),
    ]);
    let tenants: Api<CleanmailTenant> = Api::namespaced(admin.clone(), &tenant_ns);
    assert_eq!(tenants.list(&ListParams::default()).await.expect("tenants").items.len(), 1, "the first tenant");

    let token = service_account_token(&admin, &namespace, &release).await;
    let kubeconfig = kubeconfig_with_token(&token, &release);
    let as_operator = client_from(&kubeconfig).await;
    let database = cluster::control_plane().dir.join(format!("{release}.db"));
    let lease_env = vec![("CLEANMAIL_LEASE_NAMESPACE", namespace.clone()), ("CLEANMAIL_LEASE_NAME", release.clone())];
    let users: Api<CleanmailUser> = Api::namespaced(admin.clone(), &tenant_ns);
    {
        let replica = process::start(&format!("{release}-cluster"), &kubeconfig, &database, &lease_env);
        replica.wait_until_ready(CONVERGE).await;
        entra_lifecycle(&replica, &scim_token, &users, "alice@helm.ch").await;
    }
    let as_operator_namespaces: Api<Namespace> = Api::all(as_operator.clone());
    forbidden(as_operator_namespaces.delete(&other_ns, &DeleteParams::default()).await, "deleting a namespace");
    forbidden(Api::<Secret>::all(as_operator.clone()).list(&ListParams::default()).await, "listing Secrets");
    forbidden(
        Api::<CleanmailTenant>::namespaced(as_operator.clone(), &tenant_ns).delete("x", &DeleteParams::default()).await,
        "deleting a tenant",
    );

    // Upgrade to namespaced RBAC: Roles in the tenant namespace only, nothing cluster-wide.
    helm(&[
        "upgrade",
        &release,
        &chart,
        "--namespace",
        &namespace,
        "--reuse-values",
        "--set",
        "rbac.scope=namespaced",
        "--set",
        &format!("watchNamespaces={{{tenant_ns}}}"),
    ]);
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(cluster_roles.get_opt(&release).await.expect("get").is_none(), "no ClusterRole after the upgrade");
    let mut env = lease_env.clone();
    env.push(("CLEANMAIL_WATCH_NAMESPACES", tenant_ns.clone()));
    let replica = process::start(&format!("{release}-namespaced"), &kubeconfig, &database, &env);
    replica.wait_until_ready(CONVERGE).await;
    entra_lifecycle(&replica, &scim_token, &users, "bob@helm.ch").await;
    forbidden(
        Api::<Secret>::namespaced(as_operator.clone(), &other_ns).get("unrelated").await,
        "reading a Secret elsewhere",
    );
    forbidden(
        Api::<CleanmailUser>::all(as_operator.clone()).list(&ListParams::default()).await,
        "listing users cluster-wide",
    );

    // Uninstall: the operator goes, the tenant, its users and their mailboxes stay.
    let scim = Scim::new(&replica.scim_url, &scim_token);
    let kept = scim.post("/Users", &entra_user("carol@helm.ch", "carol")).await;
    assert_eq!(kept.status, 201, "{}", kept.body);
    let kept_id = kept.body["id"].as_str().expect("id").to_string();
    wait_for_reason(&users, &kept_id, "MailboxProvisioned").await;
    drop(replica);
    helm(&["uninstall", &release, "--namespace", &namespace]);
    assert!(users.get_opt(&kept_id).await.expect("get").is_some(), "users survive the uninstall");
    assert_eq!(tenants.list(&ListParams::default()).await.expect("tenants").items.len(), 1, "the tenant is kept");
    let url = format!("sqlite://{}?mode=ro", database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("database");
    let rows: Vec<(String,)> = sqlx::query_as("SELECT address FROM mailboxes WHERE address = 'carol@helm.ch'")
        .fetch_all(&pool)
        .await
        .expect("query");
    assert_eq!(rows.len(), 1, "mailboxes survive the uninstall");
    assert!(cluster_roles.get_opt(&release).await.expect("get").is_none());
}

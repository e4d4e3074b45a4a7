//! The cluster as the place where provisioning state is overridden: GitOps field managers next to
//! Entra, users that come only from Git, deletion policies, protection, drift repair, orphans and
//! adoption. Real control plane, real operator, real SQLite and PostgreSQL databases.

mod support;

use std::time::Duration;

use cleanmail_operator::crd::{CleanmailTenant, CleanmailUser};
use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    cluster::{self, eventually, ready_reason, wait_for_reason},
    scim::{Scim, assert_scim_error, entra_user},
};

const CONVERGE: Duration = Duration::from_secs(120);
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A mailbox row as the mail servers read it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    account_id: String,
    active: i64,
    display_name: Option<String>,
    quota_bytes: Option<i64>,
    owner: Option<String>,
    maildir: String,
    aliases: Vec<String>,
}

/// The mailbox database behind a tenant, opened as the mail servers or an administrator would.
struct Database {
    url: String,
}

impl Database {
    fn sqlite_default() -> Database {
        Database { url: format!("sqlite://{}", cluster::operator().database.display()) }
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.expect("open the mailbox database")
    }

    async fn row(&self, address: &str) -> Option<Row> {
        use sqlx::Row as _;
        let pool = self.pool().await;
        let found = sqlx::query(
            "SELECT account_id, active, display_name, quota_bytes, owner, maildir FROM mailboxes WHERE address = $1",
        )
        .bind(address)
        .fetch_optional(&pool)
        .await
        .expect("read mailbox");
        let row = match found {
            Some(found) => {
                let account_id: String = found.try_get("account_id").expect("mailbox column");
                let mut aliases: Vec<String> = sqlx::query_scalar("SELECT address FROM aliases WHERE account_id = $1")
                    .bind(&account_id)
                    .fetch_all(&pool)
                    .await
                    .expect("read aliases");
                aliases.sort();
                Some(Row {
                    account_id,
                    active: found.try_get("active").expect("mailbox column"),
                    display_name: found.try_get("display_name").expect("mailbox column"),
                    quota_bytes: found.try_get("quota_bytes").expect("mailbox column"),
                    owner: found.try_get("owner").expect("mailbox column"),
                    maildir: found.try_get("maildir").expect("mailbox column"),
                    aliases,
                })
            }
            None => None,
        };
        pool.close().await;
        row
    }

    async fn execute(&self, statement: &str, address: &str) {
        let pool = self.pool().await;
        sqlx::query(statement).bind(address).execute(&pool).await.expect("edit the mailbox database");
        pool.close().await;
    }

    async fn wait_for(&self, what: &str, address: &str, check: impl Fn(Option<&Row>) -> bool) -> Option<Row> {
        eventually(what, CONVERGE, || async {
            let row = self.row(address).await;
            check(row.as_ref()).then_some(row)
        })
        .await
    }
}

/// `kubectl apply --server-side --field-manager=<manager>` of one object, as Argo CD and Flux do.
fn apply(manager: &str, object: &Value) -> String {
    let file = tempfile::NamedTempFile::new().expect("manifest file");
    std::fs::write(file.path(), object.to_string()).expect("write manifest");
    let path = file.path().to_str().expect("utf-8 path");
    cluster::kubectl(&["apply", "--server-side", &format!("--field-manager={manager}"), "-f", path])
}

fn user_manifest(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cleanmail.ch/v1alpha1", "kind": "CleanmailUser",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

async fn status(users: &Api<CleanmailUser>, name: &str) -> Value {
    serde_json::to_value(users.get(name).await.expect("user").status).expect("status")
}

async fn wait_for_status(users: &Api<CleanmailUser>, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, CONVERGE, || async {
        let status = status(users, name).await;
        check(&status).then_some(status)
    })
    .await
}

/// The reasons of the Events about `name`, once one with `reason` is among them.
async fn wait_for_event(client: &kube::Client, namespace: &str, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("{reason} event for {name}"), CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let about: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        about.iter().any(|e| e.reason.as_deref() == Some(reason)).then_some(about)
    })
    .await
}

async fn create_user(scim: &Scim, user_name: &str) -> String {
    let created = scim.post("/Users", &entra_user(user_name, user_name.split('@').next().unwrap_or("x"))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn overrides_from_two_field_managers_and_entra_updates_all_survive() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "gitops", &["gitops.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let db = Database::sqlite_default();
    let id = create_user(&scim, "Olga@GitOps.ch").await;
    wait_for_reason(&users, &id, "MailboxProvisioned").await;

    // Argo CD suspends the user; Flux sets a quota and an alias. Each owns only what it applies.
    apply("argocd", &user_manifest(&namespace, &id, json!({"overrides": {"active": false}})));
    apply(
        "flux",
        &user_manifest(&namespace, &id, json!({"overrides": {"quota": "10Gi", "aliases": ["Sales@GitOps.ch"]}})),
    );
    let status = wait_for_status(&users, &id, "both managers' overrides in effect", |s| {
        s["overridden"] == json!(["active", "quota", "aliases"])
    })
    .await;
    assert_eq!(status["state"], "Suspended");
    assert_eq!(
        status["effective"],
        json!({"active": false, "quota": "10Gi", "aliases": ["sales@gitops.ch"], "deletionPolicy": "Delete"})
    );
    assert_eq!(ready_reason(&users, &id).await, Some(("True".into(), "MailboxSuspended".into())));
    let row = db.wait_for("row follows the overrides", "olga@gitops.ch", |r| r.is_some_and(|r| r.active == 0)).await;
    let row = row.expect("row");
    assert_eq!((row.quota_bytes, row.aliases.clone()), (Some(10 << 30), vec!["sales@gitops.ch".to_owned()]));

    // Entra keeps syncing as it always does: re-enable (it sees the user as active), rename the
    // display name, then a full PUT. SCIM shows exactly what Entra wrote, never the overrides.
    let patched = scim
        .patch(
            &format!("/Users/{id}"),
            &json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "Replace", "path": "active", "value": "True"},
                {"op": "Replace", "path": "displayName", "value": "Olga Overridden"}]}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let mut full = entra_user("Olga@GitOps.ch", "olga");
    full["displayName"] = json!("Olga Synced");
    let replaced = scim.put(&format!("/Users/{id}"), &full).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let read = scim.get(&format!("/Users/{id}")).await;
    assert_eq!((read.body["active"].clone(), read.body["displayName"].clone()), (json!(true), json!("Olga Synced")));
    assert!(read.body.get("overrides").is_none(), "overrides are not SCIM attributes: {}", read.body);

    // Both managers' fields survived, and applying the same manifests again meets no conflict.
    let user = users.get(&id).await.expect("user");
    let overrides = serde_json::to_value(&user.spec.overrides).expect("overrides");
    assert_eq!(overrides, json!({"active": false, "quota": "10Gi", "aliases": ["Sales@GitOps.ch"]}));
    assert_eq!(user.spec.display_name.as_deref(), Some("Olga Synced"));
    let managers: Vec<(String, String)> = user
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect();
    for expected in [("argocd", "Apply"), ("flux", "Apply"), ("cleanmail-scim", "Update")] {
        assert!(managers.iter().any(|(m, o)| m == expected.0 && o == expected.1), "{expected:?} in {managers:?}");
    }
    apply("argocd", &user_manifest(&namespace, &id, json!({"overrides": {"active": false}})));
    apply(
        "flux",
        &user_manifest(&namespace, &id, json!({"overrides": {"quota": "10Gi", "aliases": ["Sales@GitOps.ch"]}})),
    );

    // The mailbox follows the effective state: still suspended, with Entra's display name.
    db.wait_for("display name synced, still suspended", "olga@gitops.ch", |r| {
        r.is_some_and(|r| r.active == 0 && r.display_name.as_deref() == Some("Olga Synced"))
    })
    .await;
    // Entra's writes do not loop: the resource settles at one generation.
    let settled = users.get(&id).await.expect("user").metadata.generation;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(users.get(&id).await.expect("user").metadata.generation, settled);

    // `kubectl get` shows the suspension and what is overridden, without -o yaml.
    let table = cluster::kubectl(&["get", "cmu", "-n", &namespace]);
    let header: Vec<&str> = table.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "USER", "ACTIVE", "STATE", "OVERRIDDEN", "READY", "REASON", "AGE"]);
    let row = cluster::table_row(&table, &id);
    let cells: Vec<&str> = header[..7].iter().map(|column| row[*column].as_str()).collect();
    assert_eq!(
        cells,
        [
            id.as_str(),
            "Olga@GitOps.ch",
            "true",
            "Suspended",
            r#"["active","quota","aliases"]"#,
            "True",
            "MailboxSuspended"
        ]
    );

    // Argo CD drops its override (an apply without the field): Entra's `active` rules again.
    apply("argocd", &user_manifest(&namespace, &id, json!({"overrides": {}})));
    wait_for_status(&users, &id, "override released", |s| s["state"] == "Enabled").await;
    db.wait_for("enabled again", "olga@gitops.ch", |r| r.is_some_and(|r| r.active == 1)).await;
}

#[tokio::test]
async fn users_from_git_are_served_but_not_deleted_or_rewritten_by_scim() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "shared", &["shared.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);

    apply(
        "argocd",
        &user_manifest(
            &namespace,
            "info",
            json!({"userName": "info@shared.ch", "active": true, "displayName": "Shared inbox"}),
        ),
    );
    wait_for_reason(&users, "info", "MailboxProvisioned").await;
    cluster::kubectl(&["wait", "--for=condition=Ready", "cmu/info", "-n", &namespace, "--timeout=60s"]);

    let found = scim.get("/Users?filter=userName+eq+%22INFO%40shared.ch%22").await;
    assert_eq!(found.body["totalResults"], 1, "{}", found.body);
    assert_eq!(found.body["Resources"][0]["displayName"], "Shared inbox");

    // Git owns displayName: SCIM may not change it, but may set what Git leaves alone.
    let rewrite =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "Hijacked"}]});
    let refused = scim.patch("/Users/info", &rewrite).await;
    assert_scim_error(&refused, 400, Some("mutability"));
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("argocd")), "{}", refused.body);
    let title = json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": "Team inbox"}]});
    assert_eq!(scim.patch("/Users/info", &title).await.status, 200);
    assert_eq!(users.get("info").await.expect("user").spec.display_name.as_deref(), Some("Shared inbox"));

    // SCIM did not create it, so SCIM cannot delete it, until the tenant allows that.
    assert_scim_error(&scim.delete("/Users/info").await, 403, None);
    assert!(users.get_opt("info").await.expect("get").is_some());
    let tenants: Api<CleanmailTenant> = Api::namespaced(client.clone(), &namespace);
    let allow = json!({"spec": {"scimMayDeleteAppliedUsers": true}});
    tenants.patch("tenant", &PatchParams::default(), &Patch::Merge(&allow)).await.expect("allow");
    eventually("tenant allows the delete", CONVERGE, || async {
        (scim.delete("/Users/info").await.status == 204).then_some(())
    })
    .await;

    // What SCIM creates carries the label that makes it SCIM's to delete.
    let id = create_user(&scim, "paul@shared.ch").await;
    let created = users.get(&id).await.expect("user");
    assert_eq!(created.labels().get("cleanmail.ch/provisioned-by").map(String::as_str), Some("scim"));
}

#[tokio::test]
async fn deletion_follows_the_users_policy_then_the_tenants_on_postgres() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let postgres = support::mailstack::Postgres::start();
    let (namespace, token) =
        cluster::tenant_with_backend(&client, "policy", &["policy.ch"], "Disable", Some(&postgres.url)).await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let db = Database { url: postgres.url.clone() };

    let cases = [("del", Some("Delete")), ("keep", Some("Retain")), ("off", Some("Disable")), ("tenant", None)];
    let mut ids = Vec::new();
    for (name, policy) in cases {
        let id = create_user(&scim, &format!("{name}@policy.ch")).await;
        if let Some(policy) = policy {
            apply("argocd", &user_manifest(&namespace, &id, json!({"overrides": {"deletionPolicy": policy}})));
        }
        wait_for_status(&users, &id, "policy in effect", |s| {
            s["effective"]["deletionPolicy"] == json!(policy.unwrap_or("Disable"))
                && s["conditions"][0]["status"] == "True"
        })
        .await;
        ids.push(id);
    }
    for id in &ids {
        assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    }
    for id in &ids {
        eventually("user gone", CONVERGE, || async { users.get_opt(id).await.ok().filter(Option::is_none) }).await;
    }
    assert_eq!(db.row("del@policy.ch").await, None, "Delete removes the account");
    let kept = db.row("keep@policy.ch").await.expect("Retain keeps the account");
    assert_eq!((kept.active, kept.owner), (1, None), "left as it is, and released for adoption");
    for address in ["off@policy.ch", "tenant@policy.ch"] {
        let row = db.row(address).await.expect("Disable keeps the account");
        assert_eq!((row.active, row.owner), (0, None), "{address}: disabled, mail kept");
    }
    let reasons = [("MailboxDeleted", &ids[0]), ("MailboxRetained", &ids[1]), ("MailboxDisabled", &ids[2])];
    for (reason, id) in reasons {
        wait_for_event(&client, &namespace, id, reason).await;
    }
}

#[tokio::test]
async fn a_protected_user_is_held_with_its_mailbox_until_the_annotation_goes() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "protect", &["protect.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let db = Database::sqlite_default();
    let id = create_user(&scim, "quinn@protect.ch").await;
    wait_for_reason(&users, &id, "MailboxProvisioned").await;
    cluster::kubectl(&["annotate", "cmu", &id, "-n", &namespace, "cleanmail.ch/protected=true"]);

    // Entra is told no; a kubectl delete leaves the user Terminating, saying why, mailbox intact.
    let refused = scim.delete(&format!("/Users/{id}")).await;
    assert_scim_error(&refused, 403, None);
    assert!(refused.body["detail"].as_str().is_some_and(|d| d.contains("cleanmail.ch/protected")));
    users.delete(&id, &DeleteParams::default()).await.expect("delete");
    eventually("deletion held", CONVERGE, || async {
        ready_reason(&users, &id).await.filter(|(s, r)| s == "False" && r == "DeletionProtected")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(users.get(&id).await.expect("still there").metadata.deletion_timestamp.is_some());
    assert_eq!(db.row("quinn@protect.ch").await.map(|r| r.active), Some(1), "mailbox untouched");
    wait_for_event(&client, &namespace, &id, "DeletionProtected").await;

    cluster::kubectl(&["annotate", "cmu", &id, "-n", &namespace, "cleanmail.ch/protected-"]);
    eventually("user gone", CONVERGE, || async { users.get_opt(&id).await.ok().filter(Option::is_none) }).await;
    db.wait_for("deleted by the tenant's policy", "quinn@protect.ch", |r| r.is_none()).await;
}

#[tokio::test]
async fn tearing_down_a_tenant_never_deletes_its_mailboxes() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let db = Database::sqlite_default();

    // A namespace being deleted: its users go (as the namespace controller would delete them),
    // their mailboxes stay although the tenant says Delete; a user's own Delete still applies.
    let (namespace, token) = cluster::tenant(&client, "teardown", &["teardown.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let kept = create_user(&scim, "rita@teardown.ch").await;
    let own = create_user(&scim, "sam@teardown.ch").await;
    apply("flux", &user_manifest(&namespace, &own, json!({"overrides": {"deletionPolicy": "Delete"}})));
    wait_for_reason(&users, &kept, "MailboxProvisioned").await;
    wait_for_status(&users, &own, "own policy", |s| s["effective"]["deletionPolicy"] == "Delete").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&namespace, &DeleteParams::default()).await.expect("delete namespace");
    users.delete_collection(&DeleteParams::default(), &ListParams::default()).await.expect("delete users");
    for id in [&kept, &own] {
        eventually("user gone", CONVERGE, || async { users.get_opt(id).await.ok().filter(Option::is_none) }).await;
    }
    assert_eq!(db.row("rita@teardown.ch").await.map(|r| r.active), Some(1), "kept as it was");
    assert_eq!(db.row("sam@teardown.ch").await, None, "the user's own policy applies");

    // A tenant deleted on its own: its users stay; deleting one afterwards keeps its mailbox.
    let (namespace, token) = cluster::tenant(&client, "untenanted", &["untenanted.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let id = create_user(&scim, "tom@untenanted.ch").await;
    wait_for_reason(&users, &id, "MailboxProvisioned").await;
    let tenants: Api<CleanmailTenant> = Api::namespaced(client.clone(), &namespace);
    tenants.delete("tenant", &DeleteParams::default()).await.expect("delete tenant");
    eventually("user sees no tenant", CONVERGE, || async {
        ready_reason(&users, &id).await.filter(|(_, r)| r == "TenantNotFound")
    })
    .await;
    users.delete(&id, &DeleteParams::default()).await.expect("delete user");
    eventually("user gone", CONVERGE, || async { users.get_opt(&id).await.ok().filter(Option::is_none) }).await;
    assert_eq!(db.row("tom@untenanted.ch").await.map(|r| r.active), Some(1), "no tenant, no deletion");
}

#[tokio::test]
async fn a_mailbox_edited_by_hand_is_restored_at_the_next_resync() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "drift", &["drift.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let db = Database::sqlite_default();
    let id = create_user(&scim, "uma@drift.ch").await;
    apply("flux", &user_manifest(&namespace, &id, json!({"overrides": {"quota": "1Gi", "aliases": ["u@drift.ch"]}})));
    let expected = db
        .wait_for("quota applied", "uma@drift.ch", |r| r.is_some_and(|r| r.quota_bytes == Some(1 << 30)))
        .await
        .expect("row");
    wait_for_status(&users, &id, "effective quota reported", |s| s["effective"]["quota"] == "1Gi").await;

    db.execute(
        "UPDATE mailboxes SET active = 0, display_name = 'edited', quota_bytes = 1 WHERE address = $1",
        "uma@drift.ch",
    )
    .await;
    db.execute("DELETE FROM aliases WHERE address = $1", "u@drift.ch").await;
    let repaired = db.wait_for("row restored", "uma@drift.ch", |r| r == Some(&expected)).await;
    assert_eq!(repaired.map(|r| r.aliases), Some(vec!["u@drift.ch".to_owned()]));
    wait_for_event(&client, &namespace, &id, "MailboxRepaired").await;
}

#[tokio::test]
async fn orphaned_accounts_are_reported_kept_and_adopted() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "orphans", &["orphans.ch"], "Retain").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let tenants: Api<CleanmailTenant> = Api::namespaced(client.clone(), &namespace);
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let db = Database::sqlite_default();

    // An account from the mail system that was there before the operator.
    db.execute(
        "INSERT INTO mailboxes (account_id, address, local_part, domain, active, maildir) \
         VALUES ('legacy-vera', $1, 'vera', 'orphans.ch', 1, 'orphans.ch/vera-legacy/')",
        "vera@orphans.ch",
    )
    .await;
    let reported = eventually("orphan reported", CONVERGE, || async {
        let status = tenants.get("tenant").await.ok()?.status?;
        (status.orphaned_accounts == Some(1)).then_some(status)
    })
    .await;
    assert_eq!(reported.orphaned_addresses, ["vera@orphans.ch"]);
    wait_for_event(&client, &namespace, "tenant", "OrphanedAccounts").await;
    let metric = format!("cleanmail_orphaned_accounts{{tenant=\"{namespace}\"}} 1");
    eventually("orphan metric", CONVERGE, || async {
        let text = reqwest::get(format!("{}/metrics", operator.metrics_url)).await.ok()?.text().await.ok()?;
        text.contains(&metric).then_some(())
    })
    .await;
    let row = db.row("vera@orphans.ch").await.expect("never deleted");
    assert_eq!(row.account_id, "legacy-vera");

    // Entra provisions the same address: the account is adopted with its mail, not duplicated.
    let id = create_user(&scim, "Vera@Orphans.ch").await;
    wait_for_reason(&users, &id, "MailboxProvisioned").await;
    let uid = users.get(&id).await.expect("user").uid().expect("uid");
    let adopted = db.row("vera@orphans.ch").await.expect("row");
    assert_eq!((adopted.account_id.as_str(), adopted.maildir.as_str()), (uid.as_str(), "orphans.ch/vera-legacy/"));
    assert_eq!(adopted.owner, Some(format!("{namespace}/{id}")));
    wait_for_event(&client, &namespace, &id, "MailboxAdopted").await;
    eventually("no orphan left", CONVERGE, || async {
        (tenants.get("tenant").await.ok()?.status?.orphaned_accounts == Some(0)).then_some(())
    })
    .await;

    // Retained by the tenant's policy, the account becomes an orphan again, and the next user
    // with that address gets it back.
    assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    eventually("orphan again", CONVERGE, || async {
        (tenants.get("tenant").await.ok()?.status?.orphaned_accounts == Some(1)).then_some(())
    })
    .await;
    let again = create_user(&scim, "vera@orphans.ch").await;
    wait_for_reason(&users, &again, "MailboxProvisioned").await;
    let row = db.row("vera@orphans.ch").await.expect("row");
    assert_eq!(row.maildir, "orphans.ch/vera-legacy/", "the same mail, a third owner");
}

#[tokio::test]
async fn kubectl_lists_every_cleanmail_kind_and_explains_the_overrides() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "category", &["category.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    create_user(&scim, "wim@category.ch").await;
    let group = scim
        .post("/Groups", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Team"}))
        .await;
    assert_eq!(group.status, 201, "{}", group.body);

    // Categories come from discovery, which the API server publishes shortly after the CRDs.
    let listed = eventually("the cleanmail category discoverable", CONVERGE, || async {
        cluster::try_kubectl(&["get", "cleanmail", "-A"]).ok()
    })
    .await;
    let ours: Vec<&str> = listed.lines().filter(|line| line.starts_with(&namespace)).collect();
    for kind in ["cleanmailtenant.cleanmail.ch/tenant", "cleanmailuser.cleanmail.ch/", "cleanmailgroup.cleanmail.ch/"] {
        assert!(ours.iter().any(|line| line.contains(kind)), "{kind} missing from:\n{listed}");
    }
    let explained = cluster::kubectl(&["explain", "cmu.spec.overrides"]);
    for field in ["active", "quota", "aliases", "deletionPolicy"] {
        assert!(explained.contains(&format!("  {field}\t")), "{field} missing from:\n{explained}");
    }
    let status = cluster::kubectl(&["explain", "cmu.status"]);
    for field in ["state", "effective", "overridden", "conditions", "observedGeneration"] {
        assert!(status.contains(&format!("  {field}\t")), "{field} missing from:\n{status}");
    }
}

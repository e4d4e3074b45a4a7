//! Entra's provisioning lifecycle against the real control plane, the real operator and a real
//! SQLite mailbox database.

mod support;

use std::time::Duration;

use cleanmail_operator::crd::CleanmailUser;
use futures::future::join_all;
use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    cluster::{self, eventually},
    scim::{Scim, assert_scim_error, entra_user},
};

const CONVERGE: Duration = Duration::from_secs(60);

/// `Some((active, display_name))` of the mailbox row for `address`, `None` when there is none.
async fn mailbox_row(address: &str) -> Option<(i64, Option<String>)> {
    let url = format!("sqlite://{}?mode=ro", cluster::operator().database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
    let row: Option<(i64, Option<String>)> = sqlx::query_as("SELECT active, display_name FROM mailboxes WHERE address = $1")
        .bind(address)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten();
    pool.close().await;
    row
}

async fn ready_reason(api: &Api<CleanmailUser>, name: &str) -> Option<(String, String)> {
    let user = api.get_opt(name).await.ok()??;
    let ready = user.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((ready.status, ready.reason))
}

async fn wait_for_reason(api: &Api<CleanmailUser>, name: &str, reason: &str) {
    eventually(&format!("{name} Ready with reason {reason}"), CONVERGE, || async {
        ready_reason(api, name).await.filter(|(status, r)| status == "True" && r == reason)
    })
    .await;
}

#[tokio::test]
async fn entra_lifecycle_provisions_disables_and_deletes_a_mailbox() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "contoso", &["contoso.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);

    // Test Connection: a filter on a random GUID finds nobody (spaces as '+', quotes as %22).
    let probe = eventually("tenant usable", CONVERGE, || async {
        let reply = scim.get(&format!("/Users?filter=userName+eq+%22{}%22", uuid::Uuid::new_v4())).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(
        probe.body,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );
    assert!(probe.content_type.starts_with("application/scim+json"));
    assert_scim_error(&Scim::new(&operator.scim_url, "wrong-token").get("/Users?filter=userName+eq+%22x%22").await, 401, None);

    // Create.
    let created = scim.post("/Users", &entra_user("Alice@Contoso.ch", "alice")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.body["userName"], "Alice@Contoso.ch", "stored exactly as sent");
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["name"], json!({"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"}));
    assert_eq!(created.body["emails"], json!([{"primary": true, "type": "work", "value": "Alice@Contoso.ch"}]));
    let meta = &created.body["meta"];
    assert_eq!(meta["resourceType"], "User");
    assert_eq!(meta["location"], json!(format!("{}/Users/{id}", operator.scim_url)));
    assert_eq!(created.location.as_deref(), meta["location"].as_str());
    for field in ["created", "lastModified", "version"] {
        assert!(meta[field].as_str().is_some_and(|v| !v.is_empty()), "meta.{field} in {meta}");
    }
    // Read-your-write, then the controller's work.
    assert_eq!(scim.get(&format!("/Users/{id}")).await.body["id"], json!(id));
    wait_for_reason(&users, &id, "MailboxProvisioned").await;
    assert_eq!(mailbox_row("alice@contoso.ch").await, Some((1, Some("Alice Wonder".into()))));

    // Filters Entra uses; userName is case-insensitive, externalId exact.
    for (filter, expected) in [
        ("userName+eq+%22alice%40contoso.CH%22", 1),
        ("externalId+eq+%22alice%22", 1),
        ("externalId+eq+%22ALICE%22", 0),
        ("userName+eq+%22Alice%40Contoso.ch%22+and+externalId+eq+%22alice%22", 1),
    ] {
        let reply = scim.get(&format!("/Users?filter={filter}")).await;
        assert_eq!(reply.status, 200, "{filter}: {}", reply.body);
        assert_eq!(reply.body["totalResults"], expected, "{filter}: {}", reply.body);
        if expected == 1 {
            assert_eq!(reply.body["Resources"][0]["id"], json!(id));
        }
    }

    // Disable: Entra's default shape, string boolean and capitalised op.
    let disabled = scim
        .patch(
            &format!("/Users/{id}"),
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(disabled.body["active"], false);
    wait_for_reason(&users, &id, "MailboxDisabled").await;
    assert_eq!(mailbox_row("alice@contoso.ch").await.map(|(active, _)| active), Some(0), "disabled, mail kept");
    let still_listed = scim.get("/Users?filter=userName+eq+%22alice%40contoso.ch%22").await;
    assert_eq!(still_listed.body["totalResults"], 1, "an inactive user is still returned");

    // Delete.
    let deleted = scim.delete(&format!("/Users/{id}")).await;
    assert_eq!(deleted.status, 204);
    assert_scim_error(&scim.get(&format!("/Users/{id}")).await, 404, None);
    eventually("resource removed", CONVERGE, || async { users.get_opt(&id).await.ok().filter(Option::is_none) }).await;
    eventually("mailbox row removed", CONVERGE, || async { mailbox_row("alice@contoso.ch").await.is_none().then_some(()) }).await;
}

#[tokio::test]
async fn retain_policy_keeps_the_mailbox_after_delete() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "retain", &["retain.ch"], "Retain").await;
    let scim = Scim::new(&operator.scim_url, &token);
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    let created = eventually("tenant usable", CONVERGE, || async {
        let reply = scim.post("/Users", &entra_user("bob@retain.ch", "bob")).await;
        (reply.status != 401 && reply.status != 503).then_some(reply)
    })
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    wait_for_reason(&users, &id, "MailboxProvisioned").await;
    assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    eventually("resource removed", CONVERGE, || async { users.get_opt(&id).await.ok().filter(Option::is_none) }).await;
    assert_eq!(mailbox_row("bob@retain.ch").await.map(|(active, _)| active), Some(1), "kept as it was");
}

#[tokio::test]
async fn concurrent_identical_creates_yield_exactly_one_user() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "race", &["race.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    eventually("tenant usable", CONVERGE, || async { (scim.get("/Users").await.status == 200).then_some(()) }).await;

    let body = entra_user("carol@race.ch", "carol");
    let replies = join_all((0..10).map(|_| scim.post("/Users", &body))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "statuses: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in replies.iter().filter(|r| r.status != 201) {
        assert_scim_error(reply, 409, Some("uniqueness"));
    }
    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    assert_eq!(users.list(&ListParams::default()).await.expect("list").items.len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_scim_error_and_writes_nothing() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "badinput", &["badinput.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    eventually("tenant usable", CONVERGE, || async { (scim.get("/Users").await.status == 200).then_some(()) }).await;

    assert_scim_error(&scim.post("/Users", &entra_user("dave@elsewhere.ch", "dave")).await, 400, Some("invalidValue"));
    assert_scim_error(&scim.send(reqwest::Method::POST, "/Users", Some(b"{\"userName\": ")).await, 400, Some("invalidSyntax"));
    assert_scim_error(&scim.post("/Users", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "active": true})).await, 400, Some("invalidValue"));
    assert_scim_error(&scim.get("/Users?filter=userName+eq").await, 400, Some("invalidFilter"));
    assert_scim_error(&scim.get("/Users/no-such-user").await, 404, None);

    // A PATCH that fails in its last operation changes nothing.
    let created = scim.post("/Users", &entra_user("erin@badinput.ch", "erin")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    let failing = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "path": "displayName", "value": "Changed"},
        {"op": "Replace", "path": "active", "value": "perhaps"},
    ]});
    assert_scim_error(&scim.patch(&format!("/Users/{id}"), &failing).await, 400, Some("invalidValue"));
    let moved_out = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "path": "userName", "value": "erin@elsewhere.ch"},
    ]});
    assert_scim_error(&scim.patch(&format!("/Users/{id}"), &moved_out).await, 400, Some("invalidValue"));
    let current = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(current.body["displayName"], "Alice Wonder");
    assert_eq!(current.body["userName"], "erin@badinput.ch");

    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    let names: Vec<String> = users.list(&ListParams::default()).await.expect("list").items.into_iter().map(|u| u.spec.user_name).collect();
    assert_eq!(names, vec!["erin@badinput.ch".to_string()]);
}

#[tokio::test]
async fn renamed_users_keep_their_id_and_their_uniqueness() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (_namespace, token) = cluster::tenant(&client, "rename", &["rename.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    eventually("tenant usable", CONVERGE, || async { (scim.get("/Users").await.status == 200).then_some(()) }).await;

    let created = scim.post("/Users", &entra_user("frank@rename.ch", "frank")).await;
    let id = created.body["id"].as_str().expect("id").to_string();
    let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
        {"op": "Replace", "path": "userName", "value": "francis@rename.ch"},
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "francis@rename.ch"},
        {"op": "Replace", "path": "name.familyName", "value": "Renamed"},
    ]});
    let renamed = scim.patch(&format!("/Users/{id}"), &rename).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["id"], json!(id));
    let found = scim.get("/Users?filter=userName+eq+%22francis%40rename.ch%22").await;
    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(found.body["Resources"][0]["emails"], json!([{"primary": true, "type": "work", "value": "francis@rename.ch"}]));
    assert_eq!(found.body["Resources"][0]["name"]["familyName"], "Renamed");

    assert_scim_error(&scim.post("/Users", &entra_user("Francis@rename.ch", "x")).await, 409, Some("uniqueness"));
    let reused = scim.post("/Users", &entra_user("frank@rename.ch", "frank2")).await;
    assert_eq!(reused.status, 201, "the old name is free again: {}", reused.body);
    assert_ne!(reused.body["id"], json!(id));
}

#[tokio::test]
async fn discovery_documents_are_served_on_both_roots() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (_namespace, token) = cluster::tenant(&client, "discovery", &["discovery.ch"], "Delete").await;
    let cleanmail_root = operator.scim_url.replace("/scim/v2", "/api/v3/scim2");
    for base in [operator.scim_url.as_str(), cleanmail_root.as_str()] {
        let scim = Scim::new(base, &token);
        let spc = eventually("tenant usable", CONVERGE, || async {
            let reply = scim.get("/ServiceProviderConfig").await;
            (reply.status == 200).then_some(reply)
        })
        .await;
        assert_eq!(spc.body["patch"]["supported"], true);
        assert_eq!(spc.body["bulk"]["supported"], false);
        let schemas = scim.get("/Schemas").await;
        assert_eq!(schemas.body["Resources"][0]["id"], "urn:ietf:params:scim:schemas:core:2.0:User");
        let types = scim.get("/ResourceTypes").await;
        assert_eq!(types.body["Resources"][0]["endpoint"], "/Users");
    }
}

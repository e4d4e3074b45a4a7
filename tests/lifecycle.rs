//! Entra's provisioning lifecycle against the real control plane, the real operator and a real
//! SQLite mailbox database.

mod support;

use std::time::Duration;

use cleanmail_operator::crd::CleanmailUser;
use futures::future::join_all;
use kube::{Api, api::ListParams};
use serde_json::json;
use support::{
    cluster::{self, eventually, ready_reason, wait_for_reason},
    scim::{Scim, assert_scim_error, entra_user},
};

const CONVERGE: Duration = Duration::from_secs(120);

/// `Some((active, display_name))` of the mailbox row for `address`, `None` when there is none.
async fn mailbox_row(address: &str) -> Option<(i64, Option<String>)> {
    let url = format!("sqlite://{}?mode=ro", cluster::operator().database.display());
    let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT active, display_name FROM mailboxes WHERE address = $1")
            .bind(address)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten();
    pool.close().await;
    row
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
    assert_scim_error(
        &Scim::new(&operator.scim_url, "wrong-token").get("/Users?filter=userName+eq+%22x%22").await,
        401,
        None,
    );

    // Create.
    let created = scim.post("/Users", &entra_user("Alice@Contoso.ch", "alice")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.body["userName"], "Alice@Contoso.ch", "stored exactly as sent");
    assert_eq!(created.body["active"], true);
    assert_eq!(
        created.body["name"],
        json!({"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"})
    );
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
    eventually("mailbox row removed", CONVERGE, || async {
        mailbox_row("alice@contoso.ch").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn retain_policy_keeps_the_mailbox_after_delete() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "retain", &["retain.ch"], "Retain").await;
    let scim = Scim::new(&operator.scim_url, &token);
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user("bob@retain.ch", "bob")).await;
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
    scim.wait_until_usable().await;

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
    scim.wait_until_usable().await;

    assert_scim_error(&scim.post("/Users", &entra_user("dave@elsewhere.ch", "dave")).await, 400, Some("invalidValue"));
    assert_scim_error(
        &scim.send(reqwest::Method::POST, "/Users", Some(b"{\"userName\": ")).await,
        400,
        Some("invalidSyntax"),
    );
    assert_scim_error(
        &scim.post("/Users", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "active": true})).await,
        400,
        Some("invalidValue"),
    );
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
    let names: Vec<String> =
        users.list(&ListParams::default()).await.expect("list").items.into_iter().map(|u| u.spec.user_name).collect();
    assert_eq!(names, vec!["erin@badinput.ch".to_string()]);
}

#[tokio::test]
async fn renamed_users_keep_their_id_and_their_uniqueness() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (_namespace, token) = cluster::tenant(&client, "rename", &["rename.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;

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
    assert_eq!(
        found.body["Resources"][0]["emails"],
        json!([{"primary": true, "type": "work", "value": "francis@rename.ch"}])
    );
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

#[tokio::test]
async fn kubectl_shows_users_with_ready_and_reason_and_explains_the_spec() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "kubectl", &["kubectl.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user("gina@kubectl.ch", "gina")).await;
    let id = created.body["id"].as_str().expect("id").to_string();
    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    wait_for_reason(&users, &id, "MailboxProvisioned").await;

    let table = cluster::kubectl(&["get", "cleanmailusers", "-A"]);
    let header: Vec<&str> = table.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "NAME", "USER", "ACTIVE", "STATE", "OVERRIDDEN", "READY", "REASON", "AGE"]);
    let row = cluster::table_row(&table, &namespace);
    let cells: Vec<&str> = header[..8].iter().map(|column| row[*column].as_str()).collect();
    assert_eq!(
        cells,
        [namespace.as_str(), id.as_str(), "gina@kubectl.ch", "true", "Enabled", "", "True", "MailboxProvisioned"]
    );

    let explained = cluster::kubectl(&["explain", "cleanmailuser.spec"]);
    for field in ["userName", "active", "externalId", "displayName", "name", "emails"] {
        assert!(explained.contains(&format!("  {field}\t")), "{field} missing from:\n{explained}");
    }
    assert!(explained.contains("SCIM `userName`"), "{explained}");
}

#[tokio::test]
async fn paging_put_and_events_behave_as_entra_expects() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "paging", &["paging.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let mut ids = Vec::new();
    for name in ["hank", "ines", "jo"] {
        let reply = scim.post("/Users", &entra_user(&format!("{name}@paging.ch"), name)).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.push(reply.body["id"].as_str().expect("id").to_string());
    }
    ids.sort();

    let page = scim.get("/Users?startIndex=2&count=2").await;
    assert_eq!(page.body["totalResults"], 3);
    assert_eq!(page.body["startIndex"], 2);
    assert_eq!(page.body["itemsPerPage"], 2);
    let page_ids: Vec<&str> =
        page.body["Resources"].as_array().expect("resources").iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(page_ids, [ids[1].as_str(), ids[2].as_str()]);
    let beyond = scim.get("/Users?startIndex=10&count=5").await;
    assert_eq!((beyond.body["totalResults"].clone(), beyond.body["itemsPerPage"].clone()), (json!(3), json!(0)));
    assert_scim_error(&scim.get("/Users?count=many").await, 400, Some("invalidValue"));

    // PUT replaces every attribute: omitted ones are removed. The user is provisioned first, so
    // the disable below is a transition the controller reports (a user disabled before its first
    // reconcile is simply created disabled).
    let users: Api<CleanmailUser> = Api::namespaced(client.clone(), &namespace);
    wait_for_reason(&users, &ids[0], "MailboxProvisioned").await;
    let replaced = scim
        .put(&format!("/Users/{}", ids[0]), &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "hank@paging.ch", "active": false}))
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let stored = users.get(&ids[0]).await.expect("user");
    assert_eq!(
        stored.spec,
        cleanmail_operator::crd::CleanmailUserSpec {
            user_name: "hank@paging.ch".into(),
            active: Some(false),
            ..Default::default()
        }
    );
    wait_for_reason(&users, &ids[0], "MailboxDisabled").await;

    // The controller reports transitions as Events on the user.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, &namespace);
    let reasons = eventually("provision and disable events", CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(ids[0].as_str()))
            .filter_map(|e| e.reason)
            .collect();
        (reasons.iter().any(|r| r == "MailboxDisabled")).then_some(reasons)
    })
    .await;
    assert!(reasons.iter().any(|r| r == "MailboxProvisioned"), "{reasons:?}");
}

#[tokio::test]
async fn an_unreachable_backend_surfaces_as_a_condition() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    // A PostgreSQL URL nobody listens on: the tenant is accepted, provisioning is retried.
    let (namespace, token) = cluster::tenant_with_backend(
        &client,
        "down",
        &["down.ch"],
        "Delete",
        Some("postgres://cleanmail@127.0.0.1:1/cleanmail"),
    )
    .await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user("kim@down.ch", "kim")).await;
    assert_eq!(created.status, 201, "SCIM never depends on the backend: {}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    eventually("BackendUnavailable", CONVERGE, || async {
        ready_reason(&users, &id).await.filter(|(status, reason)| status == "False" && reason == "BackendUnavailable")
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", operator.metrics_url)).await.expect("metrics");
    let text = metrics.text().await.expect("metrics text");
    assert!(
        text.lines().any(|l| l.starts_with("cleanmail_backend_errors_total{") && l.contains("transient=\"true\"")),
        "the failed connection is counted as a transient backend error: {text}"
    );
}

#[tokio::test]
async fn a_postgres_tenant_provisions_mailboxes_dovecot_resolves() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let postgres = support::mailstack::Postgres::start();
    let (namespace, token) =
        cluster::tenant_with_backend(&client, "pg", &["fabrikam.ch"], "Delete", Some(&postgres.url)).await;
    let scim = Scim::new(&operator.scim_url, &token);
    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user("Lena@Fabrikam.ch", "lena")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    wait_for_reason(&users, &id, "MailboxProvisioned").await;

    let dovecot = support::mailstack::Dovecot::start(support::mailstack::Source::Postgres(&postgres));
    let found = dovecot.user_lookup("lena@fabrikam.ch").expect("Dovecot resolves the provisioned user");
    assert!(found.contains("fabrikam.ch/lena/"), "{found}");

    let disable = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(scim.patch(&format!("/Users/{id}"), &disable).await.status, 200);
    wait_for_reason(&users, &id, "MailboxDisabled").await;
    assert_eq!(dovecot.user_lookup("lena@fabrikam.ch"), None, "a disabled user no longer resolves");
}

#[tokio::test]
async fn malformed_requests_get_scim_errors_too() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (_namespace, token) = cluster::tenant(&client, "malformed", &["malformed.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;

    assert_scim_error(&scim.get("/Users?filter=%ZZ").await, 400, Some("invalidFilter"));
    assert_scim_error(&scim.get("/Users/%FF%FE").await, 400, Some("invalidSyntax"));
    assert_scim_error(&scim.get("/Nothing").await, 404, None);
    assert_eq!(oversized_post_status(&operator.scim_url, &token).await, 413);
    assert_scim_error(&scim.send(reqwest::Method::DELETE, "/Users", None).await, 405, None);
}

/// Announces a 3 MiB body and reads the answer before sending it: the server refuses on the
/// announced length, and a client still writing the body would race the closing connection.
async fn oversized_post_status(scim_url: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(scim_url).expect("url");
    let address = format!("{}:{}", url.host_str().expect("host"), url.port().expect("port"));
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "POST {}/Users HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n",
        url.path(),
        url.host_str().expect("host"),
        3 * 1024 * 1024
    );
    stream.write_all(request.as_bytes()).await.expect("send headers");
    let mut head = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut head))
        .await
        .expect("answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..read]);
    assert!(head.to_lowercase().contains("content-type: application/scim+json"), "{head}");
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status line")
}

#[tokio::test]
async fn metrics_and_request_ids_describe_the_work_done() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "metrics", &["metrics.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let created = scim.post("/Users", &entra_user("m@metrics.ch", "m")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let users: Api<CleanmailUser> = Api::namespaced(client, &namespace);
    wait_for_reason(&users, created.body["id"].as_str().expect("id"), "MailboxProvisioned").await;

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let response = http
        .get(format!("{}/Users", operator.scim_url))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("trace-me-42"));
    let generated = http.get(format!("{}/Users", operator.scim_url)).bearer_auth(&token).send().await.expect("request");
    let id = generated.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a generated request id: {id:?}");

    let text = http
        .get(format!("{}/metrics", operator.metrics_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let has = |needle: &str| text.lines().any(|line| line.starts_with(needle));
    assert!(
        has(&format!(
            "cleanmail_scim_requests_total{{method=\"POST\",route=\"/scim/v2/Users\",status=\"201\",tenant=\"{namespace}\"}}"
        )),
        "{text}"
    );
    assert!(has("cleanmail_scim_request_duration_seconds_bucket{"), "{text}");
    assert!(has("cleanmail_reconciles_total{kind=\"CleanmailUser\",result=\"success\"}"), "{text}");
    assert!(has("cleanmail_reconcile_duration_seconds_count{kind=\"CleanmailUser\"}"), "{text}");
    assert!(has("cleanmail_reconcile_backlog{kind=\"CleanmailUser\"}"), "{text}");
    assert!(has("cleanmail_leader 1"), "{text}");
    assert!(!text.contains(&token), "no token in metrics");
}

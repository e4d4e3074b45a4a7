//! SCIM Groups as distribution lists, against the real control plane, operator and SQLite database:
//! Entra's group shapes, and a list that delivers only to its active members.

mod support;

use std::time::Duration;

use cleanmail_operator::crd::CleanmailGroup;
use kube::Api;
use serde_json::json;
use support::{
    cluster::{self, eventually},
    scim::{Scim, assert_scim_error, entra_user},
};

const CONVERGE: Duration = Duration::from_secs(120);
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The documented Postfix `virtual_alias_maps` query, as Postfix runs it for `list`.
async fn list_recipients(list: &str) -> Vec<String> {
    let query = "SELECT m.address FROM lists l JOIN list_members lm ON lm.list_id = l.list_id JOIN mailboxes m ON m.account_id = lm.account_id WHERE l.address = lower('%s') AND m.active = 1";
    let url = format!("sqlite://{}?mode=ro", cluster::operator().database.display());
    let Ok(pool) = sqlx::SqlitePool::connect(&url).await else { return Vec::new() };
    let mut recipients: Vec<String> =
        sqlx::query_scalar(&query.replace("%s", list)).fetch_all(&pool).await.unwrap_or_default();
    pool.close().await;
    recipients.sort();
    recipients
}

async fn wait_for_recipients(list: &str, expected: &[&str]) {
    eventually(&format!("{list} delivering to {expected:?}"), CONVERGE, || async {
        (list_recipients(list).await == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn entra_groups_become_lists_that_deliver_to_active_members() {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, "lists", &["lists.ch"], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    let groups: Api<CleanmailGroup> = Api::namespaced(client.clone(), &namespace);

    // Test Connection fetches a random group, without members.
    let probe = eventually("tenant usable", CONVERGE, || async {
        let reply = scim.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22nobody-here%22").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(probe.body["totalResults"], 0);

    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let reply = scim.post("/Users", &entra_user(&format!("{name}@lists.ch"), name)).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        ids.push(reply.body["id"].as_str().expect("id").to_string());
    }
    let (alice, bob, carol) = (ids[0].clone(), ids[1].clone(), ids[2].clone());

    let created = scim
        .post(
            "/Groups",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                "displayName": "Sales Team",
                "meta": {"resourceType": "Group"},
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["members"], json!([]));
    assert_eq!(created.body["meta"]["resourceType"], "Group");
    let group = created.body["id"].as_str().expect("id").to_string();
    assert_scim_error(&scim.post("/Groups", &json!({"displayName": "sales team"})).await, 409, Some("uniqueness"));

    // Entra's batched member add: 204, no member list echoed.
    let add = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Add", "path": "members", "value": [
        {"$ref": null, "value": alice}, {"$ref": null, "value": bob}, {"$ref": null, "value": carol}]}]});
    let added = scim.patch(&format!("/Groups/{group}"), &add).await;
    assert_eq!(added.status, 204, "{}", added.body);
    wait_for_recipients("sales-team@lists.ch", &["alice@lists.ch", "bob@lists.ch", "carol@lists.ch"]).await;
    let status = eventually("group Ready", CONVERGE, || async {
        groups.get(&group).await.ok()?.status.filter(|s| s.member_count == 3)
    })
    .await;
    assert_eq!(status.address.as_deref(), Some("sales-team@lists.ch"));

    // A disabled member stops receiving list mail.
    let disable = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    assert_eq!(scim.patch(&format!("/Users/{bob}"), &disable).await.status, 200);
    wait_for_recipients("sales-team@lists.ch", &["alice@lists.ch", "carol@lists.ch"]).await;

    // Both removal shapes: Entra's value array, and the flagged value-filter path.
    let remove_carol = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": carol}]}]});
    assert_eq!(scim.patch(&format!("/Groups/{group}"), &remove_carol).await.status, 204);
    let remove_alice = json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}]});
    assert_eq!(scim.patch(&format!("/Groups/{group}"), &remove_alice).await.status, 204);
    wait_for_recipients("sales-team@lists.ch", &[]).await;
    let current = scim.get(&format!("/Groups/{group}")).await;
    assert_eq!(current.body["members"], json!([{"value": bob}]));
    let without_members = scim.get(&format!("/Groups/{group}?excludedAttributes=members")).await;
    assert!(without_members.body.get("members").is_none(), "{}", without_members.body);
    assert_eq!(without_members.body["displayName"], "Sales Team");
    let found = scim.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22SALES+team%22").await;
    assert_eq!(found.body["totalResults"], 1);
    assert!(found.body["Resources"][0].get("members").is_none());
    // Left out of the response, members still count for a filter that names them.
    let by_member = format!("/Groups?excludedAttributes=members&filter=members%5Bvalue+eq+%22{bob}%22%5D");
    let by_member = scim.get(&by_member).await;
    assert_eq!(by_member.body["totalResults"], 1, "{}", by_member.body);
    assert!(by_member.body["Resources"][0].get("members").is_none());
    let only_name = scim.get(&format!("/Groups/{group}?attributes=displayName")).await;
    assert!(only_name.body.get("members").is_none(), "{}", only_name.body);
    let with_members = scim.get(&format!("/Groups/{group}?attributes=members")).await;
    assert_eq!(with_members.body["members"], json!([{"value": bob}]));
    let member_values = scim.get(&format!("/Groups/{group}?attributes=members.value")).await;
    assert_eq!(member_values.body["members"], json!([{"value": bob}]), "{}", member_values.body);

    // Rename keeps the list (and its address); kubectl shows it.
    let rename =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "displayName", "value": "Sales"}]});
    let renamed = scim.patch(&format!("/Groups/{group}?attributes=displayName"), &rename).await;
    assert_eq!(renamed.status, 200, "asked for attributes: {}", renamed.body);
    assert_eq!(renamed.body["displayName"], "Sales");
    let table = cluster::kubectl(&["get", "cleanmailgroups", "-n", &namespace]);
    let header: Vec<&str> = table.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "GROUP", "ADDRESS", "MEMBERS", "READY", "REASON", "AGE"]);

    // Delete: 204, then 404, and the list is gone from the backend.
    assert_eq!(scim.delete(&format!("/Groups/{group}")).await.status, 204);
    assert_scim_error(&scim.get(&format!("/Groups/{group}")).await, 404, None);
    eventually("group resource removed", CONVERGE, || async {
        groups.get_opt(&group).await.ok().filter(Option::is_none)
    })
    .await;
    eventually("list row removed", CONVERGE, || async {
        let url = format!("sqlite://{}?mode=ro", cluster::operator().database.display());
        let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lists WHERE address = 'sales-team@lists.ch'")
            .fetch_one(&pool)
            .await
            .ok()?;
        pool.close().await;
        (count == 0).then_some(())
    })
    .await;
}

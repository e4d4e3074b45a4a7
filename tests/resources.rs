//! SCIM resource semantics end to end, against the real control plane and operator: Entra's PATCH
//! sequence checked on whole resources, entity tags with `If-Match` / `If-None-Match`, and
//! `attributes` / `excludedAttributes` on sub-attributes and extensions.
//!
//! The expected resources are written out by hand from RFC 7643/7644, not derived from the
//! endpoint's own code, so they are a second reading of what each operation must do.

mod support;

use cleanmail_operator::crd::CleanmailUser;
use reqwest::Method;
use serde_json::{Value, json};
use support::{
    cluster,
    scim::{Reply, Scim, assert_scim_error},
};

const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A client for a new tenant that the operator already serves, and the tenant's namespace.
async fn usable_tenant(name: &str, domain: &str) -> (Scim, String) {
    let client = cluster::client().await;
    let (namespace, token) = cluster::tenant(&client, name, &[domain], "Delete").await;
    let scim = Scim::new(&cluster::operator().scim_url, &token);
    scim.wait_until_usable().await;
    (scim, namespace)
}

/// The resource without `meta` (timestamps and versions are checked separately).
fn without_meta(mut resource: Value) -> Value {
    if let Some(object) = resource.as_object_mut() {
        object.remove("meta");
    }
    resource
}

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

async fn created(scim: &Scim, path: &str, body: &Value) -> String {
    let reply = scim.post(path, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn entra_patch_sequence_leaves_whole_resources_as_the_rfc_says() {
    let (scim, _) = usable_tenant("sequence", "sequence.ch").await;
    let manager = created(&scim, "/Users", &json!({"schemas": [CORE], "userName": "boss@sequence.ch"})).await;
    // Microsoft's "Create User" body with the enterprise extension and the default mappings.
    let id = created(
        &scim,
        "/Users",
        &json!({
            "schemas": [CORE, ENTERPRISE],
            "externalId": "alice", "userName": "Alice@Sequence.ch", "active": true,
            "displayName": "Alice Wonder", "title": "Engineer", "preferredLanguage": "de-CH",
            "emails": [{"primary": true, "type": "work", "value": "Alice@Sequence.ch"}],
            "name": {"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"},
            "phoneNumbers": [{"type": "work", "value": "+41 44 123 45 67"}],
            "addresses": null, "roles": [], "meta": {"resourceType": "User"},
            ENTERPRISE: {"employeeNumber": "1001", "department": "Research", "manager": null},
        }),
    )
    .await;

    // One cycle of Entra's documented shapes: capitalised ops, string booleans, value-filter paths
    // that create what they name, a path-less replace with dotted and URN keys, a bare manager id.
    let reply = scim
        .patch(
            &format!("/Users/{id}"),
            &patch_body(json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice.w@sequence.ch"},
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+41 79 000 00 00"},
                {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "Zürich"},
                {"op": "Replace", "path": "name.familyName", "value": "Wonderland"},
                {"op": "replace", "value": {"displayName": "Alice Wonderland", "name.formatted": "Alice Wonderland",
                    format!("{ENTERPRISE}:department"): "Mail"}},
                {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": manager},
                {"op": "Add", "path": "nickName", "value": "Ali"},
                {"op": "Replace", "path": "active", "value": "False"},
            ])),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let after_first_cycle = json!({
        "schemas": [CORE, ENTERPRISE], "id": id,
        "externalId": "alice", "userName": "Alice@Sequence.ch", "active": false,
        "displayName": "Alice Wonderland", "nickName": "Ali", "title": "Engineer", "preferredLanguage": "de-CH",
        "name": {"formatted": "Alice Wonderland", "familyName": "Wonderland", "givenName": "Alice"},
        "emails": [{"primary": true, "type": "work", "value": "alice.w@sequence.ch"}],
        "phoneNumbers": [{"type": "work", "value": "+41 44 123 45 67"}, {"type": "mobile", "value": "+41 79 000 00 00"}],
        "addresses": [{"type": "work", "locality": "Zürich"}],
        ENTERPRISE: {"employeeNumber": "1001", "department": "Mail", "manager": {"value": manager}},
    });
    assert_eq!(without_meta(reply.body), after_first_cycle);
    assert_eq!(without_meta(scim.get(&format!("/Users/{id}")).await.body), after_first_cycle, "as stored");

    // The same cycle again changes nothing (Entra repeats its PATCHes every cycle).
    let version = scim.get(&format!("/Users/{id}")).await.body["meta"]["version"].clone();
    let again = scim
        .patch(
            &format!("/Users/{id}"),
            &patch_body(json!([
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+41 79 000 00 00"},
                {"op": "Replace", "path": "active", "value": "False"},
            ])),
        )
        .await;
    assert_eq!(without_meta(again.body.clone()), after_first_cycle);
    assert_eq!(again.body["meta"]["version"], version, "a no-op PATCH writes nothing");

    // Re-enable with a JSON boolean, drop the mobile number by filter and the manager by path.
    let reply = scim
        .patch(
            &format!("/Users/{id}"),
            &patch_body(json!([
                {"op": "remove", "path": "phoneNumbers[type eq \"mobile\"]"},
                {"op": "Remove", "path": format!("{ENTERPRISE}:manager")},
                {"op": "replace", "path": "active", "value": true},
            ])),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut expected = after_first_cycle.clone();
    expected["active"] = json!(true);
    expected["phoneNumbers"] = json!([{"type": "work", "value": "+41 44 123 45 67"}]);
    expected[ENTERPRISE] = json!({"employeeNumber": "1001", "department": "Mail"});
    assert_eq!(without_meta(reply.body), expected);

    // A PATCH whose third operation fails changes nothing.
    let failing = scim
        .patch(
            &format!("/Users/{id}"),
            &patch_body(json!([
                {"op": "Replace", "path": "title", "value": "Lead"},
                {"op": "Replace", "path": format!("{ENTERPRISE}:department"), "value": "Ops"},
                {"op": "Replace", "path": "id", "value": "other"},
            ])),
        )
        .await;
    assert_scim_error(&failing, 400, Some("mutability"));
    assert_eq!(without_meta(scim.get(&format!("/Users/{id}")).await.body), expected);

    // Entra's group shapes: create, batched member adds with `"$ref": null`, removal by value.
    let group = created(
        &scim,
        "/Groups",
        &json!({"schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "g-1", "displayName": "Research", "meta": {"resourceType": "Group"}}),
    )
    .await;
    for operations in [
        json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}, {"$ref": null, "value": manager}]}]),
        json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}]),
        json!([{"op": "Remove", "path": "members", "value": [{"value": manager}]},
               {"op": "Replace", "path": "displayName", "value": "Research & Mail"}]),
    ] {
        let reply = scim.patch(&format!("/Groups/{group}"), &patch_body(operations)).await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    assert_eq!(
        without_meta(scim.get(&format!("/Groups/{group}")).await.body),
        json!({"schemas": [GROUP], "id": group, "externalId": "g-1", "displayName": "Research & Mail",
               "members": [{"value": id}]})
    );
    assert_eq!(
        without_meta(scim.get(&format!("/Groups/{group}?excludedAttributes=members")).await.body),
        json!({"schemas": [GROUP], "id": group, "externalId": "g-1", "displayName": "Research & Mail"})
    );
}

fn tag(reply: &Reply) -> String {
    let header = reply.etag.clone().expect("an ETag header");
    assert_eq!(reply.body["meta"]["version"].as_str(), Some(header.as_str()), "ETag equals meta.version");
    assert!(header.starts_with("W/\""), "a weak entity tag: {header}");
    header
}

#[tokio::test]
async fn entity_tags_guard_writes_and_spare_reads() {
    let (scim, namespace) = usable_tenant("etags", "etags.ch").await;
    let body = json!({"schemas": [CORE], "userName": "e@etags.ch", "displayName": "E"});
    let reply = scim.post("/Users", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_string();
    let path = format!("/Users/{id}");
    let first = tag(&reply);

    // The controller writing status is not a change of the SCIM resource.
    let users: kube::Api<CleanmailUser> = kube::Api::namespaced(cluster::client().await, &namespace);
    cluster::eventually("the user is reconciled", std::time::Duration::from_secs(120), || async {
        let status = users.get_opt(&id).await.ok().flatten()?.status?;
        (!status.conditions.is_empty()).then_some(())
    })
    .await;
    assert_eq!(tag(&scim.get(&path).await), first);

    let unchanged = scim.send_with(Method::GET, &path, None, &[("if-none-match", &first)]).await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.etag.as_deref(), Some(first.as_str()));
    assert_eq!(unchanged.body, Value::Null);

    let rename = patch_body(json!([{"op": "replace", "path": "displayName", "value": "E2"}]));
    let stale = "W/\"0-00000000\"";
    let refused =
        scim.send_with(Method::PATCH, &path, Some(rename.to_string().as_bytes()), &[("if-match", stale)]).await;
    assert_scim_error(&refused, 412, None);
    assert_eq!(scim.get(&path).await.body["displayName"], "E", "a refused PATCH writes nothing");

    let accepted =
        scim.send_with(Method::PATCH, &path, Some(rename.to_string().as_bytes()), &[("if-match", &first)]).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let second = tag(&accepted);
    assert_ne!(second, first, "a change makes a new version");
    let listed = format!("{stale}, {second}");
    assert_eq!(scim.send_with(Method::GET, &path, None, &[("if-none-match", &listed)]).await.status, 304);
    assert_eq!(scim.send_with(Method::GET, &path, None, &[("if-none-match", &first)]).await.status, 200);

    let replaced = json!({"schemas": [CORE], "userName": "e@etags.ch", "displayName": "E3"});
    let refused =
        scim.send_with(Method::PUT, &path, Some(replaced.to_string().as_bytes()), &[("if-match", &first)]).await;
    assert_scim_error(&refused, 412, None);
    let accepted =
        scim.send_with(Method::PUT, &path, Some(replaced.to_string().as_bytes()), &[("if-match", "*")]).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let third = tag(&accepted);

    assert_scim_error(&scim.send_with(Method::DELETE, &path, None, &[("if-match", &second)]).await, 412, None);
    assert_eq!(scim.get(&path).await.status, 200, "a refused DELETE deletes nothing");
    assert_eq!(scim.send_with(Method::DELETE, &path, None, &[("if-match", &third)]).await.status, 204);
    assert_eq!(scim.get(&path).await.status, 404);

    let spc = scim.get("/ServiceProviderConfig").await;
    assert_eq!(spc.body["etag"], json!({"supported": true}));
}

#[tokio::test]
async fn attributes_and_excluded_attributes_reach_sub_attributes_and_extensions() {
    let (scim, _) = usable_tenant("projection", "projection.ch").await;
    let id = created(
        &scim,
        "/Users",
        &json!({
            "schemas": [CORE, ENTERPRISE], "userName": "p@projection.ch", "displayName": "P",
            "name": {"givenName": "Pia", "familyName": "Meier"},
            "emails": [{"type": "work", "value": "p@projection.ch", "primary": true}],
            ENTERPRISE: {"department": "Sales", "employeeNumber": "7"},
        }),
    )
    .await;
    let path = format!("/Users/{id}");
    let only = scim.get(&format!("{path}?attributes=name.givenName,{ENTERPRISE}:department,emails.value")).await;
    assert_eq!(
        only.body,
        json!({"schemas": [CORE, ENTERPRISE], "id": id, "name": {"givenName": "Pia"},
               "emails": [{"value": "p@projection.ch"}], ENTERPRISE: {"department": "Sales"}})
    );
    let without =
        scim.get(&format!("{path}?excludedAttributes=name.familyName,emails.primary,meta,{ENTERPRISE}")).await;
    assert_eq!(
        without.body,
        json!({"schemas": [CORE, ENTERPRISE], "id": id, "userName": "p@projection.ch", "displayName": "P",
               "name": {"givenName": "Pia"}, "emails": [{"type": "work", "value": "p@projection.ch"}]})
    );
    let listed = scim.get(&format!("/Users?filter={ENTERPRISE}:department+eq+%22sales%22&attributes=userName")).await;
    assert_eq!(
        listed.body["Resources"],
        json!([{"schemas": [CORE, ENTERPRISE], "id": id, "userName": "p@projection.ch"}]),
        "{}",
        listed.body
    );
}

//! Microsoft's own request/response examples for Entra provisioning, replayed against the operator.
//!
//! `tests/fixtures/microsoft-scim-examples.json` holds the examples of the section "SCIM protocol
//! requests and responses" of Microsoft's "Tutorial: Develop and plan provisioning for a SCIM
//! endpoint in Microsoft Entra ID", unchanged. Everything needed to replay them against this server
//! is done here, in the open:
//!
//! - **userNames.** A tenant accepts only mail addresses in its domains as `userName`. A userName
//!   of the document that is not an address (`Test_User_00aa00aa-…`) is sent as
//!   `<userName>@<tenant domain>` wherever it appears (request bodies, filters, expected
//!   responses). The users tenant's domain is `testuser.com`, the document's own mail domain, so
//!   its addresses (`5b50642d-…@testuser.com`) are sent unchanged.
//! - **ids.** This server assigns ids. When a POST of the document returns, its response's id in
//!   the document stands for the id we got; other document ids are declared as aliases of the
//!   resource they denote before the example that uses them (see below). An alias replaces a JSON
//!   string that equals it, and the same text inside a request path.
//! - **One resource, many numbers.** The document's examples are independent snapshots: the user
//!   that "Get User", "Get User by query" and "Update User [Single-valued properties]" show has the
//!   Create User's userName but a different id and externalId in each. The replay runs them on the
//!   one user it created and declares those ids and externalIds aliases of its id and externalId.
//! - **Comparison.** The status must be the document's. Every attribute the document's response
//!   shows must be in ours with an equal value, recursively (multi-valued attributes element by
//!   element, in any order); attributes it does not show are not looked at. `meta.created`,
//!   `meta.lastModified`, `meta.version` and `meta.location` must exist where the document shows
//!   them; their values are the server's. Where the document's response cannot be right for this
//!   replay or contradicts RFC 7643/7644, the step says so with a [`Fix`] and its reason.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    cluster,
    scim::{Reply, Scim},
};

const FIXTURE: &str = include_str!("fixtures/microsoft-scim-examples.json");

/// The userName of the document's user examples (not a mail address).
const DOC_USER_NAME: &str = "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee";
/// The externalId of the document's Create User request.
const DOC_EXTERNAL_ID: &str = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef";
/// The externalId of the document's Create Group request.
const DOC_GROUP_EXTERNAL_ID: &str = "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159";
/// The address the document's "Update User [Single-valued properties]" renames its user to.
const DOC_RENAMED: &str = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com";
/// The work email of the document's Create User request.
const DOC_WORK_EMAIL: &str = "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com";

/// `meta` attributes whose values are the server's own; only their presence is compared.
const SERVER_META: [&str; 4] = ["created", "lastModified", "version", "location"];

/// RFC 7644 §3.4.2 defines `itemsPerPage` as "the number of resources returned in a list response
/// page"; the document's ListResponses say 20 (a page size) whatever they return.
const ITEMS_PER_PAGE: &str =
    "RFC 7644 §3.4.2: itemsPerPage is the number of resources returned in this page, not a page size";

/// A departure from the document's literal response, with its reason.
enum Fix {
    /// The status to expect where the document prints none.
    Status(u16, &'static str),
    /// The value to expect at this JSON pointer instead of the document's.
    Expect(&'static str, Value, &'static str),
    /// The document's attribute at this JSON pointer is not compared.
    Ignore(&'static str, &'static str),
}

fn example(name: &str) -> Value {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    fixture["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("the fixture has no example {name}"))
}

struct Replay {
    scim: Scim,
    /// (the document's value, ours).
    aliases: Vec<(String, String)>,
}

impl Replay {
    fn new(scim: Scim) -> Self {
        Replay { scim, aliases: Vec::new() }
    }

    fn alias(&mut self, doc: &str, ours: &str) {
        self.aliases.retain(|(d, _)| d != doc);
        self.aliases.push((doc.to_string(), ours.to_string()));
    }

    /// `value` with every string that equals an alias replaced by ours.
    fn substitute(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => {
                json!(self.aliases.iter().find(|(doc, _)| doc == s).map_or(s.as_str(), |(_, ours)| ours.as_str()))
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), self.substitute(v))).collect()),
            other => other.clone(),
        }
    }

    /// The document's path with the aliases replaced, and its query encoded as Entra sends it
    /// (spaces as `+`, everything else outside RFC 3986's unreserved set percent-encoded).
    fn substitute_path(&self, path: &str) -> String {
        let mut aliases: Vec<_> = self.aliases.iter().collect();
        aliases.sort_by_key(|(doc, _)| std::cmp::Reverse(doc.len()));
        let mut path = path.to_string();
        for (doc, ours) in aliases {
            path = path.replace(doc.as_str(), ours);
        }
        match path.split_once('?') {
            None => path,
            Some((resource, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((key, value)) => format!("{key}={}", encode(value)),
                        None => pair.to_string(),
                    })
                    .collect();
                format!("{resource}?{}", query.join("&"))
            }
        }
    }

    /// Sends the example's request and compares the reply with the example's response. For a POST
    /// the document's response id is first made an alias of the id we got.
    async fn run(&mut self, name: &str, fixes: &[Fix]) -> Reply {
        let example = example(name);
        let request = &example["request"];
        let method = Method::from_bytes(request["method"].as_str().expect("method").as_bytes()).expect("method");
        let path = self.substitute_path(request["path"].as_str().expect("path"));
        let body = (!request["body"].is_null()).then(|| self.substitute(&request["body"]).to_string());
        let reply = self.scim.send(method.clone(), &path, body.as_deref().map(str::as_bytes)).await;
        let context = format!(
            "example {name} ({}):\n  request: {method} {path}\n  body: {}\n  reply: {} {}",
            example["source"].as_str().unwrap_or_default(),
            body.as_deref().unwrap_or("(none)"),
            reply.status,
            reply.body
        );

        let response = &example["response"];
        let status = response["status"].as_u64().map(|s| s as u16).or_else(|| {
            fixes.iter().find_map(|f| match f {
                Fix::Status(status, _) => Some(*status),
                _ => None,
            })
        });
        let status = status.unwrap_or_else(|| panic!("{name}: the document prints no status and no Fix gives one"));
        assert_eq!(reply.status.as_u16(), status, "unexpected status\n{context}");

        if method == Method::POST
            && let (Some(doc_id), Some(our_id)) = (response["body"]["id"].as_str(), reply.body["id"].as_str())
        {
            self.alias(doc_id, our_id);
        }

        if response["body"].is_null() {
            assert!(reply.body.is_null(), "the document shows no body\n{context}");
            return reply;
        }
        assert!(
            reply.content_type.starts_with("application/scim+json"),
            "content type {:?}, the document asks for application/scim+json\n{context}",
            reply.content_type
        );
        let mut expected = self.substitute(&response["body"]);
        for fix in fixes {
            match fix {
                Fix::Status(status, why) => println!("{name}: status {status} expected: {why}"),
                Fix::Expect(pointer, value, why) => {
                    println!("{name}: {pointer} expected as {value}: {why}");
                    *expected.pointer_mut(pointer).unwrap_or_else(|| panic!("{name}: the document has no {pointer}")) =
                        value.clone();
                }
                Fix::Ignore(pointer, why) => {
                    println!("{name}: {pointer} not compared: {why}");
                    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
                    let removed =
                        expected.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|o| o.remove(key));
                    assert!(removed.is_some(), "{name}: the document has no {pointer}");
                }
            }
        }
        let mut mismatches = Vec::new();
        compare(&expected, &reply.body, "", &mut mismatches);
        assert!(
            mismatches.is_empty(),
            "the reply differs from the document's response:\n  {}\n{context}\n  expected (after substitutions and fixes): {expected}",
            mismatches.join("\n  ")
        );
        reply
    }
}

/// Collects where `actual` lacks or differs from an attribute of `expected`.
fn compare(expected: &Value, actual: &Value, at: &str, mismatches: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let here = format!("{at}/{key}");
                match actual.get(key) {
                    None => mismatches.push(format!("{here}: missing; the document shows {value}")),
                    Some(_) if at.ends_with("/meta") && SERVER_META.contains(&key.as_str()) => {}
                    Some(ours) => compare(value, ours, &here, mismatches),
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            if expected.len() != actual.len() {
                mismatches.push(format!(
                    "{at}: {} elements where the document shows {}: {} vs {}",
                    actual.len(),
                    expected.len(),
                    Value::Array(actual.clone()),
                    Value::Array(expected.clone())
                ));
                return;
            }
            let mut used = vec![false; actual.len()];
            for (index, value) in expected.iter().enumerate() {
                let matching = (0..actual.len()).find(|&j| {
                    let mut scratch = Vec::new();
                    compare(value, &actual[j], &format!("{at}/{j}"), &mut scratch);
                    !used[j] && scratch.is_empty()
                });
                match matching {
                    Some(j) => used[j] = true,
                    // Report the differences against the element at the same position.
                    None => compare(value, &actual[index], &format!("{at}/{index}"), mismatches),
                }
            }
        }
        _ if expected == actual => {}
        _ => mismatches.push(format!("{at}: {actual} where the document shows {expected}")),
    }
}

fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

async fn usable_tenant(prefix: &str, domain: &str) -> Replay {
    let operator = cluster::operator();
    let client = cluster::client().await;
    let (_namespace, token) = cluster::tenant(&client, prefix, &[domain], "Delete").await;
    let scim = Scim::new(&operator.scim_url, &token);
    scim.wait_until_usable().await;
    let mut replay = Replay::new(scim);
    replay.alias(DOC_USER_NAME, &format!("{DOC_USER_NAME}@{domain}"));
    replay
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"].as_str().unwrap_or_else(|| panic!("no id in {}", reply.body)).to_string()
}

#[tokio::test]
async fn microsoft_user_examples_replay() {
    let mut replay = usable_tenant("ms-users", "testuser.com").await;

    // Entra looks a user up before it creates it.
    replay.run("get-user-by-query-zero-results", &[Fix::Expect("/itemsPerPage", json!(0), ITEMS_PER_PAGE)]).await;

    let created = replay.run("create-user", &[]).await;
    let user = id_of(&created);

    replay.alias("5d48a0a8e9f04aa38008", &user);
    replay.alias("58342554-38d6-4ec8-948c-50044d0a33fd", DOC_EXTERNAL_ID);
    replay.run("get-user", &[]).await;

    // 5171a35d82074e068ce2 is an unknown id here; the later examples use it for their user.
    replay
        .run(
            "get-user-not-found",
            &[Fix::Ignore(
                "/detail",
                "the document: \"The detail isn't required, only status\" (RFC 7644 §3.12: detail is OPTIONAL)",
            )],
        )
        .await;

    replay.alias("2441309d85324e7793ae", &user);
    replay.alias("7fce0092-d52e-4f76-b727-3955bd72c939", DOC_EXTERNAL_ID);
    replay.run("get-user-by-query", &[Fix::Expect("/itemsPerPage", json!(1), ITEMS_PER_PAGE)]).await;

    // [Single-valued] before [Multi-valued]: the single-valued response still shows the
    // familyName and work email that the multi-valued example replaces, so the two cannot run on
    // the same user in the other order. The rename frees the userName for a second user.
    replay.alias("5171a35d82074e068ce2", &user);
    replay.alias("aa1eca08-7179-4eeb-a0be-a519f7e5cd1a", DOC_EXTERNAL_ID);
    replay.run("update-user-single-valued", &[]).await;

    // The multi-valued example's user (6764549bef60420686bc) is created by the document's Create
    // User request, with the externalId that example's response shows.
    let mut second = replay.substitute(&example("create-user")["request"]["body"]);
    second["externalId"] = json!("6c75de36-30fa-4d2d-a196-6bdcdb6b6539");
    let second = replay.scim.post("/Users", &second).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    replay.alias("6764549bef60420686bc", &id_of(&second));
    replay
        .run(
            "update-user-multi-valued",
            &[Fix::Expect(
                "/name/formatted",
                json!("givenName familyName"),
                "the document's response rewrites name.formatted, which no operation targets; RFC 7644 §3.5.2 PATCH \
                 changes only what its operations target, and the document's own General guidance is to store values \
                 as sent, not transform them",
            )],
        )
        .await;

    // The document's Disable User response shows another user than the one its request patches
    // (id CEC50F…, userName deanruiz@testuser.com, other name and email, an address), so the
    // identity attributes are expected to be the patched user's: 5171a35d82074e068ce2 as the
    // single-valued example left it.
    replay.alias("CEC50F275D83C4530A495FCF@834d0e1e5d8235f90a495fda", &user);
    const OTHER_USER: &str = "the document's Disable User response shows another user than the patched one";
    replay
        .run(
            "disable-user",
            &[
                Fix::Status(
                    200,
                    "the document prints no status line; it shows a body, so RFC 7644 §3.5.2's \"200 OK and the entire resource\"",
                ),
                Fix::Expect("/userName", json!(DOC_RENAMED), OTHER_USER),
                Fix::Expect("/name", json!({"familyName": "familyName", "givenName": "givenName"}), OTHER_USER),
                Fix::Expect("/emails", json!([{"value": DOC_WORK_EMAIL, "type": "work", "primary": true}]), OTHER_USER),
                Fix::Ignore(
                    "/addresses",
                    "no request of the document gives the replayed user an address (and /Schemas does not list addresses)",
                ),
                Fix::Expect(
                    "/meta/resourceType",
                    json!("User"),
                    "RFC 7643 §3.1: meta.resourceType is the resource type's name, \"User\" (RFC 7643 §4.1, /ResourceTypes); every other example says \"User\"",
                ),
            ],
        )
        .await;

    replay.run("delete-user", &[]).await;
    // The document: "The only time the user shouldn't be returned is when it's hard deleted".
    let gone = replay.scim.get(&format!("/Users/{user}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}

#[tokio::test]
async fn microsoft_group_examples_replay() {
    let mut replay = usable_tenant("ms-groups", "groups.testuser.com").await;

    // The member of the membership examples (f648f8d5ea4e4cd38e9c) is created by the document's
    // Create User request.
    let member = replay.substitute(&example("create-user")["request"]["body"]);
    let member = replay.scim.post("/Users", &member).await;
    assert_eq!(member.status, StatusCode::CREATED, "{}", member.body);
    let member = id_of(&member);
    replay.alias("f648f8d5ea4e4cd38e9c", &member);

    let created = replay.run("create-group", &[]).await;
    let group = id_of(&created);

    replay.alias("40734ae655284ad3abcc", &group);
    replay.alias("60f1bb27-2e1e-402d-bcc4-ec999564a194", DOC_GROUP_EXTERNAL_ID);
    let fetched = replay.run("get-group", &[]).await;
    // Beyond the document's body, which merely lacks it: excludedAttributes=members must leave
    // members out (RFC 7644 §3.4.2.5, §3.9).
    assert!(fetched.body.get("members").is_none(), "excludedAttributes=members ignored: {}", fetched.body);

    replay.alias("8c601452cc934a9ebef9", &group);
    replay.alias("0db508eb-91e2-46e4-809c-30dcbda0c685", DOC_GROUP_EXTERNAL_ID);
    let found = replay.run("get-group-by-displayname", &[Fix::Expect("/itemsPerPage", json!(1), ITEMS_PER_PAGE)]).await;
    assert!(found.body["Resources"][0].get("members").is_none(), "excludedAttributes=members ignored: {}", found.body);

    // The effects of the 204 examples are checked with a plain GET (members are "returned":
    // "default", RFC 7643 §2.4 and §4.2).
    let group_path = format!("/Groups/{group}");
    replay.alias("fa2ce26709934589afc5", &group);
    replay.run("update-group-non-member-attributes", &[]).await;
    let renamed = replay.scim.get(&group_path).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["displayName"], "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName");

    let member_ids = |reply: &Reply| -> Vec<String> {
        reply.body["members"].as_array().map_or_else(Vec::new, |members| {
            members.iter().filter_map(|m| m["value"].as_str().map(str::to_string)).collect()
        })
    };
    replay.alias("a99962b9f99d4c4fac67", &group);
    replay.run("update-group-add-members", &[]).await;
    let with_member = replay.scim.get(&group_path).await;
    assert_eq!(member_ids(&with_member), vec![member.clone()], "{}", with_member.body);

    replay.run("update-group-remove-members", &[]).await;
    let without_member = replay.scim.get(&group_path).await;
    assert_eq!(without_member.status, StatusCode::OK, "{}", without_member.body);
    assert!(member_ids(&without_member).is_empty(), "{}", without_member.body);

    replay.alias("cdb1ce18f65944079d37", &group);
    replay.run("delete-group", &[]).await;
    let gone = replay.scim.get(&group_path).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}

#[test]
fn the_comparison_reports_what_differs_and_only_that() {
    let expected = json!({
        "id": "1", "meta": {"resourceType": "User", "created": "2018-03-27T19:59:26.000Z"},
        "name": {"familyName": "F"}, "emails": [{"value": "a", "type": "work"}, {"value": "b", "type": "home"}],
    });
    let same = json!({
        "id": "1", "meta": {"resourceType": "User", "created": "2025-01-01T00:00:00Z", "version": "W/\"1\""},
        "name": {"familyName": "F", "givenName": "G"}, "emails": [{"value": "b", "type": "home"}, {"value": "a", "type": "work", "primary": true}],
        "active": true,
    });
    let mut mismatches = Vec::new();
    compare(&expected, &same, "", &mut mismatches);
    assert!(mismatches.is_empty(), "{mismatches:?}");

    let different = json!({
        "id": "2", "meta": {"resourceType": "Users"},
        "name": {"familyName": "X"}, "emails": [{"value": "a", "type": "work"}],
    });
    let mut mismatches = Vec::new();
    compare(&expected, &different, "", &mut mismatches);
    assert_eq!(mismatches.len(), 5, "{mismatches:?}");
    for pointer in ["/id:", "/meta/resourceType:", "/meta/created:", "/name/familyName:", "/emails:"] {
        assert!(mismatches.iter().any(|m| m.starts_with(pointer)), "{pointer} in {mismatches:?}");
    }
}

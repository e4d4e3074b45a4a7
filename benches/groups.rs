//! Large groups: the cost of Entra's member PATCHes on a 10,000-member group, against the same
//! operations on a 10-member group measured in the same run (the baseline). Figures are medians
//! of interleaved runs and are reported as ratios, because absolute times on shared machines say
//! little.
//!
//! `just bench` (`BENCH_ONLY=groups` for this part alone) measures; under `cargo test` the same code
//! runs once at a small size so the benchmark cannot rot unnoticed.

use crate::{common, support};
use std::{
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use cleanmail_operator::scim::{
    patch::{self, PatchRequest},
    schemas::GROUP_TYPE,
};
use serde_json::{Value, json};
use support::{cluster, scim::Scim};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

struct Settings {
    measuring: bool,
    large: usize,
    small: usize,
    endpoint_rounds: usize,
    engine_rounds: usize,
}

fn settings() -> Settings {
    let measuring = common::measuring();
    let large = common::env_or("BENCH_GROUP_MEMBERS", if measuring { 10_000 } else { 200 });
    if measuring {
        Settings { measuring, large, small: 10, endpoint_rounds: 25, engine_rounds: 200 }
    } else {
        Settings { measuring, large, small: 10, endpoint_rounds: 2, engine_rounds: 2 }
    }
}

fn member_ids(prefix: &str, count: usize) -> Vec<Value> {
    (0..count).map(|i| json!({"$ref": null, "value": format!("{prefix}-{i:06}")})).collect()
}

fn patch_body(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// The report's table rows and closing sentences, also written to `docs/benchmarks.md`.
static ROWS: Mutex<String> = Mutex::new(String::new());
static NOTES: Mutex<String> = Mutex::new(String::new());

/// One line of the report: the baseline, the large case and their ratio.
fn report(what: &str, settings: &Settings, baseline: Duration, large: Duration) {
    let ratio = large.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON);
    println!(
        "{what:<46} {:>6} members: {:>10.3?}   {:>6} members: {:>10.3?}   ratio {ratio:>6.2}x",
        settings.small, baseline, settings.large, large
    );
    let mut rows = ROWS.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(rows, "| {what} | {:.3} | {:.3} | {ratio:.2}× |", ms(baseline), ms(large));
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The PATCH engine alone: adding one member, and a batch of 100 of which half are present.
fn engine(settings: &Settings) {
    let group =
        |size: usize| json!({"schemas": [GROUP], "id": "g", "displayName": "G", "members": member_ids("u", size)});
    let add_one: PatchRequest =
        serde_json::from_value(patch_body(json!([{"op": "Add", "path": "members", "value": member_ids("new", 1)}])))
            .expect("request");
    let mut batch = member_ids("u", 50);
    batch.extend(member_ids("new", 50));
    let add_batch: PatchRequest =
        serde_json::from_value(patch_body(json!([{"op": "Add", "path": "members", "value": batch}]))).expect("request");
    let (small, large) = (group(settings.small), group(settings.large));
    for (what, request) in [("engine: add 1 member", &add_one), ("engine: add 100 members (50 present)", &add_batch)] {
        let mut samples = (Vec::new(), Vec::new());
        for _ in 0..settings.engine_rounds {
            for (resource, out) in [(&small, &mut samples.0), (&large, &mut samples.1)] {
                let started = Instant::now();
                let patched = patch::apply(resource, request, &GROUP_TYPE).expect("patch applies");
                out.push(started.elapsed());
                std::hint::black_box(patched);
            }
        }
        report(what, settings, median(samples.0), median(samples.1));
    }
}

/// A group built as Entra builds it: created empty, then filled by member PATCHes of 1,000.
async fn filled_group(scim: &Scim, name: &str, size: usize) -> String {
    let reply = scim.post("/Groups", &json!({"schemas": [GROUP], "displayName": name})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["id"].as_str().expect("id").to_string();
    let members = member_ids(name, size);
    for chunk in members.chunks(1_000) {
        let reply = scim
            .patch(&format!("/Groups/{id}"), &patch_body(json!([{"op": "Add", "path": "members", "value": chunk}])))
            .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    let stored = scim.get(&format!("/Groups/{id}")).await;
    let count = stored.body["members"].as_array().map_or(0, Vec::len);
    assert_eq!(count, size, "the group holds every member");
    id
}

/// The endpoint end to end (HTTP, PATCH engine, API server write, read model).
async fn endpoint(settings: &Settings) {
    let client = cluster::client().await;
    let name = "bench-groups";
    let (namespace, token) = cluster::tenant(&client, name, &["bench.ch"], "Delete").await;
    // The release binary, as deployed, leading for this namespace only; stopped when this returns.
    let replica = common::start_replica(name, &namespace, &[]);
    replica.wait_until_ready(Duration::from_secs(120)).await;
    let scim = Scim::new(&replica.scim_url, &token);
    scim.wait_until_usable().await;
    common::progress(format_args!("groups: filling a {}-member group", settings.large));
    let small = filled_group(&scim, "small", settings.small).await;
    let large = filled_group(&scim, "large", settings.large).await;

    common::progress(format_args!("groups: {} rounds of member PATCHes", settings.endpoint_rounds));
    let mut add = (Vec::new(), Vec::new());
    let mut remove = (Vec::new(), Vec::new());
    let mut lookup = (Vec::new(), Vec::new());
    for round in 0..settings.endpoint_rounds {
        for (id, name, add_out, remove_out, lookup_out) in [
            (&small, "small", &mut add.0, &mut remove.0, &mut lookup.0),
            (&large, "large", &mut add.1, &mut remove.1, &mut lookup.1),
        ] {
            let member = json!([{"value": format!("extra-{round}")}]);
            let path = format!("/Groups/{id}");
            let started = Instant::now();
            let reply =
                scim.patch(&path, &patch_body(json!([{"op": "Add", "path": "members", "value": member}]))).await;
            add_out.push(started.elapsed());
            assert_eq!(reply.status, 204, "{}", reply.body);

            let started = Instant::now();
            let reply =
                scim.patch(&path, &patch_body(json!([{"op": "Remove", "path": "members", "value": member}]))).await;
            remove_out.push(started.elapsed());
            assert_eq!(reply.status, 204, "{}", reply.body);

            // Entra's lookup before it updates a group.
            let started = Instant::now();
            let reply =
                scim.get(&format!("/Groups?excludedAttributes=members&filter=displayName+eq+%22{name}%22")).await;
            lookup_out.push(started.elapsed());
            assert_eq!(reply.body["totalResults"], 1, "{}", reply.body);
        }
    }
    let large_add = median(add.1);
    report("endpoint: PATCH add 1 member", settings, median(add.0), large_add);
    let api = api_server_alone(&client, &namespace, settings, [&small, &large]).await;
    report("API server alone: merge patch adding 1 member", settings, api.0, api.1);
    let over_api = large_add.as_secs_f64() / api.1.as_secs_f64().max(f64::EPSILON);
    println!("endpoint PATCH add / API server alone, {} members: {over_api:.2}x", settings.large);
    let mut notes = NOTES.lock().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(
        notes,
        "SCIM PATCH adding one member to the {}-member group takes {over_api:.2}× the API server's own merge \
         patch of the same change (the whole member list plus one).",
        settings.large
    );
    report("endpoint: PATCH remove 1 member", settings, median(remove.0), median(remove.1));
    report("endpoint: GET by displayName without members", settings, median(lookup.0), median(lookup.1));
}

/// The floor under the endpoint: the same merge patch (the whole member list plus one) sent
/// straight to the API server, which validates and stores the whole object on every write.
async fn api_server_alone(
    client: &kube::Client,
    namespace: &str,
    settings: &Settings,
    ids: [&String; 2],
) -> (Duration, Duration) {
    let groups: kube::Api<cleanmail_operator::crd::CleanmailGroup> = kube::Api::namespaced(client.clone(), namespace);
    let mut samples = (Vec::new(), Vec::new());
    for round in 0..settings.endpoint_rounds {
        for (id, out) in [(ids[0], &mut samples.0), (ids[1], &mut samples.1)] {
            let group = groups.get(id).await.expect("group");
            let mut members = serde_json::to_value(&group.spec.members).expect("members");
            if let Some(list) = members.as_array_mut() {
                list.push(json!({"value": format!("direct-{round}")}));
            }
            let body = json!({"spec": {"members": members}});
            let started = Instant::now();
            let params = kube::api::PatchParams { field_manager: Some("bench".into()), ..Default::default() };
            groups.patch(id, &params, &kube::api::Patch::Merge(&body)).await.expect("patch");
            out.push(started.elapsed());
        }
    }
    (median(samples.0), median(samples.1))
}

/// Runs this part: measures under `cargo bench`, else the smoke run.
pub fn bench() {
    let settings = settings();
    common::progress("groups: starting");
    println!("large groups: medians of interleaved runs; the ratio is large / small");
    common::progress("groups: the PATCH engine alone");
    engine(&settings);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(endpoint(&settings));
    if settings.measuring {
        write_report(&settings);
    }
}

fn write_report(settings: &Settings) {
    let table = ROWS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let notes = NOTES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let text = format!(
        "## Large groups\n\nWritten by `just bench`.\n\n\
         - Machine: {}.\n\
         - Entra's member PATCHes on a {}-member group against the same on a {}-member group (the baseline), \
         medians of {} interleaved rounds through the endpoint and {} through the PATCH engine alone.\n\n\
         | operation | {} members, ms | {} members, ms | ratio |\n| --- | ---: | ---: | ---: |\n{table}\n{notes}",
        common::machine(),
        settings.large,
        settings.small,
        settings.endpoint_rounds,
        settings.engine_rounds,
        settings.small,
        settings.large,
    );
    common::write_section("groups", &text);
}

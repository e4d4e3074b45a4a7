//! `just bench`: every benchmark of the operator, each against a baseline measured in the same
//! run, one section each in `docs/benchmarks.md`. They share one process, so one control plane
//! and one release build serve them all; each part isolates itself in namespaces of its own and
//! stops the replicas it started before the next part begins.
//!
//! - [`endpoint`]: the SCIM endpoint against peer SCIM servers and the API server's own ceiling.
//! - [`groups`]: Entra's member PATCHes on a large group against a small one.
//! - [`provisioning`]: users provisioned end to end, the controllers' tuning, and replicas
//!   starting with 10,000 and 100,000 users present.
//!
//! `BENCH_ONLY` (comma-separated `endpoint`, `groups`, `e2e`, `tuning`, `scale`) runs some parts
//! only. Under `cargo test` (`just test`) every part runs once at a tiny size, so none can rot.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;
mod endpoint;
mod groups;
mod provisioning;

fn main() {
    if common::selected("endpoint") {
        endpoint::bench();
    }
    if common::selected("groups") {
        groups::bench();
    }
    if provisioning::PARTS.iter().any(|part| common::selected(part)) {
        provisioning::bench();
    }
}

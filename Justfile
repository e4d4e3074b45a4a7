# cleanmail-operator tasks. `just test` and `just demo` install what they need first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
[private]
default:
    @just --list --unsorted

# Install the tools the tests and the demo need: PostgreSQL, Dovecot, helm, crane, etcd, kube-apiserver, kubectl.
deps:
    bash tools/install-deps.sh

# Run every unit and integration test (a real control plane, SQLite, PostgreSQL, Dovecot, the image).
test: deps image
    cargo test --locked --all-targets

# Build the container image as an OCI image archive without a Docker daemon (crane; prints its path).
image: deps
    bash tools/image.sh

# Run the operator on a local control plane with SQLite mailboxes until interrupted.
demo: deps
    cargo build --locked
    bash tools/demo.sh

# Regenerate the CRDs under crds/ from the Rust types.
crds:
    cargo run --quiet --locked -- crd > crds/cleanmail.ch.yaml

# Measure against baselines taken in the same run and write docs/benchmarks.md (`BENCH_ONLY` picks
# parts: benches/main.rs). Installs what the benchmarks need while their release build, cached
# outside the checkout as in CI, compiles beside it: the installers mostly wait on downloads.
bench:
    #!/usr/bin/env bash
    set -euo pipefail
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/target}"
    cargo bench --locked --bench benchmarks --no-run &
    build=$!
    trap 'kill "$build" 2>/dev/null || true' EXIT
    bash tools/install-deps.sh bench
    wait "$build"
    cargo bench --locked --bench benchmarks

# Format and lint.
lint:
    cargo fmt --check
    cargo clippy --locked --all-targets -- -D warnings

# Fuzz the SCIM filter parser and PATCH engine, each for `seconds` (default 60); fails on a crash.
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && for target in filter_parse patch_apply; do \
        RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
            -dict="dict/$target.dict" -max_total_time={{seconds}} -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; \
    done

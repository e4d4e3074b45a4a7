//! The committed CRDs under `crds/` are exactly what the Rust types generate.

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = cleanmail_operator::crd::to_yaml().expect("CRDs serialise");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/cleanmail.ch.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed,
        "{} is stale: run `just crds` (cargo run -- crd > crds/cleanmail.ch.yaml) and commit the result",
        path.display()
    );
}

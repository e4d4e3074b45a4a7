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

/// `kubectl explain` reads well only if every field says what it is.
#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, schema: &serde_json::Value, seen: &mut Vec<String>, missing: &mut Vec<String>) {
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let here = format!("{path}.{name}");
            seen.push(here.clone());
            if property["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
                missing.push(here.clone());
            }
            walk(&here, property, seen, missing);
            walk(&format!("{here}[]"), &property["items"], seen, missing);
        }
    }
    let (mut seen, mut missing) = (Vec::new(), Vec::new());
    for crd in cleanmail_operator::crd::all_crds() {
        let crd = serde_json::to_value(crd).expect("CRD as JSON");
        for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            walk(kind, &version["schema"]["openAPIV3Schema"], &mut seen, &mut missing);
        }
    }
    assert!(seen.iter().any(|f| f == "CleanmailUser.status.conditions[].reason"), "walked {seen:?}");
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

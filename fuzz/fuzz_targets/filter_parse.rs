//! Any text given as a `filter` query parameter: parsing must never panic, and a filter that
//! parses must evaluate against a user without panicking.

#![no_main]

use std::sync::LazyLock;

use cleanmail_operator::scim::filter::{AttrPath, Filter};
use cleanmail_operator::scim::schemas::USER_TYPE;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

static USER: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "JohnWong",
        "userName": "Bjensen@Example.com",
        "active": true,
        "displayName": "Babs Jensen",
        "loginCount": 42,
        "ratio": 1.5,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "nickName": "",
        "title": null,
        "roles": [],
        "meta": {"lastModified": "2011-05-13T04:42:34Z"},
        ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<AttrPath>();
    let Ok(filter) = text.parse::<Filter>() else {
        return;
    };
    let hit = filter.matches(&USER, &USER_TYPE);
    assert_eq!(hit, filter.matches(&USER, &USER_TYPE), "evaluation is not deterministic");
    let negated = Filter::Not(Box::new(filter.clone()));
    assert_eq!(negated.matches(&USER, &USER_TYPE), !hit, "not(f) differs from !f");
    for element in USER["emails"].as_array().into_iter().flatten() {
        let _ = filter.matches_element(element, &AttrPath::new("emails"), &USER_TYPE);
    }
    let _ = filter.eq_lookup("userName");
});

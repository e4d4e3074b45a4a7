//! Any PATCH body: applying it to a user must never panic, and a request that applies must
//! give the same result every time.

#![no_main]

use std::sync::LazyLock;

use cleanmail_operator::scim::patch::{self, PatchRequest};
use cleanmail_operator::scim::schemas::USER_TYPE;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static USER: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "JohnWong",
        "userName": "bjensen@example.com",
        "active": true,
        "displayName": "Babs Jensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Barbara Jensen"},
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z"}
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PatchRequest>(data) else {
        return;
    };
    let first = patch::apply(&USER, &request, &USER_TYPE);
    let second = patch::apply(&USER, &request, &USER_TYPE);
    assert_eq!(first, second, "applying the same request twice gave different results");
    if let Ok(patched) = first {
        assert!(patched.is_object(), "a patched resource must stay an object");
        // The patched resource must itself remain a valid starting point.
        let _ = patch::apply(&patched, &request, &USER_TYPE);
    }
});

//! Mapping between `CleanmailUser` resources and SCIM User representations. Values are stored
//! exactly as the client sent them (Entra patches every cycle when it reads back something else).

use kube::ResourceExt;
use serde_json::{Map, Value, json};

use super::{
    error::{ScimError, ScimType},
    schemas::USER_SCHEMA,
};
use crate::crd::{CleanmailUser, CleanmailUserSpec, Email, PersonName};

/// The field manager of every write the SCIM edge makes.
pub const FIELD_MANAGER: &str = "cleanmail-scim";

/// The SCIM representation of a user; `base_url` is the SCIM root the client used.
pub fn to_scim(user: &CleanmailUser, base_url: &str) -> Value {
    let id = user.name_any();
    let mut resource = spec_to_scim(&user.spec);
    resource["id"] = json!(id);
    let created = user.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string());
    let mut meta = json!({
        "resourceType": "User",
        "location": format!("{base_url}/Users/{id}"),
        "version": format!("W/\"{}\"", user.metadata.generation.unwrap_or(1)),
    });
    if let Some(created) = &created {
        meta["created"] = json!(created);
        meta["lastModified"] = json!(last_modified(user).unwrap_or_else(|| created.clone()));
    }
    resource["meta"] = meta;
    resource
}

/// The spec's attributes in SCIM form, without `id` and `meta`.
pub fn spec_to_scim(spec: &CleanmailUserSpec) -> Value {
    let mut resource = json!({
        "schemas": [USER_SCHEMA],
        "userName": spec.user_name,
        "active": spec.active,
    });
    if let Some(external_id) = &spec.external_id {
        resource["externalId"] = json!(external_id);
    }
    if let Some(display_name) = &spec.display_name {
        resource["displayName"] = json!(display_name);
    }
    if let Some(name) = &spec.name {
        resource["name"] = serde_json::to_value(name).unwrap_or_default();
    }
    if !spec.emails.is_empty() {
        resource["emails"] = serde_json::to_value(&spec.emails).unwrap_or_default();
    }
    resource
}

/// When the user's spec last changed: the newest time any writer other than a status writer touched it.
fn last_modified(user: &CleanmailUser) -> Option<String> {
    user.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|entry| entry.time.as_ref())
        .map(|time| time.0)
        .max()
        .map(|time| time.to_string())
}

/// Reads a SCIM User representation (as sent with POST or PUT, or produced by PATCH) into a spec.
/// Attribute names are case-insensitive; `id`, `meta` and attributes this endpoint does not model are
/// ignored; a JSON `null` is the same as an absent attribute.
pub fn spec_from_scim(body: &Value) -> Result<CleanmailUserSpec, ScimError> {
    let object = body
        .as_object()
        .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "the request body must be a JSON object"))?;
    if let Some(schemas) = field(object, "schemas") {
        let schemas = schemas.as_array().ok_or_else(|| invalid("schemas must be an array of strings"))?;
        if !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(USER_SCHEMA))) {
            return Err(ScimError::bad_request(ScimType::InvalidSyntax, format!("schemas must contain {USER_SCHEMA}")));
        }
    }
    let user_name =
        string(object, "userName")?.filter(|s| !s.trim().is_empty()).ok_or_else(|| invalid("userName is required"))?;
    Ok(CleanmailUserSpec {
        user_name,
        active: boolean(object, "active")?.unwrap_or(true),
        external_id: string(object, "externalId")?,
        display_name: string(object, "displayName")?,
        name: person_name(object)?,
        emails: emails(object)?,
    })
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v).filter(|v| !v.is_null())
}

fn string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ScimError> {
    match field(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{name} must be a string, not {other}"))),
    }
}

/// Booleans arrive as JSON booleans or, from Entra, as the strings "True"/"False".
pub fn coerce_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn boolean(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, ScimError> {
    field(object, name)
        .map(|value| coerce_boolean(value).ok_or_else(|| invalid(format!("{name} must be a boolean, not {value}"))))
        .transpose()
}

fn person_name(object: &Map<String, Value>) -> Result<Option<PersonName>, ScimError> {
    let Some(value) = field(object, "name") else { return Ok(None) };
    let name = value.as_object().ok_or_else(|| invalid("name must be an object"))?;
    let parsed = PersonName {
        formatted: string(name, "formatted")?,
        given_name: string(name, "givenName")?,
        family_name: string(name, "familyName")?,
    };
    Ok((parsed != PersonName::default()).then_some(parsed))
}

fn emails(object: &Map<String, Value>) -> Result<Vec<Email>, ScimError> {
    let Some(value) = field(object, "emails") else { return Ok(Vec::new()) };
    let entries = value.as_array().ok_or_else(|| invalid("emails must be an array"))?;
    entries
        .iter()
        .map(|entry| {
            let entry = entry.as_object().ok_or_else(|| invalid("each of emails must be an object"))?;
            Ok(Email {
                value: string(entry, "value")?,
                type_: string(entry, "type")?,
                primary: boolean(entry, "primary")?,
            })
        })
        .collect()
}

/// A Kubernetes object name derived from a `userName`, so identical concurrent creates collide at
/// the API server (which makes exactly one of them win) and `kubectl get` stays readable.
pub fn object_name(user_name: &str) -> String {
    let mapped: String = user_name
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' => c.to_string(),
            '@' => "-at-".to_string(),
            _ => "-".to_string(),
        })
        .collect();
    let mut name = String::new();
    for segment in mapped.split('.') {
        let segment = segment.trim_matches('-');
        if segment.is_empty() {
            continue;
        }
        if name.len() + segment.len() + 1 > 240 {
            break;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(segment);
    }
    if name.is_empty() { "user".to_string() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_create_body_maps_to_spec_and_back() {
        let body = json!({
            "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "AliceW", "userName": "Alice@Contoso.ch", "active": true,
            "displayName": "Alice Wonder", "addresses": null, "manager": null, "roles": [],
            "emails": [{"primary": true, "type": "work", "value": "Alice@Contoso.ch"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"},
        });
        let spec = spec_from_scim(&body).expect("valid");
        assert_eq!(
            spec_to_scim(&spec),
            json!({
                "schemas": [USER_SCHEMA], "externalId": "AliceW", "userName": "Alice@Contoso.ch",
                "active": true, "displayName": "Alice Wonder",
                "emails": [{"primary": true, "type": "work", "value": "Alice@Contoso.ch"}],
                "name": {"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"},
            })
        );
    }

    #[test]
    fn string_booleans_and_case_insensitive_names_are_accepted() {
        let spec = spec_from_scim(&json!({"USERNAME": "a@b.ch", "Active": "False"})).expect("valid");
        assert_eq!(spec.user_name, "a@b.ch");
        assert!(!spec.active);
    }

    #[test]
    fn missing_or_ill_typed_attributes_are_client_errors() {
        for body in [
            json!({}),
            json!({"userName": ""}),
            json!({"userName": 5}),
            json!({"userName": "a@b.ch", "active": "maybe"}),
            json!({"userName": "a@b.ch", "emails": {"value": "x"}}),
            json!({"userName": "a@b.ch", "schemas": ["urn:other"]}),
            json!([]),
        ] {
            let error = spec_from_scim(&body).expect_err(&body.to_string());
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        }
    }

    #[test]
    fn object_names_are_valid_dns_subdomains() {
        assert_eq!(object_name("Alice.Smith@Contoso.ch"), "alice.smith-at-contoso.ch");
        assert_eq!(object_name("_x..y@@z_"), "x.y-at--at-z");
        assert_eq!(object_name("..."), "user");
        assert!(object_name(&"a".repeat(500)).len() <= 253);
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed members with their new
/// value, removed members as `null`. Used so the SCIM writer sends only the fields it changes.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, old_value) in old {
                match new.get(key) {
                    None => {
                        patch.insert(key.clone(), Value::Null);
                    }
                    Some(new_value) if new_value != old_value => {
                        patch.insert(key.clone(), merge_patch(old_value, new_value));
                    }
                    Some(_) => {}
                }
            }
            for (key, new_value) in new {
                if !old.contains_key(key) {
                    patch.insert(key.clone(), new_value.clone());
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod merge_patch_tests {
    use super::*;

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"a": 1, "b": {"c": 1, "d": 2}, "e": [1], "f": "x"});
        let new = json!({"a": 1, "b": {"c": 2}, "e": [1, 2], "g": true});
        assert_eq!(merge_patch(&old, &new), json!({"b": {"c": 2, "d": null}, "e": [1, 2], "f": null, "g": true}));
    }
}

#[cfg(test)]
mod entra_patch_tests {
    use super::*;
    use crate::scim::{
        patch::{self, PatchRequest},
        schemas::UserSchema,
    };

    fn patched(spec: &CleanmailUserSpec, operations: Value) -> Result<CleanmailUserSpec, ScimError> {
        let request: PatchRequest = serde_json::from_value(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        }))
        .map_err(|e| ScimError::bad_request(ScimType::InvalidSyntax, e.to_string()))?;
        let resource = patch::apply(&spec_to_scim(spec), &request, &UserSchema)?;
        spec_from_scim(&resource)
    }

    /// The shapes of ENTRA.md items 8–14, in one sequence, on the real User schema.
    #[test]
    fn entra_patch_shapes_leave_the_spec_as_the_rfc_reading_says() {
        let start = CleanmailUserSpec { user_name: "alice@contoso.ch".into(), active: true, ..Default::default() };
        let spec = patched(
            &start,
            json!([
                // Item 13: a work email that does not exist yet is created.
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "alice@contoso.ch"},
                // Item 8: the documented multi-valued and sub-attribute replaces.
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "alice.w@contoso.ch"},
                {"op": "Replace", "path": "name.familyName", "value": "Wonder"},
                // Item 12: one path-less op with dotted keys, including an extension attribute.
                {"op": "replace", "value": {
                    "displayName": "Alice Wonder", "name.givenName": "Alice",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"}},
                // Item 14: a manager as a plain string (not modelled here; accepted, not stored).
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m-1"},
                // Item 11: Entra's string boolean and a mapped attribute this schema does not model.
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": "nickName", "value": "Babs"},
            ]),
        )
        .expect("Entra's PATCH is accepted");
        assert_eq!(
            spec,
            CleanmailUserSpec {
                user_name: "alice@contoso.ch".into(),
                active: false,
                display_name: Some("Alice Wonder".into()),
                name: Some(PersonName {
                    given_name: Some("Alice".into()),
                    family_name: Some("Wonder".into()),
                    formatted: None
                }),
                emails: vec![Email {
                    value: Some("alice.w@contoso.ch".into()),
                    type_: Some("work".into()),
                    primary: None
                }],
                external_id: None,
            }
        );
        // Item 9: rename, then re-enable with a lower-case op and a JSON boolean (the flagged shape).
        let renamed = patched(
            &spec,
            json!([{"op": "Replace", "path": "userName", "value": "alice.wonder@contoso.ch"},
                   {"op": "replace", "path": "active", "value": true}]),
        )
        .expect("rename");
        assert_eq!(renamed, CleanmailUserSpec { user_name: "alice.wonder@contoso.ch".into(), active: true, ..spec });
    }

    #[test]
    fn read_only_attributes_and_bad_values_are_refused() {
        let start = CleanmailUserSpec { user_name: "a@contoso.ch".into(), active: true, ..Default::default() };
        let error =
            patched(&start, json!([{"op": "replace", "path": "id", "value": "x"}])).expect_err("id is read-only");
        assert_eq!(error.scim_type, Some(ScimType::Mutability));
        let error = patched(&start, json!([{"op": "Remove", "path": "userName"}])).expect_err("userName is required");
        assert_eq!(error.scim_type, Some(ScimType::InvalidValue));
    }
}

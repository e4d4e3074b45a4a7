//! Mapping between `CleanmailUser` resources and SCIM User representations. Values are stored
//! exactly as the client sent them (Entra patches every cycle when it reads back something else).

use serde_json::{Map, Value, json};

use super::{
    error::{ScimError, ScimType},
    resource::{ScimResource, boolean, field, invalid, string},
    schemas::{self, USER_SCHEMA},
};
use crate::{
    crd::{CleanmailUser, CleanmailUserSpec, Email, PersonName},
    tenant::Tenant,
};

impl ScimResource for CleanmailUser {
    type Spec = CleanmailUserSpec;
    const RESOURCE_TYPE: &'static str = "User";
    const ENDPOINT: &'static str = "Users";
    const UNIQUE_ATTRIBUTE: &'static str = "userName";

    fn spec(&self) -> &CleanmailUserSpec {
        &self.spec
    }
    fn build(name: &str, spec: CleanmailUserSpec) -> Self {
        CleanmailUser::new(name, spec)
    }
    fn spec_to_scim(spec: &CleanmailUserSpec) -> Value {
        spec_to_scim(spec)
    }
    fn spec_from_scim(body: &Value) -> Result<CleanmailUserSpec, ScimError> {
        spec_from_scim(body)
    }
    fn unique_value(spec: &CleanmailUserSpec) -> &str {
        &spec.user_name
    }
    /// A tenant provisions only addresses in its own domains.
    fn check(tenant: &Tenant, spec: &CleanmailUserSpec) -> Result<(), ScimError> {
        if tenant.allows(&spec.user_name) {
            return Ok(());
        }
        Err(ScimError::bad_request(
            ScimType::InvalidValue,
            format!(
                "userName {:?} is not a mail address in this tenant's domains ({})",
                spec.user_name,
                tenant.domains.join(", ")
            ),
        ))
    }
    fn schema() -> &'static dyn schemas::ResourceSchema {
        &schemas::UserSchema
    }
}

/// The spec's attributes in SCIM form, without `id` and `meta`.
pub fn spec_to_scim(spec: &CleanmailUserSpec) -> Value {
    let mut resource = json!({
        "schemas": [USER_SCHEMA],
        "userName": spec.user_name,
    });
    if let Some(active) = spec.active {
        resource["active"] = json!(active);
    }
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
        active: boolean(object, "active")?,
        external_id: string(object, "externalId")?,
        display_name: string(object, "displayName")?,
        name: person_name(object)?,
        emails: emails(object)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::resource::object_name;

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
        assert_eq!(spec.active, Some(false));
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
        let start =
            CleanmailUserSpec { user_name: "alice@contoso.ch".into(), active: Some(true), ..Default::default() };
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
                active: Some(false),
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
        assert_eq!(
            renamed,
            CleanmailUserSpec { user_name: "alice.wonder@contoso.ch".into(), active: Some(true), ..spec }
        );
    }

    #[test]
    fn read_only_attributes_and_bad_values_are_refused() {
        let start = CleanmailUserSpec { user_name: "a@contoso.ch".into(), active: Some(true), ..Default::default() };
        let error =
            patched(&start, json!([{"op": "replace", "path": "id", "value": "x"}])).expect_err("id is read-only");
        assert_eq!(error.scim_type, Some(ScimType::Mutability));
        let error = patched(&start, json!([{"op": "Remove", "path": "userName"}])).expect_err("userName is required");
        assert_eq!(error.scim_type, Some(ScimType::InvalidValue));
    }
}

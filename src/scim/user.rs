//! Mapping between `CleanmailUser` resources and SCIM User representations. Values are stored
//! exactly as the client sent them (Entra patches every cycle when it reads back something else).

use serde_json::{Value, json};

use super::{
    error::{ScimError, ScimType},
    resource::ScimResource,
    schemas::{self, ENTERPRISE_USER_SCHEMA, USER_SCHEMA, USER_TYPE},
};
use crate::{
    crd::{CleanmailUser, CleanmailUserSpec, USER_FINALIZER},
    tenant::Tenant,
};

impl ScimResource for CleanmailUser {
    type Spec = CleanmailUserSpec;
    const RESOURCE_TYPE: &'static str = "User";
    const ENDPOINT: &'static str = "Users";
    const UNIQUE_ATTRIBUTE: &'static str = "userName";
    const FINALIZER: &'static str = USER_FINALIZER;

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
    fn resource_type() -> &'static schemas::ResourceType {
        &USER_TYPE
    }
    fn keep_cluster_fields(desired: CleanmailUserSpec, current: &CleanmailUserSpec) -> CleanmailUserSpec {
        CleanmailUserSpec { overrides: current.overrides.clone(), ..desired }
    }
}

/// Where the cluster's overrides live in the spec; SCIM never shows them.
const OVERRIDES_SPEC_KEY: &str = "overrides";

/// Where the Enterprise User extension lives in the spec; in SCIM it lives under its URN.
const ENTERPRISE_SPEC_KEY: &str = "enterpriseUser";

/// The spec's attributes in SCIM form, without `id` and `meta`. The spec's field names are the
/// SCIM attribute names, so only the extension needs moving.
pub fn spec_to_scim(spec: &CleanmailUserSpec) -> Value {
    let mut resource = serde_json::to_value(spec).unwrap_or_else(|_| json!({}));
    let mut schemas = vec![USER_SCHEMA];
    if let Some(object) = resource.as_object_mut() {
        object.remove(OVERRIDES_SPEC_KEY);
        let extension = object.remove(ENTERPRISE_SPEC_KEY).filter(|e| e.as_object().is_some_and(|e| !e.is_empty()));
        if let Some(extension) = extension {
            object.insert(ENTERPRISE_USER_SCHEMA.into(), extension);
            schemas.push(ENTERPRISE_USER_SCHEMA);
        }
        object.insert("schemas".into(), json!(schemas));
    }
    resource
}

/// Reads a SCIM User representation (as sent with POST or PUT, or produced by PATCH) into a spec,
/// through the canonical form the User schema table defines.
pub fn spec_from_scim(body: &Value) -> Result<CleanmailUserSpec, ScimError> {
    let mut canonical = USER_TYPE.read(body)?;
    if let Some(extension) = canonical.remove(ENTERPRISE_USER_SCHEMA) {
        canonical.insert(ENTERPRISE_SPEC_KEY.into(), extension);
    }
    serde_json::from_value(Value::Object(canonical))
        .map_err(|e| ScimError::internal(format!("the User schema and the CleanmailUser spec disagree: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::resource::object_name;

    #[test]
    fn entra_create_body_maps_to_spec_and_back() {
        let body = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
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

    /// Every attribute of the User schema tables reaches the spec and comes back unchanged, so
    /// the tables and the CRD cannot drift apart.
    #[test]
    fn every_modelled_attribute_survives_the_spec() {
        let full = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "bjensen@example.com", "externalId": "bjensen", "active": false,
            "displayName": "Babs Jensen", "nickName": "Babs", "title": "Tour Guide", "preferredLanguage": "de-CH",
            "name": {"formatted": "Ms. Barbara J Jensen", "familyName": "Jensen", "givenName": "Barbara"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
            "phoneNumbers": [{"value": "555-555-5555", "type": "work", "primary": false}, {"value": "555-555-4444", "type": "mobile"}],
            "addresses": [{"type": "work", "formatted": "100 Universal City Plaza\nHollywood, CA 91608 USA",
                           "streetAddress": "100 Universal City Plaza", "locality": "Hollywood", "region": "CA",
                           "postalCode": "91608", "country": "USA", "primary": true}],
            ENTERPRISE_USER_SCHEMA: {"employeeNumber": "701984", "costCenter": "4130", "organization": "Universal Studios",
                                     "division": "Theme Park", "department": "Tour Operations", "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}},
        });
        for schema in schemas::all_schemas().filter(|s| s.id != schemas::GROUP_SCHEMA) {
            let container = if schema.id == USER_SCHEMA { &full } else { &full[schema.id] };
            for attribute in schema.attributes {
                assert!(
                    crate::scim::filter::get_ci(container, attribute.name).is_some(),
                    "{} not in the sample",
                    attribute.name
                );
            }
        }
        let spec = spec_from_scim(&full).expect("valid");
        assert_eq!(spec_to_scim(&spec), full);
        assert_eq!(
            spec.enterprise_user.and_then(|e| e.manager).and_then(|m| m.value).as_deref(),
            Some("26118915-6090-4610-87e4-49d8ca9f808d")
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
    use crate::crd::{Email, EnterpriseUser, Manager, PersonName};
    use crate::scim::patch::{self, PatchRequest};

    fn patched(spec: &CleanmailUserSpec, operations: Value) -> Result<CleanmailUserSpec, ScimError> {
        let request: PatchRequest = serde_json::from_value(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": operations,
        }))
        .map_err(|e| ScimError::bad_request(ScimType::InvalidSyntax, e.to_string()))?;
        let resource = patch::apply(&spec_to_scim(spec), &request, &USER_TYPE)?;
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
                // Item 14: a manager as a plain string.
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m-1"},
                // Item 11: Entra's string boolean, and a single-valued add.
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
                nick_name: Some("Babs".into()),
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
                enterprise_user: Some(Box::new(EnterpriseUser {
                    employee_number: Some("42".into()),
                    manager: Some(Manager { value: Some("m-1".into()) }),
                    ..Default::default()
                })),
                ..Default::default()
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

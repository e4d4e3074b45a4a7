//! Mapping between `CleanmailGroup` resources and SCIM Group representations.

use serde_json::{Value, json};

use super::{
    error::{ScimError, ScimType},
    resource::{ScimResource, field, invalid, string},
    schemas::{self, GROUP_SCHEMA},
};
use crate::{
    crd::{CleanmailGroup, CleanmailGroupSpec, GroupMember},
    tenant::Tenant,
};

impl ScimResource for CleanmailGroup {
    type Spec = CleanmailGroupSpec;
    const RESOURCE_TYPE: &'static str = "Group";
    const ENDPOINT: &'static str = "Groups";
    const UNIQUE_ATTRIBUTE: &'static str = "displayName";
    /// Entra discourages echoing (possibly huge) member lists.
    const PATCH_ANSWERS_NO_CONTENT: bool = true;

    fn spec(&self) -> &CleanmailGroupSpec {
        &self.spec
    }
    fn build(name: &str, spec: CleanmailGroupSpec) -> Self {
        CleanmailGroup::new(name, spec)
    }
    fn spec_to_scim(spec: &CleanmailGroupSpec) -> Value {
        let members: Vec<Value> = spec
            .members
            .iter()
            .map(|m| match &m.display {
                Some(display) => json!({"value": m.value, "display": display}),
                None => json!({"value": m.value}),
            })
            .collect();
        let mut resource = json!({"schemas": [GROUP_SCHEMA], "displayName": spec.display_name, "members": members});
        if let Some(external_id) = &spec.external_id {
            resource["externalId"] = json!(external_id);
        }
        resource
    }
    fn spec_from_scim(body: &Value) -> Result<CleanmailGroupSpec, ScimError> {
        let object = body
            .as_object()
            .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "the request body must be a JSON object"))?;
        // Entra adds a Microsoft marker URI to `schemas`; only the core Group schema must be there.
        if let Some(schemas) = field(object, "schemas") {
            let schemas = schemas.as_array().ok_or_else(|| invalid("schemas must be an array of strings"))?;
            if !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(GROUP_SCHEMA))) {
                return Err(ScimError::bad_request(
                    ScimType::InvalidSyntax,
                    format!("schemas must contain {GROUP_SCHEMA}"),
                ));
            }
        }
        let display_name = string(object, "displayName")?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("displayName is required"))?;
        Ok(CleanmailGroupSpec {
            display_name,
            external_id: string(object, "externalId")?,
            members: members(object)?,
            address: None,
        })
    }
    fn unique_value(spec: &CleanmailGroupSpec) -> &str {
        &spec.display_name
    }
    fn check(_: &Tenant, _: &CleanmailGroupSpec) -> Result<(), ScimError> {
        Ok(())
    }
    fn schema() -> &'static dyn schemas::ResourceSchema {
        &schemas::GroupSchema
    }
}

fn members(object: &serde_json::Map<String, Value>) -> Result<Vec<GroupMember>, ScimError> {
    let Some(value) = field(object, "members") else { return Ok(Vec::new()) };
    let entries = value.as_array().ok_or_else(|| invalid("members must be an array"))?;
    let mut seen = std::collections::HashSet::new();
    let mut members = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = entry.as_object().ok_or_else(|| invalid("each of members must be an object"))?;
        let value = string(entry, "value")?.ok_or_else(|| invalid("each member needs a value (the user's id)"))?;
        if seen.insert(value.clone()) {
            members.push(GroupMember { value, display: string(entry, "display")? });
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_group_create_body_maps_to_spec_and_back() {
        let body = json!({
            "schemas": [GROUP_SCHEMA, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0", "displayName": "Sales", "meta": {"resourceType": "Group"},
            "members": [{"$ref": null, "value": "alice"}, {"value": "bob", "display": "Bob"}, {"value": "alice"}],
        });
        let spec = CleanmailGroup::spec_from_scim(&body).expect("valid");
        assert_eq!(
            CleanmailGroup::spec_to_scim(&spec),
            json!({"schemas": [GROUP_SCHEMA], "externalId": "8aa1a0c0", "displayName": "Sales",
                   "members": [{"value": "alice"}, {"value": "bob", "display": "Bob"}]})
        );
        assert!(CleanmailGroup::spec_from_scim(&json!({"schemas": [GROUP_SCHEMA]})).is_err());
        assert!(
            CleanmailGroup::spec_from_scim(&json!({"displayName": "x", "members": [{"display": "no id"}]})).is_err()
        );
    }
}

//! Mapping between `CleanmailGroup` resources and SCIM Group representations.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{
    error::ScimError,
    resource::ScimResource,
    schemas::{self, GROUP_SCHEMA, GROUP_TYPE},
};
use crate::{
    crd::{CleanmailGroup, CleanmailGroupSpec, LIST_FINALIZER},
    tenant::Tenant,
};

impl ScimResource for CleanmailGroup {
    type Spec = CleanmailGroupSpec;
    const RESOURCE_TYPE: &'static str = "Group";
    const ENDPOINT: &'static str = "Groups";
    const UNIQUE_ATTRIBUTE: &'static str = "displayName";
    const FINALIZER: &'static str = LIST_FINALIZER;
    /// Entra discourages echoing (possibly huge) member lists.
    const PATCH_ANSWERS_NO_CONTENT: bool = true;
    /// Entra looks a group up by `displayName` with `excludedAttributes=members` before each update.
    const BULKY_ATTRIBUTE: Option<&'static str> = Some("members");

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
        let mut resource = Self::spec_to_scim_without_bulky(spec);
        resource["members"] = Value::Array(members);
        resource
    }

    fn spec_to_scim_without_bulky(spec: &CleanmailGroupSpec) -> Value {
        let mut resource = json!({"schemas": [GROUP_SCHEMA], "displayName": spec.display_name});
        if let Some(external_id) = &spec.external_id {
            resource["externalId"] = json!(external_id);
        }
        resource
    }
    fn spec_from_scim(body: &Value) -> Result<CleanmailGroupSpec, ScimError> {
        let mut spec: CleanmailGroupSpec = serde_json::from_value(Value::Object(GROUP_TYPE.read(body)?))
            .map_err(|e| ScimError::internal(format!("the Group schema and the CleanmailGroup spec disagree: {e}")))?;
        // A member listed twice is one member (Entra may repeat ids across batched adds).
        let mut seen = HashSet::with_capacity(spec.members.len());
        spec.members.retain(|member| seen.insert(member.value.clone()));
        Ok(spec)
    }
    fn unique_value(spec: &CleanmailGroupSpec) -> &str {
        &spec.display_name
    }
    fn check(_: &Tenant, _: &CleanmailGroupSpec) -> Result<(), ScimError> {
        Ok(())
    }
    fn resource_type() -> &'static schemas::ResourceType {
        &GROUP_TYPE
    }
    /// The list address is set in the cluster; SCIM has no attribute for it.
    fn keep_cluster_fields(desired: CleanmailGroupSpec, current: &CleanmailGroupSpec) -> CleanmailGroupSpec {
        CleanmailGroupSpec { address: current.address.clone(), ..desired }
    }
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

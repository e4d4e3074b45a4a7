//! What the SCIM edge needs of a resource kind (User, Group): how its spec maps to and from SCIM
//! JSON, which attribute is unique, how its Kubernetes object is named. The routes are written once
//! over this trait.

use kube::{Resource, ResourceExt, core::NamespaceResourceScope};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use super::{
    error::{ScimError, ScimType},
    schemas::ResourceSchema,
    store::Indexed,
};
use crate::tenant::Tenant;

/// The field manager of every write the SCIM edge makes.
pub const FIELD_MANAGER: &str = "cleanmail-scim";

/// A Kubernetes resource served as a SCIM resource type.
pub trait ScimResource:
    Indexed + Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + std::fmt::Debug
{
    type Spec: Clone + PartialEq + Serialize + Send + Sync;
    /// `meta.resourceType`, e.g. `User`.
    const RESOURCE_TYPE: &'static str;
    /// The endpoint below the SCIM root, e.g. `Users`.
    const ENDPOINT: &'static str;
    /// The attribute unique per tenant (compared case-insensitively).
    const UNIQUE_ATTRIBUTE: &'static str;
    /// Whether a successful PATCH answers 204 rather than echoing the resource (RFC 7644 §3.5.2
    /// allows either), unless the client asks for attributes.
    const PATCH_ANSWERS_NO_CONTENT: bool = false;

    fn spec(&self) -> &Self::Spec;
    fn build(name: &str, spec: Self::Spec) -> Self;
    /// The spec's attributes in SCIM form, without `id` and `meta`.
    fn spec_to_scim(spec: &Self::Spec) -> Value;
    /// Reads a representation sent with POST or PUT, or produced by PATCH.
    fn spec_from_scim(body: &Value) -> Result<Self::Spec, ScimError>;
    fn unique_value(spec: &Self::Spec) -> &str;
    /// Refuses a spec this tenant may not provision.
    fn check(tenant: &Tenant, spec: &Self::Spec) -> Result<(), ScimError>;
    fn schema() -> &'static dyn ResourceSchema;
}

/// The SCIM representation of an object; `base_url` is the SCIM root the client used.
pub fn to_scim<K: ScimResource>(object: &K, base_url: &str) -> Value {
    let id = object.name_any();
    let mut resource = K::spec_to_scim(object.spec());
    resource["id"] = json!(id);
    let metadata = object.meta();
    let mut meta = json!({
        "resourceType": K::RESOURCE_TYPE,
        "location": format!("{base_url}/{}/{id}", K::ENDPOINT),
        "version": format!("W/\"{}\"", metadata.generation.unwrap_or(1)),
    });
    if let Some(created) = metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()) {
        meta["lastModified"] = json!(last_modified(object).unwrap_or_else(|| created.clone()));
        meta["created"] = json!(created);
    }
    resource["meta"] = meta;
    resource
}

/// When the spec last changed: the newest time any writer other than a status writer touched it.
fn last_modified<K: Resource>(object: &K) -> Option<String> {
    object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|entry| entry.time.as_ref())
        .map(|time| time.0)
        .max()
        .map(|time| time.to_string())
}

/// Applies the `attributes` and `excludedAttributes` query parameters (RFC 7644 §3.9) to a
/// representation. Top-level attribute names only; `id` and `schemas` are always returned.
pub fn project(mut resource: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|n| {
                n.trim().rsplit(':').next().unwrap_or_default().split('.').next().unwrap_or_default().to_lowercase()
            })
            .filter(|n| !n.is_empty())
            .collect()
    };
    let always = |key: &str| key.eq_ignore_ascii_case("id") || key.eq_ignore_ascii_case("schemas");
    if let Some(object) = resource.as_object_mut() {
        if let Some(wanted) = attributes.map(names).filter(|w| !w.is_empty()) {
            object.retain(|key, _| always(key) || wanted.contains(&key.to_lowercase()));
        } else if let Some(unwanted) = excluded.map(names) {
            object.retain(|key, _| always(key) || !unwanted.contains(&key.to_lowercase()));
        }
    }
    resource
}

pub(super) fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

pub(super) fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v).filter(|v| !v.is_null())
}

pub(super) fn string(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ScimError> {
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

pub(super) fn boolean(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, ScimError> {
    field(object, name)
        .map(|value| coerce_boolean(value).ok_or_else(|| invalid(format!("{name} must be a boolean, not {value}"))))
        .transpose()
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
mod project_tests {
    use super::*;

    #[test]
    fn excluded_and_requested_attributes_shape_the_representation() {
        let group =
            json!({"schemas": ["g"], "id": "1", "displayName": "Sales", "members": [{"value": "a"}], "meta": {}});
        assert_eq!(
            project(group.clone(), None, Some("members")),
            json!({"schemas": ["g"], "id": "1", "displayName": "Sales", "meta": {}})
        );
        assert_eq!(
            project(group.clone(), Some("urn:ietf:params:scim:schemas:core:2.0:Group:displayName"), None),
            json!({"schemas": ["g"], "id": "1", "displayName": "Sales"})
        );
        assert_eq!(project(group.clone(), None, None), group);
    }
}

//! What the SCIM edge needs of a resource kind (User, Group): how its spec maps to and from SCIM
//! JSON, which attribute is unique, how its Kubernetes object is named. The routes are written once
//! over this trait.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::{Resource, ResourceExt, core::NamespaceResourceScope};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use super::{error::ScimError, schemas::ResourceType};
use crate::cache::Indexed;
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
    /// The controller's finalizer, set at creation so that the controller's first reconcile need
    /// not write the object once more only to add it.
    const FINALIZER: &'static str;
    /// Whether a successful PATCH answers 204 rather than echoing the resource (RFC 7644 §3.5.2
    /// allows either), unless the client asks for attributes.
    const PATCH_ANSWERS_NO_CONTENT: bool = false;
    /// An attribute whose value can be very large (a group's members), rendered only when a
    /// request does not leave it out, so that such a lookup costs what the rest of the resource
    /// costs.
    const BULKY_ATTRIBUTE: Option<&'static str> = None;

    fn spec(&self) -> &Self::Spec;
    fn build(name: &str, spec: Self::Spec) -> Self;
    /// The spec's attributes in SCIM form, without `id` and `meta`.
    fn spec_to_scim(spec: &Self::Spec) -> Value;
    /// [`Self::spec_to_scim`] without [`Self::BULKY_ATTRIBUTE`].
    fn spec_to_scim_without_bulky(spec: &Self::Spec) -> Value {
        Self::spec_to_scim(spec)
    }
    /// Reads a representation sent with POST or PUT, or produced by PATCH.
    fn spec_from_scim(body: &Value) -> Result<Self::Spec, ScimError>;
    fn unique_value(spec: &Self::Spec) -> &str;
    /// Refuses a spec this tenant may not provision.
    fn check(tenant: &Tenant, spec: &Self::Spec) -> Result<(), ScimError>;
    /// `desired` with the fields that belong to the cluster rather than the SCIM client (a user's
    /// overrides, a group's address) taken from `current`, so that no SCIM write changes them.
    fn keep_cluster_fields(desired: Self::Spec, current: &Self::Spec) -> Self::Spec;
    /// The resource type's schemas, which the filter and PATCH engines consult.
    fn resource_type() -> &'static ResourceType;
}

/// The SCIM representation of an object; `base_url` is the SCIM root the client used.
pub fn to_scim<K: ScimResource>(object: &K, base_url: &str) -> Value {
    render(object, base_url, true)
}

/// The SCIM representation of an object, with or without its [`ScimResource::BULKY_ATTRIBUTE`].
pub fn render<K: ScimResource>(object: &K, base_url: &str, bulky: bool) -> Value {
    let id = object.name_any();
    let mut resource =
        if bulky { K::spec_to_scim(object.spec()) } else { K::spec_to_scim_without_bulky(object.spec()) };
    resource["id"] = json!(id);
    let metadata = object.meta();
    let mut meta = json!({
        "resourceType": K::RESOURCE_TYPE,
        "location": format!("{base_url}/{}/{id}", K::ENDPOINT),
        "version": version(object),
    });
    if let Some(created) = metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()) {
        meta["lastModified"] = json!(last_modified(object).unwrap_or_else(|| created.clone()));
        meta["created"] = json!(created);
    }
    resource["meta"] = meta;
    resource
}

/// `meta.version`, a weak entity tag (RFC 7644 §3.14) that changes whenever the spec does (every
/// SCIM change, and also a cluster-side override, which SCIM does not show: a spurious change only
/// costs a client a re-read): the spec's generation, qualified by the object's uid so a deleted and
/// re-created resource of the same id never repeats a tag.
pub fn version<K: Resource>(object: &K) -> String {
    let metadata = object.meta();
    let uid = metadata.uid.as_deref().unwrap_or_default();
    format!("W/\"{}-{}\"", metadata.generation.unwrap_or(1), uid.get(..8).unwrap_or(uid))
}

/// Whether an `If-Match` / `If-None-Match` header value names `tag`: `*`, or a comma-separated
/// list of entity tags compared weakly (RFC 9110 §8.8.3.2), as SCIM uses weak tags throughout.
pub fn etag_matches(header: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let wanted = opaque(tag);
    header.trim() == "*" || header.split(',').any(|candidate| opaque(candidate) == wanted)
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

/// The first field of `spec_patch` (a merge patch of the spec) that a field manager other than the
/// SCIM edge owns by server-side apply, as (manager, dotted path). Such a field was declared in the
/// cluster (kubectl, Argo CD, Flux): a SCIM write that changed it would be undone at the next sync
/// and start a tug of war, so it is refused instead. Fields merely edited (`kubectl edit`, merge
/// patches) are not claimed and SCIM may change them, as an `Update` never conflicts in Kubernetes.
pub fn claimed_by_applier(managed_fields: &[ManagedFieldsEntry], spec_patch: &Value) -> Option<(String, String)> {
    managed_fields
        .iter()
        .filter(|entry| entry.operation.as_deref() == Some("Apply") && entry.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|entry| entry.subresource.as_deref().unwrap_or_default().is_empty())
        .find_map(|entry| {
            let spec = entry.fields_v1.as_ref()?.0.get("f:spec")?;
            let path = claimed_path(spec, spec_patch)?;
            Some((entry.manager.clone().unwrap_or_default(), format!("spec.{path}")))
        })
}

/// The first path of `patch` that the field set `owned` (managedFields' `FieldsV1` form) claims.
fn claimed_path(owned: &Value, patch: &Value) -> Option<String> {
    let (Value::Object(owned), Value::Object(patch)) = (owned, patch) else {
        return None;
    };
    patch.iter().find_map(|(key, change)| {
        let claimed = owned.get(&format!("f:{key}"))?;
        // An owned leaf (or atomic list) is claimed whole; an owned object only where the patch
        // reaches into fields it claims.
        let partly_owned_object =
            change.is_object() && claimed.as_object().is_some_and(|c| c.keys().any(|k| k.starts_with("f:")));
        if !partly_owned_object {
            return Some(key.clone());
        }
        claimed_path(claimed, change).map(|inner| format!("{key}.{inner}"))
    })
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

/// The JSON patch (RFC 6902) that writes the spec `new` over an object at `generation`, given
/// `changes`, the merge patch from its current spec to `new`: a test that the spec is still at
/// that generation, then one `add` (set) or `remove` per changed top-level field. Conditional on the generation rather than the resourceVersion, the write goes
/// through however often the controller wrote the status in between, and fails (422) only when
/// the spec itself changed; untouched fields are not sent, so other managers keep them.
pub fn spec_write(generation: i64, changes: &Value, new: &Value) -> Result<json_patch::Patch, serde_json::Error> {
    let mut operations = vec![json!({"op": "test", "path": "/metadata/generation", "value": generation})];
    if let Value::Object(changes) = changes {
        for (key, change) in changes {
            let path = format!("/spec/{}", key.replace('~', "~0").replace('/', "~1"));
            operations.push(match change {
                Value::Null => json!({"op": "remove", "path": path}),
                _ => json!({"op": "add", "path": path, "value": new[key.as_str()]}),
            });
        }
    }
    serde_json::from_value(Value::Array(operations))
}

#[cfg(test)]
mod merge_patch_tests {
    use super::*;

    #[test]
    fn spec_writes_test_the_generation_and_touch_only_changed_fields() {
        let old =
            json!({"userName": "a@b.ch", "title": "x", "name": {"givenName": "A"}, "overrides": {"active": false}});
        let new = json!({"userName": "a@b.ch", "name": {"givenName": "B"}, "overrides": {"active": false}, "a/b": 1});
        let written =
            serde_json::to_value(spec_write(7, &merge_patch(&old, &new), &new).expect("patch")).expect("json");
        assert_eq!(
            written,
            json!([
                {"op": "test", "path": "/metadata/generation", "value": 7},
                {"op": "add", "path": "/spec/a~1b", "value": 1},
                {"op": "add", "path": "/spec/name", "value": {"givenName": "B"}},
                {"op": "remove", "path": "/spec/title"},
            ])
        );
    }

    #[test]
    fn merge_patch_sets_changes_and_nulls_removals() {
        let old = json!({"a": 1, "b": {"c": 1, "d": 2}, "e": [1], "f": "x"});
        let new = json!({"a": 1, "b": {"c": 2}, "e": [1, 2], "g": true});
        assert_eq!(merge_patch(&old, &new), json!({"b": {"c": 2, "d": null}, "e": [1, 2], "f": null, "g": true}));
    }
}

#[cfg(test)]
mod ownership_tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn fields_applied_by_others_are_claimed_and_overrides_are_not_in_the_way() {
        let argocd = entry(
            "argocd",
            "Apply",
            json!({"f:spec": {"f:displayName": {}, "f:name": {"f:givenName": {}}, "f:emails": {},
                              "f:overrides": {"f:active": {}}}}),
        );
        let fields = [argocd];
        let claimed = |patch: Value| claimed_by_applier(&fields, &patch);
        assert_eq!(claimed(json!({"displayName": "x"})), Some(("argocd".into(), "spec.displayName".into())));
        assert_eq!(claimed(json!({"name": {"givenName": "x"}})), Some(("argocd".into(), "spec.name.givenName".into())));
        assert_eq!(claimed(json!({"emails": [{"value": "a@b.ch"}]})), Some(("argocd".into(), "spec.emails".into())));
        assert_eq!(claimed(json!({"name": {"familyName": "x"}, "active": false, "title": null})), None);
    }

    #[test]
    fn edits_status_writes_and_the_scim_edge_itself_claim_nothing() {
        let fields = [
            entry("kubectl-edit", "Update", json!({"f:spec": {"f:active": {}}})),
            entry(FIELD_MANAGER, "Apply", json!({"f:spec": {"f:active": {}}})),
            ManagedFieldsEntry {
                subresource: Some("status".into()),
                ..entry("cleanmail-controller", "Apply", json!({"f:spec": {"f:active": {}}}))
            },
        ];
        assert_eq!(claimed_by_applier(&fields, &json!({"active": false})), None);
    }
}

#[cfg(test)]
mod etag_tests {
    use super::*;

    #[test]
    fn entity_tags_compare_weakly_and_in_lists() {
        let tag = "W/\"3-1a2b3c4d\"";
        assert!(etag_matches("*", tag));
        assert!(etag_matches("W/\"3-1a2b3c4d\"", tag));
        assert!(etag_matches("\"3-1a2b3c4d\"", tag));
        assert!(etag_matches("W/\"1-x\", W/\"3-1a2b3c4d\"", tag));
        assert!(!etag_matches("W/\"2-1a2b3c4d\"", tag));
        assert!(!etag_matches("W/\"3-ffffffff\"", tag));
        assert!(!etag_matches("", tag));
    }
}

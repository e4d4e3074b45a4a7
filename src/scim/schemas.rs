//! Discovery documents (RFC 7644 §4, RFC 7643 §5–7): what this endpoint supports, stated exactly.
//! The User schema here is also the single source of which attributes are case-exact, which are
//! read-only and which are modelled at all.

use serde_json::{Value, json};

use super::{
    filter::{AttrPath, AttributeSchema},
    patch::{AttributeKind, PatchSchema},
};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// The most resources one list response carries, whatever `count` asks for.
pub const MAX_PAGE_SIZE: usize = 1000;

fn attribute(name: &str, type_: &str, description: &str) -> Value {
    json!({
        "name": name, "type": type_, "multiValued": false, "description": description,
        "required": false, "caseExact": false, "mutability": "readWrite", "returned": "default",
        "uniqueness": "none",
    })
}

fn with(mut attribute: Value, changes: Value) -> Value {
    if let (Some(target), Some(changes)) = (attribute.as_object_mut(), changes.as_object()) {
        target.extend(changes.clone());
    }
    attribute
}

/// The core User schema as far as this endpoint models it.
pub fn user_schema() -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "A mailbox user",
        "attributes": [
            with(attribute("userName", "string", "The user's mail address; unique per tenant, compared case-insensitively."),
                 json!({"required": true, "uniqueness": "server"})),
            with(attribute("name", "complex", "The components of the user's real name."), json!({"subAttributes": [
                attribute("formatted", "string", "The full name, formatted for display."),
                attribute("familyName", "string", "The family name."),
                attribute("givenName", "string", "The given name."),
            ]})),
            attribute("displayName", "string", "The name shown to people."),
            with(attribute("active", "boolean", "Whether the mailbox is enabled."), json!({"caseExact": false})),
            with(attribute("emails", "complex", "Mail addresses of the user."), json!({"multiValued": true, "subAttributes": [
                attribute("value", "string", "The address."),
                with(attribute("type", "string", "The kind of address."),
                     json!({"canonicalValues": ["work", "home", "other"]})),
                attribute("primary", "boolean", "Whether this is the primary address."),
            ]})),
        ],
        "meta": {"resourceType": "Schema", "location": format!("/Schemas/{USER_SCHEMA}")},
    })
}

/// The core Group schema as far as this endpoint models it.
pub fn group_schema() -> Value {
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "A distribution list",
        "attributes": [
            with(attribute("displayName", "string", "The group's name; unique per tenant, compared case-insensitively."),
                 json!({"required": true, "uniqueness": "server"})),
            with(attribute("members", "complex", "The users whose mailboxes receive the list's mail."), json!({"multiValued": true, "subAttributes": [
                with(attribute("value", "string", "The member's id."), json!({"caseExact": true, "mutability": "immutable"})),
                attribute("display", "string", "The member's display name."),
            ]})),
        ],
        "meta": {"resourceType": "Schema", "location": format!("/Schemas/{GROUP_SCHEMA}")},
    })
}

pub fn group_resource_type() -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "Distribution lists",
        "schema": GROUP_SCHEMA,
        "meta": {"resourceType": "ResourceType", "location": "/ResourceTypes/Group"},
    })
}

pub fn user_resource_type() -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "Mailbox users",
        "schema": USER_SCHEMA,
        "meta": {"resourceType": "ResourceType", "location": "/ResourceTypes/User"},
    })
}

pub fn service_provider_config() -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/cleanmail/cleanmail-operator#scim-endpoint",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE_SIZE},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A static bearer token from the tenant's token Secret",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": "/ServiceProviderConfig"},
    })
}

pub fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// An attribute of the User resource as the filter and PATCH engines need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributeInfo {
    pub case_exact: bool,
    pub kind: AttributeKind,
}

/// Looks an attribute of the User resource up by its (case-insensitive) name and sub-attribute.
pub fn user_attribute(attr: &str, sub_attr: Option<&str>) -> Option<AttributeInfo> {
    use AttributeKind::*;
    let info = |case_exact, kind| Some(AttributeInfo { case_exact, kind });
    let attr = attr.to_ascii_lowercase();
    let sub = sub_attr.map(str::to_ascii_lowercase);
    match (attr.as_str(), sub.as_deref()) {
        ("id", None) | ("externalid", None) => info(true, if attr == "id" { ReadOnly } else { String }),
        ("meta", _) => info(true, ReadOnly),
        ("schemas", None) => info(true, ReadOnly),
        ("username", None) | ("displayname", None) => info(false, String),
        ("active", None) => info(false, Boolean),
        ("name", None) => info(false, Complex),
        ("name", Some("formatted" | "givenname" | "familyname")) => info(false, String),
        ("emails", None) => info(false, MultiValuedComplex),
        ("emails", Some("value" | "type")) => info(false, String),
        ("emails", Some("primary")) => info(false, Boolean),
        _ => None,
    }
}

/// A resource type as both the filter and the PATCH engine see it.
pub trait ResourceSchema: AttributeSchema + PatchSchema + Sync {}

impl<T: AttributeSchema + PatchSchema + Sync> ResourceSchema for T {}

/// The User resource type as the filter and PATCH engines see it.
pub struct UserSchema;

impl UserSchema {
    fn info(path: &AttrPath) -> Option<AttributeInfo> {
        if path.urn.as_deref().is_some_and(|urn| !urn.eq_ignore_ascii_case(USER_SCHEMA)) {
            return None;
        }
        user_attribute(&path.attr, path.sub_attr.as_deref())
    }
}

impl AttributeSchema for UserSchema {
    fn case_exact(&self, path: &AttrPath) -> bool {
        Self::info(path).is_some_and(|info| info.case_exact)
    }
}

impl PatchSchema for UserSchema {
    fn attribute(&self, path: &AttrPath) -> Option<AttributeKind> {
        Self::info(path).map(|info| info.kind)
    }

    fn case_exact(&self, path: &AttrPath) -> bool {
        Self::info(path).is_some_and(|info| info.case_exact)
    }
}

/// Looks an attribute of the Group resource up by its (case-insensitive) name and sub-attribute.
pub fn group_attribute(attr: &str, sub_attr: Option<&str>) -> Option<AttributeInfo> {
    use AttributeKind::*;
    let info = |case_exact, kind| Some(AttributeInfo { case_exact, kind });
    let attr = attr.to_ascii_lowercase();
    let sub = sub_attr.map(str::to_ascii_lowercase);
    match (attr.as_str(), sub.as_deref()) {
        ("id", None) | ("meta", _) | ("schemas", None) => info(true, ReadOnly),
        ("externalid", None) => info(true, String),
        ("displayname", None) => info(false, String),
        ("members", None) => info(false, MultiValuedComplex),
        ("members", Some("value")) => info(true, String),
        ("members", Some("display")) => info(false, String),
        _ => None,
    }
}

/// The Group resource type as the filter and PATCH engines see it.
pub struct GroupSchema;

impl GroupSchema {
    fn info(path: &AttrPath) -> Option<AttributeInfo> {
        if path.urn.as_deref().is_some_and(|urn| !urn.eq_ignore_ascii_case(GROUP_SCHEMA)) {
            return None;
        }
        group_attribute(&path.attr, path.sub_attr.as_deref())
    }
}

impl AttributeSchema for GroupSchema {
    fn case_exact(&self, path: &AttrPath) -> bool {
        Self::info(path).is_some_and(|info| info.case_exact)
    }
}

impl PatchSchema for GroupSchema {
    fn attribute(&self, path: &AttrPath) -> Option<AttributeKind> {
        Self::info(path).map(|info| info.kind)
    }

    fn case_exact(&self, path: &AttrPath) -> bool {
        Self::info(path).is_some_and(|info| info.case_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_attribute_is_known_to_the_engines() {
        let schema = user_schema();
        for attribute in schema["attributes"].as_array().into_iter().flatten() {
            let name = attribute["name"].as_str().unwrap_or_default();
            assert!(user_attribute(name, None).is_some(), "{name}");
            for sub in attribute["subAttributes"].as_array().into_iter().flatten() {
                let sub_name = sub["name"].as_str().unwrap_or_default();
                assert!(user_attribute(name, Some(sub_name)).is_some(), "{name}.{sub_name}");
            }
        }
    }
}

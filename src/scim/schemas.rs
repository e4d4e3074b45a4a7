//! Discovery documents (RFC 7644 §4, RFC 7643 §5–7): what this endpoint supports, stated exactly.
//! The attribute tables here are the single source of which attributes exist, which are
//! case-exact and which are required: `/Schemas`, the filter and PATCH engines and the reading
//! of request bodies are all derived from them, so discovery cannot claim what is not honoured.

use serde_json::{Map, Value, json};

use super::{
    error::{ScimError, ScimType},
    filter::{AttrPath, AttributeSchema, find_key, string_as_bool},
    patch::{AttributeKind, PatchSchema},
};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// The most resources one list response carries, whatever `count` asks for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The data type of an attribute (RFC 7643 §2.3), as far as this endpoint uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    String,
    Boolean,
    Complex,
}

/// One attribute definition (RFC 7643 §7).
#[derive(Clone, Copy, Debug)]
pub struct Attribute {
    pub name: &'static str,
    pub data_type: DataType,
    pub multi_valued: bool,
    pub case_exact: bool,
    pub required: bool,
    /// `uniqueness: server`: unique within the tenant.
    pub unique: bool,
    pub immutable: bool,
    pub description: &'static str,
    pub canonical_values: &'static [&'static str],
    pub sub_attributes: &'static [Attribute],
}

const fn attribute(name: &'static str, data_type: DataType, description: &'static str) -> Attribute {
    Attribute {
        name,
        data_type,
        multi_valued: false,
        case_exact: false,
        required: false,
        unique: false,
        immutable: false,
        description,
        canonical_values: &[],
        sub_attributes: &[],
    }
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    attribute(name, DataType::String, description)
}

const fn boolean(name: &'static str, description: &'static str) -> Attribute {
    attribute(name, DataType::Boolean, description)
}

const fn complex(name: &'static str, description: &'static str, subs: &'static [Attribute]) -> Attribute {
    Attribute { sub_attributes: subs, ..attribute(name, DataType::Complex, description) }
}

impl Attribute {
    const fn multi_valued(self) -> Self {
        Self { multi_valued: true, ..self }
    }
    const fn case_exact(self) -> Self {
        Self { case_exact: true, ..self }
    }
    const fn required_unique(self) -> Self {
        Self { required: true, unique: true, ..self }
    }
    const fn required(self) -> Self {
        Self { required: true, ..self }
    }
    const fn immutable(self) -> Self {
        Self { immutable: true, ..self }
    }
    const fn canonical(self, values: &'static [&'static str]) -> Self {
        Self { canonical_values: values, ..self }
    }

    fn sub_attribute(&self, name: &str) -> Option<&'static Attribute> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// How the PATCH engine treats values of this attribute.
    fn kind(&self) -> AttributeKind {
        match (self.data_type, self.multi_valued) {
            (DataType::String, _) => AttributeKind::String,
            (DataType::Boolean, _) => AttributeKind::Boolean,
            (DataType::Complex, false) => AttributeKind::Complex,
            (DataType::Complex, true) => AttributeKind::MultiValuedComplex,
        }
    }

    /// The RFC 7643 §7 attribute definition.
    fn document(&self) -> Value {
        let type_name = match self.data_type {
            DataType::String => "string",
            DataType::Boolean => "boolean",
            DataType::Complex => "complex",
        };
        let mut document = json!({
            "name": self.name, "type": type_name, "multiValued": self.multi_valued,
            "description": self.description, "required": self.required, "caseExact": self.case_exact,
            "mutability": if self.immutable { "immutable" } else { "readWrite" }, "returned": "default",
            "uniqueness": if self.unique { "server" } else { "none" },
        });
        if !self.canonical_values.is_empty() {
            document["canonicalValues"] = json!(self.canonical_values);
        }
        if !self.sub_attributes.is_empty() {
            document["subAttributes"] = self.sub_attributes.iter().map(Attribute::document).collect();
        }
        document
    }
}

/// A schema (RFC 7643 §7): a core resource schema or an extension.
#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [Attribute],
}

impl Schema {
    pub fn attribute(&self, name: &str) -> Option<&'static Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The `/Schemas/{id}` document.
    pub fn document(&self) -> Value {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(Attribute::document).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema", "location": format!("/Schemas/{}", self.id)},
        })
    }
}

const TYPES: &[&str] = &["work", "home", "other"];

pub static USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "A mailbox user",
    attributes: &[
        string("userName", "The user's mail address; unique per tenant, compared case-insensitively.")
            .required_unique(),
        complex(
            "name",
            "The components of the user's real name.",
            &[
                string("formatted", "The full name, formatted for display."),
                string("familyName", "The family name."),
                string("givenName", "The given name."),
            ],
        ),
        string("displayName", "The name shown to people."),
        string("nickName", "The casual way to address the user."),
        string("title", "The user's job title."),
        string("preferredLanguage", "The user's preferred language, e.g. de-CH."),
        boolean("active", "Whether the mailbox is enabled; false disables it and keeps its mail."),
        complex(
            "emails",
            "Mail addresses of the user.",
            &[
                string("value", "The address."),
                string("type", "The kind of address.").canonical(TYPES),
                boolean("primary", "Whether this is the primary address."),
            ],
        )
        .multi_valued(),
        complex(
            "phoneNumbers",
            "Phone numbers of the user, stored as sent.",
            &[
                string("value", "The number."),
                string("type", "The kind of number.").canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
                boolean("primary", "Whether this is the primary number."),
            ],
        )
        .multi_valued(),
        complex(
            "addresses",
            "Physical mailing addresses of the user.",
            &[
                string("formatted", "The full address, formatted for display."),
                string("streetAddress", "Street, house number and further lines."),
                string("locality", "City or locality."),
                string("region", "State or region."),
                string("postalCode", "Postal code."),
                string("country", "Country, as sent (ISO 3166-1 alpha-2 expected)."),
                string("type", "The kind of address.").canonical(TYPES),
                boolean("primary", "Whether this is the primary address."),
            ],
        )
        .multi_valued(),
    ],
};

pub static ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        string("employeeNumber", "The identifier the organisation assigns to the user."),
        string("costCenter", "The user's cost center."),
        string("organization", "The user's organization."),
        string("division", "The user's division."),
        string("department", "The user's department."),
        complex(
            "manager",
            "The user's manager; a bare id is accepted and stored as its value.",
            &[string("value", "The manager's SCIM id.").case_exact()],
        ),
    ],
};

pub static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "A distribution list",
    attributes: &[
        string("displayName", "The group's name; unique per tenant, compared case-insensitively.").required_unique(),
        complex(
            "members",
            "The users whose mailboxes receive the list's mail.",
            &[
                string("value", "The member's id.").case_exact().immutable().required(),
                string("display", "The member's display name."),
            ],
        )
        .multi_valued(),
    ],
};

/// A resource type (RFC 7643 §6): its endpoint, core schema and extensions.
#[derive(Debug)]
pub struct ResourceType {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub description: &'static str,
    pub core: &'static Schema,
    pub extensions: &'static [&'static Schema],
}

pub static USER_TYPE: ResourceType = ResourceType {
    name: "User",
    endpoint: "/Users",
    description: "Mailbox users",
    core: &USER,
    extensions: &[&ENTERPRISE_USER],
};

pub static GROUP_TYPE: ResourceType = ResourceType {
    name: "Group",
    endpoint: "/Groups",
    description: "Distribution lists",
    core: &GROUP,
    extensions: &[],
};

pub static RESOURCE_TYPES: [&ResourceType; 2] = [&USER_TYPE, &GROUP_TYPE];

/// Every schema served under `/Schemas`.
pub fn all_schemas() -> impl Iterator<Item = &'static Schema> {
    RESOURCE_TYPES.iter().flat_map(|t| std::iter::once(t.core).chain(t.extensions.iter().copied()))
}

/// An attribute as the filter and PATCH engines need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributeInfo {
    pub case_exact: bool,
    pub kind: AttributeKind,
}

impl ResourceType {
    /// The `/ResourceTypes/{name}` document.
    pub fn document(&self) -> Value {
        let extensions: Vec<Value> =
            self.extensions.iter().map(|s| json!({"schema": s.id, "required": false})).collect();
        let mut document = json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.core.id,
            "meta": {"resourceType": "ResourceType", "location": format!("/ResourceTypes/{}", self.name)},
        });
        if !extensions.is_empty() {
            document["schemaExtensions"] = Value::Array(extensions);
        }
        document
    }

    /// The extension whose attributes live under the key `urn`.
    pub fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions.iter().copied().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Looks up `path`, including the common attributes (`id`, `externalId`, `meta`, `schemas`).
    pub fn info(&self, path: &AttrPath) -> Option<AttributeInfo> {
        let schema = match path.urn.as_deref() {
            None => self.core,
            Some(urn) if urn.eq_ignore_ascii_case(self.core.id) => self.core,
            Some(urn) => self.extension(urn)?,
        };
        let info = |case_exact, kind| Some(AttributeInfo { case_exact, kind });
        let common = std::ptr::eq(schema, self.core) && path.sub_attr.is_none();
        match path.attr.to_ascii_lowercase().as_str() {
            "id" | "schemas" if common => return info(true, AttributeKind::ReadOnly),
            "meta" if std::ptr::eq(schema, self.core) => return info(true, AttributeKind::ReadOnly),
            "externalid" if common => return info(true, AttributeKind::String),
            _ => {}
        }
        let attribute = schema.attribute(&path.attr)?;
        let attribute = match &path.sub_attr {
            Some(sub) => attribute.sub_attribute(sub)?,
            None => attribute,
        };
        info(attribute.case_exact, attribute.kind())
    }

    /// Reads a representation sent with POST or PUT, or produced by PATCH, into its canonical
    /// form: attribute names spelled as in the schema, booleans as booleans, nulls and
    /// attributes this endpoint does not model left out, extensions under their schema URN.
    pub fn read(&self, body: &Value) -> Result<Map<String, Value>, ScimError> {
        let object = body
            .as_object()
            .ok_or_else(|| ScimError::bad_request(ScimType::InvalidSyntax, "the request body must be a JSON object"))?;
        self.check_schemas(object)?;
        let mut canonical = Map::new();
        if let Some(external_id) = field(object, "externalId") {
            canonical.insert("externalId".into(), read_string("externalId", external_id)?);
        }
        read_attributes(self.core.attributes, object, "", &mut canonical)?;
        for extension in self.extensions {
            let Some(value) = field(object, extension.id) else { continue };
            let inner = value.as_object().ok_or_else(|| invalid(format!("{} must be an object", extension.id)))?;
            let mut attributes = Map::new();
            read_attributes(extension.attributes, inner, "", &mut attributes)?;
            if !attributes.is_empty() {
                canonical.insert(extension.id.into(), Value::Object(attributes));
            }
        }
        Ok(canonical)
    }

    /// Clients may add marker URIs (Entra does for groups); the core schema must be among them.
    fn check_schemas(&self, object: &Map<String, Value>) -> Result<(), ScimError> {
        let Some(schemas) = field(object, "schemas") else { return Ok(()) };
        let schemas = schemas.as_array().ok_or_else(|| invalid("schemas must be an array of strings"))?;
        if schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(self.core.id))) {
            return Ok(());
        }
        Err(ScimError::bad_request(ScimType::InvalidSyntax, format!("schemas must contain {}", self.core.id)))
    }
}

/// An object member by case-insensitive name (RFC 7643 §2.1); `null` counts as absent.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    find_key(object, name).and_then(|key| object.get(key)).filter(|v| !v.is_null())
}

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad_request(ScimType::InvalidValue, detail)
}

fn read_attributes(
    attributes: &[Attribute],
    object: &Map<String, Value>,
    prefix: &str,
    out: &mut Map<String, Value>,
) -> Result<(), ScimError> {
    for attribute in attributes {
        let path = format!("{prefix}{}", attribute.name);
        let value = field(object, attribute.name).map(|value| read_value(attribute, &path, value)).transpose()?;
        match value.flatten() {
            Some(value) => drop(out.insert(attribute.name.into(), value)),
            None if attribute.required => return Err(invalid(format!("{path} is required"))),
            None => {}
        }
    }
    Ok(())
}

/// One attribute's value in canonical form; `None` when it carries nothing (an empty string for
/// a required attribute, an empty object or list).
fn read_value(attribute: &Attribute, path: &str, value: &Value) -> Result<Option<Value>, ScimError> {
    if attribute.multi_valued {
        let items = value.as_array().ok_or_else(|| invalid(format!("{path} must be an array")))?;
        let mut read = Vec::with_capacity(items.len());
        for item in items {
            if let Some(item) = read_single(attribute, path, item)? {
                read.push(item);
            }
        }
        let primaries = read.iter().filter(|item| item.get("primary") == Some(&Value::Bool(true))).count();
        if primaries > 1 {
            return Err(invalid(format!("at most one value of {path} may be primary (RFC 7643 §2.4)")));
        }
        return Ok((!read.is_empty()).then_some(Value::Array(read)));
    }
    read_single(attribute, path, value)
}

fn read_single(attribute: &Attribute, path: &str, value: &Value) -> Result<Option<Value>, ScimError> {
    match attribute.data_type {
        DataType::String => {
            let read = read_string(path, value)?;
            Ok((!attribute.required || read.as_str().is_some_and(|s| !s.trim().is_empty())).then_some(read))
        }
        DataType::Boolean => coerce_boolean(value)
            .map(|b| Some(Value::Bool(b)))
            .ok_or_else(|| invalid(format!("{path} must be a boolean, not {value}"))),
        DataType::Complex => read_complex(attribute, path, value),
    }
}

fn read_string(path: &str, value: &Value) -> Result<Value, ScimError> {
    match value {
        Value::String(_) => Ok(value.clone()),
        other => Err(invalid(format!("{path} must be a string, not {other}"))),
    }
}

/// A complex value; a bare string stands for its `value` sub-attribute (Entra sends a manager
/// as a plain id).
fn read_complex(attribute: &Attribute, path: &str, value: &Value) -> Result<Option<Value>, ScimError> {
    let object = match value {
        Value::Object(object) => object.clone(),
        Value::String(_) if attribute.sub_attribute("value").is_some() => {
            Map::from_iter([("value".to_owned(), value.clone())])
        }
        other => return Err(invalid(format!("{path} must be an object, not {other}"))),
    };
    let mut read = Map::new();
    read_attributes(attribute.sub_attributes, &object, &format!("{path}."), &mut read)?;
    Ok((!read.is_empty()).then_some(Value::Object(read)))
}

/// Booleans arrive as JSON booleans or, from Entra, as the strings "True"/"False".
fn coerce_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => string_as_bool(s),
        _ => None,
    }
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
        "etag": {"supported": true},
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

/// A resource type as both the filter and the PATCH engine see it.
pub trait ResourceSchema: AttributeSchema + PatchSchema + Sync {}

impl<T: AttributeSchema + PatchSchema + Sync> ResourceSchema for T {}

impl AttributeSchema for ResourceType {
    fn case_exact(&self, path: &AttrPath) -> bool {
        self.info(path).is_some_and(|info| info.case_exact)
    }
}

impl PatchSchema for ResourceType {
    fn attribute(&self, path: &AttrPath) -> Option<AttributeKind> {
        self.info(path).map(|info| info.kind)
    }

    fn case_exact(&self, path: &AttrPath) -> bool {
        self.info(path).is_some_and(|info| info.case_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_attribute_is_known_to_the_engines() {
        for resource_type in RESOURCE_TYPES {
            let schemas = std::iter::once(resource_type.core).chain(resource_type.extensions.iter().copied());
            for schema in schemas {
                let urn = (!std::ptr::eq(schema, resource_type.core)).then(|| schema.id.to_owned());
                for attribute in schema.attributes {
                    let path = AttrPath { urn: urn.clone(), attr: attribute.name.into(), sub_attr: None };
                    assert!(resource_type.info(&path).is_some(), "{path}");
                    for sub in attribute.sub_attributes {
                        assert!(resource_type.info(&path.with_sub(sub.name)).is_some(), "{path}.{}", sub.name);
                    }
                }
            }
        }
    }

    #[test]
    fn lookups_follow_the_urn_and_the_case_rules() {
        let path = |text: &str| text.parse::<AttrPath>().expect("valid path");
        let kind = |text: &str| USER_TYPE.info(&path(text)).map(|info| info.kind);
        assert_eq!(kind("USERNAME"), Some(AttributeKind::String));
        assert_eq!(kind("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName"), Some(AttributeKind::String));
        assert_eq!(kind(&format!("{ENTERPRISE_USER_SCHEMA}:department")), Some(AttributeKind::String));
        assert_eq!(kind(&format!("{ENTERPRISE_USER_SCHEMA}:manager")), Some(AttributeKind::Complex));
        assert_eq!(kind("department"), None, "extension attributes need their URN");
        assert_eq!(kind("phoneNumbers"), Some(AttributeKind::MultiValuedComplex));
        assert_eq!(kind("id"), Some(AttributeKind::ReadOnly));
        assert_eq!(kind("meta.created"), Some(AttributeKind::ReadOnly));
        assert_eq!(kind("urn:example:other:1.0:User:x"), None);
        assert!(USER_TYPE.info(&path("externalId")).is_some_and(|i| i.case_exact));
        assert!(USER_TYPE.info(&path("emails.value")).is_some_and(|i| !i.case_exact));
        assert!(GROUP_TYPE.info(&path("members.value")).is_some_and(|i| i.case_exact));
    }

    #[test]
    fn reading_canonicalises_names_booleans_and_the_manager() {
        let body = json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "USERNAME": "a@b.ch", "Active": "False",
            "phonenumbers": [{"value": "+41 44 000 00 00", "TYPE": "work", "primary": "true", "extra": 1}],
            "addresses": null, "roles": [], "title": "CTO",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"Department": "IT", "manager": "m-1"},
        });
        assert_eq!(
            Value::Object(USER_TYPE.read(&body).expect("valid")),
            json!({
                "userName": "a@b.ch", "active": false, "title": "CTO",
                "phoneNumbers": [{"value": "+41 44 000 00 00", "type": "work", "primary": true}],
                ENTERPRISE_USER_SCHEMA: {"department": "IT", "manager": {"value": "m-1"}},
            })
        );
    }

    #[test]
    fn ill_typed_or_missing_required_attributes_are_refused() {
        for body in [
            json!({}),
            json!({"userName": "  "}),
            json!({"userName": 5}),
            json!({"userName": "a@b.ch", "active": "maybe"}),
            json!({"userName": "a@b.ch", "emails": {"value": "x"}}),
            json!({"userName": "a@b.ch", "phoneNumbers": [{"primary": 3}]}),
            json!({"userName": "a@b.ch", "emails": [{"value": "a@b.ch", "primary": true}, {"value": "c@b.ch", "primary": "True"}]}),
            json!({"userName": "a@b.ch", "schemas": ["urn:other"]}),
            json!({"userName": "a@b.ch", ENTERPRISE_USER_SCHEMA: "x"}),
            json!({"userName": "a@b.ch", ENTERPRISE_USER_SCHEMA: {"manager": 7}}),
            json!([]),
        ] {
            let error = USER_TYPE.read(&body).expect_err(&body.to_string());
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
        }
        let error = GROUP_TYPE.read(&json!({"displayName": "x", "members": [{"display": "no id"}]})).unwrap_err();
        assert!(error.detail.contains("members.value is required"), "{}", error.detail);
    }

    #[test]
    fn documents_describe_the_tables() {
        let user = USER.document();
        let names: Vec<&str> =
            user["attributes"].as_array().into_iter().flatten().filter_map(|a| a["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "userName",
                "name",
                "displayName",
                "nickName",
                "title",
                "preferredLanguage",
                "active",
                "emails",
                "phoneNumbers",
                "addresses"
            ]
        );
        assert_eq!(user["attributes"][0]["uniqueness"], "server");
        assert_eq!(
            USER_TYPE.document()["schemaExtensions"],
            json!([{"schema": ENTERPRISE_USER_SCHEMA, "required": false}])
        );
        assert!(GROUP_TYPE.document().get("schemaExtensions").is_none());
        assert_eq!(
            all_schemas().map(|s| s.id).collect::<Vec<_>>(),
            [USER_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA]
        );
    }
}

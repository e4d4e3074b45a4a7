//! SCIM PATCH operations (RFC 7644 §3.5.2) applied to a resource held as JSON.
//!
//! Besides the RFC forms this accepts what Microsoft Entra ID actually sends: capitalised `op`
//! names, booleans as strings, no-path values with dotted or URN-prefixed keys, `add`/`replace`
//! through a value filter that matches nothing (the element is created), a manager given as a
//! bare id, and `remove` of members listed in `value` instead of in the path.
//!
//! Attributes the resource type does not model are ignored rather than refused, so Entra can
//! send its full attribute mapping without failing on the parts this product does not store.

use std::collections::HashSet;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::filter::{self, AttrPath, AttributeSchema, CompareOp, Filter, find_key, get_ci, string_as_bool};

/// The message schema every PATCH request body must declare.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A PATCH request body.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchRequest {
    pub schemas: Vec<String>,
    #[serde(rename = "Operations", alias = "operations")]
    pub operations: Vec<PatchOperation>,
}

/// One entry of `Operations`.
#[derive(Debug, Clone, Deserialize)]
pub struct PatchOperation {
    pub op: PatchOpKind,
    #[serde(default)]
    pub path: Option<String>,
    /// `Some(Value::Null)` when the client sent an explicit `null`, `None` when it sent nothing.
    #[serde(default, deserialize_with = "explicit_value")]
    pub value: Option<Value>,
}

/// The operation; deserialised case-insensitively because Entra sends `Add`/`Replace`/`Remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Replace,
    Remove,
}

/// Why a PATCH request was refused; [`PatchError::scim_type`] gives the RFC 7644 §3.12 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    NoTarget(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("{0}")]
    InvalidSyntax(String),
    #[error("{0}")]
    Mutability(String),
}

/// What the engine needs to know about one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    /// Only JSON strings are accepted.
    String,
    /// JSON booleans, or the strings `true`/`false` in any case.
    Boolean,
    /// Single-valued complex; writes merge the given sub-attributes.
    Complex,
    /// Multi-valued complex (`emails`, `members`); addressable with value filters.
    MultiValuedComplex,
    /// Managed by the service provider (`id`, `meta`); any write is a `mutability` error.
    ReadOnly,
    /// Modelled, but stored exactly as sent without type checks (numbers, dates, references).
    Other,
}

/// Describes the resource type so the engine can coerce values and refuse read-only attributes.
pub trait PatchSchema {
    /// The kind of `path`; a path with `sub_attr` asks for that sub-attribute. `None` means the
    /// resource type does not model the attribute and writes to it are ignored. Paths reach
    /// this without a URN when they address the core schema.
    fn attribute(&self, path: &AttrPath) -> Option<AttributeKind>;

    /// Case-exactness for value filters in paths such as `members[value eq "..."]`; the path is
    /// the full one (`members.value`).
    fn case_exact(&self, _path: &AttrPath) -> bool {
        false
    }
}

impl PatchError {
    /// The `scimType` for the error response.
    #[must_use]
    pub fn scim_type(&self) -> &'static str {
        match self {
            Self::InvalidPath(_) => "invalidPath",
            Self::NoTarget(_) => "noTarget",
            Self::InvalidValue(_) => "invalidValue",
            Self::InvalidSyntax(_) => "invalidSyntax",
            Self::Mutability(_) => "mutability",
        }
    }
}

impl<'de> Deserialize<'de> for PatchOpKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let op = String::deserialize(deserializer)?;
        match op.to_ascii_lowercase().as_str() {
            "add" => Ok(Self::Add),
            "replace" => Ok(Self::Replace),
            "remove" => Ok(Self::Remove),
            _ => Err(serde::de::Error::custom(format!("unknown PATCH op '{op}', expected add, replace or remove"))),
        }
    }
}

/// Keeps an explicit `null` distinguishable from a missing `value`.
fn explicit_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Apply all operations to a copy of `resource`; on any error return Err and leave nothing
/// changed (atomic).
///
/// # Errors
///
/// The first operation that cannot be applied decides the error; see [`PatchError::scim_type`].
pub fn apply(resource: &Value, request: &PatchRequest, schema: &dyn PatchSchema) -> Result<Value, PatchError> {
    check_request(request)?;
    let mut patched = resource.clone();
    let root =
        patched.as_object_mut().ok_or_else(|| PatchError::InvalidValue("the resource is not a JSON object".into()))?;
    let engine = Engine { schema };
    for operation in &request.operations {
        engine.apply_operation(root, operation)?;
    }
    Ok(patched)
}

fn check_request(request: &PatchRequest) -> Result<(), PatchError> {
    if !request.schemas.iter().any(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA)) {
        return Err(PatchError::InvalidSyntax(format!("'schemas' must contain {PATCH_OP_SCHEMA}")));
    }
    if request.operations.is_empty() {
        return Err(PatchError::InvalidSyntax("'Operations' must not be empty".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Paths

/// A parsed PATCH path: `attr`, `attr.sub`, `urn:attr`, `attr[filter]` or `attr[filter].sub`.
#[derive(Debug, Clone)]
struct Target {
    /// The attribute, with the sub-attribute when one is addressed; core URNs are dropped.
    path: AttrPath,
    filter: Option<Filter>,
    /// The path as the client wrote it, so error messages name what was sent.
    text: String,
}

impl Target {
    fn plain(path: AttrPath) -> Self {
        let text = path.to_string();
        Self { path: without_core_urn(path), filter: None, text }
    }
}

fn without_core_urn(mut path: AttrPath) -> AttrPath {
    if path.urn.as_deref().is_some_and(filter::is_core_urn) {
        path.urn = None;
    }
    path
}

fn parse_path(text: &str) -> Result<Target, PatchError> {
    let invalid = |why: &str| PatchError::InvalidPath(format!("invalid path '{text}': {why}"));
    let Some(open) = text.find('[') else {
        let path = AttrPath::from_str(text).map_err(|_| invalid("not an attribute path"))?;
        return Ok(Target::plain(path));
    };
    let close = closing_bracket(text, open).ok_or_else(|| invalid("missing ']'"))?;
    let base = AttrPath::from_str(&text[..open]).map_err(|_| invalid("not an attribute path"))?;
    if base.sub_attr.is_some() {
        return Err(invalid("a value filter must follow a top-level attribute"));
    }
    let value_filter = Filter::from_str(&text[open + 1..close]).map_err(|e| invalid(&e.to_string()))?;
    let path = match &text[close + 1..] {
        "" => base,
        rest => base.with_sub(trailing_sub_attr(rest).ok_or_else(|| invalid("bad text after ']'"))?),
    };
    Ok(Target { path: without_core_urn(path), filter: Some(value_filter), text: text.to_owned() })
}

/// The `]` that closes the `[` at `open`, skipping brackets inside string literals.
fn closing_bracket(text: &str, open: usize) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip_while(|(i, _)| *i <= open) {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            (false, _, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn trailing_sub_attr(rest: &str) -> Option<&str> {
    let sub = rest.strip_prefix('.')?;
    let parsed = AttrPath::from_str(sub).ok()?;
    (parsed.urn.is_none() && parsed.sub_attr.is_none()).then_some(sub)
}

// ---------------------------------------------------------------------------------------------
// Engine

struct Engine<'a> {
    schema: &'a dyn PatchSchema,
}

/// Lets value filters in paths use the PATCH schema's case rules.
struct CaseRules<'a>(&'a dyn PatchSchema);

impl AttributeSchema for CaseRules<'_> {
    fn case_exact(&self, path: &AttrPath) -> bool {
        self.0.case_exact(path)
    }
}

type Object = Map<String, Value>;

impl Engine<'_> {
    fn apply_operation(&self, root: &mut Object, operation: &PatchOperation) -> Result<(), PatchError> {
        let path = operation.path.as_deref().map(str::trim).filter(|p| !p.is_empty());
        match (operation.op, path) {
            (PatchOpKind::Remove, None) => Err(PatchError::NoTarget("'remove' requires a path".into())),
            (PatchOpKind::Remove, Some(text)) => self.remove(root, &parse_path(text)?, operation.value.as_ref()),
            (op, path) => {
                let value = operation
                    .value
                    .as_ref()
                    .ok_or_else(|| PatchError::InvalidValue(format!("'{}' requires a value", op_name(op))))?;
                match path {
                    Some(text) => self.set(root, op, &parse_path(text)?, value),
                    None => self.set_object(root, op, None, value),
                }
            }
        }
    }

    /// The kind of `path`, refusing read-only attributes up front.
    fn kind(&self, path: &AttrPath) -> Result<Option<AttributeKind>, PatchError> {
        match self.schema.attribute(path) {
            Some(AttributeKind::ReadOnly) => Err(PatchError::Mutability(format!("attribute '{path}' is read-only"))),
            kind => Ok(kind),
        }
    }

    /// A no-path value, or a value addressed to a whole schema URN: each key names an attribute.
    fn set_object(
        &self,
        root: &mut Object,
        op: PatchOpKind,
        urn: Option<&str>,
        value: &Value,
    ) -> Result<(), PatchError> {
        let members = value.as_object().ok_or_else(|| {
            PatchError::InvalidValue(format!("'{}' without a path needs an object value", op_name(op)))
        })?;
        for (key, member) in members {
            let mut path = AttrPath::from_str(key)
                .map_err(|_| PatchError::InvalidPath(format!("invalid attribute name '{key}'")))?;
            if path.urn.is_none() {
                path.urn = urn.map(str::to_owned);
            }
            self.set(root, op, &Target::plain(path), member)?;
        }
        Ok(())
    }

    fn set(&self, root: &mut Object, op: PatchOpKind, target: &Target, value: &Value) -> Result<(), PatchError> {
        if value.is_null() {
            // RFC 7643 §2.5: assigning null is the same as removing the value.
            return self.remove(root, target, None);
        }
        let Some(kind) = self.kind(&target.path.parent())? else {
            return self.set_unknown(root, op, target, value);
        };
        match (&target.filter, &target.path.sub_attr) {
            (Some(value_filter), _) => self.set_filtered(root, op, target, value_filter, kind, value),
            (None, Some(_)) => self.set_sub_attr(root, &target.path, kind, value),
            (None, None) => self.set_attribute(root, op, &target.path, kind, value),
        }
    }

    /// An unmodelled name may still be a whole extension schema URN (`"urn:...:User": {...}`).
    fn set_unknown(
        &self,
        root: &mut Object,
        op: PatchOpKind,
        target: &Target,
        value: &Value,
    ) -> Result<(), PatchError> {
        match schema_urn(target) {
            Some(urn) if value.is_object() => self.set_object(root, op, Some(&urn), value),
            _ => Ok(()),
        }
    }

    fn set_attribute(
        &self,
        root: &mut Object,
        op: PatchOpKind,
        path: &AttrPath,
        kind: AttributeKind,
        value: &Value,
    ) -> Result<(), PatchError> {
        let new_value = match kind {
            AttributeKind::Complex => {
                let existing = container(root, path).and_then(|c| get_ci_object(c, &path.attr));
                self.merged_complex(path, existing, value)?
            }
            AttributeKind::MultiValuedComplex => {
                let items = self.elements(path, value)?;
                // Matched by value, not position: an `add` of a value already stored as primary
                // still asserts it, so it counts towards the limit and demotes the others.
                let requested: Vec<Value> = items.iter().filter(|item| is_primary(item)).cloned().collect();
                let existing = container(root, path).and_then(|c| get_in(c, &path.attr));
                let mut combined = combine_elements(op, existing, items);
                settle_primary(path, &mut combined, |_, item| requested.contains(item))?;
                Value::Array(combined)
            }
            _ => self.coerce(path, kind, value)?,
        };
        if new_value.as_object().is_some_and(Map::is_empty) {
            remove_attribute(root, path);
        } else {
            with_container(root, path, |c| put(c, &path.attr, new_value));
        }
        Ok(())
    }

    /// `name.givenName`: writes one sub-attribute, creating the parent when absent.
    fn set_sub_attr(
        &self,
        root: &mut Object,
        path: &AttrPath,
        kind: AttributeKind,
        value: &Value,
    ) -> Result<(), PatchError> {
        let Some(sub_kind) = self.kind(path)? else {
            return Ok(());
        };
        let coerced = self.coerce(path, sub_kind, value)?;
        let sub = path.sub_attr.as_deref().unwrap_or_default();
        match kind {
            AttributeKind::Complex | AttributeKind::Other => {
                with_container(root, path, |c| with_object(c, &path.attr, |object| put(object, sub, coerced)));
                Ok(())
            }
            // RFC 7644 §3.5.2.3: without a filter the sub-attribute of every value is replaced.
            AttributeKind::MultiValuedComplex => {
                let promotes = sub.eq_ignore_ascii_case(PRIMARY) && coerced == Value::Bool(true);
                with_container(root, path, |c| {
                    with_array(c, &path.attr, |items| {
                        set_in_all_elements(items, sub, coerced);
                        settle_primary(&path.parent(), items, |_, _| promotes)
                    })
                })
            }
            _ => Err(PatchError::InvalidPath(format!("attribute '{}' has no sub-attributes", path.parent()))),
        }
    }

    fn set_filtered(
        &self,
        root: &mut Object,
        op: PatchOpKind,
        target: &Target,
        value_filter: &Filter,
        kind: AttributeKind,
        value: &Value,
    ) -> Result<(), PatchError> {
        let parent = target.path.parent();
        require_multi_valued(&parent, kind)?;
        let Some(update) = self.filtered_update(target, &parent, value)? else {
            return Ok(());
        };
        let existing = container(root, &parent).and_then(|c| get_in(c, &parent.attr));
        let matched = self.matching(existing.map(as_items).unwrap_or_default(), &parent, value_filter);
        let created =
            if matched.is_empty() { Some(self.new_element(op, target, value_filter, update.clone())?) } else { None };
        let promotes = get_in(&update, PRIMARY) == Some(&Value::Bool(true));
        with_container(root, &parent, |c| {
            with_array(c, &parent.attr, |items| {
                for index in &matched {
                    if let Some(element) = items.get_mut(*index).and_then(Value::as_object_mut) {
                        update.iter().for_each(|(k, v)| put(element, k, v.clone()));
                    }
                }
                // A created value may be primary through its filter alone (`primary eq true`).
                let first_created = items.len();
                items.extend(created);
                // `matched` is in index order.
                settle_primary(&parent, items, |i, _| {
                    i >= first_created || (promotes && matched.binary_search(&i).is_ok())
                })
            })
        })
    }

    /// The sub-attributes a filtered `add`/`replace` writes into each matching element; `None`
    /// when the addressed sub-attribute is not modelled.
    fn filtered_update(&self, target: &Target, parent: &AttrPath, value: &Value) -> Result<Option<Object>, PatchError> {
        let Some(sub) = &target.path.sub_attr else {
            return self.element(parent, single_element(value)?).map(Some);
        };
        let Some(sub_kind) = self.kind(&target.path)? else {
            return Ok(None);
        };
        let coerced = self.coerce(&target.path, sub_kind, value)?;
        Ok(Some(Object::from_iter([(sub.clone(), coerced)])))
    }

    /// Entra adds and replaces `emails[type eq "work"].value` for users that have no work email
    /// yet and fails on `noTarget`, so both ops create the element the filter describes instead
    /// of refusing as RFC 7644 §3.5.2.3 prescribes for `replace`.
    fn new_element(
        &self,
        op: PatchOpKind,
        target: &Target,
        value_filter: &Filter,
        update: Object,
    ) -> Result<Value, PatchError> {
        let parent = target.path.parent();
        let seed = equality_seed(value_filter).ok_or_else(|| {
            cannot_create(op, target, "only 'eq' comparisons joined by 'and' describe a value to create")
        })?;
        let mut fields = self.element(&parent, &Value::Object(seed))?;
        update.into_iter().for_each(|(k, v)| put(&mut fields, &k, v));
        let element = Value::Object(fields);
        // An element the filter does not select would be created again by every repeat of the
        // request, so the request is refused instead of growing the attribute each time.
        if !value_filter.matches_element(&element, &parent, &CaseRules(self.schema)) {
            return Err(cannot_create(
                op,
                target,
                "the value built from the filter and the request would not match it",
            ));
        }
        Ok(element)
    }

    fn matching(&self, items: &[Value], parent: &AttrPath, value_filter: &Filter) -> Vec<usize> {
        let rules = CaseRules(self.schema);
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| value_filter.matches_element(item, parent, &rules))
            .map(|(i, _)| i)
            .collect()
    }

    // ---- remove ----

    fn remove(&self, root: &mut Object, target: &Target, value: Option<&Value>) -> Result<(), PatchError> {
        let Some(kind) = self.kind(&target.path.parent())? else {
            remove_schema_container(root, target);
            return Ok(());
        };
        if let Some(value_filter) = &target.filter {
            require_multi_valued(&target.path.parent(), kind)?;
            return self.remove_filtered(root, target, value_filter);
        }
        if target.path.sub_attr.is_some() {
            return self.remove_sub_attr(root, &target.path);
        }
        // RFC 7644 gives `value` no meaning for `remove`; only Entra's member-removal shape uses
        // it, so elsewhere it is disregarded.
        let listed = value.filter(|v| !v.is_null());
        if let (Some(listed), AttributeKind::MultiValuedComplex) = (listed, kind) {
            return remove_listed(root, &target.path, listed);
        }
        remove_attribute(root, &target.path);
        Ok(())
    }

    fn remove_filtered(&self, root: &mut Object, target: &Target, value_filter: &Filter) -> Result<(), PatchError> {
        let parent = target.path.parent();
        if target.path.sub_attr.is_some() && self.kind(&target.path)?.is_none() {
            return Ok(());
        }
        let Some(Value::Array(items)) = container_mut(root, &parent).and_then(|c| get_ci_mut(c, &parent.attr)) else {
            return Ok(());
        };
        let rules = CaseRules(self.schema);
        let hit = |item: &Value| value_filter.matches_element(item, &parent, &rules);
        match &target.path.sub_attr {
            Some(sub) => items.iter_mut().filter(|item| hit(item)).for_each(|item| take_sub(item, sub)),
            None => items.retain(|item| !hit(item)),
        }
        Ok(())
    }

    fn remove_sub_attr(&self, root: &mut Object, path: &AttrPath) -> Result<(), PatchError> {
        if self.kind(path)?.is_none() {
            return Ok(());
        }
        let sub = path.sub_attr.as_deref().unwrap_or_default();
        let Some(parent) = container_mut(root, path) else {
            return Ok(());
        };
        match get_ci_mut(parent, &path.attr) {
            Some(Value::Array(items)) => items.iter_mut().for_each(|item| take_sub(item, sub)),
            Some(item @ Value::Object(_)) => take_sub(item, sub),
            _ => {}
        }
        if get_in(parent, &path.attr).is_some_and(|v| v.as_object().is_some_and(Map::is_empty)) {
            take(parent, &path.attr);
        }
        prune_container(root, path);
        Ok(())
    }

    // ---- values ----

    fn coerce(&self, path: &AttrPath, kind: AttributeKind, value: &Value) -> Result<Value, PatchError> {
        match (kind, value) {
            (AttributeKind::String, Value::String(_))
            | (AttributeKind::Boolean, Value::Bool(_))
            | (AttributeKind::Other, _) => Ok(value.clone()),
            (AttributeKind::Boolean, Value::String(s)) => string_as_bool(s)
                .map(Value::Bool)
                .ok_or_else(|| PatchError::InvalidValue(format!("attribute '{path}' expects a boolean, got \"{s}\""))),
            (AttributeKind::Complex, _) => self.merged_complex(path, None, value),
            (AttributeKind::MultiValuedComplex, _) => Ok(Value::Array(self.elements(path, value)?)),
            (AttributeKind::ReadOnly, _) => Err(PatchError::Mutability(format!("attribute '{path}' is read-only"))),
            (AttributeKind::String | AttributeKind::Boolean, _) => Err(PatchError::InvalidValue(format!(
                "attribute '{path}' expects a {}, got {value}",
                if kind == AttributeKind::String { "string" } else { "boolean" }
            ))),
        }
    }

    /// RFC 7644 §3.5.2.3: sub-attributes given replace or add, the others stay. A bare string or
    /// a one-element array (Entra's manager shapes) names a whole new value instead.
    fn merged_complex(&self, path: &AttrPath, existing: Option<&Object>, value: &Value) -> Result<Value, PatchError> {
        let (mut merged, given) = match value {
            Value::Object(given) => (existing.cloned().unwrap_or_default(), given.clone()),
            Value::String(_) => (Object::new(), Object::from_iter([("value".to_owned(), value.clone())])),
            Value::Array(_) => (Object::new(), expect_object(path, single_element(value)?)?),
            _ => {
                return Err(PatchError::InvalidValue(format!("attribute '{path}' expects an object, got {value}")));
            }
        };
        for (key, sub_value) in &given {
            let sub_path = path.parent().with_sub(key.clone());
            match self.kind(&sub_path)? {
                Some(_) if sub_value.is_null() => drop(take(&mut merged, key)),
                Some(kind) => put(&mut merged, key, self.coerce(&sub_path, kind, sub_value)?),
                None => {}
            }
        }
        Ok(Value::Object(merged))
    }

    /// A multi-valued value: an array of objects, or one object standing for a one-element array.
    fn elements(&self, path: &AttrPath, value: &Value) -> Result<Vec<Value>, PatchError> {
        let items = match value {
            Value::Array(items) => items.as_slice(),
            Value::Object(_) => std::slice::from_ref(value),
            _ => {
                return Err(PatchError::InvalidValue(format!("attribute '{path}' expects an array, got {value}")));
            }
        };
        items.iter().map(|item| self.element(path, item).map(Value::Object)).collect()
    }

    /// One element with its sub-attributes coerced; null and unmodelled sub-attributes are
    /// dropped (Entra sends `"$ref": null` for members).
    fn element(&self, path: &AttrPath, item: &Value) -> Result<Object, PatchError> {
        let fields = item
            .as_object()
            .ok_or_else(|| PatchError::InvalidValue(format!("values of '{path}' must be objects, got {item}")))?;
        let mut element = Object::new();
        for (key, sub_value) in fields.iter().filter(|(_, v)| !v.is_null()) {
            let sub_path = path.parent().with_sub(key.clone());
            if let Some(kind) = self.kind(&sub_path)? {
                element.insert(key.clone(), self.coerce(&sub_path, kind, sub_value)?);
            }
        }
        Ok(element)
    }
}

fn op_name(op: PatchOpKind) -> &'static str {
    match op {
        PatchOpKind::Add => "add",
        PatchOpKind::Replace => "replace",
        PatchOpKind::Remove => "remove",
    }
}

/// Why a filtered `add`/`replace` that matched nothing cannot create the value instead.
fn cannot_create(op: PatchOpKind, target: &Target, why: &str) -> PatchError {
    let parent = target.path.parent();
    PatchError::NoTarget(format!(
        "no value of '{parent}' matches the filter in '{}', and '{}' cannot create one: {why}",
        target.text,
        op_name(op)
    ))
}

fn require_multi_valued(path: &AttrPath, kind: AttributeKind) -> Result<(), PatchError> {
    if kind == AttributeKind::MultiValuedComplex {
        return Ok(());
    }
    Err(PatchError::InvalidPath(format!("attribute '{path}' is not multi-valued and cannot take a value filter")))
}

fn single_element(value: &Value) -> Result<&Value, PatchError> {
    match value {
        Value::Array(items) => match items.as_slice() {
            [only] => Ok(only),
            _ => Err(PatchError::InvalidValue(format!("expected a single value, got {value}"))),
        },
        other => Ok(other),
    }
}

fn expect_object(path: &AttrPath, value: &Value) -> Result<Object, PatchError> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| PatchError::InvalidValue(format!("attribute '{path}' expects an object, got {value}")))
}

/// A multi-valued attribute's values; a lone object counts as a one-element array.
fn as_items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        Value::Null => &[],
        other => std::slice::from_ref(other),
    }
}

/// `add` appends what is not already there (RFC 7644 §3.5.2.1); `replace` swaps the whole set.
fn combine_elements(op: PatchOpKind, existing: Option<&Value>, items: Vec<Value>) -> Vec<Value> {
    if op != PatchOpKind::Add {
        return items;
    }
    let existing = existing.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    // Groups hold tens of thousands of members and one request may add thousands, so duplicates
    // are found by hash (consistent with `Value`'s `==`) rather than by scanning the list.
    let mut seen: HashSet<&Value> = existing.iter().collect();
    let fresh: Vec<bool> = items.iter().map(|item| seen.insert(item)).collect();
    let mut combined = existing.to_vec();
    combined.extend(items.into_iter().zip(fresh).filter_map(|(item, fresh)| fresh.then_some(item)));
    combined
}

/// The sub-attribute RFC 7643 §2.4 allows to be true in at most one value of an attribute.
const PRIMARY: &str = "primary";

fn is_primary(item: &Value) -> bool {
    get_ci(item, PRIMARY) == Some(&Value::Bool(true))
}

/// RFC 7644 §3.5.2: the value an operation makes primary takes the flag from the others, and
/// RFC 7643 §2.4 allows only one. `promoted` picks the values the operation itself set primary,
/// which only the caller knows; comparing with the stored values instead would let a write that
/// re-asserts an existing primary next to a new one pass. Nothing is demoted unless a value was
/// promoted, so a request that leaves `primary` alone keeps even a stored set that breaks the rule.
fn settle_primary(
    path: &AttrPath,
    items: &mut [Value],
    promoted: impl Fn(usize, &Value) -> bool,
) -> Result<(), PatchError> {
    let mut chosen = items.iter().enumerate().filter(|(i, item)| is_primary(item) && promoted(*i, item));
    let Some((keep, _)) = chosen.next() else {
        return Ok(());
    };
    if chosen.next().is_some() {
        return Err(PatchError::InvalidValue(format!("at most one value of '{path}' may be primary")));
    }
    for (_, element) in items.iter_mut().enumerate().filter(|(i, item)| *i != keep && is_primary(item)) {
        if let Some(element) = element.as_object_mut() {
            put(element, PRIMARY, Value::Bool(false));
        }
    }
    Ok(())
}

/// The element a value filter describes, when it is only `attr eq literal` terms joined by `and`.
fn equality_seed(value_filter: &Filter) -> Option<Object> {
    match value_filter {
        Filter::Compare { path, op: CompareOp::Eq, value }
            if path.urn.is_none() && path.sub_attr.is_none() && !value.is_null() =>
        {
            Some(Object::from_iter([(path.attr.clone(), value.clone())]))
        }
        Filter::And(left, right) => {
            let mut seed = equality_seed(left)?;
            seed.extend(equality_seed(right)?);
            Some(seed)
        }
        _ => None,
    }
}

/// Entra's member removal: `{"op":"Remove","path":"members","value":[{"value":"<id>"}]}` drops
/// the elements whose `value` is listed.
fn remove_listed(root: &mut Object, path: &AttrPath, listed: &Value) -> Result<(), PatchError> {
    let listed = match listed {
        Value::Array(items) => items.as_slice(),
        Value::Object(_) => std::slice::from_ref(listed),
        _ => {
            return Err(PatchError::InvalidValue(format!("values to remove from '{path}' must be objects")));
        }
    };
    // A set, because one request may list thousands of a large group's members.
    let ids = listed
        .iter()
        .map(|item| get_ci(item, "value"))
        .collect::<Option<HashSet<&Value>>>()
        .ok_or_else(|| PatchError::InvalidValue(format!("each value to remove from '{path}' needs a 'value'")))?;
    if let Some(Value::Array(items)) = container_mut(root, path).and_then(|c| get_ci_mut(c, &path.attr)) {
        items.retain(|item| get_ci(item, "value").is_none_or(|v| !ids.contains(v)));
    }
    Ok(())
}

fn remove_attribute(root: &mut Object, path: &AttrPath) {
    if let Some(parent) = container_mut(root, path) {
        take(parent, &path.attr);
    }
    prune_container(root, path);
}

/// Removing `urn:...:enterprise:2.0:User` as a whole drops the extension and its schema entry.
fn remove_schema_container(root: &mut Object, target: &Target) {
    let Some(urn) = schema_urn(target) else {
        return;
    };
    if let Some(key) = find_key(root, &urn).map(str::to_owned) {
        root.remove(&key);
        unregister_schema(root, &urn);
    }
}

/// The schema URN a path names when the path is a whole schema (`urn:...:2.0:User`).
fn schema_urn(target: &Target) -> Option<String> {
    let path = &target.path;
    match (&path.urn, &path.sub_attr, &target.filter) {
        (Some(urn), None, None) => Some(format!("{urn}:{}", path.attr)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers: names match case-insensitively, an existing key keeps its spelling, a new key
// takes the spelling of the path.

fn put(map: &mut Object, name: &str, value: Value) {
    let key = find_key(map, name).map_or_else(|| name.to_owned(), str::to_owned);
    map.insert(key, value);
}

fn take(map: &mut Object, name: &str) -> Option<Value> {
    let key = find_key(map, name)?.to_owned();
    map.remove(&key)
}

fn take_sub(item: &mut Value, sub: &str) {
    if let Some(element) = item.as_object_mut() {
        take(element, sub);
    }
}

fn get_in<'m>(map: &'m Object, name: &str) -> Option<&'m Value> {
    find_key(map, name).and_then(|key| map.get(key))
}

fn get_ci_mut<'m>(map: &'m mut Object, name: &str) -> Option<&'m mut Value> {
    let key = find_key(map, name)?.to_owned();
    map.get_mut(&key)
}

fn get_ci_object<'m>(map: &'m Object, name: &str) -> Option<&'m Object> {
    let key = find_key(map, name)?;
    map.get(key).and_then(Value::as_object)
}

/// Runs `f` on the object at `name`, which is created (or replaces a non-object) first. The
/// value is edited in place so the key keeps its position.
fn with_object<R>(map: &mut Object, name: &str, f: impl FnOnce(&mut Object) -> R) -> R {
    let key = find_key(map, name).map_or_else(|| name.to_owned(), str::to_owned);
    let mut object = match map.get_mut(&key).map(Value::take) {
        Some(Value::Object(object)) => object,
        _ => Object::new(),
    };
    let result = f(&mut object);
    map.insert(key, Value::Object(object));
    result
}

/// Runs `f` on the array at `name`, created when absent; a lone object becomes its only value.
fn with_array<R>(map: &mut Object, name: &str, f: impl FnOnce(&mut Vec<Value>) -> R) -> R {
    let key = find_key(map, name).map_or_else(|| name.to_owned(), str::to_owned);
    let mut items = match map.get_mut(&key).map(Value::take) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    };
    let result = f(&mut items);
    map.insert(key, Value::Array(items));
    result
}

fn set_in_all_elements(items: &mut Vec<Value>, sub: &str, value: Value) {
    if items.is_empty() {
        items.push(Value::Object(Object::from_iter([(sub.to_owned(), value)])));
        return;
    }
    items.iter_mut().filter_map(Value::as_object_mut).for_each(|e| put(e, sub, value.clone()));
}

/// The object holding `path`'s attribute: the resource itself, or its extension object.
fn container<'r>(root: &'r Object, path: &AttrPath) -> Option<&'r Object> {
    match &path.urn {
        None => Some(root),
        Some(urn) => get_ci_object(root, urn),
    }
}

fn container_mut<'r>(root: &'r mut Object, path: &AttrPath) -> Option<&'r mut Object> {
    match &path.urn {
        None => Some(root),
        Some(urn) => get_ci_mut(root, urn).and_then(Value::as_object_mut),
    }
}

/// Runs `f` on the object holding `path`'s attribute, creating the extension object (and its
/// `schemas` entry) when needed.
fn with_container<R>(root: &mut Object, path: &AttrPath, f: impl FnOnce(&mut Object) -> R) -> R {
    let Some(urn) = &path.urn else {
        return f(root);
    };
    if find_key(root, urn).is_none() {
        register_schema(root, urn);
    }
    with_object(root, urn, f)
}

/// RFC 7643 §3: `schemas` lists every extension the resource carries.
fn register_schema(root: &mut Object, urn: &str) {
    if let Some(Value::Array(schemas)) = get_ci_mut(root, "schemas") {
        let known = schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
        if !known {
            schemas.push(Value::String(urn.to_owned()));
        }
    }
}

fn unregister_schema(root: &mut Object, urn: &str) {
    if let Some(Value::Array(schemas)) = get_ci_mut(root, "schemas") {
        schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(urn)));
    }
}

/// An extension left empty by a removal is dropped, so it no longer shows in `schemas`.
fn prune_container(root: &mut Object, path: &AttrPath) {
    let Some(urn) = &path.urn else {
        return;
    };
    if get_ci_object(root, urn).is_some_and(Map::is_empty) {
        take(root, urn);
        unregister_schema(root, urn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    /// The core User (plus Group `members`) and enterprise attributes this product models.
    struct UserSchema;

    impl PatchSchema for UserSchema {
        fn attribute(&self, path: &AttrPath) -> Option<AttributeKind> {
            let name = path.dotted_lower();
            match path.urn.as_deref() {
                None => core_attribute(&name),
                Some(urn) if urn.eq_ignore_ascii_case(ENTERPRISE) => enterprise_attribute(&name),
                Some(_) => None,
            }
        }

        fn case_exact(&self, path: &AttrPath) -> bool {
            matches!(path.dotted_lower().as_str(), "externalid" | "id" | "members.value")
        }
    }

    fn core_attribute(name: &str) -> Option<AttributeKind> {
        use AttributeKind::*;
        let kind = match name {
            "username" | "externalid" | "displayname" | "nickname" => String,
            "active" | "emails.primary" => Boolean,
            "name" => Complex,
            "name.givenname" | "name.familyname" | "name.formatted" => String,
            "emails" | "members" => MultiValuedComplex,
            "emails.value" | "emails.type" | "members.value" | "members.display" | "members.type" => String,
            "members.$ref" => Other,
            "id" | "meta" => ReadOnly,
            _ => return None,
        };
        Some(kind)
    }

    fn enterprise_attribute(name: &str) -> Option<AttributeKind> {
        use AttributeKind::*;
        let kind = match name {
            "employeenumber" | "manager.value" | "manager.displayname" => String,
            "manager" => Complex,
            "manager.$ref" => Other,
            _ => return None,
        };
        Some(kind)
    }

    fn user() -> Value {
        json!({
            "schemas": [CORE],
            "id": "u1",
            "externalId": "bjensen",
            "userName": "bjensen@example.com",
            "active": true,
            "displayName": "Babs Jensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"resourceType": "User"}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1",
            "displayName": "Sales",
            "members": [{"value": "a"}, {"value": "b"}, {"value": "c"}]
        })
    }

    /// Builds a request from the Operations array, the way it arrives on the wire.
    fn request(operations: Value) -> PatchRequest {
        serde_json::from_value(json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})).unwrap()
    }

    fn patch(resource: Value, operations: Value) -> Result<Value, PatchError> {
        apply(&resource, &request(operations), &UserSchema)
    }

    fn patched(resource: Value, operations: Value) -> Value {
        patch(resource, operations).unwrap()
    }

    /// `user()` with `edit` applied to it, for stating the whole expected resource.
    fn user_with(edit: impl FnOnce(&mut Value)) -> Value {
        let mut expected = user();
        edit(&mut expected);
        expected
    }

    // ---- request shape ----

    #[test]
    fn requires_patch_op_schema() {
        let req: PatchRequest = serde_json::from_value(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]
        }))
        .unwrap();
        let err = apply(&user(), &req, &UserSchema).unwrap_err();
        assert!(matches!(err, PatchError::InvalidSyntax(_)));
        assert_eq!(err.scim_type(), "invalidSyntax");
    }

    #[test]
    fn requires_operations() {
        let err = patch(user(), json!([])).unwrap_err();
        assert_eq!(err, PatchError::InvalidSyntax("'Operations' must not be empty".into()));
    }

    #[test]
    fn op_names_are_case_insensitive() {
        let req = request(json!([
            {"op": "Add", "path": "nickName", "value": "Babs"},
            {"op": "REPLACE", "path": "displayName", "value": "B"},
            {"op": "Remove", "path": "externalId"}
        ]));
        let kinds: Vec<_> = req.operations.iter().map(|o| o.op).collect();
        assert_eq!(kinds, [PatchOpKind::Add, PatchOpKind::Replace, PatchOpKind::Remove]);
        let expected = user_with(|u| {
            u["nickName"] = json!("Babs");
            u["displayName"] = json!("B");
            u.as_object_mut().unwrap().remove("externalId");
        });
        assert_eq!(apply(&user(), &req, &UserSchema).unwrap(), expected);
    }

    #[test]
    fn unknown_op_is_a_deserialisation_error() {
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "x"}]});
        let err = serde_json::from_value::<PatchRequest>(body).unwrap_err();
        assert!(err.to_string().contains("unknown PATCH op 'move'"), "{err}");
    }

    #[test]
    fn explicit_null_and_missing_value_differ() {
        let req = request(json!([{"op": "add", "path": "a", "value": null}, {"op": "add", "path": "b"}]));
        assert_eq!(req.operations[0].value, Some(Value::Null));
        assert_eq!(req.operations[1].value, None);
        let err = patch(user(), json!([{"op": "add", "path": "displayName"}])).unwrap_err();
        assert_eq!(err, PatchError::InvalidValue("'add' requires a value".into()));
    }

    #[test]
    fn scim_types() {
        assert_eq!(PatchError::InvalidPath(String::new()).scim_type(), "invalidPath");
        assert_eq!(PatchError::NoTarget(String::new()).scim_type(), "noTarget");
        assert_eq!(PatchError::InvalidValue(String::new()).scim_type(), "invalidValue");
        assert_eq!(PatchError::InvalidSyntax(String::new()).scim_type(), "invalidSyntax");
        assert_eq!(PatchError::Mutability(String::new()).scim_type(), "mutability");
    }

    // ---- Entra shapes (ENTRA.md items 8-14) ----

    #[test]
    fn entra_documented_multi_valued_update() {
        let result = patched(
            user(),
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@x"},
                {"op": "Replace", "path": "name.familyName", "value": "X"}
            ]),
        );
        let expected = user_with(|u| {
            u["emails"][0]["value"] = json!("new@x");
            u["name"]["familyName"] = json!("X");
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn entra_single_valued_rename() {
        let result = patched(user(), json!([{"op": "Replace", "path": "userName", "value": "New@X"}]));
        assert_eq!(result, user_with(|u| u["userName"] = json!("New@X")));
    }

    #[test]
    fn entra_string_booleans() {
        for (sent, stored) in
            [(json!("False"), false), (json!("false"), false), (json!("TRUE"), true), (json!(false), false)]
        {
            let result = patched(user(), json!([{"op": "Replace", "path": "active", "value": sent}]));
            assert_eq!(result, user_with(|u| u["active"] = json!(stored)));
        }
        let result = patched(user(), json!([{"op": "Add", "path": "active", "value": "False"}]));
        assert_eq!(result, user_with(|u| u["active"] = json!(false)));
    }

    #[test]
    fn other_strings_for_booleans_are_refused() {
        let err = patch(user(), json!([{"op": "replace", "path": "active", "value": "no"}])).unwrap_err();
        assert_eq!(err, PatchError::InvalidValue("attribute 'active' expects a boolean, got \"no\"".into()));
        let err = patch(user(), json!([{"op": "replace", "path": "active", "value": 0}])).unwrap_err();
        assert_eq!(err.scim_type(), "invalidValue");
    }

    #[test]
    fn entra_one_operation_per_attribute() {
        let result = patched(
            user(),
            json!([
                {"op": "Add", "path": "nickName", "value": "Babs"},
                {"op": "Replace", "path": "displayName", "value": "Barbara J"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "bj@example.com"},
                {"op": "Replace", "path": "name.givenName", "value": "Barb"},
                {"op": "Replace", "path": "externalId", "value": "BJ"},
                {"op": "Replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "701984"}
            ]),
        );
        let expected = json!({
            "schemas": [CORE, ENTERPRISE],
            "id": "u1",
            "externalId": "BJ",
            "userName": "bjensen@example.com",
            "active": true,
            "displayName": "Barbara J",
            "nickName": "Babs",
            "name": {"givenName": "Barb", "familyName": "Jensen"},
            "emails": [
                {"value": "bj@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"resourceType": "User"},
            ENTERPRISE: {"employeeNumber": "701984"}
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn entra_flagged_no_path_with_dotted_keys() {
        for op in ["replace", "add"] {
            let result = patched(
                user(),
                json!([{"op": op, "value": {
                    "displayName": "Barbara J",
                    "name.givenName": "Barb",
                    "name.familyName": "J",
                    format!("{ENTERPRISE}:employeeNumber"): "701984",
                    "active": "False"
                }}]),
            );
            let expected = user_with(|u| {
                u["schemas"] = json!([CORE, ENTERPRISE]);
                u["displayName"] = json!("Barbara J");
                u["name"] = json!({"givenName": "Barb", "familyName": "J"});
                u["active"] = json!(false);
                u[ENTERPRISE] = json!({"employeeNumber": "701984"});
            });
            assert_eq!(result, expected, "{op}");
        }
    }

    #[test]
    fn entra_add_work_email_when_absent() {
        let mut no_emails = user();
        no_emails.as_object_mut().unwrap().remove("emails");
        for op in ["Add", "Replace"] {
            let result = patched(
                no_emails.clone(),
                json!([
                    {"op": op, "path": "emails[type eq \"work\"].value", "value": "a@b"}
                ]),
            );
            let mut expected = no_emails.clone();
            expected["emails"] = json!([{"type": "work", "value": "a@b"}]);
            assert_eq!(result, expected, "{op}");
        }
    }

    #[test]
    fn add_work_email_next_to_home_email() {
        let start = user_with(|u| u["emails"] = json!([{"value": "h@x", "type": "home"}]));
        let result = patched(start, json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@b"}]));
        let expected = user_with(|u| {
            u["emails"] = json!([{"value": "h@x", "type": "home"}, {"type": "work", "value": "a@b"}]);
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn entra_manager_as_plain_string() {
        let result = patched(
            user(),
            json!([
                {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "m-42"}
            ]),
        );
        let expected = user_with(|u| {
            u["schemas"] = json!([CORE, ENTERPRISE]);
            u[ENTERPRISE] = json!({"manager": {"value": "m-42"}});
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn manager_as_array_or_object() {
        let with_manager = user_with(|u| {
            u["schemas"] = json!([CORE, ENTERPRISE]);
            u[ENTERPRISE] = json!({"employeeNumber": "7", "manager": {"value": "old", "displayName": "Old Boss"}});
        });
        let result = patched(
            with_manager.clone(),
            json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"),
            "value": [{"$ref": "../Users/m-1", "value": "m-1"}]}]),
        );
        let mut expected = with_manager.clone();
        expected[ENTERPRISE]["manager"] = json!({"value": "m-1", "$ref": "../Users/m-1"});
        assert_eq!(result, expected);

        let result = patched(
            with_manager.clone(),
            json!([{"op": "replace", "path": format!("{ENTERPRISE}:manager"),
            "value": {"value": "m-2"}}]),
        );
        let mut expected = with_manager.clone();
        expected[ENTERPRISE]["manager"] = json!({"value": "m-2", "displayName": "Old Boss"});
        assert_eq!(result, expected);

        let err = patch(
            with_manager,
            json!([{"op": "add", "path": format!("{ENTERPRISE}:manager"),
            "value": [{"value": "a"}, {"value": "b"}]}]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type(), "invalidValue");
    }

    #[test]
    fn entra_member_add_drops_null_ref_and_skips_duplicates() {
        let result = patched(
            group(),
            json!([
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "d"}, {"value": "a"}]},
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "d"}]}
            ]),
        );
        let mut expected = group();
        expected["members"] = json!([{"value": "a"}, {"value": "b"}, {"value": "c"}, {"value": "d"}]);
        assert_eq!(result, expected);
    }

    fn members(ids: std::ops::Range<usize>) -> Vec<Value> {
        ids.map(|i| json!({"value": format!("m{i}")})).collect()
    }

    #[test]
    fn adding_many_members_to_a_large_group_keeps_order_and_skips_duplicates() {
        let start = json!({"schemas": [], "id": "g1", "members": members(0..10_000)});
        let result = patched(start, json!([{"op": "add", "path": "members", "value": members(5_000..15_000)}]));
        assert_eq!(result["members"], json!(members(0..15_000)));
    }

    #[test]
    fn duplicates_within_one_add_are_collapsed() {
        let added = json!([{"value": "e"}, {"value": "b"}, {"value": "e"}, {"value": "d"}]);
        let result = patched(group(), json!([{"op": "add", "path": "members", "value": added}]));
        let mut expected = group();
        expected["members"] = json!([{"value": "a"}, {"value": "b"}, {"value": "c"}, {"value": "e"}, {"value": "d"}]);
        assert_eq!(result, expected);
    }

    #[test]
    fn removing_many_listed_members_from_a_large_group() {
        let start = json!({"schemas": [], "id": "g1", "members": members(0..10_000)});
        let listed: Vec<Value> = members(0..10_000).into_iter().step_by(2).collect();
        let result = patched(start, json!([{"op": "Remove", "path": "members", "value": listed}]));
        let expected: Vec<Value> = members(0..10_000).into_iter().skip(1).step_by(2).collect();
        assert_eq!(result["members"], json!(expected));
    }

    #[test]
    fn entra_member_removal_with_value_array() {
        let result = patched(
            group(),
            json!([
                {"op": "Remove", "path": "members", "value": [{"value": "a"}, {"value": "c"}]}
            ]),
        );
        let mut expected = group();
        expected["members"] = json!([{"value": "b"}]);
        assert_eq!(result, expected);
    }

    #[test]
    fn entra_member_removal_with_value_filter() {
        let result = patched(group(), json!([{"op": "remove", "path": "members[value eq \"b\"]"}]));
        let mut expected = group();
        expected["members"] = json!([{"value": "a"}, {"value": "c"}]);
        assert_eq!(result, expected);
        // Member ids are case-exact in this schema, so a differently cased id removes nothing.
        assert_eq!(patched(group(), json!([{"op": "remove", "path": "members[value eq \"B\"]"}])), group());
    }

    #[test]
    fn remove_without_value_drops_the_whole_attribute() {
        let result = patched(
            group(),
            json!([
                {"op": "remove", "path": "members"},
                {"op": "remove", "path": "displayName", "value": "ignored"},
                {"op": "Replace", "path": "displayName", "value": "Sales EMEA"}
            ]),
        );
        let mut expected = group();
        expected.as_object_mut().unwrap().remove("members");
        expected["displayName"] = json!("Sales EMEA");
        assert_eq!(result, expected);
    }

    #[test]
    fn member_removal_needs_value_keys() {
        let err =
            patch(group(), json!([{"op": "Remove", "path": "members", "value": [{"display": "x"}]}])).unwrap_err();
        assert_eq!(err, PatchError::InvalidValue("each value to remove from 'members' needs a 'value'".into()));
    }

    // ---- RFC forms ----

    #[test]
    fn sub_attribute_path_creates_parent() {
        let mut start = user();
        start.as_object_mut().unwrap().remove("name");
        let result = patched(start.clone(), json!([{"op": "add", "path": "name.givenName", "value": "Barbara"}]));
        let mut expected = start;
        expected["name"] = json!({"givenName": "Barbara"});
        assert_eq!(result, expected);
    }

    #[test]
    fn no_path_nested_object_merges_complex_attribute() {
        for op in ["add", "replace"] {
            let result =
                patched(user(), json!([{"op": op, "value": {"name": {"givenName": "B", "formatted": "B Jensen"}}}]));
            let expected = user_with(|u| {
                u["name"] = json!({"givenName": "B", "familyName": "Jensen", "formatted": "B Jensen"});
            });
            assert_eq!(result, expected, "{op}");
        }
    }

    #[test]
    fn path_to_complex_attribute_merges() {
        let result = patched(
            user(),
            json!([{"op": "replace", "path": "name", "value": {"familyName": "J", "middleName": "x"}}]),
        );
        assert_eq!(result, user_with(|u| u["name"]["familyName"] = json!("J")));
    }

    #[test]
    fn no_path_extension_object_and_core_urn_object() {
        let result = patched(
            user(),
            json!([{"op": "add", "value": {
                ENTERPRISE: {"employeeNumber": "9", "manager": {"value": "m"}},
                CORE: {"displayName": "Core Name"}
            }}]),
        );
        let expected = user_with(|u| {
            u["schemas"] = json!([CORE, ENTERPRISE]);
            u["displayName"] = json!("Core Name");
            u[ENTERPRISE] = json!({"employeeNumber": "9", "manager": {"value": "m"}});
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn core_urn_path_addresses_top_level() {
        let result =
            patched(user(), json!([{"op": "replace", "path": format!("{CORE}:name.givenName"), "value": "B"}]));
        assert_eq!(result, user_with(|u| u["name"]["givenName"] = json!("B")));
    }

    #[test]
    fn filtered_replace_with_object_merges_into_matches() {
        let result = patched(
            user(),
            json!([
                {"op": "replace", "path": "emails[type eq \"work\"]", "value": {"value": "w@x", "primary": "False"}}
            ]),
        );
        let expected = user_with(|u| u["emails"][0] = json!({"value": "w@x", "type": "work", "primary": false}));
        assert_eq!(result, expected);
    }

    #[test]
    fn filtered_add_with_object_creates_element() {
        let result = patched(
            user(),
            json!([
                {"op": "add", "path": "emails[type eq \"other\" and primary eq false]", "value": {"value": "o@x"}}
            ]),
        );
        let expected = user_with(|u| {
            u["emails"].as_array_mut().unwrap().push(json!({"type": "other", "primary": false, "value": "o@x"}));
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn filtered_replace_without_seedable_filter_is_no_target() {
        let err = patch(
            user(),
            json!([
                {"op": "replace", "path": "emails[value co \"nowhere\"].type", "value": "x"}
            ]),
        )
        .unwrap_err();
        assert_eq!(err.scim_type(), "noTarget");
    }

    /// `path` and `value` with `add` and with `replace`, each after a write that succeeds: the
    /// request fails with `noTarget` and the resource is left as it was.
    fn assert_no_target_and_unchanged(path: &str, value: &Value) {
        for op in ["add", "Replace"] {
            let original = user();
            let req = request(json!([
                {"op": "replace", "path": "displayName", "value": "changed"},
                {"op": op, "path": path, "value": value}
            ]));
            let err = apply(&original, &req, &UserSchema).unwrap_err();
            assert!(matches!(err, PatchError::NoTarget(_)), "{op} {path}: {err:?}");
            assert_eq!(original, user(), "{op} {path}");
        }
    }

    #[test]
    fn filtered_write_on_unmodelled_filter_attribute_is_no_target() {
        // `display` is not a sub-attribute of emails, so the created value would lack it and
        // every repeat would add another.
        let path = "emails[display eq \"x\"].value";
        assert_no_target_and_unchanged(path, &json!("a@b.ch"));
        let err = patch(user(), json!([{"op": "add", "path": path, "value": "a@b.ch"}])).unwrap_err();
        let message = "no value of 'emails' matches the filter in 'emails[display eq \"x\"].value', and 'add' cannot \
                       create one: the value built from the filter and the request would not match it";
        assert_eq!(err, PatchError::NoTarget(message.into()));
    }

    #[test]
    fn filtered_write_overriding_the_filter_is_no_target() {
        assert_no_target_and_unchanged("emails[value eq \"a@b.ch\"]", &json!({"value": "c@d.ch", "type": "home"}));
    }

    #[test]
    fn filtered_write_that_creates_a_value_is_idempotent() {
        let no_emails = user_with(|u| drop(u.as_object_mut().unwrap().remove("emails")));
        let home_only = user_with(|u| u["emails"] = json!([{"value": "h@x", "type": "home"}]));
        let writes = [
            json!({"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@b"}),
            json!({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@b"}),
            json!({"op": "add", "path": "emails[type eq \"work\"]", "value": {"type": "WORK", "value": "a@b"}}),
            json!({"op": "add", "path": "emails[value eq \"a@b\"]", "value": {"type": "work"}}),
        ];
        for start in [no_emails, home_only] {
            let before = start.get("emails").and_then(Value::as_array).map_or(0, Vec::len);
            for write in &writes {
                let once = patched(start.clone(), json!([write]));
                assert_eq!(once["emails"].as_array().map(Vec::len), Some(before + 1), "{write}");
                assert_eq!(patched(start.clone(), json!([write, write])), once, "{write}");
                assert_eq!(patched(once.clone(), json!([write])), once, "{write}");
            }
        }
    }

    #[test]
    fn filtered_remove_of_elements_and_sub_attributes() {
        let result = patched(user(), json!([{"op": "remove", "path": "emails[type eq \"WORK\"]"}]));
        assert_eq!(result, user_with(|u| u["emails"] = json!([{"value": "babs@jensen.org", "type": "home"}])));

        let result = patched(user(), json!([{"op": "remove", "path": "emails[type eq \"work\"].value"}]));
        assert_eq!(result, user_with(|u| u["emails"][0] = json!({"type": "work", "primary": true})));

        let result = patched(user(), json!([{"op": "remove", "path": "emails[type eq \"none\"]"}]));
        assert_eq!(result, user());
    }

    #[test]
    fn multi_valued_add_appends_and_replace_swaps() {
        let result = patched(
            user(),
            json!([{"op": "add", "path": "emails", "value": [
                {"value": "babs@jensen.org", "type": "home"},
                {"value": "n@x", "type": "other", "primary": "false"}
            ]}]),
        );
        let expected = user_with(|u| {
            u["emails"].as_array_mut().unwrap().push(json!({"value": "n@x", "type": "other", "primary": false}));
        });
        assert_eq!(result, expected);

        let result = patched(
            user(),
            json!([{"op": "replace", "path": "emails", "value": [{"value": "only@x", "type": "work"}]}]),
        );
        assert_eq!(result, user_with(|u| u["emails"] = json!([{"value": "only@x", "type": "work"}])));
    }

    #[test]
    fn sub_attribute_without_filter_applies_to_every_value() {
        let result = patched(user(), json!([{"op": "replace", "path": "emails.type", "value": "work"}]));
        let expected = user_with(|u| {
            u["emails"][1]["type"] = json!("work");
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn remove_requires_path() {
        let err = patch(group(), json!([{"op": "remove", "value": [{"value": "a"}]}])).unwrap_err();
        assert_eq!(err, PatchError::NoTarget("'remove' requires a path".into()));
    }

    #[test]
    fn remove_of_absent_attribute_is_a_no_op() {
        assert_eq!(patched(user(), json!([{"op": "remove", "path": "nickName"}])), user());
        assert_eq!(patched(user(), json!([{"op": "remove", "path": "name.formatted"}])), user());
        assert_eq!(patched(user(), json!([{"op": "remove", "path": format!("{ENTERPRISE}:manager")}])), user());
    }

    #[test]
    fn remove_last_sub_attribute_drops_parent() {
        let result = patched(
            user(),
            json!([
                {"op": "remove", "path": "name.givenName"},
                {"op": "remove", "path": "name.familyName"}
            ]),
        );
        assert_eq!(result, user_with(|u| drop(u.as_object_mut().unwrap().remove("name"))));
    }

    #[test]
    fn removing_last_extension_attribute_drops_the_extension() {
        let start = user_with(|u| {
            u["schemas"] = json!([CORE, ENTERPRISE]);
            u[ENTERPRISE] = json!({"employeeNumber": "7"});
        });
        let result = patched(start, json!([{"op": "remove", "path": format!("{ENTERPRISE}:employeeNumber")}]));
        assert_eq!(result, user());
    }

    #[test]
    fn null_value_removes() {
        let result = patched(
            user(),
            json!([
                {"op": "replace", "path": "displayName", "value": null},
                {"op": "replace", "value": {"name.givenName": null, "externalId": null}}
            ]),
        );
        let expected = user_with(|u| {
            let map = u.as_object_mut().unwrap();
            map.remove("displayName");
            map.remove("externalId");
            map["name"] = json!({"familyName": "Jensen"});
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn read_only_attributes_are_refused() {
        for op in [
            json!({"op": "replace", "path": "id", "value": "other"}),
            json!({"op": "remove", "path": "id"}),
            json!({"op": "add", "path": "meta.lastModified", "value": "2020-01-01T00:00:00Z"}),
            json!({"op": "replace", "value": {"displayName": "x", "ID": "other"}}),
        ] {
            let err = patch(user(), json!([op])).unwrap_err();
            assert_eq!(err.scim_type(), "mutability", "{op}");
        }
        let err = patch(user(), json!([{"op": "replace", "path": "id", "value": "x"}])).unwrap_err();
        assert_eq!(err.to_string(), "attribute 'id' is read-only");
    }

    #[test]
    fn unknown_attributes_are_ignored() {
        let result = patched(
            user(),
            json!([
                {"op": "Add", "path": "title", "value": "Boss"},
                {"op": "replace", "path": "name.middleName", "value": "M"},
                {"op": "replace", "path": "urn:example:custom:1.0:User:costCenter", "value": "4"},
                {"op": "replace", "value": {"schemas": [CORE], "roles": [], "urn:example:custom:1.0:User": {"a": "b"}}},
                {"op": "remove", "path": "addresses[type eq \"work\"]"}
            ]),
        );
        assert_eq!(result, user());
    }

    #[test]
    fn malformed_paths_are_invalid_path() {
        for path in [
            "name..givenName",
            "emails[type eq \"work\"",
            "emails[type eq]",
            "emails[type eq \"w\"]x",
            "1abc",
            "name.givenName[type eq \"w\"]",
        ] {
            let err = patch(user(), json!([{"op": "replace", "path": path, "value": "x"}])).unwrap_err();
            assert_eq!(err.scim_type(), "invalidPath", "{path}");
        }
        let err = patch(user(), json!([{"op": "replace", "value": {"bad key": "x"}}])).unwrap_err();
        assert_eq!(err, PatchError::InvalidPath("invalid attribute name 'bad key'".into()));
        let err = patch(user(), json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])).unwrap_err();
        assert_eq!(err.to_string(), "invalid path 'emails[type eq': missing ']'");
    }

    #[test]
    fn value_filter_on_single_valued_attribute_is_invalid_path() {
        let err =
            patch(user(), json!([{"op": "replace", "path": "name[givenName eq \"B\"]", "value": {}}])).unwrap_err();
        assert_eq!(err.scim_type(), "invalidPath");
    }

    #[test]
    fn brackets_inside_filter_strings_are_not_path_syntax() {
        let start = user_with(|u| u["emails"][1]["type"] = json!("a]b"));
        let result =
            patched(start.clone(), json!([{"op": "replace", "path": "emails[type eq \"a]b\"].value", "value": "z@x"}]));
        let mut expected = start;
        expected["emails"][1]["value"] = json!("z@x");
        assert_eq!(result, expected);
    }

    #[test]
    fn wrong_value_types_are_invalid_value() {
        let cases = [
            json!({"op": "replace", "path": "userName", "value": 5}),
            json!({"op": "replace", "path": "name", "value": 5}),
            json!({"op": "add", "path": "emails", "value": "x@y"}),
            json!({"op": "add", "path": "emails", "value": ["x@y"]}),
            json!({"op": "add", "value": "x"}),
        ];
        for op in cases {
            let err = patch(user(), json!([op])).unwrap_err();
            assert_eq!(err.scim_type(), "invalidValue", "{op}");
        }
    }

    #[test]
    fn names_match_case_insensitively_and_keep_existing_spelling() {
        let result = patched(
            user(),
            json!([
                {"op": "replace", "path": "USERNAME", "value": "u@x"},
                {"op": "replace", "path": "Name.GivenName", "value": "G"},
                {"op": "replace", "path": "EMAILS[TYPE eq \"Work\"].VALUE", "value": "w@x"},
                {"op": "add", "path": "NickName", "value": "N"}
            ]),
        );
        let expected = user_with(|u| {
            u["userName"] = json!("u@x");
            u["name"]["givenName"] = json!("G");
            u["emails"][0]["value"] = json!("w@x");
            u["NickName"] = json!("N");
        });
        assert_eq!(result, expected);
    }

    #[test]
    fn values_are_stored_exactly_as_sent() {
        let result =
            patched(user(), json!([{"op": "replace", "path": "displayName", "value": "  MiXeD Case \u{e9} "}]));
        assert_eq!(result, user_with(|u| u["displayName"] = json!("  MiXeD Case \u{e9} ")));
    }

    #[test]
    fn request_is_atomic() {
        let original = user();
        let before = original.clone();
        let req = request(json!([
            {"op": "replace", "path": "displayName", "value": "changed"},
            {"op": "replace", "path": "active", "value": "False"},
            {"op": "replace", "path": "id", "value": "stolen"}
        ]));
        let err = apply(&original, &req, &UserSchema).unwrap_err();
        assert_eq!(err, PatchError::Mutability("attribute 'id' is read-only".into()));
        assert_eq!(original, before);
    }

    #[test]
    fn resource_must_be_an_object() {
        let err = patch(json!([]), json!([{"op": "add", "path": "displayName", "value": "x"}])).unwrap_err();
        assert_eq!(err.scim_type(), "invalidValue");
    }

    // ---- primary (RFC 7644 §3.5.2, RFC 7643 §2.4) ----

    /// `user()` whose emails are `emails`.
    fn user_with_emails(emails: Value) -> Value {
        user_with(|u| u["emails"] = emails)
    }

    #[test]
    fn adding_a_primary_email_demotes_the_existing_primary() {
        let start = user_with_emails(json!([{"value": "h@x", "type": "home", "primary": true}]));
        let work = json!({"value": "w@x", "type": "work", "primary": true});
        let expected = user_with_emails(json!([{"value": "h@x", "type": "home", "primary": false}, work]));
        for write in [
            json!({"op": "add", "path": "emails", "value": [work]}),
            json!({"op": "Add", "path": "EMAILS", "value": {"value": "w@x", "type": "work", "primary": "True"}}),
            json!({"op": "add", "value": {"emails": [work]}}),
            json!({"op": "add", "path": "emails[type eq \"work\"]", "value": {"value": "w@x", "primary": true}}),
            json!({"op": "add", "path": "emails[type eq \"work\" and primary eq true].value", "value": "w@x"}),
        ] {
            assert_eq!(patched(start.clone(), json!([write])), expected, "{write}");
        }
    }

    #[test]
    fn filtered_string_true_primary_demotes_the_other_value() {
        let result =
            patched(user(), json!([{"op": "Replace", "path": "emails[type eq \"home\"].primary", "value": "True"}]));
        let expected = user_with_emails(json!([
            {"value": "bjensen@example.com", "type": "work", "primary": false},
            {"value": "babs@jensen.org", "type": "home", "primary": true}
        ]));
        assert_eq!(result, expected);
    }

    #[test]
    fn primary_is_matched_case_insensitively_and_keeps_its_spelling() {
        let start = user_with_emails(json!([
            {"value": "bjensen@example.com", "type": "work", "Primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ]));
        let result =
            patched(start, json!([{"op": "replace", "path": "EMAILS[TYPE eq \"HOME\"].PRIMARY", "value": "TRUE"}]));
        let expected = user_with_emails(json!([
            {"value": "bjensen@example.com", "type": "work", "Primary": false},
            {"value": "babs@jensen.org", "type": "home", "PRIMARY": true}
        ]));
        assert_eq!(result, expected);
    }

    #[test]
    fn making_two_values_primary_fails_and_changes_nothing() {
        let two = json!([{"value": "a@x", "primary": true}, {"value": "b@x", "primary": "true"}]);
        for write in [
            json!({"op": "add", "path": "emails", "value": two}),
            json!({"op": "replace", "path": "emails", "value": two}),
            json!({"op": "add", "value": {"emails": two}}),
            json!({"op": "replace", "path": "emails.primary", "value": true}),
            json!({"op": "replace", "path": "emails[type ne \"other\"].primary", "value": "True"}),
            json!({"op": "add", "path": "emails[value ew \".org\" or type eq \"work\"]", "value": {"primary": true}}),
        ] {
            let original = user();
            let req = request(json!([{"op": "replace", "path": "displayName", "value": "changed"}, write]));
            let err = apply(&original, &req, &UserSchema).unwrap_err();
            assert_eq!(err, PatchError::InvalidValue("at most one value of 'emails' may be primary".into()), "{write}");
            assert_eq!(original, user(), "{write}");
        }
    }

    #[test]
    fn operations_that_do_not_make_a_value_primary_leave_a_double_primary_alone() {
        let start = user_with(|u| u["emails"][1]["primary"] = json!(true));
        let result = patched(
            start.clone(),
            json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@x"},
                {"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@x", "type": "HOME"}},
                {"op": "add", "path": "emails", "value": [{"value": "o@x", "type": "other", "primary": "False"}]},
                {"op": "replace", "path": "emails[type eq \"other\"].primary", "value": false},
                {"op": "remove", "path": "emails[type eq \"none\"]"}
            ]),
        );
        let expected = user_with_emails(json!([
            {"value": "w@x", "type": "work", "primary": true},
            {"value": "h@x", "type": "HOME", "primary": true},
            {"value": "o@x", "type": "other", "primary": false}
        ]));
        assert_eq!(result, expected);
        // Re-adding the stored primary work value does assert `primary`, so the home one yields.
        let readd = json!([{"op": "add", "path": "emails", "value": [start["emails"][0].clone()]}]);
        assert_eq!(patched(start, readd), user_with(|u| u["emails"][1]["primary"] = json!(false)));
    }

    #[test]
    fn reapplying_a_primary_write_is_idempotent() {
        let work_is_primary = json!({"op": "replace", "path": "emails[type eq \"work\"].primary", "value": "true"});
        assert_eq!(patched(user(), json!([work_is_primary])), user());
        for write in [
            work_is_primary,
            json!({"op": "replace", "path": "emails[type eq \"home\"].primary", "value": "True"}),
            json!({"op": "add", "path": "emails", "value": [{"value": "n@x", "type": "other", "primary": true}]}),
            json!({"op": "Add", "path": "emails[type eq \"other\" and primary eq true].value", "value": "n@x"}),
            json!({"op": "replace", "path": "emails[type eq \"home\"]", "value": {"primary": true}}),
        ] {
            let once = patched(user(), json!([write]));
            let primaries = once["emails"].as_array().unwrap().iter().filter(|e| e["primary"] == true).count();
            assert_eq!(primaries, 1, "{write}");
            assert_eq!(patched(user(), json!([write, write])), once, "{write}");
            assert_eq!(patched(once.clone(), json!([write])), once, "{write}");
        }
    }

    #[test]
    fn sub_attribute_without_filter_may_make_a_single_value_primary() {
        let start = user_with_emails(json!([{"value": "h@x", "type": "home"}]));
        let result = patched(start, json!([{"op": "replace", "path": "emails.primary", "value": "True"}]));
        assert_eq!(result, user_with_emails(json!([{"value": "h@x", "type": "home", "primary": true}])));
    }

    const BADGES: &str = "urn:example:params:scim:schemas:extension:badges:2.0:User";

    /// `UserSchema` plus an extension holding a multi-valued attribute.
    struct BadgeSchema;

    impl PatchSchema for BadgeSchema {
        fn attribute(&self, path: &AttrPath) -> Option<AttributeKind> {
            match path.urn.as_deref() {
                Some(urn) if urn.eq_ignore_ascii_case(BADGES) => match path.dotted_lower().as_str() {
                    "badges" => Some(AttributeKind::MultiValuedComplex),
                    "badges.value" => Some(AttributeKind::String),
                    "badges.primary" => Some(AttributeKind::Boolean),
                    _ => None,
                },
                _ => UserSchema.attribute(path),
            }
        }
    }

    #[test]
    fn primary_rule_applies_inside_extensions() {
        let start = user_with(|u| {
            u["schemas"] = json!([CORE, BADGES]);
            u[BADGES] = json!({"badges": [{"value": "a", "primary": true}]});
        });
        let badge = json!({"value": "b", "primary": "true"});
        let mut expected = start.clone();
        expected[BADGES]["badges"] = json!([{"value": "a", "primary": false}, {"value": "b", "primary": true}]);
        for write in [
            json!({"op": "add", "path": format!("{BADGES}:badges"), "value": [badge]}),
            json!({"op": "add", "value": {format!("{BADGES}:badges"): [badge]}}),
            json!({"op": "add", "path": BADGES, "value": {"badges": [badge]}}),
            json!({"op": "add", "path": format!("{BADGES}:badges[value eq \"b\"].primary"), "value": true}),
        ] {
            let result = apply(&start, &request(json!([write])), &BadgeSchema).unwrap();
            assert_eq!(result, expected, "{write}");
        }
        let two = json!({"op": "add", "value": {BADGES: {"badges": [badge, {"value": "c", "primary": true}]}}});
        let err = apply(&start, &request(json!([two])), &BadgeSchema).unwrap_err();
        let message = format!("at most one value of '{BADGES}:badges' may be primary");
        assert_eq!(err, PatchError::InvalidValue(message));
    }
}

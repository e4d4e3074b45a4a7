//! Projection of a SCIM representation by the `attributes` / `excludedAttributes` query parameters (RFC 7644 §3.9),
//! kept apart from the handlers so every endpoint that returns resources trims them the same way.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// RFC 7643 marks these `returned: always`, so neither parameter may hide them.
const ALWAYS_RETURNED: [&str; 2] = ["id", "schemas"];

/// RFC 7644 `ATTRPATH` is one attribute name with at most one sub-attribute; capping the depth also keeps the
/// recursion below bounded whatever a client puts in the query string.
const MAX_ATTR_SEGMENTS: usize = 2;

/// How much of an attribute a parameter names.
#[derive(Debug)]
enum Selection {
    Whole,
    Parts(Tree),
}

/// Keyed by lower-cased name because SCIM attribute names and schema URNs are case-insensitive.
type Tree = BTreeMap<String, Selection>;

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.9) to a SCIM representation.
///
/// `core_schema` is the core schema URN of the resource type; paths prefixed with it address top-level attributes,
/// paths prefixed with any other URN address the object nested under that extension URN. Unknown and malformed
/// paths are ignored, and a non-empty `attributes` makes `excluded` irrelevant.
#[must_use]
pub fn project(resource: Value, attributes: Option<&str>, excluded: Option<&str>, core_schema: &str) -> Value {
    let Value::Object(object) = resource else { return resource };
    let mut included = parse_list(attributes, core_schema, &object);
    if !included.is_empty() {
        for name in ALWAYS_RETURNED {
            included.insert(name.to_owned(), Selection::Whole);
        }
        return Value::Object(keep_only(object, &included));
    }
    let mut removed = parse_list(excluded, core_schema, &object);
    for name in ALWAYS_RETURNED {
        removed.remove(name);
    }
    Value::Object(remove_from(object, &removed))
}

fn parse_list(list: Option<&str>, core_schema: &str, resource: &Map<String, Value>) -> Tree {
    let mut tree = Tree::new();
    let entries = list.into_iter().flat_map(|list| list.split(',')).map(str::trim).filter(|entry| !entry.is_empty());
    for path in entries.filter_map(|entry| parse_path(entry, core_schema, resource)) {
        insert(&mut tree, &path);
    }
    tree
}

/// Lower-cased path segments, led by the URN for extension attributes; `None` skips a malformed entry.
fn parse_path(entry: &str, core_schema: &str, resource: &Map<String, Value>) -> Option<Vec<String>> {
    // Splitting a whole extension URN at its last ':' would yield a shorter URN and a bogus attribute name.
    if resource.keys().any(|key| key.contains(':') && key.eq_ignore_ascii_case(entry)) {
        return Some(vec![entry.to_ascii_lowercase()]);
    }
    let Some((urn, attr)) = entry.rsplit_once(':') else { return attr_segments(entry) };
    let segments = attr_segments(attr)?;
    if urn.eq_ignore_ascii_case(core_schema) {
        return Some(segments);
    }
    if urn.is_empty() {
        return None;
    }
    Some(std::iter::once(urn.to_ascii_lowercase()).chain(segments).collect())
}

fn attr_segments(attr: &str) -> Option<Vec<String>> {
    let segments: Vec<&str> = attr.split('.').take(MAX_ATTR_SEGMENTS + 1).collect();
    if segments.len() > MAX_ATTR_SEGMENTS || segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    Some(segments.into_iter().map(str::to_ascii_lowercase).collect())
}

/// A whole attribute absorbs its sub-attributes, whichever order the client listed them in.
fn insert(tree: &mut Tree, path: &[String]) {
    let Some((head, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        tree.insert(head.clone(), Selection::Whole);
        return;
    }
    let node = tree.entry(head.clone()).or_insert_with(|| Selection::Parts(Tree::new()));
    if let Selection::Parts(children) = node {
        insert(children, rest);
    }
}

fn selection<'a>(tree: &'a Tree, key: &str) -> Option<&'a Selection> {
    tree.get(&key.to_ascii_lowercase())
}

fn keep_only(object: Map<String, Value>, tree: &Tree) -> Map<String, Value> {
    object
        .into_iter()
        .filter_map(|(key, value)| {
            let kept = keep_value(value, selection(tree, &key)?)?;
            Some((key, kept))
        })
        .collect()
}

fn keep_value(value: Value, selection: &Selection) -> Option<Value> {
    let Selection::Parts(children) = selection else { return Some(value) };
    match value {
        // A sub-attribute of a multi-valued attribute is selected in each of its values.
        Value::Array(items) => {
            let kept: Vec<Value> = items.into_iter().filter_map(|item| keep_sub_attributes(item, children)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => keep_sub_attributes(other, children),
    }
}

fn keep_sub_attributes(value: Value, children: &Tree) -> Option<Value> {
    match value {
        Value::Object(object) => non_empty(keep_only(object, children)),
        // A simple value has none of the requested sub-attributes.
        _ => None,
    }
}

fn remove_from(object: Map<String, Value>, tree: &Tree) -> Map<String, Value> {
    object
        .into_iter()
        .filter_map(|(key, value)| match selection(tree, &key) {
            None => Some((key, value)),
            Some(selection) => Some((key, strip_value(value, selection)?)),
        })
        .collect()
}

fn strip_value(value: Value, selection: &Selection) -> Option<Value> {
    let Selection::Parts(children) = selection else { return None };
    match value {
        // Only a container that exclusion emptied is dropped; one that was already empty was not touched.
        Value::Array(items) if !items.is_empty() => {
            let kept: Vec<Value> = items.into_iter().filter_map(|item| strip_sub_attributes(item, children)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => strip_sub_attributes(other, children),
    }
}

fn strip_sub_attributes(value: Value, children: &Tree) -> Option<Value> {
    match value {
        Value::Object(object) if !object.is_empty() => non_empty(remove_from(object, children)),
        other => Some(other),
    }
}

fn non_empty(object: Map<String, Value>) -> Option<Value> {
    (!object.is_empty()).then_some(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user() -> Value {
        json!({
            "schemas": [USER, ENTERPRISE],
            "id": "u1",
            "userName": "a@b.ch",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [
                {"value": "a@b.ch", "type": "work", "primary": true},
                {"value": "a@home.ch", "type": "home"}
            ],
            ENTERPRISE: {"department": "X", "manager": {"value": "m", "displayName": "M"}},
            "meta": {"resourceType": "User", "lastModified": "2024-01-01T00:00:00Z"}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": [GROUP],
            "id": "g1",
            "displayName": "Staff",
            "members": [{"value": "u1", "display": "A"}],
            "meta": {"resourceType": "Group"}
        })
    }

    fn with_attributes(attributes: &str) -> Value {
        project(user(), Some(attributes), None, USER)
    }

    fn without(excluded: &str) -> Value {
        project(user(), None, Some(excluded), USER)
    }

    fn user_minus(keys: &[&str]) -> Value {
        let mut resource = user();
        if let Value::Object(object) = &mut resource {
            for key in keys {
                object.remove(*key);
            }
        }
        resource
    }

    #[test]
    fn no_parameters_leave_the_resource_unchanged() {
        assert_eq!(project(user(), None, None, USER), user());
        assert_eq!(project(user(), Some(""), Some(" "), USER), user());
        assert_eq!(project(group(), None, None, GROUP), group());
    }

    #[test]
    fn attributes_keep_only_listed_top_level_attributes() {
        assert_eq!(
            with_attributes("userName"),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "userName": "a@b.ch"})
        );
        assert_eq!(
            with_attributes(" userName , name "),
            json!({
                "schemas": [USER, ENTERPRISE],
                "id": "u1",
                "userName": "a@b.ch",
                "name": {"givenName": "A", "familyName": "B"}
            })
        );
    }

    #[test]
    fn attributes_with_only_unknown_names_leave_id_and_schemas() {
        assert_eq!(with_attributes("nickName"), json!({"schemas": [USER, ENTERPRISE], "id": "u1"}));
    }

    #[test]
    fn attributes_sub_attribute_keeps_parent_with_only_that_sub_attribute() {
        assert_eq!(
            with_attributes("name.givenName"),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "name": {"givenName": "A"}})
        );
    }

    #[test]
    fn attributes_parent_and_sub_attribute_keep_whole_parent_in_any_order() {
        let expected =
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "name": {"givenName": "A", "familyName": "B"}});
        assert_eq!(with_attributes("name,name.givenName"), expected);
        assert_eq!(with_attributes("name.givenName,name"), expected);
    }

    #[test]
    fn attributes_unknown_sub_attribute_drops_the_parent() {
        assert_eq!(with_attributes("name.middleName,userName.x"), json!({"schemas": [USER, ENTERPRISE], "id": "u1"}));
    }

    #[test]
    fn excluded_sub_attribute_removes_only_that_sub_attribute() {
        assert_eq!(without("name.givenName"), {
            let mut expected = user();
            expected["name"] = json!({"familyName": "B"});
            expected
        });
    }

    #[test]
    fn excluded_sub_attributes_that_empty_the_parent_remove_it() {
        assert_eq!(without("name.givenName,name.familyName"), user_minus(&["name"]));
    }

    #[test]
    fn attributes_sub_attribute_of_multi_valued_attribute_applies_to_each_value() {
        assert_eq!(
            with_attributes("emails.value"),
            json!({
                "schemas": [USER, ENTERPRISE],
                "id": "u1",
                "emails": [{"value": "a@b.ch"}, {"value": "a@home.ch"}]
            })
        );
        assert_eq!(
            with_attributes("emails.primary"),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "emails": [{"primary": true}]})
        );
        assert_eq!(with_attributes("emails.display"), json!({"schemas": [USER, ENTERPRISE], "id": "u1"}));
    }

    #[test]
    fn excluded_sub_attribute_of_multi_valued_attribute_applies_to_each_value() {
        assert_eq!(without("emails.type"), {
            let mut expected = user();
            expected["emails"] = json!([{"value": "a@b.ch", "primary": true}, {"value": "a@home.ch"}]);
            expected
        });
        assert_eq!(without("emails.value,emails.type"), {
            let mut expected = user();
            expected["emails"] = json!([{"primary": true}]);
            expected
        });
        assert_eq!(without("emails.value,emails.type,emails.primary"), user_minus(&["emails"]));
    }

    #[test]
    fn core_urn_prefix_addresses_top_level_attributes() {
        assert_eq!(
            with_attributes(&format!("{USER}:userName,{USER}:name.givenName")),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "userName": "a@b.ch", "name": {"givenName": "A"}})
        );
        assert_eq!(without(&format!("{USER}:emails,{USER}:meta")), user_minus(&["emails", "meta"]));
    }

    #[test]
    fn extension_attribute_keeps_container_with_only_that_attribute() {
        assert_eq!(
            with_attributes(&format!("{ENTERPRISE}:department")),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", ENTERPRISE: {"department": "X"}})
        );
    }

    #[test]
    fn extension_sub_attribute_keeps_container_with_only_that_sub_attribute() {
        assert_eq!(
            with_attributes(&format!("{ENTERPRISE}:manager.value")),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", ENTERPRISE: {"manager": {"value": "m"}}})
        );
    }

    #[test]
    fn extension_attributes_that_match_nothing_drop_the_container() {
        assert_eq!(
            with_attributes(&format!("userName,{ENTERPRISE}:costCenter")),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "userName": "a@b.ch"})
        );
    }

    #[test]
    fn excluded_extension_attributes_remove_them_and_finally_the_container() {
        assert_eq!(without(&format!("{ENTERPRISE}:department")), {
            let mut expected = user();
            expected[ENTERPRISE] = json!({"manager": {"value": "m", "displayName": "M"}});
            expected
        });
        assert_eq!(without(&format!("{ENTERPRISE}:manager.displayName")), {
            let mut expected = user();
            expected[ENTERPRISE] = json!({"department": "X", "manager": {"value": "m"}});
            expected
        });
        // `schemas` still lists the extension: projection leaves it alone.
        assert_eq!(without(&format!("{ENTERPRISE}:department,{ENTERPRISE}:manager")), user_minus(&[ENTERPRISE]));
    }

    #[test]
    fn whole_extension_urn_selects_the_whole_container() {
        assert_eq!(
            with_attributes(ENTERPRISE),
            json!({
                "schemas": [USER, ENTERPRISE],
                "id": "u1",
                ENTERPRISE: {"department": "X", "manager": {"value": "m", "displayName": "M"}}
            })
        );
        assert_eq!(without(ENTERPRISE), user_minus(&[ENTERPRISE]));
    }

    #[test]
    fn names_and_urns_match_case_insensitively_and_keep_their_spelling() {
        assert_eq!(
            with_attributes(&format!("USERNAME,Name.GivenName,{}:Department", ENTERPRISE.to_uppercase())),
            json!({
                "schemas": [USER, ENTERPRISE],
                "id": "u1",
                "userName": "a@b.ch",
                "name": {"givenName": "A"},
                ENTERPRISE: {"department": "X"}
            })
        );
        assert_eq!(
            with_attributes(&format!("{}:USERNAME", USER.to_lowercase())),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "userName": "a@b.ch"})
        );
        assert_eq!(without(&ENTERPRISE.to_lowercase()), user_minus(&[ENTERPRISE]));
        assert_eq!(without("EMAILS,META"), user_minus(&["emails", "meta"]));
    }

    #[test]
    fn id_and_schemas_are_always_returned() {
        assert_eq!(without("id,schemas,ID,Schemas,id.x"), user());
        assert_eq!(without(&format!("{USER}:id,{USER}:schemas")), user());
        assert_eq!(with_attributes("schemas.value,id.x"), json!({"schemas": [USER, ENTERPRISE], "id": "u1"}));
    }

    #[test]
    fn meta_is_returned_by_default_only() {
        assert_eq!(with_attributes("userName").get("meta"), None);
        assert_eq!(
            with_attributes("meta.lastModified"),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1", "meta": {"lastModified": "2024-01-01T00:00:00Z"}})
        );
        assert_eq!(without("userName"), user_minus(&["userName"]));
        assert_eq!(without("meta"), user_minus(&["meta"]));
    }

    #[test]
    fn attributes_govern_when_both_parameters_are_given() {
        assert_eq!(
            project(user(), Some("userName,name"), Some("name,userName"), USER),
            json!({
                "schemas": [USER, ENTERPRISE],
                "id": "u1",
                "userName": "a@b.ch",
                "name": {"givenName": "A", "familyName": "B"}
            })
        );
    }

    #[test]
    fn excluded_applies_when_attributes_hold_no_usable_entry() {
        assert_eq!(project(user(), Some(",, .."), Some("meta"), USER), user_minus(&["meta"]));
    }

    #[test]
    fn group_excluded_members() {
        assert_eq!(
            project(group(), None, Some("members"), GROUP),
            json!({"schemas": [GROUP], "id": "g1", "displayName": "Staff", "meta": {"resourceType": "Group"}})
        );
        assert_eq!(
            project(group(), Some(&format!("{GROUP}:members.value")), None, GROUP),
            json!({"schemas": [GROUP], "id": "g1", "members": [{"value": "u1"}]})
        );
    }

    #[test]
    fn unknown_paths_are_ignored() {
        assert_eq!(without("nickName,name.middleName,emails.display,userName.x,urn:example:Ext:foo"), user());
        assert_eq!(without(&format!("{USER}:nickName,{GROUP}:userName,{USER}")), user());
        assert_eq!(without("emails[type eq \"work\"].value,\u{0},é.ü"), user());
        assert_eq!(
            with_attributes("emails[type eq \"work\"].value,é.ü"),
            json!({"schemas": [USER, ENTERPRISE], "id": "u1"})
        );
    }

    #[test]
    fn malformed_entries_are_ignored() {
        let junk = ",,, .., a..b, name., .name, name..givenName, :, :userName, urn:x:, name.givenName.x";
        assert_eq!(without(junk), user());
        assert_eq!(with_attributes(junk), user());
        assert_eq!(with_attributes(&format!("{junk},userName")), with_attributes("userName"));
        assert_eq!(without(&format!("{junk},meta")), without("meta"));
    }

    #[test]
    fn oversized_input_does_not_panic() {
        let deep = "a.".repeat(100_000);
        let many = "userName,".repeat(100_000);
        assert_eq!(without(&deep), user());
        assert_eq!(with_attributes(&many), with_attributes("userName"));
    }

    #[test]
    fn non_object_resources_are_returned_unchanged() {
        for resource in [Value::Null, json!("u1"), json!(42), json!([{"userName": "a"}]), json!({})] {
            assert_eq!(project(resource.clone(), Some("userName"), Some("userName"), USER), resource);
            assert_eq!(project(resource.clone(), None, Some(",,, .."), USER), resource);
        }
    }

    #[test]
    fn odd_resource_shapes_do_not_panic() {
        let odd = json!({
            "id": 7,
            "name": "plain",
            "emails": ["a@b.ch", [{"value": "nested"}], {}, null],
            "phoneNumbers": [],
            "addresses": {}
        });
        assert_eq!(
            project(odd.clone(), Some("name.givenName,emails.value,phoneNumbers.value,addresses.x"), None, USER),
            json!({"id": 7})
        );
        assert_eq!(
            project(odd.clone(), None, Some("name.givenName,emails.value,phoneNumbers.value,addresses.x"), USER),
            odd
        );
    }
}

//! Properties of the SCIM filter and PATCH engines, checked on generated input: filters survive
//! a trip through their text form, `not` negates, parsing never panics, and PATCH reads back
//! what it wrote, is atomic and adds idempotently.

use cleanmail_operator::scim::{
    filter::{AttrPath, CompareOp, Filter, MAX_FILTER_LEN},
    patch::{self, PatchError, PatchRequest},
    schemas::USER_TYPE,
};
use proptest::{prelude::*, sample::select, test_runner::Config};
use serde_json::{Map, Value, json};

const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const CUSTOM: &str = "urn:example:custom:1.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Names the User resource and the generated resources use, in several spellings.
const NAMES: &[&str] = &[
    "userName",
    "USERNAME",
    "externalId",
    "displayName",
    "active",
    "name",
    "emails",
    "type",
    "value",
    "primary",
    "givenName",
    "familyName",
    "loginCount",
    "title",
    "meta",
    "lastModified",
    "employeeNumber",
    "manager",
    "$ref",
    "x",
];

fn config() -> Config {
    Config { cases: 256, failure_persistence: None, ..Config::default() }
}

fn user() -> Value {
    json!({
        "schemas": [CORE, ENTERPRISE],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "JohnWong",
        "userName": "Bjensen@Example.com",
        "active": true,
        "displayName": "Babs Jensen",
        "loginCount": 42,
        "ratio": 1.5,
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Barbara Jensen"},
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "nickName": "",
        "title": null,
        "roles": [],
        "meta": {"resourceType": "User", "lastModified": "2011-05-13T04:42:34Z"},
        ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
    })
}

// ---------------------------------------------------------------------------------------------
// Filter generation

/// An attribute name; `not` is left out because the parser reads a leading `not` as the
/// operator (it accepts `not` without parentheses).
fn attr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(NAMES).prop_map(str::to_owned),
        1 => "[a-zA-Z$][a-zA-Z0-9_-]{0,8}".prop_filter("not is an operator", |s| !s.eq_ignore_ascii_case("not")),
    ]
}

fn urn() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        1 => select(vec![CORE, ENTERPRISE, CUSTOM, "URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER"])
            .prop_map(|u| Some(u.to_owned())),
    ]
}

fn attr_path() -> impl Strategy<Value = AttrPath> {
    (urn(), attr_name(), proptest::option::of(attr_name())).prop_map(|(urn, attr, sub_attr)| AttrPath {
        urn,
        attr,
        sub_attr,
    })
}

/// A path inside a value filter: relative to one element, so one bare name.
fn element_path() -> impl Strategy<Value = AttrPath> {
    attr_name().prop_map(AttrPath::new)
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ])
}

/// Literals whose JSON text parses back to the same value. Floats are limited to ones with a
/// short exact decimal form.
fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<String>().prop_map(Value::String),
        3 => select(vec!["bjensen@example.com", "BJENSEN@EXAMPLE.COM", "work", "home", "True", "false", "Barbara", "", "2011-05-13T04:42:34Z", "701984"])
            .prop_map(|s| Value::String(s.to_owned())),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (-4096i32..4096).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        1 => (40i64..45).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ]
}

fn leaf(path: BoxedStrategy<AttrPath>) -> impl Strategy<Value = Filter> {
    prop_oneof![
        4 => (path.clone(), compare_op(), literal()).prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
        1 => path.prop_map(Filter::Present),
    ]
}

fn logic(inner: BoxedStrategy<Filter>) -> impl Strategy<Value = Filter> {
    prop_oneof![
        (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
        (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
        inner.prop_map(|a| Filter::Not(Box::new(a))),
    ]
}

/// The filter inside `attr[...]`: no nested value paths.
fn value_filter() -> impl Strategy<Value = Filter> {
    leaf(element_path().boxed()).prop_recursive(2, 6, 2, |inner| logic(inner.boxed()))
}

fn filter() -> impl Strategy<Value = Filter> {
    let value_path = (attr_name(), value_filter())
        .prop_map(|(attr, filter)| Filter::ValuePath { attr: AttrPath::new(attr), filter: Box::new(filter) });
    let atom = prop_oneof![4 => leaf(attr_path().boxed()), 1 => value_path];
    atom.prop_recursive(4, 16, 2, |inner| logic(inner.boxed()))
}

// ---------------------------------------------------------------------------------------------
// Filter rendering

/// How a filter is spelled: every subexpression parenthesised or only what precedence needs,
/// keywords in lower or upper case, and `attr[f].sub op v` where it applies.
#[derive(Debug, Clone, Copy)]
struct Style {
    minimal_parens: bool,
    upper: bool,
    trailing_sub_attr: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(minimal_parens, upper, trailing_sub_attr)| Style {
        minimal_parens,
        upper,
        trailing_sub_attr,
    })
}

fn op_text(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "eq",
        CompareOp::Ne => "ne",
        CompareOp::Co => "co",
        CompareOp::Sw => "sw",
        CompareOp::Ew => "ew",
        CompareOp::Gt => "gt",
        CompareOp::Ge => "ge",
        CompareOp::Lt => "lt",
        CompareOp::Le => "le",
    }
}

/// Binding strength: `or` < `and` < `not` < atoms.
fn precedence(filter: &Filter) -> u8 {
    match filter {
        Filter::Or(..) => 1,
        Filter::And(..) => 2,
        Filter::Not(_) => 3,
        _ => 4,
    }
}

fn render(filter: &Filter, style: Style) -> String {
    let keyword = |k: &str| if style.upper { k.to_ascii_uppercase() } else { k.to_owned() };
    // Parenthesise `f` unless the style allows leaving it bare and its precedence is above `min`.
    let operand = |f: &Filter, min: u8| {
        let text = render(f, style);
        if style.minimal_parens && precedence(f) > min { text } else { format!("({text})") }
    };
    match filter {
        Filter::Compare { path, op, value } => format!("{path} {} {value}", keyword(op_text(*op))),
        Filter::Present(path) => format!("{path} {}", keyword("pr")),
        // Left-associative: a left operand of the same kind needs no parentheses.
        Filter::And(a, b) => format!("{} {} {}", operand(a, 1), keyword("and"), operand(b, 2)),
        Filter::Or(a, b) => format!("{} {} {}", operand(a, 0), keyword("or"), operand(b, 1)),
        Filter::Not(a) => format!("{} {}", keyword("not"), operand(a, 2)),
        Filter::ValuePath { attr, filter } => match filter.as_ref() {
            Filter::And(inner, tail) if style.trailing_sub_attr && is_simple_tail(tail) => {
                let (Filter::Compare { path, .. } | Filter::Present(path)) = tail.as_ref() else { unreachable!() };
                let rest = render(tail, style);
                let rest = rest.strip_prefix(&path.attr).unwrap_or(&rest);
                format!("{attr}[{}].{}{rest}", render(inner, style), path.attr)
            }
            other => format!("{attr}[{}]", render(other, style)),
        },
    }
}

/// `emails[...].value eq "x"` parses as `emails[... and value eq "x"]`.
fn is_simple_tail(filter: &Filter) -> bool {
    match filter {
        Filter::Compare { path, .. } | Filter::Present(path) => path.urn.is_none() && path.sub_attr.is_none(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Resources to evaluate filters against

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec!["bjensen@example.com", "Bjensen@Example.com", "work", "home", "True", "", "JohnWong", "x"])
            .prop_map(|s| Value::String(s.to_owned())),
        any::<String>().prop_map(Value::String),
        (38i64..46).prop_map(Value::from),
        (-16i32..16).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn object_of(values: impl Strategy<Value = Value>, max: usize) -> impl Strategy<Value = Value> {
    proptest::collection::vec((attr_name(), values), 0..max)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>()))
}

fn attribute_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => scalar(),
        1 => object_of(scalar(), 4),
        1 => proptest::collection::vec(prop_oneof![3 => object_of(scalar(), 4), 1 => scalar()], 0..4).prop_map(Value::Array),
    ]
}

fn resource() -> impl Strategy<Value = Value> {
    let extension = (select(vec![ENTERPRISE, CUSTOM]), object_of(attribute_value(), 4));
    (object_of(attribute_value(), 8), proptest::option::of(extension), proptest::bool::weighted(0.25)).prop_map(
        |(mut resource, extension, sample)| {
            if sample {
                return user();
            }
            if let (Some((urn, value)), Some(map)) = (extension, resource.as_object_mut()) {
                map.insert(urn.to_owned(), value);
            }
            resource
        },
    )
}

fn parse(text: &str) -> Filter {
    text.parse().unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rendered_filters_parse_back_to_the_same_ast(f in filter(), style in style(), resource in resource()) {
        let text = render(&f, style);
        prop_assume!(text.len() <= MAX_FILTER_LEN);
        let parsed = parse(&text);
        prop_assert_eq!(&parsed, &f, "text: {}", text);
        prop_assert_eq!(parsed.matches(&resource, &USER_TYPE), f.matches(&resource, &USER_TYPE));
        prop_assert_eq!(parsed.matches(&user(), &USER_TYPE), f.matches(&user(), &USER_TYPE));
    }

    #[test]
    fn not_negates(f in filter(), style in style(), resource in resource()) {
        let hit = f.matches(&resource, &USER_TYPE);
        prop_assert_eq!(Filter::Not(Box::new(f.clone())).matches(&resource, &USER_TYPE), !hit);
        let text = format!("not ({})", render(&f, style));
        prop_assume!(text.len() + 6 <= MAX_FILTER_LEN);
        prop_assert_eq!(parse(&text).matches(&resource, &USER_TYPE), !hit, "text: {}", text);
        prop_assert_eq!(parse(&format!("not ({text})")).matches(&resource, &USER_TYPE), hit);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        if let Ok(f) = text.parse::<Filter>() {
            let _ = f.matches(&user(), &USER_TYPE);
        }
        let _ = text.parse::<AttrPath>();
    }

    #[test]
    fn parse_never_panics_on_filter_like_text(
        text in r#"([a-zA-Z.:$]{1,6}|eq|and|or|not|pr|[()\[\]"\\ ]|"[^"]{0,4}"|-?[0-9.eE+]{1,4}| ){0,24}"#,
        resource in resource(),
    ) {
        if let Ok(f) = text.parse::<Filter>() {
            let hit = f.matches(&resource, &USER_TYPE);
            prop_assert_eq!(Filter::Not(Box::new(f)).matches(&resource, &USER_TYPE), !hit);
        }
    }

    #[test]
    fn mangled_filters_never_panic(f in filter(), style in style(), cut in any::<prop::sample::Index>(), junk in r#"[()\[\]" .]"#) {
        let text = render(&f, style);
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let _ = text[..at].parse::<Filter>();
        let _ = format!("{}{junk}{}", &text[..at], &text[at..]).parse::<Filter>();
    }
}

// ---------------------------------------------------------------------------------------------
// PATCH

fn request(operations: &[Value]) -> PatchRequest {
    serde_json::from_value(json!({"schemas": [PATCH_OP], "Operations": operations})).expect("a PATCH request")
}

fn apply(resource: &Value, operations: &[Value]) -> Result<Value, PatchError> {
    patch::apply(resource, &request(operations), &USER_TYPE)
}

/// Member `name` of `node`, ignoring case as SCIM does.
fn get_ci<'v>(node: &'v Value, name: &str) -> Option<&'v Value> {
    node.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// Changes the case of some ASCII letters, driven by `mask`.
fn recase(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

/// A single-valued string attribute of the User: the PATCH path (before recasing) and the
/// names leading to it.
const STRING_TARGETS: &[(&str, &[&str])] = &[
    ("userName", &["userName"]),
    ("displayName", &["displayName"]),
    ("externalId", &["externalId"]),
    ("name.givenName", &["name", "givenName"]),
    ("name.familyName", &["name", "familyName"]),
    ("name.formatted", &["name", "formatted"]),
    ("urn:ietf:params:scim:schemas:core:2.0:User:displayName", &["displayName"]),
];

fn op_spelling(op: &'static str) -> impl Strategy<Value = String> {
    select(vec![op.to_owned(), op.to_ascii_uppercase(), format!("{}{}", op[..1].to_ascii_uppercase(), &op[1..])])
}

/// A filter literal for `text`.
fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replace_then_read_gives_the_value(
        (path, names) in select(STRING_TARGETS),
        mask in any::<u64>(),
        value in any::<String>(),
        op in op_spelling("replace"),
    ) {
        let path = if path.starts_with("urn:") { path.to_owned() } else { recase(path, mask) };
        let patched = apply(&user(), &[json!({"op": op, "path": path, "value": value})]).unwrap();
        let read = names.iter().try_fold(&patched, |node, name| get_ci(node, name));
        prop_assert_eq!(read, Some(&Value::String(value.clone())));
        // The filter engine finds the resource by the new value.
        let dotted = names.join(".");
        let equal = parse(&format!("{dotted} eq {}", quoted(&value)));
        let unequal = parse(&format!("{dotted} ne {}", quoted(&value)));
        prop_assert!(equal.matches(&patched, &USER_TYPE));
        prop_assert!(!unequal.matches(&patched, &USER_TYPE));
    }

    #[test]
    fn replace_then_read_boolean(
        value in prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (any::<bool>(), any::<u64>()).prop_map(|(b, mask)| Value::String(recase(&b.to_string(), mask))),
        ],
        op in op_spelling("replace"),
    ) {
        let expected = match &value {
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            other => other.as_bool().unwrap(),
        };
        let patched = apply(&user(), &[json!({"op": op, "path": "active", "value": value})]).unwrap();
        prop_assert_eq!(&patched["active"], &Value::Bool(expected));
        let found = parse(&format!("active eq {expected}")).matches(&patched, &USER_TYPE);
        prop_assert!(found);
    }

    #[test]
    fn replace_through_value_filter_then_read(
        kind in select(vec!["work", "home", "other"]),
        value in any::<String>(),
        op in op_spelling("replace"),
    ) {
        let path = format!("emails[type eq {}].value", quoted(kind));
        let patched = apply(&user(), &[json!({"op": op, "path": path, "value": value})]).unwrap();
        let emails = patched["emails"].as_array().unwrap();
        let of_kind: Vec<&Value> = emails.iter().filter(|e| e["type"] == kind).collect();
        prop_assert_eq!(of_kind.len(), 1);
        prop_assert_eq!(&of_kind[0]["value"], &Value::String(value.clone()));
        // Elements of other kinds are untouched.
        let others: Vec<&Value> = emails.iter().filter(|e| e["type"] != kind).collect();
        let original: Vec<Value> = user()["emails"].as_array().unwrap().iter().filter(|e| e["type"] != kind).cloned().collect();
        prop_assert_eq!(others, original.iter().collect::<Vec<_>>());
        let filter = format!("emails[type eq {}].value eq {}", quoted(kind), quoted(&value));
        prop_assert!(parse(&filter).matches(&patched, &USER_TYPE));
    }
}

/// Operations that succeed on the sample user whatever ran before them.
fn good_operation() -> impl Strategy<Value = Value> {
    let text = prop_oneof![any::<String>(), select(vec!["a@b", "Babs", ""]).prop_map(str::to_owned)];
    prop_oneof![
        text.clone().prop_map(|v| json!({"op": "replace", "path": "displayName", "value": v})),
        text.clone().prop_map(|v| json!({"op": "Add", "path": "nickName", "value": v})),
        text.clone().prop_map(|v| json!({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": v})),
        text.clone().prop_map(|v| json!({"op": "add", "value": {"name.givenName": v, "displayName": "D"}})),
        text.prop_map(
            |v| json!({"op": "add", "path": "emails", "value": [{"value": v, "type": "other", "primary": "False"}]})
        ),
        select(vec!["True", "false", "TRUE"]).prop_map(|v| json!({"op": "Replace", "path": "active", "value": v})),
        Just(json!({"op": "remove", "path": "name.formatted"})),
        Just(json!({"op": "remove", "path": "emails[type eq \"home\"]"})),
        Just(json!({"op": "replace", "path": "name", "value": {"familyName": "J", "formatted": null}})),
        Just(json!({"op": "add", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "7"})),
    ]
}

/// Operations that fail on any User.
fn bad_operation() -> impl Strategy<Value = Value> {
    select(vec![
        json!({"op": "replace", "path": "id", "value": "stolen"}),
        json!({"op": "remove", "path": "meta"}),
        json!({"op": "Replace", "value": {"displayName": "x", "ID": "other"}}),
        json!({"op": "replace", "path": "userName", "value": 5}),
        json!({"op": "add", "path": "emails", "value": "x@y"}),
        json!({"op": "add", "path": "emails", "value": [{"value": "x@y", "primary": "yes"}]}),
        json!({"op": "Replace", "path": "active", "value": "yes"}),
        json!({"op": "remove", "value": [{"value": "a"}]}),
        json!({"op": "replace", "path": "name..givenName", "value": "x"}),
        json!({"op": "replace", "path": "emails[type eq", "value": "x"}),
        json!({"op": "replace", "path": "name[givenName eq \"B\"]", "value": {}}),
        json!({"op": "replace", "path": "emails[value co \"nowhere\"].type", "value": "x"}),
        json!({"op": "add", "path": "displayName"}),
        json!({"op": "add", "value": "x"}),
    ])
}

/// A simple attribute and a value for it that `add` accepts.
fn add_operation() -> impl Strategy<Value = Value> {
    let text = prop_oneof![any::<String>(), select(vec!["a@b", "Babs", ""]).prop_map(str::to_owned)];
    let email =
        (text.clone(), select(vec!["work", "home", "other"]), select(vec![json!(true), json!("False"), Value::Null]))
            .prop_map(|(value, kind, primary)| json!({"value": value, "type": kind, "primary": primary}));
    prop_oneof![
        (select(vec!["userName", "displayName", "externalId", "name.givenName", "nickName", "USERNAME"]), text.clone())
            .prop_map(|(path, v)| json!({"op": "add", "path": path, "value": v})),
        select(vec![json!(true), json!(false), json!("True"), json!("false")])
            .prop_map(|v| json!({"op": "Add", "path": "active", "value": v})),
        proptest::collection::vec(email, 1..4).prop_map(|v| json!({"op": "add", "path": "emails", "value": v})),
        text.clone().prop_map(|v| json!({"op": "add", "path": "emails[type eq \"work\"].value", "value": v})),
        text.clone().prop_map(|v| json!({"op": "add", "path": "emails[type eq \"other\"].value", "value": v})),
        text.clone().prop_map(|v| json!({"op": "add", "path": "name", "value": {"givenName": v, "familyName": "J"}})),
        text.prop_map(|v| json!({"op": "Add", "value": {"displayName": v, "name.familyName": "F"}})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_failing_operation_leaves_nothing_changed(
        prefix in proptest::collection::vec(good_operation(), 0..4),
        bad in bad_operation(),
        suffix in proptest::collection::vec(good_operation(), 0..3),
    ) {
        let original = user();
        let snapshot = original.clone();
        let before = apply(&original, &prefix).or_else(|e| if prefix.is_empty() { Ok(original.clone()) } else { Err(e) });
        prop_assert!(before.is_ok(), "the prefix alone fails: {:?}", before);
        let alone = apply(&original, std::slice::from_ref(&bad)).unwrap_err();

        let all: Vec<Value> = prefix.iter().cloned().chain([bad]).chain(suffix).collect();
        let err = apply(&original, &all).unwrap_err();
        prop_assert_eq!(&err, &alone, "the failing operation decides the error");
        prop_assert_eq!(&original, &snapshot);
        // The failed request left no trace: the successful prefix still gives the same result.
        let again = apply(&original, &prefix).or_else(|e| if prefix.is_empty() { Ok(original.clone()) } else { Err(e) });
        prop_assert_eq!(again, before);
    }

    #[test]
    fn adding_the_same_value_twice_equals_adding_it_once(add in add_operation()) {
        let once = apply(&user(), std::slice::from_ref(&add));
        let twice = apply(&user(), &[add.clone(), add.clone()]);
        prop_assert_eq!(&twice, &once);
        if let Ok(once) = once {
            prop_assert_eq!(apply(&once, std::slice::from_ref(&add)), Ok(once));
        }
    }

    #[test]
    fn apply_is_deterministic(operations in proptest::collection::vec(prop_oneof![good_operation(), add_operation(), bad_operation()], 1..5)) {
        prop_assert_eq!(apply(&user(), &operations), apply(&user(), &operations));
    }
}

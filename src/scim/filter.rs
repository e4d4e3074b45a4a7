//! SCIM filter expressions (RFC 7644 §3.4.2.2): parsing into an AST and evaluation against a
//! resource held as JSON.
//!
//! Beyond the RFC grammar the parser accepts `attr[filter].subAttr op value` (the form Entra ID
//! uses to match on a work email) and `not` without parentheses. Evaluation rules that the RFC
//! leaves open:
//!
//! * A missing or null attribute never satisfies a comparison, `ne` included; only an enclosing
//!   `not (...)` turns such a miss into a match. This keeps `ne` from selecting resources that
//!   simply lack the attribute, which is what clients querying for "other values" expect.
//! * A comparison on a multi-valued attribute holds when any value satisfies it; for complex
//!   values without a sub-attribute the element's `value` sub-attribute is compared.
//! * A string literal `"true"`/`"false"` (any case) equals the matching boolean, because Entra
//!   sends booleans as strings.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The core User schema; a path prefixed with it addresses a top-level attribute.
pub const CORE_USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// Every core schema (User, Group) keeps its attributes at the top level of the resource.
const CORE_URN_PREFIX: &str = "urn:ietf:params:scim:schemas:core:2.0:";

/// Filters longer than this are refused before parsing, bounding the work one request can cause.
pub const MAX_FILTER_LEN: usize = 4096;

/// Nesting (parentheses, `not`, value filters) deeper than this is refused so recursion stays
/// bounded.
pub const MAX_FILTER_DEPTH: usize = 64;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`; `value` is a JSON string, number, boolean or null.
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    /// `path pr`.
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`; paths inside `filter` are relative to one element of `attr`. The form
    /// `attr[filter].sub op value` parses as `attr[filter and sub op value]`, which holds when
    /// a single element satisfies both.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `[URN ":"] attr ["." subAttr]`, spelled as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub attr: String,
    pub sub_attr: Option<String>,
}

/// A filter or attribute path that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    message: String,
    position: Option<usize>,
}

/// Case-exactness of attributes, supplied by the resource type's schema (RFC 7643 §2.2).
pub trait AttributeSchema {
    /// Whether string comparisons on `path` are case-sensitive. Inside a value filter the path
    /// is given in full (`emails.value`), not relative to the element.
    fn case_exact(&self, path: &AttrPath) -> bool;
}

impl FilterError {
    fn at(message: impl fmt::Display, position: usize) -> Self {
        Self { message: format!("{message} at position {position}"), position: Some(position) }
    }

    fn whole(message: impl Into<String>) -> Self {
        Self { message: message.into(), position: None }
    }

    /// The 1-based character position the error refers to, when there is one.
    #[must_use]
    pub fn position(&self) -> Option<usize> {
        self.position
    }
}

impl AttrPath {
    /// A top-level attribute without URN or sub-attribute.
    #[must_use]
    pub fn new(attr: impl Into<String>) -> Self {
        Self { urn: None, attr: attr.into(), sub_attr: None }
    }

    /// The same attribute with `sub` as its sub-attribute.
    #[must_use]
    pub fn with_sub(&self, sub: impl Into<String>) -> Self {
        Self { urn: self.urn.clone(), attr: self.attr.clone(), sub_attr: Some(sub.into()) }
    }

    /// The attribute itself, without its sub-attribute.
    #[must_use]
    pub fn parent(&self) -> Self {
        Self { urn: self.urn.clone(), attr: self.attr.clone(), sub_attr: None }
    }

    /// True when the path lives at the top level of the resource (no URN, or a core schema URN).
    #[must_use]
    pub fn is_core(&self) -> bool {
        self.urn.as_deref().is_none_or(is_core_urn)
    }

    /// `attr` or `attr.sub`, lower-cased and without URN: the key schema tables are usually
    /// keyed by.
    #[must_use]
    pub fn dotted_lower(&self) -> String {
        match &self.sub_attr {
            Some(sub) => format!("{}.{}", self.attr, sub).to_ascii_lowercase(),
            None => self.attr.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl FromStr for AttrPath {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, FilterError> {
        parse_attr_path(s).ok_or_else(|| FilterError::whole(format!("invalid attribute path '{s}'")))
    }
}

/// Whether `urn` names a core schema, whose attributes sit at the top level.
#[must_use]
pub fn is_core_urn(urn: &str) -> bool {
    urn.len() > CORE_URN_PREFIX.len()
        && urn.is_char_boundary(CORE_URN_PREFIX.len())
        && urn[..CORE_URN_PREFIX.len()].eq_ignore_ascii_case(CORE_URN_PREFIX)
}

fn parse_attr_path(s: &str) -> Option<AttrPath> {
    let (urn, rest) = split_urn(s)?;
    let (attr, sub_attr) = match rest.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub)),
        None => (rest, None),
    };
    if !is_attr_name(attr) || !sub_attr.is_none_or(is_attr_name) {
        return None;
    }
    Some(AttrPath { urn: urn.map(str::to_owned), attr: attr.to_owned(), sub_attr: sub_attr.map(str::to_owned) })
}

/// URNs contain dots (`2.0`), so the attribute part starts after the last colon.
fn split_urn(s: &str) -> Option<(Option<&str>, &str)> {
    let has_urn = s.len() > 4 && s.is_char_boundary(4) && s[..4].eq_ignore_ascii_case("urn:");
    if !has_urn {
        return Some((None, s));
    }
    let (urn, rest) = s.rsplit_once(':')?;
    Some((Some(urn), rest))
}

/// RFC 7643 ATTRNAME, plus a leading `$` so that `$ref` can be addressed.
fn is_attr_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokKind,
    pos: usize,
}

impl fmt::Display for TokKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LParen => f.write_str("("),
            Self::RParen => f.write_str(")"),
            Self::LBracket => f.write_str("["),
            Self::RBracket => f.write_str("]"),
            Self::Str(s) => write!(f, "{}", Value::String(s.clone())),
            Self::Word(w) => f.write_str(w),
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        let (kind, next) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (TokKind::LParen, i + 1),
            ')' => (TokKind::RParen, i + 1),
            '[' => (TokKind::LBracket, i + 1),
            ']' => (TokKind::RBracket, i + 1),
            '"' => lex_string(&chars, i)?,
            _ => lex_word(&chars, i),
        };
        tokens.push(Token { kind, pos });
        i = next;
    }
    Ok(tokens)
}

/// Finds the closing quote, then lets `serde_json` decode the escapes so literals follow JSON
/// exactly.
fn lex_string(chars: &[char], start: usize) -> Result<(TokKind, usize), FilterError> {
    let mut j = start + 1;
    while j < chars.len() && chars[j] != '"' {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    if j >= chars.len() {
        return Err(FilterError::at("unterminated string", start + 1));
    }
    let literal: String = chars[start..=j].iter().collect();
    let decoded = serde_json::from_str::<String>(&literal)
        .map_err(|_| FilterError::at(format!("invalid string literal {literal}"), start + 1))?;
    Ok((TokKind::Str(decoded), j + 1))
}

fn lex_word(chars: &[char], start: usize) -> (TokKind, usize) {
    let end = chars[start..]
        .iter()
        .position(|c| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"'))
        .map_or(chars.len(), |n| start + n);
    (TokKind::Word(chars[start..end].iter().collect()), end)
}

// ---------------------------------------------------------------------------------------------
// Parser

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(input: &str) -> Result<Self, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return Err(FilterError::whole(format!("filter is longer than {MAX_FILTER_LEN} bytes")));
        }
        let tokens = tokenize(input)?;
        if tokens.is_empty() {
            return Err(FilterError::whole("empty filter"));
        }
        let end_pos = input.chars().count() + 1;
        let mut parser = Parser { tokens, idx: 0, depth: 0, in_value_filter: false, end_pos };
        let filter = parser.parse_or()?;
        match parser.peek() {
            Some(tok) => Err(FilterError::at(format!("unexpected token '{}'", tok.kind), tok.pos)),
            None => Ok(filter),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    idx: usize,
    depth: usize,
    in_value_filter: bool,
    end_pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.idx)
    }

    fn next(&mut self) -> Option<Token> {
        let tok = self.tokens.get(self.idx).cloned();
        self.idx += 1;
        tok
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: TokKind::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn end_error(&self, expected: &str) -> FilterError {
        FilterError::at(format!("unexpected end of filter, expected {expected}"), self.end_pos)
    }

    fn expect_token(&mut self, kind: &TokKind) -> Result<(), FilterError> {
        match self.next() {
            Some(tok) if tok.kind == *kind => Ok(()),
            Some(tok) => Err(FilterError::at(format!("expected '{kind}' but found '{}'", tok.kind), tok.pos)),
            None => Err(self.end_error(&format!("'{kind}'"))),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(FilterError::at(format!("filter nests deeper than {MAX_FILTER_DEPTH} levels"), pos));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        while self.peek_keyword("or") {
            self.idx += 1;
            left = Filter::Or(Box::new(left), Box::new(self.parse_and()?));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_not()?;
        while self.peek_keyword("and") {
            self.idx += 1;
            left = Filter::And(Box::new(left), Box::new(self.parse_not()?));
        }
        Ok(left)
    }

    fn parse_not(&mut self) -> Result<Filter, FilterError> {
        if !self.peek_keyword("not") {
            return self.parse_atom();
        }
        let pos = self.next().map_or(self.end_pos, |t| t.pos);
        self.enter(pos)?;
        let inner = self.parse_not()?;
        self.depth -= 1;
        Ok(Filter::Not(Box::new(inner)))
    }

    fn parse_atom(&mut self) -> Result<Filter, FilterError> {
        let tok = self.next().ok_or_else(|| self.end_error("an attribute path or '('"))?;
        match tok.kind {
            TokKind::LParen => self.parse_group(tok.pos),
            TokKind::Word(word) => self.parse_attr_exp(&word, tok.pos),
            other => Err(FilterError::at(format!("unexpected token '{other}'"), tok.pos)),
        }
    }

    fn parse_group(&mut self, pos: usize) -> Result<Filter, FilterError> {
        self.enter(pos)?;
        let inner = self.parse_or()?;
        self.expect_token(&TokKind::RParen)?;
        self.depth -= 1;
        Ok(inner)
    }

    fn parse_attr_exp(&mut self, word: &str, pos: usize) -> Result<Filter, FilterError> {
        let path =
            parse_attr_path(word).ok_or_else(|| FilterError::at(format!("invalid attribute path '{word}'"), pos))?;
        if matches!(self.peek(), Some(Token { kind: TokKind::LBracket, .. })) {
            return self.parse_value_path(path);
        }
        self.parse_operation(path, word)
    }

    fn parse_value_path(&mut self, attr: AttrPath) -> Result<Filter, FilterError> {
        let pos = self.next().map_or(self.end_pos, |t| t.pos);
        if self.in_value_filter {
            return Err(FilterError::at("value filters cannot be nested", pos));
        }
        self.enter(pos)?;
        self.in_value_filter = true;
        let inner = self.parse_or()?;
        self.expect_token(&TokKind::RBracket)?;
        let filter = match self.take_trailing_sub_attr()? {
            Some((sub, word)) => {
                let tail = self.parse_operation(AttrPath::new(sub), &word)?;
                Filter::And(Box::new(inner), Box::new(tail))
            }
            None => inner,
        };
        self.in_value_filter = false;
        self.depth -= 1;
        Ok(Filter::ValuePath { attr, filter: Box::new(filter) })
    }

    /// The `.value` in `emails[type eq "work"].value eq "x"`.
    fn take_trailing_sub_attr(&mut self) -> Result<Option<(String, String)>, FilterError> {
        let Some(Token { kind: TokKind::Word(word), pos }) = self.peek().cloned() else {
            return Ok(None);
        };
        let Some(sub) = word.strip_prefix('.') else {
            return Ok(None);
        };
        if !is_attr_name(sub) {
            return Err(FilterError::at(format!("invalid sub-attribute '{word}'"), pos));
        }
        self.idx += 1;
        Ok(Some((sub.to_owned(), word)))
    }

    fn parse_operation(&mut self, path: AttrPath, path_text: &str) -> Result<Filter, FilterError> {
        let tok = self.next().ok_or_else(|| self.end_error(&format!("an operator after '{path_text}'")))?;
        let TokKind::Word(word) = &tok.kind else {
            return Err(FilterError::at(
                format!("expected an operator after '{path_text}' but found '{}'", tok.kind),
                tok.pos,
            ));
        };
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op =
            parse_compare_op(word).ok_or_else(|| FilterError::at(format!("unknown operator '{word}'"), tok.pos))?;
        let value = self.parse_comp_value(word)?;
        Ok(Filter::Compare { path, op, value })
    }

    fn parse_comp_value(&mut self, op_text: &str) -> Result<Value, FilterError> {
        let tok = self.next().ok_or_else(|| self.end_error(&format!("a value after '{op_text}'")))?;
        match tok.kind {
            TokKind::Str(s) => Ok(Value::String(s)),
            TokKind::Word(word) => parse_bare_value(&word)
                .ok_or_else(|| FilterError::at(format!("invalid comparison value '{word}'"), tok.pos)),
            other => Err(FilterError::at(format!("expected a value after '{op_text}' but found '{other}'"), tok.pos)),
        }
    }
}

fn parse_compare_op(word: &str) -> Option<CompareOp> {
    let op = match word.to_ascii_lowercase().as_str() {
        "eq" => CompareOp::Eq,
        "ne" => CompareOp::Ne,
        "co" => CompareOp::Co,
        "sw" => CompareOp::Sw,
        "ew" => CompareOp::Ew,
        "gt" => CompareOp::Gt,
        "ge" => CompareOp::Ge,
        "lt" => CompareOp::Lt,
        "le" => CompareOp::Le,
        _ => return None,
    };
    Some(op)
}

/// ABNF literals are case-insensitive, so `True` is as valid as `true`.
fn parse_bare_value(word: &str) -> Option<Value> {
    match word.to_ascii_lowercase().as_str() {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => serde_json::from_str::<serde_json::Number>(word).ok().map(Value::Number),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

impl Filter {
    /// Evaluate against a SCIM resource as JSON (attribute names matched case-insensitively per
    /// RFC 7643 §2.1).
    #[must_use]
    pub fn matches(&self, resource: &Value, schema: &dyn AttributeSchema) -> bool {
        Eval { schema, parent: None }.eval(self, resource)
    }

    /// Evaluate a value filter (the part inside `attr[...]`) against one element of `parent`;
    /// paths in the filter are relative to that element.
    #[must_use]
    pub fn matches_element(&self, element: &Value, parent: &AttrPath, schema: &dyn AttributeSchema) -> bool {
        Eval { schema, parent: Some(parent) }.eval(self, element)
    }

    /// If the filter is (or is an `and` containing) `<attr> eq "<string>"` on a top-level
    /// attribute named `attr` (case-insensitive, no sub-attr, no URN or the core User URN),
    /// return that string; used for index lookups.
    #[must_use]
    pub fn eq_lookup(&self, attr: &str) -> Option<&str> {
        match self {
            Self::Compare { path, op: CompareOp::Eq, value: Value::String(s) }
                if path.sub_attr.is_none()
                    && path.attr.eq_ignore_ascii_case(attr)
                    && path.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(CORE_USER_URN)) =>
            {
                Some(s)
            }
            // Both sides of an `and` must hold, so either side narrows the candidates.
            Self::And(left, right) => left.eq_lookup(attr).or_else(|| right.eq_lookup(attr)),
            _ => None,
        }
    }
}

struct Eval<'a> {
    schema: &'a dyn AttributeSchema,
    /// Set while evaluating inside a value filter: paths are then sub-attributes of it.
    parent: Option<&'a AttrPath>,
}

impl Eval<'_> {
    fn eval(&self, filter: &Filter, node: &Value) -> bool {
        match filter {
            Filter::Compare { path, op, value } => self.compare(path, *op, value, node),
            Filter::Present(path) => self.lookup(path, node).into_iter().any(is_present),
            Filter::And(a, b) => self.eval(a, node) && self.eval(b, node),
            Filter::Or(a, b) => self.eval(a, node) || self.eval(b, node),
            Filter::Not(inner) => !self.eval(inner, node),
            Filter::ValuePath { attr, filter } => self.eval_value_path(attr, filter, node),
        }
    }

    fn eval_value_path(&self, attr: &AttrPath, filter: &Filter, node: &Value) -> bool {
        let inner = Eval { schema: self.schema, parent: Some(attr) };
        self.lookup(attr, node).into_iter().any(|element| inner.eval(filter, element))
    }

    fn compare(&self, path: &AttrPath, op: CompareOp, literal: &Value, node: &Value) -> bool {
        let case_exact = self.schema.case_exact(&self.full_path(path));
        self.lookup(path, node)
            .into_iter()
            .map(simple_value)
            .any(|actual| compare_value(actual, op, literal, case_exact))
    }

    fn full_path(&self, path: &AttrPath) -> AttrPath {
        match self.parent {
            Some(parent) => parent.with_sub(path.attr.clone()),
            None => path.clone(),
        }
    }

    /// Every value `path` names in `node`, with multi-valued attributes flattened.
    fn lookup<'v>(&self, path: &AttrPath, node: &'v Value) -> Vec<&'v Value> {
        let container = match (&self.parent, &path.urn) {
            (None, Some(urn)) if !is_core_urn(urn) => get_ci(node, urn),
            _ => Some(node),
        };
        let Some(value) = container.and_then(|c| get_ci(c, &path.attr)) else {
            return Vec::new();
        };
        let values = flatten(value);
        match &path.sub_attr {
            Some(sub) => values.into_iter().filter_map(|v| get_ci(v, sub)).flat_map(flatten).collect(),
            None => values,
        }
    }
}

/// Looks up an object member case-insensitively (RFC 7643 §2.1).
#[must_use]
pub fn get_ci<'v>(node: &'v Value, name: &str) -> Option<&'v Value> {
    node.as_object().and_then(|map| find_key(map, name)).and_then(|k| node.get(k))
}

/// The key in `map` that equals `name` ignoring ASCII case.
#[must_use]
pub fn find_key<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m str> {
    if map.contains_key(name) {
        return map.get_key_value(name).map(|(k, _)| k.as_str());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).map(String::as_str)
}

fn flatten(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// A complex value compared without a sub-attribute stands for its `value` sub-attribute
/// (RFC 7644 §3.4.2.2).
fn simple_value(value: &Value) -> &Value {
    match value {
        Value::Object(_) => get_ci(value, "value").unwrap_or(&Value::Null),
        other => other,
    }
}

fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

fn compare_value(actual: &Value, op: CompareOp, literal: &Value, case_exact: bool) -> bool {
    match (actual, literal) {
        (Value::String(a), Value::String(l)) => compare_strings(a, op, l, case_exact),
        (Value::Bool(a), Value::Bool(l)) => compare_equality(a == l, op),
        (Value::Bool(a), Value::String(l)) => string_as_bool(l).is_some_and(|l| compare_equality(*a == l, op)),
        (Value::Number(a), Value::Number(l)) => compare_numbers(a, l).is_some_and(|o| ordering_holds(o, op)),
        (Value::Null, _) => false,
        (_, Value::Null) => op == CompareOp::Ne,
        _ => false,
    }
}

/// Entra sends booleans as `"True"`/`"False"`, so those strings stand for booleans.
#[must_use]
pub fn string_as_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn compare_equality(equal: bool, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => equal,
        CompareOp::Ne => !equal,
        _ => false,
    }
}

fn compare_strings(actual: &str, op: CompareOp, literal: &str, case_exact: bool) -> bool {
    let (a, l) = if case_exact {
        (actual.to_owned(), literal.to_owned())
    } else {
        (actual.to_lowercase(), literal.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&l),
        CompareOp::Sw => a.starts_with(&l),
        CompareOp::Ew => a.ends_with(&l),
        _ => ordering_holds(a.cmp(&l), op),
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn ordering_holds(ordering: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    /// The core User attributes this product models; only `externalId` and `id` are case-exact.
    struct UserSchema;

    impl AttributeSchema for UserSchema {
        fn case_exact(&self, path: &AttrPath) -> bool {
            matches!(path.dotted_lower().as_str(), "externalid" | "id" | "members.value")
        }
    }

    fn parse(s: &str) -> Filter {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        s.parse::<Filter>().unwrap_err().to_string()
    }

    fn path(s: &str) -> AttrPath {
        s.parse().unwrap()
    }

    fn eq(p: &str, v: Value) -> Filter {
        Filter::Compare { path: path(p), op: CompareOp::Eq, value: v }
    }

    fn and(a: Filter, b: Filter) -> Filter {
        Filter::And(Box::new(a), Box::new(b))
    }

    fn or(a: Filter, b: Filter) -> Filter {
        Filter::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Filter) -> Filter {
        Filter::Not(Box::new(a))
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "JohnWong",
            "userName": "Bjensen@Example.com",
            "active": true,
            "displayName": "Babs Jensen",
            "loginCount": 42,
            "ratio": 1.5,
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "nickName": "",
            "title": null,
            "roles": [],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"},
            ENTERPRISE: {"employeeNumber": "701984", "manager": {"value": "26118915"}}
        })
    }

    fn hit(f: &str) -> bool {
        parse(f).matches(&user(), &UserSchema)
    }

    // ---- parsing ----

    #[test]
    fn parses_simple_comparison() {
        assert_eq!(parse(r#"userName eq "bjensen""#), eq("userName", json!("bjensen")));
    }

    #[test]
    fn parses_every_operator_case_insensitively() {
        for (word, op) in [
            ("EQ", CompareOp::Eq),
            ("Ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("SW", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("GT", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("Lt", CompareOp::Lt),
            ("LE", CompareOp::Le),
        ] {
            let f = parse(&format!("title {word} \"x\""));
            assert_eq!(f, Filter::Compare { path: path("title"), op, value: json!("x") });
        }
        assert_eq!(parse("title PR"), Filter::Present(path("title")));
    }

    #[test]
    fn parses_literals() {
        assert_eq!(parse("active eq true"), eq("active", json!(true)));
        assert_eq!(parse("active eq False"), eq("active", json!(false)));
        assert_eq!(parse("title eq null"), eq("title", Value::Null));
        assert_eq!(parse("loginCount eq 42"), eq("loginCount", json!(42)));
        assert_eq!(parse("ratio eq -1.5e2"), eq("ratio", json!(-150.0)));
    }

    #[test]
    fn string_literals_follow_json_escapes() {
        assert_eq!(
            parse(r#"displayName eq "a \"q\" \\ \u00e9 ]) end""#),
            eq("displayName", json!("a \"q\" \\ é ]) end"))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let a = eq("a", json!("1"));
        let b = eq("b", json!("2"));
        let c = eq("c", json!("3"));
        assert_eq!(parse(r#"a eq "1" or b eq "2" and c eq "3""#), or(a.clone(), and(b.clone(), c.clone())));
        assert_eq!(parse(r#"a eq "1" and b eq "2" or c eq "3""#), or(and(a, b), c));
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let a = eq("a", json!("1"));
        let b = eq("b", json!("2"));
        assert_eq!(parse(r#"not (a eq "1") and b eq "2""#), and(not(a.clone()), b.clone()));
        assert_eq!(parse(r#"NOT(a eq "1")"#), not(a.clone()));
        assert_eq!(parse(r#"not a eq "1""#), not(a));
    }

    #[test]
    fn parentheses_group() {
        let a = eq("a", json!("1"));
        let b = eq("b", json!("2"));
        let c = eq("c", json!("3"));
        assert_eq!(parse(r#"(a eq "1" or b eq "2") and c eq "3""#), and(or(a, b), c));
    }

    #[test]
    fn logical_operators_are_case_insensitive() {
        let a = eq("a", json!("1"));
        let b = eq("b", json!("2"));
        assert_eq!(parse(r#"a eq "1" AND b eq "2""#), and(a.clone(), b.clone()));
        assert_eq!(parse(r#"a eq "1" Or b eq "2""#), or(a, b));
    }

    #[test]
    fn parses_sub_attribute_and_urn_paths() {
        assert_eq!(
            path("name.givenName"),
            AttrPath { urn: None, attr: "name".into(), sub_attr: Some("givenName".into()) }
        );
        let f = parse(&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#));
        assert_eq!(
            f,
            Filter::Compare {
                path: AttrPath { urn: Some(ENTERPRISE.into()), attr: "employeeNumber".into(), sub_attr: None },
                op: CompareOp::Eq,
                value: json!("701984"),
            }
        );
        let p = path(&format!("{ENTERPRISE}:manager.value"));
        assert_eq!(p.urn.as_deref(), Some(ENTERPRISE));
        assert_eq!(p.dotted_lower(), "manager.value");
        assert_eq!(p.to_string(), format!("{ENTERPRISE}:manager.value"));
    }

    #[test]
    fn parses_value_path() {
        let f = parse(r#"emails[type eq "work" and primary eq true]"#);
        let expected = Filter::ValuePath {
            attr: path("emails"),
            filter: Box::new(and(eq("type", json!("work")), eq("primary", json!(true)))),
        };
        assert_eq!(f, expected);
    }

    #[test]
    fn parses_value_path_followed_by_sub_attribute_comparison() {
        let f = parse(r#"emails[type eq "work"].value eq "x@example.com""#);
        let expected = Filter::ValuePath {
            attr: path("emails"),
            filter: Box::new(and(eq("type", json!("work")), eq("value", json!("x@example.com")))),
        };
        assert_eq!(f, expected);
    }

    #[test]
    fn value_path_combines_with_logic() {
        let f = parse(r#"userType eq "Employee" and emails[type eq "work" or value co "@example.org"]"#);
        let Filter::And(_, right) = f else { panic!("expected and") };
        assert!(matches!(*right, Filter::ValuePath { .. }));
    }

    #[test]
    fn error_empty_filter() {
        assert_eq!(err(""), "empty filter");
        assert_eq!(err("   "), "empty filter");
    }

    #[test]
    fn error_unterminated_string() {
        assert_eq!(err(r#"userName eq "abc"#), "unterminated string at position 13");
        assert_eq!(err(r#"userName eq "abc\""#), "unterminated string at position 13");
    }

    #[test]
    fn error_unknown_operator() {
        assert_eq!(err(r#"userName foo "x""#), "unknown operator 'foo' at position 10");
    }

    #[test]
    fn error_trailing_garbage() {
        assert_eq!(err(r#"userName eq "x" foo"#), "unexpected token 'foo' at position 17");
        assert_eq!(err(r#"userName eq "x")"#), "unexpected token ')' at position 16");
    }

    #[test]
    fn error_too_deep() {
        let deep = format!("{}a eq \"1\"{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(err(&deep), "filter nests deeper than 64 levels at position 65");
        let ok = format!("{}a eq \"1\"{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(parse(&ok), eq("a", json!("1")));
        let nots = format!("{}a eq \"1\"", "not ".repeat(65));
        assert!(err(&nots).starts_with("filter nests deeper than 64 levels"));
    }

    #[test]
    fn error_too_long() {
        let long = format!(r#"userName eq "{}""#, "x".repeat(MAX_FILTER_LEN));
        assert_eq!(err(&long), "filter is longer than 4096 bytes");
    }

    #[test]
    fn error_other_malformed_filters() {
        assert_eq!(err("userName"), "unexpected end of filter, expected an operator after 'userName' at position 9");
        assert_eq!(err("userName eq"), "unexpected end of filter, expected a value after 'eq' at position 12");
        assert_eq!(err("userName eq bob"), "invalid comparison value 'bob' at position 13");
        assert_eq!(err(r#"(userName eq "x""#), "unexpected end of filter, expected ')' at position 17");
        assert_eq!(err(r#"user..name eq "x""#), "invalid attribute path 'user..name' at position 1");
        assert_eq!(err(r#"emails[type eq "work""#), "unexpected end of filter, expected ']' at position 22");
        assert_eq!(
            err(r#"a eq "1" and"#),
            "unexpected end of filter, expected an attribute path or '(' at position 13"
        );
        assert_eq!(err(r#"emails[x[y eq "1"]]"#), "value filters cannot be nested at position 9");
        assert_eq!(err(r#"a eq "\q""#), r#"invalid string literal "\q" at position 6"#);
        assert_eq!(err(r#"emails[type eq "w"].1x eq "a""#), "invalid sub-attribute '.1x' at position 20");
    }

    #[test]
    fn error_reports_position() {
        let e = r#"userName eq "x" foo"#.parse::<Filter>().unwrap_err();
        assert_eq!(e.position(), Some(17));
        assert_eq!("".parse::<Filter>().unwrap_err().position(), None);
    }

    // ---- evaluation ----

    #[test]
    fn username_is_case_insensitive() {
        assert!(hit(r#"userName eq "bjensen@example.com""#));
        assert!(hit(r#"USERNAME eq "BJENSEN@EXAMPLE.COM""#));
        assert!(!hit(r#"userName eq "other@example.com""#));
    }

    #[test]
    fn external_id_is_case_exact() {
        assert!(hit(r#"externalId eq "JohnWong""#));
        assert!(!hit(r#"externalId eq "johnwong""#));
        assert!(hit(r#"externalid ne "johnwong""#));
    }

    #[test]
    fn substring_operators() {
        assert!(hit(r#"userName sw "BJEN""#));
        assert!(hit(r#"userName ew "example.COM""#));
        assert!(hit(r#"displayName co "s J""#));
        assert!(!hit(r#"externalId co "wong""#));
        assert!(hit(r#"externalId co "Wong""#));
    }

    #[test]
    fn ordering_on_strings_and_datetimes() {
        assert!(hit(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#));
        assert!(hit(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
        assert!(!hit(r#"meta.lastModified lt "2011-05-13T04:42:34Z""#));
        assert!(hit(r#"meta.lastModified le "2011-05-13T04:42:34Z""#));
        assert!(hit(r#"displayName lt "c""#));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(hit("loginCount eq 42"));
        assert!(hit("loginCount eq 42.0"));
        assert!(hit("loginCount gt 41"));
        assert!(!hit("loginCount gt 42"));
        assert!(hit("loginCount le 42"));
        assert!(hit("ratio lt 2"));
        assert!(hit("ratio ge 1.5"));
        assert!(!hit(r#"loginCount eq "42""#));
        assert!(!hit("loginCount co 4"));
    }

    #[test]
    fn booleans_accept_string_literals() {
        assert!(hit("active eq true"));
        assert!(!hit("active eq false"));
        assert!(hit(r#"active eq "True""#));
        assert!(hit(r#"active eq "TRUE""#));
        assert!(hit(r#"active ne "False""#));
        assert!(!hit(r#"active eq "yes""#));
        assert!(!hit("active gt false"));
    }

    #[test]
    fn sub_attributes_and_urn_paths() {
        assert!(hit(r#"name.givenName eq "barbara""#));
        assert!(hit(&format!(r#"{ENTERPRISE}:employeeNumber eq "701984""#)));
        assert!(hit(&format!(r#"{ENTERPRISE}:manager.value eq "26118915""#)));
        assert!(!hit(r#"employeeNumber eq "701984""#));
        assert!(hit(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen@example.com""#));
        assert!(hit(r#"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:EMPLOYEENUMBER eq "701984""#));
    }

    #[test]
    fn multi_valued_attributes_match_any_element() {
        assert!(hit(r#"emails eq "babs@jensen.org""#));
        assert!(hit(r#"emails.value eq "BJENSEN@example.com""#));
        assert!(hit(r#"emails.type eq "home""#));
        assert!(!hit(r#"emails.type eq "other""#));
        assert!(hit(r#"schemas eq "urn:ietf:params:scim:schemas:core:2.0:User""#));
    }

    #[test]
    fn value_paths_match_within_one_element() {
        assert!(hit(r#"emails[type eq "work"].value eq "bjensen@example.com""#));
        assert!(!hit(r#"emails[type eq "work"].value eq "babs@jensen.org""#));
        assert!(hit(r#"emails[type eq "work" and primary eq true]"#));
        assert!(!hit(r#"emails[type eq "home" and primary eq true]"#));
        assert!(hit(r#"emails[type eq "home"].primary pr or userName eq "x" or emails[value ew "jensen.org"]"#));
        assert!(!hit(r#"emails[type eq "home"].primary pr"#));
    }

    #[test]
    fn value_path_sees_full_path_for_case_exactness() {
        let group = json!({"members": [{"value": "AbC"}]});
        let f = parse(r#"members[value eq "abc"]"#);
        assert!(!f.matches(&group, &UserSchema));
        assert!(parse(r#"members[value eq "AbC"]"#).matches(&group, &UserSchema));
        let inner = parse(r#"value eq "abc""#);
        assert!(!inner.matches_element(&group["members"][0], &path("members"), &UserSchema));
        assert!(inner.matches_element(&json!({"VALUE": "ABC"}), &path("emails"), &UserSchema));
    }

    #[test]
    fn logic_and_or_not() {
        assert!(hit(r#"userName eq "bjensen@example.com" and active eq true"#));
        assert!(!hit(r#"userName eq "bjensen@example.com" and active eq false"#));
        assert!(hit(r#"userName eq "nobody" or active eq true"#));
        assert!(hit(r#"not (userName eq "nobody")"#));
        assert!(!hit(r#"not (userName eq "bjensen@example.com")"#));
        assert!(hit(r#"userName sw "b" and not (emails co "example.org" or emails.value co "nowhere.org")"#));
    }

    #[test]
    fn presence() {
        assert!(hit("userName pr"));
        assert!(hit("emails pr"));
        assert!(hit("name.givenName pr"));
        assert!(hit("emails.primary pr"));
        assert!(hit("active pr"));
        assert!(!hit("nickName pr"));
        assert!(!hit("title pr"));
        assert!(!hit("roles pr"));
        assert!(!hit("missing pr"));
        assert!(!hit("name.middleName pr"));
    }

    #[test]
    fn missing_attributes_never_match() {
        for op in ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"] {
            assert!(!hit(&format!(r#"missing {op} "x""#)), "{op}");
        }
        assert!(hit(r#"not (missing ne "x")"#));
        assert!(!hit("title eq null"));
        assert!(hit("userName ne null"));
    }

    #[test]
    fn non_object_resources_do_not_match() {
        assert!(!parse(r#"userName eq "x""#).matches(&json!("x"), &UserSchema));
        assert!(!parse("userName pr").matches(&Value::Null, &UserSchema));
    }

    #[test]
    fn eq_lookup_finds_index_keys() {
        assert_eq!(parse(r#"userName eq "a@b""#).eq_lookup("username"), Some("a@b"));
        assert_eq!(parse(r#"USERNAME EQ "a@b""#).eq_lookup("userName"), Some("a@b"));
        assert_eq!(
            parse(r#"active eq true and externalId eq "x" and userName eq "a@b""#).eq_lookup("userName"),
            Some("a@b")
        );
        assert_eq!(
            parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a@b""#).eq_lookup("userName"),
            Some("a@b")
        );
        assert_eq!(parse(r#"userName eq "a@b""#).eq_lookup("externalId"), None);
        assert_eq!(parse(r#"userName ne "a@b""#).eq_lookup("userName"), None);
        assert_eq!(parse(r#"userName eq "a" or userName eq "b""#).eq_lookup("userName"), None);
        assert_eq!(parse(r#"not (userName eq "a")"#).eq_lookup("userName"), None);
        assert_eq!(parse(r#"name.userName eq "a""#).eq_lookup("name"), None);
        assert_eq!(parse(&format!(r#"{ENTERPRISE}:userName eq "a""#)).eq_lookup("userName"), None);
        assert_eq!(parse("userName eq 5").eq_lookup("userName"), None);
        assert_eq!(parse(r#"emails[type eq "work"].value eq "a""#).eq_lookup("emails"), None);
    }

    #[test]
    fn entra_wire_filters() {
        assert!(hit(r#"userName eq "Bjensen@Example.com""#));
        let group = json!({"displayName": "Sales", "externalId": "g1"});
        assert!(parse(r#"displayName eq "sales""#).matches(&group, &UserSchema));
        let guid = parse(r#"userName eq "4b1ee6b8-7a6f-4ee0-9a9b-9f5bd1f32c24""#);
        assert!(!guid.matches(&user(), &UserSchema));
    }
}

//! Structural OpenAPI v3 schemas of CRDs, compiled once: defaulting, pruning and validation.
//!
//! Why not a JSON-schema validator crate: kube-apiserver does three things in one
//! walk of a structural schema (apply `default:`s, prune unknown fields unless
//! `x-kubernetes-preserve-unknown-fields`, validate), and clients depend on its
//! exact 422 causes (`spec.replicas: Invalid value: ...`, field paths with list
//! indexes, `Unsupported value` for enums). A generic validator only validates,
//! reports JSON pointers and its own wording, and would still need the defaulting
//! and pruning walk beside it; the subset of OpenAPI v3 that structural CRD
//! schemas allow is small enough to interpret directly here.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::status::{Cause, go_value, not_supported, required, type_invalid};

/// Errors compiling a CRD schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A `pattern` is not a valid regular expression.
    #[error("invalid pattern {pattern:?} at {path}: {source}")]
    Pattern {
        /// Schema path of the pattern.
        path: String,
        /// The pattern text.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// A schema node is not an object.
    #[error("schema at {0} is not an object")]
    NotObject(String),
}

/// One compiled schema node.
#[derive(Debug, Default, Clone)]
pub struct Node {
    /// `type`, if set.
    pub ty: Option<String>,
    /// `nullable: true`.
    pub nullable: bool,
    /// `properties`.
    pub properties: BTreeMap<String, Node>,
    /// `additionalProperties` as a schema (maps).
    pub additional: Option<Box<Node>>,
    /// `additionalProperties: true` without a schema, or preserve-unknown-fields.
    pub preserve_unknown: bool,
    /// `x-kubernetes-embedded-resource`.
    pub embedded: bool,
    /// `x-kubernetes-int-or-string`.
    pub int_or_string: bool,
    /// `items`.
    pub items: Option<Box<Node>>,
    /// `required`.
    pub required: Vec<String>,
    /// `enum`.
    pub enumeration: Vec<Value>,
    /// `default`.
    pub default: Option<Value>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
    /// `x-kubernetes-list-type`.
    pub list_type: Option<String>,
    /// `x-kubernetes-list-map-keys`.
    pub list_map_keys: Vec<String>,
    /// Whether any property of this node has a default (to skip the defaulting walk).
    has_defaults: bool,
}

impl Node {
    /// Compiles a schema (`openAPIV3Schema`).
    pub fn compile(v: &Value) -> Result<Node, SchemaError> {
        compile(v, "openAPIV3Schema")
    }

    /// Follows a dotted property path (e.g. `spec.replicas`).
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        let mut n = self;
        for p in path {
            n = n.properties.get(*p).or(n.additional.as_deref())?;
        }
        Some(n)
    }

    /// Applies defaults, prunes unknown fields, then validates. `root` nodes keep apiVersion,
    /// kind and metadata. Returns the field causes of a 422.
    pub fn admit(&self, obj: &mut Value, unknown: &mut Vec<String>) -> Vec<Cause> {
        apply_defaults(self, obj);
        prune(self, obj, true, "", unknown);
        let mut causes = Vec::new();
        if let Value::Object(m) = obj {
            for (k, sub) in &self.properties {
                if k == "metadata" || k == "apiVersion" || k == "kind" {
                    continue;
                }
                if let Some(v) = m.get(k) {
                    validate(sub, v, k, &mut causes);
                } else if self.required.iter().any(|r| r == k) {
                    causes.push(required(k, ""));
                }
            }
        }
        causes
    }

    /// Validates a value at `path` (no defaulting or pruning).
    pub fn validate_at(&self, v: &Value, path: &str) -> Vec<Cause> {
        let mut c = Vec::new();
        validate(self, v, path, &mut c);
        c
    }
}

fn compile(v: &Value, path: &str) -> Result<Node, SchemaError> {
    let m = v
        .as_object()
        .ok_or_else(|| SchemaError::NotObject(path.to_string()))?;
    let mut n = Node {
        ty: m.get("type").and_then(Value::as_str).map(str::to_string),
        nullable: flag(m, "nullable"),
        preserve_unknown: flag(m, "x-kubernetes-preserve-unknown-fields"),
        embedded: flag(m, "x-kubernetes-embedded-resource"),
        int_or_string: flag(m, "x-kubernetes-int-or-string"),
        default: m.get("default").cloned(),
        minimum: m.get("minimum").and_then(Value::as_f64),
        maximum: m.get("maximum").and_then(Value::as_f64),
        exclusive_minimum: flag(m, "exclusiveMinimum"),
        exclusive_maximum: flag(m, "exclusiveMaximum"),
        multiple_of: m.get("multipleOf").and_then(Value::as_f64),
        min_length: m.get("minLength").and_then(Value::as_u64),
        max_length: m.get("maxLength").and_then(Value::as_u64),
        min_items: m.get("minItems").and_then(Value::as_u64),
        max_items: m.get("maxItems").and_then(Value::as_u64),
        unique_items: flag(m, "uniqueItems"),
        min_properties: m.get("minProperties").and_then(Value::as_u64),
        max_properties: m.get("maxProperties").and_then(Value::as_u64),
        list_type: m
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
            .map(str::to_string),
        list_map_keys: strings(m.get("x-kubernetes-list-map-keys")),
        required: strings(m.get("required")),
        enumeration: m
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        ..Node::default()
    };
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        let re = Regex::new(p).map_err(|source| SchemaError::Pattern {
            path: path.to_string(),
            pattern: p.to_string(),
            source,
        })?;
        n.pattern = Some((p.to_string(), re));
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        for (k, sub) in props {
            let c = compile(sub, &format!("{path}.properties.{k}"))?;
            n.has_defaults |= c.default.is_some();
            n.properties.insert(k.clone(), c);
        }
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(true)) => n.preserve_unknown = true,
        Some(sub @ Value::Object(_)) => {
            n.additional = Some(Box::new(compile(
                sub,
                &format!("{path}.additionalProperties"),
            )?))
        }
        _ => {}
    }
    if let Some(items) = m.get("items") {
        n.items = Some(Box::new(compile(items, &format!("{path}.items"))?));
    }
    for (key, dst) in [
        ("allOf", &mut n.all_of),
        ("anyOf", &mut n.any_of),
        ("oneOf", &mut n.one_of),
    ] {
        if let Some(Value::Array(list)) = m.get(key) {
            for (i, s) in list.iter().enumerate() {
                dst.push(compile(s, &format!("{path}.{key}[{i}]"))?);
            }
        }
    }
    if let Some(s) = m.get("not") {
        n.not = Some(Box::new(compile(s, &format!("{path}.not"))?));
    }
    Ok(n)
}

fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `default:` values of absent (or null, non-nullable) properties, recursively.
pub fn apply_defaults(n: &Node, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if n.has_defaults {
                for (k, sub) in &n.properties {
                    if let Some(d) = &sub.default {
                        let absent = match m.get(k) {
                            None => true,
                            Some(Value::Null) => !sub.nullable,
                            _ => false,
                        };
                        if absent {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
            }
            for (k, val) in m.iter_mut() {
                if let Some(sub) = n.properties.get(k).or(n.additional.as_deref()) {
                    apply_defaults(sub, val);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = &n.items {
                for x in a {
                    apply_defaults(items, x);
                }
            }
        }
        _ => {}
    }
}

/// Drops fields the structural schema does not know (recording their paths in `unknown`) and
/// nulls of non-nullable fields.
pub fn prune(n: &Node, v: &mut Value, root: bool, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let keep_unknown = n.preserve_unknown || n.int_or_string;
            let mut dropped = vec![];
            for (k, val) in m.iter() {
                if (root || n.embedded) && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                match n.properties.get(k).or(n.additional.as_deref()) {
                    Some(sub) if val.is_null() && !sub.nullable => dropped.push(k.clone()),
                    Some(_) => {}
                    None if keep_unknown => {}
                    None => {
                        unknown.push(child(path, k));
                        dropped.push(k.clone());
                    }
                }
            }
            for k in dropped {
                m.remove(&k);
            }
            for (k, val) in m.iter_mut() {
                if (root || n.embedded) && k == "metadata" {
                    continue;
                }
                if let Some(sub) = n.properties.get(k).or(n.additional.as_deref()) {
                    prune(sub, val, false, &child(path, k), unknown);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = &n.items {
                for (i, x) in a.iter_mut().enumerate() {
                    prune(items, x, false, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn validate(n: &Node, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if n.nullable || n.ty.is_none() && !n.int_or_string {
            return;
        }
        let want = n.ty.as_deref().unwrap_or("string");
        out.push(type_invalid(
            path,
            v,
            &format!("{path} in body must be of type {want}: \"null\""),
        ));
        return;
    }
    if n.int_or_string {
        if !matches!(v, Value::String(_)) && !type_ok("integer", v) {
            out.push(type_invalid(
                path,
                v,
                &format!(
                    "{path} in body must be of type integer,string: {:?}",
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = &n.ty
        && !type_ok(t, v)
    {
        out.push(type_invalid(
            path,
            v,
            &format!("{path} in body must be of type {t}: {:?}", type_name(v)),
        ));
        return;
    }
    if !n.enumeration.is_empty() && !n.enumeration.contains(v) {
        out.push(not_supported(path, v, &n.enumeration));
    }
    match v {
        Value::Object(m) => {
            for r in &n.required {
                if !m.contains_key(r) {
                    out.push(required(&child(path, r), ""));
                }
            }
            if let Some(max) = n.max_properties
                && m.len() as u64 > max
            {
                out.push(too_many(path, m.len(), max, "properties"));
            }
            if let Some(min) = n.min_properties
                && (m.len() as u64) < min
            {
                out.push(crate::status::invalid_value(
                    path,
                    &Value::from(m.len()),
                    &format!("{path} in body should have at least {min} properties"),
                ));
            }
            for (k, val) in m {
                if let Some(sub) = n.properties.get(k).or(n.additional.as_deref()) {
                    let p = child(path, k);
                    if sub.embedded && k == "metadata" {
                        continue;
                    }
                    validate(sub, val, &p, out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(max) = n.max_items
                && a.len() as u64 > max
            {
                out.push(too_many(path, a.len(), max, "items"));
            }
            if let Some(min) = n.min_items
                && (a.len() as u64) < min
            {
                out.push(crate::status::invalid_value(
                    path,
                    &Value::from(a.len()),
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
            if n.unique_items || n.list_type.as_deref() == Some("set") {
                for (i, x) in a.iter().enumerate() {
                    if a[..i].contains(x) {
                        out.push(Cause {
                            reason: "FieldValueDuplicate",
                            message: format!("Duplicate value: {}", go_value(x)),
                            field: format!("{path}[{i}]"),
                        });
                    }
                }
            }
            if n.list_type.as_deref() == Some("map") && !n.list_map_keys.is_empty() {
                let keys: Vec<Vec<Option<&Value>>> = a
                    .iter()
                    .map(|x| n.list_map_keys.iter().map(|k| x.get(k)).collect())
                    .collect();
                for i in 0..keys.len() {
                    if keys[..i].contains(&keys[i]) {
                        out.push(Cause {
                            reason: "FieldValueDuplicate",
                            message: format!("Duplicate value: {}", go_value(&a[i])),
                            field: format!("{path}[{i}]"),
                        });
                    }
                }
            }
            if let Some(items) = &n.items {
                for (i, x) in a.iter().enumerate() {
                    validate(items, x, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => {
            if let Some(max) = n.max_length
                && s.chars().count() as u64 > max
            {
                out.push(Cause {
                    reason: "FieldValueTooLong",
                    message: format!("Too long: may not be more than {max} bytes"),
                    field: path.to_string(),
                });
            }
            if let Some(min) = n.min_length
                && (s.chars().count() as u64) < min
            {
                out.push(crate::status::invalid_value(
                    path,
                    v,
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
            if let Some((p, re)) = &n.pattern
                && !re.is_match(s)
            {
                out.push(crate::status::invalid_value(
                    path,
                    v,
                    &format!("{path} in body should match '{p}'"),
                ));
            }
        }
        Value::Number(num) => {
            let f = num.as_f64().unwrap_or(0.0);
            if let Some(min) = n.minimum {
                let bad = if n.exclusive_minimum {
                    f <= min
                } else {
                    f < min
                };
                if bad {
                    let op = if n.exclusive_minimum {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.push(crate::status::invalid_value(
                        path,
                        v,
                        &format!("{path} in body should be {op} {}", fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = n.maximum {
                let bad = if n.exclusive_maximum {
                    f >= max
                } else {
                    f > max
                };
                if bad {
                    let op = if n.exclusive_maximum {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    out.push(crate::status::invalid_value(
                        path,
                        v,
                        &format!("{path} in body should be {op} {}", fmt_num(max)),
                    ));
                }
            }
            if let Some(m) = n.multiple_of
                && m != 0.0
                && (f / m).fract() != 0.0
            {
                out.push(crate::status::invalid_value(
                    path,
                    v,
                    &format!("{path} in body should be a multiple of {}", fmt_num(m)),
                ));
            }
        }
        _ => {}
    }
    for s in &n.all_of {
        validate(s, v, path, out);
    }
    if !n.any_of.is_empty() && !n.any_of.iter().any(|s| s.validate_at(v, path).is_empty()) {
        out.push(crate::status::invalid_value(
            path,
            v,
            &format!("{path} in body must match at least one schema in anyOf"),
        ));
    }
    if !n.one_of.is_empty() {
        let matching = n
            .one_of
            .iter()
            .filter(|s| s.validate_at(v, path).is_empty())
            .count();
        if matching != 1 {
            out.push(crate::status::invalid_value(
                path,
                v,
                &format!("{path} in body must match exactly one schema in oneOf"),
            ));
        }
    }
    if let Some(not) = &n.not
        && not.validate_at(v, path).is_empty()
    {
        out.push(crate::status::invalid_value(
            path,
            v,
            &format!("{path} in body should not match the schema in not"),
        ));
    }
}

fn too_many(path: &str, have: usize, max: u64, what: &str) -> Cause {
    Cause {
        reason: "FieldValueTooMany",
        message: format!("Too many: {have}: must have at most {max} {what}"),
        field: path.to_string(),
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Node {
        Node::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                        "replicas": {"type": "integer", "default": 1, "minimum": 0},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "port": {"x-kubernetes-int-or-string": true},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let s = schema();
        let mut o = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "zz": 1},
            "spec": {"name": "abc", "junk": 1, "free": {"any": {"thing": 2}}, "labels": {"a": "b"}, "port": "http"},
            "extra": true});
        let mut unknown = vec![];
        assert!(s.admit(&mut o, &mut unknown).is_empty());
        assert_eq!(unknown, vec!["extra".to_string(), "spec.junk".to_string()]);
        assert_eq!(o["spec"]["replicas"], json!(1));
        assert!(o.get("extra").is_none());
        assert!(o["spec"].get("junk").is_none());
        assert_eq!(o["spec"]["free"]["any"]["thing"], json!(2));
        assert_eq!(o["metadata"]["zz"], json!(1));
    }

    #[test]
    fn reports_field_paths() {
        let s = schema();
        let mut o = json!({"spec": {"name": "ABCDEFG", "replicas": -1, "mode": "c", "labels": {"a": 1}, "port": 1.5}});
        let causes = s.admit(&mut o, &mut vec![]);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.name"), "{causes:?}");
        assert!(fields.contains(&"spec.replicas"));
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.labels.a"));
        assert!(fields.contains(&"spec.port"));
        let mut o = json!({"spec": {}});
        let causes = s.admit(&mut o, &mut vec![]);
        assert_eq!(causes[0].field, "spec.name");
        assert_eq!(causes[0].reason, "FieldValueRequired");
    }
}

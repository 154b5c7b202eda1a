//! The `meta.k8s.io/v1` Table format `kubectl get` asks for: Name, printer columns, Age.

use serde_json::{Value, json};

use crate::meta;
use crate::registry::{PrinterColumn, ResourceType};

/// What a Table row carries as `object` (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    Metadata,
    /// The full object.
    Object,
}

impl Include {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

fn columns(rt: &ResourceType) -> Vec<PrinterColumn> {
    let name = PrinterColumn {
        name: "Name".into(),
        ty: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into(),
        priority: 0,
        json_path: ".metadata.name".into(),
    };
    let age = PrinterColumn {
        name: "Age".into(),
        ty: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    };
    let mut cols = vec![name];
    if rt.custom {
        if rt.columns.is_empty() {
            cols.push(age);
        } else {
            cols.extend(rt.columns.iter().cloned());
        }
    } else {
        cols.extend(
            rt.columns
                .iter()
                .filter(|c| c.name != "Created At")
                .cloned(),
        );
        if rt.columns.iter().any(|c| c.name == "Created At") {
            cols.extend(
                rt.columns
                    .iter()
                    .filter(|c| c.name == "Created At")
                    .cloned(),
            );
        } else {
            cols.push(age);
        }
    }
    cols
}

/// Column definitions of a resource's Table.
pub fn column_definitions(rt: &ResourceType) -> Value {
    Value::Array(
        columns(rt)
            .iter()
            .map(|c| {
                // Built-in Age columns are strings (the server renders the age); CRD columns keep their type.
                let ty = if !rt.custom && c.name == "Age" { "string" } else { c.ty.as_str() };
                json!({"name": c.name, "type": ty, "format": c.format, "description": c.description, "priority": c.priority})
            })
            .collect(),
    )
}

/// One Table row for an object.
pub fn row(rt: &ResourceType, obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = columns(rt)
        .iter()
        .map(|c| {
            let vals = eval(obj, &c.json_path);
            let Some(first) = vals.first() else {
                return Value::Null;
            };
            if c.ty == "date" && (rt.custom || c.name == "Age") {
                return first
                    .as_str()
                    .and_then(meta::age_secs)
                    .map(|s| json!(meta::human_duration(s)))
                    .unwrap_or(Value::Null);
            }
            if vals.len() > 1 {
                let parts: Vec<String> = vals.iter().map(|v| plain(v)).collect();
                return json!(parts.join(","));
            }
            match (c.ty.as_str(), first) {
                ("string", Value::String(_))
                | ("integer", Value::Number(_))
                | ("number", Value::Number(_))
                | ("boolean", Value::Bool(_)) => first.clone(),
                (_, v) => json!(plain(v)),
            }
        })
        .collect();
    let mut r = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Object => r["object"] = obj.clone(),
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_default(),
            })
        }
    }
    r
}

/// A full Table.
pub fn table(
    rt: &ResourceType,
    objs: &[Value],
    rv: u64,
    cont: Option<&str>,
    include: Include,
    with_columns: bool,
) -> Value {
    let mut md = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": md,
        "rows": objs.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = column_definitions(rt);
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluates the JSONPath subset of printer columns: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`.
pub fn eval(obj: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = vec![obj.clone()];
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            cur = cur.iter().filter_map(|v| v.get(field).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            // Filters may contain ']' only inside quotes; the common ones do not.
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                cur = cur
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .collect();
            } else if let Ok(i) = inner.parse::<i64>() {
                cur = cur
                    .iter()
                    .filter_map(|v| {
                        let a = v.as_array()?;
                        let idx = if i < 0 { a.len() as i64 + i } else { i };
                        a.get(usize::try_from(idx).ok()?).cloned()
                    })
                    .collect();
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, want, neg) = if let Some((a, b)) = f.split_once("!=") {
                    (a, b, true)
                } else if let Some((a, b)) = f.split_once("==") {
                    (a, b, false)
                } else {
                    return vec![];
                };
                let want = want.trim().trim_matches('"').trim_matches('\'');
                let field = field.trim();
                cur = cur
                    .iter()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                    .filter(|item| {
                        let got = eval(item, &format!(".{field}"));
                        let eq = got.first().is_some_and(|g| plain(g) == want);
                        eq != neg
                    })
                    .collect();
            } else {
                let key = inner.trim_matches('\'').trim_matches('"');
                cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            }
        } else {
            return vec![];
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}], "n": [1, 2]}});
        assert_eq!(
            eval(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(eval(&o, ".status.n[1]"), vec![json!(2)]);
        assert_eq!(eval(&o, ".status.n[*]"), vec![json!(1), json!(2)]);
        assert!(eval(&o, ".spec.x").is_empty());
    }
}

//! Label selectors: the `kubectl -l` string form and `metav1.LabelSelector` JSON, parsed once, matched many times.
//!
//! The string grammar is Kubernetes' (`k8s.io/apimachinery/pkg/labels`): comma-separated
//! requirements, each `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`,
//! `key notin (v1,v2)`, `key` (exists) or `!key` (does not exist). An empty string selects
//! everything. Keys are qualified names (`prefix/name`), values label values; both are
//! checked, so a typo is an error at load rather than a selector that silently matches
//! nothing.

use serde_json::Value;
use std::collections::BTreeSet;

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text breaks the grammar.
    #[error("label selector {selector:?}: {reason}")]
    Syntax {
        /// The selector text.
        selector: String,
        /// What is wrong.
        reason: String,
    },
    /// A `metav1.LabelSelector` object is malformed.
    #[error("label selector object: {0}")]
    Object(String),
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The label has one of these values.
    In(String, BTreeSet<String>),
    /// The label is absent or has none of these values.
    NotIn(String, BTreeSet<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

/// A parsed selector: every requirement must hold. No requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Whether `s` is a label key: an optional DNS-subdomain prefix and `/`, then a name.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .split('.')
                    .all(crate::runtime::validate::is_dns_label)
                && is_label_name(name)
        }
        None => is_label_name(s),
    }
}

/// Whether `s` is a label value (empty, or a label name).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

impl LabelSelector {
    /// Parse the `kubectl -l` form.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let err = |reason: String| SelectorError::Syntax {
            selector: text.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(&err)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(err("empty requirement".into()));
            }
            let req = parse_requirement(part).map_err(&err)?;
            requirements.push(req);
        }
        Ok(Self { requirements })
    }

    /// Parse a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(v: &Value) -> Result<Self, SelectorError> {
        let bad = |m: String| SelectorError::Object(m);
        let obj = v.as_object().ok_or_else(|| bad("not an object".into()))?;
        let mut requirements = Vec::new();
        if let Some(ml) = obj.get("matchLabels").filter(|m| !m.is_null()) {
            let ml = ml
                .as_object()
                .ok_or_else(|| bad("matchLabels is not an object".into()))?;
            for (k, val) in ml {
                let val = val
                    .as_str()
                    .ok_or_else(|| bad(format!("matchLabels.{k} is not a string")))?;
                if !is_label_key(k) || !is_label_value(val) {
                    return Err(bad(format!("matchLabels {k}={val} is not a valid label")));
                }
                requirements.push(Requirement::In(
                    k.clone(),
                    BTreeSet::from([val.to_string()]),
                ));
            }
        }
        if let Some(me) = obj.get("matchExpressions").filter(|m| !m.is_null()) {
            let me = me
                .as_array()
                .ok_or_else(|| bad("matchExpressions is not a list".into()))?;
            for e in me {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .filter(|k| is_label_key(k))
                    .ok_or_else(|| bad("a matchExpression has no valid key".into()))?
                    .to_string();
                let values: BTreeSet<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let req = match op {
                    "In" | "NotIn" if values.is_empty() => {
                        return Err(bad(format!("{key} {op} needs values")));
                    }
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => return Err(bad(format!("unknown operator {other:?}"))),
                };
                requirements.push(req);
            }
        }
        Ok(Self { requirements })
    }

    /// Whether labels (looked up by `get`) satisfy every requirement.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// One label this selector pins to exactly one value (`key=value`), if any: the
    /// cache can answer through a label index instead of scanning.
    pub fn pinned(&self) -> Option<(&str, &str)> {
        self.requirements.iter().find_map(|r| match r {
            Requirement::In(k, vs) if vs.len() == 1 => {
                vs.iter().next().map(|v| (k.as_str(), v.as_str()))
            }
            _ => None,
        })
    }
}

/// Split on commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if is_label_key(k) {
        Ok(k.to_string())
    } else {
        Err(format!("{k:?} is not a label key"))
    }
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if is_label_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not a label value"))
    }
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(key(k)?, BTreeSet::from([value(v)?])));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(key(k)?, BTreeSet::from([value(v)?])));
    }
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|c| *c > open && part[c + 1..].trim().is_empty())
            .ok_or("a value set must end with ')'")?;
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let [k, op] = head.as_slice() else {
            return Err(format!(
                "{part:?} is not `key in (...)` or `key notin (...)`"
            ));
        };
        let values = part[open + 1..close]
            .split(',')
            .map(value)
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match *op {
            "in" => Ok(Requirement::In(key(k)?, values)),
            "notin" => Ok(Requirement::NotIn(key(k)?, values)),
            other => Err(format!("unknown operator {other:?}")),
        };
    }
    Ok(Requirement::Exists(key(part)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(sel: &LabelSelector, l: &HashMap<String, String>) -> bool {
        sel.matches(|k| l.get(k).map(String::as_str))
    }

    #[test]
    fn string_form_as_kubectl() {
        let s =
            LabelSelector::parse("tier=control-plane, component in (etcd,kube-apiserver),!skip")
                .unwrap();
        assert!(m(
            &s,
            &labels(&[("tier", "control-plane"), ("component", "etcd")])
        ));
        assert!(!m(
            &s,
            &labels(&[("tier", "control-plane"), ("component", "other")])
        ));
        assert!(!m(
            &s,
            &labels(&[
                ("tier", "control-plane"),
                ("component", "etcd"),
                ("skip", "")
            ])
        ));
        let s = LabelSelector::parse("a!=1,b notin (x, y),c").unwrap();
        assert!(m(&s, &labels(&[("c", "")])));
        assert!(!m(&s, &labels(&[("a", "1"), ("c", "")])));
        assert!(!m(&s, &labels(&[("b", "y"), ("c", "")])));
        assert!(LabelSelector::parse("").unwrap().requirements().is_empty());
        assert_eq!(
            LabelSelector::parse("cluster.x-k8s.io/cluster-name==c1")
                .unwrap()
                .pinned(),
            Some(("cluster.x-k8s.io/cluster-name", "c1"))
        );
        for bad in [
            "a=(",
            "a in x",
            "a in (x",
            "Bad Key=1",
            "a=b c",
            "a,,b",
            "a op (x)",
            "a=-x",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_form_as_metav1() {
        let s = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(m(&s, &labels(&[("app", "web"), ("env", "prod")])));
        assert!(!m(&s, &labels(&[("app", "web"), ("env", "dev")])));
        assert!(
            LabelSelector::from_object(&json!({}))
                .unwrap()
                .requirements()
                .is_empty()
        );
        assert!(
            LabelSelector::from_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
            )
            .is_err()
        );
        assert!(
            LabelSelector::from_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
            )
            .is_err()
        );
        assert!(LabelSelector::from_object(&json!("x")).is_err());
    }
}

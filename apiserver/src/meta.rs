//! Object metadata rules: names, timestamps, label and field selectors, managedFields field sets.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::registry::NameRule;

/// Now as RFC 3339 with second precision, like `metav1.Time`.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Kubernetes' `duration.HumanDuration` (what `kubectl get` prints as AGE).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Age in seconds of an RFC 3339 timestamp.
pub fn age_secs(ts: &str) -> Option<i64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(jiff::Timestamp::now().as_second() - t.as_second())
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Returns kube's validation messages for a name under `rule` (empty when valid).
pub fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => {
            let mut e = vec![];
            if name.len() > 253 {
                e.push("must be no more than 253 characters".to_string());
            }
            if !name.split('.').all(is_label) {
                e.push(SUBDOMAIN_MSG.to_string());
            }
            e
        }
        NameRule::Label => {
            let mut e = vec![];
            if name.len() > 63 {
                e.push("must be no more than 63 characters".to_string());
            }
            let chars_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !chars_ok {
                e.push(LABEL_MSG.to_string());
            }
            e
        }
        NameRule::Path => {
            if name == "." || name == ".." {
                vec![format!("may not be '{name}'")]
            } else if name.contains('/') {
                vec!["may not contain '/'".to_string()]
            } else if name.contains('%') {
                vec!["may not contain '%'".to_string()]
            } else {
                vec![]
            }
        }
    }
}

/// Validation messages for a label value (empty when valid).
pub fn label_value_errors(v: &str) -> Option<String> {
    let ok = v.is_empty()
        || v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        None
    } else if v.len() > 63 {
        Some("must be no more than 63 characters".into())
    } else {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// Random suffix for `generateName` (kube's alphabet, 5 characters).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `k=v`, `k==v`, `k in (a,b)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
    /// `k>n`.
    Gt(String, i64),
    /// `k<n`.
    Lt(String, i64),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Errors parsing selectors.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    /// The selector text does not parse.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// A field selector names an unsupported field.
    #[error("field label not supported: {0}")]
    FieldNotSupported(String),
    /// A field selector term is malformed.
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
}

fn split_top(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    name_ok
        && prefix.is_none_or(|p| !p.is_empty() && name_errors(NameRule::Subdomain, p).is_empty())
}

impl LabelSelector {
    /// Parses `labelSelector` query text with all operators.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = vec![];
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self(reqs));
        }
        for term in split_top(s) {
            let t = term.trim();
            let err = || SelectorError::Parse(format!("{t:?}: invalid selector term"));
            if t.is_empty() {
                return Err(SelectorError::Parse(
                    "found '', expected: !, identifier, or 'end of string'".into(),
                ));
            }
            let key_ok = |k: &str| -> Result<String, SelectorError> {
                let k = k.trim();
                if valid_key(k) {
                    Ok(k.to_string())
                } else {
                    Err(SelectorError::Parse(format!(
                        "key: Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                    )))
                }
            };
            let val_ok = |v: &str| -> Result<String, SelectorError> {
                let v = v.trim();
                // kube's lexer reads an operator token where the value should start.
                let token = ["!=", "==", "!", "(", ")", ",", "=", "<", ">"]
                    .into_iter()
                    .find(|t| v.starts_with(t));
                if let Some(t) = token {
                    return Err(SelectorError::Parse(format!(
                        "found '{t}', expected: identifier"
                    )));
                }
                match label_value_errors(v) {
                    None => Ok(v.to_string()),
                    Some(m) => Err(SelectorError::Parse(format!(
                        "values[0]: Invalid value: {v:?}: {m}"
                    ))),
                }
            };
            if let Some(k) = t.strip_prefix('!') {
                reqs.push(Requirement::DoesNotExist(key_ok(k)?));
            } else if let Some((k, v)) = t.split_once("!=") {
                reqs.push(Requirement::NotIn(key_ok(k)?, vec![val_ok(v)?]));
            } else if let Some((k, v)) = t.split_once("==") {
                reqs.push(Requirement::In(key_ok(k)?, vec![val_ok(v)?]));
            } else if let Some((k, v)) = t.split_once('=') {
                reqs.push(Requirement::In(key_ok(k)?, vec![val_ok(v)?]));
            } else if let Some((k, v)) = t.split_once('>') {
                reqs.push(Requirement::Gt(
                    key_ok(k)?,
                    v.trim().parse().map_err(|_| err())?,
                ));
            } else if let Some((k, v)) = t.split_once('<') {
                reqs.push(Requirement::Lt(
                    key_ok(k)?,
                    v.trim().parse().map_err(|_| err())?,
                ));
            } else if let Some(open) = t.find('(') {
                let head = t[..open].trim();
                let close = t.rfind(')').filter(|c| *c > open).ok_or_else(err)?;
                let values = t[open + 1..close]
                    .split(',')
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(val_ok)
                    .collect::<Result<Vec<_>, _>>()?;
                if close != t.len() - 1 {
                    return Err(err());
                }
                if let Some(k) = head.strip_suffix(" notin") {
                    reqs.push(Requirement::NotIn(key_ok(k)?, values));
                } else if let Some(k) = head.strip_suffix(" in") {
                    if values.is_empty() {
                        return Err(SelectorError::Parse(
                            "for 'in', 'notin' operators, values set can't be empty".into(),
                        ));
                    }
                    reqs.push(Requirement::In(key_ok(k)?, values));
                } else {
                    return Err(err());
                }
            } else if t.contains(char::is_whitespace) {
                return Err(err());
            } else {
                reqs.push(Requirement::Exists(key_ok(t)?));
            }
        }
        Ok(Self(reqs))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Matches a label set given as `(key, value)` pairs.
    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => labels(k).is_some(),
            Requirement::DoesNotExist(k) => labels(k).is_none(),
            Requirement::Gt(k, n) => labels(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => labels(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }
}

/// One `field=value` / `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldTerm {
    /// Dotted field path.
    pub field: String,
    /// Value compared with.
    pub value: String,
    /// `!=`.
    pub negated: bool,
}

/// Parses a field selector and checks fields against those supported.
pub fn parse_field_selector(
    s: &str,
    supported: &[String],
) -> Result<Vec<FieldTerm>, SelectorError> {
    let mut out = vec![];
    if s.trim().is_empty() {
        return Ok(out);
    }
    for term in s.split(',') {
        let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, false)
        } else {
            return Err(SelectorError::Field(s.to_string(), term.to_string()));
        };
        let field = field.trim();
        if field != "metadata.name"
            && field != "metadata.namespace"
            && !supported.iter().any(|x| x == field)
        {
            return Err(SelectorError::FieldNotSupported(field.to_string()));
        }
        out.push(FieldTerm {
            field: field.to_string(),
            value: value.trim().to_string(),
            negated,
        });
    }
    Ok(out)
}

/// Value of a dotted field for field selectors (`""` when absent, bools as text).
pub fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for p in field.split('.') {
        match cur.get(p) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Known merge keys of associative lists in built-in kinds (strategic merge and field sets).
pub fn builtin_merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "secrets" => "name",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "taints" => "key",
        "tolerations" => "key",
        _ => return None,
    })
}

/// A path element of a managed field: the fieldsV1 key (`f:name`, `k:{...}`, `v:...`, `i:N`).
pub type FieldPath = Vec<String>;

/// Collects the leaf paths of a value as fieldsV1 keys. `list_key` gives the merge key of an
/// associative list (by field name); other lists are atomic.
pub fn leaf_paths(
    v: &Value,
    prefix: &mut FieldPath,
    out: &mut BTreeSet<FieldPath>,
    list_key: &dyn Fn(&[String], &str) -> Option<String>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                prefix.push(format!("f:{k}"));
                match val {
                    Value::Array(items) => {
                        let parent: Vec<String> = prefix.clone();
                        match list_key(&parent, k) {
                            Some(key) if items.iter().all(|i| i.get(&key).is_some()) => {
                                // An OwnerReference is an atomic struct: its key path alone.
                                let atomic = prefix.len() == 2
                                    && prefix[0] == "f:metadata"
                                    && k == "ownerReferences";
                                for item in items {
                                    let kv = json!({ key.clone(): item.get(&key).cloned().unwrap_or(Value::Null) });
                                    prefix.push(format!("k:{kv}"));
                                    if atomic {
                                        out.insert(prefix.clone());
                                        prefix.pop();
                                        continue;
                                    }
                                    let mut marker = prefix.clone();
                                    marker.push(".".into());
                                    out.insert(marker);
                                    leaf_paths(item, prefix, out, list_key);
                                    prefix.pop();
                                }
                            }
                            Some(key) if key == "." => {
                                for item in items {
                                    prefix.push(format!("v:{item}"));
                                    out.insert(prefix.clone());
                                    prefix.pop();
                                }
                            }
                            _ => {
                                out.insert(prefix.clone());
                            }
                        }
                    }
                    Value::Object(inner) if !inner.is_empty() => {
                        leaf_paths(val, prefix, out, list_key)
                    }
                    _ => {
                        out.insert(prefix.clone());
                    }
                }
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Renders a set of paths as a fieldsV1 object.
pub fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    fn insert(m: &mut Map<String, Value>, p: &[String]) {
        let Some((first, rest)) = p.split_first() else {
            return;
        };
        let e = m
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !e.is_object() {
            *e = Value::Object(Map::new());
        }
        if let Value::Object(inner) = e {
            insert(inner, rest);
        }
    }
    let mut root = Map::new();
    for p in paths {
        insert(&mut root, p);
    }
    Value::Object(root)
}

/// Parses a fieldsV1 object into leaf paths.
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, val) in m {
                    prefix.push(k.clone());
                    walk(val, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut vec![], &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (a, b),!legacy,owner,x notin (y)")
            .unwrap();
        let labels = [
            ("app", "web"),
            ("env", "b"),
            ("owner", "me"),
            ("tier", "fe"),
        ];
        let get = |k: &str| labels.iter().find(|(a, _)| *a == k).map(|(_, v)| *v);
        assert!(s.matches(get));
        let s2 = LabelSelector::parse("app=web,env in (c)").unwrap();
        assert!(!s2.matches(get));
        assert!(LabelSelector::parse("app in (").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a in )(").is_err());
        assert!(!name_errors(NameRule::Label, &"é".repeat(40)).is_empty());
    }

    #[test]
    fn names_and_durations() {
        assert!(name_errors(NameRule::Subdomain, "a.b-c").is_empty());
        assert!(!name_errors(NameRule::Subdomain, "Foo_bar").is_empty());
        assert!(!name_errors(NameRule::Label, "a.b").is_empty());
        assert_eq!(human_duration(90), "90s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
    }

    #[test]
    fn field_sets_round_trip() {
        let v = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1, "list": [1, 2]}});
        let mut out = BTreeSet::new();
        leaf_paths(&v, &mut vec![], &mut out, &|_, _| None);
        let f = to_fields_v1(&out);
        assert_eq!(
            f,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:list": {}, "f:x": {}}})
        );
        assert_eq!(from_fields_v1(&f), out);
    }
}

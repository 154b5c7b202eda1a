//! Name templates of the `named` relation selector: parsed at load, expanded against each primary.
//!
//! A template is literal text with placeholders: `{name}`, `{namespace}`, `{cluster}` (the
//! primary's Cluster API cluster, see [`super::cluster_of`]), `{label:KEY}` and
//! `{field:dotted.path}` (a string, or a number or boolean as text). An unknown placeholder
//! or an unbalanced brace is an error at load; a placeholder without a value at expansion
//! yields no name (so the relation finds nothing, rather than a wrong object).

use serde_json::Value;

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name template {template:?}: {reason}")]
pub struct TemplateError {
    /// The template.
    pub template: String,
    /// What is wrong.
    pub reason: String,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `{name}`.
    Name,
    /// `{namespace}`.
    Namespace,
    /// `{cluster}`.
    Cluster,
    /// `{label:KEY}`.
    Label(String),
    /// `{field:path}`, split into segments.
    Field(Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    pieces: Vec<Piece>,
}

/// What a template is expanded against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The primary's name.
    pub name: &'a str,
    /// The primary's namespace.
    pub namespace: &'a str,
    /// The primary's cluster, if it names one.
    pub cluster: Option<&'a str>,
    /// The primary's labels.
    pub labels: &'a [(String, String)],
    /// The primary parsed (for `{field:...}`), when the template needs it.
    pub value: Option<&'a Value>,
}

impl NameTemplate {
    /// Parse `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let err = |reason: &str| TemplateError {
            template: text.to_string(),
            reason: reason.to_string(),
        };
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    pieces.push(Piece::Text(rest.to_string()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(err("'}' without '{'"));
                }
                Some(i) => {
                    if i > 0 {
                        pieces.push(Piece::Text(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after.find('}').ok_or_else(|| err("'{' without '}'"))?;
                    let inner = &after[..end];
                    if inner.contains('{') {
                        return Err(err("nested '{'"));
                    }
                    pieces.push(match inner.split_once(':') {
                        None => match inner {
                            "name" => Piece::Name,
                            "namespace" => Piece::Namespace,
                            "cluster" => Piece::Cluster,
                            other => {
                                return Err(err(&format!(
                                    "unknown placeholder {{{other}}} (known: {{name}}, {{namespace}}, {{cluster}}, {{label:KEY}}, {{field:path}})"
                                )));
                            }
                        },
                        Some(("label", k)) if super::selector::is_label_key(k) => {
                            Piece::Label(k.to_string())
                        }
                        Some(("label", k)) => {
                            return Err(err(&format!("{k:?} is not a label key")));
                        }
                        Some(("field", p)) => {
                            let path = super::split_path(p);
                            if path.is_empty() || p.split('.').any(str::is_empty) {
                                return Err(err(&format!("{p:?} is not a dotted field path")));
                            }
                            Piece::Field(path)
                        }
                        Some((other, _)) => {
                            return Err(err(&format!("unknown placeholder kind {other:?}")));
                        }
                    });
                    rest = &after[end + 1..];
                }
            }
        }
        if pieces.is_empty() {
            return Err(err("it is empty"));
        }
        Ok(Self { pieces })
    }

    /// Whether expansion reads fields of the primary (it must then be parsed).
    pub fn needs_value(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Field(_)))
    }

    /// The name for `subject`; `None` when a placeholder has no (non-empty) value.
    pub fn expand(&self, s: &Subject<'_>) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Name => out.push_str(s.name),
                Piece::Namespace => out.push_str(non_empty(s.namespace)?),
                Piece::Cluster => out.push_str(non_empty(s.cluster?)?),
                Piece::Label(k) => {
                    let v = s.labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v)?;
                    out.push_str(non_empty(v)?);
                }
                Piece::Field(path) => {
                    let v = path.iter().try_fold(s.value?, |v, seg| v.get(seg))?;
                    match v {
                        Value::String(t) => out.push_str(non_empty(t)?),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                        _ => return None,
                    }
                }
            }
        }
        Some(out)
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_expand() {
        let t = NameTemplate::parse("{cluster}-ca").unwrap();
        let labels = [("role".to_string(), "cp".to_string())];
        let v = json!({"spec": {"bootstrap": {"dataSecretName": "b"}, "n": 3}});
        let s = Subject {
            name: "m1",
            namespace: "ns",
            cluster: Some("c1"),
            labels: &labels,
            value: Some(&v),
        };
        assert_eq!(t.expand(&s).as_deref(), Some("c1-ca"));
        let t = NameTemplate::parse(
            "{name}.{namespace}-{label:role}-{field:spec.bootstrap.dataSecretName}-{field:spec.n}",
        )
        .unwrap();
        assert!(t.needs_value());
        assert_eq!(t.expand(&s).as_deref(), Some("m1.ns-cp-b-3"));
        let none = Subject { cluster: None, ..s };
        assert_eq!(
            NameTemplate::parse("{cluster}-ca").unwrap().expand(&none),
            None
        );
        assert_eq!(
            NameTemplate::parse("{label:other}").unwrap().expand(&s),
            None
        );
        assert_eq!(
            NameTemplate::parse("{field:spec.x}").unwrap().expand(&s),
            None
        );
        assert_eq!(
            NameTemplate::parse("fixed").unwrap().expand(&s).as_deref(),
            Some("fixed")
        );
        for bad in [
            "",
            "{nmae}",
            "{cluster",
            "x}",
            "{label:}",
            "{field:a..b}",
            "{x:y}",
            "{{name}}",
        ] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}

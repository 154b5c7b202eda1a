//! Contract checks: plugin-info at load, outcomes after each call, permissions by kind.

use super::bindings::capstan::reconciler::types::{
    Gvk, KeyMapping, ObjectRef, Outcome, PluginInfo, RelationSelector, Verbs,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::HashSet;

/// Whether `s` is a DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at
/// both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A group is empty (core) or a DNS-1123 subdomain.
fn is_group(s: &str) -> bool {
    s.is_empty() || (s.len() <= 253 && s.split('.').all(is_dns_label))
}

fn check_gvk(what: &str, g: &Gvk) -> Result<(), String> {
    if !is_group(&g.group) {
        return Err(format!(
            "{what}: group {:?} is not a DNS subdomain",
            g.group
        ));
    }
    if g.version.is_empty() || !g.version.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{what}: version {:?} is not an API version",
            g.version
        ));
    }
    let k = g.kind.as_bytes();
    if k.is_empty() || !k[0].is_ascii_uppercase() || !k.iter().all(u8::is_ascii_alphanumeric) {
        return Err(format!(
            "{what}: kind {:?} is not an UpperCamelCase kind",
            g.kind
        ));
    }
    Ok(())
}

fn non_empty(what: &str, s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(())
    }
}

/// Validate what `describe()` returned: a DNS-label name, a version, sane
/// kinds, unique non-empty relation names, non-empty selectors, permissions
/// with at least one verb and no kind twice, sane defaults.
pub fn validate_info(info: &PluginInfo) -> Result<(), String> {
    if !is_dns_label(&info.name) {
        return Err(format!("name {:?} is not a DNS-1123 label", info.name));
    }
    non_empty("version", &info.version)?;
    check_gvk("primary", &info.primary)?;
    for (i, w) in info.watches.iter().enumerate() {
        check_gvk(&format!("watches[{i}]"), &w.kind)?;
        match &w.mapping {
            KeyMapping::ControllerOwner => {}
            KeyMapping::Label(s) | KeyMapping::Field(s) => {
                non_empty(&format!("watches[{i}] mapping"), s)?;
            }
        }
    }
    let mut names = HashSet::new();
    for (i, r) in info.relations.iter().enumerate() {
        non_empty(&format!("relations[{i}].name"), &r.name)?;
        if !names.insert(r.name.as_str()) {
            return Err(format!("relation {:?} is declared twice", r.name));
        }
        check_gvk(&format!("relation {}", r.name), &r.kind)?;
        match &r.selector {
            RelationSelector::Owned | RelationSelector::ControllerOwner => {}
            RelationSelector::Label(s)
            | RelationSelector::FieldRef(s)
            | RelationSelector::ByLabelValue(s) => {
                non_empty(&format!("relation {} selector", r.name), s)?;
            }
        }
    }
    let mut kinds = HashSet::new();
    for (i, p) in info.permissions.iter().enumerate() {
        check_gvk(&format!("permissions[{i}]"), &p.kind)?;
        if p.verbs == Verbs::empty() {
            return Err(format!("permission on {} grants no verb", p.kind.kind));
        }
        if !kinds.insert((&p.kind.group, &p.kind.version, &p.kind.kind)) {
            return Err(format!("permission on {} is declared twice", p.kind.kind));
        }
    }
    if let Some(f) = &info.finalizer
        && (f.trim().is_empty() || f.len() > 316)
    {
        return Err(format!("finalizer {f:?} is not a qualified name"));
    }
    if let Some(c) = info.concurrency
        && !(1..=1024).contains(&c)
    {
        return Err(format!("concurrency {c} is outside 1..=1024"));
    }
    if info.resync_seconds == Some(0) {
        return Err("resync-seconds is 0".to_owned());
    }
    Ok(())
}

/// Whether `info` permits `verb` on objects of `api_version` + `kind`
/// (`group/version` or `v1` for core). For the write path.
pub fn permits(info: &PluginInfo, api_version: &str, kind: &str, verb: Verbs) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    info.permissions.iter().any(|p| {
        p.kind.group == group
            && p.kind.version == version
            && p.kind.kind == kind
            && p.verbs.contains(verb)
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    api_version: String,
    kind: String,
    metadata: Meta,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

fn check_object(field: &str, i: usize, text: &str, need_status: bool) -> Result<(), String> {
    let id: Identity = serde_json::from_str(text).map_err(|e| {
        format!("{field}[{i}] is not an object with apiVersion, kind and metadata.name: {e}")
    })?;
    if id.api_version.is_empty() || id.kind.is_empty() || id.metadata.name.is_empty() {
        return Err(format!(
            "{field}[{i}] has an empty apiVersion, kind or metadata.name"
        ));
    }
    if id
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|n| !n.is_empty() && !is_dns_label(n))
    {
        return Err(format!("{field}[{i}] has an invalid namespace"));
    }
    if need_status && id.status.is_none() {
        return Err(format!(
            "{field}[{i}] ({} {}) has no status",
            id.kind, id.metadata.name
        ));
    }
    Ok(())
}

fn check_ref(field: &str, i: usize, r: &ObjectRef) -> Result<(), String> {
    if r.api_version.is_empty() || r.kind.is_empty() || r.name.is_empty() {
        return Err(format!(
            "{field}[{i}] has an empty apiVersion, kind or name"
        ));
    }
    Ok(())
}

/// The bytes an outcome carries across the boundary (JSON texts, references,
/// event texts).
pub fn outcome_size(o: &Outcome) -> usize {
    let r = |r: &ObjectRef| r.api_version.len() + r.kind.len() + r.namespace.len() + r.name.len();
    o.apply.iter().map(String::len).sum::<usize>()
        + o.status.iter().map(String::len).sum::<usize>()
        + o.delete.iter().map(r).sum::<usize>()
        + o.events
            .iter()
            .map(|e| r(&e.regarding) + e.reason.len() + e.message.len())
            .sum::<usize>()
}

/// Validate an outcome: at most `max_bytes` in total; every `apply` and
/// `status` entry a JSON object with apiVersion, kind and metadata.name
/// (and `status` for status entries); references and events complete.
/// Whether the kinds are permitted is the write path's check ([`permits`]).
pub fn validate_outcome(o: &Outcome, max_bytes: usize) -> Result<(), String> {
    let size = outcome_size(o);
    if size > max_bytes {
        return Err(format!(
            "{size} bytes exceeds the limit of {max_bytes} bytes"
        ));
    }
    for (i, t) in o.apply.iter().enumerate() {
        check_object("apply", i, t, false)?;
    }
    for (i, t) in o.status.iter().enumerate() {
        check_object("status", i, t, true)?;
    }
    for (i, r) in o.delete.iter().enumerate() {
        check_ref("delete", i, r)?;
    }
    for (i, e) in o.events.iter().enumerate() {
        check_ref("events", i, &e.regarding)?;
        non_empty(&format!("events[{i}].reason"), &e.reason)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings::capstan::reconciler::types::Permission;

    fn gvk(g: &str, v: &str, k: &str) -> Gvk {
        Gvk {
            group: g.into(),
            version: v.into(),
            kind: k.into(),
        }
    }

    fn info() -> PluginInfo {
        PluginInfo {
            name: "hello".into(),
            version: "0.1.0".into(),
            primary: gvk("", "v1", "ConfigMap"),
            watches: vec![],
            relations: vec![],
            permissions: vec![Permission {
                kind: gvk("", "v1", "ConfigMap"),
                verbs: Verbs::PATCH,
            }],
            finalizer: None,
            concurrency: Some(2),
            resync_seconds: None,
        }
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("hello-1"));
        for bad in ["", "-a", "a-", "Hello", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn info_checks() {
        assert_eq!(validate_info(&info()), Ok(()));
        let mut i = info();
        i.name = "Hello".into();
        assert!(validate_info(&i).unwrap_err().contains("DNS-1123"));
        let mut i = info();
        i.primary.kind = String::new();
        assert!(validate_info(&i).is_err());
        let mut i = info();
        i.permissions.push(i.permissions[0].clone());
        assert!(validate_info(&i).unwrap_err().contains("twice"));
        let mut i = info();
        i.permissions[0].verbs = Verbs::empty();
        assert!(validate_info(&i).is_err());
        let mut i = info();
        i.concurrency = Some(0);
        assert!(validate_info(&i).is_err());
    }

    #[test]
    fn permission_by_api_version() {
        let i = info();
        assert!(permits(&i, "v1", "ConfigMap", Verbs::PATCH));
        assert!(!permits(&i, "v1", "ConfigMap", Verbs::DELETE));
        assert!(!permits(&i, "apps/v1", "ConfigMap", Verbs::PATCH));
        assert!(!permits(&i, "v1", "Secret", Verbs::PATCH));
    }

    #[test]
    fn outcome_checks() {
        let ok =
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"ns"}}"#;
        let mut o = Outcome {
            apply: vec![ok.into()],
            status: vec![],
            delete: vec![],
            events: vec![],
            requeue_after_ms: None,
        };
        assert_eq!(validate_outcome(&o, 1 << 20), Ok(()));
        assert!(validate_outcome(&o, 10).unwrap_err().contains("exceeds"));
        o.status.push(ok.into());
        assert!(
            validate_outcome(&o, 1 << 20)
                .unwrap_err()
                .contains("no status")
        );
        o.status.clear();
        o.apply.push("{not json".into());
        assert!(
            validate_outcome(&o, 1 << 20)
                .unwrap_err()
                .contains("apply[1]")
        );
        o.apply[1] = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#.into();
        assert!(validate_outcome(&o, 1 << 20).is_err());
    }
}

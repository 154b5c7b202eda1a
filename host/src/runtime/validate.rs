//! Contract checks: plugin-info at load, outcomes after each call, permissions by kind.

use super::bindings::capstan::reconciler::types::{
    FieldPair, Gvk, KeyMapping, ObjectRef, Outcome, PluginInfo, RelationSelector, Target, Verbs,
};
use crate::watch::selector::{LabelSelector, is_label_key};
use crate::watch::template::NameTemplate;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::borrow::Cow;
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

/// A dotted field path: non-empty segments separated by dots.
fn check_path(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.split('.').any(|seg| seg.trim().is_empty()) {
        return Err(format!("{what}: {p:?} is not a dotted field path"));
    }
    Ok(())
}

fn check_pair(what: &str, p: &FieldPair) -> Result<(), String> {
    check_path(&format!("{what} (other)"), &p.other)?;
    check_path(&format!("{what} (primary)"), &p.primary)
}

fn check_label_key(what: &str, k: &str) -> Result<(), String> {
    if !is_label_key(k) {
        return Err(format!("{what}: {k:?} is not a label key"));
    }
    Ok(())
}

/// Validate what `describe()` returned: a DNS-label name, a version, sane kinds; watches
/// and relations whose paths, label keys, templates and selectors parse (an unknown
/// template placeholder is an error here, not a relation that silently finds nothing);
/// no owner-based mapping or selector on a workload cluster (owner references do not
/// cross clusters); unique relation names; valid namespace overrides; permissions with at
/// least one verb and no kind twice per target; sane defaults.
pub fn validate_info(info: &PluginInfo) -> Result<(), String> {
    if !is_dns_label(&info.name) {
        return Err(format!("name {:?} is not a DNS-1123 label", info.name));
    }
    non_empty("version", &info.version)?;
    check_gvk("primary", &info.primary)?;
    for (i, w) in info.watches.iter().enumerate() {
        let what = format!("watches[{i}] ({})", w.kind.kind);
        check_gvk(&what, &w.kind)?;
        match &w.mapping {
            KeyMapping::ControllerOwner if w.target == Target::Workload => {
                return Err(format!(
                    "{what}: controller-owner cannot map a workload object (owner references do not cross clusters)"
                ));
            }
            KeyMapping::ControllerOwner | KeyMapping::SameCluster => {}
            KeyMapping::Label(l) | KeyMapping::LabelledWithName(l) => check_label_key(&what, l)?,
            KeyMapping::Field(p) | KeyMapping::ReferencedBy(p) => check_path(&what, p)?,
            KeyMapping::FieldMatch(pair) => check_pair(&what, pair)?,
        }
    }
    let mut names = HashSet::new();
    for (i, r) in info.relations.iter().enumerate() {
        non_empty(&format!("relations[{i}].name"), &r.name)?;
        if !names.insert(r.name.as_str()) {
            return Err(format!("relation {:?} is declared twice", r.name));
        }
        let what = format!("relation {}", r.name);
        check_gvk(&what, &r.kind)?;
        if let Some(ns) = &r.namespace
            && !is_dns_label(ns)
        {
            return Err(format!("{what}: namespace {ns:?} is not a DNS-1123 label"));
        }
        match &r.selector {
            RelationSelector::Owned | RelationSelector::ControllerOwner
                if r.target == Target::Workload =>
            {
                return Err(format!(
                    "{what}: owned and controller-owner cannot select workload objects (owner references do not cross clusters)"
                ));
            }
            RelationSelector::Owned | RelationSelector::ControllerOwner | RelationSelector::All => {
            }
            RelationSelector::Label(l) | RelationSelector::ByLabelValue(l) => {
                check_label_key(&what, l)?;
            }
            RelationSelector::FieldRef(p) | RelationSelector::SelectorAt(p) => {
                check_path(&what, p)?;
            }
            RelationSelector::Named(t) => {
                NameTemplate::parse(t).map_err(|e| format!("{what}: {e}"))?;
            }
            RelationSelector::Matching(sel) => {
                LabelSelector::parse(sel).map_err(|e| format!("{what}: {e}"))?;
            }
            RelationSelector::FieldMatch(pair) => check_pair(&what, pair)?,
        }
    }
    let mut kinds = HashSet::new();
    for (i, p) in info.permissions.iter().enumerate() {
        check_gvk(&format!("permissions[{i}]"), &p.kind)?;
        let target = match p.target {
            Target::Management => "management",
            Target::Workload => "workload",
        };
        if p.verbs == Verbs::empty() {
            return Err(format!(
                "{target} permission on {} grants no verb",
                p.kind.kind
            ));
        }
        if !kinds.insert((target, &p.kind.group, &p.kind.version, &p.kind.kind)) {
            return Err(format!(
                "{target} permission on {} is declared twice",
                p.kind.kind
            ));
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

/// Whether the plugin declares anything in a workload cluster (watch, relation or
/// permission): then its snapshots carry a connection state other than not-applicable.
pub fn uses_workload(info: &PluginInfo) -> bool {
    info.watches.iter().any(|w| w.target == Target::Workload)
        || info.relations.iter().any(|r| r.target == Target::Workload)
        || info
            .permissions
            .iter()
            .any(|p| p.target == Target::Workload)
}

/// Whether `info` permits `verb` on objects of `api_version` + `kind`
/// (`group/version` or `v1` for core). For the write path.
pub fn permits(info: &PluginInfo, api_version: &str, kind: &str, verb: Verbs) -> bool {
    permits_in(info, Target::Management, api_version, kind, verb)
}

/// Whether `info` permits `verb` on objects of `api_version` + `kind` in `target`
/// (any of the verbs when `verb` holds several).
pub fn permits_in(
    info: &PluginInfo,
    target: Target,
    api_version: &str,
    kind: &str,
    verb: Verbs,
) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    info.permissions.iter().any(|p| {
        p.target == target
            && p.kind.group == group
            && p.kind.version == version
            && p.kind.kind == kind
            && p.verbs.intersects(verb)
    })
}

// Borrowed where the JSON text has no escapes (the usual case), so checking
// an outcome allocates nothing per object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    metadata: Meta<'a>,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
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
        + o.workload_apply.iter().map(String::len).sum::<usize>()
        + o.workload_status.iter().map(String::len).sum::<usize>()
        + o.workload_delete.iter().map(r).sum::<usize>()
        + o.events
            .iter()
            .map(|e| r(&e.regarding) + e.reason.len() + e.message.len())
            .sum::<usize>()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeOnly<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// A workload entry's kind must be covered by a workload permission with one of `verbs`.
fn check_workload_kind(
    info: &PluginInfo,
    field: &str,
    i: usize,
    api_version: &str,
    kind: &str,
    verbs: Verbs,
) -> Result<(), String> {
    if permits_in(info, Target::Workload, api_version, kind, verbs) {
        return Ok(());
    }
    Err(format!(
        "{field}[{i}]: {api_version} {kind} is not covered by a workload permission of the plugin"
    ))
}

/// Validate an outcome: at most `max_bytes` in total; every `apply` and
/// `status` entry (management and workload) a JSON object with apiVersion, kind and
/// metadata.name (and `status` for status entries); references and events complete;
/// every workload entry's kind covered by a workload permission of `info` with a verb of
/// its class (apply: create or patch; status: patch-status; delete: delete). Whether a
/// management kind and exact verb are permitted is the write path's check ([`permits`]),
/// which knows whether an applied object exists.
pub fn validate_outcome(o: &Outcome, max_bytes: usize, info: &PluginInfo) -> Result<(), String> {
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
    for (field, texts, need_status, verbs) in [
        (
            "workload-apply",
            &o.workload_apply,
            false,
            Verbs::CREATE | Verbs::PATCH,
        ),
        (
            "workload-status",
            &o.workload_status,
            true,
            Verbs::PATCH_STATUS,
        ),
    ] {
        for (i, t) in texts.iter().enumerate() {
            check_object(field, i, t, need_status)?;
            // check_object proved these fields are there.
            let ty: TypeOnly = serde_json::from_str(t).map_err(|e| format!("{field}[{i}]: {e}"))?;
            check_workload_kind(info, field, i, &ty.api_version, &ty.kind, verbs)?;
        }
    }
    for (i, r) in o.workload_delete.iter().enumerate() {
        check_ref("workload-delete", i, r)?;
        check_workload_kind(
            info,
            "workload-delete",
            i,
            &r.api_version,
            &r.kind,
            Verbs::DELETE,
        )?;
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
    use crate::runtime::bindings::capstan::reconciler::types::{Permission, Relation};

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
                target: Target::Management,
            }],
            finalizer: None,
            concurrency: Some(2),
            resync_seconds: None,
            capabilities: crate::runtime::Capabilities::empty(),
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
        let i = info();
        let mut o = Outcome {
            apply: vec![ok.into()],
            status: vec![],
            delete: vec![],
            events: vec![],
            requeue_after_ms: None,
            workload_apply: vec![],
            workload_status: vec![],
            workload_delete: vec![],
        };
        assert_eq!(validate_outcome(&o, 1 << 20, &i), Ok(()));
        assert!(
            validate_outcome(&o, 10, &i)
                .unwrap_err()
                .contains("exceeds")
        );
        o.status.push(ok.into());
        assert!(
            validate_outcome(&o, 1 << 20, &i)
                .unwrap_err()
                .contains("no status")
        );
        o.status.clear();
        o.apply.push("{not json".into());
        assert!(
            validate_outcome(&o, 1 << 20, &i)
                .unwrap_err()
                .contains("apply[1]")
        );
        o.apply[1] = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#.into();
        assert!(validate_outcome(&o, 1 << 20, &i).is_err());
    }

    fn relation(name: &str, selector: RelationSelector, target: Target) -> Relation {
        Relation {
            name: name.into(),
            kind: gvk("", "v1", "Secret"),
            selector,
            target,
            namespace: None,
        }
    }

    #[test]
    fn new_selectors_and_mappings_are_checked_at_load() {
        let ok = |sel: RelationSelector, target: Target| {
            let mut i = info();
            i.relations.push(relation("r", sel, target));
            validate_info(&i)
        };
        assert_eq!(
            ok(
                RelationSelector::Named("{cluster}-ca".into()),
                Target::Management
            ),
            Ok(())
        );
        let e = ok(
            RelationSelector::Named("{clustr}-ca".into()),
            Target::Management,
        )
        .unwrap_err();
        assert!(e.contains("unknown placeholder {clustr}"), "{e}");
        assert_eq!(
            ok(
                RelationSelector::Matching("tier=control-plane,component in (etcd)".into()),
                Target::Workload
            ),
            Ok(())
        );
        assert!(
            ok(
                RelationSelector::Matching("tier in (".into()),
                Target::Workload
            )
            .is_err()
        );
        assert!(
            ok(
                RelationSelector::SelectorAt("spec..selector".into()),
                Target::Management
            )
            .is_err()
        );
        assert!(
            ok(
                RelationSelector::FieldMatch(FieldPair {
                    other: "spec.providerID".into(),
                    primary: "".into()
                }),
                Target::Workload
            )
            .is_err()
        );
        assert!(
            ok(
                RelationSelector::Label("bad key!".into()),
                Target::Management
            )
            .is_err()
        );
        let e = ok(RelationSelector::Owned, Target::Workload).unwrap_err();
        assert!(e.contains("do not cross clusters"), "{e}");
        let mut i = info();
        let mut r = relation("pods", RelationSelector::All, Target::Workload);
        r.namespace = Some("Kube_System".into());
        i.relations.push(r);
        assert!(validate_info(&i).unwrap_err().contains("namespace"));

        let watch = |mapping: KeyMapping, target: Target| {
            let mut i = info();
            i.watches.push(crate::runtime::Watch {
                kind: gvk("", "v1", "Node"),
                mapping,
                target,
            });
            validate_info(&i)
        };
        assert_eq!(watch(KeyMapping::SameCluster, Target::Workload), Ok(()));
        assert!(watch(KeyMapping::ControllerOwner, Target::Workload).is_err());
        assert!(watch(KeyMapping::ReferencedBy(".spec".into()), Target::Management).is_err());
        assert!(watch(KeyMapping::LabelledWithName("".into()), Target::Management).is_err());

        // The same kind may be permitted once per target.
        let mut i = info();
        let mut p = i.permissions[0].clone();
        p.target = Target::Workload;
        i.permissions.push(p.clone());
        assert_eq!(validate_info(&i), Ok(()));
        i.permissions.push(p);
        assert!(
            validate_info(&i)
                .unwrap_err()
                .contains("workload permission")
        );
    }

    #[test]
    fn workload_entries_need_workload_permissions() {
        let mut i = info();
        let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"status":{}}"#;
        let mut o = Outcome {
            apply: vec![],
            status: vec![],
            delete: vec![],
            events: vec![],
            requeue_after_ms: None,
            workload_apply: vec![node.into()],
            workload_status: vec![],
            workload_delete: vec![],
        };
        let e = validate_outcome(&o, 1 << 20, &i).unwrap_err();
        assert!(e.contains("workload-apply[0]") && e.contains("Node"), "{e}");
        // A management permission does not cover the workload cluster.
        i.permissions.push(Permission {
            kind: gvk("", "v1", "Node"),
            verbs: Verbs::PATCH | Verbs::PATCH_STATUS,
            target: Target::Management,
        });
        assert!(validate_outcome(&o, 1 << 20, &i).is_err());
        i.permissions.push(Permission {
            kind: gvk("", "v1", "Node"),
            verbs: Verbs::PATCH,
            target: Target::Workload,
        });
        assert_eq!(validate_outcome(&o, 1 << 20, &i), Ok(()));
        o.workload_status.push(node.into());
        assert!(
            validate_outcome(&o, 1 << 20, &i)
                .unwrap_err()
                .contains("workload-status[0]")
        );
        o.workload_status.clear();
        o.workload_delete.push(ObjectRef {
            api_version: "v1".into(),
            kind: "Node".into(),
            namespace: String::new(),
            name: "n1".into(),
        });
        assert!(
            validate_outcome(&o, 1 << 20, &i)
                .unwrap_err()
                .contains("workload-delete[0]")
        );
        assert!(uses_workload(&i));
        assert!(!uses_workload(&info()));
    }
}

//! Relation selectors evaluated against one kind cache: the objects a snapshot carries for a relation.
//!
//! The same code serves management relations (the manager's cache) and workload relations
//! (a workload cluster's cache handed over by [`super::WorkloadAccess`]). Costs per
//! snapshot, with n = objects of the related kind in scope:
//!
//! | selector | cost |
//! | --- | --- |
//! | owned, label, by-label-value, field-ref, named, controller-owner | O(matches) (owner, label indexes; one get) |
//! | field-match | O(matches) (field index on the related kind) |
//! | matching with a `k=v` requirement | O(objects labelled k=v) (label index), then filtered |
//! | matching without one, selector-at, all | O(n in scope) (namespace index) |
//!
//! Scope: the namespace override, else for a management relation the primary's namespace,
//! for a workload relation the whole cluster; cluster-scoped kinds ignore namespaces.

use crate::cache::{CachedObject, KindCache, ObjectKey};
use crate::runtime::bindings::capstan::reconciler::types::{RelationSelector, Target};
use crate::watch::selector::LabelSelector;
use crate::watch::template::{NameTemplate, Subject};
use crate::watch::{self, ref_is_of};
use serde_json::Value;
use std::sync::Arc;

/// A relation selector, parsed once when the controller is built.
#[derive(Debug)]
pub(crate) enum Selector {
    Owned,
    Label(String),
    FieldRef(Vec<String>),
    ControllerOwner,
    ByLabelValue(String),
    All,
    Named(NameTemplate),
    Matching(LabelSelector),
    LabelSelectorAt(Vec<String>),
    FieldMatch {
        /// Path on the related objects (indexed on each cache it is used with).
        other: Vec<String>,
        primary: Vec<String>,
    },
}

impl Selector {
    /// Parse `s` and register on `cache` the indexes it needs. Validation at load has
    /// already proved templates and selectors parse; a failure here is reported anyway.
    pub(crate) fn new(s: &RelationSelector, cache: &KindCache) -> Result<Self, String> {
        Ok(match s {
            RelationSelector::Owned => Selector::Owned,
            RelationSelector::Label(l) => {
                cache.index_label(l);
                Selector::Label(l.clone())
            }
            RelationSelector::FieldRef(p) => Selector::FieldRef(watch::split_path(p)),
            RelationSelector::ControllerOwner => Selector::ControllerOwner,
            RelationSelector::ByLabelValue(l) => Selector::ByLabelValue(l.clone()),
            RelationSelector::All => Selector::All,
            RelationSelector::Named(t) => {
                Selector::Named(NameTemplate::parse(t).map_err(|e| e.to_string())?)
            }
            RelationSelector::Matching(m) => {
                let sel = LabelSelector::parse(m).map_err(|e| e.to_string())?;
                if let Some((k, _)) = sel.pinned() {
                    cache.index_label(k);
                }
                Selector::Matching(sel)
            }
            RelationSelector::SelectorAt(p) => Selector::LabelSelectorAt(watch::split_path(p)),
            RelationSelector::FieldMatch(pair) => {
                let other = watch::split_path(&pair.other);
                cache.index_field(&other);
                Selector::FieldMatch {
                    other,
                    primary: watch::split_path(&pair.primary),
                }
            }
        })
    }
}

/// The primary as selectors see it, parsed lazily.
pub(crate) struct PrimaryView<'a> {
    pub(crate) obj: &'a CachedObject,
    parsed: Option<Value>,
}

impl<'a> PrimaryView<'a> {
    pub(crate) fn new(obj: &'a CachedObject) -> Self {
        Self { obj, parsed: None }
    }

    fn value(&mut self) -> &Value {
        let json = &self.obj.json;
        self.parsed
            .get_or_insert_with(|| serde_json::from_str(json).unwrap_or(Value::Null))
    }
}

fn matches(sel: &LabelSelector, o: &CachedObject) -> bool {
    sel.matches(|k| o.label(k))
}

/// The objects `selector` finds in `cache` for `primary`. `target` and `namespace` (the
/// relation's override) decide the scope.
pub(crate) fn select(
    selector: &Selector,
    cache: &KindCache,
    primary: &mut PrimaryView<'_>,
    target: Target,
    namespace: Option<&str>,
) -> Vec<Arc<CachedObject>> {
    let own_ns = primary.obj.key.namespace.as_str();
    // The namespace multi-object selectors look in (None: every namespace).
    let scope: Option<&str> = if !cache.namespaced() {
        Some("")
    } else {
        match (namespace, target) {
            (Some(ns), _) => Some(ns),
            (None, Target::Management) => Some(own_ns),
            (None, Target::Workload) => None,
        }
    };
    // The namespace single-object lookups use.
    let one_ns = if cache.namespaced() {
        namespace.unwrap_or(own_ns)
    } else {
        ""
    };
    let get = |name: &str, ns: &str| cache.get(&ObjectKey::new(ns, name));
    let all_in_scope = || cache.in_namespace(scope);
    match selector {
        Selector::Owned => cache.owned_by(&primary.obj.uid, true),
        Selector::Label(l) => match scope {
            Some(ns) => cache.with_label(l, ns, &primary.obj.key.name),
            None => all_in_scope()
                .into_iter()
                .filter(|o| o.label(l) == Some(primary.obj.key.name.as_str()))
                .collect(),
        },
        Selector::FieldRef(path) => {
            let gvk = cache.gvk();
            let v = primary.value();
            let Some(f) = crate::cache::field_value(v, path, one_ns) else {
                return Vec::new();
            };
            if !ref_is_of(&f, gvk) {
                return Vec::new();
            }
            let ns = if cache.namespaced() { &f.namespace } else { "" };
            get(&f.value, ns).into_iter().collect()
        }
        Selector::ControllerOwner => primary
            .obj
            .controller_owner()
            .filter(|o| o.kind == cache.gvk().kind && o.group() == cache.gvk().group)
            .and_then(|o| get(&o.name, one_ns))
            .into_iter()
            .collect(),
        Selector::ByLabelValue(l) => primary
            .obj
            .label(l)
            .filter(|v| !v.is_empty())
            .and_then(|v| get(v, one_ns))
            .into_iter()
            .collect(),
        Selector::All => all_in_scope(),
        Selector::Named(t) => {
            let value = if t.needs_value() {
                Some(primary.value().clone())
            } else {
                None
            };
            let obj = primary.obj;
            let subject = Subject {
                name: &obj.key.name,
                namespace: &obj.key.namespace,
                cluster: obj.cluster.as_deref(),
                labels: &obj.labels,
                value: value.as_ref(),
            };
            t.expand(&subject)
                .and_then(|name| get(&name, one_ns))
                .into_iter()
                .collect()
        }
        Selector::Matching(sel) => {
            let candidates = match (sel.pinned(), scope) {
                (Some((k, v)), Some(ns)) if cache.label_indexed(k) => cache.with_label(k, ns, v),
                _ => all_in_scope(),
            };
            candidates.into_iter().filter(|o| matches(sel, o)).collect()
        }
        Selector::LabelSelectorAt(path) => {
            let v = primary.value();
            let Some(sel_value) = path.iter().try_fold(v, |v, p| v.get(p)) else {
                return Vec::new();
            };
            if sel_value.is_null() {
                return Vec::new();
            }
            match LabelSelector::from_object(sel_value) {
                Ok(sel) => all_in_scope()
                    .into_iter()
                    .filter(|o| matches(&sel, o))
                    .collect(),
                Err(error) => {
                    tracing::debug!(primary = %primary.obj.key, %error, "selector-at: malformed selector selects nothing");
                    Vec::new()
                }
            }
        }
        Selector::FieldMatch {
            other,
            primary: path,
        } => {
            // Registered at build time on a management cache; a workload cluster's cache
            // gets it on first use (a lookup once it exists).
            let other_field = &cache.index_field(other);
            let v = primary.value();
            let Some(Value::String(want)) = path.iter().try_fold(v, |v, p| v.get(p)) else {
                return Vec::new();
            };
            if want.is_empty() {
                return Vec::new();
            }
            match scope {
                Some(ns) => cache.with_field(*other_field, ns, want, |f| !f.is_ref),
                None => {
                    // Every namespace: the index is per namespace; walk those present.
                    let mut out = Vec::new();
                    for ns in cache.namespaces() {
                        out.extend(cache.with_field(*other_field, &ns, want, |f| !f.is_ref));
                    }
                    out
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Gvk;
    use crate::runtime::FieldPair;
    use prometheus_client::metrics::gauge::Gauge;
    use serde_json::json;

    fn cache(kind: &str, namespaced: bool) -> KindCache {
        KindCache::new(Gvk::new("", "v1", kind), "x", namespaced, Gauge::default())
    }

    fn obj(v: serde_json::Value) -> CachedObject {
        CachedObject::from_value(v).unwrap()
    }

    fn names(v: Vec<Arc<CachedObject>>) -> Vec<String> {
        v.iter().map(|o| o.key.to_string()).collect()
    }

    fn machine() -> CachedObject {
        obj(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m1", "namespace": "ns", "uid": "mu", "resourceVersion": "1",
                         "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "spec": {"clusterName": "c1", "providerID": "in-memory://m1",
                     "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": "kc"}},
                     "selector": {"matchLabels": {"tier": "control-plane"}}}}),
        )
    }

    #[test]
    fn selectors_find_what_the_wit_says() {
        let secrets = cache("Secret", true);
        for (ns, name, labels) in [
            ("ns", "c1-ca", json!({})),
            ("ns", "c2-ca", json!({})),
            ("kube-system", "c1-ca", json!({})),
            (
                "ns",
                "a",
                json!({"tier": "control-plane", "component": "etcd"}),
            ),
            (
                "ns",
                "b",
                json!({"tier": "control-plane", "component": "other"}),
            ),
            (
                "kube-system",
                "c",
                json!({"tier": "control-plane", "component": "etcd"}),
            ),
        ] {
            secrets.apply(obj(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}{name}"), "resourceVersion": "1", "labels": labels}})));
        }
        let m = machine();
        let sel = |s: RelationSelector, target: Target, ns: Option<&str>| {
            let parsed = Selector::new(&s, &secrets).unwrap();
            names(select(
                &parsed,
                &secrets,
                &mut PrimaryView::new(&m),
                target,
                ns,
            ))
        };
        let mgmt = Target::Management;
        assert_eq!(
            sel(RelationSelector::Named("{cluster}-ca".into()), mgmt, None),
            ["ns/c1-ca"]
        );
        assert_eq!(
            sel(
                RelationSelector::Named("{cluster}-ca".into()),
                mgmt,
                Some("kube-system")
            ),
            ["kube-system/c1-ca"]
        );
        assert!(
            sel(
                RelationSelector::Named("{label:missing}-ca".into()),
                mgmt,
                None
            )
            .is_empty()
        );
        let matching = RelationSelector::Matching("tier=control-plane,component in (etcd)".into());
        assert_eq!(sel(matching.clone(), mgmt, None), ["ns/a"]);
        // A workload relation without a namespace spans the cluster.
        assert_eq!(
            sel(matching, Target::Workload, None),
            ["kube-system/c", "ns/a"]
        );
        assert_eq!(
            sel(
                RelationSelector::SelectorAt("spec.selector".into()),
                mgmt,
                None
            ),
            ["ns/a", "ns/b"]
        );
        assert!(
            sel(
                RelationSelector::SelectorAt("spec.absent".into()),
                mgmt,
                None
            )
            .is_empty()
        );
        assert_eq!(
            sel(RelationSelector::All, mgmt, Some("kube-system")).len(),
            2
        );

        // field-ref checks kind and group when the reference carries them.
        let configs = KindCache::new(
            Gvk::new("bootstrap.cluster.x-k8s.io", "v1beta2", "KubeadmConfig"),
            "kubeadmconfigs",
            true,
            Gauge::default(),
        );
        configs.apply(obj(
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
            "metadata": {"name": "kc", "namespace": "ns", "uid": "k", "resourceVersion": "1"}}),
        ));
        let fr = Selector::new(
            &RelationSelector::FieldRef("spec.bootstrap.configRef".into()),
            &configs,
        )
        .unwrap();
        assert_eq!(
            names(select(&fr, &configs, &mut PrimaryView::new(&m), mgmt, None)),
            ["ns/kc"]
        );
        let other_kind = KindCache::new(
            Gvk::new(
                "bootstrap.cluster.x-k8s.io",
                "v1beta2",
                "KubeadmConfigTemplate",
            ),
            "t",
            true,
            Gauge::default(),
        );
        other_kind.apply(obj(json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": "kc", "namespace": "ns", "uid": "t", "resourceVersion": "1"}})));
        assert!(select(&fr, &other_kind, &mut PrimaryView::new(&m), mgmt, None).is_empty());

        // field-match: the Node (cluster-scoped) whose providerID is the Machine's.
        let nodes = cache("Node", false);
        for (n, pid) in [("n1", "in-memory://m1"), ("n2", "in-memory://m2")] {
            nodes.apply(obj(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n, "uid": n, "resourceVersion": "1"}, "spec": {"providerID": pid}})));
        }
        let fm = Selector::new(
            &RelationSelector::FieldMatch(FieldPair {
                other: "spec.providerID".into(),
                primary: "spec.providerID".into(),
            }),
            &nodes,
        )
        .unwrap();
        assert_eq!(
            names(select(
                &fm,
                &nodes,
                &mut PrimaryView::new(&m),
                Target::Workload,
                None
            )),
            ["n1"]
        );
    }
}

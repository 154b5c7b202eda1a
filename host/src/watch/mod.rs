//! Turns cache events into the primary keys each plugin must reconcile, from its declarations.
//!
//! A plugin's `describe()` names its primary kind and the kinds it watches, each with a
//! [`KeyMapping`]. An event on a watched object (add, update or delete; both the old and
//! the new object are mapped, so a moved owner or label enqueues both primaries) becomes
//! zero or more primary keys in the watched object's namespace:
//!
//! - the primary kind itself: its own key;
//! - `controller-owner`: the name in the controller owner reference, when that owner is
//!   of the primary's group and kind (controller-runtime's `EnqueueRequestForOwner` with
//!   `OnlyControllerOwner`);
//! - `label(l)`: the value of label `l` (e.g. `cluster.x-k8s.io/cluster-name`);
//! - `field(p)`: the string at dotted path `p`, or the `name` (and `namespace`) of the
//!   object reference there;
//! - `labelled-with-name(l)`: every primary labelled `l=<object name>` (label index of the
//!   primary cache, O(matches));
//! - `referenced-by(p)`: every primary whose reference at `p` names the object (field index
//!   of the primary cache, O(matches); kind and group checked when the reference has them);
//! - `field-match(other, primary)`: every primary whose string at `primary` equals the
//!   object's at `other` (field index of the primary cache);
//! - `same-cluster`: every primary of the object's Cluster API cluster (cluster index).
//!
//! No event scans the primaries: every fan-out goes through an index kept by the cache, so
//! at 2,000 clusters an event costs O(primaries it maps to), not O(primaries). A workload
//! event ([`Scope::Workload`]) maps the same way into the namespace of the cluster it came
//! from, keeping only primaries of that cluster.
//!
//! Nothing polls: an infrastructure object turning ready is an update event, which enqueues
//! its owner here.

pub mod selector;
pub mod template;

use crate::cache::{CacheEvent, CachedObject, FieldValue, Gvk, KindCache, ObjectKey};
use crate::runtime::bindings::capstan::reconciler::types::{KeyMapping, PluginInfo, Target};
use serde_json::Value;

/// How events on one watched kind map to primary keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The primary kind: the object's own key.
    Primary,
    /// The controller owner reference, when it is of the primary kind.
    ControllerOwner,
    /// The value of this label.
    Label(String),
    /// The name at this dotted field path.
    Field(Vec<String>),
    /// Every primary labelled with this label = the object's name (primary label index).
    LabelledWithName(String),
    /// Every primary whose reference at field index `primary_field` (of the primary cache)
    /// names the object, with kind and group checked when the reference carries them.
    ReferencedBy {
        /// The path (for display).
        path: Vec<String>,
        /// The field index on the primary cache.
        primary_field: usize,
    },
    /// Every primary whose string at field index `primary_field` equals the object's
    /// string at `other`.
    FieldMatch {
        /// Path on the watched object.
        other: Vec<String>,
        /// The field index on the primary cache.
        primary_field: usize,
    },
    /// Every primary of the object's Cluster API cluster (primary cluster index).
    SameCluster,
}

/// Where a watched object lives, which decides the namespace its primaries are found in.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// The management cluster: primaries in the object's namespace.
    Management,
    /// The workload cluster of the Cluster API cluster `cluster` (`namespace/name` of the
    /// Cluster): primaries in the Cluster's namespace that belong to that cluster.
    Workload {
        /// The Cluster's namespace and name.
        cluster: &'a ObjectKey,
    },
}

impl Rule {
    /// The rule of `mapping`, registering on `primary` the indexes it needs.
    pub fn new(mapping: &KeyMapping, primary: &KindCache) -> Self {
        match mapping {
            KeyMapping::ControllerOwner => Rule::ControllerOwner,
            KeyMapping::Label(l) => Rule::Label(l.clone()),
            KeyMapping::Field(p) => Rule::Field(split_path(p)),
            KeyMapping::LabelledWithName(l) => {
                primary.index_label(l);
                Rule::LabelledWithName(l.clone())
            }
            KeyMapping::ReferencedBy(p) => {
                let path = split_path(p);
                let primary_field = primary.index_field(&path);
                Rule::ReferencedBy {
                    path,
                    primary_field,
                }
            }
            KeyMapping::FieldMatch(pair) => Rule::FieldMatch {
                other: split_path(&pair.other),
                primary_field: primary.index_field(&split_path(&pair.primary)),
            },
            KeyMapping::SameCluster => Rule::SameCluster,
        }
    }
}

/// Split a dotted field path (`spec.infrastructureRef`) into its segments.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The (kind, mapping) pairs of a plugin's management watches, primary first (`None`
/// mapping: the primary kind itself).
pub fn plan(info: &PluginInfo) -> Vec<(Gvk, Option<KeyMapping>)> {
    let mut out = vec![(Gvk::from(&info.primary), None)];
    out.extend(
        info.watches
            .iter()
            .filter(|w| w.target == Target::Management)
            .map(|w| (Gvk::from(&w.kind), Some(w.mapping.clone()))),
    );
    out
}

/// The object reference at `path` in `value`: a string name, or an object with `name`
/// (and optionally `namespace`). Returns (namespace, name); namespace may be absent.
pub fn reference_at<'a>(value: &'a Value, path: &[String]) -> Option<(Option<&'a str>, &'a str)> {
    let v = path.iter().try_fold(value, |v, p| v.get(p))?;
    match v {
        Value::String(name) if !name.is_empty() => Some((None, name.as_str())),
        Value::Object(m) => {
            let name = m.get("name")?.as_str().filter(|n| !n.is_empty())?;
            Some((m.get("namespace").and_then(Value::as_str), name))
        }
        _ => None,
    }
}

/// Whether a reference's kind and group, when given, are `gvk`'s.
pub fn ref_is_of(f: &FieldValue, gvk: &Gvk) -> bool {
    f.kind.as_deref().is_none_or(|k| k == gvk.kind)
        && f.group.as_deref().is_none_or(|g| g == gvk.group)
}

/// What [`keys_for`] needs besides the rule and the object.
#[derive(Clone, Copy, Debug)]
pub struct MapContext<'a> {
    /// The primary kind.
    pub primary: &'a Gvk,
    /// The primary kind's cache (reverse lookups).
    pub primary_cache: &'a KindCache,
    /// The watched kind.
    pub watched: &'a Gvk,
    /// Where the object lives.
    pub scope: Scope<'a>,
}

/// The primary keys one object maps to under `rule`.
pub fn keys_for(rule: &Rule, cx: &MapContext<'_>, obj: &CachedObject) -> Vec<ObjectKey> {
    let (ns, cluster): (&str, Option<&str>) = match cx.scope {
        Scope::Management => (&obj.key.namespace, None),
        Scope::Workload { cluster } => (&cluster.namespace, Some(&cluster.name)),
    };
    let keys = |objs: Vec<std::sync::Arc<CachedObject>>| -> Vec<ObjectKey> {
        objs.into_iter()
            .filter(|p| cluster.is_none_or(|c| p.cluster.as_deref() == Some(c)))
            .map(|p| p.key.clone())
            .collect()
    };
    // A name found on the object: in the workload scope it must still be a primary of
    // that cluster.
    let named = |name: &str, in_ns: &str| -> Vec<ObjectKey> {
        let k = ObjectKey::new(in_ns, name);
        match cluster {
            None => vec![k],
            Some(c) => cx
                .primary_cache
                .get(&k)
                .filter(|p| p.cluster.as_deref() == Some(c))
                .map(|p| p.key.clone())
                .into_iter()
                .collect(),
        }
    };
    match rule {
        Rule::Primary => vec![obj.key.clone()],
        Rule::ControllerOwner => obj
            .controller_owner()
            .filter(|o| o.kind == cx.primary.kind && o.group() == cx.primary.group)
            .map(|o| named(&o.name, ns))
            .unwrap_or_default(),
        Rule::Label(l) => obj
            .label(l)
            .filter(|v| !v.is_empty())
            .map(|v| named(v, ns))
            .unwrap_or_default(),
        Rule::Field(path) => {
            let Ok(value) = serde_json::from_str::<Value>(&obj.json) else {
                return Vec::new();
            };
            let target_ns = |rns: Option<&str>| match cx.scope {
                Scope::Management => rns.unwrap_or(ns).to_string(),
                // A namespace inside a workload object names a workload namespace.
                Scope::Workload { .. } => ns.to_string(),
            };
            reference_at(&value, path)
                .map(|(rns, name)| named(name, &target_ns(rns)))
                .unwrap_or_default()
        }
        Rule::LabelledWithName(l) => keys(cx.primary_cache.with_label(l, ns, &obj.key.name)),
        Rule::ReferencedBy { primary_field, .. } => keys(cx.primary_cache.with_field(
            *primary_field,
            ns,
            &obj.key.name,
            |f| ref_is_of(f, cx.watched),
        )),
        Rule::FieldMatch {
            other,
            primary_field,
        } => {
            let Ok(value) = serde_json::from_str::<Value>(&obj.json) else {
                return Vec::new();
            };
            match other.iter().try_fold(&value, |v, p| v.get(p)) {
                Some(Value::String(s)) if !s.is_empty() => {
                    keys(
                        cx.primary_cache
                            .with_field(*primary_field, ns, s, |f| !f.is_ref),
                    )
                }
                _ => Vec::new(),
            }
        }
        Rule::SameCluster => match cluster.or(obj.cluster.as_deref()) {
            Some(c) => keys(cx.primary_cache.in_cluster(ns, c)),
            None => Vec::new(),
        },
    }
}

/// The keys of one event: old and new object mapped, deduplicated.
pub fn keys_for_event(rule: &Rule, cx: &MapContext<'_>, ev: &CacheEvent) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = Vec::with_capacity(2);
    for o in [&ev.old, &ev.new].into_iter().flatten() {
        for k in keys_for(rule, cx, o) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// Subscribe `sink` to `cache`'s (management) events mapped by `rule` (labels used are
/// indexed). `primary_cache` answers the reverse lookups of fan-out rules.
pub fn connect(
    cache: &KindCache,
    rule: Rule,
    primary: Gvk,
    primary_cache: std::sync::Arc<KindCache>,
    sink: impl Fn(ObjectKey) + Send + Sync + 'static,
) {
    if let Rule::Label(l) = &rule {
        cache.index_label(l);
    }
    let watched = cache.gvk().clone();
    cache.subscribe(move |ev| {
        let cx = MapContext {
            primary: &primary,
            primary_cache: &primary_cache,
            watched: &watched,
            scope: Scope::Management,
        };
        for k in keys_for_event(&rule, &cx, ev) {
            sink(k);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::FieldPair;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::Arc;

    fn machine(owner_kind: &str, controller: bool, label: &str, infra: &str) -> CachedObject {
        CachedObject::from_json(&format!(
            r#"{{"apiVersion":"infrastructure.cluster.x-k8s.io/v1beta2","kind":"InMemoryMachine",
            "metadata":{{"name":"m","namespace":"ns","uid":"u","resourceVersion":"1",
              "labels":{{"cluster.x-k8s.io/cluster-name":"{label}"}},
              "ownerReferences":[{{"apiVersion":"cluster.x-k8s.io/v1beta2","kind":"{owner_kind}","name":"owner","uid":"o","controller":{controller}}}]}},
            "spec":{{"infrastructureRef":{infra},"bootstrap":{{"dataSecretName":"sec"}}}}}}"#
        ))
        .unwrap()
    }

    fn k(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    fn cache(gvk: &Gvk) -> KindCache {
        KindCache::new(gvk.clone(), "x", true, Gauge::default())
    }

    fn obj(text: serde_json::Value) -> CachedObject {
        CachedObject::from_value(text).unwrap()
    }

    fn cx<'a>(primary: &'a Gvk, pc: &'a KindCache, watched: &'a Gvk) -> MapContext<'a> {
        MapContext {
            primary,
            primary_cache: pc,
            watched,
            scope: Scope::Management,
        }
    }

    #[test]
    fn each_rule_maps_to_the_right_primary() {
        let machine_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine");
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let infra = Gvk::new(
            "infrastructure.cluster.x-k8s.io",
            "v1beta2",
            "InMemoryMachine",
        );
        let (mc, cc) = (cache(&machine_gvk), cache(&cluster_gvk));
        let on_m = cx(&machine_gvk, &mc, &infra);
        let on_c = cx(&cluster_gvk, &cc, &infra);
        let o = machine(
            "Machine",
            true,
            "c1",
            r#"{"name":"infra","namespace":"other"}"#,
        );
        assert_eq!(keys_for(&Rule::Primary, &on_m, &o), [k("m")]);
        assert_eq!(keys_for(&Rule::ControllerOwner, &on_m, &o), [k("owner")]);
        // Owner of another kind, or not the controller: nothing.
        assert!(keys_for(&Rule::ControllerOwner, &on_c, &o).is_empty());
        let not_controller = machine("Machine", false, "c1", "null");
        assert!(keys_for(&Rule::ControllerOwner, &on_m, &not_controller).is_empty());
        let label = Rule::Label("cluster.x-k8s.io/cluster-name".into());
        assert_eq!(keys_for(&label, &on_c, &o), [k("c1")]);
        let field = |p: &str| Rule::Field(split_path(p));
        assert_eq!(
            keys_for(&field("spec.infrastructureRef"), &on_m, &o),
            [ObjectKey::new("other", "infra")]
        );
        assert_eq!(
            keys_for(&field("spec.bootstrap.dataSecretName"), &on_m, &o),
            [k("sec")]
        );
        assert!(keys_for(&field("spec.missing"), &on_m, &o).is_empty());
    }

    #[test]
    fn an_update_that_moves_the_label_enqueues_both_primaries() {
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let cc = cache(&cluster_gvk);
        let ev = CacheEvent {
            old: Some(Arc::new(machine("Machine", true, "c1", "null"))),
            new: Some(Arc::new(machine("Machine", true, "c2", "null"))),
        };
        let rule = Rule::Label("cluster.x-k8s.io/cluster-name".into());
        let c = cx(&cluster_gvk, &cc, &cluster_gvk);
        assert_eq!(keys_for_event(&rule, &c, &ev), [k("c1"), k("c2")]);
        let same = CacheEvent {
            old: ev.new.clone(),
            new: ev.new.clone(),
        };
        assert_eq!(keys_for_event(&rule, &c, &same), [k("c2")]);
    }

    fn kubeadm_config(name: &str, cluster: &str, ns: &str) -> CachedObject {
        obj(
            serde_json::json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
            "metadata": {"name": name, "namespace": ns, "uid": name, "resourceVersion": "1",
                         "labels": {"cluster.x-k8s.io/cluster-name": cluster}}}),
        )
    }

    #[test]
    fn fan_out_mappings_use_the_primary_indexes() {
        let kc_gvk = Gvk::new("bootstrap.cluster.x-k8s.io", "v1beta2", "KubeadmConfig");
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let pc = cache(&kc_gvk);
        let labelled = Rule::new(
            &KeyMapping::LabelledWithName("cluster.x-k8s.io/cluster-name".into()),
            &pc,
        );
        for (n, c, ns) in [
            ("a", "c1", "ns"),
            ("b", "c1", "ns"),
            ("c", "c2", "ns"),
            ("d", "c1", "other"),
        ] {
            pc.apply(kubeadm_config(n, c, ns));
        }
        let cluster = obj(
            serde_json::json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "ns", "uid": "cu", "resourceVersion": "1"}}),
        );
        let c = cx(&kc_gvk, &pc, &cluster_gvk);
        assert_eq!(keys_for(&labelled, &c, &cluster), [k("a"), k("b")]);
        // same-cluster: the Cluster's own name is its cluster.
        assert_eq!(keys_for(&Rule::SameCluster, &c, &cluster), [k("a"), k("b")]);
        // A workload event of cluster ns/c2 reaches only c2's primaries.
        let ck = ObjectKey::new("ns", "c2");
        let pod = obj(serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "etcd", "namespace": "kube-system", "uid": "p", "resourceVersion": "1"}}));
        let pod_gvk = Gvk::new("", "v1", "Pod");
        let wc = MapContext {
            scope: Scope::Workload { cluster: &ck },
            ..cx(&kc_gvk, &pc, &pod_gvk)
        };
        assert_eq!(keys_for(&Rule::SameCluster, &wc, &pod), [k("c")]);
    }

    #[test]
    fn referenced_by_checks_kind_and_group_and_field_match_compares_strings() {
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let dev = Gvk::new("infrastructure.cluster.x-k8s.io", "v1beta2", "DevCluster");
        let pc = cache(&cluster_gvk);
        let rule = Rule::new(
            &KeyMapping::ReferencedBy("spec.infrastructureRef".into()),
            &pc,
        );
        let cl = |name: &str, kind: &str| {
            obj(
                serde_json::json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": "1"},
                "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": kind, "name": "infra"}}}),
            )
        };
        pc.apply(cl("c1", "DevCluster"));
        pc.apply(cl("c2", "OtherCluster"));
        let infra = obj(
            serde_json::json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
            "metadata": {"name": "infra", "namespace": "ns", "uid": "i", "resourceVersion": "1"}}),
        );
        assert_eq!(
            keys_for(&rule, &cx(&cluster_gvk, &pc, &dev), &infra),
            [k("c1")]
        );
        // The index follows updates: c1 now points elsewhere.
        pc.apply(obj(
            serde_json::json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "ns", "uid": "c1", "resourceVersion": "2"},
            "spec": {"infrastructureRef": {"kind": "DevCluster", "name": "moved"}}}),
        ));
        assert!(keys_for(&rule, &cx(&cluster_gvk, &pc, &dev), &infra).is_empty());

        let machine = Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine");
        let node = Gvk::new("", "v1", "Node");
        let mc = cache(&machine);
        let fm = Rule::new(
            &KeyMapping::FieldMatch(FieldPair {
                other: "spec.providerID".into(),
                primary: "spec.providerID".into(),
            }),
            &mc,
        );
        let m = |name: &str, pid: &str| {
            obj(
                serde_json::json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": "1",
                             "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
                "spec": {"clusterName": "c1", "providerID": pid}}),
            )
        };
        mc.apply(m("m1", "in-memory://a"));
        mc.apply(m("m2", "in-memory://b"));
        let n = obj(serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "a", "uid": "n", "resourceVersion": "1"}, "spec": {"providerID": "in-memory://a"}}));
        let ck = ObjectKey::new("ns", "c1");
        let wc = MapContext {
            scope: Scope::Workload { cluster: &ck },
            ..cx(&machine, &mc, &node)
        };
        assert_eq!(keys_for(&fm, &wc, &n), [k("m1")]);
        // Another cluster's Node with the same provider ID maps to nothing here.
        let other = ObjectKey::new("ns", "c9");
        let oc = MapContext {
            scope: Scope::Workload { cluster: &other },
            ..wc
        };
        assert!(keys_for(&fm, &oc, &n).is_empty());
        let empty = obj(serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "e", "uid": "e", "resourceVersion": "1"}, "spec": {"providerID": ""}}));
        assert!(keys_for(&fm, &wc, &empty).is_empty());
    }
}

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
//!   object reference there.
//!
//! Nothing polls: an infrastructure object turning ready is an update event, which enqueues
//! its owner here.

pub mod selector;
pub mod template;

use crate::cache::{CacheEvent, CachedObject, Gvk, KindCache, ObjectKey};
use crate::runtime::bindings::capstan::reconciler::types::{KeyMapping, PluginInfo};
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
    /// A mapping this module does not evaluate yet (fan-out, reverse and workload
    /// mappings land in the next commit).
    Unsupported,
}

impl From<&KeyMapping> for Rule {
    fn from(m: &KeyMapping) -> Self {
        match m {
            KeyMapping::ControllerOwner => Rule::ControllerOwner,
            KeyMapping::Label(l) => Rule::Label(l.clone()),
            KeyMapping::Field(p) => Rule::Field(split_path(p)),
            _ => Rule::Unsupported,
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

/// The (kind, rule) pairs a plugin's declarations subscribe to, primary first.
pub fn plan(info: &PluginInfo) -> Vec<(Gvk, Rule)> {
    let mut out = vec![(Gvk::from(&info.primary), Rule::Primary)];
    out.extend(
        info.watches
            .iter()
            // Workload watches are the cluster cache's (clustercache::WorkloadPlan).
            .filter(|w| w.target == crate::runtime::Target::Management)
            .map(|w| (Gvk::from(&w.kind), Rule::from(&w.mapping))),
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

/// The primary keys one object maps to under `rule`.
pub fn keys_for(rule: &Rule, primary: &Gvk, obj: &CachedObject) -> Vec<ObjectKey> {
    let ns = &obj.key.namespace;
    match rule {
        Rule::Unsupported => Vec::new(),
        Rule::Primary => vec![obj.key.clone()],
        Rule::ControllerOwner => obj
            .controller_owner()
            .filter(|o| o.kind == primary.kind && o.group() == primary.group)
            .map(|o| ObjectKey::new(ns.clone(), o.name.clone()))
            .into_iter()
            .collect(),
        Rule::Label(l) => obj
            .label(l)
            .filter(|v| !v.is_empty())
            .map(|v| ObjectKey::new(ns.clone(), v))
            .into_iter()
            .collect(),
        Rule::Field(path) => {
            let Ok(value) = serde_json::from_str::<Value>(&obj.json) else {
                return Vec::new();
            };
            reference_at(&value, path)
                .map(|(rns, name)| ObjectKey::new(rns.unwrap_or(ns).to_string(), name))
                .into_iter()
                .collect()
        }
    }
}

/// The keys of one event: old and new object mapped, deduplicated.
pub fn keys_for_event(rule: &Rule, primary: &Gvk, ev: &CacheEvent) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = Vec::with_capacity(2);
    for o in [&ev.old, &ev.new].into_iter().flatten() {
        for k in keys_for(rule, primary, o) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// Subscribe `sink` to `cache`'s events mapped by `rule` (labels used are indexed).
pub fn connect(
    cache: &KindCache,
    rule: Rule,
    primary: Gvk,
    sink: impl Fn(ObjectKey) + Send + Sync + 'static,
) {
    if let Rule::Label(l) = &rule {
        cache.index_label(l);
    }
    cache.subscribe(move |ev| {
        for k in keys_for_event(&rule, &primary, ev) {
            sink(k);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn each_rule_maps_to_the_right_primary() {
        let machine_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine");
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let o = machine(
            "Machine",
            true,
            "c1",
            r#"{"name":"infra","namespace":"other"}"#,
        );
        assert_eq!(keys_for(&Rule::Primary, &machine_gvk, &o), [k("m")]);
        assert_eq!(
            keys_for(&Rule::ControllerOwner, &machine_gvk, &o),
            [k("owner")]
        );
        // Owner of another kind, or not the controller: nothing.
        assert!(keys_for(&Rule::ControllerOwner, &cluster_gvk, &o).is_empty());
        let not_controller = machine("Machine", false, "c1", "null");
        assert!(keys_for(&Rule::ControllerOwner, &machine_gvk, &not_controller).is_empty());
        let label = Rule::Label("cluster.x-k8s.io/cluster-name".into());
        assert_eq!(keys_for(&label, &cluster_gvk, &o), [k("c1")]);
        assert_eq!(
            keys_for(
                &Rule::Field(split_path("spec.infrastructureRef")),
                &machine_gvk,
                &o
            ),
            [ObjectKey::new("other", "infra")]
        );
        assert_eq!(
            keys_for(
                &Rule::Field(split_path("spec.bootstrap.dataSecretName")),
                &machine_gvk,
                &o
            ),
            [k("sec")]
        );
        assert!(keys_for(&Rule::Field(split_path("spec.missing")), &machine_gvk, &o).is_empty());
    }

    #[test]
    fn an_update_that_moves_the_label_enqueues_both_primaries() {
        let cluster_gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let ev = CacheEvent {
            old: Some(Arc::new(machine("Machine", true, "c1", "null"))),
            new: Some(Arc::new(machine("Machine", true, "c2", "null"))),
        };
        let rule = Rule::Label("cluster.x-k8s.io/cluster-name".into());
        assert_eq!(keys_for_event(&rule, &cluster_gvk, &ev), [k("c1"), k("c2")]);
        let same = CacheEvent {
            old: ev.new.clone(),
            new: ev.new.clone(),
        };
        assert_eq!(keys_for_event(&rule, &cluster_gvk, &same), [k("c2")]);
    }
}

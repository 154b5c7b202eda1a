//! The shared informer cache: one watcher and one store per kind, read by every plugin.
//!
//! Each kind any plugin reads or writes gets exactly one [`KindCache`], however many plugins
//! use it. An object's JSON text is kept once ([`CachedObject::json`], `managedFields`
//! stripped) so snapshots are assembled without re-serializing. Two indexes are maintained
//! on every event: by owner UID and by the value of indexed labels (always
//! `cluster.x-k8s.io/cluster-name`, plus any label a plugin maps or selects by), per
//! namespace. Three more indexes serve the fan-out and reverse mappings and selectors of
//! the contract: by namespace (for `all`, `matching` and `selector-at`), by Cluster API
//! cluster (`same-cluster`; see [`CachedObject::cluster`]) and, for each dotted field path a
//! plugin maps or selects by (`referenced-by`, `field-match`), by the string or reference
//! name at that path ([`KindCache::index_field`]). Maintaining a field index costs one JSON
//! parse of the object per event of that kind (only kinds with a field index pay it); a
//! lookup costs O(matches). A kind is *synced* once its initial list has been stored; the cache is ready
//! when every kind is synced. Listeners registered with [`KindCache::subscribe`] see every
//! change with the old and new object, after the store has been updated.

mod object;
mod watcher;

pub use object::{
    CLUSTER_NAME_LABEL, CachedObject, ObjectError, ObjectKey, OwnerRef, PAUSED_ANNOTATION,
};
pub use watcher::run_watcher;

use crate::runtime::bindings::capstan::reconciler::types::Gvk as WitGvk;
use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// A group/version/kind usable as a map key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    /// API group; empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl Gvk {
    /// A group/version/kind.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Parse `apiVersion` + `kind`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Self::new(group, version, kind)
    }
}

impl From<&WitGvk> for Gvk {
    fn from(g: &WitGvk) -> Self {
        Self::new(&g.group, &g.version, &g.kind)
    }
}

impl fmt::Display for Gvk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

/// One change seen by a kind's cache: `old` absent for an add, `new` absent for a delete.
#[derive(Clone, Debug)]
pub struct CacheEvent {
    /// The object before the change.
    pub old: Option<Arc<CachedObject>>,
    /// The object after the change.
    pub new: Option<Arc<CachedObject>>,
}

type Listener = Arc<dyn Fn(&CacheEvent) + Send + Sync>;

/// What a field index found at its path in one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue {
    /// The index (from [`KindCache::index_field`]).
    pub index: usize,
    /// The namespace it points into: the reference's `namespace`, else the object's.
    pub namespace: String,
    /// The string, or the reference's `name`.
    pub value: String,
    /// Whether the value came from an object reference (`{name, ...}`), not a string.
    pub is_ref: bool,
    /// The reference's `kind`, if given.
    pub kind: Option<String>,
    /// The reference's group (`apiGroup`, or the group of `apiVersion`), if given.
    pub group: Option<String>,
}

/// The value at a dotted path: a non-empty string, or an object reference with a name.
pub fn field_value(v: &serde_json::Value, path: &[String], own_ns: &str) -> Option<FieldValue> {
    use serde_json::Value;
    let at = path.iter().try_fold(v, |v, p| v.get(p))?;
    match at {
        Value::String(s) if !s.is_empty() => Some(FieldValue {
            index: 0,
            namespace: own_ns.to_string(),
            value: s.clone(),
            is_ref: false,
            kind: None,
            group: None,
        }),
        Value::Object(m) => {
            let name = m.get("name")?.as_str().filter(|n| !n.is_empty())?;
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            let group = s("apiGroup").or_else(|| {
                s("apiVersion").map(|a| a.rsplit_once('/').map_or(String::new(), |(g, _)| g.into()))
            });
            Some(FieldValue {
                index: 0,
                namespace: s("namespace")
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| own_ns.to_string()),
                value: name.to_string(),
                is_ref: true,
                kind: s("kind"),
                group,
            })
        }
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Store {
    objects: HashMap<ObjectKey, Arc<CachedObject>>,
    by_owner: HashMap<String, BTreeSet<ObjectKey>>,
    /// (label key, namespace, value) -> objects.
    by_label: HashMap<(String, String, String), BTreeSet<ObjectKey>>,
    /// namespace -> objects.
    by_namespace: HashMap<String, BTreeSet<ObjectKey>>,
    /// (namespace, cluster) -> objects.
    by_cluster: HashMap<(String, String), BTreeSet<ObjectKey>>,
    /// (field index, namespace, value) -> objects.
    by_field: HashMap<(usize, String, String), BTreeSet<ObjectKey>>,
    /// What each object holds at the indexed fields (to unindex and to filter).
    fields_of: HashMap<ObjectKey, Vec<FieldValue>>,
}

fn set_remove<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, BTreeSet<ObjectKey>>,
    k: &K,
    key: &ObjectKey,
) {
    if let Some(set) = map.get_mut(k) {
        set.remove(key);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl Store {
    fn unindex_fields(&mut self, key: &ObjectKey) {
        for f in self.fields_of.remove(key).unwrap_or_default() {
            set_remove(&mut self.by_field, &(f.index, f.namespace, f.value), key);
        }
    }

    fn index_fields(&mut self, o: &CachedObject, paths: &[Vec<String>]) {
        if paths.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&o.json) else {
            return;
        };
        let mut found = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if let Some(mut f) = field_value(&v, p, &o.key.namespace) {
                f.index = i;
                self.by_field
                    .entry((i, f.namespace.clone(), f.value.clone()))
                    .or_default()
                    .insert(o.key.clone());
                found.push(f);
            }
        }
        if !found.is_empty() {
            self.fields_of.insert(o.key.clone(), found);
        }
    }

    fn unindex(&mut self, o: &CachedObject, labels: &HashSet<String>) {
        set_remove(&mut self.by_namespace, &o.key.namespace, &o.key);
        if let Some(c) = &o.cluster {
            set_remove(
                &mut self.by_cluster,
                &(o.key.namespace.clone(), c.clone()),
                &o.key,
            );
        }
        self.unindex_fields(&o.key);
        for owner in &o.owners {
            if let Some(set) = self.by_owner.get_mut(&owner.uid) {
                set.remove(&o.key);
                if set.is_empty() {
                    self.by_owner.remove(&owner.uid);
                }
            }
        }
        for (k, v) in &o.labels {
            if labels.contains(k) {
                let ik = (k.clone(), o.key.namespace.clone(), v.clone());
                if let Some(set) = self.by_label.get_mut(&ik) {
                    set.remove(&o.key);
                    if set.is_empty() {
                        self.by_label.remove(&ik);
                    }
                }
            }
        }
    }

    fn index(&mut self, o: &CachedObject, labels: &HashSet<String>, paths: &[Vec<String>]) {
        self.by_namespace
            .entry(o.key.namespace.clone())
            .or_default()
            .insert(o.key.clone());
        if let Some(c) = &o.cluster {
            self.by_cluster
                .entry((o.key.namespace.clone(), c.clone()))
                .or_default()
                .insert(o.key.clone());
        }
        self.index_fields(o, paths);
        for owner in &o.owners {
            self.by_owner
                .entry(owner.uid.clone())
                .or_default()
                .insert(o.key.clone());
        }
        for (k, v) in &o.labels {
            if labels.contains(k) {
                self.by_label
                    .entry((k.clone(), o.key.namespace.clone(), v.clone()))
                    .or_default()
                    .insert(o.key.clone());
            }
        }
    }
}

/// The store, indexes and listeners of one kind.
pub struct KindCache {
    gvk: Gvk,
    plural: String,
    namespaced: bool,
    indexed_labels: RwLock<HashSet<String>>,
    indexed_fields: RwLock<Vec<Vec<String>>>,
    store: RwLock<Store>,
    listeners: RwLock<Vec<Listener>>,
    synced: AtomicBool,
    synced_tx: watch::Sender<bool>,
    objects_gauge: Gauge,
}

impl fmt::Debug for KindCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindCache")
            .field("gvk", &self.gvk)
            .field("objects", &self.len())
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

impl KindCache {
    /// An empty, unsynced cache of `gvk` (resource name `plural`).
    pub fn new(gvk: Gvk, plural: &str, namespaced: bool, objects_gauge: Gauge) -> Self {
        let mut labels = HashSet::new();
        labels.insert(CLUSTER_NAME_LABEL.to_string());
        Self {
            gvk,
            plural: plural.to_string(),
            namespaced,
            indexed_labels: RwLock::new(labels),
            indexed_fields: RwLock::new(Vec::new()),
            store: RwLock::new(Store::default()),
            listeners: RwLock::new(Vec::new()),
            synced: AtomicBool::new(false),
            synced_tx: watch::channel(false).0,
            objects_gauge,
        }
    }

    /// The kind.
    pub fn gvk(&self) -> &Gvk {
        &self.gvk
    }

    /// The resource (plural) name.
    pub fn plural(&self) -> &str {
        &self.plural
    }

    /// Whether objects of this kind live in namespaces.
    pub fn namespaced(&self) -> bool {
        self.namespaced
    }

    /// Index label `key` too (call before the watcher starts; re-indexes if not).
    pub fn index_label(&self, key: &str) {
        if self.indexed_labels.read().contains(key) {
            return;
        }
        let mut labels = self.indexed_labels.write();
        if labels.insert(key.to_string()) {
            let fields = self.indexed_fields.read();
            let mut store = self.store.write();
            let objects: Vec<_> = store.objects.values().cloned().collect();
            for o in objects {
                store.unindex(&o, &labels);
                store.index(&o, &labels, &fields);
            }
        }
    }

    /// Index the string or reference name at dotted `path` (once per path); returns the
    /// index to look up with [`KindCache::with_field`]. Re-indexes what is held.
    pub fn index_field(&self, path: &[String]) -> usize {
        if let Some(i) = self.indexed_fields.read().iter().position(|p| p == path) {
            return i;
        }
        let mut fields = self.indexed_fields.write();
        if let Some(i) = fields.iter().position(|p| p == path) {
            return i;
        }
        fields.push(path.to_vec());
        let i = fields.len() - 1;
        let mut store = self.store.write();
        let objects: Vec<_> = store.objects.values().cloned().collect();
        for o in objects {
            store.unindex_fields(&o.key);
            store.index_fields(&o, &fields);
        }
        i
    }

    /// Objects whose indexed field `index` holds `value` pointing into `namespace` and
    /// passes `keep`, ordered by key. O(matches).
    pub fn with_field(
        &self,
        index: usize,
        namespace: &str,
        value: &str,
        keep: impl Fn(&FieldValue) -> bool,
    ) -> Vec<Arc<CachedObject>> {
        let store = self.store.read();
        let ik = (index, namespace.to_string(), value.to_string());
        store
            .by_field
            .get(&ik)
            .into_iter()
            .flatten()
            .filter(|k| {
                store.fields_of.get(*k).is_some_and(|fs| {
                    fs.iter()
                        .any(|f| f.index == index && f.value == value && keep(f))
                })
            })
            .filter_map(|k| store.objects.get(k))
            .cloned()
            .collect()
    }

    /// Objects in `namespace` (every object when `None`), ordered by key. O(result).
    pub fn in_namespace(&self, namespace: Option<&str>) -> Vec<Arc<CachedObject>> {
        let store = self.store.read();
        match namespace {
            Some(ns) => store
                .by_namespace
                .get(ns)
                .into_iter()
                .flatten()
                .filter_map(|k| store.objects.get(k))
                .cloned()
                .collect(),
            None => {
                let mut out: Vec<_> = store.objects.values().cloned().collect();
                out.sort_by(|a, b| a.key.cmp(&b.key));
                out
            }
        }
    }

    /// Objects of Cluster API cluster `cluster` in `namespace` ([`CachedObject::cluster`]),
    /// ordered by key. O(result).
    pub fn in_cluster(&self, namespace: &str, cluster: &str) -> Vec<Arc<CachedObject>> {
        let store = self.store.read();
        store
            .by_cluster
            .get(&(namespace.to_string(), cluster.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|k| store.objects.get(k))
            .cloned()
            .collect()
    }

    /// The namespaces holding objects of this kind.
    pub fn namespaces(&self) -> Vec<String> {
        self.store.read().by_namespace.keys().cloned().collect()
    }

    /// Whether label `key` is indexed.
    pub fn label_indexed(&self, key: &str) -> bool {
        self.indexed_labels.read().contains(key)
    }

    /// Call `f` on every change from now on.
    pub fn subscribe(&self, f: impl Fn(&CacheEvent) + Send + Sync + 'static) {
        self.listeners.write().push(Arc::new(f));
    }

    fn notify(&self, ev: &CacheEvent) {
        let listeners = self.listeners.read().clone();
        for l in listeners.iter() {
            l(ev);
        }
    }

    /// Store an added or modified object and notify listeners.
    pub fn apply(&self, obj: CachedObject) {
        let new = Arc::new(obj);
        let old = {
            let labels = self.indexed_labels.read();
            let fields = self.indexed_fields.read();
            let mut store = self.store.write();
            let old = store.objects.insert(new.key.clone(), Arc::clone(&new));
            if let Some(old) = &old {
                store.unindex(old, &labels);
            }
            store.index(&new, &labels, &fields);
            self.objects_gauge.set(store.objects.len() as i64);
            old
        };
        self.notify(&CacheEvent {
            old,
            new: Some(new),
        });
    }

    /// Remove a deleted object and notify listeners.
    pub fn delete(&self, key: &ObjectKey) {
        let old = {
            let labels = self.indexed_labels.read();
            let mut store = self.store.write();
            let old = store.objects.remove(key);
            if let Some(old) = &old {
                store.unindex(old, &labels);
            }
            self.objects_gauge.set(store.objects.len() as i64);
            old
        };
        if let Some(old) = old {
            self.notify(&CacheEvent {
                old: Some(old),
                new: None,
            });
        }
    }

    /// Replace the whole content with a (re)list, mark synced, and notify listeners of every
    /// object that was added, changed (resourceVersion differs) or deleted.
    pub fn replace(&self, objects: Vec<CachedObject>) {
        let events = {
            let labels = self.indexed_labels.read();
            let fields = self.indexed_fields.read();
            let mut store = self.store.write();
            let mut old = std::mem::take(&mut *store);
            let mut events = Vec::new();
            for o in objects {
                let new = Arc::new(o);
                let prev = old.objects.remove(&new.key);
                store.index(&new, &labels, &fields);
                store.objects.insert(new.key.clone(), Arc::clone(&new));
                if prev
                    .as_ref()
                    .is_none_or(|p| p.resource_version != new.resource_version)
                {
                    events.push(CacheEvent {
                        old: prev,
                        new: Some(new),
                    });
                }
            }
            events.extend(old.objects.drain().map(|(_, o)| CacheEvent {
                old: Some(o),
                new: None,
            }));
            self.objects_gauge.set(store.objects.len() as i64);
            events
        };
        self.synced.store(true, Ordering::Release);
        self.synced_tx.send_replace(true);
        for ev in &events {
            self.notify(ev);
        }
    }

    /// Whether the initial list has been stored.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Wait until the initial list has been stored.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<CachedObject>> {
        self.store.read().objects.get(key).cloned()
    }

    /// Objects with an owner reference to `uid` (`controller_only`: the controller reference).
    pub fn owned_by(&self, uid: &str, controller_only: bool) -> Vec<Arc<CachedObject>> {
        let store = self.store.read();
        store
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| store.objects.get(k))
            .filter(|o| !controller_only || o.controller_owner().is_some_and(|c| c.uid == uid))
            .cloned()
            .collect()
    }

    /// Objects in `namespace` whose label `key` equals `value`, ordered by name.
    pub fn with_label(&self, key: &str, namespace: &str, value: &str) -> Vec<Arc<CachedObject>> {
        let indexed = self.indexed_labels.read().contains(key);
        let store = self.store.read();
        if indexed {
            let ik = (key.to_string(), namespace.to_string(), value.to_string());
            return store
                .by_label
                .get(&ik)
                .into_iter()
                .flatten()
                .filter_map(|k| store.objects.get(k))
                .cloned()
                .collect();
        }
        let mut out: Vec<_> = store
            .objects
            .values()
            .filter(|o| o.key.namespace == namespace && o.label(key) == Some(value))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Every key held.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.store.read().objects.keys().cloned().collect()
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.store.read().objects.len()
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of JSON text held, and approximate bytes of the whole entries.
    pub fn memory(&self) -> (usize, usize) {
        let store = self.store.read();
        let json = store.objects.values().map(|o| o.json.len()).sum();
        let per_entry = std::mem::size_of::<ObjectKey>() + 2 * std::mem::size_of::<usize>();
        let mut total: usize = store
            .objects
            .iter()
            .map(|(k, o)| o.approx_bytes() + per_entry + k.namespace.capacity() + k.name.capacity())
            .sum();
        total += store
            .by_owner
            .iter()
            .map(|(k, s)| {
                k.capacity()
                    + 48
                    + s.len() * (std::mem::size_of::<ObjectKey>() + 16)
                    + s.iter()
                        .map(|k| k.name.capacity() + k.namespace.capacity())
                        .sum::<usize>()
            })
            .sum::<usize>();
        total += store
            .by_label
            .iter()
            .map(|((a, b, c), s)| {
                a.capacity()
                    + b.capacity()
                    + c.capacity()
                    + 96
                    + s.len() * (std::mem::size_of::<ObjectKey>() + 16)
                    + s.iter()
                        .map(|k| k.name.capacity() + k.namespace.capacity())
                        .sum::<usize>()
            })
            .sum::<usize>();
        (json, total)
    }
}

/// All kind caches of one manager.
#[derive(Debug, Default)]
pub struct Cache {
    kinds: RwLock<HashMap<Gvk, Arc<KindCache>>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache of `gvk`, created on first use; shared by everyone who asks.
    pub fn kind_or_insert(&self, gvk: &Gvk, make: impl FnOnce() -> KindCache) -> Arc<KindCache> {
        if let Some(k) = self.kinds.read().get(gvk) {
            return Arc::clone(k);
        }
        Arc::clone(
            self.kinds
                .write()
                .entry(gvk.clone())
                .or_insert_with(|| Arc::new(make())),
        )
    }

    /// The cache of `gvk`, if any plugin uses it.
    pub fn kind(&self, gvk: &Gvk) -> Option<Arc<KindCache>> {
        self.kinds.read().get(gvk).cloned()
    }

    /// The cache of a kind in `group` of any version.
    pub fn kind_any_version(&self, group: &str, kind: &str) -> Option<Arc<KindCache>> {
        self.kinds
            .read()
            .iter()
            .find(|(g, _)| g.group == group && g.kind == kind)
            .map(|(_, k)| Arc::clone(k))
    }

    /// Every kind cache.
    pub fn kinds(&self) -> Vec<Arc<KindCache>> {
        self.kinds.read().values().cloned().collect()
    }

    /// Whether every kind has stored its initial list.
    pub fn is_ready(&self) -> bool {
        self.kinds.read().values().all(|k| k.is_synced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn obj(name: &str, rv: &str, cluster: &str, owner: Option<(&str, bool)>) -> CachedObject {
        let owners = owner
            .map(|(uid, c)| {
                format!(
                    r#","ownerReferences":[{{"apiVersion":"cluster.x-k8s.io/v1beta2","kind":"MachineSet","name":"o-{uid}","uid":"{uid}","controller":{c}}}]"#
                )
            })
            .unwrap_or_default();
        CachedObject::from_json(&format!(
            r#"{{"apiVersion":"cluster.x-k8s.io/v1beta2","kind":"Machine","metadata":{{"name":"{name}","namespace":"ns","uid":"uid-{name}","resourceVersion":"{rv}","labels":{{"cluster.x-k8s.io/cluster-name":"{cluster}","role":"x"}}{owners}}}}}"#
        ))
        .unwrap()
    }

    fn kc() -> KindCache {
        KindCache::new(
            Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine"),
            "machines",
            true,
            Gauge::default(),
        )
    }

    fn names(v: Vec<Arc<CachedObject>>) -> Vec<String> {
        v.into_iter().map(|o| o.key.name.clone()).collect()
    }

    #[test]
    fn indexes_follow_every_event() {
        let c = kc();
        c.apply(obj("a", "1", "c1", Some(("o1", true))));
        c.apply(obj("b", "1", "c1", Some(("o1", false))));
        c.apply(obj("c", "1", "c2", Some(("o2", true))));
        assert_eq!(names(c.owned_by("o1", false)), ["a", "b"]);
        assert_eq!(names(c.owned_by("o1", true)), ["a"]);
        assert_eq!(
            names(c.with_label(CLUSTER_NAME_LABEL, "ns", "c1")),
            ["a", "b"]
        );
        assert!(c.with_label(CLUSTER_NAME_LABEL, "other", "c1").is_empty());
        // Update moves a between clusters and owners.
        c.apply(obj("a", "2", "c2", Some(("o2", true))));
        assert_eq!(names(c.owned_by("o1", false)), ["b"]);
        assert_eq!(names(c.owned_by("o2", true)), ["a", "c"]);
        assert_eq!(
            names(c.with_label(CLUSTER_NAME_LABEL, "ns", "c2")),
            ["a", "c"]
        );
        c.delete(&ObjectKey::new("ns", "c"));
        assert_eq!(names(c.owned_by("o2", true)), ["a"]);
        assert_eq!(names(c.with_label(CLUSTER_NAME_LABEL, "ns", "c2")), ["a"]);
        // Unindexed labels fall back to a scan; indexing later re-indexes.
        assert_eq!(names(c.with_label("role", "ns", "x")), ["a", "b"]);
        c.index_label("role");
        assert_eq!(names(c.with_label("role", "ns", "x")), ["a", "b"]);
        c.delete(&ObjectKey::new("ns", "b"));
        assert_eq!(names(c.with_label("role", "ns", "x")), ["a"]);
        assert!(c.owned_by("o1", false).is_empty());
    }

    #[test]
    fn replace_syncs_and_reports_only_real_changes() {
        let c = kc();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        c.subscribe(move |ev| {
            let name = |o: &Option<Arc<CachedObject>>| o.as_ref().map(|o| o.key.name.clone());
            s.lock().unwrap().push((name(&ev.old), name(&ev.new)));
        });
        c.apply(obj("a", "1", "c1", None));
        c.apply(obj("b", "1", "c1", None));
        assert!(!c.is_synced());
        seen.lock().unwrap().clear();
        c.replace(vec![obj("a", "1", "c1", None), obj("c", "1", "c1", None)]);
        assert!(c.is_synced());
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(
            got,
            [(None, Some("c".to_string())), (Some("b".to_string()), None)]
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            names(c.with_label(CLUSTER_NAME_LABEL, "ns", "c1")),
            ["a", "c"]
        );
    }

    #[test]
    fn memory_is_close_to_the_json_held() {
        let c = kc();
        let pad = "x".repeat(4000);
        for i in 0..100 {
            let o = CachedObject::from_json(&format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm{i}","namespace":"ns","uid":"u{i}","resourceVersion":"1","labels":{{"cluster.x-k8s.io/cluster-name":"c"}}}},"data":{{"k":"{pad}"}}}}"#
            ))
            .unwrap();
            c.apply(o);
        }
        let (json, total) = c.memory();
        assert!(json >= 400_000);
        assert!((total as f64) < 1.5 * json as f64, "{total} vs {json}");
    }
}

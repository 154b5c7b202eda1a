//! The object store: per-resource ordered maps of serialized objects, one cluster-wide
//! resourceVersion counter, a bounded event history and per-resource watch fan-out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::registry::Registry;

/// A stored object: its JSON bytes (with this resourceVersion inside) plus the fields lists
/// and watches filter on.
#[derive(Debug)]
pub struct Obj {
    /// resourceVersion of this revision.
    pub rv: u64,
    /// The serialized object as served.
    pub json: Bytes,
    /// Labels as `key\0value\0...` in one allocation, for label selectors without parsing.
    pub labels: Box<str>,
}

impl Obj {
    /// The value of one label.
    pub fn label(&self, k: &str) -> Option<&str> {
        let mut parts = self.labels.split('\0');
        while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
            if key == k {
                return Some(value);
            }
        }
        None
    }

    /// Parses the stored JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, kept in the history window and sent to watchers.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Storage table (`plural.group`).
    pub table: Arc<str>,
    /// `namespace/name` key.
    pub key: String,
    /// The object after the change (for DELETED: its last state with the deletion's rv).
    pub obj: Arc<Obj>,
    /// The previous revision (MODIFIED only), to turn selector moves into ADDED/DELETED.
    pub prev: Option<Arc<Obj>>,
}

impl Event {
    /// Namespace part of the key.
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
    }
}

/// Replayed events plus the receiver of later ones.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// Capacity of each resource's broadcast channel; a slower watcher recovers from history.
const FANOUT_CAPACITY: usize = 4096;

/// Builds the `namespace/name` key (cluster-scoped objects have an empty namespace).
pub fn key(ns: &str, name: &str) -> String {
    let mut k = String::with_capacity(ns.len() + name.len() + 1);
    k.push_str(ns);
    k.push('/');
    k.push_str(name);
    k
}

/// Everything one API server holds, behind one lock.
#[derive(Debug)]
pub struct State {
    /// Served resource types.
    pub registry: Registry,
    /// Last resourceVersion handed out.
    pub rv: u64,
    /// Objects by storage table then key.
    pub tables: HashMap<Arc<str>, BTreeMap<String, Arc<Obj>>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Events with rv <= this are gone: watches from older versions get 410.
    pub compacted: u64,
    /// Owner uid -> dependents (table, key).
    pub dependents: HashMap<String, BTreeSet<(Arc<str>, String)>>,
    senders: HashMap<Arc<str>, broadcast::Sender<Arc<Event>>>,
    /// Next Service cluster IP offset.
    pub next_service_ip: u32,
    /// Total bytes of stored JSON (for the memory metric).
    pub json_bytes: usize,
    /// Capacity of each resource's broadcast channel (preallocated when first watched).
    pub fanout_capacity: usize,
}

impl State {
    /// An empty store with built-in types.
    pub fn new(history_limit: usize) -> Self {
        Self {
            registry: Registry::builtin(),
            rv: 0,
            tables: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            dependents: HashMap::new(),
            senders: HashMap::new(),
            next_service_ip: 1,
            json_bytes: 0,
            fanout_capacity: FANOUT_CAPACITY,
        }
    }

    fn table_arc(&mut self, table: &str) -> Arc<str> {
        match self.tables.get_key_value(table) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(table);
                self.tables.insert(k.clone(), BTreeMap::new());
                k
            }
        }
    }

    /// The current object under a key.
    pub fn get(&self, table: &str, key: &str) -> Option<&Arc<Obj>> {
        self.tables.get(table)?.get(key)
    }

    /// All objects of a table, optionally within one namespace, from `start` (inclusive).
    pub fn range<'a>(
        &'a self,
        table: &str,
        ns: Option<&str>,
        start: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a String, &'a Arc<Obj>)> + 'a> {
        let Some(t) = self.tables.get(table) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            Some(ns) => {
                let lo = format!("{ns}/");
                let hi = format!("{ns}0"); // '0' sorts right after '/'
                let lo = match start {
                    Some(s) if *s > *lo.as_str() => s.to_string(),
                    _ => lo,
                };
                if lo >= hi {
                    return Box::new(std::iter::empty());
                }
                Box::new(t.range(lo..hi))
            }
            None => match start {
                Some(s) => Box::new(t.range(s.to_string()..)),
                None => Box::new(t.iter()),
            },
        }
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.tables.values().map(BTreeMap::len).sum()
    }

    /// Writes `obj` (setting metadata.resourceVersion) under `key` and records the event.
    pub fn put(&mut self, table: &str, key: &str, mut obj: Value, kind: EventType) -> Arc<Obj> {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let stored = Arc::new(make_obj(rv, &obj));
        let owners = owner_uids(&obj);
        let table = self.table_arc(table);
        let old = self
            .tables
            .get_mut(&table)
            .and_then(|t| t.insert(key.to_string(), stored.clone()));
        if let Some(old) = &old {
            self.json_bytes -= old.json.len();
            let old_owners = owner_uids(&old.value());
            self.unindex(&table, key, &old_owners);
        }
        self.json_bytes += stored.json.len();
        self.index(&table, key, &owners);
        self.record(Event {
            rv,
            kind,
            table,
            key: key.to_string(),
            obj: stored.clone(),
            prev: old,
        });
        stored
    }

    /// Removes the object under `key`, recording a DELETED event with its final state.
    pub fn remove(&mut self, table: &str, key: &str, mut last: Value) -> Option<Arc<Obj>> {
        let table = self.table_arc(table);
        let old = self.tables.get_mut(&table)?.remove(key)?;
        self.json_bytes -= old.json.len();
        self.unindex(&table, key, &owner_uids(&last));
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        let stored = Arc::new(make_obj(rv, &last));
        self.record(Event {
            rv,
            kind: EventType::Deleted,
            table,
            key: key.to_string(),
            obj: stored.clone(),
            prev: None,
        });
        Some(stored)
    }

    fn index(&mut self, table: &Arc<str>, key: &str, owners: &[String]) {
        for o in owners {
            self.dependents
                .entry(o.clone())
                .or_default()
                .insert((table.clone(), key.to_string()));
        }
    }

    fn unindex(&mut self, table: &Arc<str>, key: &str, owners: &[String]) {
        for o in owners {
            if let Some(set) = self.dependents.get_mut(o) {
                set.remove(&(table.clone(), key.to_string()));
                if set.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        if let Some(tx) = self.senders.get(&ev.table) {
            // No receivers is fine: nobody watches this resource.
            let _ = tx.send(ev.clone());
        }
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// Drops all history: every watch from an older resourceVersion now gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Events of `table` after `rv` plus a receiver for later ones, atomically.
    /// `None` when `rv` is older than the history window.
    pub fn subscribe(&mut self, table: &str, rv: u64) -> Option<Subscription> {
        if rv < self.compacted {
            return None;
        }
        let table = self.table_arc(table);
        let capacity = self.fanout_capacity.max(1);
        let rx = self
            .senders
            .entry(table.clone())
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        let start = self.history.partition_point(|e| e.rv <= rv);
        let replay = self
            .history
            .range(start..)
            .filter(|e| e.table == table)
            .cloned()
            .collect();
        Some((replay, rx))
    }

    /// Drops a table (its CRD is gone).
    pub fn drop_table(&mut self, table: &str) {
        if let Some(t) = self.tables.remove(table) {
            for o in t.values() {
                self.json_bytes -= o.json.len();
            }
        }
    }
}

fn make_obj(rv: u64, obj: &Value) -> Obj {
    // Exact-size buffer: to_vec grows by doubling, which would waste up to half the bytes.
    let json = Bytes::from(
        serde_json::to_vec(obj)
            .unwrap_or_default()
            .into_boxed_slice(),
    );
    let mut labels = String::new();
    if let Some(m) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in m {
            labels.push_str(k);
            labels.push('\0');
            labels.push_str(v.as_str().unwrap_or_default());
            labels.push('\0');
        }
    }
    Obj {
        rv,
        json,
        labels: labels.into_boxed_str(),
    }
}

/// Owner uids in `metadata.ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

//! The workload side of one plugin's controller: workload relations in snapshots, workload watches to keys, workload writes.
//!
//! A [`WorkloadPlan`] is built from a plugin's `describe()` when anything in it targets
//! the workload cluster. For each reconcile the controller asks it for the snapshot's
//! `workload` connection state and the objects of every workload relation (read from the
//! informers of the primary's cluster connection; unsynced while disconnected or
//! unhealthy), and hands it the outcome's `workload-*` entries, which are written through
//! that connection's write path with the management write rules (create when absent, one
//! merge patch of metadata+spec and one of status, nothing when equal, permissions
//! checked first). A workload write while the cluster is not connected fails the
//! reconcile as transient. Events of workload informers, and connection state changes,
//! enqueue the primaries of the cluster they come from ([`WorkloadPlan::subscribe`]).

use super::{ClusterCache, Connection, ConnectionState, cluster_of, primaries_of};
use crate::cache::{CachedObject, Gvk, KindCache, ObjectKey};
use crate::metrics::ControllerMetrics;
use crate::runtime::bindings::capstan::reconciler::types::{
    Connection as WitConnection, KeyMapping, Outcome, PluginInfo, RelatedObjects, RelationSelector,
    Target,
};
use crate::watch::split_path;
use crate::watch::{reference_at, selector::LabelSelector, template::NameTemplate};
use crate::writer::{Grants, WriteError, WriteReport, Writer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a workload write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The primary names no cluster, but the outcome has workload entries.
    #[error(
        "plugin {plugin}: {primary} names no cluster, so it has no workload cluster to write to"
    )]
    NoCluster {
        /// Plugin name.
        plugin: String,
        /// The primary.
        primary: ObjectKey,
    },
    /// The workload cluster is not connected (or unhealthy): retry later.
    #[error("workload cluster {cluster} is not connected")]
    NotConnected {
        /// The Cluster.
        cluster: ObjectKey,
    },
    /// The write path failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A relation selector of a workload relation, parsed once.
#[derive(Debug)]
enum Sel {
    Owned,
    Label(String),
    FieldRef(Vec<String>),
    ControllerOwner,
    ByLabelValue(String),
    All,
    Named(NameTemplate),
    Matching(LabelSelector),
    SelectorAt(Vec<String>),
    FieldMatch(Vec<String>, Vec<String>),
}

#[derive(Debug)]
struct Rel {
    /// Position among the plugin's relations.
    index: usize,
    name: String,
    kind: Gvk,
    sel: Sel,
    namespace: Option<String>,
}

/// How a workload event maps to primaries of its cluster.
#[derive(Debug, Clone)]
enum Map {
    ControllerOwner,
    Label(String),
    Field(Vec<String>),
    LabelledWithName(String),
    ReferencedBy(Vec<String>),
    FieldMatch(Vec<String>, Vec<String>),
    SameCluster,
}

/// The workload declarations of one plugin (see the module docs).
#[derive(Debug)]
pub struct WorkloadPlan {
    plugin: String,
    primary: Gvk,
    relations: Vec<Rel>,
    watches: Vec<(Gvk, Map)>,
    grants: Grants,
    kinds: BTreeSet<Gvk>,
}

fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, p| v.get(p))
}

fn str_at(v: &Value, path: &[String]) -> Option<String> {
    match at(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse(o: &CachedObject) -> Value {
    serde_json::from_str(&o.json).unwrap_or(Value::Null)
}

impl WorkloadPlan {
    /// The plan of `info`; `None` when nothing targets the workload cluster. Errors name the
    /// relation whose selector does not parse.
    pub fn new(info: &PluginInfo) -> Result<Option<Self>, String> {
        let mut kinds = BTreeSet::new();
        let mut relations = Vec::new();
        for (index, r) in info.relations.iter().enumerate() {
            if r.target != Target::Workload {
                continue;
            }
            let bad = |e: String| format!("relation {}: {e}", r.name);
            let sel = match &r.selector {
                RelationSelector::Owned => Sel::Owned,
                RelationSelector::Label(l) => Sel::Label(l.clone()),
                RelationSelector::FieldRef(p) => Sel::FieldRef(split_path(p)),
                RelationSelector::ControllerOwner => Sel::ControllerOwner,
                RelationSelector::ByLabelValue(l) => Sel::ByLabelValue(l.clone()),
                RelationSelector::All => Sel::All,
                RelationSelector::Named(t) => {
                    Sel::Named(NameTemplate::parse(t).map_err(|e| bad(e.to_string()))?)
                }
                RelationSelector::Matching(s) => {
                    Sel::Matching(LabelSelector::parse(s).map_err(|e| bad(e.to_string()))?)
                }
                RelationSelector::SelectorAt(p) => Sel::SelectorAt(split_path(p)),
                RelationSelector::FieldMatch(fp) => {
                    Sel::FieldMatch(split_path(&fp.other), split_path(&fp.primary))
                }
            };
            let kind = Gvk::from(&r.kind);
            kinds.insert(kind.clone());
            relations.push(Rel {
                index,
                name: r.name.clone(),
                kind,
                sel,
                namespace: r.namespace.clone().filter(|n| !n.is_empty()),
            });
        }
        let mut watches = Vec::new();
        for w in info.watches.iter().filter(|w| w.target == Target::Workload) {
            let map = match &w.mapping {
                KeyMapping::ControllerOwner => Map::ControllerOwner,
                KeyMapping::Label(l) => Map::Label(l.clone()),
                KeyMapping::Field(p) => Map::Field(split_path(p)),
                KeyMapping::LabelledWithName(l) => Map::LabelledWithName(l.clone()),
                KeyMapping::ReferencedBy(p) => Map::ReferencedBy(split_path(p)),
                KeyMapping::FieldMatch(fp) => {
                    Map::FieldMatch(split_path(&fp.other), split_path(&fp.primary))
                }
                KeyMapping::SameCluster => Map::SameCluster,
            };
            let kind = Gvk::from(&w.kind);
            kinds.insert(kind.clone());
            watches.push((kind, map));
        }
        for p in info
            .permissions
            .iter()
            .filter(|p| p.target == Target::Workload)
        {
            kinds.insert(Gvk::from(&p.kind));
        }
        if kinds.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            plugin: info.name.clone(),
            primary: Gvk::from(&info.primary),
            relations,
            watches,
            grants: Grants::for_target(&info.permissions, Target::Workload),
            kinds,
        }))
    }

    /// Every workload kind the plugin reads or writes (the cluster cache's informers).
    pub fn kinds(&self) -> impl Iterator<Item = &Gvk> {
        self.kinds.iter()
    }

    /// The connection of `primary`'s cluster and its WIT state.
    pub fn connection(
        &self,
        cc: &ClusterCache,
        primary: &CachedObject,
    ) -> (WitConnection, Option<Arc<Connection>>) {
        let Some(cluster) = cluster_of(&self.primary, primary) else {
            return (WitConnection::NotApplicable, None);
        };
        match cc.connection(&cluster) {
            None => (WitConnection::Disconnected, None),
            Some(c) => {
                let state = match c.state() {
                    ConnectionState::Connected => WitConnection::Connected,
                    ConnectionState::Unhealthy => WitConnection::Unhealthy,
                    ConnectionState::Disconnected => WitConnection::Disconnected,
                };
                (state, Some(c))
            }
        }
    }

    /// The workload relations of a snapshot: (position among the plugin's relations,
    /// objects). Without a healthy connection every relation is empty and unsynced.
    pub fn related(
        &self,
        conn: Option<&Connection>,
        primary: &CachedObject,
    ) -> Vec<(usize, RelatedObjects)> {
        let pv = if self.relations.iter().any(|r| {
            matches!(
                r.sel,
                Sel::FieldRef(_) | Sel::SelectorAt(_) | Sel::FieldMatch(..) | Sel::Named(_)
            )
        }) {
            parse(primary)
        } else {
            Value::Null
        };
        self.relations
            .iter()
            .map(|r| {
                let cache = conn.and_then(|c| c.cache().kind(&r.kind));
                let synced = conn.is_some_and(|c| c.synced(&r.kind));
                let objects = match &cache {
                    Some(kc) if synced => self.find(r, kc, primary, &pv, conn),
                    _ => Vec::new(),
                };
                (
                    r.index,
                    RelatedObjects {
                        relation: r.name.clone(),
                        synced,
                        objects: objects.iter().map(|o| o.json.to_string()).collect(),
                    },
                )
            })
            .collect()
    }

    fn find(
        &self,
        r: &Rel,
        kc: &KindCache,
        primary: &CachedObject,
        pv: &Value,
        conn: Option<&Connection>,
    ) -> Vec<Arc<CachedObject>> {
        let ns_ok = |o: &CachedObject| {
            !kc.namespaced() || r.namespace.as_deref().is_none_or(|n| o.key.namespace == n)
        };
        let scan = |f: &dyn Fn(&CachedObject) -> bool| -> Vec<Arc<CachedObject>> {
            let mut keys = kc.keys();
            keys.sort();
            keys.iter()
                .filter_map(|k| kc.get(k))
                .filter(|o| ns_ok(o) && f(o))
                .collect()
        };
        let by_name = |ns: Option<&str>, name: &str| -> Vec<Arc<CachedObject>> {
            let ns = if kc.namespaced() {
                ns.or(r.namespace.as_deref()).unwrap_or("default")
            } else {
                ""
            };
            kc.get(&ObjectKey::new(ns, name)).into_iter().collect()
        };
        match &r.sel {
            Sel::All => scan(&|_| true),
            Sel::Owned => scan(&|o| o.controller_owner().is_some_and(|c| c.uid == primary.uid)),
            Sel::Label(l) => scan(&|o| o.label(l) == Some(primary.key.name.as_str())),
            Sel::ControllerOwner => primary
                .controller_owner()
                .filter(|c| c.kind == r.kind.kind && c.group() == r.kind.group)
                .map(|c| by_name(None, &c.name))
                .unwrap_or_default(),
            Sel::ByLabelValue(l) => primary
                .label(l)
                .filter(|v| !v.is_empty())
                .map(|v| by_name(None, v))
                .unwrap_or_default(),
            Sel::FieldRef(path) => reference_at(pv, path)
                .map(|(ns, name)| by_name(ns, name))
                .unwrap_or_default(),
            Sel::Named(t) => {
                let cluster = conn.map(|c| c.cluster().name.clone());
                let subject = crate::watch::template::Subject {
                    name: &primary.key.name,
                    namespace: &primary.key.namespace,
                    cluster: cluster.as_deref(),
                    labels: &primary.labels,
                    value: Some(pv),
                };
                t.expand(&subject)
                    .map(|n| by_name(None, &n))
                    .unwrap_or_default()
            }
            Sel::Matching(s) => scan(&|o| s.matches(|k| o.label(k))),
            Sel::SelectorAt(path) => match at(pv, path) {
                Some(sv) => match LabelSelector::from_object(sv) {
                    Ok(s) => scan(&|o| s.matches(|k| o.label(k))),
                    Err(_) => Vec::new(),
                },
                None => Vec::new(),
            },
            Sel::FieldMatch(other, mine) => match str_at(pv, mine) {
                Some(want) => scan(&|o| str_at(&parse(o), other).as_deref() == Some(&want)),
                None => Vec::new(),
            },
        }
    }

    /// Whether an event object `o` in a workload cluster maps to primary `p` under `m`.
    fn maps_to(&self, m: &Map, o: &CachedObject, ov: &Value, p: &CachedObject) -> bool {
        match m {
            Map::SameCluster => true,
            Map::ControllerOwner => o.controller_owner().is_some_and(|c| {
                c.kind == self.primary.kind
                    && c.group() == self.primary.group
                    && c.name == p.key.name
            }),
            Map::Label(l) => o.label(l) == Some(p.key.name.as_str()),
            Map::Field(path) => reference_at(ov, path).is_some_and(|(_, n)| n == p.key.name),
            Map::LabelledWithName(l) => p.label(l) == Some(o.key.name.as_str()),
            Map::ReferencedBy(path) => {
                reference_at(&parse(p), path).is_some_and(|(_, n)| n == o.key.name)
            }
            Map::FieldMatch(other, mine) => match str_at(ov, other) {
                Some(v) => str_at(&parse(p), mine).as_deref() == Some(&v),
                None => false,
            },
        }
    }

    /// Enqueue (through `enqueue`) the primaries of a cluster on every event of a watched
    /// workload kind there, as the watch's mapping says, and on every connection change.
    pub fn subscribe(
        self: &Arc<Self>,
        cc: &ClusterCache,
        primaries: Arc<KindCache>,
        enqueue: impl Fn(ObjectKey) + Send + Sync + Clone + 'static,
    ) {
        for (gvk, map) in &self.watches {
            let me = Arc::clone(self);
            let primaries = Arc::clone(&primaries);
            let enqueue = enqueue.clone();
            let map = map.clone();
            cc.on_event(gvk, move |cluster, ev| {
                let candidates = primaries_of(&me.primary, &primaries, cluster);
                if candidates.is_empty() {
                    return;
                }
                for o in [&ev.old, &ev.new].into_iter().flatten() {
                    let ov = if matches!(map, Map::Field(_) | Map::FieldMatch(..)) {
                        parse(o)
                    } else {
                        Value::Null
                    };
                    for k in &candidates {
                        if let Some(p) = primaries.get(k)
                            && me.maps_to(&map, o, &ov, &p)
                        {
                            enqueue(k.clone());
                        }
                    }
                }
            });
        }
        let me = Arc::clone(self);
        cc.on_state(move |cluster, _| {
            for k in primaries_of(&me.primary, &primaries, cluster) {
                enqueue(k);
            }
        });
    }

    /// Write the outcome's `workload-*` entries to `primary`'s cluster.
    pub async fn write(
        &self,
        cc: &ClusterCache,
        primary: &CachedObject,
        metrics: &ControllerMetrics,
        outcome: &Outcome,
    ) -> Result<WriteReport, WorkloadError> {
        if outcome.workload_apply.is_empty()
            && outcome.workload_status.is_empty()
            && outcome.workload_delete.is_empty()
        {
            return Ok(WriteReport::default());
        }
        let cluster =
            cluster_of(&self.primary, primary).ok_or_else(|| WorkloadError::NoCluster {
                plugin: self.plugin.clone(),
                primary: primary.key.clone(),
            })?;
        let conn = cc
            .connection(&cluster)
            .filter(|c| c.state() == ConnectionState::Connected)
            .ok_or(WorkloadError::NotConnected { cluster })?;
        let o = Outcome {
            apply: outcome.workload_apply.clone(),
            status: outcome.workload_status.clone(),
            delete: outcome.workload_delete.clone(),
            events: Vec::new(),
            requeue_after_ms: None,
            workload_apply: Vec::new(),
            workload_status: Vec::new(),
            workload_delete: Vec::new(),
        };
        let w = Writer {
            plugin: &self.plugin,
            grants: &self.grants,
            metrics,
            observed: None,
        };
        Ok(conn.writes().write(&w, &o).await?)
    }
}

//! Which simulated clusters are provisioned, as Cluster API's dashboard defines it, from Cluster and Machine events.
//!
//! A cluster is provisioned at the first moment its Cluster has condition
//! `Available=True` and it has the expected number of Machines, each with a
//! `status.nodeRef` and condition `NodeHealthy=True`. Provisioning time runs
//! from the moment its Cluster was created (the create call's response, in
//! milliseconds; `creationTimestamp` has second resolution) to the moment the
//! event completing that state was observed.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What happened to one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not provisioned yet.
    Provisioning,
    /// Provisioned after this long.
    Provisioned(Duration),
    /// Not provisioned within the timeout, or its creation failed.
    Failed,
}

#[derive(Debug)]
struct ClusterTrack {
    index: usize,
    created: Instant,
    expected_machines: u32,
    available: bool,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MachineTrack {
    cluster: String,
    healthy: bool,
}

/// Tracks every simulated cluster's state from watch events.
#[derive(Debug, Default)]
pub struct Tracker {
    clusters: HashMap<String, ClusterTrack>,
    machines: HashMap<String, MachineTrack>,
    by_cluster: HashMap<String, BTreeMap<String, bool>>,
}

fn key_of(obj: &Value) -> Option<String> {
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(format!("{ns}/{name}"))
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(type_)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cluster `key` (`namespace/name`, index `index`) was created at `at`
    /// and needs `expected_machines` healthy Machines.
    pub fn created(&mut self, key: &str, index: usize, at: Instant, expected_machines: u32) {
        self.clusters.insert(
            key.to_owned(),
            ClusterTrack {
                index,
                created: at,
                expected_machines,
                available: false,
                state: State::Provisioning,
            },
        );
    }

    /// Cluster `key` could not be created or did not provision in time.
    pub fn failed(&mut self, key: &str) {
        if let Some(c) = self.clusters.get_mut(key)
            && c.state == State::Provisioning
        {
            c.state = State::Failed;
        }
    }

    /// A Cluster object was added or changed, observed at `now`; returns the
    /// cluster's key and index when this completes its provisioning.
    pub fn observe_cluster(&mut self, obj: &Value, now: Instant) -> Option<(String, usize)> {
        let key = key_of(obj)?;
        let available = condition_true(obj, "Available");
        self.clusters.get_mut(&key)?.available = available;
        self.check(&key, now)
    }

    /// A Machine object was added or changed, observed at `now`.
    pub fn observe_machine(&mut self, obj: &Value, now: Instant) -> Option<(String, usize)> {
        let key = key_of(obj)?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let cluster = obj
            .pointer("/spec/clusterName")
            .or_else(|| obj.pointer("/metadata/labels/cluster.x-k8s.io~1cluster-name"))
            .and_then(Value::as_str)?;
        let cluster = format!("{ns}/{cluster}");
        let healthy =
            obj.pointer("/status/nodeRef/name").is_some() && condition_true(obj, "NodeHealthy");
        self.by_cluster
            .entry(cluster.clone())
            .or_default()
            .insert(key.clone(), healthy);
        self.machines.insert(
            key,
            MachineTrack {
                cluster: cluster.clone(),
                healthy,
            },
        );
        self.check(&cluster, now)
    }

    /// A Machine object was deleted.
    pub fn machine_deleted(&mut self, obj: &Value) {
        let Some(key) = key_of(obj) else { return };
        if let Some(m) = self.machines.remove(&key)
            && let Some(set) = self.by_cluster.get_mut(&m.cluster)
        {
            set.remove(&key);
        }
    }

    fn check(&mut self, key: &str, now: Instant) -> Option<(String, usize)> {
        let c = self.clusters.get_mut(key)?;
        if c.state != State::Provisioning || !c.available {
            return None;
        }
        let machines = self.by_cluster.get(key)?;
        let healthy = machines.values().filter(|h| **h).count();
        if machines.len() == c.expected_machines as usize && healthy == machines.len() {
            c.state = State::Provisioned(now.saturating_duration_since(c.created));
            return Some((key.to_owned(), c.index));
        }
        None
    }

    /// The state of cluster `key`.
    pub fn state(&self, key: &str) -> Option<State> {
        self.clusters.get(key).map(|c| c.state)
    }

    /// Counts of (provisioning, provisioned, failed) clusters.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for c in self.clusters.values() {
            match c.state {
                State::Provisioning => n.0 += 1,
                State::Provisioned(_) => n.1 += 1,
                State::Failed => n.2 += 1,
            }
        }
        n
    }

    /// Every cluster as (key, index, state), in index order.
    pub fn all(&self) -> Vec<(String, usize, State)> {
        let mut v: Vec<_> = self
            .clusters
            .iter()
            .map(|(k, c)| (k.clone(), c.index, c.state))
            .collect();
        v.sort_by_key(|(_, i, _)| *i);
        v
    }

    /// Clusters still provisioning that were created more than `timeout` before `now`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> Vec<String> {
        self.clusters
            .iter()
            .filter(|(_, c)| {
                c.state == State::Provisioning && now.saturating_duration_since(c.created) > timeout
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(available: &str) -> Value {
        json!({"metadata": {"name": "c1", "namespace": "ns"},
               "status": {"conditions": [{"type": "Available", "status": available}]}})
    }

    fn machine(name: &str, node: bool, healthy: &str) -> Value {
        let mut m = json!({"metadata": {"name": name, "namespace": "ns",
                               "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
                           "spec": {"clusterName": "c1"},
                           "status": {"conditions": [{"type": "NodeHealthy", "status": healthy}]}});
        if node {
            m["status"]["nodeRef"] = json!({"name": format!("{name}-node")});
        }
        m
    }

    #[test]
    fn provisioned_needs_available_cluster_and_every_machine_healthy() {
        let mut t = Tracker::new();
        let t0 = Instant::now();
        t.created("ns/c1", 0, t0, 2);
        assert_eq!(t.observe_cluster(&cluster("True"), t0), None);
        assert_eq!(t.observe_machine(&machine("cp", true, "True"), t0), None);
        // The worker has no node yet.
        assert_eq!(t.observe_machine(&machine("w", false, "Unknown"), t0), None);
        let done = t0 + Duration::from_secs(5);
        assert_eq!(
            t.observe_machine(&machine("w", true, "True"), done),
            Some(("ns/c1".to_owned(), 0))
        );
        assert_eq!(
            t.state("ns/c1"),
            Some(State::Provisioned(Duration::from_secs(5)))
        );
        // Reported once.
        assert_eq!(t.observe_cluster(&cluster("True"), done), None);
        assert_eq!(t.counts(), (0, 1, 0));
    }

    #[test]
    fn unavailable_cluster_or_extra_machine_is_not_provisioned() {
        let mut t = Tracker::new();
        let t0 = Instant::now();
        t.created("ns/c1", 0, t0, 1);
        t.observe_machine(&machine("cp", true, "True"), t0);
        assert_eq!(t.observe_cluster(&cluster("False"), t0), None);
        t.observe_machine(&machine("extra", true, "True"), t0);
        assert_eq!(t.observe_cluster(&cluster("True"), t0), None);
        t.machine_deleted(&machine("extra", true, "True"));
        assert!(t.observe_cluster(&cluster("True"), t0).is_some());
    }

    #[test]
    fn overdue_clusters_fail() {
        let mut t = Tracker::new();
        let t0 = Instant::now();
        t.created("ns/c1", 0, t0, 1);
        let late = t0 + Duration::from_secs(11);
        assert_eq!(
            t.overdue(late, Duration::from_secs(10)),
            vec!["ns/c1".to_owned()]
        );
        t.failed("ns/c1");
        assert_eq!(t.counts(), (0, 0, 1));
        assert!(t.overdue(late, Duration::from_secs(10)).is_empty());
    }
}

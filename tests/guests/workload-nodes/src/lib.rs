//! Test guest `workload-nodes`: counts the Nodes of each Cluster's workload cluster into a ConfigMap there.
//!
//! A plugin with every kind of workload declaration (a relation, a watch and a
//! written kind), for the tests that load one while the manager runs.

use capstan_sdk::{
    Connection, Context, Error, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler, RelationSelector,
    Snapshot, Verbs,
};
use serde_json::json;

/// The `workload-nodes` test plugin.
#[derive(Debug)]
pub struct WorkloadNodes;

impl Reconciler for WorkloadNodes {
    fn describe() -> PluginInfo {
        let node = Gvk::new("", "v1", "Node");
        PluginInfo::new(
            "workload-nodes",
            "0.1.0",
            Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster"),
        )
        .workload_relation("nodes", node.clone(), RelationSelector::All, None)
        .watch_workload(node, KeyMapping::SameCluster)
        .permit_workload(
            Gvk::new("", "v1", "ConfigMap"),
            Verbs::CREATE | Verbs::PATCH,
        )
    }

    fn reconcile(_ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let mut outcome = Outcome::new();
        if snapshot.workload() != Connection::Connected || !snapshot.synced("nodes") {
            return Ok(outcome);
        }
        outcome.workload_apply(&json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "capstan-nodes", "namespace": "kube-system"},
            "data": {"nodes": snapshot.related_json("nodes").len().to_string()},
        }))?;
        Ok(outcome)
    }
}

capstan_sdk::export!(WorkloadNodes);

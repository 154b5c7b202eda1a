//! Test/bench guest: computes a CAPI v1beta2 Cluster's status (conditions, replicas, phase) from its snapshot.
//!
//! Realistic work for the runtime's component test and benchmark: it parses
//! the Cluster, KubeadmControlPlane, DevCluster, Machines and
//! MachineDeployments into typed structs that skip unknown fields, derives
//! the v1beta2 status, and returns it as a status patch. The same code is
//! called natively by the benchmark (this crate is also an rlib).
//!
//! It parses only what it reads: metadata is the few fields below, not the
//! SDK's full `ObjectMeta` (whose flattened catch-all buffers and re-parses
//! every metadata field, managedFields included).

use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::{
    Context, Error, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler, RelationSelector, Snapshot,
    Verbs,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";

/// The metadata this reconciler reads; every other field is skipped unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Meta {
    name: String,
    namespace: String,
    generation: Option<i64>,
    deletion_timestamp: Option<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Cluster {
    metadata: Meta,
    spec: ClusterSpec,
    status: ClusterStatusIn,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ClusterSpec {
    paused: Option<bool>,
    control_plane_ref: Option<ContractRef>,
    infrastructure_ref: Option<ContractRef>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContractRef {
    kind: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ClusterStatusIn {
    conditions: Vec<Condition>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Initialization {
    provisioned: Option<bool>,
    control_plane_initialized: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Replicas {
    replicas: Option<i32>,
    ready_replicas: Option<i32>,
    available_replicas: Option<i32>,
    up_to_date_replicas: Option<i32>,
    initialization: Initialization,
    conditions: Vec<Condition>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpecReplicas {
    replicas: Option<i32>,
}

/// A KubeadmControlPlane or MachineDeployment: desired and observed replicas.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Scalable {
    metadata: Meta,
    spec: SpecReplicas,
    status: Replicas,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InfraCluster {
    status: Replicas,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Machine {
    metadata: Meta,
    status: MachineStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MachineStatus {
    conditions: Vec<Condition>,
}

/// `status.controlPlane` / `status.workers` of a v1beta2 Cluster.
#[derive(Serialize, Default, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ReplicaSummary {
    desired_replicas: i32,
    replicas: i32,
    ready_replicas: i32,
    available_replicas: i32,
    up_to_date_replicas: i32,
}

fn machines_summary(machines: &[&Machine]) -> (i32, i32, i32, Vec<String>) {
    let (mut ready, mut available, mut up_to_date) = (0, 0, 0);
    let mut not_ready = Vec::new();
    for m in machines {
        let c = &m.status.conditions;
        if conditions::is_true(c, "Ready") {
            ready += 1;
        } else {
            not_ready.push(m.metadata.name.clone());
        }
        available += i32::from(conditions::is_true(c, "Available"));
        up_to_date += i32::from(conditions::is_true(c, "UpToDate"));
    }
    (ready, available, up_to_date, not_ready)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The Cluster status reconciler.
#[derive(Debug)]
pub struct ClusterStatus;

impl Reconciler for ClusterStatus {
    fn describe() -> PluginInfo {
        let cluster = Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster");
        let label = || KeyMapping::Label(CLUSTER_NAME_LABEL.to_owned());
        PluginInfo::new("cluster-status", env!("CARGO_PKG_VERSION"), cluster.clone())
            .watch(
                Gvk::new(
                    "controlplane.cluster.x-k8s.io",
                    "v1beta2",
                    "KubeadmControlPlane",
                ),
                label(),
            )
            .watch(
                Gvk::new("infrastructure.cluster.x-k8s.io", "v1beta2", "DevCluster"),
                label(),
            )
            .watch(Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine"), label())
            .watch(
                Gvk::new("cluster.x-k8s.io", "v1beta2", "MachineDeployment"),
                label(),
            )
            .relation(
                "control-plane",
                Gvk::new(
                    "controlplane.cluster.x-k8s.io",
                    "v1beta2",
                    "KubeadmControlPlane",
                ),
                RelationSelector::FieldRef("spec.controlPlaneRef".to_owned()),
            )
            .relation(
                "infrastructure",
                Gvk::new("infrastructure.cluster.x-k8s.io", "v1beta2", "DevCluster"),
                RelationSelector::FieldRef("spec.infrastructureRef".to_owned()),
            )
            .relation(
                "machines",
                Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine"),
                RelationSelector::Label(CLUSTER_NAME_LABEL.to_owned()),
            )
            .relation(
                "machine-deployments",
                Gvk::new("cluster.x-k8s.io", "v1beta2", "MachineDeployment"),
                RelationSelector::Label(CLUSTER_NAME_LABEL.to_owned()),
            )
            .permit(cluster, Verbs::PATCH_STATUS)
            .concurrency(10)
    }

    fn reconcile(ctx: &Context<'_>, snap: &Snapshot) -> Result<Outcome, Error> {
        for rel in [
            "control-plane",
            "infrastructure",
            "machines",
            "machine-deployments",
        ] {
            if !snap.synced(rel) {
                return Err(Error::transient(format!("cache for {rel} not synced yet")));
            }
        }
        let cluster: Cluster = snap.primary()?;
        let now = snap.now();
        let generation = cluster.metadata.generation;
        let mut outcome = Outcome::new();
        if cluster.spec.paused == Some(true) {
            ctx.debug("cluster is paused");
            return Ok(outcome);
        }
        let kcp: Option<Scalable> = snap.related_one("control-plane")?;
        let infra: Option<InfraCluster> = snap.related_one("infrastructure")?;
        let machines: Vec<Machine> = snap.related("machines")?;
        let mds: Vec<Scalable> = snap.related("machine-deployments")?;

        let mut conds = cluster.status.conditions;
        let set =
            |conds: &mut Vec<Condition>, t: &str, ok: bool, yes: &str, no: &str, msg: String| {
                let c = Condition::new(t, if ok { TRUE } else { FALSE }, if ok { yes } else { no })
                    .message(if ok { String::new() } else { msg })
                    .observed_generation(generation);
                conditions::set(conds, c, now);
            };

        // Infrastructure.
        let infra_ready = infra
            .as_ref()
            .is_some_and(|i| i.status.initialization.provisioned == Some(true));
        let infra_name = cluster
            .spec
            .infrastructure_ref
            .as_ref()
            .map_or("", |r| r.name.as_str());
        set(
            &mut conds,
            "InfrastructureReady",
            infra_ready,
            "Ready",
            "NotReady",
            format!("{infra_name} is not provisioned"),
        );

        // Control plane.
        let cp_initialized = kcp
            .as_ref()
            .is_some_and(|k| k.status.initialization.control_plane_initialized == Some(true));
        let cp_available = kcp
            .as_ref()
            .is_some_and(|k| conditions::is_true(&k.status.conditions, "Available"));
        let cp_name = cluster
            .spec
            .control_plane_ref
            .as_ref()
            .map_or("", |r| r.name.as_str());
        set(
            &mut conds,
            "ControlPlaneInitialized",
            cp_initialized,
            "Initialized",
            "NotInitialized",
            "Control plane not yet initialized".to_owned(),
        );
        set(
            &mut conds,
            "ControlPlaneAvailable",
            cp_available,
            "Available",
            "NotAvailable",
            format!("{cp_name} is not available"),
        );

        // Machines, split by role.
        let (cp_machines, worker_machines): (Vec<&Machine>, Vec<&Machine>) = machines
            .iter()
            .filter(|m| m.metadata.labels.get(CLUSTER_NAME_LABEL) == Some(&cluster.metadata.name))
            .partition(|m| m.metadata.labels.contains_key(CONTROL_PLANE_LABEL));
        let (cp_ready, cp_avail, cp_utd, cp_not_ready) = machines_summary(&cp_machines);
        let (w_ready, w_avail, w_utd, w_not_ready) = machines_summary(&worker_machines);
        set(
            &mut conds,
            "ControlPlaneMachinesReady",
            cp_not_ready.is_empty(),
            "Ready",
            "NotReady",
            format!("not ready: {}", cp_not_ready.join(", ")),
        );
        set(
            &mut conds,
            "WorkerMachinesReady",
            w_not_ready.is_empty(),
            "Ready",
            "NotReady",
            format!("not ready: {}", w_not_ready.join(", ")),
        );

        // Workers: MachineDeployments' desired vs available.
        let desired_workers: i32 = mds.iter().map(|m| m.spec.replicas.unwrap_or(1)).sum();
        let workers_available = mds
            .iter()
            .all(|m| m.status.available_replicas.unwrap_or(0) >= m.spec.replicas.unwrap_or(1));
        let unavailable: Vec<&str> = mds
            .iter()
            .filter(|m| !conditions::is_true(&m.status.conditions, "Available"))
            .map(|m| m.metadata.name.as_str())
            .collect();
        set(
            &mut conds,
            "WorkersAvailable",
            workers_available,
            "Available",
            "NotAvailable",
            format!("not available: {}", unavailable.join(", ")),
        );

        let available = infra_ready && cp_available && workers_available;
        set(
            &mut conds,
            "Available",
            available,
            "Available",
            "NotAvailable",
            "see InfrastructureReady, ControlPlaneAvailable and WorkersAvailable".to_owned(),
        );

        let phase = if cluster.metadata.deletion_timestamp.is_some() {
            "Deleting"
        } else if infra_ready && cp_initialized {
            "Provisioned"
        } else if cluster.spec.infrastructure_ref.is_some() {
            "Provisioning"
        } else {
            "Pending"
        };
        let control_plane = kcp.as_ref().map(|k| ReplicaSummary {
            desired_replicas: k.spec.replicas.unwrap_or(1),
            replicas: k.status.replicas.unwrap_or(count(cp_machines.len())),
            ready_replicas: k.status.ready_replicas.unwrap_or(cp_ready),
            available_replicas: k.status.available_replicas.unwrap_or(cp_avail),
            up_to_date_replicas: k.status.up_to_date_replicas.unwrap_or(cp_utd),
        });
        let workers = ReplicaSummary {
            desired_replicas: desired_workers,
            replicas: count(worker_machines.len()),
            ready_replicas: w_ready,
            available_replicas: w_avail,
            up_to_date_replicas: w_utd,
        };
        outcome.status(&json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": cluster.metadata.name, "namespace": cluster.metadata.namespace},
            "status": {
                "phase": phase,
                "observedGeneration": generation,
                "initialization": {
                    "infrastructureProvisioned": infra_ready,
                    "controlPlaneInitialized": cp_initialized,
                },
                "controlPlane": control_plane,
                "workers": workers,
                "conditions": conds,
            },
        }))?;
        Ok(outcome)
    }
}

capstan_sdk::export!(ClusterStatus);

//! `cluster.x-k8s.io/v1beta2`: Cluster, Machine, MachineDeployment, MachineSet, their phases and condition vocabulary.

use super::{ApiEndpoint, ContractVersionedObjectReference, GROUP};
use crate::conditions::Condition;
use crate::meta::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! object {
    ($(#[$doc:meta])* $name:ident, $group:expr, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct $name {
            /// `group/version`.
            pub api_version: String,
            /// Kind.
            pub kind: String,
            /// Metadata.
            pub metadata: ObjectMeta,
            /// Desired state.
            pub spec: $spec,
            /// Observed state; `None` when the object has none yet.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
            /// Fields not modelled here.
            #[serde(flatten)]
            pub extra: Map<String, Value>,
        }

        impl $crate::capi::Object for $name {
            const GROUP: &'static str = $group;
            const KIND: &'static str = stringify!($name);
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
        }

        impl $name {
            /// The status, or an empty one.
            pub fn status(&self) -> $status {
                self.status.clone().unwrap_or_default()
            }
        }
    };
}
pub(crate) use object;

object!(
    /// A Cluster: the root of a workload cluster's objects.
    Cluster, GROUP, ClusterSpec, ClusterStatus
);
object!(
    /// A Machine: one node of a workload cluster.
    Machine, GROUP, MachineSpec, MachineStatus
);
object!(
    /// A MachineDeployment: a rolling set of MachineSets.
    MachineDeployment, GROUP, ReplicaSpec, ReplicaStatus
);
object!(
    /// A MachineSet: a replicated set of Machines from one template.
    MachineSet, GROUP, ReplicaSpec, ReplicaStatus
);

/// Cluster `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSpec {
    /// Pauses reconciliation of the Cluster and its objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Networking of the workload cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_network: Option<ClusterNetwork>,
    /// Where the workload API server answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// The control-plane object (e.g. a KubeadmControlPlane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_ref: Option<ContractVersionedObjectReference>,
    /// The infrastructure cluster object (e.g. a DevCluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,
    /// ClusterClass topology (read only to know it is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<Value>,
    /// Extra conditions that gate `Available`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_gates: Option<Vec<Value>>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ClusterSpec {
    /// The infrastructure reference, if defined.
    pub fn infrastructure(&self) -> Option<&ContractVersionedObjectReference> {
        self.infrastructure_ref.as_ref().filter(|r| r.is_defined())
    }

    /// The control-plane reference, if defined.
    pub fn control_plane(&self) -> Option<&ContractVersionedObjectReference> {
        self.control_plane_ref.as_ref().filter(|r| r.is_defined())
    }

    /// The control-plane endpoint, if valid.
    pub fn endpoint(&self) -> Option<&ApiEndpoint> {
        self.control_plane_endpoint
            .as_ref()
            .filter(|e| e.is_valid())
    }
}

/// `spec.clusterNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterNetwork {
    /// API server port on the control-plane nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server_port: Option<i32>,
    /// Service CIDRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<NetworkRanges>,
    /// Pod CIDRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<NetworkRanges>,
    /// DNS domain of services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_domain: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A list of CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkRanges {
    /// CIDR blocks.
    pub cidr_blocks: Vec<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Cluster `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Provisioning milestones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitialization>,
    /// Control-plane replica counters, copied from the control-plane object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ReplicaCounters>,
    /// Worker replica counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<ReplicaCounters>,
    /// Failure domains, copied from the infrastructure cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<Vec<Value>>,
    /// `Pending`, `Provisioning`, `Provisioned`, `Deleting`, `Failed`, `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here (e.g. `deprecated`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Cluster `status.initialization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInitialization {
    /// The infrastructure cluster reported `provisioned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// The control plane reported `controlPlaneInitialized`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `status.controlPlane` / `status.workers` of a Cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicaCounters {
    /// Desired replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Existing replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas up to date with the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date_replicas: Option<i32>,
    /// Ready replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Available replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Fields not modelled here (versions, upgradePlan).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Machine `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineSpec {
    /// The Cluster this Machine belongs to.
    pub cluster_name: String,
    /// How the node gets its bootstrap data.
    pub bootstrap: Bootstrap,
    /// The infrastructure machine (e.g. a DevMachine).
    pub infrastructure_ref: ContractVersionedObjectReference,
    /// Kubernetes version of the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provider ID, copied from the infrastructure machine.
    #[serde(skip_serializing_if = "Option::is_none", rename = "providerID")]
    pub provider_id: Option<String>,
    /// Failure domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Seconds a Machine must be Ready before it is Available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Extra conditions that gate `Ready` (`conditionType`, `polarity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_gates: Option<Vec<Value>>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Machine `spec.bootstrap`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Bootstrap {
    /// The bootstrap config object (e.g. a KubeadmConfig).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ContractVersionedObjectReference>,
    /// The Secret holding the bootstrap data, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Machine `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Provisioning milestones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<MachineInitialization>,
    /// The Node in the workload cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<Value>,
    /// The Node's `status.nodeInfo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_info: Option<Value>,
    /// Addresses, copied from the infrastructure machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<Value>>,
    /// Failure domain, copied from the infrastructure machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// When the phase last changed, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// `Pending`, `Provisioning`, `Provisioned`, `Running`, `Deleting`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Machine `status.initialization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineInitialization {
    /// The infrastructure machine reported `provisioned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// The bootstrap config reported `dataSecretCreated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_data_secret_created: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MachineStatus {
    /// The name in `nodeRef`, if set.
    pub fn node_name(&self) -> Option<&str> {
        self.node_ref
            .as_ref()
            .and_then(|r| r.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    }
}

impl Machine {
    /// Whether this is a control-plane Machine (it carries the
    /// `cluster.x-k8s.io/control-plane` label, any value).
    pub fn is_control_plane(&self) -> bool {
        self.metadata
            .labels
            .contains_key(super::labels::CONTROL_PLANE)
    }
}

/// MachineDeployment/MachineSet `spec` (fields of one kind only are `None` on the other).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicaSpec {
    /// The Cluster.
    pub cluster_name: String,
    /// Desired replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the owned objects (MachineSets / Machines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<super::fleet::LabelSelector>,
    /// Template of the Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<super::fleet::MachineTemplateSpec>,
    /// MachineDeployment only: pauses rollouts (scaling still happens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// MachineDeployment only: rollout strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::fleet::Rollout>,
    /// Deletion order of Machines on scale down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion: Option<super::fleet::DeletionSpec>,
    /// MachineDeployment only: remediation limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<super::fleet::RemediationSpec>,
    /// Fields not modelled here (machineNaming, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// MachineDeployment/MachineSet `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReplicaStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Existing replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Available replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Up-to-date replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date_replicas: Option<i32>,
    /// The selector in string form (`k=v,...`), for the scale subresource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// MachineDeployment only: `ScalingUp`, `ScalingDown`, `Running`, `Failed`, `Unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Cluster `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPhase {
    /// The Cluster was created; no infrastructure or control plane is referenced yet.
    Pending,
    /// Infrastructure or control plane is referenced and being provisioned.
    Provisioning,
    /// Infrastructure is provisioned and the control-plane endpoint is known.
    Provisioned,
    /// Deletion was requested.
    Deleting,
    /// Unrecoverable failure.
    Failed,
    /// Unknown.
    Unknown,
}

impl ClusterPhase {
    /// The string CAPI writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Provisioned => "Provisioned",
            Self::Deleting => "Deleting",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Machine `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachinePhase {
    /// Created; waiting for bootstrap data.
    Pending,
    /// Bootstrap data ready; infrastructure being provisioned.
    Provisioning,
    /// Infrastructure provisioned; waiting for the Node.
    Provisioned,
    /// The Node exists.
    Running,
    /// Being updated in place.
    Updating,
    /// Deletion was requested.
    Deleting,
    /// Deleted (transient).
    Deleted,
    /// Unrecoverable failure.
    Failed,
    /// Unknown.
    Unknown,
}

impl MachinePhase {
    /// The string CAPI writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Provisioned => "Provisioned",
            Self::Running => "Running",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
            Self::Deleted => "Deleted",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Cluster v1beta2 condition types and reasons (`api/core/v1beta2`).
pub mod cluster_conditions {
    /// Summary: infrastructure, control plane and workers available.
    pub const AVAILABLE: &str = "Available";
    /// Mirror of the infrastructure cluster's `Ready`.
    pub const INFRASTRUCTURE_READY: &str = "InfrastructureReady";
    /// The control plane reported initialization.
    pub const CONTROL_PLANE_INITIALIZED: &str = "ControlPlaneInitialized";
    /// Mirror of the control plane's `Available`.
    pub const CONTROL_PLANE_AVAILABLE: &str = "ControlPlaneAvailable";
    /// Aggregate of MachineDeployments' `Available`.
    pub const WORKERS_AVAILABLE: &str = "WorkersAvailable";
    /// Whether the Cluster is being deleted, and what deletion waits for.
    pub const DELETING: &str = "Deleting";
    /// Whether reconciliation is paused.
    pub const PAUSED: &str = "Paused";

    /// InfrastructureReady: the infrastructure cluster is provisioned (fallback).
    pub const INFRASTRUCTURE_READY_REASON: &str = "Ready";
    /// InfrastructureReady: not provisioned yet (fallback).
    pub const INFRASTRUCTURE_NOT_READY_REASON: &str = "NotReady";
    /// ControlPlaneInitialized true.
    pub const CONTROL_PLANE_INITIALIZED_REASON: &str = "Initialized";
    /// ControlPlaneInitialized false.
    pub const CONTROL_PLANE_NOT_INITIALIZED_REASON: &str = "NotInitialized";
    /// ControlPlaneAvailable true (fallback).
    pub const CONTROL_PLANE_AVAILABLE_REASON: &str = "Available";
    /// ControlPlaneAvailable false (fallback).
    pub const CONTROL_PLANE_NOT_AVAILABLE_REASON: &str = "NotAvailable";
    /// WorkersAvailable with no MachineDeployments or MachinePools.
    pub const WORKERS_AVAILABLE_NO_WORKERS_REASON: &str = "NoWorkers";
    /// WorkersAvailable true.
    pub const WORKERS_AVAILABLE_REASON: &str = "Available";
    /// WorkersAvailable false.
    pub const WORKERS_NOT_AVAILABLE_REASON: &str = "NotAvailable";
    /// WorkersAvailable unknown.
    pub const WORKERS_AVAILABLE_UNKNOWN_REASON: &str = "AvailableUnknown";
    /// Available true.
    pub const AVAILABLE_REASON: &str = "Available";
    /// Available false.
    pub const NOT_AVAILABLE_REASON: &str = "NotAvailable";
    /// Available unknown.
    pub const AVAILABLE_UNKNOWN_REASON: &str = "AvailableUnknown";
    /// Deleting false.
    pub const NOT_DELETING_REASON: &str = "NotDeleting";
    /// Deleting: Machines, MachineSets, MachineDeployments still exist.
    pub const DELETING_WAITING_FOR_WORKERS_DELETION_REASON: &str = "WaitingForWorkersDeletion";
    /// Deleting: the control-plane object still exists.
    pub const DELETING_WAITING_FOR_CONTROL_PLANE_DELETION_REASON: &str =
        "WaitingForControlPlaneDeletion";
    /// Deleting: the infrastructure cluster still exists.
    pub const DELETING_WAITING_FOR_INFRASTRUCTURE_DELETION_REASON: &str =
        "WaitingForInfrastructureDeletion";
    /// Deleting: everything is gone; the finalizer is removed.
    pub const DELETING_DELETION_COMPLETED_REASON: &str = "DeletionCompleted";
    /// Paused false.
    pub const NOT_PAUSED_REASON: &str = "NotPaused";
}

/// Machine v1beta2 condition types.
pub mod machine_conditions {
    /// Summary for availability (Ready for minReadySeconds).
    pub const AVAILABLE: &str = "Available";
    /// Summary of the Machine's health.
    pub const READY: &str = "Ready";
    /// Mirror of the bootstrap config's `Ready`.
    pub const BOOTSTRAP_CONFIG_READY: &str = "BootstrapConfigReady";
    /// Mirror of the infrastructure machine's `Ready`.
    pub const INFRASTRUCTURE_READY: &str = "InfrastructureReady";
    /// Mirror of the Node's `Ready`.
    pub const NODE_READY: &str = "NodeReady";
    /// Node health summary.
    pub const NODE_HEALTHY: &str = "NodeHealthy";
    /// Whether the Machine is being deleted.
    pub const DELETING: &str = "Deleting";
    /// Whether an in-place update runs.
    pub const UPDATING: &str = "Updating";
    /// Whether reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// Set by MachineHealthChecks; part of `Ready` when present.
    pub const HEALTH_CHECK_SUCCEEDED: &str = "HealthCheckSucceeded";

    /// Available: Ready for at least minReadySeconds.
    pub const AVAILABLE_REASON: &str = "Available";
    /// Available: Ready for less than minReadySeconds.
    pub const WAITING_FOR_MIN_READY_SECONDS_REASON: &str = "WaitingForMinReadySeconds";
    /// Ready true / Available-or-BootstrapConfigReady-or-InfrastructureReady fallback true.
    pub const READY_REASON: &str = "Ready";
    /// Ready false (also Available false when not Ready).
    pub const NOT_READY_REASON: &str = "NotReady";
    /// Ready unknown.
    pub const READY_UNKNOWN_REASON: &str = "ReadyUnknown";
    /// BootstrapConfigReady: `spec.bootstrap.dataSecretName` given without a config.
    pub const BOOTSTRAP_DATA_SECRET_PROVIDED_REASON: &str = "DataSecretProvided";
    /// NodeReady: the Node's Ready is True.
    pub const NODE_READY_REASON: &str = "NodeReady";
    /// NodeReady: the Node's Ready is False.
    pub const NODE_NOT_READY_REASON: &str = "NodeNotReady";
    /// NodeReady: the Node's Ready is Unknown or missing.
    pub const NODE_READY_UNKNOWN_REASON: &str = "NodeReadyUnknown";
    /// NodeHealthy: Ready and no pressure condition.
    pub const NODE_HEALTHY_REASON: &str = "NodeHealthy";
    /// NodeHealthy: a condition is bad.
    pub const NODE_NOT_HEALTHY_REASON: &str = "NodeNotHealthy";
    /// NodeHealthy: a condition is unknown.
    pub const NODE_HEALTH_UNKNOWN_REASON: &str = "NodeHealthyUnknown";
    /// NodeReady/NodeHealthy: the Node does not exist (deleting Machine).
    pub const NODE_DOES_NOT_EXIST_REASON: &str = "NodeDoesNotExist";
    /// NodeReady/NodeHealthy: the Node went away.
    pub const NODE_DELETED_REASON: &str = "NodeDeleted";
    /// NodeReady/NodeHealthy: waiting for something before the Node can be inspected.
    pub const NODE_INSPECTION_FAILED_REASON: &str = "InspectionFailed";
    /// NodeReady/NodeHealthy: no connection to the workload cluster.
    pub const NODE_CONNECTION_DOWN_REASON: &str = "ConnectionDown";
    /// Updating false.
    pub const NOT_UPDATING_REASON: &str = "NotUpdating";
    /// Deleting false.
    pub const NOT_DELETING_REASON: &str = "NotDeleting";
    /// Deleting, no more specific stage.
    pub const DELETING_REASON: &str = "Deleting";
    /// Deleting: draining the Node.
    pub const DELETING_DRAINING_NODE_REASON: &str = "DrainingNode";
    /// Deleting: waiting for the infrastructure machine to go.
    pub const DELETING_WAITING_FOR_INFRASTRUCTURE_DELETION_REASON: &str =
        "WaitingForInfrastructureDeletion";
    /// Deleting: waiting for the bootstrap config to go.
    pub const DELETING_WAITING_FOR_BOOTSTRAP_DELETION_REASON: &str = "WaitingForBootstrapDeletion";
    /// Deleting: deleting the Node.
    pub const DELETING_DELETING_NODE_REASON: &str = "DeletingNode";
    /// Deleting: done; the finalizer is removed.
    pub const DELETING_DELETION_COMPLETED_REASON: &str = "DeletionCompleted";
    /// Paused false.
    pub const NOT_PAUSED_REASON: &str = "NotPaused";
    /// Paused true.
    pub const PAUSED_REASON: &str = "Paused";
}

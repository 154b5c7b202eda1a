//! `controlplane.cluster.x-k8s.io/v1beta2`: KubeadmControlPlane and its condition vocabulary.

use super::bootstrap::KubeadmConfigSpec;
use super::cluster::object;
use super::{CONTROLPLANE_GROUP, ContractVersionedObjectReference};
use crate::conditions::Condition;
use crate::meta::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

object!(
    /// A KubeadmControlPlane: the control-plane Machines of a Cluster.
    KubeadmControlPlane, CONTROLPLANE_GROUP, KubeadmControlPlaneSpec, KubeadmControlPlaneStatus
);

/// KubeadmControlPlane `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmControlPlaneSpec {
    /// Desired control-plane Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Kubernetes version.
    pub version: String,
    /// Template of the control-plane Machines.
    pub machine_template: KcpMachineTemplate,
    /// kubeadm configuration of every control-plane Machine.
    pub kubeadm_config_spec: KubeadmConfigSpec,
    /// Fields not modelled here (rollout, remediation, machineNaming).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.machineTemplate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KcpMachineTemplate {
    /// Labels and annotations for the Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Machine spec parts.
    pub spec: KcpMachineTemplateSpec,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.machineTemplate.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KcpMachineTemplateSpec {
    /// The infrastructure machine template (e.g. a DevMachineTemplate).
    pub infrastructure_ref: ContractVersionedObjectReference,
    /// Fields not modelled here (deletion, readinessGates, taints).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// KubeadmControlPlane `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmControlPlaneStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Provisioning milestones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ControlPlaneInitialization>,
    /// Label selector of the Machines, as a string (for scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Existing Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Available Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Up-to-date Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_to_date_replicas: Option<i32>,
    /// Minimum Kubernetes version of the Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `status.initialization` of a control-plane object (the contract field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPlaneInitialization {
    /// The first control-plane Machine answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KubeadmControlPlane {
    /// Whether `status.initialization.controlPlaneInitialized` is true.
    pub fn initialized(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.initialization.as_ref())
            .and_then(|i| i.control_plane_initialized)
            .unwrap_or(false)
    }
}

/// KubeadmControlPlane v1beta2 condition types.
pub mod kcp_conditions {
    /// Summary: etcd and control-plane components healthy, enough Machines.
    pub const AVAILABLE: &str = "Available";
    /// The first control-plane Machine answered.
    pub const INITIALIZED: &str = "Initialized";
    /// Cluster certificates exist.
    pub const CERTIFICATES_AVAILABLE: &str = "CertificatesAvailable";
    /// etcd members healthy.
    pub const ETCD_CLUSTER_HEALTHY: &str = "EtcdClusterHealthy";
    /// Control-plane Pods healthy.
    pub const CONTROL_PLANE_COMPONENTS_HEALTHY: &str = "ControlPlaneComponentsHealthy";
    /// Machines ready.
    pub const MACHINES_READY: &str = "MachinesReady";
    /// Machines up to date.
    pub const MACHINES_UP_TO_DATE: &str = "MachinesUpToDate";
    /// Scaling up.
    pub const SCALING_UP: &str = "ScalingUp";
    /// Scaling down.
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// Deleting.
    pub const DELETING: &str = "Deleting";
}

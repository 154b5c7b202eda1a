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

/// KubeadmControlPlane v1beta2 condition reasons (`api/controlplane/kubeadm/v1beta2`).
pub mod kcp_reasons {
    /// Available true.
    pub const AVAILABLE: &str = "Available";
    /// Available false.
    pub const NOT_AVAILABLE: &str = "NotAvailable";
    /// Initialized true.
    pub const INITIALIZED: &str = "Initialized";
    /// Initialized false.
    pub const NOT_INITIALIZED: &str = "NotInitialized";
    /// CertificatesAvailable true.
    pub const CERTIFICATES_AVAILABLE: &str = "Available";
    /// CertificatesAvailable false.
    pub const CERTIFICATES_NOT_AVAILABLE: &str = "NotAvailable";
    /// CertificatesAvailable: generating or reading them failed.
    pub const CERTIFICATES_INTERNAL_ERROR: &str = "InternalError";
    /// EtcdClusterHealthy / ControlPlaneComponentsHealthy true.
    pub const HEALTHY: &str = "Healthy";
    /// EtcdClusterHealthy / ControlPlaneComponentsHealthy false.
    pub const NOT_HEALTHY: &str = "NotHealthy";
    /// EtcdClusterHealthy / ControlPlaneComponentsHealthy unknown.
    pub const HEALTH_UNKNOWN: &str = "HealthUnknown";
    /// The connection to the workload cluster is down.
    pub const CONNECTION_DOWN: &str = "ConnectionDown";
    /// MachinesReady true.
    pub const MACHINES_READY: &str = "Ready";
    /// MachinesReady false.
    pub const MACHINES_NOT_READY: &str = "NotReady";
    /// MachinesReady unknown.
    pub const MACHINES_READY_UNKNOWN: &str = "ReadyUnknown";
    /// MachinesUpToDate true.
    pub const MACHINES_UP_TO_DATE: &str = "UpToDate";
    /// MachinesUpToDate false.
    pub const MACHINES_NOT_UP_TO_DATE: &str = "NotUpToDate";
    /// MachinesReady / MachinesUpToDate with no Machines.
    pub const NO_REPLICAS: &str = "NoReplicas";
    /// ScalingUp true.
    pub const SCALING_UP: &str = "ScalingUp";
    /// ScalingUp false.
    pub const NOT_SCALING_UP: &str = "NotScalingUp";
    /// ScalingDown true.
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// ScalingDown false.
    pub const NOT_SCALING_DOWN: &str = "NotScalingDown";
    /// Deleting false.
    pub const NOT_DELETING: &str = "NotDeleting";
    /// Deleting: worker Machines still exist.
    pub const WAITING_FOR_WORKERS_DELETION: &str = "WaitingForWorkersDeletion";
    /// Deleting: control-plane Machines still exist.
    pub const WAITING_FOR_MACHINE_DELETION: &str = "WaitingForMachineDeletion";
    /// Deleting: done, the finalizer is removed.
    pub const DELETION_COMPLETED: &str = "DeletionCompleted";
    /// Paused true.
    pub const PAUSED: &str = "Paused";
    /// Paused false.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// Per-Machine pod condition: the Pod runs and is Ready.
    pub const POD_RUNNING: &str = "Running";
    /// Per-Machine pod condition: the Pod is Pending.
    pub const POD_PROVISIONING: &str = "Provisioning";
    /// Per-Machine pod condition: no such Pod.
    pub const POD_DOES_NOT_EXIST: &str = "DoesNotExist";
    /// Per-Machine pod condition: the Pod failed or is not Ready.
    pub const POD_FAILED: &str = "Failed";
    /// Per-Machine pod or etcd member condition: the Machine is being deleted.
    pub const POD_DELETING: &str = "Deleting";
}

/// Per-Machine condition types KubeadmControlPlane computes (`APIServerPodHealthy`...).
pub mod kcp_machine_conditions {
    /// The kube-apiserver Pod of the Machine's Node.
    pub const API_SERVER_POD_HEALTHY: &str = "APIServerPodHealthy";
    /// The kube-controller-manager Pod.
    pub const CONTROLLER_MANAGER_POD_HEALTHY: &str = "ControllerManagerPodHealthy";
    /// The kube-scheduler Pod.
    pub const SCHEDULER_POD_HEALTHY: &str = "SchedulerPodHealthy";
    /// The etcd Pod.
    pub const ETCD_POD_HEALTHY: &str = "EtcdPodHealthy";
    /// The etcd member.
    pub const ETCD_MEMBER_HEALTHY: &str = "EtcdMemberHealthy";
}

/// KubeadmControlPlane annotations.
pub mod kcp_annotations {
    /// On Machines: the JSON of the ClusterConfiguration they were created with.
    pub const KUBEADM_CLUSTER_CONFIGURATION: &str =
        "controlplane.cluster.x-k8s.io/kubeadm-cluster-configuration";
}

/// Names and keys of the cluster Secrets (CAPI's `util/secret`).
pub mod cluster_secrets {
    /// Key of a certificate (or the service-account public key).
    pub const TLS_CRT: &str = "tls.crt";
    /// Key of a private key.
    pub const TLS_KEY: &str = "tls.key";
    /// Key of the kubeconfig in `<cluster>-kubeconfig`.
    pub const KUBECONFIG_VALUE: &str = "value";
    /// Suffixes of the certificate Secrets: cluster CA, etcd CA, front-proxy
    /// CA, service-account key pair.
    pub const CERTIFICATE_SUFFIXES: [&str; 4] = ["ca", "etcd", "proxy", "sa"];
    /// Suffix of the kubeconfig Secret.
    pub const KUBECONFIG_SUFFIX: &str = "kubeconfig";

    /// `<cluster>-<suffix>`.
    pub fn name(cluster: &str, suffix: &str) -> String {
        format!("{cluster}-{suffix}")
    }
}

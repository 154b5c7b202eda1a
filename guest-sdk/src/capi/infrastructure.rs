//! `infrastructure.cluster.x-k8s.io/v1beta2`: DevCluster and DevMachine(+Template) of the in-memory backend.

use super::cluster::object;
use super::{ApiEndpoint, INFRASTRUCTURE_GROUP};
use crate::conditions::Condition;
use crate::meta::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

object!(
    /// A DevCluster: the infrastructure cluster of CAPD's dev backends.
    DevCluster, INFRASTRUCTURE_GROUP, DevClusterSpec, InfraStatus
);
object!(
    /// A DevMachine: the infrastructure machine of CAPD's dev backends.
    DevMachine, INFRASTRUCTURE_GROUP, DevMachineSpec, InfraStatus
);
object!(
    /// A DevMachineTemplate: cloned into DevMachines.
    DevMachineTemplate, INFRASTRUCTURE_GROUP, DevMachineTemplateSpec, Value
);

/// DevCluster `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevClusterSpec {
    /// Where the workload API server answers (set by the provider).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// Which backend: `docker` or `inMemory` (an empty object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<DevClusterBackend>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// DevCluster `spec.backend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevClusterBackend {
    /// The in-memory backend (no settings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_memory: Option<Value>,
    /// Fields not modelled here (docker).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `status` of DevCluster and DevMachine (the provider contract fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InfraStatus {
    /// v1beta2 conditions (`Ready` is what CAPI mirrors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `provisioned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<InfraInitialization>,
    /// Failure domains (DevCluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<Vec<Value>>,
    /// Addresses (DevMachine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<Value>>,
    /// Failure domain (DevMachine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `status.initialization` of an infrastructure object (the contract field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InfraInitialization {
    /// The infrastructure is provisioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl InfraStatus {
    /// Whether `initialization.provisioned` is true.
    pub fn provisioned(&self) -> bool {
        self.initialization
            .as_ref()
            .and_then(|i| i.provisioned)
            .unwrap_or(false)
    }
}

/// DevMachine `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevMachineSpec {
    /// Provider ID, `in-memory://<name>` for the in-memory backend.
    #[serde(skip_serializing_if = "Option::is_none", rename = "providerID")]
    pub provider_id: Option<String>,
    /// Which backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<DevMachineBackend>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// DevMachine `spec.backend`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevMachineBackend {
    /// The in-memory backend's simulated startup times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_memory: Option<InMemoryMachineBackend>,
    /// Fields not modelled here (docker).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.backend.inMemory` of a DevMachine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InMemoryMachineBackend {
    /// The VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<InMemoryComponent>,
    /// The Node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<InMemoryComponent>,
    /// The API server Pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<InMemoryComponent>,
    /// The etcd Pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<InMemoryComponent>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One simulated component (`vm`, `node`, `apiServer`, `etcd`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InMemoryComponent {
    /// Startup simulation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<Provisioning>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `provisioning` of a simulated component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Provisioning {
    /// A Go duration, e.g. `10s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_duration: Option<String>,
    /// A fraction as a string, e.g. `"0.2"`: up to this share of the duration is added at random.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_jitter: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// DevMachineTemplate `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevMachineTemplateSpec {
    /// The DevMachine to clone.
    pub template: DevMachineTemplateResource,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.template` of a DevMachineTemplate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DevMachineTemplateResource {
    /// Labels and annotations for the clones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The DevMachine spec.
    pub spec: DevMachineSpec,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl InMemoryMachineBackend {
    /// The provisioning settings of `component` (`vm`, `node`, `apiServer`, `etcd`).
    pub fn provisioning(&self, component: Component) -> Option<&Provisioning> {
        match component {
            Component::Vm => self.vm.as_ref(),
            Component::Node => self.node.as_ref(),
            Component::ApiServer => self.api_server.as_ref(),
            Component::Etcd => self.etcd.as_ref(),
        }
        .and_then(|c| c.provisioning.as_ref())
    }
}

/// A simulated component of an in-memory machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The VM.
    Vm,
    /// The kubelet's Node.
    Node,
    /// The kube-apiserver static Pod.
    ApiServer,
    /// The etcd static Pod.
    Etcd,
}

impl Component {
    /// The field name under `spec.backend.inMemory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Node => "node",
            Self::ApiServer => "apiServer",
            Self::Etcd => "etcd",
        }
    }
}

/// DevCluster / DevMachine v1beta2 condition types and reasons of the
/// in-memory backend (`test/infrastructure/docker/api/v1beta2`).
pub mod dev_conditions {
    /// Summary condition CAPI mirrors into InfrastructureReady.
    pub const READY: &str = "Ready";
    /// The simulated VM is provisioned.
    pub const VM_PROVISIONED: &str = "VMProvisioned";
    /// The Node exists in the workload cluster.
    pub const NODE_PROVISIONED: &str = "NodeProvisioned";
    /// The etcd Pod runs (control-plane machines).
    pub const ETCD_PROVISIONED: &str = "EtcdProvisioned";
    /// The kube-apiserver Pod runs (control-plane machines).
    pub const API_SERVER_PROVISIONED: &str = "APIServerProvisioned";

    /// Ready true.
    pub const READY_REASON: &str = "Ready";
    /// Ready false.
    pub const NOT_READY_REASON: &str = "NotReady";
    /// Ready unknown.
    pub const READY_UNKNOWN_REASON: &str = "ReadyUnknown";
    /// A component is provisioned.
    pub const PROVISIONED_REASON: &str = "Provisioned";
    /// Waiting for the component's startup duration to pass.
    pub const WAITING_FOR_STARTUP_TIMEOUT_REASON: &str = "WaitingForStartupTimeout";
    /// Waiting for the Cluster's infrastructure.
    pub const WAITING_FOR_CLUSTER_INFRASTRUCTURE_REASON: &str = "WaitingForClusterInfrastructure";
    /// A worker waits for the control plane to be initialized.
    pub const WAITING_FOR_CONTROL_PLANE_INITIALIZED_REASON: &str =
        "WaitingForControlPlaneInitialized";
    /// Waiting for the Machine's bootstrap data.
    pub const WAITING_FOR_BOOTSTRAP_DATA_REASON: &str = "WaitingForBootstrapData";
    /// Waiting for the VM.
    pub const WAITING_FOR_VM_PROVISIONED_REASON: &str = "WaitingForVMProvisioned";
    /// Waiting for the Node.
    pub const WAITING_FOR_NODE_PROVISIONED_REASON: &str = "WaitingForNodeProvisioned";
    /// Something failed; see the logs.
    pub const INTERNAL_ERROR_REASON: &str = "InternalError";
}

//! `bootstrap.cluster.x-k8s.io/v1beta2`: KubeadmConfig(+Template) and their condition vocabulary.

use super::BOOTSTRAP_GROUP;
use super::cluster::object;
use crate::conditions::Condition;
use crate::meta::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

object!(
    /// A KubeadmConfig: how one Machine runs kubeadm.
    KubeadmConfig, BOOTSTRAP_GROUP, KubeadmConfigSpec, KubeadmConfigStatus
);
object!(
    /// A KubeadmConfigTemplate: cloned into KubeadmConfigs.
    KubeadmConfigTemplate, BOOTSTRAP_GROUP, KubeadmConfigTemplateSpec, Value
);

/// KubeadmConfig `spec` (also KCP's `spec.kubeadmConfigSpec`). The kubeadm
/// configurations are kept as JSON: the bootstrap provider renders them into
/// kubeadm's own API, and keeping them whole keeps every field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmConfigSpec {
    /// kubeadm ClusterConfiguration (first control-plane node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_configuration: Option<Value>,
    /// kubeadm InitConfiguration (first control-plane node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_configuration: Option<Value>,
    /// kubeadm JoinConfiguration (every other node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_configuration: Option<Value>,
    /// Files written before kubeadm runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
    /// Commands run before kubeadm.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_kubeadm_commands: Vec<String>,
    /// Commands run after kubeadm.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_kubeadm_commands: Vec<String>,
    /// Users to create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<Value>>,
    /// NTP settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Value>,
    /// `cloud-config` (default) or `ignition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Fields not modelled here (diskSetup, mounts, bootCommands, verbosity, ignition).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A file of `spec.files`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct File {
    /// Path on the node.
    pub path: String,
    /// `user:group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Octal permissions, e.g. `0640`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// `base64`, `gzip` or `gzip+base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Append instead of overwrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    /// Inline content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Content from a Secret key (`{secret: {name, key}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_from: Option<Value>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// KubeadmConfig `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmConfigStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `dataSecretCreated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initialization: Option<BootstrapInitialization>,
    /// The Secret holding the bootstrap data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `status.initialization` of a bootstrap config (the contract field).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BootstrapInitialization {
    /// The bootstrap data Secret exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_secret_created: Option<bool>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KubeadmConfig {
    /// Whether `status.initialization.dataSecretCreated` is true.
    pub fn data_secret_created(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.initialization.as_ref())
            .and_then(|i| i.data_secret_created)
            .unwrap_or(false)
    }
}

/// KubeadmConfigTemplate `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmConfigTemplateSpec {
    /// The KubeadmConfig to clone.
    pub template: KubeadmConfigTemplateResource,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.template` of a KubeadmConfigTemplate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeadmConfigTemplateResource {
    /// Labels and annotations for the clones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The KubeadmConfig spec.
    pub spec: KubeadmConfigSpec,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// KubeadmConfig v1beta2 condition types and reasons.
pub mod kubeadm_config_conditions {
    /// Summary of DataSecretAvailable (and CertificatesAvailable once computed).
    pub const READY: &str = "Ready";
    /// The bootstrap data Secret exists.
    pub const DATA_SECRET_AVAILABLE: &str = "DataSecretAvailable";
    /// The cluster certificates the data needs exist.
    pub const CERTIFICATES_AVAILABLE: &str = "CertificatesAvailable";
    /// Ready true.
    pub const READY_REASON: &str = "Ready";
    /// Ready false.
    pub const NOT_READY_REASON: &str = "NotReady";
    /// Ready unknown.
    pub const READY_UNKNOWN_REASON: &str = "ReadyUnknown";
    /// DataSecretAvailable true.
    pub const DATA_SECRET_AVAILABLE_REASON: &str = "Available";
    /// DataSecretAvailable false (waiting for the Cluster, or for the control plane).
    pub const DATA_SECRET_NOT_AVAILABLE_REASON: &str = "NotAvailable";
}

/// KubeadmConfig `CertificatesAvailable` reasons.
pub mod certificates_reasons {
    /// The cluster certificates the data needs exist.
    pub const AVAILABLE: &str = "Available";
    /// Some are missing.
    pub const NOT_AVAILABLE: &str = "NotAvailable";
}

/// Bootstrap token Secrets (kubeadm's `bootstrap.kubernetes.io/token`).
pub mod bootstrap_token {
    /// The Secret `type`.
    pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
    /// Namespace of the token Secrets in the workload cluster.
    pub const NAMESPACE: &str = "kube-system";
    /// The group kubeadm joins authenticate as.
    pub const EXTRA_GROUPS: &str = "system:bootstrappers:kubeadm:default-node-token";
    /// CABPK's default token TTL, in seconds (15 minutes).
    pub const DEFAULT_TTL_SECONDS: i64 = 15 * 60;

    /// `bootstrap-token-<id>`.
    pub fn secret_name(id: &str) -> String {
        format!("bootstrap-token-{id}")
    }
}

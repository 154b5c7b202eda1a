//! Cluster API v1beta2: typed objects, labels, annotations, finalizers, owner references, phases.
//!
//! The types model the fields Capstan's reconcilers read and write; every
//! level keeps the fields it does not model in an `extra` map, so an object
//! parsed and serialized again loses nothing (a desired object built from a
//! parsed one never drops what another controller wrote). Field names and
//! semantics follow the v1beta2 CRDs (the storage version) in
//! `../shared/capi/crds`; the contract is digested in `docs/capi.md`.

pub mod bootstrap;
pub mod cluster;
pub mod conditions;
pub mod controlplane;
pub mod fleet;
pub mod infrastructure;
#[cfg(test)]
mod round_trip;
pub mod time;

use crate::meta::{ObjectMeta, OwnerReference};
use crate::{Gvk, ObjectRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// API group of the core kinds (Cluster, Machine, MachineDeployment, ...).
pub const GROUP: &str = "cluster.x-k8s.io";
/// API group of KubeadmControlPlane(+Template).
pub const CONTROLPLANE_GROUP: &str = "controlplane.cluster.x-k8s.io";
/// API group of KubeadmConfig(+Template).
pub const BOOTSTRAP_GROUP: &str = "bootstrap.cluster.x-k8s.io";
/// API group of infrastructure providers (DevCluster, DevMachine, ...).
pub const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// The version Capstan's reconcilers read and write (CAPI's storage version).
pub const VERSION: &str = "v1beta2";

/// Labels CAPI sets and selects on.
pub mod labels {
    /// Names the Cluster an object belongs to; set on every cluster object.
    pub const CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
    /// Present (empty value) on control-plane Machines.
    pub const CONTROL_PLANE: &str = "cluster.x-k8s.io/control-plane";
    /// The KubeadmControlPlane owning a Machine.
    pub const CONTROL_PLANE_NAME: &str = "cluster.x-k8s.io/control-plane-name";
    /// The MachineSet owning a Machine.
    pub const MACHINE_SET_NAME: &str = "cluster.x-k8s.io/set-name";
    /// The MachineDeployment owning a MachineSet or Machine.
    pub const MACHINE_DEPLOYMENT_NAME: &str = "cluster.x-k8s.io/deployment-name";
    /// The MachinePool owning a Machine.
    pub const MACHINE_POOL_NAME: &str = "cluster.x-k8s.io/pool-name";
    /// Hash of a MachineDeployment's template.
    pub const MACHINE_TEMPLATE_HASH: &str = "machine-template-hash";
    /// Set on provider components.
    pub const PROVIDER: &str = "cluster.x-k8s.io/provider";
    /// Value matched by `--watch-filter`.
    pub const WATCH_FILTER: &str = "cluster.x-k8s.io/watch-filter";
    /// Marks interruptible (spot) Machines.
    pub const INTERRUPTIBLE: &str = "cluster.x-k8s.io/interruptible";
    /// Objects managed by a Cluster's topology.
    pub const TOPOLOGY_OWNED: &str = "topology.cluster.x-k8s.io/owned";
}

/// Annotations CAPI reads and writes.
pub mod annotations {
    /// Pauses reconciliation of the annotated object.
    pub const PAUSED: &str = "cluster.x-k8s.io/paused";
    /// Marks a Machine to delete first on scale down.
    pub const DELETE_MACHINE: &str = "cluster.x-k8s.io/delete-machine";
    /// Name of the template an object was cloned from.
    pub const CLONED_FROM_NAME: &str = "cluster.x-k8s.io/cloned-from-name";
    /// Group/kind of the template an object was cloned from.
    pub const CLONED_FROM_GROUP_KIND: &str = "cluster.x-k8s.io/cloned-from-groupkind";
    /// An infrastructure cluster managed outside CAPI.
    pub const MANAGED_BY: &str = "cluster.x-k8s.io/managed-by";
    /// Skip remediation of the annotated Machine.
    pub const SKIP_REMEDIATION: &str = "cluster.x-k8s.io/skip-remediation";
    /// On Nodes: the owning Cluster's name.
    pub const NODE_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
    /// On Nodes: the owning Cluster's namespace.
    pub const NODE_CLUSTER_NAMESPACE: &str = "cluster.x-k8s.io/cluster-namespace";
    /// On Nodes: the Machine's name.
    pub const NODE_MACHINE: &str = "cluster.x-k8s.io/machine";
    /// On Nodes: the kind of the Machine's owner.
    pub const NODE_OWNER_KIND: &str = "cluster.x-k8s.io/owner-kind";
    /// On Nodes: the name of the Machine's owner.
    pub const NODE_OWNER_NAME: &str = "cluster.x-k8s.io/owner-name";
    /// Machine: do not drain its Node on deletion.
    pub const EXCLUDE_NODE_DRAINING: &str = "machine.cluster.x-k8s.io/exclude-node-draining";
}

/// Finalizers, one per reconciler that owns cleanup.
pub mod finalizers {
    /// Cluster.
    pub const CLUSTER: &str = "cluster.cluster.x-k8s.io";
    /// Machine.
    pub const MACHINE: &str = "machine.cluster.x-k8s.io";
    /// MachineSet (HEAD).
    pub const MACHINE_SET: &str = "cluster.x-k8s.io/machineset";
    /// MachineDeployment (HEAD).
    pub const MACHINE_DEPLOYMENT: &str = "cluster.x-k8s.io/machinedeployment";
    /// KubeadmControlPlane.
    pub const KUBEADM_CONTROL_PLANE: &str = "kubeadm.controlplane.cluster.x-k8s.io";
    /// DevCluster (CAPD's finalizer name, kept by the in-memory backend).
    pub const DEV_CLUSTER: &str = "dockercluster.infrastructure.cluster.x-k8s.io";
    /// DevMachine (CAPD's finalizer name, kept by the in-memory backend).
    pub const DEV_MACHINE: &str = "dockermachine.infrastructure.cluster.x-k8s.io";
}

/// The `type` of Secrets CAPI creates (bootstrap data, certificates, kubeconfig).
pub const CLUSTER_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";

/// A typed CAPI object: its group/version/kind and its metadata.
pub trait Object: Serialize + DeserializeOwned {
    /// API group.
    const GROUP: &'static str;
    /// Kind.
    const KIND: &'static str;

    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;

    /// The kind's GVK at v1beta2.
    fn gvk() -> Gvk {
        Gvk::new(Self::GROUP, VERSION, Self::KIND)
    }

    /// `group/v1beta2`.
    fn api_version() -> String {
        format!("{}/{VERSION}", Self::GROUP)
    }

    /// A reference for deletions and events.
    fn object_ref(&self) -> ObjectRef {
        let m = self.metadata();
        ObjectRef {
            api_version: Self::api_version(),
            kind: Self::KIND.to_owned(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
        }
    }

    /// A controller owner reference to this object (`controller` and
    /// `blockOwnerDeletion` true, latest apiVersion), as
    /// controllerutil.SetControllerReference makes.
    fn controller_reference(&self) -> OwnerReference {
        let m = self.metadata();
        OwnerReference {
            api_version: Self::api_version(),
            kind: Self::KIND.to_owned(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// A skeleton of this object for an outcome: apiVersion, kind, name and
    /// namespace, to which a reconciler adds only the fields it owns.
    fn skeleton(&self) -> Value {
        let m = self.metadata();
        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(m.name.clone()));
        if !m.namespace.is_empty() {
            meta.insert("namespace".into(), Value::String(m.namespace.clone()));
        }
        let mut o = Map::new();
        o.insert("apiVersion".into(), Value::String(Self::api_version()));
        o.insert("kind".into(), Value::String(Self::KIND.to_owned()));
        o.insert("metadata".into(), Value::Object(meta));
        Value::Object(o)
    }
}

/// v1beta2 `ContractVersionedObjectReference`: a reference with group and
/// kind but no version (resolved through the provider contract) and no
/// namespace (always the referrer's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContractVersionedObjectReference {
    /// API group, e.g. `infrastructure.cluster.x-k8s.io`.
    pub api_group: String,
    /// Kind, e.g. `DevCluster`.
    pub kind: String,
    /// Name, in the referrer's namespace.
    pub name: String,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContractVersionedObjectReference {
    /// A reference to `kind` `name` in `api_group`.
    pub fn new(api_group: &str, kind: &str, name: &str) -> Self {
        Self {
            api_group: api_group.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            extra: Map::new(),
        }
    }

    /// Whether the reference is set (as CAPI's `IsDefined`: a name is given).
    pub fn is_defined(&self) -> bool {
        !self.name.is_empty()
    }

    /// Whether `object` (JSON) is what this reference names: same kind, same
    /// group (any version) and same name.
    pub fn matches(&self, object: &Value) -> bool {
        let s = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let group = s("/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
        s("/kind") == self.kind && group == self.api_group && s("/metadata/name") == self.name
    }
}

/// An API endpoint: host and port (`spec.controlPlaneEndpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiEndpoint {
    /// Host name or IP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Port.
    #[serde(skip_serializing_if = "is_zero")]
    pub port: i32,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl ApiEndpoint {
    /// Whether both host and port are set (CAPI's `IsValid`).
    pub fn is_valid(&self) -> bool {
        !self.host.is_empty() && self.port != 0
    }
}

impl std::fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parse a typed object from JSON text or value, naming `what` on failure.
pub fn parse<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T, crate::Error> {
    T::deserialize(value).map_err(|e| crate::Error::terminal(format!("{what} does not parse: {e}")))
}

/// Serialize `v` into a JSON value; serialization of these types cannot fail
/// (string keys, no non-finite floats), `Null` otherwise.
pub fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reference_matches_by_group_kind_and_name_only() {
        let r = ContractVersionedObjectReference::new(INFRASTRUCTURE_GROUP, "DevCluster", "c1");
        assert!(r.is_defined());
        let dc = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
            "metadata": {"name": "c1"}});
        assert!(r.matches(&dc));
        let other_kind = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
            "kind": "DockerCluster", "metadata": {"name": "c1"}});
        assert!(!r.matches(&other_kind));
        let other_group = json!({"apiVersion": "example.com/v1", "kind": "DevCluster", "metadata": {"name": "c1"}});
        assert!(!r.matches(&other_group));
        assert!(!ContractVersionedObjectReference::default().is_defined());
    }

    #[test]
    fn endpoint_validity_and_display() {
        let e: ApiEndpoint =
            serde_json::from_value(json!({"host": "10.0.0.1", "port": 6443})).expect("parses");
        assert!(e.is_valid());
        assert_eq!(e.to_string(), "10.0.0.1:6443");
        assert!(!ApiEndpoint::default().is_valid());
        assert_eq!(to_value(&ApiEndpoint::default()), json!({}));
    }
}

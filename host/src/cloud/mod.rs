//! The infrastructure API behind the WIT `cloud` capability: the trait the runtime calls, and its implementations.
//!
//! The runtime's `cloud` imports call a [`Cloud`] given in the runtime's
//! configuration; a plugin that did not declare the `cloud` capability, or a
//! runtime configured without a cloud, gets an error string back. Calls are
//! synchronous (reconciles run on blocking threads) and must return quickly:
//! anything long (an API server starting) is spawned, and its progress is
//! observable through later calls (`api_server_running`).

/// A reserved API endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address clients connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A simulated machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The provider ID Kubernetes Nodes carry, `in-memory://<name>`.
    pub provider_id: String,
    /// When the VM was created, RFC 3339.
    pub created: String,
}

/// Identifies one object in a workload cluster's store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `group/version` or `v1`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The infrastructure API a provider plugin drives (WIT `cloud`). `cluster`
/// is the Cluster API cluster as `namespace/name`. Every call is idempotent;
/// errors are messages the plugin receives as they are.
pub trait Cloud: Send + Sync + 'static {
    /// Reserve (or return) the cluster's API endpoint; its store exists from now on.
    fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, String>;
    /// Serve the cluster's API over HTTPS with a serving certificate signed by
    /// this CA (PEM), trusting client certificates signed by it.
    fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), String>;
    /// Whether the cluster's API server is serving.
    fn api_server_running(&self, cluster: &str) -> bool;
    /// Stop serving, drop the store and the VMs, free the endpoint.
    fn release_endpoint(&self, cluster: &str) -> Result<(), String>;
    /// Create (or return) a VM.
    fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, String>;
    /// The VM, if it exists.
    fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm>;
    /// Delete a VM (absent is not an error).
    fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), String>;
    /// Create or replace an object (JSON text) in the cluster's store.
    fn put_object(&self, cluster: &str, object: &str) -> Result<(), String>;
    /// An object of the cluster's store (JSON text), if present.
    fn get_object(&self, cluster: &str, object: &ObjectKey) -> Result<Option<String>, String>;
    /// Delete an object from the cluster's store (absent is not an error).
    fn delete_object(&self, cluster: &str, object: &ObjectKey) -> Result<(), String>;
}

mod inmemory;
pub use inmemory::{CloudMetrics, InMemoryCloud};

//! The `crypto` and `cloud` imports: capability check, bounds, counting, then native dispatch.
//!
//! A plugin declares the capabilities it uses in `plugin-info.capabilities`; a call to an
//! interface it did not declare returns the error `capability <name> not declared by the
//! plugin` (for the two cloud functions without an error channel: `false` / `none`) and is
//! counted in `capstan_capability_refusals_total{plugin,capability}`. `describe()` is granted
//! nothing.
//!
//! Bounds: a call may perform at most [`MAX_CRYPTO_OPS_PER_CALL`] crypto operations and
//! spend at most [`MAX_HOST_TIME_PER_CALL`] inside host operations; no host operation starts
//! once either is spent or the guest's own time has reached the call's deadline (the epoch
//! deadline only interrupts guest code, so a guest looping over host calls is stopped here).
//! Time spent inside host operations is not charged to the guest's deadline: an RSA key
//! generation on a loaded machine can take a second, and a deadline that counted it would
//! interrupt the reconcile after the expensive work was done and throw that work away (then
//! the retry redoes it: under load, a livelock). Every crypto input is size-checked
//! ([`super::crypto`]); cloud arguments are capped at [`MAX_CLOUD_ARG_BYTES`].
//!
//! Successful crypto operations are counted in
//! `capstan_crypto_operations_total{plugin,operation}` (operation: `generate_key_ecdsa`,
//! `generate_key_rsa`, `self_signed`, `sign`, `kubeconfig`), readable through
//! [`super::Runtime::crypto_operations`].

use super::bindings::capstan::reconciler::types::{Capabilities, ObjectRef};
use super::bindings::capstan::reconciler::{cloud, crypto};
use super::crypto as native;
use super::store::StoreData;
use crate::cloud::{Cloud, ObjectKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Crypto operations one reconcile call may perform.
pub const MAX_CRYPTO_OPS_PER_CALL: u32 = 64;
/// Wall time one reconcile call may spend inside host operations (crypto and cloud).
pub const MAX_HOST_TIME_PER_CALL: Duration = Duration::from_secs(60);
/// Largest cloud argument (an object's JSON text, a name, a PEM).
pub const MAX_CLOUD_ARG_BYTES: usize = 1 << 20;
/// The error of every cloud call on a runtime configured without a cloud.
pub const NO_CLOUD: &str = "no cloud is configured on this host";

/// The crypto operation names counted.
pub const CRYPTO_OPERATIONS: [&str; 5] = [
    "generate_key_ecdsa",
    "generate_key_rsa",
    "self_signed",
    "sign",
    "kubeconfig",
];

/// `{plugin, operation}` of `capstan_crypto_operations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Plugin name.
    pub plugin: String,
    /// One of [`CRYPTO_OPERATIONS`].
    pub operation: String,
}

/// `{plugin, capability}` of `capstan_capability_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    /// Plugin name.
    pub plugin: String,
    /// `crypto` or `cloud`.
    pub capability: String,
}

/// The runtime's counters of host calls; cheap to clone (shared families).
#[derive(Clone, Debug, Default)]
pub struct HostCallMetrics {
    crypto: Family<OperationLabels, Counter>,
    refused: Family<CapabilityLabels, Counter>,
}

impl HostCallMetrics {
    /// Register the families in `registry` (the manager's).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "capstan_crypto_operations",
            "Crypto operations performed for plugins (key generations, certificates, kubeconfigs)",
            self.crypto.clone(),
        );
        registry.register(
            "capstan_capability_refusals",
            "Host calls refused because the plugin did not declare the capability",
            self.refused.clone(),
        );
    }

    /// Crypto operations of `operation` performed for `plugin`.
    pub fn crypto_operations(&self, plugin: &str, operation: &str) -> u64 {
        self.crypto
            .get_or_create(&OperationLabels {
                plugin: plugin.into(),
                operation: operation.into(),
            })
            .get()
    }

    /// Calls of `plugin` refused for lack of `capability`.
    pub fn refusals(&self, plugin: &str, capability: &str) -> u64 {
        self.refused
            .get_or_create(&CapabilityLabels {
                plugin: plugin.into(),
                capability: capability.into(),
            })
            .get()
    }

    /// Create every series of `plugin` at zero (so `rate()` starts from a real series).
    pub(crate) fn init_plugin(&self, plugin: &str) {
        for op in CRYPTO_OPERATIONS {
            self.crypto_operations(plugin, op);
        }
        for cap in ["crypto", "cloud"] {
            self.refusals(plugin, cap);
        }
    }
}

/// What one call may use beyond `log` and `memo`.
#[derive(Clone)]
pub(crate) struct Grants {
    pub(crate) capabilities: Capabilities,
    pub(crate) cloud: Option<Arc<dyn Cloud>>,
    pub(crate) metrics: HostCallMetrics,
    /// When the call started.
    pub(crate) started: Instant,
    /// The guest's own time budget (the runtime's deadline): wall time since
    /// `started`, less the time spent inside host operations.
    pub(crate) budget: Duration,
    /// Wall time spent inside host operations so far.
    pub(crate) host_time: Duration,
    pub(crate) crypto_ops_left: u32,
}

impl Grants {
    /// Wall time since the call started, less the time spent in host operations.
    pub(crate) fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.host_time)
    }

    /// Run one host operation, charging its wall time to `host_time`.
    fn timed<R>(&mut self, op: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let out = op();
        self.host_time += t.elapsed();
        out
    }
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("capabilities", &self.capabilities)
            .field("cloud", &self.cloud.is_some())
            .field("crypto_ops_left", &self.crypto_ops_left)
            .finish_non_exhaustive()
    }
}

impl StoreData {
    fn allow(&mut self, capability: Capabilities, name: &str) -> Result<(), String> {
        let caps = &self.caps;
        if !caps.grants.capabilities.contains(capability) {
            caps.grants
                .metrics
                .refused
                .get_or_create(&CapabilityLabels {
                    plugin: caps.plugin.to_string(),
                    capability: name.to_string(),
                })
                .inc();
            tracing::warn!(target: "capstan::plugin", plugin = &*caps.plugin, key = &*caps.key,
                capability = name, "host call refused: capability not declared");
            return Err(format!("capability {name} not declared by the plugin"));
        }
        if caps.grants.guest_time() >= caps.grants.budget {
            return Err(format!(
                "{name} call refused: the reconcile call's deadline has passed"
            ));
        }
        if caps.grants.host_time >= MAX_HOST_TIME_PER_CALL {
            return Err(format!(
                "{name} call refused: the reconcile call spent its {} s of host operations",
                MAX_HOST_TIME_PER_CALL.as_secs()
            ));
        }
        Ok(())
    }

    fn crypto_op<T>(
        &mut self,
        operation: &'static str,
        op: impl FnOnce() -> Result<T, native::CryptoError>,
    ) -> Result<T, String> {
        self.allow(Capabilities::CRYPTO, "crypto")?;
        let g = &mut self.caps.grants;
        if g.crypto_ops_left == 0 {
            return Err(format!(
                "crypto operation limit of {MAX_CRYPTO_OPS_PER_CALL} per call reached"
            ));
        }
        g.crypto_ops_left -= 1;
        let out = g.timed(op).map_err(|e| e.to_string())?;
        g.metrics
            .crypto
            .get_or_create(&OperationLabels {
                plugin: self.caps.plugin.to_string(),
                operation: operation.to_string(),
            })
            .inc();
        Ok(out)
    }

    fn cloud(&mut self, args: &[&str]) -> Result<Arc<dyn Cloud>, String> {
        self.allow(Capabilities::CLOUD, "cloud")?;
        if let Some(a) = args.iter().find(|a| a.len() > MAX_CLOUD_ARG_BYTES) {
            return Err(format!(
                "cloud argument of {} bytes exceeds the limit of {MAX_CLOUD_ARG_BYTES}",
                a.len()
            ));
        }
        self.caps
            .grants
            .cloud
            .clone()
            .ok_or_else(|| NO_CLOUD.to_string())
    }

    /// Check the capability and `args`, then run `op` on the cloud, timed.
    fn with_cloud<R>(
        &mut self,
        args: &[&str],
        op: impl FnOnce(&dyn Cloud) -> Result<R, String>,
    ) -> Result<R, String> {
        let c = self.cloud(args)?;
        self.caps.grants.timed(|| op(c.as_ref()))
    }

    /// For the cloud functions without an error channel: log why, answer "no".
    fn cloud_or_log(&mut self, args: &[&str]) -> Option<Arc<dyn Cloud>> {
        match self.cloud(args) {
            Ok(c) => Some(c),
            Err(reason) => {
                tracing::debug!(target: "capstan::plugin", plugin = &*self.caps.plugin,
                    key = &*self.caps.key, %reason, "cloud call answered negatively");
                None
            }
        }
    }
}

fn object_key(r: &ObjectRef) -> ObjectKey {
    ObjectKey {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    }
}

impl crypto::Host for StoreData {
    fn generate_key(&mut self, algorithm: crypto::KeyAlgorithm) -> Result<crypto::KeyPair, String> {
        let op = match algorithm {
            crypto::KeyAlgorithm::EcdsaP256 => "generate_key_ecdsa",
            crypto::KeyAlgorithm::Rsa2048 => "generate_key_rsa",
        };
        self.crypto_op(op, || native::generate_key(algorithm))
    }

    fn self_signed(
        &mut self,
        private_key: String,
        request: crypto::CertificateRequest,
    ) -> Result<String, String> {
        self.crypto_op("self_signed", || {
            native::self_signed(&private_key, &request)
        })
    }

    fn sign(
        &mut self,
        issuer_certificate: String,
        issuer_key: String,
        public_key: String,
        request: crypto::CertificateRequest,
    ) -> Result<String, String> {
        self.crypto_op("sign", || {
            native::sign(&issuer_certificate, &issuer_key, &public_key, &request)
        })
    }

    fn kubeconfig(&mut self, request: crypto::KubeconfigRequest) -> Result<String, String> {
        self.crypto_op("kubeconfig", || native::kubeconfig(&request))
    }
}

impl cloud::Host for StoreData {
    fn reserve_endpoint(&mut self, cluster: String) -> Result<cloud::Endpoint, String> {
        let e = self.with_cloud(&[&cluster], |c| c.reserve_endpoint(&cluster))?;
        Ok(cloud::Endpoint {
            host: e.host,
            port: e.port,
        })
    }

    fn start_api_server(
        &mut self,
        cluster: String,
        ca_certificate: String,
        ca_key: String,
    ) -> Result<(), String> {
        self.with_cloud(&[&cluster, &ca_certificate, &ca_key], |c| {
            c.start_api_server(&cluster, &ca_certificate, &ca_key)
        })
    }

    fn api_server_running(&mut self, cluster: String) -> bool {
        let Some(c) = self.cloud_or_log(&[&cluster]) else {
            return false;
        };
        self.caps.grants.timed(|| c.api_server_running(&cluster))
    }

    fn release_endpoint(&mut self, cluster: String) -> Result<(), String> {
        self.with_cloud(&[&cluster], |c| c.release_endpoint(&cluster))
    }

    fn create_vm(&mut self, cluster: String, name: String) -> Result<cloud::Vm, String> {
        let vm = self.with_cloud(&[&cluster, &name], |c| c.create_vm(&cluster, &name))?;
        Ok(cloud::Vm {
            provider_id: vm.provider_id,
            created: vm.created,
        })
    }

    fn get_vm(&mut self, cluster: String, name: String) -> Option<cloud::Vm> {
        let c = self.cloud_or_log(&[&cluster, &name])?;
        let vm = self.caps.grants.timed(|| c.get_vm(&cluster, &name))?;
        Some(cloud::Vm {
            provider_id: vm.provider_id,
            created: vm.created,
        })
    }

    fn delete_vm(&mut self, cluster: String, name: String) -> Result<(), String> {
        self.with_cloud(&[&cluster, &name], |c| c.delete_vm(&cluster, &name))
    }

    fn put_object(&mut self, cluster: String, object: String) -> Result<(), String> {
        self.with_cloud(&[&cluster, &object], |c| c.put_object(&cluster, &object))
    }

    fn get_object(&mut self, cluster: String, object: ObjectRef) -> Result<Option<String>, String> {
        self.with_cloud(&[&cluster, &object.name], |c| {
            c.get_object(&cluster, &object_key(&object))
        })
    }

    fn delete_object(&mut self, cluster: String, object: ObjectRef) -> Result<(), String> {
        self.with_cloud(&[&cluster, &object.name], |c| {
            c.delete_object(&cluster, &object_key(&object))
        })
    }
}

//! The `crypto` and `cloud` imports: capability check, bounds, counting, then native dispatch.
//!
//! A plugin declares the capabilities it uses in `plugin-info.capabilities`; a call to an
//! interface it did not declare returns the error `capability <name> not declared by the
//! plugin` (for the two cloud functions without an error channel: `false` / `none`) and is
//! counted in `capstan_capability_refusals_total{plugin,capability}`. `describe()` is granted
//! nothing.
//!
//! Bounds: a call may perform at most [`MAX_CRYPTO_OPS_PER_CALL`] crypto operations, and no
//! host operation starts once the call's deadline has passed (the epoch deadline only
//! interrupts guest code, so a guest looping over host calls is stopped here). Time spent in
//! crypto operations is not charged to the guest: the deadline bounds the guest's own work,
//! and native key generation (RSA 2048 takes from tens of milliseconds to seconds, more on a
//! loaded machine or in a debug build) is bounded by the operation limit instead. Charging it
//! would interrupt a guest right after the host returned a fresh key and before the guest
//! could keep it (in `memo` or an outcome), so the next reconcile would generate it again. Every crypto
//! input is size-checked ([`super::crypto`]); cloud arguments are capped at
//! [`MAX_CLOUD_ARG_BYTES`].
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
    /// No host operation starts after this instant (moved later by [`Self::host_time`]).
    pub(crate) deadline: Instant,
    pub(crate) crypto_ops_left: u32,
    /// Time spent in crypto operations in this call: added to the deadline.
    pub(crate) host_time: Duration,
    /// The part of [`Self::host_time`] already added to the epoch deadline.
    pub(crate) credited: Duration,
}

impl Grants {
    /// The epoch ticks to extend the deadline by when it is reached (ticks of `tick`): the
    /// host time not yet credited, or `None` (interrupt) when there is none.
    pub(crate) fn extension(&mut self, tick: Duration) -> Option<u64> {
        let owed = self.host_time.saturating_sub(self.credited);
        if owed.is_zero() || tick.is_zero() {
            return None;
        }
        self.credited = self.host_time;
        Some(u64::try_from(owed.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u64::MAX))
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
        if Instant::now() >= caps.grants.deadline + caps.grants.host_time {
            return Err(format!(
                "{name} call refused: the reconcile call's deadline has passed"
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
        let started = Instant::now();
        let out = op();
        g.host_time += started.elapsed();
        let out = out.map_err(|e| e.to_string())?;
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
        let c = self.cloud(&[&cluster])?;
        let e = c.reserve_endpoint(&cluster)?;
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
        self.cloud(&[&cluster, &ca_certificate, &ca_key])?
            .start_api_server(&cluster, &ca_certificate, &ca_key)
    }

    fn api_server_running(&mut self, cluster: String) -> bool {
        self.cloud_or_log(&[&cluster])
            .is_some_and(|c| c.api_server_running(&cluster))
    }

    fn release_endpoint(&mut self, cluster: String) -> Result<(), String> {
        self.cloud(&[&cluster])?.release_endpoint(&cluster)
    }

    fn create_vm(&mut self, cluster: String, name: String) -> Result<cloud::Vm, String> {
        let vm = self.cloud(&[&cluster, &name])?.create_vm(&cluster, &name)?;
        Ok(cloud::Vm {
            provider_id: vm.provider_id,
            created: vm.created,
        })
    }

    fn get_vm(&mut self, cluster: String, name: String) -> Option<cloud::Vm> {
        let vm = self
            .cloud_or_log(&[&cluster, &name])?
            .get_vm(&cluster, &name)?;
        Some(cloud::Vm {
            provider_id: vm.provider_id,
            created: vm.created,
        })
    }

    fn delete_vm(&mut self, cluster: String, name: String) -> Result<(), String> {
        self.cloud(&[&cluster, &name])?.delete_vm(&cluster, &name)
    }

    fn put_object(&mut self, cluster: String, object: String) -> Result<(), String> {
        self.cloud(&[&cluster, &object])?
            .put_object(&cluster, &object)
    }

    fn get_object(&mut self, cluster: String, object: ObjectRef) -> Result<Option<String>, String> {
        self.cloud(&[&cluster, &object.name])?
            .get_object(&cluster, &object_key(&object))
    }

    fn delete_object(&mut self, cluster: String, object: ObjectRef) -> Result<(), String> {
        self.cloud(&[&cluster, &object.name])?
            .delete_object(&cluster, &object_key(&object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            capabilities: Capabilities::CRYPTO,
            cloud: None,
            metrics: HostCallMetrics::default(),
            deadline: Instant::now(),
            crypto_ops_left: MAX_CRYPTO_OPS_PER_CALL,
            host_time: Duration::ZERO,
            credited: Duration::ZERO,
        }
    }

    #[test]
    fn deadline_is_extended_by_uncredited_host_time_once() {
        let tick = Duration::from_millis(1);
        let mut g = grants();
        assert_eq!(g.extension(tick), None, "no host time: interrupt");
        g.host_time = Duration::from_micros(2500);
        assert_eq!(g.extension(tick), Some(3), "2.5 ms rounds up to 3 ticks");
        assert_eq!(g.extension(tick), None, "already credited: interrupt");
        g.host_time += Duration::from_millis(4);
        assert_eq!(g.extension(tick), Some(4), "only the new host time");
        assert_eq!(g.extension(Duration::ZERO), None);
    }
}

//! A native fake host, so plugin logic is unit-tested with plain `cargo test`.
//!
//! Crypto is faked with recognisable, deterministic PEM-shaped text (no real
//! keys: plugin logic only moves keys around), and counted, so a test can
//! assert how many keys a reconcile generated. The cloud is an in-memory
//! record of endpoints, API servers, VMs and workload objects. Calls to a
//! capability the plugin's `describe()` does not declare fail, as on the real
//! host.

use crate::cloud::{Endpoint, Vm};
use crate::crypto::{CertificateRequest, KeyAlgorithm, KeyPair, KubeconfigRequest};
use crate::{Capabilities, Context, Error, Host, Level, ObjectRef, Outcome, Reconciler, Snapshot};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

/// One workload object in the fake cloud: (cluster, apiVersion, kind, namespace, name).
pub type CloudObjectKey = (String, String, String, String, String);

/// The fake cloud's state.
#[derive(Debug, Default, Clone)]
pub struct FakeCloud {
    /// Reserved endpoints by cluster (`namespace/name`).
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Clusters whose API server is serving.
    pub running: BTreeSet<String>,
    /// VMs by (cluster, name).
    pub vms: BTreeMap<(String, String), Vm>,
    /// Workload objects (JSON text).
    pub objects: BTreeMap<CloudObjectKey, String>,
}

/// In-memory memo, captured logs, fake crypto and a fake cloud, standing in
/// for the Capstan host.
#[derive(Debug)]
pub struct FakeHost {
    memo: RefCell<BTreeMap<String, Vec<u8>>>,
    logs: RefCell<Vec<(Level, String)>>,
    granted: Cell<Capabilities>,
    keys_generated: Cell<u32>,
    certificates_issued: Cell<u32>,
    cloud: RefCell<FakeCloud>,
    now: RefCell<String>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            memo: RefCell::default(),
            logs: RefCell::default(),
            granted: Cell::new(Capabilities::all()),
            keys_generated: Cell::new(0),
            certificates_issued: Cell::new(0),
            cloud: RefCell::default(),
            now: RefCell::new("2026-01-01T00:00:00Z".to_owned()),
        }
    }
}

impl FakeHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `R::reconcile` on `snapshot` against this host, granting only the
    /// capabilities `R::describe()` declares.
    pub fn reconcile<R: Reconciler>(&self, snapshot: &Snapshot) -> Result<Outcome, Error> {
        self.granted.set(R::describe().capabilities);
        *self.now.borrow_mut() = snapshot.now().to_owned();
        R::reconcile(&Context::new(self), snapshot)
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// The memo's current contents.
    pub fn memo(&self) -> BTreeMap<String, Vec<u8>> {
        self.memo.borrow().clone()
    }

    /// Forget every memo entry, as a host eviction may.
    pub fn evict_memo(&self) {
        self.memo.borrow_mut().clear();
    }

    /// How many keys `generate-key` produced so far.
    pub fn keys_generated(&self) -> u32 {
        self.keys_generated.get()
    }

    /// How many certificates `self-signed` and `sign` issued so far.
    pub fn certificates_issued(&self) -> u32 {
        self.certificates_issued.get()
    }

    /// The fake cloud's state.
    pub fn cloud(&self) -> FakeCloud {
        self.cloud.borrow().clone()
    }

    /// Change the fake cloud's state (e.g. to simulate a lost VM).
    pub fn with_cloud<T>(&self, change: impl FnOnce(&mut FakeCloud) -> T) -> T {
        change(&mut self.cloud.borrow_mut())
    }

    fn check(&self, capability: Capabilities, name: &str) -> Result<(), String> {
        if self.granted.get().contains(capability) {
            Ok(())
        } else {
            Err(format!("capability {name} not declared by the plugin"))
        }
    }

    fn issue(&self, what: &str, request: &CertificateRequest, key: &str) -> String {
        self.certificates_issued
            .set(self.certificates_issued.get() + 1);
        let n = self.certificates_issued.get();
        format!(
            "-----BEGIN CERTIFICATE-----\nfake {what} certificate {n} cn={} o={} usage={:?} key-digest={}\n-----END CERTIFICATE-----\n",
            request.common_name,
            request.organizations.join(","),
            request.usage,
            key.len()
        )
    }
}

fn object_key(cluster: &str, r: &ObjectRef) -> CloudObjectKey {
    (
        cluster.to_owned(),
        r.api_version.clone(),
        r.kind.clone(),
        r.namespace.clone(),
        r.name.clone(),
    )
}

impl Host for FakeHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        self.memo.borrow().get(key).cloned()
    }

    fn memo_set(&self, key: &str, value: &[u8]) {
        self.memo
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
    }

    fn memo_remove(&self, key: &str) {
        self.memo.borrow_mut().remove(key);
    }

    fn generate_key(&self, algorithm: KeyAlgorithm) -> Result<KeyPair, String> {
        self.check(Capabilities::CRYPTO, "crypto")?;
        self.keys_generated.set(self.keys_generated.get() + 1);
        let n = self.keys_generated.get();
        Ok(KeyPair {
            private_key: format!(
                "-----BEGIN PRIVATE KEY-----\nfake {algorithm:?} private key {n}\n-----END PRIVATE KEY-----\n"
            ),
            public_key: format!(
                "-----BEGIN PUBLIC KEY-----\nfake {algorithm:?} public key {n}\n-----END PUBLIC KEY-----\n"
            ),
        })
    }

    fn self_signed(
        &self,
        private_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String> {
        self.check(Capabilities::CRYPTO, "crypto")?;
        if !private_key.contains("PRIVATE KEY") {
            return Err("private key is not a PEM private key".to_owned());
        }
        Ok(self.issue("self-signed", request, private_key))
    }

    fn sign(
        &self,
        issuer_certificate: &str,
        issuer_key: &str,
        public_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String> {
        self.check(Capabilities::CRYPTO, "crypto")?;
        if !issuer_certificate.contains("CERTIFICATE") || !issuer_key.contains("PRIVATE KEY") {
            return Err("issuer certificate or key is not PEM".to_owned());
        }
        if !public_key.contains("PUBLIC KEY") {
            return Err("public key is not a PEM public key".to_owned());
        }
        Ok(self.issue("signed", request, public_key))
    }

    fn kubeconfig(&self, r: &KubeconfigRequest) -> Result<String, String> {
        self.check(Capabilities::CRYPTO, "crypto")?;
        let user = format!("{}-admin", r.cluster_name);
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: {s}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {user}@{c}\n  context:\n    cluster: {c}\n    user: {user}\ncurrent-context: {user}@{c}\n",
            c = r.cluster_name,
            s = r.server,
            ca = r.certificate_authority.len(),
            cert = r.client_certificate.len(),
            key = r.client_key.len(),
        ))
    }

    fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        let mut cloud = self.cloud.borrow_mut();
        let next = 20000 + u16::try_from(cloud.endpoints.len()).unwrap_or(0);
        Ok(cloud
            .endpoints
            .entry(cluster.to_owned())
            .or_insert_with(|| Endpoint {
                host: "127.0.0.1".to_owned(),
                port: next,
            })
            .clone())
    }

    fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        if !ca_certificate.contains("CERTIFICATE") || !ca_key.contains("PRIVATE KEY") {
            return Err("CA certificate or key is not PEM".to_owned());
        }
        let mut cloud = self.cloud.borrow_mut();
        if !cloud.endpoints.contains_key(cluster) {
            return Err(format!("no endpoint reserved for cluster {cluster}"));
        }
        cloud.running.insert(cluster.to_owned());
        Ok(())
    }

    fn api_server_running(&self, cluster: &str) -> bool {
        self.check(Capabilities::CLOUD, "cloud").is_ok()
            && self.cloud.borrow().running.contains(cluster)
    }

    fn release_endpoint(&self, cluster: &str) -> Result<(), String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        let mut cloud = self.cloud.borrow_mut();
        cloud.endpoints.remove(cluster);
        cloud.running.remove(cluster);
        cloud.vms.retain(|(c, _), _| c != cluster);
        cloud.objects.retain(|k, _| k.0 != cluster);
        Ok(())
    }

    fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        let now = self.now.borrow().clone();
        Ok(self
            .cloud
            .borrow_mut()
            .vms
            .entry((cluster.to_owned(), name.to_owned()))
            .or_insert_with(|| Vm {
                provider_id: format!("in-memory://{name}"),
                created: now,
            })
            .clone())
    }

    fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm> {
        self.check(Capabilities::CLOUD, "cloud").ok()?;
        self.cloud
            .borrow()
            .vms
            .get(&(cluster.to_owned(), name.to_owned()))
            .cloned()
    }

    fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        self.cloud
            .borrow_mut()
            .vms
            .remove(&(cluster.to_owned(), name.to_owned()));
        Ok(())
    }

    fn put_object(&self, cluster: &str, object: &str) -> Result<(), String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        let value: serde_json::Value =
            serde_json::from_str(object).map_err(|e| format!("object is not JSON: {e}"))?;
        let r = ObjectRef::of(&value);
        if r.api_version.is_empty() || r.kind.is_empty() || r.name.is_empty() {
            return Err("object needs apiVersion, kind and metadata.name".to_owned());
        }
        self.cloud
            .borrow_mut()
            .objects
            .insert(object_key(cluster, &r), object.to_owned());
        Ok(())
    }

    fn get_object(&self, cluster: &str, object: &ObjectRef) -> Result<Option<String>, String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        Ok(self
            .cloud
            .borrow()
            .objects
            .get(&object_key(cluster, object))
            .cloned())
    }

    fn delete_object(&self, cluster: &str, object: &ObjectRef) -> Result<(), String> {
        self.check(Capabilities::CLOUD, "cloud")?;
        self.cloud
            .borrow_mut()
            .objects
            .remove(&object_key(cluster, object));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_round_trips_and_evicts() {
        let host = FakeHost::new();
        let ctx = Context::new(&host);
        let mut calls = 0;
        let v = ctx.memo_get_or_insert_with("k", || {
            calls += 1;
            b"v".to_vec()
        });
        assert_eq!(v, b"v");
        let _ = ctx.memo_get_or_insert_with("k", || {
            calls += 1;
            Vec::new()
        });
        assert_eq!(calls, 1);
        host.evict_memo();
        assert_eq!(ctx.memo_get("k"), None);
        ctx.info("hi");
        assert_eq!(host.logs(), vec![(Level::Info, "hi".to_owned())]);
    }

    struct NoCapabilities;

    impl Reconciler for NoCapabilities {
        fn describe() -> crate::PluginInfo {
            crate::PluginInfo::new("none", "0.1.0", crate::Gvk::new("", "v1", "ConfigMap"))
        }

        fn reconcile(ctx: &Context<'_>, _: &Snapshot) -> Result<Outcome, Error> {
            ctx.crypto().generate_key(KeyAlgorithm::EcdsaP256)?;
            Ok(Outcome::new())
        }
    }

    struct WithCrypto;

    impl Reconciler for WithCrypto {
        fn describe() -> crate::PluginInfo {
            NoCapabilities::describe().capabilities(Capabilities::CRYPTO)
        }

        fn reconcile(ctx: &Context<'_>, _: &Snapshot) -> Result<Outcome, Error> {
            let key = ctx.crypto().generate_key(KeyAlgorithm::Rsa2048)?;
            let request = CertificateRequest {
                common_name: "kubernetes".to_owned(),
                organizations: Vec::new(),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
                usage: crate::crypto::CertificateUsage::Authority,
                validity_seconds: 3600,
            };
            ctx.crypto().self_signed(&key.private_key, &request)?;
            ctx.cloud().reserve_endpoint("default/c1")?;
            Ok(Outcome::new())
        }
    }

    #[test]
    fn undeclared_capabilities_are_refused_and_declared_ones_counted() {
        let host = FakeHost::new();
        let snap = Snapshot::new(
            &serde_json::json!({"metadata": {"name": "x"}}),
            "2026-01-01T00:00:00Z",
        );
        let err = host.reconcile::<NoCapabilities>(&snap).unwrap_err();
        assert!(
            err.to_string().contains("capability crypto not declared"),
            "{err}"
        );
        assert_eq!(host.keys_generated(), 0);
        let err = host.reconcile::<WithCrypto>(&snap).unwrap_err();
        assert!(
            err.to_string().contains("capability cloud not declared"),
            "{err}"
        );
        assert_eq!((host.keys_generated(), host.certificates_issued()), (1, 1));
    }
}

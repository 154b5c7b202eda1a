//! The plugin's view of the host's capabilities (log, memo, crypto, cloud), real or fake.

use crate::Error;
use crate::ObjectRef;
use crate::cloud::{Endpoint, Vm};
use crate::crypto::{CertificateRequest, KeyAlgorithm, KeyPair, KubeconfigRequest};

/// Log levels, as in the WIT `log` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very verbose.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

/// The host capabilities a reconcile may use. The component uses the real
/// imports; [`crate::testing::FakeHost`] implements it in memory.
pub trait Host {
    /// Write one log line.
    fn log(&self, level: Level, message: &str);
    /// The memo value stored under `key`, if any.
    fn memo_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `value` under `key` (the host may refuse or evict it).
    fn memo_set(&self, key: &str, value: &[u8]);
    /// Remove the value under `key`.
    fn memo_remove(&self, key: &str);

    /// `crypto.generate-key`.
    fn generate_key(&self, algorithm: KeyAlgorithm) -> Result<KeyPair, String>;
    /// `crypto.self-signed`.
    fn self_signed(
        &self,
        private_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String>;
    /// `crypto.sign`.
    fn sign(
        &self,
        issuer_certificate: &str,
        issuer_key: &str,
        public_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String>;
    /// `crypto.kubeconfig`.
    fn kubeconfig(&self, request: &KubeconfigRequest) -> Result<String, String>;

    /// `cloud.reserve-endpoint`.
    fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, String>;
    /// `cloud.start-api-server`.
    fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), String>;
    /// `cloud.api-server-running`.
    fn api_server_running(&self, cluster: &str) -> bool;
    /// `cloud.release-endpoint`.
    fn release_endpoint(&self, cluster: &str) -> Result<(), String>;
    /// `cloud.create-vm`.
    fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, String>;
    /// `cloud.get-vm`.
    fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm>;
    /// `cloud.delete-vm`.
    fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), String>;
    /// `cloud.put-object`.
    fn put_object(&self, cluster: &str, object: &str) -> Result<(), String>;
    /// `cloud.get-object`.
    fn get_object(&self, cluster: &str, object: &ObjectRef) -> Result<Option<String>, String>;
    /// `cloud.delete-object`.
    fn delete_object(&self, cluster: &str, object: &ObjectRef) -> Result<(), String>;
}

/// Where a [`Context`]'s calls go.
///
/// In a component they go straight to the component's imports, not through a
/// `dyn Host`: a vtable would reference every import, so every plugin would
/// link all of them (crypto and cloud included), and each linked import costs
/// the host work at every instantiation, that is at every reconcile. Called
/// directly, an import is linked only when the plugin calls it.
#[derive(Clone, Copy)]
enum HostRef<'a> {
    /// The component's own imports (wasm32 only).
    #[cfg(target_arch = "wasm32")]
    Imports,
    /// A host implemented in Rust, e.g. [`crate::testing::FakeHost`].
    Dyn(&'a dyn Host),
}

/// Call `Host::$method` on the context's host: statically on the imports,
/// through the vtable otherwise.
macro_rules! host_call {
    ($host:expr, $method:ident($($arg:expr),* $(,)?)) => {
        match $host {
            #[cfg(target_arch = "wasm32")]
            HostRef::Imports => Host::$method(&WasmHost, $($arg),*),
            HostRef::Dyn(h) => h.$method($($arg),*),
        }
    };
}

/// What a reconcile receives besides its snapshot: logging and the memo.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    host: HostRef<'a>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context over these host capabilities.
    pub fn new(host: &'a dyn Host) -> Self {
        Self {
            host: HostRef::Dyn(host),
        }
    }

    /// The context of a component's reconcile: the component's imports.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn imports() -> Context<'static> {
        Context {
            host: HostRef::Imports,
        }
    }

    /// Log at `level`.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        host_call!(self.host, log(level, message.as_ref()));
    }

    /// Log at debug level.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Log at info level.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Log at warn level.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// The memo value under `key`, if present (it may have been evicted).
    pub fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        host_call!(self.host, memo_get(key))
    }

    /// Store `value` under `key`.
    pub fn memo_set(&self, key: &str, value: &[u8]) {
        host_call!(self.host, memo_set(key, value));
    }

    /// Remove `key` from the memo.
    pub fn memo_remove(&self, key: &str) {
        host_call!(self.host, memo_remove(key));
    }

    /// The `crypto` capability (declare it in `describe()`).
    pub fn crypto(&self) -> Crypto<'a> {
        Crypto { host: self.host }
    }

    /// The `cloud` capability (declare it in `describe()`).
    pub fn cloud(&self) -> Cloud<'a> {
        Cloud { host: self.host }
    }

    /// The memo value under `key`, computing and storing it when missing.
    pub fn memo_get_or_insert_with(&self, key: &str, compute: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        if let Some(v) = self.memo_get(key) {
            return v;
        }
        let v = compute();
        self.memo_set(key, &v);
        v
    }
}

/// Native key generation, certificates and kubeconfigs. Failures are
/// transient errors naming the operation.
#[derive(Clone, Copy)]
pub struct Crypto<'a> {
    host: HostRef<'a>,
}

impl std::fmt::Debug for Crypto<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto").finish_non_exhaustive()
    }
}

fn failed(operation: &str) -> impl FnOnce(String) -> Error + '_ {
    move |e| Error::transient(format!("{operation}: {e}"))
}

impl Crypto<'_> {
    /// Generate a key pair (expensive: keep the result).
    pub fn generate_key(&self, algorithm: KeyAlgorithm) -> Result<KeyPair, Error> {
        host_call!(self.host, generate_key(algorithm)).map_err(failed("generate key"))
    }

    /// A self-signed certificate (PEM) for `private_key`.
    pub fn self_signed(
        &self,
        private_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, Error> {
        host_call!(self.host, self_signed(private_key, request))
            .map_err(failed("self-sign certificate"))
    }

    /// A certificate (PEM) for `public_key`, signed by the issuer.
    pub fn sign(
        &self,
        issuer_certificate: &str,
        issuer_key: &str,
        public_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, Error> {
        host_call!(
            self.host,
            sign(issuer_certificate, issuer_key, public_key, request)
        )
        .map_err(failed("sign certificate"))
    }

    /// A kubeconfig (YAML) with client-certificate authentication.
    pub fn kubeconfig(&self, request: &KubeconfigRequest) -> Result<String, Error> {
        host_call!(self.host, kubeconfig(request)).map_err(failed("render kubeconfig"))
    }
}

/// The infrastructure API (the in-memory cloud in Capstan's simulator).
/// `cluster` is `namespace/name`. Failures are transient errors.
#[derive(Clone, Copy)]
pub struct Cloud<'a> {
    host: HostRef<'a>,
}

impl std::fmt::Debug for Cloud<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}

impl Cloud<'_> {
    /// Reserve (or return) the cluster's API endpoint.
    pub fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, Error> {
        host_call!(self.host, reserve_endpoint(cluster)).map_err(failed("reserve endpoint"))
    }

    /// Serve the cluster's API with a certificate signed by this CA.
    pub fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), Error> {
        host_call!(self.host, start_api_server(cluster, ca_certificate, ca_key))
            .map_err(failed("start api server"))
    }

    /// Whether the cluster's API server is serving.
    pub fn api_server_running(&self, cluster: &str) -> bool {
        host_call!(self.host, api_server_running(cluster))
    }

    /// Stop serving and free the endpoint, the store and the VMs.
    pub fn release_endpoint(&self, cluster: &str) -> Result<(), Error> {
        host_call!(self.host, release_endpoint(cluster)).map_err(failed("release endpoint"))
    }

    /// Create (or return) a VM.
    pub fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, Error> {
        host_call!(self.host, create_vm(cluster, name)).map_err(failed("create vm"))
    }

    /// The VM, if it exists.
    pub fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm> {
        host_call!(self.host, get_vm(cluster, name))
    }

    /// Delete a VM (absent is fine).
    pub fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), Error> {
        host_call!(self.host, delete_vm(cluster, name)).map_err(failed("delete vm"))
    }

    /// Create or replace an object in the workload cluster's store.
    pub fn put_object(&self, cluster: &str, object: &impl serde::Serialize) -> Result<(), Error> {
        let json = serde_json::to_string(object)
            .map_err(|e| Error::terminal(format!("object does not serialize: {e}")))?;
        host_call!(self.host, put_object(cluster, &json)).map_err(failed("put workload object"))
    }

    /// An object of the workload cluster's store, parsed.
    pub fn get_object<T: serde::de::DeserializeOwned>(
        &self,
        cluster: &str,
        object: &ObjectRef,
    ) -> Result<Option<T>, Error> {
        let Some(json) = host_call!(self.host, get_object(cluster, object))
            .map_err(failed("get workload object"))?
        else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| {
            Error::terminal(format!(
                "workload {} {}/{} does not parse: {e}",
                object.kind, object.namespace, object.name
            ))
        })
    }

    /// Delete an object from the workload cluster's store (absent is fine).
    pub fn delete_object(&self, cluster: &str, object: &ObjectRef) -> Result<(), Error> {
        host_call!(self.host, delete_object(cluster, object))
            .map_err(failed("delete workload object"))
    }
}

/// The real host, through the component's imports. Only ever called
/// statically (see [`HostRef`]): made a `dyn Host`, its vtable would link
/// every import into every plugin.
#[cfg(target_arch = "wasm32")]
pub(crate) struct WasmHost;

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn log(&self, level: Level, message: &str) {
        use crate::bindings::capstan::reconciler::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }

    fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        crate::bindings::capstan::reconciler::memo::get(key)
    }

    fn memo_set(&self, key: &str, value: &[u8]) {
        crate::bindings::capstan::reconciler::memo::set(key, value);
    }

    fn memo_remove(&self, key: &str) {
        crate::bindings::capstan::reconciler::memo::remove(key);
    }

    fn generate_key(&self, algorithm: KeyAlgorithm) -> Result<KeyPair, String> {
        crate::bindings::capstan::reconciler::crypto::generate_key(algorithm)
    }

    fn self_signed(
        &self,
        private_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String> {
        crate::bindings::capstan::reconciler::crypto::self_signed(private_key, request)
    }

    fn sign(
        &self,
        issuer_certificate: &str,
        issuer_key: &str,
        public_key: &str,
        request: &CertificateRequest,
    ) -> Result<String, String> {
        crate::bindings::capstan::reconciler::crypto::sign(
            issuer_certificate,
            issuer_key,
            public_key,
            request,
        )
    }

    fn kubeconfig(&self, request: &KubeconfigRequest) -> Result<String, String> {
        crate::bindings::capstan::reconciler::crypto::kubeconfig(request)
    }

    fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, String> {
        crate::bindings::capstan::reconciler::cloud::reserve_endpoint(cluster)
    }

    fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), String> {
        crate::bindings::capstan::reconciler::cloud::start_api_server(
            cluster,
            ca_certificate,
            ca_key,
        )
    }

    fn api_server_running(&self, cluster: &str) -> bool {
        crate::bindings::capstan::reconciler::cloud::api_server_running(cluster)
    }

    fn release_endpoint(&self, cluster: &str) -> Result<(), String> {
        crate::bindings::capstan::reconciler::cloud::release_endpoint(cluster)
    }

    fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, String> {
        crate::bindings::capstan::reconciler::cloud::create_vm(cluster, name)
    }

    fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm> {
        crate::bindings::capstan::reconciler::cloud::get_vm(cluster, name)
    }

    fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), String> {
        crate::bindings::capstan::reconciler::cloud::delete_vm(cluster, name)
    }

    fn put_object(&self, cluster: &str, object: &str) -> Result<(), String> {
        crate::bindings::capstan::reconciler::cloud::put_object(cluster, object)
    }

    fn get_object(&self, cluster: &str, object: &ObjectRef) -> Result<Option<String>, String> {
        crate::bindings::capstan::reconciler::cloud::get_object(cluster, object)
    }

    fn delete_object(&self, cluster: &str, object: &ObjectRef) -> Result<(), String> {
        crate::bindings::capstan::reconciler::cloud::delete_object(cluster, object)
    }
}

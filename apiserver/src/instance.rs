//! An API server whose store exists before it serves: reserve a port, write objects directly, serve HTTPS later under a given CA, stop.
//!
//! This is the shape a simulated workload cluster needs (the in-memory cloud of the host):
//! [`Instance::reserve`] binds `127.0.0.1:0` at once, so the endpoint (host and port) is
//! known and stable before anything answers on it; the machines of the cluster write their
//! objects straight into the store ([`Instance::put`], [`Instance::delete`]), exactly as an
//! API create/update/delete would (resourceVersions, watch events, garbage collection);
//! [`Instance::serve_tls`] starts answering HTTPS with a serving certificate signed by the
//! cluster's CA and accepts only client certificates signed by that CA; [`Instance::stop`]
//! closes the listener and every connection.
//!
//! Many instances share one process: an instance is a store, one accept task and one task
//! per open connection, nothing more (no thread pool, no per-instance runtime). The event
//! history is small by default ([`InstanceOptions::history`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{Inner, Knobs};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::ops::{self, DeleteOpts, Sub};
use crate::server::{ServerBuilder, ServerError, accept_loop};
use crate::status::ApiError;
use crate::store::{self, State};

/// The field manager recorded for direct writes.
pub const DIRECT_MANAGER: &str = "capstan-cloud";

/// Settings of an [`Instance`].
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// Events kept for watches from an older resourceVersion (default 1000: a workload
    /// cluster's watchers are few and current).
    pub history: usize,
    /// Interval of watch bookmarks (default 60 s).
    pub bookmark_interval: Duration,
    /// Capacity of each watched resource's event channel (default 64). The channel is
    /// preallocated (about 40 bytes a slot) per watched resource; a watcher that falls
    /// further behind catches up from the history, so a workload cluster needs few slots.
    pub fanout_capacity: usize,
}

impl Default for InstanceOptions {
    fn default() -> Self {
        Self {
            history: 1000,
            bookmark_interval: Duration::from_secs(60),
            fanout_capacity: 64,
        }
    }
}

#[derive(Debug)]
enum Listen {
    /// Bound, not serving yet.
    Reserved(std::net::TcpListener),
    /// Serving: stop signal and accept task.
    Serving(oneshot::Sender<()>, JoinHandle<()>),
    /// Stopped; the port is free (or being freed).
    Stopped,
}

#[derive(Debug)]
struct Core {
    inner: Arc<Inner>,
    local: SocketAddr,
    listen: Mutex<Listen>,
}

/// A workload-cluster API server: store now, HTTPS later. Cloning gives another handle.
#[derive(Debug, Clone)]
pub struct Instance {
    core: Arc<Core>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl Instance {
    /// Binds `addr` now (e.g. `127.0.0.1:0`: the kernel picks a port that stays this
    /// instance's) and creates the store with the default namespaces. Nothing answers until
    /// [`Instance::serve_tls`]; connections made before wait in the listen backlog.
    pub fn reserve(addr: &str, options: &InstanceOptions) -> Result<Self, ServerError> {
        let bind = |source| ServerError::Bind {
            addr: addr.into(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let mut state = ServerBuilder::default()
            .history_limit(options.history)
            .seeded_state()?;
        state.fanout_capacity = options.fanout_capacity;
        let (drop_tx, _) = tokio::sync::watch::channel(0u64);
        let inner = Arc::new(Inner {
            state: parking_lot::RwLock::new(state),
            metrics: Metrics::default(),
            knobs: Knobs::default(),
            tokens: Vec::new(),
            require_auth: true,
            addr: local.to_string(),
            drop_watches: drop_tx,
            bookmark_interval: options.bookmark_interval,
            continue_floor: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(Self {
            core: Arc::new(Core {
                inner,
                local,
                listen: Mutex::new(Listen::Reserved(listener)),
            }),
        })
    }

    /// The reserved address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.core.local)
    }

    /// Whether the instance is serving.
    pub fn is_serving(&self) -> bool {
        matches!(*self.core.listen.lock(), Listen::Serving(..))
    }

    /// Starts serving HTTPS: a serving certificate for `127.0.0.1` and `localhost` signed by
    /// the CA (PEM certificate and private key, RSA or ECDSA), client certificates signed by
    /// the same CA required (no bearer tokens). Idempotent while serving. Must be called
    /// within a tokio runtime (the accept loop is spawned on it).
    pub fn serve_tls(&self, ca_cert_pem: &str, ca_key_pem: &str) -> Result<(), ServerError> {
        let mut listen = self.core.listen.lock();
        let listener = match std::mem::replace(&mut *listen, Listen::Stopped) {
            Listen::Reserved(l) => l,
            serving @ Listen::Serving(..) => {
                *listen = serving;
                return Ok(());
            }
            Listen::Stopped => return Err(ServerError::Stopped),
        };
        let config = match serving_config(ca_cert_pem, ca_key_pem) {
            Ok(c) => c,
            Err(e) => {
                *listen = Listen::Reserved(listener);
                return Err(e);
            }
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(source) => {
                return Err(ServerError::Bind {
                    addr: self.core.local.to_string(),
                    source,
                });
            }
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(
            listener,
            self.core.inner.clone(),
            Some(acceptor),
            stop_rx,
        ));
        *listen = Listen::Serving(stop_tx, task);
        tracing::debug!(addr = %self.core.local, "workload api server serving");
        Ok(())
    }

    /// Stops serving (or releases the reserved port): the listener closes and every
    /// connection and watch ends. The store stays readable through this handle.
    pub fn stop(&self) {
        let old = std::mem::replace(&mut *self.core.listen.lock(), Listen::Stopped);
        if let Listen::Serving(tx, _task) = old {
            // The accept loop ends its connections and drops the listener.
            let _ = tx.send(());
        }
    }

    /// Stops and waits until the listener and connections are closed.
    pub async fn stop_and_wait(&self) {
        let old = std::mem::replace(&mut *self.core.listen.lock(), Listen::Stopped);
        if let Listen::Serving(tx, task) = old {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Creates or replaces an object (JSON) directly in the store, with the metadata,
    /// resourceVersion and watch event an API create or update would produce. Unlike an API
    /// write, `status` is kept on create and replaced on update (the machine itself writes
    /// it). Returns the stored object.
    pub fn put(&self, obj: Value) -> Result<Value, ApiError> {
        let (rt, ns, name) = {
            let st = self.core.inner.state.read();
            resolve(&st, &obj)?
        };
        let status = obj.get("status").cloned();
        let key = store::key(&ns, &name);
        let table = rt.storage_key();
        let mut st = self.core.inner.state.write();
        match st.get(&table, &key).cloned() {
            None => {
                let ns_arg = rt.namespaced.then_some(ns.as_str());
                let mut prepared = ops::prepare_create(&rt, ns_arg, obj, DIRECT_MANAGER, 0, false)?;
                if rt.status_subresource
                    && let (Some(s), Some(m)) = (status, prepared.as_object_mut())
                {
                    m.insert("status".into(), s);
                }
                let stored = ops::commit_create(&mut st, &rt, prepared, false)?;
                Ok(stored.value())
            }
            Some(old) => {
                let oldv = old.value();
                let main = ops::prepare_update(
                    &rt,
                    &oldv,
                    obj.clone(),
                    Sub::Main,
                    DIRECT_MANAGER,
                    true,
                    false,
                )?;
                let base = main.clone().unwrap_or_else(|| oldv.clone());
                let with_status = if rt.status_subresource {
                    let mut s = base.clone();
                    if let Some(m) = s.as_object_mut() {
                        match status {
                            Some(v) => m.insert("status".into(), v),
                            None => m.remove("status"),
                        };
                    }
                    ops::prepare_update(&rt, &base, s, Sub::Status, DIRECT_MANAGER, true, false)?
                } else {
                    None
                };
                match with_status.or(main) {
                    Some(new) => Ok(ops::commit_update(&mut st, &rt, &key, new, false).value()),
                    None => Ok(oldv),
                }
            }
        }
    }

    /// The stored object, if present.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let st = self.core.inner.state.read();
        let rt = kind_type(&st, api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { "" };
        Ok(st
            .get(&rt.storage_key(), &store::key(ns, name))
            .map(|o| o.value()))
    }

    /// Deletes an object as an API DELETE would (finalizers honoured, dependents collected
    /// in the background). Returns whether it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ApiError> {
        let mut st = self.core.inner.state.write();
        let rt = kind_type(&st, api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { "" };
        match ops::delete(&mut st, &rt, ns, name, &DeleteOpts::default()) {
            Ok(_) => Ok(true),
            Err(e) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.core.inner.state.read().object_count()
    }

    /// Request counts, watches, objects.
    pub fn metrics(&self) -> MetricsSnapshot {
        let st = self.core.inner.state.read();
        self.core
            .inner
            .metrics
            .snapshot(st.object_count(), st.json_bytes, st.rv)
    }
}

fn kind_type(
    st: &State,
    api_version: &str,
    kind: &str,
) -> Result<Arc<crate::registry::ResourceType>, ApiError> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    st.registry
        .by_kind(group, kind)
        .filter(|rt| rt.version == version || st.registry.has_version(group, version))
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind {kind} is registered for version {api_version}"
            ))
        })
}

fn resolve(
    st: &State,
    obj: &Value,
) -> Result<(Arc<crate::registry::ResourceType>, String, String), ApiError> {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let rt = kind_type(st, s("/apiVersion"), s("/kind"))?;
    let name = s("/metadata/name");
    if name.is_empty() {
        return Err(ApiError::bad_request("metadata.name is required"));
    }
    let ns = if rt.namespaced {
        let ns = s("/metadata/namespace");
        if ns.is_empty() { "default" } else { ns }
    } else {
        ""
    };
    Ok((rt, ns.to_string(), name.to_string()))
}

/// The TLS configuration of a workload API server: a fresh P-256 serving key with a
/// certificate signed by the CA, and client certificates verified against the CA.
fn serving_config(
    ca_cert_pem: &str,
    ca_key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| ServerError::Pem(format!("CA certificate: {e}")))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone(), ca_der], key_der)?;
    // HTTP/2 first: a workload cluster's clients (the host's cluster cache) multiplex
    // every watch over one connection.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

//! Starting and stopping servers: listener, TLS with a CA generated at start, kubeconfig,
//! preinstalled CRDs, and the multi-instance `ServerSet`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{Inner, Knobs, handle};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::ops;
use crate::store::State;

/// Errors starting a server or loading its CRDs.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address does not parse or cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A CRD file cannot be read.
    #[error("cannot read CRD file {path}: {source}")]
    ReadCrd {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CRD document does not parse.
    #[error("cannot parse CRD document in {path}: {message}")]
    ParseCrd {
        /// The file.
        path: String,
        /// The parse error.
        message: String,
    },
    /// A CRD was rejected.
    #[error("CRD {name} rejected: {source}")]
    InstallCrd {
        /// CRD name.
        name: String,
        /// The API error.
        #[source]
        source: crate::status::ApiError,
    },
    /// Writing the kubeconfig failed.
    #[error("cannot write kubeconfig {path}: {source}")]
    WriteKubeconfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A server of that name already runs in the set.
    #[error("a server named {0} already runs")]
    Duplicate(String),
    /// A PEM input does not parse.
    #[error("cannot parse PEM: {0}")]
    Pem(String),
    /// The instance was stopped; its port is gone.
    #[error("the server was stopped")]
    Stopped,
}

/// Configures and starts a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    tls: bool,
    crd_sources: Vec<PathBuf>,
    crd_docs: Vec<(String, String)>,
    history: usize,
    bookmark_interval: Duration,
    latency: Duration,
    rate_limit: Option<(f64, u32)>,
    token: Option<String>,
    name: String,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            tls: true,
            crd_sources: vec![],
            crd_docs: vec![],
            history: 10_000,
            bookmark_interval: Duration::from_secs(30),
            latency: Duration::ZERO,
            rate_limit: None,
            token: None,
            name: "capstan".into(),
        }
    }
}

impl ServerBuilder {
    /// Serve plain HTTP without authentication (tests).
    pub fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Serve HTTPS with a CA generated at start, bearer-token and client-certificate auth (default).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Install every CRD in the YAML files of a directory (recursively) at start.
    pub fn crds_from_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.crd_sources.push(dir.as_ref().to_path_buf());
        self
    }

    /// Install the CRDs of one YAML file (multi-document allowed) at start.
    pub fn crd_file(mut self, file: impl AsRef<Path>) -> Self {
        self.crd_sources.push(file.as_ref().to_path_buf());
        self
    }

    /// Install CRDs from YAML text at start.
    pub fn crd_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.crd_docs.push(("<inline>".into(), yaml.into()));
        self
    }

    /// Events kept for watches from an older resourceVersion (default 10000).
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// Interval of watch bookmarks (default 30 s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Latency added to every request.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    /// Request rate limit answered with 429 + Retry-After.
    pub fn rate_limit(mut self, qps: f64, burst: u32) -> Self {
        self.rate_limit = Some((qps, burst));
        self
    }

    /// Fixed bearer token (default: random).
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into());
        self
    }

    /// Cluster/context name in the kubeconfig.
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = n.into();
        self
    }

    /// A store holding the default namespaces and the configured CRDs.
    pub(crate) fn seeded_state(&self) -> Result<State, ServerError> {
        let mut state = State::new(self.history);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let rt = state
                .registry
                .get("", "v1", "namespaces")
                .cloned()
                .ok_or_else(|| internal("namespaces type"))?;
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let prepared = ops::prepare_create(&rt, None, obj, "capstan-apiserver", 0, false)
                .map_err(|e| ServerError::InstallCrd {
                    name: ns.into(),
                    source: e,
                })?;
            ops::commit_create(&mut state, &rt, prepared, false).map_err(|e| {
                ServerError::InstallCrd {
                    name: ns.into(),
                    source: e,
                }
            })?;
        }
        let mut docs = self.crd_docs.clone();
        for src in &self.crd_sources {
            for f in yaml_files(src)? {
                let text = std::fs::read_to_string(&f).map_err(|source| ServerError::ReadCrd {
                    path: f.clone(),
                    source,
                })?;
                docs.push((f.display().to_string(), text));
            }
        }
        for (path, text) in docs {
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value =
                    serde::Deserialize::deserialize(doc).map_err(|e| ServerError::ParseCrd {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if v.is_null() {
                    continue;
                }
                install_crd(&mut state, v)?;
            }
        }
        Ok(state)
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts serving.
    pub async fn start(self, addr: &str) -> Result<Server, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: addr.into(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: addr.into(),
            source,
        })?;
        let token = self
            .token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let tls = if self.tls {
            Some(TlsMaterial::generate(local)?)
        } else {
            None
        };
        let state = self.seeded_state()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{local}");
        let (drop_tx, _) = tokio::sync::watch::channel(0u64);
        let knobs = Knobs::default();
        knobs.set_latency(self.latency);
        knobs.set_rate_limit(self.rate_limit);
        let inner = Arc::new(Inner {
            state: RwLock::new(state),
            metrics: Metrics::default(),
            knobs,
            tokens: vec![token.clone()],
            require_auth: tls.is_some(),
            addr: local.to_string(),
            drop_watches: drop_tx,
            bookmark_interval: self.bookmark_interval,
            continue_floor: std::sync::atomic::AtomicU64::new(0),
        });
        let kubeconfig = kubeconfig(&self.name, &url, &token, tls.as_ref());
        let acceptor = match &tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(t.server_config()?)),
            None => None,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, inner.clone(), acceptor, stop_rx));
        tracing::info!(%url, "capstan-apiserver listening");
        Ok(Server {
            core: Arc::new(Core {
                inner,
                url,
                local,
                token,
                kubeconfig,
                tls,
                stop: Mutex::new(Some((stop_tx, task))),
            }),
        })
    }
}

fn internal(what: &str) -> ServerError {
    ServerError::InstallCrd {
        name: what.into(),
        source: crate::status::ApiError::internal(format!("missing {what}")),
    }
}

fn install_crd(state: &mut State, v: Value) -> Result<(), ServerError> {
    let rt = state
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
        .ok_or_else(|| internal("customresourcedefinitions type"))?;
    let name = ops::name_of(&v).to_string();
    let prepared =
        ops::prepare_create(&rt, None, v, "capstan-apiserver", 0, false).map_err(|source| {
            ServerError::InstallCrd {
                name: name.clone(),
                source,
            }
        })?;
    ops::commit_create(state, &rt, prepared, false)
        .map_err(|source| ServerError::InstallCrd { name, source })?;
    Ok(())
}

fn yaml_files(p: &Path) -> Result<Vec<PathBuf>, ServerError> {
    if p.is_file() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut out = vec![];
    let rd = std::fs::read_dir(p).map_err(|source| ServerError::ReadCrd {
        path: p.to_path_buf(),
        source,
    })?;
    for e in rd {
        let e = e.map_err(|source| ServerError::ReadCrd {
            path: p.to_path_buf(),
            source,
        })?;
        let path = e.path();
        if path.is_dir() {
            out.extend(yaml_files(&path)?);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                let inner = inner.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    // HTTP/1.1, or HTTP/2 when the client starts with its preface (the
                    // servers that offer `h2` by ALPN: workload clusters' instances).
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match acceptor {
                        None => {
                            let svc = service_fn(move |req| handle(inner.clone(), req, false));
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acc) => {
                            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await else { return };
                            let cert_ok = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                            let svc = service_fn(move |req| handle(inner.clone(), req, cert_ok));
                            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                });
            }
        }
    }
    inner.drop_watches.send_modify(|g| *g += 1);
    conns.shutdown().await;
}

/// Certificates generated at start: a CA, the serving certificate, an admin client certificate.
#[derive(Debug)]
pub struct TlsMaterial {
    /// CA certificate (PEM).
    pub ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_der: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
    /// Admin client certificate (PEM), CN=capstan-admin, O=system:masters.
    pub client_cert_pem: String,
    /// Admin client key (PEM).
    pub client_key_pem: String,
}

impl TlsMaterial {
    fn generate(local: SocketAddr) -> Result<Self, ServerError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "capstan-apiserver-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let srv_key = KeyPair::generate()?;
        let mut srv = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        srv.distinguished_name
            .push(DnType::CommonName, "capstan-apiserver");
        srv.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        if !local.ip().is_unspecified() && !local.ip().is_loopback() {
            srv.subject_alt_names.push(SanType::IpAddress(local.ip()));
        }
        srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let srv_cert = srv.signed_by(&srv_key, &issuer)?;
        let cli_key = KeyPair::generate()?;
        let mut cli = CertificateParams::new(Vec::<String>::new())?;
        cli.distinguished_name
            .push(DnType::CommonName, "capstan-admin");
        cli.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        cli.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cli_cert = cli.signed_by(&cli_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_der: srv_cert.der().clone(),
            server_key_der: srv_key.serialize_der(),
            client_cert_pem: cli_cert.pem(),
            client_key_pem: cli_key.serialize_pem(),
        })
    }

    fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server_der.clone()], key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

fn kubeconfig(name: &str, url: &str, token: &str, tls: Option<&TlsMaterial>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    match tls {
        Some(t) => format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}-admin\n  user:\n    token: {token}\n- name: {name}-admin-cert\n  user:\n    client-certificate-data: {cc}\n    client-key-data: {ck}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\n- name: {name}-cert\n  context:\n    cluster: {name}\n    user: {name}-admin-cert\n    namespace: default\ncurrent-context: {name}\n",
            ca = b64(&t.ca_pem),
            cc = b64(&t.client_cert_pem),
            ck = b64(&t.client_key_pem),
        ),
        None => format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\nusers:\n- name: {name}-admin\n  user: {{}}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\n"
        ),
    }
}

#[derive(Debug)]
struct Core {
    inner: Arc<Inner>,
    url: String,
    local: SocketAddr,
    token: String,
    kubeconfig: String,
    tls: Option<TlsMaterial>,
    stop: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// A running in-memory API server. Cloning gives another handle to the same server.
#[derive(Debug, Clone)]
pub struct Server {
    core: Arc<Core>,
}

impl Server {
    /// A builder (HTTPS by default).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Base URL, e.g. `https://127.0.0.1:43121`.
    pub fn url(&self) -> &str {
        &self.core.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local
    }

    /// The bearer token accepted (HTTPS mode).
    pub fn token(&self) -> &str {
        &self.core.token
    }

    /// The CA certificate PEM (HTTPS mode).
    pub fn ca_pem(&self) -> Option<&str> {
        self.core.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Admin client certificate and key PEM (HTTPS mode).
    pub fn client_cert_pem(&self) -> Option<(&str, &str)> {
        self.core
            .tls
            .as_ref()
            .map(|t| (t.client_cert_pem.as_str(), t.client_key_pem.as_str()))
    }

    /// A kubeconfig for this server: context `<name>` (token) and `<name>-cert` (client cert).
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.core.kubeconfig
    }

    /// Writes the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), ServerError> {
        std::fs::write(path.as_ref(), &self.core.kubeconfig).map_err(|source| {
            ServerError::WriteKubeconfig {
                path: path.as_ref().to_path_buf(),
                source,
            }
        })
    }

    /// Request counts, watches, objects.
    pub fn metrics(&self) -> MetricsSnapshot {
        let st = self.core.inner.state.read();
        self.core
            .inner
            .metrics
            .snapshot(st.object_count(), st.json_bytes, st.rv)
    }

    /// Prometheus text of /metrics.
    pub fn metrics_text(&self) -> String {
        let st = self.core.inner.state.read();
        self.core
            .inner
            .metrics
            .render(st.object_count(), st.json_bytes, st.rv)
    }

    /// Adds latency to every request from now on.
    pub fn set_latency(&self, d: Duration) {
        self.core.inner.knobs.set_latency(d);
    }

    /// Limits requests to `qps` with `burst` (429 + Retry-After beyond); None lifts it.
    pub fn set_rate_limit(&self, limit: Option<(f64, u32)>) {
        self.core.inner.knobs.set_rate_limit(limit);
    }

    /// Ends every open watch stream (clients re-watch from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.core.inner.drop_watches.send_modify(|g| *g += 1);
    }

    /// Drops the event history: watches from any earlier resourceVersion, and continue
    /// tokens issued before, get 410 Gone.
    pub fn compact(&self) {
        let mut st = self.core.inner.state.write();
        st.compact();
        self.core
            .inner
            .continue_floor
            .store(st.rv + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops listening, closes connections and watches.
    pub async fn shutdown(&self) {
        let stop = self.core.stop.lock().take();
        if let Some((tx, task)) = stop {
            let _ = tx.send(());
            let _ = task.await;
        }
    }
}

/// Many independent servers in one process (one per simulated workload cluster).
#[derive(Debug, Default)]
pub struct ServerSet {
    servers: Mutex<BTreeMap<String, Server>>,
}

impl ServerSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a server named `name` on `addr` (use port 0 for a free port).
    pub async fn start(
        &self,
        name: &str,
        builder: ServerBuilder,
        addr: &str,
    ) -> Result<Server, ServerError> {
        if self.servers.lock().contains_key(name) {
            return Err(ServerError::Duplicate(name.into()));
        }
        let s = builder.name(name).start(addr).await?;
        let raced = {
            let mut g = self.servers.lock();
            if g.contains_key(name) {
                true
            } else {
                g.insert(name.to_string(), s.clone());
                false
            }
        };
        if raced {
            s.shutdown().await;
            return Err(ServerError::Duplicate(name.into()));
        }
        Ok(s)
    }

    /// A running server by name.
    pub fn get(&self, name: &str) -> Option<Server> {
        self.servers.lock().get(name).cloned()
    }

    /// Names and URLs of running servers.
    pub fn list(&self) -> Vec<(String, String)> {
        self.servers
            .lock()
            .iter()
            .map(|(n, s)| (n.clone(), s.url().to_string()))
            .collect()
    }

    /// Stops and forgets one server; false if there was none.
    pub async fn stop(&self, name: &str) -> bool {
        let s = self.servers.lock().remove(name);
        match s {
            Some(s) => {
                s.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Stops every server.
    pub async fn stop_all(&self) {
        let all: Vec<Server> = std::mem::take(&mut *self.servers.lock())
            .into_values()
            .collect();
        for s in all {
            s.shutdown().await;
        }
    }
}

//! The composition root: client, shared caches, controllers, HTTP endpoints and graceful shutdown.
//!
//! [`Manager::new`] takes a kube client built by [`build_client`] (whose tower stack holds
//! the QPS/burst limiter and REST metrics). [`Manager::add_plugin`] resolves every kind a
//! plugin declares through discovery, registers one shared cache per kind and wires a
//! [`Controller`]. [`Manager::run`] starts one watcher per kind, serves `/metrics`,
//! `/healthz` and `/readyz` (ready once every cache has synced), starts the controllers once
//! the caches are ready (with leader election, once it also holds the Lease, see
//! [`crate::leader`]; losing it stops the controllers and `run` returns
//! [`ManagerError::LeaderLost`]) and, when `stop` fires (SIGTERM/SIGINT in `capstan run`),
//! stops taking keys, lets in-flight reconciles and their writes finish, and returns.

use crate::cache::{Cache, Gvk, KindCache};
use crate::clustercache::{ClusterCache, ClusterCacheMetrics, ClusterCacheOptions};
use crate::controller::{Controller, ControllerError, ControllerOptions, Reconcile};
use crate::metrics::{self, Metrics};
use crate::writer::layers::{MetricsLayer, RateLimitLayer};
use crate::writer::{KubeWriteApi, Resource, WritePath};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::client::ClientBuilder;
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors of the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The kube client could not be built.
    #[error("building the kube client failed")]
    Client(#[source] Box<kube::Error>),
    /// A declared kind is not served by the API server.
    #[error("plugin {plugin}: kind {kind} not found by discovery")]
    Discovery {
        /// Plugin name.
        plugin: String,
        /// The kind.
        kind: Gvk,
        /// Discovery's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// Two plugins have the same name.
    #[error("plugin {0} is loaded twice")]
    Duplicate(String),
    /// Wiring the controller failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// Leader election settings are invalid.
    #[error(transparent)]
    LeaderElection(crate::leader::LeaderError),
    /// This manager lost its leader Lease; it stopped reconciling.
    #[error(transparent)]
    LeaderLost(crate::leader::LeaderError),
    /// A listener could not be bound.
    #[error("binding {addr} failed")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// Build the kube client: kube's default stack (auth, TLS, retries of 429/503/504 with
/// `Retry-After`) wrapped in REST metrics and, when `qps > 0`, the QPS/burst limiter.
pub fn build_client(
    config: kube::Config,
    metrics: Arc<Metrics>,
    qps: f64,
    burst: u32,
) -> Result<kube::Client, ManagerError> {
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let builder = ClientBuilder::try_from(config)
        .map_err(|e| ManagerError::Client(Box::new(e)))?
        .with_layer(&MetricsLayer::new(metrics, &host));
    Ok(match RateLimitLayer::new(qps, burst) {
        Some(limit) => builder.with_layer(&limit).build(),
        None => builder.build(),
    })
}

/// Manager settings.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    /// Where to serve `/metrics`; `None` disables.
    pub metrics_addr: Option<SocketAddr>,
    /// Where to serve `/healthz` and `/readyz`; `None` disables.
    pub health_addr: Option<SocketAddr>,
    /// Defaults for every controller (their workload access is the manager's cluster cache).
    pub controller: ControllerOptions,
    /// This manager's identity in Events (`reportingInstance`).
    pub instance: String,
    /// Run controllers only while holding this Lease; `None`: always.
    pub leader_election: Option<crate::leader::LeaderElectionConfig>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            metrics_addr: None,
            health_addr: None,
            controller: ControllerOptions::default(),
            instance: "capstan".into(),
            leader_election: None,
        }
    }
}

/// Parse a bind address as controller-runtime does: `:8080` binds every interface, `0`
/// disables.
pub fn parse_bind_address(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "0" || s.is_empty() {
        return Ok(None);
    }
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map(Some)
        .map_err(|e| format!("invalid bind address {s:?}: {e}"))
}

/// Parse a duration such as `10m`, `30s`, `1h`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// The shared cache, the write path and discovery: what registering a kind touches.
#[derive(Clone)]
pub(crate) struct Kinds {
    pub(crate) client: kube::Client,
    pub(crate) cache: Arc<Cache>,
    pub(crate) writes: Arc<WritePath>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Kinds {
    /// Resolve `gvk` through discovery and create its shared cache; `None` when it is
    /// cached already (one cache per kind, however many plugins read it).
    pub(crate) async fn register(
        &self,
        plugin: &str,
        gvk: &Gvk,
    ) -> Result<Option<(Resource, Arc<KindCache>)>, ManagerError> {
        if self.cache.kind(gvk).is_some() {
            return Ok(None);
        }
        let (api, caps) = kube::discovery::pinned_kind(
            &self.client,
            &GroupVersionKind::gvk(&gvk.group, &gvk.version, &gvk.kind),
        )
        .await
        .map_err(|source| ManagerError::Discovery {
            plugin: plugin.to_string(),
            kind: gvk.clone(),
            source: Box::new(source),
        })?;
        let resource = Resource {
            namespaced: caps.scope == Scope::Namespaced,
            api,
        };
        let gauge = self
            .metrics
            .cache_objects(&gvk.group, &gvk.version, &gvk.kind);
        let kc = self.cache.kind_or_insert(gvk, || {
            KindCache::new(
                gvk.clone(),
                &resource.api.plural,
                resource.namespaced,
                gauge,
            )
        });
        self.writes.add_resource(gvk.clone(), resource.clone());
        Ok(Some((resource, kc)))
    }
}

/// Every kind `info` declares: primary, watched, related and written.
pub(crate) fn declared_kinds(
    info: &crate::runtime::bindings::capstan::reconciler::types::PluginInfo,
) -> BTreeSet<Gvk> {
    let mgmt = crate::runtime::Target::Management;
    let mut kinds = BTreeSet::new();
    kinds.insert(Gvk::from(&info.primary));
    kinds.extend(
        info.watches
            .iter()
            .filter(|w| w.target == mgmt)
            .map(|w| Gvk::from(&w.kind)),
    );
    kinds.extend(
        info.relations
            .iter()
            .filter(|r| r.target == mgmt)
            .map(|r| Gvk::from(&r.kind)),
    );
    kinds.extend(
        info.permissions
            .iter()
            .filter(|p| p.target == mgmt)
            .map(|p| Gvk::from(&p.kind)),
    );
    if crate::runtime::validate::uses_workload(info) {
        // The cluster cache reads kubeconfig Secrets and Clusters from the management caches.
        kinds.insert(crate::clustercache::secret_gvk());
        kinds.insert(crate::clustercache::cluster_gvk());
    }
    kinds
}

/// Give the workload kinds `info` may write an informer in every workload cluster: the
/// write path diffs against them.
pub(crate) fn register_written_workload_kinds(
    cc: &ClusterCache,
    info: &crate::runtime::bindings::capstan::reconciler::types::PluginInfo,
) {
    let mgmt = crate::runtime::Target::Management;
    for p in info.permissions.iter().filter(|p| p.target != mgmt) {
        cc.register_kind(&Gvk::from(&p.kind));
    }
}

/// Caches, controllers and endpoints of one `capstan run`.
pub struct Manager {
    client: kube::Client,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    cache: Arc<Cache>,
    writes: Arc<WritePath>,
    watched: Vec<(Resource, Arc<KindCache>)>,
    controllers: Vec<Arc<Controller>>,
    options: ManagerOptions,
    ready: Arc<AtomicBool>,
    metrics_listener: Option<TcpListener>,
    health_listener: Option<TcpListener>,
    reloader: Option<crate::reload::Reloader>,
    /// Every controller's workload access (set in `options.controller`), so a version
    /// that first declares workload kinds (a swap, or a plugin added while running)
    /// finds it; it connects to workload clusters only once a plugin with workload
    /// declarations is wired.
    cluster_cache: Arc<ClusterCache>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("kinds", &self.watched.len())
            .field("controllers", &self.controllers)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager over `client`; `metrics` must be registered in `registry`.
    pub fn new(
        client: kube::Client,
        mut registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        mut options: ManagerOptions,
    ) -> Self {
        // Registered while the registry is still ours alone (it is in `capstan run`).
        let cluster_cache_metrics = match Arc::get_mut(&mut registry) {
            Some(r) => ClusterCacheMetrics::new(r),
            None => ClusterCacheMetrics::default(),
        };
        let cache = Arc::new(Cache::new());
        let api = Arc::new(KubeWriteApi::new(client.clone()));
        let writes = Arc::new(WritePath::new(api, Arc::clone(&cache), &options.instance));
        let cluster_cache = ClusterCache::new(
            Arc::clone(&cache),
            Arc::clone(&metrics),
            cluster_cache_metrics,
            ClusterCacheOptions {
                instance: options.instance.clone(),
                ..ClusterCacheOptions::default()
            },
        );
        options.controller.workload =
            Arc::clone(&cluster_cache) as Arc<dyn crate::controller::WorkloadAccess>;
        Self {
            client,
            registry,
            metrics,
            cache,
            writes,
            watched: Vec::new(),
            controllers: Vec::new(),
            options,
            ready: Arc::new(AtomicBool::new(false)),
            metrics_listener: None,
            health_listener: None,
            reloader: None,
            cluster_cache,
        }
    }

    /// The cluster cache, once a plugin with workload declarations was added.
    pub fn cluster_cache(&self) -> Option<&Arc<ClusterCache>> {
        self.uses_workload().then_some(&self.cluster_cache)
    }

    /// Whether a plugin added so far declares workload watches, relations or permissions.
    fn uses_workload(&self) -> bool {
        self.controllers
            .iter()
            .any(|c| crate::runtime::validate::uses_workload(c.plugin().info()))
    }

    /// The metrics registry `/metrics` serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The controllers added so far.
    pub fn controllers(&self) -> &[Arc<Controller>] {
        &self.controllers
    }

    async fn register_kind(&mut self, plugin: &str, gvk: &Gvk) -> Result<(), ManagerError> {
        let kinds = self.kinds();
        if let Some(watched) = kinds.register(plugin, gvk).await? {
            self.watched.push(watched);
        }
        Ok(())
    }

    /// What registering kinds needs (the reloader registers kinds while the manager runs).
    pub(crate) fn kinds(&self) -> Kinds {
        Kinds {
            client: self.client.clone(),
            cache: Arc::clone(&self.cache),
            writes: Arc::clone(&self.writes),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Watch `reloader`'s plugin directory while running (see [`crate::reload`]).
    pub fn watch_plugins(&mut self, reloader: crate::reload::Reloader) {
        self.reloader = Some(reloader);
    }

    /// Resolve and cache every kind `plugin` declares, and wire its controller.
    pub async fn add_plugin(&mut self, plugin: Arc<dyn Reconcile>) -> Result<(), ManagerError> {
        let info = plugin.info();
        let name = info.name.clone();
        if self.controllers.iter().any(|c| c.name() == name) {
            return Err(ManagerError::Duplicate(name));
        }
        let kinds = declared_kinds(info);
        let plugin_digest = plugin.digest().map(str::to_string);
        let version = info.version.clone();
        let workload = crate::runtime::validate::uses_workload(info);
        for gvk in &kinds {
            self.register_kind(&name, gvk).await?;
        }
        if workload {
            register_written_workload_kinds(&self.cluster_cache, info);
        }
        let metrics = Arc::clone(&self.metrics);
        let controller = Controller::new(
            plugin,
            Arc::clone(&self.cache),
            Arc::clone(&self.writes),
            |n, c| metrics.controller(n, c),
            self.options.controller.clone(),
        )?;
        tracing::info!(controller = %name, concurrency = controller.concurrency(), kinds = kinds.len(), "plugin wired");
        self.metrics.set_plugin_info(
            &name,
            None,
            Some((&version, plugin_digest.as_deref().unwrap_or(""))),
        );
        self.controllers.push(controller);
        Ok(())
    }

    /// Bind the metrics and health listeners now (so callers learn ephemeral ports).
    pub async fn bind(&mut self) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ManagerError> {
        async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ManagerError> {
            match addr {
                None => Ok(None),
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| ManagerError::Bind { addr, source }),
            }
        }
        if self.metrics_listener.is_none() {
            self.metrics_listener = bind(self.options.metrics_addr).await?;
        }
        if self.health_listener.is_none() {
            self.health_listener = bind(self.options.health_addr).await?;
        }
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        Ok((local(&self.metrics_listener), local(&self.health_listener)))
    }

    /// Run until `stop`; then drain and return. See the module docs.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), ManagerError> {
        let mut elector = match self.options.leader_election.clone() {
            Some(config) => Some(
                crate::leader::Elector::new(self.client.clone(), config)
                    .map_err(ManagerError::LeaderElection)?,
            ),
            None => None,
        };
        self.bind().await?;
        let watch_stop = CancellationToken::new();
        let mut watchers = Vec::new();
        for (res, kc) in &self.watched {
            watchers.push(tokio::spawn(crate::cache::run_watcher(
                self.client.clone(),
                res.api.clone(),
                Arc::clone(kc),
                watch_stop.clone(),
            )));
        }
        if self.uses_workload() {
            watchers.push(tokio::spawn(
                Arc::clone(&self.cluster_cache).run(watch_stop.clone()),
            ));
        }
        let server_stop = CancellationToken::new();
        let mut servers = Vec::new();
        if let Some(l) = self.metrics_listener.take() {
            let registry = Arc::clone(&self.registry);
            let app = Router::new().route(
                "/metrics",
                get(move || {
                    let registry = Arc::clone(&registry);
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics::encode(&registry),
                        )
                    }
                }),
            );
            servers.push(serve(l, app, server_stop.clone()));
        }
        if let Some(l) = self.health_listener.take() {
            let ready = Arc::clone(&self.ready);
            let app = Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route(
                    "/readyz",
                    get(move || {
                        let ready = ready.load(Ordering::Acquire);
                        async move {
                            if ready {
                                (StatusCode::OK, "ok").into_response()
                            } else {
                                (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                                    .into_response()
                            }
                        }
                    }),
                );
            servers.push(serve(l, app, server_stop.clone()));
        }
        let synced = async {
            for (_, kc) in &self.watched {
                kc.wait_synced().await;
            }
        };
        let mut started = tokio::select! {
            _ = stop.cancelled() => false,
            _ = synced => true,
        };
        // Controllers stop on `stop` or when the Lease is lost; standbys stay ready (warm caches).
        let work_stop = stop.child_token();
        // Renewals go on while in-flight reconciles drain; the Lease is released after.
        let release = CancellationToken::new();
        let mut leading = None;
        if started {
            self.ready.store(true, Ordering::Release);
            if let Some(mut e) = elector.take() {
                started = e.acquire(&stop).await;
                if started {
                    leading = Some(tokio::spawn({
                        let (release, work_stop) = (release.clone(), work_stop.clone());
                        async move {
                            // However holding ends (even a panic), the controllers stop.
                            let _stop_work = work_stop.drop_guard();
                            e.hold(release).await
                        }
                    }));
                }
            }
        }
        let mut running = Vec::new();
        if started {
            tracing::info!(
                kinds = self.watched.len(),
                "caches synced; starting controllers"
            );
            for c in &self.controllers {
                running.push(tokio::spawn(Arc::clone(c).run(work_stop.clone())));
            }
        }
        let reload = self.reloader.take().filter(|_| started).map(|r| {
            let context = crate::reload::Context {
                kinds: self.kinds(),
                controller: self.options.controller.clone(),
                cluster_cache: Arc::clone(&self.cluster_cache),
                watch_stop: watch_stop.clone(),
            };
            tokio::spawn(r.run(context, self.controllers.clone(), stop.clone()))
        });
        work_stop.cancelled().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        for r in running {
            let _ = r.await;
        }
        // The reloader returns once the controllers it started have drained, with the
        // watchers of kinds it registered.
        if let Some(r) = reload {
            watchers.extend(r.await.unwrap_or_default());
        }
        watch_stop.cancel();
        for w in watchers {
            let _ = w.await;
        }
        server_stop.cancel();
        for s in servers {
            let _ = s.await;
        }
        tracing::info!("manager stopped");
        // After the drain: a leader releases its Lease only once its controllers stopped.
        if let Some(held) = leading {
            release.cancel();
            if let Ok(Err(lost)) = held.await {
                return Err(ManagerError::LeaderLost(lost));
            }
        }
        Ok(())
    }
}

fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::error!(%error, "http server failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_and_durations_parse_like_controller_runtime() {
        assert_eq!(
            parse_bind_address(":8080").unwrap(),
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(parse_bind_address("0").unwrap(), None);
        assert!(parse_bind_address("nope").is_err());
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

/// Flags of `capstan run` (controller-runtime's and CAPI's names and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig to use; in-cluster configuration (then `$KUBECONFIG`, `~/.kube/config`)
    /// when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Directory of plugin components (`*.wasm`).
    #[arg(long)]
    pub plugins: std::path::PathBuf,
    /// Where to serve /metrics (`0` disables).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Where to serve /healthz and /readyz (`0` disables).
    #[arg(long, default_value = ":9440")]
    pub health_probe_bind_address: String,
    /// Full resync period of every controller (e.g. `10m`); default: each plugin's, else 10m.
    #[arg(long, value_parser = parse_duration)]
    pub sync_period: Option<Duration>,
    /// Workers per plugin; default: each plugin's, else 10.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Client-side requests per second to the API server (<= 0 disables the limiter).
    #[arg(long, default_value_t = 100.0)]
    pub kube_api_qps: f64,
    /// Client-side burst.
    #[arg(long, default_value_t = 200)]
    pub kube_api_burst: u32,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
    /// Reload plugins when files in `--plugins` change (`false`: load them once at start).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plugin_reload: bool,
    /// Quiet time after the last change in `--plugins` before the directory is rescanned
    /// (a file copied in place rather than renamed may be read half-written if longer).
    #[arg(long, default_value = "25ms", value_parser = parse_duration)]
    pub plugin_reload_debounce: Duration,
    /// Keep compiled plugin artifacts in this directory (native code: as trusted as this
    /// binary), so a restart does not compile versions it has seen.
    #[arg(long, env = "CAPSTAN_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// Run controllers only while holding a coordination.k8s.io/v1 Lease, so that several
    /// replicas can run with one active (off by default, as in controller-runtime and CAPI;
    /// deployments of more than one replica must set it).
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "capstan-leader-election")]
    pub leader_election_id: String,
    /// Namespace of the Lease; default: the pod's own namespace when running in a cluster,
    /// else `default`.
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// How long a Lease stays held without renewal before a standby may take it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader tries to renew before it gives up leadership (and exits).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Pause between attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// The infrastructure behind the plugins' `cloud` capability: `none`, or `in-memory`
    /// (workload clusters simulated in this process, see `cloud::InMemoryCloud`).
    #[arg(long, value_enum, default_value = "none")]
    pub cloud: CloudKind,
}

/// Values of `capstan run --cloud`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudKind {
    /// No cloud: plugins' cloud calls fail.
    None,
    /// The in-memory cloud (`cloud::InMemoryCloud`).
    InMemory,
}

/// The namespace of the service account the pod runs as, when in a cluster.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Leader election settings from the flags, or `None` without `--leader-elect`.
fn leader_election(args: &RunArgs) -> Option<crate::leader::LeaderElectionConfig> {
    if !args.leader_elect {
        return None;
    }
    let namespace = args.leader_election_namespace.clone().unwrap_or_else(|| {
        std::fs::read_to_string(POD_NAMESPACE_FILE)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into())
    });
    Some(crate::leader::LeaderElectionConfig {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
        ..crate::leader::LeaderElectionConfig::new(
            &args.leader_election_id,
            namespace,
            crate::leader::default_identity(),
        )
    })
}

/// Errors of `capstan run` before the manager runs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag value is invalid.
    #[error("invalid flag: {0}")]
    Flag(String),
    /// No Kubernetes configuration could be loaded.
    #[error("loading the kubernetes configuration failed: {0}")]
    Config(String),
    /// A plugin failed to load.
    #[error("loading plugins from {dir} failed: {reason}")]
    Plugins {
        /// The plugin directory.
        dir: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The manager failed.
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// Telemetry setup failed.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

async fn kube_config(path: Option<&std::path::Path>) -> Result<kube::Config, RunError> {
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| RunError::Config(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Config(e.to_string()))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Config(e.to_string())),
    }
}

/// Resolve when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `capstan run`: load the plugins into a runtime built from `runtime` (its cache
/// directory overridden by `--cache-dir`), build the manager, watch the plugin directory,
/// run until a signal.
pub async fn run_command(
    args: RunArgs,
    mut runtime: crate::runtime::RuntimeConfig,
) -> Result<(), RunError> {
    crate::telemetry::init(args.log_format)?;
    let metrics_addr = parse_bind_address(&args.metrics_bind_address).map_err(RunError::Flag)?;
    let health_addr =
        parse_bind_address(&args.health_probe_bind_address).map_err(RunError::Flag)?;
    if args.cache_dir.is_some() {
        runtime.cache_dir = args.cache_dir.clone();
    }
    let mut registry = Registry::default();
    if args.cloud == CloudKind::InMemory {
        runtime.cloud = Some(Arc::new(crate::cloud::InMemoryCloud::new(
            crate::cloud::CloudMetrics::new(&mut registry),
        )));
    }
    let plugins_error = |reason: String| RunError::Plugins {
        dir: args.plugins.clone(),
        reason,
    };
    let runtime =
        crate::runtime::Runtime::new(runtime).map_err(|e| plugins_error(e.to_string()))?;
    let plugins = load_plugin_dir(&args.plugins, &runtime).map_err(plugins_error)?;
    let config = kube_config(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::new(&mut registry));
    runtime.register_metrics(&mut registry);
    let client = build_client(
        config,
        Arc::clone(&metrics),
        args.kube_api_qps,
        args.kube_api_burst,
    )?;
    let options = ManagerOptions {
        metrics_addr,
        health_addr,
        controller: ControllerOptions {
            concurrency: args.concurrency,
            sync_period: args.sync_period,
            ..ControllerOptions::default()
        },
        instance: std::env::var("HOSTNAME").unwrap_or_else(|_| "capstan".into()),
        leader_election: leader_election(&args),
    };
    let mut manager = Manager::new(client, Arc::new(registry), metrics, options);
    for p in plugins {
        manager.add_plugin(p).await?;
    }
    if args.plugin_reload {
        manager.watch_plugins(crate::reload::Reloader::new(
            runtime,
            crate::reload::ReloadOptions {
                debounce: args.plugin_reload_debounce,
                event_target: crate::reload::PodRef::from_env(),
                ..crate::reload::ReloadOptions::new(&args.plugins)
            },
        ));
    }
    let (m, h) = manager.bind().await?;
    tracing::info!(metrics = ?m, health = ?h, "serving");
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received; shutting down");
        signal_stop.cancel();
    });
    manager.run(stop).await?;
    Ok(())
}

/// Load every serving `*.wasm` component in `dir` (sorted by file name; shadows,
/// `*.shadow.wasm`, are the reloader's) into `runtime`.
pub fn load_plugin_dir(
    dir: &std::path::Path,
    runtime: &crate::runtime::Runtime,
) -> Result<Vec<Arc<dyn Reconcile>>, String> {
    let files: Vec<_> = crate::reload::plugin_files(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .into_iter()
        .filter(|p| !crate::reload::is_shadow(p))
        .collect();
    let mut plugins: Vec<Arc<dyn Reconcile>> = Vec::new();
    for f in files {
        let plugin = runtime
            .load_file(&f)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        tracing::info!(plugin = plugin.name(), digest = plugin.digest(), file = %f.display(), "plugin loaded");
        plugins.push(Arc::new(plugin));
    }
    if plugins.is_empty() {
        return Err(format!("no *.wasm components in {}", dir.display()));
    }
    Ok(plugins)
}

//! The cluster cache: one client, informer set and write path per workload cluster, built once from its `<cluster>-kubeconfig` Secret.
//!
//! As Cluster API's `controllers/clustercache`: for every Cluster API `Cluster` whose
//! `<cluster>-kubeconfig` Secret (data key `value`, a kubeconfig) exists in the management
//! cluster, the cache builds one [`Connection`] and reuses it for every reconcile of every
//! plugin until the Cluster or the Secret goes (or the kubeconfig changes):
//!
//! - a kube client over one HTTP/2 connection ([`h2`]: every watch is a stream of it) with
//!   its own client-side QPS/burst limiter (defaults 20/30, as Cluster
//!   API), kube's retries, and the REST metrics under the host label `workload` (one series
//!   for all workload clusters, not one per cluster);
//! - one informer ([`KindCache`] fed by [`crate::cache::run_watcher`]) per workload kind any
//!   plugin declares (watches, relations and permissions; registered once and shared by
//!   every plugin, so a kind watched by three plugins is one watch per cluster);
//! - a [`WritePath`] diffing against those informers, for workload outcome entries;
//! - a health probe (`GET /version`) every 10 s with a 5 s timeout; 5 consecutive failures
//!   turn the connection [`ConnectionState::Unhealthy`]; the next success turns it
//!   [`ConnectionState::Connected`] again (the informers retry on their own with backoff).
//!
//! Reading: the Secrets and Clusters come from the host's management caches
//! ([`crate::cache::Cache`]); their events wake one sync task, which connects (off the sync
//! task, retried with backoff while the workload API server does not answer yet),
//! reconnects when the kubeconfig changes, and tears down. Every state change and every
//! workload informer event is handed to listeners ([`ClusterCache::on_state`],
//! [`ClusterCache::on_event`]), which the controllers turn into keys of the affected
//! primaries.

mod h2;

use crate::cache::{Cache, CacheEvent, CachedObject, Gvk, KindCache, ObjectKey};
use crate::controller::WorkloadEvents;
use crate::metrics::Metrics;
use crate::runtime::bindings::capstan::reconciler::types::Connection as WitConnection;
use crate::writer::layers::{MetricsLayer, RateLimitLayer};
use crate::writer::{KubeWriteApi, Resource, WritePath};
use base64::Engine;
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The Cluster API `Cluster` kind (the storage version the host caches).
pub fn cluster_gvk() -> Gvk {
    Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster")
}

/// The core `Secret` kind.
pub fn secret_gvk() -> Gvk {
    Gvk::new("", "v1", "Secret")
}

/// Suffix of the kubeconfig Secret's name (`<cluster>-kubeconfig`).
pub const KUBECONFIG_SUFFIX: &str = "-kubeconfig";

/// The Secret data key holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "value";

/// Errors connecting to a workload cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCacheError {
    /// The kubeconfig Secret has no `data.value`, or it is not base64.
    #[error("cluster {cluster}: kubeconfig secret has no valid data.value")]
    NoKubeconfig {
        /// The Cluster.
        cluster: ObjectKey,
    },
    /// The kubeconfig does not parse or names no usable context.
    #[error("cluster {cluster}: invalid kubeconfig")]
    Kubeconfig {
        /// The Cluster.
        cluster: ObjectKey,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// The workload API server did not answer the first probe.
    #[error("cluster {cluster}: workload api server unreachable: {reason}")]
    Unreachable {
        /// The Cluster.
        cluster: ObjectKey,
        /// Why.
        reason: String,
    },
    /// A workload kind is not served by the workload API server.
    #[error("cluster {cluster}: kind {kind} not found by discovery")]
    Discovery {
        /// The Cluster.
        cluster: ObjectKey,
        /// The kind.
        kind: Gvk,
        /// Discovery's answer.
        #[source]
        source: Box<kube::Error>,
    },
}

/// The state of the host's connection to one workload cluster (WIT `connection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// No connection: no kubeconfig Secret, or the API server has not answered yet.
    Disconnected,
    /// Connected, and the health probe passes.
    Connected,
    /// Connected once, but the health probe keeps failing.
    Unhealthy,
}

impl ConnectionState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Connected,
            2 => Self::Unhealthy,
            _ => Self::Disconnected,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Disconnected => 0,
            Self::Connected => 1,
            Self::Unhealthy => 2,
        }
    }
}

/// Settings of the cluster cache (Cluster API's defaults).
#[derive(Clone, Debug)]
pub struct ClusterCacheOptions {
    /// Client-side queries per second to each workload cluster (default 20).
    pub qps: f64,
    /// Burst to each workload cluster (default 30).
    pub burst: u32,
    /// Interval of health probes (default 10 s).
    pub probe_interval: Duration,
    /// Timeout of one probe, and of the first contact (default 5 s).
    pub probe_timeout: Duration,
    /// Consecutive failed probes that make a connection unhealthy (default 5).
    pub failure_threshold: u32,
    /// First retry delay of a failed connection attempt; doubles up to `max_retry`.
    pub retry: Duration,
    /// Longest delay between connection attempts (default 10 s).
    pub max_retry: Duration,
    /// `reportingInstance` of the workload write paths.
    pub instance: String,
}

impl Default for ClusterCacheOptions {
    fn default() -> Self {
        Self {
            qps: 20.0,
            burst: 30,
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
            failure_threshold: 5,
            retry: Duration::from_millis(250),
            max_retry: Duration::from_secs(10),
            instance: "capstan".into(),
        }
    }
}

/// The cluster cache's metrics (`capstan_workload_clusters*`).
#[derive(Clone, Debug, Default)]
pub struct ClusterCacheMetrics {
    /// Connections held (connected or unhealthy).
    pub connections: Gauge,
    /// Connections currently unhealthy.
    pub unhealthy: Gauge,
    /// Connections established.
    pub connects: Counter,
    /// Failed connection attempts.
    pub connect_failures: Counter,
    /// Failed health probes.
    pub probe_failures: Counter,
}

impl ClusterCacheMetrics {
    /// Metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "capstan_workload_cluster_connections",
            "Workload cluster connections held by the cluster cache",
            m.connections.clone(),
        );
        registry.register(
            "capstan_workload_cluster_unhealthy",
            "Workload cluster connections whose health probe is failing",
            m.unhealthy.clone(),
        );
        registry.register(
            "capstan_workload_cluster_connects",
            "Workload cluster connections established",
            m.connects.clone(),
        );
        registry.register(
            "capstan_workload_cluster_connect_failures",
            "Failed workload cluster connection attempts",
            m.connect_failures.clone(),
        );
        registry.register(
            "capstan_workload_cluster_probe_failures",
            "Failed workload cluster health probes",
            m.probe_failures.clone(),
        );
        m
    }
}

/// One workload cluster's client, informers and write path.
pub struct Connection {
    cluster: ObjectKey,
    digest: [u8; 32],
    client: kube::Client,
    cache: Arc<Cache>,
    writes: Arc<WritePath>,
    state: AtomicU8,
    stop: CancellationToken,
    /// Kinds with an informer, or one being added (see [`ClusterCache::register_kind`]).
    watching: Mutex<HashSet<Gvk>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("cluster", &self.cluster)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The Cluster (`namespace/name`).
    pub fn cluster(&self) -> &ObjectKey {
        &self.cluster
    }

    /// The client (QPS/burst limited).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The informers of the workload kinds.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The write path of workload outcome entries.
    pub fn writes(&self) -> &Arc<WritePath> {
        &self.writes
    }

    /// Current state.
    pub fn state(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the informer of `gvk` has listed (false while unhealthy: it may be stale).
    pub fn synced(&self, gvk: &Gvk) -> bool {
        self.state() == ConnectionState::Connected
            && self.cache.kind(gvk).is_some_and(|k| k.is_synced())
    }
}

type EventListener = Arc<dyn Fn(&ObjectKey, &CacheEvent) + Send + Sync>;
type StateListener = Arc<dyn Fn(&ObjectKey, ConnectionState) + Send + Sync>;
/// The listeners of one kind (replaced whole when one is added, so an event reads one `Arc`).
type Listeners = RwLock<Arc<Vec<EventListener>>>;

/// Workload-cluster connections for every Cluster with a kubeconfig (see the module docs).
pub struct ClusterCache {
    mgmt: Arc<Cache>,
    options: ClusterCacheOptions,
    metrics: Arc<Metrics>,
    own: ClusterCacheMetrics,
    kinds: RwLock<Vec<Gvk>>,
    resolved: RwLock<HashMap<Gvk, Resource>>,
    /// One slot per kind, shared with every connection's informer of that kind and read
    /// at every event, so a listener added later hears live connections too.
    event_listeners: RwLock<HashMap<Gvk, Arc<Listeners>>>,
    state_listeners: RwLock<Vec<StateListener>>,
    connections: RwLock<HashMap<ObjectKey, Arc<Connection>>>,
    connecting: Mutex<HashSet<ObjectKey>>,
    wake_tx: mpsc::UnboundedSender<ObjectKey>,
    wake_rx: Mutex<Option<mpsc::UnboundedReceiver<ObjectKey>>>,
    /// This cache, for the tasks [`ClusterCache::register_kind`] starts.
    me: Weak<ClusterCache>,
}

impl fmt::Debug for ClusterCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCache")
            .field("kinds", &*self.kinds.read())
            .field("connections", &self.connections.read().len())
            .finish_non_exhaustive()
    }
}

fn cluster_of_secret(o: &CachedObject) -> Option<ObjectKey> {
    let name = o.key.name.strip_suffix(KUBECONFIG_SUFFIX)?;
    Some(ObjectKey::new(o.key.namespace.clone(), name))
}

impl ClusterCache {
    /// A cluster cache reading Secrets and Clusters from `mgmt` (whose kinds the caller
    /// watches: [`secret_gvk`] and [`cluster_gvk`]), recording REST metrics in `metrics`.
    pub fn new(
        mgmt: Arc<Cache>,
        metrics: Arc<Metrics>,
        own: ClusterCacheMetrics,
        options: ClusterCacheOptions,
    ) -> Arc<Self> {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            mgmt,
            options,
            metrics,
            own,
            kinds: RwLock::new(Vec::new()),
            resolved: RwLock::new(HashMap::new()),
            event_listeners: RwLock::new(HashMap::new()),
            state_listeners: RwLock::new(Vec::new()),
            connections: RwLock::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
        })
    }

    /// Watch `gvk` in every workload cluster (one informer per cluster, however many
    /// plugins ask). A kind registered while connections exist (a plugin loaded or
    /// swapped in at run time) gets an informer on each of them in place: the
    /// connection is not rebuilt, and the new informer reports unsynced until it listed.
    pub fn register_kind(&self, gvk: &Gvk) {
        {
            let mut kinds = self.kinds.write();
            if kinds.contains(gvk) {
                return;
            }
            kinds.push(gvk.clone());
        }
        let Some(me) = self.me.upgrade() else { return };
        let live: Vec<Arc<Connection>> = self.connections.read().values().cloned().collect();
        for conn in live {
            me.watch_missing_kinds(&conn);
        }
    }

    /// Start an informer on `conn` for each registered kind it lacks (off this task:
    /// resolving a kind may ask the workload API server).
    fn watch_missing_kinds(self: &Arc<Self>, conn: &Arc<Connection>) {
        let missing: Vec<Gvk> = {
            let mut watching = conn.watching.lock();
            self.kinds()
                .into_iter()
                .filter(|k| watching.insert(k.clone()))
                .collect()
        };
        // Live connections exist only while `run` runs on a runtime; a caller off it
        // leaves the kinds for the next connection.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            conn.watching.lock().retain(|k| !missing.contains(k));
            return;
        };
        for gvk in missing {
            let me = Arc::clone(self);
            let conn = Arc::clone(conn);
            rt.spawn(async move {
                let res = tokio::select! {
                    _ = conn.stop.cancelled() => return,
                    r = me.resolve(&conn.client, &conn.cluster, &gvk) => r,
                };
                match res {
                    Ok(res) => me.watch_kind(&conn, &gvk, res),
                    Err(error) => {
                        // Not retried here: the next reconnect (kubeconfig change, or the
                        // Cluster coming back) lists every registered kind again.
                        conn.watching.lock().remove(&gvk);
                        tracing::warn!(cluster = %conn.cluster, kind = %gvk, %error, "workload kind registered at run time could not be watched");
                    }
                }
            });
        }
    }

    /// The informer of `gvk` on `conn`: its store in the connection's cache, its listeners
    /// (looked up at every event), its resource in the write path, its watch until the
    /// connection stops.
    fn watch_kind(self: &Arc<Self>, conn: &Connection, gvk: &Gvk, res: Resource) {
        let kc = conn.cache.kind_or_insert(gvk, || {
            KindCache::new(
                gvk.clone(),
                &res.api.plural,
                res.namespaced,
                Gauge::default(),
            )
        });
        let (key, slot) = (conn.cluster.clone(), self.listeners(gvk));
        kc.subscribe(move |ev| {
            let listeners = Arc::clone(&slot.read());
            for l in listeners.iter() {
                l(&key, ev);
            }
        });
        conn.writes.add_resource(gvk.clone(), res.clone());
        tokio::spawn(crate::cache::run_watcher(
            conn.client.clone(),
            res.api,
            kc,
            conn.stop.clone(),
        ));
    }

    /// The listener slot of `gvk`, created empty on first use.
    fn listeners(&self, gvk: &Gvk) -> Arc<Listeners> {
        Arc::clone(self.event_listeners.write().entry(gvk.clone()).or_default())
    }

    /// Whether [`ClusterCache::run`] has started.
    pub fn running(&self) -> bool {
        self.wake_rx.lock().is_none()
    }

    /// The registered workload kinds.
    pub fn kinds(&self) -> Vec<Gvk> {
        self.kinds.read().clone()
    }

    /// Call `f(cluster, event)` on every change of `gvk` in any workload cluster.
    pub fn on_event(&self, gvk: &Gvk, f: impl Fn(&ObjectKey, &CacheEvent) + Send + Sync + 'static) {
        let slot = self.listeners(gvk);
        let mut listeners = slot.write();
        let mut next = Vec::clone(&listeners);
        next.push(Arc::new(f));
        *listeners = Arc::new(next);
    }

    /// Call `f(cluster, state)` whenever a connection is made, lost, turns unhealthy or
    /// recovers.
    pub fn on_state(&self, f: impl Fn(&ObjectKey, ConnectionState) + Send + Sync + 'static) {
        self.state_listeners.write().push(Arc::new(f));
    }

    /// The connection to `cluster`, if any.
    pub fn connection(&self, cluster: &ObjectKey) -> Option<Arc<Connection>> {
        self.connections.read().get(cluster).cloned()
    }

    /// The state of the connection to `cluster`.
    pub fn state(&self, cluster: &ObjectKey) -> ConnectionState {
        self.connection(cluster)
            .map_or(ConnectionState::Disconnected, |c| c.state())
    }

    /// Clusters with a connection.
    pub fn clusters(&self) -> Vec<ObjectKey> {
        let mut v: Vec<_> = self.connections.read().keys().cloned().collect();
        v.sort();
        v
    }

    fn wake(&self, cluster: ObjectKey) {
        // Closed only after `run` ended: nothing to do then.
        let _ = self.wake_tx.send(cluster);
    }

    fn notify_state(&self, cluster: &ObjectKey, state: ConnectionState) {
        let listeners = self.state_listeners.read().clone();
        for l in &listeners {
            l(cluster, state);
        }
    }

    /// Follow the management Secrets and Clusters until `stop`, keeping one connection per
    /// Cluster with a kubeconfig. Returns at once if called twice.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = self.wake_rx.lock().take() else {
            return;
        };
        let secrets = self.mgmt.kind_any_version("", "Secret");
        let clusters = self.mgmt.kind_any_version("cluster.x-k8s.io", "Cluster");
        if let Some(s) = &secrets {
            let me = Arc::downgrade(&self);
            s.subscribe(move |ev| {
                let Some(me) = me.upgrade() else { return };
                for o in [&ev.old, &ev.new].into_iter().flatten() {
                    if let Some(c) = cluster_of_secret(o) {
                        me.wake(c);
                    }
                }
            });
            for k in s.keys() {
                if let Some(name) = k.name.strip_suffix(KUBECONFIG_SUFFIX) {
                    self.wake(ObjectKey::new(k.namespace.clone(), name));
                }
            }
        }
        if let Some(c) = &clusters {
            let me = Arc::downgrade(&self);
            c.subscribe(move |ev| {
                let Some(me) = me.upgrade() else { return };
                if let Some(o) = ev.new.as_ref().or(ev.old.as_ref()) {
                    me.wake(o.key.clone());
                }
            });
            for k in c.keys() {
                self.wake(k);
            }
        }
        if secrets.is_none() || clusters.is_none() {
            tracing::warn!(
                "cluster cache: Secrets or Clusters are not cached; no workload cluster will connect"
            );
        }
        loop {
            let cluster = tokio::select! {
                _ = stop.cancelled() => break,
                c = rx.recv() => match c { Some(c) => c, None => break },
            };
            self.sync(&cluster, &stop);
        }
        let all: Vec<_> = self.connections.write().drain().collect();
        for (_, c) in all {
            c.stop.cancel();
        }
        self.own.connections.set(0);
        self.own.unhealthy.set(0);
    }

    /// The kubeconfig text of the Cluster's Secret, when both exist.
    fn kubeconfig_of(&self, cluster: &ObjectKey) -> Option<Result<String, ()>> {
        let clusters = self.mgmt.kind_any_version("cluster.x-k8s.io", "Cluster")?;
        clusters.get(cluster)?;
        let secrets = self.mgmt.kind_any_version("", "Secret")?;
        let secret = secrets.get(&ObjectKey::new(
            cluster.namespace.clone(),
            format!("{}{KUBECONFIG_SUFFIX}", cluster.name),
        ))?;
        let v: serde_json::Value = serde_json::from_str(&secret.json).ok()?;
        let text = v
            .pointer(&format!("/data/{KUBECONFIG_KEY}"))
            .and_then(serde_json::Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        Some(text.ok_or(()))
    }

    fn sync(self: &Arc<Self>, cluster: &ObjectKey, stop: &CancellationToken) {
        let kubeconfig = match self.kubeconfig_of(cluster) {
            None => {
                self.disconnect(cluster, "cluster or kubeconfig secret gone");
                return;
            }
            Some(Err(())) => {
                tracing::warn!(%cluster, "kubeconfig secret has no valid data.value");
                self.disconnect(cluster, "kubeconfig secret invalid");
                return;
            }
            Some(Ok(k)) => k,
        };
        let digest: [u8; 32] = kubeconfig_digest(&kubeconfig);
        if let Some(c) = self.connection(cluster) {
            if c.digest == digest {
                return;
            }
            self.disconnect(cluster, "kubeconfig changed");
        }
        if !self.connecting.lock().insert(cluster.clone()) {
            return;
        }
        let me = Arc::clone(self);
        let cluster = cluster.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut delay = me.options.retry;
            // The Secret or Cluster may have gone, or the kubeconfig changed, meanwhile.
            while let Some(Ok(current)) = me.kubeconfig_of(&cluster) {
                let digest: [u8; 32] = kubeconfig_digest(&current);
                let attempt = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = me.connect(&cluster, &current, digest, &stop) => r,
                };
                match attempt {
                    Ok(conn) => {
                        me.install(conn);
                        break;
                    }
                    Err(error) => {
                        me.own.connect_failures.inc();
                        tracing::debug!(%cluster, %error, retry_in = ?delay, "workload cluster not reachable yet");
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(me.options.max_retry);
                    }
                }
            }
            me.connecting.lock().remove(&cluster);
        });
    }

    fn install(self: &Arc<Self>, conn: Arc<Connection>) {
        // The Cluster or Secret may have gone while connecting.
        if !matches!(self.kubeconfig_of(&conn.cluster), Some(Ok(_))) {
            conn.stop.cancel();
            return;
        }
        let cluster = conn.cluster.clone();
        let old = self
            .connections
            .write()
            .insert(cluster.clone(), Arc::clone(&conn));
        if let Some(old) = old {
            old.stop.cancel();
        }
        self.own
            .connections
            .set(self.connections.read().len() as i64);
        self.own.connects.inc();
        tracing::info!(%cluster, "workload cluster connected");
        // Kinds registered while this connection was being made.
        self.watch_missing_kinds(&conn);
        let me = Arc::downgrade(self);
        let probe = Arc::clone(&conn);
        tokio::spawn(async move {
            let mut failures = 0u32;
            let stop = probe.stop.clone();
            loop {
                let (interval, timeout, threshold) = match me.upgrade() {
                    Some(m) => (
                        m.options.probe_interval,
                        m.options.probe_timeout,
                        m.options.failure_threshold,
                    ),
                    None => return,
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let ok = matches!(
                    tokio::time::timeout(timeout, probe.client.apiserver_version()).await,
                    Ok(Ok(_))
                );
                let Some(me) = me.upgrade() else { return };
                if stop.is_cancelled() {
                    return;
                }
                if ok {
                    failures = 0;
                    if probe.state() == ConnectionState::Unhealthy {
                        probe
                            .state
                            .store(ConnectionState::Connected.as_u8(), Ordering::Release);
                        me.own.unhealthy.dec();
                        tracing::info!(cluster = %probe.cluster, "workload cluster healthy again");
                        me.notify_state(&probe.cluster, ConnectionState::Connected);
                    }
                } else {
                    failures += 1;
                    me.own.probe_failures.inc();
                    if failures >= threshold && probe.state() == ConnectionState::Connected {
                        probe
                            .state
                            .store(ConnectionState::Unhealthy.as_u8(), Ordering::Release);
                        me.own.unhealthy.inc();
                        tracing::warn!(cluster = %probe.cluster, failures, "workload cluster unhealthy");
                        me.notify_state(&probe.cluster, ConnectionState::Unhealthy);
                    }
                }
            }
        });
        self.notify_state(&cluster, ConnectionState::Connected);
    }

    fn disconnect(&self, cluster: &ObjectKey, why: &str) {
        let Some(old) = self.connections.write().remove(cluster) else {
            return;
        };
        old.stop.cancel();
        if old.state() == ConnectionState::Unhealthy {
            self.own.unhealthy.dec();
        }
        old.state
            .store(ConnectionState::Disconnected.as_u8(), Ordering::Release);
        self.own
            .connections
            .set(self.connections.read().len() as i64);
        tracing::info!(%cluster, why, "workload cluster disconnected");
        self.notify_state(cluster, ConnectionState::Disconnected);
    }

    async fn resolve(
        &self,
        client: &kube::Client,
        cluster: &ObjectKey,
        gvk: &Gvk,
    ) -> Result<Resource, ClusterCacheError> {
        if let Some(r) = self.resolved.read().get(gvk) {
            return Ok(r.clone());
        }
        let (api, caps) = kube::discovery::pinned_kind(
            client,
            &GroupVersionKind::gvk(&gvk.group, &gvk.version, &gvk.kind),
        )
        .await
        .map_err(|source| ClusterCacheError::Discovery {
            cluster: cluster.clone(),
            kind: gvk.clone(),
            source: Box::new(source),
        })?;
        let r = Resource {
            namespaced: caps.scope == Scope::Namespaced,
            api,
        };
        // Every workload cluster serves the same kinds: resolve each once per process.
        self.resolved.write().insert(gvk.clone(), r.clone());
        Ok(r)
    }

    async fn connect(
        self: &Arc<Self>,
        cluster: &ObjectKey,
        kubeconfig: &str,
        digest: [u8; 32],
        stop: &CancellationToken,
    ) -> Result<Arc<Connection>, ClusterCacheError> {
        let bad = |source: kube::Error| ClusterCacheError::Kubeconfig {
            cluster: cluster.clone(),
            source: Box::new(source),
        };
        let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)
            .map_err(|e| bad(kube::Error::InferKubeconfig(e)))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| bad(kube::Error::InferKubeconfig(e)))?;
        let builder = h2::builder(&config)
            .map_err(bad)?
            .with_layer(&MetricsLayer::new(Arc::clone(&self.metrics), "workload"));
        let client = match RateLimitLayer::new(self.options.qps, self.options.burst) {
            Some(limit) => builder.with_layer(&limit).build(),
            None => builder.build(),
        };
        match tokio::time::timeout(self.options.probe_timeout, client.apiserver_version()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(ClusterCacheError::Unreachable {
                    cluster: cluster.clone(),
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClusterCacheError::Unreachable {
                    cluster: cluster.clone(),
                    reason: "probe timed out".into(),
                });
            }
        }
        let cache = Arc::new(Cache::new());
        let writes = Arc::new(WritePath::new(
            Arc::new(KubeWriteApi::new(client.clone())),
            Arc::clone(&cache),
            &self.options.instance,
        ));
        let conn_stop = stop.child_token();
        let kinds = self.kinds();
        let mut resolved = Vec::with_capacity(kinds.len());
        for gvk in &kinds {
            resolved.push(self.resolve(&client, cluster, gvk).await?);
        }
        let conn = Arc::new(Connection {
            cluster: cluster.clone(),
            digest,
            client,
            cache,
            writes,
            state: AtomicU8::new(ConnectionState::Connected.as_u8()),
            stop: conn_stop,
            watching: Mutex::new(kinds.iter().cloned().collect()),
        });
        for (gvk, res) in kinds.iter().zip(resolved) {
            self.watch_kind(&conn, gvk, res);
        }
        Ok(conn)
    }
}

impl crate::controller::WorkloadAccess for ClusterCache {
    fn connection(&self, cluster: &ObjectKey) -> WitConnection {
        match self.state(cluster) {
            ConnectionState::Disconnected => WitConnection::Disconnected,
            ConnectionState::Connected => WitConnection::Connected,
            ConnectionState::Unhealthy => WitConnection::Unhealthy,
        }
    }

    fn cache(&self, cluster: &ObjectKey, gvk: &Gvk) -> Option<Arc<KindCache>> {
        // An unhealthy cluster's informers may be stale: its relations are unsynced.
        self.connection(cluster)
            .filter(|c| c.state() == ConnectionState::Connected)
            .and_then(|c| c.cache().kind(gvk))
    }

    fn writer(&self, cluster: &ObjectKey) -> Result<Arc<WritePath>, String> {
        match self.connection(cluster) {
            None => Err("not connected".into()),
            Some(c) if c.state() != ConnectionState::Connected => {
                Err("connection unhealthy".into())
            }
            Some(c) => Ok(Arc::clone(c.writes())),
        }
    }

    fn register(&self, _plugin: &str, kinds: Vec<Gvk>, events: Arc<dyn WorkloadEvents>) {
        for gvk in kinds {
            // Listen first: a kind new to live connections lists at once.
            let sink = Arc::clone(&events);
            let g = gvk.clone();
            self.on_event(&gvk, move |cluster, ev| sink.event(cluster, &g, ev));
            self.register_kind(&gvk);
        }
        self.on_state(move |cluster, _| events.connection_changed(cluster));
    }
}

/// The sha256 of a kubeconfig's text: a connection is rebuilt only when it changes.
fn kubeconfig_digest(kubeconfig: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, kubeconfig.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            ConnectionState::Disconnected,
            ConnectionState::Connected,
            ConnectionState::Unhealthy,
        ] {
            assert_eq!(ConnectionState::from_u8(s.as_u8()), s);
        }
    }

    #[test]
    fn kubeconfig_secrets_name_their_cluster() {
        let s = CachedObject::from_json(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c1-kubeconfig","namespace":"ns"}}"#,
        )
        .unwrap();
        assert_eq!(cluster_of_secret(&s), Some(ObjectKey::new("ns", "c1")));
        let other = CachedObject::from_json(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c1-ca","namespace":"ns"}}"#,
        )
        .unwrap();
        assert_eq!(cluster_of_secret(&other), None);
    }
}

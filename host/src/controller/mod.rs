//! Per-plugin controller: N workers turn queued keys into snapshots, plugin calls, writes and queue results.
//!
//! One worker iteration ([`Controller::process_next`]), as controller-runtime's
//! `reconcileHandler`:
//!
//! 1. pop a key (never one another worker holds);
//! 2. read the primary from the cache; gone => nothing to do; paused (the
//!    `cluster.x-k8s.io/paused` annotation, or its Cluster's `spec.paused`, as CAPI's
//!    `annotations.IsPaused`) => skipped;
//! 3. assemble the snapshot from the cache: the primary and every declared relation, each
//!    relation saying whether its kind's cache has synced (an absent object in an unsynced
//!    cache proves nothing, and the snapshot says so);
//! 4. call the plugin (on the blocking pool by default; a guest call may run for up to its
//!    epoch deadline);
//! 5. hand the outcome to the write path;
//! 6. tell the queue: success forgets the backoff; requeue-after forgets and re-adds after
//!    the delay; a transient error or a plugin fault (trap, deadline, memory limit, invalid
//!    outcome) re-adds with backoff; a terminal error or a refused write is not retried
//!    until something changes; a 409 conflict re-adds with backoff as `requeue`, not as an
//!    error.
//!
//! A fault fails only that reconcile: it is counted, logged with plugin and key, and backed
//! off; other keys and other plugins carry on.

mod plugin;

pub use plugin::classify;

use crate::cache::{Cache, CachedObject, Gvk, KindCache, ObjectKey};
use crate::clustercache::{ClusterCache, WorkloadError, WorkloadPlan};
use crate::metrics::ControllerMetrics;
use crate::queue::{QueueConfig, WorkQueue};
use crate::runtime::Target;
use crate::runtime::bindings::capstan::reconciler::types::{
    Connection, Outcome, PluginInfo, RelatedObjects, RelationSelector, Snapshot,
};
use crate::watch::{self, Rule};
use crate::writer::{Grants, WriteError, WritePath, Writer};
use rand::Rng;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A plugin fault: the call did not produce an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (a panic in the guest, an unreachable, a host fault).
    #[error("trap: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("deadline exceeded")]
    Deadline,
    /// The guest hit its memory limit.
    #[error("memory limit exceeded")]
    Memory,
    /// The outcome broke the contract.
    #[error("invalid outcome: {0}")]
    InvalidOutcome(String),
}

/// Why a reconcile call did not return an outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The plugin asked to retry with backoff.
    #[error("transient error: {0}")]
    Transient(String),
    /// The plugin asked not to retry until something changes.
    #[error("terminal error: {0}")]
    Terminal(String),
    /// The call faulted.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// What the controller needs of a plugin; `runtime::Plugin` implements it, and so do the
/// native fakes of tests and benchmarks.
pub trait Reconcile: Send + Sync + 'static {
    /// The validated `describe()` answer.
    fn info(&self) -> &PluginInfo;
    /// One reconcile call for `key` (`namespace/name`). Blocking; may take up to the
    /// plugin's deadline.
    fn reconcile(&self, key: &str, snapshot: &Snapshot) -> Result<Outcome, CallFailure>;
}

/// Errors building a controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The plugin's workload declarations do not parse.
    #[error("plugin {plugin}: {reason}")]
    Workload {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// A kind the plugin reads has no cache (the manager registers every declared kind).
    #[error("plugin {plugin}: kind {kind} is not cached")]
    KindNotCached {
        /// Plugin name.
        plugin: String,
        /// The kind.
        kind: Gvk,
    },
}

/// Settings of one controller (flags override the plugin's `describe()` defaults).
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Workers; default: the plugin's, else 10.
    pub concurrency: Option<u32>,
    /// Full resync period; default: the plugin's, else 10 minutes.
    pub sync_period: Option<Duration>,
    /// Backoff and bucket of the queue.
    pub queue: QueueConfig,
    /// Run plugin calls on the blocking pool (default) or inline on the worker task.
    pub blocking_calls: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            concurrency: None,
            sync_period: None,
            queue: QueueConfig::default(),
            blocking_calls: true,
        }
    }
}

#[derive(Debug)]
enum Selector {
    Owned,
    Label(String),
    FieldRef(Vec<String>),
    ControllerOwner,
    ByLabelValue(String),
    /// Evaluated in the next commit.
    Unsupported,
}

#[derive(Debug)]
struct RelationPlan {
    name: String,
    cache: Arc<KindCache>,
    selector: Selector,
}

/// How one reconcile ended, as counted in `controller_runtime_reconcile_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Done; backoff forgotten.
    Success,
    /// Re-added after the plugin's delay.
    RequeueAfter(Duration),
    /// Re-added with backoff after a conflict.
    Requeue,
    /// Transient error or fault: re-added with backoff.
    Error,
    /// Terminal error or refused write: not retried until a change.
    Terminal,
    /// Primary gone or paused: nothing called.
    Skipped,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Success | Verdict::Skipped => "success",
            Verdict::RequeueAfter(_) => "requeue_after",
            Verdict::Requeue => "requeue",
            Verdict::Error | Verdict::Terminal => "error",
        }
    }
}

/// One plugin's queue, workers and wiring.
pub struct Controller {
    name: String,
    plugin: Arc<dyn Reconcile>,
    primary: Gvk,
    primary_cache: Arc<KindCache>,
    relations: Vec<RelationPlan>,
    cache: Arc<Cache>,
    queue: Arc<WorkQueue<ObjectKey>>,
    writes: Arc<WritePath>,
    grants: Grants,
    metrics: ControllerMetrics,
    concurrency: u32,
    sync_period: Duration,
    blocking_calls: bool,
    /// Workload relations, watches and writes, when the plugin declares any.
    workload: Option<Arc<WorkloadPlan>>,
    /// The cluster cache serving `workload`, attached by the manager.
    cluster_cache: std::sync::OnceLock<Arc<ClusterCache>>,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("primary", &self.primary)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The default number of workers per plugin.
pub const DEFAULT_CONCURRENCY: u32 = 10;
/// The default full resync period.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(600);

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!("{}Z", now.strftime("%Y-%m-%dT%H:%M:%S"))
}

impl Controller {
    /// Wire `plugin` to the (already registered) caches of every kind it declares, and its
    /// watches to a new queue. `metrics` must come from [`crate::metrics::Metrics::controller`].
    pub fn new(
        plugin: Arc<dyn Reconcile>,
        cache: Arc<Cache>,
        writes: Arc<WritePath>,
        metrics_for: impl FnOnce(&str, u32) -> ControllerMetrics,
        options: ControllerOptions,
    ) -> Result<Arc<Self>, ControllerError> {
        let info = plugin.info();
        let name = info.name.clone();
        let kind = |g: &Gvk| {
            cache.kind(g).ok_or_else(|| ControllerError::KindNotCached {
                plugin: name.clone(),
                kind: g.clone(),
            })
        };
        let primary = Gvk::from(&info.primary);
        let primary_cache = kind(&primary)?;
        let mut relations = Vec::new();
        // Workload relations are the cluster cache's (see `attach_cluster_cache`).
        for r in info
            .relations
            .iter()
            .filter(|r| r.target == Target::Management)
        {
            let rc = kind(&Gvk::from(&r.kind))?;
            let selector = match &r.selector {
                RelationSelector::Owned => Selector::Owned,
                RelationSelector::Label(l) => {
                    rc.index_label(l);
                    Selector::Label(l.clone())
                }
                RelationSelector::FieldRef(p) => Selector::FieldRef(watch::split_path(p)),
                RelationSelector::ControllerOwner => Selector::ControllerOwner,
                RelationSelector::ByLabelValue(l) => Selector::ByLabelValue(l.clone()),
                _ => Selector::Unsupported,
            };
            relations.push(RelationPlan {
                name: r.name.clone(),
                cache: rc,
                selector,
            });
        }
        let concurrency = options
            .concurrency
            .or(info.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        let sync_period = options
            .sync_period
            .or(info
                .resync_seconds
                .map(|s| Duration::from_secs(u64::from(s))))
            .unwrap_or(DEFAULT_SYNC_PERIOD);
        let metrics = metrics_for(&name, concurrency);
        let queue = WorkQueue::new(options.queue, metrics.queue.clone());
        let plan = watch::plan(info);
        for (gvk, rule) in &plan {
            let kc = kind(gvk)?;
            let q = Arc::clone(&queue);
            watch::connect(&kc, rule.clone(), primary.clone(), move |k| q.add(k));
        }
        let grants = Grants::new(&info.permissions);
        let workload = WorkloadPlan::new(info)
            .map_err(|reason| ControllerError::Workload {
                plugin: name.clone(),
                reason,
            })?
            .map(Arc::new);
        debug_assert!(plan.first().is_some_and(|(_, r)| *r == Rule::Primary));
        Ok(Arc::new(Self {
            name,
            plugin,
            primary,
            primary_cache,
            relations,
            cache,
            queue,
            writes,
            grants,
            metrics,
            concurrency,
            sync_period,
            blocking_calls: options.blocking_calls,
            workload,
            cluster_cache: std::sync::OnceLock::new(),
        }))
    }

    /// The plugin's workload declarations, if any.
    pub fn workload_plan(&self) -> Option<&Arc<WorkloadPlan>> {
        self.workload.as_ref()
    }

    /// Serve the plugin's workload relations, watches and writes from `cc` (once; the
    /// manager calls it for plugins with a [`WorkloadPlan`]). Workload events and
    /// connection changes enqueue the affected primaries.
    pub fn attach_cluster_cache(&self, cc: &Arc<ClusterCache>) {
        let Some(plan) = &self.workload else { return };
        if self.cluster_cache.set(Arc::clone(cc)).is_err() {
            return;
        }
        for gvk in plan.kinds() {
            cc.register_kind(gvk);
        }
        let q = Arc::clone(&self.queue);
        plan.subscribe(cc, Arc::clone(&self.primary_cache), move |k| q.add(k));
    }

    /// The controller (plugin) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue (tests and benchmarks add keys directly).
    pub fn queue(&self) -> &Arc<WorkQueue<ObjectKey>> {
        &self.queue
    }

    /// The metric handles.
    pub fn metrics(&self) -> &ControllerMetrics {
        &self.metrics
    }

    /// Number of workers.
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Run workers, the queue's driver and the resync loop until `stop`; then stop taking
    /// keys and return once in-flight reconciles (and their writes) have finished.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let driver = self.queue.spawn_driver();
        let mut workers = Vec::new();
        for _ in 0..self.concurrency {
            let c = Arc::clone(&self);
            workers.push(tokio::spawn(async move {
                while c.process_next().await.is_some() {}
            }));
        }
        let resync = {
            let c = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move { c.resync_loop(stop).await })
        };
        stop.cancelled().await;
        self.queue.shutdown();
        for w in workers {
            let _ = w.await;
        }
        resync.abort();
        let _ = driver.await;
        tracing::info!(controller = %self.name, "controller stopped");
    }

    async fn resync_loop(&self, stop: CancellationToken) {
        loop {
            let jitter = rand::rng().random_range(1.0..1.1);
            let wait = self.sync_period.mul_f64(jitter);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            self.resync();
        }
    }

    /// Add every primary object to the queue (terminal-error keys excepted).
    pub fn resync(&self) {
        for k in self.primary_cache.keys() {
            self.queue.add_resync(k);
        }
    }

    /// Process one key: `None` once the queue has shut down.
    pub async fn process_next(&self) -> Option<Verdict> {
        let key = self.queue.get().await?;
        self.metrics.active_workers.inc();
        let start = Instant::now();
        let span = tracing::info_span!("reconcile", plugin = %self.name, key = %key, result = tracing::field::Empty);
        let verdict = self.reconcile_key(&key).instrument(span.clone()).await;
        span.record("result", verdict.label());
        self.metrics
            .reconcile_time
            .observe(start.elapsed().as_secs_f64());
        let counter = match verdict {
            Verdict::Success | Verdict::Skipped => &self.metrics.success,
            Verdict::RequeueAfter(_) => &self.metrics.requeue_after,
            Verdict::Requeue => &self.metrics.requeue,
            Verdict::Error | Verdict::Terminal => &self.metrics.error,
        };
        counter.inc();
        self.metrics.active_workers.dec();
        self.queue.done(&key);
        Some(verdict)
    }

    fn paused(&self, primary: &CachedObject) -> bool {
        if primary.paused_annotation
            || (self.primary.group == "cluster.x-k8s.io"
                && self.primary.kind == "Cluster"
                && primary.spec_paused)
        {
            return true;
        }
        let Some(cluster) = primary.cluster_name.as_deref() else {
            return false;
        };
        self.cache
            .kind_any_version("cluster.x-k8s.io", "Cluster")
            .and_then(|c| c.get(&ObjectKey::new(primary.key.namespace.clone(), cluster)))
            .is_some_and(|c| c.spec_paused)
    }

    /// The snapshot of `primary`: itself and every declared relation, from the cache.
    pub fn snapshot(&self, primary: &CachedObject) -> Snapshot {
        let mut parsed: Option<Value> = None;
        let ns = &primary.key.namespace;
        let related: Vec<RelatedObjects> = self
            .relations
            .iter()
            .map(|r| {
                let objects: Vec<Arc<CachedObject>> = match &r.selector {
                    Selector::Unsupported => Vec::new(),
                    Selector::Owned => r.cache.owned_by(&primary.uid, true),
                    Selector::Label(l) => r.cache.with_label(l, ns, &primary.key.name),
                    Selector::FieldRef(path) => {
                        let v = parsed.get_or_insert_with(|| {
                            serde_json::from_str(&primary.json).unwrap_or(Value::Null)
                        });
                        watch::reference_at(v, path)
                            .and_then(|(rns, name)| {
                                r.cache.get(&ObjectKey::new(rns.unwrap_or(ns), name))
                            })
                            .into_iter()
                            .collect()
                    }
                    Selector::ControllerOwner => primary
                        .controller_owner()
                        .filter(|o| {
                            o.kind == r.cache.gvk().kind && o.group() == r.cache.gvk().group
                        })
                        .and_then(|o| r.cache.get(&ObjectKey::new(ns.clone(), o.name.clone())))
                        .into_iter()
                        .collect(),
                    Selector::ByLabelValue(l) => primary
                        .label(l)
                        .and_then(|v| r.cache.get(&ObjectKey::new(ns.clone(), v)))
                        .into_iter()
                        .collect(),
                };
                RelatedObjects {
                    relation: r.name.clone(),
                    synced: r.cache.is_synced(),
                    objects: objects.iter().map(|o| o.json.to_string()).collect(),
                }
            })
            .collect();
        let mut related: Vec<RelatedObjects> = related;
        let mut workload = Connection::NotApplicable;
        if let Some(plan) = &self.workload {
            let (state, conn) = match self.cluster_cache.get() {
                Some(cc) => plan.connection(cc, primary),
                None => (Connection::Disconnected, None),
            };
            workload = state;
            // Relations in declaration order: workload entries go back to their places.
            for (index, r) in plan.related(conn.as_deref(), primary) {
                related.insert(index.min(related.len()), r);
            }
        }
        Snapshot {
            primary: primary.json.to_string(),
            related,
            now: now_rfc3339(),
            workload,
        }
    }

    async fn call(&self, key: &ObjectKey, snapshot: Snapshot) -> Result<Outcome, CallFailure> {
        let span = tracing::debug_span!("call");
        let start = Instant::now();
        let key = key.to_string();
        let result = if self.blocking_calls {
            let plugin = Arc::clone(&self.plugin);
            let span = span.clone();
            match tokio::task::spawn_blocking(move || {
                span.in_scope(|| plugin.reconcile(&key, &snapshot))
            })
            .await
            {
                Ok(r) => r,
                Err(e) => Err(CallFailure::Fault(Fault::Trap(format!(
                    "plugin call panicked: {e}"
                )))),
            }
        } else {
            span.in_scope(|| self.plugin.reconcile(&key, &snapshot))
        };
        self.metrics
            .plugin_call
            .observe(start.elapsed().as_secs_f64());
        result
    }

    fn fault(&self, key: &ObjectKey, fault: &Fault) {
        let counter = match fault {
            Fault::Trap(_) => {
                self.metrics.panics.inc();
                &self.metrics.trap
            }
            Fault::Deadline => &self.metrics.deadline,
            Fault::Memory => &self.metrics.memory,
            Fault::InvalidOutcome(_) => &self.metrics.invalid_outcome,
        };
        counter.inc();
        tracing::error!(plugin = %self.name, key = %key, error = %fault, "plugin fault; reconcile failed");
    }

    /// Reconcile one key (steps 2-6 of the module docs) and tell the queue the result.
    pub async fn reconcile_key(&self, key: &ObjectKey) -> Verdict {
        // The freshest state: the cache, or our own last write to it if the cache lags.
        let Some(primary) = self.writes.freshest(&self.primary, key) else {
            self.queue.forget(key);
            return Verdict::Skipped;
        };
        if self.paused(&primary) {
            tracing::debug!(plugin = %self.name, key = %key, "paused; skipping");
            self.queue.forget(key);
            return Verdict::Skipped;
        }
        let snapshot = tracing::debug_span!("snapshot").in_scope(|| self.snapshot(&primary));
        let outcome = match self.call(key, snapshot).await {
            Ok(o) => o,
            Err(CallFailure::Transient(msg)) => {
                self.metrics.errors.inc();
                tracing::warn!(plugin = %self.name, key = %key, error = %msg, "reconcile failed; retrying with backoff");
                self.queue.add_rate_limited(key.clone());
                return Verdict::Error;
            }
            Err(CallFailure::Terminal(msg)) => {
                self.metrics.errors.inc();
                self.metrics.terminal_errors.inc();
                tracing::error!(plugin = %self.name, key = %key, error = %msg, "terminal reconcile error; not retrying until a change");
                self.queue.mark_terminal(key);
                return Verdict::Terminal;
            }
            Err(CallFailure::Fault(f)) => {
                self.metrics.errors.inc();
                self.fault(key, &f);
                self.queue.add_rate_limited(key.clone());
                return Verdict::Error;
            }
        };
        let writer = Writer {
            plugin: &self.name,
            grants: &self.grants,
            metrics: &self.metrics,
            observed: Some((&self.primary, key, &primary.resource_version)),
        };
        match self.writes.write(&writer, &outcome).await {
            Ok(_) => {}
            Err(WriteError::Conflict { kind, object }) => {
                self.metrics.write_conflicts.inc();
                tracing::debug!(plugin = %self.name, key = %key, %kind, %object, "write conflict; requeueing");
                self.queue.add_rate_limited(key.clone());
                return Verdict::Requeue;
            }
            Err(e @ WriteError::Refused { .. }) => {
                self.metrics.errors.inc();
                self.metrics.terminal_errors.inc();
                tracing::error!(plugin = %self.name, key = %key, error = %e, "outcome refused");
                self.queue.mark_terminal(key);
                return Verdict::Terminal;
            }
            Err(WriteError::Invalid { reason, .. }) => {
                self.metrics.errors.inc();
                self.fault(key, &Fault::InvalidOutcome(reason));
                self.queue.add_rate_limited(key.clone());
                return Verdict::Error;
            }
            Err(e) => {
                self.metrics.errors.inc();
                tracing::warn!(plugin = %self.name, key = %key, error = %e, "write failed; retrying with backoff");
                self.queue.add_rate_limited(key.clone());
                return Verdict::Error;
            }
        }
        if let (Some(plan), Some(cc)) = (&self.workload, self.cluster_cache.get()) {
            let written = plan
                .write(cc, &primary, &self.metrics, &outcome)
                .instrument(tracing::debug_span!("workload-write"))
                .await;
            match written {
                Ok(_) => {}
                Err(WorkloadError::Write(WriteError::Conflict { kind, object })) => {
                    self.metrics.write_conflicts.inc();
                    tracing::debug!(plugin = %self.name, key = %key, %kind, %object, "workload write conflict; requeueing");
                    self.queue.add_rate_limited(key.clone());
                    return Verdict::Requeue;
                }
                Err(WorkloadError::Write(e @ WriteError::Refused { .. })) => {
                    self.metrics.errors.inc();
                    self.metrics.terminal_errors.inc();
                    tracing::error!(plugin = %self.name, key = %key, error = %e, "workload outcome refused");
                    self.queue.mark_terminal(key);
                    return Verdict::Terminal;
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(plugin = %self.name, key = %key, error = %e, "workload write failed; retrying with backoff");
                    self.queue.add_rate_limited(key.clone());
                    return Verdict::Error;
                }
            }
        }
        self.queue.forget(key);
        match outcome.requeue_after_ms.filter(|ms| *ms > 0) {
            Some(ms) => {
                let d = Duration::from_millis(ms);
                self.queue.add_after(key.clone(), d);
                Verdict::RequeueAfter(d)
            }
            None => Verdict::Success,
        }
    }
}

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
mod select;
pub mod workload;

pub use plugin::classify;
pub use workload::{NOT_CONFIGURED, NoWorkloadAccess, WorkloadAccess, WorkloadEvents};

use select::{PrimaryView, Selector};

use crate::cache::{Cache, CacheEvent, CachedObject, Gvk, KindCache, ObjectKey};
use crate::metrics::ControllerMetrics;
use crate::queue::{QueueConfig, WorkQueue};
use crate::runtime::bindings::capstan::reconciler::types::{
    Connection, Outcome, PluginInfo, RelatedObjects, Snapshot, Target,
};
use crate::watch::{self, MapContext, Rule, Scope};
use crate::writer::{Grants, WriteError, WritePath, Writer};
use rand::Rng;
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
    /// A kind the plugin reads has no cache (the manager registers every declared kind).
    #[error("plugin {plugin}: kind {kind} is not cached")]
    KindNotCached {
        /// Plugin name.
        plugin: String,
        /// The kind.
        kind: Gvk,
    },
    /// A relation's selector does not parse (validation at load normally catches it).
    #[error("plugin {plugin}: relation {relation}: {reason}")]
    InvalidRelation {
        /// Plugin name.
        plugin: String,
        /// The relation.
        relation: String,
        /// What is wrong.
        reason: String,
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
    /// Access to workload clusters (see [`workload`]); default: none.
    pub workload: Arc<dyn WorkloadAccess>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            concurrency: None,
            sync_period: None,
            queue: QueueConfig::default(),
            blocking_calls: true,
            workload: Arc::new(NoWorkloadAccess),
        }
    }
}

#[derive(Debug)]
struct RelationPlan {
    name: String,
    gvk: Gvk,
    /// The management cache; `None` for a workload relation (asked per cluster).
    cache: Option<Arc<KindCache>>,
    selector: Selector,
    target: Target,
    namespace: Option<String>,
}

/// Maps workload events to primary keys (the [`WorkloadEvents`] the controller registers).
struct WorkloadWatches {
    primary: Gvk,
    primary_cache: Arc<KindCache>,
    rules: Vec<(Gvk, Rule)>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

impl WorkloadEvents for WorkloadWatches {
    fn event(&self, cluster: &ObjectKey, gvk: &Gvk, event: &CacheEvent) {
        for (watched, rule) in self.rules.iter().filter(|(g, _)| g == gvk) {
            let cx = MapContext {
                primary: &self.primary,
                primary_cache: &self.primary_cache,
                watched,
                scope: Scope::Workload { cluster },
            };
            for k in watch::keys_for_event(rule, &cx, event) {
                self.queue.add(k);
            }
        }
    }

    fn connection_changed(&self, cluster: &ObjectKey) {
        for p in self
            .primary_cache
            .in_cluster(&cluster.namespace, &cluster.name)
        {
            self.queue.add(p.key.clone());
        }
    }
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
    uses_workload: bool,
    workload: Arc<dyn WorkloadAccess>,
    workload_grants: Grants,
    cache: Arc<Cache>,
    queue: Arc<WorkQueue<ObjectKey>>,
    writes: Arc<WritePath>,
    grants: Grants,
    metrics: ControllerMetrics,
    concurrency: u32,
    sync_period: Duration,
    blocking_calls: bool,
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
        let mut workload_kinds: Vec<Gvk> = Vec::new();
        for r in &info.relations {
            let gvk = Gvk::from(&r.kind);
            let cache = match r.target {
                Target::Management => Some(kind(&gvk)?),
                Target::Workload => {
                    if !workload_kinds.contains(&gvk) {
                        workload_kinds.push(gvk.clone());
                    }
                    None
                }
            };
            // Indexes are registered now on management caches, and on first use on
            // workload caches (each cluster has its own).
            let scratch;
            let index_on = match &cache {
                Some(c) => c.as_ref(),
                None => {
                    scratch = KindCache::new(gvk.clone(), "-", true, Default::default());
                    &scratch
                }
            };
            let selector = Selector::new(&r.selector, index_on).map_err(|reason| {
                ControllerError::InvalidRelation {
                    plugin: name.clone(),
                    relation: r.name.clone(),
                    reason,
                }
            })?;
            relations.push(RelationPlan {
                name: r.name.clone(),
                gvk,
                cache,
                selector,
                target: r.target,
                namespace: r.namespace.clone(),
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
        for (gvk, mapping) in watch::plan(info) {
            let kc = kind(&gvk)?;
            let rule = match &mapping {
                None => Rule::Primary,
                Some(m) => Rule::new(m, &primary_cache),
            };
            let q = Arc::clone(&queue);
            watch::connect(
                &kc,
                rule,
                primary.clone(),
                Arc::clone(&primary_cache),
                move |k| q.add(k),
            );
        }
        let mut rules = Vec::new();
        for w in info.watches.iter().filter(|w| w.target == Target::Workload) {
            let gvk = Gvk::from(&w.kind);
            if !workload_kinds.contains(&gvk) {
                workload_kinds.push(gvk.clone());
            }
            rules.push((gvk, Rule::new(&w.mapping, &primary_cache)));
        }
        let uses_workload = crate::runtime::validate::uses_workload(info);
        if uses_workload {
            // Connection changes enqueue a cluster's primaries through the cluster index.
            options.workload.register(
                &name,
                workload_kinds,
                Arc::new(WorkloadWatches {
                    primary: primary.clone(),
                    primary_cache: Arc::clone(&primary_cache),
                    rules,
                    queue: Arc::clone(&queue),
                }),
            );
        }
        let grants = Grants::new(&info.permissions);
        let workload_grants = Grants::for_target(&info.permissions, Target::Workload);
        Ok(Arc::new(Self {
            name,
            plugin,
            primary,
            primary_cache,
            relations,
            uses_workload,
            workload: options.workload,
            workload_grants,
            cache,
            queue,
            writes,
            grants,
            metrics,
            concurrency,
            sync_period,
            blocking_calls: options.blocking_calls,
        }))
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

    /// The primary's Cluster API cluster (`namespace/name` of the Cluster), if it names one.
    fn cluster_of(primary: &CachedObject) -> Option<ObjectKey> {
        primary
            .cluster
            .as_ref()
            .map(|c| ObjectKey::new(primary.key.namespace.clone(), c.clone()))
    }

    /// The snapshot of `primary`: itself and every declared relation, from the
    /// management cache or the workload cluster's ([`WorkloadAccess::cache`]).
    pub fn snapshot(&self, primary: &CachedObject) -> Snapshot {
        let mut view = PrimaryView::new(primary);
        let cluster = Self::cluster_of(primary);
        let related = self
            .relations
            .iter()
            .map(|r| {
                let cache = match (&r.cache, &cluster) {
                    (Some(c), _) => Some(Arc::clone(c)),
                    (None, Some(cl)) => self.workload.cache(cl, &r.gvk),
                    (None, None) => None,
                };
                let Some(cache) = cache else {
                    return RelatedObjects {
                        relation: r.name.clone(),
                        synced: false,
                        objects: Vec::new(),
                    };
                };
                let objects = select::select(
                    &r.selector,
                    &cache,
                    &mut view,
                    r.target,
                    r.namespace.as_deref(),
                );
                RelatedObjects {
                    relation: r.name.clone(),
                    synced: cache.is_synced(),
                    objects: objects.iter().map(|o| o.json.to_string()).collect(),
                }
            })
            .collect();
        let workload = match (&cluster, self.uses_workload) {
            (Some(c), true) => self.workload.connection(c),
            _ => Connection::NotApplicable,
        };
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

    /// Write the workload entries of `outcome`; `Some(verdict)` when that failed the
    /// reconcile (the queue already told).
    async fn write_workload(
        &self,
        key: &ObjectKey,
        primary: &CachedObject,
        outcome: &Outcome,
    ) -> Option<Verdict> {
        if outcome.workload_apply.is_empty()
            && outcome.workload_status.is_empty()
            && outcome.workload_delete.is_empty()
        {
            return None;
        }
        let transient = |msg: String| {
            self.metrics.errors.inc();
            tracing::warn!(plugin = %self.name, key = %key, error = %msg, "workload write failed; retrying with backoff");
            self.queue.add_rate_limited(key.clone());
            Some(Verdict::Error)
        };
        let Some(cluster) = Self::cluster_of(primary) else {
            return transient(
                "the outcome has workload entries but the primary names no cluster".into(),
            );
        };
        let writes = match self.workload.writer(&cluster) {
            Ok(w) => w,
            Err(reason) => return transient(format!("workload cluster {cluster}: {reason}")),
        };
        let writer = Writer {
            plugin: &self.name,
            grants: &self.workload_grants,
            metrics: &self.metrics,
            observed: None,
        };
        match writes.write_workload(&writer, outcome).await {
            Ok(_) => None,
            Err(WriteError::Conflict { kind, object }) => {
                self.metrics.write_conflicts.inc();
                tracing::debug!(plugin = %self.name, key = %key, %kind, %object, "workload write conflict; requeueing");
                self.queue.add_rate_limited(key.clone());
                Some(Verdict::Requeue)
            }
            Err(e @ WriteError::Refused { .. }) => {
                self.metrics.errors.inc();
                self.metrics.terminal_errors.inc();
                tracing::error!(plugin = %self.name, key = %key, error = %e, "workload outcome refused");
                self.queue.mark_terminal(key);
                Some(Verdict::Terminal)
            }
            Err(e) => transient(format!("workload cluster {cluster}: {e}")),
        }
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
        if let Some(v) = self.write_workload(key, &primary, &outcome).await {
            return v;
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

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
//! Between 1 and 3, a key whose last reconcile created or deleted objects waits (re-added
//! after [`PENDING_RECHECK`], up to [`PENDING_TTL`]) until the cache shows those writes, as
//! Cluster API's MachineSet waits for its creations and deletions: a snapshot without them
//! would make the plugin create or delete again.
//!
//! A fault fails only that reconcile: it is counted, logged with plugin and key, and backed
//! off; other keys and other plugins carry on.
//!
//! Hot reload ([`Controller::swap`]): everything a plugin version declares (the plugin
//! itself, its relations, grants and watch listeners) is one immutable [`Wiring`] behind a
//! lock. Each reconcile takes the current wiring once, at its start, and uses it for the
//! snapshot, the call and the write, so a reconcile in flight during a swap finishes wholly
//! on the old version and the next one runs wholly on the new. [`Controller::retire`] stops
//! the controller once in-flight reconciles finish. A shadow ([`Controller::set_shadow`])
//! sees the same snapshots as the serving version and never writes. Workload watches are
//! registered with the [`WorkloadAccess`] once per controller; they map events through the
//! serving version's rules, so a swap replaces the rules without registering again (a new
//! workload kind is registered when a version first declares it).

mod plugin;
mod select;
mod shadow;
pub mod workload;

pub use plugin::classify;
pub use shadow::{Shadow, ShadowVerdict, outcome_json};
pub use workload::{NOT_CONFIGURED, NoWorkloadAccess, WorkloadAccess, WorkloadEvents};

use select::{PrimaryView, Selector};

use crate::cache::{Cache, CacheEvent, CachedObject, Gvk, KindCache, ListenerId, ObjectKey};
use crate::metrics::ControllerMetrics;
use crate::queue::{QueueConfig, WorkQueue};
use crate::runtime::bindings::capstan::reconciler::types::{
    Connection, Outcome, PluginInfo, RelatedObjects, Snapshot, Target,
};
use crate::watch::{self, MapContext, Rule, Scope};
use crate::writer::{Grants, Pending, WriteError, WritePath, Writer};
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
    /// sha256 of the component this plugin was loaded from, when it was (the reloader
    /// recognises a file already serving by it).
    fn digest(&self) -> Option<&str> {
        None
    }
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
    /// A replacement declares another plugin name.
    #[error("plugin {plugin}: the replacement is named {found}")]
    NameChanged {
        /// The serving plugin's name.
        plugin: String,
        /// The replacement's name.
        found: String,
    },
    /// A replacement declares another primary kind (its keys would mean other objects).
    #[error("plugin {plugin}: the replacement's primary kind is {found}, not {serving}")]
    PrimaryChanged {
        /// Plugin name.
        plugin: String,
        /// The serving primary kind.
        serving: String,
        /// The replacement's primary kind.
        found: String,
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
/// The rules are the serving version's (replaced by a swap); `kinds` are those registered.
struct WorkloadWatches {
    primary: Gvk,
    primary_cache: Arc<KindCache>,
    rules: parking_lot::RwLock<Arc<Vec<(Gvk, Rule)>>>,
    kinds: parking_lot::Mutex<Vec<Gvk>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

impl WorkloadEvents for WorkloadWatches {
    fn event(&self, cluster: &ObjectKey, gvk: &Gvk, event: &CacheEvent) {
        let rules = Arc::clone(&*self.rules.read());
        for (watched, rule) in rules.iter().filter(|(g, _)| g == gvk) {
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

/// What one plugin version wires: the plugin, its relation plans, its grants and the cache
/// listeners that map its management watches to keys. Immutable; replaced whole by a swap.
struct Wiring {
    plugin: Arc<dyn Reconcile>,
    relations: Vec<RelationPlan>,
    grants: Grants,
    workload_grants: Grants,
    uses_workload: bool,
    listeners: Vec<(Arc<KindCache>, ListenerId)>,
}

impl Wiring {
    /// Wire `plugin` to the registered caches of its kinds: relations, management watches
    /// feeding `queue`, and (through `workload`) its workload kinds and rules.
    fn build(
        plugin: Arc<dyn Reconcile>,
        cache: &Cache,
        primary_cache: &Arc<KindCache>,
        queue: &Arc<WorkQueue<ObjectKey>>,
        workload: &WorkloadWiring<'_>,
    ) -> Result<Self, ControllerError> {
        let info = plugin.info();
        let name = info.name.clone();
        let kind = |g: &Gvk| {
            cache.kind(g).ok_or_else(|| ControllerError::KindNotCached {
                plugin: name.clone(),
                kind: g.clone(),
            })
        };
        let primary = Gvk::from(&info.primary);
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
        // Resolve every kind before subscribing anything, so a failure leaves no listener.
        let plan = watch::plan(info)
            .into_iter()
            .map(|(gvk, mapping)| kind(&gvk).map(|kc| (kc, mapping)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut listeners = Vec::new();
        for (kc, mapping) in plan {
            let rule = match &mapping {
                None => Rule::Primary,
                Some(m) => Rule::new(m, primary_cache),
            };
            let q = Arc::clone(queue);
            let id = watch::connect(
                &kc,
                rule,
                primary.clone(),
                Arc::clone(primary_cache),
                move |k| q.add(k),
            );
            listeners.push((kc, id));
        }
        let mut rules = Vec::new();
        for w in info.watches.iter().filter(|w| w.target == Target::Workload) {
            let gvk = Gvk::from(&w.kind);
            if !workload_kinds.contains(&gvk) {
                workload_kinds.push(gvk.clone());
            }
            rules.push((gvk, Rule::new(&w.mapping, primary_cache)));
        }
        let uses_workload = crate::runtime::validate::uses_workload(info);
        if uses_workload {
            workload.serve(&name, workload_kinds, rules);
        }
        Ok(Self {
            grants: Grants::new(&info.permissions),
            workload_grants: Grants::for_target(&info.permissions, Target::Workload),
            plugin,
            relations,
            uses_workload,
            listeners,
        })
    }

    fn disconnect(&self) {
        for (kc, id) in &self.listeners {
            kc.unsubscribe(*id);
        }
    }
}

/// A controller's link to workload clusters: the access, and its one registered
/// [`WorkloadWatches`].
struct WorkloadWiring<'a> {
    access: &'a Arc<dyn WorkloadAccess>,
    watches: &'a Arc<WorkloadWatches>,
}

impl WorkloadWiring<'_> {
    /// Serve these rules from now on; register kinds not registered before (the first
    /// registration also subscribes connection changes).
    fn serve(&self, plugin: &str, kinds: Vec<Gvk>, rules: Vec<(Gvk, Rule)>) {
        *self.watches.rules.write() = Arc::new(rules);
        let mut registered = self.watches.kinds.lock();
        let first = registered.is_empty();
        let new: Vec<Gvk> = kinds
            .into_iter()
            .filter(|k| !registered.contains(k))
            .collect();
        if first || !new.is_empty() {
            registered.extend(new.iter().cloned());
            let events: Arc<dyn WorkloadEvents> = if first {
                Arc::clone(self.watches) as Arc<dyn WorkloadEvents>
            } else {
                // Later kinds only: connection changes are already subscribed.
                Arc::new(KindsOnly(Arc::clone(self.watches)))
            };
            self.access.register(plugin, new, events);
        }
    }
}

/// Forwards workload events but not connection changes (already forwarded once).
struct KindsOnly(Arc<WorkloadWatches>);

impl WorkloadEvents for KindsOnly {
    fn event(&self, cluster: &ObjectKey, gvk: &Gvk, event: &CacheEvent) {
        self.0.event(cluster, gvk, event);
    }

    fn connection_changed(&self, _: &ObjectKey) {}
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
    primary: Gvk,
    primary_cache: Arc<KindCache>,
    wiring: parking_lot::RwLock<Arc<Wiring>>,
    shadow: parking_lot::RwLock<Option<Arc<Shadow>>>,
    workload: Arc<dyn WorkloadAccess>,
    workload_watches: Arc<WorkloadWatches>,
    cache: Arc<Cache>,
    queue: Arc<WorkQueue<ObjectKey>>,
    writes: Arc<WritePath>,
    /// Per primary key: creations and deletions of its last reconcile the cache may not
    /// show yet, and when they were sent.
    pending: parking_lot::Mutex<std::collections::HashMap<ObjectKey, (Instant, Vec<Pending>)>>,
    metrics: ControllerMetrics,
    concurrency: u32,
    sync_period: Duration,
    blocking_calls: bool,
    retired: CancellationToken,
    stopped: CancellationToken,
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
/// How often a key waiting for its writes to reach the cache is looked at again (the
/// watch event of the write usually re-queues it sooner).
pub const PENDING_RECHECK: Duration = Duration::from_millis(100);
/// How long a key waits for its writes to reach the cache before it is reconciled anyway
/// (an object created into a namespace the cache does not watch never shows).
pub const PENDING_TTL: Duration = Duration::from_secs(10);
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
        let primary = Gvk::from(&info.primary);
        let primary_cache = cache
            .kind(&primary)
            .ok_or_else(|| ControllerError::KindNotCached {
                plugin: name.clone(),
                kind: primary.clone(),
            })?;
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
        let workload_watches = Arc::new(WorkloadWatches {
            primary: primary.clone(),
            primary_cache: Arc::clone(&primary_cache),
            rules: parking_lot::RwLock::new(Arc::new(Vec::new())),
            kinds: parking_lot::Mutex::new(Vec::new()),
            queue: Arc::clone(&queue),
        });
        let wiring = Wiring::build(
            plugin,
            &cache,
            &primary_cache,
            &queue,
            &WorkloadWiring {
                access: &options.workload,
                watches: &workload_watches,
            },
        )?;
        Ok(Arc::new(Self {
            name,
            primary,
            primary_cache,
            wiring: parking_lot::RwLock::new(Arc::new(wiring)),
            shadow: parking_lot::RwLock::new(None),
            workload: options.workload,
            workload_watches,
            cache,
            queue,
            writes,
            pending: parking_lot::Mutex::new(std::collections::HashMap::new()),
            metrics,
            concurrency,
            sync_period,
            blocking_calls: options.blocking_calls,
            retired: CancellationToken::new(),
            stopped: CancellationToken::new(),
        }))
    }

    /// Serve `plugin` from the next reconcile on; returns the version it replaces.
    ///
    /// The replacement must have the same name and primary kind; every other kind it
    /// declares must already be cached (the reloader registers new kinds first). Its
    /// relations and watches replace the old ones (listeners swapped; the shared caches
    /// stay), reconciles in flight finish on the old version, and every primary object is
    /// queued again (terminal errors included) so each converges to the new version's result.
    /// Concurrency and the resync period keep their values until the controller restarts.
    pub fn swap(&self, plugin: Arc<dyn Reconcile>) -> Result<Arc<dyn Reconcile>, ControllerError> {
        let info = plugin.info();
        if info.name != self.name {
            return Err(ControllerError::NameChanged {
                plugin: self.name.clone(),
                found: info.name.clone(),
            });
        }
        let found = Gvk::from(&info.primary);
        if found != self.primary {
            return Err(ControllerError::PrimaryChanged {
                plugin: self.name.clone(),
                serving: self.primary.to_string(),
                found: found.to_string(),
            });
        }
        let new = Arc::new(Wiring::build(
            plugin,
            &self.cache,
            &self.primary_cache,
            &self.queue,
            &WorkloadWiring {
                access: &self.workload,
                watches: &self.workload_watches,
            },
        )?);
        if !new.uses_workload {
            *self.workload_watches.rules.write() = Arc::new(Vec::new());
        }
        let old = std::mem::replace(&mut *self.wiring.write(), new);
        old.disconnect();
        for k in self.primary_cache.keys() {
            self.queue.add(k);
        }
        Ok(Arc::clone(&old.plugin))
    }

    /// The plugin serving now.
    pub fn plugin(&self) -> Arc<dyn Reconcile> {
        Arc::clone(&self.wiring.read().plugin)
    }

    /// Run `shadow` beside the serving version from the next reconcile on (`None` stops it).
    pub fn set_shadow(&self, shadow: Option<Arc<Shadow>>) {
        *self.shadow.write() = shadow;
    }

    /// The shadow running now.
    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow.read().clone()
    }

    /// Stop this controller (its plugin was removed): no new keys are taken, its watches are
    /// disconnected, and [`Controller::run`] returns once in-flight reconciles finish; see
    /// [`Controller::stopped`].
    pub fn retire(&self) {
        self.wiring.read().disconnect();
        *self.workload_watches.rules.write() = Arc::new(Vec::new());
        self.set_shadow(None);
        self.retired.cancel();
    }

    /// Resolves once [`Controller::run`] has returned.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
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
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = self.retired.cancelled() => {}
        }
        self.queue.shutdown();
        for w in workers {
            let _ = w.await;
        }
        resync.abort();
        let _ = driver.await;
        self.stopped.cancel();
        tracing::info!(controller = %self.name, "controller stopped");
    }

    async fn resync_loop(&self, stop: CancellationToken) {
        loop {
            let jitter = rand::rng().random_range(1.0..1.1);
            let wait = self.sync_period.mul_f64(jitter);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.retired.cancelled() => return,
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

    /// Whether `key`'s last creations and deletions are still missing from the cache
    /// (forgotten once shown or after [`PENDING_TTL`]).
    fn awaiting_cache(&self, key: &ObjectKey) -> bool {
        let mut pending = self.pending.lock();
        let Some((sent, writes)) = pending.get_mut(key) else {
            return false;
        };
        writes.retain(|p| !self.writes.observed(p));
        if writes.is_empty() {
            pending.remove(key);
            return false;
        }
        if sent.elapsed() >= PENDING_TTL {
            tracing::debug!(plugin = %self.name, key = %key, missing = ?writes,
                "writes not shown by the cache in time; reconciling anyway");
            pending.remove(key);
            return false;
        }
        true
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

    /// The snapshot of `primary`: itself and every relation the serving version declares,
    /// from the management cache or the workload cluster's ([`WorkloadAccess::cache`]).
    pub fn snapshot(&self, primary: &CachedObject) -> Snapshot {
        let wiring = Arc::clone(&*self.wiring.read());
        self.snapshot_with(&wiring, primary)
    }

    fn snapshot_with(&self, wiring: &Wiring, primary: &CachedObject) -> Snapshot {
        let mut view = PrimaryView::new(primary);
        let cluster = Self::cluster_of(primary);
        let related = wiring
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
        let workload = match (&cluster, wiring.uses_workload) {
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

    async fn call(
        &self,
        plugin: &Arc<dyn Reconcile>,
        key: &ObjectKey,
        snapshot: Snapshot,
    ) -> Result<Outcome, CallFailure> {
        let span = tracing::debug_span!("call");
        let start = Instant::now();
        let key = key.to_string();
        let result = if self.blocking_calls {
            let plugin = Arc::clone(plugin);
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
            span.in_scope(|| plugin.reconcile(&key, &snapshot))
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
        wiring: &Wiring,
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
            grants: &wiring.workload_grants,
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
            self.pending.lock().remove(key);
            return Verdict::Skipped;
        };
        if self.paused(&primary) {
            tracing::debug!(plugin = %self.name, key = %key, "paused; skipping");
            self.queue.forget(key);
            return Verdict::Skipped;
        }
        if self.awaiting_cache(key) {
            self.queue.add_after(key.clone(), PENDING_RECHECK);
            return Verdict::RequeueAfter(PENDING_RECHECK);
        }
        // One version for the whole reconcile: snapshot, call and write.
        let wiring = Arc::clone(&*self.wiring.read());
        let snapshot =
            tracing::debug_span!("snapshot").in_scope(|| self.snapshot_with(&wiring, &primary));
        let shadow = self.shadow.read().clone();
        let shadow_input = shadow.as_ref().map(|_| snapshot.clone());
        let result = self.call(&wiring.plugin, key, snapshot).await;
        if let (Some(shadow), Some(input)) = (shadow, shadow_input) {
            shadow.compare(key, input, &result);
        }
        let outcome = match result {
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
            grants: &wiring.grants,
            metrics: &self.metrics,
            observed: Some((&self.primary, key, &primary.resource_version)),
        };
        match self.writes.write(&writer, &outcome).await {
            Ok(report) if !report.pending.is_empty() => {
                self.pending
                    .lock()
                    .insert(key.clone(), (Instant::now(), report.pending));
            }
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
        if let Some(v) = self.write_workload(&wiring, key, &primary, &outcome).await {
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

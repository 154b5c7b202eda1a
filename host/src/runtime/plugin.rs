//! A loaded plugin (component, InstancePre, digest, validated plugin-info) and its calls.

use super::bindings::capstan::reconciler::types::{
    Capabilities, KeyMapping, Outcome, PluginInfo, ReconcileError, RelationSelector, Snapshot,
    Target, Verbs,
};
use super::bindings::{Reconciler, ReconcilerPre};
use super::capabilities::{CallCaps, MAX_LOG_LINES_PER_CALL, Memo};
use super::error::CallError;
use super::hostcalls::{Grants, MAX_CRYPTO_OPS_PER_CALL};
use super::store::StoreData;
use super::validate;
use super::{RuntimeError, RuntimeInner, WIT_VERSION};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{ComponentExportIndex, Instance, TypedFunc};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Wall time of each step of one [`Plugin::reconcile`], from
/// [`Plugin::reconcile_timed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileTimings {
    /// A fresh `Store`: WASI context (grants nothing), limits, capabilities.
    pub store: Duration,
    /// A fresh instance from the `InstancePre` (pool slot, memory image),
    /// and its `reconcile` export looked up (its type was checked at load).
    pub instantiate: Duration,
    /// The call: snapshot copied in, the guest's reconcile, the outcome
    /// copied out, post-return.
    pub call: Duration,
    /// Dropping the store: the instance's slot goes back to the pool and its
    /// memory is reset for the next instance.
    pub drop: Duration,
    /// Checking the outcome (size, kinds, names).
    pub validate: Duration,
}

impl ReconcileTimings {
    /// The sum of the steps.
    pub fn total(&self) -> Duration {
        self.store + self.instantiate + self.call + self.drop + self.validate
    }
}

#[derive(Clone, Copy)]
enum Step {
    Store,
    Instantiate,
    Call,
    Drop,
    Validate,
}

/// A plugin ready to reconcile. Cheap to clone; `Send + Sync`. Every call
/// gets a fresh instance (from the pre-linked `InstancePre`) in a fresh
/// store, so no state leaks between reconciles except through `memo`.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    runtime: Arc<RuntimeInner>,
    pre: ReconcilerPre<StoreData>,
    /// `reconcile` in instances of `pre`'s component, checked at load.
    reconcile: ReconcileExport,
    info: PluginInfo,
    name: Arc<str>,
    digest: String,
    wit_version: String,
    memo: Arc<Memo>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("version", &self.inner.info.version)
            .field("digest", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

/// The signature of the guest's `reconcile` export, as the host calls it.
type ReconcileFn<'a> = TypedFunc<(&'a Snapshot,), (Result<Outcome, ReconcileError>,)>;

/// Where a plugin's `reconcile` export is, with its type checked once at
/// load rather than on every reconcile.
///
/// The bindings wasmtime generates check the exports' types when the
/// `ReconcilerPre` is made, and `ReconcilerPre::instantiate` checks every
/// export again on each new instance, `describe` included: with the nested
/// plugin-info and snapshot types that was ~3 us of every reconcile (the
/// runtime benchmark's profile), for types that cannot change. They belong
/// to the component, and every instance of one `InstancePre` has the same
/// ones (the contract has no resource types, the only types that differ
/// between instances). So `check` runs once per load, on the instance
/// `describe()` runs on, and each reconcile only looks the function up.
#[derive(Clone, Copy)]
pub(crate) struct ReconcileExport {
    index: ComponentExportIndex,
}

impl ReconcileExport {
    /// Find `reconcile` in `instance`, an instance of `pre`'s component, and
    /// check that it has the contract's type.
    fn check(
        store: &mut Store<StoreData>,
        pre: &ReconcilerPre<StoreData>,
        instance: &Instance,
    ) -> wasmtime::Result<Self> {
        let index = pre
            .instance_pre()
            .component()
            .get_export_index(None, "reconcile")
            .ok_or_else(|| wasmtime::format_err!("the component exports no `reconcile`"))?;
        instance
            .get_typed_func::<(&Snapshot,), (Result<Outcome, ReconcileError>,)>(&mut *store, index)
            .map_err(|e| e.context("the `reconcile` export"))?;
        Ok(Self { index })
    }

    /// `reconcile` in `instance`, which must be an instance of the component
    /// this export was checked against (the plugin's own `InstancePre`).
    fn get<'a>(
        &self,
        store: &mut Store<StoreData>,
        instance: &Instance,
    ) -> wasmtime::Result<ReconcileFn<'a>> {
        let func = instance
            .get_func(&mut *store, self.index)
            .ok_or_else(|| wasmtime::format_err!("the component exports no `reconcile`"))?;
        // SAFETY: `check` type-checked this export with these parameter and
        // result types on an instance of the same component (both come from
        // the plugin's one `InstancePre`), and a component's export types
        // are the same in all its instances. The same reasoning as the
        // `new_unchecked` in wasmtime's generated bindings, which check at
        // instantiation and call without checking.
        #[allow(unsafe_code)]
        let typed = unsafe { ReconcileFn::new_unchecked(func) };
        Ok(typed)
    }
}

/// Check the exports' types on a fresh instance and run `describe()`; used
/// by [`super::Runtime::load`] before the plugin (and its name) exists.
/// Exports of other types than the contract's are [`RuntimeError::WrongWorld`];
/// a failing instantiation or call is [`RuntimeError::Describe`].
pub(crate) fn describe(
    rt: &Arc<RuntimeInner>,
    pre: &ReconcilerPre<StoreData>,
    label: &str,
) -> Result<(PluginInfo, ReconcileExport), RuntimeError> {
    let label: Arc<str> = label.into();
    let memo = Arc::new(Memo::new(0, 0));
    let mut store = new_store(
        rt,
        label.clone(),
        "describe".into(),
        memo,
        Capabilities::empty(),
    );
    let instance = pre
        .instance_pre()
        .instantiate(&mut store)
        .map_err(|e| RuntimeError::Describe(classify(rt, &label, &store, e, true)))?;
    let wrong_world = |e: wasmtime::Error| RuntimeError::WrongWorld {
        reason: format!("{e:#}"),
        served: WIT_VERSION,
    };
    let reconcile = ReconcileExport::check(&mut store, pre, &instance).map_err(wrong_world)?;
    let bindings = Reconciler::new(&mut store, &instance).map_err(wrong_world)?;
    let info = bindings
        .call_describe(&mut store)
        .map_err(|e| RuntimeError::Describe(classify(rt, &label, &store, e, false)))?;
    Ok((info, reconcile))
}

fn new_store(
    rt: &RuntimeInner,
    plugin: Arc<str>,
    key: Arc<str>,
    memo: Arc<Memo>,
    capabilities: Capabilities,
) -> Store<StoreData> {
    let caps = CallCaps {
        plugin,
        key,
        memo,
        log_lines_left: MAX_LOG_LINES_PER_CALL,
        grants: Grants {
            capabilities,
            cloud: rt.config.cloud.clone(),
            metrics: rt.host_metrics.clone(),
            started: Instant::now(),
            budget: rt.config.deadline,
            host_time: Duration::ZERO,
            crypto_ops_left: MAX_CRYPTO_OPS_PER_CALL,
        },
    };
    let mut store = Store::new(&rt.engine, StoreData::new(caps, rt.config.memory_limit));
    store.limiter(|d| &mut d.limiter);
    store.set_epoch_deadline(rt.deadline_ticks);
    // The epoch deadline counts wall time; on reaching it, charge the guest
    // only its own time (host operations excluded, see `hostcalls`) and
    // extend by what is left of its budget.
    let tick = rt.epoch_tick;
    store.epoch_deadline_callback(move |ctx| {
        let g = &ctx.data().caps.grants;
        let left = g.budget.saturating_sub(g.guest_time());
        if left.is_zero() {
            return Ok(UpdateDeadline::Interrupt);
        }
        let ticks = left.as_nanos().div_ceil(tick.as_nanos().max(1));
        Ok(UpdateDeadline::Continue(
            u64::try_from(ticks).unwrap_or(u64::MAX).max(1),
        ))
    });
    if let Some(fuel) = rt.config.fuel {
        // Only fails when fuel is disabled in the engine, which `fuel` enables.
        let _ = store.set_fuel(fuel);
    }
    store
}

/// Map a wasmtime error of a call (or instantiation) to a [`CallError`].
fn classify(
    rt: &RuntimeInner,
    plugin: &str,
    store: &Store<StoreData>,
    e: wasmtime::Error,
    instantiating: bool,
) -> CallError {
    let plugin = plugin.to_owned();
    if store.data().limiter.hit {
        return CallError::MemoryLimitExceeded {
            plugin,
            limit_bytes: rt.config.memory_limit,
        };
    }
    let stderr = store.data().stderr.text();
    let with_stderr = |m: String| {
        if stderr.is_empty() {
            m
        } else {
            format!("{m}; guest stderr: {stderr}")
        }
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::DeadlineExceeded {
            plugin,
            deadline_ms: u64::try_from(rt.config.deadline.as_millis()).unwrap_or(u64::MAX),
        },
        Some(Trap::OutOfFuel) => CallError::FuelExhausted {
            plugin,
            fuel: rt.config.fuel.unwrap_or(0),
        },
        Some(t) => CallError::Trap {
            plugin,
            message: with_stderr(t.to_string()),
        },
        None if instantiating => CallError::Instantiate {
            plugin,
            reason: format!("{e:#}"),
        },
        None => {
            let message = match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(code) => format!("guest exited with status {}", code.0),
                None => format!("{e:#}"),
            };
            CallError::Trap {
                plugin,
                message: with_stderr(message),
            }
        }
    }
}

impl Plugin {
    pub(crate) fn new(
        runtime: Arc<RuntimeInner>,
        pre: ReconcilerPre<StoreData>,
        reconcile: ReconcileExport,
        info: PluginInfo,
        digest: String,
        wit_version: String,
        memo: Arc<Memo>,
    ) -> Self {
        Self {
            inner: Arc::new(PluginInner {
                runtime,
                pre,
                reconcile,
                name: info.name.as_str().into(),
                info,
                digest,
                wit_version,
                memo,
            }),
        }
    }

    /// The validated plugin-info `describe()` returned at load.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// The plugin's name (from its plugin-info).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// sha256 of the component file, lowercase hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The contract the component was built against, e.g.
    /// `capstan:reconciler@0.1.0`.
    pub fn wit_version(&self) -> &str {
        &self.inner.wit_version
    }

    /// This plugin name's memo (shared with other loads of the same name).
    pub fn memo(&self) -> &Memo {
        &self.inner.memo
    }

    /// Whether the plugin may apply `verb` to objects of this apiVersion and
    /// kind, per its declared permissions.
    pub fn permits(&self, api_version: &str, kind: &str, verb: Verbs) -> bool {
        validate::permits(&self.inner.info, api_version, kind, verb)
    }

    /// Reconcile the primary named `key` (`namespace/name`, used in the
    /// plugin's log lines) from `snapshot`: a fresh instance, the call, the
    /// outcome validated. Blocking (CPU-bound up to the deadline): call it from
    /// `spawn_blocking`/`block_in_place`, or use [`Plugin::reconcile_async`].
    pub fn reconcile(&self, key: &str, snapshot: &Snapshot) -> Result<Outcome, CallError> {
        self.run(key, snapshot, |_| {})
    }

    /// [`Plugin::reconcile`], with the wall time of each of its steps (for
    /// benchmarks; the steps are exactly those of `reconcile`).
    pub fn reconcile_timed(
        &self,
        key: &str,
        snapshot: &Snapshot,
    ) -> (Result<Outcome, CallError>, ReconcileTimings) {
        let mut t = ReconcileTimings::default();
        let mut last = Instant::now();
        let result = self.run(key, snapshot, |step| {
            let now = Instant::now();
            let d = now - last;
            last = now;
            match step {
                Step::Store => t.store = d,
                Step::Instantiate => t.instantiate = d,
                Step::Call => t.call = d,
                Step::Validate => t.validate = d,
                Step::Drop => t.drop = d,
            }
        });
        (result, t)
    }

    /// The steps of one reconcile; `mark` is told when each one ends.
    fn run(
        &self,
        key: &str,
        snapshot: &Snapshot,
        mut mark: impl FnMut(Step),
    ) -> Result<Outcome, CallError> {
        let p = &*self.inner;
        let rt = &*p.runtime;
        let mut store = new_store(
            rt,
            p.name.clone(),
            key.into(),
            p.memo.clone(),
            p.info.capabilities,
        );
        mark(Step::Store);
        let reconcile = p
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .and_then(|instance| p.reconcile.get(&mut store, &instance))
            .map_err(|e| classify(rt, &p.name, &store, e, true))?;
        mark(Step::Instantiate);
        let (result,) = reconcile
            .call(&mut store, (snapshot,))
            .map_err(|e| classify(rt, &p.name, &store, e, false))?;
        mark(Step::Call);
        // The guest is done: return its slot to the pool (memory reset for
        // the next instance) before validating the outcome.
        drop(store);
        mark(Step::Drop);
        let plugin = || p.name.to_string();
        let out = match result {
            Ok(outcome) => {
                validate::validate_outcome(&outcome, rt.config.max_outcome_bytes, &p.info)
                    .map(|()| outcome)
                    .map_err(|reason| CallError::InvalidOutcome {
                        plugin: plugin(),
                        reason,
                    })
            }
            Err(ReconcileError::Transient(message)) => Err(CallError::Transient {
                plugin: plugin(),
                message,
            }),
            Err(ReconcileError::Terminal(message)) => Err(CallError::Terminal {
                plugin: plugin(),
                message,
            }),
        };
        mark(Step::Validate);
        out
    }

    /// [`Plugin::reconcile`] on tokio's blocking pool.
    pub async fn reconcile_async(
        &self,
        key: String,
        snapshot: Snapshot,
    ) -> Result<Outcome, CallError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.reconcile(&key, &snapshot))
            .await
            .unwrap_or_else(|e| {
                Err(CallError::Instantiate {
                    plugin: self.inner.name.to_string(),
                    reason: format!("blocking task failed: {e}"),
                })
            })
    }
}

/// plugin-info as JSON with the WIT field names (for `plugin inspect`,
/// logs and the API).
pub fn info_to_json(info: &PluginInfo) -> Value {
    let gvk = |g: &super::bindings::capstan::reconciler::types::Gvk| json!({"group": g.group, "version": g.version, "kind": g.kind});
    let verbs = |v: Verbs| {
        let mut out = Vec::new();
        for (flag, name) in [
            (Verbs::CREATE, "create"),
            (Verbs::PATCH, "patch"),
            (Verbs::PATCH_STATUS, "patch-status"),
            (Verbs::DELETE, "delete"),
        ] {
            if v.contains(flag) {
                out.push(name);
            }
        }
        out
    };
    let target = |t: Target| match t {
        Target::Management => "management",
        Target::Workload => "workload",
    };
    let pair = |p: &super::bindings::capstan::reconciler::types::FieldPair| json!({"other": p.other, "primary": p.primary});
    let mut capabilities = Vec::new();
    for (flag, name) in [
        (Capabilities::CRYPTO, "crypto"),
        (Capabilities::CLOUD, "cloud"),
    ] {
        if info.capabilities.contains(flag) {
            capabilities.push(name);
        }
    }
    json!({
        "name": info.name,
        "version": info.version,
        "primary": gvk(&info.primary),
        "watches": info.watches.iter().map(|w| json!({
            "kind": gvk(&w.kind),
            "mapping": match &w.mapping {
                KeyMapping::ControllerOwner => json!("controller-owner"),
                KeyMapping::Label(l) => json!({"label": l}),
                KeyMapping::Field(f) => json!({"field": f}),
                KeyMapping::LabelledWithName(l) => json!({"labelled-with-name": l}),
                KeyMapping::ReferencedBy(f) => json!({"referenced-by": f}),
                KeyMapping::FieldMatch(p) => json!({"field-match": pair(p)}),
                KeyMapping::SameCluster => json!("same-cluster"),
            },
            "target": target(w.target),
        })).collect::<Vec<_>>(),
        "relations": info.relations.iter().map(|r| json!({
            "name": r.name,
            "kind": gvk(&r.kind),
            "selector": match &r.selector {
                RelationSelector::Owned => json!("owned"),
                RelationSelector::ControllerOwner => json!("controller-owner"),
                RelationSelector::Label(l) => json!({"label": l}),
                RelationSelector::FieldRef(f) => json!({"field-ref": f}),
                RelationSelector::ByLabelValue(l) => json!({"by-label-value": l}),
                RelationSelector::All => json!("all"),
                RelationSelector::Named(t) => json!({"named": t}),
                RelationSelector::Matching(s) => json!({"matching": s}),
                RelationSelector::SelectorAt(p) => json!({"selector-at": p}),
                RelationSelector::FieldMatch(p) => json!({"field-match": pair(p)}),
            },
            "target": target(r.target),
            "namespace": r.namespace,
        })).collect::<Vec<_>>(),
        "permissions": info.permissions.iter().map(|p| json!({
            "kind": gvk(&p.kind),
            "verbs": verbs(p.verbs),
            "target": target(p.target),
        })).collect::<Vec<_>>(),
        "finalizer": info.finalizer,
        "concurrency": info.concurrency,
        "resync-seconds": info.resync_seconds,
        "capabilities": capabilities,
    })
}

//! Host overhead per reconcile (queue pop -> snapshot -> plugin call -> diff -> write) and cache memory.
//!
//! Run: `cargo run --release -p capstan-bench --bin host` (writes bench/results/host.md and
//! host.json). The API is left out (a write sink that answers at once) and the plugin is a
//! native no-op whose own time is measured and subtracted, so the figure is the host's own
//! work: pop a key, assemble a 15 KB snapshot from the cache (primary + an owned relation
//! via the owner index), call, hand the outcome to the write path, tell the queue.

use anyhow::Context as _;
use capstan::cache::{Cache, CachedObject, Gvk, KindCache, ObjectKey};
use capstan::controller::{CallFailure, Controller, ControllerOptions, Reconcile};
use capstan::metrics::Metrics;
use capstan::queue::QueueConfig;
use capstan::runtime::bindings::capstan::reconciler::types::{
    Capabilities, Gvk as WitGvk, Outcome, Permission, PluginInfo, Relation, RelationSelector,
    Snapshot, Target, Verbs,
};
use capstan::writer::{ApiError, BoxFut, Resource, WriteApi, WritePath};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OBJECTS: usize = 1000;
const ITERATIONS: usize = 20_000;

#[derive(Debug, Default)]
struct NullApi {
    requests: AtomicU64,
}

impl WriteApi for NullApi {
    fn create<'a>(
        &'a self,
        _: &'a Resource,
        _: &'a str,
        body: Value,
    ) -> BoxFut<'a, Result<Value, ApiError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(body) })
    }
    fn patch<'a>(
        &'a self,
        _: &'a Resource,
        _: &'a str,
        _: &'a str,
        patch: Value,
        _: bool,
    ) -> BoxFut<'a, Result<Value, ApiError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(patch) })
    }
    fn delete<'a>(
        &'a self,
        _: &'a Resource,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFut<'a, Result<(), ApiError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// `NoOp` returns an empty outcome; `Echo` returns the primary as desired object and status
/// (what a plugin that rewrites its whole object does; the diff finds nothing to send).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    NoOp,
    Echo,
}

struct Plugin {
    info: PluginInfo,
    mode: Mode,
    call_nanos: AtomicU64,
}

impl Reconcile for Plugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }
    fn reconcile(&self, _key: &str, snapshot: &Snapshot) -> Result<Outcome, CallFailure> {
        let start = Instant::now();
        let mut o = Outcome {
            apply: vec![],
            status: vec![],
            delete: vec![],
            events: vec![],
            requeue_after_ms: None,
            workload_apply: vec![],
            workload_status: vec![],
            workload_delete: vec![],
        };
        if self.mode == Mode::Echo {
            o.apply.push(snapshot.primary.clone());
            o.status.push(snapshot.primary.clone());
        }
        std::hint::black_box(&snapshot.related);
        self.call_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(o)
    }
}

fn wgvk(group: &str, version: &str, kind: &str) -> WitGvk {
    WitGvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    }
}

fn padding(n: usize) -> Value {
    // Realistic-looking nested content rather than one long string.
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("item-{i:05}"), "value": format!("v{:032}", i), "enabled": i % 2 == 0}))
        .collect();
    json!({"items": items})
}

fn primary(i: usize) -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": format!("m-{i:05}"), "namespace": "bench", "uid": format!("uid-m-{i}"),
            "resourceVersion": "100", "generation": 1,
            "labels": {"cluster.x-k8s.io/cluster-name": format!("c-{}", i / 10)},
            "managedFields": [{"manager": "capstan", "fieldsV1": padding(10)}]},
        "spec": {"clusterName": format!("c-{}", i / 10), "template": padding(88)},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn owned(i: usize, j: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i:05}-{j}"), "namespace": "bench", "uid": format!("uid-cm-{i}-{j}"),
            "resourceVersion": "100",
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "name": format!("m-{i:05}"), "uid": format!("uid-m-{i}"), "controller": true}]},
        "data": padding(42)
    })
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    plugin_mean_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

async fn run(mode: Mode, blocking: bool) -> anyhow::Result<(Figures, usize, u64)> {
    let machine = Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine");
    let cm = Gvk::new("", "v1", "ConfigMap");
    let cache = Arc::new(Cache::new());
    let mk = |g: &Gvk, plural: &str| KindCache::new(g.clone(), plural, true, Gauge::default());
    let machines = cache.kind_or_insert(&machine, || mk(&machine, "machines"));
    let cms = cache.kind_or_insert(&cm, || mk(&cm, "configmaps"));
    let mut snapshot_bytes = 0;
    let mut prim = Vec::new();
    let mut rel = Vec::new();
    for i in 0..OBJECTS {
        prim.push(CachedObject::from_value(primary(i))?);
        for j in 0..2 {
            rel.push(CachedObject::from_value(owned(i, j))?);
        }
    }
    machines.replace(prim);
    cms.replace(rel);
    let p0 = machines
        .get(&ObjectKey::new("bench", "m-00000"))
        .context("primary")?;
    snapshot_bytes += p0.json.len();
    for o in cms.owned_by(&p0.uid, true) {
        snapshot_bytes += o.json.len();
    }
    let api = Arc::new(NullApi::default());
    let writes = Arc::new(WritePath::new(api.clone(), Arc::clone(&cache), "bench"));
    let res = |g: &Gvk, plural: &str| Resource {
        api: kube::core::ApiResource {
            group: g.group.clone(),
            version: g.version.clone(),
            api_version: g.api_version(),
            kind: g.kind.clone(),
            plural: plural.into(),
        },
        namespaced: true,
    };
    writes.add_resource(machine.clone(), res(&machine, "machines"));
    let plugin = Arc::new(Plugin {
        info: PluginInfo {
            name: "bench".into(),
            version: "0".into(),
            primary: wgvk("cluster.x-k8s.io", "v1beta2", "Machine"),
            watches: vec![],
            relations: vec![Relation {
                name: "configmaps".into(),
                kind: wgvk("", "v1", "ConfigMap"),
                selector: RelationSelector::Owned,
                target: Target::Management,
                namespace: None,
            }],
            permissions: vec![Permission {
                kind: wgvk("cluster.x-k8s.io", "v1beta2", "Machine"),
                verbs: Verbs::PATCH | Verbs::PATCH_STATUS,
                target: Target::Management,
            }],
            finalizer: None,
            concurrency: Some(1),
            resync_seconds: None,
            capabilities: Capabilities::empty(),
        },
        mode,
        call_nanos: AtomicU64::new(0),
    });
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let controller = Controller::new(
        plugin.clone(),
        Arc::clone(&cache),
        writes,
        |n, c| metrics.controller(n, c),
        ControllerOptions {
            queue: QueueConfig {
                bucket: None,
                ..QueueConfig::default()
            },
            blocking_calls: blocking,
            ..ControllerOptions::default()
        },
    )?;
    let keys: Vec<ObjectKey> = (0..OBJECTS)
        .map(|i| ObjectKey::new("bench", format!("m-{i:05}")))
        .collect();
    // Warm up.
    for k in keys.iter().take(500) {
        controller.queue().add(k.clone());
        controller.process_next().await;
    }
    plugin.call_nanos.store(0, Ordering::Relaxed);
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut plugin_total = 0u64;
    for i in 0..ITERATIONS {
        let k = keys[i % OBJECTS].clone();
        controller.queue().add(k);
        let before = plugin.call_nanos.load(Ordering::Relaxed);
        let start = Instant::now();
        controller.process_next().await;
        let total = start.elapsed();
        let call = plugin.call_nanos.load(Ordering::Relaxed) - before;
        plugin_total += call;
        samples.push(total.saturating_sub(Duration::from_nanos(call)));
    }
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6;
    Ok((
        Figures {
            p50_us: percentile(&samples, 0.5),
            p99_us: percentile(&samples, 0.99),
            mean_us: mean,
            plugin_mean_us: plugin_total as f64 / ITERATIONS as f64 / 1e3,
        },
        snapshot_bytes,
        api.requests.load(Ordering::Relaxed),
    ))
}

fn cache_memory() -> anyhow::Result<(usize, usize, u64, usize)> {
    const N: usize = 20_000;
    let gvk = Gvk::new("cluster.x-k8s.io", "v1beta2", "Machine");
    let before = rss_bytes().unwrap_or(0);
    let kc = KindCache::new(gvk, "machines", true, Gauge::default());
    for i in 0..N {
        // Objects as they arrive from a watch: one at a time, input dropped after storing.
        kc.apply(CachedObject::from_value(primary(i))?);
    }
    let after = rss_bytes().unwrap_or(0);
    let (json, estimate) = kc.memory();
    Ok((json, estimate, after.saturating_sub(before), N))
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut snapshot_bytes = 0;
    for (mode, blocking, label) in [
        (Mode::NoOp, false, "no-op plugin, call inline"),
        (
            Mode::NoOp,
            true,
            "no-op plugin, call on blocking pool (default)",
        ),
        (
            Mode::Echo,
            false,
            "echo plugin (desired = cached object; diff finds nothing), inline",
        ),
    ] {
        let (f, bytes, requests) = rt.block_on(run(mode, blocking))?;
        anyhow::ensure!(
            requests == 0,
            "{label}: {requests} write requests, expected none"
        );
        snapshot_bytes = bytes;
        rows.push((label, f));
    }
    let (json, estimate, rss, n) = cache_memory()?;
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let runtime_md = std::fs::read_to_string("bench/results/runtime.md").ok();
    let mut md = String::new();
    md.push_str("# Host overhead per reconcile\n\n");
    md.push_str(&format!(
        "Machine: {machine}, {cores} cores. Command: `cargo run --release -p capstan-bench --bin host`.\n\n\
         Per reconcile: queue pop -> snapshot from the cache ({snapshot_bytes} bytes: a Machine plus two owned \
         ConfigMaps found through the owner index) -> plugin call -> write path -> queue result. The API is \
         a sink that answers at once (no write was needed in any run; the write path sent 0 requests). \
         The plugin is native and its own time is measured and subtracted. {ITERATIONS} reconciles over \
         {OBJECTS} keys after 500 warm-up reconciles.\n\n"
    ));
    md.push_str("| variant | host p50 (us) | host p99 (us) | host mean (us) | plugin call mean (us) |\n|---|---|---|---|---|\n");
    for (label, f) in &rows {
        md.push_str(&format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
            f.p50_us, f.p99_us, f.mean_us, f.plugin_mean_us
        ));
    }
    md.push_str("\nTarget: host overhead p50 <= 30 us beyond the plugin call.\n\n");
    md.push_str(&format!(
        "## Cache memory\n\n{n} Machines (~{} bytes of JSON each after managedFields are stripped): JSON held {json} bytes; \
         estimated cache size (JSON + parsed index fields + index entries) {estimate} bytes = {:.2}x the JSON; \
         process RSS growth while filling {rss} bytes = {:.2}x (includes allocator slack). Target: <= 1.5x.\n\n",
        json / n, estimate as f64 / json as f64, rss as f64 / json as f64
    ));
    md.push_str("## Runtime-only figure (foundation benchmark)\n\n");
    match &runtime_md {
        Some(_) => md.push_str("See bench/results/runtime.md for the Wasm call itself (instantiate + reconcile of the same snapshot size); the host figure above excludes it.\n"),
        None => md.push_str("bench/results/runtime.md (the Wasm call itself) was not present when this ran; the host figure above excludes the plugin call.\n"),
    }
    let out = json!({
        "machine": machine, "cores": cores,
        "command": "cargo run --release -p capstan-bench --bin host",
        "snapshot_bytes": snapshot_bytes, "iterations": ITERATIONS, "keys": OBJECTS,
        "variants": rows.iter().map(|(label, f)| json!({
            "variant": label, "host_p50_us": f.p50_us, "host_p99_us": f.p99_us,
            "host_mean_us": f.mean_us, "plugin_call_mean_us": f.plugin_mean_us})).collect::<Vec<_>>(),
        "cache": {"objects": n, "json_bytes": json, "estimated_bytes": estimate,
                  "estimated_ratio": estimate as f64 / json as f64,
                  "rss_growth_bytes": rss, "rss_ratio": rss as f64 / json as f64},
    });
    std::fs::create_dir_all("bench/results")?;
    std::fs::write("bench/results/host.md", &md)?;
    std::fs::write(
        "bench/results/host.json",
        serde_json::to_string_pretty(&out)?,
    )?;
    print!("{md}");
    Ok(())
}

//! Per-language cost of a reconciler component: size, compile, load, instantiate + call, memory.
//!
//! Run: `make components && cargo run --release -p capstan-bench --bin languages`. Writes bench/results/languages.md and languages.json.
//!
//! For each hello component (Rust, Python, JS, from `make components`):
//! - size of the .wasm file;
//! - cold load: compile with Cranelift + pre-instantiate + describe(), no cache;
//! - cached load: the same from the on-disk artifact cache (a new Runtime);
//! - reconcile: fresh instance from InstancePre + call + outcome validation,
//!   through `capstan::runtime` exactly as the host runs it, p50/p99 over many
//!   calls, for two ~15 KB snapshots: the runtime's Cluster API fixture (hello
//!   parses the primary and has nothing to do) and a labelled ConfigMap with
//!   15 KB of data (hello digests every byte and returns an apply);
//! - memory per instance: linear memory after one reconcile (from a
//!   ResourceLimiter), and resident memory per live instance (RSS growth over
//!   a batch of instances kept alive after one reconcile each).

use anyhow::{Context as _, ensure};
use capstan::cli::plugin::read_snapshot;
use capstan::runtime::bindings::Reconciler;
use capstan::runtime::bindings::capstan::reconciler::{log, memo, types};
use capstan::runtime::{Plugin, Runtime, RuntimeConfig, Snapshot};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LANGUAGES: [(&str, &str); 3] = [
    ("rust", "hello-rust"),
    ("python", "hello-python"),
    ("js", "hello-js"),
];
/// Instances kept alive at once to measure resident memory per instance.
const LIVE_INSTANCES: usize = 16;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn components_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAPSTAN_COMPONENTS_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("guests")
}

/// The runtime's ~15 KB Cluster API snapshot (override: CAPSTAN_BENCH_SNAPSHOT).
fn fixture_snapshot() -> anyhow::Result<(PathBuf, Snapshot)> {
    let path = std::env::var_os("CAPSTAN_BENCH_SNAPSHOT").map_or_else(
        || workspace().join("tests/fixtures/capi/cluster-snapshot.json"),
        PathBuf::from,
    );
    let snapshot = read_snapshot(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path, snapshot))
}

/// A labelled ConfigMap with ~15 KB of data: hello's real work (digest + apply).
fn configmap_snapshot() -> Snapshot {
    let data: serde_json::Map<String, Value> = (0..100)
        .map(|i| {
            (
                format!("key-{i:03}"),
                json!(format!("{i:03}-{}", "v".repeat(140))),
            )
        })
        .collect();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
            "labels": {"capstan.dev/hello": "true"}},
        "data": data});
    Snapshot {
        primary: cm.to_string(),
        related: Vec::new(),
        now: "2026-03-01T12:00:00Z".into(),
        workload: capstan::runtime::Connection::NotApplicable,
    }
}

fn snapshot_bytes(s: &Snapshot) -> usize {
    s.primary.len()
        + s.related
            .iter()
            .flat_map(|r| &r.objects)
            .map(String::len)
            .sum::<usize>()
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50_us: f64,
    p99_us: f64,
    n: usize,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Percentiles {
        p50_us: at(0.50),
        p99_us: at(0.99),
        n: samples.len(),
    }
}

fn time_reconciles(
    plugin: &Plugin,
    snapshot: &Snapshot,
    budget: Duration,
    max: usize,
) -> anyhow::Result<Percentiles> {
    for _ in 0..5 {
        plugin.reconcile("bench/warmup", snapshot)?;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < max && (samples.len() < 50 || started.elapsed() < budget) {
        let t = Instant::now();
        let out = plugin.reconcile("bench/web", snapshot)?;
        samples.push(t.elapsed());
        std::hint::black_box(out);
    }
    Ok(percentiles(samples))
}

// --- memory: a plain wasmtime store whose limiter records linear memory.

struct MemHost {
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
    limiter: MemLimiter,
}

#[derive(Default)]
struct MemLimiter {
    /// Current size of each memory, by creation order.
    memories: Vec<usize>,
}

impl wasmtime::ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory starts at current == 0; a growing one is the last
        // memory with this current size.
        match self
            .memories
            .iter_mut()
            .rev()
            .find(|m| **m == current && current != 0)
        {
            Some(m) => *m = desired,
            None => self.memories.push(desired),
        }
        Ok(true)
    }

    fn table_growing(&mut self, _c: usize, _d: usize, _m: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl wasmtime_wasi::WasiView for MemHost {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for MemHost {
    fn log(&mut self, _level: log::Level, _message: String) {}
}

impl memo::Host for MemHost {
    fn get(&mut self, _key: String) -> Option<Vec<u8>> {
        None
    }
    fn set(&mut self, _key: String, _value: Vec<u8>) {}
    fn remove(&mut self, _key: String) {}
}

impl types::Host for MemHost {}

// The hello components use neither crypto nor cloud; they only need to link.
const UNUSED: &str = "not provided by the memory benchmark host";

impl capstan::runtime::bindings::capstan::reconciler::crypto::Host for MemHost {
    fn generate_key(
        &mut self,
        _: capstan::runtime::bindings::capstan::reconciler::crypto::KeyAlgorithm,
    ) -> Result<capstan::runtime::bindings::capstan::reconciler::crypto::KeyPair, String> {
        Err(UNUSED.into())
    }
    fn self_signed(
        &mut self,
        _: String,
        _: capstan::runtime::bindings::capstan::reconciler::crypto::CertificateRequest,
    ) -> Result<String, String> {
        Err(UNUSED.into())
    }
    fn sign(
        &mut self,
        _: String,
        _: String,
        _: String,
        _: capstan::runtime::bindings::capstan::reconciler::crypto::CertificateRequest,
    ) -> Result<String, String> {
        Err(UNUSED.into())
    }
    fn kubeconfig(
        &mut self,
        _: capstan::runtime::bindings::capstan::reconciler::crypto::KubeconfigRequest,
    ) -> Result<String, String> {
        Err(UNUSED.into())
    }
}

impl capstan::runtime::bindings::capstan::reconciler::cloud::Host for MemHost {
    fn reserve_endpoint(
        &mut self,
        _: String,
    ) -> Result<capstan::runtime::bindings::capstan::reconciler::cloud::Endpoint, String> {
        Err(UNUSED.into())
    }
    fn start_api_server(&mut self, _: String, _: String, _: String) -> Result<(), String> {
        Err(UNUSED.into())
    }
    fn api_server_running(&mut self, _: String) -> bool {
        false
    }
    fn release_endpoint(&mut self, _: String) -> Result<(), String> {
        Err(UNUSED.into())
    }
    fn create_vm(
        &mut self,
        _: String,
        _: String,
    ) -> Result<capstan::runtime::bindings::capstan::reconciler::cloud::Vm, String> {
        Err(UNUSED.into())
    }
    fn get_vm(
        &mut self,
        _: String,
        _: String,
    ) -> Option<capstan::runtime::bindings::capstan::reconciler::cloud::Vm> {
        None
    }
    fn delete_vm(&mut self, _: String, _: String) -> Result<(), String> {
        Err(UNUSED.into())
    }
    fn put_object(&mut self, _: String, _: String) -> Result<(), String> {
        Err(UNUSED.into())
    }
    fn get_object(&mut self, _: String, _: types::ObjectRef) -> Result<Option<String>, String> {
        Err(UNUSED.into())
    }
    fn delete_object(&mut self, _: String, _: types::ObjectRef) -> Result<(), String> {
        Err(UNUSED.into())
    }
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

struct Memory {
    linear_bytes: usize,
    rss_per_instance_bytes: usize,
}

/// wasmtime's error as anyhow's.
fn w<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:#}"))
}

fn memory(path: &Path, snapshot: &Snapshot) -> anyhow::Result<Memory> {
    use wasmtime::component::{Component, HasSelf, Linker};
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true).memory_init_cow(true);
    let engine = w(wasmtime::Engine::new(&config))?;
    let component = w(Component::from_file(&engine, path))?;
    let mut linker: Linker<MemHost> = Linker::new(&engine);
    w(Reconciler::add_to_linker::<MemHost, HasSelf<MemHost>>(
        &mut linker,
        |h| h,
    ))?;
    w(wasmtime_wasi::p2::add_to_linker_sync(&mut linker))?;
    let pre = w(linker.instantiate_pre(&component))?;
    let pre = w(capstan::runtime::bindings::ReconcilerPre::new(pre))?;
    let mut live = Vec::new();
    let mut linear = 0;
    let before = rss_bytes();
    for _ in 0..LIVE_INSTANCES {
        let host = MemHost {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: MemLimiter::default(),
        };
        let mut store = wasmtime::Store::new(&engine, host);
        store.limiter(|h| &mut h.limiter);
        let instance = w(pre.instantiate(&mut store))?;
        let out = w(instance.call_reconcile(&mut store, snapshot))?;
        ensure!(out.is_ok(), "{}: reconcile failed: {out:?}", path.display());
        linear = store.data().limiter.memories.iter().sum();
        live.push((store, instance));
    }
    let after = rss_bytes();
    drop(live);
    Ok(Memory {
        linear_bytes: linear,
        rss_per_instance_bytes: after.saturating_sub(before) / LIVE_INSTANCES,
    })
}

/// A named figure of a row, for the ratio table.
type Metric = (&'static str, fn(&Row) -> f64);

struct Row {
    lang: &'static str,
    component: PathBuf,
    size_bytes: u64,
    cold_load_ms: f64,
    cached_load_ms: f64,
    fixture: Percentiles,
    configmap: Percentiles,
    memory: Memory,
}

fn measure(
    lang: &'static str,
    path: &Path,
    fixture: &Snapshot,
    cm: &Snapshot,
) -> anyhow::Result<Row> {
    let size_bytes = std::fs::metadata(path)
        .with_context(|| format!("{}: run `make components`", path.display()))?
        .len();
    let config = RuntimeConfig {
        deadline: Duration::from_secs(30),
        ..RuntimeConfig::default()
    };

    let cold = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..config.clone()
    })?;
    let t = Instant::now();
    let plugin = cold.load_file(path)?;
    let cold_load_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(plugin);
    drop(cold);

    let cache = tempfile::tempdir()?;
    let cached_config = RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..config
    };
    Runtime::new(cached_config.clone())?.load_file(path)?;
    let runtime = Runtime::new(cached_config)?;
    let t = Instant::now();
    let plugin = runtime.load_file(path)?;
    let cached_load_ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(
        runtime.load_stats().compiles == 0,
        "{lang}: the second load compiled again"
    );

    let budget = Duration::from_secs(8);
    let fixture_p = time_reconciles(&plugin, fixture, budget, 5000)?;
    let configmap_p = time_reconciles(&plugin, cm, budget, 5000)?;
    let memory = memory(path, cm)?;
    eprintln!(
        "{lang}: {size_bytes} B, cold {cold_load_ms:.0} ms, cached {cached_load_ms:.2} ms, fixture p50 {:.0} us, configmap p50 {:.0} us, linear {} KiB",
        fixture_p.p50_us,
        configmap_p.p50_us,
        memory.linear_bytes / 1024
    );
    Ok(Row {
        lang,
        component: path.to_path_buf(),
        size_bytes,
        cold_load_ms,
        cached_load_ms,
        fixture: fixture_p,
        configmap: configmap_p,
        memory,
    })
}

/// How the host measuring this was built: guest code runs as Cranelift
/// compiled it either way, but compile times and the runtime's own glue
/// (instantiation, argument lifting) are slower in the dev profile.
fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev-profile host: wasmtime and Cranelift at opt-level 1, most other dependencies at 0"
    } else {
        "release host"
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().next().and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
}

fn main() -> anyhow::Result<()> {
    let (fixture_path, fixture) = fixture_snapshot()?;
    let cm = configmap_snapshot();
    let dir = components_dir();
    let mut rows = Vec::new();
    for (lang, name) in LANGUAGES {
        rows.push(measure(
            lang,
            &dir.join(format!("{name}.wasm")),
            &fixture,
            &cm,
        )?);
    }
    let rust = rows
        .iter()
        .find(|r| r.lang == "rust")
        .context("no rust row")?;
    let ratio = |f: fn(&Row) -> f64, r: &Row| f(r) / f(rust);
    let metrics: [Metric; 7] = [
        ("size", |r| r.size_bytes as f64),
        ("cold load", |r| r.cold_load_ms),
        ("cached load", |r| r.cached_load_ms),
        ("fixture p50", |r| r.fixture.p50_us),
        ("configmap p50", |r| r.configmap.p50_us),
        ("linear memory", |r| r.memory.linear_bytes as f64),
        ("rss per instance", |r| {
            r.memory.rss_per_instance_bytes as f64
        }),
    ];

    let json = json!({
        "machine": machine(),
        "command": format!("make components && cargo run {}-p capstan-bench --bin languages", if cfg!(debug_assertions) { "" } else { "--release " }),
        "host_profile": profile(),
        "fixture": {"path": fixture_path.strip_prefix(workspace()).unwrap_or(&fixture_path).display().to_string(), "bytes": snapshot_bytes(&fixture)},
        "configmap_snapshot_bytes": snapshot_bytes(&cm),
        "live_instances_for_rss": LIVE_INSTANCES,
        "languages": rows.iter().map(|r| json!({
            "lang": r.lang,
            "component": r.component.file_name().map(|n| n.to_string_lossy().into_owned()),
            "size_bytes": r.size_bytes,
            "cold_load_ms": r.cold_load_ms,
            "cached_load_ms": r.cached_load_ms,
            "fixture_reconcile_us": {"p50": r.fixture.p50_us, "p99": r.fixture.p99_us, "n": r.fixture.n},
            "configmap_reconcile_us": {"p50": r.configmap.p50_us, "p99": r.configmap.p99_us, "n": r.configmap.n},
            "linear_memory_bytes": r.memory.linear_bytes,
            "rss_per_instance_bytes": r.memory.rss_per_instance_bytes,
            "ratio_to_rust": metrics.iter().map(|(m, f)| ((*m).to_owned(), json!(ratio(*f, r)))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    let out = workspace().join("bench/results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("languages.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;

    let mut md = String::new();
    md.push_str("# Reconciler cost per guest language\n\n");
    md.push_str(&format!(
        "Machine: {}. Command: `make components && cargo run {}-p capstan-bench --bin languages` \
         ({}; guests as `make components` builds them). Figures also in languages.json.\n\n",
        machine(),
        if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        },
        profile()
    ));
    md.push_str(&format!(
        "Snapshots: the Cluster API fixture `{}` ({} B of JSON; hello parses the primary and returns nothing) \
         and a labelled ConfigMap with 100 data entries ({} B; hello digests every byte and returns one apply). \
         Reconcile = fresh instance from InstancePre + call + outcome validation through `capstan::runtime`.\n\n",
        fixture_path.strip_prefix(workspace()).unwrap_or(&fixture_path).display(),
        snapshot_bytes(&fixture),
        snapshot_bytes(&cm)
    ));
    md.push_str("| language | component | cold load (compile) | cached load | reconcile fixture p50 / p99 | reconcile ConfigMap p50 / p99 | linear memory | RSS per live instance |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.2} MB | {:.0} ms | {:.2} ms | {:.0} / {:.0} us | {:.0} / {:.0} us | {:.1} MiB | {:.2} MiB |\n",
            r.lang,
            r.size_bytes as f64 / 1e6,
            r.cold_load_ms,
            r.cached_load_ms,
            r.fixture.p50_us,
            r.fixture.p99_us,
            r.configmap.p50_us,
            r.configmap.p99_us,
            r.memory.linear_bytes as f64 / (1 << 20) as f64,
            r.memory.rss_per_instance_bytes as f64 / (1 << 20) as f64,
        ));
    }
    md.push_str("\nRatio to Rust:\n\n| language |");
    for (m, _) in &metrics {
        md.push_str(&format!(" {m} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(metrics.len()));
    md.push('\n');
    for r in &rows {
        md.push_str(&format!("| {} |", r.lang));
        for (_, f) in &metrics {
            md.push_str(&format!(" {:.1}x |", ratio(*f, r)));
        }
        md.push('\n');
    }
    md.push_str(
        &std::fs::read_to_string(workspace().join("bench/languages-notes.md")).unwrap_or_default(),
    );
    std::fs::write(out.join("languages.md"), md)?;
    eprintln!("wrote {}", out.join("languages.md").display());
    Ok(())
}

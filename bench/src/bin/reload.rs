//! Benchmark of hot reload latency: plugin file renamed into place -> new version serving, cold compile and cached.
//!
//! Run: `cargo run --release -p capstan-bench --bin reload` after `make guests`.
//! A manager runs the CAPI Cluster plugin (the largest CAPI component) against the in-memory
//! API server with the CAPI CRDs, its plugin directory watched. Each sample renames a new
//! file over `cluster.wasm` and waits for the reloader's event saying the version was
//! swapped in. Cold: a digest never seen (the component with a distinct custom section
//! appended, so Cranelift compiles it; no artifact cache). Cached: a digest loaded before.
//! Writes bench/results/reload.md and bench/results/reload.json.

use anyhow::{Context as _, Result};
use capstan::controller::ControllerOptions;
use capstan::manager::{Manager, ManagerOptions, build_client, load_plugin_dir};
use capstan::metrics::Metrics;
use capstan::reload::{ReloadEvent, ReloadOptions, Reloader};
use capstan::runtime::{Runtime, RuntimeConfig};
use prometheus_client::registry::Registry;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const COLD: usize = 5;
const CACHED: usize = 30;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn guest(name: &str) -> Result<Vec<u8>> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), |d| workspace().join(d));
    let p = target.join("wasm32-wasip2/release").join(name);
    std::fs::read(&p).with_context(|| format!("{}: run `make guests` first", p.display()))
}

/// The component with a custom section appended: same code, another digest.
fn variant(component: &[u8], n: u32) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"capstan-bench";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(&n.to_le_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(".bench.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Rename `bytes` over `file`; the time until the reloader reports it serving.
async fn sample(
    events: &mut broadcast::Receiver<ReloadEvent>,
    file: &Path,
    bytes: &[u8],
    want: &str,
) -> Result<Duration> {
    let start = Instant::now();
    put(file, bytes)?;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .context("no reload event")??;
        if ev.file == file {
            anyhow::ensure!(
                ev.result == want || (want == "any" && ev.error.is_none()),
                "expected {want}, got {ev:?}"
            );
            return Ok(start.elapsed());
        }
    }
}

fn stats(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e3 * 10.0).round() / 10.0;
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    json!({"p50_ms": ms(pct(0.5)), "max_ms": ms(samples[samples.len() - 1]), "min_ms": ms(samples[0]), "n": samples.len()})
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    json!({
        "cpu": model,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "os": std::env::consts::OS,
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let capi = guest("capi_cluster.wasm")?;
    let server = capstan_apiserver::Server::builder()
        .plain_http()
        .crds_from_dir(workspace().join("tests/fixtures/capi-crds"))
        .start("127.0.0.1:0")
        .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cluster.wasm");
    put(&file, &capi)?;
    // No artifact cache on disk: a new digest is a Cranelift compile.
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugins = load_plugin_dir(dir.path(), &runtime).map_err(anyhow::Error::msg)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = build_client(config, Arc::clone(&metrics), 0.0, 0)?;
    let mut manager = Manager::new(
        client,
        Arc::new(registry),
        metrics,
        ManagerOptions {
            controller: ControllerOptions::default(),
            ..ManagerOptions::default()
        },
    );
    for p in plugins {
        manager.add_plugin(p).await?;
    }
    let options = ReloadOptions::new(dir.path());
    let debounce = options.debounce;
    let reloader = Reloader::new(runtime.clone(), options);
    let mut events = reloader.subscribe();
    manager.watch_plugins(reloader);
    let stop = CancellationToken::new();
    let task = tokio::spawn(manager.run(stop.clone()));

    // Warm-up (also waits for the manager to start its reloader): one cold, one cached.
    let v = |n: u32| variant(&capi, n);
    // (The first may reach the reloader's initial scan, before the original is known to it.)
    sample(&mut events, &file, &v(1000), "any").await?;
    sample(&mut events, &file, &capi, "any").await?;

    let mut cold = Vec::new();
    for n in 0..COLD {
        let n = u32::try_from(n)?;
        cold.push(sample(&mut events, &file, &v(n), "success").await?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut cached = Vec::new();
    for i in 0..CACHED {
        let bytes = if i % 2 == 0 { &capi } else { &v(1000) };
        cached.push(sample(&mut events, &file, bytes, "cached").await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let compiles = runtime.load_stats().compiles;
    anyhow::ensure!(
        compiles <= 3 + COLD as u64,
        "cached reloads compiled: {compiles} compiles"
    );
    stop.cancel();
    task.await??;
    server.shutdown().await;

    let cold = stats(cold);
    let cached = stats(cached);
    let command = "make guests && cargo run --release -p capstan-bench --bin reload";
    let result = json!({
        "benchmark": "reload",
        "machine": machine(),
        "command": command,
        "plugin": {"file": "capi_cluster.wasm", "bytes": capi.len()},
        "debounce_ms": debounce.as_millis(),
        "cold": cold,
        "cached": cached,
        "targets_ms": {"cold": 2000, "cached": 50},
    });
    let m = &result["machine"];
    let md = format!(
        "# Reload benchmark\n\n\
Latency of a hot reload, from the plugin file renamed into the watched `--plugins` directory to \
the new version swapped in and serving (the reloader's event after `Controller::swap`), for the CAPI \
Cluster plugin (`capi_cluster.wasm`, {bytes} bytes, the largest CAPI component) in a running manager \
against the in-memory API server with the CAPI CRDs.\n\n\
- Machine: {cpu}, {cpus} CPUs, {os}\n\
- Command: `{command}`\n\
- Debounce: {debounce} ms (the default `--plugin-reload-debounce`); included in every figure\n\
- Cold: a digest never seen (the component with a distinct custom section appended), compiled by Cranelift, no artifact cache; \
then world check, `describe()`, validation and the swap\n\
- Cached: a digest loaded before (rollback/promotion): the loaded version is reused, no compile, no `describe()`\n\n\
| reload (milliseconds) | p50 | max | min | n | target |\n|---|---|---|---|---|---|\n\
| cold compile | {cp50} | {cmax} | {cmin} | {cn} | <= 2000 |\n\
| cached | {hp50} | {hmax} | {hmin} | {hn} | <= 50 |\n",
        bytes = capi.len(),
        cpu = m["cpu"].as_str().unwrap_or("?"),
        cpus = m["cpus"],
        os = m["os"].as_str().unwrap_or("?"),
        debounce = debounce.as_millis(),
        cp50 = cold["p50_ms"],
        cmax = cold["max_ms"],
        cmin = cold["min_ms"],
        cn = cold["n"],
        hp50 = cached["p50_ms"],
        hmax = cached["max_ms"],
        hmin = cached["min_ms"],
        hn = cached["n"],
    );
    let out = workspace().join("bench/results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("reload.md"), &md)?;
    std::fs::write(
        out.join("reload.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    print!("{md}");
    Ok(())
}

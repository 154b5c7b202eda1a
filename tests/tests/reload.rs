//! Hot reload against the in-memory API server: versions swapped under load, bad files refused, shadow, promotion, rollback, removal.
//!
//! The reload test plugin (tests/guests/reload-v1, reload-v2) stamps `<version>:<spec.n>`
//! into every Widget twice per reconcile: the annotation `reload.capstan.dev/stamp` (object
//! patch, sent first) and `status.stamp` (status patch, sent second). A watch on the Widgets
//! sees every write; whenever `status.stamp` changes it must equal the annotation at that
//! moment, else two versions (or two concurrent reconciles) wrote one object in one
//! reconcile.

use anyhow::Context as _;
use capstan::controller::ControllerOptions;
use capstan::manager::{Manager, ManagerOptions, build_client, load_plugin_dir};
use capstan::metrics::Metrics;
use capstan::reload::{PodRef, ReloadEvent, ReloadOptions, Reloader};
use capstan::runtime::{Runtime, RuntimeConfig};
use capstan_tests::host::*;
use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const STAMP: &str = "reload.capstan.dev/stamp";
const PLUGIN: &str = "reload-test";

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    metrics_addr: SocketAddr,
    events: broadcast::Receiver<ReloadEvent>,
    runtime: Runtime,
}

impl Running {
    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.metrics_addr, "/metrics").await?.1)
    }

    async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        Ok(metric_value(&self.metrics().await?, series).unwrap_or(0.0))
    }

    /// The next reload event for `file` (others are skipped).
    async fn next_event(&mut self, file: &Path) -> anyhow::Result<ReloadEvent> {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .context("no reload event within 60 s")??;
            if ev.file == file {
                return Ok(ev);
            }
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("manager did not stop")???;
        Ok(())
    }
}

/// A manager over `dir` on `server`, watching it for changes.
async fn start(server: &capstan_apiserver::Server, dir: &Path) -> anyhow::Result<Running> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let plugins = load_plugin_dir(dir, &runtime).map_err(anyhow::Error::msg)?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    // No client-side limiter: the load is the point.
    let client = build_client(config, Arc::clone(&metrics), 0.0, 0)?;
    let options = ManagerOptions {
        metrics_addr: Some("127.0.0.1:0".parse()?),
        health_addr: Some("127.0.0.1:0".parse()?),
        controller: ControllerOptions::default(),
        instance: "capstan-reload-test".into(),
        leader_election: None,
    };
    let mut manager = Manager::new(client, Arc::new(registry), metrics, options);
    for p in plugins {
        manager.add_plugin(p).await?;
    }
    let reloader = Reloader::new(
        runtime.clone(),
        ReloadOptions {
            debounce: Duration::from_millis(50),
            event_target: Some(PodRef {
                namespace: "default".into(),
                name: "capstan-manager-0".into(),
                uid: String::new(),
            }),
            ..ReloadOptions::new(dir)
        },
    );
    let events = reloader.subscribe();
    manager.watch_plugins(reloader);
    let (m, h) = manager.bind().await?;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { Ok(manager.run(stop).await?) })
    };
    let health = h.context("health listener")?;
    eventually(Duration::from_secs(20), || async {
        http_get(health, "/readyz")
            .await
            .is_ok_and(|(code, _)| code == 200)
    })
    .await
    .context("manager never became ready")?;
    Ok(Running {
        stop,
        task,
        metrics_addr: m.context("metrics listener")?,
        events,
        runtime,
    })
}

fn guest(name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(guest_component(name)?)?)
}

fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Replace `path` atomically (a dotfile in the same directory, then a rename), as
/// deployment tooling does.
fn put(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// What the Widget watch saw: per object the last annotation and status stamps, the versions
/// that wrote statuses, and every violation of the one-version-per-reconcile rule.
#[derive(Default)]
struct Writes {
    last: BTreeMap<String, (Option<String>, Option<String>)>,
    status_versions: BTreeSet<String>,
    status_writes: u64,
    violations: Vec<String>,
}

fn observe_writes(client: &kube::Client, stop: CancellationToken) -> Arc<Mutex<Writes>> {
    let seen = Arc::new(Mutex::new(Writes::default()));
    let s = Arc::clone(&seen);
    let api = widgets(client);
    tokio::spawn(async move {
        // With backoff: a watch error (the server busy or gone) must not become a busy loop
        // that starves the runtime the test's own waits run on.
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => ev,
            };
            let Some(Ok(ev)) = ev else {
                continue;
            };
            let obj = match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                _ => continue,
            };
            let v = serde_json::to_value(&obj).unwrap_or(Value::Null);
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            let ann = v["metadata"]["annotations"][STAMP]
                .as_str()
                .map(str::to_string);
            let status = v["status"]["stamp"].as_str().map(str::to_string);
            let mut w = s.lock();
            // The first sight of an object may fall between the two writes of a reconcile.
            let Some(before) = w.last.get(&name).cloned() else {
                w.last.insert(name, (ann, status));
                continue;
            };
            if status.is_some() && status != before.1 {
                w.status_writes += 1;
                if let Some(version) = v["status"]["version"].as_str() {
                    w.status_versions.insert(version.to_string());
                }
                if status != ann {
                    w.violations.push(format!(
                        "{name}: status stamp {status:?} written over annotation {ann:?} (rv {})",
                        v["metadata"]["resourceVersion"]
                    ));
                }
            }
            w.last.insert(name, (ann, status));
        }
    });
    seen
}

/// Create `n` Widgets `w-0..` with `spec.n = 0`, 25 at a time.
async fn create_widgets(client: &kube::Client, n: usize) -> anyhow::Result<()> {
    let names: Vec<String> = (0..n).map(|i| format!("w-{i}")).collect();
    for chunk in names.chunks(25) {
        futures::future::try_join_all(
            chunk
                .iter()
                .map(|name| create_widget(client, name, json!({"n": 0}))),
        )
        .await?;
    }
    Ok(())
}

/// Whether every Widget shows `version`'s result for its current `spec.n`.
async fn converged(client: &kube::Client, version: &str, n: usize) -> anyhow::Result<bool> {
    let list = widgets(client).list(&ListParams::default()).await?;
    if list.items.len() != n {
        return Ok(false);
    }
    Ok(list.items.iter().all(|w| {
        let v = serde_json::to_value(w).unwrap_or(Value::Null);
        let stamp = format!("{version}:{}", v["spec"]["n"].as_u64().unwrap_or(0));
        v["status"]["stamp"] == json!(stamp) && v["metadata"]["annotations"][STAMP] == json!(stamp)
    }))
}

async fn wait_converged(client: &kube::Client, version: &str, n: usize) -> anyhow::Result<()> {
    eventually(Duration::from_secs(90), || async {
        converged(client, version, n).await.unwrap_or(false)
    })
    .await
    .with_context(|| format!("widgets never converged to version {version}"))
}

fn info_series(digest: &str, version: &str) -> String {
    format!("capstan_plugin_info{{plugin=\"{PLUGIN}\",version=\"{version}\",digest=\"{digest}\"}}")
}

fn reloads(result: &str) -> String {
    format!("capstan_plugin_reloads_total{{plugin=\"{PLUGIN}\",result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_replacements_under_load_lose_nothing_and_bad_files_keep_the_old_version()
-> anyhow::Result<()> {
    const WIDGETS: usize = 500;
    let v1 = guest("reload-v1")?;
    let v2 = guest("reload-v2")?;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", v1[..v1.len() / 2].to_vec()),
        ("wrong world", guest("guest-wrong-version")?),
        ("trapping describe", guest("reload-describe-trap")?),
    ];
    let server = api_server().await?;
    let client = test_client(&server).await?;
    create_widgets(&client, WIDGETS).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reload-test.wasm");
    put(&file, &v2)?;
    let mut mgr = start(&server, dir.path()).await?;
    let watch_stop = CancellationToken::new();
    let writes = observe_writes(&client, watch_stop.clone());
    wait_converged(&client, "2.0.0", WIDGETS).await?;
    assert_eq!(mgr.runtime.load_stats().compiles, 1);

    // Load beside the reconciles' own requeues: an external actor bumps spec.n all along.
    let bumping = Arc::new(AtomicBool::new(true));
    let bumper = {
        let client = client.clone();
        let bumping = Arc::clone(&bumping);
        tokio::spawn(async move {
            let mut i = 0usize;
            while bumping.load(Ordering::Relaxed) {
                // w-0..w-19 are the test's own (checked one by one below).
                let name = format!("w-{}", 20 + (i * 37) % (WIDGETS - 20));
                let n = i / WIDGETS * 1000 + i + 1;
                let _ = patch_widget(&client, &name, json!({"spec": {"n": n}})).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            i
        })
    };

    let mut serving = (v2.clone(), "2.0.0");
    for round in 1..=10 {
        let (bytes, version) = if round % 2 == 1 {
            (v1.clone(), "1.0.0")
        } else {
            (v2.clone(), "2.0.0")
        };
        put(&file, &bytes)?;
        let ev = mgr.next_event(&file).await?;
        assert_eq!(ev.digest, digest(&bytes), "round {round}: {ev:?}");
        assert!(
            ev.result == "success" || ev.result == "cached",
            "round {round}: {ev:?}"
        );
        let body = mgr.metrics().await?;
        assert_eq!(
            metric_value(&body, &info_series(&digest(&bytes), version)),
            Some(1.0),
            "round {round}: the new version is reported serving"
        );
        // Let the new version serve (and write) under load before the next replacement.
        let written = writes.lock().status_writes;
        eventually(Duration::from_secs(30), || async {
            writes.lock().status_writes >= written + 50
        })
        .await
        .with_context(|| format!("round {round}: version {version} never wrote"))?;
        serving = (bytes, version);

        // Invalid replacements at rounds 3, 6 and 9: the version just installed keeps serving.
        if round % 3 == 0 {
            let (what, bad_bytes) = &bad[round / 3 - 1];
            let errors = mgr.metric(&reloads("error")).await?;
            put(&file, bad_bytes)?;
            let ev = mgr.next_event(&file).await?;
            assert_eq!(ev.result, "error", "{what} was accepted: {ev:?}");
            assert!(ev.error.is_some());
            assert_eq!(mgr.metric(&reloads("error")).await?, errors + 1.0);
            let body = mgr.metrics().await?;
            assert_eq!(
                metric_value(&body, &info_series(&digest(&serving.0), serving.1)),
                Some(1.0),
                "after the {what} file, version {} still serves",
                serving.1
            );
            // Still reconciling with that version: a change is answered by it.
            let name = format!("w-{round}");
            let n = 900_000 + round;
            patch_widget(&client, &name, json!({"spec": {"n": n}})).await?;
            let want = json!(format!("{}:{n}", serving.1));
            eventually(Duration::from_secs(30), || async {
                get_widget(&client, &name)
                    .await
                    .is_ok_and(|w| w["status"]["stamp"] == want)
            })
            .await
            .with_context(|| format!("after the {what} file, {name} was not reconciled"))?;
            // Put the serving bytes back (cached: no compile, no version change).
            put(&file, &serving.0)?;
            let ev = mgr.next_event(&file).await?;
            assert_eq!(ev.result, "cached", "{ev:?}");
        }
    }
    bumping.store(false, Ordering::Relaxed);
    let bumps = bumper.await?;
    assert!(bumps > 100, "the load bumped only {bumps} widgets");

    // Every object converges to the final version's result: nothing was lost.
    wait_converged(&client, serving.1, WIDGETS).await?;
    assert_eq!(serving.1, "2.0.0");
    // v2's ConfigMap watch and relation, wired again after nine swaps, work.
    let cms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        },
    );
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm-7", "namespace": "default",
                "labels": {"reload.capstan.dev/widget": "w-7"}},
        }))?,
    )
    .await?;
    eventually(Duration::from_secs(20), || async {
        get_widget(&client, "w-7")
            .await
            .is_ok_and(|w| w["status"]["configs"] == json!(1))
    })
    .await
    .context("the ConfigMap watch of the final version did not enqueue w-7")?;

    watch_stop.cancel();
    {
        let w = writes.lock();
        assert!(
            w.violations.is_empty(),
            "objects written by two versions in one reconcile:\n{}",
            w.violations.join("\n")
        );
        assert_eq!(
            w.status_versions,
            BTreeSet::from(["1.0.0".to_string(), "2.0.0".to_string()])
        );
        assert!(
            w.status_writes >= 10 * 50,
            "{} status writes",
            w.status_writes
        );
    }

    // Two versions seen, two compiles; the two invalid components that compiled are the
    // only other ones. Every later load of a known version reused it.
    assert_eq!(mgr.runtime.load_stats().compiles, 4);
    let body = mgr.metrics().await?;
    let v = |s: &str| metric_value(&body, s).unwrap_or(-1.0);
    assert_eq!(v(&reloads("success")), 1.0);
    assert_eq!(v(&reloads("cached")), 12.0, "9 swaps + 3 restores");
    assert_eq!(v(&reloads("error")), 3.0);
    assert_eq!(
        v(&format!(
            "controller_runtime_reconcile_panics_total{{controller=\"{PLUGIN}\"}}"
        )),
        0.0
    );
    // Each failure was recorded as an Event regarding the manager's Pod.
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource {
            group: "events.k8s.io".into(),
            version: "v1".into(),
            api_version: "events.k8s.io/v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
        },
    );
    eventually(Duration::from_secs(10), || async {
        events.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .filter(|e| {
                    let v = serde_json::to_value(e).unwrap_or(Value::Null);
                    v["reason"] == "PluginReloadFailed"
                        && v["regarding"]["name"] == "capstan-manager-0"
                        && v["type"] == "Warning"
                })
                .count()
                == 3
        })
    })
    .await
    .context("three PluginReloadFailed Events")?;
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_compares_without_writing_then_promotion_rollback_and_removal()
-> anyhow::Result<()> {
    const WIDGETS: usize = 20;
    let v1 = guest("reload-v1")?;
    let v2 = guest("reload-v2")?;
    let server = api_server().await?;
    let client = test_client(&server).await?;
    create_widgets(&client, WIDGETS).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("reload-test.wasm");
    let shadow_file: PathBuf = dir.path().join("reload-test.shadow.wasm");
    put(&file, &v1)?;
    let mut mgr = start(&server, dir.path()).await?;
    let writes = observe_writes(&client, CancellationToken::new());
    wait_converged(&client, "1.0.0", WIDGETS).await?;
    let shadow =
        |r: &str| format!("capstan_shadow_reconciles_total{{plugin=\"{PLUGIN}\",result=\"{r}\"}}");

    // The same version as a shadow: outcomes are the same.
    put(&shadow_file, &v1)?;
    assert_eq!(mgr.next_event(&shadow_file).await?.result, "shadow");
    eventually(Duration::from_secs(20), || async {
        mgr.metric(&shadow("same")).await.unwrap_or(0.0) >= WIDGETS as f64
    })
    .await
    .context("an identical shadow compared as the same")?;
    assert_eq!(mgr.metric(&shadow("differ")).await?, 0.0);

    // v2 as the shadow: it differs (its version is in every write) and writes nothing.
    put(&shadow_file, &v2)?;
    assert_eq!(mgr.next_event(&shadow_file).await?.result, "shadow");
    for i in 0..WIDGETS {
        patch_widget(&client, &format!("w-{i}"), json!({"spec": {"n": 5}})).await?;
    }
    eventually(Duration::from_secs(20), || async {
        mgr.metric(&shadow("differ")).await.unwrap_or(0.0) >= WIDGETS as f64
    })
    .await
    .context("the v2 shadow's differences were not counted")?;
    wait_converged(&client, "1.0.0", WIDGETS).await?;
    assert!(
        !writes.lock().status_versions.contains("2.0.0"),
        "the shadow wrote"
    );
    let compiles = mgr.runtime.load_stats().compiles;
    assert_eq!(compiles, 2);

    // Promotion: rename the shadow onto the serving file. The loaded shadow is reused.
    std::fs::rename(&shadow_file, &file)?;
    let ev = mgr.next_event(&file).await?;
    assert_eq!(ev.result, "cached", "{ev:?}");
    wait_converged(&client, "2.0.0", WIDGETS).await?;
    assert_eq!(mgr.runtime.load_stats().compiles, compiles);
    let body = mgr.metrics().await?;
    assert_eq!(
        metric_value(&body, &info_series(&digest(&v2), "2.0.0")),
        Some(1.0)
    );
    assert!(
        !body.contains(&digest(&v1)),
        "the previous version is no longer reported serving"
    );

    // Rollback: the previous file back; no compile.
    put(&file, &v1)?;
    assert_eq!(mgr.next_event(&file).await?.result, "cached");
    wait_converged(&client, "1.0.0", WIDGETS).await?;
    assert_eq!(mgr.runtime.load_stats().compiles, compiles);

    // Removal: the plugin stops; a change is no longer reconciled.
    std::fs::remove_file(&file)?;
    assert_eq!(mgr.next_event(&file).await?.result, "removed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    patch_widget(&client, "w-0", json!({"spec": {"n": 77}})).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let w0 = get_widget(&client, "w-0").await?;
    assert_eq!(
        w0["status"]["stamp"],
        json!("1.0.0:5"),
        "a removed plugin reconciled"
    );
    assert!(
        !mgr.metrics()
            .await?
            .contains("capstan_plugin_info{plugin=\"reload-test\""),
        "a removed plugin is not reported serving"
    );
    // And it comes back when the file does.
    put(&file, &v2)?;
    assert_eq!(mgr.next_event(&file).await?.result, "cached");
    wait_converged(&client, "2.0.0", WIDGETS).await?;
    assert!(writes.lock().violations.is_empty());
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

/// A fake plugin named `reload-fake` counting calls per Widget; `watch_cms` maps ConfigMaps
/// labelled `widget` to their Widget.
fn fake(version: &str, watch_cms: bool) -> Arc<FakePlugin> {
    let cm = gvk("", "v1", "ConfigMap");
    let mut info = widget_info("reload-fake");
    info.version = version.into();
    info.permissions.push(
        capstan::runtime::bindings::capstan::reconciler::types::Permission {
            kind: cm.clone(),
            verbs: capstan::runtime::Verbs::PATCH,
            target: capstan::runtime::bindings::capstan::reconciler::types::Target::Management,
        },
    );
    if watch_cms {
        info.watches = vec![watch(
            cm,
            capstan::runtime::bindings::capstan::reconciler::types::KeyMapping::Label(
                "widget".into(),
            ),
        )];
    }
    FakePlugin::new(info, |_, _| Ok(empty_outcome()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_rewires_watches_and_keeps_the_caches_other_plugins_share() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    create_widget(&client, "a", json!({})).await?;
    let v1 = fake("1", false);
    let v2 = fake("2", true);
    // Another plugin relating ConfigMaps: it shares the ConfigMap cache.
    let mut other_info = widget_info("reload-other");
    other_info.relations = vec![relation(
        "cms",
        gvk("", "v1", "ConfigMap"),
        capstan::runtime::bindings::capstan::reconciler::types::RelationSelector::Label(
            "widget".into(),
        ),
    )];
    let other = FakePlugin::new(other_info, |_, _| Ok(empty_outcome()));
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let mut manager = Manager::new(
        build_client(config, Arc::clone(&metrics), 0.0, 0)?,
        Arc::new(registry),
        metrics,
        ManagerOptions::default(),
    );
    manager.add_plugin(v1.clone()).await?;
    manager.add_plugin(other.clone()).await?;
    let controller = Arc::clone(&manager.controllers()[0]);
    let cache = Arc::clone(manager.cache());
    let stop = CancellationToken::new();
    let task = tokio::spawn(manager.run(stop.clone()));
    eventually(Duration::from_secs(10), || async { v1.calls_for("a") >= 1 }).await?;

    let cm = |n: u32| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{n}"), "namespace": "default", "labels": {"widget": "a"}}})
    };
    let cms: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        },
    );
    // v2 watches ConfigMaps: a new one enqueues Widget a.
    let old = controller.swap(v2.clone())?;
    assert_eq!(old.info().version, "1");
    eventually(Duration::from_secs(10), || async { v2.calls_for("a") >= 1 }).await?;
    let before = v2.calls_for("a");
    cms.create(&PostParams::default(), &serde_json::from_value(cm(1))?)
        .await?;
    eventually(Duration::from_secs(10), || async {
        v2.calls_for("a") > before
    })
    .await
    .context("the swapped-in watch did not enqueue")?;

    // Back to v1 (no watch): ConfigMap changes no longer enqueue it, yet the cache stays
    // and the other plugin still reads it.
    controller.swap(v1.clone())?;
    eventually(Duration::from_secs(10), || async { v1.calls_for("a") >= 2 }).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v1_calls, v2_calls) = (v1.calls_for("a"), v2.calls_for("a"));
    cms.create(&PostParams::default(), &serde_json::from_value(cm(2))?)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        v1.calls_for("a"),
        v1_calls,
        "a ConfigMap enqueued the version without that watch"
    );
    let other_calls = other.calls();
    patch_widget(&client, "a", json!({"spec": {"x": 1}})).await?;
    eventually(Duration::from_secs(10), || async {
        other.calls() > other_calls && v1.calls_for("a") > v1_calls
    })
    .await?;
    assert_eq!(
        v2.calls_for("a"),
        v2_calls,
        "the replaced version was called"
    );
    let kind = cache
        .kind(&capstan::cache::Gvk::new("", "v1", "ConfigMap"))
        .context("the ConfigMap cache was dropped")?;
    assert_eq!(kind.len(), 2);

    // A replacement with another primary kind or name is refused; v1 keeps serving.
    let mut renamed = widget_info("someone-else");
    renamed.version = "3".into();
    assert!(
        controller
            .swap(FakePlugin::new(renamed, |_, _| Ok(empty_outcome())))
            .is_err()
    );
    assert_eq!(controller.plugin().info().version, "1");
    stop.cancel();
    task.await??;
    server.shutdown().await;
    Ok(())
}

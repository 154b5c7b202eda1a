//! The hello plugin in Rust, Python and JavaScript under `capstan run` converges the same objects identically.
//!
//! For each language, one at a time (all three plugins are named `hello`): a fresh
//! capstan-apiserver, the same 30 ConfigMaps across two namespaces, the real `capstan`
//! binary as a subprocess with only that language's component in its plugin folder; wait for
//! convergence, make the same changes (edit data, label, unlabel, delete), wait again, stop
//! the manager with SIGTERM and dump every ConfigMap normalised. The three dumps must be
//! identical, and show hello's effect: every labelled ConfigMap carries the greeting and the
//! digest of its current data, nothing else was touched.

use anyhow::{Context as _, bail, ensure};
use capstan_tests::server::TestServer;
use capstan_tests::target_dir;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Normalised ConfigMaps keyed `namespace/name`.
type Dump = BTreeMap<String, Value>;

const NAMESPACES: [&str; 2] = ["alpha", "beta"];
const LABEL: &str = "capstan.dev/hello";
const GREETING: &str = "capstan.dev/hello-greeting";
const OBSERVED: &str = "capstan.dev/hello-observed";
/// Interpreted guests in a debug-built host compile for tens of seconds on a cold cache.
const CONVERGE: Duration = Duration::from_secs(180);

/// The hello component of `lang` from `make components`.
fn component(lang: &str) -> anyhow::Result<PathBuf> {
    let path = target_dir().join(format!("guests/hello-{lang}.wasm"));
    ensure!(
        path.is_file(),
        "{} is missing: run `make components` (or `make guests`) first",
        path.display()
    );
    Ok(path)
}

/// hello's digest: FNV-1a (64-bit) over `key 0 value 0` per data entry in key order.
fn digest(data: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in data {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// ConfigMap `i` of a namespace: a third unlabelled, a third labelled `true`, a third
/// labelled `false`; data of varied size, some empty.
fn initial_configmap(ns: &str, i: usize) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(format!("app-{}", i % 4)));
    match i % 3 {
        1 => {
            labels.insert(LABEL.into(), json!("true"));
        }
        2 => {
            labels.insert(LABEL.into(), json!("false"));
        }
        _ => {}
    }
    let data: serde_json::Map<String, Value> = (0..i % 5)
        .map(|k| {
            (
                format!("key-{k}"),
                json!(format!("{ns}-{i}-{}", "x".repeat(k * 7))),
            )
        })
        .collect();
    json!({"metadata": {"name": format!("cm-{i:02}"), "namespace": ns, "labels": labels},
           "data": data})
}

fn configmaps(client: &kube::Client, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), ns)
}

async fn seed(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in NAMESPACES {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
        for i in 0..15 {
            configmaps(client, ns)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(initial_configmap(ns, i))?,
                )
                .await
                .with_context(|| format!("creating {ns}/cm-{i:02}"))?;
        }
    }
    Ok(())
}

/// The changes made after the first convergence, the same for every language.
async fn change(client: &kube::Client) -> anyhow::Result<()> {
    let merge = |v: Value| Patch::Merge(v);
    let pp = PatchParams::default();
    // A labelled ConfigMap's data changes: its digest must follow.
    configmaps(client, "alpha")
        .patch(
            "cm-01",
            &pp,
            &merge(json!({"data": {"key-0": "edited", "new": "value"}})),
        )
        .await?;
    // An unlabelled one opts in.
    configmaps(client, "alpha")
        .patch(
            "cm-03",
            &pp,
            &merge(json!({"metadata": {"labels": {LABEL: "true"}}})),
        )
        .await?;
    // A labelled one opts out (hello leaves its annotations: it only adds), then its data
    // changes: no new digest.
    configmaps(client, "beta")
        .patch(
            "cm-04",
            &pp,
            &merge(json!({"metadata": {"labels": {LABEL: "false"}}})),
        )
        .await?;
    configmaps(client, "beta")
        .patch("cm-04", &pp, &merge(json!({"data": {"after": "opt-out"}})))
        .await?;
    // A labelled one is deleted.
    configmaps(client, "beta")
        .delete("cm-07", &DeleteParams::default())
        .await?;
    Ok(())
}

/// Every ConfigMap of the test's namespaces, normalised and keyed `ns/name`.
async fn dump(client: &kube::Client) -> anyhow::Result<Dump> {
    let mut out = BTreeMap::new();
    for ns in NAMESPACES {
        for cm in configmaps(client, ns).list(&ListParams::default()).await? {
            let mut v = serde_json::to_value(&cm)?;
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                for field in [
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "managedFields",
                    "generation",
                ] {
                    meta.remove(field);
                }
            }
            let name = cm.metadata.name.clone().unwrap_or_default();
            out.insert(format!("{ns}/{name}"), v);
        }
    }
    Ok(out)
}

/// Whether every labelled ConfigMap carries the greeting and the digest of its data.
fn converged(dump: &Dump) -> bool {
    dump.values().all(|cm| {
        let meta = &cm["metadata"];
        if meta["labels"][LABEL] != json!("true") {
            return true;
        }
        let data: BTreeMap<String, String> =
            serde_json::from_value(cm["data"].clone()).unwrap_or_default();
        let name = meta["name"].as_str().unwrap_or_default();
        meta["annotations"][GREETING] == json!(format!("hello, {name}"))
            && meta["annotations"][OBSERVED] == json!(digest(&data))
    })
}

async fn wait_converged(client: &kube::Client, lang: &str, log: &Path) -> anyhow::Result<Dump> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let d = dump(client).await?;
        if converged(&d) {
            return Ok(d);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{lang}: not converged within {CONVERGE:?}; manager log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One language end to end; returns the final normalised dump.
async fn run_language(bin: &Path, lang: &str) -> anyhow::Result<(Dump, Dump)> {
    let server = TestServer::memory().await?;
    let client = server.client().await?;
    seed(&client).await?;
    let before = dump(&client).await?;
    ensure!(before.len() == 30 && !converged(&before), "seeded state");

    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    std::fs::copy(component(lang)?, plugins.join(format!("hello-{lang}.wasm")))?;
    let log = dir.path().join("capstan.log");
    let cache = target_dir().join("capstan-test-cache");
    std::fs::create_dir_all(&cache)?;
    let child = std::process::Command::new(bin)
        .arg("run")
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .arg("--plugins")
        .arg(&plugins)
        .args(["--metrics-bind-address", "0"])
        .args(["--health-probe-bind-address", "0"])
        .arg("--cache-dir")
        .arg(&cache)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting capstan run")?;
    let mut child = KillOnDrop(child);

    let result = async {
        let first = wait_converged(&client, lang, &log).await?;
        change(&client).await?;
        let last = wait_converged(&client, lang, &log).await?;
        Ok::<_, anyhow::Error>((first, last))
    }
    .await;
    // SIGTERM: `capstan run` drains and exits 0.
    if let Some(early) = child.0.try_wait()? {
        bail!(
            "{lang}: capstan run exited early ({early}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let pid = child.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    ensure!(killed.success(), "kill -TERM {pid}");
    let stop_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(
            tokio::time::Instant::now() < stop_deadline,
            "{lang}: capstan run did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (first, last) = result?;
    ensure!(
        status.success(),
        "{lang}: capstan run exited {status}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Nothing moved after the manager stopped: the dump is final.
    ensure!(
        dump(&client).await? == last,
        "{lang}: objects changed at shutdown"
    );
    Ok((first, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_in_every_language_converges_the_same_objects_identically() -> anyhow::Result<()> {
    let bin = capstan_tests::host::capstan_binary()?;
    let mut dumps: Vec<(&str, Dump, Dump)> = Vec::new();
    for lang in ["rust", "python", "js"] {
        let started = std::time::Instant::now();
        let (first, last) = run_language(&bin, lang).await?;
        eprintln!("{lang}: converged twice in {:?}", started.elapsed());
        dumps.push((lang, first, last));
    }
    let (_, rust_first, rust_last) = &dumps[0];
    for (lang, first, last) in &dumps[1..] {
        ensure!(
            first == rust_first,
            "{lang} converged differently from rust before the changes:\n{}",
            diff(rust_first, first)
        );
        ensure!(
            last == rust_last,
            "{lang} converged differently from rust after the changes:\n{}",
            diff(rust_last, last)
        );
    }

    // The plugin's effect, spelled out on the (shared) final state.
    let last = rust_last;
    assert_eq!(last.len(), 29, "cm-07 in beta was deleted");
    assert!(!last.contains_key("beta/cm-07"));
    let annotated: Vec<&String> = last
        .iter()
        .filter(|(_, cm)| cm["metadata"]["annotations"][GREETING].is_string())
        .map(|(k, _)| k)
        .collect();
    // Labelled true at the start: i = 1, 4, 7, 10, 13 per namespace; alpha/cm-03 opted in.
    let expected: Vec<String> = [
        "alpha/cm-01",
        "alpha/cm-03",
        "alpha/cm-04",
        "alpha/cm-07",
        "alpha/cm-10",
        "alpha/cm-13",
        "beta/cm-01",
        "beta/cm-04",
        "beta/cm-10",
        "beta/cm-13",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(annotated, expected.iter().collect::<Vec<_>>());
    let alpha01 = &last["alpha/cm-01"]["metadata"]["annotations"];
    assert_eq!(alpha01[GREETING], json!("hello, cm-01"));
    let data: BTreeMap<String, String> =
        serde_json::from_value(last["alpha/cm-01"]["data"].clone())?;
    assert_eq!(data.get("new").map(String::as_str), Some("value"));
    assert_eq!(
        alpha01[OBSERVED],
        json!(digest(&data)),
        "digest of the edit"
    );
    // beta/cm-04 opted out before its data changed: its digest is the old data's.
    let beta04 = &last["beta/cm-04"];
    let data: BTreeMap<String, String> = serde_json::from_value(beta04["data"].clone())?;
    assert!(data.contains_key("after"));
    assert_ne!(
        beta04["metadata"]["annotations"][OBSERVED],
        json!(digest(&data))
    );
    // Unlabelled and `false` ConfigMaps are as created.
    let seeded = initial_configmap("beta", 2);
    assert_eq!(last["beta/cm-02"]["data"], seeded["data"]);
    assert!(last["beta/cm-02"]["metadata"]["annotations"].is_null());
    Ok(())
}

/// Kills the manager if the test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The entries that differ between two dumps, one per line.
fn diff(a: &Dump, b: &Dump) -> String {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect::<Vec<_>>()
        .join("\n")
}

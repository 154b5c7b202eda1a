//! Component tests of the runtime: real built guests in real wasmtime, limits and typed errors.

use anyhow::{Context as _, Result};
use capstan::cli::plugin::read_snapshot;
use capstan::runtime::{
    CallError, Plugin, RelatedObjects, Runtime, RuntimeConfig, RuntimeError, Snapshot, Verbs,
};
use capstan_tests::{fixture, guest};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Deadline of every call in these tests.
const DEADLINE: Duration = Duration::from_millis(1500);
/// Memory cap of every instance in these tests.
const MEMORY: u64 = 64 << 20;

/// One runtime for the whole test binary, caching artifacts in a temporary
/// directory, so each guest compiles once.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<(tempfile::TempDir, Runtime)> = OnceLock::new();
    &RT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = Runtime::new(RuntimeConfig {
            deadline: DEADLINE,
            memory_limit: MEMORY,
            max_instances: 16,
            cache_dir: Some(dir.path().to_owned()),
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        (dir, rt)
    })
    .1
}

fn load(name: &str) -> Result<Plugin> {
    let path = guest(name)?;
    runtime()
        .load_file(&path)
        .with_context(|| format!("loading {}", path.display()))
}

fn configmap_snapshot(labelled: bool) -> Snapshot {
    let labels = if labelled {
        json!({"capstan.dev/hello": "true"})
    } else {
        json!({})
    };
    Snapshot {
        primary: json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "data": {"a": "1"}})
        .to_string(),
        related: Vec::new(),
        now: "2026-11-28T12:00:00Z".to_owned(),
        workload: capstan::runtime::Connection::NotApplicable,
    }
}

/// A good reconcile of hello, as the "host is still healthy" check.
fn hello_works() -> Result<()> {
    let out = load("hello-rust")?.reconcile("default/web", &configmap_snapshot(true))?;
    anyhow::ensure!(
        out.apply.len() == 1,
        "hello returned {} objects",
        out.apply.len()
    );
    Ok(())
}

#[test]
fn describe_round_trips_plugin_info_and_digest() -> Result<()> {
    let path = guest("hello-rust")?;
    let plugin = load("hello-rust")?;
    let info = plugin.info();
    assert_eq!(info.name, "hello");
    assert_eq!(
        (
            info.primary.group.as_str(),
            info.primary.version.as_str(),
            info.primary.kind.as_str()
        ),
        ("", "v1", "ConfigMap")
    );
    assert_eq!(info.permissions.len(), 1);
    assert_eq!(info.permissions[0].verbs, Verbs::PATCH);
    assert_eq!(info.concurrency, Some(2));
    assert_eq!(plugin.wit_version(), "capstan:reconciler@0.1.0");
    use sha2::Digest as _;
    assert_eq!(
        plugin.digest(),
        hex::encode(sha2::Sha256::digest(std::fs::read(&path)?))
    );
    assert!(plugin.permits("v1", "ConfigMap", Verbs::PATCH));
    assert!(!plugin.permits("v1", "Secret", Verbs::PATCH));

    let cs = load("guest-cluster-status")?;
    let names: Vec<&str> = cs
        .info()
        .relations
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "control-plane",
            "infrastructure",
            "machines",
            "machine-deployments"
        ]
    );
    assert_eq!(cs.info().watches.len(), 4);
    Ok(())
}

#[test]
fn hello_reconciles_labelled_configmaps_only() -> Result<()> {
    let plugin = load("hello-rust")?;
    let out = plugin.reconcile("default/web", &configmap_snapshot(true))?;
    let applied: Value = serde_json::from_str(&out.apply[0])?;
    assert_eq!(
        applied["metadata"]["annotations"]["capstan.dev/hello-greeting"],
        "hello, web"
    );
    assert_eq!(
        applied["metadata"]["annotations"]["capstan.dev/hello-observed"],
        "ac4d51820e249a1d"
    );
    let none = plugin.reconcile("default/web", &configmap_snapshot(false))?;
    assert!(none.apply.is_empty() && none.status.is_empty());
    Ok(())
}

#[test]
fn cluster_snapshot_reconciles_to_a_v1beta2_status() -> Result<()> {
    let snap = read_snapshot(&fixture("capi/cluster-snapshot.json"))?;
    let bytes: usize = snap.primary.len()
        + snap
            .related
            .iter()
            .flat_map(|r| &r.objects)
            .map(String::len)
            .sum::<usize>();
    assert!(
        (14_000..20_000).contains(&bytes),
        "fixture is {bytes} bytes of JSON"
    );

    let out = load("guest-cluster-status")?.reconcile("capi-quickstart/prod-eu-1", &snap)?;
    assert!(out.apply.is_empty());
    assert_eq!(out.status.len(), 1);
    let s: Value = serde_json::from_str(&out.status[0])?;
    assert_eq!(s["kind"], "Cluster");
    assert_eq!(s["metadata"]["name"], "prod-eu-1");
    let st = &s["status"];
    assert_eq!(st["phase"], "Provisioned");
    assert_eq!(
        st["initialization"],
        json!({"infrastructureProvisioned": true, "controlPlaneInitialized": true})
    );
    assert_eq!(st["controlPlane"]["readyReplicas"], 3);
    assert_eq!(
        st["workers"],
        json!({"desiredReplicas": 3, "replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "upToDateReplicas": 3})
    );
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // Unchanged status keeps its transition time; a flipped one takes `now`.
    assert_eq!(
        cond("InfrastructureReady")["lastTransitionTime"],
        "2026-11-28T11:46:12Z"
    );
    assert_eq!(cond("ControlPlaneInitialized")["status"], "True");
    assert_eq!(
        cond("ControlPlaneInitialized")["lastTransitionTime"],
        "2026-11-28T12:00:00Z"
    );
    assert_eq!(cond("WorkerMachinesReady")["status"], "False");
    assert_eq!(
        cond("WorkerMachinesReady")["message"],
        "not ready: prod-eu-1-md-0-7b9d4-q9d6f"
    );
    assert_eq!(cond("Available")["status"], "False");
    assert_eq!(cond("Available")["observedGeneration"], 2);

    // An unsynced relation is a transient error, not a wrong status.
    let mut unsynced = snap.clone();
    unsynced.related[2] = RelatedObjects {
        synced: false,
        ..unsynced.related[2].clone()
    };
    let err = load("guest-cluster-status")?
        .reconcile("capi-quickstart/prod-eu-1", &unsynced)
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Transient { message, .. } if message.contains("machines")),
        "{err}"
    );
    Ok(())
}

/// Run `name` once, check the error with `expect`, check it came within the
/// deadline, then check a good plugin still works.
fn hostile(name: &str, expect: impl Fn(&CallError) -> bool) -> Result<()> {
    let plugin = load(name)?;
    let start = Instant::now();
    let err = plugin
        .reconcile("default/web", &configmap_snapshot(true))
        .expect_err("a hostile guest must fail");
    let took = start.elapsed();
    assert!(expect(&err), "{name}: unexpected error: {err}");
    assert!(
        took < DEADLINE + Duration::from_millis(500),
        "{name}: took {took:?}"
    );
    hello_works()?;
    // And the hostile plugin itself fails the same way again, on a fresh instance.
    let again = plugin
        .reconcile("default/web", &configmap_snapshot(true))
        .expect_err("fails again");
    assert_eq!(std::mem::discriminant(&again), std::mem::discriminant(&err));
    Ok(())
}

#[test]
fn trapping_guest_is_a_trap() -> Result<()> {
    hostile(
        "guest-trap",
        |e| matches!(e, CallError::Trap { plugin, message } if plugin == "test-trap" && message.contains("unreachable")),
    )
}

#[test]
fn panicking_guest_is_a_trap_carrying_the_panic_message() -> Result<()> {
    hostile(
        "guest-panic",
        |e| matches!(e, CallError::Trap { message, .. } if message.contains("hostile guest panics on purpose")),
    )
}

#[test]
fn looping_guest_hits_the_deadline() -> Result<()> {
    let start = Instant::now();
    hostile("guest-loop", |e| {
        matches!(
            e,
            CallError::DeadlineExceeded {
                deadline_ms: 1500,
                ..
            }
        )
    })?;
    assert!(
        start.elapsed() >= DEADLINE,
        "the loop was stopped before its deadline"
    );
    Ok(())
}

#[test]
fn allocating_guest_hits_the_memory_limit() -> Result<()> {
    hostile(
        "guest-alloc",
        |e| matches!(e, CallError::MemoryLimitExceeded { limit_bytes, .. } if *limit_bytes == MEMORY),
    )
}

#[test]
fn invalid_json_outcome_is_rejected() -> Result<()> {
    hostile(
        "guest-bad-json",
        |e| matches!(e, CallError::InvalidOutcome { reason, .. } if reason.contains("apply[0]")),
    )
}

#[test]
fn ten_megabyte_outcome_is_rejected() -> Result<()> {
    hostile(
        "guest-big-outcome",
        |e| matches!(e, CallError::InvalidOutcome { reason, .. } if reason.contains("exceeds the limit of 8388608 bytes")),
    )
}

#[test]
fn a_looping_guest_does_not_stall_other_plugins() -> Result<()> {
    let looping = load("guest-loop")?;
    let t = std::thread::spawn(move || looping.reconcile("default/web", &configmap_snapshot(true)));
    let hello = load("hello-rust")?;
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            hello
                .reconcile("default/web", &configmap_snapshot(true))?
                .apply
                .len(),
            1
        );
    }
    assert!(
        start.elapsed() < DEADLINE,
        "good reconciles waited for the looping one"
    );
    let res = t
        .join()
        .map_err(|_| anyhow::anyhow!("looping thread panicked"))?;
    assert!(matches!(res, Err(CallError::DeadlineExceeded { .. })));
    Ok(())
}

#[test]
fn memo_persists_across_reconciles_and_reloads_and_refuses_oversize_values() -> Result<()> {
    let first = load("guest-memo")?;
    let n1 = first
        .reconcile("k", &configmap_snapshot(true))?
        .requeue_after_ms;
    let n2 = first
        .reconcile("k", &configmap_snapshot(true))?
        .requeue_after_ms;
    let reloaded = load("guest-memo")?;
    let n3 = reloaded
        .reconcile("k", &configmap_snapshot(true))?
        .requeue_after_ms;
    // Counts are consecutive whatever ran before (tests share the runtime).
    let (a, b, c) = (n1.unwrap_or(0), n2.unwrap_or(0), n3.unwrap_or(0));
    assert!(a >= 1 && b == a + 1 && c == b + 1, "{a} {b} {c}");
    let memo = runtime().memo("test-memo");
    assert_eq!(memo.get("count"), Some(c.to_le_bytes().to_vec()));
    assert_eq!(memo.get("too-big"), None);
    Ok(())
}

#[test]
fn restart_with_a_cached_artifact_does_not_compile() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = || RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 2,
        ..RuntimeConfig::default()
    };
    let path = guest("hello-rust")?;
    let first = Runtime::new(cfg())?;
    first.load_file(&path)?;
    assert_eq!(
        (first.load_stats().compiles, first.load_stats().cache_hits),
        (1, 0)
    );
    drop(first);
    let files: Vec<_> = std::fs::read_dir(dir.path())?.collect::<Result<_, _>>()?;
    assert_eq!(files.len(), 1, "one artifact: {files:?}");

    let restarted = Runtime::new(cfg())?;
    let plugin = restarted.load_file(&path)?;
    assert_eq!(
        (
            restarted.load_stats().compiles,
            restarted.load_stats().cache_hits
        ),
        (0, 1)
    );
    assert_eq!(
        plugin
            .reconcile("default/web", &configmap_snapshot(true))?
            .apply
            .len(),
        1
    );

    drop((plugin, restarted));

    // A corrupt artifact is discarded and recompiled, never trusted.
    let artifact = files[0].path();
    std::fs::write(&artifact, b"garbage")?;
    let third = Runtime::new(cfg())?;
    third.load_file(&path)?;
    assert_eq!(
        (third.load_stats().compiles, third.load_stats().cache_hits),
        (1, 0)
    );
    Ok(())
}

#[test]
fn files_that_are_not_components_of_this_world_are_refused() -> Result<()> {
    let rt = runtime();
    let core_module = b"\0asm\x01\0\0\0";
    assert!(
        matches!(rt.load(core_module), Err(RuntimeError::NotAComponent(m)) if m.contains("core WebAssembly module"))
    );
    assert!(matches!(
        rt.load(b"{\"not\": \"wasm\"}"),
        Err(RuntimeError::NotAComponent(_))
    ));
    let err = rt
        .load_file(guest("guest-wrong-version")?)
        .expect_err("wrong version");
    assert!(
        matches!(&err, RuntimeError::Incompatible { found, .. } if found == "capstan:reconciler@0.2.0"),
        "{err}"
    );
    // The served version, `describe` and `reconcile` exported, but not with
    // the contract's types: refused at load, naming the export (a reconcile
    // calls `reconcile` without checking its type again).
    let err = rt
        .load_file(guest("guest-wrong-signature")?)
        .expect_err("wrong signature");
    assert!(
        matches!(&err, RuntimeError::WrongWorld { reason, .. } if reason.contains("`reconcile`")),
        "{err}"
    );
    Ok(())
}

/// Time inside host operations is not charged to the guest's deadline: a
/// reconcile whose RSA key generation alone takes longer than the deadline
/// still succeeds (the work is not thrown away and redone on retry), while a
/// guest's own loop is still stopped (`looping_guest_hits_the_deadline`).
#[test]
fn host_operations_do_not_count_against_the_deadline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let deadline = Duration::from_millis(20);
    let rt = Runtime::new(RuntimeConfig {
        deadline,
        max_instances: 2,
        cache_dir: Some(dir.path().to_owned()),
        ..RuntimeConfig::default()
    })?;
    let plugin = rt.load_file(&guest("guest-crypto")?)?;
    let start = Instant::now();
    let out = plugin.reconcile("default/web", &configmap_snapshot(false))?;
    let took = start.elapsed();
    // An RSA 2048 key generation takes well over 20 ms (about 100-600 ms in a
    // release build): the call ran past its deadline in wall time.
    assert!(
        took > deadline,
        "the reconcile took {took:?}, not longer than its deadline: the test shows nothing"
    );
    let cm: Value = serde_json::from_str(&out.apply[0])?;
    assert!(
        cm["data"]["kubeconfig"]
            .as_str()
            .is_some_and(|k| k.contains("certificate-authority-data")),
        "{cm}"
    );
    assert_eq!(
        rt.crypto_operations("test-crypto", "generate_key_rsa"),
        1,
        "one RSA key, generated once"
    );
    Ok(())
}

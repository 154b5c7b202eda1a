//! Conformance vectors: every hello plugin build must turn each snapshot in tests/vectors/hello/ into its expected outcome.

use anyhow::{Context as _, Result};
use capstan::runtime::{Outcome, RelatedObjects, Runtime, RuntimeConfig, Snapshot};
use capstan_tests::{guest, workspace_root};
use serde_json::{Value, json};

/// The snapshot of a vector file (objects as JSON values).
fn snapshot(v: &Value) -> Result<Snapshot> {
    let s = &v["snapshot"];
    Ok(Snapshot {
        primary: s["primary"].to_string(),
        related: s["related"]
            .as_array()
            .context("related")?
            .iter()
            .map(|r| RelatedObjects {
                relation: r["relation"].as_str().unwrap_or("").to_owned(),
                synced: r["synced"].as_bool().unwrap_or(true),
                objects: r["objects"]
                    .as_array()
                    .map(|os| os.iter().map(Value::to_string).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        now: s["now"].as_str().context("now")?.to_owned(),
    })
}

/// The outcome in the vectors' JSON shape.
fn outcome_json(o: &Outcome) -> Value {
    let parse = |t: &String| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
    json!({
        "apply": o.apply.iter().map(parse).collect::<Vec<_>>(),
        "status": o.status.iter().map(parse).collect::<Vec<_>>(),
        "delete": o.delete.iter().map(|r| json!({"apiVersion": r.api_version, "kind": r.kind, "namespace": r.namespace, "name": r.name})).collect::<Vec<_>>(),
        "events": o.events.iter().map(|e| json!({"reason": e.reason, "message": e.message})).collect::<Vec<_>>(),
        "requeueAfterMs": o.requeue_after_ms,
    })
}

#[test]
fn hello_rust_meets_the_hello_vectors() -> Result<()> {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })?;
    let plugin = rt.load_file(guest("hello-rust")?)?;
    let dir = workspace_root().join("tests/vectors/hello");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let got = outcome_json(&plugin.reconcile("vector", &snapshot(&v)?)?);
        assert_eq!(got, v["expect"], "{}", path.display());
        n += 1;
    }
    assert!(n >= 8, "only {n} vectors in {}", dir.display());
    Ok(())
}

//! The shared conformance vectors of `tests/vectors/`: loading them and judging a plugin's answers.
//!
//! A suite is a folder `tests/vectors/<suite>/` with `describe.json` (the
//! expected `describe()`), `components.txt` (the built components that must
//! pass it, one name per line, found as `<components dir>/<name>.wasm`) and
//! numbered vectors `NNN-<slug>.json` (a snapshot in, the expected outcome or
//! error out). tests/vectors/README.md documents the format. Everything here is
//! language-blind: the tests feed each vector to each component through the
//! real host runtime and compare JSON values, never bytes.

use anyhow::{Context as _, bail, ensure};
use capstan::runtime::{self as rt, CallError, Plugin, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

use crate::target_dir;

/// The folder holding every suite (`tests/vectors`).
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Where `make components` collects the built guest components of every
/// language: `$CAPSTAN_COMPONENTS_DIR`, else `<target>/guests`.
pub fn components_dir() -> PathBuf {
    std::env::var_os("CAPSTAN_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("guests"))
}

/// The snapshot of a vector, as the host would send it (objects as JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotIn {
    /// The primary object's JSON text.
    pub primary: String,
    /// `(relation, synced, objects as JSON text)`, in order.
    pub related: Vec<(String, bool, Vec<String>)>,
    /// The host's time, RFC 3339.
    pub now: String,
    /// The workload connection state: `not-applicable` (default), `disconnected`,
    /// `connected` or `unhealthy`.
    pub workload: String,
}

/// What a vector expects back.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Success with this outcome (normalised as [`Answer::Ok`]).
    Ok(Value),
    /// A reconcile error of this kind whose message starts with this text.
    Error {
        /// `transient` or `terminal`.
        kind: String,
        /// The message's required prefix (messages are otherwise free-form).
        message_starts_with: String,
    },
}

/// One vector: a snapshot in, the expected answer out.
#[derive(Debug, Clone)]
pub struct Vector {
    /// The vector file.
    pub path: PathBuf,
    /// What it checks, in a sentence.
    pub description: String,
    /// The snapshot to reconcile.
    pub snapshot: SnapshotIn,
    /// The expected answer.
    pub expect: Expect,
}

/// A suite of vectors for one plugin behaviour.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The suite's folder name, e.g. `hello`.
    pub name: String,
    /// The expected `describe()`, normalised as [`describe_json`] does.
    pub describe: Value,
    /// Names of the components that must pass it.
    pub components: Vec<String>,
    /// The vectors, in file-name order.
    pub vectors: Vec<Vector>,
}

/// A plugin's answer to one vector, normalised to JSON for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The outcome: `apply` and `status` objects parsed from their JSON text,
    /// `delete` and `events` as records with the WIT field names in snake_case.
    Ok(Value),
    /// A reconcile error.
    Error {
        /// `transient` or `terminal`.
        kind: String,
        /// The plugin's message.
        message: String,
    },
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn str_field<'a>(v: &'a Value, key: &str, path: &Path) -> anyhow::Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("{}: `{key}` must be a string", path.display()))
}

fn parse_vector(path: &Path) -> anyhow::Result<Vector> {
    let v = read_json(path)?;
    let snap = v
        .get("snapshot")
        .with_context(|| format!("{}: no `snapshot`", path.display()))?;
    let primary = match (snap.get("primary"), snap.get("primary_text")) {
        (Some(obj), None) => obj.to_string(),
        (None, Some(Value::String(text))) => text.clone(),
        _ => bail!(
            "{}: the snapshot needs exactly one of `primary` (object) or `primary_text` (string)",
            path.display()
        ),
    };
    let mut related = Vec::new();
    for r in snap
        .get("related")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let objects = r
            .get("objects")
            .and_then(Value::as_array)
            .with_context(|| format!("{}: related entries need `objects`", path.display()))?;
        related.push((
            str_field(r, "relation", path)?.to_owned(),
            r.get("synced").and_then(Value::as_bool).unwrap_or(true),
            objects.iter().map(Value::to_string).collect(),
        ));
    }
    let expect = v
        .get("expect")
        .with_context(|| format!("{}: no `expect`", path.display()))?;
    let expect = match (expect.get("ok"), expect.get("error")) {
        (Some(ok), None) => Expect::Ok(normalise_expected_outcome(ok)),
        (None, Some(err)) => {
            let kind = str_field(err, "kind", path)?.to_owned();
            ensure!(
                kind == "transient" || kind == "terminal",
                "{}: error kind {kind:?}",
                path.display()
            );
            Expect::Error {
                kind,
                message_starts_with: str_field(err, "message_starts_with", path)?.to_owned(),
            }
        }
        _ => bail!(
            "{}: `expect` needs exactly one of `ok` or `error`",
            path.display()
        ),
    };
    Ok(Vector {
        path: path.to_path_buf(),
        description: str_field(&v, "description", path)?.to_owned(),
        snapshot: SnapshotIn {
            primary,
            related,
            now: str_field(snap, "now", path)?.to_owned(),
            workload: snap
                .get("workload")
                .and_then(Value::as_str)
                .unwrap_or("not-applicable")
                .to_owned(),
        },
        expect,
    })
}

/// An expected outcome with omitted lists and requeue filled in.
fn normalise_expected_outcome(ok: &Value) -> Value {
    let list = |k: &str| ok.get(k).cloned().unwrap_or_else(|| json!([]));
    json!({
        "apply": list("apply"),
        "status": list("status"),
        "delete": list("delete"),
        "events": list("events"),
        "requeue_after_ms": ok.get("requeue_after_ms").cloned().unwrap_or(Value::Null),
        "workload_apply": list("workload_apply"),
        "workload_status": list("workload_status"),
        "workload_delete": list("workload_delete"),
    })
}

/// Load suite `name` from `tests/vectors/<name>/`. A suite without vectors is an error.
pub fn load_suite(name: &str) -> anyhow::Result<Suite> {
    let dir = vectors_dir().join(name);
    let describe = read_json(&dir.join("describe.json"))?;
    let list = dir.join("components.txt");
    let components = std::fs::read_to_string(&list)
        .with_context(|| format!("reading {}", list.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".json") && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .collect();
    paths.sort();
    let vectors = paths
        .iter()
        .map(|p| parse_vector(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(
        !vectors.is_empty(),
        "suite {name} has no vectors in {}",
        dir.display()
    );
    Ok(Suite {
        name: name.to_owned(),
        describe,
        components,
        vectors,
    })
}

/// Parse the JSON texts of an outcome's `apply`/`status` lists; text that is
/// not JSON is kept as a string so the comparison reports it.
pub fn parse_objects(texts: &[String]) -> Value {
    Value::Array(
        texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())))
            .collect(),
    )
}

/// Whether `answer` is what `vector` expects; the error says what differs.
pub fn check(vector: &Vector, answer: &Answer) -> Result<(), String> {
    match (&vector.expect, answer) {
        (Expect::Ok(want), Answer::Ok(got)) if want == got => Ok(()),
        (
            Expect::Error {
                kind,
                message_starts_with,
            },
            Answer::Error {
                kind: got_kind,
                message,
            },
        ) if kind == got_kind && message.starts_with(message_starts_with.as_str()) => Ok(()),
        (want, got) => Err(format!(
            "{} ({}):\n  expected {}\n  got      {}",
            vector
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            vector.description,
            match want {
                Expect::Ok(v) => format!("ok {v}"),
                Expect::Error {
                    kind,
                    message_starts_with,
                } => format!("{kind} error \"{message_starts_with}...\""),
            },
            match got {
                Answer::Ok(v) => format!("ok {v}"),
                Answer::Error { kind, message } => format!("{kind} error {message:?}"),
            }
        )),
    }
}

/// `describe.json` with its `name` replaced, for plugins that share a
/// behaviour under another name (scaffolded plugins).
pub fn describe_named(suite: &Suite, name: &str) -> Value {
    let mut d = suite.describe.clone();
    d["name"] = Value::String(name.to_owned());
    d
}

fn object_ref_json(r: &rt::ObjectRef) -> Value {
    json!({"api_version": r.api_version, "kind": r.kind, "namespace": r.namespace, "name": r.name})
}

/// A WIT `outcome` normalised for comparison (see [`Answer::Ok`]).
pub fn outcome_json(o: &rt::Outcome) -> Value {
    let events: Vec<Value> = o
        .events
        .iter()
        .map(|e| {
            let kind = match e.event_type {
                rt::EventType::Normal => "normal",
                rt::EventType::Warning => "warning",
            };
            json!({"regarding": object_ref_json(&e.regarding), "event_type": kind, "reason": e.reason, "message": e.message})
        })
        .collect();
    json!({
        "apply": parse_objects(&o.apply),
        "status": parse_objects(&o.status),
        "delete": o.delete.iter().map(object_ref_json).collect::<Vec<_>>(),
        "events": events,
        "requeue_after_ms": o.requeue_after_ms,
        "workload_apply": parse_objects(&o.workload_apply),
        "workload_status": parse_objects(&o.workload_status),
        "workload_delete": o.workload_delete.iter().map(object_ref_json).collect::<Vec<_>>(),
    })
}

/// The WIT snapshot of a vector.
pub fn snapshot_wit(s: &SnapshotIn) -> rt::Snapshot {
    rt::Snapshot {
        primary: s.primary.clone(),
        related: s
            .related
            .iter()
            .map(|(relation, synced, objects)| rt::RelatedObjects {
                relation: relation.clone(),
                synced: *synced,
                objects: objects.clone(),
            })
            .collect(),
        now: s.now.clone(),
        workload: match s.workload.as_str() {
            "disconnected" => rt::Connection::Disconnected,
            "connected" => rt::Connection::Connected,
            "unhealthy" => rt::Connection::Unhealthy,
            _ => rt::Connection::NotApplicable,
        },
    }
}

/// A runtime for conformance runs: default limits, compiled artifacts cached
/// in `<target>/capstan-test-cache` so a second run does not compile again.
pub fn test_runtime() -> anyhow::Result<Runtime> {
    let cache = target_dir().join("capstan-test-cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let config = RuntimeConfig {
        cache_dir: Some(cache),
        // Interpreted guests (Python, JS) parse and run far slower than Rust
        // in a debug-built host; the deadline is not what these tests check.
        deadline: std::time::Duration::from_secs(30),
        ..RuntimeConfig::default()
    };
    Ok(Runtime::new(config)?)
}

/// The answer of a plugin to a vector through the real runtime. Traps,
/// deadlines and invalid outcomes are failures of the plugin, not answers.
pub fn answer(plugin: &Plugin, vector: &Vector) -> Result<Answer, String> {
    match plugin.reconcile("conformance/vector", &snapshot_wit(&vector.snapshot)) {
        Ok(outcome) => Ok(Answer::Ok(outcome_json(&outcome))),
        Err(CallError::Transient { message, .. }) => Ok(Answer::Error {
            kind: "transient".into(),
            message,
        }),
        Err(CallError::Terminal { message, .. }) => Ok(Answer::Error {
            kind: "terminal".into(),
            message,
        }),
        Err(other) => Err(format!(
            "{}: {other}",
            vector
                .path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )),
    }
}

/// Load `component` and hold it to `suite`: `describe()` must equal
/// `describe.json` (with `name` replaced by `expected_name`), and every vector
/// must be answered as expected. Returns every failure, not just the first.
pub fn run_suite(
    runtime: &Runtime,
    suite: &Suite,
    component: &Path,
    expected_name: &str,
) -> Vec<String> {
    let plugin = match runtime.load_file(component) {
        Ok(p) => p,
        Err(e) => return vec![format!("{}: cannot load: {e}", component.display())],
    };
    let mut failures = Vec::new();
    let got = rt::info_to_json(plugin.info());
    let want = describe_named(suite, expected_name);
    if got != want {
        failures.push(format!(
            "{}: describe()\n  expected {want}\n  got      {got}",
            component.display()
        ));
    }
    for vector in &suite.vectors {
        let result = answer(&plugin, vector).and_then(|a| check(vector, &a));
        if let Err(why) = result {
            failures.push(format!("{}: {why}", component.display()));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_suite_loads_and_every_vector_judges_both_ways() {
        let suite = load_suite("hello").expect("hello suite");
        assert!(suite.vectors.len() >= 10);
        assert_eq!(suite.components, ["hello-rust", "hello-python", "hello-js"]);
        for v in &suite.vectors {
            // The expected answer passes; a different answer of either kind fails.
            let (right, wrong) = match &v.expect {
                Expect::Ok(o) => (
                    Answer::Ok(o.clone()),
                    Answer::Error {
                        kind: "terminal".into(),
                        message: "nope".into(),
                    },
                ),
                Expect::Error {
                    kind,
                    message_starts_with,
                } => (
                    Answer::Error {
                        kind: kind.clone(),
                        message: format!("{message_starts_with}: details"),
                    },
                    Answer::Error {
                        kind: kind.clone(),
                        message: "something else".into(),
                    },
                ),
            };
            assert_eq!(check(v, &right), Ok(()), "{}", v.path.display());
            assert!(check(v, &wrong).is_err(), "{}", v.path.display());
        }
    }

    #[test]
    fn an_outcome_differing_in_one_annotation_fails() {
        let suite = load_suite("hello").expect("hello suite");
        let v = suite
            .vectors
            .iter()
            .find(|v| v.path.ends_with("001-labelled-gets-greeting.json"))
            .expect("001");
        let Expect::Ok(mut got) = v.expect.clone() else {
            panic!("001 expects ok")
        };
        got["apply"][0]["metadata"]["annotations"]["capstan.dev/hello-greeting"] =
            json!("hello, World");
        assert!(check(v, &Answer::Ok(got)).is_err());
    }
}

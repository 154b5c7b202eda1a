//! `capstan plugin inspect|run`: look inside a component and run one reconcile.

use crate::runtime::{
    CallError, Connection, Outcome, Plugin, RelatedObjects, Runtime, RuntimeConfig, RuntimeError,
    Snapshot, info_to_json,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

/// Why a plugin command failed; [`PluginCmdError::exit_code`] maps it to the
/// process status.
#[derive(Debug, thiserror::Error)]
pub enum PluginCmdError {
    /// The plugin could not be loaded.
    #[error("{path}: {source}")]
    Load {
        /// The component file.
        path: String,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// The snapshot file could not be read or parsed.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// The snapshot file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The reconcile failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Output could not be rendered.
    #[error("cannot render output: {0}")]
    Render(String),
}

impl PluginCmdError {
    /// 2 when the file is not a usable component of this world (as the README
    /// documents for `plugin inspect`), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Load {
                source:
                    RuntimeError::NotAComponent(_)
                    | RuntimeError::Compile(_)
                    | RuntimeError::Incompatible { .. }
                    | RuntimeError::WrongWorld { .. }
                    | RuntimeError::Read { .. },
                ..
            } => 2,
            _ => 1,
        }
    }
}

fn load(runtime: &Runtime, path: &Path) -> Result<Plugin, PluginCmdError> {
    runtime
        .load_file(path)
        .map_err(|source| PluginCmdError::Load {
            path: path.display().to_string(),
            source,
        })
}

/// A runtime for one-shot commands: default limits, artifacts cached under
/// `cache_dir` when given.
pub fn command_runtime(cache_dir: Option<std::path::PathBuf>) -> Result<Runtime, PluginCmdError> {
    Runtime::new(RuntimeConfig {
        cache_dir,
        max_instances: 4,
        ..RuntimeConfig::default()
    })
    .map_err(|source| PluginCmdError::Load {
        path: String::new(),
        source,
    })
}

/// `capstan plugin inspect FILE`: digest, contract version and describe()
/// as YAML.
pub fn inspect(runtime: &Runtime, path: &Path) -> Result<String, PluginCmdError> {
    let plugin = load(runtime, path)?;
    let doc = json!({
        "file": path.display().to_string(),
        "digest": format!("sha256:{}", plugin.digest()),
        "wit": plugin.wit_version(),
        "describe": info_to_json(plugin.info()),
    });
    serde_yaml::to_string(&doc).map_err(|e| PluginCmdError::Render(e.to_string()))
}

/// A snapshot file: the WIT snapshot with objects as JSON values instead of
/// JSON text, so it can be written by hand.
#[derive(Debug, Deserialize)]
struct SnapshotFile {
    primary: Value,
    #[serde(default)]
    related: Vec<RelatedFile>,
    now: String,
    /// `not-applicable` (default), `disconnected`, `connected` or `unhealthy`.
    #[serde(default)]
    workload: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RelatedFile {
    relation: String,
    #[serde(default = "yes")]
    synced: bool,
    #[serde(default)]
    objects: Vec<Value>,
}

fn yes() -> bool {
    true
}

/// Read a snapshot file (see `examples/hello-rust/snapshot.json`).
pub fn read_snapshot(path: &Path) -> Result<Snapshot, PluginCmdError> {
    let err = |reason: String| PluginCmdError::Snapshot {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let f: SnapshotFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    Ok(Snapshot {
        primary: f.primary.to_string(),
        related: f
            .related
            .into_iter()
            .map(|r| RelatedObjects {
                relation: r.relation,
                synced: r.synced,
                objects: r.objects.iter().map(Value::to_string).collect(),
            })
            .collect(),
        now: f.now,
        workload: match f.workload.as_deref() {
            None | Some("not-applicable") => Connection::NotApplicable,
            Some("disconnected") => Connection::Disconnected,
            Some("connected") => Connection::Connected,
            Some("unhealthy") => Connection::Unhealthy,
            Some(other) => {
                return Err(err(format!(
                    "workload {other:?} is not one of not-applicable, disconnected, connected, unhealthy"
                )));
            }
        },
    })
}

/// The key (`namespace/name`) of a snapshot's primary, for log lines.
fn key_of(snapshot: &Snapshot) -> String {
    let v: Value = serde_json::from_str(&snapshot.primary).unwrap_or(Value::Null);
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match s("/metadata/namespace") {
        ns if ns.is_empty() => s("/metadata/name"),
        ns => format!("{ns}/{}", s("/metadata/name")),
    }
}

/// The outcome as YAML with objects parsed back into structures.
pub fn outcome_to_yaml(o: &Outcome) -> Result<String, PluginCmdError> {
    let parse =
        |t: &String| serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(t.clone()));
    let r = |r: &crate::runtime::ObjectRef| json!({"apiVersion": r.api_version, "kind": r.kind, "namespace": r.namespace, "name": r.name});
    let doc = json!({
        "apply": o.apply.iter().map(parse).collect::<Vec<_>>(),
        "status": o.status.iter().map(parse).collect::<Vec<_>>(),
        "delete": o.delete.iter().map(r).collect::<Vec<_>>(),
        "events": o.events.iter().map(|e| json!({
            "regarding": r(&e.regarding),
            "type": format!("{:?}", e.event_type),
            "reason": e.reason,
            "message": e.message,
        })).collect::<Vec<_>>(),
        "requeueAfterMs": o.requeue_after_ms,
        "workloadApply": o.workload_apply.iter().map(parse).collect::<Vec<_>>(),
        "workloadStatus": o.workload_status.iter().map(parse).collect::<Vec<_>>(),
        "workloadDelete": o.workload_delete.iter().map(r).collect::<Vec<_>>(),
    });
    serde_yaml::to_string(&doc).map_err(|e| PluginCmdError::Render(e.to_string()))
}

/// `capstan plugin run FILE --snapshot SNAP`: one reconcile, the outcome as
/// YAML.
pub fn run(runtime: &Runtime, path: &Path, snapshot: &Path) -> Result<String, PluginCmdError> {
    let plugin = load(runtime, path)?;
    let snapshot = read_snapshot(snapshot)?;
    let outcome = plugin.reconcile(&key_of(&snapshot), &snapshot)?;
    outcome_to_yaml(&outcome)
}

//! Shadow mode: a candidate version reconciles the serving version's snapshots, writes nothing, and differences are reported.
//!
//! After the serving version's call, the controller hands the same snapshot and the serving
//! result to [`Shadow::compare`]. The shadow call runs on the blocking pool in its own task
//! (the serving reconcile and its write do not wait for it), at most `capacity` at a time;
//! a snapshot arriving while the shadow is saturated is counted as `skipped`, never queued,
//! so a slow candidate cannot build up memory or slow the serving path. The two results are
//! normalised to JSON ([`outcome_json`]: objects parsed, so key order does not matter) and
//! compared; a difference is counted and logged with the key and an RFC 6902 patch from the
//! serving result to the shadow's. The shadow shares the plugin's memo with the serving
//! version (same plugin name), so a candidate that writes memo entries affects what the
//! serving version reads.

use super::{CallFailure, Reconcile};
use crate::cache::ObjectKey;
use crate::metrics::ShadowMetrics;
use crate::runtime::bindings::capstan::reconciler::types::{
    EventType, ObjectRef, Outcome, Snapshot,
};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Longest diff put in a log line; the rest is elided.
pub const MAX_DIFF_BYTES: usize = 4096;

/// How one shadow comparison ended (`capstan_shadow_reconciles_total{result}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShadowVerdict {
    /// Both versions gave the same outcome (or failed the same way).
    Same,
    /// The outcomes differ; the RFC 6902 patch from serving to shadow, as JSON text.
    Differ(String),
}

/// A candidate version running beside the serving one.
pub struct Shadow {
    plugin: Arc<dyn Reconcile>,
    label: String,
    metrics: ShadowMetrics,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("plugin", &self.plugin.info().name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// Shadow with `plugin` (`label` names it in logs, e.g. version and digest), at most
    /// `capacity` calls at once.
    pub fn new(
        plugin: Arc<dyn Reconcile>,
        label: impl Into<String>,
        metrics: ShadowMetrics,
        capacity: usize,
    ) -> Self {
        Self {
            plugin,
            label: label.into(),
            metrics,
            permits: Arc::new(Semaphore::new(capacity.max(1))),
        }
    }

    /// The candidate plugin.
    pub fn plugin(&self) -> &Arc<dyn Reconcile> {
        &self.plugin
    }

    /// Run the shadow on `snapshot` in the background and compare with the serving result.
    /// Must be called inside a tokio runtime.
    pub fn compare(
        self: &Arc<Self>,
        key: &ObjectKey,
        snapshot: Snapshot,
        serving: &Result<Outcome, CallFailure>,
    ) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.skipped.inc();
            return;
        };
        let serving = result_json(serving);
        let this = Arc::clone(self);
        let key = key.to_string();
        tokio::spawn(async move {
            let plugin = Arc::clone(&this.plugin);
            let k = key.clone();
            let shadow = tokio::task::spawn_blocking(move || plugin.reconcile(&k, &snapshot))
                .await
                .unwrap_or_else(|e| {
                    Err(CallFailure::Fault(super::Fault::Trap(format!(
                        "shadow call panicked: {e}"
                    ))))
                });
            drop(permit);
            match verdict(&serving, &result_json(&shadow)) {
                ShadowVerdict::Same => {
                    this.metrics.same.inc();
                }
                ShadowVerdict::Differ(diff) => {
                    this.metrics.differ.inc();
                    tracing::warn!(
                        plugin = %this.plugin.info().name,
                        shadow = %this.label,
                        key = %key,
                        diff = %diff,
                        "shadow outcome differs from the serving version"
                    );
                }
            }
        });
    }
}

/// Compare two normalised results.
pub fn verdict(serving: &Value, shadow: &Value) -> ShadowVerdict {
    if serving == shadow {
        return ShadowVerdict::Same;
    }
    let patch = json_patch::diff(serving, shadow);
    let mut text = serde_json::to_string(&patch).unwrap_or_else(|e| format!("(no diff: {e})"));
    if text.len() > MAX_DIFF_BYTES {
        let mut cut = MAX_DIFF_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...(truncated)");
    }
    ShadowVerdict::Differ(text)
}

/// A call's result as JSON: `{"outcome": ..}` or `{"error": "<class>: <message>"}`.
fn result_json(r: &Result<Outcome, CallFailure>) -> Value {
    match r {
        Ok(o) => json!({ "outcome": outcome_json(o) }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn object_ref_json(r: &ObjectRef) -> Value {
    json!({"apiVersion": r.api_version, "kind": r.kind, "namespace": r.namespace, "name": r.name})
}

fn objects(texts: &[String]) -> Value {
    texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())))
        .collect()
}

/// An outcome as JSON with the objects parsed (so key order does not matter).
pub fn outcome_json(o: &Outcome) -> Value {
    let events: Vec<Value> = o
        .events
        .iter()
        .map(|e| {
            json!({
                "regarding": object_ref_json(&e.regarding),
                "type": match e.event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
                "reason": e.reason,
                "message": e.message,
            })
        })
        .collect();
    json!({
        "apply": objects(&o.apply),
        "status": objects(&o.status),
        "delete": o.delete.iter().map(object_ref_json).collect::<Vec<_>>(),
        "events": events,
        "requeueAfterMs": o.requeue_after_ms,
        "workloadApply": objects(&o.workload_apply),
        "workloadStatus": objects(&o.workload_status),
        "workloadDelete": o.workload_delete.iter().map(object_ref_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: &str) -> Outcome {
        Outcome {
            apply: Vec::new(),
            status: vec![status.to_string()],
            delete: Vec::new(),
            events: Vec::new(),
            requeue_after_ms: None,
            workload_apply: Vec::new(),
            workload_status: Vec::new(),
            workload_delete: Vec::new(),
        }
    }

    #[test]
    fn equal_outcomes_are_the_same_whatever_the_key_order() {
        let a = result_json(&Ok(outcome(r#"{"kind":"W","status":{"a":1,"b":2}}"#)));
        let b = result_json(&Ok(outcome(r#"{"status":{"b":2,"a":1},"kind":"W"}"#)));
        assert_eq!(verdict(&a, &b), ShadowVerdict::Same);
    }

    #[test]
    fn a_difference_is_reported_as_a_patch_naming_the_path() {
        let a = result_json(&Ok(outcome(r#"{"kind":"W","status":{"version":"1"}}"#)));
        let b = result_json(&Ok(outcome(r#"{"kind":"W","status":{"version":"2"}}"#)));
        let ShadowVerdict::Differ(diff) = verdict(&a, &b) else {
            panic!("no difference found");
        };
        assert!(diff.contains("/outcome/status/0/status/version"), "{diff}");
        assert!(diff.contains("\"2\""), "{diff}");
        let failed = result_json(&Err(CallFailure::Transient("later".into())));
        let ShadowVerdict::Differ(diff) = verdict(&a, &failed) else {
            panic!("a failure equalled an outcome");
        };
        assert!(diff.contains("transient error: later"), "{diff}");
    }

    #[test]
    fn long_diffs_are_truncated_on_a_char_boundary() {
        let a = json!({"x": "é".repeat(5000)});
        let b = json!({"x": "è".repeat(5000)});
        let ShadowVerdict::Differ(diff) = verdict(&a, &b) else {
            panic!("no difference found");
        };
        assert!(diff.len() <= MAX_DIFF_BYTES + 20);
        assert!(diff.ends_with("...(truncated)"));
    }
}

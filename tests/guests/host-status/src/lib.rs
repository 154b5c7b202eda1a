//! Test guest `host-status`: writes `status.ready` and `status.size` (from `spec.size`) of Widgets; no-op when equal.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};
use serde_json::{Value, json};

/// The `host-status` test plugin.
#[derive(Debug)]
pub struct HostStatus;

impl Reconciler for HostStatus {
    fn describe() -> PluginInfo {
        let widget = Gvk::new("test.capstan.dev", "v1", "Widget");
        PluginInfo::new("host-status", "0.1.0", widget.clone())
            .permit(widget, Verbs::PATCH_STATUS)
            .concurrency(2)
    }

    fn reconcile(_ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let w: Value = snapshot.primary()?;
        let mut outcome = Outcome::new();
        let want = json!({"ready": true, "size": w["spec"]["size"]});
        if w["status"]["ready"] == want["ready"] && w["status"]["size"] == want["size"] {
            return Ok(outcome);
        }
        outcome.status(&json!({
            "apiVersion": "test.capstan.dev/v1",
            "kind": "Widget",
            "metadata": {"name": w["metadata"]["name"], "namespace": w["metadata"]["namespace"]},
            "status": want,
        }))?;
        Ok(outcome)
    }
}

capstan_sdk::export!(HostStatus);

//! Test guest `big-outcome`: returns a 10 MB object (over the host's outcome cap).

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `big-outcome` test plugin.
#[derive(Debug)]
pub struct BigOutcome;

impl Reconciler for BigOutcome {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-big-outcome", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let _ = ctx;
        let mut out = Outcome::new();
        out.apply(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "default"},
            "data": {"blob": "x".repeat(10 * 1000 * 1000)},
        }))?;
        Ok(out)
    }
}

capstan_sdk::export!(BigOutcome);

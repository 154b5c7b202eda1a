//! Test guest `bad-json`: returns an `apply` entry that is not JSON.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `bad-json` test plugin.
#[derive(Debug)]
pub struct BadJson;

impl Reconciler for BadJson {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-bad-json", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let _ = ctx;
        let mut out = Outcome::new();
        out.apply_json(r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "#.to_owned());
        Ok(out)
    }
}

capstan_sdk::export!(BadJson);

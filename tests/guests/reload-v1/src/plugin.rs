// The reload test plugin, shared by reload-v1, reload-v2 and reload-describe-trap (each
// defines VERSION_CONFIGS and DESCRIBE_TRAPS before including this file). Every reconcile
// writes the stamp "<version>:<spec.n>" twice: as annotation reload.capstan.dev/stamp (an
// object patch) and as status.stamp (a status patch), so a watcher of the Widgets can check
// that both writes of one reconcile came from the same version.

use capstan_sdk::{
    Context, Error, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler, RelationSelector, Snapshot,
    Verbs,
};
use serde_json::{Value, json};
use std::time::Duration;

/// The version stamped into every write.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The annotation and the ConfigMap label of this plugin.
pub const STAMP: &str = "reload.capstan.dev/stamp";
/// The label naming the Widget a ConfigMap belongs to (v2's relation and watch).
pub const WIDGET_LABEL: &str = "reload.capstan.dev/widget";

/// The reload test plugin.
#[derive(Debug)]
pub struct ReloadTest;

impl Reconciler for ReloadTest {
    fn describe() -> PluginInfo {
        if DESCRIBE_TRAPS {
            panic!("describe() traps in this build");
        }
        let widget = Gvk::new("test.capstan.dev", "v1", "Widget");
        let info = PluginInfo::new("reload-test", VERSION, widget.clone())
            .permit(widget, Verbs::PATCH | Verbs::PATCH_STATUS)
            .concurrency(4);
        if !VERSION_CONFIGS {
            return info;
        }
        let cm = Gvk::new("", "v1", "ConfigMap");
        info.watch(cm.clone(), KeyMapping::Label(WIDGET_LABEL.into()))
            .relation("configs", cm, RelationSelector::Label(WIDGET_LABEL.into()))
    }

    fn reconcile(_ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let w: Value = snapshot.primary()?;
        let n = w["spec"]["n"].as_u64().unwrap_or(0);
        let stamp = format!("{VERSION}:{n}");
        let meta = json!({"name": w["metadata"]["name"], "namespace": w["metadata"]["namespace"]});
        let mut outcome = Outcome::new();
        if w["metadata"]["annotations"][STAMP].as_str() != Some(stamp.as_str()) {
            let mut m = meta.clone();
            m["annotations"] = json!({ STAMP: stamp });
            outcome.apply(&json!({
                "apiVersion": "test.capstan.dev/v1", "kind": "Widget", "metadata": m,
            }))?;
        }
        let mut want = json!({"version": VERSION, "n": n, "stamp": stamp});
        if VERSION_CONFIGS {
            want["configs"] = json!(snapshot.related_json("configs").len());
        }
        if w["status"] != want {
            outcome.status(&json!({
                "apiVersion": "test.capstan.dev/v1", "kind": "Widget", "metadata": meta,
                "status": want,
            }))?;
        }
        // Keep every Widget reconciling continuously (the load of the reload test).
        outcome.requeue_after(Duration::from_secs(1));
        Ok(outcome)
    }
}

capstan_sdk::export!(ReloadTest);

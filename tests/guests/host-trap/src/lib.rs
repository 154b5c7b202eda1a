//! Test guest `host-trap`: traps (Rust panic -> `unreachable`) on Widgets named `bad`; no-op otherwise.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};
use serde_json::Value;

/// The `host-trap` test plugin.
#[derive(Debug)]
pub struct HostTrap;

impl Reconciler for HostTrap {
    fn describe() -> PluginInfo {
        let widget = Gvk::new("test.capstan.dev", "v1", "Widget");
        PluginInfo::new("host-trap", "0.1.0", widget.clone()).permit(widget, Verbs::PATCH)
    }

    fn reconcile(_ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let w: Value = snapshot.primary()?;
        if w["metadata"]["name"] == "bad" {
            panic!("host-trap: refusing to reconcile widget bad");
        }
        Ok(Outcome::new())
    }
}

capstan_sdk::export!(HostTrap);

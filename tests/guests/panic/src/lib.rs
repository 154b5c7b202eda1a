//! Test guest `panic`: panics: Rust prints the message to stderr, then traps.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `panic` test plugin.
#[derive(Debug)]
pub struct Panic;

impl Reconciler for Panic {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-panic", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let _ = ctx;
        panic!("hostile guest panics on purpose")
    }
}

capstan_sdk::export!(Panic);

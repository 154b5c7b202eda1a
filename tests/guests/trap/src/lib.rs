//! Test guest `trap`: aborts: the `unreachable` instruction traps.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `trap` test plugin.
#[derive(Debug)]
pub struct Trap;

impl Reconciler for Trap {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-trap", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        ctx.info("about to trap");
        std::process::abort()
    }
}

capstan_sdk::export!(Trap);

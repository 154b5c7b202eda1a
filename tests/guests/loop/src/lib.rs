//! Test guest `loop`: never returns: only the epoch deadline stops it.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `loop` test plugin.
#[derive(Debug)]
pub struct Loop;

impl Reconciler for Loop {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-loop", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let _ = ctx;
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

capstan_sdk::export!(Loop);

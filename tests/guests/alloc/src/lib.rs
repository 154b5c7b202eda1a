//! Test guest `alloc`: allocates and touches memory without bound.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `alloc` test plugin.
#[derive(Debug)]
pub struct Alloc;

impl Reconciler for Alloc {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-alloc", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let _ = ctx;
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xa5; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

capstan_sdk::export!(Alloc);

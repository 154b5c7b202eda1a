//! Test guest `memo`: counts its reconciles in the memo and returns the count as requeue-after-ms.

use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};

/// The `memo` test plugin.
#[derive(Debug)]
pub struct Memo;

impl Reconciler for Memo {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-memo", "0.1.0", cm.clone()).permit(cm, Verbs::PATCH)
    }

    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn reconcile(ctx: &Context<'_>, _snapshot: &Snapshot) -> Result<Outcome, Error> {
        let count = ctx
            .memo_get("count")
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_le_bytes)
            + 1;
        ctx.memo_set("count", &count.to_le_bytes());
        // Over the host's per-value cap: must be ignored, not stored.
        ctx.memo_set("too-big", &vec![0; 2 << 20]);
        if ctx.memo_get("too-big").is_some() {
            return Err(Error::terminal("oversize memo value was stored"));
        }
        ctx.info(format!("reconcile number {count}"));
        let mut out = Outcome::new();
        out.requeue_after(std::time::Duration::from_millis(count));
        Ok(out)
    }
}

capstan_sdk::export!(Memo);

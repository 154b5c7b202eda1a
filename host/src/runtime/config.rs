//! Runtime configuration: per-call limits, pool sizes, the artifact cache directory.

use crate::cloud::Cloud;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the runtime runs plugins. `Default` suits a manager with a handful of
/// plugins and tens of concurrent reconciles.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Deadline of one call (`describe` or `reconcile`): wall time spent in
    /// the guest, not counting the time inside host operations (crypto,
    /// cloud; those have their own bounds, see `hostcalls`). Enforced with
    /// epoch interruption; precision is one [`Self::epoch_tick`].
    pub deadline: Duration,
    /// Period of the background thread that advances the engine's epoch.
    pub epoch_tick: Duration,
    /// Cap on each instance's linear memory, in bytes.
    pub memory_limit: u64,
    /// Fuel per call; `None` disables fuel metering (it costs about 50% of
    /// reconcile time, see `../shared/notes/wasm-runtime.md`). Changing it
    /// changes the generated code, hence the artifact cache key.
    pub fuel: Option<u64>,
    /// Instances that may be live at once (concurrent calls across all
    /// plugins); sizes the pooling allocator, which reserves address space
    /// for them up front.
    pub max_instances: u32,
    /// Directory of compiled artifacts (`<digest>-<engine>.cwasm`); `None`
    /// compiles every load. It must be as trusted as the `capstan` binary:
    /// artifacts are native code.
    pub cache_dir: Option<PathBuf>,
    /// Cap on the total size of one outcome's JSON texts and events.
    pub max_outcome_bytes: usize,
    /// Cap on one memo value; a larger `set` is ignored (and logged).
    pub memo_max_value_bytes: usize,
    /// Cap on a plugin's memo; older entries are evicted beyond it.
    pub memo_max_total_bytes: usize,
    /// The infrastructure API behind the `cloud` capability; `None`: every cloud call
    /// of a plugin that declared it fails with "no cloud is configured on this host".
    pub cloud: Option<Arc<dyn Cloud>>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("deadline", &self.deadline)
            .field("epoch_tick", &self.epoch_tick)
            .field("memory_limit", &self.memory_limit)
            .field("fuel", &self.fuel)
            .field("max_instances", &self.max_instances)
            .field("cache_dir", &self.cache_dir)
            .field("max_outcome_bytes", &self.max_outcome_bytes)
            .field("memo_max_value_bytes", &self.memo_max_value_bytes)
            .field("memo_max_total_bytes", &self.memo_max_total_bytes)
            .field("cloud", &self.cloud.is_some())
            .finish()
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            epoch_tick: Duration::from_millis(1),
            memory_limit: 64 << 20,
            fuel: None,
            max_instances: 128,
            cache_dir: None,
            max_outcome_bytes: 8 << 20,
            memo_max_value_bytes: 1 << 20,
            memo_max_total_bytes: 16 << 20,
            cloud: None,
        }
    }
}

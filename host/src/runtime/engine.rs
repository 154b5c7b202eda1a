//! The one wasmtime Engine and the background thread that advances its epoch.

use super::{RuntimeConfig, RuntimeError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// Set to `1`, the engine writes `/tmp/perf-<pid>.map` naming every guest
/// function it compiles or loads, so `perf report` (or a script over `perf
/// script`'s addresses) attributes samples in plugin code compiled in memory
/// to the plugin's function names. Code mapped from the artifact cache is
/// named by the artifact's own symbol table instead. Off by default: the map
/// grows with every load.
pub const PERF_MAP_ENV: &str = "CAPSTAN_PERF_MAP";

/// Core instances a component may hold: a wit-component Rust guest has its
/// main module plus shim/fixup modules; interpreters link many more
/// (componentize-py 0.25: 38, libc + libpython + extension modules + shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 64;

/// Bytes of a freed linear memory (and of a table) the pool resets in place
/// and keeps resident for the next instance instead of handing them back
/// to the kernel, where the kernel has `PAGEMAP_SCAN` (Linux 6.7+): then
/// only the pages the last instance dirtied are reset (copied back from the
/// memory image or zeroed), so a fresh instance starts with its image, stack
/// and heap already faulted in. Dirty pages past this bound are reset with
/// `madvise`. Without `PAGEMAP_SCAN` keep-resident would `memset` the whole
/// bound on every reset, so it stays off (`madvise` only, wasmtime's default).
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Build the engine: component model, epoch interruption, optional fuel, and
/// a pooling allocator sized for `max_instances` live instances.
pub(crate) fn build(cfg: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let mut pool = PoolingAllocationConfig::new();
    let n = cfg.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        // One memory for a Rust guest; interpreters may bring a few.
        .total_memories(n.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(usize::try_from(cfg.memory_limit).unwrap_or(usize::MAX))
        // Keep a few freed slots warm so a plugin's next instance reuses a
        // slot that already has its memory image mapped.
        .max_unused_warm_slots(n.min(16));
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
    }

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(cfg.fuel.is_some())
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1") {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every tick until dropped, so a guest's
/// deadline (counted in ticks) is enforced without the guest's help.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: std::time::Duration) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("capstan-epoch".into())
            .spawn(move || {
                // Tick by elapsed wall time, not by wake-ups: on a busy machine
                // a sleep overshoots, and deadlines must not stretch with it.
                let start = std::time::Instant::now();
                let mut ticked: u128 = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let due = start.elapsed().as_nanos() / tick.as_nanos().max(1);
                    while ticked < due {
                        engine.increment_epoch();
                        ticked += 1;
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

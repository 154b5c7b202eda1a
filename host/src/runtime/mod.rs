//! The WebAssembly runtime: one engine, plugins, and sandboxed per-call stores.
//!
//! [`Runtime`] owns the wasmtime [`wasmtime::Engine`] (component model, epoch
//! interruption driven by a background ticker, pooling allocator), the linker
//! with the contract's capabilities, the on-disk artifact cache and the memos.
//! [`Runtime::load`] turns a component file into a [`Plugin`]: compiled (or
//! loaded from the cache), checked to be a `capstan:reconciler@0.1.0` world,
//! pre-instantiated, described and validated. [`Plugin::reconcile`] runs one
//! call in a fresh instance under the per-call limits.

mod artifacts;
pub mod bindings;
mod capabilities;
mod config;
pub mod crypto;
mod engine;
mod error;
mod hostcalls;
mod plugin;
mod store;
pub mod validate;

pub use artifacts::LoadStats;
pub use bindings::capstan::reconciler::types::{
    Capabilities, Connection, Event, EventType, FieldPair, Gvk, KeyMapping, ObjectRef, Outcome,
    Permission, PluginInfo, ReconcileError, RelatedObjects, Relation, RelationSelector, Snapshot,
    Target, Verbs, Watch,
};
pub use capabilities::{MAX_LOG_LINES_PER_CALL, MAX_LOG_MESSAGE_BYTES, MAX_MEMO_KEY_BYTES, Memo};
pub use config::RuntimeConfig;
pub use error::{CallError, RuntimeError};
pub use hostcalls::{
    CRYPTO_OPERATIONS, HostCallMetrics, MAX_CLOUD_ARG_BYTES, MAX_CRYPTO_OPS_PER_CALL, NO_CLOUD,
};
pub use plugin::{Plugin, ReconcileTimings, info_to_json};

use std::path::Path;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// The contract version this host serves.
pub const WIT_VERSION: &str = "0.1.0";
/// The contract's package name.
pub const WIT_PACKAGE: &str = "capstan:reconciler";

/// The runtime: cheap to clone, `Send + Sync`; plugins keep it alive.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    pub(crate) deadline_ticks: u64,
    /// Period of the epoch ticker (what one of `deadline_ticks` is worth).
    pub(crate) epoch_tick: std::time::Duration,
    linker: Linker<store::StoreData>,
    artifacts: artifacts::ArtifactCache,
    memos: capabilities::MemoRegistry,
    pub(crate) host_metrics: HostCallMetrics,
    _ticker: engine::EpochTicker,
}

impl std::fmt::Debug for RuntimeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Build the engine, link the capabilities, start the epoch ticker and
    /// open the artifact cache.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        store::link(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("cannot link capabilities: {e:#}")))?;
        let tick = config.epoch_tick.max(std::time::Duration::from_micros(100));
        // Ticks until the deadline, plus one because the current tick may be
        // nearly over when the call starts.
        let deadline_ticks = u64::try_from(config.deadline.as_nanos().div_ceil(tick.as_nanos()))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let artifacts = artifacts::ArtifactCache::new(config.cache_dir.clone(), &engine)?;
        let ticker = engine::EpochTicker::start(engine.clone(), tick)?;
        let memos = capabilities::MemoRegistry::new(
            config.memo_max_value_bytes,
            config.memo_max_total_bytes,
        );
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                deadline_ticks,
                epoch_tick: tick,
                linker,
                artifacts,
                memos,
                host_metrics: HostCallMetrics::default(),
                _ticker: ticker,
            }),
        })
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// How many loads compiled and how many came from the artifact cache.
    pub fn load_stats(&self) -> LoadStats {
        self.inner.artifacts.stats()
    }

    /// The memo of plugin `name` (what its reconciles see through `memo`).
    pub fn memo(&self, name: &str) -> Arc<Memo> {
        self.inner.memos.for_plugin(name)
    }

    /// Crypto operations (`generate_key_ecdsa`, `generate_key_rsa`, `self_signed`, `sign`,
    /// `kubeconfig`) performed for plugin `plugin` so far.
    pub fn crypto_operations(&self, plugin: &str, operation: &str) -> u64 {
        self.inner.host_metrics.crypto_operations(plugin, operation)
    }

    /// Host calls of `plugin` refused because it did not declare `capability`.
    pub fn capability_refusals(&self, plugin: &str, capability: &str) -> u64 {
        self.inner.host_metrics.refusals(plugin, capability)
    }

    /// Register the runtime's metric families (`capstan_crypto_operations_total`,
    /// `capstan_capability_refusals_total`) in the manager's registry.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.host_metrics.register(registry);
    }

    /// Load the component file at `path`; see [`Runtime::load`].
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Plugin, RuntimeError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    /// Load a component: check the bytes are a component, compile it (or
    /// load the cached artifact), check it is a `capstan:reconciler@0.1.0`
    /// world, pre-instantiate it, call `describe()` and validate the result.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, RuntimeError> {
        check_header(bytes)?;
        let digest = sha256_hex(bytes);
        let rt = &self.inner;
        let component = rt.artifacts.load(&rt.engine, &digest, bytes)?;

        let mut wit_version = None;
        for (name, _) in component.component_type().imports(&rt.engine) {
            let Some(rest) = name
                .strip_prefix(WIT_PACKAGE)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let version = rest.split_once('@').map_or("(unversioned)", |(_, v)| v);
            if version != WIT_VERSION {
                return Err(RuntimeError::Incompatible {
                    found: format!("{WIT_PACKAGE}@{version}"),
                    served: WIT_VERSION,
                });
            }
            wit_version = Some(format!("{WIT_PACKAGE}@{version}"));
        }
        let wrong_world = |reason: String| RuntimeError::WrongWorld {
            reason,
            served: WIT_VERSION,
        };
        let wit_version = wit_version
            .ok_or_else(|| wrong_world(format!("it imports nothing from {WIT_PACKAGE}")))?;
        let instance_pre = rt
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("{e:#}")))?;
        let pre = bindings::ReconcilerPre::new(instance_pre)
            .map_err(|e| wrong_world(format!("{e:#}")))?;

        let label = format!("sha256:{}", &digest[..12]);
        let (info, reconcile) = plugin::describe(&self.inner, &pre, &label)?;
        validate::validate_info(&info).map_err(|reason| RuntimeError::InvalidInfo {
            plugin: info.name.clone(),
            reason,
        })?;
        let memo = rt.memos.for_plugin(&info.name);
        rt.host_metrics.init_plugin(&info.name);
        tracing::info!(plugin = %info.name, version = %info.version, %digest, "plugin loaded");
        Ok(Plugin::new(
            self.inner.clone(),
            pre,
            reconcile,
            info,
            digest,
            wit_version,
            memo,
        ))
    }
}

/// Reject what is not a component before handing bytes to the compiler.
fn check_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(RuntimeError::NotAComponent(
            "a precompiled artifact (.cwasm); give the .wasm component".into(),
        ));
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(RuntimeError::NotAComponent(
            "a core WebAssembly module; build for wasm32-wasip2 (or wrap with `wasm-tools component new`)".into(),
        )),
        _ => Err(RuntimeError::NotAComponent("not a WebAssembly file".into())),
    }
}

/// The sha256 of `bytes`, lowercase hex: a component's identity (what the artifact cache,
/// `capstan plugin inspect` and the reloader name it by).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_what_the_file_is() {
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        let comp = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_header(&comp).is_ok());
        assert!(
            check_header(&core)
                .unwrap_err()
                .to_string()
                .contains("core WebAssembly module")
        );
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .to_string()
                .contains("not a WebAssembly")
        );
        assert!(check_header(b"").is_err());
    }
}

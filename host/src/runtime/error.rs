//! Typed errors of the runtime: loading a plugin, and calling one.

use std::path::PathBuf;

/// Why the runtime could not start or a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be built from the configuration.
    #[error("cannot build the wasm engine: {0}")]
    Engine(String),
    /// A plugin file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component (a core module, a
    /// precompiled artifact, or not WebAssembly at all).
    #[error("not a component: {0}")]
    NotAComponent(String),
    /// The component does not compile.
    #[error("component does not compile: {0}")]
    Compile(String),
    /// The component targets another version of the contract.
    #[error("incompatible plugin: built for {found}, this host serves capstan:reconciler@{served}")]
    Incompatible {
        /// The contract version the component was built against.
        found: String,
        /// The version this host serves.
        served: &'static str,
    },
    /// The component is not a `capstan:reconciler` world: missing exports,
    /// wrong signatures, or imports this host does not grant.
    #[error("not a capstan:reconciler@{served} component: {reason}")]
    WrongWorld {
        /// What is wrong.
        reason: String,
        /// The version this host serves.
        served: &'static str,
    },
    /// `describe()` failed (trap, deadline, memory).
    #[error("describe() failed: {0}")]
    Describe(#[source] CallError),
    /// `describe()` returned a plugin-info that does not validate.
    #[error("plugin {plugin}: invalid plugin-info: {reason}")]
    InvalidInfo {
        /// The name the plugin gave.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The on-disk artifact cache could not be used.
    #[error("artifact cache {path}: {reason}")]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Why one call into a plugin failed. Every variant fails that reconcile
/// only: the instance is dropped and the host stays healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The plugin returned a reconcile error: retry with backoff.
    #[error("plugin {plugin}: transient error: {message}")]
    Transient {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin returned a terminal error: do not retry until the input
    /// changes.
    #[error("plugin {plugin}: terminal error: {message}")]
    Terminal {
        /// The plugin.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The guest trapped (unreachable, a Rust panic, an out-of-bounds access).
    /// `message` includes what the guest wrote to stderr (a panic message).
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The trap and the guest's stderr tail.
        message: String,
    },
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its deadline of {deadline_ms} ms")]
    DeadlineExceeded {
        /// The plugin.
        plugin: String,
        /// The configured deadline.
        deadline_ms: u64,
    },
    /// The call used up its fuel.
    #[error("plugin {plugin} ran out of fuel ({fuel} units)")]
    FuelExhausted {
        /// The plugin.
        plugin: String,
        /// The configured fuel per call.
        fuel: u64,
    },
    /// The guest tried to grow its linear memory past the cap.
    #[error("plugin {plugin} exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimitExceeded {
        /// The plugin.
        plugin: String,
        /// The configured cap.
        limit_bytes: u64,
    },
    /// The outcome breaks the contract (bad JSON, missing identity, too big).
    #[error("plugin {plugin} returned an invalid outcome: {reason}")]
    InvalidOutcome {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// No instance could be made (e.g. every pooled slot is in use).
    #[error("plugin {plugin}: cannot instantiate: {reason}")]
    Instantiate {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
}

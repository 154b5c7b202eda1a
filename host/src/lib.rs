//! Capstan: a Kubernetes controller manager whose reconcilers are WebAssembly components.
//!
//! Data flows through the modules in this order (docs/architecture.md explains
//! each concept once, in the same order):
//!
//! 1. [`runtime`]: the wasmtime engine, plugins (component + pre-instantiated
//!    linker + digest + validated `describe()`), per-call stores with limits.
//! 2. [`cache`]: one shared watcher + store per kind, JSON kept once, owner and
//!    cluster-name indexes, readiness.
//! 3. [`watch`]: cache events -> primary keys per plugin, from its declarations.
//! 4. [`queue`]: client-go workqueue semantics (dedup, dirty/processing, backoff,
//!    bucket, delayed adds, terminal keys).
//! 5. [`controller`]: N workers per plugin: key -> snapshot -> plugin -> writer -> queue.
//! 6. [`writer`]: diff against the cache, one patch per object (+ status),
//!    permissions, optimistic concurrency, the client's QPS limiter and REST metrics.
//! 7. [`metrics`] and [`telemetry`]: controller-runtime metrics, spans and logs.
//! 8. [`manager`]: the composition root behind `capstan run`; [`leader`]: its Lease-based
//!    leader election.
//! 9. [`reload`]: the plugin directory watched while running: versions swapped,
//!    added, removed and shadowed without dropping caches.
//!
//! [`cli`] holds the other subcommands' implementations (the binary only parses).
pub mod runtime;

pub mod cache;
pub mod cloud;
pub mod clustercache;
pub mod controller;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod queue;
pub mod reload;
pub mod telemetry;
pub mod watch;
pub mod writer;

pub mod cli;
/// `capstan plugin new`: scaffold a reconciler in Rust, Python or JavaScript.
pub mod scaffold;
/// `capstan simulate`: Cluster API's scale test in one process, with its report and plots.
pub mod simulate;

//! Capstan: a Kubernetes controller manager whose reconcilers are WebAssembly components.
//!
//! Data flows through the modules in this order (docs/architecture.md explains
//! each concept once, in the same order):
//!
//! 1. [`runtime`]: the wasmtime engine, plugins (component + pre-instantiated
//!    linker + digest + validated `describe()`), per-call stores with limits.
pub mod runtime;
/// The `capstan` subcommands' implementations (the binary only parses).
pub mod cli;
pub mod cache;
pub mod controller;
pub mod manager;
pub mod metrics;
pub mod queue;
pub mod telemetry;
pub mod watch;
pub mod writer;

//! The WebAssembly runtime: one engine, plugins, and sandboxed per-call stores.

pub mod bindings;

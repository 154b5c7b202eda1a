//! Shared helpers for Capstan's integration and component tests.

pub mod controlplane;
pub mod script;
pub mod server;
pub mod transcript;

//! Shared helpers for Capstan's integration and component tests.

pub mod host;

//! Shared helpers for Capstan's integration and component tests.

pub mod controlplane;
pub mod script;
pub mod server;
pub mod transcript;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set (relative to the
/// workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// The directory of built guest components: `CAPSTAN_GUEST_DIR` when set,
/// else `<target>/wasm32-wasip2/release`.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("CAPSTAN_GUEST_DIR")
        .map_or_else(|| target_dir().join("wasm32-wasip2/release"), PathBuf::from)
}

/// The built component of guest crate `crate_name` (release, wasm32-wasip2).
/// Fails with a message naming `make guests` when it has not been built.
pub fn guest(crate_name: &str) -> anyhow::Result<PathBuf> {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let path = guest_dir().join(file);
    if !path.is_file() {
        anyhow::bail!(
            "guest component {} is missing: run `make guests` first (it builds every guest crate for wasm32-wasip2)",
            path.display()
        );
    }
    Ok(path)
}

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(rel)
}

pub mod conformance;
pub mod e2e;
pub mod host;

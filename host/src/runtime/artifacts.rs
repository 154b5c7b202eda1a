//! Compiled-artifact cache on disk, keyed by component digest and engine settings.

use super::RuntimeError;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How plugins were loaded since the runtime started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) compiles: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
}

/// Load counters of a [`super::Runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Components compiled with Cranelift.
    pub compiles: u64,
    /// Components loaded from the artifact cache without compiling.
    pub cache_hits: u64,
}

/// The artifact cache: `<dir>/<sha256>-<engine key>.cwasm`.
#[derive(Debug)]
pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
    pub(crate) counters: Counters,
}

/// A stable key of everything that makes an artifact loadable by this
/// engine: the wasmtime version and its compatibility hash (target, flags,
/// tunables such as epochs and fuel). A mismatch only costs a recompile.
fn engine_key(engine: &Engine) -> String {
    // `DefaultHasher::new()` uses fixed keys: stable for a given build of
    // the host, which is all a key of its own artifacts needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("wasmtime48.0.8-{:016x}", h.finish())
}

impl ArtifactCache {
    pub(crate) fn new(dir: Option<PathBuf>, engine: &Engine) -> Result<Self, RuntimeError> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|e| RuntimeError::Cache {
                path: d.clone(),
                reason: format!("cannot create: {e}"),
            })?;
        }
        Ok(Self {
            dir,
            engine_key: engine_key(engine),
            counters: Counters::default(),
        })
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    pub(crate) fn stats(&self) -> LoadStats {
        LoadStats {
            compiles: self.counters.compiles.load(Ordering::Relaxed),
            cache_hits: self.counters.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// The compiled component for `bytes` (whose sha256 is `digest`): from
    /// the cache when present and loadable, else compiled and stored.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, RuntimeError> {
        let Some(path) = self.path(digest) else {
            return self.compile(engine, bytes);
        };
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(c) => {
                    self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(digest, path = %path.display(), "loaded compiled artifact from cache");
                    return Ok(c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unloadable cached artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let serialized = engine
            .precompile_component(bytes)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        self.counters.compiles.fetch_add(1, Ordering::Relaxed);
        store(&path, &serialized)?;
        // Load what was just written, so the first load and a restart run the
        // same code path.
        deserialize(engine, &path).map_err(|e| RuntimeError::Cache {
            path: path.clone(),
            reason: format!("cannot load the artifact just written: {e}"),
        })
    }

    fn compile(&self, engine: &Engine, bytes: &[u8]) -> Result<Component, RuntimeError> {
        let c =
            Component::new(engine, bytes).map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        self.counters.compiles.fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }
}

/// Write atomically: a temporary file in the same directory, then rename.
fn store(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let err = |reason: String| RuntimeError::Cache {
        path: path.to_owned(),
        reason,
    };
    // Unique per write, not only per process: threads of one host (and tests
    // in one binary) may compile the same component at once, and two writers
    // sharing a temporary file interleave into a corrupt artifact.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| err(format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot rename into place: {e}"))
    })
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: `deserialize_file` maps the file and runs native code from it,
    // so (1) the file must have been produced by `Engine::precompile_component`
    // of a compatible engine, and (2) it must not change while mapped.
    // (1): only `store` above writes this directory, naming each file by the
    // component's sha256 and this engine's compatibility key, and wasmtime
    // itself checks the artifact's header, version and engine settings (an
    // error, not UB, on mismatch or truncation). (2): `store` never writes a
    // file in place: it writes a uniquely named temporary file and renames it
    // over the old name, so a mapped artifact's inode is never modified, and
    // a removed one stays alive while mapped. The cache directory is
    // documented as trusted like the binary (`RuntimeConfig::cache_dir`);
    // another process truncating a mapped file in place would be fatal
    // (SIGBUS), as would rewriting the binary. Mapping (instead of reading
    // into memory) saves a copy per load and lets copy-on-write memory images
    // map the file's data pages directly.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

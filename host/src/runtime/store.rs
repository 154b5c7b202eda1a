//! Per-call store state: the WASI context that grants nothing, limits, capabilities, stderr tail.

use super::capabilities::CallCaps;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::{cli, sync::io};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Bytes of guest stderr kept per call (a Rust panic message fits).
const STDERR_TAIL_BYTES: usize = 4096;

/// Everything one call's `Store` holds. Built fresh for every call.
pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) caps: CallCaps,
    pub(crate) stderr: StderrTail,
}

impl StoreData {
    pub(crate) fn new(caps: CallCaps, memory_limit: u64) -> Self {
        let stderr = StderrTail::default();
        let wasi = WasiCtxBuilder::new()
            // No preopens, sockets, args or environment; stdin is empty;
            // stdout is discarded; stderr is kept (bounded) for trap reports.
            .stderr(stderr.clone())
            // Deterministic "randomness": std seeds its HashMaps from
            // wasi:random, and a plugin must not depend on entropy.
            .secure_random(wasmtime_wasi::Deterministic::new(vec![
                0x5a, 0xc3, 0x96, 0x3c,
            ]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![
                0x3c, 0x96, 0xc3, 0x5a,
            ]))
            .insecure_random_seed(0x5a5a_c3c3_9696_3c3c)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
                hit: false,
            },
            caps,
            stderr,
        }
    }
}

impl std::fmt::Debug for StoreData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreData")
            .field("caps", &self.caps)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Link the contract's capabilities and the WASI p2 interfaces that Rust's
/// std imports even without I/O (io, cli) plus `wasi:random` (seeded
/// deterministically). Filesystem, sockets and clocks are not linked: a
/// component importing them fails to load with an error naming the import.
pub(crate) fn link(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    super::bindings::Reconciler::add_to_linker::<StoreData, HasSelf<StoreData>>(linker, |s| s)?;

    let l = linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<StoreData, HasTable>(l, |t| {
        &mut t.table
    })?;
    io::poll::add_to_linker::<StoreData, HasTable>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<StoreData, HasTable>(l, |t| &mut t.table)?;
    cli::exit::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::environment::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::stdin::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::stdout::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::stderr::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::terminal_input::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::terminal_output::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::terminal_stdin::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::terminal_stdout::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    cli::terminal_stderr::add_to_linker::<StoreData, WasiCli>(l, StoreData::cli)?;
    use wasmtime_wasi::p2::bindings::random;
    random::random::add_to_linker::<StoreData, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<StoreData, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<StoreData, WasiRandom>(l, |t| t.wasi.random())?;
    Ok(())
}

struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Caps linear memory growth and records that the cap was hit, so a trap
/// that follows (Rust aborts on allocation failure) is reported as
/// [`super::CallError::MemoryLimitExceeded`].
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any
        // real plugin and bounds host memory (8 bytes each).
        Ok(desired <= 1 << 20)
    }
}

/// The first [`STDERR_TAIL_BYTES`] the guest writes to stderr; the rest is
/// discarded without failing the write (a chatty plugin must not trap).
#[derive(Debug, Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).trim().to_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the synchronous p2 path is linked.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut buf = self.0.lock();
        let room = STDERR_TAIL_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

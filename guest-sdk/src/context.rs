//! The plugin's view of the host's capabilities (log, memo), real or fake.

/// Log levels, as in the WIT `log` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very verbose.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

/// The host capabilities a reconcile may use. The component uses the real
/// imports; [`crate::testing::FakeHost`] implements it in memory.
pub trait Host {
    /// Write one log line.
    fn log(&self, level: Level, message: &str);
    /// The memo value stored under `key`, if any.
    fn memo_get(&self, key: &str) -> Option<Vec<u8>>;
    /// Store `value` under `key` (the host may refuse or evict it).
    fn memo_set(&self, key: &str, value: &[u8]);
    /// Remove the value under `key`.
    fn memo_remove(&self, key: &str);
}

/// What a reconcile receives besides its snapshot: logging and the memo.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    host: &'a dyn Host,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context over these host capabilities.
    pub fn new(host: &'a dyn Host) -> Self {
        Self { host }
    }

    /// Log at `level`.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        self.host.log(level, message.as_ref());
    }

    /// Log at debug level.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Log at info level.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Log at warn level.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// The memo value under `key`, if present (it may have been evicted).
    pub fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        self.host.memo_get(key)
    }

    /// Store `value` under `key`.
    pub fn memo_set(&self, key: &str, value: &[u8]) {
        self.host.memo_set(key, value);
    }

    /// Remove `key` from the memo.
    pub fn memo_remove(&self, key: &str) {
        self.host.memo_remove(key);
    }

    /// The memo value under `key`, computing and storing it when missing.
    pub fn memo_get_or_insert_with(&self, key: &str, compute: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        if let Some(v) = self.memo_get(key) {
            return v;
        }
        let v = compute();
        self.memo_set(key, &v);
        v
    }
}

/// The real host, through the component's imports.
#[cfg(target_arch = "wasm32")]
pub(crate) struct WasmHost;

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn log(&self, level: Level, message: &str) {
        use crate::bindings::capstan::reconciler::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }

    fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        crate::bindings::capstan::reconciler::memo::get(key)
    }

    fn memo_set(&self, key: &str, value: &[u8]) {
        crate::bindings::capstan::reconciler::memo::set(key, value);
    }

    fn memo_remove(&self, key: &str) {
        crate::bindings::capstan::reconciler::memo::remove(key);
    }
}

//! A native fake host, so plugin logic is unit-tested with plain `cargo test`.

use crate::{Context, Error, Host, Level, Outcome, Reconciler, Snapshot};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// In-memory memo and captured logs, standing in for the Capstan host.
#[derive(Debug, Default)]
pub struct FakeHost {
    memo: RefCell<BTreeMap<String, Vec<u8>>>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl FakeHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `R::reconcile` on `snapshot` against this host.
    pub fn reconcile<R: Reconciler>(&self, snapshot: &Snapshot) -> Result<Outcome, Error> {
        R::reconcile(&Context::new(self), snapshot)
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// The memo's current contents.
    pub fn memo(&self) -> BTreeMap<String, Vec<u8>> {
        self.memo.borrow().clone()
    }

    /// Forget every memo entry, as a host eviction may.
    pub fn evict_memo(&self) {
        self.memo.borrow_mut().clear();
    }
}

impl Host for FakeHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn memo_get(&self, key: &str) -> Option<Vec<u8>> {
        self.memo.borrow().get(key).cloned()
    }

    fn memo_set(&self, key: &str, value: &[u8]) {
        self.memo
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
    }

    fn memo_remove(&self, key: &str) {
        self.memo.borrow_mut().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_round_trips_and_evicts() {
        let host = FakeHost::new();
        let ctx = Context::new(&host);
        let mut calls = 0;
        let v = ctx.memo_get_or_insert_with("k", || {
            calls += 1;
            b"v".to_vec()
        });
        assert_eq!(v, b"v");
        let _ = ctx.memo_get_or_insert_with("k", || {
            calls += 1;
            Vec::new()
        });
        assert_eq!(calls, 1);
        host.evict_memo();
        assert_eq!(ctx.memo_get("k"), None);
        ctx.info("hi");
        assert_eq!(host.logs(), vec![(Level::Info, "hi".to_owned())]);
    }
}

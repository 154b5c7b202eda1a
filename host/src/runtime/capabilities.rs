//! The host capabilities a plugin imports: `log` (into tracing) and `memo` (a bounded byte store).

use super::bindings::capstan::reconciler::{log, memo, types};
use super::store::StoreData;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Longest log message kept; longer ones are cut (on a char boundary).
pub const MAX_LOG_MESSAGE_BYTES: usize = 4096;
/// Log lines one call may write; later ones are dropped, with one warning.
pub const MAX_LOG_LINES_PER_CALL: u32 = 256;
/// Longest memo key; a longer key is never stored or found.
pub const MAX_MEMO_KEY_BYTES: usize = 512;

impl types::Host for StoreData {}

impl log::Host for StoreData {
    fn log(&mut self, level: log::Level, message: String) {
        let caps = &mut self.caps;
        if caps.log_lines_left == 0 {
            return;
        }
        caps.log_lines_left -= 1;
        let mut msg = message.as_str();
        if msg.len() > MAX_LOG_MESSAGE_BYTES {
            let mut end = MAX_LOG_MESSAGE_BYTES;
            while !msg.is_char_boundary(end) {
                end -= 1;
            }
            msg = &msg[..end];
        }
        let (plugin, key) = (&*caps.plugin, &*caps.key);
        match level {
            log::Level::Trace => tracing::trace!(target: "capstan::plugin", plugin, key, "{msg}"),
            log::Level::Debug => tracing::debug!(target: "capstan::plugin", plugin, key, "{msg}"),
            log::Level::Info => tracing::info!(target: "capstan::plugin", plugin, key, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "capstan::plugin", plugin, key, "{msg}"),
            log::Level::Error => tracing::error!(target: "capstan::plugin", plugin, key, "{msg}"),
        }
        if caps.log_lines_left == 0 {
            tracing::warn!(target: "capstan::plugin", plugin, key,
                "log line limit ({MAX_LOG_LINES_PER_CALL}) reached; dropping the rest of this call's logs");
        }
    }
}

impl memo::Host for StoreData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.caps.memo.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        if let Err(reason) = self.caps.memo.set(key, value) {
            let (plugin, key) = (&*self.caps.plugin, &*self.caps.key);
            tracing::warn!(target: "capstan::plugin", plugin, key, "memo set ignored: {reason}");
        }
    }

    fn remove(&mut self, key: String) {
        self.caps.memo.remove(&key);
    }
}

/// Per-call state of the capabilities.
#[derive(Debug)]
pub(crate) struct CallCaps {
    pub(crate) plugin: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) memo: Arc<Memo>,
    pub(crate) log_lines_left: u32,
    pub(crate) grants: super::hostcalls::Grants,
}

/// One plugin name's memo: a byte map bounded per value and in total, oldest
/// entries evicted first. Shared by every version of the plugin loaded under
/// that name, so a reload keeps it. Values are whatever the plugin stored;
/// the plugin must be able to recompute any of them.
#[derive(Debug)]
pub struct Memo {
    max_value: usize,
    max_total: usize,
    inner: Mutex<MemoInner>,
}

#[derive(Debug, Default)]
struct MemoInner {
    entries: HashMap<String, (u64, Arc<[u8]>)>,
    /// Insertion order as (sequence, key); stale pairs (replaced or removed
    /// keys) are skipped when evicting.
    order: VecDeque<(u64, String)>,
    next_seq: u64,
    total: usize,
}

impl Memo {
    pub(crate) fn new(max_value: usize, max_total: usize) -> Self {
        Self {
            max_value,
            max_total,
            inner: Mutex::new(MemoInner::default()),
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().entries.get(key).map(|(_, v)| v.to_vec())
    }

    /// Store `value` under `key`; refused when the key or value is too big.
    pub fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.len() > MAX_MEMO_KEY_BYTES {
            return Err(format!(
                "key of {} bytes exceeds {MAX_MEMO_KEY_BYTES}",
                key.len()
            ));
        }
        let size = key.len() + value.len();
        if value.len() > self.max_value || size > self.max_total {
            return Err(format!(
                "value of {} bytes under {key:?} exceeds the limit of {} bytes",
                value.len(),
                self.max_value
            ));
        }
        let mut m = self.inner.lock();
        let seq = m.next_seq;
        m.next_seq += 1;
        if let Some((_, old)) = m.entries.insert(key.clone(), (seq, value.into())) {
            m.total -= key.len() + old.len();
        }
        m.total += size;
        m.order.push_back((seq, key));
        while m.total > self.max_total {
            let Some((s, k)) = m.order.pop_front() else {
                break;
            };
            if m.entries.get(&k).is_some_and(|(cur, _)| *cur == s)
                && let Some((_, v)) = m.entries.remove(&k)
            {
                m.total -= k.len() + v.len();
            }
        }
        // Drop stale order entries so the queue stays proportional to the map.
        if m.order.len() > 2 * m.entries.len() + 16 {
            let MemoInner { entries, order, .. } = &mut *m;
            order.retain(|(s, k)| entries.get(k).is_some_and(|(cur, _)| cur == s));
        }
        Ok(())
    }

    /// Remove `key`.
    pub fn remove(&self, key: &str) {
        let mut m = self.inner.lock();
        if let Some((_, v)) = m.entries.remove(key) {
            m.total -= key.len() + v.len();
        }
    }

    /// Bytes held (keys and values).
    pub fn total_bytes(&self) -> usize {
        self.inner.lock().total
    }
}

/// The memos of every plugin name the runtime has loaded.
#[derive(Debug)]
pub(crate) struct MemoRegistry {
    max_value: usize,
    max_total: usize,
    by_name: Mutex<HashMap<String, Arc<Memo>>>,
}

impl MemoRegistry {
    pub(crate) fn new(max_value: usize, max_total: usize) -> Self {
        Self {
            max_value,
            max_total,
            by_name: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn for_plugin(&self, name: &str) -> Arc<Memo> {
        self.by_name
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Memo::new(self.max_value, self.max_total)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_refuses_oversize_and_evicts_oldest() {
        let m = Memo::new(10, 30);
        assert!(m.set("big".into(), vec![0; 11]).is_err());
        assert!(m.set("k".repeat(MAX_MEMO_KEY_BYTES + 1), vec![]).is_err());
        m.set("a".into(), vec![1; 9]).expect("fits");
        m.set("b".into(), vec![2; 9]).expect("fits");
        m.set("c".into(), vec![3; 9]).expect("fits"); // total 30
        assert_eq!(m.total_bytes(), 30);
        m.set("d".into(), vec![4; 9]).expect("fits, evicts a");
        assert_eq!(m.get("a"), None);
        assert_eq!(m.get("d"), Some(vec![4; 9]));
        // Replacing b makes it the newest: c goes next.
        m.set("b".into(), vec![5; 9]).expect("fits");
        m.set("e".into(), vec![6; 9]).expect("fits, evicts c");
        assert_eq!(m.get("c"), None);
        assert_eq!(m.get("b"), Some(vec![5; 9]));
        assert_eq!(m.total_bytes(), 30);
        m.remove("b");
        assert_eq!(m.total_bytes(), 20);
    }

    #[test]
    fn memo_stale_order_entries_stay_bounded() {
        let m = Memo::new(10, 100);
        for i in 0..1000u32 {
            m.set("k".into(), i.to_le_bytes().to_vec()).expect("fits");
        }
        assert!(m.inner.lock().order.len() <= 2 + 16 + 1);
        assert_eq!(m.get("k"), Some(999u32.to_le_bytes().to_vec()));
    }

    #[test]
    fn registry_shares_a_memo_per_name() {
        let r = MemoRegistry::new(10, 100);
        r.for_plugin("a").set("k".into(), vec![1]).expect("fits");
        assert_eq!(r.for_plugin("a").get("k"), Some(vec![1]));
        assert_eq!(r.for_plugin("b").get("k"), None);
    }
}

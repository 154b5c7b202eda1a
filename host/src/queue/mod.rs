//! The workqueue: client-go's rate-limited delaying queue semantics on tokio time.
//!
//! A reconcile is requested by key, never by event (level-based). The queue keeps the
//! invariants of client-go's `workqueue.TypedRateLimitingInterface` as controller-runtime
//! drives it:
//!
//! - **Dedup.** A key is queued at most once: adding a key that is already waiting is a
//!   no-op (the `dirty` set).
//! - **One worker per key.** [`WorkQueue::get`] hands a key out and moves it to the
//!   `processing` set; a key in `processing` is never handed out again until
//!   [`WorkQueue::done`]. An add while it is processing marks it dirty only; `done` then
//!   queues it once more. Ten adds during one reconcile therefore cause exactly one
//!   further reconcile.
//! - **Backoff on error.** [`WorkQueue::add_rate_limited`] re-adds after
//!   `max(per-key exponential, overall bucket)`: the per-key delay is
//!   `base x 2^failures` capped at `max` (defaults 5 ms and 1000 s, client-go's
//!   `ItemExponentialFailureRateLimiter`); the overall token bucket defaults to 10 qps with
//!   a burst of 100 (client-go's `DefaultTypedControllerRateLimiter`; set
//!   [`QueueConfig::bucket`] to `None` to turn it off, as controller-runtime's priority
//!   queue does). The bucket only ever delays rate-limited requeues, never fresh adds.
//! - **Success forgets.** [`WorkQueue::forget`] resets a key's failure count.
//! - **Requeue-after** forgets the backoff and calls [`WorkQueue::add_after`]: the key is
//!   added when the delay expires; of several pending delays for one key the earliest wins.
//! - **Terminal errors** ([`WorkQueue::mark_terminal`]) forget the backoff and do not
//!   re-add. Until a real change adds the key again ([`WorkQueue::add`]), periodic resyncs
//!   ([`WorkQueue::add_resync`]) skip it, so a terminal error is not retried until the
//!   object (or a watched object mapping to it) changes.
//! - **Shutdown** ([`WorkQueue::shutdown`]) makes `get` return `None` at once: workers
//!   stop taking keys, finish the one in hand and exit; queued keys are dropped (the next
//!   leader or start lists everything again).
//!
//! Metrics (`workqueue_*`) are updated as in client-go, including the unfinished-work and
//! longest-running gauges, refreshed every 500 ms by the driver task.

use crate::metrics::QueueMetrics;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Overall token bucket for rate-limited requeues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketConfig {
    /// Tokens added per second.
    pub qps: f64,
    /// Bucket size.
    pub burst: u32,
}

/// Rate-limiting configuration of one queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueConfig {
    /// First per-key backoff delay (client-go: 5 ms).
    pub base_delay: Duration,
    /// Cap of the per-key backoff delay (client-go: 1000 s).
    pub max_delay: Duration,
    /// Overall bucket; `None` disables it.
    pub bucket: Option<BucketConfig>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            bucket: Some(BucketConfig {
                qps: 10.0,
                burst: 100,
            }),
        }
    }
}

/// `golang.org/x/time/rate` reservation semantics: every request takes a token, and the
/// delay is how long until that token would have existed.
#[derive(Debug)]
struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(cfg: BucketConfig, now: Instant) -> Self {
        Self {
            qps: cfg.qps.max(f64::MIN_POSITIVE),
            burst: f64::from(cfg.burst.max(1)),
            tokens: f64::from(cfg.burst.max(1)),
            last: now,
        }
    }

    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

/// The per-key exponential delay for the `failures`-th consecutive failure (0-based).
pub fn exponential_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    if failures >= 32 {
        return max;
    }
    base.checked_mul(1u32 << failures)
        .map_or(max, |d| d.min(max))
}

#[derive(Debug)]
struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashMap<K, Instant>,
    queued_at: HashMap<K, Instant>,
    waiting: HashMap<K, (Instant, u64)>,
    timers: BTreeMap<(Instant, u64), K>,
    failures: HashMap<K, u32>,
    terminal: HashSet<K>,
    bucket: Option<TokenBucket>,
    shutting_down: bool,
    seq: u64,
}

/// A deduplicating, rate-limited, delaying work queue of keys. See the module docs.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
    timers_changed: Notify,
    config: QueueConfig,
    metrics: QueueMetrics,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    /// An empty queue; call [`WorkQueue::spawn_driver`] to serve delayed adds.
    pub fn new(config: QueueConfig, metrics: QueueMetrics) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashMap::new(),
                queued_at: HashMap::new(),
                waiting: HashMap::new(),
                timers: BTreeMap::new(),
                failures: HashMap::new(),
                terminal: HashSet::new(),
                bucket: config.bucket.map(|b| TokenBucket::new(b, now)),
                shutting_down: false,
                seq: 0,
            }),
            ready: Notify::new(),
            timers_changed: Notify::new(),
            config,
            metrics,
        })
    }

    /// The task that moves delayed keys into the queue when due and refreshes the
    /// in-progress gauges. It ends at shutdown.
    pub fn spawn_driver(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let q = Arc::clone(self);
        tokio::spawn(async move { q.drive().await })
    }

    async fn drive(&self) {
        const TICK: Duration = Duration::from_millis(500);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            let next_timer = {
                let mut st = self.state.lock();
                if st.shutting_down {
                    return;
                }
                while let Some(entry) = st.timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    st.waiting.remove(&key);
                    self.add_locked(&mut st, key, now);
                }
                if now >= next_tick {
                    let mut total = 0.0f64;
                    let mut longest = 0.0f64;
                    for start in st.processing.values() {
                        let secs = now.saturating_duration_since(*start).as_secs_f64();
                        total += secs;
                        longest = longest.max(secs);
                    }
                    self.metrics.unfinished.set(total);
                    self.metrics.longest.set(longest);
                    next_tick = now + TICK;
                }
                st.timers.first_key_value().map(|(k, _)| k.0)
            };
            let wake = next_timer.map_or(next_tick, |t| t.min(next_tick));
            tokio::select! {
                _ = self.timers_changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn add_locked(&self, st: &mut State<K>, key: K, now: Instant) {
        if st.shutting_down || st.dirty.contains(&key) {
            return;
        }
        self.metrics.adds.inc();
        st.dirty.insert(key.clone());
        st.queued_at.insert(key.clone(), now);
        if st.processing.contains_key(&key) {
            return;
        }
        st.queue.push_back(key);
        self.metrics.depth.set(st.queue.len() as i64);
        self.ready.notify_one();
    }

    /// Queue `key` because something changed; clears a terminal mark.
    pub fn add(&self, key: K) {
        let mut st = self.state.lock();
        st.terminal.remove(&key);
        self.add_locked(&mut st, key, Instant::now());
    }

    /// Queue `key` for a periodic resync, unless its last reconcile ended in a terminal error.
    pub fn add_resync(&self, key: K) {
        let mut st = self.state.lock();
        if st.terminal.contains(&key) {
            return;
        }
        self.add_locked(&mut st, key, Instant::now());
    }

    /// Queue `key` once `delay` has passed (at once when zero). The earliest pending delay wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        let mut st = self.state.lock();
        self.add_after_locked(&mut st, key, delay);
    }

    fn add_after_locked(&self, st: &mut State<K>, key: K, delay: Duration) {
        if st.shutting_down {
            return;
        }
        let now = Instant::now();
        if delay.is_zero() {
            self.add_locked(st, key, now);
            return;
        }
        self.metrics.retries.inc();
        let at = now + delay;
        if let Some(&(existing, seq)) = st.waiting.get(&key) {
            if existing <= at {
                return;
            }
            st.timers.remove(&(existing, seq));
        }
        st.seq += 1;
        let seq = st.seq;
        st.waiting.insert(key.clone(), (at, seq));
        let first = st
            .timers
            .first_key_value()
            .is_none_or(|(k, _)| (at, seq) < *k);
        st.timers.insert((at, seq), key);
        if first {
            self.timers_changed.notify_one();
        }
    }

    /// Re-add `key` after its backoff: the larger of the per-key exponential delay and the
    /// overall bucket's delay. Returns the delay chosen.
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let mut st = self.state.lock();
        let failures = st.failures.entry(key.clone()).or_insert(0);
        let exp = exponential_delay(self.config.base_delay, self.config.max_delay, *failures);
        *failures = failures.saturating_add(1);
        let now = Instant::now();
        let bucket = st
            .bucket
            .as_mut()
            .map_or(Duration::ZERO, |b| b.reserve(now));
        let delay = exp.max(bucket);
        self.add_after_locked(&mut st, key, delay);
        delay
    }

    /// Reset `key`'s failure count (success, requeue-after).
    pub fn forget(&self, key: &K) {
        self.state.lock().failures.remove(key);
    }

    /// Forget `key`'s backoff and skip it on resyncs until the next real [`WorkQueue::add`].
    pub fn mark_terminal(&self, key: &K) {
        let mut st = self.state.lock();
        st.failures.remove(key);
        st.terminal.insert(key.clone());
    }

    /// Consecutive failures recorded for `key`.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.state.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Wait for the next key; `None` once the queue shuts down.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.state.lock();
                if st.shutting_down {
                    return None;
                }
                if let Some(key) = st.queue.pop_front() {
                    let now = Instant::now();
                    if let Some(at) = st.queued_at.remove(&key) {
                        self.metrics
                            .queue_duration
                            .observe(now.saturating_duration_since(at).as_secs_f64());
                    }
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone(), now);
                    self.metrics.depth.set(st.queue.len() as i64);
                    if !st.queue.is_empty() {
                        // Pass the wake-up on: notify_one stores a single permit only.
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Mark `key` finished; if it was added while processing, queue it again.
    pub fn done(&self, key: &K) {
        let mut st = self.state.lock();
        if let Some(start) = st.processing.remove(key) {
            self.metrics.work_duration.observe(
                Instant::now()
                    .saturating_duration_since(start)
                    .as_secs_f64(),
            );
        }
        if st.dirty.contains(key) && !st.shutting_down {
            st.queue.push_back(key.clone());
            self.metrics.depth.set(st.queue.len() as i64);
            self.ready.notify_one();
        }
    }

    /// Stop handing out keys; pending and delayed keys are dropped.
    pub fn shutdown(&self) {
        let mut st = self.state.lock();
        st.shutting_down = true;
        st.queue.clear();
        st.timers.clear();
        st.waiting.clear();
        self.metrics.depth.set(0);
        drop(st);
        self.ready.notify_waiters();
        self.timers_changed.notify_one();
    }

    /// Keys queued and ready now.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// No key is ready now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys being processed now.
    pub fn processing(&self) -> usize {
        self.state.lock().processing.len()
    }

    /// Keys waiting for a delay to expire.
    pub fn delayed(&self) -> usize {
        self.state.lock().timers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    fn queue(bucket: Option<BucketConfig>) -> Arc<WorkQueue<String>> {
        let q = WorkQueue::new(
            QueueConfig {
                bucket,
                ..QueueConfig::default()
            },
            QueueMetrics::detached(),
        );
        q.spawn_driver();
        q
    }

    async fn next(q: &WorkQueue<String>) -> Option<String> {
        timeout(Duration::from_secs(3600), q.get())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn adds_are_deduplicated() {
        let q = queue(None);
        for _ in 0..3 {
            q.add("a".into());
        }
        q.add("b".into());
        assert_eq!(q.len(), 2);
        assert_eq!(next(&q).await.as_deref(), Some("a"));
        assert_eq!(next(&q).await.as_deref(), Some("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_never_handed_to_two_workers_and_runs_once_more_after_adds() {
        let q = queue(None);
        q.add("a".into());
        let k = next(&q).await.unwrap();
        for _ in 0..10 {
            q.add("a".into());
        }
        // Still processing: a second worker must not get it.
        assert!(
            timeout(Duration::from_secs(10), q.get()).await.is_err(),
            "handed out while processing"
        );
        q.done(&k);
        assert_eq!(next(&q).await.as_deref(), Some("a"));
        q.done(&k);
        // Exactly one further run.
        assert!(timeout(Duration::from_secs(10), q.get()).await.is_err());
        assert_eq!(q.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_from_5ms_and_is_capped() {
        let q = queue(None);
        let key = "a".to_string();
        for n in 0..8u32 {
            let start = Instant::now();
            let d = q.add_rate_limited(key.clone());
            assert_eq!(d, Duration::from_millis(5) * 2u32.pow(n));
            let got = next(&q).await.unwrap();
            assert_eq!(start.elapsed(), Duration::from_millis(5) * 2u32.pow(n));
            q.done(&got);
        }
        assert_eq!(q.num_requeues(&key), 8);
        for _ in 0..30 {
            q.add_rate_limited(key.clone());
        }
        assert_eq!(
            q.add_rate_limited(key.clone()),
            Duration::from_secs(1000),
            "capped"
        );
        q.forget(&key);
        assert_eq!(q.num_requeues(&key), 0);
    }

    #[test]
    fn exponential_delay_never_overflows() {
        let (b, m) = (Duration::from_millis(5), Duration::from_secs(1000));
        assert_eq!(exponential_delay(b, m, 0), b);
        assert_eq!(exponential_delay(b, m, 3), Duration::from_millis(40));
        assert_eq!(exponential_delay(b, m, 17), Duration::from_millis(655_360));
        for f in [18, 31, 32, 63, 64, u32::MAX] {
            assert_eq!(exponential_delay(b, m, f), m);
        }
        assert_eq!(
            exponential_delay(Duration::from_secs(1), Duration::from_secs(10), 2),
            Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn success_forgets_the_backoff() {
        let q = queue(None);
        let key = "a".to_string();
        q.add_rate_limited(key.clone());
        q.add_rate_limited(key.clone());
        q.forget(&key);
        assert_eq!(q.add_rate_limited(key.clone()), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_limits_overall_retries() {
        let q = queue(Some(BucketConfig {
            qps: 10.0,
            burst: 100,
        }));
        for i in 0..100 {
            assert_eq!(
                q.add_rate_limited(format!("k{i}")),
                Duration::from_millis(5)
            );
        }
        // 101st distinct key: the bucket is empty, one token per 100 ms.
        assert_eq!(
            q.add_rate_limited("k100".into()),
            Duration::from_millis(100)
        );
        assert_eq!(
            q.add_rate_limited("k101".into()),
            Duration::from_millis(200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_waits_and_the_earliest_delay_wins() {
        let q = queue(None);
        let start = Instant::now();
        q.add_after("a".into(), Duration::from_secs(30));
        q.add_after("a".into(), Duration::from_secs(10));
        q.add_after("a".into(), Duration::from_secs(20));
        assert_eq!(q.delayed(), 1);
        let k = next(&q).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        q.done(&k);
        assert!(timeout(Duration::from_secs(60), q.get()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn terminal_keys_skip_resync_until_a_real_change() {
        let q = queue(None);
        let key = "a".to_string();
        q.add(key.clone());
        let k = next(&q).await.unwrap();
        q.mark_terminal(&k);
        q.done(&k);
        q.add_resync(key.clone());
        assert!(q.is_empty(), "resync retried a terminal error");
        q.add(key.clone());
        assert_eq!(next(&q).await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wakes_waiting_workers() {
        let q = queue(None);
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.add_after("a".into(), Duration::from_secs(1));
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
        q.add("b".into());
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_track_depth_adds_and_retries() {
        let q = queue(None);
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.metrics.depth.get(), 2);
        assert_eq!(q.metrics.adds.get(), 2);
        let k = next(&q).await.unwrap();
        assert_eq!(q.metrics.depth.get(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(q.metrics.longest.get() >= 1.5);
        q.add_rate_limited(k.clone());
        q.done(&k);
        assert_eq!(q.metrics.retries.get(), 1);
        assert_eq!(q.metrics.work_duration.count(), 1);
    }
}

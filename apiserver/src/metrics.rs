//! Metrics about the server itself: requests by verb/resource/code, latency, watches, objects.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Latency histogram bucket upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Live counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Hist>>,
    watches: AtomicI64,
}

/// A point-in-time copy of a server's metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Request count by (verb, resource, code). Resource is `plural` or `plural.group`.
    pub requests: BTreeMap<(String, String, u16), u64>,
    /// Open watch streams.
    pub watches: i64,
    /// Stored objects.
    pub objects: usize,
    /// Bytes of stored JSON.
    pub stored_json_bytes: usize,
    /// Current resourceVersion.
    pub resource_version: u64,
    /// Request latency (count, sum seconds) by verb.
    pub latency: BTreeMap<String, (u64, f64)>,
}

impl MetricsSnapshot {
    /// Total requests.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Requests of one verb (all resources and codes).
    pub fn by_verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|((v, _, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Metrics {
    /// Counts one request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        *self
            .requests
            .lock()
            .entry((verb.to_string(), resource.to_string(), code))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut l = self.latency.lock();
        let h = l.entry(verb.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A watch stream opened (+1) or closed (-1).
    pub fn watch_delta(&self, d: i64) {
        self.watches.fetch_add(d, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(
        &self,
        objects: usize,
        stored_json_bytes: usize,
        resource_version: u64,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.lock().clone(),
            watches: self.watches.load(Ordering::Relaxed),
            objects,
            stored_json_bytes,
            resource_version,
            latency: self
                .latency
                .lock()
                .iter()
                .map(|(k, h)| (k.clone(), (h.count, h.sum)))
                .collect(),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, objects: usize, json_bytes: usize, rv: u64) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP apiserver_request_total Requests by verb, resource and HTTP code."
        );
        let _ = writeln!(s, "# TYPE apiserver_request_total counter");
        for ((verb, res, code), n) in self.requests.lock().iter() {
            let _ = writeln!(
                s,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{res}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP apiserver_request_duration_seconds Request latency by verb."
        );
        let _ = writeln!(s, "# TYPE apiserver_request_duration_seconds histogram");
        for (verb, h) in self.latency.lock().iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                s,
                "apiserver_request_duration_seconds_sum{{verb=\"{verb}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "apiserver_request_duration_seconds_count{{verb=\"{verb}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(s, "# HELP apiserver_watch_streams Open watch streams.");
        let _ = writeln!(s, "# TYPE apiserver_watch_streams gauge");
        let _ = writeln!(
            s,
            "apiserver_watch_streams {}",
            self.watches.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "# HELP apiserver_stored_objects Objects in the store.");
        let _ = writeln!(s, "# TYPE apiserver_stored_objects gauge");
        let _ = writeln!(s, "apiserver_stored_objects {objects}");
        let _ = writeln!(
            s,
            "# HELP apiserver_stored_json_bytes Bytes of stored object JSON."
        );
        let _ = writeln!(s, "# TYPE apiserver_stored_json_bytes gauge");
        let _ = writeln!(s, "apiserver_stored_json_bytes {json_bytes}");
        let _ = writeln!(
            s,
            "# HELP apiserver_resource_version Current resourceVersion."
        );
        let _ = writeln!(s, "# TYPE apiserver_resource_version gauge");
        let _ = writeln!(s, "apiserver_resource_version {rv}");
        if let Some(rss) = rss_bytes() {
            let _ = writeln!(
                s,
                "# HELP process_resident_memory_bytes Resident memory of the process."
            );
            let _ = writeln!(s, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(s, "process_resident_memory_bytes {rss}");
        }
        s
    }
}

/// Resident set size of this process (Linux /proc), for memory benchmarks.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

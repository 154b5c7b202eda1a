//! The run's figures from what the process already measures: the host's Prometheus registry, the API server's counters, /proc.
//!
//! Controller figures are read back from the text exposition of the host's
//! registry (the same numbers `/metrics` serves), parsed with
//! `prometheus-parse`; latencies are histogram estimates.

use super::report::{ApiRequests, ControllerFigures, ProcessFigures};
use super::stats::histogram_quantile;
use prometheus_parse::{Sample, Scrape, Value};
use std::collections::BTreeMap;

/// Parse a Prometheus/OpenMetrics text exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map(|s| s.samples)
        .unwrap_or_default()
}

fn scalar(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => 0.0,
    }
}

/// Sum of the scalar samples named `metric` per value of label `by`.
fn sum_by(samples: &[Sample], metric: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.metric == metric) {
        if let Some(k) = s.labels.get(by) {
            *out.entry(k.to_owned()).or_insert(0.0) += scalar(&s.value);
        }
    }
    out
}

/// Cumulative buckets of histogram `metric` per value of label `by`, merged
/// over the other labels.
fn buckets_by(samples: &[Sample], metric: &str, by: &str) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.metric == metric) {
        let (Some(k), Value::Histogram(h)) = (s.labels.get(by), &s.value) else {
            continue;
        };
        let entry = out.entry(k.to_owned()).or_default();
        for b in h {
            match entry.iter_mut().find(|(le, _)| *le == b.less_than) {
                Some(e) => e.1 += b.count,
                None => entry.push((b.less_than, b.count)),
            }
        }
        entry.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn ms(v: Option<f64>) -> Option<f64> {
    v.map(|s| s * 1000.0)
}

/// Per-controller figures from the host's metrics text, for `clusters` created clusters.
pub fn controllers(text: &str, clusters: usize) -> Vec<ControllerFigures> {
    let samples = parse(text);
    let reconciles = sum_by(&samples, "controller_runtime_reconcile_total", "controller");
    let errors = sum_by(
        &samples,
        "controller_runtime_reconcile_errors_total",
        "controller",
    );
    let skipped = sum_by(&samples, "capstan_writes_skipped_total", "controller");
    let reconcile_sum = sum_by(
        &samples,
        "controller_runtime_reconcile_time_seconds_sum",
        "controller",
    );
    let wasm_sum = sum_by(&samples, "capstan_plugin_call_seconds_sum", "controller");
    let reconcile_time = buckets_by(
        &samples,
        "controller_runtime_reconcile_time_seconds",
        "controller",
    );
    let queue = buckets_by(&samples, "workqueue_queue_duration_seconds", "controller");
    let per = clusters.max(1) as f64;
    reconciles
        .iter()
        .map(|(name, n)| {
            let rt = reconcile_time.get(name).map(Vec::as_slice).unwrap_or(&[]);
            let qw = queue.get(name).map(Vec::as_slice).unwrap_or(&[]);
            let wasm_share = match (wasm_sum.get(name), reconcile_sum.get(name)) {
                (Some(w), Some(r)) if *r > 0.0 => Some((w / r).min(1.0)),
                _ => None,
            };
            ControllerFigures {
                controller: name.clone(),
                reconciles: *n as u64,
                errors: errors.get(name).copied().unwrap_or(0.0) as u64,
                reconciles_per_cluster: n / per,
                reconcile_p50_ms: ms(histogram_quantile(rt, 0.5)),
                reconcile_p99_ms: ms(histogram_quantile(rt, 0.99)),
                wasm_share,
                queue_wait_p50_ms: ms(histogram_quantile(qw, 0.5)),
                queue_wait_p99_ms: ms(histogram_quantile(qw, 0.99)),
                writes_skipped: skipped.get(name).copied().unwrap_or(0.0) as u64,
            }
        })
        .collect()
}

/// Keys waiting in every workqueue.
pub fn total_queue_depth(text: &str) -> u64 {
    parse(text)
        .iter()
        .filter(|s| s.metric == "workqueue_depth")
        .map(|s| scalar(&s.value).max(0.0) as u64)
        .sum()
}

/// API requests by (verb, resource), summed over response codes, most first.
pub fn api_requests(
    requests: &BTreeMap<(String, String, u16), u64>,
    clusters: usize,
) -> Vec<ApiRequests> {
    let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((verb, resource, _), n) in requests {
        *by.entry((verb.clone(), resource.clone())).or_insert(0) += n;
    }
    let per = clusters.max(1) as f64;
    let mut out: Vec<ApiRequests> = by
        .into_iter()
        .map(|((verb, resource), count)| ApiRequests {
            verb,
            resource,
            count,
            per_cluster: count as f64 / per,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.verb.cmp(&b.verb)));
    out
}

/// Peak RSS and CPU time of this process from /proc (zeros elsewhere).
/// CPU ticks are converted at USER_HZ = 100, Linux's fixed user-visible rate.
pub fn process(clusters: usize) -> ProcessFigures {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let per = clusters.max(1) as f64;
    let peak = peak_kib * 1024;
    let cpu = ticks as f64 / 100.0;
    ProcessFigures {
        peak_rss_bytes: peak,
        peak_rss_bytes_per_cluster: peak as f64 / per,
        cpu_seconds: cpu,
        cpu_seconds_per_cluster: cpu / per,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP controller_runtime_reconcile Total number of reconciliations per controller.
# TYPE controller_runtime_reconcile counter
controller_runtime_reconcile_total{controller="cluster",result="success"} 30
controller_runtime_reconcile_total{controller="cluster",result="requeue_after"} 10
controller_runtime_reconcile_total{controller="machine",result="success"} 5
# TYPE controller_runtime_reconcile_errors counter
controller_runtime_reconcile_errors_total{controller="cluster"} 2
# TYPE controller_runtime_reconcile_time_seconds histogram
controller_runtime_reconcile_time_seconds_sum{controller="cluster"} 4.0
controller_runtime_reconcile_time_seconds_count{controller="cluster"} 40
controller_runtime_reconcile_time_seconds_bucket{le="0.1",controller="cluster"} 20
controller_runtime_reconcile_time_seconds_bucket{le="0.2",controller="cluster"} 40
controller_runtime_reconcile_time_seconds_bucket{le="+Inf",controller="cluster"} 40
# TYPE capstan_plugin_call_seconds histogram
capstan_plugin_call_seconds_sum{controller="cluster"} 1.0
capstan_plugin_call_seconds_count{controller="cluster"} 40
capstan_plugin_call_seconds_bucket{le="+Inf",controller="cluster"} 40
# TYPE workqueue_queue_duration_seconds histogram
workqueue_queue_duration_seconds_sum{name="cluster",controller="cluster"} 0.4
workqueue_queue_duration_seconds_count{name="cluster",controller="cluster"} 40
workqueue_queue_duration_seconds_bucket{le="0.01",name="cluster",controller="cluster"} 40
workqueue_queue_duration_seconds_bucket{le="+Inf",name="cluster",controller="cluster"} 40
# TYPE workqueue_depth gauge
workqueue_depth{name="cluster",controller="cluster"} 3
workqueue_depth{name="machine",controller="machine"} 4
# TYPE capstan_writes_skipped counter
capstan_writes_skipped_total{controller="cluster"} 7
# EOF
"#;

    #[test]
    fn controller_figures_from_the_registry_text() {
        let f = controllers(TEXT, 10);
        assert_eq!(f.len(), 2);
        let c = &f[0];
        assert_eq!(c.controller, "cluster");
        assert_eq!((c.reconciles, c.errors, c.writes_skipped), (40, 2, 7));
        assert_eq!(c.reconciles_per_cluster, 4.0);
        assert!((c.reconcile_p50_ms.unwrap() - 100.0).abs() < 1e-6);
        assert!((c.reconcile_p99_ms.unwrap() - 198.0).abs() < 1e-6);
        assert_eq!(c.wasm_share, Some(0.25));
        assert!((c.queue_wait_p50_ms.unwrap() - 5.0).abs() < 1e-6);
        assert_eq!(f[1].reconcile_p50_ms, None);
        assert_eq!(total_queue_depth(TEXT), 7);
    }

    #[test]
    fn api_requests_merge_codes_and_sort() {
        let mut m = BTreeMap::new();
        m.insert(
            ("create".into(), "clusters.cluster.x-k8s.io".into(), 201),
            10,
        );
        m.insert(
            ("create".into(), "clusters.cluster.x-k8s.io".into(), 409),
            2,
        );
        m.insert(
            ("patch".into(), "machines.cluster.x-k8s.io".into(), 200),
            30,
        );
        let a = api_requests(&m, 4);
        assert_eq!(a[0].verb, "patch");
        assert_eq!(a[1].count, 12);
        assert_eq!(a[1].per_cluster, 3.0);
    }

    #[test]
    fn process_figures_are_read_on_linux() {
        let p = process(1);
        if cfg!(target_os = "linux") {
            assert!(p.peak_rss_bytes > 0);
        }
    }
}

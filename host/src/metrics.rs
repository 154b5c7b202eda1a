//! Prometheus metrics: an injected registry with controller-runtime and client-go names, plus `capstan_*`.
//!
//! Names, labels and buckets follow controller-runtime (`pkg/internal/controller/metrics`,
//! `pkg/internal/metrics/workqueue.go`) and client-go's REST metrics so existing dashboards
//! work unchanged. Every label combination a controller can produce is created at zero when
//! the controller is registered ([`Metrics::controller`]), as controller-runtime does, so a
//! `rate()` never starts from a missing series. Nothing here is global: the caller owns the
//! [`Registry`] and passes it in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A gauge holding seconds.
pub type SecondsGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// `{controller}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller (plugin) name.
    pub controller: String,
}

/// `{controller, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Controller (plugin) name.
    pub controller: String,
    /// `success`, `error`, `requeue` or `requeue_after`.
    pub result: String,
}

/// `{name, controller}` of the workqueue metrics; `name` is the controller name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// Queue name (the controller name, as in controller-runtime).
    pub name: String,
    /// Controller name.
    pub controller: String,
}

/// `{code, method, host}` of `rest_client_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestLabels {
    /// HTTP status code, or `<error>` when no response came back.
    pub code: String,
    /// HTTP method.
    pub method: String,
    /// API server host:port.
    pub host: String,
}

/// `{verb, host}` of `rest_client_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbHostLabels {
    /// HTTP method.
    pub verb: String,
    /// API server host:port.
    pub host: String,
}

/// `{controller, fault}` of `capstan_plugin_traps_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    /// Controller (plugin) name.
    pub controller: String,
    /// `trap`, `deadline`, `memory` or `invalid_outcome`.
    pub fault: String,
}

/// `{group, version, kind}` of `capstan_cache_objects`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// `{plugin, version, digest}` of `capstan_plugin_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginInfoLabels {
    /// Plugin name.
    pub plugin: String,
    /// The version its describe() declares.
    pub version: String,
    /// sha256 of the component file.
    pub digest: String,
}

/// `{plugin, result}` of `capstan_plugin_reloads_total` and `capstan_shadow_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginResultLabels {
    /// Plugin name (or the file name when a file never described one).
    pub plugin: String,
    /// The result.
    pub result: String,
}

/// Results of `capstan_plugin_reloads_total`: a new version serving, a known version
/// serving again without a compile, a rejected file, a removed plugin, a shadow started.
pub const RELOAD_RESULTS: [&str; 5] = ["success", "cached", "error", "removed", "shadow"];
/// Results of `capstan_shadow_reconciles_total`.
pub const SHADOW_RESULTS: [&str; 3] = ["same", "differ", "skipped"];

/// The reconcile results controller-runtime labels `controller_runtime_reconcile_total` with.
pub const RESULTS: [&str; 4] = ["success", "error", "requeue", "requeue_after"];
/// The plugin fault classes of `capstan_plugin_traps_total`.
pub const FAULTS: [&str; 4] = ["trap", "deadline", "memory", "invalid_outcome"];

fn reconcile_time_buckets() -> Histogram {
    // controller-runtime: 0.005, 0.01, 0.025, 0.05, 0.1..1.0 step .1, 1.25..5 step .25, 6..10, 15..30 step 5, 40, 50, 60
    let mut b = vec![0.005, 0.01, 0.025, 0.05];
    b.extend((1..=10).map(|i| i as f64 / 10.0));
    b.extend((5..=20).map(|i| i as f64 * 0.25));
    b.extend((6..=10).map(|i| i as f64));
    b.extend([15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0]);
    Histogram::new(b)
}

fn workqueue_buckets() -> Histogram {
    // controller-runtime HEAD: ExponentialBuckets(10e-9, 10, 12)
    Histogram::new(exponential_buckets(10e-9, 10.0, 12))
}

fn rest_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
    ])
}

fn plugin_call_buckets() -> Histogram {
    // 10 us .. ~5 s: plugin calls are far shorter than whole reconciles.
    Histogram::new(exponential_buckets(1e-5, 2.0, 20))
}

/// Every metric family the host exports.
#[derive(Debug)]
pub struct Metrics {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    terminal_errors: Family<ControllerLabels, Counter>,
    panics: Family<ControllerLabels, Counter>,
    reconcile_time: HistogramFamily<ControllerLabels>,
    active_workers: Family<ControllerLabels, Gauge>,
    max_concurrent: Family<ControllerLabels, Gauge>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    queue_duration: HistogramFamily<QueueLabels>,
    work_duration: HistogramFamily<QueueLabels>,
    retries: Family<QueueLabels, Counter>,
    unfinished: Family<QueueLabels, SecondsGauge>,
    longest: Family<QueueLabels, SecondsGauge>,
    rest_requests: Family<RestLabels, Counter>,
    rest_duration: HistogramFamily<VerbHostLabels>,
    plugin_call: HistogramFamily<ControllerLabels>,
    plugin_traps: Family<FaultLabels, Counter>,
    writes_skipped: Family<ControllerLabels, Counter>,
    writes_refused: Family<ControllerLabels, Counter>,
    write_conflicts: Family<ControllerLabels, Counter>,
    cache_objects: Family<KindLabels, Gauge>,
    plugin_info: Family<PluginInfoLabels, Gauge>,
    plugin_reloads: Family<PluginResultLabels, Counter>,
    shadow_reconciles: Family<PluginResultLabels, Counter>,
}

impl Metrics {
    /// Create every family and register it in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            terminal_errors: Family::default(),
            panics: Family::default(),
            reconcile_time: Family::new_with_constructor(reconcile_time_buckets),
            active_workers: Family::default(),
            max_concurrent: Family::default(),
            depth: Family::default(),
            adds: Family::default(),
            queue_duration: Family::new_with_constructor(workqueue_buckets),
            work_duration: Family::new_with_constructor(workqueue_buckets),
            retries: Family::default(),
            unfinished: Family::default(),
            longest: Family::default(),
            rest_requests: Family::default(),
            rest_duration: Family::new_with_constructor(rest_buckets),
            plugin_call: Family::new_with_constructor(plugin_call_buckets),
            plugin_traps: Family::default(),
            writes_skipped: Family::default(),
            writes_refused: Family::default(),
            write_conflicts: Family::default(),
            cache_objects: Family::default(),
            plugin_info: Family::default(),
            plugin_reloads: Family::default(),
            shadow_reconciles: Family::default(),
        };
        // Counters get their `_total` suffix from the registry.
        let r = registry;
        r.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            m.reconcile_total.clone(),
        );
        r.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            m.reconcile_errors.clone(),
        );
        r.register(
            "controller_runtime_terminal_reconcile_errors",
            "Total number of terminal reconciliation errors per controller",
            m.terminal_errors.clone(),
        );
        r.register(
            "controller_runtime_reconcile_panics",
            "Total number of reconciliation panics (plugin traps) per controller",
            m.panics.clone(),
        );
        r.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            m.reconcile_time.clone(),
        );
        r.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            m.active_workers.clone(),
        );
        r.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            m.max_concurrent.clone(),
        );
        r.register(
            "workqueue_depth",
            "Current depth of workqueue",
            m.depth.clone(),
        );
        r.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            m.adds.clone(),
        );
        r.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            m.queue_duration.clone(),
        );
        r.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            m.work_duration.clone(),
        );
        r.register(
            "workqueue_retries",
            "Total number of items added with a non-zero delay (rate-limited requeues and requeue-after)",
            m.retries.clone(),
        );
        r.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by work_duration",
            m.unfinished.clone(),
        );
        r.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            m.longest.clone(),
        );
        r.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host",
            m.rest_requests.clone(),
        );
        r.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds, broken down by verb and host",
            m.rest_duration.clone(),
        );
        r.register(
            "capstan_plugin_call_seconds",
            "Time spent inside one plugin reconcile call",
            m.plugin_call.clone(),
        );
        r.register(
            "capstan_plugin_traps",
            "Plugin calls that failed by a fault (trap, deadline, memory limit, invalid outcome)",
            m.plugin_traps.clone(),
        );
        r.register(
            "capstan_writes_skipped",
            "Desired objects and statuses not written because they equal the cache",
            m.writes_skipped.clone(),
        );
        r.register(
            "capstan_writes_refused",
            "Writes refused because the plugin did not declare the kind and verb",
            m.writes_refused.clone(),
        );
        r.register(
            "capstan_write_conflicts",
            "Writes answered 409 Conflict (requeued, not counted as errors)",
            m.write_conflicts.clone(),
        );
        r.register(
            "capstan_cache_objects",
            "Objects held in the shared cache per kind",
            m.cache_objects.clone(),
        );
        r.register(
            "capstan_plugin_info",
            "The plugin version serving (1) per plugin, its declared version and component digest",
            m.plugin_info.clone(),
        );
        r.register(
            "capstan_plugin_reloads",
            "Plugin file changes handled by the reloader, by result",
            m.plugin_reloads.clone(),
        );
        r.register(
            "capstan_shadow_reconciles",
            "Shadow version calls compared with the serving version's outcome, by result",
            m.shadow_reconciles.clone(),
        );
        m
    }

    /// Mark `version`/`digest` as what `plugin` serves, replacing the series of the version
    /// it served before (`None` when the plugin was removed).
    pub fn set_plugin_info(
        &self,
        plugin: &str,
        before: Option<(&str, &str)>,
        now: Option<(&str, &str)>,
    ) {
        let labels = |(version, digest): (&str, &str)| PluginInfoLabels {
            plugin: plugin.to_string(),
            version: version.to_string(),
            digest: digest.to_string(),
        };
        if let Some(b) = before {
            self.plugin_info.remove(&labels(b));
        }
        if let Some(n) = now {
            self.plugin_info.get_or_create(&labels(n)).set(1);
        }
    }

    /// Count one reload of `plugin` ending in `result` (one of [`RELOAD_RESULTS`]); the
    /// other results of the plugin are created at zero.
    pub fn plugin_reload(&self, plugin: &str, result: &str) {
        for r in RELOAD_RESULTS {
            let c = self.plugin_reloads.get_or_create(&PluginResultLabels {
                plugin: plugin.to_string(),
                result: r.to_string(),
            });
            if r == result {
                c.inc();
            }
        }
    }

    /// The shadow comparison counters of `plugin`, created at zero.
    pub fn shadow(&self, plugin: &str) -> ShadowMetrics {
        let c = |r: &str| {
            self.shadow_reconciles
                .get_or_create_owned(&PluginResultLabels {
                    plugin: plugin.to_string(),
                    result: r.to_string(),
                })
        };
        ShadowMetrics {
            same: c(SHADOW_RESULTS[0]),
            differ: c(SHADOW_RESULTS[1]),
            skipped: c(SHADOW_RESULTS[2]),
        }
    }

    /// The pre-bound handles of one controller, every series created at zero.
    pub fn controller(&self, name: &str, max_concurrent: u32) -> ControllerMetrics {
        let c = ControllerLabels {
            controller: name.to_string(),
        };
        let q = QueueLabels {
            name: name.to_string(),
            controller: name.to_string(),
        };
        let result = |r: &str| {
            self.reconcile_total.get_or_create_owned(&ResultLabels {
                controller: name.to_string(),
                result: r.to_string(),
            })
        };
        let fault = |f: &str| {
            self.plugin_traps.get_or_create_owned(&FaultLabels {
                controller: name.to_string(),
                fault: f.to_string(),
            })
        };
        let max = self.max_concurrent.get_or_create_owned(&c);
        max.set(i64::from(max_concurrent));
        ControllerMetrics {
            success: result("success"),
            error: result("error"),
            requeue: result("requeue"),
            requeue_after: result("requeue_after"),
            errors: self.reconcile_errors.get_or_create_owned(&c),
            terminal_errors: self.terminal_errors.get_or_create_owned(&c),
            panics: self.panics.get_or_create_owned(&c),
            reconcile_time: self.reconcile_time.get_or_create_owned(&c),
            active_workers: self.active_workers.get_or_create_owned(&c),
            plugin_call: self.plugin_call.get_or_create_owned(&c),
            trap: fault("trap"),
            deadline: fault("deadline"),
            memory: fault("memory"),
            invalid_outcome: fault("invalid_outcome"),
            writes_skipped: self.writes_skipped.get_or_create_owned(&c),
            writes_refused: self.writes_refused.get_or_create_owned(&c),
            write_conflicts: self.write_conflicts.get_or_create_owned(&c),
            queue: QueueMetrics {
                depth: self.depth.get_or_create_owned(&q),
                adds: self.adds.get_or_create_owned(&q),
                queue_duration: self.queue_duration.get_or_create_owned(&q),
                work_duration: self.work_duration.get_or_create_owned(&q),
                retries: self.retries.get_or_create_owned(&q),
                unfinished: self.unfinished.get_or_create_owned(&q),
                longest: self.longest.get_or_create_owned(&q),
            },
        }
    }

    /// The gauge of objects cached for one kind.
    pub fn cache_objects(&self, group: &str, version: &str, kind: &str) -> Gauge {
        self.cache_objects.get_or_create_owned(&KindLabels {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        })
    }

    /// Count one REST request.
    pub fn rest_request(&self, code: &str, method: &str, host: &str, seconds: f64) {
        self.rest_requests
            .get_or_create(&RestLabels {
                code: code.to_string(),
                method: method.to_string(),
                host: host.to_string(),
            })
            .inc();
        self.rest_duration
            .get_or_create(&VerbHostLabels {
                verb: method.to_string(),
                host: host.to_string(),
            })
            .observe(seconds);
    }
}

/// `capstan_shadow_reconciles_total` handles of one plugin.
#[derive(Clone, Debug)]
pub struct ShadowMetrics {
    /// `{result="same"}`: both versions gave the same outcome.
    pub same: Counter,
    /// `{result="differ"}`: the outcomes differ (logged with key and diff).
    pub differ: Counter,
    /// `{result="skipped"}`: the shadow was saturated; the snapshot was not compared.
    pub skipped: Counter,
}

/// Workqueue metric handles of one queue.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    /// `workqueue_depth`.
    pub depth: Gauge,
    /// `workqueue_adds_total`.
    pub adds: Counter,
    /// `workqueue_queue_duration_seconds`.
    pub queue_duration: Histogram,
    /// `workqueue_work_duration_seconds`.
    pub work_duration: Histogram,
    /// `workqueue_retries_total`.
    pub retries: Counter,
    /// `workqueue_unfinished_work_seconds`.
    pub unfinished: SecondsGauge,
    /// `workqueue_longest_running_processor_seconds`.
    pub longest: SecondsGauge,
}

/// Metric handles of one controller, bound to its labels once.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// `controller_runtime_reconcile_total{result="success"}`.
    pub success: Counter,
    /// `{result="error"}`.
    pub error: Counter,
    /// `{result="requeue"}` (rate-limited requeue without an error: conflicts).
    pub requeue: Counter,
    /// `{result="requeue_after"}`.
    pub requeue_after: Counter,
    /// `controller_runtime_reconcile_errors_total`.
    pub errors: Counter,
    /// `controller_runtime_terminal_reconcile_errors_total`.
    pub terminal_errors: Counter,
    /// `controller_runtime_reconcile_panics_total` (plugin traps).
    pub panics: Counter,
    /// `controller_runtime_reconcile_time_seconds`.
    pub reconcile_time: Histogram,
    /// `controller_runtime_active_workers`.
    pub active_workers: Gauge,
    /// `capstan_plugin_call_seconds`.
    pub plugin_call: Histogram,
    /// `capstan_plugin_traps_total{fault="trap"}`.
    pub trap: Counter,
    /// `{fault="deadline"}`.
    pub deadline: Counter,
    /// `{fault="memory"}`.
    pub memory: Counter,
    /// `{fault="invalid_outcome"}`.
    pub invalid_outcome: Counter,
    /// `capstan_writes_skipped_total`.
    pub writes_skipped: Counter,
    /// `capstan_writes_refused_total`.
    pub writes_refused: Counter,
    /// `capstan_write_conflicts_total`.
    pub write_conflicts: Counter,
    /// The controller's workqueue metrics.
    pub queue: QueueMetrics,
}

impl QueueMetrics {
    /// Unregistered handles, for tests and benchmarks that do not scrape.
    pub fn detached() -> Self {
        ControllerMetrics::detached().queue
    }
}

impl ControllerMetrics {
    /// Unregistered handles, for tests and benchmarks that do not scrape.
    pub fn detached() -> Self {
        let mut registry = Registry::default();
        Metrics::new(&mut registry).controller("detached", 1)
    }
}

/// Render the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_series_exist_at_zero_with_controller_runtime_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let _c = metrics.controller("machine", 10);
        let text = encode(&registry);
        for line in [
            "controller_runtime_reconcile_total{controller=\"machine\",result=\"success\"} 0",
            "controller_runtime_reconcile_total{controller=\"machine\",result=\"requeue_after\"} 0",
            "controller_runtime_reconcile_errors_total{controller=\"machine\"} 0",
            "controller_runtime_terminal_reconcile_errors_total{controller=\"machine\"} 0",
            "controller_runtime_reconcile_panics_total{controller=\"machine\"} 0",
            "controller_runtime_max_concurrent_reconciles{controller=\"machine\"} 10",
            "controller_runtime_active_workers{controller=\"machine\"} 0",
            "controller_runtime_reconcile_time_seconds_bucket{le=\"0.005\",controller=\"machine\"} 0",
            "controller_runtime_reconcile_time_seconds_bucket{le=\"60.0\",controller=\"machine\"} 0",
            "workqueue_depth{name=\"machine\",controller=\"machine\"} 0",
            "workqueue_adds_total{name=\"machine\",controller=\"machine\"} 0",
            "workqueue_retries_total{name=\"machine\",controller=\"machine\"} 0",
            "workqueue_unfinished_work_seconds{name=\"machine\",controller=\"machine\"} 0.0",
            "workqueue_longest_running_processor_seconds{name=\"machine\",controller=\"machine\"} 0.0",
            "capstan_plugin_traps_total{controller=\"machine\",fault=\"trap\"} 0",
            "capstan_writes_skipped_total{controller=\"machine\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains("workqueue_queue_duration_seconds_bucket{le=\"1e-8\""));
    }

    #[test]
    fn plugin_info_follows_the_serving_version_and_reload_results_start_at_zero() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.set_plugin_info("p", None, Some(("1.0.0", "aa")));
        metrics.set_plugin_info("p", Some(("1.0.0", "aa")), Some(("2.0.0", "bb")));
        metrics.plugin_reload("p", "error");
        let _s = metrics.shadow("p");
        let text = encode(&registry);
        assert!(
            text.contains("capstan_plugin_info{plugin=\"p\",version=\"2.0.0\",digest=\"bb\"} 1")
        );
        assert!(!text.contains("digest=\"aa\""), "{text}");
        assert!(text.contains("capstan_plugin_reloads_total{plugin=\"p\",result=\"error\"} 1"));
        assert!(text.contains("capstan_plugin_reloads_total{plugin=\"p\",result=\"cached\"} 0"));
        assert!(text.contains("capstan_shadow_reconciles_total{plugin=\"p\",result=\"differ\"} 0"));
    }
}

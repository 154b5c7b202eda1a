//! The run's results (`results.json`), its human report (`report.md`), and the side-by-side comparison of two runs.

use super::stats::{self, Summary};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Clusters in the "first" and "last" groups the scale result compares.
pub const GROUP: usize = 100;

/// Version of the results.json layout.
pub const FORMAT: u32 = 1;

/// The machine the run happened on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Physical memory, GiB.
    pub memory_gib: f64,
    /// Operating system.
    pub os: String,
}

impl MachineInfo {
    /// This machine, from /proc where available.
    pub fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            os: std::env::consts::OS.into(),
        }
    }
}

/// The simulation's parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Clusters created.
    pub clusters: usize,
    /// Clusters in flight at most.
    pub concurrency: usize,
    /// Control-plane machines per cluster.
    pub control_plane_replicas: u32,
    /// Worker machines per cluster.
    pub workers: u32,
    /// Multiplier of the in-memory quick-start startup durations.
    pub time_scale: f64,
    /// Startup jitter.
    pub jitter: f64,
}

/// The outcome of one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterResult {
    /// Creation order, from 0.
    pub index: usize,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// When its Cluster was created, seconds since the run started.
    pub created_at_seconds: f64,
    /// Creation to provisioned, seconds; absent unless provisioned.
    pub provisioning_seconds: Option<f64>,
    /// `provisioned`, `failed` or `incomplete` (the run stopped first).
    pub state: String,
}

/// One controller's figures over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerFigures {
    /// Controller (plugin) name.
    pub controller: String,
    /// Reconciles, every result.
    pub reconciles: u64,
    /// Reconciles that returned an error.
    pub errors: u64,
    /// Reconciles per created cluster.
    pub reconciles_per_cluster: f64,
    /// Reconcile time p50, milliseconds (histogram estimate).
    pub reconcile_p50_ms: Option<f64>,
    /// Reconcile time p99, milliseconds (histogram estimate).
    pub reconcile_p99_ms: Option<f64>,
    /// Share of reconcile time spent inside the Wasm call, 0..1.
    pub wasm_share: Option<f64>,
    /// Time a key waited in the queue, p50, milliseconds.
    pub queue_wait_p50_ms: Option<f64>,
    /// Time a key waited in the queue, p99, milliseconds.
    pub queue_wait_p99_ms: Option<f64>,
    /// Desired objects and statuses not written because nothing differed.
    pub writes_skipped: u64,
}

/// Requests the management API server answered, by verb and resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiRequests {
    /// Verb (`create`, `patch`, `list`, `watch`...).
    pub verb: String,
    /// Resource (`plural` or `plural.group`).
    pub resource: String,
    /// Requests.
    pub count: u64,
    /// Requests per created cluster.
    pub per_cluster: f64,
}

/// Whole-process figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessFigures {
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
    /// Peak RSS divided by created clusters, bytes.
    pub peak_rss_bytes_per_cluster: f64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// CPU seconds per created cluster.
    pub cpu_seconds_per_cluster: f64,
}

/// Provisioning-time summary of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisioningSummary {
    /// Clusters provisioned.
    pub provisioned: usize,
    /// Clusters failed.
    pub failed: usize,
    /// Clusters still provisioning when the run stopped.
    pub incomplete: usize,
    /// Provisioning seconds of the first 100 provisioned clusters by creation order.
    pub first_100: Option<Summary>,
    /// Provisioning seconds of the last 100 provisioned clusters by creation order.
    pub last_100: Option<Summary>,
    /// (mean of last 100 - mean of first 100) / mean of first 100, percent.
    pub delta_percent: Option<f64>,
    /// Every provisioned cluster.
    pub all: Option<Summary>,
}

impl ProvisioningSummary {
    /// Summarise `clusters` (any order).
    pub fn of(clusters: &[ClusterResult]) -> Self {
        let mut sorted: Vec<&ClusterResult> = clusters.iter().collect();
        sorted.sort_by_key(|c| c.index);
        let times: Vec<f64> = sorted
            .iter()
            .filter_map(|c| c.provisioning_seconds)
            .collect();
        let count = |s: &str| clusters.iter().filter(|c| c.state == s).count();
        let first = Summary::of(&times[..times.len().min(GROUP)]);
        let last = Summary::of(&times[times.len().saturating_sub(GROUP)..]);
        let delta_percent = match (first, last) {
            (Some(f), Some(l)) if f.mean > 0.0 => Some((l.mean - f.mean) / f.mean * 100.0),
            _ => None,
        };
        Self {
            provisioned: count("provisioned"),
            failed: count("failed"),
            incomplete: count("incomplete"),
            first_100: first,
            last_100: last,
            delta_percent,
            all: Summary::of(&times),
        }
    }
}

/// Everything a run produced (`results.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// The command line that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Parameters.
    pub options: RunOptions,
    /// Start, RFC 3339.
    pub started_at: String,
    /// Wall-clock duration, seconds.
    pub wall_seconds: f64,
    /// Stopped by Ctrl-C (or a signal) before every cluster finished.
    pub interrupted: bool,
    /// Provisioning summary.
    pub summary: ProvisioningSummary,
    /// Per-controller figures.
    pub controllers: Vec<ControllerFigures>,
    /// API requests by verb and resource.
    pub api_requests: Vec<ApiRequests>,
    /// All API requests per created cluster.
    pub api_requests_per_cluster: f64,
    /// Process figures.
    pub process: ProcessFigures,
    /// Total workqueue depth over time: (seconds since start, keys).
    pub queue_depth: Vec<(f64, u64)>,
    /// Every cluster.
    pub clusters: Vec<ClusterResult>,
}

/// Errors writing or reading results.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// results.json does not parse.
    #[error("{path} is not a capstan simulate results.json: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Results {
    /// Write as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).map_err(|source| ReportError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        std::fs::write(path, text + "\n").map_err(io(path))
    }

    /// Read a results.json.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|source| ReportError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Provisioning seconds of provisioned clusters, by creation order.
    pub fn provisioning_series(&self) -> Vec<(usize, f64)> {
        let mut v: Vec<(usize, f64)> = self
            .clusters
            .iter()
            .filter_map(|c| c.provisioning_seconds.map(|s| (c.index, s)))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn summary_row(out: &mut String, label: &str, s: Option<Summary>) {
    match s {
        Some(s) => {
            let _ = writeln!(
                out,
                "| {label} | {} | {:.2} | {:.2} | {:.2} |",
                s.n, s.mean, s.p50, s.p99
            );
        }
        None => {
            let _ = writeln!(out, "| {label} | 0 | - | - | - |");
        }
    }
}

/// Render report.md.
pub fn render(r: &Results, plots: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let o = &r.options;
    let s = &r.summary;
    let _ = writeln!(out, "# capstan simulate: {} clusters\n", o.clusters);
    let _ = writeln!(
        out,
        "- Machine: {}, {} CPUs, {} GiB, {}",
        r.machine.cpu, r.machine.cpus, r.machine.memory_gib, r.machine.os
    );
    let _ = writeln!(out, "- Command: `{}`", r.command);
    let _ = writeln!(
        out,
        "- Shape: {} control-plane + {} worker machine(s) per cluster, at most {} clusters in flight, time scale {} (jitter {})",
        o.control_plane_replicas, o.workers, o.concurrency, o.time_scale, o.jitter
    );
    let _ = writeln!(
        out,
        "- Started {}; wall time {:.1} s{}\n",
        r.started_at,
        r.wall_seconds,
        if r.interrupted {
            " (interrupted: figures cover what completed)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "## Provisioning time\n");
    let _ = writeln!(
        out,
        "Provisioning time: Cluster creation to the moment the Cluster is `Available` and every Machine has a healthy node (Cluster API's definition).\n"
    );
    let _ = writeln!(
        out,
        "Provisioned {}, failed {}, incomplete {}.\n",
        s.provisioned, s.failed, s.incomplete
    );
    let _ = writeln!(
        out,
        "| clusters (by creation order) | n | mean s | p50 s | p99 s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    summary_row(&mut out, "first 100", s.first_100);
    summary_row(&mut out, "last 100", s.last_100);
    summary_row(&mut out, "all", s.all);
    let _ = writeln!(
        out,
        "\n**Delta, mean of last 100 vs first 100: {}%** (Cluster API v1.5 published +2.3% at 2,000 clusters).",
        opt(s.delta_percent, 2)
    );
    if o.clusters < 2 * GROUP {
        let _ = writeln!(
            out,
            "With fewer than {} clusters the two groups overlap.",
            2 * GROUP
        );
    }
    for (file, title) in plots {
        let _ = writeln!(out, "\n![{title}]({file})");
    }
    let _ = writeln!(out, "\n## Controllers\n");
    let _ = writeln!(
        out,
        "| controller | reconciles | per cluster | errors | reconcile p50 ms | p99 ms | in Wasm | queue wait p50 ms | p99 ms | no-op writes skipped |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for c in &r.controllers {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            c.controller,
            c.reconciles,
            c.reconciles_per_cluster,
            c.errors,
            opt(c.reconcile_p50_ms, 2),
            opt(c.reconcile_p99_ms, 2),
            c.wasm_share
                .map_or_else(|| "-".into(), |x| format!("{:.0}%", x * 100.0)),
            opt(c.queue_wait_p50_ms, 2),
            opt(c.queue_wait_p99_ms, 2),
            c.writes_skipped
        );
    }
    let _ = writeln!(
        out,
        "\nLatencies are estimates from the Prometheus histograms (linear interpolation inside a bucket)."
    );
    let _ = writeln!(out, "\n## API requests\n");
    let _ = writeln!(
        out,
        "{:.1} requests per created cluster in total, as answered by the management API server.\n",
        r.api_requests_per_cluster
    );
    let _ = writeln!(out, "| verb | resource | requests | per cluster |");
    let _ = writeln!(out, "|---|---|---|---|");
    for a in &r.api_requests {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} |",
            a.verb, a.resource, a.count, a.per_cluster
        );
    }
    let p = &r.process;
    let _ = writeln!(out, "\n## Process\n");
    let _ = writeln!(
        out,
        "| peak RSS MiB | per cluster KiB | CPU s | CPU s per cluster |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {:.1} | {:.1} | {:.1} | {:.3} |",
        p.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        p.peak_rss_bytes_per_cluster / 1024.0,
        p.cpu_seconds,
        p.cpu_seconds_per_cluster
    );
    out
}

fn pct_change(a: f64, b: f64) -> String {
    if a == 0.0 {
        "-".into()
    } else {
        format!("{:+.1}%", (b - a) / a * 100.0)
    }
}

/// Render a side-by-side comparison of `base` (the other run) and `this` run.
pub fn render_comparison(base: &Results, base_label: &str, this: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Compared with {base_label}\n");
    let _ = writeln!(out, "| figure | other run | this run | change |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |name: &str, a: Option<f64>, b: Option<f64>| {
        let change = match (a, b) {
            (Some(a), Some(b)) => pct_change(a, b),
            _ => "-".into(),
        };
        let _ = writeln!(out, "| {name} | {} | {} | {change} |", opt(a, 2), opt(b, 2));
    };
    let f = |r: &Results| r.options.clusters as f64;
    row("clusters", Some(f(base)), Some(f(this)));
    let prov = |r: &Results| r.summary.provisioned as f64;
    row("provisioned", Some(prov(base)), Some(prov(this)));
    let mean = |s: Option<Summary>| s.map(|s| s.mean);
    row(
        "first 100 mean s",
        mean(base.summary.first_100),
        mean(this.summary.first_100),
    );
    row(
        "last 100 mean s",
        mean(base.summary.last_100),
        mean(this.summary.last_100),
    );
    row(
        "all p99 s",
        base.summary.all.map(|s| s.p99),
        this.summary.all.map(|s| s.p99),
    );
    row(
        "delta last/first %",
        base.summary.delta_percent,
        this.summary.delta_percent,
    );
    row(
        "API requests per cluster",
        Some(base.api_requests_per_cluster),
        Some(this.api_requests_per_cluster),
    );
    row(
        "peak RSS MiB",
        Some(base.process.peak_rss_bytes as f64 / 1048576.0),
        Some(this.process.peak_rss_bytes as f64 / 1048576.0),
    );
    row(
        "CPU s per cluster",
        Some(base.process.cpu_seconds_per_cluster),
        Some(this.process.cpu_seconds_per_cluster),
    );
    for c in &this.controllers {
        let other = base
            .controllers
            .iter()
            .find(|b| b.controller == c.controller);
        row(
            &format!("{} reconciles per cluster", c.controller),
            other.map(|b| b.reconciles_per_cluster),
            Some(c.reconciles_per_cluster),
        );
    }
    out
}

/// The moving-average window for a series of `n` clusters.
pub fn window_for(n: usize) -> usize {
    (n / 20).clamp(1, 100)
}

/// Mean provisioning seconds over the run (for progress lines).
pub fn mean_of(r: &[ClusterResult]) -> Option<f64> {
    let v: Vec<f64> = r.iter().filter_map(|c| c.provisioning_seconds).collect();
    stats::mean(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(times: &[Option<f64>]) -> Results {
        let clusters: Vec<ClusterResult> = times
            .iter()
            .enumerate()
            .map(|(i, t)| ClusterResult {
                index: i,
                namespace: "ns".into(),
                name: format!("c{i}"),
                created_at_seconds: i as f64,
                provisioning_seconds: *t,
                state: if t.is_some() { "provisioned" } else { "failed" }.into(),
            })
            .collect();
        Results {
            format: FORMAT,
            options: RunOptions {
                clusters: clusters.len(),
                ..RunOptions::default()
            },
            summary: ProvisioningSummary::of(&clusters),
            clusters,
            ..Results::default()
        }
    }

    #[test]
    fn first_and_last_hundred_and_delta() {
        // 300 clusters: the first 100 take 10 s, the last 100 take 11 s.
        let times: Vec<Option<f64>> = (0..300)
            .map(|i| {
                Some(if i < 100 {
                    10.0
                } else if i < 200 {
                    10.5
                } else {
                    11.0
                })
            })
            .collect();
        let r = results(&times);
        let s = &r.summary;
        assert_eq!(s.provisioned, 300);
        assert_eq!(s.first_100.unwrap().mean, 10.0);
        assert_eq!(s.last_100.unwrap().mean, 11.0);
        assert!((s.delta_percent.unwrap() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn failed_clusters_are_counted_not_averaged() {
        let r = results(&[Some(2.0), None, Some(4.0)]);
        assert_eq!((r.summary.provisioned, r.summary.failed), (2, 1));
        assert_eq!(r.summary.all.unwrap().mean, 3.0);
        assert_eq!(r.provisioning_series(), vec![(0, 2.0), (2, 4.0)]);
    }

    #[test]
    fn results_round_trip_and_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        let r = results(&[Some(1.0), Some(2.0)]);
        r.write(&path).unwrap();
        let back = Results::read(&path).unwrap();
        assert_eq!(back, r);
        let md = render(&r, &[("provisioning.png", "Provisioning time")]);
        assert!(md.contains("| first 100 | 2 | 1.50 |"), "{md}");
        assert!(md.contains("![Provisioning time](provisioning.png)"));
        let cmp = render_comparison(&r, "base", &r);
        assert!(
            cmp.contains("| first 100 mean s | 1.50 | 1.50 | +0.0% |"),
            "{cmp}"
        );
        let err = Results::read(&dir.path().join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("missing.json"));
        std::fs::write(&path, "{").unwrap();
        let err = Results::read(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a capstan simulate results.json")
        );
    }
}

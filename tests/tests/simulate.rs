//! `capstan simulate` end to end: a small Cluster API scale run on the real plugins, its results and report.

use capstan::simulate::{self, SimulateArgs};
use capstan_tests::target_dir;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_simulation_provisions_every_cluster_and_writes_its_report() -> anyhow::Result<()> {
    let plugins = target_dir().join("plugins/capi");
    anyhow::ensure!(
        plugins.join("capi_cluster.wasm").is_file(),
        "{} has no plugins: run `make capi-plugins` (part of `make guests`) first",
        plugins.display()
    );
    let out = tempfile::tempdir()?;
    let args = SimulateArgs {
        clusters: 5,
        concurrency: 5,
        workers: 1,
        control_plane_replicas: 1,
        time_scale: 0.01,
        jitter: 0.2,
        cluster_timeout: Duration::from_secs(120),
        plugins,
        out: out.path().to_path_buf(),
        compare: None,
        metrics_bind_address: "0".into(),
        api_bind_address: "127.0.0.1:0".into(),
        plugin_concurrency: None,
        namespace: "capstan-sim".into(),
        progress: "none".into(),
    };
    let cache = target_dir().join("capstan-artifacts");
    let runtime = capstan::runtime::RuntimeConfig {
        cache_dir: Some(cache),
        ..capstan::runtime::RuntimeConfig::default()
    };
    let done = tokio::time::timeout(
        Duration::from_secs(600),
        simulate::run(args, runtime, CancellationToken::new()),
    )
    .await??;
    let r = &done.results;
    let states: Vec<(&str, &str)> = r
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.state.as_str()))
        .collect();
    assert_eq!(
        (
            r.summary.provisioned,
            r.summary.failed,
            r.summary.incomplete
        ),
        (5, 0, 0),
        "{states:?}"
    );
    assert!(!r.interrupted);
    assert!(
        r.clusters
            .iter()
            .all(|c| c.provisioning_seconds.is_some_and(|s| s > 0.0))
    );

    // results.json round-trips to the same figures.
    let back = simulate::report::Results::read(&out.path().join("results.json"))?;
    assert_eq!(back.clusters.len(), 5);
    let (a, b) = (&back.summary, &r.summary);
    assert_eq!(
        (a.provisioned, a.failed, a.incomplete),
        (b.provisioned, b.failed, b.incomplete)
    );
    let mean = |s: &simulate::report::ProvisioningSummary| s.all.map_or(f64::NAN, |x| x.mean);
    assert!((mean(a) - mean(b)).abs() < 1e-9, "{a:?} vs {b:?}");
    // Every controller reconciled something; the API served the clusters' objects.
    for name in [
        "cluster",
        "kubeadm-control-plane",
        "machine",
        "machinedeployment",
        "machineset",
    ] {
        let c = r
            .controllers
            .iter()
            .find(|c| c.controller == name)
            .unwrap_or_else(|| panic!("controller {name} missing from {:?}", r.controllers));
        assert!(c.reconciles > 0, "{name} never reconciled");
    }
    assert!(r.api_requests_per_cluster > 0.0);
    assert!(r.process.peak_rss_bytes > 0);

    let md = std::fs::read_to_string(out.path().join("report.md"))?;
    for needle in [
        "## Provisioning time",
        "| first 100 | 5 |",
        "## Controllers",
        "## API requests",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    assert!(is_png(&out.path().join("provisioning.png")));
    assert!(is_png(&out.path().join("queue-depth.png")));
    assert!(out.path().join("kubeconfig").is_file());
    Ok(())
}

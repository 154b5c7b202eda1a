//! `capstan run --leader-elect`: of two managers on one server only the Lease holder reconciles; killing it hands over within the lease duration.
//!
//! Two `capstan run` processes (the real binary, the hello-rust plugin) campaign for one
//! Lease with short durations (lease 3 s, renew deadline 2 s, retry 500 ms). The first
//! leads; the standby is ready (its caches are warm) but reconciles nothing. SIGKILL of the
//! leader (no release: a crash) hands the Lease over and the standby reconciles a new object
//! within the lease duration plus one retry. SIGTERM of the new leader releases the Lease.
//! Runs on capstan-apiserver and on the real kube-apiserver.

use anyhow::{Context as _, bail, ensure};
use capstan_tests::host::{eventually, http_get, metric_value};
use capstan_tests::server::{ServerKind, TestServer};
use capstan_tests::target_dir;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LEASE: &str = "capstan-test-leader";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);
const RECONCILES: &str =
    "controller_runtime_reconcile_total{controller=\"hello\",result=\"success\"}";

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One `capstan run` process.
struct Manager {
    name: &'static str,
    child: Child,
    metrics: SocketAddr,
    health: SocketAddr,
    log: PathBuf,
}

impl Manager {
    fn start(
        bin: &Path,
        server: &TestServer,
        plugins: &Path,
        namespace: &str,
        name: &'static str,
        dir: &Path,
    ) -> anyhow::Result<Manager> {
        let (metrics, health) = (free_addr()?, free_addr()?);
        let log = dir.join(format!("{name}.log"));
        let cache = target_dir().join("capstan-test-cache");
        std::fs::create_dir_all(&cache)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--kubeconfig")
            .arg(server.kubeconfig_path())
            .arg("--plugins")
            .arg(plugins)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--metrics-bind-address", &metrics.to_string()])
            .args(["--health-probe-bind-address", &health.to_string()])
            .arg("--leader-elect")
            .args(["--leader-election-id", LEASE])
            .args(["--leader-election-namespace", namespace])
            .args(["--leader-elect-lease-duration", "3s"])
            .args(["--leader-elect-renew-deadline", "2s"])
            .args(["--leader-elect-retry-period", "500ms"])
            // The identity is `<HOSTNAME>_<random>`, as for a pod.
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting capstan run ({name})"))?;
        Ok(Manager {
            name,
            child,
            metrics,
            health,
            log,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn reconciles(&self) -> anyhow::Result<Option<f64>> {
        let body = http_get(self.metrics, "/metrics").await?.1;
        Ok(metric_value(&body, RECONCILES))
    }

    async fn ready(&self) -> bool {
        http_get(self.health, "/readyz")
            .await
            .is_ok_and(|(code, _)| code == 200)
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?
            .success();
        ensure!(ok, "kill {signal} {}", self.name);
        Ok(())
    }

    async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} did not exit within {within:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn greeted(cms: &Api<ConfigMap>, name: &str) -> bool {
    cms.get_opt(name).await.ok().flatten().is_some_and(|cm| {
        cm.metadata
            .annotations
            .unwrap_or_default()
            .get("capstan.dev/hello-greeting")
            == Some(&format!("hello, {name}"))
    })
}

async fn labelled(cms: &Api<ConfigMap>, name: &str) -> anyhow::Result<()> {
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"capstan.dev/hello": "true"}}, "data": {"k": name}}))?,
    )
    .await?;
    Ok(())
}

async fn one_leader_and_a_fast_handover(server: &TestServer) -> anyhow::Result<()> {
    let bin = capstan_tests::host::capstan_binary()?;
    let component = target_dir().join("guests/hello-rust.wasm");
    ensure!(
        component.is_file(),
        "{} is missing: run `make components`",
        component.display()
    );
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    std::fs::copy(&component, plugins.join("hello-rust.wasm"))?;

    let client = server.client().await?;
    let ns = match server.kind() {
        ServerKind::Memory => "leader-memory",
        ServerKind::Real => "leader-real",
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);

    let mut a = Manager::start(&bin, server, &plugins, ns, "capstan-a", dir.path())?;
    eventually(Duration::from_secs(120), || async {
        holder(&leases).await.is_some()
    })
    .await
    .with_context(|| format!("nobody acquired the lease:\n{}", a.log()))?;
    let first = holder(&leases).await.unwrap_or_default();
    ensure!(first.starts_with("capstan-a_"), "holder {first}");

    let mut b = Manager::start(&bin, server, &plugins, ns, "capstan-b", dir.path())?;
    eventually(Duration::from_secs(120), || b.ready())
        .await
        .with_context(|| format!("standby never ready:\n{}", b.log()))?;

    // Only the leader reconciles; the standby's controller exists (its metrics are
    // pre-created) but never ran.
    labelled(&cms, "first").await?;
    eventually(Duration::from_secs(30), || greeted(&cms, "first")).await?;
    // The counter moves when the reconcile returns, just after its write
    // (which the greeting shows) is answered.
    eventually(Duration::from_secs(10), || async {
        a.reconciles().await.ok().flatten().unwrap_or(0.0) >= 1.0
    })
    .await
    .with_context(|| format!("the leader's reconcile was not counted:\n{}", a.log()))?;
    ensure!(
        b.reconciles().await? == Some(0.0),
        "the standby reconciled:\n{}",
        b.log()
    );
    ensure!(holder(&leases).await.as_deref() == Some(first.as_str()));

    // A crash: no release. The standby takes over once the lease expires.
    a.signal("-KILL")?;
    a.wait_exit(Duration::from_secs(10)).await?;
    let killed = tokio::time::Instant::now();
    labelled(&cms, "second").await?;
    eventually(Duration::from_secs(30), || greeted(&cms, "second"))
        .await
        .with_context(|| format!("no handover:\n{}", b.log()))?;
    let handover = killed.elapsed();
    // Lease duration + one jittered retry; the rest is slack for a loaded 2-core machine.
    let bound = LEASE_DURATION + RETRY.mul_f64(1.2) + Duration::from_secs(2);
    ensure!(
        handover <= bound,
        "handover took {handover:?} (> {bound:?})"
    );
    let second = holder(&leases).await.unwrap_or_default();
    ensure!(second.starts_with("capstan-b_"), "holder {second}");
    let lease = leases.get(LEASE).await?.spec.unwrap_or_default();
    ensure!(
        lease.lease_transitions == Some(1),
        "one transition: {lease:?}"
    );
    ensure!(lease.lease_duration_seconds == Some(3));
    eventually(Duration::from_secs(10), || async {
        b.reconciles().await.ok().flatten().unwrap_or(0.0) >= 1.0
    })
    .await
    .with_context(|| format!("the new leader's reconcile was not counted:\n{}", b.log()))?;

    // A clean shutdown releases the Lease at once.
    b.signal("-TERM")?;
    let status = b.wait_exit(Duration::from_secs(30)).await?;
    ensure!(
        status.success(),
        "capstan run exited {status}:\n{}",
        b.log()
    );
    ensure!(
        holder(&leases).await.is_none(),
        "the lease was released:\n{}",
        b.log()
    );
    eprintln!("{:?}: handover in {handover:?}", server.kind());
    Ok(())
}

capstan_tests::server_test!(one_leader_and_a_fast_handover, multi_thread);

/// A leader whose Lease is taken (here: overwritten by the test, as a partitioned leader
/// would find it) stops reconciling and its manager returns `leader election lost` within
/// the renew deadline plus one retry.
async fn a_leader_that_cannot_renew_stops(server: &TestServer) -> anyhow::Result<()> {
    use capstan::controller::{ControllerOptions, Reconcile};
    use capstan::leader::LeaderElectionConfig;
    use capstan_tests::host::{FakePlugin, HostFixture, empty_outcome, start_manager_with};
    use std::sync::Arc;

    let fx = HostFixture::new(server, "leaderlost").await?;
    let ns = match server.kind() {
        ServerKind::Memory => "lost-memory",
        ServerKind::Real => "lost-real",
    };
    Api::<Namespace>::all(fx.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let plugin = FakePlugin::new(fx.widget_info("lost"), |_, _| Ok(empty_outcome()));
    let config = LeaderElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..LeaderElectionConfig::new("lost", ns, "me_1")
    };
    let mgr = start_manager_with(
        server.kubeconfig_path(),
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
        Some(config),
    )
    .await?;
    let leases: Api<Lease> = Api::namespaced(fx.client.clone(), ns);
    eventually(Duration::from_secs(10), || async {
        leases
            .get_opt("lost")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("me_1")
    })
    .await?;
    fx.create_widget("before", json!({})).await?;
    eventually(Duration::from_secs(10), || async {
        plugin.calls_for("before") == 1
    })
    .await?;

    // Another holder, freshly renewed, for a long time: every renewal now fails.
    let mut lease = leases.get("lost").await?;
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(3600);
    leases
        .replace("lost", &PostParams::default(), &lease)
        .await?;
    let taken = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), mgr.task)
        .await
        .context("the manager kept running without its lease")??;
    let lost_after = taken.elapsed();
    let error = ended.expect_err("the manager ends with an error");
    ensure!(
        format!("{error:#}").contains("leader election lost"),
        "{error:#}"
    );
    // Renew deadline (2 s) + one retry (0.3 s) + slack.
    ensure!(
        lost_after <= Duration::from_secs(4),
        "lost after {lost_after:?}"
    );
    // No reconcile after the manager stopped.
    let calls = plugin.calls();
    fx.create_widget("after", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(plugin.calls() == calls && plugin.calls_for("after") == 0);
    // It did not release a Lease it no longer holds.
    let holder = leases
        .get("lost")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    ensure!(holder.as_deref() == Some("intruder"), "{holder:?}");
    Ok(())
}

capstan_tests::server_test!(a_leader_that_cannot_renew_stops, multi_thread);

//! `capstan simulate`: Cluster API's scale test in one process — API server, plugins, host, in-memory cloud — with its report and plots.
//!
//! The run: start the in-memory management API server with the Cluster API
//! CRDs (the copy vendored in tests/fixtures/capi-crds, embedded), load the
//! plugins, start the manager, then create N clusters **through the API**
//! (as a user would), at most C in flight: a cluster leaves flight when it is
//! provisioned (see [`tracker`]) or fails its timeout. Progress goes to a
//! progress bar on a terminal, plain lines otherwise. `/metrics` is served as
//! in `capstan run`; the management API is reachable with the kubeconfig
//! written into the output folder. Ctrl-C stops creating, and the report of
//! what completed is still written. Output: `results.json`, `report.md`,
//! `provisioning.png`, `queue-depth.png`.

pub mod figures;
pub mod manifest;
pub mod plot;
pub mod report;
pub mod stats;
pub mod tracker;

use crate::cloud::{CloudMetrics, InMemoryCloud};
use crate::controller::ControllerOptions;
use crate::manager::{self, Manager, ManagerOptions};
use crate::metrics::{self, Metrics};
use crate::runtime::{Runtime, RuntimeConfig};
use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use manifest::ClusterShape;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use report::{ClusterResult, Results, RunOptions};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracker::{State, Tracker};

/// The Cluster API CRDs the management API server installs (v1beta2 served
/// and stored), embedded from the repository's vendored copy.
pub const CAPI_CRDS: [&str; 14] = [
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_clusters.yaml"),
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_clusterclasses.yaml"),
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_machines.yaml"),
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_machinesets.yaml"),
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_machinedeployments.yaml"),
    include_str!("../../../tests/fixtures/capi-crds/cluster.x-k8s.io_machinehealthchecks.yaml"),
    include_str!(
        "../../../tests/fixtures/capi-crds/bootstrap.cluster.x-k8s.io_kubeadmconfigs.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devclusters.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devclustertemplates.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devmachines.yaml"
    ),
    include_str!(
        "../../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devmachinetemplates.yaml"
    ),
];

/// Flags of `capstan simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Clusters to create.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Clusters in flight (created, not yet provisioned) at most.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Worker machines per cluster (one MachineDeployment).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Control-plane machines per cluster.
    #[arg(long, default_value_t = 1)]
    pub control_plane_replicas: u32,
    /// Multiplier of Cluster API's in-memory quick-start startup durations
    /// (VM 30 s, node 10 s, etcd 10 s, API server 10 s).
    #[arg(long, default_value_t = 0.1)]
    pub time_scale: f64,
    /// Startup jitter, a fraction of each duration.
    #[arg(long, default_value_t = 0.2)]
    pub jitter: f64,
    /// A cluster not provisioned this long after its creation counts as failed.
    #[arg(long, default_value = "10m", value_parser = manager::parse_duration)]
    pub cluster_timeout: Duration,
    /// Directory of plugin components (`*.wasm`): the Cluster API plugins.
    #[arg(long)]
    pub plugins: PathBuf,
    /// Output folder (created).
    #[arg(long, default_value = "simulate-out")]
    pub out: PathBuf,
    /// Another run's results.json to compare with in report.md.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Where to serve /metrics (`0` disables).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Where the management API server listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_bind_address: String,
    /// Workers per plugin; default: each plugin's.
    #[arg(long)]
    pub plugin_concurrency: Option<u32>,
    /// Namespace of the simulated clusters.
    #[arg(long, default_value = "capstan-sim")]
    pub namespace: String,
    /// Progress: `auto` (a bar on a terminal, lines otherwise), `bar`, `lines`, `none`.
    #[arg(long, default_value = "auto")]
    pub progress: String,
}

/// Errors of a simulation (before or after the run; failures of single
/// clusters are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A flag value is invalid.
    #[error("invalid flag: {0}")]
    Flag(String),
    /// The output folder could not be prepared.
    #[error("output folder {path}: {source}")]
    Output {
        /// The folder.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The management API server did not start.
    #[error("starting the management API server failed: {0}")]
    ApiServer(String),
    /// Plugins failed to load.
    #[error("loading plugins from {dir} failed: {reason}")]
    Plugins {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The manager failed.
    #[error(transparent)]
    Manager(#[from] manager::ManagerError),
    /// Writing the report failed.
    #[error(transparent)]
    Report(#[from] report::ReportError),
    /// Drawing a plot failed.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// A kube client call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was attempted.
        what: String,
        /// The failure.
        #[source]
        source: Box<kube::Error>,
    },
}

/// What a finished simulation returns.
#[derive(Debug)]
pub struct Finished {
    /// The output folder.
    pub out: PathBuf,
    /// The results written to results.json.
    pub results: Results,
}

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1beta2", kind), plural)
}

fn resource_of(obj: &serde_json::Value) -> Option<ApiResource> {
    let kind = obj["kind"].as_str()?;
    let group = obj["apiVersion"].as_str()?.split('/').next()?;
    let plural = format!("{}s", kind.to_lowercase());
    Some(resource(group, kind, &plural))
}

enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { every: Duration, last: Instant },
    None,
}

impl Progress {
    fn new(mode: &str, total: usize) -> Result<Self, SimulateError> {
        let bar = || {
            let pb = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} provisioned · {msg} · ETA {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            Progress::Bar(pb)
        };
        let lines = || Progress::Lines {
            every: Duration::from_secs(5),
            last: Instant::now(),
        };
        Ok(match mode {
            "auto" if std::io::stderr().is_terminal() => bar(),
            "auto" | "lines" => lines(),
            "bar" => bar(),
            "none" => Progress::None,
            other => {
                return Err(SimulateError::Flag(format!(
                    "--progress {other:?}: expected auto, bar, lines or none"
                )));
            }
        })
    }

    fn update(
        &mut self,
        created: usize,
        counts: (usize, usize, usize),
        started: Instant,
        force: bool,
    ) {
        let (in_flight, provisioned, failed) = counts;
        let msg = format!("created {created} · in flight {in_flight} · failed {failed}");
        match self {
            Progress::Bar(pb) => {
                pb.set_position(provisioned as u64);
                pb.set_message(msg);
            }
            Progress::Lines { every, last } => {
                if force || last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!(
                        "[{:>7.1}s] provisioned {provisioned} · {msg}",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Progress::None => {}
        }
    }

    fn finish(&self) {
        if let Progress::Bar(pb) = self {
            pb.finish();
        }
    }
}

struct Flight {
    tracker: Mutex<Tracker>,
    permits: Mutex<HashMap<String, OwnedSemaphorePermit>>,
}

impl Flight {
    fn land(&self, key: &str) {
        self.permits.lock().remove(key);
    }
}

/// Feed Cluster and Machine events into the tracker until `stop`.
async fn watch_kind(
    client: kube::Client,
    ns: String,
    ar: ApiResource,
    flight: Arc<Flight>,
    stop: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let is_cluster = ar.kind == "Cluster";
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        let Some(event) = event else { return };
        let (obj, deleted) = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => (o, false),
            Ok(watcher::Event::Delete(o)) => (o, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(kind = %ar.kind, error = %e, "simulate watch error; the watcher retries");
                continue;
            }
        };
        let Ok(value) = serde_json::to_value(&obj) else {
            continue;
        };
        let now = Instant::now();
        let done = {
            let mut t = flight.tracker.lock();
            match (is_cluster, deleted) {
                (true, false) => t.observe_cluster(&value, now),
                (false, false) => t.observe_machine(&value, now),
                (false, true) => {
                    t.machine_deleted(&value);
                    None
                }
                (true, true) => None,
            }
        };
        if let Some((key, _)) = done {
            flight.land(&key);
        }
    }
}

async fn create_cluster(
    client: &kube::Client,
    ns: &str,
    objects: Vec<serde_json::Value>,
) -> Result<(), String> {
    for obj in objects {
        let ar = resource_of(&obj).ok_or("object without apiVersion/kind")?;
        let kind = ar.kind.clone();
        let dynamic: DynamicObject =
            serde_json::from_value(obj).map_err(|e| format!("{kind}: {e}"))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        match api.create(&PostParams::default(), &dynamic).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("creating {kind}: {e}")),
        }
    }
    Ok(())
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Run a simulation with the plugins of `--plugins` on `runtime` (its `cloud` is set to a
/// fresh in-memory cloud). Returns after the report is written.
pub async fn run(
    args: SimulateArgs,
    mut runtime: RuntimeConfig,
    stop: CancellationToken,
) -> Result<Finished, SimulateError> {
    if args.concurrency == 0 {
        return Err(SimulateError::Flag(
            "--concurrency must be at least 1".into(),
        ));
    }
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        return Err(SimulateError::Flag(
            "--time-scale must be a number >= 0".into(),
        ));
    }
    if !(args.jitter.is_finite() && args.jitter >= 0.0) {
        return Err(SimulateError::Flag("--jitter must be a number >= 0".into()));
    }
    let metrics_addr =
        manager::parse_bind_address(&args.metrics_bind_address).map_err(SimulateError::Flag)?;
    let mut progress = Progress::new(&args.progress, args.clusters)?;
    let out = args.out.clone();
    std::fs::create_dir_all(&out).map_err(|source| SimulateError::Output {
        path: out.display().to_string(),
        source,
    })?;

    // The management API server, with the CAPI CRDs.
    let mut builder = capstan_apiserver::Server::builder()
        .plain_http()
        .name("capstan-simulate");
    for crd in CAPI_CRDS {
        builder = builder.crd_yaml(crd);
    }
    let server = builder
        .start(&args.api_bind_address)
        .await
        .map_err(|e| SimulateError::ApiServer(e.to_string()))?;
    let kubeconfig = out.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| SimulateError::ApiServer(e.to_string()))?;
    tracing::info!(api = server.url(), kubeconfig = %kubeconfig.display(), "management API server up");
    eprintln!(
        "management API: {}  (kubectl --kubeconfig {} get clusters -A)",
        server.url(),
        kubeconfig.display()
    );

    let mut registry = Registry::default();
    runtime.cloud = Some(Arc::new(InMemoryCloud::new(CloudMetrics::new(
        &mut registry,
    ))));
    let plugins_error = |reason: String| SimulateError::Plugins {
        dir: args.plugins.clone(),
        reason,
    };
    let runtime = Runtime::new(runtime).map_err(|e| plugins_error(e.to_string()))?;
    runtime.register_metrics(&mut registry);
    let plugins = manager::load_plugin_dir(&args.plugins, &runtime).map_err(plugins_error)?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())
            .map_err(|e| SimulateError::ApiServer(e.to_string()))?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| SimulateError::ApiServer(e.to_string()))?;
    let metrics = Arc::new(Metrics::new(&mut registry));
    let registry = Arc::new(registry);
    let client = manager::build_client(config.clone(), Arc::clone(&metrics), 0.0, 0)?;
    let options = ManagerOptions {
        metrics_addr,
        health_addr: None,
        controller: ControllerOptions {
            concurrency: args.plugin_concurrency,
            ..ControllerOptions::default()
        },
        instance: "capstan-simulate".into(),
        leader_election: None,
    };
    let mut mgr = Manager::new(client, Arc::clone(&registry), metrics, options);
    for p in plugins {
        mgr.add_plugin(p).await?;
    }
    let manager_stop = CancellationToken::new();
    let manager_task = tokio::spawn(mgr.run(manager_stop.clone()));

    // The user's side: its own client, creating clusters and watching them.
    let user = kube::Client::try_from(config).map_err(|e| SimulateError::Kube {
        what: "building the simulation client".into(),
        source: Box::new(e),
    })?;
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(user.clone());
    let ns_obj: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": args.namespace}}))
            .map_err(|e| SimulateError::Flag(format!("--namespace: {e}")))?;
    match ns_api.create(&PostParams::default(), &ns_obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(SimulateError::Kube {
                what: format!("creating namespace {}", args.namespace),
                source: Box::new(e),
            });
        }
    }

    let shape = ClusterShape {
        namespace: args.namespace.clone(),
        control_plane_replicas: args.control_plane_replicas,
        workers: args.workers,
        time_scale: args.time_scale,
        jitter: args.jitter,
        ..ClusterShape::default()
    };
    let flight = Arc::new(Flight {
        tracker: Mutex::new(Tracker::new()),
        permits: Mutex::new(HashMap::new()),
    });
    let watch_stop = CancellationToken::new();
    let watchers: Vec<_> = [
        resource("cluster.x-k8s.io", "Cluster", "clusters"),
        resource("cluster.x-k8s.io", "Machine", "machines"),
    ]
    .into_iter()
    .map(|ar| {
        tokio::spawn(watch_kind(
            user.clone(),
            args.namespace.clone(),
            ar,
            Arc::clone(&flight),
            watch_stop.clone(),
        ))
    })
    .collect();

    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let semaphore = Arc::new(Semaphore::new(args.concurrency));
    let mut created_at: Vec<(String, f64)> = Vec::with_capacity(args.clusters);
    let mut queue_depth: Vec<(f64, u64)> = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut interrupted = false;
    let mut next = 0usize;
    loop {
        let all_created = next >= args.clusters;
        let counts = flight.tracker.lock().counts();
        if all_created && counts.0 == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                interrupted = true;
                break;
            }
            _ = sample.tick() => {
                queue_depth.push((started.elapsed().as_secs_f64(), figures::total_queue_depth(&metrics::encode(&registry))));
                let overdue = flight.tracker.lock().overdue(Instant::now(), args.cluster_timeout);
                for key in overdue {
                    tracing::warn!(cluster = %key, timeout = ?args.cluster_timeout, "cluster not provisioned in time; counted as failed");
                    flight.tracker.lock().failed(&key);
                    flight.land(&key);
                }
                progress.update(next, flight.tracker.lock().counts(), started, false);
            }
            permit = Arc::clone(&semaphore).acquire_owned(), if !all_created => {
                let Ok(permit) = permit else { break };
                let name = manifest::cluster_name(next);
                let key = format!("{}/{name}", args.namespace);
                let at = Instant::now();
                created_at.push((name.clone(), at.duration_since(started).as_secs_f64()));
                flight.tracker.lock().created(&key, next, at, shape.expected_machines());
                flight.permits.lock().insert(key.clone(), permit);
                if let Err(e) = create_cluster(&user, &args.namespace, shape.objects(&name)).await {
                    tracing::warn!(cluster = %key, error = %e, "cluster creation failed");
                    flight.tracker.lock().failed(&key);
                    flight.land(&key);
                }
                next += 1;
                progress.update(next, flight.tracker.lock().counts(), started, false);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    progress.update(next, flight.tracker.lock().counts(), started, true);
    progress.finish();
    queue_depth.push((
        wall,
        figures::total_queue_depth(&metrics::encode(&registry)),
    ));

    // Figures before shutting anything down.
    let text = metrics::encode(&registry);
    let api = server.metrics();
    let created = next;
    let process = figures::process(created);
    watch_stop.cancel();
    for w in watchers {
        let _ = w.await;
    }
    manager_stop.cancel();
    match manager_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "manager stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "manager task failed"),
    }

    let tracker = flight.tracker.lock();
    let clusters: Vec<ClusterResult> = tracker
        .all()
        .into_iter()
        .map(|(key, index, state)| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
            let (provisioning_seconds, state) = match state {
                State::Provisioned(d) => (Some(d.as_secs_f64()), "provisioned"),
                State::Failed => (None, "failed"),
                State::Provisioning => (None, "incomplete"),
            };
            ClusterResult {
                index,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                created_at_seconds: created_at.get(index).map_or(0.0, |(_, t)| *t),
                provisioning_seconds,
                state: state.to_owned(),
            }
        })
        .collect();
    drop(tracker);
    let api_requests = figures::api_requests(&api.requests, created);
    let results = Results {
        format: report::FORMAT,
        command: command_line(),
        machine: report::MachineInfo::current(),
        options: RunOptions {
            clusters: args.clusters,
            concurrency: args.concurrency,
            control_plane_replicas: args.control_plane_replicas,
            workers: args.workers,
            time_scale: args.time_scale,
            jitter: args.jitter,
        },
        started_at: started_at.to_string(),
        wall_seconds: wall,
        interrupted,
        summary: report::ProvisioningSummary::of(&clusters),
        controllers: figures::controllers(&text, created),
        api_requests_per_cluster: api.total() as f64 / created.max(1) as f64,
        api_requests,
        process,
        queue_depth,
        clusters,
    };
    write_outputs(&out, &results, args.compare.as_deref())?;
    Ok(Finished { out, results })
}

/// Write results.json, the plots and report.md (with the comparison, if any).
pub fn write_outputs(
    out: &Path,
    results: &Results,
    compare: Option<&Path>,
) -> Result<(), SimulateError> {
    results.write(&out.join("results.json"))?;
    let series = results.provisioning_series();
    plot::provisioning(
        &out.join("provisioning.png"),
        &series,
        report::window_for(series.len()),
    )?;
    plot::queue_depth(&out.join("queue-depth.png"), &results.queue_depth)?;
    let mut md = report::render(
        results,
        &[
            ("provisioning.png", "Provisioning time by cluster index"),
            ("queue-depth.png", "Workqueue depth over time"),
        ],
    );
    if let Some(path) = compare {
        let base = Results::read(path)?;
        md.push('\n');
        md.push_str(&report::render_comparison(
            &base,
            &path.display().to_string(),
            results,
        ));
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|source| SimulateError::Output {
        path: path.display().to_string(),
        source,
    })
}

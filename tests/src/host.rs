//! Helpers for the host integration tests: a per-test Widget kind on either test server, a manager, native fake plugins.
//!
//! Host test bodies run on capstan-apiserver and on the real kube-apiserver
//! ([`server_test!`](crate::server_test)). The real control plane is shared by the tests of a
//! binary, so each test gets a Widget kind of its own ([`HostFixture::new`]: a CRD in group
//! `<tag>.test.capstan.dev`) and its manager sees only its own objects. Write counts come
//! from the manager's own `rest_client_requests_total`, which both servers give the same
//! meaning.

use crate::server::TestServer;

use anyhow::Context as _;
use capstan::controller::{CallFailure, ControllerOptions, Reconcile};
use capstan::manager::{Manager, ManagerOptions, build_client};
use capstan::metrics::Metrics;
use capstan::runtime::bindings::capstan::reconciler::types::{
    Capabilities, Gvk, KeyMapping, Outcome, Permission, PluginInfo, Relation, RelationSelector,
    Snapshot, Target, Verbs, Watch,
};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The Widget CRD of `group`: namespaced, with a status subresource, any fields.
pub fn widget_crd(group: &str) -> String {
    format!(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  names: {{kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#
    )
}

/// The group the built guest fixtures (`host-status`, `host-trap`) reconcile.
pub const GUEST_GROUP: &str = "test.capstan.dev";

/// A WIT gvk.
pub fn gvk(group: &str, version: &str, kind: &str) -> Gvk {
    Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    }
}

/// One host test's world: the server, a client for the test's own actions and a Widget kind
/// of the test's own.
#[derive(Clone)]
pub struct HostFixture {
    /// The test's own (unthrottled) client.
    pub client: kube::Client,
    /// The Widget kind's group.
    pub group: String,
    /// The server's `host:port`, as the manager's REST metrics name it.
    pub host: String,
    kubeconfig: std::path::PathBuf,
}

impl std::fmt::Debug for HostFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFixture")
            .field("group", &self.group)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl HostFixture {
    /// Install the Widget kind of group `<tag>.test.capstan.dev` on `server` and wait until
    /// it is served. `tag` must be a DNS label unique among the binary's tests.
    pub async fn new(server: &TestServer, tag: &str) -> anyhow::Result<Self> {
        Self::with_group(server, &format!("{tag}.{GUEST_GROUP}")).await
    }

    /// The same with an exact group (the built guests reconcile [`GUEST_GROUP`]).
    pub async fn with_group(server: &TestServer, group: &str) -> anyhow::Result<Self> {
        let client = server.client().await?;
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(&widget_crd(group))?;
        let crds: kube::Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = kube::Api::all(client.clone());
        match crds.create(&kube::api::PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(
                    anyhow::Error::from(e).context(format!("installing the Widget CRD of {group}"))
                );
            }
        }
        let fixture = Self {
            client,
            group: group.to_string(),
            host: server_host(server.kubeconfig_path()).await?,
            kubeconfig: server.kubeconfig_path().to_path_buf(),
        };
        // Served once a list answers (the real server establishes CRDs asynchronously).
        eventually(Duration::from_secs(30), || async {
            fixture
                .widgets()
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .is_ok()
        })
        .await
        .with_context(|| format!("Widget kind of {group} never served"))?;
        // And listed by discovery (kube-apiserver publishes a new CRD there a moment
        // after it starts serving it), which the manager resolves kinds through.
        let gv = format!("{group}/v1");
        eventually(Duration::from_secs(30), || async {
            fixture
                .client
                .list_api_group_resources(&gv)
                .await
                .is_ok_and(|l| l.resources.iter().any(|r| r.name == "widgets"))
        })
        .await
        .with_context(|| format!("Widget kind of {group} never in discovery"))?;
        Ok(fixture)
    }

    /// `<group>/v1 Widget`.
    pub fn widget_gvk(&self) -> Gvk {
        gvk(&self.group, "v1", "Widget")
    }

    /// `<group>/v1`.
    pub fn api_version(&self) -> String {
        format!("{}/v1", self.group)
    }

    /// Plugin info reconciling this test's Widgets; may patch and patch-status them.
    pub fn widget_info(&self, name: &str) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            version: "0.0.1".into(),
            primary: self.widget_gvk(),
            watches: Vec::new(),
            relations: Vec::new(),
            permissions: vec![Permission {
                kind: self.widget_gvk(),
                verbs: Verbs::PATCH | Verbs::PATCH_STATUS,
                target: Target::Management,
            }],
            finalizer: None,
            concurrency: Some(2),
            resync_seconds: None,
            capabilities: Capabilities::empty(),
        }
    }

    /// A Widget named `name` in `default` with `extra` top-level fields (`metadata`
    /// entries merged), as JSON text for an outcome.
    pub fn widget_json(&self, name: &str, extra: Value) -> String {
        let mut w = serde_json::json!({"apiVersion": self.api_version(), "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"}});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                match (k.as_str(), v) {
                    ("metadata", Value::Object(m)) => {
                        for (mk, mv) in m {
                            w["metadata"][mk] = mv;
                        }
                    }
                    (_, v) => w[k] = v,
                }
            }
        }
        w.to_string()
    }

    /// The Widget API in `default`.
    pub fn widgets(&self) -> kube::Api<kube::api::DynamicObject> {
        let ar = kube::core::ApiResource {
            group: self.group.clone(),
            version: "v1".into(),
            api_version: self.api_version(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        kube::Api::namespaced_with(self.client.clone(), "default", &ar)
    }

    /// Create a Widget named `name` in `default` with `spec`.
    pub async fn create_widget(&self, name: &str, spec: Value) -> anyhow::Result<Value> {
        let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": self.api_version(), "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))?;
        Ok(serde_json::to_value(
            self.widgets()
                .create(&kube::api::PostParams::default(), &obj)
                .await?,
        )?)
    }

    /// Merge-patch a Widget (as an external actor).
    pub async fn patch_widget(&self, name: &str, patch: Value) -> anyhow::Result<Value> {
        let o = self
            .widgets()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        Ok(serde_json::to_value(o)?)
    }

    /// Read a Widget.
    pub async fn get_widget(&self, name: &str) -> anyhow::Result<Value> {
        Ok(serde_json::to_value(self.widgets().get(name).await?)?)
    }

    /// Start a manager on this server with `plugins`, waiting until it reports ready.
    pub async fn start_manager(
        &self,
        plugins: Vec<Arc<dyn Reconcile>>,
        controller: ControllerOptions,
    ) -> anyhow::Result<RunningManager> {
        start_manager_with(&self.kubeconfig, plugins, controller, None).await
    }
}

/// `host:port` of the server a kubeconfig points at.
async fn server_host(kubeconfig: &std::path::Path) -> anyhow::Result<String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default())
}

type Behaviour = dyn Fn(&Snapshot, &Value) -> Result<Outcome, CallFailure> + Send + Sync;

/// A native plugin whose reconcile is a closure; it records every call.
pub struct FakePlugin {
    info: PluginInfo,
    behaviour: Box<Behaviour>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl std::fmt::Debug for FakePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePlugin")
            .field("name", &self.info.name)
            .finish()
    }
}

impl FakePlugin {
    /// A plugin with `info` behaving as `f(snapshot, parsed primary)`.
    pub fn new(
        info: PluginInfo,
        f: impl Fn(&Snapshot, &Value) -> Result<Outcome, CallFailure> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            info,
            behaviour: Box::new(f),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Calls so far for object `name`.
    pub fn calls_for(&self, name: &str) -> usize {
        self.calls.lock().iter().filter(|(n, _)| n == name).count()
    }

    /// All calls so far.
    pub fn calls(&self) -> usize {
        self.calls.lock().len()
    }

    /// The primary objects seen, in call order.
    pub fn seen(&self) -> Vec<(String, Value)> {
        self.calls.lock().clone()
    }
}

impl Reconcile for FakePlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn reconcile(&self, _key: &str, snapshot: &Snapshot) -> Result<Outcome, CallFailure> {
        let primary: Value = serde_json::from_str(&snapshot.primary).unwrap_or(Value::Null);
        let name = primary["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.calls.lock().push((name, primary.clone()));
        (self.behaviour)(snapshot, &primary)
    }
}

/// Plugin info reconciling the guests' Widgets (`test.capstan.dev/v1`); may patch and
/// patch-status them. For tests that run on capstan-apiserver only.
pub fn widget_info(name: &str) -> PluginInfo {
    let widget = gvk(GUEST_GROUP, "v1", "Widget");
    PluginInfo {
        name: name.into(),
        version: "0.0.1".into(),
        primary: widget.clone(),
        watches: Vec::new(),
        relations: Vec::new(),
        permissions: vec![Permission {
            kind: widget,
            verbs: Verbs::PATCH | Verbs::PATCH_STATUS,
            target: Target::Management,
        }],
        finalizer: None,
        concurrency: Some(2),
        resync_seconds: None,
        capabilities: Capabilities::empty(),
    }
}

/// A capstan-apiserver (plain HTTP) serving the guests' Widget kind.
pub async fn api_server() -> anyhow::Result<capstan_apiserver::Server> {
    Ok(capstan_apiserver::Server::builder()
        .plain_http()
        .crd_yaml(widget_crd(GUEST_GROUP))
        .start("127.0.0.1:0")
        .await?)
}

/// An unthrottled client of a capstan-apiserver, for the test's own actions.
pub async fn test_client(server: &capstan_apiserver::Server) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Start a manager on a capstan-apiserver with `plugins`, waiting until it is ready.
pub async fn start_manager(
    server: &capstan_apiserver::Server,
    plugins: Vec<Arc<dyn Reconcile>>,
    controller: ControllerOptions,
) -> anyhow::Result<RunningManager> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    start_manager_with(&path, plugins, controller, None).await
}

/// The guests' Widget API (`test.capstan.dev/v1`) in `default`.
pub fn widgets(client: &kube::Client) -> kube::Api<kube::api::DynamicObject> {
    let ar = kube::core::ApiResource {
        group: GUEST_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GUEST_GROUP}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    kube::Api::namespaced_with(client.clone(), "default", &ar)
}

/// Create a guests' Widget named `name` in `default` with `spec`.
pub async fn create_widget(
    client: &kube::Client,
    name: &str,
    spec: Value,
) -> anyhow::Result<Value> {
    let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{GUEST_GROUP}/v1"), "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))?;
    Ok(serde_json::to_value(
        widgets(client)
            .create(&kube::api::PostParams::default(), &obj)
            .await?,
    )?)
}

/// Merge-patch a guests' Widget (as an external actor).
pub async fn patch_widget(
    client: &kube::Client,
    name: &str,
    patch: Value,
) -> anyhow::Result<Value> {
    let o = widgets(client)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(serde_json::to_value(o)?)
}

/// Read a guests' Widget.
pub async fn get_widget(client: &kube::Client, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(widgets(client).get(name).await?)?)
}

/// A watch of `kind` mapped by `mapping`.
pub fn watch(kind: Gvk, mapping: KeyMapping) -> Watch {
    Watch {
        kind,
        mapping,
        target: Target::Management,
    }
}

/// A relation named `name` of `kind` found by `selector`.
pub fn relation(name: &str, kind: Gvk, selector: RelationSelector) -> Relation {
    Relation {
        name: name.into(),
        kind,
        selector,
        target: Target::Management,
        namespace: None,
    }
}

/// An outcome with nothing to do.
pub fn empty_outcome() -> Outcome {
    Outcome {
        apply: Vec::new(),
        status: Vec::new(),
        delete: Vec::new(),
        events: Vec::new(),
        requeue_after_ms: None,
        workload_apply: Vec::new(),
        workload_status: Vec::new(),
        workload_delete: Vec::new(),
    }
}

/// A running manager.
#[derive(Debug)]
pub struct RunningManager {
    /// Fire to shut down.
    pub stop: CancellationToken,
    /// The manager task.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Where /metrics is served.
    pub metrics_addr: SocketAddr,
    /// Where /healthz and /readyz are served.
    pub health_addr: SocketAddr,
    /// The manager's metrics (readable after shutdown too).
    pub registry: Arc<Registry>,
}

/// HTTP methods that change objects.
const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

impl RunningManager {
    /// Stop and wait for a clean exit; returns the write requests the manager sent in all.
    pub async fn shutdown(self) -> anyhow::Result<u64> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .context("manager did not stop")???;
        Ok(rest_requests(&self.registry, |method, _| {
            WRITE_METHODS.contains(&method)
        }))
    }

    /// Write requests (create, update, patch, delete) this manager sent so far, any answer.
    pub fn writes(&self) -> u64 {
        rest_requests(&self.registry, |method, _| WRITE_METHODS.contains(&method))
    }

    /// Requests with `method` this manager sent that got `code`.
    pub fn requests_with(&self, method: &str, code: &str) -> u64 {
        rest_requests(&self.registry, |m, c| m == method && c == code)
    }

    /// Requests with `method` this manager sent, any answer.
    pub fn requests(&self, method: &str) -> u64 {
        rest_requests(&self.registry, |m, _| m == method)
    }
}

/// The sum of `rest_client_requests_total` series whose (method, code) match.
fn rest_requests(registry: &Registry, keep: impl Fn(&str, &str) -> bool) -> u64 {
    let body = capstan::metrics::encode(registry);
    let label = |line: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        line.split_once(&key)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    body.lines()
        .filter(|l| l.starts_with("rest_client_requests_total{"))
        .filter(|l| keep(&label(l, "method"), &label(l, "code")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Start a manager from `kubeconfig` with `plugins`, waiting until it reports ready (and,
/// with `leader_election`, not waiting for leadership).
pub async fn start_manager_with(
    kubeconfig: &std::path::Path,
    plugins: Vec<Arc<dyn Reconcile>>,
    controller: ControllerOptions,
    leader_election: Option<capstan::leader::LeaderElectionConfig>,
) -> anyhow::Result<RunningManager> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = build_client(config, Arc::clone(&metrics), 100.0, 200)?;
    let options = ManagerOptions {
        metrics_addr: Some("127.0.0.1:0".parse()?),
        health_addr: Some("127.0.0.1:0".parse()?),
        controller,
        instance: "capstan-test".into(),
        leader_election,
    };
    // The manager registers its own families while it holds the only reference.
    let mut manager = Manager::new(client, Arc::new(registry), metrics, options);
    let registry = Arc::clone(manager.registry());
    for p in plugins {
        manager.add_plugin(p).await?;
    }
    let (m, h) = manager.bind().await?;
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { Ok(manager.run(stop).await?) })
    };
    let running = RunningManager {
        stop,
        task,
        metrics_addr: m.context("metrics listener")?,
        health_addr: h.context("health listener")?,
        registry,
    };
    eventually(Duration::from_secs(30), || async {
        http_get(running.health_addr, "/readyz")
            .await
            .is_ok_and(|(code, _)| code == 200)
    })
    .await
    .context("manager never became ready")?;
    Ok(running)
}

/// GET `path` from `addr`; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Poll `f` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The metric sample `line` (name{labels}) value in a /metrics body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The built component of guest crate `crate_name` (release, wasm32-wasip2), from
/// `CARGO_TARGET_DIR` or `<workspace>/target`. Fails naming `make guests` when missing.
pub fn guest_component(crate_name: &str) -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    anyhow::ensure!(
        path.is_file(),
        "guest component {} is missing: run `make guests` first",
        path.display()
    );
    Ok(path)
}

/// The `capstan` binary for end-to-end tests: `CAPSTAN_BIN` when set, else
/// `<target>/debug/capstan`, which `cargo test --workspace` (`make test`) builds fresh for
/// the host's CLI tests. When it is missing or older than the host's sources (a narrower
/// `cargo test -p capstan-tests`), it is built with `cargo build -p capstan` first.
pub fn capstan_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("CAPSTAN_BIN") {
        return Ok(bin.into());
    }
    let bin = crate::target_dir().join("debug/capstan");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let stale = match built {
        None => true,
        Some(built) => newest_source(&crate::workspace_root().join("host"))
            .is_some_and(|newest| newest > built),
    };
    if stale {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "capstan", "--bin", "capstan"])
            .current_dir(crate::workspace_root())
            .env("CARGO_TARGET_DIR", crate::target_dir())
            .status()
            .context("running cargo build -p capstan")?;
        anyhow::ensure!(status.success(), "cargo build -p capstan failed: {status}");
    }
    anyhow::ensure!(bin.is_file(), "{} is missing", bin.display());
    Ok(bin)
}

/// The newest modification time of `host/src/**` and `host/Cargo.toml`.
fn newest_source(host: &std::path::Path) -> Option<std::time::SystemTime> {
    fn walk(dir: &std::path::Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(t));
            }
        }
    }
    let mut newest = std::fs::metadata(host.join("Cargo.toml"))
        .and_then(|m| m.modified())
        .ok();
    walk(&host.join("src"), &mut newest);
    newest
}

//! Helpers for the host integration tests: an in-memory API server, a manager, native fake plugins.

use anyhow::Context as _;
use capstan::controller::{CallFailure, ControllerOptions, Reconcile};
use capstan::manager::{Manager, ManagerOptions, build_client};
use capstan::metrics::Metrics;
use capstan::runtime::bindings::capstan::reconciler::types::{
    Capabilities, Gvk, KeyMapping, Outcome, Permission, PluginInfo, Relation, RelationSelector,
    Snapshot, Target, Verbs, Watch,
};
use capstan_apiserver::Server;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The test kind: `test.capstan.dev/v1 Widget`, namespaced, with a status subresource.
pub const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.capstan.dev
spec:
  group: test.capstan.dev
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

/// `test.capstan.dev/v1 Widget`.
pub fn widget_gvk() -> Gvk {
    gvk("test.capstan.dev", "v1", "Widget")
}

/// A WIT gvk.
pub fn gvk(group: &str, version: &str, kind: &str) -> Gvk {
    Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    }
}

/// Start an in-memory API server (plain HTTP) serving the Widget CRD.
pub async fn api_server() -> anyhow::Result<Server> {
    Ok(Server::builder()
        .plain_http()
        .crd_yaml(WIDGET_CRD)
        .start("127.0.0.1:0")
        .await?)
}

/// An unthrottled client for the test's own actions.
pub async fn test_client(server: &Server) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Write requests (create, update, patch, apply, delete) the server answered, events excluded.
pub fn write_requests(server: &Server) -> u64 {
    server
        .metrics()
        .requests
        .iter()
        .filter(|((verb, resource, _), _)| {
            matches!(verb.as_str(), "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE")
                && !resource.starts_with("events")
        })
        .map(|(_, n)| n)
        .sum()
}

/// Requests of `verb` that got `code`.
pub fn requests_with_code(server: &Server, verb: &str, code: u16) -> u64 {
    server
        .metrics()
        .requests
        .iter()
        .filter(|((v, _, c), _)| v == verb && *c == code)
        .map(|(_, n)| n)
        .sum()
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

/// Plugin info reconciling Widgets with the given extras; may patch and patch-status Widgets.
pub fn widget_info(name: &str) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: "0.0.1".into(),
        primary: widget_gvk(),
        watches: Vec::new(),
        relations: Vec::new(),
        permissions: vec![Permission {
            kind: widget_gvk(),
            verbs: Verbs::PATCH | Verbs::PATCH_STATUS,
            target: Target::Management,
        }],
        finalizer: None,
        concurrency: Some(2),
        resync_seconds: None,
        capabilities: Capabilities::empty(),
    }
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
}

impl RunningManager {
    /// Stop and wait for a clean exit.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .context("manager did not stop")???;
        Ok(())
    }
}

/// Start a manager on `server` with `plugins`, waiting until it reports ready.
pub async fn start_manager(
    server: &Server,
    plugins: Vec<Arc<dyn Reconcile>>,
    controller: ControllerOptions,
) -> anyhow::Result<RunningManager> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let kc = kube::config::Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = build_client(config, Arc::clone(&metrics), 100.0, 200)?;
    let options = ManagerOptions {
        metrics_addr: Some("127.0.0.1:0".parse()?),
        health_addr: Some("127.0.0.1:0".parse()?),
        controller,
        instance: "capstan-test".into(),
    };
    let mut manager = Manager::new(client, Arc::new(registry), metrics, options);
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
    };
    eventually(Duration::from_secs(10), || async {
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

/// Create a Widget named `name` in `default` with `spec`.
pub async fn create_widget(
    client: &kube::Client,
    name: &str,
    spec: Value,
) -> anyhow::Result<Value> {
    let api = widgets(client);
    let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "test.capstan.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))?;
    Ok(serde_json::to_value(
        api.create(&kube::api::PostParams::default(), &obj).await?,
    )?)
}

/// The Widget API in `default`.
pub fn widgets(client: &kube::Client) -> kube::Api<kube::api::DynamicObject> {
    let ar = kube::core::ApiResource {
        group: "test.capstan.dev".into(),
        version: "v1".into(),
        api_version: "test.capstan.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    kube::Api::namespaced_with(client.clone(), "default", &ar)
}

/// Merge-patch a Widget (as an external actor).
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

/// Read a Widget.
pub async fn get_widget(client: &kube::Client, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(widgets(client).get(name).await?)?)
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

//! End-to-end fixture of the Cluster API tests: a management API server with CAPI's CRDs, the real `capstan run` binary with the built plugins and the in-memory cloud, kubectl as the client, waits that explain themselves, and the CAPI contract check.
//!
//! [`CapiEnv::start`] works on either [`TestServer`] (capstan-apiserver or the real
//! kube-apiserver): it installs the CRDs of `tests/fixtures/capi-crds` through the API, makes
//! the test's namespace, and starts `capstan run --plugins <built CAPI components> --cloud
//! in-memory` as a child process (killed on drop) whose log goes to a file the failure
//! messages quote. Every action of the test goes through [`Kubectl`], a real client that no one
//! here wrote; the tests only read through kube-rs where they need a watch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use crate::server::{ServerKind, TestServer};

/// How long one kubectl request may take (`--request-timeout`).
const KUBECTL_REQUEST_TIMEOUT: &str = "30s";
/// How many lines of the manager's log a failure message quotes.
const LOG_TAIL_LINES: usize = 80;
/// How long the manager may take to load and compile the plugins and serve (a debug build on a
/// busy 2-core machine compiles nine components when the artifact cache is cold).
const MANAGER_START_TIMEOUT: Duration = Duration::from_secs(300);

/// A CAPI kind as kubectl names it (`<plural>.<group>`), with its apiVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `Kind`.
    pub kind: &'static str,
    /// `group/version`.
    pub api_version: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
}

impl Kind {
    /// `<plural>.<group>` (`plural` for the core group), unambiguous for kubectl.
    pub fn resource(&self) -> String {
        match self.api_version.split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural),
            None => self.plural.to_string(),
        }
    }

    /// The API group (`""` for core).
    pub fn group(&self) -> &'static str {
        self.api_version.split_once('/').map_or("", |(g, _)| g)
    }

    /// A kube-rs resource for this kind.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", self.api_version));
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind),
            self.plural,
        )
    }
}

/// `cluster.x-k8s.io/v1beta2` Cluster.
pub const CLUSTER: Kind = Kind {
    kind: "Cluster",
    api_version: "cluster.x-k8s.io/v1beta2",
    plural: "clusters",
};
/// Machine.
pub const MACHINE: Kind = Kind {
    kind: "Machine",
    api_version: "cluster.x-k8s.io/v1beta2",
    plural: "machines",
};
/// MachineSet.
pub const MACHINE_SET: Kind = Kind {
    kind: "MachineSet",
    api_version: "cluster.x-k8s.io/v1beta2",
    plural: "machinesets",
};
/// MachineDeployment.
pub const MACHINE_DEPLOYMENT: Kind = Kind {
    kind: "MachineDeployment",
    api_version: "cluster.x-k8s.io/v1beta2",
    plural: "machinedeployments",
};
/// MachineHealthCheck.
pub const MACHINE_HEALTH_CHECK: Kind = Kind {
    kind: "MachineHealthCheck",
    api_version: "cluster.x-k8s.io/v1beta2",
    plural: "machinehealthchecks",
};
/// KubeadmControlPlane.
pub const KCP: Kind = Kind {
    kind: "KubeadmControlPlane",
    api_version: "controlplane.cluster.x-k8s.io/v1beta2",
    plural: "kubeadmcontrolplanes",
};
/// KubeadmConfig.
pub const KUBEADM_CONFIG: Kind = Kind {
    kind: "KubeadmConfig",
    api_version: "bootstrap.cluster.x-k8s.io/v1beta2",
    plural: "kubeadmconfigs",
};
/// KubeadmConfigTemplate.
pub const KUBEADM_CONFIG_TEMPLATE: Kind = Kind {
    kind: "KubeadmConfigTemplate",
    api_version: "bootstrap.cluster.x-k8s.io/v1beta2",
    plural: "kubeadmconfigtemplates",
};
/// DevCluster.
pub const DEV_CLUSTER: Kind = Kind {
    kind: "DevCluster",
    api_version: "infrastructure.cluster.x-k8s.io/v1beta2",
    plural: "devclusters",
};
/// DevMachine.
pub const DEV_MACHINE: Kind = Kind {
    kind: "DevMachine",
    api_version: "infrastructure.cluster.x-k8s.io/v1beta2",
    plural: "devmachines",
};
/// DevMachineTemplate.
pub const DEV_MACHINE_TEMPLATE: Kind = Kind {
    kind: "DevMachineTemplate",
    api_version: "infrastructure.cluster.x-k8s.io/v1beta2",
    plural: "devmachinetemplates",
};
/// Secret.
pub const SECRET: Kind = Kind {
    kind: "Secret",
    api_version: "v1",
    plural: "secrets",
};

/// Every namespaced kind a CAPI cluster is made of (what "every object of the cluster" means).
pub const CLUSTER_KINDS: [Kind; 12] = [
    CLUSTER,
    DEV_CLUSTER,
    KCP,
    MACHINE_DEPLOYMENT,
    MACHINE_SET,
    MACHINE,
    MACHINE_HEALTH_CHECK,
    KUBEADM_CONFIG,
    DEV_MACHINE,
    KUBEADM_CONFIG_TEMPLATE,
    DEV_MACHINE_TEMPLATE,
    SECRET,
];

/// The cluster-name label.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// The directory of the built CAPI components: `CAPSTAN_CAPI_PLUGINS` when set, else
/// `<target>/plugins/capi` (`make capi-plugins`, part of `make guests`).
pub fn capi_plugin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CAPSTAN_CAPI_PLUGINS")
        .map_or_else(|| crate::target_dir().join("plugins/capi"), PathBuf::from);
    ensure!(
        dir.join("capi_cluster.wasm").is_file(),
        "{} has no CAPI plugins: run `make capi-plugins` (part of `make guests`) first",
        dir.display()
    );
    Ok(dir)
}

/// The kubectl binary: `KUBECTL` when set, else Debian's or a local one.
pub fn kubectl_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Ok(p.into());
    }
    for p in ["/usr/bin/kubectl", "/usr/local/bin/kubectl"] {
        if Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    bail!(
        "kubectl not found: run `make tools` (installs Debian's kubernetes-client) or set KUBECTL"
    )
}

/// kubectl against one kubeconfig, with its own discovery cache.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// kubectl using `kubeconfig`, caching discovery under `cache`.
    pub fn new(kubeconfig: &Path, cache: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            bin: kubectl_binary()?,
            kubeconfig: kubeconfig.to_path_buf(),
            cache: cache.to_path_buf(),
        })
    }

    /// The same binary against another kubeconfig (a workload cluster's), with its own cache.
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Self {
        let mut cache = self.cache.clone().into_os_string();
        cache.push("-");
        cache.push(kubeconfig.file_name().unwrap_or_default());
        Self {
            bin: self.bin.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            cache: cache.into(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg(format!("--request-timeout={KUBECTL_REQUEST_TIMEOUT}"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs kubectl with `input` on stdin; returns (success, stdout, stderr).
    pub async fn output(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<(bool, String, String)> {
        let mut cmd = self.command(args);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let input = input.map(str::to_owned);
        let what = format!("kubectl {}", args.join(" "));
        let out = tokio::task::spawn_blocking(move || -> std::io::Result<std::process::Output> {
            let mut child = cmd.spawn()?;
            if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
                use std::io::Write as _;
                stdin.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
        .await?
        .with_context(|| format!("running {what}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs kubectl; returns stdout, failing with stderr on a non-zero exit.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_stdin(args, None).await
    }

    async fn run_stdin(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        let (ok, stdout, stderr) = self.output(args, input).await?;
        ensure!(ok, "kubectl {} failed: {stderr}{stdout}", args.join(" "));
        Ok(stdout)
    }

    /// `kubectl apply -f -` of a manifest.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        self.run_stdin(&["apply", "-f", "-"], Some(manifest)).await
    }

    /// `kubectl apply -f <file>`.
    pub async fn apply_file(&self, file: &Path) -> anyhow::Result<String> {
        let file = file.to_string_lossy();
        self.run(&["apply", "-f", &file]).await
    }

    /// `kubectl get <what> -o json` in `namespace` (`None`: cluster-scoped).
    pub async fn get_json(&self, namespace: Option<&str>, what: &[&str]) -> anyhow::Result<Value> {
        let mut args = Vec::new();
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args.push("get");
        args.extend(what);
        args.extend(["-o", "json"]);
        let out = self.run(&args).await?;
        serde_json::from_str(&out).with_context(|| format!("kubectl get {what:?} printed {out}"))
    }

    /// One object, or `None` when it does not exist.
    pub async fn get(
        &self,
        namespace: &str,
        kind: Kind,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let resource = kind.resource();
        let args = [
            "-n",
            namespace,
            "get",
            resource.as_str(),
            name,
            "-o",
            "json",
        ];
        let (ok, stdout, stderr) = self.output(&args, None).await?;
        if !ok {
            if stderr.contains("NotFound") || stderr.contains("not found") {
                return Ok(None);
            }
            bail!("kubectl get {resource} {name} failed: {stderr}");
        }
        Ok(Some(serde_json::from_str(&stdout)?))
    }

    /// Objects of `kind` in `namespace` matching `selector` (`""`: all).
    pub async fn list(
        &self,
        namespace: &str,
        kind: Kind,
        selector: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let resource = kind.resource();
        let mut what = vec![resource.as_str()];
        if !selector.is_empty() {
            what.extend(["-l", selector]);
        }
        let list = self.get_json(Some(namespace), &what).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// `kubectl patch --type merge` (`subresource`: `Some("status")` for the status).
    pub async fn patch(
        &self,
        namespace: Option<&str>,
        kind: &str,
        name: &str,
        subresource: Option<&str>,
        patch: &Value,
    ) -> anyhow::Result<String> {
        let patch = patch.to_string();
        let sub = subresource.map(|s| format!("--subresource={s}"));
        let mut args = Vec::new();
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args.extend(["patch", kind, name, "--type", "merge", "-p", patch.as_str()]);
        if let Some(s) = &sub {
            args.push(s);
        }
        self.run(&args).await
    }

    /// `kubectl scale --replicas`.
    pub async fn scale(
        &self,
        namespace: &str,
        kind: Kind,
        name: &str,
        replicas: u32,
    ) -> anyhow::Result<String> {
        let target = format!("{}/{name}", kind.resource());
        let replicas = format!("--replicas={replicas}");
        self.run(&["-n", namespace, "scale", &target, &replicas])
            .await
    }

    /// `kubectl delete --wait=false`.
    pub async fn delete(&self, namespace: &str, kind: Kind, name: &str) -> anyhow::Result<String> {
        let target = format!("{}/{name}", kind.resource());
        self.run(&["-n", namespace, "delete", &target, "--wait=false"])
            .await
    }
}

/// `capstan run` as a child process, killed on drop.
#[derive(Debug)]
pub struct ManagerProcess {
    child: Child,
    log: PathBuf,
    /// Where /metrics is served.
    pub metrics_addr: SocketAddr,
    /// Where /healthz and /readyz are served.
    pub health_addr: SocketAddr,
}

impl ManagerProcess {
    /// Start `capstan run` against `kubeconfig` with every component of `plugins` and the
    /// in-memory cloud, logging to `log`; returns once /readyz answers 200.
    pub async fn start(kubeconfig: &Path, plugins: &Path, log: &Path) -> anyhow::Result<Self> {
        let bin = crate::host::capstan_binary()?;
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--plugins")
            .arg(plugins)
            .args(["--cloud", "in-memory"])
            .args(["--metrics-bind-address", "127.0.0.1:0"])
            .args(["--health-probe-bind-address", "127.0.0.1:0"])
            // Loaded once: other builds may rewrite the shared plugin folder meanwhile.
            .args(["--plugin-reload", "false"])
            .arg("--cache-dir")
            .arg(crate::target_dir().join("capstan-artifacts"))
            .env_remove("KUBECONFIG")
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("CAPSTAN_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut this = Self {
            child,
            log: log.to_path_buf(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            health_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = tokio::time::Instant::now() + MANAGER_START_TIMEOUT;
        loop {
            if let Some(status) = this.child.try_wait()? {
                bail!(
                    "capstan run exited during startup ({status}); log:\n{}",
                    this.log_tail(LOG_TAIL_LINES)
                );
            }
            if let Some((m, h)) = serving_addresses(&this.log_text()) {
                this.metrics_addr = m;
                this.health_addr = h;
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "capstan run did not serve within {MANAGER_START_TIMEOUT:?}; log:\n{}",
                this.log_tail(LOG_TAIL_LINES)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready = crate::host::eventually(Duration::from_secs(60), || async {
            crate::host::http_get(this.health_addr, "/readyz")
                .await
                .is_ok_and(|(code, _)| code == 200)
        })
        .await;
        if ready.is_err() {
            bail!(
                "capstan run never became ready; log:\n{}",
                this.log_tail(LOG_TAIL_LINES)
            );
        }
        Ok(this)
    }

    /// The whole log so far, ANSI colours removed.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The log lines containing any of `needles`.
    pub fn log_grep(&self, needles: &[&str]) -> String {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (code, body) = crate::host::http_get(self.metrics_addr, "/metrics").await?;
        ensure!(code == 200, "/metrics answered {code}: {body}");
        Ok(body)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `metrics=Some(a) health=Some(b)` of the manager's "serving" log line.
fn serving_addresses(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log
        .lines()
        .find(|l| l.contains("serving") && l.contains("metrics="))?;
    let field = |name: &str| -> Option<SocketAddr> {
        let rest = line.split_once(&format!("{name}=Some("))?.1;
        rest.split_once(')')?.0.parse().ok()
    };
    Some((field("metrics")?, field("health")?))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The sum of the samples of `family` (Prometheus text) whose labels include every `(k, v)`.
pub fn metric_sum(body: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Installs CAPI's CRDs (`tests/fixtures/capi-crds`) through the API (an existing one is
/// kept) and waits until each kind is listed by discovery and answers a list.
pub async fn install_capi_crds(client: &kube::Client) -> anyhow::Result<()> {
    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let dir = crate::fixture("capi-crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let value: Value =
            serde_yaml::from_str(&text).with_context(|| file.display().to_string())?;
        let obj: DynamicObject = serde_json::from_value(value)?;
        match crds.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(
                    anyhow::Error::from(e).context(format!("installing {}", file.display()))
                );
            }
        }
    }
    for kind in CLUSTER_KINDS.iter().filter(|k| k.group() != "") {
        let gv = kind.api_version;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        crate::host::eventually(Duration::from_secs(60), || async {
            client
                .list_api_group_resources(gv)
                .await
                .is_ok_and(|l| l.resources.iter().any(|r| r.name == kind.plural))
                && api
                    .list(&kube::api::ListParams::default().limit(1))
                    .await
                    .is_ok()
        })
        .await
        .with_context(|| format!("{} of {gv} never served", kind.kind))?;
    }
    Ok(())
}

/// One Cluster API end-to-end world: the server, the test's namespace, the manager process,
/// kubectl.
pub struct CapiEnv {
    /// Which server this runs on.
    pub kind: ServerKind,
    /// The test's namespace (created by [`CapiEnv::start`]).
    pub namespace: String,
    /// An admin client (for watches).
    pub client: kube::Client,
    /// kubectl against the management cluster.
    pub kubectl: Kubectl,
    /// The `capstan run` process.
    pub manager: ManagerProcess,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for CapiEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapiEnv")
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl CapiEnv {
    /// Install the CRDs on `server`, create `namespace`, start the manager.
    pub async fn start(server: &TestServer, namespace: &str) -> anyhow::Result<Self> {
        let client = server.client().await?;
        install_capi_crds(&client).await?;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}}))?;
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(
                    anyhow::Error::from(e).context(format!("creating namespace {namespace}"))
                );
            }
        }
        let dir = tempfile::Builder::new().prefix("capstan-e2e-").tempdir()?;
        let kubectl = Kubectl::new(server.kubeconfig_path(), &dir.path().join("kubectl-cache"))?;
        let manager = ManagerProcess::start(
            server.kubeconfig_path(),
            &capi_plugin_dir()?,
            &dir.path().join("manager.log"),
        )
        .await?;
        Ok(Self {
            kind: server.kind(),
            namespace: namespace.to_string(),
            client,
            kubectl,
            manager,
            dir,
        })
    }

    /// A scratch folder of this test (removed at the end).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One object of the test's namespace, or `None`.
    pub async fn get(&self, kind: Kind, name: &str) -> anyhow::Result<Option<Value>> {
        self.kubectl.get(&self.namespace, kind, name).await
    }

    /// Objects of `kind` in the test's namespace matching `selector`.
    pub async fn list(&self, kind: Kind, selector: &str) -> anyhow::Result<Vec<Value>> {
        self.kubectl.list(&self.namespace, kind, selector).await
    }

    /// Every object of cluster `cluster`: the Cluster itself, everything labelled with its
    /// name, and everything named in its references (kinds of [`CLUSTER_KINDS`]).
    pub async fn cluster_objects(&self, cluster: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        if let Some(c) = self.get(CLUSTER, cluster).await? {
            out.push(c);
        }
        for kind in CLUSTER_KINDS.iter().filter(|k| **k != CLUSTER) {
            out.extend(
                self.list(*kind, &format!("{CLUSTER_NAME_LABEL}={cluster}"))
                    .await?,
            );
        }
        Ok(out)
    }

    /// A compact summary of every CAPI object of the namespace (kind/name, phase, conditions,
    /// deletion) for failure messages.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for kind in CLUSTER_KINDS {
            let Ok(items) = self.list(kind, "").await else {
                out.push_str(&format!("{}: (list failed)\n", kind.kind));
                continue;
            };
            for o in items {
                out.push_str(&summarize(&o));
                out.push('\n');
            }
        }
        out
    }

    /// A failure report: what was awaited, the last observation, the objects, the log tail.
    pub async fn report(&self, what: &str, last: &str) -> String {
        format!(
            "{what}\nlast observation: {last}\n--- objects in {} ---\n{}--- manager log (tail) ---\n{}",
            self.namespace,
            self.describe().await,
            self.manager.log_tail(LOG_TAIL_LINES)
        )
    }

    /// Poll `check` (every 250 ms) until it returns `Ok(Some(_))` or `timeout` passes; then
    /// fail with `what`, the last observation (`Ok(None)` is "not yet"; an error is kept as the
    /// last observation), the namespace's objects and the manager's log tail.
    pub async fn wait_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
    {
        let started = tokio::time::Instant::now();
        let mut last;
        loop {
            match check().await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(observed)) => last = observed,
                Err(e) => last = format!("error: {e:#}"),
            }
            if started.elapsed() > timeout {
                bail!(
                    "{}",
                    self.report(
                        &format!("timed out after {timeout:?} waiting for {what}"),
                        &last
                    )
                    .await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `examples/capi/cluster-in-memory.yaml` as cluster `name` in `namespace`, with sub-second
/// startup durations (the in-memory backend's "boot" times; the example's seconds only slow a
/// test down). Objects: Cluster `name`, DevCluster `name`, KubeadmControlPlane and
/// DevMachineTemplate `<name>-cp`, KubeadmConfigTemplate `<name>-workers`.
pub fn example_cluster_manifest(namespace: &str, name: &str) -> anyhow::Result<String> {
    let path = crate::workspace_root().join("examples/capi/cluster-in-memory.yaml");
    let example =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let out = example
        .replace("namespace: default", &format!("namespace: {namespace}"))
        .replace("name: demo-cp", &format!("name: {name}-cp"))
        .replace("name: demo-workers", &format!("name: {name}-workers"))
        .replace("name: demo", &format!("name: {name}"))
        .replace("startupDuration: 3s", "startupDuration: 300ms")
        .replace("startupDuration: 1s", "startupDuration: 200ms");
    ensure!(
        !out.contains("demo") && !out.contains("startupDuration: 1s"),
        "{} changed; update example_cluster_manifest's substitutions:\n{out}",
        path.display()
    );
    Ok(out)
}

impl CapiEnv {
    /// kubectl against cluster `cluster`'s workload API, with the admin kubeconfig read from
    /// its `<cluster>-kubeconfig` Secret (written to the test's folder).
    pub async fn workload_kubectl(&self, cluster: &str) -> anyhow::Result<Kubectl> {
        use base64::Engine as _;
        let secret = self
            .get(SECRET, &format!("{cluster}-kubeconfig"))
            .await?
            .with_context(|| format!("no Secret {cluster}-kubeconfig"))?;
        ensure!(
            secret["type"] == "cluster.x-k8s.io/secret",
            "{cluster}-kubeconfig has type {}",
            secret["type"]
        );
        let value = secret["data"]["value"]
            .as_str()
            .with_context(|| format!("{cluster}-kubeconfig has no data.value"))?;
        let kubeconfig = base64::engine::general_purpose::STANDARD.decode(value)?;
        let path = self.dir().join(format!("{cluster}.kubeconfig"));
        std::fs::write(&path, &kubeconfig)?;
        Ok(self.kubectl.with_kubeconfig(&path))
    }
}

/// A background task (a test's watch) aborted when the guard drops, also on failure.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `Kind/name phase=.. [Type=Status(Reason) ...] deleting` of an object.
pub fn summarize(o: &Value) -> String {
    let mut s = format!(
        "{}/{}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    );
    if let Some(p) = o["status"]["phase"].as_str() {
        s.push_str(&format!(" phase={p}"));
    }
    if let Some(t) = o["metadata"]["deletionTimestamp"].as_str() {
        s.push_str(&format!(" deleting-since={t}"));
    }
    if let Some(f) = o["metadata"]["finalizers"].as_array() {
        s.push_str(&format!(" finalizers={f:?}"));
    }
    if let Some(cs) = o["status"]["conditions"].as_array() {
        let cs: Vec<String> = cs
            .iter()
            .map(|c| {
                format!(
                    "{}={}({})",
                    c["type"].as_str().unwrap_or("?"),
                    c["status"].as_str().unwrap_or("?"),
                    c["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        s.push_str(&format!(" [{}]", cs.join(" ")));
    }
    s
}

/// The condition `type` of an object, if present.
pub fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether condition `type_` has status `True`.
pub fn is_true(o: &Value, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c["status"] == "True")
}

/// An object's name.
pub fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

/// A label of an object.
pub fn label<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["labels"][key].as_str()
}

// ---------------------------------------------------------------------------------------------
// The CAPI contract over a cluster's objects (reference.md §1.2-1.6).
// ---------------------------------------------------------------------------------------------

/// v1beta2 condition types per kind (reference §1.5), plus the in-memory backend's (§3.3).
fn allowed_condition_types(kind: &str) -> &'static [&'static str] {
    match kind {
        "Cluster" => &[
            "Available",
            "InfrastructureReady",
            "ControlPlaneInitialized",
            "ControlPlaneAvailable",
            "WorkersAvailable",
            "ControlPlaneMachinesReady",
            "WorkerMachinesReady",
            "ControlPlaneMachinesUpToDate",
            "WorkerMachinesUpToDate",
            "RemoteConnectionProbe",
            "RollingOut",
            "ScalingUp",
            "ScalingDown",
            "Remediating",
            "Deleting",
            "TopologyReconciled",
            "Paused",
        ],
        "Machine" => &[
            "Available",
            "Ready",
            "UpToDate",
            "Updating",
            "BootstrapConfigReady",
            "InfrastructureReady",
            "NodeHealthy",
            "NodeReady",
            "HealthCheckSucceeded",
            "OwnerRemediated",
            "ExternallyRemediated",
            "Deleting",
            "Paused",
        ],
        "MachineSet" => &[
            "ScalingUp",
            "ScalingDown",
            "MachinesReady",
            "MachinesUpToDate",
            "Remediating",
            "Deleting",
            "Paused",
        ],
        "MachineDeployment" => &[
            "Available",
            "RollingOut",
            "ScalingUp",
            "ScalingDown",
            "MachinesReady",
            "MachinesUpToDate",
            "Remediating",
            "Deleting",
            "Paused",
        ],
        "MachineHealthCheck" => &["RemediationAllowed", "Paused"],
        "KubeadmControlPlane" => &[
            "Available",
            "Initialized",
            "CertificatesAvailable",
            "EtcdClusterHealthy",
            "ControlPlaneComponentsHealthy",
            "MachinesReady",
            "MachinesUpToDate",
            "RollingOut",
            "ScalingUp",
            "ScalingDown",
            "Remediating",
            "Deleting",
            "Paused",
        ],
        "KubeadmConfig" => &[
            "Ready",
            "DataSecretAvailable",
            "CertificatesAvailable",
            "Paused",
        ],
        "DevCluster" => &["Ready", "Paused", "Deleting"],
        "DevMachine" => &[
            "Ready",
            "VMProvisioned",
            "NodeProvisioned",
            "EtcdProvisioned",
            "APIServerProvisioned",
            "Paused",
            "Deleting",
        ],
        _ => &[],
    }
}

/// Reasons CAPI's v1beta2 API packages define for a condition type (`api/core/v1beta2`,
/// `api/controlplane/kubeadm/v1beta2`, `api/bootstrap/kubeadm/v1beta2`, CAPD's in-memory
/// backend), plus the generic ones every mirror/summary may carry. A reason outside these is
/// a contract violation: CAPI users alert and filter on them.
fn allowed_reasons(kind: &str, type_: &str) -> Vec<&'static str> {
    // Summaries and mirrors (util/conditions): the source's reason or these.
    let mut r = vec![
        "InternalError",
        "InvalidConditionReported",
        "NoReasonReported",
        "NotYetReported",
    ];
    let specific: &[&str] = match (kind, type_) {
        (_, "Paused") => &["Paused", "NotPaused"],
        (_, "Ready") => &["Ready", "NotReady", "ReadyUnknown"],
        ("Cluster", "Available") | ("MachineDeployment", "Available") => {
            &["Available", "NotAvailable", "AvailableUnknown"]
        }
        ("Cluster", "InfrastructureReady") | ("Machine", "InfrastructureReady") => &[
            "Ready",
            "NotReady",
            "ReadyUnknown",
            "DoesNotExist",
            "Deleted",
        ],
        ("Cluster", "ControlPlaneInitialized") => {
            &["Initialized", "NotInitialized", "InitializedUnknown"]
        }
        ("Cluster", "ControlPlaneAvailable") => &[
            "Available",
            "NotAvailable",
            "AvailableUnknown",
            "DoesNotExist",
            "Deleted",
        ],
        ("Cluster", "WorkersAvailable") => {
            &["Available", "NotAvailable", "AvailableUnknown", "NoWorkers"]
        }
        ("Cluster", "RemoteConnectionProbe") => &["ProbeSucceeded", "ProbeFailed"],
        ("Cluster", "Deleting") => &[
            "NotDeleting",
            "WaitingForBeforeDeleteHook",
            "WaitingForWorkersDeletion",
            "WaitingForControlPlaneDeletion",
            "WaitingForInfrastructureDeletion",
            "DeletionCompleted",
        ],
        ("Machine", "Available") => &["Available", "NotReady", "WaitingForMinReadySeconds"],
        ("Machine", "BootstrapConfigReady") => &[
            "Ready",
            "NotReady",
            "ReadyUnknown",
            "DataSecretProvided",
            "DoesNotExist",
            "Deleted",
        ],
        ("Machine", "NodeReady") => &[
            "NodeReady",
            "NodeNotReady",
            "NodeReadyUnknown",
            "NodeDoesNotExist",
            "NodeDeleted",
            "InspectionFailed",
            "ConnectionDown",
        ],
        ("Machine", "NodeHealthy") => &[
            "NodeHealthy",
            "NodeNotHealthy",
            "NodeHealthyUnknown",
            "NodeDoesNotExist",
            "NodeDeleted",
            "InspectionFailed",
            "ConnectionDown",
        ],
        ("Machine", "UpToDate") => &["UpToDate", "NotUpToDate"],
        ("Machine", "Updating") => &["NotUpdating", "InPlaceUpdating", "InPlaceUpdateFailed"],
        ("Machine", "HealthCheckSucceeded") => &[
            "HealthCheckSucceeded",
            "UnhealthyNode",
            "UnhealthyMachine",
            "NodeStartupTimeout",
            "NodeDeleted",
            "HasRemediateAnnotation",
        ],
        ("Machine", "OwnerRemediated") => &[
            "WaitingForRemediation",
            "RemediationDeferred",
            "MachineDeleting",
            "MachineRemediationFailed",
        ],
        ("Machine", "Deleting") => &[
            "NotDeleting",
            "Deleting",
            "DrainingNode",
            "WaitingForVolumeDetach",
            "WaitingForPreDrainHook",
            "WaitingForPreTerminateHook",
            "WaitingForInfrastructureDeletion",
            "WaitingForBootstrapDeletion",
            "DeletingNode",
            "DeletionCompleted",
        ],
        ("KubeadmControlPlane", "Available") => &["Available", "NotAvailable"],
        ("KubeadmControlPlane", "Initialized") => &["Initialized", "NotInitialized"],
        ("KubeadmControlPlane", "CertificatesAvailable") => &["Available", "NotAvailable"],
        ("KubeadmControlPlane", "EtcdClusterHealthy")
        | ("KubeadmControlPlane", "ControlPlaneComponentsHealthy") => &[
            "Healthy",
            "NotHealthy",
            "HealthUnknown",
            "InspectionFailed",
            "ConnectionDown",
        ],
        (_, "MachinesReady") => &["Ready", "NotReady", "ReadyUnknown", "NoReplicas"],
        (_, "MachinesUpToDate") => &["UpToDate", "NotUpToDate", "UpToDateUnknown", "NoReplicas"],
        (_, "RollingOut") => &["RollingOut", "NotRollingOut"],
        (_, "ScalingUp") => &[
            "ScalingUp",
            "NotScalingUp",
            "ScalingUpUnknown",
            "WaitingForReplicasSet",
        ],
        (_, "ScalingDown") => &[
            "ScalingDown",
            "NotScalingDown",
            "ScalingDownUnknown",
            "WaitingForReplicasSet",
        ],
        (_, "Remediating") => &["Remediating", "NotRemediating", "RemediationNotAllowed"],
        ("KubeadmControlPlane", "Deleting")
        | ("MachineSet", "Deleting")
        | ("MachineDeployment", "Deleting") => &[
            "NotDeleting",
            "Deleting",
            "WaitingForWorkersDeletion",
            "WaitingForMachineDeletion",
            "WaitingForMachineSetDeletion",
            "DeletionCompleted",
        ],
        ("MachineHealthCheck", "RemediationAllowed") => &["RemediationAllowed", "TooManyUnhealthy"],
        ("KubeadmConfig", "DataSecretAvailable") => &["Available", "NotAvailable"],
        ("KubeadmConfig", "CertificatesAvailable") => &["Available", "NotAvailable"],
        ("DevMachine", _) | ("DevCluster", _) => &[
            "Provisioned",
            "WaitingForStartupTimeout",
            "WaitingForClusterInfrastructure",
            "WaitingForControlPlaneInitialized",
            "WaitingForBootstrapData",
            "WaitingForVMProvisioned",
            "WaitingForNodeProvisioned",
            "Deleting",
            "NotDeleting",
        ],
        _ => &[],
    };
    r.extend_from_slice(specific);
    r
}

/// Valid `status.phase` values (reference §1.6); `None`: the kind has no phase.
fn allowed_phases(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Cluster" => Some(&[
            "Pending",
            "Provisioning",
            "Provisioned",
            "Deleting",
            "Failed",
            "Unknown",
        ]),
        "Machine" => Some(&[
            "Pending",
            "Provisioning",
            "Provisioned",
            "Running",
            "Updating",
            "Deleting",
            "Deleted",
            "Failed",
            "Unknown",
        ]),
        "MachineDeployment" => Some(&["ScalingUp", "ScalingDown", "Running", "Failed", "Unknown"]),
        _ => None,
    }
}

/// The finalizer CAPI puts on a kind (reference §1.3); `Some("")`: CAPI sets none.
fn expected_finalizer(kind: &str) -> Option<&'static str> {
    match kind {
        "Cluster" => Some("cluster.cluster.x-k8s.io"),
        "Machine" => Some("machine.cluster.x-k8s.io"),
        "MachineSet" => Some("cluster.x-k8s.io/machineset"),
        "MachineDeployment" => Some("cluster.x-k8s.io/machinedeployment"),
        "KubeadmControlPlane" => Some("kubeadm.controlplane.cluster.x-k8s.io"),
        "DevCluster" => Some("dockercluster.infrastructure.cluster.x-k8s.io"),
        "DevMachine" => Some("dockermachine.infrastructure.cluster.x-k8s.io"),
        "KubeadmConfig" => Some(""),
        _ => None,
    }
}

/// Who owns whom (reference §1.4): the kinds that may be the controller, or `None` when the
/// kind has no controller; and the non-controller owner kinds it must have.
fn expected_controller(kind: &str, o: &Value) -> Option<&'static [&'static str]> {
    match kind {
        "MachineSet" => Some(&["MachineDeployment"]),
        "Machine" => Some(&["MachineSet", "KubeadmControlPlane"]),
        "KubeadmControlPlane" | "DevCluster" => Some(&["Cluster"]),
        "DevMachine" | "KubeadmConfig" => Some(&["Machine"]),
        "Secret" => {
            let name = name_of(o);
            let cluster = label(o, CLUSTER_NAME_LABEL).unwrap_or("");
            if ["ca", "etcd", "proxy", "sa", "kubeconfig"]
                .iter()
                .any(|s| name == format!("{cluster}-{s}"))
            {
                Some(&["KubeadmControlPlane"])
            } else if o["type"] == "cluster.x-k8s.io/secret" {
                // Bootstrap data: named after its KubeadmConfig.
                Some(&["KubeadmConfig"])
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Checks the CAPI contract over `objects` (everything of one cluster, as
/// [`CapiEnv::cluster_objects`] returns it, while the cluster is not being deleted): the
/// cluster-name label, control-plane / deployment labels on Machines, controller owner
/// references (kind, uid, latest apiVersion, exactly one controller), finalizers, v1beta2
/// condition types, statuses and reasons, `observedGeneration` not ahead of the object, phases.
/// Returns every violation found (empty: conformant).
pub fn capi_contract_violations(cluster: &str, objects: &[Value]) -> Vec<String> {
    let mut v = Vec::new();
    let by_uid: BTreeMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| Some((o["metadata"]["uid"].as_str()?, o)))
        .collect();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("");
        let name = name_of(o);
        let id = format!("{kind}/{name}");
        let mut bad = |msg: String| v.push(format!("{id}: {msg}"));

        // Labels (§1.2): every object of the cluster but the Cluster and the user's templates.
        let templates = ["KubeadmConfigTemplate", "DevMachineTemplate", "Cluster"];
        if !templates.contains(&kind) && label(o, CLUSTER_NAME_LABEL) != Some(cluster) {
            bad(format!(
                "label {CLUSTER_NAME_LABEL} is {:?}, want {cluster:?}",
                label(o, CLUSTER_NAME_LABEL)
            ));
        }
        let controller = o["metadata"]["ownerReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter(|r| r["controller"] == true)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if kind == "Machine" {
            let owner_kind = controller.first().and_then(|r| r["kind"].as_str());
            match owner_kind {
                Some("KubeadmControlPlane") => {
                    let owner = controller.first().and_then(|r| r["name"].as_str());
                    if label(o, "cluster.x-k8s.io/control-plane") != Some("") {
                        bad(
                            "control-plane Machine lacks label cluster.x-k8s.io/control-plane=\"\""
                                .into(),
                        );
                    }
                    if label(o, "cluster.x-k8s.io/control-plane-name") != owner {
                        bad(format!(
                            "label cluster.x-k8s.io/control-plane-name is {:?}, want {owner:?}",
                            label(o, "cluster.x-k8s.io/control-plane-name")
                        ));
                    }
                }
                Some("MachineSet") => {
                    let owner = controller.first().and_then(|r| r["name"].as_str());
                    if label(o, "cluster.x-k8s.io/set-name") != owner {
                        bad(format!(
                            "label cluster.x-k8s.io/set-name is {:?}, want {owner:?}",
                            label(o, "cluster.x-k8s.io/set-name")
                        ));
                    }
                    if label(o, "cluster.x-k8s.io/control-plane").is_some() {
                        bad("worker Machine carries the control-plane label".into());
                    }
                    // A MachineSet of a MachineDeployment passes the deployment label on.
                    let set = objects
                        .iter()
                        .find(|s| s["kind"] == "MachineSet" && Some(name_of(s)) == owner);
                    if let Some(md) = set.and_then(|s| label(s, "cluster.x-k8s.io/deployment-name"))
                        && label(o, "cluster.x-k8s.io/deployment-name") != Some(md)
                    {
                        bad(format!(
                            "label cluster.x-k8s.io/deployment-name is {:?}, want {md:?}",
                            label(o, "cluster.x-k8s.io/deployment-name")
                        ));
                    }
                }
                _ => {}
            }
            if o["spec"]["clusterName"] != cluster {
                bad(format!("spec.clusterName is {}", o["spec"]["clusterName"]));
            }
        }
        if kind == "MachineSet" {
            let owner = controller.first().and_then(|r| r["name"].as_str());
            if owner.is_some() && label(o, "cluster.x-k8s.io/deployment-name") != owner {
                bad(format!(
                    "label cluster.x-k8s.io/deployment-name is {:?}, want {owner:?}",
                    label(o, "cluster.x-k8s.io/deployment-name")
                ));
            }
        }

        // Owner references (§1.4).
        if controller.len() > 1 {
            bad(format!("{} controller owner references", controller.len()));
        }
        let refs = o["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for r in &refs {
            let (rk, ruid) = (
                r["kind"].as_str().unwrap_or(""),
                r["uid"].as_str().unwrap_or(""),
            );
            match by_uid.get(ruid) {
                Some(owner) => {
                    if owner["kind"] != rk || owner["metadata"]["name"] != r["name"] {
                        bad(format!(
                            "owner reference {rk}/{} has the uid of {}",
                            r["name"],
                            summarize(owner)
                        ));
                    }
                    if owner["apiVersion"] != r["apiVersion"] {
                        bad(format!(
                            "owner reference to {rk}/{} has apiVersion {}, the owner's latest is {}",
                            r["name"], r["apiVersion"], owner["apiVersion"]
                        ));
                    }
                }
                None => bad(format!(
                    "owner reference {rk}/{} (uid {ruid}) names no object of the cluster",
                    r["name"]
                )),
            }
        }
        match expected_controller(kind, o) {
            Some(kinds) => match controller.first() {
                Some(c) if kinds.contains(&c["kind"].as_str().unwrap_or("")) => {}
                Some(c) => bad(format!(
                    "controlled by {}, want one of {kinds:?}",
                    c["kind"]
                )),
                None => bad(format!(
                    "no controller owner reference, want one of {kinds:?}"
                )),
            },
            None => {
                if let Some(c) = controller.first() {
                    bad(format!(
                        "controlled by {}/{}, CAPI gives {kind} no controller",
                        c["kind"], c["name"]
                    ));
                }
            }
        }
        if kind == "MachineDeployment" || kind == "MachineHealthCheck" {
            let cluster_owner = refs
                .iter()
                .any(|r| r["kind"] == "Cluster" && r["name"] == cluster);
            if !cluster_owner {
                bad("no (non-controller) owner reference to its Cluster".into());
            }
        }

        // Finalizers (§1.3).
        let finalizers: Vec<&str> = o["metadata"]["finalizers"]
            .as_array()
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match expected_finalizer(kind) {
            Some("") => {
                if let Some(f) = finalizers.iter().find(|f| f.contains("x-k8s.io")) {
                    bad(format!("finalizer {f}: CAPI sets none on {kind}"));
                }
            }
            Some(f) if !finalizers.contains(&f) => {
                bad(format!("finalizer {f} missing (has {finalizers:?})"));
            }
            _ => {}
        }

        // Conditions (§1.5): v1beta2 metav1.Conditions.
        let types = allowed_condition_types(kind);
        let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
        if let Some(conds) = o["status"]["conditions"].as_array() {
            let mut seen = std::collections::BTreeSet::new();
            for c in conds {
                let t = c["type"].as_str().unwrap_or("");
                if !seen.insert(t) {
                    bad(format!("condition {t} appears twice"));
                }
                if !types.contains(&t) {
                    bad(format!(
                        "condition type {t:?} is not a v1beta2 {kind} condition"
                    ));
                    continue;
                }
                let status = c["status"].as_str().unwrap_or("");
                if !["True", "False", "Unknown"].contains(&status) {
                    bad(format!("condition {t} has status {status:?}"));
                }
                let reason = c["reason"].as_str().unwrap_or("");
                let reasons = allowed_reasons(kind, t);
                if !reasons.contains(&reason) {
                    bad(format!(
                        "condition {t} has reason {reason:?}, CAPI's are {reasons:?}"
                    ));
                }
                if c["lastTransitionTime"].as_str().is_none_or(str::is_empty) {
                    bad(format!("condition {t} has no lastTransitionTime"));
                }
                if c["observedGeneration"]
                    .as_i64()
                    .is_some_and(|g| g > generation)
                {
                    bad(format!(
                        "condition {t} observedGeneration {} > generation {generation}",
                        c["observedGeneration"]
                    ));
                }
            }
        }
        if let Some(phases) = allowed_phases(kind) {
            match o["status"]["phase"].as_str() {
                Some(p) if phases.contains(&p) => {}
                p => bad(format!("phase {p:?} not one of {phases:?}")),
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serving_line_is_parsed_with_and_without_colours() {
        let plain = "2026-11-28T18:00:00Z  INFO capstan::manager: serving metrics=Some(127.0.0.1:4100) health=Some(127.0.0.1:4200)";
        assert_eq!(
            serving_addresses(plain),
            Some((
                "127.0.0.1:4100".parse().unwrap(),
                "127.0.0.1:4200".parse().unwrap()
            ))
        );
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m serving \u{1b}[3mmetrics\u{1b}[0m\u{1b}[2m=\u{1b}[0mSome(127.0.0.1:1) \u{1b}[3mhealth\u{1b}[0m\u{1b}[2m=\u{1b}[0mSome(127.0.0.1:2)";
        assert_eq!(
            serving_addresses(&strip_ansi(coloured)),
            Some((
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            ))
        );
    }

    #[test]
    fn metric_sum_matches_family_and_labels() {
        let body = "# HELP x\ncapstan_crypto_operations_total{plugin=\"a\",operation=\"generate_key_rsa\"} 5\ncapstan_crypto_operations_total{plugin=\"b\",operation=\"generate_key_rsa\"} 2\ncapstan_crypto_operations_totalx{plugin=\"a\"} 9\n";
        let f = "capstan_crypto_operations_total";
        assert_eq!(metric_sum(body, f, &[]), 7.0);
        assert_eq!(metric_sum(body, f, &[("plugin", "a")]), 5.0);
        assert_eq!(metric_sum(body, f, &[("plugin", "c")]), 0.0);
    }

    fn conformant() -> Vec<Value> {
        vec![
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                "metadata": {"name": "c", "uid": "u1", "generation": 1, "finalizers": ["cluster.cluster.x-k8s.io"]},
                "status": {"phase": "Provisioned", "conditions": [
                    {"type": "Available", "status": "True", "reason": "Available", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}}),
            json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                "metadata": {"name": "cp", "uid": "u2", "generation": 1, "labels": {CLUSTER_NAME_LABEL: "c"},
                    "finalizers": ["kubeadm.controlplane.cluster.x-k8s.io"],
                    "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c", "uid": "u1", "controller": true}]}}),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "cp-1", "uid": "u3", "generation": 1,
                    "labels": {CLUSTER_NAME_LABEL: "c", "cluster.x-k8s.io/control-plane": "", "cluster.x-k8s.io/control-plane-name": "cp"},
                    "finalizers": ["machine.cluster.x-k8s.io"],
                    "ownerReferences": [{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane", "name": "cp", "uid": "u2", "controller": true}]},
                "spec": {"clusterName": "c"},
                "status": {"phase": "Running"}}),
        ]
    }

    #[test]
    fn contract_check_accepts_a_conformant_cluster() {
        assert_eq!(
            capi_contract_violations("c", &conformant()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn contract_check_finds_each_kind_of_violation() {
        type Mutation = Box<dyn Fn(&mut Vec<Value>)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "label",
                Box::new(|o| o[1]["metadata"]["labels"] = json!({})),
            ),
            (
                "control-plane",
                Box::new(|o| {
                    o[2]["metadata"]["labels"]["cluster.x-k8s.io/control-plane"] = json!(null)
                }),
            ),
            (
                "controller",
                Box::new(|o| o[2]["metadata"]["ownerReferences"][0]["controller"] = json!(false)),
            ),
            (
                "uid",
                Box::new(|o| o[2]["metadata"]["ownerReferences"][0]["uid"] = json!("u1")),
            ),
            (
                "apiVersion",
                Box::new(|o| {
                    o[1]["metadata"]["ownerReferences"][0]["apiVersion"] =
                        json!("cluster.x-k8s.io/v1beta1")
                }),
            ),
            (
                "finalizer",
                Box::new(|o| o[2]["metadata"]["finalizers"] = json!([])),
            ),
            (
                "reason",
                Box::new(|o| o[0]["status"]["conditions"][0]["reason"] = json!("AllGood")),
            ),
            (
                "type",
                Box::new(|o| o[0]["status"]["conditions"][0]["type"] = json!("Healthy")),
            ),
            (
                "phase",
                Box::new(|o| o[2]["status"]["phase"] = json!("Booting")),
            ),
            (
                "observedGeneration",
                Box::new(|o| o[0]["status"]["conditions"][0]["observedGeneration"] = json!(2)),
            ),
        ];
        for (what, mutate) in cases {
            let mut objects = conformant();
            mutate(&mut objects);
            let v = capi_contract_violations("c", &objects);
            assert!(!v.is_empty(), "{what}: violation not found");
        }
    }
}

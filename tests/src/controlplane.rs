//! Launches a real Kubernetes control plane (etcd + kube-apiserver) for tests, as envtest does.
//!
//! The binary is `capstan-controlplane`, built by `make controlplane` from the Go module in
//! `tests/controlplane/` (embedded etcd and kube-apiserver in one process). [`ControlPlane::start`]
//! picks a free loopback port, generates the certificates envtest generates (a serving CA and
//! serving certificate, a client CA and an admin client certificate in `system:masters`, a
//! service-account signing key), starts the binary with envtest's flags, waits for `/readyz`
//! and writes a kubeconfig. Everything lives in one temporary folder.
//!
//! Unlike envtest, the binary also runs kube-controller-manager's garbage collector and
//! namespace controller (given the admin kubeconfig), so owner references, propagation
//! policies and namespace deletion behave as on a real cluster. Nothing else of
//! kube-controller-manager runs: no ReplicaSets for Deployments, no service-account tokens.
//!
//! Shutdown: dropping a [`ControlPlane`] closes the binary's standard input (its signal to shut
//! down gracefully), waits briefly, then kills it. Because the binary also stops when its
//! standard input closes, a test process that dies without running destructors (abort,
//! SIGKILL) still takes its control plane with it; [`ControlPlane::shared`] relies on this for
//! the process-wide instance, which is never dropped.

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::sync::OnceCell;

/// File name of the control-plane binary built by `make controlplane`.
pub const BINARY_NAME: &str = "capstan-controlplane";
/// Environment variable naming the binary explicitly (overrides the search in target/).
pub const BINARY_ENV: &str = "CAPSTAN_CONTROLPLANE_BIN";
/// Environment variable that turns a missing binary into a test failure instead of a skip
/// (`make test` sets it whenever Go is installed, so CI cannot silently skip the real tier).
pub const REQUIRE_ENV: &str = "CAPSTAN_REQUIRE_CONTROLPLANE";

/// How long kube-apiserver may take to report ready (a loaded 2-core CI machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a graceful shutdown may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts at starting, each on a fresh port (another process may take a port we probed).
const START_ATTEMPTS: usize = 3;
/// How much of the control plane's log an error message quotes.
const LOG_TAIL_BYTES: u64 = 4096;

/// Errors of the control-plane launcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is not built; the message says how to build it.
    #[error(
        "real control plane binary not found at {0}; build it with `make controlplane` (needs Go), or set {BINARY_ENV}"
    )]
    BinaryMissing(PathBuf),
    /// A filesystem or process operation failed.
    #[error("control plane: {what}: {source}")]
    Io {
        /// What the launcher was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("control plane: generating certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// The process exited before it became ready.
    #[error("control plane exited during startup ({status}); log tail:\n{log}")]
    Exited {
        /// The exit status.
        status: std::process::ExitStatus,
        /// The end of the process's log.
        log: String,
    },
    /// `/readyz` did not answer 200 in time.
    #[error("control plane not ready after {timeout:?}: {last}; log tail:\n{log}")]
    NotReady {
        /// How long the launcher waited.
        timeout: Duration,
        /// The last readiness failure.
        last: String,
        /// The end of the process's log.
        log: String,
    },
    /// The generated kubeconfig could not be turned into a client.
    #[error("control plane: kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A previous attempt at starting the shared control plane failed.
    #[error("shared control plane failed to start earlier: {0}")]
    SharedFailed(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where the control-plane binary is expected: `$CAPSTAN_CONTROLPLANE_BIN`, else
/// `<target dir>/controlplane/bin/capstan-controlplane`, the target dir being
/// `$CARGO_TARGET_DIR` or the one this test executable was built into.
pub fn binary_path() -> PathBuf {
    if let Some(p) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let in_target = |t: &Path| t.join("controlplane").join("bin").join(BINARY_NAME);
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        return in_target(Path::new(&t));
    }
    // Test executables live in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.ancestors().nth(3)
    {
        let candidate = in_target(target);
        if candidate.exists() {
            return candidate;
        }
    }
    in_target(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    )
}

/// Whether a missing binary must fail the test rather than skip it.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The binary if it exists. If it does not: `Ok(None)` after printing a skip notice, or an
/// error when [`REQUIRE_ENV`] is set.
pub fn available_binary() -> Result<Option<PathBuf>, Error> {
    let path = binary_path();
    if path.is_file() {
        return Ok(Some(path));
    }
    if required() {
        return Err(Error::BinaryMissing(path));
    }
    eprintln!(
        "SKIPPED real control plane tier: {} is missing. Build it with `make controlplane` \
         (needs Go); `make test` does so when Go is installed.",
        path.display()
    );
    Ok(None)
}

/// One running control plane: etcd and kube-apiserver in a child process.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    /// Held open for the process's lifetime; closing it asks the process to shut down.
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
    url: String,
    kubeconfig: PathBuf,
    log: PathBuf,
}

static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

impl ControlPlane {
    /// The process-wide control plane, started on first use. `Ok(None)` when the binary is
    /// absent and not required (the caller skips). Tests sharing it must use their own
    /// namespaces or names. It is never dropped: it stops when this process exits and the
    /// pipe on its standard input closes.
    pub async fn shared() -> Result<Option<&'static ControlPlane>, Error> {
        let Some(binary) = available_binary()? else {
            return Ok(None);
        };
        let cp = SHARED
            .get_or_init(
                || async move { Self::start_with(&binary).await.map_err(|e| e.to_string()) },
            )
            .await;
        match cp {
            Ok(cp) => Ok(Some(cp)),
            Err(e) => Err(Error::SharedFailed(e.clone())),
        }
    }

    /// Starts a control plane owned by the caller, stopped on drop. `Ok(None)` when the binary
    /// is absent and not required.
    pub async fn start() -> Result<Option<ControlPlane>, Error> {
        match available_binary()? {
            Some(binary) => Self::start_with(&binary).await.map(Some),
            None => Ok(None),
        }
    }

    /// Starts the given binary, retrying on a fresh port if the first one was taken.
    pub async fn start_with(binary: &Path) -> Result<ControlPlane, Error> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(binary).await {
                Ok(cp) => return Ok(cp),
                Err(Error::Exited { status, log }) if log.contains("address already in use") => {
                    last = Some(Error::Exited { status, log });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Io {
            what: "starting".into(),
            source: std::io::Error::other("no attempt made"),
        }))
    }

    async fn start_once(binary: &Path) -> Result<ControlPlane, Error> {
        let dir = tempfile::Builder::new()
            .prefix("capstan-controlplane-")
            .tempdir()
            .map_err(io_err("creating temporary folder"))?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let files = Files::generate(dir.path(), &url)?;

        let log = dir.path().join("controlplane.log");
        let log_file = std::fs::File::create(&log).map_err(io_err("creating log file"))?;
        let log_err = log_file.try_clone().map_err(io_err("cloning log file"))?;

        let mut cmd = Command::new(binary);
        cmd.arg(format!(
            "--etcd-data-dir={}",
            dir.path().join("etcd").display()
        ))
        .arg("--exit-on-stdin-close")
        .arg(format!("--remove-on-exit={}", dir.path().display()))
        .arg(format!(
            "--controllers-kubeconfig={}",
            files.kubeconfig.display()
        ))
        .arg("--")
        .args(apiserver_flags(port, &files))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
        // Its own process group: a Ctrl-C meant for the test runner reaches it through the
        // closed pipe, in order, rather than racing the runner's own cleanup.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("starting {}", binary.display())))?;
        let stdin = child.stdin.take();

        let mut cp = ControlPlane {
            child,
            stdin,
            dir,
            url,
            kubeconfig: files.kubeconfig,
            log,
        };
        cp.wait_ready().await?;
        Ok(cp)
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io_err("polling process"))? {
                return Err(Error::Exited {
                    status,
                    log: self.log_tail(),
                });
            }
            let req = http::Request::get("/readyz").body(Vec::new());
            match req {
                Ok(req) => match client.request_text(req).await {
                    Ok(body) if body.trim() == "ok" => break,
                    Ok(body) => last = body,
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout: READY_TIMEOUT,
                    last,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // /readyz does not cover the bootstrap controller's system namespaces; tests expect
        // "default" to exist as it does on every cluster.
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        while namespaces.get_opt("default").await.ok().flatten().is_none() {
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout: READY_TIMEOUT,
                    last: "namespace default never appeared".into(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// A new client for this control plane, authenticated as the admin (`system:masters`).
    /// Make one per tokio runtime: a client's connections belong to the runtime that made them.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// The kubeconfig file (admin user, current context set).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temporary folder holding certificates, etcd data and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last few kilobytes of the control plane's combined output.
    pub fn log_tail(&self) -> String {
        let Ok(mut f) = std::fs::File::open(&self.log) else {
            return String::from("(no log)");
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing standard input starts a graceful shutdown (kube-apiserver, then etcd).
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds a client from a kubeconfig file, using its current context.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let fail = |message: String| Error::Kubeconfig {
        path: path.to_owned(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("probing a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("probing a free port"))?
        .port())
}

/// kube-apiserver's flags, after envtest's defaults (controller-runtime
/// pkg/internal/testing/controlplane/apiserver.go); --etcd-servers is added by the binary.
fn apiserver_flags(port: u16, f: &Files) -> Vec<String> {
    let p = |p: &Path| p.display().to_string();
    vec![
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--cert-dir={}", p(&f.cert_dir)),
        format!("--tls-cert-file={}", p(&f.serving_cert)),
        format!("--tls-private-key-file={}", p(&f.serving_key)),
        format!("--client-ca-file={}", p(&f.client_ca)),
        "--authorization-mode=RBAC".into(),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--allow-privileged=true".into(),
        // No kube-controller-manager creates service accounts' tokens or default accounts.
        "--disable-admission-plugins=ServiceAccount".into(),
        format!("--service-account-issuer=https://127.0.0.1:{port}/"),
        format!("--service-account-key-file={}", p(&f.sa_public)),
        format!("--service-account-signing-key-file={}", p(&f.sa_key)),
        // Quiet, and fast to stop: tests stop it at once rather than drain connections.
        "--v=0".into(),
        "--shutdown-delay-duration=0s".into(),
        "--shutdown-watch-termination-grace-period=0s".into(),
    ]
}

/// The certificate and key files of one control plane, and its kubeconfig.
struct Files {
    cert_dir: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    client_ca: PathBuf,
    sa_key: PathBuf,
    sa_public: PathBuf,
    kubeconfig: PathBuf,
}

impl Files {
    fn generate(dir: &Path, url: &str) -> Result<Files, Error> {
        let cert_dir = dir.join("pki");
        std::fs::create_dir_all(&cert_dir).map_err(io_err("creating pki folder"))?;
        let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = cert_dir.join(name);
            std::fs::write(&path, contents).map_err(io_err(format!("writing {name}")))?;
            Ok(path)
        };

        // Serving: a CA that the kubeconfig trusts, and a certificate for the loopback names.
        let serving_ca_key = KeyPair::generate()?;
        let serving_ca_params = ca_params("capstan-controlplane-serving-ca")?;
        let serving_ca = serving_ca_params.self_signed(&serving_ca_key)?;
        let serving_issuer = Issuer::from_params(&serving_ca_params, &serving_ca_key);
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec!["localhost".to_string()])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &serving_issuer)?;

        // Client auth: a CA the API server trusts, and an admin certificate (CN = user name,
        // O = groups; system:masters passes every RBAC check).
        let client_ca_key = KeyPair::generate()?;
        let client_ca_params = ca_params("capstan-controlplane-client-ca")?;
        let client_ca = client_ca_params.self_signed(&client_ca_key)?;
        let client_issuer = Issuer::from_params(&client_ca_params, &client_ca_key);
        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "capstan-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &client_issuer)?;

        // Service-account tokens: an ECDSA P-256 signing key (ES256).
        let sa = KeyPair::generate()?;

        let files = Files {
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            client_ca: write("client-ca.crt", &client_ca.pem())?,
            sa_key: write("sa-signer.key", &sa.serialize_pem())?,
            sa_public: write("sa-signer.pub", &sa.public_key_pem())?,
            kubeconfig: dir.join("kubeconfig"),
            cert_dir,
        };
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "capstan-controlplane",
                "cluster": {
                    "server": url,
                    "certificate-authority-data": B64.encode(serving_ca.pem()),
                },
            }],
            "users": [{
                "name": "capstan-admin",
                "user": {
                    "client-certificate-data": B64.encode(admin_cert.pem()),
                    "client-key-data": B64.encode(admin_key.serialize_pem()),
                },
            }],
            "contexts": [{
                "name": "capstan-controlplane",
                "context": { "cluster": "capstan-controlplane", "user": "capstan-admin" },
            }],
            "current-context": "capstan-controlplane",
        });
        // JSON is YAML: kubectl and kube-rs read this file as a kubeconfig.
        std::fs::write(&files.kubeconfig, kubeconfig.to_string())
            .map_err(io_err("writing kubeconfig"))?;
        Ok(files)
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

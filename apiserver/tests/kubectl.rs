//! kubectl (a client no one here wrote) against the in-memory API server over HTTPS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use capstan_apiserver::Server;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

fn kubectl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return p.into();
    }
    for p in ["/usr/bin/kubectl", "/usr/local/bin/kubectl"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "kubectl not found: run `make tools` (installs Debian's kubernetes-client) or set KUBECTL"
    );
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        c.env_remove("KUBECONFIG");
        c.stdin(Stdio::null());
        c
    }

    /// Runs kubectl; returns stdout, failing the test with stderr on a non-zero exit.
    async fn ok(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.cmd(args).output())
            .await
            .expect("kubectl timed out")
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().await.expect("kubectl runs");
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    async fn stdin(&self, args: &[&str], input: &str) -> String {
        use tokio::io::AsyncWriteExt;
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl runs");
        let mut sin = child.stdin.take().expect("stdin");
        sin.write_all(input.as_bytes()).await.expect("write stdin");
        drop(sin);
        let out = child.wait_with_output().await.expect("kubectl output");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

async fn setup() -> (Server, Kubectl, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::builder().start("127.0.0.1:0").await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl {
        bin: kubectl_bin(),
        kubeconfig,
        cache: dir.path().join("cache"),
    };
    (server, k, dir)
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_capi_clusters() {
    let (server, k, _dir) = setup().await;
    let crds = common::capi_crds();
    let out = k
        .ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()])
        .await;
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/clusters.cluster.x-k8s.io serverside-applied"), "{out}");
    let out = k.ok(&["get", "crds"]).await;
    assert!(out.contains("machinedeployments.cluster.x-k8s.io"), "{out}");

    let out = k.ok(&["apply", "-f", &fixture("cluster.yaml")]).await;
    assert_eq!(out.trim(), "cluster.cluster.x-k8s.io/demo created");
    let out = k.ok(&["apply", "-f", &fixture("cluster.yaml")]).await;
    assert_eq!(out.trim(), "cluster.cluster.x-k8s.io/demo unchanged");

    let out = k.ok(&["get", "clusters", "-A", "-o", "wide"]).await;
    let header = out.lines().next().unwrap();
    for col in [
        "NAMESPACE",
        "NAME",
        "CLUSTERCLASS",
        "AVAILABLE",
        "CP DESIRED",
        "CP CURRENT",
        "W READY",
        "PAUSED",
        "PHASE",
        "AGE",
        "VERSION",
    ] {
        assert!(header.contains(col), "missing column {col}: {out}");
    }
    assert!(out.lines().nth(1).unwrap().starts_with("default"), "{out}");
    let narrow = k.ok(&["get", "clusters"]).await;
    assert!(
        !narrow.lines().next().unwrap().contains("CP CURRENT"),
        "priority columns only in wide: {narrow}"
    );

    // get -w sees the initial row and then a change.
    let mut watch = k.cmd(&["get", "clusters", "-w", "--request-timeout=20s"]);
    watch
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = watch.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("NAME"), "{first}");
    let row = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(row.starts_with("demo"), "{row}");

    let out = k
        .ok(&[
            "patch",
            "cluster",
            "demo",
            "--type=merge",
            "-p",
            r#"{"spec":{"paused":true}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "cluster.cluster.x-k8s.io/demo patched");
    let changed = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(changed.starts_with("demo"), "{changed}");
    child.kill().await.ok();

    assert_eq!(
        k.ok(&["get", "cluster", "demo", "-o", "jsonpath={.spec.paused}"])
            .await,
        "true"
    );
    k.ok(&[
        "patch",
        "cluster",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/paused","value":false}]"#,
    ])
    .await;
    assert_eq!(
        k.ok(&["get", "cluster", "demo", "-o", "jsonpath={.spec.paused}"])
            .await,
        "false"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cluster",
            "demo",
            "-o",
            "jsonpath={.metadata.generation}"
        ])
        .await,
        "3"
    );

    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &fixture("cluster.yaml"),
        ])
        .await;
    assert_eq!(
        out.trim(),
        "cluster.cluster.x-k8s.io/demo serverside-applied"
    );
    let mf = k
        .ok(&[
            "get",
            "cluster",
            "demo",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(mf.contains("kubectl"), "{mf}");

    k.ok(&["label", "cluster", "demo", "team=a"]).await;
    k.ok(&["annotate", "cluster", "demo", "note=hello"]).await;
    assert_eq!(
        k.ok(&["get", "clusters", "-l", "team=a", "-o", "name"])
            .await
            .trim(),
        "cluster.cluster.x-k8s.io/demo"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "cluster",
            "demo",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ])
        .await,
        "hello"
    );
    let err = k.fails(&["label", "cluster", "demo", "team=b"]).await;
    assert!(err.contains("already has a value"), "{err}");

    // Validation errors reach kubectl as the real server's messages.
    let bad = std::fs::read_to_string(fixture("cluster.yaml"))
        .unwrap()
        .replace("name: demo\n  namespace", "name: Bad_Name\n  namespace");
    let dir = tempfile::tempdir().unwrap();
    let bad_path = dir.path().join("bad.yaml");
    std::fs::write(&bad_path, bad).unwrap();
    let err = k.fails(&["create", "-f", bad_path.to_str().unwrap()]).await;
    assert!(err.contains("is invalid: metadata.name"), "{err}");
    // kubectl asks for fieldValidation=Strict: unknown fields are a 400, as with kube-apiserver.
    let typo = std::fs::read_to_string(fixture("cluster.yaml"))
        .unwrap()
        .replace("name: demo\n  namespace", "name: typo\n  namespace")
        .replace(
            "  clusterNetwork:",
            "  clusterNetwrok: {}\n  clusterNetwork:",
        );
    let typo_path = dir.path().join("typo.yaml");
    std::fs::write(&typo_path, typo).unwrap();
    let err = k
        .fails(&["create", "-f", typo_path.to_str().unwrap()])
        .await;
    assert!(
        err.contains("strict decoding error: unknown field \"spec.clusterNetwrok\""),
        "{err}"
    );
    k.ok(&[
        "create",
        "--validate=false",
        "-f",
        typo_path.to_str().unwrap(),
    ])
    .await;
    k.ok(&["delete", "cluster", "typo"]).await;

    // Delete with a finalizer: the object stays with a deletionTimestamp until it goes.
    k.ok(&[
        "patch",
        "cluster",
        "demo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["test.capstan.dev/hold"]}}"#,
    ])
    .await;
    let out = k.ok(&["delete", "cluster", "demo", "--wait=false"]).await;
    assert_eq!(out.trim(), "cluster.cluster.x-k8s.io \"demo\" deleted");
    assert!(
        !k.ok(&[
            "get",
            "cluster",
            "demo",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .await
        .is_empty()
    );
    k.ok(&[
        "patch",
        "cluster",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let err = k.fails(&["get", "cluster", "demo"]).await;
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    // explain reads the OpenAPI v3 schema of the CRD.
    let out = k.ok(&["explain", "clusters.spec.infrastructureRef"]).await;
    assert!(out.contains("apiGroup"), "{out}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_builtins_and_owner_cascade() {
    let (server, k, _dir) = setup().await;
    // Generators send protobuf bodies (decoded for these kinds).
    k.ok(&["create", "namespace", "work"]).await;
    k.ok(&[
        "-n",
        "work",
        "create",
        "configmap",
        "parent",
        "--from-literal=a=1",
    ])
    .await;
    k.ok(&[
        "-n",
        "work",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=q",
    ])
    .await;
    assert_eq!(
        k.ok(&[
            "-n",
            "work",
            "get",
            "secret",
            "s",
            "-o",
            "jsonpath={.data.p}"
        ])
        .await,
        "cQ=="
    );
    let uid = k
        .ok(&[
            "-n",
            "work",
            "get",
            "cm",
            "parent",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;
    for child in ["child-1", "child-2"] {
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {child}\n  namespace: work\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: parent\n    uid: {uid}\ndata:\n  x: \"1\"\n"
        );
        k.stdin(&["apply", "-f", "-"], &manifest).await;
    }
    // Client-side apply again uses a strategic merge patch on the built-in kind.
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child-1\n  namespace: work\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: parent\n    uid: {uid}\ndata:\n  x: \"2\"\n"
    );
    let out = k.stdin(&["apply", "-f", "-"], &manifest).await;
    assert!(out.contains("configured"), "{out}");
    assert_eq!(
        k.ok(&[
            "-n",
            "work",
            "get",
            "cm",
            "child-1",
            "-o",
            "jsonpath={.data.x}"
        ])
        .await,
        "2"
    );
    k.ok(&["-n", "work", "label", "cm", "child-2", "tier=b"])
        .await;
    k.ok(&["-n", "work", "annotate", "cm", "child-2", "a=b"])
        .await;
    assert_eq!(
        k.ok(&["-n", "work", "get", "cm", "-l", "tier=b", "-o", "name"])
            .await
            .trim(),
        "configmap/child-2"
    );
    let out = k.ok(&["-n", "work", "get", "cm"]).await;
    assert!(out.lines().next().unwrap().contains("AGE"), "{out}");

    k.ok(&["-n", "work", "delete", "cm", "parent"]).await;
    let out = k.ok(&["-n", "work", "get", "cm", "-o", "name"]).await;
    assert!(
        !out.contains("child-1") && !out.contains("child-2"),
        "dependents collected: {out}"
    );

    // Foreground cascade.
    k.stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p2\n  namespace: work\n",
    )
    .await;
    let uid = k
        .ok(&[
            "-n",
            "work",
            "get",
            "cm",
            "p2",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c2\n  namespace: work\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: p2\n    uid: {uid}\n    blockOwnerDeletion: true\n"
    );
    k.stdin(&["apply", "-f", "-"], &manifest).await;
    k.ok(&["-n", "work", "delete", "cm", "p2", "--cascade=foreground"])
        .await;
    assert!(
        k.ok(&["-n", "work", "get", "cm", "-o", "name"])
            .await
            .trim()
            .is_empty()
    );

    k.ok(&["delete", "namespace", "work"]).await;
    let out = k.ok(&["get", "ns", "-o", "name"]).await;
    assert!(!out.contains("namespace/work"), "{out}");
    k.ok(&["api-resources"]).await;
    k.ok(&["version"]).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_deployments() {
    let (_server, k, _dir) = setup().await;
    k.ok(&["create", "namespace", "apps"]).await;
    // The generator sends a protobuf Deployment.
    k.ok(&[
        "-n",
        "apps",
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--port=80",
    ])
    .await;
    let out = k.ok(&["-n", "apps", "get", "deploy"]).await;
    assert!(out.contains("web"), "{out}");
    // Defaults as kube-apiserver applies them; no controller, so no status.
    let get = |path: &'static str| {
        let k = &k;
        async move {
            k.ok(&[
                "-n",
                "apps",
                "get",
                "deployment",
                "web",
                "-o",
                &format!("jsonpath={{{path}}}"),
            ])
            .await
        }
    };
    assert_eq!(get(".spec.replicas").await, "1");
    assert_eq!(get(".spec.strategy.type").await, "RollingUpdate");
    assert_eq!(
        get(".spec.template.spec.containers[0].imagePullPolicy").await,
        "Always"
    );
    assert_eq!(
        get(".spec.template.spec.containers[0].ports[0].protocol").await,
        "TCP"
    );
    assert_eq!(get(".spec.selector.matchLabels.app").await, "web");
    k.ok(&["-n", "apps", "scale", "deploy", "web", "--replicas=3"])
        .await;
    assert_eq!(get(".spec.replicas").await, "3");
    assert_eq!(get(".metadata.generation").await, "2");
    // kubectl set image patches the keyed container list (strategic merge).
    k.ok(&[
        "-n",
        "apps",
        "set",
        "image",
        "deploy/web",
        "nginx=nginx:1.27",
    ])
    .await;
    assert_eq!(
        get(".spec.template.spec.containers[*].image").await,
        "nginx:1.27"
    );
    let out = k.ok(&["api-resources", "--api-group=apps"]).await;
    for r in ["deployments", "replicasets", "statefulsets", "daemonsets"] {
        assert!(out.contains(r), "{out}");
    }
    let out = k
        .ok(&["-n", "apps", "get", "deploy", "web", "-o", "wide"])
        .await;
    assert!(out.contains("nginx:1.27"), "{out}");
    k.ok(&["-n", "apps", "delete", "deploy", "web"]).await;
    k.fails(&["-n", "apps", "get", "deploy", "web"]).await;
}

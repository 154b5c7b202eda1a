//! Component tests of the CAPI plugins: the built components in real wasmtime, realistic snapshots, CAPI contract checks.

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use capstan::runtime::{Outcome, Plugin, RelatedObjects, Runtime, RuntimeConfig, Snapshot, Verbs};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const NOW: &str = "2026-11-28T12:00:00Z";

/// The built component of guest crate `crate_name` (release, wasm32-wasip2).
fn guest(crate_name: &str) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    ensure!(
        path.is_file(),
        "guest component {} is missing: run `make guests` first",
        path.display()
    );
    Ok(path)
}

fn load(crate_name: &str) -> Result<Plugin> {
    let rt = Runtime::new(RuntimeConfig::default())?;
    let path = guest(crate_name)?;
    rt.load_file(&path)
        .with_context(|| format!("loading {}", path.display()))
}

fn related(relation: &str, objects: &[Value]) -> RelatedObjects {
    RelatedObjects {
        relation: relation.to_owned(),
        synced: true,
        objects: objects.iter().map(Value::to_string).collect(),
    }
}

fn parsed(texts: &[String]) -> Vec<Value> {
    texts
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .collect()
}

fn condition<'a>(status: &'a Value, t: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

fn owner_refs_c1() -> Value {
    json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1",
        "controller": true, "blockOwnerDeletion": true}])
}

fn cluster(deleting: bool) -> Value {
    let mut c = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "default", "uid": "uid-c1", "generation": 1, "resourceVersion": "10",
            "creationTimestamp": "2026-11-28T11:59:00Z", "finalizers": ["cluster.cluster.x-k8s.io"]},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "services": {"cidrBlocks": ["10.128.0.0/12"]}},
            "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c1-cp"},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": "c1"}
        },
        "status": {"phase": "Provisioning"}
    });
    if deleting {
        c["metadata"]["deletionTimestamp"] = json!(NOW);
    }
    c
}

fn dev_cluster() -> Value {
    json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
        "metadata": {"name": "c1", "namespace": "default", "uid": "uid-dc"},
        "spec": {"backend": {"inMemory": {}}, "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20000}},
        "status": {"initialization": {"provisioned": true},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": NOW}]}})
}

fn kcp() -> Value {
    json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "metadata": {"name": "c1-cp", "namespace": "default", "uid": "uid-kcp", "ownerReferences": owner_refs_c1(),
            "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "spec": {"replicas": 1, "version": "v1.34.0", "kubeadmConfigSpec": {},
            "machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "c1-cp"}}}},
        "status": {"initialization": {"controlPlaneInitialized": true}, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "upToDateReplicas": 1,
            "conditions": [{"type": "Available", "status": "True", "reason": "Available", "lastTransitionTime": NOW}]}})
}

fn cluster_snapshot(c: Value, infra: &[Value], cp: &[Value], machines: &[Value]) -> Snapshot {
    Snapshot {
        primary: c.to_string(),
        related: vec![
            related("infra-devcluster", infra),
            related("cp-kubeadmcontrolplane", cp),
            related("machines", machines),
            related("machine-deployments", &[]),
            related("machine-sets", &[]),
            related(
                "workload-kube-system",
                &[
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}}),
                ],
            ),
        ],
        now: NOW.to_owned(),
        // The workload cluster answers (RemoteConnectionProbe is part of Available).
        workload: capstan::runtime::Connection::Connected,
    }
}

fn single_status(out: &Outcome) -> Result<Value> {
    ensure!(
        out.status.len() == 1,
        "expected one status write, got {}",
        out.status.len()
    );
    Ok(parsed(&out.status)[0]["status"].clone())
}

#[test]
fn cluster_component_provisions_adopts_and_reports_available() -> Result<()> {
    let plugin = load("capi-cluster")?;
    let info = plugin.info();
    ensure!(
        info.name == "cluster" && info.finalizer.as_deref() == Some("cluster.cluster.x-k8s.io")
    );
    ensure!(plugin.permits("cluster.x-k8s.io/v1beta2", "Cluster", Verbs::PATCH_STATUS));
    ensure!(plugin.permits(
        "infrastructure.cluster.x-k8s.io/v1beta2",
        "DevCluster",
        Verbs::DELETE
    ));
    ensure!(
        !plugin.permits("v1", "Secret", Verbs::CREATE),
        "the Cluster plugin writes no Secrets"
    );

    let out = plugin.reconcile(
        "default/c1",
        &cluster_snapshot(cluster(false), &[dev_cluster()], &[kcp()], &[]),
    )?;
    let applied = parsed(&out.apply);
    let infra = applied
        .iter()
        .find(|a| a["kind"] == "DevCluster")
        .context("DevCluster adopted")?;
    ensure!(
        infra["metadata"]["ownerReferences"] == owner_refs_c1(),
        "controller owner reference: {infra}"
    );
    ensure!(infra["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] == "c1");
    ensure!(
        !applied.iter().any(|a| a["kind"] == "KubeadmControlPlane"),
        "already adopted control plane is not patched"
    );
    let c = applied
        .iter()
        .find(|a| a["kind"] == "Cluster")
        .context("Cluster endpoint patch")?;
    ensure!(c["spec"]["controlPlaneEndpoint"] == json!({"host": "127.0.0.1", "port": 20000}));
    let s = single_status(&out)?;
    ensure!(s["phase"] == "Provisioned", "phase {}", s["phase"]);
    ensure!(
        s["initialization"]
            == json!({"infrastructureProvisioned": true, "controlPlaneInitialized": true})
    );
    for (t, reason) in [
        ("Available", "Available"),
        ("InfrastructureReady", "Ready"),
        ("ControlPlaneInitialized", "Initialized"),
        ("ControlPlaneAvailable", "Available"),
        ("WorkersAvailable", "NoWorkers"),
    ] {
        let c = condition(&s, t).with_context(|| format!("condition {t}"))?;
        ensure!(
            c["status"] == "True" && c["reason"] == reason && c["lastTransitionTime"] == NOW,
            "{t}: {c}"
        );
    }
    let deleting = condition(&s, "Deleting").context("Deleting")?;
    ensure!(deleting["status"] == "False" && deleting["reason"] == "NotDeleting");
    let reasons: Vec<&str> = out.events.iter().map(|e| e.reason.as_str()).collect();
    ensure!(
        reasons == ["InfrastructureReady", "Provisioned"],
        "events {reasons:?}"
    );
    Ok(())
}

#[test]
fn cluster_component_deletes_in_order() -> Result<()> {
    let plugin = load("capi-cluster")?;
    let worker = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "w0", "namespace": "default", "uid": "uid-w0", "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
        "spec": {"clusterName": "c1", "bootstrap": {}, "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "w0"}}});
    let out = plugin.reconcile(
        "default/c1",
        &cluster_snapshot(cluster(true), &[dev_cluster()], &[kcp()], &[worker]),
    )?;
    ensure!(
        out.delete.is_empty(),
        "nothing deleted while a worker Machine (not owned by the Cluster) remains"
    );
    let s = single_status(&out)?;
    ensure!(s["phase"] == "Deleting");
    let d = condition(&s, "Deleting").context("Deleting")?;
    ensure!(
        d["status"] == "True"
            && d["reason"] == "WaitingForWorkersDeletion"
            && d["message"] == "* Machines: w0",
        "{d}"
    );
    let out = plugin.reconcile(
        "default/c1",
        &cluster_snapshot(cluster(true), &[dev_cluster()], &[kcp()], &[]),
    )?;
    let deleted: Vec<(&str, &str)> = out
        .delete
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    ensure!(
        deleted == [("KubeadmControlPlane", "c1-cp")],
        "control plane first: {deleted:?}"
    );
    let out = plugin.reconcile(
        "default/c1",
        &cluster_snapshot(cluster(true), &[dev_cluster()], &[], &[]),
    )?;
    let deleted: Vec<(&str, &str)> = out
        .delete
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    ensure!(
        deleted == [("DevCluster", "c1")],
        "then infrastructure: {deleted:?}"
    );
    let out = plugin.reconcile(
        "default/c1",
        &cluster_snapshot(cluster(true), &[], &[], &[]),
    )?;
    let c = parsed(&out.apply);
    ensure!(
        c.len() == 1 && c[0]["metadata"]["finalizers"] == json!([]),
        "finalizer removed last: {c:?}"
    );
    ensure!(out.status.is_empty());
    Ok(())
}

#[test]
fn bootstrap_component_writes_init_data_secret() -> Result<()> {
    let plugin = load("capi-kubeadm-bootstrap")?;
    ensure!(plugin.info().name == "kubeadm-bootstrap" && plugin.info().finalizer.is_none());
    ensure!(plugin.permits("v1", "Secret", Verbs::CREATE));
    let config = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
        "metadata": {"name": "c1-cp-x7k2p", "namespace": "default", "uid": "uid-kc", "generation": 1,
            "labels": {"cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/control-plane": ""},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "c1-cp-x7k2p", "uid": "uid-m", "controller": true}]},
        "spec": {"clusterConfiguration": {"apiServer": {"certSANs": ["localhost", "127.0.0.1"]}},
            "initConfiguration": {"nodeRegistration": {"criSocket": "unix:///var/run/containerd/containerd.sock"}}}});
    let machine = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "c1-cp-x7k2p", "namespace": "default", "uid": "uid-m",
            "labels": {"cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/control-plane": ""}},
        "spec": {"clusterName": "c1", "version": "v1.34.0",
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": "c1-cp-x7k2p"}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "c1-cp-x7k2p"}}});
    let mut c = cluster(false);
    c["spec"]["controlPlaneEndpoint"] = json!({"host": "127.0.0.1", "port": 20000});
    c["status"] = json!({"initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": false}});
    // The cluster certificate Secrets KubeadmControlPlane writes before any Machine exists.
    let pem = base64::engine::general_purpose::STANDARD;
    let mut related_objects = vec![related("machine", &[machine]), related("cluster", &[c])];
    for suffix in ["ca", "etcd", "proxy", "sa"] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("c1-{suffix}"), "namespace": "default",
                "labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
            "data": {"tls.crt": pem.encode(format!("-----BEGIN CERTIFICATE-----\n{suffix}\n-----END CERTIFICATE-----\n")),
                     "tls.key": pem.encode(format!("-----BEGIN PRIVATE KEY-----\n{suffix}\n-----END PRIVATE KEY-----\n"))}});
        related_objects.push(related(&format!("secret-{suffix}"), &[secret]));
    }
    let snap = Snapshot {
        primary: config.to_string(),
        related: related_objects,
        now: NOW.to_owned(),
        workload: capstan::runtime::Connection::Connected,
    };
    let out = plugin.reconcile("default/c1-cp-x7k2p", &snap)?;
    let applied = parsed(&out.apply);
    ensure!(applied.len() == 1, "one Secret");
    let secret = &applied[0];
    ensure!(secret["kind"] == "Secret" && secret["type"] == "cluster.x-k8s.io/secret");
    ensure!(secret["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"] == "c1");
    let owner = &secret["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "KubeadmConfig" && owner["controller"] == true && owner["uid"] == "uid-kc",
        "{owner}"
    );
    let value = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["value"].as_str().unwrap_or(""))?;
    let text = String::from_utf8(value)?;
    ensure!(text.starts_with("#cloud-config\n"), "cloud-config header");
    ensure!(
        text.contains("kubeadm init --config /run/kubeadm/kubeadm.yaml"),
        "kubeadm init command"
    );
    ensure!(
        text.contains(r#"\"controlPlaneEndpoint\":\"127.0.0.1:20000\""#),
        "endpoint in ClusterConfiguration:\n{text}"
    );
    let s = single_status(&out)?;
    ensure!(
        s["initialization"]["dataSecretCreated"] == true && s["dataSecretName"] == "c1-cp-x7k2p"
    );
    let ready = condition(&s, "Ready").context("Ready")?;
    ensure!(ready["status"] == "True" && ready["reason"] == "Ready");
    Ok(())
}

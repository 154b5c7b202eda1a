//! The in-memory provisioning path across plugins on one fake host: DevCluster, DevMachine and Machine meet through the fake cloud's workload store.

use base64::Engine as _;
use capi_infra_devcluster::DevClusterReconciler;
use capi_infra_devmachine::DevMachineReconciler;
use capi_machine::MachineReconciler;
use capstan_sdk::capi::time;
use capstan_sdk::testing::FakeHost;
use capstan_sdk::{Connection, Outcome, Snapshot};
use serde_json::{Value, json};
use std::time::Duration;

const T0: &str = "2026-01-01T00:00:00Z";

fn fold(o: &mut Value, out: &Outcome, kind: &str) {
    for a in out.applied() {
        let v: Value = serde_json::from_str(a).expect("json");
        if v["kind"] != kind {
            continue;
        }
        if let Some(spec) = v["spec"].as_object() {
            for (k, x) in spec {
                if k == "bootstrap" {
                    o["spec"]["bootstrap"]["dataSecretName"] = x["dataSecretName"].clone();
                } else {
                    o["spec"][k] = x.clone();
                }
            }
        }
        if let Some(f) = v.pointer("/metadata/finalizers") {
            o["metadata"]["finalizers"] = f.clone();
        }
    }
    for s in out.statuses() {
        let v: Value = serde_json::from_str(s).expect("json");
        if v["kind"] == kind {
            o["status"] = v["status"].clone();
        }
    }
}

#[test]
fn a_control_plane_machine_comes_up_through_the_fake_cloud() {
    let host = FakeHost::new();
    let owner = |kind: &str, name: &str| {
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true, "blockOwnerDeletion": true}])
    };
    let mut cluster = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"}, "spec": {},
        "status": {"initialization": {"infrastructureProvisioned": true},
            "conditions": [{"type": "ControlPlaneInitialized", "status": "False", "reason": "NotInitialized", "lastTransitionTime": T0}]}});
    let mut dc = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-dc", "ownerReferences": owner("Cluster", "c1"),
            "finalizers": ["dockercluster.infrastructure.cluster.x-k8s.io"]},
        "spec": {"backend": {"inMemory": {}}}});
    let out = host
        .reconcile::<DevClusterReconciler>(&Snapshot::new(&dc, T0).with_related(
            "cluster",
            true,
            &[cluster.clone()],
        ))
        .expect("devcluster");
    fold(&mut dc, &out, "DevCluster");
    assert_eq!(dc["status"]["initialization"]["provisioned"], json!(true));

    let p = |d: &str| json!({"provisioning": {"startupDuration": d, "startupJitter": "0.2"}});
    let mut dm = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-dm", "ownerReferences": owner("Machine", "m1"),
            "labels": {"cluster.x-k8s.io/cluster-name": "c1"},
            "finalizers": ["dockermachine.infrastructure.cluster.x-k8s.io"]},
        "spec": {"backend": {"inMemory": {"vm": p("10s"), "node": p("5s"), "etcd": p("5s"), "apiServer": p("5s")}}}});
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-m1", "finalizers": ["machine.cluster.x-k8s.io"],
            "labels": {"cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/control-plane": "",
                "node-role.kubernetes.io/control-plane": ""}},
        "spec": {"clusterName": "c1", "version": "v1.34.0", "bootstrap": {"dataSecretName": "m1"},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "m1"}}});
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let ca = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c1-ca", "namespace": "ns"},
        "data": {"tls.crt": b("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
                 "tls.key": b("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")}});

    let mut t = Duration::ZERO;
    let mut running_at = None;
    let mut api_at = None;
    for _ in 0..50 {
        let now = time::add(T0, t).expect("t");
        let out = host
            .reconcile::<DevMachineReconciler>(
                &Snapshot::new(&dm, &now)
                    .with_related("machine", true, &[m.clone()])
                    .with_related("cluster", true, &[cluster.clone()])
                    .with_related("ca-secret", true, std::slice::from_ref(&ca)),
            )
            .expect("devmachine");
        fold(&mut dm, &out, "DevMachine");
        let mut next = out.requeue_after_ms();
        let running = host.cloud().running.contains("ns/c1");
        if running && api_at.is_none() {
            api_at = Some(t);
            // What KubeadmControlPlane and the Cluster report once the API answers.
            cluster["status"]["conditions"][0]["status"] = json!("True");
        }
        let nodes: Vec<Value> = host
            .cloud()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == "ns/c1" && k.2 == "Node")
            .map(|(_, v)| serde_json::from_str(v).expect("json"))
            .collect();
        let connection = if running {
            Connection::Connected
        } else {
            Connection::Disconnected
        };
        let out = host
            .reconcile::<MachineReconciler>(
                &Snapshot::new(&m, &now)
                    .with_related("bootstrap-kubeadmconfig", true, &[])
                    .with_related("infra-devmachine", true, &[dm.clone()])
                    .with_related("cluster", true, &[cluster.clone()])
                    .with_related("node", running, &nodes)
                    .with_workload(connection),
            )
            .expect("machine");
        fold(&mut m, &out, "Machine");
        if m["status"]["phase"] == "Running" && running_at.is_none() {
            running_at = Some(t);
        }
        if m["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) {
            break;
        }
        next = next.or(out.requeue_after_ms());
        t += next.map_or(Duration::from_secs(1), Duration::from_millis);
    }
    let ready = m["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned();
    assert_eq!(
        ready.map(|c| c["status"].clone()),
        Some(json!("True")),
        "{m}"
    );
    let api_at = api_at.expect("the API server started");
    // VM 10 s + Node 5 s + API server 5 s, each up to 20 % longer.
    assert!(
        api_at >= Duration::from_secs(20) && api_at <= Duration::from_secs(24),
        "{api_at:?}"
    );
    assert_eq!(
        running_at,
        Some(api_at),
        "the Node is seen once the workload API answers"
    );
    assert_eq!(m["spec"]["providerID"], json!("in-memory://m1"));
    assert_eq!(m["status"]["nodeRef"], json!({"name": "m1"}));
    assert_eq!(
        m["status"]["initialization"],
        json!({"bootstrapDataSecretCreated": true, "infrastructureProvisioned": true})
    );
    let cloud = host.cloud();
    for pod in [
        "etcd-m1",
        "kube-apiserver-m1",
        "kube-scheduler-m1",
        "kube-controller-manager-m1",
    ] {
        assert!(
            cloud.objects.keys().any(|k| k.2 == "Pod" && k.4 == pod),
            "{pod}"
        );
    }
}

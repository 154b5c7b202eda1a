//! Native tests of the DevMachine reconciler: the startup sequence driven by `now`, gating, deletion order.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";

fn at(secs: u64) -> String {
    time::add(T0, Duration::from_secs(secs)).expect("time")
}

fn cluster(infra: bool, cp_initialized: bool) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"},
        "spec": {},
        "status": {"initialization": {"infrastructureProvisioned": infra},
            "conditions": [{"type": "ControlPlaneInitialized", "status": if cp_initialized {"True"} else {"False"},
                "reason": "X", "lastTransitionTime": T0}]}})
}

fn machine(control_plane: bool, data: bool) -> Value {
    let mut labels = json!({labels::CLUSTER_NAME: "c1"});
    if control_plane {
        labels[labels::CONTROL_PLANE] = json!("");
    }
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-m1", "labels": labels},
        "spec": {"clusterName": "c1", "version": "v1.34.0", "bootstrap": {},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "m1"}}});
    if data {
        m["spec"]["bootstrap"]["dataSecretName"] = json!("m1");
    }
    m
}

fn dev_machine(durations: bool) -> Value {
    let p = |d: &str| json!({"provisioning": {"startupDuration": d, "startupJitter": "0"}});
    let backend = if durations {
        json!({"vm": p("30s"), "node": p("10s"), "etcd": p("10s"), "apiServer": p("20s")})
    } else {
        json!({})
    };
    json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-dm", "generation": 1,
            "labels": {labels::CLUSTER_NAME: "c1"}, "finalizers": ["other", finalizers::DEV_MACHINE],
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m1",
                "uid": "uid-m1", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"backend": {"inMemory": backend}}})
}

fn ca_secret() -> Value {
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c1-ca", "namespace": "ns"},
        "type": "cluster.x-k8s.io/secret",
        "data": {"tls.crt": b("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"),
                 "tls.key": b("-----BEGIN PRIVATE KEY-----\nca\n-----END PRIVATE KEY-----\n")}})
}

fn snap(dm: &Value, m: &Value, c: &Value, ca: bool, now: &str) -> Snapshot {
    Snapshot::new(dm, now)
        .with_related(MACHINE, true, std::slice::from_ref(m))
        .with_related(CLUSTER, true, std::slice::from_ref(c))
        .with_related(
            CA_SECRET,
            true,
            &if ca { vec![ca_secret()] } else { vec![] },
        )
}

/// Fold an outcome's spec and status writes back into the object, as the API server would.
fn apply(dm: &mut Value, out: &Outcome) {
    for a in out.applied() {
        let v: Value = serde_json::from_str(a).expect("json");
        if let Some(spec) = v.get("spec").and_then(Value::as_object) {
            for (k, x) in spec {
                dm["spec"][k] = x.clone();
            }
        }
        if let Some(f) = v.pointer("/metadata/finalizers") {
            dm["metadata"]["finalizers"] = f.clone();
        }
    }
    for s in out.statuses() {
        let v: Value = serde_json::from_str(s).expect("json");
        dm["status"] = v["status"].clone();
    }
}

fn condition(dm: &Value, t: &str) -> (String, String) {
    let c = dm["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no condition {t} in {dm}"));
    (
        c["status"].as_str().unwrap_or("").to_owned(),
        c["reason"].as_str().unwrap_or("").to_owned(),
    )
}

fn has(host: &FakeHost, kind: &str, name: &str) -> bool {
    host.cloud()
        .objects
        .keys()
        .any(|k| k.0 == "ns/c1" && k.2 == kind && k.4 == name)
}

#[test]
fn control_plane_startup_follows_the_configured_durations() {
    let host = FakeHost::new();
    host.with_cloud(|c| {
        c.endpoints.insert(
            "ns/c1".to_owned(),
            capstan_sdk::cloud::Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 20000,
            },
        )
    });
    let (m, c) = (machine(true, true), cluster(true, false));
    let mut dm = dev_machine(true);
    let step = |dm: &mut Value, secs: u64| {
        let out = host
            .reconcile::<DevMachineReconciler>(&snap(dm, &m, &c, true, &at(secs)))
            .expect("reconcile");
        apply(dm, &out);
        out
    };

    // t=0: the VM exists but is starting.
    let out = step(&mut dm, 0);
    assert_eq!(out.requeue_after_ms(), Some(30_000));
    assert_eq!(
        condition(&dm, dc::VM_PROVISIONED),
        (
            "False".into(),
            dc::WAITING_FOR_STARTUP_TIMEOUT_REASON.into()
        )
    );
    assert_eq!(condition(&dm, dc::READY).0, "False");
    assert!(dm["spec"].get("providerID").is_none());
    assert_eq!(host.cloud().vms.len(), 1);
    // t=29: still starting, 1 s left.
    assert_eq!(step(&mut dm, 29).requeue_after_ms(), Some(1_000));

    // t=30: VM provisioned; the Node waits 10 s.
    let out = step(&mut dm, 30);
    assert_eq!(dm["spec"]["providerID"], json!("in-memory://m1"));
    assert_eq!(dm["status"]["initialization"]["provisioned"], json!(true));
    assert_eq!(
        condition(&dm, dc::VM_PROVISIONED),
        ("True".into(), dc::PROVISIONED_REASON.into())
    );
    assert_eq!(
        condition(&dm, dc::NODE_PROVISIONED).1,
        dc::WAITING_FOR_STARTUP_TIMEOUT_REASON
    );
    assert_eq!(out.requeue_after_ms(), Some(10_000));
    assert!(!has(&host, "Node", "m1"));

    // t=40: the Node registers; etcd needs 10 s more, the API server 20 s.
    let out = step(&mut dm, 40);
    let node: Value = host.with_cloud(|c| {
        let k = c
            .objects
            .keys()
            .find(|k| k.2 == "Node")
            .cloned()
            .expect("node");
        serde_json::from_str(&c.objects[&k]).expect("json")
    });
    assert_eq!(node["spec"]["providerID"], json!("in-memory://m1"));
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        json!("")
    );
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        json!("v1.34.0")
    );
    assert!(
        node["status"]["conditions"]
            .as_array()
            .expect("conds")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    );
    assert_eq!(condition(&dm, dc::NODE_PROVISIONED).0, "True");
    assert_eq!(out.requeue_after_ms(), Some(10_000));

    // t=50: etcd runs and leads; the endpoint does not answer yet.
    let out = step(&mut dm, 50);
    assert!(has(&host, "Pod", "etcd-m1"));
    assert!(!has(&host, "Pod", "kube-apiserver-m1"));
    assert!(!host.cloud().running.contains("ns/c1"));
    assert_eq!(condition(&dm, dc::ETCD_PROVISIONED).0, "True");
    assert_eq!(
        condition(&dm, dc::API_SERVER_PROVISIONED).1,
        dc::WAITING_FOR_STARTUP_TIMEOUT_REASON
    );
    assert_eq!(out.requeue_after_ms(), Some(10_000));
    let etcd: Value = host.with_cloud(|c| {
        let k = c
            .objects
            .keys()
            .find(|k| k.4 == "etcd-m1")
            .cloned()
            .expect("etcd");
        serde_json::from_str(&c.objects[&k]).expect("json")
    });
    assert_eq!(
        etcd["metadata"]["labels"],
        json!({"component": "etcd", "tier": "control-plane"})
    );
    assert!(
        etcd["metadata"]["annotations"]
            .get(ETCD_LEADER_FROM)
            .is_some()
    );

    // t=60: the API server starts the endpoint; the rest of the control plane follows.
    let out = step(&mut dm, 60);
    assert!(host.cloud().running.contains("ns/c1"));
    for pod in [
        "kube-apiserver-m1",
        "kube-scheduler-m1",
        "kube-controller-manager-m1",
    ] {
        assert!(has(&host, "Pod", pod), "{pod}");
    }
    for (kind, name) in [
        ("ConfigMap", "kubeadm-config"),
        ("ClusterRole", "kubeadm:get-nodes"),
        ("DaemonSet", "kube-proxy"),
        ("Deployment", "coredns"),
    ] {
        assert!(has(&host, kind, name), "{kind} {name}");
    }
    assert_eq!(
        condition(&dm, dc::READY),
        ("True".into(), dc::READY_REASON.into())
    );
    assert_eq!(out.requeue_after_ms(), None);
    assert_eq!(out.events()[0].reason, "APIServerStarted");

    // Steady state: nothing to write, nothing to wait for.
    let out = step(&mut dm, 120);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn the_node_is_created_once_and_not_replaced() {
    let host = FakeHost::new();
    let (m, c) = (machine(false, true), cluster(true, true));
    let mut dm = dev_machine(false);
    let out = host
        .reconcile::<DevMachineReconciler>(&snap(&dm, &m, &c, true, T0))
        .expect("ok");
    apply(&mut dm, &out);
    assert_eq!(
        condition(&dm, dc::READY).0,
        "True",
        "worker with zero durations is ready at once"
    );
    assert!(
        !has(&host, "Pod", "etcd-m1"),
        "workers run no control plane"
    );
    // The Machine controller annotates the Node; a later reconcile keeps that.
    host.with_cloud(|c| {
        let k = c
            .objects
            .keys()
            .find(|k| k.2 == "Node")
            .cloned()
            .expect("node");
        let mut n: Value = serde_json::from_str(&c.objects[&k]).expect("json");
        n["metadata"]["annotations"] = json!({"cluster.x-k8s.io/machine": "m1"});
        c.objects.insert(k, n.to_string());
    });
    host.reconcile::<DevMachineReconciler>(&snap(&dm, &m, &c, true, &at(5)))
        .expect("ok");
    let kept = host
        .cloud()
        .objects
        .values()
        .any(|o| o.contains("cluster.x-k8s.io/machine"));
    assert!(kept);
}

#[test]
fn provisioning_waits_for_cluster_infrastructure_bootstrap_data_and_the_control_plane() {
    let host = FakeHost::new();
    let dm = dev_machine(false);
    let cases = [
        (
            machine(true, true),
            cluster(false, false),
            dc::WAITING_FOR_CLUSTER_INFRASTRUCTURE_REASON,
        ),
        (
            machine(false, false),
            cluster(true, false),
            dc::WAITING_FOR_CONTROL_PLANE_INITIALIZED_REASON,
        ),
        (
            machine(false, false),
            cluster(true, true),
            dc::WAITING_FOR_BOOTSTRAP_DATA_REASON,
        ),
        (
            machine(true, false),
            cluster(true, false),
            dc::WAITING_FOR_BOOTSTRAP_DATA_REASON,
        ),
    ];
    for (m, c, reason) in cases {
        let mut d = dm.clone();
        let out = host
            .reconcile::<DevMachineReconciler>(&snap(&d, &m, &c, true, T0))
            .expect("ok");
        apply(&mut d, &out);
        assert_eq!(
            condition(&d, dc::VM_PROVISIONED),
            ("False".into(), reason.into())
        );
        assert_eq!(
            condition(&d, dc::NODE_PROVISIONED).1,
            dc::WAITING_FOR_VM_PROVISIONED_REASON
        );
        assert!(
            host.cloud().vms.is_empty(),
            "no VM before the gates open ({reason})"
        );
    }
}

#[test]
fn the_api_server_needs_the_cluster_ca() {
    let host = FakeHost::new();
    host.with_cloud(|c| {
        c.endpoints.insert(
            "ns/c1".to_owned(),
            capstan_sdk::cloud::Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 20000,
            },
        )
    });
    let err = host
        .reconcile::<DevMachineReconciler>(&snap(
            &dev_machine(false),
            &machine(true, true),
            &cluster(true, false),
            false,
            T0,
        ))
        .unwrap_err();
    assert!(
        matches!(err, Error::Transient(ref m) if m.contains("CA Secret")),
        "{err}"
    );
}

#[test]
fn jitter_is_stable_per_name_and_bounded() {
    let backend: InMemoryMachineBackend = serde_json::from_value(
        json!({"vm": {"provisioning": {"startupDuration": "30s", "startupJitter": "0.2"}}}),
    )
    .expect("parses");
    let a = startup_duration(&backend, Component::Vm, "m1").expect("ok");
    assert_eq!(
        a,
        startup_duration(&backend, Component::Vm, "m1").expect("ok")
    );
    let all: Vec<Duration> = (0..20)
        .map(|i| startup_duration(&backend, Component::Vm, &format!("m{i}")).expect("ok"))
        .collect();
    assert!(
        all.iter()
            .all(|d| *d >= Duration::from_secs(30) && *d <= Duration::from_secs(36))
    );
    assert!(all.iter().any(|d| *d != all[0]), "names spread the jitter");
    assert_eq!(
        startup_duration(&backend, Component::Node, "m1").expect("ok"),
        Duration::ZERO
    );
    let bad: InMemoryMachineBackend =
        serde_json::from_value(json!({"vm": {"provisioning": {"startupDuration": "soon"}}}))
            .expect("parses");
    assert!(matches!(
        startup_duration(&bad, Component::Vm, "m1"),
        Err(Error::Terminal(_))
    ));
}

#[test]
fn deletion_removes_node_pods_and_vm_then_only_its_finalizer() {
    let host = FakeHost::new();
    host.with_cloud(|c| {
        c.endpoints.insert(
            "ns/c1".to_owned(),
            capstan_sdk::cloud::Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 20000,
            },
        )
    });
    let (m, c) = (machine(true, true), cluster(true, false));
    let mut dm = dev_machine(false);
    let out = host
        .reconcile::<DevMachineReconciler>(&snap(&dm, &m, &c, true, T0))
        .expect("ok");
    apply(&mut dm, &out);
    assert!(has(&host, "Node", "m1") && has(&host, "Pod", "kube-apiserver-m1"));
    dm["metadata"]["deletionTimestamp"] = json!(at(10));
    // The Machine may be gone already; the cluster-name label still names the cluster.
    let out = host
        .reconcile::<DevMachineReconciler>(
            &Snapshot::new(&dm, &at(10))
                .with_related(MACHINE, true, &[])
                .with_related(CLUSTER, true, &[])
                .with_related(CA_SECRET, true, &[]),
        )
        .expect("ok");
    let cloud = host.cloud();
    assert!(cloud.vms.is_empty());
    assert!(!cloud.objects.keys().any(|k| k.2 == "Node" || k.2 == "Pod"));
    assert!(
        has(&host, "ConfigMap", "kubeadm-config"),
        "cluster-level kubeadm objects stay"
    );
    let patch: Value = serde_json::from_str(&out.applied()[0]).expect("json");
    assert_eq!(patch["metadata"]["finalizers"], json!(["other"]));
}

#[test]
fn finalizer_first_and_capabilities() {
    let host = FakeHost::new();
    let mut dm = dev_machine(false);
    dm["metadata"]["finalizers"] = json!([]);
    let out = host
        .reconcile::<DevMachineReconciler>(&snap(
            &dm,
            &machine(true, true),
            &cluster(true, false),
            true,
            T0,
        ))
        .expect("ok");
    assert_eq!(out.applied().len(), 1);
    assert!(out.statuses().is_empty());
    assert!(host.cloud().vms.is_empty());
    let info = DevMachineReconciler::describe();
    assert!(info.capabilities.contains(Capabilities::CLOUD));
    assert_eq!(info.finalizer.as_deref(), Some(finalizers::DEV_MACHINE));
}

//! Native tests of the Machine reconciler: adoption, phases, conditions, Node sync and deletion order.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:00:30Z";

fn cluster(cp_initialized: bool) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"}, "spec": {},
        "status": {"initialization": {"infrastructureProvisioned": true},
            "conditions": [{"type": "ControlPlaneInitialized", "status": if cp_initialized {"True"} else {"False"},
                "reason": "X", "lastTransitionTime": T0}]}})
}

fn machine() -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-m1", "generation": 2,
            "finalizers": [finalizers::MACHINE],
            "labels": {labels::CLUSTER_NAME: "c1", labels::CONTROL_PLANE: "",
                "node-role.kubernetes.io/control-plane": "", "team": "a"},
            "ownerReferences": [{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                "name": "cp", "uid": "uid-cp", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"clusterName": "c1", "version": "v1.34.0",
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": "m1"}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "m1"}}})
}

fn owned_by_m1() -> Value {
    json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "m1", "uid": "uid-m1",
        "controller": true, "blockOwnerDeletion": true}])
}

fn config(created: bool) -> Value {
    let mut o = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-kc",
            "ownerReferences": owned_by_m1(), "labels": {labels::CLUSTER_NAME: "c1"}},
        "spec": {}, "status": {"initialization": {"dataSecretCreated": created}}});
    if created {
        o["status"]["dataSecretName"] = json!("m1-data");
        o["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": T0}]);
    }
    o
}

fn dev_machine(provisioned: bool) -> Value {
    let mut o = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachine",
        "metadata": {"name": "m1", "namespace": "ns", "uid": "uid-dm",
            "ownerReferences": owned_by_m1(), "labels": {labels::CLUSTER_NAME: "c1"}},
        "spec": {"backend": {"inMemory": {}}}, "status": {"initialization": {"provisioned": provisioned}}});
    if provisioned {
        o["spec"]["providerID"] = json!("in-memory://m1");
        o["status"]["addresses"] = json!([{"type": "Hostname", "address": "m1"}]);
        o["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": T0}]);
    }
    o
}

fn node(ready: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1"},
        "spec": {"providerID": "in-memory://m1"},
        "status": {"nodeInfo": {"kubeletVersion": "v1.34.0"}, "conditions": [
            {"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "kubelet is not ready"},
            {"type": "MemoryPressure", "status": "False"}, {"type": "DiskPressure", "status": "False"},
            {"type": "PIDPressure", "status": "False"}]}})
}

struct World {
    cluster: Vec<Value>,
    configs: Vec<Value>,
    infra: Vec<Value>,
    nodes: Vec<Value>,
    connection: Connection,
}

impl Default for World {
    fn default() -> Self {
        Self {
            cluster: vec![cluster(true)],
            configs: vec![config(false)],
            infra: vec![dev_machine(false)],
            nodes: vec![],
            connection: Connection::Connected,
        }
    }
}

fn snap(m: &Value, w: &World, now: &str) -> Snapshot {
    Snapshot::new(m, now)
        .with_related(BOOTSTRAP_KINDS[0].2, true, &w.configs)
        .with_related(INFRA_KINDS[0].2, true, &w.infra)
        .with_related(CLUSTER, true, &w.cluster)
        .with_related(NODE, w.connection == Connection::Connected, &w.nodes)
        .with_workload(w.connection)
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).expect("json")
}

/// Fold the Machine's own writes back in, as the API server would.
fn fold(m: &mut Value, out: &Outcome) {
    for a in out
        .applied()
        .iter()
        .map(|a| parse(a))
        .filter(|a| a["kind"] == "Machine")
    {
        if let Some(spec) = a["spec"].as_object() {
            for (k, v) in spec {
                if k == "bootstrap" {
                    m["spec"]["bootstrap"]["dataSecretName"] = v["dataSecretName"].clone();
                } else {
                    m["spec"][k] = v.clone();
                }
            }
        }
        if let Some(f) = a.pointer("/metadata/finalizers") {
            m["metadata"]["finalizers"] = f.clone();
        }
    }
    for s in out.statuses() {
        m["status"] = parse(s)["status"].clone();
    }
}

fn cond(m: &Value, t: &str) -> (String, String, String) {
    let c = m["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no {t} in {m}"));
    let s = |f: &str| c[f].as_str().unwrap_or("").to_owned();
    (s("status"), s("reason"), s("message"))
}

#[test]
fn describe_declares_reverse_watches_and_the_workload_node() {
    let info = MachineReconciler::describe();
    assert_eq!(info.finalizer.as_deref(), Some(finalizers::MACHINE));
    let mappings: Vec<_> = info
        .watches
        .iter()
        .map(|w| (&w.kind.kind, &w.mapping, w.target))
        .collect();
    for kind in ["KubeadmConfig", "DevMachine"] {
        assert!(
            mappings
                .iter()
                .any(|(k, m, _)| *k == kind && matches!(m, KeyMapping::ControllerOwner))
        );
        assert!(
            mappings
                .iter()
                .any(|(k, m, _)| *k == kind && matches!(m, KeyMapping::ReferencedBy(_)))
        );
    }
    assert!(mappings.iter().any(|(k, m, t)| *k == "Node"
        && matches!(m, KeyMapping::FieldMatch(p) if p.other == "spec.providerID")
        && *t == capstan_sdk::Target::Workload));
    assert!(
        info.relations
            .iter()
            .any(|r| r.name == NODE && r.target == capstan_sdk::Target::Workload)
    );
    assert!(
        info.permissions
            .iter()
            .any(|p| p.kind.kind == "Node" && p.verbs.contains(Verbs::DELETE))
    );
}

#[test]
fn finalizer_is_added_alone_first() {
    let host = FakeHost::new();
    let mut m = machine();
    m["metadata"]["finalizers"] = json!([]);
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &World::default(), T0))
        .expect("ok");
    assert_eq!(out.applied().len(), 1);
    assert_eq!(
        parse(&out.applied()[0])["metadata"]["finalizers"],
        json!([finalizers::MACHINE])
    );
    assert!(out.statuses().is_empty());
}

#[test]
fn adopts_bootstrap_and_infrastructure_created_before_the_machine() {
    let host = FakeHost::new();
    let mut w = World::default();
    for o in [&mut w.configs[0], &mut w.infra[0]] {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
            "kind": "KubeadmControlPlane", "name": "cp", "uid": "uid-cp"}]);
        o["metadata"]["labels"] = json!({});
    }
    let out = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &w, T0))
        .expect("ok");
    for kind in ["KubeadmConfig", "DevMachine"] {
        let p = out
            .applied()
            .iter()
            .map(|a| parse(a))
            .find(|a| a["kind"] == kind)
            .expect(kind);
        let refs = p["metadata"]["ownerReferences"].as_array().expect("refs");
        assert_eq!(refs.len(), 2, "the KCP reference is kept");
        let c = refs
            .iter()
            .find(|r| r["controller"] == json!(true))
            .expect("controller");
        assert_eq!(
            (
                c["kind"].as_str(),
                c["name"].as_str(),
                c["blockOwnerDeletion"].as_bool()
            ),
            (Some("Machine"), Some("m1"), Some(true))
        );
        assert_eq!(p["metadata"]["labels"][labels::CLUSTER_NAME], json!("c1"));
    }
    // Already adopted: nothing re-applied.
    let out = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &World::default(), T0))
        .expect("ok");
    assert!(!out.applied().iter().any(|a| parse(a)["kind"] != "Machine"));
}

#[test]
fn phases_and_conditions_follow_bootstrap_infrastructure_and_the_node() {
    let host = FakeHost::new();
    let mut w = World::default();
    let mut m = machine();

    // Pending: nothing ready.
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T0))
        .expect("ok");
    fold(&mut m, &out);
    assert_eq!(m["status"]["phase"], json!("Pending"));
    assert_eq!(
        m["status"]["initialization"],
        json!({"bootstrapDataSecretCreated": false, "infrastructureProvisioned": false})
    );
    assert_eq!(
        cond(&m, mc::BOOTSTRAP_CONFIG_READY),
        (
            "False".into(),
            "NotReady".into(),
            "KubeadmConfig status.initialization.dataSecretCreated is false".into()
        )
    );
    assert_eq!(cond(&m, mc::INFRASTRUCTURE_READY).1, "NotReady");
    assert_eq!(
        cond(&m, mc::NODE_HEALTHY),
        (
            "Unknown".into(),
            "InspectionFailed".into(),
            "Waiting for DevMachine to report spec.providerID".into()
        )
    );
    assert_eq!(cond(&m, mc::READY).0, "False");
    assert_eq!(
        cond(&m, mc::AVAILABLE),
        ("False".into(), "NotReady".into(), String::new())
    );
    assert_eq!(cond(&m, mc::DELETING).1, "NotDeleting");
    assert_eq!(cond(&m, mc::PAUSED).1, "NotPaused");

    // Provisioning: the bootstrap data exists.
    w.configs = vec![config(true)];
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T0))
        .expect("ok");
    fold(&mut m, &out);
    assert_eq!(m["spec"]["bootstrap"]["dataSecretName"], json!("m1-data"));
    assert_eq!(m["status"]["phase"], json!("Provisioning"));
    assert_eq!(cond(&m, mc::BOOTSTRAP_CONFIG_READY).0, "True");

    // Provisioned: the infrastructure reports a provider ID.
    w.infra = vec![dev_machine(true)];
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T0))
        .expect("ok");
    fold(&mut m, &out);
    assert_eq!(m["spec"]["providerID"], json!("in-memory://m1"));
    assert_eq!(m["status"]["phase"], json!("Provisioned"));
    assert_eq!(
        m["status"]["addresses"],
        json!([{"type": "Hostname", "address": "m1"}])
    );
    assert_eq!(
        cond(&m, mc::NODE_READY).2,
        "Waiting for a Node with spec.providerID in-memory://m1 to exist"
    );
    assert!(out.events().iter().any(|e| e.reason == "Provisioned"));

    // Running: the Node registered (not Ready yet).
    w.nodes = vec![node("False")];
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T0))
        .expect("ok");
    fold(&mut m, &out);
    assert_eq!(m["status"]["phase"], json!("Running"));
    assert_eq!(m["status"]["nodeRef"], json!({"name": "m1"}));
    assert_eq!(m["status"]["nodeInfo"]["kubeletVersion"], json!("v1.34.0"));
    assert_eq!(
        cond(&m, mc::NODE_READY),
        (
            "False".into(),
            "NodeNotReady".into(),
            "* Node.Ready: kubelet is not ready".into()
        )
    );
    assert_eq!(cond(&m, mc::NODE_HEALTHY).1, "NodeNotHealthy");
    let np = parse(&out.workload_applied()[0]);
    assert_eq!(np["metadata"]["name"], json!("m1"));
    assert_eq!(
        np["metadata"]["annotations"],
        json!({
        "cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/cluster-namespace": "ns",
        "cluster.x-k8s.io/machine": "m1", "cluster.x-k8s.io/owner-kind": "KubeadmControlPlane",
        "cluster.x-k8s.io/owner-name": "cp", LABELS_FROM_MACHINE: "node-role.kubernetes.io/control-plane"})
    );
    assert_eq!(
        np["metadata"]["labels"],
        json!({"node-role.kubernetes.io/control-plane": ""}),
        "only node label domains"
    );

    // Ready, then Available after minReadySeconds.
    m["spec"]["minReadySeconds"] = json!(60);
    let mut n = node("True");
    n["metadata"]["annotations"] = np["metadata"]["annotations"].clone();
    n["metadata"]["labels"] = np["metadata"]["labels"].clone();
    w.nodes = vec![n];
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T1))
        .expect("ok");
    fold(&mut m, &out);
    assert!(
        out.workload_applied().is_empty(),
        "the Node already carries everything"
    );
    assert_eq!(cond(&m, mc::NODE_READY).1, "NodeReady");
    assert_eq!(
        cond(&m, mc::NODE_HEALTHY),
        ("True".into(), "NodeHealthy".into(), String::new())
    );
    assert_eq!(
        cond(&m, mc::READY),
        ("True".into(), "Ready".into(), String::new())
    );
    assert_eq!(cond(&m, mc::AVAILABLE).1, "WaitingForMinReadySeconds");
    assert_eq!(out.requeue_after_ms(), Some(60_000));
    let later = time::add(T1, Duration::from_secs(60)).expect("t");
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, &later))
        .expect("ok");
    fold(&mut m, &out);
    assert_eq!(
        cond(&m, mc::AVAILABLE),
        ("True".into(), "Available".into(), String::new())
    );
    // Steady state: no writes at all.
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, &later))
        .expect("ok");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(m["status"]["observedGeneration"], json!(2));
}

#[test]
fn node_conditions_wait_for_the_control_plane_and_the_connection() {
    let host = FakeHost::new();
    let mut w = World {
        cluster: vec![cluster(false)],
        ..World::default()
    };
    let out = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &w, T0))
        .expect("ok");
    let s = parse(&out.statuses()[0]);
    assert_eq!(
        cond(&s, mc::NODE_READY).2,
        "Waiting for Cluster control plane to be initialized"
    );
    w.cluster = vec![cluster(true)];
    w.connection = Connection::Disconnected;
    let out = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &w, T0))
        .expect("ok");
    let s = parse(&out.statuses()[0]);
    assert_eq!(
        cond(&s, mc::NODE_HEALTHY),
        (
            "Unknown".into(),
            "ConnectionDown".into(),
            "Remote connection not established yet".into()
        )
    );
    assert!(out.workload_applied().is_empty());
}

#[test]
fn the_node_label_domains_are_capis() {
    for k in [
        "node-role.kubernetes.io/worker",
        "node-restriction.kubernetes.io/x",
        "a.node-restriction.kubernetes.io/x",
        "node.cluster.x-k8s.io/x",
        "b.node.cluster.x-k8s.io/y",
    ] {
        assert!(is_node_label(k), "{k}");
    }
    for k in [
        "team",
        "cluster.x-k8s.io/cluster-name",
        "kubernetes.io/hostname",
    ] {
        assert!(!is_node_label(k), "{k}");
    }
}

fn deleting_machine() -> Value {
    let mut m = machine();
    m["metadata"]["deletionTimestamp"] = json!(T1);
    m["metadata"]["finalizers"] = json!(["other", finalizers::MACHINE]);
    m["spec"]["providerID"] = json!("in-memory://m1");
    m["status"] = json!({"nodeRef": {"name": "m1"}, "phase": "Running",
        "initialization": {"bootstrapDataSecretCreated": true, "infrastructureProvisioned": true}});
    m
}

#[test]
fn deletion_removes_infrastructure_then_bootstrap_then_the_node() {
    let host = FakeHost::new();
    let mut w = World {
        configs: vec![config(true)],
        infra: vec![dev_machine(true)],
        nodes: vec![node("True")],
        ..World::default()
    };
    let m = deleting_machine();

    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T1))
        .expect("ok");
    assert_eq!(
        out.deletions()
            .iter()
            .map(|d| d.kind.as_str())
            .collect::<Vec<_>>(),
        ["DevMachine"]
    );
    let s = parse(&out.statuses()[0]);
    assert_eq!(s["status"]["phase"], json!("Deleting"));
    assert_eq!(
        cond(&s, mc::DELETING),
        (
            "True".into(),
            "WaitingForInfrastructureDeletion".into(),
            "Waiting for DevMachine to be deleted".into()
        )
    );
    assert!(out.workload_deletions().is_empty());

    // Already being deleted: not deleted again.
    w.infra[0]["metadata"]["deletionTimestamp"] = json!(T1);
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T1))
        .expect("ok");
    assert!(out.deletions().is_empty());

    w.infra.clear();
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T1))
        .expect("ok");
    assert_eq!(
        out.deletions()
            .iter()
            .map(|d| d.kind.as_str())
            .collect::<Vec<_>>(),
        ["KubeadmConfig"]
    );
    let s = parse(&out.statuses()[0]);
    assert_eq!(cond(&s, mc::DELETING).1, "WaitingForBootstrapDeletion");
    assert_eq!(cond(&s, mc::INFRASTRUCTURE_READY).1, "Deleted");

    w.configs.clear();
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &w, T1))
        .expect("ok");
    assert_eq!(out.workload_deletions().len(), 1);
    assert_eq!(
        (
            out.workload_deletions()[0].kind.as_str(),
            out.workload_deletions()[0].name.as_str()
        ),
        ("Node", "m1")
    );
    assert_eq!(
        parse(&out.applied()[0])["metadata"]["finalizers"],
        json!(["other"])
    );
    assert!(
        out.statuses().is_empty(),
        "the object goes away with the finalizer"
    );
    assert_eq!(out.events()[0].reason, "MachineDeleted");
}

#[test]
fn the_node_is_kept_when_the_cluster_is_being_deleted() {
    let host = FakeHost::new();
    let mut c = cluster(true);
    c["metadata"]["deletionTimestamp"] = json!(T1);
    let w = World {
        cluster: vec![c],
        configs: vec![],
        infra: vec![],
        nodes: vec![node("True")],
        ..World::default()
    };
    let out = host
        .reconcile::<MachineReconciler>(&snap(&deleting_machine(), &w, T1))
        .expect("ok");
    assert!(out.workload_deletions().is_empty());
    assert_eq!(
        parse(&out.applied()[0])["metadata"]["finalizers"],
        json!(["other"])
    );
}

#[test]
fn a_missing_cluster_is_transient_and_paused_stops_everything() {
    let host = FakeHost::new();
    let w = World {
        cluster: vec![],
        ..World::default()
    };
    let err = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &w, T0))
        .unwrap_err();
    assert!(matches!(err, Error::Transient(_)));
    let mut c = cluster(true);
    c["spec"]["paused"] = json!(true);
    let w = World {
        cluster: vec![c],
        ..World::default()
    };
    let out = host
        .reconcile::<MachineReconciler>(&snap(&machine(), &w, T0))
        .expect("ok");
    assert!(out.applied().is_empty());
    let s = parse(&out.statuses()[0]);
    assert_eq!(cond(&s, mc::PAUSED).0, "True");
}

#[test]
fn a_stand_alone_machine_is_owned_by_its_cluster_and_labelled() {
    let host = FakeHost::new();
    let mut m = machine();
    m["metadata"]["ownerReferences"] = json!([]);
    m["metadata"]["labels"] = json!({});
    let out = host
        .reconcile::<MachineReconciler>(&snap(&m, &World::default(), T0))
        .expect("ok");
    let p = out
        .applied()
        .iter()
        .map(|a| parse(a))
        .find(|a| a["kind"] == "Machine")
        .expect("patch");
    assert_eq!(p["metadata"]["labels"][labels::CLUSTER_NAME], json!("c1"));
    let r = &p["metadata"]["ownerReferences"][0];
    assert_eq!(
        (r["kind"].as_str(), r.get("controller")),
        (Some("Cluster"), None)
    );
}

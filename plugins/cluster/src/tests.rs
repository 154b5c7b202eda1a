//! Native tests of the Cluster reconciler through the SDK's fake host.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:01:00Z";

fn cluster(extra_meta: Value, status: Value) -> Value {
    let mut c = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1", "generation": 3,
            "finalizers": [finalizers::CLUSTER], "creationTimestamp": T0},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": "c1"},
            "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c1-cp"}
        },
        "status": status,
    });
    if let (Some(m), Some(e)) = (c["metadata"].as_object_mut(), extra_meta.as_object()) {
        m.extend(e.clone());
    }
    c
}

fn owned_by_c1() -> Value {
    json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1",
        "controller": true, "blockOwnerDeletion": true}])
}

fn dev_cluster(provisioned: bool, ready: Option<&str>, adopted: bool) -> Value {
    let mut o = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-dc"},
        "spec": {"backend": {"inMemory": {}}},
        "status": {"initialization": {"provisioned": provisioned}},
    });
    if provisioned {
        o["spec"]["controlPlaneEndpoint"] = json!({"host": "127.0.0.1", "port": 20000});
        o["status"]["failureDomains"] = json!([{"name": "fd1", "controlPlane": true}]);
    }
    if let Some(s) = ready {
        o["status"]["conditions"] = json!([{"type": "Ready", "status": s, "reason": if s == "True" {"Ready"} else {"WaitingForEndpoint"},
            "message": if s == "True" {""} else {"Waiting for the endpoint"}, "lastTransitionTime": T0}]);
    }
    if adopted {
        o["metadata"]["ownerReferences"] = owned_by_c1();
        o["metadata"]["labels"] = json!({labels::CLUSTER_NAME: "c1"});
    }
    o
}

fn kcp(initialized: bool, available: Option<&str>, adopted: bool) -> Value {
    let mut o = json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "metadata": {"name": "c1-cp", "namespace": "ns", "uid": "uid-kcp"},
        "spec": {"replicas": 3, "version": "v1.34.0",
            "machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "cp"}}},
            "kubeadmConfigSpec": {}},
        "status": {"initialization": {"controlPlaneInitialized": initialized}, "replicas": 1, "readyReplicas": 1,
            "availableReplicas": 1, "upToDateReplicas": 1},
    });
    if let Some(s) = available {
        o["status"]["conditions"] = json!([{"type": "Available", "status": s, "reason": if s == "True" {"Available"} else {"NotAvailable"},
            "lastTransitionTime": T0}]);
    }
    if adopted {
        o["metadata"]["ownerReferences"] = owned_by_c1();
        o["metadata"]["labels"] = json!({labels::CLUSTER_NAME: "c1"});
    }
    o
}

fn machine(name: &str, control_plane: bool, node: bool) -> Value {
    let mut labels = json!({labels::CLUSTER_NAME: "c1"});
    if control_plane {
        labels[labels::CONTROL_PLANE] = json!("");
    }
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"clusterName": "c1", "bootstrap": {}, "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": name}}});
    if node {
        m["status"] = json!({"nodeRef": {"name": name}});
    }
    m
}

fn md(name: &str, available: Option<&str>, owned: bool) -> Value {
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {labels::CLUSTER_NAME: "c1"}},
        "spec": {"clusterName": "c1", "replicas": 2},
        "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 1, "upToDateReplicas": 2}});
    if let Some(s) = available {
        m["status"]["conditions"] =
            json!([{"type": "Available", "status": s, "reason": "X", "lastTransitionTime": T0}]);
    }
    if owned {
        m["metadata"]["ownerReferences"] = json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}]);
    }
    m
}

#[derive(Default)]
struct World {
    infra: Vec<Value>,
    cp: Vec<Value>,
    machines: Vec<Value>,
    mds: Vec<Value>,
    mss: Vec<Value>,
}

fn snapshot(c: &Value, w: &World, now: &str) -> Snapshot {
    Snapshot::new(c, now)
        .with_related(INFRA_KINDS[0].2, true, &w.infra)
        .with_related(CONTROL_PLANE_KINDS[0].2, true, &w.cp)
        .with_related(MACHINES, true, &w.machines)
        .with_related(MACHINE_DEPLOYMENTS, true, &w.mds)
        .with_related(MACHINE_SETS, true, &w.mss)
        .with_related(WORKLOAD_PROBE, true, &[])
        .with_workload(Connection::Connected)
}

fn run(c: &Value, w: &World) -> Outcome {
    run_at(c, w, T0)
}

fn run_at(c: &Value, w: &World, now: &str) -> Outcome {
    FakeHost::new()
        .reconcile::<ClusterReconciler>(&snapshot(c, w, now))
        .expect("reconcile succeeds")
}

fn status_of(out: &Outcome) -> Value {
    assert_eq!(out.statuses().len(), 1, "one status write");
    let s: Value = serde_json::from_str(&out.statuses()[0]).expect("json");
    assert_eq!(
        (s["kind"].as_str(), s["metadata"]["name"].as_str()),
        (Some("Cluster"), Some("c1"))
    );
    s["status"].clone()
}

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} missing in {status}"))
}

fn assert_cond(status: &Value, t: &str, s: &str, reason: &str) {
    let c = cond(status, t);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some(s), Some(reason)),
        "{t}: {c}"
    );
    assert_eq!(c["observedGeneration"], 3, "{t} observedGeneration");
}

fn applied(out: &Outcome, kind: &str) -> Vec<Value> {
    out.applied()
        .iter()
        .map(|a| serde_json::from_str::<Value>(a).expect("json"))
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn event_reasons(out: &Outcome) -> Vec<String> {
    out.events().iter().map(|e| e.reason.clone()).collect()
}

/// Apply an outcome's Cluster writes to the Cluster, as the host would.
fn apply_to(c: &mut Value, out: &Outcome) {
    for a in applied(out, "Cluster") {
        if let Some(e) = a.pointer("/spec/controlPlaneEndpoint") {
            c["spec"]["controlPlaneEndpoint"] = e.clone();
        }
        if let Some(f) = a.pointer("/metadata/finalizers") {
            c["metadata"]["finalizers"] = f.clone();
        }
    }
    if let Some(s) = out.statuses().first() {
        let s: Value = serde_json::from_str(s).expect("json");
        c["status"] = s["status"].clone();
    }
}

#[test]
fn describe_declares_relations_watches_permissions_and_finalizer() {
    let info = ClusterReconciler::describe();
    assert_eq!(info.name, "cluster");
    assert_eq!(
        info.primary,
        Gvk::new("cluster.x-k8s.io", "v1beta2", "Cluster")
    );
    assert_eq!(info.finalizer.as_deref(), Some("cluster.cluster.x-k8s.io"));
    let rel = |n: &str| {
        info.relations
            .iter()
            .find(|r| r.name == n)
            .expect("relation")
            .clone()
    };
    assert_eq!(
        rel("infra-devcluster").selector,
        RelationSelector::FieldRef("spec.infrastructureRef".into())
    );
    assert_eq!(rel("infra-devcluster").kind.kind, "DevCluster");
    assert_eq!(
        rel("cp-kubeadmcontrolplane").selector,
        RelationSelector::FieldRef("spec.controlPlaneRef".into())
    );
    assert_eq!(
        rel(MACHINES).selector,
        RelationSelector::Label(labels::CLUSTER_NAME.into())
    );
    let perm = |k: &str| {
        info.permissions
            .iter()
            .find(|p| p.kind.kind == k)
            .expect("permission")
            .verbs
    };
    assert_eq!(perm("Cluster"), Verbs::PATCH | Verbs::PATCH_STATUS);
    assert_eq!(perm("DevCluster"), Verbs::PATCH | Verbs::DELETE);
    assert_eq!(perm("MachineDeployment"), Verbs::DELETE);
    assert!(
        info.watches
            .iter()
            .any(|w| w.kind.kind == "KubeadmControlPlane"
                && w.mapping == KeyMapping::ControllerOwner)
    );
}

#[test]
fn first_reconcile_only_adds_the_finalizer_keeping_others() {
    let c = cluster(json!({"finalizers": ["other.io/keep"]}), json!({}));
    let w = World {
        infra: vec![dev_cluster(true, None, false)],
        ..World::default()
    };
    let out = run(&c, &w);
    assert!(out.statuses().is_empty() && out.events().is_empty() && out.deletions().is_empty());
    let a = applied(&out, "Cluster");
    assert_eq!(out.applied().len(), 1);
    assert_eq!(
        a[0]["metadata"]["finalizers"],
        json!(["other.io/keep", "cluster.cluster.x-k8s.io"])
    );
    assert_eq!(a[0]["metadata"]["namespace"], "ns");
}

#[test]
fn a_cluster_without_references_is_pending() {
    let mut c = cluster(json!({}), json!({}));
    c["spec"] = json!({});
    let out = run(&c, &World::default());
    let s = status_of(&out);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(event_reasons(&out), ["Pending"]);
    assert_cond(&s, "InfrastructureReady", "True", "Ready");
    assert_cond(&s, "ControlPlaneInitialized", "False", "NotInitialized");
    assert!(
        s["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["type"] != "ControlPlaneAvailable"))
    );
}

#[test]
fn provisioning_adopts_references_and_mirrors_their_conditions() {
    let c = cluster(json!({}), json!({}));
    let w = World {
        infra: vec![dev_cluster(false, Some("False"), false)],
        cp: vec![kcp(false, None, false)],
        ..World::default()
    };
    let out = run(&c, &w);
    let s = status_of(&out);
    assert_eq!(s["phase"], "Provisioning");
    assert_eq!(event_reasons(&out), ["Provisioning"]);
    assert_eq!(
        s["initialization"],
        json!({"infrastructureProvisioned": false, "controlPlaneInitialized": false})
    );
    assert_cond(&s, "InfrastructureReady", "False", "WaitingForEndpoint");
    assert_eq!(
        cond(&s, "InfrastructureReady")["message"],
        "Waiting for the endpoint"
    );
    assert_cond(&s, "ControlPlaneInitialized", "False", "NotInitialized");
    assert_cond(&s, "ControlPlaneAvailable", "Unknown", "NotYetReported");
    assert_cond(&s, "WorkersAvailable", "True", "NoWorkers");
    assert_cond(&s, "Deleting", "False", "NotDeleting");
    assert_cond(&s, "Paused", "False", "NotPaused");
    assert_cond(&s, "Available", "False", "NotAvailable");
    assert_eq!(
        cond(&s, "Available")["message"],
        "* InfrastructureReady: Waiting for the endpoint\n* ControlPlaneAvailable: Condition Available not yet reported from KubeadmControlPlane"
    );
    assert_eq!(cond(&s, "Available")["lastTransitionTime"], T0);
    let order: Vec<&str> = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(
        order,
        [
            "Available",
            "ControlPlaneAvailable",
            "ControlPlaneInitialized",
            "InfrastructureReady",
            "RemoteConnectionProbe",
            "WorkersAvailable",
            "Deleting",
            "Paused"
        ]
    );
    // Both references get the Cluster as controller owner and the cluster-name label.
    for kind in ["DevCluster", "KubeadmControlPlane"] {
        let a = applied(&out, kind);
        assert_eq!(a.len(), 1, "{kind} adopted");
        assert_eq!(a[0]["metadata"]["ownerReferences"], owned_by_c1(), "{kind}");
        assert_eq!(a[0]["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
        assert!(a[0].get("spec").is_none(), "only metadata is written");
    }
    assert_eq!(out.requeue_after_ms(), None);
}

#[test]
fn infrastructure_without_ready_condition_uses_the_fallback() {
    let c = cluster(json!({}), json!({}));
    let w = World {
        infra: vec![dev_cluster(false, None, true)],
        cp: vec![kcp(false, None, true)],
        ..World::default()
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "InfrastructureReady", "False", "NotReady");
    assert_eq!(
        cond(&s, "InfrastructureReady")["message"],
        "DevCluster status.initialization.provisioned is false"
    );
}

#[test]
fn provisioned_infrastructure_sets_endpoint_failure_domains_and_phase() {
    let c = cluster(json!({}), json!({}));
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(false, None, true)],
        ..World::default()
    };
    let out = run(&c, &w);
    assert!(
        applied(&out, "DevCluster").is_empty(),
        "already adopted: no patch"
    );
    let patch = applied(&out, "Cluster");
    assert_eq!(patch.len(), 1);
    assert_eq!(
        patch[0]["spec"],
        json!({"controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20000}})
    );
    let s = status_of(&out);
    assert_eq!(s["phase"], "Provisioned");
    assert_eq!(s["initialization"]["infrastructureProvisioned"], true);
    assert_eq!(
        s["failureDomains"],
        json!([{"name": "fd1", "controlPlane": true}])
    );
    assert_cond(&s, "InfrastructureReady", "True", "Ready");
    assert_eq!(event_reasons(&out), ["InfrastructureReady", "Provisioned"]);
}

#[test]
fn initialized_and_available_control_plane_makes_the_cluster_available_and_steady() {
    let mut c = cluster(json!({}), json!({}));
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(true, Some("True"), true)],
        ..World::default()
    };
    let out = run(&c, &w);
    let s = status_of(&out);
    assert_eq!(
        s["initialization"],
        json!({"infrastructureProvisioned": true, "controlPlaneInitialized": true})
    );
    assert_cond(&s, "ControlPlaneInitialized", "True", "Initialized");
    assert_cond(&s, "ControlPlaneAvailable", "True", "Available");
    assert_cond(&s, "Available", "True", "Available");
    assert_eq!(
        s["controlPlane"],
        json!({"desiredReplicas": 3, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "upToDateReplicas": 1})
    );
    // Written back, a second reconcile later has nothing to do.
    apply_to(&mut c, &out);
    let again = run_at(&c, &w, T1);
    assert!(
        again.applied().is_empty() && again.statuses().is_empty() && again.events().is_empty(),
        "{again:?}"
    );
    // ControlPlaneInitialized stays True even if the control plane regresses.
    let w2 = World {
        cp: vec![kcp(false, Some("False"), true)],
        ..w
    };
    let s = status_of(&run_at(&c, &w2, T1));
    assert_cond(&s, "ControlPlaneInitialized", "True", "Initialized");
    assert_eq!(
        cond(&s, "ControlPlaneInitialized")["lastTransitionTime"],
        T0
    );
    assert_cond(&s, "ControlPlaneAvailable", "False", "NotAvailable");
    assert_eq!(cond(&s, "ControlPlaneAvailable")["lastTransitionTime"], T1);
    assert_cond(&s, "Available", "False", "NotAvailable");
    assert_eq!(
        s["initialization"]["controlPlaneInitialized"], true,
        "initialization never goes back"
    );
}

#[test]
fn missing_references_wait_and_report_does_not_exist_or_deleted() {
    let c = cluster(json!({}), json!({}));
    let out = run(&c, &World::default());
    assert_eq!(
        out.requeue_after_ms(),
        None,
        "creation is watched (referenced-by)"
    );
    let s = status_of(&out);
    assert_cond(&s, "InfrastructureReady", "False", "DoesNotExist");
    assert_eq!(
        cond(&s, "InfrastructureReady")["message"],
        "DevCluster does not exist"
    );
    assert_cond(&s, "ControlPlaneAvailable", "False", "DoesNotExist");
    assert_eq!(
        cond(&s, "ControlPlaneInitialized")["message"],
        "Waiting for KubeadmControlPlane to exist"
    );
    // Once provisioned, a vanished infrastructure cluster is Deleted.
    let c = cluster(
        json!({}),
        json!({"initialization": {"infrastructureProvisioned": true}}),
    );
    let s = status_of(&run(
        &c,
        &World {
            cp: vec![kcp(false, None, true)],
            ..World::default()
        },
    ));
    assert_cond(&s, "InfrastructureReady", "False", "Deleted");
}

#[test]
fn a_reference_to_an_unsupported_kind_is_reported_not_guessed() {
    let mut c = cluster(json!({}), json!({}));
    c["spec"]["infrastructureRef"] = json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": "c1"});
    // Even a DevCluster of the same name in the relation must not be taken for it.
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(false, None, true)],
        ..World::default()
    };
    let out = run(&c, &w);
    let s = status_of(&out);
    assert_cond(&s, "InfrastructureReady", "Unknown", "InternalError");
    assert!(
        cond(&s, "InfrastructureReady")["message"]
            .as_str()
            .is_some_and(|m| m.contains("DockerCluster.infrastructure.cluster.x-k8s.io"))
    );
    assert_eq!(s["initialization"]["infrastructureProvisioned"], false);
    assert!(applied(&out, "DevCluster").is_empty());
}

#[test]
fn a_mismatched_object_in_the_relation_counts_as_missing() {
    let c = cluster(json!({}), json!({}));
    let mut other = dev_cluster(true, Some("True"), true);
    other["metadata"]["name"] = json!("someone-else");
    let w = World {
        infra: vec![other],
        cp: vec![kcp(false, None, true)],
        ..World::default()
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "InfrastructureReady", "False", "DoesNotExist");
}

#[test]
fn a_reference_controlled_by_another_owner_is_not_stolen() {
    let c = cluster(json!({}), json!({}));
    let mut infra = dev_cluster(false, None, false);
    infra["metadata"]["ownerReferences"] = json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c9", "uid": "uid-c9", "controller": true}]);
    let out = run(
        &c,
        &World {
            infra: vec![infra],
            cp: vec![kcp(false, None, true)],
            ..World::default()
        },
    );
    assert!(applied(&out, "DevCluster").is_empty());
    let warn = out
        .events()
        .iter()
        .find(|e| e.reason == "FailedAdopt")
        .expect("warning event");
    assert_eq!(warn.event_type, EventType::Warning);
    assert!(warn.message.contains("Cluster c9"));
}

#[test]
fn workers_available_aggregates_machine_deployments_and_gates_available() {
    let c = cluster(json!({}), json!({}));
    let base = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(true, Some("True"), true)],
        ..World::default()
    };
    let w = World {
        mds: vec![
            md("md-a", Some("True"), true),
            md("md-b", Some("True"), true),
        ],
        ..base
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "WorkersAvailable", "True", "Available");
    assert_cond(&s, "Available", "True", "Available");
    assert_eq!(
        s["workers"],
        json!({"desiredReplicas": 4, "replicas": 4, "readyReplicas": 2, "availableReplicas": 2, "upToDateReplicas": 4})
    );
    let w = World {
        mds: vec![
            md("md-a", Some("True"), true),
            md("md-b", Some("False"), true),
        ],
        ..w
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "WorkersAvailable", "False", "NotAvailable");
    assert_eq!(
        cond(&s, "WorkersAvailable")["message"],
        "* MachineDeployment md-b: Available is False"
    );
    assert_cond(&s, "Available", "False", "NotAvailable");
    let w = World {
        mds: vec![md("md-a", None, true)],
        ..w
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "WorkersAvailable", "Unknown", "AvailableUnknown");
    assert_cond(&s, "Available", "Unknown", "AvailableUnknown");
}

#[test]
fn availability_gates_join_the_available_summary() {
    let mut c = cluster(json!({}), json!({}));
    c["spec"]["availabilityGates"] = json!([{"conditionType": "Custom"}]);
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(true, Some("True"), true)],
        ..World::default()
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "Available", "Unknown", "AvailableUnknown");
    assert_eq!(
        cond(&s, "Available")["message"],
        "* Custom: Condition not yet reported"
    );
    c["status"] = json!({"conditions": [{"type": "Custom", "status": "True", "reason": "Ok", "lastTransitionTime": T0}]});
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "Available", "True", "Available");
    assert!(
        s["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Custom")),
        "foreign conditions are kept"
    );
}

#[test]
fn without_a_control_plane_object_the_first_control_plane_node_initializes() {
    let mut c = cluster(json!({}), json!({}));
    c["spec"]
        .as_object_mut()
        .map(|s| s.remove("controlPlaneRef"));
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        machines: vec![machine("m0", true, false)],
        ..World::default()
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "ControlPlaneInitialized", "False", "NotInitialized");
    let w = World {
        machines: vec![machine("m0", true, true)],
        ..w
    };
    let s = status_of(&run(&c, &w));
    assert_cond(&s, "ControlPlaneInitialized", "True", "Initialized");
    assert_eq!(s["initialization"]["controlPlaneInitialized"], true);
    assert_cond(&s, "Available", "True", "Available");
}

#[test]
fn deletion_removes_workers_then_control_plane_then_infrastructure_then_the_finalizer() {
    let deleting = json!({"deletionTimestamp": T1});
    let mut c = cluster(deleting.clone(), json!({"phase": "Provisioned"}));
    // 1. Workers first: owned MachineDeployment deleted, not-owned Machine awaited; control-plane Machine ignored.
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(true, Some("True"), true)],
        machines: vec![machine("cp-0", true, true), machine("w-0", false, true)],
        mds: vec![md("md-a", Some("True"), true)],
        ..World::default()
    };
    let out = run_at(&c, &w, T1);
    let dels: Vec<(&str, &str)> = out
        .deletions()
        .iter()
        .map(|d| (d.kind.as_str(), d.name.as_str()))
        .collect();
    assert_eq!(dels, [("MachineDeployment", "md-a")]);
    assert_eq!(out.deletions()[0].api_version, "cluster.x-k8s.io/v1beta2");
    assert!(applied(&out, "Cluster").is_empty(), "finalizer kept");
    let s = status_of(&out);
    assert_eq!(s["phase"], "Deleting");
    assert!(event_reasons(&out).contains(&"Deleting".to_owned()));
    assert_cond(&s, "Deleting", "True", "WaitingForWorkersDeletion");
    assert_eq!(
        cond(&s, "Deleting")["message"],
        "* MachineDeployments: md-a\n* Machines: w-0"
    );
    assert_cond(&s, "Available", "False", "NotAvailable");
    apply_to(&mut c, &out);
    // 2. Workers gone: the control plane is deleted (once) and awaited.
    let w = World {
        machines: vec![machine("cp-0", true, true)],
        mds: vec![],
        ..w
    };
    let out = run_at(&c, &w, T1);
    let dels: Vec<(&str, &str)> = out
        .deletions()
        .iter()
        .map(|d| (d.kind.as_str(), d.name.as_str()))
        .collect();
    assert_eq!(dels, [("KubeadmControlPlane", "c1-cp")]);
    assert_eq!(out.deletions()[0].namespace, "ns");
    assert_cond(
        &status_of(&out),
        "Deleting",
        "True",
        "WaitingForControlPlaneDeletion",
    );
    let mut cp_deleting = kcp(true, Some("True"), true);
    cp_deleting["metadata"]["deletionTimestamp"] = json!(T1);
    let out = run_at(
        &c,
        &World {
            cp: vec![cp_deleting],
            ..World {
                infra: w.infra.clone(),
                ..World::default()
            }
        },
        T1,
    );
    assert!(
        out.deletions().is_empty(),
        "no second delete of an object already deleting"
    );
    // 3. Control plane gone: the infrastructure cluster next.
    let w = World {
        infra: w.infra.clone(),
        ..World::default()
    };
    let out = run_at(&c, &w, T1);
    let dels: Vec<(&str, &str)> = out
        .deletions()
        .iter()
        .map(|d| (d.kind.as_str(), d.name.as_str()))
        .collect();
    assert_eq!(dels, [("DevCluster", "c1")]);
    let s = status_of(&out);
    assert_cond(&s, "Deleting", "True", "WaitingForInfrastructureDeletion");
    assert_cond(&s, "ControlPlaneAvailable", "False", "Deleted");
    // 4. Everything gone: the finalizer goes, no status is written.
    let out = run_at(&c, &World::default(), T1);
    assert!(out.statuses().is_empty() && out.deletions().is_empty());
    let patch = applied(&out, "Cluster");
    assert_eq!(patch[0]["metadata"]["finalizers"], json!([]));
    assert_eq!(event_reasons(&out), ["Deleted"]);
}

#[test]
fn deleting_without_our_finalizer_does_nothing() {
    let c = cluster(
        json!({"deletionTimestamp": T1, "finalizers": ["other.io/x"]}),
        json!({}),
    );
    let out = run(
        &c,
        &World {
            infra: vec![dev_cluster(true, None, true)],
            ..World::default()
        },
    );
    assert_eq!(out, Outcome::new());
}

#[test]
fn an_unsynced_relation_is_a_transient_error_not_a_conclusion() {
    let c = cluster(json!({"deletionTimestamp": T1}), json!({}));
    let snap = Snapshot::new(&c, T0)
        .with_related(INFRA_KINDS[0].2, false, &[])
        .with_related(CONTROL_PLANE_KINDS[0].2, true, &[])
        .with_related(MACHINES, true, &[])
        .with_related(MACHINE_DEPLOYMENTS, true, &[])
        .with_related(MACHINE_SETS, true, &[]);
    let err = FakeHost::new()
        .reconcile::<ClusterReconciler>(&snap)
        .expect_err("must wait");
    assert!(matches!(err, Error::Transient(m) if m.contains("infra-devcluster")));
}

#[test]
fn remote_connection_probe_follows_the_workload_connection_and_gates_available() {
    let w = World {
        infra: vec![dev_cluster(true, Some("True"), true)],
        cp: vec![kcp(true, Some("True"), true)],
        ..World::default()
    };
    let c = cluster(json!({}), json!({}));
    let host = FakeHost::new();
    let run_with = |c: &Value, conn: Connection| {
        let snap = snapshot(c, &w, T1).with_workload(conn);
        let out = host
            .reconcile::<ClusterReconciler>(&snap)
            .expect("reconcile");
        status_of(&out)
    };
    let s = run_with(&c, Connection::Connected);
    assert_cond(&s, REMOTE_CONNECTION_PROBE, "True", PROBE_SUCCEEDED_REASON);
    assert_cond(&s, "Available", "True", "Available");
    let s = run_with(&c, Connection::Disconnected);
    assert_cond(&s, REMOTE_CONNECTION_PROBE, "False", PROBE_FAILED_REASON);
    assert_eq!(
        cond(&s, REMOTE_CONNECTION_PROBE)["message"],
        "Remote connection not established yet"
    );
    assert_cond(&s, "Available", "False", "NotAvailable");
    let s = run_with(&c, Connection::Unhealthy);
    assert_eq!(
        cond(&s, REMOTE_CONNECTION_PROBE)["message"],
        "Remote connection probe failed"
    );
    let info = ClusterReconciler::describe();
    for kind in ["DevCluster", "KubeadmControlPlane"] {
        assert!(info.watches.iter().any(|w| w.kind.kind == kind
            && matches!(&w.mapping, KeyMapping::ReferencedBy(f) if f.ends_with("Ref"))));
    }
}

//! Native tests of the DevCluster reconciler through the SDK's fake host and fake cloud.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";

fn cluster(paused: bool) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"},
        "spec": {"paused": paused, "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": "c1"}}})
}

fn dev_cluster(owned: bool, finalizer: bool) -> Value {
    let mut o = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-dc", "generation": 1},
        "spec": {"backend": {"inMemory": {}}}});
    if owned {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "name": "c1", "uid": "uid-c1", "controller": true, "blockOwnerDeletion": true}]);
        o["metadata"]["labels"] = json!({labels::CLUSTER_NAME: "c1"});
    }
    if finalizer {
        o["metadata"]["finalizers"] = json!(["other", finalizers::DEV_CLUSTER]);
    }
    o
}

fn snap(dc: &Value, clusters: &[Value]) -> Snapshot {
    Snapshot::new(dc, T0).with_related(CLUSTER, true, clusters)
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).expect("json")
}

#[test]
fn describe_declares_cloud_finalizer_and_owner_relation() {
    let info = DevClusterReconciler::describe();
    assert_eq!(info.finalizer.as_deref(), Some(finalizers::DEV_CLUSTER));
    assert!(info.capabilities.contains(Capabilities::CLOUD));
    assert!(!info.capabilities.contains(Capabilities::CRYPTO));
    assert_eq!(
        info.relations[0].selector,
        RelationSelector::ControllerOwner
    );
}

#[test]
fn waits_for_the_owner_reference_then_adds_the_finalizer_alone() {
    let host = FakeHost::new();
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dev_cluster(false, false), &[]))
        .expect("ok");
    assert!(out.is_empty(), "{out:?}");
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dev_cluster(true, false), &[cluster(false)]))
        .expect("ok");
    assert_eq!(out.applied().len(), 1);
    assert_eq!(
        parse(&out.applied()[0])["metadata"]["finalizers"],
        json!([finalizers::DEV_CLUSTER])
    );
    assert!(out.statuses().is_empty());
    assert!(
        host.cloud().endpoints.is_empty(),
        "nothing reserved before the finalizer"
    );
}

#[test]
fn reserves_the_endpoint_sets_it_once_and_reports_provisioned() {
    let host = FakeHost::new();
    let dc = dev_cluster(true, true);
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dc, &[cluster(false)]))
        .expect("ok");
    let cloud = host.cloud();
    let ep = cloud
        .endpoints
        .get("ns/c1")
        .expect("endpoint reserved for ns/c1");
    let spec = parse(&out.applied()[0]);
    assert_eq!(
        spec["spec"]["controlPlaneEndpoint"],
        json!({"host": ep.host, "port": ep.port})
    );
    let namespaces: Vec<&str> = cloud
        .objects
        .keys()
        .filter(|k| k.2 == "Namespace")
        .map(|k| k.4.as_str())
        .collect();
    assert_eq!(namespaces, ["default", "kube-public", "kube-system"]);
    let status = parse(&out.statuses()[0]);
    assert_eq!(
        status["status"]["initialization"]["provisioned"],
        json!(true)
    );
    let ready = &status["status"]["conditions"][0];
    assert_eq!(
        (
            ready["type"].as_str(),
            ready["status"].as_str(),
            ready["reason"].as_str()
        ),
        (Some("Ready"), Some("True"), Some("Ready"))
    );
    assert_eq!(ready["observedGeneration"], json!(1));

    // Steady state: the object as written comes back; nothing else is written.
    let mut dc2 = dc.clone();
    dc2["spec"]["controlPlaneEndpoint"] = spec["spec"]["controlPlaneEndpoint"].clone();
    dc2["status"] = status["status"].clone();
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dc2, &[cluster(false)]))
        .expect("ok");
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(host.cloud().endpoints.len(), 1);
}

#[test]
fn a_user_set_endpoint_is_kept() {
    let host = FakeHost::new();
    let mut dc = dev_cluster(true, true);
    dc["spec"]["controlPlaneEndpoint"] = json!({"host": "lb.example", "port": 443});
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dc, &[cluster(false)]))
        .expect("ok");
    assert!(out.applied().is_empty());
    assert!(host.cloud().endpoints.contains_key("ns/c1"));
}

#[test]
fn deletion_releases_the_endpoint_then_removes_only_its_finalizer() {
    let host = FakeHost::new();
    let dc = dev_cluster(true, true);
    host.reconcile::<DevClusterReconciler>(&snap(&dc, &[cluster(false)]))
        .expect("ok");
    host.with_cloud(|c| c.running.insert("ns/c1".to_owned()));
    let mut deleting = dc.clone();
    deleting["metadata"]["deletionTimestamp"] = json!(T0);
    // The Cluster may already be gone: the owner reference still names it.
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&deleting, &[]))
        .expect("ok");
    let cloud = host.cloud();
    assert!(cloud.endpoints.is_empty() && cloud.running.is_empty() && cloud.objects.is_empty());
    assert_eq!(
        parse(&out.applied()[0])["metadata"]["finalizers"],
        json!(["other"])
    );
    assert_eq!(out.events()[0].reason, "EndpointReleased");
}

#[test]
fn paused_reports_paused_and_reserves_nothing() {
    let host = FakeHost::new();
    let out = host
        .reconcile::<DevClusterReconciler>(&snap(&dev_cluster(true, true), &[cluster(true)]))
        .expect("ok");
    let status = parse(&out.statuses()[0]);
    assert_eq!(status["status"]["conditions"][0]["type"], json!("Paused"));
    assert_eq!(status["status"]["conditions"][0]["status"], json!("True"));
    assert!(host.cloud().endpoints.is_empty());
}

#[test]
fn other_backends_are_a_terminal_error_and_unsynced_is_transient() {
    let host = FakeHost::new();
    let mut dc = dev_cluster(true, true);
    dc["spec"]["backend"] = json!({"docker": {}});
    let err = host
        .reconcile::<DevClusterReconciler>(&snap(&dc, &[cluster(false)]))
        .unwrap_err();
    assert!(matches!(err, Error::Terminal(_)), "{err}");
    let err = host
        .reconcile::<DevClusterReconciler>(
            &Snapshot::new(&dev_cluster(true, true), T0).with_related(CLUSTER, false, &[]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Transient(_)), "{err}");
}

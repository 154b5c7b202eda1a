//! Native tests of the MachineHealthCheck reconciler through the SDK's fake host.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";

fn at(secs: i64) -> String {
    fleet::format_time(fleet::parse_time(T0).unwrap_or(0) + secs)
}

fn mhc(trigger: Option<Value>) -> Value {
    let mut o = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
        "metadata": {"name": "workers", "namespace": "ns", "uid": "uid-mhc", "generation": 1,
            "labels": {labels::CLUSTER_NAME: "c1"},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}]},
        "spec": {"clusterName": "c1",
            "selector": {"matchLabels": {labels::MACHINE_DEPLOYMENT_NAME: "md-1"}},
            "checks": {"nodeStartupTimeoutSeconds": 600,
                "unhealthyNodeConditions": [
                    {"type": "Ready", "status": "Unknown", "timeoutSeconds": 300},
                    {"type": "Ready", "status": "False", "timeoutSeconds": 300}]}}
    });
    if let Some(t) = trigger {
        o["spec"]["remediation"] = json!({"triggerIf": t});
    }
    o
}

fn cluster() -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"}, "spec": {},
        "status": {"conditions": [
            {"type": "InfrastructureReady", "status": "True", "reason": "Ready", "lastTransitionTime": T0},
            {"type": "ControlPlaneInitialized", "status": "True", "reason": "Initialized", "lastTransitionTime": at(60)}]}})
}

fn machine(name: &str, node: Option<&str>) -> Value {
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 1,
            "creationTimestamp": T0, "labels": {labels::MACHINE_DEPLOYMENT_NAME: "md-1", labels::CLUSTER_NAME: "c1"}},
        "spec": {"clusterName": "c1"},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": T0}]}});
    if let Some(n) = node {
        m["status"]["nodeRef"] = json!({"name": n});
    }
    m
}

fn node(name: &str, ready: &str, since: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]}})
}

fn snapshot(mhc: &Value, machines: &[Value], nodes: &[Value], now: &str) -> Snapshot {
    Snapshot::new(mhc, now)
        .with_related(CLUSTER, true, &[cluster()])
        .with_related(MACHINES, true, machines)
        .with_related(NODES, true, nodes)
        .with_workload(Connection::Connected)
}

fn run(mhc: &Value, machines: &[Value], nodes: &[Value], now: &str) -> Outcome {
    FakeHost::new()
        .reconcile::<MachineHealthCheckReconciler>(&snapshot(mhc, machines, nodes, now))
        .expect("reconciles")
}

fn statuses(out: &Outcome, kind: &str) -> Vec<Value> {
    out.statuses()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .filter(|o| o["kind"] == kind)
        .collect()
}

fn machine_condition(out: &Outcome, machine: &str, t: &str) -> Option<Value> {
    statuses(out, "Machine")
        .into_iter()
        .find(|o| o["metadata"]["name"] == machine)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

fn mhc_status(out: &Outcome) -> Value {
    statuses(out, "MachineHealthCheck")
        .pop()
        .expect("MachineHealthCheck status")["status"]
        .clone()
}

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} in {status}"))
}

#[test]
fn healthy_machines_pass_and_nothing_is_requeued() {
    let ms = [machine("m1", Some("n1")), machine("m2", Some("n2"))];
    let nodes = [node("n1", "True", T0), node("n2", "True", T0)];
    let out = run(&mhc(None), &ms, &nodes, &at(3600));
    let hc = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(
        (hc["status"].as_str(), hc["reason"].as_str()),
        (Some("True"), Some("HealthCheckSucceeded"))
    );
    let s = mhc_status(&out);
    assert_eq!(
        (
            s["expectedMachines"].as_i64(),
            s["currentHealthy"].as_i64(),
            s["remediationsAllowed"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(s["targets"], json!(["m1", "m2"]));
    assert_eq!(cond(&s, "RemediationAllowed")["status"], "True");
    assert_eq!(cond(&s, "Paused")["reason"], "NotPaused");
    assert_eq!(out.requeue_after_ms(), None, "no timeout is running");
    // The Machine's own conditions are kept in the status written.
    let m1 = statuses(&out, "Machine")
        .into_iter()
        .find(|o| o["metadata"]["name"] == "m1")
        .expect("m1");
    assert!(
        m1["status"]["conditions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["type"] == "Ready")
    );
}

#[test]
fn a_node_condition_is_unhealthy_after_its_timeout_and_requeues_until_then() {
    let ms = [machine("m1", Some("n1"))];
    let nodes = [node("n1", "Unknown", &at(100))];
    // 100 s into a 300 s timeout: neither healthy nor unhealthy (nothing
    // written, not counted healthy), look again in 201 s.
    let out = run(&mhc(None), &ms, &nodes, &at(200));
    assert!(machine_condition(&out, "m1", "HealthCheckSucceeded").is_none());
    assert!(machine_condition(&out, "m1", "OwnerRemediated").is_none());
    assert_eq!(mhc_status(&out)["currentHealthy"], 0);
    assert_eq!(out.requeue_after_ms(), Some(201_000));
    // Past the timeout: unhealthy, and owner remediation requested.
    let out = run(&mhc(None), &ms, &nodes, &at(401));
    let hc = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(
        (hc["status"].as_str(), hc["reason"].as_str()),
        (Some("False"), Some("UnhealthyNode"))
    );
    assert_eq!(
        hc["message"],
        "Health check failed: Condition Ready on Node is reported as Unknown for more than 5m0s"
    );
    let or = machine_condition(&out, "m1", "OwnerRemediated").expect("set");
    assert_eq!(
        (
            or["status"].as_str(),
            or["reason"].as_str(),
            or["message"].as_str()
        ),
        (
            Some("False"),
            Some("WaitingForRemediation"),
            Some("Waiting for remediation")
        )
    );
    assert_eq!(out.events()[0].reason, "MachineMarkedUnhealthy");
    assert_eq!(mhc_status(&out)["currentHealthy"], 0);
    assert_eq!(out.requeue_after_ms(), None);
}

#[test]
fn a_machine_without_node_times_out_from_the_latest_readiness_time() {
    // Created at T0, control plane initialized at T0+60: the 600 s run from T0+60.
    let ms = [machine("m1", None)];
    let out = run(&mhc(None), &ms, &[], &at(300));
    assert_eq!(out.requeue_after_ms(), Some((60 + 600 - 300 + 1) * 1000));
    assert!(machine_condition(&out, "m1", "HealthCheckSucceeded").is_none());
    let out = run(&mhc(None), &ms, &[], &at(661));
    let hc = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(hc["reason"], "NodeStartupTimeout");
    assert_eq!(
        hc["message"],
        "Health check failed: Node failed to report startup in 10m0s"
    );
    // The Machine's own InfrastructureReady time counts too.
    let mut late = machine("m2", None);
    late["status"]["conditions"] = json!([{"type": "InfrastructureReady", "status": "True", "reason": "Ready",
        "lastTransitionTime": at(500)}]);
    let out = run(&mhc(None), &[late], &[], &at(661));
    assert_eq!(out.requeue_after_ms(), Some((500 + 600 - 661 + 1) * 1000));
    // nodeStartupTimeoutSeconds 0 disables the check.
    let mut m = mhc(None);
    m["spec"]["checks"]["nodeStartupTimeoutSeconds"] = json!(0);
    let out = run(&m, &ms, &[], &at(100_000));
    assert!(
        machine_condition(&out, "m1", "HealthCheckSucceeded").is_none(),
        "not started: not healthy, never unhealthy"
    );
    assert_eq!(mhc_status(&out)["currentHealthy"], 0);
    assert_eq!(out.requeue_after_ms(), None);
}

#[test]
fn the_requeue_is_the_nearest_running_timeout() {
    let ms = [
        machine("m1", Some("n1")),
        machine("m2", Some("n2")),
        machine("m3", None),
    ];
    let nodes = [node("n1", "False", &at(0)), node("n2", "Unknown", &at(150))];
    let out = run(&mhc(None), &ms, &nodes, &at(200));
    // n1: 300-200+1 = 101; n2: 450-200+1 = 251; m3: 660-200+1 = 461.
    assert_eq!(out.requeue_after_ms(), Some(101_000));
}

#[test]
fn a_deleted_node_is_unhealthy() {
    let out = run(&mhc(None), &[machine("m1", Some("gone"))], &[], &at(10));
    let hc = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(
        (hc["reason"].as_str(), hc["message"].as_str()),
        (
            Some("NodeDeleted"),
            Some("Health check failed: Node gone has been deleted")
        )
    );
}

fn unhealthy_fleet(n_unhealthy: usize, total: usize) -> (Vec<Value>, Vec<Value>) {
    let ms: Vec<Value> = (0..total)
        .map(|i| machine(&format!("m{i}"), Some(&format!("n{i}"))))
        .collect();
    let nodes: Vec<Value> = (0..total)
        .map(|i| {
            node(
                &format!("n{i}"),
                if i < n_unhealthy { "False" } else { "True" },
                T0,
            )
        })
        .collect();
    (ms, nodes)
}

fn remediated(out: &Outcome) -> usize {
    statuses(out, "Machine")
        .iter()
        .filter(|m| {
            m["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "OwnerRemediated"))
        })
        .count()
}

#[test]
fn trigger_if_gates_remediation() {
    let now = at(1000);
    // At most 1 unhealthy: 2 are, so nobody is remediated, but health is reported.
    let (ms, nodes) = unhealthy_fleet(2, 5);
    let out = run(
        &mhc(Some(json!({"unhealthyLessThanOrEqualTo": 1}))),
        &ms,
        &nodes,
        &now,
    );
    assert_eq!(remediated(&out), 0);
    assert_eq!(
        machine_condition(&out, "m0", "HealthCheckSucceeded").expect("set")["status"],
        "False"
    );
    let s = mhc_status(&out);
    assert_eq!(cond(&s, "RemediationAllowed")["reason"], "TooManyUnhealthy");
    assert_eq!(
        cond(&s, "RemediationAllowed")["message"],
        "Remediation is not allowed, the number of not started or unhealthy machines exceeds maxUnhealthy (total: 5, unhealthy: 2, maxUnhealthy: 1)"
    );
    assert_eq!(s["remediationsAllowed"], 0);
    assert!(
        out.events()
            .iter()
            .any(|e| e.reason == "RemediationRestricted")
    );
    // 40% of 5 rounds down to 2: allowed.
    let out = run(
        &mhc(Some(json!({"unhealthyLessThanOrEqualTo": "40%"}))),
        &ms,
        &nodes,
        &now,
    );
    assert_eq!(remediated(&out), 2);
    assert_eq!(mhc_status(&out)["remediationsAllowed"], 0);
    // Default: 100%.
    let out = run(&mhc(None), &ms, &nodes, &now);
    assert_eq!(remediated(&out), 2);
    assert_eq!(mhc_status(&out)["remediationsAllowed"], 3);
    // A range.
    let out = run(
        &mhc(Some(json!({"unhealthyInRange": "[3-5]"}))),
        &ms,
        &nodes,
        &now,
    );
    assert_eq!(remediated(&out), 0);
    assert_eq!(
        cond(&mhc_status(&out), "RemediationAllowed")["message"],
        "Remediation is not allowed, the number of not started or unhealthy machines does not fall within the range (total: 5, unhealthy: 2, unhealthyRange: [3-5])"
    );
    // Not started Machines count as unhealthy for the limit (CAPI's
    // `expectedMachines - currentHealthy`), though only 2 need remediation.
    let mut starting = ms.clone();
    let mut m5 = machine("m5", None);
    m5["metadata"]["creationTimestamp"] = json!(at(900));
    starting.push(m5);
    let out = run(
        &mhc(Some(json!({"unhealthyLessThanOrEqualTo": 2}))),
        &starting,
        &nodes,
        &now,
    );
    assert_eq!(remediated(&out), 0);
    assert_eq!(
        cond(&mhc_status(&out), "RemediationAllowed")["message"],
        "Remediation is not allowed, the number of not started or unhealthy machines exceeds maxUnhealthy (total: 6, unhealthy: 2, maxUnhealthy: 2)"
    );
    assert_eq!(mhc_status(&out)["currentHealthy"], 3);
    assert!(machine_condition(&out, "m5", "HealthCheckSucceeded").is_none());
    let out = run(
        &mhc(Some(json!({"unhealthyInRange": "[1-3]"}))),
        &ms,
        &nodes,
        &now,
    );
    assert_eq!(remediated(&out), 2);
    assert_eq!(mhc_status(&out)["remediationsAllowed"], 1);
    let err = FakeHost::new()
        .reconcile::<MachineHealthCheckReconciler>(&snapshot(
            &mhc(Some(json!({"unhealthyInRange": "3-1"}))),
            &ms,
            &nodes,
            &now,
        ))
        .unwrap_err();
    assert!(matches!(err, Error::Terminal(_)), "{err}");
}

#[test]
fn skip_remediation_and_recovery() {
    let (mut ms, mut nodes) = unhealthy_fleet(1, 2);
    ms[0]["metadata"]["annotations"] = json!({annotations::SKIP_REMEDIATION: ""});
    let out = run(&mhc(None), &ms, &nodes, &at(1000));
    assert_eq!(remediated(&out), 0);
    // As CAPI: not a target at all.
    assert!(machine_condition(&out, "m0", "HealthCheckSucceeded").is_none());
    assert_eq!(mhc_status(&out)["expectedMachines"], 1);
    assert_eq!(mhc_status(&out)["targets"], json!(["m1"]));
    // Marked earlier, then healthy again before the owner acted: withdrawn.
    ms[0]["metadata"]["annotations"] = json!({});
    ms[0]["status"]["conditions"] = json!([
        {"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": T0},
        {"type": "OwnerRemediated", "status": "False", "reason": "WaitingForRemediation", "lastTransitionTime": T0}]);
    nodes[0] = node("n0", "True", &at(900));
    let out = run(&mhc(None), &ms, &nodes, &at(1000));
    assert!(machine_condition(&out, "m0", "OwnerRemediated").is_none());
    // Once the owner acted (MachineDeleting), it is left alone.
    ms[0]["status"]["conditions"][1]["reason"] = json!("MachineDeleting");
    let out = run(&mhc(None), &ms, &nodes, &at(1000));
    assert_eq!(
        machine_condition(&out, "m0", "OwnerRemediated").expect("kept")["reason"],
        "MachineDeleting"
    );
}

#[test]
fn the_remediate_machine_annotation_and_machine_conditions_make_machines_unhealthy() {
    let mut m = machine("m1", Some("n1"));
    m["metadata"]["annotations"] = json!({fa::REMEDIATE_MACHINE: ""});
    let out = run(&mhc(None), &[m], &[node("n1", "True", T0)], &at(10));
    assert_eq!(
        machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set")["reason"],
        "HasRemediateAnnotation"
    );
    let mut check = mhc(None);
    check["spec"]["checks"]["unhealthyMachineConditions"] =
        json!([{"type": "Ready", "status": "False", "timeoutSeconds": 60}]);
    let mut m = machine("m1", Some("n1"));
    m["status"]["conditions"][0] =
        json!({"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": T0});
    let out = run(
        &check,
        std::slice::from_ref(&m),
        &[node("n1", "True", T0)],
        &at(30),
    );
    assert_eq!(out.requeue_after_ms(), Some(31_000));
    let out = run(&check, &[m], &[node("n1", "True", T0)], &at(61));
    assert_eq!(
        machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set")["reason"],
        "UnhealthyMachine"
    );
}

#[test]
fn nodes_are_required_only_for_machines_with_a_node_ref() {
    let snap = |machines: &[Value]| {
        Snapshot::new(&mhc(None), &at(10))
            .with_related(CLUSTER, true, &[cluster()])
            .with_related(MACHINES, true, machines)
            .with_related(NODES, false, &[])
            .with_workload(Connection::Disconnected)
    };
    let err = FakeHost::new()
        .reconcile::<MachineHealthCheckReconciler>(&snap(&[machine("m1", Some("n1"))]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Transient(_)) && err.to_string().contains("not reachable"),
        "{err}"
    );
    let out = FakeHost::new()
        .reconcile::<MachineHealthCheckReconciler>(&snap(&[machine("m1", None)]))
        .expect("no node needed");
    assert!(out.requeue_after_ms().is_some());
}

#[test]
fn contract_metadata_and_steady_state() {
    let mut m = mhc(None);
    m["metadata"]["labels"] = json!({});
    m["metadata"]["ownerReferences"] = json!([]);
    let out = run(&m, &[], &[], &at(10));
    let p: Value = serde_json::from_str(&out.applied()[0]).expect("json");
    assert_eq!(p["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
    assert_eq!(
        p["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}])
    );
    // Machines of another cluster or not matching the selector are not targets.
    let mut other = machine("x", Some("n1"));
    other["spec"]["clusterName"] = json!("c2");
    let mut unlabelled = machine("y", Some("n1"));
    unlabelled["metadata"]["labels"] = json!({});
    let out = run(&mhc(None), &[other, unlabelled], &[], &at(10));
    assert_eq!(mhc_status(&out)["expectedMachines"], 0);
    // Steady: statuses echoed back produce an empty outcome.
    let ms = [machine("m1", Some("n1"))];
    let nodes = [node("n1", "True", T0)];
    let out = run(&mhc(None), &ms, &nodes, &at(10));
    let mut steady_mhc = mhc(None);
    steady_mhc["status"] = mhc_status(&out);
    let mut steady_m = ms[0].clone();
    steady_m["status"]["conditions"] = statuses(&out, "Machine")[0]["status"]["conditions"].clone();
    let out = run(&steady_mhc, &[steady_m], &nodes, &at(20));
    assert!(out.is_empty(), "{out:?}");
    let info = MachineHealthCheckReconciler::describe();
    assert!(info.finalizer.is_none());
    assert!(
        info.relations
            .iter()
            .any(|r| r.name == NODES && r.target == capstan_sdk::Target::Workload)
    );
}

#[test]
fn a_node_condition_without_transition_time_has_held_since_the_epoch() {
    // What `kubectl patch node --subresource=status` leaves when the patch
    // names only type and status: the timeout has long passed.
    let mut n = node("n1", "False", T0);
    n["status"]["conditions"][0]
        .as_object_mut()
        .map(|c| c.remove("lastTransitionTime"));
    let out = run(&mhc(None), &[machine("m1", Some("n1"))], &[n], &at(1));
    let hc = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(
        (hc["status"].as_str(), hc["reason"].as_str()),
        (Some("False"), Some("UnhealthyNode"))
    );
    assert_eq!(
        machine_condition(&out, "m1", "OwnerRemediated").expect("set")["reason"],
        "WaitingForRemediation"
    );
}

#[test]
fn nothing_is_penalized_before_the_control_plane_is_initialized_or_the_infrastructure_ready() {
    // Far past every timeout: a worker without Node and one with a NotReady Node.
    let ms = [machine("m1", None), machine("m2", Some("n2"))];
    let nodes = [node("n2", "False", T0)];
    let now = at(100_000);
    for (cp, infra) in [("False", "True"), ("True", "False")] {
        let c = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"}, "spec": {},
            "status": {"conditions": [
                {"type": "InfrastructureReady", "status": infra, "reason": "X", "lastTransitionTime": T0},
                {"type": "ControlPlaneInitialized", "status": cp, "reason": "X", "lastTransitionTime": T0}]}});
        let snap = Snapshot::new(&mhc(None), &now)
            .with_related(CLUSTER, true, &[c])
            .with_related(MACHINES, true, &ms)
            .with_related(NODES, true, &nodes)
            .with_workload(Connection::Connected);
        let out = FakeHost::new()
            .reconcile::<MachineHealthCheckReconciler>(&snap)
            .expect("reconciles");
        // Not penalized: the Machine with a Node passes, the one without
        // is not started (neither healthy nor unhealthy).
        assert!(machine_condition(&out, "m1", "HealthCheckSucceeded").is_none());
        assert_eq!(
            machine_condition(&out, "m2", "HealthCheckSucceeded").expect("set")["status"],
            "True",
            "ControlPlaneInitialized {cp}, InfrastructureReady {infra}"
        );
        assert_eq!(mhc_status(&out)["currentHealthy"], 1);
        assert_eq!(
            out.requeue_after_ms(),
            None,
            "the Cluster's change wakes it"
        );
    }
}

#[test]
fn deleting_machines_count_but_are_never_healthy_nor_written() {
    let mut gone = machine("m1", Some("n1"));
    gone["metadata"]["deletionTimestamp"] = json!(T0);
    gone["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
    let ms = [gone, machine("m2", Some("n2"))];
    // m1's Node is already gone (the Machine deletion removed it).
    let nodes = [node("n2", "True", T0)];
    let out = run(
        &mhc(Some(json!({"unhealthyLessThanOrEqualTo": 0}))),
        &ms,
        &nodes,
        &at(10),
    );
    let s = mhc_status(&out);
    assert_eq!(
        (&s["expectedMachines"], &s["currentHealthy"], &s["targets"]),
        (&json!(2), &json!(1), &json!(["m1", "m2"]))
    );
    assert_eq!(cond(&s, "RemediationAllowed")["status"], "False");
    let m1 = machine_condition(&out, "m1", "HealthCheckSucceeded").expect("set");
    assert_eq!(m1["reason"], "NodeDeleted");
    assert!(
        machine_condition(&out, "m1", "OwnerRemediated").is_none(),
        "never asked on a deleting Machine"
    );
    // A finished remediation (OwnerRemediated True) is asked again.
    let mut again = machine("m3", Some("n3"));
    again["status"]["conditions"] = json!([{"type": "OwnerRemediated", "status": "True",
        "reason": "X", "lastTransitionTime": T0}]);
    let out = run(&mhc(None), &[again], &[node("n3", "False", T0)], &at(1000));
    assert_eq!(
        machine_condition(&out, "m3", "OwnerRemediated").expect("set")["reason"],
        "WaitingForRemediation"
    );
}

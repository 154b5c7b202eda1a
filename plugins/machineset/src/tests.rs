//! Native tests of the MachineSet reconciler through the SDK's fake host.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:05:00Z";

fn cluster(cp_initialized: bool) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"},
        "spec": {}, "status": {"initialization": {"controlPlaneInitialized": cp_initialized}}})
}

fn machine_set(replicas: i32, order: Option<&str>) -> Value {
    let mut o = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
        "metadata": {"name": "md-1-abc", "namespace": "ns", "uid": "uid-ms", "generation": 2,
            "labels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_DEPLOYMENT_NAME: "md-1",
                labels::MACHINE_TEMPLATE_HASH: "42"},
            "finalizers": [finalizers::MACHINE_SET],
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                "name": "md-1", "uid": "uid-md", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"clusterName": "c1", "replicas": replicas,
            "selector": {"matchLabels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_TEMPLATE_HASH: "42"}},
            "template": {"metadata": {"labels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_TEMPLATE_HASH: "42", "pool": "a"},
                    "annotations": {"note": "x"}},
                "spec": {"clusterName": "c1", "version": "v1.34.0",
                    "bootstrap": {"configRef": {"apiGroup": BOOTSTRAP_GROUP, "kind": "KubeadmConfigTemplate", "name": "workers"}},
                    "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "DevMachineTemplate", "name": "workers"}}}}
    });
    if let Some(order) = order {
        o["spec"]["deletion"] = json!({"order": order});
    }
    o
}

fn machine(name: &str, created: &str, ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "creationTimestamp": created,
            "labels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_SET_NAME: "md-1-abc"},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet", "name": "md-1-abc",
                "uid": "uid-ms", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"clusterName": "c1", "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": "DevMachine", "name": name}},
        "status": {"nodeRef": {"name": name},
            "conditions": [{"type": "Ready", "status": status, "reason": "X", "lastTransitionTime": T0},
                {"type": "Available", "status": status, "reason": "X", "lastTransitionTime": T0},
                {"type": "NodeHealthy", "status": "True", "reason": "X", "lastTransitionTime": T0}]}})
}

fn templates() -> (Value, Value) {
    (
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": "workers", "namespace": "ns"},
            "spec": {"template": {"metadata": {"labels": {"from-template": "yes"}},
                "spec": {"joinConfiguration": {"nodeRegistration": {"name": "n"}}}}}}),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
            "metadata": {"name": "workers", "namespace": "ns"},
            "spec": {"template": {"spec": {"backend": {"inMemory": {}}}}}}),
    )
}

fn md(replicas: i32, max_in_flight: Option<Value>) -> Value {
    let mut o = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": "md-1", "namespace": "ns", "uid": "uid-md"},
        "spec": {"clusterName": "c1", "replicas": replicas,
            "template": machine_set(1, None)["spec"]["template"].clone()}});
    if let Some(m) = max_in_flight {
        o["spec"]["remediation"] = json!({"maxInFlight": m});
    }
    o
}

struct World {
    ms: Value,
    machines: Vec<Value>,
    clones: Vec<Value>,
    cluster: Value,
    md: Option<Value>,
}

impl World {
    fn new(ms: Value) -> Self {
        Self {
            ms,
            machines: Vec::new(),
            clones: Vec::new(),
            cluster: cluster(true),
            md: None,
        }
    }

    fn snapshot(&self, now: &str) -> Snapshot {
        let (kct, dmt) = templates();
        let (bc, im): (Vec<Value>, Vec<Value>) = self
            .clones
            .iter()
            .cloned()
            .partition(|o| o["kind"] == "KubeadmConfig");
        Snapshot::new(&self.ms, now)
            .with_related(MACHINES, true, &self.machines)
            .with_related(CLUSTER, true, std::slice::from_ref(&self.cluster))
            .with_related(DEPLOYMENT, true, self.md.as_slice())
            .with_related("bootstrap-kubeadmconfigtemplate", true, &[kct])
            .with_related("bootstrap-kubeadmconfigs", true, &bc)
            .with_related("infra-devmachinetemplate", true, &[dmt])
            .with_related("infra-devmachines", true, &im)
    }

    fn reconcile(&self, now: &str) -> Outcome {
        FakeHost::new()
            .reconcile::<MachineSetReconciler>(&self.snapshot(now))
            .expect("reconciles")
    }
}

fn applied(out: &Outcome, kind: &str) -> Vec<Value> {
    out.applied()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .filter(|o| o["kind"] == kind)
        .collect()
}

fn status_of(out: &Outcome) -> Value {
    out.statuses()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .find(|o| o["kind"] == "MachineSet")
        .expect("a MachineSet status")["status"]
        .clone()
}

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} in {status}"))
}

/// A condition of `status.deprecated.v1beta1.conditions`.
fn v1beta1_cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["deprecated"]["v1beta1"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("v1beta1 condition {t} in {status}"))
}

fn has_v1beta2(status: &Value, t: &str) -> bool {
    status["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t))
}

fn deleted(out: &Outcome) -> Vec<String> {
    out.deletions().iter().map(|r| r.name.clone()).collect()
}

#[test]
fn first_reconcile_adds_the_finalizer_and_cluster_label_only() {
    let mut ms = machine_set(3, None);
    ms["metadata"]["finalizers"] = json!([]);
    ms["metadata"]["labels"] = json!({});
    let out = World::new(ms).reconcile(T0);
    let patch = applied(&out, "MachineSet");
    assert_eq!(patch.len(), 1);
    assert_eq!(
        patch[0]["metadata"]["finalizers"],
        json!([finalizers::MACHINE_SET])
    );
    assert_eq!(patch[0]["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
    // Owned by a MachineDeployment: no owner reference to the Cluster.
    assert!(patch[0]["metadata"].get("ownerReferences").is_none());
    assert!(applied(&out, "Machine").is_empty());
    assert!(out.statuses().is_empty());
}

#[test]
fn a_set_without_deployment_gets_a_non_controller_cluster_owner_reference() {
    let mut ms = machine_set(0, None);
    ms["metadata"]["ownerReferences"] = json!([]);
    let out = World::new(ms).reconcile(T0);
    let patch = &applied(&out, "MachineSet")[0];
    assert_eq!(
        patch["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}])
    );
}

#[test]
fn scale_up_creates_machines_with_clones_labels_and_owner_references() {
    let w = World::new(machine_set(3, None));
    let out = w.reconcile(T0);
    let machines = applied(&out, "Machine");
    let configs = applied(&out, "KubeadmConfig");
    let infra = applied(&out, "DevMachine");
    assert_eq!((machines.len(), configs.len(), infra.len()), (3, 3, 3));
    // Clones come before their Machine in the outcome (the host writes in order).
    let kinds: Vec<String> = out
        .applied()
        .iter()
        .map(|s| {
            serde_json::from_str::<Value>(s).expect("json")["kind"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(&kinds[..3], ["KubeadmConfig", "DevMachine", "Machine"]);
    let m = &machines[0];
    let name = m["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("md-1-abc-") && name.len() == "md-1-abc-".len() + 5,
        "{name}"
    );
    let l = &m["metadata"]["labels"];
    assert_eq!(l[labels::MACHINE_SET_NAME], "md-1-abc");
    assert_eq!(l[labels::MACHINE_DEPLOYMENT_NAME], "md-1");
    assert_eq!(l[labels::CLUSTER_NAME], "c1");
    assert_eq!(l[labels::MACHINE_TEMPLATE_HASH], "42");
    assert_eq!(l["pool"], "a");
    assert_eq!(m["metadata"]["annotations"]["note"], "x");
    assert_eq!(
        m["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet", "name": "md-1-abc",
            "uid": "uid-ms", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(m["spec"]["version"], "v1.34.0");
    assert_eq!(
        m["spec"]["bootstrap"]["configRef"],
        json!({"apiGroup": BOOTSTRAP_GROUP, "kind": "KubeadmConfig", "name": name})
    );
    assert_eq!(
        m["spec"]["infrastructureRef"],
        json!({"apiGroup": INFRASTRUCTURE_GROUP, "kind": "DevMachine", "name": name})
    );
    let kc = configs
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .expect("config");
    assert_eq!(kc["apiVersion"], "bootstrap.cluster.x-k8s.io/v1beta2");
    assert_eq!(
        kc["spec"]["joinConfiguration"]["nodeRegistration"]["name"],
        "n"
    );
    assert_eq!(kc["metadata"]["labels"]["from-template"], "yes");
    assert_eq!(
        kc["metadata"]["labels"][labels::MACHINE_SET_NAME],
        "md-1-abc"
    );
    assert_eq!(
        kc["metadata"]["annotations"][annotations::CLONED_FROM_NAME],
        "workers"
    );
    assert_eq!(
        kc["metadata"]["annotations"][annotations::CLONED_FROM_GROUP_KIND],
        "KubeadmConfigTemplate.bootstrap.cluster.x-k8s.io"
    );
    assert_eq!(
        kc["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet", "name": "md-1-abc", "uid": "uid-ms"}])
    );
    assert_eq!(out.events().len(), 3);
    assert_eq!(out.events()[0].reason, "SuccessfulCreate");
    assert_eq!(out.events()[0].message, format!("Created machine {name:?}"));
    let dm = infra
        .iter()
        .find(|c| c["metadata"]["name"] == name)
        .expect("infra");
    assert_eq!(dm["spec"], json!({"backend": {"inMemory": {}}}));
    let s = status_of(&out);
    assert_eq!(cond(&s, "ScalingUp")["status"], "True");
    assert_eq!(
        cond(&s, "ScalingUp")["message"],
        "Scaling up from 0 to 3 replicas"
    );
    assert_eq!(
        v1beta1_cond(&s, "MachinesCreated"),
        &json!({"type": "MachinesCreated", "status": "True", "lastTransitionTime": T0}),
        "v1beta1 shape: no severity, reason or message when True"
    );
    assert!(
        !has_v1beta2(&s, "MachinesCreated"),
        "MachinesCreated is not a v1beta2 MachineSet condition"
    );
    assert_eq!(s["replicas"], 0);
    assert_eq!(
        s["selector"],
        "cluster.x-k8s.io/cluster-name=c1,machine-template-hash=42"
    );
}

#[test]
fn retries_against_a_stale_cache_ask_for_the_same_names() {
    let mut w = World::new(machine_set(3, None));
    let first: Vec<String> = applied(&w.reconcile(T0), "Machine")
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    // The cache has not seen the creations: the same three names again.
    let again: Vec<String> = applied(&w.reconcile(T0), "Machine")
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(first, again);
    let unique: BTreeSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), 3);
    // One Machine is in the cache, a config of another is left over: the
    // next names skip both and never reuse a taken one.
    w.machines.push(machine(&first[0], T0, false));
    w.clones.push(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
        "metadata": {"name": first[1], "namespace": "ns"}}),
    );
    let next: Vec<String> = applied(&w.reconcile(T0), "Machine")
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(next.len(), 2);
    assert_eq!(next[0], first[2]);
    assert!(!next.contains(&first[0]) && !next.contains(&first[1]));
}

#[test]
fn names_seen_once_are_not_reused_while_the_memo_remembers_them() {
    let host = FakeHost::new();
    let mut w = World::new(machine_set(1, None));
    let first = applied(
        &host
            .reconcile::<MachineSetReconciler>(&w.snapshot(T0))
            .expect("ok"),
        "Machine",
    )[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    // Observed, then deleted (remediated): the replacement gets another name.
    w.machines.push(machine(&first, T0, true));
    host.reconcile::<MachineSetReconciler>(&w.snapshot(T0))
        .expect("ok");
    w.machines.clear();
    let next = applied(
        &host
            .reconcile::<MachineSetReconciler>(&w.snapshot(T1))
            .expect("ok"),
        "Machine",
    )[0]["metadata"]["name"]
        .clone();
    assert_ne!(next, json!(first));
    // Evicted memo: reuse is possible again, duplicates still are not.
    host.evict_memo();
    let again = applied(
        &host
            .reconcile::<MachineSetReconciler>(&w.snapshot(T1))
            .expect("ok"),
        "Machine",
    )[0]["metadata"]["name"]
        .clone();
    assert_eq!(again, json!(first));
}

#[test]
fn machines_wait_for_the_control_plane_and_for_templates() {
    let mut w = World::new(machine_set(2, None));
    w.cluster = cluster(false);
    let out = w.reconcile(T0);
    assert!(applied(&out, "Machine").is_empty());
    let s = status_of(&out);
    assert_eq!(
        v1beta1_cond(&s, "MachinesCreated")["reason"],
        "WaitingForControlPlaneInitialized"
    );
    assert_eq!(v1beta1_cond(&s, "MachinesCreated")["severity"], "Info");
    assert_eq!(
        cond(&s, "ScalingUp")["message"],
        "Scaling up from 0 to 2 replicas is blocked because:\n* Waiting for the control plane to be initialized"
    );
    let mut ms = machine_set(2, None);
    ms["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("gone");
    let out = World::new(ms).reconcile(T0);
    assert!(applied(&out, "Machine").is_empty());
    let s = status_of(&out);
    assert_eq!(
        v1beta1_cond(&s, "MachinesCreated")["reason"],
        "TemplateNotFound"
    );
    assert_eq!(v1beta1_cond(&s, "MachinesCreated")["severity"], "Error");
    assert_eq!(
        v1beta1_cond(&s, "MachinesCreated")["message"],
        "DevMachineTemplate gone does not exist"
    );
    assert_eq!(
        out.requeue_after_ms(),
        None,
        "the template watch brings it back"
    );
}

#[test]
fn status_counts_ready_available_and_up_to_date_machines() {
    let mut w = World::new(machine_set(3, None));
    w.machines = vec![
        machine("a", T0, true),
        machine("b", T0, true),
        machine("c", T0, false),
    ];
    let out = w.reconcile(T1);
    assert!(applied(&out, "Machine").is_empty() && out.deletions().is_empty());
    let s = status_of(&out);
    assert_eq!(
        (
            s["replicas"].clone(),
            s["readyReplicas"].clone(),
            s["availableReplicas"].clone(),
            s["upToDateReplicas"].clone()
        ),
        (json!(3), json!(2), json!(2), json!(3))
    );
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(cond(&s, "ScalingUp")["reason"], "NotScalingUp");
    assert_eq!(cond(&s, "ScalingDown")["reason"], "NotScalingDown");
    assert_eq!(cond(&s, "MachinesReady")["status"], "False");
    assert_eq!(
        cond(&s, "MachinesReady")["message"],
        "* Machine c: Ready is False"
    );
    assert_eq!(cond(&s, "MachinesUpToDate")["reason"], "UpToDate");
    assert_eq!(cond(&s, "Deleting")["reason"], "NotDeleting");
    assert_eq!(cond(&s, "Paused")["reason"], "NotPaused");
    assert_eq!(cond(&s, "Remediating")["reason"], "NotRemediating");
    // With a MachineDeployment whose template hash differs, nothing is up to date.
    w.md = Some(md(3, None));
    let s = status_of(&w.reconcile(T1));
    assert_eq!(s["upToDateReplicas"], 0);
    assert_eq!(cond(&s, "MachinesUpToDate")["reason"], "NotUpToDate");
    // A steady MachineSet writes nothing.
    let mut steady = w.ms.clone();
    steady["status"] = s;
    w.ms = steady;
    let out = w.reconcile(T1);
    assert!(out.is_empty(), "{out:?}");
}

fn scale_down(order: Option<&str>, annotate: Option<&str>) -> Vec<String> {
    let mut w = World::new(machine_set(2, order));
    w.machines = vec![
        machine("m-old", "2026-01-01T00:00:00Z", true),
        machine("m-mid", "2026-01-01T00:01:00Z", true),
        machine("m-new", "2026-01-01T00:02:00Z", true),
        machine("m-newest", "2026-01-01T00:03:00Z", true),
    ];
    if let Some(a) = annotate {
        for m in &mut w.machines {
            if m["metadata"]["name"] == a {
                m["metadata"]["annotations"] = json!({annotations::DELETE_MACHINE: ""});
            }
        }
    }
    let out = w.reconcile(T1);
    assert!(out.events().iter().all(|e| e.reason == "SuccessfulDelete"));
    let mut d = deleted(&out);
    d.sort();
    d
}

#[test]
fn scale_down_follows_the_deletion_order_and_the_delete_machine_annotation_first() {
    assert_eq!(scale_down(Some("Oldest"), None), ["m-mid", "m-old"]);
    assert_eq!(scale_down(Some("Newest"), None), ["m-new", "m-newest"]);
    assert_eq!(scale_down(Some("Random"), None).len(), 2);
    assert_eq!(
        scale_down(Some("Oldest"), Some("m-newest")),
        ["m-newest", "m-old"]
    );
    assert_eq!(
        scale_down(Some("Newest"), Some("m-old")),
        ["m-newest", "m-old"]
    );
    assert!(scale_down(None, Some("m-mid")).contains(&"m-mid".to_owned()));
}

#[test]
fn scale_down_prefers_unhealthy_machines_and_counts_deleting_ones() {
    let mut w = World::new(machine_set(2, Some("Oldest")));
    let mut no_node = machine("m-3", "2026-01-01T00:03:00Z", false);
    no_node["status"]["nodeRef"] = Value::Null;
    w.machines = vec![
        machine("m-1", "2026-01-01T00:01:00Z", true),
        machine("m-2", "2026-01-01T00:02:00Z", true),
        no_node,
    ];
    assert_eq!(deleted(&w.reconcile(T1)), ["m-3"]);
    // A Machine already deleting counts: nothing more is deleted, nothing created.
    w.machines[2]["metadata"]["deletionTimestamp"] = json!(T1);
    let out = w.reconcile(T1);
    assert!(out.deletions().is_empty() && applied(&out, "Machine").is_empty());
    let s = status_of(&out);
    assert_eq!(
        cond(&s, "ScalingDown")["message"],
        "Scaling down from 3 to 2 replicas"
    );
}

#[test]
fn owner_remediated_false_machines_are_deleted_within_max_in_flight() {
    let mut w = World::new(machine_set(3, None));
    w.md = Some(md(3, Some(json!(1))));
    w.machines = vec![
        machine("a", T0, true),
        machine("b", T0, false),
        machine("c", T0, false),
    ];
    for i in [1, 2] {
        w.machines[i]["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(json!({"type": "OwnerRemediated", "status": "False", "reason": "WaitingForRemediation",
                "lastTransitionTime": T0}));
    }
    // OwnerRemediated alone (no failed health check) is not a remediation request.
    let out = w.reconcile(T1);
    assert!(
        deleted(&out).is_empty(),
        "HealthCheckSucceeded is not False"
    );
    assert_eq!(cond(&status_of(&out), "Remediating")["status"], "False");
    for i in [1, 2] {
        w.machines[i]["status"]["conditions"]
            .as_array_mut()
            .expect("conditions")
            .push(
                json!({"type": "HealthCheckSucceeded", "status": "False", "reason": "UnhealthyNode",
                "lastTransitionTime": T0}),
            );
    }
    // An old revision of its MachineDeployment does not remediate.
    w.md.as_mut().expect("md")["metadata"]["annotations"] =
        json!({"machinedeployment.clusters.x-k8s.io/revision": "2"});
    w.ms["metadata"]["annotations"] = json!({"machinedeployment.clusters.x-k8s.io/revision": "1"});
    assert!(deleted(&w.reconcile(T1)).is_empty(), "old revision");
    w.ms["metadata"]["annotations"] = json!({"machinedeployment.clusters.x-k8s.io/revision": "2"});
    let out = w.reconcile(T1);
    assert_eq!(deleted(&out), ["b"], "maxInFlight 1");
    let machine_status: Value = out
        .statuses()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .find(|o| o["kind"] == "Machine")
        .expect("machine status");
    assert_eq!(machine_status["metadata"]["name"], "b");
    let cs = machine_status["status"]["conditions"]
        .as_array()
        .expect("conditions");
    // The whole list is kept: the machine controller's conditions survive.
    assert!(cs.iter().any(|c| c["type"] == "Ready"));
    let or = cs
        .iter()
        .find(|c| c["type"] == "OwnerRemediated")
        .expect("OwnerRemediated");
    assert_eq!(
        (or["status"].as_str(), or["reason"].as_str()),
        (Some("False"), Some("MachineDeleting"))
    );
    assert_eq!(cond(&status_of(&out), "Remediating")["status"], "True");
    // While b is deleting, c waits; when b is gone, c goes and a replacement comes.
    w.machines[1]["metadata"]["deletionTimestamp"] = json!(T1);
    let out = w.reconcile(T1);
    assert!(out.deletions().is_empty());
    assert!(applied(&out, "Machine").is_empty(), "b still counts");
    w.machines.remove(1);
    let out = w.reconcile(T1);
    assert_eq!(deleted(&out), ["c"]);
    assert_eq!(applied(&out, "Machine").len(), 1, "replacement for b");
}

#[test]
fn deletion_deletes_machines_then_removes_the_finalizer() {
    let mut ms = machine_set(2, None);
    ms["metadata"]["deletionTimestamp"] = json!(T1);
    ms["metadata"]["finalizers"] = json!(["other", finalizers::MACHINE_SET]);
    let mut w = World::new(ms);
    w.machines = vec![machine("a", T0, true), machine("b", T0, true)];
    w.machines[1]["metadata"]["deletionTimestamp"] = json!(T1);
    let out = w.reconcile(T1);
    assert_eq!(deleted(&out), ["a"]);
    let s = status_of(&out);
    assert_eq!(cond(&s, "Deleting")["status"], "True");
    assert_eq!(cond(&s, "Deleting")["message"], "Deleting 2 Machines");
    assert!(applied(&out, "Machine").is_empty());
    w.machines.clear();
    let out = w.reconcile(T1);
    assert_eq!(
        applied(&out, "MachineSet")[0]["metadata"]["finalizers"],
        json!(["other"])
    );
    assert!(out.statuses().is_empty());
}

#[test]
fn unsynced_caches_and_a_missing_cluster_are_transient() {
    let w = World::new(machine_set(1, None));
    let snap = Snapshot::new(&w.ms, T0).with_related(MACHINES, false, &[]);
    let err = FakeHost::new()
        .reconcile::<MachineSetReconciler>(&snap)
        .unwrap_err();
    assert!(matches!(err, Error::Transient(_)), "{err}");
    let mut w = World::new(machine_set(1, None));
    w.cluster = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "other"}});
    let err = FakeHost::new()
        .reconcile::<MachineSetReconciler>(&w.snapshot(T0))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cluster ns/c1 of machineset md-1-abc not found"),
        "{err}"
    );
}

#[test]
fn describe_declares_what_the_reconciler_writes() {
    let info = MachineSetReconciler::describe();
    assert_eq!(
        info.finalizer.as_deref(),
        Some("cluster.x-k8s.io/machineset")
    );
    let can = |kind: &str, v: Verbs| {
        info.permissions
            .iter()
            .any(|p| p.kind.kind == kind && p.verbs.contains(v))
    };
    assert!(can(
        "Machine",
        Verbs::CREATE | Verbs::DELETE | Verbs::PATCH_STATUS
    ));
    assert!(can("KubeadmConfig", Verbs::CREATE) && can("DevMachine", Verbs::CREATE));
    assert!(!can("MachineSet", Verbs::CREATE));
}

#[test]
fn machines_being_deleted_are_not_counted_ready_or_available() {
    let mut w = World::new(machine_set(1, Some("Oldest")));
    w.machines = vec![
        machine("a", T0, true),
        machine("b", T1, true),
        machine("c", T1, true),
    ];
    w.machines[2]["metadata"]["deletionTimestamp"] = json!(T1);
    let out = w.reconcile(T1);
    assert_eq!(deleted(&out), ["a"], "c already goes; Oldest picks a");
    let s = status_of(&out);
    assert_eq!(
        (
            s["replicas"].as_i64(),
            s["readyReplicas"].as_i64(),
            s["availableReplicas"].as_i64()
        ),
        (Some(3), Some(1), Some(1)),
        "only b stays"
    );
}

#[test]
fn machines_created_moves_to_the_v1beta1_conditions_and_keeps_its_transition_time() {
    // A MachineSet as an older Capstan left it: MachinesCreated among the
    // v1beta2 conditions, and other v1beta1 fields the plugin must keep.
    let mut ms = machine_set(1, None);
    ms["status"] = json!({
        "conditions": [{"type": "MachinesCreated", "status": "True", "reason": "MachinesCreated",
            "lastTransitionTime": T0, "observedGeneration": 2}],
        "deprecated": {"v1beta1": {"fullyLabeledReplicas": 1, "conditions": [
            {"type": "MachinesCreated", "status": "True", "lastTransitionTime": T0},
            {"type": "Ready", "status": "True", "lastTransitionTime": T0}]}}
    });
    let mut w = World::new(ms);
    w.machines = vec![machine("a", T0, true)];
    let s = status_of(&w.reconcile(T1));
    assert!(
        !has_v1beta2(&s, "MachinesCreated"),
        "removed from v1beta2: {s}"
    );
    assert_eq!(
        v1beta1_cond(&s, "MachinesCreated")["lastTransitionTime"],
        T0,
        "status unchanged: the transition time stays"
    );
    assert_eq!(
        v1beta1_cond(&s, "Ready")["lastTransitionTime"],
        T0,
        "others kept"
    );
    assert_eq!(s["deprecated"]["v1beta1"]["fullyLabeledReplicas"], 1);

    // Scaling up is then blocked: the condition turns False, at the new time.
    let mut ms = w.ms.clone();
    ms["spec"]["replicas"] = json!(2);
    ms["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("gone");
    ms["status"] = s;
    let mut w2 = World::new(ms);
    w2.machines = w.machines.clone();
    let s = status_of(&w2.reconcile(T1));
    let c = v1beta1_cond(&s, "MachinesCreated");
    assert_eq!(
        (&c["status"], &c["reason"], &c["lastTransitionTime"]),
        (&json!("False"), &json!("TemplateNotFound"), &json!(T1))
    );
}

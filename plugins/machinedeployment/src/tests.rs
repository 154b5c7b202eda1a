//! Native tests of the MachineDeployment reconciler; the test plays the MachineSet and Machine controllers.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";

fn cluster() -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"}, "spec": {}})
}

fn md(replicas: i32, version: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": "md-1", "namespace": "ns", "uid": "uid-md", "generation": 1,
            "labels": {labels::CLUSTER_NAME: "c1"},
            "finalizers": [finalizers::MACHINE_DEPLOYMENT],
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}]},
        "spec": {"clusterName": "c1", "replicas": replicas,
            "selector": {"matchLabels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_DEPLOYMENT_NAME: "md-1"}},
            "rollout": {"strategy": strategy},
            "template": {"metadata": {"labels": {labels::CLUSTER_NAME: "c1", labels::MACHINE_DEPLOYMENT_NAME: "md-1"}},
                "spec": {"clusterName": "c1", "version": version,
                    "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate", "name": "workers"}},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "workers"}}}}
    })
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// A simulated Machine: becomes available `ready_after` ticks after creation.
#[derive(Debug, Clone)]
struct SimMachine {
    name: String,
    age: u32,
    deleting: bool,
}

#[derive(Debug, Clone)]
struct SimSet {
    object: Value,
    machines: Vec<SimMachine>,
}

/// The MachineDeployment, its MachineSets and Machines, with the test
/// playing the MachineSet controller (create/delete Machines to match
/// `spec.replicas`, unavailable ones first on scale down, none when machine
/// creation is disabled) and the Machines (available `ready_after` ticks
/// after creation).
struct Sim {
    md: Value,
    sets: Vec<SimSet>,
    tick: u32,
    serial: u32,
    ready_after: u32,
    now: String,
    /// Extra MachineDeployment reconciles per step before the MachineSets
    /// act: they see MachineSet statuses that lag their new spec.
    stale: u32,
}

impl Sim {
    fn new(md: Value) -> Self {
        Self {
            md,
            sets: Vec::new(),
            tick: 0,
            serial: 0,
            ready_after: 2,
            now: T0.to_owned(),
            stale: 0,
        }
    }

    fn available(&self, m: &SimMachine) -> bool {
        !m.deleting && m.age >= self.ready_after
    }

    fn set_json(&self, s: &SimSet) -> Value {
        let mut o = s.object.clone();
        let avail = s.machines.iter().filter(|m| self.available(m)).count();
        let hash = o["metadata"]["labels"][labels::MACHINE_TEMPLATE_HASH].clone();
        let md_hash = fleet::deployment_template_hash(
            &serde_json::from_value(self.md.clone()).expect("md"),
            &self.now,
        );
        let fresh = hash == json!(md_hash);
        o["status"] = json!({"replicas": s.machines.len(), "readyReplicas": avail, "availableReplicas": avail,
            "upToDateReplicas": if fresh { s.machines.len() } else { 0 }});
        o
    }

    fn machine_json(&self, s: &SimSet, m: &SimMachine) -> Value {
        let st = if self.available(m) { "True" } else { "False" };
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": m.name, "namespace": "ns",
                "labels": {labels::MACHINE_DEPLOYMENT_NAME: "md-1",
                    labels::MACHINE_TEMPLATE_HASH: s.object["metadata"]["labels"][labels::MACHINE_TEMPLATE_HASH]}},
            "spec": {"clusterName": "c1"},
            "status": {"conditions": [{"type": "Ready", "status": st, "reason": "X", "lastTransitionTime": T0}]}})
    }

    fn snapshot(&self) -> Snapshot {
        let sets: Vec<Value> = self.sets.iter().map(|s| self.set_json(s)).collect();
        let machines: Vec<Value> = self
            .sets
            .iter()
            .flat_map(|s| s.machines.iter().map(move |m| (s, m)))
            .map(|(s, m)| self.machine_json(s, m))
            .collect();
        Snapshot::new(&self.md, &self.now)
            .with_related(MACHINE_SETS, true, &sets)
            .with_related(MACHINES, true, &machines)
            .with_related(CLUSTER, true, &[cluster()])
    }

    fn reconcile(&self) -> Outcome {
        FakeHost::new()
            .reconcile::<MachineDeploymentReconciler>(&self.snapshot())
            .expect("reconciles")
    }

    /// Apply an outcome to the simulated API: creations, merge patches, deletions.
    fn write(&mut self, out: &Outcome) {
        for text in out.applied() {
            let o: Value = serde_json::from_str(text).expect("json");
            match o["kind"].as_str() {
                Some("MachineSet") => {
                    let name = o["metadata"]["name"].clone();
                    if let Some(s) = self
                        .sets
                        .iter_mut()
                        .find(|s| s.object["metadata"]["name"] == name)
                    {
                        merge(&mut s.object, &o);
                    } else {
                        self.serial += 1;
                        let mut o = o;
                        o["metadata"]["uid"] = json!(format!("uid-ms-{}", self.serial));
                        o["metadata"]["creationTimestamp"] =
                            json!(format!("2026-01-01T00:{:02}:00Z", self.serial));
                        self.sets.push(SimSet {
                            object: o,
                            machines: Vec::new(),
                        });
                    }
                }
                Some("MachineDeployment") => merge(&mut self.md, &o),
                other => panic!("unexpected apply of {other:?}"),
            }
        }
        for text in out.statuses() {
            let o: Value = serde_json::from_str(text).expect("json");
            assert_eq!(o["kind"], "MachineDeployment");
            self.md["status"] = o["status"].clone();
        }
        for r in out.deletions() {
            assert_eq!(r.kind, "MachineSet");
            let s = self
                .sets
                .iter()
                .find(|s| s.object["metadata"]["name"] == r.name.as_str())
                .expect("set");
            assert!(s.machines.is_empty(), "deleted a MachineSet with Machines");
            self.sets
                .retain(|s| s.object["metadata"]["name"] != r.name.as_str());
        }
    }

    /// The MachineSet controller and the Machines, one step.
    fn play_machine_sets(&mut self) {
        self.tick += 1;
        let ready_after = self.ready_after;
        for s in &mut self.sets {
            for m in &mut s.machines {
                m.age += 1;
            }
            let want =
                usize::try_from(s.object["spec"]["replicas"].as_i64().unwrap_or(1)).unwrap_or(0);
            let disabled = s.object["metadata"]["annotations"][DISABLE_MACHINE_CREATE] == "true";
            while s.machines.len() < want && !disabled {
                self.serial += 1;
                s.machines.push(SimMachine {
                    name: format!("m-{}", self.serial),
                    age: 0,
                    deleting: false,
                });
            }
            while s.machines.len() > want {
                // Unavailable first, as the machineset plugin's deletion order.
                let i = s
                    .machines
                    .iter()
                    .position(|m| m.age < ready_after)
                    .unwrap_or(0);
                s.machines.remove(i);
            }
        }
    }

    fn totals(&self) -> (usize, usize) {
        let all = self.sets.iter().map(|s| s.machines.len()).sum();
        let avail = self
            .sets
            .iter()
            .flat_map(|s| &s.machines)
            .filter(|m| self.available(m))
            .count();
        (all, avail)
    }

    /// Reconcile and play until nothing changes; check `check` after every step.
    fn converge(&mut self, mut check: impl FnMut(&Sim)) -> usize {
        for step in 0..200 {
            let out = self.reconcile();
            let before = (
                self.sets
                    .iter()
                    .map(|s| s.object.clone())
                    .collect::<Vec<_>>(),
                self.totals(),
            );
            self.write(&out);
            check(self);
            for _ in 0..self.stale {
                let again = self.reconcile();
                self.write(&again);
                check(self);
            }
            self.play_machine_sets();
            check(self);
            let after = (
                self.sets
                    .iter()
                    .map(|s| s.object.clone())
                    .collect::<Vec<_>>(),
                self.totals(),
            );
            let all_ready = self
                .sets
                .iter()
                .flat_map(|s| &s.machines)
                .all(|m| m.age >= self.ready_after);
            if before == after
                && all_ready
                && out.applied().is_empty()
                && out.deletions().is_empty()
            {
                return step;
            }
        }
        panic!(
            "did not converge: {:#?}",
            self.sets
                .iter()
                .map(|s| self.set_json(s))
                .collect::<Vec<_>>()
        );
    }

    fn replicas(&self) -> Vec<i64> {
        self.sets
            .iter()
            .map(|s| s.object["spec"]["replicas"].as_i64().unwrap_or(-1))
            .collect()
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} in {status}"))
}

#[test]
fn first_reconcile_adds_finalizer_labels_owner_reference_and_defaults() {
    let mut o = md(3, "v1.34.0", rolling(json!(1), json!(0)));
    o["metadata"]["finalizers"] = json!([]);
    o["metadata"]["labels"] = json!({});
    o["metadata"]["ownerReferences"] = json!([]);
    o["spec"]["selector"] = json!({});
    o["spec"]["template"]["metadata"] = json!({});
    let sim = Sim::new(o);
    let out = sim.reconcile();
    assert_eq!(out.applied().len(), 1, "only the MachineDeployment patch");
    let p: Value = serde_json::from_str(&out.applied()[0]).expect("json");
    assert_eq!(
        p["metadata"]["finalizers"],
        json!(["cluster.x-k8s.io/machinedeployment"])
    );
    assert_eq!(p["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
    assert_eq!(
        p["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}]),
        "owner, not controller"
    );
    for k in [labels::CLUSTER_NAME, labels::MACHINE_DEPLOYMENT_NAME] {
        assert!(p["spec"]["selector"]["matchLabels"][k].is_string());
        assert!(p["spec"]["template"]["metadata"]["labels"][k].is_string());
    }
    assert!(out.statuses().is_empty());
}

#[test]
fn creates_the_machine_set_for_the_template_hash_with_contract_metadata() {
    let sim = Sim::new(md(3, "v1.34.0", rolling(json!(1), json!(0))));
    let out = sim.reconcile();
    let sets: Vec<Value> = out
        .applied()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .filter(|o| o["kind"] == "MachineSet")
        .collect();
    assert_eq!(sets.len(), 1);
    let ms = &sets[0];
    let hash = fleet::machine_template_hash(
        &serde_json::from_value(sim.md["spec"]["template"].clone()).expect("template"),
    );
    assert_eq!(
        ms["metadata"]["name"],
        format!("md-1-{}", fleet::safe_encode(&hash))
    );
    assert_eq!(ms["spec"]["replicas"], 3);
    let l = &ms["metadata"]["labels"];
    assert_eq!(
        (
            l[labels::MACHINE_TEMPLATE_HASH].as_str(),
            l[labels::CLUSTER_NAME].as_str(),
            l[labels::MACHINE_DEPLOYMENT_NAME].as_str()
        ),
        (Some(hash.as_str()), Some("c1"), Some("md-1"))
    );
    assert_eq!(
        ms["spec"]["selector"]["matchLabels"][labels::MACHINE_TEMPLATE_HASH],
        hash
    );
    assert_eq!(
        ms["spec"]["template"]["metadata"]["labels"][labels::MACHINE_TEMPLATE_HASH],
        hash
    );
    assert_eq!(ms["spec"]["template"]["spec"]["version"], "v1.34.0");
    assert_eq!(
        ms["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment", "name": "md-1",
            "uid": "uid-md", "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(ms["metadata"]["annotations"][fa::REVISION], "1");
    assert_eq!(ms["metadata"]["annotations"][fa::DESIRED_REPLICAS], "3");
    assert_eq!(ms["metadata"]["annotations"][fa::MAX_REPLICAS], "4");
    let mdp: Value = out
        .applied()
        .iter()
        .map(|s| serde_json::from_str::<Value>(s).expect("json"))
        .find(|o| o["kind"] == "MachineDeployment")
        .expect("revision patch");
    assert_eq!(mdp["metadata"]["annotations"][fa::REVISION], "1");
    assert_eq!(out.events()[0].reason, "SuccessfulCreate");
    assert_eq!(
        out.events()[0].message,
        format!(
            "Created MachineSet {}",
            ms["metadata"]["name"].as_str().unwrap_or("")
        )
    );
}

#[test]
fn scales_three_to_five_to_two() {
    let mut sim = Sim::new(md(3, "v1.34.0", rolling(json!(1), json!(0))));
    sim.converge(|_| {});
    assert_eq!(sim.replicas(), [3]);
    assert_eq!(sim.totals(), (3, 3));
    let s = sim.md["status"].clone();
    assert_eq!(
        (
            s["replicas"].as_i64(),
            s["availableReplicas"].as_i64(),
            s["upToDateReplicas"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(cond(&s, "Available")["status"], "True");
    assert_eq!(cond(&s, "ScalingUp")["status"], "False");
    assert_eq!(s["phase"], "Running");
    sim.md["spec"]["replicas"] = json!(5);
    let out = sim.reconcile();
    sim.write(&out);
    assert_eq!(sim.replicas(), [5]);
    assert!(
        out.events()
            .iter()
            .any(|e| e.reason == "SuccessfulScale" && e.message.ends_with("from 3 to 5 replicas"))
    );
    assert_eq!(
        cond(&sim.md["status"], "ScalingUp")["message"],
        "Scaling up from 3 to 5 replicas"
    );
    assert_eq!(sim.md["status"]["phase"], "ScalingUp");
    sim.converge(|_| {});
    assert_eq!(sim.totals(), (5, 5));
    sim.md["spec"]["replicas"] = json!(2);
    let out = sim.reconcile();
    sim.write(&out);
    assert_eq!(sim.replicas(), [2]);
    assert_eq!(
        cond(&sim.md["status"], "ScalingDown")["message"],
        "Scaling down from 5 to 2 replicas"
    );
    sim.converge(|_| {});
    assert_eq!(sim.totals(), (2, 2));
    assert_eq!(sim.sets.len(), 1, "scaling never makes a new MachineSet");
}

fn rollout(
    replicas: i32,
    surge: Value,
    unavailable: Value,
    max_surge: usize,
    max_unavailable: usize,
    stale: u32,
) {
    let mut sim = Sim::new(md(replicas, "v1.34.0", rolling(surge, unavailable)));
    sim.stale = stale;
    sim.converge(|_| {});
    let desired = usize::try_from(replicas).unwrap_or(0);
    assert_eq!(sim.totals(), (desired, desired));
    sim.md["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
    let mut worst = (0, usize::MAX);
    let steps = sim.converge(|s| {
        let (all, avail) = s.totals();
        assert!(
            all <= desired + max_surge,
            "{all} machines > {desired} + {max_surge}"
        );
        assert!(
            avail + max_unavailable >= desired,
            "{avail} available < {desired} - {max_unavailable}"
        );
        worst = (worst.0.max(all), worst.1.min(avail));
    });
    assert!(steps > 2, "a rollout takes several steps");
    assert_eq!(worst.0, desired + max_surge, "the surge was used");
    assert_eq!(sim.sets.len(), 1, "the old MachineSet was deleted");
    assert_eq!(
        sim.sets[0].object["spec"]["template"]["spec"]["version"],
        "v1.35.0"
    );
    assert_eq!(sim.totals(), (desired, desired));
    assert_eq!(
        sim.sets[0].object["metadata"]["annotations"][fa::REVISION],
        "2"
    );
    assert_eq!(sim.md["metadata"]["annotations"][fa::REVISION], "2");
    let s = &sim.md["status"];
    assert_eq!(cond(s, "RollingOut")["reason"], "NotRollingOut");
    assert_eq!(cond(s, "MachinesUpToDate")["reason"], "UpToDate");
}

#[test]
fn rolling_update_respects_max_surge_and_max_unavailable() {
    rollout(3, json!(1), json!(0), 1, 0, 0);
    rollout(5, json!(2), json!(1), 2, 1, 0);
    // 25% of 4: surge rounds up to 1, unavailable rounds down to 1.
    rollout(4, json!("25%"), json!("25%"), 1, 1, 0);
    // 10% of 5: surge 1 (up), unavailable 0 (down).
    rollout(5, json!("10%"), json!("10%"), 1, 0, 0);
    // Both zero: maxUnavailable becomes 1 (fencepost).
    rollout(3, json!(0), json!(0), 0, 1, 0);
}

#[test]
fn rolling_update_stays_safe_when_machine_set_status_lags_its_spec() {
    // Reconciles that see an old MachineSet already scaled down in spec but
    // still reporting its Machines available must not scale it down again.
    rollout(3, json!(1), json!(0), 1, 0, 2);
    rollout(5, json!(2), json!(1), 2, 1, 2);
    rollout(4, json!("25%"), json!("25%"), 1, 1, 3);
}

#[test]
fn a_rollout_in_progress_reports_rolling_out_and_not_up_to_date_machines() {
    let mut sim = Sim::new(md(3, "v1.34.0", rolling(json!(1), json!(0))));
    sim.converge(|_| {});
    sim.md["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
    let out = sim.reconcile();
    sim.write(&out);
    assert_eq!(
        sim.replicas(),
        [3, 1],
        "surge one new replica, keep all old"
    );
    sim.play_machine_sets();
    let out = sim.reconcile();
    sim.write(&out);
    let s = &sim.md["status"];
    assert_eq!(
        cond(s, "RollingOut")["message"],
        "Rolling out 3 not up-to-date replicas"
    );
    assert_eq!(cond(s, "MachinesUpToDate")["status"], "False");
    assert!(
        cond(s, "MachinesUpToDate")["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("* Machines m-")
    );
    assert_eq!(s["upToDateReplicas"], 1);
    assert_eq!(cond(s, "Available")["status"], "True");
}

#[test]
fn on_delete_moves_replicas_only_when_old_machines_are_deleted() {
    let mut sim = Sim::new(md(3, "v1.34.0", json!({"type": "OnDelete"})));
    sim.converge(|_| {});
    sim.md["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
    sim.converge(|_| {});
    assert_eq!(sim.replicas(), [3, 0], "nothing moves by itself");
    assert_eq!(
        sim.sets[0].object["metadata"]["annotations"][DISABLE_MACHINE_CREATE],
        "true"
    );
    assert_eq!(sim.totals(), (3, 3));
    // A user deletes one old Machine: the old set follows, the new one takes it.
    sim.sets[0].machines.remove(0);
    sim.converge(|s| assert!(s.totals().0 <= 3));
    assert_eq!(sim.replicas(), [2, 1]);
    assert_eq!(sim.totals(), (3, 3));
    sim.sets[0].machines.clear();
    sim.converge(|s| assert!(s.totals().0 <= 3));
    assert_eq!(sim.replicas(), [3], "the empty old set is deleted");
    assert!(
        sim.sets[0].object["metadata"]["annotations"]
            .get(DISABLE_MACHINE_CREATE)
            .is_none()
    );
}

#[test]
fn paused_deployments_scale_but_do_not_roll_out() {
    let mut sim = Sim::new(md(3, "v1.34.0", rolling(json!(1), json!(0))));
    sim.converge(|_| {});
    sim.md["spec"]["paused"] = json!(true);
    sim.md["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
    sim.md["spec"]["replicas"] = json!(4);
    sim.converge(|_| {});
    assert_eq!(sim.replicas(), [4], "scaled, no new MachineSet");
    assert_eq!(
        sim.sets[0].object["spec"]["template"]["spec"]["version"],
        "v1.34.0"
    );
    assert!(
        cond(&sim.md["status"], "RollingOut")["message"]
            .as_str()
            .unwrap_or("")
            .contains("paused")
    );
    sim.md["spec"]["paused"] = json!(false);
    sim.converge(|_| {});
    assert_eq!(sim.replicas(), [4]);
    assert_eq!(
        sim.sets[0].object["spec"]["template"]["spec"]["version"],
        "v1.35.0"
    );
}

#[test]
fn not_enough_available_replicas_is_reported() {
    let mut sim = Sim::new(md(3, "v1.34.0", rolling(json!(1), json!(1))));
    sim.ready_after = 100;
    let out = sim.reconcile();
    sim.write(&out);
    sim.play_machine_sets();
    let out = sim.reconcile();
    sim.write(&out);
    let s = &sim.md["status"];
    assert_eq!(cond(s, "Available")["status"], "False");
    assert_eq!(
        cond(s, "Available")["message"],
        "0 available replicas, at least 2 required (spec.strategy.rollout.maxUnavailable is 1, spec.replicas is 3)"
    );
    assert_eq!(cond(s, "MachinesReady")["status"], "False");
    assert_eq!(
        s["selector"],
        "cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/deployment-name=md-1"
    );
    assert_eq!(cond(s, "Deleting")["reason"], "NotDeleting");
    assert_eq!(cond(s, "Paused")["reason"], "NotPaused");
    // A steady MachineDeployment writes nothing.
    let out = sim.reconcile();
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn deletion_deletes_machine_sets_then_removes_the_finalizer() {
    let mut sim = Sim::new(md(2, "v1.34.0", rolling(json!(1), json!(0))));
    sim.converge(|_| {});
    sim.md["metadata"]["deletionTimestamp"] = json!(T0);
    let out = sim.reconcile();
    assert_eq!(out.deletions().len(), 1);
    assert_eq!(out.deletions()[0].kind, "MachineSet");
    let st: Value = serde_json::from_str(&out.statuses()[0]).expect("json");
    assert_eq!(cond(&st["status"], "Deleting")["status"], "True");
    assert_eq!(cond(&st["status"], "Available")["reason"], "Deleting");
    sim.sets.clear();
    let out = sim.reconcile();
    let p: Value = serde_json::from_str(&out.applied()[0]).expect("json");
    assert_eq!(p["metadata"]["finalizers"], json!([]));
    assert!(out.statuses().is_empty());
}

#[test]
fn strategy_resolution_follows_capi_fenceposts() {
    let parse = |v: Value| -> MachineDeployment { serde_json::from_value(v).expect("parses") };
    let s = |r: i32, surge: Value, un: Value| {
        strategy(&parse(md(r, "v", rolling(surge, un)))).expect("valid")
    };
    assert_eq!(
        s(10, json!("25%"), json!("25%")),
        Strategy::RollingUpdate {
            max_surge: 3,
            max_unavailable: 2
        }
    );
    assert_eq!(
        s(2, json!(0), json!(5)),
        Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 2
        }
    );
    let mut o = md(3, "v", json!({}));
    o["spec"]["rollout"] = json!({});
    assert_eq!(
        strategy(&parse(o)).expect("valid"),
        Strategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 0
        }
    );
    assert!(strategy(&parse(md(3, "v", rolling(json!("x%"), json!(0))))).is_err());
    assert!(strategy(&parse(md(3, "v", json!({"type": "Recreate"})))).is_err());
}

#[test]
fn rollout_after_rolls_every_machine_once_when_the_date_passes() {
    let mut o = md(3, "v1.34.0", rolling(json!(1), json!(0)));
    o["spec"]["rollout"]["after"] = json!("2026-01-01T01:00:00Z");
    let mut sim = Sim::new(o);
    let out = sim.reconcile();
    assert_eq!(out.requeue_after_ms(), Some(3_600_000), "wait for the date");
    sim.converge(|_| {});
    let first = sim.sets[0].object["metadata"]["name"].clone();
    sim.now = "2026-01-01T01:00:00Z".to_owned();
    let out = sim.reconcile();
    assert_eq!(out.requeue_after_ms(), None);
    sim.converge(|s| assert!(s.totals().0 <= 4 && s.totals().1 >= 3));
    assert_eq!(sim.sets.len(), 1);
    assert_ne!(
        sim.sets[0].object["metadata"]["name"], first,
        "a new MachineSet"
    );
    assert_eq!(sim.md["metadata"]["annotations"][fa::REVISION], "2");
    // Later reconciles do not roll again.
    sim.now = "2026-01-02T00:00:00Z".to_owned();
    let name = sim.sets[0].object["metadata"]["name"].clone();
    sim.converge(|_| {});
    assert_eq!(sim.sets[0].object["metadata"]["name"], name);
}

#[test]
fn a_lagging_old_set_status_never_buys_a_second_scale_down() {
    let st = |name: &str, replicas, available, current| SetState {
        name: name.to_owned(),
        replicas,
        available,
        current,
        created: String::new(),
    };
    // The old set was already asked to go 3 -> 2 and still reports 3
    // available; the new set has 2 available. Scaling it to 0 would leave 2.
    let new = st("new", 2, 2, 2);
    assert_eq!(
        rolling_step(3, 1, 0, Some(&new), &[st("old", 2, 3, 3)]),
        (2, vec![1])
    );
    // Accurate statuses: the same step.
    assert_eq!(
        rolling_step(3, 1, 0, Some(&new), &[st("old", 2, 2, 2)]),
        (2, vec![1])
    );
    // maxUnavailable 1: the unavailable old replica goes (clean up), no more.
    assert_eq!(
        rolling_step(3, 1, 1, Some(&st("new", 1, 0, 1)), &[st("old", 3, 2, 3)]),
        (1, vec![2])
    );
}

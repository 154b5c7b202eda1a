//! The three worker-fleet plugins together, natively: a fake API store resolves each plugin's declared relations and applies its outcomes.
//!
//! Not the end-to-end test of issue 6 (that needs the host, the Machine and
//! infrastructure plugins and a workload API server): here a small fake
//! plays the API server (create, RFC 7386 merge patches with arrays replaced
//! whole, finalizers, garbage collection of clones) and the Machine
//! controller (a Machine gets a Node and `Ready`/`Available` two ticks after
//! creation), while the real `machinedeployment`, `machineset` and
//! `machinehealthcheck` reconcilers run on snapshots built from their own
//! `describe()` relations.

use capi_machinedeployment::MachineDeploymentReconciler;
use capi_machinehealthcheck::MachineHealthCheckReconciler;
use capi_machineset::MachineSetReconciler;
use capstan_sdk::capi::fleet::{self, LabelSelector};
use capstan_sdk::testing::FakeHost;
use capstan_sdk::{Connection, Outcome, Reconciler, Relation, RelationSelector, Snapshot, Target};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const NS: &str = "ns";

fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_owned()
}

fn kind_of(o: &Value) -> String {
    o["kind"].as_str().unwrap_or("").to_owned()
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

fn at(secs: i64) -> String {
    fleet::format_time(1_767_225_600 + secs)
}

#[derive(Default)]
struct World {
    /// Management objects by (kind, name).
    objects: BTreeMap<(String, String), Value>,
    /// Workload Nodes by name.
    nodes: BTreeMap<String, Value>,
    /// Ticks each Machine has lived.
    ages: BTreeMap<String, u32>,
    serial: u64,
    clock: i64,
    /// One host per plugin, so each keeps its memo across reconciles.
    hosts: [FakeHost; 3],
}

impl World {
    fn now(&self) -> String {
        at(self.clock)
    }

    fn create(&mut self, mut o: Value) {
        self.serial += 1;
        o["metadata"]["uid"] = json!(format!("uid-{}", self.serial));
        o["metadata"]["creationTimestamp"] = json!(self.now());
        o["metadata"]["generation"] = json!(1);
        self.objects.insert((kind_of(&o), name_of(&o)), o);
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind.to_owned(), name.to_owned()))
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The objects of one relation of `primary`, as the host resolves them.
    fn related(&self, primary: &Value, rel: &Relation) -> Vec<Value> {
        let candidates: Vec<Value> = if rel.target == Target::Workload {
            self.nodes.values().cloned().collect()
        } else {
            self.of_kind(&rel.kind.kind)
        };
        let uid = primary["metadata"]["uid"].clone();
        let controller_uid = |o: &Value| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["controller"] == true))
                .map(|r| r["uid"].clone())
        };
        let at_path = |path: &str| {
            let pointer = format!("/{}", path.replace('.', "/"));
            primary.pointer(&pointer).cloned()
        };
        candidates
            .into_iter()
            .filter(|o| match &rel.selector {
                RelationSelector::Owned => controller_uid(o) == Some(uid.clone()),
                RelationSelector::ControllerOwner => {
                    controller_uid(primary) == Some(o["metadata"]["uid"].clone())
                }
                RelationSelector::Label(l) => {
                    o["metadata"]["labels"][l] == primary["metadata"]["name"]
                }
                RelationSelector::FieldRef(path) => match at_path(path) {
                    Some(Value::String(n)) => name_of(o) == n,
                    Some(r @ Value::Object(_)) => {
                        r["name"] == o["metadata"]["name"]
                            && (r["kind"].is_null() || r["kind"] == o["kind"])
                    }
                    _ => false,
                },
                RelationSelector::SelectorAt(path) => at_path(path)
                    .and_then(|s| serde_json::from_value::<LabelSelector>(s).ok())
                    .is_some_and(|s| {
                        let labels = serde_json::from_value(o["metadata"]["labels"].clone())
                            .unwrap_or_default();
                        s.matches(&labels)
                    }),
                RelationSelector::All => true,
                other => panic!("relation selector {other:?} not modelled"),
            })
            .collect()
    }

    fn reconcile<R: Reconciler>(&self, host: usize, primary: &Value) -> Outcome {
        let mut snap = Snapshot::new(primary, &self.now()).with_workload(Connection::Connected);
        for rel in R::describe().relations {
            snap = snap.with_related(&rel.name, true, &self.related(primary, &rel));
        }
        self.hosts[host]
            .reconcile::<R>(&snap)
            .unwrap_or_else(|e| panic!("{} {e}", name_of(primary)))
    }

    fn write(&mut self, out: &Outcome) {
        for text in out.applied() {
            let o: Value = serde_json::from_str(text).expect("json");
            let key = (kind_of(&o), name_of(&o));
            match self.objects.get_mut(&key) {
                Some(cur) => {
                    let mut body = o.clone();
                    body.as_object_mut().map(|m| m.remove("status"));
                    merge(cur, &body);
                }
                None => self.create(o),
            }
        }
        for text in out.statuses() {
            let o: Value = serde_json::from_str(text).expect("json");
            if let Some(cur) = self.objects.get_mut(&(kind_of(&o), name_of(&o))) {
                let mut status = cur.get("status").cloned().unwrap_or_else(|| json!({}));
                merge(&mut status, &o["status"]);
                cur["status"] = status;
            }
        }
        for r in out.deletions() {
            let key = (r.kind.clone(), r.name.clone());
            if let Some(o) = self.objects.get_mut(&key) {
                if o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
                {
                    if o["metadata"]["deletionTimestamp"].is_null() {
                        o["metadata"]["deletionTimestamp"] = json!(at(self.clock));
                    }
                } else {
                    self.objects.remove(&key);
                }
            }
        }
        self.collect_garbage();
    }

    /// Finalized objects go; clones and Nodes of a gone Machine go.
    fn collect_garbage(&mut self) {
        self.objects.retain(|_, o| {
            o["metadata"]["deletionTimestamp"].is_null()
                || o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
        });
        let machines: Vec<String> = self.of_kind("Machine").iter().map(name_of).collect();
        self.objects.retain(|(k, n), _| {
            !(k == "KubeadmConfig" || k == "DevMachine") || machines.contains(n)
        });
        self.nodes.retain(|n, _| machines.contains(n));
        self.ages.retain(|n, _| machines.contains(n));
    }

    /// One tick of every controller: the three plugins, then the Machines.
    fn tick(&mut self) {
        self.clock += 10;
        for md in self.of_kind("MachineDeployment") {
            let out = self.reconcile::<MachineDeploymentReconciler>(0, &md);
            self.write(&out);
        }
        for ms in self.of_kind("MachineSet") {
            let out = self.reconcile::<MachineSetReconciler>(1, &ms);
            self.write(&out);
        }
        for mhc in self.of_kind("MachineHealthCheck") {
            let out = self.reconcile::<MachineHealthCheckReconciler>(2, &mhc);
            self.write(&out);
        }
        // The Machine controller: a Node and Ready/Available after two ticks;
        // the Node's Ready mirrored; deletion immediate (no Machine finalizer here).
        for m in self.of_kind("Machine") {
            let name = name_of(&m);
            let age = self.ages.entry(name.clone()).or_insert(0);
            *age += 1;
            if *age < 2 {
                continue;
            }
            let node = self.nodes.entry(name.clone()).or_insert_with(|| {
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at(0)}]}})
            });
            let ready = node["status"]["conditions"][0]["status"].clone();
            let mut conds: Vec<Value> = m["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["type"] != "Ready" && c["type"] != "Available")
                .collect();
            for t in ["Ready", "Available"] {
                conds.push(
                    json!({"type": t, "status": ready, "reason": "X", "lastTransitionTime": at(0)}),
                );
            }
            let cur = self
                .objects
                .get_mut(&("Machine".to_owned(), name.clone()))
                .expect("machine");
            cur["status"]["nodeRef"] = json!({"name": name});
            cur["status"]["conditions"] = json!(conds);
        }
    }

    fn machines(&self) -> (usize, usize) {
        let ms = self.of_kind("Machine");
        let available = ms
            .iter()
            .filter(|m| {
                m["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Available" && c["status"] == "True")
                })
            })
            .count();
        (ms.len(), available)
    }

    fn run_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&World) -> bool,
        mut check: impl FnMut(&World),
    ) {
        for _ in 0..100 {
            self.tick();
            check(self);
            if done(self) {
                return;
            }
        }
        panic!(
            "{what} never happened; machines {:?}: {:#}\nmachinesets: {:#}\nmd status: {:#}",
            self.machines(),
            json!(self.of_kind("Machine")),
            json!(
                self.of_kind("MachineSet")
                    .iter()
                    .map(|s| (s["spec"]["replicas"].clone(), s["status"].clone()))
                    .collect::<Vec<_>>()
            ),
            self.md_status()
        );
    }

    fn md_status(&self) -> Value {
        self.get("MachineDeployment", "md-1").expect("md")["status"].clone()
    }
}

fn setup(replicas: i32) -> World {
    let mut w = World::default();
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": NS}, "spec": {},
        "status": {"initialization": {"controlPlaneInitialized": true},
            "conditions": [{"type": "InfrastructureReady", "status": "True", "reason": "Ready", "lastTransitionTime": at(0)},
                {"type": "ControlPlaneInitialized", "status": "True", "reason": "Initialized", "lastTransitionTime": at(0)}]}}));
    w.create(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
        "metadata": {"name": "workers", "namespace": NS}, "spec": {"template": {"spec": {}}}}),
    );
    w.create(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
        "metadata": {"name": "workers", "namespace": NS}, "spec": {"template": {"spec": {"backend": {"inMemory": {}}}}}}));
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": "md-1", "namespace": NS},
        "spec": {"clusterName": "c1", "replicas": replicas,
            "rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
            "template": {"spec": {"clusterName": "c1", "version": "v1.34.0",
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate", "name": "workers"}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "workers"}}}}}));
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
        "metadata": {"name": "workers", "namespace": NS},
        "spec": {"clusterName": "c1", "selector": {"matchLabels": {"cluster.x-k8s.io/deployment-name": "md-1"}},
            "checks": {"nodeStartupTimeoutSeconds": 600,
                "unhealthyNodeConditions": [{"type": "Ready", "status": "False", "timeoutSeconds": 60}]}}}));
    w
}

fn settled(replicas: usize) -> impl FnMut(&World) -> bool {
    move |w: &World| {
        let s = w.md_status();
        w.machines() == (replicas, replicas)
            && s["availableReplicas"] == json!(replicas)
            && s["upToDateReplicas"] == json!(replicas)
            && w.of_kind("MachineSet").len() == 1
    }
}

#[test]
fn the_fleet_scales_rolls_and_remediates() {
    let mut w = setup(3);
    w.run_until("3 workers available", settled(3), |_| {});
    let s = w.md_status();
    assert_eq!(
        s["conditions"].as_array().map(|c| c
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")),
        Some(true)
    );
    // Every Machine carries the contract labels and its MachineSet as controller.
    let ms = w.of_kind("MachineSet").pop().expect("set");
    for m in w.of_kind("Machine") {
        let l = &m["metadata"]["labels"];
        assert_eq!(
            (
                l["cluster.x-k8s.io/set-name"].clone(),
                l["cluster.x-k8s.io/deployment-name"].as_str(),
                l["cluster.x-k8s.io/cluster-name"].as_str()
            ),
            (ms["metadata"]["name"].clone(), Some("md-1"), Some("c1"))
        );
        assert_eq!(
            m["metadata"]["ownerReferences"][0]["uid"],
            ms["metadata"]["uid"]
        );
        assert!(
            w.get("KubeadmConfig", &name_of(&m)).is_some()
                && w.get("DevMachine", &name_of(&m)).is_some()
        );
    }

    for replicas in [5, 2] {
        w.objects
            .get_mut(&("MachineDeployment".into(), "md-1".into()))
            .expect("md")["spec"]["replicas"] = json!(replicas);
        w.run_until("scaled", settled(replicas), |_| {});
    }

    // Rolling update with maxSurge 1, maxUnavailable 0 on 2 replicas.
    w.objects
        .get_mut(&("MachineDeployment".into(), "md-1".into()))
        .expect("md")["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
    let old: Vec<String> = w.of_kind("Machine").iter().map(name_of).collect();
    w.run_until(
        "rolled out",
        |w| {
            settled(2)(w)
                && w.of_kind("Machine")
                    .iter()
                    .all(|m| !old.contains(&name_of(m)))
        },
        |w| {
            let (all, available) = w.machines();
            assert!(all <= 3, "{all} machines > 2 + maxSurge 1");
            assert!(
                available >= 2,
                "{available} available < 2 - maxUnavailable 0"
            );
        },
    );
    assert!(w.of_kind("MachineSet")[0]["spec"]["template"]["spec"]["version"] == "v1.35.0");

    // A Node goes NotReady: after the timeout the Machine is remediated and replaced.
    let victim = name_of(&w.of_kind("Machine")[0]);
    w.nodes.get_mut(&victim).expect("node")["status"]["conditions"][0] =
        json!({"type": "Ready", "status": "False", "lastTransitionTime": w.now()});
    let mut saw_unhealthy = false;
    w.run_until(
        "remediated",
        |w| w.get("Machine", &victim).is_none() && settled(2)(w),
        |w| {
            if let Some(m) = w.get("Machine", &victim) {
                let cs = m["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                saw_unhealthy |= cs
                    .iter()
                    .any(|c| c["type"] == "HealthCheckSucceeded" && c["status"] == "False")
                    && cs.iter().any(|c| c["type"] == "OwnerRemediated");
            }
        },
    );
    assert!(
        saw_unhealthy,
        "the health check marked the Machine before it went"
    );
    let mhc = w.get("MachineHealthCheck", "workers").expect("mhc");
    assert_eq!(
        (
            mhc["status"]["expectedMachines"].as_i64(),
            mhc["status"]["currentHealthy"].as_i64()
        ),
        (Some(2), Some(2))
    );

    // Deleting the MachineDeployment takes everything with it.
    w.objects
        .get_mut(&("MachineDeployment".into(), "md-1".into()))
        .expect("md")["metadata"]["deletionTimestamp"] = json!(w.now());
    w.run_until(
        "deleted",
        |w| w.get("MachineDeployment", "md-1").is_none(),
        |_| {},
    );
    assert!(w.of_kind("MachineSet").is_empty() && w.of_kind("Machine").is_empty());
}

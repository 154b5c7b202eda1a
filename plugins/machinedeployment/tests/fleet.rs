//! The three worker-fleet plugins together, natively: a fake API store resolves each plugin's declared relations and applies its outcomes, step after step.
//!
//! Not the end-to-end test of issue 6 (that needs the host, the Machine and
//! infrastructure plugins and a workload API server): here a small fake
//! plays the API server (create, RFC 7386 merge patches with arrays replaced
//! whole, finalizers, garbage collection of clones) and the Machine
//! controller (a Machine gets its finalizer, then a Node and `Ready` /
//! `Available` two ticks after creation, mirrors the Node's `Ready` and a
//! failed health check into `Ready`, and on deletion first turns not ready,
//! then drops its finalizer one step later), while the real
//! `machinedeployment`, `machineset` and `machinehealthcheck` reconcilers
//! run on snapshots built from their own `describe()` relations. Each
//! outcome is written before the next reconcile reads, as the host does.
//!
//! The scenario is issue 6's: 3 workers, scale 3 -> 4 -> 6 -> 3 (deletion
//! order `Newest`, Machines without a Node first) -> 5 -> 2 (`Oldest`), a
//! template change rolled with maxSurge 1 / maxUnavailable 0, a Node patched
//! NotReady without a transition time, `triggerIf` short-circuiting two
//! unhealthy Machines, a Machine whose Node never comes, and deletion. It
//! runs once in a fixed controller order and again in seeded random orders
//! (every reconcile of a tick shuffled, the Machine controller per Machine
//! in between, a third of the reconciles delayed to a later tick as a
//! backlogged work queue does), with the invariants checked after every
//! single write.

use capi_cluster::ClusterReconciler;
use capi_machinedeployment::MachineDeploymentReconciler;
use capi_machinehealthcheck::MachineHealthCheckReconciler;
use capi_machineset::MachineSetReconciler;
use capstan_sdk::capi::fleet::{self, LabelSelector};
use capstan_sdk::testing::FakeHost;
use capstan_sdk::{Connection, Outcome, Reconciler, Relation, RelationSelector, Snapshot, Target};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const NS: &str = "ns";
const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";

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

/// `(status, reason)` of condition `t` of `o`, `("", "")` when absent.
fn cond(o: &Value, t: &str) -> (String, String) {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .map_or((String::new(), String::new()), |c| {
            (
                c["status"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
}

fn is(o: &Value, t: &str, status: &str, reason: &str) -> bool {
    cond(o, t) == (status.to_owned(), reason.to_owned())
}

fn deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

/// xorshift64*: the seeded order of a tick's reconciles.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(x % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
enum Job {
    Md(String),
    Ms(String),
    Mhc(String),
    Machine(String),
}

struct World {
    /// Management objects by (kind, name).
    objects: BTreeMap<(String, String), Value>,
    /// Workload Nodes by name.
    nodes: BTreeMap<String, Value>,
    /// Ticks each Machine has lived.
    ages: BTreeMap<String, u32>,
    /// Machines whose Node never comes.
    stuck: BTreeSet<String>,
    /// The next this many new Machines get stuck.
    stick_next: usize,
    serial: u64,
    clock: i64,
    /// One host per plugin, so each keeps its memo across reconciles.
    hosts: [FakeHost; 4],
    /// `None`: fixed order (deployments, sets, health checks, Machines).
    rng: Option<Rng>,
    /// Every Machine name ever created.
    created: Vec<String>,
    /// With `rng`, one reconcile in `delay` waits for a later tick.
    delay: usize,
}

type Check<'a> = &'a mut dyn FnMut(&World);

impl World {
    fn now(&self) -> String {
        at(self.clock)
    }

    fn create(&mut self, mut o: Value) {
        self.serial += 1;
        o["metadata"]["uid"] = json!(format!("uid-{}", self.serial));
        o["metadata"]["creationTimestamp"] = json!(self.now());
        o["metadata"]["generation"] = json!(1);
        if kind_of(&o) == "Machine" {
            let name = name_of(&o);
            self.created.push(name.clone());
            if self.stick_next > 0 {
                self.stick_next -= 1;
                self.stuck.insert(name);
            }
        }
        self.objects.insert((kind_of(&o), name_of(&o)), o);
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind.to_owned(), name.to_owned()))
    }

    fn edit(&mut self, kind: &str, name: &str) -> &mut Value {
        let o = self
            .objects
            .get_mut(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("{kind} {name}"));
        // A spec change bumps the generation, as the API server does.
        o["metadata"]["generation"] = json!(o["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        o
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn md(&self) -> Value {
        self.get("MachineDeployment", "md-1").expect("md").clone()
    }

    /// The MachineDeployment with the status a reconcile would write now.
    fn md_now(&self) -> Value {
        let mut md = self.md();
        let out = self.reconcile::<MachineDeploymentReconciler>(0, &md);
        if let Some(s) = out.statuses().first() {
            let s: Value = serde_json::from_str(s).expect("json");
            md["status"] = s["status"].clone();
        }
        md
    }

    /// The Cluster with the status the `cluster` reconciler would write now
    /// (not written back: this Cluster has no control plane object, and the
    /// test keeps its `controlPlaneInitialized` as given).
    fn cluster_now(&self) -> Value {
        let mut c = self.get("Cluster", "c1").expect("cluster").clone();
        let out = self.reconcile::<ClusterReconciler>(3, &c);
        if let Some(s) = out.statuses().first() {
            let s: Value = serde_json::from_str(s).expect("json");
            c["status"] = s["status"].clone();
        }
        c
    }

    fn mhc(&self) -> Value {
        self.get("MachineHealthCheck", "workers")
            .expect("mhc")
            .clone()
    }

    /// Machines not being deleted.
    fn live(&self) -> Vec<Value> {
        self.of_kind("Machine")
            .into_iter()
            .filter(|m| !deleting(m))
            .collect()
    }

    /// Machines not being deleted with `Available` True.
    fn available(&self) -> usize {
        self.live()
            .iter()
            .filter(|m| cond(m, "Available").0 == "True")
            .count()
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
                RelationSelector::Named(n) => name_of(o) == *n,
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
                    let before = cur["spec"].clone();
                    merge(cur, &body);
                    if cur["spec"] != before {
                        cur["metadata"]["generation"] =
                            json!(cur["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
                    }
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

    /// The Machine controller, for one Machine: finalizer; on deletion not
    /// ready first, finalizer gone one step later; else a Node two ticks
    /// after creation (unless stuck), `Ready`/`Available` from the Node's
    /// `Ready` and the health check (as the machine plugin's summary).
    fn machine_controller(&mut self, name: &str) {
        let now = self.now();
        let Some(m) = self.get("Machine", name).cloned() else {
            return;
        };
        let mut m = m;
        let set_ready = |m: &mut Value, status: &str, reason: &str| {
            let mut conds: Vec<Value> = m["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for t in ["Ready", "Available"] {
                match conds.iter_mut().find(|c| c["type"] == t) {
                    Some(c) if c["status"] == status => c["reason"] = json!(reason),
                    Some(c) => {
                        *c = json!({"type": t, "status": status, "reason": reason, "lastTransitionTime": now});
                    }
                    None => conds.push(
                        json!({"type": t, "status": status, "reason": reason, "lastTransitionTime": now}),
                    ),
                }
            }
            m["status"]["conditions"] = json!(conds);
        };
        if deleting(&m) {
            if cond(&m, "Ready").0 == "True" {
                set_ready(&mut m, "False", "Deleting");
            } else {
                m["metadata"]["finalizers"] = json!([]);
            }
        } else if m["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| !f.iter().any(|f| f == MACHINE_FINALIZER))
        {
            m["metadata"]["finalizers"] = json!([MACHINE_FINALIZER]);
        } else {
            let age = self.ages.entry(name.to_owned()).or_insert(0);
            *age += 1;
            if *age < 2 || self.stuck.contains(name) {
                set_ready(&mut m, "False", "NotReady");
            } else {
                let node = self.nodes.entry(name.to_owned()).or_insert_with(|| {
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
                });
                let node_ready = node["status"]["conditions"][0]["status"] == "True";
                m["status"]["nodeRef"] = json!({"name": name});
                let checked = cond(&m, "HealthCheckSucceeded").0 != "False";
                if node_ready && checked {
                    set_ready(&mut m, "True", "Ready");
                } else {
                    set_ready(&mut m, "False", "NotReady");
                }
            }
        }
        self.objects
            .insert(("Machine".to_owned(), name.to_owned()), m);
        self.collect_garbage();
    }

    /// One tick: every controller once, in fixed or seeded random order,
    /// `check` after every write.
    fn tick(&mut self, check: Check<'_>) {
        self.clock += 10;
        let mut jobs: Vec<Job> = Vec::new();
        for (kind, job) in [
            ("MachineDeployment", Job::Md as fn(String) -> Job),
            ("MachineSet", Job::Ms),
            ("MachineHealthCheck", Job::Mhc),
            ("Machine", Job::Machine),
        ] {
            jobs.extend(self.of_kind(kind).iter().map(|o| job(name_of(o))));
        }
        if let Some(rng) = &mut self.rng {
            for i in (1..jobs.len()).rev() {
                let j = rng.below(i + 1);
                jobs.swap(i, j);
            }
            // A backlogged work queue: a third of the reconciles wait for a
            // later tick (a MachineSet's status then lags its spec).
            let delay = self.delay;
            jobs.retain(|j| matches!(j, Job::Machine(_)) || rng.below(delay) != 0);
        }
        for job in jobs {
            let out = match &job {
                Job::Md(n) => self
                    .get("MachineDeployment", n)
                    .cloned()
                    .map(|o| self.reconcile::<MachineDeploymentReconciler>(0, &o)),
                Job::Ms(n) => self
                    .get("MachineSet", n)
                    .cloned()
                    .map(|o| self.reconcile::<MachineSetReconciler>(1, &o)),
                Job::Mhc(n) => self
                    .get("MachineHealthCheck", n)
                    .cloned()
                    .map(|o| self.reconcile::<MachineHealthCheckReconciler>(2, &o)),
                Job::Machine(n) => {
                    self.machine_controller(n);
                    None
                }
            };
            if let Some(out) = out {
                self.write(&out);
            }
            check(self);
        }
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&World) -> bool, check: Check<'_>) {
        for _ in 0..150 {
            self.tick(check);
            if done(self) {
                return;
            }
        }
        panic!(
            "{what} never happened; machines: {:#}\nmachinesets: {:#}\nmd status: {:#}\nmhc status: {:#}",
            json!(self.of_kind("Machine")),
            json!(
                self.of_kind("MachineSet")
                    .iter()
                    .map(|s| (
                        name_of(s),
                        s["spec"]["replicas"].clone(),
                        s["status"].clone()
                    ))
                    .collect::<Vec<_>>()
            ),
            self.md()["status"],
            self.mhc()["status"]
        );
    }

    /// Set the MachineDeployment's replicas and run until it settles there.
    fn scale(&mut self, replicas: usize, check: Check<'_>) {
        self.edit("MachineDeployment", "md-1")["spec"]["replicas"] = json!(replicas);
        self.run_until(&format!("scaled to {replicas}"), settled(replicas), check);
    }
}

fn world(rng: Option<Rng>) -> World {
    let mut w = World {
        objects: BTreeMap::new(),
        nodes: BTreeMap::new(),
        ages: BTreeMap::new(),
        stuck: BTreeSet::new(),
        stick_next: 0,
        serial: 0,
        clock: 0,
        hosts: [
            FakeHost::new(),
            FakeHost::new(),
            FakeHost::new(),
            FakeHost::new(),
        ],
        rng,
        created: Vec::new(),
        delay: 3,
    };
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": NS, "finalizers": ["cluster.cluster.x-k8s.io"]}, "spec": {},
        "status": {"initialization": {"controlPlaneInitialized": true},
            "conditions": [{"type": "InfrastructureReady", "status": "True", "reason": "Ready", "lastTransitionTime": at(0)},
                {"type": "ControlPlaneInitialized", "status": "True", "reason": "Initialized", "lastTransitionTime": at(0)}]}}));
    w.create(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
        "metadata": {"name": "workers", "namespace": NS}, "spec": {"template": {"spec": {}}}}),
    );
    for t in ["workers", "workers-v2"] {
        w.create(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
            "metadata": {"name": t, "namespace": NS}, "spec": {"template": {"spec": {"backend": {"inMemory": {}}}}}}));
    }
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": "md-1", "namespace": NS},
        "spec": {"clusterName": "c1", "replicas": 3,
            "rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
            "template": {"spec": {"clusterName": "c1", "version": "v1.34.0",
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate", "name": "workers"}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "workers"}}}}}));
    w.create(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
        "metadata": {"name": "workers", "namespace": NS},
        "spec": {"clusterName": "c1", "selector": {"matchLabels": {"cluster.x-k8s.io/deployment-name": "md-1"}},
            "checks": {"nodeStartupTimeoutSeconds": 60,
                "unhealthyNodeConditions": [
                    {"type": "Ready", "status": "False", "timeoutSeconds": 30},
                    {"type": "Ready", "status": "Unknown", "timeoutSeconds": 30}]}}}));
    w
}

/// `replicas` Machines, all available and up to date, one MachineSet, and the
/// MachineDeployment's and the MachineHealthCheck's statuses saying so.
fn settled(replicas: usize) -> impl Fn(&World) -> bool {
    move |w: &World| {
        let s = w.md()["status"].clone();
        w.of_kind("Machine").len() == replicas
            && w.available() == replicas
            && s["replicas"] == json!(replicas)
            && s["availableReplicas"] == json!(replicas)
            && s["readyReplicas"] == json!(replicas)
            && s["upToDateReplicas"] == json!(replicas)
            && w.of_kind("MachineSet").len() == 1
            && w.of_kind("MachineSet")[0]["status"]["availableReplicas"] == json!(replicas)
            && w.mhc()["status"]["expectedMachines"] == json!(replicas)
            && w.mhc()["status"]["currentHealthy"] == json!(replicas)
    }
}

/// The contract metadata of everything the three plugins write (reference.md 1.2-1.5).
fn assert_contract(w: &World) {
    let cluster_uid = w.get("Cluster", "c1").expect("cluster")["metadata"]["uid"].clone();
    let non_controller_cluster_ref = |o: &Value| {
        let refs = o["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(refs.len(), 1, "{}: one owner", name_of(o));
        assert_eq!(
            (&refs[0]["kind"], &refs[0]["name"], &refs[0]["uid"]),
            (&json!("Cluster"), &json!("c1"), &cluster_uid)
        );
        assert!(
            refs[0]["controller"] != true,
            "{}: not controller",
            name_of(o)
        );
    };
    let controller_ref = |o: &Value, owner: &Value| {
        let refs = o["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(refs.len(), 1, "{}: one owner", name_of(o));
        let r = &refs[0];
        assert_eq!(
            (&r["apiVersion"], &r["kind"], &r["name"], &r["uid"]),
            (
                &owner["apiVersion"],
                &owner["kind"],
                &owner["metadata"]["name"],
                &owner["metadata"]["uid"]
            )
        );
        assert_eq!(
            (&r["controller"], &r["blockOwnerDeletion"]),
            (&json!(true), &json!(true)),
            "{}",
            name_of(o)
        );
    };
    let md = w.md();
    let l = &md["metadata"]["labels"];
    assert_eq!(l["cluster.x-k8s.io/cluster-name"], "c1");
    assert_eq!(
        md["metadata"]["finalizers"],
        json!(["cluster.x-k8s.io/machinedeployment"])
    );
    non_controller_cluster_ref(&md);
    for k in [
        "cluster.x-k8s.io/cluster-name",
        "cluster.x-k8s.io/deployment-name",
    ] {
        assert!(
            !md["spec"]["selector"]["matchLabels"][k].is_null(),
            "selector {k}"
        );
        assert!(
            !md["spec"]["template"]["metadata"]["labels"][k].is_null(),
            "template {k}"
        );
    }
    let sets = w.of_kind("MachineSet");
    for ms in &sets {
        let l = &ms["metadata"]["labels"];
        assert_eq!(
            (
                l["cluster.x-k8s.io/cluster-name"].as_str(),
                l["cluster.x-k8s.io/deployment-name"].as_str()
            ),
            (Some("c1"), Some("md-1"))
        );
        let hash = l["machine-template-hash"].clone();
        assert!(
            hash.as_str().is_some_and(|h| h.parse::<u32>().is_ok()),
            "{hash}"
        );
        assert_eq!(
            ms["spec"]["selector"]["matchLabels"]["machine-template-hash"],
            hash
        );
        assert_eq!(
            ms["spec"]["template"]["metadata"]["labels"]["machine-template-hash"],
            hash
        );
        assert_eq!(
            ms["metadata"]["finalizers"],
            json!(["cluster.x-k8s.io/machineset"])
        );
        controller_ref(ms, &md);
        let a = &ms["metadata"]["annotations"];
        assert!(a["machinedeployment.clusters.x-k8s.io/revision"].is_string());
        assert_eq!(
            a["machinedeployment.clusters.x-k8s.io/desired-replicas"],
            json!(md["spec"]["replicas"].to_string())
        );
        assert!(
            ms["status"]["selector"]
                .as_str()
                .is_some_and(|s| s.contains("machine-template-hash="))
        );
    }
    for m in w.of_kind("Machine") {
        let name = name_of(&m);
        let owner = controller_uid_owner(w, &m);
        controller_ref(&m, &owner);
        let l = &m["metadata"]["labels"];
        assert_eq!(l["cluster.x-k8s.io/set-name"], owner["metadata"]["name"]);
        assert_eq!(l["cluster.x-k8s.io/deployment-name"], "md-1");
        assert_eq!(l["cluster.x-k8s.io/cluster-name"], "c1");
        assert_eq!(
            l["machine-template-hash"],
            owner["metadata"]["labels"]["machine-template-hash"]
        );
        assert_eq!(m["spec"]["clusterName"], "c1");
        assert_eq!(m["spec"]["bootstrap"]["configRef"]["name"], json!(name));
        assert_eq!(m["spec"]["bootstrap"]["configRef"]["kind"], "KubeadmConfig");
        assert_eq!(m["spec"]["infrastructureRef"]["name"], json!(name));
        assert_eq!(m["spec"]["infrastructureRef"]["kind"], "DevMachine");
        let template = owner["spec"]["template"]["spec"]["infrastructureRef"]["name"].clone();
        for (kind, from, group_kind) in [
            (
                "KubeadmConfig",
                json!("workers"),
                "KubeadmConfigTemplate.bootstrap.cluster.x-k8s.io",
            ),
            (
                "DevMachine",
                template,
                "DevMachineTemplate.infrastructure.cluster.x-k8s.io",
            ),
        ] {
            let c = w
                .get(kind, &name)
                .unwrap_or_else(|| panic!("{kind} {name}"));
            let a = &c["metadata"]["annotations"];
            assert_eq!(
                (
                    &a["cluster.x-k8s.io/cloned-from-name"],
                    a["cluster.x-k8s.io/cloned-from-groupkind"].as_str()
                ),
                (&from, Some(group_kind))
            );
            assert_eq!(
                c["metadata"]["labels"]["cluster.x-k8s.io/set-name"],
                owner["metadata"]["name"]
            );
            assert_eq!(
                c["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
                "c1"
            );
            let r = &c["metadata"]["ownerReferences"][0];
            assert_eq!(
                (&r["kind"], &r["uid"]),
                (&json!("MachineSet"), &owner["metadata"]["uid"])
            );
            assert!(
                r["controller"] != true,
                "the Machine becomes the clone's controller"
            );
        }
    }
    let mhc = w.mhc();
    assert_eq!(
        mhc["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
        "c1"
    );
    assert!(
        mhc["metadata"]["finalizers"].is_null(),
        "CAPI's MHC has no finalizer"
    );
    non_controller_cluster_ref(&mhc);
}

fn controller_uid_owner(w: &World, m: &Value) -> Value {
    let uid = &m["metadata"]["ownerReferences"][0]["uid"];
    w.of_kind("MachineSet")
        .into_iter()
        .find(|s| &s["metadata"]["uid"] == uid)
        .unwrap_or_else(|| panic!("owner of {}", name_of(m)))
}

/// Steady conditions of the MachineDeployment and its MachineSet.
fn assert_steady_conditions(w: &World) {
    // A MachineSet's steady v1beta2 conditions; a MachineDeployment has
    // these plus Available and RollingOut.
    let set_rows = [
        ("ScalingUp", "False", "NotScalingUp"),
        ("ScalingDown", "False", "NotScalingDown"),
        ("MachinesReady", "True", "Ready"),
        ("MachinesUpToDate", "True", "UpToDate"),
        ("Remediating", "False", "NotRemediating"),
        ("Deleting", "False", "NotDeleting"),
        ("Paused", "False", "NotPaused"),
    ];
    let md = w.md();
    for (t, s, r) in [
        ("Available", "True", "Available"),
        ("RollingOut", "False", "NotRollingOut"),
    ]
    .into_iter()
    .chain(set_rows)
    {
        assert!(
            is(&md, t, s, r),
            "MachineDeployment {t}: {:?}",
            cond(&md, t)
        );
    }
    let generation = md["metadata"]["generation"].clone();
    assert_eq!(md["status"]["observedGeneration"], generation);
    assert!(
        md["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .all(|c| c["observedGeneration"] == generation && c["lastTransitionTime"].is_string())
    );
    assert_eq!(md["status"]["phase"], "Running");
    let ms = w.of_kind("MachineSet").pop().expect("set");
    for (t, s, r) in set_rows {
        assert!(is(&ms, t, s, r), "MachineSet {t}: {:?}", cond(&ms, t));
    }
    assert!(
        ms["status"]["deprecated"]["v1beta1"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs
                .iter()
                .any(|c| c["type"] == "MachinesCreated" && c["status"] == "True")),
        "v1beta1 MachinesCreated: {}",
        ms["status"]
    );
    for m in w.of_kind("Machine") {
        assert!(
            is(&m, "HealthCheckSucceeded", "True", "HealthCheckSucceeded"),
            "{}: {:?}",
            name_of(&m),
            cond(&m, "HealthCheckSucceeded")
        );
        assert_eq!(cond(&m, "OwnerRemediated").0, "");
    }
    // The Cluster's aggregation of the MachineDeployments (plugins/cluster).
    let n = w.of_kind("Machine").len();
    let cluster = w.cluster_now();
    assert!(
        is(&cluster, "WorkersAvailable", "True", "Available"),
        "{:?}",
        cond(&cluster, "WorkersAvailable")
    );
    let workers = &cluster["status"]["workers"];
    for k in [
        "desiredReplicas",
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "upToDateReplicas",
    ] {
        assert_eq!(workers[k], json!(n), "status.workers.{k}");
    }
    let mhc = w.mhc();
    assert_eq!(
        (
            &mhc["status"]["expectedMachines"],
            &mhc["status"]["currentHealthy"]
        ),
        (&json!(n), &json!(n))
    );
    assert!(is(&mhc, "RemediationAllowed", "True", "RemediationAllowed"));
}

fn names(w: &World) -> BTreeSet<String> {
    w.of_kind("Machine").iter().map(name_of).collect()
}

fn set_node_ready(w: &mut World, node: &str, status: &str, transition: Option<String>) {
    let mut c = json!({"type": "Ready", "status": status});
    if let Some(t) = transition {
        c["lastTransitionTime"] = json!(t);
    }
    w.nodes.get_mut(node).expect("node")["status"]["conditions"] = json!([c]);
}

fn scenario(rng: Option<Rng>) {
    let mut w = world(rng);
    let mut none = |_: &World| {};

    // 1. Three workers.
    w.run_until("3 workers available", settled(3), &mut none);
    assert_contract(&w);
    assert_steady_conditions(&w);
    let first = names(&w);

    // 2. Scale 3 -> 4: a fourth, newer Machine.
    w.scale(4, &mut none);
    let fourth: BTreeSet<String> = names(&w).difference(&first).cloned().collect();
    assert_eq!(fourth.len(), 1);

    // 3. Scale to 6 and, before the two new Machines have Nodes, down to 3
    //    with deletion order Newest: the two without Node go first, then the
    //    newest healthy one (the fourth); never fewer than 3 Machines stay.
    w.edit("MachineDeployment", "md-1")["spec"]["replicas"] = json!(6);
    for _ in 0..20 {
        if names(&w).len() == 6 {
            break;
        }
        w.tick(&mut none);
    }
    assert_eq!(names(&w).len(), 6);
    assert!(
        w.of_kind("Machine")
            .iter()
            .filter(|m| m["status"]["nodeRef"].is_null())
            .count()
            >= 2
    );
    let md = w.edit("MachineDeployment", "md-1");
    md["spec"]["replicas"] = json!(3);
    md["spec"]["deletion"] = json!({"order": "Newest"});
    w.run_until("scaled to 3", settled(3), &mut |w: &World| {
        assert!(
            w.live().len() >= 3,
            "{} Machines stay, below the target 3",
            w.live().len()
        );
    });
    assert_eq!(names(&w), first, "unprovisioned first, then the newest");
    assert_eq!(
        w.of_kind("MachineSet")[0]["spec"]["deletion"]["order"],
        "Newest"
    );

    // 4. 3 -> 5 -> 2 with deletion order Oldest: the first three go.
    w.scale(5, &mut none);
    let later: BTreeSet<String> = names(&w).difference(&first).cloned().collect();
    w.edit("MachineDeployment", "md-1")["spec"]["deletion"] = json!({"order": "Oldest"});
    w.scale(2, &mut |w: &World| assert!(w.live().len() >= 2));
    assert_eq!(names(&w), later, "the oldest went");
    assert_steady_conditions(&w);

    // 5. A template change (new infrastructure template) rolls every Machine,
    //    maxSurge 1, maxUnavailable 0: never fewer than 2 available, never
    //    more than 3 replicas asked of the MachineSets, Available throughout.
    let old = names(&w);
    let old_set = name_of(&w.of_kind("MachineSet")[0]);
    w.edit("MachineDeployment", "md-1")["spec"]["template"]["spec"]["infrastructureRef"]["name"] =
        json!("workers-v2");
    let mut seen_rolling = false;
    let mut seen_not_up_to_date = false;
    let mut worst = (0, usize::MAX);
    w.run_until(
        "rolled out",
        |w| settled(2)(w) && names(w).is_disjoint(&old),
        &mut |w: &World| {
            let asked: i64 = w
                .of_kind("MachineSet")
                .iter()
                .filter(|s| !deleting(s))
                .map(|s| s["spec"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            assert!(asked <= 3, "{asked} replicas > 2 + maxSurge 1");
            let available = w.available();
            assert!(
                available >= 2,
                "{available} available < 2 - maxUnavailable 0"
            );
            worst = (worst.0.max(w.live().len()), worst.1.min(available));
            let md = w.md();
            assert_eq!(
                cond(&md, "Available").0,
                "True",
                "Available throughout the rollout"
            );
            seen_rolling |= is(&md, "RollingOut", "True", "RollingOut");
            seen_not_up_to_date |= is(&md, "MachinesUpToDate", "False", "NotUpToDate");
        },
    );
    assert!(
        seen_rolling && seen_not_up_to_date,
        "the rollout was reported"
    );
    assert_eq!(worst.1, 2);
    assert!(
        w.get("MachineSet", &old_set).is_none(),
        "the old MachineSet is deleted"
    );
    let ms = w.of_kind("MachineSet").pop().expect("set");
    assert_eq!(
        ms["spec"]["template"]["spec"]["infrastructureRef"]["name"],
        "workers-v2"
    );
    assert_eq!(
        ms["metadata"]["annotations"]["machinedeployment.clusters.x-k8s.io/revision"],
        "2"
    );
    assert_eq!(
        w.md()["metadata"]["annotations"]["machinedeployment.clusters.x-k8s.io/revision"],
        "2"
    );
    assert_contract(&w);
    assert_steady_conditions(&w);

    // 6. A Node patched NotReady without a transition time (as `kubectl
    //    patch --subresource=status` may): the Machine is marked, its
    //    MachineSet deletes it, a replacement with another name comes.
    let victim = names(&w).into_iter().next().expect("machine");
    set_node_ready(&mut w, &victim, "False", None);
    let mut marked = false;
    let mut deleting_reason = false;
    let mut remediating = (false, false);
    w.run_until(
        "remediated",
        |w| w.get("Machine", &victim).is_none() && settled(2)(w),
        &mut |w: &World| {
            if let Some(m) = w.get("Machine", &victim) {
                marked |= is(m, "HealthCheckSucceeded", "False", "UnhealthyNode")
                    && is(m, "OwnerRemediated", "False", "WaitingForRemediation");
                deleting_reason |= is(m, "OwnerRemediated", "False", "MachineDeleting");
            }
            if let Some(ms) = w.of_kind("MachineSet").pop() {
                remediating.0 |= is(&ms, "Remediating", "True", "Remediating");
            }
            // What the MachineDeployment says when it looks now (in some
            // orders its own tick comes only after the Machine is gone).
            remediating.1 |= is(&w.md_now(), "Remediating", "True", "Remediating");
            assert!(
                w.live().len() <= 2,
                "the replacement waits for the old Machine"
            );
        },
    );
    assert!(
        marked && deleting_reason,
        "HealthCheckSucceeded/OwnerRemediated written"
    );
    assert_eq!(
        remediating,
        (true, true),
        "MachineSet and MachineDeployment reported Remediating"
    );
    assert_eq!(names(&w).len(), 2);
    assert!(
        w.created.iter().filter(|n| **n == victim).count() == 1,
        "names are not reused"
    );
    assert_steady_conditions(&w);

    // 7. triggerIf: at most 1 unhealthy. Both Nodes NotReady: nothing is
    //    remediated, RemediationAllowed False; one recovers: the other goes.
    w.edit("MachineHealthCheck", "workers")["spec"]["remediation"] =
        json!({"triggerIf": {"unhealthyLessThanOrEqualTo": 1}});
    let pair: Vec<String> = names(&w).into_iter().collect();
    for n in &pair {
        let now = w.now();
        set_node_ready(&mut w, n, "Unknown", Some(now));
    }
    for _ in 0..12 {
        w.tick(&mut none);
    }
    assert_eq!(names(&w), pair.iter().cloned().collect(), "short-circuited");
    let mhc = w.mhc();
    assert!(is(&mhc, "RemediationAllowed", "False", "TooManyUnhealthy"));
    assert_eq!(
        (
            &mhc["status"]["expectedMachines"],
            &mhc["status"]["currentHealthy"],
            &mhc["status"]["remediationsAllowed"]
        ),
        (&json!(2), &json!(0), &json!(0))
    );
    for n in &pair {
        let m = w.get("Machine", n).expect("machine");
        assert!(is(m, "HealthCheckSucceeded", "False", "UnhealthyNode"));
        assert_eq!(cond(m, "OwnerRemediated").0, "", "no remediation requested");
    }
    assert_eq!(cond(&w.md(), "Available").0, "False");
    let cluster = w.cluster_now();
    assert!(
        is(&cluster, "WorkersAvailable", "False", "NotAvailable"),
        "{:?}",
        cond(&cluster, "WorkersAvailable")
    );
    let now = w.now();
    set_node_ready(&mut w, &pair[0], "True", Some(now));
    w.run_until(
        "the other remediated",
        |w| w.get("Machine", &pair[1]).is_none() && settled(2)(w),
        &mut none,
    );
    assert!(w.get("Machine", &pair[0]).is_some());
    assert_steady_conditions(&w);

    // 8. A Machine whose Node never comes: past nodeStartupTimeoutSeconds
    //    (60) it is remediated and replaced.
    w.stick_next = 1;
    w.edit("MachineDeployment", "md-1")["spec"]["replicas"] = json!(3);
    let mut startup = false;
    w.run_until(
        "stuck machine replaced",
        |w| settled(3)(w) && w.stuck.iter().all(|s| w.get("Machine", s).is_none()),
        &mut |w: &World| {
            for s in &w.stuck {
                if let Some(m) = w.get("Machine", s) {
                    startup |= is(m, "HealthCheckSucceeded", "False", "NodeStartupTimeout");
                }
            }
        },
    );
    assert!(startup, "NodeStartupTimeout");
    assert_contract(&w);
    assert_steady_conditions(&w);

    // 9. Deleting the MachineDeployment takes everything with it.
    let now = w.now();
    w.objects
        .get_mut(&("MachineDeployment".into(), "md-1".into()))
        .expect("md")["metadata"]["deletionTimestamp"] = json!(now);
    w.run_until(
        "deleted",
        |w| w.get("MachineDeployment", "md-1").is_none(),
        &mut none,
    );
    assert!(w.of_kind("MachineSet").is_empty() && w.of_kind("Machine").is_empty());
    assert!(w.of_kind("DevMachine").is_empty() && w.of_kind("KubeadmConfig").is_empty());
}

#[test]
fn the_fleet_scales_rolls_and_remediates_in_controller_order() {
    scenario(None);
}

#[test]
fn the_fleet_scales_rolls_and_remediates_in_random_orders() {
    for seed in [1_u64, 7, 42, 1234, 98_765] {
        scenario(Some(Rng(seed)));
    }
}

/// Roll 3 workers (maxSurge 1, maxUnavailable 0), twice, with backlogged
/// queues: never fewer than 3 available, whatever the order.
#[test]
fn rolling_three_workers_never_drops_availability_in_random_orders() {
    for seed in 1_u64..=12 {
        let mut w = world(Some(Rng(seed)));
        // Half of the reconciles wait: statuses lag their specs for ticks.
        w.delay = 2;
        let mut none = |_: &World| {};
        w.run_until("3 workers available", settled(3), &mut none);
        for template in ["workers-v2", "workers"] {
            let old = names(&w);
            w.edit("MachineDeployment", "md-1")["spec"]["template"]["spec"]["infrastructureRef"]
                ["name"] = json!(template);
            w.run_until(
                "rolled out",
                |w| settled(3)(w) && names(w).is_disjoint(&old),
                &mut |w: &World| {
                    let available = w.available();
                    assert!(available >= 3, "seed {seed}: {available} available < 3");
                },
            );
        }
    }
}

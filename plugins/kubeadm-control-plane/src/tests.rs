//! Native tests of the KubeadmControlPlane reconciler through the SDK's fake host.

use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capstan_sdk::Connection;
use capstan_sdk::testing::FakeHost;
use std::collections::BTreeMap;

const T0: &str = "2026-01-01T00:00:00Z";

/// A tiny management + workload cluster: the reconciler's outcomes are
/// applied to it and the next snapshot is built from it, as the host would.
struct World {
    objects: BTreeMap<(String, String), Value>,
    pods: BTreeMap<String, Value>,
    connection: Connection,
    clock: u32,
    uids: u32,
}

fn key(o: &Value) -> (String, String) {
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (s("/kind"), s("/metadata/name"))
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if k == "metadata" || k == "status" {
                    merge(a.entry(k.clone()).or_insert_with(|| json!({})), v);
                } else {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
        (a, b) => *a = b.clone(),
    }
}

impl World {
    fn new(replicas: i32) -> Self {
        let mut w = Self {
            objects: BTreeMap::new(),
            pods: BTreeMap::new(),
            connection: Connection::Disconnected,
            clock: 0,
            uids: 0,
        };
        w.put(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"},
            "spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20000},
                "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c1-cp"}},
            "status": {"initialization": {"infrastructureProvisioned": true}}}));
        w.put(json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
            "metadata": {"name": "c1-cp", "namespace": "ns", "uid": "uid-kcp", "generation": 1,
                "labels": {labels::CLUSTER_NAME: "c1"},
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1",
                    "uid": "uid-c1", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": replicas, "version": "v1.34.0",
                "machineTemplate": {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                    "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "cp-tmpl"},
                        "deletion": {"nodeDrainTimeoutSeconds": 10}}},
                "kubeadmConfigSpec": {"clusterConfiguration": {"apiServer": {"certSANs": ["localhost"]}},
                    "initConfiguration": {"nodeRegistration": {"name": "n"}},
                    "joinConfiguration": {"nodeRegistration": {"name": "n"}}}}}));
        w.put(json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
            "metadata": {"name": "cp-tmpl", "namespace": "ns", "uid": "uid-tmpl"},
            "spec": {"template": {"metadata": {"labels": {"tmpl": "yes"}},
                "spec": {"backend": {"inMemory": {"vm": {"provisioning": {"startupDuration": "1s"}}}}}}}}));
        w
    }

    fn put(&mut self, o: Value) {
        self.objects.insert(key(&o), o);
    }

    fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind.to_owned(), name.to_owned()))
    }

    fn all(&self, kind: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn kcp(&self) -> Value {
        self.get("KubeadmControlPlane", "c1-cp")
            .cloned()
            .expect("kcp")
    }

    fn snapshot(&self) -> Snapshot {
        let kcp = self.kcp();
        let owned = |kind: &str| -> Vec<Value> {
            self.all(kind)
                .into_iter()
                .filter(|o| meta::controller_of(o).is_some_and(|r| r.uid == "uid-kcp"))
                .collect()
        };
        let configs: Vec<Value> = self
            .all("KubeadmConfig")
            .into_iter()
            .filter(|o| meta::label(o, labels::CONTROL_PLANE_NAME) == Some("c1-cp"))
            .collect();
        let mut s = Snapshot::new(&kcp, T0)
            .with_related(CLUSTER, true, &self.all("Cluster"))
            .with_related(MACHINES, true, &owned("Machine"))
            .with_related(CONFIGS, true, &configs)
            .with_related(
                TEMPLATE,
                true,
                &self
                    .get("DevMachineTemplate", "cp-tmpl")
                    .cloned()
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
        for suffix in ["ca", "etcd", "proxy", "sa", "kubeconfig"] {
            let found: Vec<Value> = self
                .get("Secret", &format!("c1-{suffix}"))
                .cloned()
                .into_iter()
                .collect();
            s = s.with_related(&certs::relation(suffix), true, &found);
        }
        let connected = self.connection == Connection::Connected;
        let pods: Vec<Value> = if connected {
            self.pods.values().cloned().collect()
        } else {
            Vec::new()
        };
        s.with_related(PODS, connected, &pods)
            .with_workload(self.connection)
    }

    /// Apply an outcome as the host would (creates get a uid and a
    /// creation time; deletions of finalizer-free objects remove them).
    fn apply(&mut self, out: &Outcome) {
        for a in out.applied() {
            let o: Value = serde_json::from_str(a).expect("json");
            let k = key(&o);
            match self.objects.get_mut(&k) {
                Some(existing) => merge(existing, &o),
                None => {
                    let mut o = o;
                    self.uids += 1;
                    self.clock += 1;
                    o["metadata"]["uid"] = json!(format!("uid-{}-{}", k.1, self.uids));
                    o["metadata"]["creationTimestamp"] =
                        json!(format!("2026-01-01T00:{:02}:00Z", self.clock));
                    self.objects.insert(k, o);
                }
            }
        }
        for s in out.statuses() {
            let o: Value = serde_json::from_str(s).expect("json");
            if let Some(existing) = self.objects.get_mut(&key(&o)) {
                existing["status"] = o["status"].clone();
            }
        }
        for d in out.deletions() {
            let k = (d.kind.clone(), d.name.clone());
            if let Some(o) = self.objects.get_mut(&k) {
                o["metadata"]["deletionTimestamp"] = json!(T0);
                let has_finalizers = o
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
                if !has_finalizers {
                    self.objects.remove(&k);
                }
            }
        }
    }

    /// The Machine controller and the infrastructure: `name` gets a Node
    /// and Ready control-plane Pods, and is Ready and Available.
    fn bring_up(&mut self, name: &str) {
        self.connection = Connection::Connected;
        let node = format!("node-{name}");
        if let Some(m) = self
            .objects
            .get_mut(&("Machine".to_owned(), name.to_owned()))
        {
            m["status"] = json!({"nodeRef": {"name": node},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": T0},
                    {"type": "Available", "status": "True", "reason": "Available", "lastTransitionTime": T0}]});
        }
        for c in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            let pod = format!("{c}-{node}");
            self.pods.insert(pod.clone(), json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "kube-system", "labels": {"component": c, "tier": "control-plane"}},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
        }
    }

    fn machines(&self) -> Vec<Value> {
        let mut ms = self.all("Machine");
        ms.sort_by_key(|m| {
            m["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        });
        ms
    }
}

fn run(host: &FakeHost, w: &mut World) -> Outcome {
    let out = host
        .reconcile::<KubeadmControlPlaneReconciler>(&w.snapshot())
        .expect("reconcile succeeds");
    w.apply(&out);
    out
}

fn cond(kcp: &Value, t: &str) -> (String, String, String) {
    let c = kcp["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} in {kcp}"));
    let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    (s("status"), s("reason"), s("message"))
}

fn decode(secret: &Value, k: &str) -> String {
    let b = B64
        .decode(secret["data"][k].as_str().expect("data key"))
        .expect("base64");
    String::from_utf8(b).expect("utf-8")
}

fn kcp_controller() -> Value {
    json!({"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "name": "c1-cp", "uid": "uid-kcp", "controller": true, "blockOwnerDeletion": true})
}

#[test]
fn describe_declares_the_contract() {
    let info = KubeadmControlPlaneReconciler::describe();
    assert_eq!(info.name, "kubeadm-control-plane");
    assert_eq!(info.primary.kind, "KubeadmControlPlane");
    assert_eq!(
        info.finalizer.as_deref(),
        Some("kubeadm.controlplane.cluster.x-k8s.io")
    );
    assert_eq!(info.capabilities, Capabilities::CRYPTO);
    let named: Vec<_> = info
        .relations
        .iter()
        .filter_map(|r| match &r.selector {
            RelationSelector::Named(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        named,
        [
            "{cluster}-ca",
            "{cluster}-etcd",
            "{cluster}-proxy",
            "{cluster}-sa",
            "{cluster}-kubeconfig"
        ]
    );
    let pods = info
        .relations
        .iter()
        .find(|r| r.name == PODS)
        .expect("pods relation");
    assert_eq!(pods.target, capstan_sdk::Target::Workload);
    assert_eq!(pods.namespace.as_deref(), Some("kube-system"));
    assert!(
        info.watches
            .iter()
            .any(|w| w.target == capstan_sdk::Target::Workload
                && w.mapping == KeyMapping::SameCluster
                && w.kind.kind == "Pod")
    );
    assert!(info.watches.iter().any(|w| w.kind.kind == "Cluster"
        && w.mapping == KeyMapping::Field("spec.controlPlaneRef.name".into())));
}

#[test]
fn waits_for_the_cluster_owner_then_adds_the_finalizer_alone() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    let mut kcp = w.kcp();
    kcp["metadata"]["ownerReferences"] = json!([]);
    w.put(kcp);
    let out = run(&host, &mut w);
    assert!(out.is_empty(), "no owner: nothing");
    let mut w = World::new(1);
    let mut kcp = w.kcp();
    kcp["metadata"]["labels"] = json!({});
    w.put(kcp);
    let out = run(&host, &mut w);
    assert!(
        out.is_empty(),
        "no cluster-name label: the Secrets cannot be looked up yet"
    );
    let mut w = World::new(1);
    let out = run(&host, &mut w);
    assert_eq!(out.applied().len(), 1);
    assert!(out.statuses().is_empty());
    assert_eq!(
        w.kcp()["metadata"]["finalizers"],
        json!(["kubeadm.controlplane.cluster.x-k8s.io"])
    );
    assert_eq!(
        host.keys_generated(),
        0,
        "nothing generated before the finalizer"
    );
}

#[test]
fn certificates_then_kubeconfig_then_nothing_generated_again() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    run(&host, &mut w); // finalizer
    run(&host, &mut w); // certificates + first Machine
    assert_eq!(host.keys_generated(), 4, "ca, etcd, proxy, sa");
    for suffix in ["ca", "etcd", "proxy", "sa"] {
        let s = w
            .get("Secret", &format!("c1-{suffix}"))
            .expect("secret")
            .clone();
        assert_eq!(s["type"], "cluster.x-k8s.io/secret");
        assert_eq!(s["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
        assert_eq!(s["metadata"]["ownerReferences"], json!([kcp_controller()]));
        assert!(decode(&s, "tls.key").contains("PRIVATE KEY"), "{suffix}");
    }
    let ca = w.get("Secret", "c1-ca").expect("ca").clone();
    assert!(
        decode(&ca, "tls.crt").contains("cn=kubernetes o= ")
            && decode(&ca, "tls.crt").contains("Authority")
    );
    let sa = w.get("Secret", "c1-sa").expect("sa").clone();
    assert!(
        decode(&sa, "tls.crt").contains("PUBLIC KEY"),
        "sa holds the public key"
    );
    assert!(
        w.get("Secret", "c1-kubeconfig").is_none(),
        "waits for the CA Secret to be read back"
    );
    let kcp = w.kcp();
    assert_eq!(cond(&kcp, "CertificatesAvailable").0, "True");

    run(&host, &mut w); // kubeconfig
    assert_eq!(host.keys_generated(), 5, "one admin client key");
    let kc = w
        .get("Secret", "c1-kubeconfig")
        .expect("kubeconfig")
        .clone();
    assert_eq!(kc["type"], "cluster.x-k8s.io/secret");
    assert_eq!(kc["metadata"]["ownerReferences"], json!([kcp_controller()]));
    let text = decode(&kc, "value");
    assert!(text.contains("https://127.0.0.1:20000"), "{text}");
    assert!(text.contains("- name: c1-admin\n"), "{text}");
    let memo = host.memo();
    let admin: Vec<String> = memo
        .iter()
        .filter(|(k, _)| k.starts_with("uid-c1/admin/"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(
        admin.len(),
        1,
        "admin certificate cached per cluster UID: {memo:?}"
    );
    assert!(
        admin[0].contains("cn=kubernetes-admin o=system:masters ") && admin[0].contains("Client")
    );

    let certs_before = host.certificates_issued();
    for _ in 0..3 {
        run(&host, &mut w);
    }
    assert_eq!(
        host.keys_generated(),
        5,
        "a reconcile after the first generates nothing"
    );
    assert_eq!(host.certificates_issued(), certs_before);

    // The kubeconfig Secret deleted: rewritten from the memo, no new key.
    w.objects
        .remove(&("Secret".to_owned(), "c1-kubeconfig".to_owned()));
    run(&host, &mut w);
    assert!(w.get("Secret", "c1-kubeconfig").is_some());
    assert_eq!(host.keys_generated(), 5, "admin key cached per cluster UID");
}

#[test]
fn a_stale_cache_never_yields_a_second_ca() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    run(&host, &mut w); // finalizer
    let snap = w.snapshot();
    let first = host
        .reconcile::<KubeadmControlPlaneReconciler>(&snap)
        .expect("ok");
    // The cache has not seen the Secrets yet: the same snapshot again.
    let second = host
        .reconcile::<KubeadmControlPlaneReconciler>(&snap)
        .expect("ok");
    assert_eq!(host.keys_generated(), 4);
    let ca = |o: &Outcome| -> Value {
        o.applied()
            .iter()
            .map(|a| serde_json::from_str::<Value>(a).expect("json"))
            .find(|v| v["metadata"]["name"] == "c1-ca")
            .expect("ca applied")
    };
    assert_eq!(ca(&first), ca(&second), "same bytes, no regeneration");
    let machine = |o: &Outcome| -> Vec<String> {
        o.applied()
            .iter()
            .map(|a| serde_json::from_str::<Value>(a).expect("json"))
            .filter(|v| v["kind"] == "Machine")
            .map(|v| v["metadata"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        machine(&first),
        machine(&second),
        "the same Machine name, not a second Machine"
    );
}

#[test]
fn existing_certificates_are_read_and_adopted_not_regenerated() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    run(&host, &mut w); // finalizer
    for suffix in ["ca", "etcd", "proxy", "sa"] {
        w.put(json!({"apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("c1-{suffix}"), "namespace": "ns",
                "ownerReferences": [{"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
                    "name": "x", "uid": "uid-x", "controller": true}]},
            "data": {"tls.crt": B64.encode("-----BEGIN CERTIFICATE-----\nuser\n-----END CERTIFICATE-----\n"),
                "tls.key": B64.encode("-----BEGIN PRIVATE KEY-----\nuser\n-----END PRIVATE KEY-----\n")}}));
    }
    run(&host, &mut w);
    run(&host, &mut w);
    assert_eq!(host.keys_generated(), 1, "only the admin key");
    let ca = w.get("Secret", "c1-ca").expect("ca").clone();
    assert_eq!(
        ca["metadata"]["ownerReferences"],
        json!([kcp_controller()]),
        "KCP took over as controller"
    );
    assert!(decode(&ca, "tls.crt").contains("user"), "user CA kept");
}

#[test]
fn first_machine_is_an_init_with_capi_labels_owners_and_clones() {
    let host = FakeHost::new();
    let mut w = World::new(3);
    run(&host, &mut w);
    let out = run(&host, &mut w);
    let ms = w.machines();
    assert_eq!(ms.len(), 1, "one Machine at a time");
    let m = &ms[0];
    let name = m["metadata"]["name"].as_str().expect("name").to_owned();
    assert!(
        name.starts_with("c1-cp-") && name.len() == "c1-cp-".len() + 5,
        "{name}"
    );
    let l = &m["metadata"]["labels"];
    assert_eq!(l[labels::CLUSTER_NAME], "c1");
    assert_eq!(l[labels::CONTROL_PLANE], "");
    assert_eq!(l[labels::CONTROL_PLANE_NAME], "c1-cp");
    assert_eq!(l["team"], "a");
    assert_eq!(m["metadata"]["annotations"]["note"], "x");
    assert_eq!(
        m["metadata"]["annotations"][kcp_annotations::KUBEADM_CLUSTER_CONFIGURATION],
        json!({"apiServer": {"certSANs": ["localhost"]}}).to_string()
    );
    assert_eq!(m["metadata"]["ownerReferences"], json!([kcp_controller()]));
    assert_eq!(m["spec"]["clusterName"], "c1");
    assert_eq!(m["spec"]["version"], "v1.34.0");
    assert_eq!(
        m["spec"]["deletion"],
        json!({"nodeDrainTimeoutSeconds": 10})
    );
    assert_eq!(
        m["spec"]["bootstrap"]["configRef"],
        json!({"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": name})
    );
    assert_eq!(
        m["spec"]["infrastructureRef"],
        json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": name})
    );
    let clone_owner = json!([{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlane", "name": "c1-cp", "uid": "uid-kcp"}]);
    let kc = w.get("KubeadmConfig", &name).expect("config").clone();
    assert_eq!(
        kc["metadata"]["ownerReferences"], clone_owner,
        "not controller: the Machine adopts it"
    );
    assert_eq!(kc["metadata"]["labels"], *l);
    assert!(kc["spec"]["initConfiguration"].is_object());
    assert!(kc["spec"]["clusterConfiguration"].is_object());
    assert!(kc["spec"].get("joinConfiguration").is_none());
    let dm = w.get("DevMachine", &name).expect("infra machine").clone();
    assert_eq!(dm["apiVersion"], "infrastructure.cluster.x-k8s.io/v1beta2");
    assert_eq!(dm["metadata"]["ownerReferences"], clone_owner);
    assert_eq!(dm["metadata"]["labels"]["tmpl"], "yes");
    assert_eq!(dm["metadata"]["labels"][labels::CLUSTER_NAME], "c1");
    assert_eq!(
        dm["metadata"]["annotations"][annotations::CLONED_FROM_NAME],
        "cp-tmpl"
    );
    assert_eq!(
        dm["metadata"]["annotations"][annotations::CLONED_FROM_GROUP_KIND],
        "DevMachineTemplate.infrastructure.cluster.x-k8s.io"
    );
    assert_eq!(
        dm["spec"]["backend"]["inMemory"]["vm"]["provisioning"]["startupDuration"],
        "1s"
    );
    // The template gets the Cluster as (non-controller) owner.
    let t = w.get("DevMachineTemplate", "cp-tmpl").expect("template");
    assert_eq!(
        t["metadata"]["ownerReferences"],
        json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1", "uid": "uid-c1"}])
    );
    assert!(out.events().iter().any(|e| e.reason == "SuccessfulCreate"));
    let kcp = w.kcp();
    assert_eq!(cond(&kcp, "ScalingUp").0, "True");
    assert_eq!(
        cond(&kcp, "Initialized"),
        (
            "False".into(),
            "NotInitialized".into(),
            "Control plane not yet initialized".into()
        )
    );
    assert_eq!(
        cond(&kcp, "ControlPlaneComponentsHealthy").1,
        "ConnectionDown"
    );
    assert_eq!(cond(&kcp, "Available").0, "False");
    assert_eq!(
        kcp["status"]["replicas"], 0,
        "counted from the Machines seen"
    );
    run(&host, &mut w);
    let kcp = w.kcp();
    assert_eq!(w.machines().len(), 1, "not healthy yet: no second Machine");
    assert_eq!(kcp["status"]["replicas"], 1);
    assert_eq!(kcp["status"]["readyReplicas"], 0);
    assert_eq!(
        kcp["status"]["selector"],
        "cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/control-plane"
    );
    assert_eq!(
        kcp["status"]["initialization"]["controlPlaneInitialized"],
        false
    );
}

#[test]
fn scales_up_one_machine_at_a_time_and_becomes_available() {
    let host = FakeHost::new();
    let mut w = World::new(3);
    for _ in 0..4 {
        run(&host, &mut w);
    }
    assert_eq!(
        w.machines().len(),
        1,
        "waits for the first Machine's control plane"
    );
    let kcp = w.kcp();
    let (s, reason, msg) = cond(&kcp, "ScalingUp");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "ScalingUp"));
    assert!(
        msg.starts_with("Scaling up from 1 to 3 replicas is blocked because:"),
        "{msg}"
    );

    let first = w.machines()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    w.bring_up(&first);
    run(&host, &mut w);
    let kcp = w.kcp();
    assert_eq!(
        kcp["status"]["initialization"]["controlPlaneInitialized"],
        true
    );
    assert_eq!(cond(&kcp, "Initialized").0, "True");
    assert_eq!(cond(&kcp, "Available").0, "True", "{kcp}");
    assert_eq!(cond(&kcp, "EtcdClusterHealthy").1, "Healthy");
    assert_eq!(cond(&kcp, "ControlPlaneComponentsHealthy").1, "Healthy");
    let ms = w.machines();
    assert_eq!(ms.len(), 2, "second Machine after the first is healthy");
    let second = ms[1]["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let kc = w.get("KubeadmConfig", &second).expect("config");
    assert!(kc["spec"].get("initConfiguration").is_none());
    assert!(kc["spec"].get("clusterConfiguration").is_none());
    assert_eq!(kc["spec"]["joinConfiguration"]["controlPlane"], json!({}));
    assert_eq!(
        kc["spec"]["joinConfiguration"]["nodeRegistration"]["name"],
        "n"
    );

    run(&host, &mut w);
    assert_eq!(w.machines().len(), 2, "the second is not healthy yet");
    w.bring_up(&second);
    run(&host, &mut w);
    assert_eq!(w.machines().len(), 3);
    let third = w.machines()[2]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    w.bring_up(&third);
    run(&host, &mut w);
    run(&host, &mut w);
    assert_eq!(w.machines().len(), 3, "never more than desired");
    let kcp = w.kcp();
    assert_eq!(kcp["status"]["replicas"], 3);
    assert_eq!(kcp["status"]["readyReplicas"], 3);
    assert_eq!(kcp["status"]["availableReplicas"], 3);
    assert_eq!(kcp["status"]["upToDateReplicas"], 3);
    assert_eq!(kcp["status"]["version"], "v1.34.0");
    assert_eq!(cond(&kcp, "ScalingUp").1, "NotScalingUp");
    assert_eq!(cond(&kcp, "MachinesReady").1, "Ready");
    assert_eq!(cond(&kcp, "MachinesUpToDate").1, "UpToDate");
    let types: Vec<&str> = kcp["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"Available"));
    assert_eq!(&types[types.len() - 2..], ["Deleting", "Paused"]);
    // Steady state: nothing written.
    let out = run(&host, &mut w);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn an_unhealthy_etcd_blocks_scale_up_and_is_reported() {
    let host = FakeHost::new();
    let mut w = World::new(3);
    run(&host, &mut w);
    run(&host, &mut w);
    let first = w.machines()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    w.bring_up(&first);
    let etcd = format!("etcd-node-{first}");
    w.pods.insert(
        etcd.clone(),
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": etcd, "namespace": "kube-system"}, "status": {"phase": "Pending"}}),
    );
    run(&host, &mut w);
    assert_eq!(w.machines().len(), 1);
    let kcp = w.kcp();
    let (s, reason, msg) = cond(&kcp, "EtcdClusterHealthy");
    assert_eq!((s.as_str(), reason.as_str()), ("False", "NotHealthy"));
    assert!(msg.contains(&format!("* Machine {first}:")), "{msg}");
    let (_, _, msg) = cond(&kcp, "ControlPlaneComponentsHealthy");
    assert!(msg.contains("EtcdPodHealthy: Pod etcd-node-"), "{msg}");
    assert_eq!(cond(&kcp, "Available").0, "False");
}

#[test]
fn scales_down_the_oldest_one_at_a_time() {
    let host = FakeHost::new();
    let mut w = World::new(3);
    run(&host, &mut w);
    for _ in 0..3 {
        run(&host, &mut w);
        let ms = w.machines();
        let last = ms
            .last()
            .and_then(|m| m["metadata"]["name"].as_str())
            .unwrap_or("")
            .to_owned();
        w.bring_up(&last);
    }
    run(&host, &mut w);
    assert_eq!(w.machines().len(), 3);
    let oldest = w.machines()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let mut kcp = w.kcp();
    kcp["spec"]["replicas"] = json!(1);
    w.put(kcp);
    // Machines keep a finalizer: deletion is observed as deletionTimestamp.
    for m in w.objects.values_mut().filter(|o| o["kind"] == "Machine") {
        m["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
    }
    let out = run(&host, &mut w);
    assert_eq!(out.deletions().len(), 1);
    assert_eq!(out.deletions()[0].name, oldest);
    let (s, reason, msg) = cond(&w.kcp(), "ScalingDown");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "ScalingDown"));
    assert!(
        msg.starts_with("Scaling down from 3 to 1 replicas"),
        "{msg}"
    );
    let out = run(&host, &mut w);
    assert!(out.deletions().is_empty(), "waits for the deleting Machine");
    assert!(cond(&w.kcp(), "ScalingDown").2.contains("to be deleted"));
    w.objects.remove(&("Machine".to_owned(), oldest));
    let out = run(&host, &mut w);
    assert_eq!(
        out.deletions().len(),
        1,
        "next one after the first is gone: {:?}",
        cond(&w.kcp(), "ScalingDown")
    );
}

#[test]
fn deletion_deletes_machines_waits_then_removes_the_finalizer() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    run(&host, &mut w);
    run(&host, &mut w);
    let name = w.machines()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if let Some(m) = w.objects.get_mut(&("Machine".to_owned(), name.clone())) {
        m["metadata"]["finalizers"] = json!(["machine.cluster.x-k8s.io"]);
    }
    let mut kcp = w.kcp();
    kcp["metadata"]["deletionTimestamp"] = json!(T0);
    w.put(kcp);
    let out = run(&host, &mut w);
    assert_eq!(out.deletions().len(), 1);
    assert_eq!(out.deletions()[0].name, name);
    let (s, reason, msg) = cond(&w.kcp(), "Deleting");
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("True", "WaitingForMachineDeletion")
    );
    assert!(msg.contains(&name));
    let out = run(&host, &mut w);
    assert!(
        out.deletions().is_empty(),
        "already deleting: not deleted again"
    );
    assert!(
        w.kcp()["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    w.objects.remove(&("Machine".to_owned(), name));
    let out = run(&host, &mut w);
    assert!(out.statuses().is_empty());
    assert_eq!(w.kcp()["metadata"]["finalizers"], json!([]));
}

#[test]
fn paused_writes_only_the_paused_condition() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    run(&host, &mut w);
    let mut c = w.get("Cluster", "c1").cloned().expect("cluster");
    c["spec"]["paused"] = json!(true);
    w.put(c);
    let out = run(&host, &mut w);
    assert!(out.applied().is_empty());
    assert_eq!(host.keys_generated(), 0);
    let (s, reason, _) = cond(&w.kcp(), "Paused");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "Paused"));
}

#[test]
fn waits_for_infrastructure_before_generating_anything() {
    let host = FakeHost::new();
    let mut w = World::new(1);
    let mut c = w.get("Cluster", "c1").cloned().expect("cluster");
    c["status"]["initialization"]["infrastructureProvisioned"] = json!(false);
    w.put(c);
    run(&host, &mut w);
    run(&host, &mut w);
    assert_eq!(host.keys_generated(), 0);
    assert!(w.machines().is_empty());
    assert!(
        cond(&w.kcp(), "ScalingUp")
            .2
            .contains("infrastructureProvisioned")
    );
}

#[test]
fn machine_names_are_stable_and_distinct() {
    let kcp: KubeadmControlPlane = serde_json::from_value(World::new(1).kcp()).expect("kcp");
    assert_eq!(machine_name(&kcp, 0), machine_name(&kcp, 0));
    assert_ne!(machine_name(&kcp, 0), machine_name(&kcp, 1));
    assert!(
        machine_name(&kcp, 7)
            .chars()
            .skip(6)
            .all(|c| ALPHANUMS.contains(&(c as u8)))
    );
}

//! The in-memory DevMachine reconciler: simulated VM, Node, etcd and API server startup with CAPI's durations, and reverse-order deletion.
//!
//! Behaviour follows CAPD's in-memory backend (`inmemorymachine_backend.go`,
//! reference §3.3): each phase waits its `spec.backend.inMemory.<component>.
//! provisioning.startupDuration` (+ jitter) from the previous milestone
//! (VM: the VM's creation; Node: `VMProvisioned`; etcd and API server:
//! `NodeProvisioned`), measured against `snapshot.now` and the conditions'
//! `lastTransitionTime`, and waits by `requeue_after` only. Jitter is derived
//! from the machine and component names, so every reconcile computes the same
//! deadline. Workload objects (the Node, static Pods, kubeadm objects) are put
//! into the workload cluster's store through the `cloud` capability, as the
//! machine itself would; the first API server starts the cluster's endpoint
//! with the `<cluster>-ca` Secret.

use base64::Engine as _;
use capstan_sdk::capi::cluster::{Cluster, Machine, cluster_conditions};
use capstan_sdk::capi::conditions::{self as capi_conditions, Input, Reasons};
use capstan_sdk::capi::infrastructure::{
    Component, DevMachine, InMemoryMachineBackend, InfraInitialization, InfraStatus,
    dev_conditions as dc,
};
use capstan_sdk::capi::{Object, annotations, finalizers, labels, time, to_value};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::{
    Capabilities, Context, Error, EventType, Gvk, KeyMapping, ObjectRef, Outcome, PluginInfo,
    Reconciler, RelationSelector, Snapshot, Verbs,
};
use serde_json::{Value, json};
use std::time::Duration;

/// Relation: the Machine that controls this DevMachine.
pub const MACHINE: &str = "machine";
/// Relation: the DevMachine's Cluster (by its cluster-name label).
pub const CLUSTER: &str = "cluster";
/// Relation: the cluster CA Secret `<cluster>-ca` (tls.crt, tls.key).
pub const CA_SECRET: &str = "ca-secret";
/// Annotation on etcd Pods: the etcd cluster ID (as CAPI's in-memory cloud).
pub const ETCD_CLUSTER_ID: &str = "etcd.inmemory.infrastructure.cluster.x-k8s.io/cluster-id";
/// Annotation on etcd Pods: the member ID.
pub const ETCD_MEMBER_ID: &str = "etcd.inmemory.infrastructure.cluster.x-k8s.io/member-id";
/// Annotation on etcd Pods: since when the member leads.
pub const ETCD_LEADER_FROM: &str = "etcd.inmemory.infrastructure.cluster.x-k8s.io/leader-from";
/// Paused condition type.
pub const PAUSED: &str = "Paused";

/// The DevMachine reconciler.
#[derive(Debug)]
pub struct DevMachineReconciler;

impl Reconciler for DevMachineReconciler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "infra-devmachine",
            env!("CARGO_PKG_VERSION"),
            DevMachine::gvk(),
        )
        // A Machine names its DevMachine (bootstrap data, deletion).
        .watch(
            Machine::gvk(),
            KeyMapping::Field("spec.infrastructureRef.name".to_owned()),
        )
        // Cluster infrastructure and control-plane initialization gate provisioning.
        .watch(
            Cluster::gvk(),
            KeyMapping::LabelledWithName(labels::CLUSTER_NAME.to_owned()),
        )
        .relation(MACHINE, Machine::gvk(), RelationSelector::ControllerOwner)
        .relation(
            CLUSTER,
            Cluster::gvk(),
            RelationSelector::ByLabelValue(labels::CLUSTER_NAME.to_owned()),
        )
        .relation(
            CA_SECRET,
            Gvk::new("", "v1", "Secret"),
            RelationSelector::Named("{cluster}-ca".to_owned()),
        )
        .permit(DevMachine::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
        .finalizer(finalizers::DEV_MACHINE)
        .capabilities(Capabilities::CLOUD)
        // CAPD HEAD's --devmachine-concurrency default.
        .concurrency(50)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(DevMachineReconciler);

/// The startup duration of `component` with its jitter: `startupDuration`
/// plus `fraction(name, component) * startupJitter * startupDuration`, the
/// fraction a stable hash of the names in [0, 1) (CAPD draws it at random on
/// every reconcile; a stable draw makes re-reconciles agree).
pub fn startup_duration(
    backend: &InMemoryMachineBackend,
    component: Component,
    name: &str,
) -> Result<Duration, Error> {
    let Some(p) = backend.provisioning(component) else {
        return Ok(Duration::ZERO);
    };
    let base = match p.startup_duration.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(s) => time::parse_go_duration(s).ok_or_else(|| {
            Error::terminal(format!(
                "devmachine {name}: {}.provisioning.startupDuration {s:?} is not a duration",
                component.as_str()
            ))
        })?,
    };
    let jitter = match p.startup_jitter.as_deref() {
        None | Some("") => 0.0,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|j| j.is_finite() && *j >= 0.0)
            .ok_or_else(|| {
                Error::terminal(format!(
                    "devmachine {name}: {}.provisioning.startupJitter {s:?} is not a non-negative number",
                    component.as_str()
                ))
            })?,
    };
    let extra = base.as_secs_f64() * jitter * fraction(&format!("{name}/{}", component.as_str()));
    Ok(base + Duration::from_secs_f64(extra.min(1e9)))
}

/// FNV-1a of `s`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable pseudo-random fraction in [0, 1) of `s`.
fn fraction(s: &str) -> f64 {
    // 53 bits fit an f64 exactly.
    (fnv(s) >> 11) as f64 / (1u64 << 53) as f64
}

fn obj_ref(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The static Pods of a control-plane machine, in creation order.
const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
];

fn static_pod(component: &str, node: &str, now: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{component}-{node}"), "namespace": "kube-system",
            "labels": {"component": component, "tier": "control-plane"},
            "annotations": annotations, "creationTimestamp": now},
        "spec": {"nodeName": node, "containers": [{"name": component, "image": format!("registry.k8s.io/{component}")}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
}

fn node_object(dm: &DevMachine, machine: &Machine, provider_id: &str, now: &str) -> Value {
    let name = &dm.metadata.name;
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
    });
    if machine.is_control_plane() {
        // What kubeadm init/join --control-plane label a node with.
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
    }
    let version = machine.spec.version.clone().unwrap_or_default();
    let cond = |t: &str, s: &str, r: &str, m: &str| {
        json!({"type": t, "status": s, "reason": r, "message": m,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({"apiVersion": "v1", "kind": "Node",
    "metadata": {"name": name, "labels": labels, "creationTimestamp": now},
    "spec": {"providerID": provider_id},
    "status": {
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version,
            "operatingSystem": "linux", "architecture": "amd64",
            "containerRuntimeVersion": "containerd://in-memory", "osImage": "Capstan in-memory",
            "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }})
}

/// What one reconcile reads, parsed once.
struct View {
    dm: DevMachine,
    machine: Option<Machine>,
    cluster: Option<Cluster>,
    ca: Option<Value>,
}

impl View {
    fn read(snapshot: &Snapshot) -> Result<Self, Error> {
        for r in [MACHINE, CLUSTER] {
            if !snapshot.synced(r) {
                return Err(Error::transient(format!(
                    "cache of relation {r} is not synced yet"
                )));
            }
        }
        Ok(Self {
            dm: snapshot.primary()?,
            machine: snapshot.related_one(MACHINE)?,
            cluster: snapshot.related_one(CLUSTER)?,
            ca: snapshot.related_one(CA_SECRET)?,
        })
    }

    /// `namespace/cluster`: the cloud's key of the workload cluster.
    fn cluster_key(&self) -> Option<String> {
        let name = self
            .dm
            .metadata
            .labels
            .get(labels::CLUSTER_NAME)
            .cloned()
            .or_else(|| self.machine.as_ref().map(|m| m.spec.cluster_name.clone()))
            .filter(|n| !n.is_empty())?;
        Some(format!("{}/{name}", self.dm.metadata.namespace))
    }
}

fn set_finalizer(dm: &DevMachine, present: bool, out: &mut Outcome) -> Result<(), Error> {
    let mut fs: Vec<String> = dm
        .metadata
        .finalizers
        .iter()
        .filter(|f| *f != finalizers::DEV_MACHINE)
        .cloned()
        .collect();
    if present {
        fs.push(finalizers::DEV_MACHINE.to_owned());
    }
    let mut patch = dm.skeleton();
    patch["metadata"]["finalizers"] = json!(fs);
    out.apply(&patch)?;
    Ok(())
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let view = View::read(snapshot)?;
    let dm = &view.dm;
    let mut out = Outcome::new();
    let now = snapshot.now();
    if dm.metadata.is_deleting() {
        if dm.metadata.has_finalizer(finalizers::DEV_MACHINE) {
            reconcile_delete(ctx, &view, &mut out)?;
        }
        return Ok(out);
    }
    let (Some(machine), Some(key)) = (view.machine.as_ref(), view.cluster_key()) else {
        ctx.info(format!(
            "devmachine {}/{}: waiting for the Machine controller to set the owner reference",
            dm.metadata.namespace, dm.metadata.name
        ));
        return Ok(out);
    };
    let Some(cluster) = view.cluster.as_ref() else {
        ctx.info(format!(
            "devmachine {}: waiting for Cluster {key}",
            dm.metadata.name
        ));
        return Ok(out);
    };
    let generation = dm.metadata.generation;
    let mut status = dm.status();
    if cluster.spec.paused == Some(true)
        || dm.metadata.annotations.contains_key(annotations::PAUSED)
    {
        conditions::set(
            &mut status.conditions,
            Condition::new(PAUSED, TRUE, "Paused").observed_generation(generation),
            now,
        );
        write_status(dm, status, &mut out)?;
        return Ok(out);
    }
    if !dm.metadata.has_finalizer(finalizers::DEV_MACHINE) {
        set_finalizer(dm, true, &mut out)?;
        return Ok(out);
    }
    let Some(backend) = dm.spec.backend.as_ref().and_then(|b| b.in_memory.as_ref()) else {
        return Err(Error::terminal(format!(
            "devmachine {}/{} has no spec.backend.inMemory; only the in-memory backend is supported",
            dm.metadata.namespace, dm.metadata.name
        )));
    };
    let control_plane = machine.is_control_plane();
    let set = |status: &mut InfraStatus, t: &str, s: &str, r: &str| {
        conditions::set(
            &mut status.conditions,
            Condition::new(t, s, r).observed_generation(generation),
            now,
        );
    };
    set(&mut status, PAUSED, FALSE, "NotPaused");

    let infra_ready = cluster
        .status()
        .initialization
        .and_then(|i| i.infrastructure_provisioned)
        == Some(true);
    let cp_initialized = conditions::is_true(
        &cluster.status().conditions,
        cluster_conditions::CONTROL_PLANE_INITIALIZED,
    );
    let has_data = machine
        .spec
        .bootstrap
        .data_secret_name
        .as_deref()
        .is_some_and(|n| !n.is_empty());
    let gate = if !infra_ready {
        Some(dc::WAITING_FOR_CLUSTER_INFRASTRUCTURE_REASON)
    } else if !has_data && !control_plane && !cp_initialized {
        Some(dc::WAITING_FOR_CONTROL_PLANE_INITIALIZED_REASON)
    } else if !has_data {
        Some(dc::WAITING_FOR_BOOTSTRAP_DATA_REASON)
    } else {
        None
    };
    let mut waits: Vec<Duration> = Vec::new();
    if let Some(reason) = gate {
        set(&mut status, dc::VM_PROVISIONED, FALSE, reason);
        set(
            &mut status,
            dc::NODE_PROVISIONED,
            FALSE,
            dc::WAITING_FOR_VM_PROVISIONED_REASON,
        );
        if control_plane {
            set(
                &mut status,
                dc::ETCD_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_VM_PROVISIONED_REASON,
            );
            set(
                &mut status,
                dc::API_SERVER_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_VM_PROVISIONED_REASON,
            );
        }
    } else {
        provision(
            ctx,
            &view,
            machine,
            backend,
            &key,
            now,
            &mut status,
            &mut waits,
            &mut out,
        )?;
    }
    // Ready: summary of the phases that apply to this machine.
    let mut inputs = vec![
        Input::positive(dc::VM_PROVISIONED),
        Input::positive(dc::NODE_PROVISIONED),
    ];
    if control_plane {
        inputs.push(Input::positive(dc::ETCD_PROVISIONED));
        inputs.push(Input::positive(dc::API_SERVER_PROVISIONED));
    }
    let ready = capi_conditions::summary(
        &status.conditions,
        dc::READY,
        &inputs,
        Reasons {
            good: dc::READY_REASON,
            bad: dc::NOT_READY_REASON,
            unknown: dc::READY_UNKNOWN_REASON,
        },
    );
    conditions::set(
        &mut status.conditions,
        ready.observed_generation(generation),
        now,
    );
    capi_conditions::sort(&mut status.conditions);
    write_status(dm, status, &mut out)?;
    if let Some(min) = waits.into_iter().filter(|d| !d.is_zero()).min() {
        out.requeue_after(min);
    }
    Ok(out)
}

/// The time left until `start + d`, or `None` when it has passed.
fn remaining(start: &str, d: Duration, now: &str) -> Result<Option<Duration>, Error> {
    let deadline = time::add(start, d)
        .ok_or_else(|| Error::terminal(format!("timestamp {start:?} does not parse")))?;
    let left = time::until(now, &deadline)
        .ok_or_else(|| Error::terminal(format!("now {now:?} does not parse")))?;
    Ok((!left.is_zero()).then_some(left))
}

fn transition_time<'a>(status: &'a InfraStatus, t: &str) -> &'a str {
    conditions::find(&status.conditions, t).map_or("", |c| c.last_transition_time.as_str())
}

#[allow(clippy::too_many_arguments)]
fn provision(
    ctx: &Context<'_>,
    view: &View,
    machine: &Machine,
    backend: &InMemoryMachineBackend,
    key: &str,
    now: &str,
    status: &mut InfraStatus,
    waits: &mut Vec<Duration>,
    out: &mut Outcome,
) -> Result<(), Error> {
    let dm = &view.dm;
    let name = dm.metadata.name.as_str();
    let generation = dm.metadata.generation;
    let cloud = ctx.cloud();
    let control_plane = machine.is_control_plane();
    let set = |status: &mut InfraStatus, t: &str, s: &str, r: &str| {
        conditions::set(
            &mut status.conditions,
            Condition::new(t, s, r).observed_generation(generation),
            now,
        );
    };

    // 1. The VM: created at once, provisioned after its startup duration.
    let vm = cloud.create_vm(key, name)?;
    let d = startup_duration(backend, Component::Vm, name)?;
    if let Some(left) = remaining(&vm.created, d, now)? {
        set(
            status,
            dc::VM_PROVISIONED,
            FALSE,
            dc::WAITING_FOR_STARTUP_TIMEOUT_REASON,
        );
        set(
            status,
            dc::NODE_PROVISIONED,
            FALSE,
            dc::WAITING_FOR_VM_PROVISIONED_REASON,
        );
        if control_plane {
            set(
                status,
                dc::ETCD_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_VM_PROVISIONED_REASON,
            );
            set(
                status,
                dc::API_SERVER_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_VM_PROVISIONED_REASON,
            );
        }
        waits.push(left);
        return Ok(());
    }
    if dm.spec.provider_id.as_deref() != Some(vm.provider_id.as_str()) {
        let mut patch = dm.skeleton();
        patch["spec"] = json!({"providerID": vm.provider_id});
        out.apply(&patch)?;
    }
    status.initialization = Some(InfraInitialization {
        provisioned: Some(true),
        ..status.initialization.clone().unwrap_or_default()
    });
    set(status, dc::VM_PROVISIONED, TRUE, dc::PROVISIONED_REASON);

    // 2. The Node, registered by the kubelet after its startup duration.
    let d = startup_duration(backend, Component::Node, name)?;
    let vm_at = transition_time(status, dc::VM_PROVISIONED).to_owned();
    if let Some(left) = remaining(&vm_at, d, now)? {
        set(
            status,
            dc::NODE_PROVISIONED,
            FALSE,
            dc::WAITING_FOR_STARTUP_TIMEOUT_REASON,
        );
        if control_plane {
            set(
                status,
                dc::ETCD_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_NODE_PROVISIONED_REASON,
            );
            set(
                status,
                dc::API_SERVER_PROVISIONED,
                FALSE,
                dc::WAITING_FOR_NODE_PROVISIONED_REASON,
            );
        }
        waits.push(left);
        return Ok(());
    }
    let node_ref = obj_ref("v1", "Node", "", name);
    // Create only: the Machine controller patches labels and annotations
    // onto the Node afterwards, which a replace would wipe.
    if cloud.get_object::<Value>(key, &node_ref)?.is_none() {
        cloud.put_object(key, &node_object(dm, machine, &vm.provider_id, now))?;
    }
    set(status, dc::NODE_PROVISIONED, TRUE, dc::PROVISIONED_REASON);
    if !control_plane {
        return Ok(());
    }

    // 3. etcd and 4. the API server, each after its duration from NodeProvisioned.
    let node_at = transition_time(status, dc::NODE_PROVISIONED).to_owned();
    for (component, condition) in [
        (Component::Etcd, dc::ETCD_PROVISIONED),
        (Component::ApiServer, dc::API_SERVER_PROVISIONED),
    ] {
        let d = startup_duration(backend, component, name)?;
        if let Some(left) = remaining(&node_at, d, now)? {
            set(
                status,
                condition,
                FALSE,
                dc::WAITING_FOR_STARTUP_TIMEOUT_REASON,
            );
            waits.push(left);
            continue;
        }
        let pod = if component == Component::Etcd {
            "etcd"
        } else {
            "kube-apiserver"
        };
        let pod_ref = obj_ref("v1", "Pod", "kube-system", &format!("{pod}-{name}"));
        if cloud.get_object::<Value>(key, &pod_ref)?.is_none() {
            let annotations = if component == Component::Etcd {
                let mut a = json!({
                    ETCD_CLUSTER_ID: (fnv(key) | 1).to_string(),
                    ETCD_MEMBER_ID: (fnv(&pod_ref.name) | 1).to_string(),
                });
                // The first member, created before any API server serves,
                // founds the etcd cluster and leads it.
                if !cloud.api_server_running(key) {
                    a[ETCD_LEADER_FROM] = json!(now);
                }
                a
            } else {
                json!({})
            };
            cloud.put_object(key, &static_pod(pod, name, now, annotations))?;
        }
        if component == Component::ApiServer && !cloud.api_server_running(key) {
            let (cert, key_pem) = ca_pair(view, key)?;
            cloud.start_api_server(key, &cert, &key_pem)?;
            out.event(
                dm.object_ref(),
                EventType::Normal,
                "APIServerStarted",
                &format!("The API server of cluster {key} answers at its endpoint"),
            );
        }
        set(status, condition, TRUE, dc::PROVISIONED_REASON);
    }

    // 5. Scheduler and controller manager, as soon as the API server runs.
    if conditions::is_true(&status.conditions, dc::API_SERVER_PROVISIONED) {
        for pod in &STATIC_PODS[2..] {
            let r = obj_ref("v1", "Pod", "kube-system", &format!("{pod}-{name}"));
            if cloud.get_object::<Value>(key, &r)?.is_none() {
                cloud.put_object(key, &static_pod(pod, name, now, json!({})))?;
            }
        }
    }

    // 6-8. What kubeadm init leaves in the cluster and KCP reads.
    let version = machine.spec.version.clone().unwrap_or_default();
    let cluster_objects = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:get-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeadm:get-nodes"},
            "subjects": [{"kind": "Group", "name": "system:bootstrappers:kubeadm:default-node-token"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": ""}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"component": "kube-proxy"}},
            "spec": {"template": {"spec": {"containers": [{"name": "kube-proxy",
                "image": format!("registry.k8s.io/kube-proxy:{version}")}]}}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": "ANG"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "spec": {"template": {"spec": {"containers": [{"name": "coredns",
                "image": "registry.k8s.io/coredns/coredns:v1.10.1"}]}}}}),
    ];
    for o in &cluster_objects {
        if cloud.get_object::<Value>(key, &ObjectRef::of(o))?.is_none() {
            cloud.put_object(key, o)?;
        }
    }
    Ok(())
}

/// The cluster CA certificate and key (PEM) from the `<cluster>-ca` Secret.
fn ca_pair(view: &View, key: &str) -> Result<(String, String), Error> {
    let secret = view.ca.as_ref().ok_or_else(|| {
        Error::transient(format!(
            "the CA Secret of cluster {key} does not exist yet; the API server cannot start"
        ))
    })?;
    let field = |f: &str| -> Result<String, Error> {
        let b64 = secret
            .get("data")
            .and_then(|d| d.get(f))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::terminal(format!("CA Secret of cluster {key} has no {f}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                Error::terminal(format!(
                    "CA Secret of cluster {key}: {f} is not base64: {e}"
                ))
            })?;
        String::from_utf8(bytes).map_err(|_| {
            Error::terminal(format!("CA Secret of cluster {key}: {f} is not PEM text"))
        })
    };
    Ok((field("tls.crt")?, field("tls.key")?))
}

/// Reverse order: Node, etcd, API server, scheduler, controller manager,
/// VM; then the finalizer (the kubeadm objects belong to the cluster).
fn reconcile_delete(ctx: &Context<'_>, view: &View, out: &mut Outcome) -> Result<(), Error> {
    let dm = &view.dm;
    let name = dm.metadata.name.as_str();
    if let Some(key) = view.cluster_key() {
        let cloud = ctx.cloud();
        cloud.delete_object(&key, &obj_ref("v1", "Node", "", name))?;
        for pod in STATIC_PODS {
            cloud.delete_object(
                &key,
                &obj_ref("v1", "Pod", "kube-system", &format!("{pod}-{name}")),
            )?;
        }
        cloud.delete_vm(&key, name)?;
    }
    set_finalizer(dm, false, out)?;
    Ok(())
}

fn write_status(dm: &DevMachine, status: InfraStatus, out: &mut Outcome) -> Result<(), Error> {
    if Some(&status) != dm.status.as_ref() {
        let mut s = dm.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

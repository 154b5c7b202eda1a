//! The Cluster API KubeadmControlPlane reconciler: cluster certificates, admin kubeconfig, control-plane Machines one at a time, status.
//!
//! Behaviour follows CAPI's KCP controller (`controlplane/kubeadm`) at
//! v1beta2; what is implemented, simplified and missing is listed in
//! `docs/capi.md`.

pub mod certs;
pub mod health;

use capstan_sdk::capi::bootstrap::KubeadmConfig;
use capstan_sdk::capi::cluster::{Cluster, Machine};
use capstan_sdk::capi::conditions::{self as capi_conditions, Reasons};
use capstan_sdk::capi::controlplane::cluster_secrets::{CERTIFICATE_SUFFIXES, KUBECONFIG_SUFFIX};
use capstan_sdk::capi::controlplane::{
    KubeadmControlPlane, KubeadmControlPlaneStatus, kcp_annotations, kcp_conditions as kc,
    kcp_machine_conditions as mc, kcp_reasons as r,
};
use capstan_sdk::capi::infrastructure::DevMachineTemplate;
use capstan_sdk::capi::{
    BOOTSTRAP_GROUP, INFRASTRUCTURE_GROUP, Object, annotations, finalizers, labels, to_value,
};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::meta::{self, OwnerReference};
use capstan_sdk::{
    Capabilities, Context, Error, EventType, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler,
    RelationSelector, Snapshot, Verbs,
};
use health::Pods;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Relation: the owning Cluster (controller owner reference).
pub const CLUSTER: &str = "cluster";
/// Relation: the control-plane Machines this KCP controls.
pub const MACHINES: &str = "machines";
/// Relation: KubeadmConfigs labelled with this KCP's name.
pub const CONFIGS: &str = "configs";
/// Relation: the infrastructure machine template.
pub const TEMPLATE: &str = "infra-template";
/// Relation: the workload cluster's control-plane Pods in kube-system.
pub const PODS: &str = "control-plane-pods";
/// The label selector of the control-plane Pods.
pub const PODS_SELECTOR: &str =
    "component in (etcd,kube-apiserver,kube-controller-manager,kube-scheduler)";
/// Kind of the Machines' infrastructure objects (the template's kind without `Template`).
pub const INFRA_MACHINE_KIND: &str = "DevMachine";
/// Characters of generated name suffixes (Kubernetes' SimpleNameGenerator).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Longest base of a generated name (63 minus the 5-character suffix).
const MAX_NAME_BASE: usize = 58;

/// The KubeadmControlPlane reconciler.
#[derive(Debug)]
pub struct KubeadmControlPlaneReconciler;

fn secret_gvk() -> Gvk {
    Gvk::new("", "v1", "Secret")
}

impl Reconciler for KubeadmControlPlaneReconciler {
    fn describe() -> PluginInfo {
        let pod = Gvk::new("", "v1", "Pod");
        let mut info = PluginInfo::new(
            "kubeadm-control-plane",
            env!("CARGO_PKG_VERSION"),
            KubeadmControlPlane::gvk(),
        )
        .watch(Machine::gvk(), KeyMapping::ControllerOwner)
        .watch(
            Cluster::gvk(),
            KeyMapping::Field("spec.controlPlaneRef.name".to_owned()),
        )
        .watch(secret_gvk(), KeyMapping::ControllerOwner)
        .watch(
            DevMachineTemplate::gvk(),
            KeyMapping::ReferencedBy("spec.machineTemplate.spec.infrastructureRef".to_owned()),
        )
        .watch_workload(pod.clone(), KeyMapping::SameCluster)
        .relation(CLUSTER, Cluster::gvk(), RelationSelector::ControllerOwner)
        .relation(MACHINES, Machine::gvk(), RelationSelector::Owned)
        .relation(
            CONFIGS,
            KubeadmConfig::gvk(),
            RelationSelector::Label(labels::CONTROL_PLANE_NAME.to_owned()),
        )
        .relation(
            TEMPLATE,
            DevMachineTemplate::gvk(),
            RelationSelector::FieldRef("spec.machineTemplate.spec.infrastructureRef".to_owned()),
        );
        for suffix in CERTIFICATE_SUFFIXES.iter().chain([&KUBECONFIG_SUFFIX]) {
            info = info.relation(
                &certs::relation(suffix),
                secret_gvk(),
                RelationSelector::Named(format!("{{cluster}}-{suffix}")),
            );
        }
        info.workload_relation(
            PODS,
            pod,
            RelationSelector::Matching(PODS_SELECTOR.to_owned()),
            Some("kube-system"),
        )
        .permit(
            KubeadmControlPlane::gvk(),
            Verbs::PATCH | Verbs::PATCH_STATUS,
        )
        .permit(Machine::gvk(), Verbs::CREATE | Verbs::PATCH | Verbs::DELETE)
        .permit(KubeadmConfig::gvk(), Verbs::CREATE | Verbs::PATCH)
        .permit(
            Gvk::new(
                INFRASTRUCTURE_GROUP,
                capstan_sdk::capi::VERSION,
                INFRA_MACHINE_KIND,
            ),
            Verbs::CREATE | Verbs::PATCH,
        )
        .permit(DevMachineTemplate::gvk(), Verbs::PATCH)
        .permit(secret_gvk(), Verbs::CREATE | Verbs::PATCH)
        .finalizer(finalizers::KUBEADM_CONTROL_PLANE)
        .capabilities(Capabilities::CRYPTO)
        // CAPI HEAD's --kubeadmcontrolplane-concurrency default.
        .concurrency(10)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(KubeadmControlPlaneReconciler);

/// A control-plane Machine with what KCP computes about it.
struct Member {
    machine: Machine,
    conditions: Vec<Condition>,
    up_to_date: bool,
}

impl Member {
    fn name(&self) -> &str {
        &self.machine.metadata.name
    }

    fn healthy(&self) -> bool {
        health::all_true(&self.conditions)
    }

    fn machine_condition(&self, t: &str) -> bool {
        self.machine
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, t))
    }
}

fn creation(m: &Machine) -> (String, String) {
    let ts = m
        .metadata
        .extra
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    (ts, m.metadata.name.clone())
}

fn check_synced(snapshot: &Snapshot, relations: &[&str]) -> Result<(), Error> {
    for r in relations {
        if !snapshot.synced(r) {
            return Err(Error::transient(format!(
                "cache of relation {r} is not synced yet"
            )));
        }
    }
    Ok(())
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let kcp: KubeadmControlPlane = snapshot.primary()?;
    let mut out = Outcome::new();
    check_synced(snapshot, &[CLUSTER, MACHINES, CONFIGS, TEMPLATE])?;
    let cluster: Option<Cluster> = snapshot.related_one(CLUSTER)?;
    let Some(cluster) = cluster.filter(|c| {
        kcp.metadata
            .controller()
            .is_some_and(|o| o.kind == "Cluster" && o.uid == c.metadata.uid)
    }) else {
        ctx.debug("waiting for the Cluster controller to set the owner reference");
        return Ok(out);
    };
    // The named Secret relations and the workload cluster resolve through
    // this label: without it a missing CA could not be told from an unseen one.
    if kcp.metadata.labels.get(labels::CLUSTER_NAME) != Some(&cluster.metadata.name) {
        ctx.debug("waiting for the Cluster controller to set the cluster-name label");
        return Ok(out);
    }
    let now = snapshot.now();
    let generation = kcp.metadata.generation;
    let mut status = kcp.status();

    let paused = if cluster.spec.paused == Some(true) {
        Some("Cluster spec.paused is set to true")
    } else if kcp.metadata.annotations.contains_key(annotations::PAUSED) {
        Some("KubeadmControlPlane has the cluster.x-k8s.io/paused annotation")
    } else {
        None
    };
    if let Some(why) = paused {
        let c = Condition::new("Paused", TRUE, r::PAUSED).message(why);
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now,
        );
        capi_conditions::sort(&mut status.conditions);
        write_status(&kcp, status, &mut out)?;
        return Ok(out);
    }

    let deleting = kcp.metadata.is_deleting();
    if !kcp
        .metadata
        .has_finalizer(finalizers::KUBEADM_CONTROL_PLANE)
    {
        if !deleting {
            let mut patch = kcp.skeleton();
            let mut fs = kcp.metadata.finalizers.clone();
            fs.push(finalizers::KUBEADM_CONTROL_PLANE.to_owned());
            patch["metadata"]["finalizers"] = json!(fs);
            out.apply(&patch)?;
        }
        return Ok(out);
    }

    let machines: Vec<Machine> = snapshot.related(MACHINES)?;
    let mut machines: Vec<Machine> = machines
        .into_iter()
        .filter(|m| {
            m.metadata
                .controller()
                .is_some_and(|o| o.uid == kcp.metadata.uid)
        })
        .collect();
    machines.sort_by_key(creation);
    let pods = Pods::new(
        snapshot.workload(),
        snapshot.synced(PODS),
        snapshot.related(PODS)?,
    );
    let cluster_configuration = cluster_configuration_json(&kcp);
    let members: Vec<Member> = machines
        .into_iter()
        .map(|m| Member {
            conditions: health::machine_conditions(&m, &pods),
            up_to_date: !m.metadata.is_deleting()
                && m.spec.version.as_deref() == Some(kcp.spec.version.as_str())
                && m.metadata
                    .annotations
                    .get(kcp_annotations::KUBEADM_CLUSTER_CONFIGURATION)
                    .is_none_or(|a| *a == cluster_configuration),
            machine: m,
        })
        .collect();

    let mut deletion = None;
    let mut scaling = Scaling::default();
    let mut certificates_available = status_is_true(&status, kc::CERTIFICATES_AVAILABLE);
    if deleting {
        if members.is_empty() {
            let mut patch = kcp.skeleton();
            let fs: Vec<&String> = kcp
                .metadata
                .finalizers
                .iter()
                .filter(|f| *f != finalizers::KUBEADM_CONTROL_PLANE)
                .collect();
            patch["metadata"]["finalizers"] = json!(fs);
            out.apply(&patch)?;
            ctx.info(format!(
                "KubeadmControlPlane {}/{} deleted",
                kcp.metadata.namespace, kcp.metadata.name
            ));
            // The object goes away with the finalizer: no status to write.
            return Ok(out);
        }
        for m in members.iter().filter(|m| !m.machine.metadata.is_deleting()) {
            out.delete(m.machine.object_ref());
        }
        let names: Vec<&str> = members.iter().map(Member::name).collect();
        deletion = Some(format!(
            "Deleting {} Machine{}: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        ));
    } else {
        certificates_available = reconcile_normal(
            ctx,
            snapshot,
            &kcp,
            &cluster,
            &members,
            &mut scaling,
            &mut out,
        )?;
    }

    // Initialization: the first API server answers (sticky).
    let mut init = status.initialization.clone().unwrap_or_default();
    let initialized = kcp.initialized()
        || members
            .iter()
            .any(|m| conditions::is_true(&m.conditions, mc::API_SERVER_POD_HEALTHY));
    if initialized && !kcp.initialized() {
        out.event(
            kcp.object_ref(),
            EventType::Normal,
            "ControlPlaneInitialized",
            &format!(
                "Control plane of Cluster {} is initialized",
                cluster.metadata.name
            ),
        );
    }
    init.control_plane_initialized = Some(initialized);
    status.initialization = Some(init);
    set_counters(&cluster, &members, &mut status);
    let inputs = ConditionInputs {
        members: &members,
        pods: &pods,
        initialized,
        certificates_available,
        deletion,
        scaling,
    };
    set_conditions(&kcp, &inputs, &mut status, now);
    write_status(&kcp, status, &mut out)?;
    Ok(out)
}

fn status_is_true(status: &KubeadmControlPlaneStatus, t: &str) -> bool {
    conditions::is_true(&status.conditions, t)
}

fn write_status(
    kcp: &KubeadmControlPlane,
    mut status: KubeadmControlPlaneStatus,
    out: &mut Outcome,
) -> Result<(), Error> {
    status.observed_generation = kcp.metadata.generation;
    if Some(&status) != kcp.status.as_ref() {
        let mut s = kcp.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

/// What scaling decided, for the ScalingUp/ScalingDown conditions.
#[derive(Debug, Default)]
struct Scaling {
    /// Why scaling (up or down) is blocked, one line each.
    blocked: Vec<String>,
    /// Why the KCP waits before any Machine work (infrastructure, certificates...).
    waiting: Option<String>,
}

/// Certificates, kubeconfig and Machines; returns whether the certificates are available.
fn reconcile_normal(
    ctx: &Context<'_>,
    snapshot: &Snapshot,
    kcp: &KubeadmControlPlane,
    cluster: &Cluster,
    members: &[Member],
    scaling: &mut Scaling,
    out: &mut Outcome,
) -> Result<bool, Error> {
    let template: Option<Value> = snapshot.related_one(TEMPLATE)?;
    let template_ref = &kcp.spec.machine_template.spec.infrastructure_ref;
    let template = template.filter(|t| template_ref.matches(t));
    // As KCP's reconcileExternalReference: the template is owned by the Cluster.
    if let Some(t) = &template {
        adopt_template(t, cluster, out)?;
    }
    let infra_ready = cluster
        .status()
        .initialization
        .is_some_and(|i| i.infrastructure_provisioned == Some(true));
    if !infra_ready {
        scaling.waiting = Some(
            "Waiting for Cluster status.initialization.infrastructureProvisioned to be true".into(),
        );
        return Ok(false);
    }
    let certificates = certs::reconcile(ctx, snapshot, kcp, cluster, out)?;
    if cluster.spec.endpoint().is_none() {
        scaling.waiting = Some("Waiting for Cluster spec.controlPlaneEndpoint".into());
        return Ok(certificates.available);
    }
    certs::reconcile_kubeconfig(
        ctx,
        snapshot,
        kcp,
        cluster,
        certificates.persisted_ca.as_ref(),
        out,
    )?;
    let Some(template) = template else {
        scaling.waiting = Some(format!(
            "Waiting for {} {} to exist",
            template_ref.kind, template_ref.name
        ));
        return Ok(certificates.available);
    };
    let configs: Vec<Value> = snapshot.related(CONFIGS)?;
    scale(
        ctx, kcp, cluster, &template, members, &configs, scaling, out,
    )?;
    Ok(certificates.available)
}

fn adopt_template(template: &Value, cluster: &Cluster, out: &mut Outcome) -> Result<(), Error> {
    let owner = OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..cluster.controller_reference()
    };
    let mut refs: Vec<Value> = template
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if refs
        .iter()
        .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner.uid.as_str()))
    {
        return Ok(());
    }
    refs.push(to_value(&owner));
    let r = capstan_sdk::ObjectRef::of(template);
    out.apply(&json!({
        "apiVersion": r.api_version, "kind": r.kind,
        "metadata": {"name": r.name, "namespace": r.namespace, "ownerReferences": refs},
    }))?;
    Ok(())
}

fn desired_replicas(kcp: &KubeadmControlPlane) -> usize {
    usize::try_from(kcp.spec.replicas.unwrap_or(1)).unwrap_or(0)
}

/// The preflight checks of KCP's scale up and down: no Machine is being
/// deleted and every other Machine's control plane is healthy.
fn preflight(members: &[Member], except: Option<&str>) -> Vec<String> {
    let mut blocked = Vec::new();
    for m in members.iter().filter(|m| Some(m.name()) != except) {
        if m.machine.metadata.is_deleting() {
            blocked.push(format!("* waiting for Machine {} to be deleted", m.name()));
        } else if !m.healthy() {
            blocked.push(format!(
                "* waiting for Machine {} to have healthy control plane components",
                m.name()
            ));
        }
    }
    blocked
}

#[allow(clippy::too_many_arguments)]
fn scale(
    ctx: &Context<'_>,
    kcp: &KubeadmControlPlane,
    cluster: &Cluster,
    template: &Value,
    members: &[Member],
    configs: &[Value],
    scaling: &mut Scaling,
    out: &mut Outcome,
) -> Result<(), Error> {
    let desired = desired_replicas(kcp);
    let current = members.len();
    if current < desired {
        let init = current == 0 && !kcp.initialized();
        if !init {
            let blocked = preflight(members, None);
            if !blocked.is_empty() {
                scaling.blocked = blocked;
                return Ok(());
            }
        }
        // Names in use: the Machines', and those of configs a Machine
        // adopted or that are going away. A config the KCP created whose
        // Machine is not visible (a creation in flight, the cache behind)
        // does not count: its name comes out again and the same objects are
        // re-applied, never a second Machine.
        let taken: Vec<&str> = members
            .iter()
            .map(Member::name)
            .chain(
                configs
                    .iter()
                    .filter(|c| {
                        meta::controller_of(c).is_some()
                            || c.pointer("/metadata/deletionTimestamp").is_some()
                    })
                    .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str)),
            )
            .collect();
        let name = (0u32..)
            .map(|i| machine_name(kcp, i))
            .find(|n| !taken.contains(&n.as_str()))
            .unwrap_or_default();
        create_machine(kcp, cluster, template, &name, init, out)?;
        ctx.info(format!(
            "creating control-plane Machine {}/{} ({}, {} of {desired})",
            kcp.metadata.namespace,
            name,
            if init { "init" } else { "join" },
            current + 1
        ));
        out.event(
            kcp.object_ref(),
            EventType::Normal,
            "SuccessfulCreate",
            &format!("Created Machine {name}"),
        );
    } else if current > desired {
        // Machines marked for deletion first, then the oldest (KCP's default).
        let victim = members
            .iter()
            .find(|m| {
                m.machine
                    .metadata
                    .annotations
                    .contains_key(annotations::DELETE_MACHINE)
            })
            .or_else(|| members.iter().find(|m| !m.up_to_date))
            .or_else(|| members.first());
        let Some(victim) = victim else {
            return Ok(());
        };
        if members.iter().any(|m| m.machine.metadata.is_deleting()) {
            scaling.blocked = preflight(members, None)
                .into_iter()
                .filter(|l| l.ends_with("to be deleted"))
                .collect();
            return Ok(());
        }
        let blocked = preflight(members, Some(victim.name()));
        if !blocked.is_empty() {
            scaling.blocked = blocked;
            return Ok(());
        }
        out.delete(victim.machine.object_ref());
        ctx.info(format!(
            "deleting control-plane Machine {}/{} ({current} -> {desired})",
            kcp.metadata.namespace,
            victim.name()
        ));
        out.event(
            kcp.object_ref(),
            EventType::Normal,
            "SuccessfulDelete",
            &format!("Deleted Machine {}", victim.name()),
        );
    }
    Ok(())
}

/// `<kcp>-<5 characters>`: the characters are derived from the KCP's UID and
/// `ordinal`, so a reconcile that repeats a creation (its cache not showing
/// the first yet) names the same Machine instead of adding one.
pub fn machine_name(kcp: &KubeadmControlPlane, ordinal: u32) -> String {
    let digest = Sha256::digest(format!("{}/{ordinal}", kcp.metadata.uid).as_bytes());
    let suffix: String = digest
        .iter()
        .take(5)
        .map(|b| ALPHANUMS[usize::from(*b) % ALPHANUMS.len()] as char)
        .collect();
    let base: String = kcp.metadata.name.chars().take(MAX_NAME_BASE).collect();
    format!("{base}-{suffix}")
}

fn cluster_configuration_json(kcp: &KubeadmControlPlane) -> String {
    kcp.spec
        .kubeadm_config_spec
        .cluster_configuration
        .clone()
        .unwrap_or_else(|| json!({}))
        .to_string()
}

fn string_map(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// KCP's `ControlPlaneMachineLabelsForCluster`.
fn machine_labels(kcp: &KubeadmControlPlane, cluster: &Cluster) -> Map<String, Value> {
    let template_meta = kcp.spec.machine_template.metadata.as_ref();
    let mut l = string_map(template_meta.and_then(|m| m.get("labels")));
    l.insert(labels::CLUSTER_NAME.into(), json!(cluster.metadata.name));
    l.insert(labels::CONTROL_PLANE.into(), json!(""));
    l.insert(labels::CONTROL_PLANE_NAME.into(), json!(kcp.metadata.name));
    l
}

fn template_annotations(kcp: &KubeadmControlPlane) -> Map<String, Value> {
    string_map(
        kcp.spec
            .machine_template
            .metadata
            .as_ref()
            .and_then(|m| m.get("annotations")),
    )
}

/// An owner reference to the KCP without `controller`: the Machine
/// controller becomes the controller of the clones.
fn clone_owner(kcp: &KubeadmControlPlane) -> OwnerReference {
    OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..kcp.controller_reference()
    }
}

fn metadata(
    name: &str,
    namespace: &str,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    owner: &OwnerReference,
) -> Value {
    let mut m = json!({"name": name, "namespace": namespace, "labels": labels,
        "ownerReferences": [owner]});
    if !annotations.is_empty() {
        m["annotations"] = Value::Object(annotations);
    }
    m
}

/// The KubeadmConfig of a new Machine: the KCP's spec with the init
/// (first Machine) or join parts only.
fn bootstrap_spec(kcp: &KubeadmControlPlane, init: bool) -> Value {
    let mut spec = to_value(&kcp.spec.kubeadm_config_spec);
    let Some(s) = spec.as_object_mut() else {
        return spec;
    };
    if init {
        s.remove("joinConfiguration");
        for k in ["initConfiguration", "clusterConfiguration"] {
            if s.get(k).is_none_or(Value::is_null) {
                s.insert(k.into(), json!({}));
            }
        }
    } else {
        s.remove("initConfiguration");
        // Without it CABPK cannot mistake a join for an init while the
        // Cluster does not yet report the control plane initialized; the
        // Machine's annotation keeps the ClusterConfiguration.
        s.remove("clusterConfiguration");
        let jc = s.entry("joinConfiguration").or_insert_with(|| json!({}));
        if !jc.is_object() {
            *jc = json!({});
        }
        if jc.get("controlPlane").is_none_or(Value::is_null) {
            jc["controlPlane"] = json!({});
        }
    }
    spec
}

/// Create (or re-assert) the KubeadmConfig, infrastructure machine and
/// Machine named `name`, as KCP's `cloneConfigsAndGenerateMachine`.
fn create_machine(
    kcp: &KubeadmControlPlane,
    cluster: &Cluster,
    template: &Value,
    name: &str,
    init: bool,
    out: &mut Outcome,
) -> Result<(), Error> {
    let ns = &kcp.metadata.namespace;
    let machine_labels = machine_labels(kcp, cluster);
    let kcp_annotations = template_annotations(kcp);
    let owner = clone_owner(kcp);

    let config = json!({
        "apiVersion": KubeadmConfig::api_version(), "kind": "KubeadmConfig",
        "metadata": metadata(name, ns, machine_labels.clone(), kcp_annotations.clone(), &owner),
        "spec": bootstrap_spec(kcp, init),
    });

    let t = |p: &str| template.pointer(p).cloned();
    let mut infra_labels = string_map(t("/spec/template/metadata/labels").as_ref());
    infra_labels.extend(machine_labels.clone());
    let mut infra_annotations = string_map(t("/spec/template/metadata/annotations").as_ref());
    infra_annotations.extend(kcp_annotations.clone());
    let template_name = t("/metadata/name").unwrap_or(Value::Null);
    let template_kind = t("/kind")
        .and_then(|k| k.as_str().map(str::to_owned))
        .unwrap_or_default();
    infra_annotations.insert(annotations::CLONED_FROM_NAME.into(), template_name);
    infra_annotations.insert(
        annotations::CLONED_FROM_GROUP_KIND.into(),
        json!(format!("{template_kind}.{INFRASTRUCTURE_GROUP}")),
    );
    let infra_kind = template_kind
        .strip_suffix("Template")
        .unwrap_or(INFRA_MACHINE_KIND)
        .to_owned();
    let infra = json!({
        "apiVersion": t("/apiVersion").unwrap_or_else(|| json!(DevMachineTemplate::api_version())),
        "kind": infra_kind,
        "metadata": metadata(name, ns, infra_labels, infra_annotations, &owner),
        "spec": t("/spec/template/spec").unwrap_or_else(|| json!({})),
    });

    let mut annotations = kcp_annotations;
    annotations.insert(
        kcp_annotations::KUBEADM_CLUSTER_CONFIGURATION.into(),
        json!(cluster_configuration_json(kcp)),
    );
    let mut spec = json!({
        "clusterName": cluster.metadata.name,
        "version": kcp.spec.version,
        "bootstrap": {"configRef": {"apiGroup": BOOTSTRAP_GROUP, "kind": "KubeadmConfig", "name": name}},
        "infrastructureRef": {"apiGroup": INFRASTRUCTURE_GROUP, "kind": infra_kind, "name": name},
    });
    let tspec = &kcp.spec.machine_template.spec.extra;
    for k in ["deletion", "readinessGates", "taints"] {
        if let Some(v) = tspec.get(k) {
            spec[k] = v.clone();
        }
    }
    let machine = json!({
        "apiVersion": Machine::api_version(), "kind": "Machine",
        "metadata": metadata(name, ns, machine_labels, annotations, &kcp.controller_reference()),
        "spec": spec,
    });
    out.apply(&config)?.apply(&infra)?.apply(&machine)?;
    Ok(())
}

fn count(members: &[Member], f: impl Fn(&Member) -> bool) -> i32 {
    i32::try_from(members.iter().filter(|m| f(m)).count()).unwrap_or(i32::MAX)
}

/// The lowest `spec.version` of the Machines (versions compared numerically).
fn lowest_version(members: &[Member]) -> Option<String> {
    fn key(v: &str) -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['.', '-', '+'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
    members
        .iter()
        .filter_map(|m| m.machine.spec.version.clone())
        .min_by_key(|v| key(v))
}

fn set_counters(cluster: &Cluster, members: &[Member], status: &mut KubeadmControlPlaneStatus) {
    status.replicas = Some(count(members, |_| true));
    status.ready_replicas = Some(count(members, |m| m.machine_condition("Ready")));
    status.available_replicas = Some(count(members, |m| m.machine_condition("Available")));
    status.up_to_date_replicas = Some(count(members, |m| m.up_to_date));
    status.selector = Some(format!(
        "{}={},{}",
        labels::CLUSTER_NAME,
        cluster.metadata.name,
        labels::CONTROL_PLANE
    ));
    status.version = lowest_version(members);
}

struct ConditionInputs<'a> {
    members: &'a [Member],
    pods: &'a Pods,
    initialized: bool,
    certificates_available: bool,
    deletion: Option<String>,
    scaling: Scaling,
}

fn scaling_message(verb: &str, from: usize, to: usize, s: &Scaling) -> String {
    let mut m = format!("Scaling {verb} from {from} to {to} replicas");
    if let Some(w) = &s.waiting {
        m.push_str(&format!(" is blocked because:\n* {w}"));
    } else if !s.blocked.is_empty() {
        m.push_str(&format!(" is blocked because:\n{}", s.blocked.join("\n")));
    }
    m
}

fn set_conditions(
    kcp: &KubeadmControlPlane,
    i: &ConditionInputs<'_>,
    status: &mut KubeadmControlPlaneStatus,
    now: &str,
) {
    let generation = kcp.metadata.generation;
    let members = i.members;
    let mut set = |c: Condition| {
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now,
        );
    };
    let per_machine: Vec<(&str, &[Condition])> = members
        .iter()
        .map(|m| (m.name(), m.conditions.as_slice()))
        .collect();

    set(if i.initialized {
        Condition::new(kc::INITIALIZED, TRUE, r::INITIALIZED)
    } else {
        Condition::new(kc::INITIALIZED, FALSE, r::NOT_INITIALIZED)
            .message("Control plane not yet initialized")
    });
    set(if i.certificates_available {
        Condition::new(kc::CERTIFICATES_AVAILABLE, TRUE, r::CERTIFICATES_AVAILABLE)
    } else {
        Condition::new(
            kc::CERTIFICATES_AVAILABLE,
            FALSE,
            r::CERTIFICATES_NOT_AVAILABLE,
        )
        .message("Waiting for the cluster certificates")
    });
    let components: Vec<&str> = health::COMPONENTS.iter().map(|(_, t)| *t).collect();
    let cp_health = health::aggregate(
        kc::CONTROL_PLANE_COMPONENTS_HEALTHY,
        &per_machine,
        &components,
        i.pods,
    );
    let etcd_health = health::aggregate(
        kc::ETCD_CLUSTER_HEALTHY,
        &per_machine,
        &[mc::ETCD_MEMBER_HEALTHY],
        i.pods,
    );
    set(cp_health);
    set(etcd_health);

    let machine_reasons = Reasons {
        good: r::MACHINES_READY,
        bad: r::MACHINES_NOT_READY,
        unknown: r::MACHINES_READY_UNKNOWN,
    };
    let machine_conditions: Vec<(&str, Vec<Condition>)> = members
        .iter()
        .map(|m| (m.name(), m.machine.status().conditions))
        .collect();
    set(if members.is_empty() {
        Condition::new(kc::MACHINES_READY, TRUE, r::NO_REPLICAS)
    } else {
        capi_conditions::aggregate(
            machine_conditions.iter().map(|(n, c)| (*n, c.as_slice())),
            "Ready",
            "Machine",
            kc::MACHINES_READY,
            machine_reasons,
        )
    });
    let stale: Vec<&str> = members
        .iter()
        .filter(|m| !m.up_to_date)
        .map(Member::name)
        .collect();
    set(if members.is_empty() {
        Condition::new(kc::MACHINES_UP_TO_DATE, TRUE, r::NO_REPLICAS)
    } else if stale.is_empty() {
        Condition::new(kc::MACHINES_UP_TO_DATE, TRUE, r::MACHINES_UP_TO_DATE)
    } else {
        Condition::new(kc::MACHINES_UP_TO_DATE, FALSE, r::MACHINES_NOT_UP_TO_DATE).message(
            format!(
                "* Machine{} {}: not up to date with spec.version or spec.kubeadmConfigSpec.clusterConfiguration",
                if stale.len() == 1 { "" } else { "s" },
                stale.join(", ")
            ),
        )
    });

    let desired = desired_replicas(kcp);
    let current = members.len();
    let deleting = i.deletion.is_some();
    set(if current < desired && !deleting {
        Condition::new(kc::SCALING_UP, TRUE, r::SCALING_UP)
            .message(scaling_message("up", current, desired, &i.scaling))
    } else {
        Condition::new(kc::SCALING_UP, FALSE, r::NOT_SCALING_UP)
    });
    set(if current > desired && !deleting {
        Condition::new(kc::SCALING_DOWN, TRUE, r::SCALING_DOWN)
            .message(scaling_message("down", current, desired, &i.scaling))
    } else {
        Condition::new(kc::SCALING_DOWN, FALSE, r::NOT_SCALING_DOWN)
    });
    set(match &i.deletion {
        Some(m) => {
            Condition::new(kc::DELETING, TRUE, r::WAITING_FOR_MACHINE_DELETION).message(m.clone())
        }
        None => Condition::new(kc::DELETING, FALSE, r::NOT_DELETING),
    });
    set(Condition::new("Paused", FALSE, r::NOT_PAUSED));

    // Available: not deleting, certificates, a Machine with every component
    // healthy, and etcd quorum among the members that have a Node.
    let etcd_members: Vec<&Member> = members
        .iter()
        .filter(|m| health::node_name(&m.machine).is_some() && !m.machine.metadata.is_deleting())
        .collect();
    let healthy_etcd = etcd_members
        .iter()
        .filter(|m| conditions::is_true(&m.conditions, mc::ETCD_MEMBER_HEALTHY))
        .count();
    let quorum = etcd_members.len() / 2 + 1;
    let mut why = Vec::new();
    if deleting {
        why.push("* Control plane is deleting".to_owned());
    }
    if !i.initialized {
        why.push("* Control plane not yet initialized".to_owned());
    }
    if !i.certificates_available {
        why.push("* Cluster certificates are not available".to_owned());
    }
    if !members.iter().any(Member::healthy) {
        why.push(
            "* Control plane components: There are no Machines with healthy control plane components, at least 1 required"
                .to_owned(),
        );
    }
    if etcd_members.is_empty() || healthy_etcd < quorum {
        why.push(format!(
            "* etcd cluster: {healthy_etcd} of {} members healthy, at least {quorum} required for etcd quorum",
            etcd_members.len()
        ));
    }
    set(if why.is_empty() {
        Condition::new(kc::AVAILABLE, TRUE, r::AVAILABLE)
    } else {
        Condition::new(kc::AVAILABLE, FALSE, r::NOT_AVAILABLE).message(why.join("\n"))
    });
    capi_conditions::sort(&mut status.conditions);
}

#[cfg(test)]
mod tests;

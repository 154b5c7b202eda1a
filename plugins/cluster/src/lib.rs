//! The Cluster API Cluster reconciler: phases, initialization, conditions, owner references, deletion order.
//!
//! Behaviour follows CAPI's `internal/controllers/cluster` at v1beta2; what is
//! implemented, simplified and missing is listed in `docs/capi.md`.
//!
//! Referenced objects (infrastructure cluster, control plane) are read through
//! the contract fields only (`status.initialization.*`, `status.conditions`,
//! `spec.controlPlaneEndpoint`, replica counters), so supporting another kind
//! is one line in [`INFRA_KINDS`] or [`CONTROL_PLANE_KINDS`].

use capstan_sdk::capi::cluster::{
    Cluster, ClusterInitialization, ClusterPhase, ClusterStatus, Machine, MachineDeployment,
    MachineSet, ReplicaCounters, cluster_conditions as cc,
};
use capstan_sdk::capi::conditions::{self as capi_conditions, Input, Reasons};
use capstan_sdk::capi::{
    ApiEndpoint, CONTROLPLANE_GROUP, ContractVersionedObjectReference, INFRASTRUCTURE_GROUP,
    Object, VERSION, finalizers, labels, to_value,
};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE, UNKNOWN};
use capstan_sdk::meta::{self, OwnerReference};
use capstan_sdk::{
    Connection, Context, Error, EventType, Gvk, KeyMapping, ObjectRef, Outcome, PluginInfo,
    Reconciler, RelationSelector, Snapshot, Verbs,
};
use serde_json::{Value, json};

/// Infrastructure cluster kinds this plugin reads: (group, kind, relation name).
pub const INFRA_KINDS: &[(&str, &str, &str)] =
    &[(INFRASTRUCTURE_GROUP, "DevCluster", "infra-devcluster")];
/// Control-plane kinds this plugin reads: (group, kind, relation name).
pub const CONTROL_PLANE_KINDS: &[(&str, &str, &str)] = &[(
    CONTROLPLANE_GROUP,
    "KubeadmControlPlane",
    "cp-kubeadmcontrolplane",
)];
/// Relation: Machines labelled with the Cluster's name.
pub const MACHINES: &str = "machines";
/// Relation: MachineDeployments labelled with the Cluster's name.
pub const MACHINE_DEPLOYMENTS: &str = "machine-deployments";
/// Relation: MachineSets labelled with the Cluster's name.
pub const MACHINE_SETS: &str = "machine-sets";
/// Relation: the workload cluster's `kube-system` Namespace. Its only use is
/// to declare workload access, so that the snapshot carries the state of the
/// host's connection to the workload cluster (`RemoteConnectionProbe`).
pub const WORKLOAD_PROBE: &str = "workload-kube-system";
/// RemoteConnectionProbe condition type and reasons (`api/core/v1beta2`).
pub const REMOTE_CONNECTION_PROBE: &str = "RemoteConnectionProbe";
/// RemoteConnectionProbe true.
pub const PROBE_SUCCEEDED_REASON: &str = "ProbeSucceeded";
/// RemoteConnectionProbe false.
pub const PROBE_FAILED_REASON: &str = "ProbeFailed";

/// The Cluster reconciler.
#[derive(Debug)]
pub struct ClusterReconciler;

fn core(kind: &str) -> Gvk {
    Gvk::new(capstan_sdk::capi::GROUP, VERSION, kind)
}

impl Reconciler for ClusterReconciler {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("cluster", env!("CARGO_PKG_VERSION"), Cluster::gvk())
            .permit(Cluster::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
            .finalizer(finalizers::CLUSTER)
            // CAPI HEAD's --cluster-concurrency default.
            .concurrency(50);
        for (group, kind, relation) in INFRA_KINDS.iter().chain(CONTROL_PLANE_KINDS) {
            let gvk = Gvk::new(group, VERSION, kind);
            info = info
                .watch(gvk.clone(), KeyMapping::ControllerOwner)
                // Before adoption (a DevCluster created after its Cluster)
                // only the Cluster's reference names the object.
                .watch(
                    gvk.clone(),
                    KeyMapping::ReferencedBy(ref_field(kind).to_owned()),
                )
                .relation(
                    relation,
                    gvk.clone(),
                    RelationSelector::FieldRef(ref_field(kind).to_owned()),
                )
                .permit(gvk, Verbs::PATCH | Verbs::DELETE);
        }
        for (relation, kind) in [
            (MACHINES, "Machine"),
            (MACHINE_DEPLOYMENTS, "MachineDeployment"),
            (MACHINE_SETS, "MachineSet"),
        ] {
            info = info
                .watch(
                    core(kind),
                    KeyMapping::Label(labels::CLUSTER_NAME.to_owned()),
                )
                .relation(
                    relation,
                    core(kind),
                    RelationSelector::Label(labels::CLUSTER_NAME.to_owned()),
                )
                .permit(core(kind), Verbs::DELETE);
        }
        info.workload_relation(
            WORKLOAD_PROBE,
            Gvk::new("", "v1", "Namespace"),
            RelationSelector::Named("kube-system".to_owned()),
            None,
        )
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(ClusterReconciler);

/// The field of the Cluster that references objects of `kind`.
fn ref_field(kind: &str) -> &'static str {
    if INFRA_KINDS.iter().any(|(_, k, _)| *k == kind) {
        "spec.infrastructureRef"
    } else {
        "spec.controlPlaneRef"
    }
}

/// What a reference resolved to in the snapshot.
#[derive(Debug)]
enum Lookup {
    /// The Cluster has no such reference.
    NotReferenced,
    /// The referenced kind is not one this plugin declares a relation for.
    Unsupported(ContractVersionedObjectReference),
    /// Referenced, but not in the (synced) cache.
    Missing(ContractVersionedObjectReference),
    /// The referenced object.
    Found(ContractVersionedObjectReference, Value),
}

impl Lookup {
    fn object(&self) -> Option<&Value> {
        match self {
            Self::Found(_, o) => Some(o),
            _ => None,
        }
    }
}

fn lookup(
    snapshot: &Snapshot,
    r: Option<&ContractVersionedObjectReference>,
    kinds: &[(&str, &str, &str)],
) -> Result<Lookup, Error> {
    let Some(r) = r else {
        return Ok(Lookup::NotReferenced);
    };
    let Some((_, _, relation)) = kinds
        .iter()
        .find(|(g, k, _)| *g == r.api_group && *k == r.kind)
    else {
        return Ok(Lookup::Unsupported(r.clone()));
    };
    if !snapshot.synced(relation) {
        return Err(Error::transient(format!(
            "cache of relation {relation} is not synced yet"
        )));
    }
    let objects: Vec<Value> = snapshot.related(relation)?;
    Ok(match objects.into_iter().find(|o| r.matches(o)) {
        Some(o) => Lookup::Found(r.clone(), o),
        None => Lookup::Missing(r.clone()),
    })
}

fn bool_at(o: &Value, pointer: &str) -> bool {
    o.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

fn i32_at(o: &Value, pointer: &str) -> Option<i32> {
    o.pointer(pointer)
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

fn conditions_of(o: &Value) -> Vec<Condition> {
    o.pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

fn endpoint_of(o: &Value) -> Option<ApiEndpoint> {
    o.pointer("/spec/controlPlaneEndpoint")
        .and_then(|e| serde_json::from_value::<ApiEndpoint>(e.clone()).ok())
        .filter(ApiEndpoint::is_valid)
}

/// Everything one reconcile reads, parsed once.
struct View {
    cluster: Cluster,
    infra: Lookup,
    control_plane: Lookup,
    machines: Vec<Machine>,
    machine_deployments: Vec<MachineDeployment>,
    machine_sets: Vec<MachineSet>,
}

impl View {
    fn read(snapshot: &Snapshot) -> Result<Self, Error> {
        let cluster: Cluster = snapshot.primary()?;
        for r in [MACHINES, MACHINE_DEPLOYMENTS, MACHINE_SETS] {
            if !snapshot.synced(r) {
                return Err(Error::transient(format!(
                    "cache of relation {r} is not synced yet"
                )));
            }
        }
        let name = &cluster.metadata.name;
        // The label relation already selects the Cluster's objects; the name
        // check guards against a host that sends more.
        let mine = |l: &std::collections::BTreeMap<String, String>| {
            l.get(labels::CLUSTER_NAME) == Some(name)
        };
        Ok(Self {
            infra: lookup(snapshot, cluster.spec.infrastructure(), INFRA_KINDS)?,
            control_plane: lookup(snapshot, cluster.spec.control_plane(), CONTROL_PLANE_KINDS)?,
            machines: snapshot
                .related::<Machine>(MACHINES)?
                .into_iter()
                .filter(|m| mine(&m.metadata.labels))
                .collect(),
            machine_deployments: snapshot
                .related::<MachineDeployment>(MACHINE_DEPLOYMENTS)?
                .into_iter()
                .filter(|m| mine(&m.metadata.labels))
                .collect(),
            machine_sets: snapshot
                .related::<MachineSet>(MACHINE_SETS)?
                .into_iter()
                .filter(|m| mine(&m.metadata.labels))
                .collect(),
            cluster,
        })
    }

    fn kind_of(l: &Lookup) -> &str {
        match l {
            Lookup::NotReferenced => "",
            Lookup::Unsupported(r) | Lookup::Missing(r) | Lookup::Found(r, _) => &r.kind,
        }
    }
}

/// The Cluster's owner JSON for [`meta::set_controller_reference`], at the
/// latest apiVersion.
fn owner_json(cluster: &Cluster) -> Value {
    let r: OwnerReference = cluster.controller_reference();
    json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": {"name": r.name, "uid": r.uid}})
}

/// The patch that makes the Cluster the controller of `object` and labels it
/// with the cluster name, as CAPI's reconcileExternal; `None` when nothing
/// changes. `Err` names the other controller when there is one.
fn adopt(cluster: &Cluster, object: &Value) -> Result<Option<Value>, String> {
    let mut desired = json!({
        "apiVersion": object.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": object.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": {
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "ownerReferences": object.pointer("/metadata/ownerReferences").cloned().unwrap_or(json!([])),
        },
    });
    if !meta::set_controller_reference(&mut desired, &owner_json(cluster)) {
        let other = meta::controller_of(object)
            .map(|o| format!("{} {}", o.kind, o.name))
            .unwrap_or_default();
        return Err(other);
    }
    let refs_same =
        desired.pointer("/metadata/ownerReferences") == object.pointer("/metadata/ownerReferences");
    let label_same =
        meta::label(object, labels::CLUSTER_NAME) == Some(cluster.metadata.name.as_str());
    if refs_same && label_same {
        return Ok(None);
    }
    if refs_same && let Some(m) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("ownerReferences");
    }
    meta::set_label(&mut desired, labels::CLUSTER_NAME, &cluster.metadata.name);
    Ok(Some(desired))
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let view = View::read(snapshot)?;
    let cluster = &view.cluster;
    let mut out = Outcome::new();
    let deleting = cluster.metadata.is_deleting();
    let has_finalizer = cluster.metadata.has_finalizer(finalizers::CLUSTER);
    if !has_finalizer {
        if !deleting {
            // Finalizer first, alone, as CAPI does: nothing is created or
            // adopted before deletion is guaranteed to come back here.
            let mut patch = cluster.skeleton();
            let mut fs = cluster.metadata.finalizers.clone();
            fs.push(finalizers::CLUSTER.to_owned());
            patch["metadata"]["finalizers"] = json!(fs);
            out.apply(&patch)?;
        }
        return Ok(out);
    }
    let mut status = cluster.status();
    let mut init = status.initialization.clone().unwrap_or_default();
    let mut endpoint_known = view.cluster.spec.endpoint().is_some();
    let deletion = if deleting {
        match reconcile_delete(&view, &mut out)? {
            Deletion::Done => {
                let mut patch = cluster.skeleton();
                let fs: Vec<&String> = cluster
                    .metadata
                    .finalizers
                    .iter()
                    .filter(|f| *f != finalizers::CLUSTER)
                    .collect();
                patch["metadata"]["finalizers"] = json!(fs);
                out.apply(&patch)?;
                out.event(
                    cluster.object_ref(),
                    EventType::Normal,
                    "Deleted",
                    &format!("Cluster {} has been deleted", cluster.metadata.name),
                );
                ctx.info(format!(
                    "cluster {}/{} deleted",
                    cluster.metadata.namespace, cluster.metadata.name
                ));
                // The object goes away with the finalizer: no status to write.
                return Ok(out);
            }
            Deletion::Waiting(reason, message) => Some((reason, message)),
        }
    } else {
        endpoint_known = reconcile_normal(ctx, &view, &mut init, &mut status, &mut out)?;
        None
    };
    status.initialization = Some(init);
    set_conditions(
        &view,
        &mut status,
        deletion,
        snapshot.workload(),
        snapshot.now(),
    );
    set_phase(&view, &mut status, endpoint_known, &mut out);
    status.observed_generation = cluster.metadata.generation;
    if Some(&status) != cluster.status.as_ref() {
        let mut s = cluster.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(out)
}

fn reconcile_normal(
    ctx: &Context<'_>,
    view: &View,
    init: &mut ClusterInitialization,
    status: &mut ClusterStatus,
    out: &mut Outcome,
) -> Result<bool, Error> {
    let cluster = &view.cluster;
    let mut endpoint = cluster.spec.endpoint().cloned();
    for lookup in [&view.infra, &view.control_plane] {
        match lookup {
            Lookup::Found(r, o) => match adopt(cluster, o) {
                Ok(Some(patch)) => {
                    out.apply(&patch)?;
                }
                Ok(None) => {}
                Err(other) => {
                    out.event(
                        cluster.object_ref(),
                        EventType::Warning,
                        "FailedAdopt",
                        &format!(
                            "{} {} is controlled by {other}, not by this Cluster",
                            r.kind, r.name
                        ),
                    );
                }
            },
            Lookup::Missing(r) => {
                // Its creation enqueues this Cluster (referenced-by watch).
                ctx.info(format!("could not find {} {}, waiting", r.kind, r.name));
            }
            Lookup::NotReferenced | Lookup::Unsupported(_) => {}
        }
    }
    // Infrastructure.
    match &view.infra {
        Lookup::NotReferenced if cluster.spec.topology.is_none() => {
            init.infrastructure_provisioned = Some(true)
        }
        Lookup::Found(_, infra) if bool_at(infra, "/status/initialization/provisioned") => {
            if endpoint.is_none() {
                endpoint = endpoint_of(infra);
            }
            if let Some(fd) = infra
                .pointer("/status/failureDomains")
                .and_then(Value::as_array)
            {
                status.failure_domains = Some(fd.clone());
            }
            if init.infrastructure_provisioned != Some(true) {
                out.event(
                    cluster.object_ref(),
                    EventType::Normal,
                    "InfrastructureReady",
                    &format!(
                        "Cluster {} InfrastructureReady is now True",
                        cluster.metadata.name
                    ),
                );
                init.infrastructure_provisioned = Some(true);
            }
        }
        _ => {}
    }
    // Control plane.
    if let Some(cp) = view.control_plane.object() {
        if bool_at(cp, "/status/initialization/controlPlaneInitialized") {
            init.control_plane_initialized = Some(true);
        }
        if endpoint.is_none() {
            endpoint = endpoint_of(cp);
        }
        status.control_plane = Some(ReplicaCounters {
            desired_replicas: i32_at(cp, "/spec/replicas"),
            replicas: i32_at(cp, "/status/replicas"),
            up_to_date_replicas: i32_at(cp, "/status/upToDateReplicas"),
            ready_replicas: i32_at(cp, "/status/readyReplicas"),
            available_replicas: i32_at(cp, "/status/availableReplicas"),
            extra: status
                .control_plane
                .take()
                .map(|c| c.extra)
                .unwrap_or_default(),
        });
    } else if matches!(view.control_plane, Lookup::NotReferenced)
        && view
            .machines
            .iter()
            .any(|m| m.is_control_plane() && m.status().node_ref.is_some())
    {
        // Without a control-plane object the first control-plane Machine
        // with a Node initializes the control plane.
        init.control_plane_initialized = Some(true);
    }
    // Workers, from MachineDeployments.
    if !view.machine_deployments.is_empty() {
        let sum = |f: &dyn Fn(&MachineDeployment) -> Option<i32>| -> Option<i32> {
            view.machine_deployments
                .iter()
                .filter_map(f)
                .reduce(|a, b| a.saturating_add(b))
        };
        status.workers = Some(ReplicaCounters {
            desired_replicas: sum(&|m| m.spec.replicas),
            replicas: sum(&|m| m.status().replicas),
            up_to_date_replicas: sum(&|m| m.status().up_to_date_replicas),
            ready_replicas: sum(&|m| m.status().ready_replicas),
            available_replicas: sum(&|m| m.status().available_replicas),
            extra: status.workers.take().map(|c| c.extra).unwrap_or_default(),
        });
    }
    if init.control_plane_initialized != Some(true) {
        init.control_plane_initialized.get_or_insert(false);
    }
    if init.infrastructure_provisioned != Some(true) {
        init.infrastructure_provisioned.get_or_insert(false);
    }
    let endpoint_known = endpoint.is_some();
    if let Some(e) = endpoint
        && cluster.spec.endpoint() != Some(&e)
    {
        let mut patch = cluster.skeleton();
        patch["spec"] = json!({"controlPlaneEndpoint": {"host": e.host, "port": e.port}});
        out.apply(&patch)?;
    }
    Ok(endpoint_known)
}

enum Deletion {
    Done,
    Waiting(&'static str, String),
}

/// CAPI's reconcileDelete: delete owned descendants and wait for every
/// worker descendant; then the control plane; then the infrastructure.
fn reconcile_delete(view: &View, out: &mut Outcome) -> Result<Deletion, Error> {
    let cluster = &view.cluster;
    let uid = cluster.metadata.uid.as_str();
    let owned = |refs: &[OwnerReference]| refs.iter().any(|r| r.uid == uid && r.kind == "Cluster");
    // Control-plane Machines belong to the control plane object when there is one.
    let cp_ref = !matches!(view.control_plane, Lookup::NotReferenced);
    let machines: Vec<&Machine> = view
        .machines
        .iter()
        .filter(|m| !cp_ref || !m.is_control_plane())
        .collect();
    let mut pending = Vec::new();
    let mut group = |kind: &str, items: Vec<(&capstan_sdk::meta::ObjectMeta, ObjectRef)>| {
        if items.is_empty() {
            return;
        }
        let names: Vec<&str> = items.iter().map(|(m, _)| m.name.as_str()).collect();
        pending.push(format!("* {kind}s: {}", names.join(", ")));
        for (m, r) in items {
            if owned(&m.owner_references) && !m.is_deleting() {
                out.delete(r);
            }
        }
    };
    group(
        "MachineDeployment",
        view.machine_deployments
            .iter()
            .map(|o| (&o.metadata, o.object_ref()))
            .collect(),
    );
    group(
        "MachineSet",
        view.machine_sets
            .iter()
            .map(|o| (&o.metadata, o.object_ref()))
            .collect(),
    );
    group(
        "Machine",
        machines
            .iter()
            .map(|o| (&o.metadata, o.object_ref()))
            .collect(),
    );
    if !pending.is_empty() {
        return Ok(Deletion::Waiting(
            cc::DELETING_WAITING_FOR_WORKERS_DELETION_REASON,
            pending.join("\n"),
        ));
    }
    for (lookup, reason) in [
        (
            &view.control_plane,
            cc::DELETING_WAITING_FOR_CONTROL_PLANE_DELETION_REASON,
        ),
        (
            &view.infra,
            cc::DELETING_WAITING_FOR_INFRASTRUCTURE_DELETION_REASON,
        ),
    ] {
        match lookup {
            Lookup::Found(r, o) => {
                if o.pointer("/metadata/deletionTimestamp").is_none() {
                    out.delete(ObjectRef::of(o));
                }
                return Ok(Deletion::Waiting(
                    reason,
                    format!("Waiting for {} to be deleted", r.kind),
                ));
            }
            Lookup::Unsupported(r) => {
                return Ok(Deletion::Waiting(
                    reason,
                    format!(
                        "Cannot delete {} {}: kind {}.{} is not supported by this plugin",
                        r.kind, r.name, r.kind, r.api_group
                    ),
                ));
            }
            Lookup::Missing(_) | Lookup::NotReferenced => {}
        }
    }
    Ok(Deletion::Done)
}

const AVAILABLE_REASONS: Reasons<'static> = Reasons {
    good: cc::AVAILABLE_REASON,
    bad: cc::NOT_AVAILABLE_REASON,
    unknown: cc::AVAILABLE_UNKNOWN_REASON,
};

/// The condition for a reference that resolved to nothing usable.
fn absent(type_: &str, lookup: &Lookup, deleting: bool, was_ready: bool) -> Option<Condition> {
    match lookup {
        Lookup::Unsupported(r) => Some(
            Condition::new(type_, UNKNOWN, capi_conditions::INTERNAL_ERROR_REASON).message(
                format!(
                    "{}.{} is not a kind this plugin reads; see docs/capi.md",
                    r.kind, r.api_group
                ),
            ),
        ),
        Lookup::Missing(r) if deleting || was_ready => Some(
            Condition::new(type_, FALSE, capi_conditions::DELETED_REASON)
                .message(format!("{} has been deleted", r.kind)),
        ),
        Lookup::Missing(r) => Some(
            Condition::new(type_, FALSE, capi_conditions::DOES_NOT_EXIST_REASON)
                .message(format!("{} does not exist", r.kind)),
        ),
        _ => None,
    }
}

fn set_conditions(
    view: &View,
    status: &mut ClusterStatus,
    deletion: Option<(&'static str, String)>,
    connection: Connection,
    now: &str,
) {
    let cluster = &view.cluster;
    let generation = cluster.metadata.generation;
    let deleting = cluster.metadata.is_deleting();
    let init = status.initialization.clone().unwrap_or_default();
    let provisioned = init.infrastructure_provisioned == Some(true);
    let cp_initialized = init.control_plane_initialized == Some(true);
    let mut new = Vec::new();

    // InfrastructureReady.
    let infra_kind = View::kind_of(&view.infra);
    new.push(match &view.infra {
        Lookup::NotReferenced => Condition::new(
            cc::INFRASTRUCTURE_READY,
            TRUE,
            cc::INFRASTRUCTURE_READY_REASON,
        ),
        Lookup::Found(_, o) => {
            let p = bool_at(o, "/status/initialization/provisioned");
            let fallback = Condition::new(
                cc::INFRASTRUCTURE_READY,
                if p { TRUE } else { FALSE },
                if p {
                    cc::INFRASTRUCTURE_READY_REASON
                } else {
                    cc::INFRASTRUCTURE_NOT_READY_REASON
                },
            )
            .message(format!(
                "{infra_kind} status.initialization.provisioned is {p}"
            ));
            capi_conditions::mirror(
                &conditions_of(o),
                "Ready",
                infra_kind,
                cc::INFRASTRUCTURE_READY,
                Some(fallback),
            )
        }
        other => absent(cc::INFRASTRUCTURE_READY, other, deleting, provisioned).unwrap_or_default(),
    });

    // ControlPlaneInitialized: once True it stays True.
    let cp_kind = View::kind_of(&view.control_plane);
    if !conditions::is_true(&status.conditions, cc::CONTROL_PLANE_INITIALIZED) {
        new.push(if cp_initialized {
            Condition::new(
                cc::CONTROL_PLANE_INITIALIZED,
                TRUE,
                cc::CONTROL_PLANE_INITIALIZED_REASON,
            )
        } else {
            let message = match &view.control_plane {
                Lookup::NotReferenced => {
                    "Waiting for the first control plane machine to have status.nodeRef set"
                        .to_owned()
                }
                Lookup::Found(..) => "Control plane not yet initialized".to_owned(),
                _ => format!("Waiting for {cp_kind} to exist"),
            };
            Condition::new(
                cc::CONTROL_PLANE_INITIALIZED,
                FALSE,
                cc::CONTROL_PLANE_NOT_INITIALIZED_REASON,
            )
            .message(message)
        });
    }

    // ControlPlaneAvailable (only with a control-plane object).
    let cp_defined = !matches!(view.control_plane, Lookup::NotReferenced);
    match &view.control_plane {
        Lookup::NotReferenced => {
            conditions::remove(&mut status.conditions, cc::CONTROL_PLANE_AVAILABLE);
        }
        Lookup::Found(_, o) => new.push(capi_conditions::mirror(
            &conditions_of(o),
            "Available",
            cp_kind,
            cc::CONTROL_PLANE_AVAILABLE,
            None,
        )),
        other => new.extend(absent(
            cc::CONTROL_PLANE_AVAILABLE,
            other,
            deleting,
            cp_initialized,
        )),
    }

    // WorkersAvailable.
    new.push(if view.machine_deployments.is_empty() {
        Condition::new(
            cc::WORKERS_AVAILABLE,
            TRUE,
            cc::WORKERS_AVAILABLE_NO_WORKERS_REASON,
        )
    } else {
        let conds: Vec<(String, Vec<Condition>)> = view
            .machine_deployments
            .iter()
            .map(|m| (m.metadata.name.clone(), m.status().conditions))
            .collect();
        capi_conditions::aggregate(
            conds.iter().map(|(n, c)| (n.as_str(), c.as_slice())),
            "Available",
            "MachineDeployment",
            cc::WORKERS_AVAILABLE,
            Reasons {
                good: cc::WORKERS_AVAILABLE_REASON,
                bad: cc::WORKERS_NOT_AVAILABLE_REASON,
                unknown: cc::WORKERS_AVAILABLE_UNKNOWN_REASON,
            },
        )
    });

    // Deleting, Paused.
    new.push(match deletion {
        None => Condition::new(cc::DELETING, FALSE, cc::NOT_DELETING_REASON),
        Some((reason, message)) => Condition::new(cc::DELETING, TRUE, reason).message(message),
    });
    new.push(Condition::new(cc::PAUSED, FALSE, cc::NOT_PAUSED_REASON));

    // RemoteConnectionProbe, from the host's cluster cache (CAPI's
    // setRemoteConnectionProbeCondition): before a first connection the
    // condition is only set when missing.
    match connection {
        Connection::Connected => new.push(Condition::new(
            REMOTE_CONNECTION_PROBE,
            TRUE,
            PROBE_SUCCEEDED_REASON,
        )),
        Connection::Unhealthy => new.push(
            Condition::new(REMOTE_CONNECTION_PROBE, FALSE, PROBE_FAILED_REASON)
                .message("Remote connection probe failed"),
        ),
        Connection::Disconnected | Connection::NotApplicable => {
            if conditions::find(&status.conditions, REMOTE_CONNECTION_PROBE).is_none() {
                new.push(
                    Condition::new(REMOTE_CONNECTION_PROBE, FALSE, PROBE_FAILED_REASON)
                        .message("Remote connection not established yet"),
                );
            }
        }
    }

    for c in new {
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now,
        );
    }

    // Available: summary of the others and the availability gates.
    let mut inputs = vec![
        Input::negative(cc::DELETING),
        Input::positive(REMOTE_CONNECTION_PROBE),
        Input::positive(cc::INFRASTRUCTURE_READY),
    ];
    if cp_defined {
        inputs.push(Input::positive(cc::CONTROL_PLANE_AVAILABLE));
    }
    inputs.push(Input::positive(cc::WORKERS_AVAILABLE));
    let gates: Vec<(String, bool)> = cluster
        .spec
        .availability_gates
        .iter()
        .flatten()
        .filter_map(|g| {
            let t = g.get("conditionType")?.as_str()?.to_owned();
            Some((
                t,
                g.get("polarity").and_then(Value::as_str) == Some("Negative"),
            ))
        })
        .collect();
    inputs.extend(gates.iter().map(|(t, neg)| Input {
        type_: t,
        negative: *neg,
    }));
    let available = capi_conditions::summary(
        &status.conditions,
        cc::AVAILABLE,
        &inputs,
        AVAILABLE_REASONS,
    );
    conditions::set(
        &mut status.conditions,
        available.observed_generation(generation),
        now,
    );
    capi_conditions::sort(&mut status.conditions);
}

/// CAPI's reconcilePhase, with an event when the phase changes.
/// `endpoint` says whether the control-plane endpoint is known (already on
/// the Cluster or written by this reconcile).
fn set_phase(view: &View, status: &mut ClusterStatus, endpoint: bool, out: &mut Outcome) {
    let cluster = &view.cluster;
    let mut phase = ClusterPhase::Pending;
    if cluster.spec.infrastructure().is_some() || cluster.spec.control_plane().is_some() {
        phase = ClusterPhase::Provisioning;
    }
    let provisioned = status
        .initialization
        .as_ref()
        .and_then(|i| i.infrastructure_provisioned)
        == Some(true);
    if provisioned && endpoint {
        phase = ClusterPhase::Provisioned;
    }
    if cluster.metadata.is_deleting() {
        phase = ClusterPhase::Deleting;
    }
    if status.phase.as_deref() != Some(phase.as_str()) {
        out.event(
            cluster.object_ref(),
            EventType::Normal,
            phase.as_str(),
            &format!("Cluster {} is {}", cluster.metadata.name, phase.as_str()),
        );
        status.phase = Some(phase.as_str().to_owned());
    }
}

#[cfg(test)]
mod tests;

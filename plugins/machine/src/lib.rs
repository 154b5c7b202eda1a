//! The Cluster API Machine reconciler: bootstrap and infrastructure, providerID, nodeRef, Node labels and annotations, phases, conditions, deletion.
//!
//! Behaviour follows CAPI's `internal/controllers/machine` at v1beta2
//! (`machine_controller_phases.go`, `machine_controller_status.go`,
//! `machine_controller_noderef.go`, `reconcileDelete`); what is implemented,
//! simplified and missing is listed in `docs/capi.md`. The bootstrap config and
//! infrastructure machine are read through the contract fields only
//! (`status.initialization.*`, `status.dataSecretName`, `spec.providerID`,
//! `status.addresses`, `status.conditions`), so another kind is one line in
//! [`BOOTSTRAP_KINDS`] or [`INFRA_KINDS`].

use capstan_sdk::capi::cluster::{
    Cluster, Machine, MachineInitialization, MachinePhase, MachineStatus, cluster_conditions,
    machine_conditions as mc,
};
use capstan_sdk::capi::conditions::{self as capi_conditions, Input, Reasons};
use capstan_sdk::capi::{
    BOOTSTRAP_GROUP, ContractVersionedObjectReference, INFRASTRUCTURE_GROUP, Object, annotations,
    finalizers, labels, time, to_value,
};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE, UNKNOWN};
use capstan_sdk::meta::{self, OwnerReference};
use capstan_sdk::{
    Connection, Context, Error, EventType, FieldPair, Gvk, KeyMapping, ObjectRef, Outcome,
    PluginInfo, Reconciler, RelationSelector, Snapshot, Verbs,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Bootstrap config kinds this plugin reads: (group, kind, relation name).
pub const BOOTSTRAP_KINDS: &[(&str, &str, &str)] =
    &[(BOOTSTRAP_GROUP, "KubeadmConfig", "bootstrap-kubeadmconfig")];
/// Infrastructure machine kinds this plugin reads: (group, kind, relation name).
pub const INFRA_KINDS: &[(&str, &str, &str)] =
    &[(INFRASTRUCTURE_GROUP, "DevMachine", "infra-devmachine")];
/// Relation: the Machine's Cluster (`spec.clusterName`).
pub const CLUSTER: &str = "cluster";
/// Relation: the workload cluster's Node whose `spec.providerID` is the Machine's.
pub const NODE: &str = "node";
/// Annotation on the Node listing the labels synced from the Machine.
pub const LABELS_FROM_MACHINE: &str = "cluster.x-k8s.io/labels-from-machine";

/// The Machine reconciler.
#[derive(Debug)]
pub struct MachineReconciler;

fn node_gvk() -> Gvk {
    Gvk::new("", "v1", "Node")
}

fn provider_id_pair() -> FieldPair {
    FieldPair {
        other: "spec.providerID".to_owned(),
        primary: "spec.providerID".to_owned(),
    }
}

impl Reconciler for MachineReconciler {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("machine", env!("CARGO_PKG_VERSION"), Machine::gvk())
            .permit(Machine::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
            .finalizer(finalizers::MACHINE)
            // CAPI HEAD's --machine-concurrency default.
            .concurrency(100);
        for ((group, kind, relation), field) in BOOTSTRAP_KINDS
            .iter()
            .map(|k| (k, "spec.bootstrap.configRef"))
            .chain(INFRA_KINDS.iter().map(|k| (k, "spec.infrastructureRef")))
        {
            let gvk = Gvk::new(group, capstan_sdk::capi::VERSION, kind);
            info = info
                // After adoption, by owner; before it (they are created
                // first, by KCP or a MachineSet), by the reference.
                .watch(gvk.clone(), KeyMapping::ControllerOwner)
                .watch(gvk.clone(), KeyMapping::ReferencedBy(field.to_owned()))
                .relation(
                    relation,
                    gvk.clone(),
                    RelationSelector::FieldRef(field.to_owned()),
                )
                .permit(gvk, Verbs::PATCH | Verbs::DELETE);
        }
        info.watch(
            Cluster::gvk(),
            KeyMapping::LabelledWithName(labels::CLUSTER_NAME.to_owned()),
        )
        .relation(
            CLUSTER,
            Cluster::gvk(),
            RelationSelector::FieldRef("spec.clusterName".to_owned()),
        )
        .watch_workload(node_gvk(), KeyMapping::FieldMatch(provider_id_pair()))
        .workload_relation(
            NODE,
            node_gvk(),
            RelationSelector::FieldMatch(provider_id_pair()),
            None,
        )
        .permit_workload(node_gvk(), Verbs::PATCH | Verbs::DELETE)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(MachineReconciler);

/// What a reference resolved to in the snapshot.
#[derive(Debug)]
enum Lookup {
    /// No such reference on the Machine.
    NotReferenced,
    /// A kind this plugin declares no relation for.
    Unsupported(ContractVersionedObjectReference),
    /// Referenced, not in the (synced) cache.
    Missing(ContractVersionedObjectReference),
    /// The object.
    Found(ContractVersionedObjectReference, Value),
}

fn lookup(
    snapshot: &Snapshot,
    r: Option<&ContractVersionedObjectReference>,
    kinds: &[(&str, &str, &str)],
) -> Result<Lookup, Error> {
    let Some(r) = r.filter(|r| r.is_defined()) else {
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

fn str_at<'a>(o: &'a Value, pointer: &str) -> Option<&'a str> {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn conditions_of(o: &Value) -> Vec<Condition> {
    o.pointer("/status/conditions")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

/// Everything one reconcile reads.
struct View {
    machine: Machine,
    cluster: Option<Cluster>,
    bootstrap: Lookup,
    infra: Lookup,
    /// The Node, when the workload relation is synced and one matches.
    node: Option<Value>,
    /// Whether the Node relation could be read (connected and synced).
    node_known: bool,
    connection: Connection,
}

impl View {
    fn read(snapshot: &Snapshot) -> Result<Self, Error> {
        let machine: Machine = snapshot.primary()?;
        if !snapshot.synced(CLUSTER) {
            return Err(Error::transient(
                "cache of relation cluster is not synced yet",
            ));
        }
        let connection = snapshot.workload();
        let node_known = connection == Connection::Connected && snapshot.synced(NODE);
        let provider_id = machine.spec.provider_id.clone().unwrap_or_default();
        let node = if node_known && !provider_id.is_empty() {
            snapshot
                .related::<Value>(NODE)?
                .into_iter()
                .find(|n| str_at(n, "/spec/providerID") == Some(provider_id.as_str()))
        } else {
            None
        };
        Ok(Self {
            cluster: snapshot.related_one(CLUSTER)?,
            bootstrap: lookup(
                snapshot,
                machine.spec.bootstrap.config_ref.as_ref(),
                BOOTSTRAP_KINDS,
            )?,
            infra: lookup(
                snapshot,
                Some(&machine.spec.infrastructure_ref),
                INFRA_KINDS,
            )?,
            node,
            node_known,
            connection,
            machine,
        })
    }
}

/// The patch that makes the Machine the controller of `object` and labels it
/// with the cluster name (CAPI's `ensureExternalOwnershipAndWatch`); `None`
/// when nothing changes; `Err` names another controller.
fn adopt(machine: &Machine, object: &Value) -> Result<Option<Value>, String> {
    let r: OwnerReference = machine.controller_reference();
    let owner = json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": {"name": r.name, "uid": r.uid}});
    let mut desired = json!({
        "apiVersion": object.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": object.get("kind").cloned().unwrap_or(Value::Null),
        "metadata": {
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "ownerReferences": object.pointer("/metadata/ownerReferences").cloned().unwrap_or(json!([])),
        },
    });
    if !meta::set_controller_reference(&mut desired, &owner) {
        let other = meta::controller_of(object)
            .map(|o| format!("{} {}", o.kind, o.name))
            .unwrap_or_default();
        return Err(other);
    }
    let refs_same =
        desired.pointer("/metadata/ownerReferences") == object.pointer("/metadata/ownerReferences");
    let cluster = machine.spec.cluster_name.as_str();
    let label_same = meta::label(object, labels::CLUSTER_NAME) == Some(cluster);
    if refs_same && label_same {
        return Ok(None);
    }
    if refs_same && let Some(m) = desired.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("ownerReferences");
    }
    meta::set_label(&mut desired, labels::CLUSTER_NAME, cluster);
    Ok(Some(desired))
}

/// Whether a Machine label is synced to its Node (CAPI's
/// `getManagedLabels`: the node-role and node-restriction domains and
/// `node.cluster.x-k8s.io`).
pub fn is_node_label(key: &str) -> bool {
    let (prefix, _) = key.split_once('/').unwrap_or(("", key));
    prefix == "node-role.kubernetes.io"
        || prefix == "node-restriction.kubernetes.io"
        || prefix.ends_with(".node-restriction.kubernetes.io")
        || prefix == "node.cluster.x-k8s.io"
        || prefix.ends_with(".node.cluster.x-k8s.io")
}

/// The Node patch CAPI's `reconcileNode` applies: annotations naming the
/// Machine and its owner, and the Machine's node labels; `None` when the
/// Node already carries them.
fn node_patch(machine: &Machine, node: &Value) -> Option<Value> {
    let m = &machine.metadata;
    let mut want_annotations = BTreeMap::from([
        (
            annotations::NODE_CLUSTER_NAME,
            machine.spec.cluster_name.clone(),
        ),
        (annotations::NODE_CLUSTER_NAMESPACE, m.namespace.clone()),
        (annotations::NODE_MACHINE, m.name.clone()),
    ]);
    if let Some(owner) = m.controller() {
        want_annotations.insert(annotations::NODE_OWNER_KIND, owner.kind.clone());
        want_annotations.insert(annotations::NODE_OWNER_NAME, owner.name.clone());
    }
    let synced: BTreeMap<&String, &String> =
        m.labels.iter().filter(|(k, _)| is_node_label(k)).collect();
    let keys: Vec<&str> = synced.keys().map(|k| k.as_str()).collect();
    let mut patch_labels = Map::new();
    for (k, v) in &synced {
        if meta::label(node, k) != Some(v.as_str()) {
            patch_labels.insert((*k).clone(), json!(v));
        }
    }
    // Labels synced before but no longer on the Machine are removed.
    if let Some(before) = meta::annotation(node, LABELS_FROM_MACHINE) {
        for k in before.split(',').filter(|k| !k.is_empty()) {
            if !synced.keys().any(|s| s.as_str() == k) && meta::label(node, k).is_some() {
                patch_labels.insert(k.to_owned(), Value::Null);
            }
        }
    }
    let mut patch_annotations = Map::new();
    for (k, v) in &want_annotations {
        if meta::annotation(node, k) != Some(v.as_str()) {
            patch_annotations.insert((*k).to_owned(), json!(v));
        }
    }
    let joined = keys.join(",");
    let before = meta::annotation(node, LABELS_FROM_MACHINE);
    if before.unwrap_or("") != joined {
        patch_annotations.insert(
            LABELS_FROM_MACHINE.to_owned(),
            if joined.is_empty() && before.is_some() {
                json!("")
            } else {
                json!(joined)
            },
        );
    }
    if patch_labels.is_empty() && patch_annotations.is_empty() {
        return None;
    }
    let mut metadata = Map::new();
    metadata.insert(
        "name".to_owned(),
        node.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    );
    if !patch_labels.is_empty() {
        metadata.insert("labels".to_owned(), Value::Object(patch_labels));
    }
    if !patch_annotations.is_empty() {
        metadata.insert("annotations".to_owned(), Value::Object(patch_annotations));
    }
    Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata}))
}

fn set_finalizer(machine: &Machine, present: bool, out: &mut Outcome) -> Result<(), Error> {
    let mut fs: Vec<String> = machine
        .metadata
        .finalizers
        .iter()
        .filter(|f| *f != finalizers::MACHINE)
        .cloned()
        .collect();
    if present {
        fs.push(finalizers::MACHINE.to_owned());
    }
    let mut patch = machine.skeleton();
    patch["metadata"]["finalizers"] = json!(fs);
    out.apply(&patch)?;
    Ok(())
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let view = View::read(snapshot)?;
    let machine = &view.machine;
    let now = snapshot.now();
    let mut out = Outcome::new();
    let deleting = machine.metadata.is_deleting();
    if view.cluster.is_none() && !deleting {
        return Err(Error::transient(format!(
            "cluster {:?} of machine {}/{} not found",
            machine.spec.cluster_name, machine.metadata.namespace, machine.metadata.name
        )));
    }
    let mut status = machine.status();
    let generation = machine.metadata.generation;
    let paused = view
        .cluster
        .as_ref()
        .is_some_and(|c| c.spec.paused == Some(true))
        || machine
            .metadata
            .annotations
            .contains_key(annotations::PAUSED);
    if paused {
        conditions::set(
            &mut status.conditions,
            Condition::new(mc::PAUSED, TRUE, mc::PAUSED_REASON).observed_generation(generation),
            now,
        );
        write_status(machine, status, &mut out)?;
        return Ok(out);
    }
    if !deleting && !machine.metadata.has_finalizer(finalizers::MACHINE) {
        set_finalizer(machine, true, &mut out)?;
        return Ok(out);
    }
    if deleting && !machine.metadata.has_finalizer(finalizers::MACHINE) {
        return Ok(out);
    }

    let deletion = if deleting {
        match reconcile_delete(ctx, &view, &mut out)? {
            None => {
                set_finalizer(machine, false, &mut out)?;
                out.event(
                    machine.object_ref(),
                    EventType::Normal,
                    "MachineDeleted",
                    &format!("Machine {} has been deleted", machine.metadata.name),
                );
                return Ok(out);
            }
            Some(stage) => Some(stage),
        }
    } else {
        reconcile_normal(ctx, &view, &mut status, &mut out)?;
        None
    };
    let provider_id = out_provider_id(&out).or_else(|| machine.spec.provider_id.clone());
    set_conditions(
        &view,
        &mut status,
        deletion,
        provider_id.as_deref(),
        now,
        &mut out,
    );
    set_phase(machine, &mut status, provider_id.as_deref(), now, &mut out);
    status.observed_generation = generation;
    write_status(machine, status, &mut out)?;
    Ok(out)
}

/// The providerID this reconcile writes onto the Machine, if any.
fn out_provider_id(out: &Outcome) -> Option<String> {
    out.applied().iter().find_map(|a| {
        let v: Value = serde_json::from_str(a).ok()?;
        (v.get("kind")? == "Machine")
            .then(|| str_at(&v, "/spec/providerID").map(str::to_owned))
            .flatten()
    })
}

fn write_status(machine: &Machine, status: MachineStatus, out: &mut Outcome) -> Result<(), Error> {
    if Some(&status) != machine.status.as_ref() {
        let mut s = machine.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

fn reconcile_normal(
    ctx: &Context<'_>,
    view: &View,
    status: &mut MachineStatus,
    out: &mut Outcome,
) -> Result<(), Error> {
    let machine = &view.machine;
    let mut init: MachineInitialization = status.initialization.clone().unwrap_or_default();
    let mut spec_patch = Map::new();

    // The Machine itself: cluster-name label; a stand-alone Machine is owned by its Cluster.
    let mut meta_patch = Map::new();
    if machine.metadata.labels.get(labels::CLUSTER_NAME) != Some(&machine.spec.cluster_name) {
        meta_patch.insert(
            "labels".to_owned(),
            json!({labels::CLUSTER_NAME: machine.spec.cluster_name}),
        );
    }
    if let Some(cluster) = &view.cluster
        && machine.metadata.controller().is_none()
        && !machine
            .metadata
            .owner_references
            .iter()
            .any(|o| o.kind == "Cluster")
    {
        let mut refs = to_value(&machine.metadata.owner_references);
        if let Some(a) = refs.as_array_mut() {
            let r = cluster.controller_reference();
            a.push(
                json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid}),
            );
        }
        meta_patch.insert("ownerReferences".to_owned(), refs);
    }

    // Bootstrap (reconcileBootstrap).
    for lookup in [&view.bootstrap, &view.infra] {
        if let Lookup::Found(r, o) = lookup {
            match adopt(machine, o) {
                Ok(Some(patch)) => {
                    out.apply(&patch)?;
                }
                Ok(None) => {}
                Err(other) => {
                    out.event(
                        machine.object_ref(),
                        EventType::Warning,
                        "FailedAdopt",
                        &format!(
                            "{} {} is controlled by {other}, not by this Machine",
                            r.kind, r.name
                        ),
                    );
                }
            }
        }
    }
    let data_secret = machine
        .spec
        .bootstrap
        .data_secret_name
        .clone()
        .filter(|s| !s.is_empty());
    match (&view.bootstrap, data_secret) {
        (_, Some(_)) => init.bootstrap_data_secret_created = Some(true),
        (Lookup::Found(_, config), None) => {
            let created = bool_at(config, "/status/initialization/dataSecretCreated");
            match str_at(config, "/status/dataSecretName") {
                Some(name) if created => {
                    spec_patch.insert("bootstrap".to_owned(), json!({"dataSecretName": name}));
                    init.bootstrap_data_secret_created = Some(true);
                }
                _ => {
                    ctx.debug(format!(
                        "machine {}: waiting for the bootstrap provider to create the data secret",
                        machine.metadata.name
                    ));
                }
            }
        }
        _ => {}
    }
    init.bootstrap_data_secret_created.get_or_insert(false);

    // Infrastructure (reconcileInfrastructure).
    if let Lookup::Found(_, infra) = &view.infra
        && bool_at(infra, "/status/initialization/provisioned")
    {
        let Some(provider_id) = str_at(infra, "/spec/providerID") else {
            return Err(Error::terminal(format!(
                "infrastructure machine of machine {} is provisioned but has no spec.providerID",
                machine.metadata.name
            )));
        };
        if machine.spec.provider_id.as_deref() != Some(provider_id) {
            spec_patch.insert("providerID".to_owned(), json!(provider_id));
        }
        if let Some(addresses) = infra.pointer("/status/addresses").and_then(Value::as_array) {
            status.addresses = Some(addresses.clone());
        }
        if let Some(fd) = str_at(infra, "/status/failureDomain")
            && machine.spec.failure_domain.as_deref() != Some(fd)
        {
            spec_patch.insert("failureDomain".to_owned(), json!(fd));
        }
        init.infrastructure_provisioned = Some(true);
    }
    init.infrastructure_provisioned.get_or_insert(false);
    status.initialization = Some(init);

    if !meta_patch.is_empty() || !spec_patch.is_empty() {
        let mut patch = machine.skeleton();
        if let Some(m) = patch["metadata"].as_object_mut() {
            m.extend(meta_patch);
        }
        if !spec_patch.is_empty() {
            patch["spec"] = Value::Object(spec_patch);
        }
        out.apply(&patch)?;
    }

    // Node (reconcileNode): nodeRef, nodeInfo, labels and annotations.
    if let Some(node) = &view.node {
        let name = str_at(node, "/metadata/name").unwrap_or_default();
        if status.node_name() != Some(name) {
            out.event(
                machine.object_ref(),
                EventType::Normal,
                "SuccessfulSetNodeRef",
                name,
            );
        }
        status.node_ref = Some(json!({"name": name}));
        if let Some(info) = node.pointer("/status/nodeInfo") {
            status.node_info = Some(info.clone());
        }
        if let Some(patch) = node_patch(machine, node) {
            out.workload_apply(&patch)?;
        }
    }
    Ok(())
}

/// A deletion stage still in progress: (reason, message).
type Stage = (&'static str, String);

/// CAPI's reconcileDelete: drain (a no-op for in-memory nodes), delete the
/// infrastructure machine and wait, then the bootstrap config and wait, then
/// the Node. `None` when everything is gone and the finalizer can go.
fn reconcile_delete(
    ctx: &Context<'_>,
    view: &View,
    out: &mut Outcome,
) -> Result<Option<Stage>, Error> {
    let machine = &view.machine;
    // Drain: in-memory Nodes run no workloads to evict, so draining has
    // nothing to do (CAPI skips it for Machines without a nodeRef too).
    for (lookup, reason) in [
        (
            &view.infra,
            mc::DELETING_WAITING_FOR_INFRASTRUCTURE_DELETION_REASON,
        ),
        (
            &view.bootstrap,
            mc::DELETING_WAITING_FOR_BOOTSTRAP_DELETION_REASON,
        ),
    ] {
        match lookup {
            Lookup::Found(r, o) => {
                if o.pointer("/metadata/deletionTimestamp").is_none() {
                    out.delete(ObjectRef::of(o));
                }
                return Ok(Some((
                    reason,
                    format!("Waiting for {} to be deleted", r.kind),
                )));
            }
            Lookup::Unsupported(r) => {
                return Ok(Some((
                    reason,
                    format!(
                        "Cannot delete {} {}: kind {}.{} is not supported by this plugin",
                        r.kind, r.name, r.kind, r.api_group
                    ),
                )));
            }
            Lookup::Missing(_) | Lookup::NotReferenced => {}
        }
    }
    // The Node goes last, once the infrastructure is gone; not when the
    // whole Cluster is being deleted (its endpoint goes with it).
    let cluster_deleting = view
        .cluster
        .as_ref()
        .is_none_or(|c| c.metadata.is_deleting());
    if let Some(node) = machine.status().node_name()
        && !cluster_deleting
    {
        if view.connection == Connection::Connected {
            if view.node.is_some() || !view.node_known {
                out.workload_delete(ObjectRef {
                    api_version: "v1".to_owned(),
                    kind: "Node".to_owned(),
                    namespace: String::new(),
                    name: node.to_owned(),
                });
            }
        } else {
            ctx.info(format!(
                "machine {}: workload cluster not connected, Node {node} not deleted",
                machine.metadata.name
            ));
        }
    }
    Ok(None)
}

const READY_REASONS: Reasons<'static> = Reasons {
    good: mc::READY_REASON,
    bad: mc::NOT_READY_REASON,
    unknown: mc::READY_UNKNOWN_REASON,
};

fn set_conditions(
    view: &View,
    status: &mut MachineStatus,
    deletion: Option<Stage>,
    provider_id: Option<&str>,
    now: &str,
    out: &mut Outcome,
) {
    let machine = &view.machine;
    let generation = machine.metadata.generation;
    let deleting = machine.metadata.is_deleting();
    let init = status.initialization.clone().unwrap_or_default();
    let mut new = Vec::new();

    // BootstrapConfigReady.
    let data_created = init.bootstrap_data_secret_created == Some(true);
    new.push(match &view.bootstrap {
        Lookup::NotReferenced => Condition::new(
            mc::BOOTSTRAP_CONFIG_READY,
            TRUE,
            mc::BOOTSTRAP_DATA_SECRET_PROVIDED_REASON,
        ),
        Lookup::Found(r, o) => {
            let fallback = Condition::new(
                mc::BOOTSTRAP_CONFIG_READY,
                if data_created { TRUE } else { FALSE },
                if data_created {
                    mc::READY_REASON
                } else {
                    mc::NOT_READY_REASON
                },
            )
            .message(if data_created {
                String::new()
            } else {
                format!(
                    "{} status.initialization.dataSecretCreated is false",
                    r.kind
                )
            });
            mirror_ready(o, &r.kind, mc::BOOTSTRAP_CONFIG_READY, fallback)
        }
        other => absent(
            mc::BOOTSTRAP_CONFIG_READY,
            other,
            deleting && data_created,
            false,
        ),
    });

    // InfrastructureReady.
    let provisioned = init.infrastructure_provisioned == Some(true);
    new.push(match &view.infra {
        Lookup::Found(r, o) => {
            let fallback = Condition::new(
                mc::INFRASTRUCTURE_READY,
                if provisioned { TRUE } else { FALSE },
                if provisioned {
                    mc::READY_REASON
                } else {
                    mc::NOT_READY_REASON
                },
            )
            .message(if provisioned {
                String::new()
            } else {
                format!("{} status.initialization.provisioned is false", r.kind)
            });
            mirror_ready(o, &r.kind, mc::INFRASTRUCTURE_READY, fallback)
        }
        other => absent(
            mc::INFRASTRUCTURE_READY,
            other,
            deleting && provisioned,
            provisioned && !deleting,
        ),
    });

    // NodeReady and NodeHealthy.
    for c in node_conditions(view, status, provider_id) {
        new.push(c);
    }

    new.push(match &deletion {
        None => Condition::new(mc::DELETING, FALSE, mc::NOT_DELETING_REASON),
        Some((reason, message)) => {
            Condition::new(mc::DELETING, TRUE, reason).message(message.clone())
        }
    });
    new.push(Condition::new(mc::UPDATING, FALSE, mc::NOT_UPDATING_REASON));
    new.push(Condition::new(mc::PAUSED, FALSE, mc::NOT_PAUSED_REASON));
    for c in new {
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now,
        );
    }

    // Ready: summary; while deleting, the Deleting stage is summarised and
    // missing referenced objects count as expected.
    let mut summary_source = status.conditions.clone();
    if deleting {
        let stage = deletion.as_ref().map_or("", |(r, _)| r);
        summary_source.retain(|c| {
            let gone = matches!(
                c.reason.as_str(),
                capi_conditions::DELETED_REASON
                    | capi_conditions::DOES_NOT_EXIST_REASON
                    | mc::NODE_DELETED_REASON
                    | mc::NODE_DOES_NOT_EXIST_REASON
            );
            !(gone
                && matches!(
                    c.type_.as_str(),
                    mc::BOOTSTRAP_CONFIG_READY | mc::INFRASTRUCTURE_READY | mc::NODE_HEALTHY
                ))
        });
        if let Some(d) = summary_source.iter_mut().find(|c| c.type_ == mc::DELETING) {
            d.message = format!("Machine deletion in progress, stage: {stage}");
        }
    }
    let mut inputs = vec![
        Input::negative(mc::DELETING),
        Input::positive(mc::BOOTSTRAP_CONFIG_READY),
        Input::positive(mc::INFRASTRUCTURE_READY),
        Input::positive(mc::NODE_HEALTHY),
    ];
    if conditions::find(&status.conditions, mc::HEALTH_CHECK_SUCCEEDED).is_some() {
        inputs.push(Input::positive(mc::HEALTH_CHECK_SUCCEEDED));
    }
    let gates: Vec<(String, bool)> = machine
        .spec
        .readiness_gates
        .iter()
        .flatten()
        .filter_map(|g| {
            Some((
                g.get("conditionType")?.as_str()?.to_owned(),
                g.get("polarity").and_then(Value::as_str) == Some("Negative"),
            ))
        })
        .collect();
    inputs.extend(gates.iter().map(|(t, neg)| Input {
        type_: t,
        negative: *neg,
    }));
    // Missing inputs of a deleting Machine were removed above on purpose.
    let inputs: Vec<Input<'_>> = if deleting {
        inputs
            .into_iter()
            .filter(|i| {
                i.type_ == mc::DELETING || conditions::find(&summary_source, i.type_).is_some()
            })
            .collect()
    } else {
        inputs
    };
    let ready = capi_conditions::summary(&summary_source, mc::READY, &inputs, READY_REASONS);
    conditions::set(
        &mut status.conditions,
        ready.observed_generation(generation),
        now,
    );

    // Available: Ready for minReadySeconds.
    let ready = conditions::find(&status.conditions, mc::READY)
        .cloned()
        .unwrap_or_default();
    let available = if ready.status != TRUE {
        Condition::new(mc::AVAILABLE, FALSE, mc::NOT_READY_REASON)
    } else {
        let min = Duration::from_secs(
            u64::try_from(machine.spec.min_ready_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let since = time::until(&ready.last_transition_time, now).unwrap_or(Duration::ZERO);
        if since >= min {
            Condition::new(mc::AVAILABLE, TRUE, mc::AVAILABLE_REASON)
        } else {
            out.requeue_after(min - since);
            Condition::new(
                mc::AVAILABLE,
                FALSE,
                mc::WAITING_FOR_MIN_READY_SECONDS_REASON,
            )
        }
    };
    conditions::set(
        &mut status.conditions,
        available.observed_generation(generation),
        now,
    );
    capi_conditions::sort(&mut status.conditions);
}

/// The object's `Ready` mirrored as `target`, with CAPI's fallback and the
/// v1beta1 `NoReasonReported` True rewritten to `Ready`.
fn mirror_ready(o: &Value, kind: &str, target: &str, fallback: Condition) -> Condition {
    let mut c = capi_conditions::mirror(&conditions_of(o), "Ready", kind, target, Some(fallback));
    if c.status == TRUE && c.reason == capi_conditions::NO_REASON_REPORTED_REASON {
        c.reason = mc::READY_REASON.to_owned();
    }
    c
}

/// The condition for a reference that resolved to nothing usable.
fn absent(type_: &str, lookup: &Lookup, deleted: bool, lost: bool) -> Condition {
    match lookup {
        Lookup::Unsupported(r) => {
            Condition::new(type_, UNKNOWN, capi_conditions::INTERNAL_ERROR_REASON).message(format!(
                "{}.{} is not a kind this plugin reads; see docs/capi.md",
                r.kind, r.api_group
            ))
        }
        Lookup::Missing(r) if lost => Condition::new(type_, FALSE, capi_conditions::DELETED_REASON)
            .message(format!(
                "{} has been deleted while the Machine still exists",
                r.kind
            )),
        Lookup::Missing(r) if deleted => {
            Condition::new(type_, FALSE, capi_conditions::DELETED_REASON)
                .message(format!("{} has been deleted", r.kind))
        }
        Lookup::Missing(r) => Condition::new(type_, FALSE, capi_conditions::DOES_NOT_EXIST_REASON)
            .message(format!("{} does not exist", r.kind)),
        // No infrastructure reference: the CRD requires one.
        _ => Condition::new(type_, FALSE, capi_conditions::DOES_NOT_EXIST_REASON)
            .message("spec.infrastructureRef is not set"),
    }
}

/// CAPI's setNodeHealthyAndReadyConditions: NodeReady and NodeHealthy.
fn node_conditions(
    view: &View,
    status: &MachineStatus,
    provider_id: Option<&str>,
) -> Vec<Condition> {
    let machine = &view.machine;
    let both = |s: &str, r: &str, m: String| {
        vec![
            Condition::new(mc::NODE_READY, s, r).message(m.clone()),
            Condition::new(mc::NODE_HEALTHY, s, r).message(m),
        ]
    };
    let cluster_status = view
        .cluster
        .as_ref()
        .map(Cluster::status)
        .unwrap_or_default();
    let infra_ready = cluster_status
        .initialization
        .as_ref()
        .and_then(|i| i.infrastructure_provisioned)
        == Some(true);
    if !infra_ready {
        return both(
            UNKNOWN,
            mc::NODE_INSPECTION_FAILED_REASON,
            "Waiting for Cluster status.initialization.infrastructureProvisioned to be true"
                .to_owned(),
        );
    }
    if !conditions::is_true(
        &cluster_status.conditions,
        cluster_conditions::CONTROL_PLANE_INITIALIZED,
    ) {
        return both(
            UNKNOWN,
            mc::NODE_INSPECTION_FAILED_REASON,
            "Waiting for Cluster control plane to be initialized".to_owned(),
        );
    }
    let has_node_conditions = conditions::find(&status.conditions, mc::NODE_READY).is_some()
        && conditions::find(&status.conditions, mc::NODE_HEALTHY).is_some();
    match view.connection {
        Connection::Disconnected | Connection::NotApplicable => {
            // Keep the last known state across a short disconnection.
            if has_node_conditions {
                return Vec::new();
            }
            return both(
                UNKNOWN,
                mc::NODE_CONNECTION_DOWN_REASON,
                "Remote connection not established yet".to_owned(),
            );
        }
        Connection::Unhealthy => {
            return both(
                UNKNOWN,
                mc::NODE_CONNECTION_DOWN_REASON,
                "Remote connection probe failed".to_owned(),
            );
        }
        Connection::Connected if !view.node_known => return Vec::new(),
        Connection::Connected => {}
    }
    if let Some(node) = &view.node {
        let node_conds: Vec<Value> = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let find = |t: &str| node_conds.iter().find(|c| c["type"] == t);
        let ready = match find("Ready") {
            Some(c) => {
                let s = c["status"].as_str().unwrap_or(UNKNOWN);
                let reason = match s {
                    TRUE => mc::NODE_READY_REASON,
                    FALSE => mc::NODE_NOT_READY_REASON,
                    _ => mc::NODE_READY_UNKNOWN_REASON,
                };
                let msg = c["message"].as_str().unwrap_or("");
                Condition::new(
                    mc::NODE_READY,
                    if matches!(s, TRUE | FALSE) {
                        s
                    } else {
                        UNKNOWN
                    },
                    reason,
                )
                .message(if s != TRUE && !msg.is_empty() {
                    format!("* Node.Ready: {msg}")
                } else {
                    String::new()
                })
            }
            None => Condition::new(mc::NODE_READY, UNKNOWN, mc::NODE_READY_UNKNOWN_REASON)
                .message("* Node.Ready: Condition not yet reported"),
        };
        return vec![ready, node_healthy(&find)];
    }
    let deleting = machine.metadata.is_deleting();
    if let Some(name) = status.node_name() {
        let m = if deleting {
            format!("Node {name} has been deleted")
        } else {
            format!("Node {name} has been deleted while the Machine still exists")
        };
        return both(FALSE, mc::NODE_DELETED_REASON, m);
    }
    if deleting {
        return both(
            UNKNOWN,
            mc::NODE_DOES_NOT_EXIST_REASON,
            "Node does not exist".to_owned(),
        );
    }
    match provider_id {
        Some(p) => both(
            UNKNOWN,
            mc::NODE_INSPECTION_FAILED_REASON,
            format!("Waiting for a Node with spec.providerID {p} to exist"),
        ),
        None => both(
            UNKNOWN,
            mc::NODE_INSPECTION_FAILED_REASON,
            format!(
                "Waiting for {} to report spec.providerID",
                machine.spec.infrastructure_ref.kind
            ),
        ),
    }
}

/// CAPI's summarizeNodeConditions over Ready, MemoryPressure, DiskPressure, PIDPressure.
fn node_healthy<'a>(find: &dyn Fn(&str) -> Option<&'a Value>) -> Condition {
    let (mut bad, mut unknown) = (0, 0);
    let mut messages = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    let mut counted = 0;
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let Some(c) = find(t) else {
            messages.push(format!("* Node.{t}: Condition not yet reported"));
            unknown += 1;
            continue;
        };
        let s = c["status"].as_str().unwrap_or(UNKNOWN);
        let good = if t == "Ready" { s == TRUE } else { s == FALSE };
        if good {
            continue;
        }
        let m = c["message"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map_or_else(|| format!("Condition is {s}"), str::to_owned);
        counted += 1;
        distinct.insert(m.clone());
        messages.push(format!("* Node.{t}: {m}"));
        if s == UNKNOWN || !matches!(s, TRUE | FALSE) {
            unknown += 1;
        } else {
            bad += 1;
        }
    }
    if counted > 1 && distinct.len() == 1 {
        messages = vec![format!(
            "* Node.AllConditions: {}",
            distinct.iter().next().cloned().unwrap_or_default()
        )];
    }
    let message = messages.join("\n");
    if bad > 0 {
        Condition::new(mc::NODE_HEALTHY, FALSE, mc::NODE_NOT_HEALTHY_REASON).message(message)
    } else if unknown > 0 {
        Condition::new(mc::NODE_HEALTHY, UNKNOWN, mc::NODE_HEALTH_UNKNOWN_REASON).message(message)
    } else {
        Condition::new(mc::NODE_HEALTHY, TRUE, mc::NODE_HEALTHY_REASON)
    }
}

/// CAPI's setMachinePhaseAndLastUpdated.
fn set_phase(
    machine: &Machine,
    status: &mut MachineStatus,
    provider_id: Option<&str>,
    now: &str,
    out: &mut Outcome,
) {
    let init = status.initialization.clone().unwrap_or_default();
    let mut phase = status
        .phase
        .clone()
        .unwrap_or_else(|| MachinePhase::Pending.as_str().to_owned());
    let data = init.bootstrap_data_secret_created == Some(true);
    let infra = init.infrastructure_provisioned == Some(true);
    if data && !infra {
        phase = MachinePhase::Provisioning.as_str().to_owned();
    }
    if provider_id.is_some_and(|p| !p.is_empty()) {
        phase = MachinePhase::Provisioned.as_str().to_owned();
    }
    if status.node_name().is_some() && infra {
        phase = MachinePhase::Running.as_str().to_owned();
    }
    if machine.metadata.is_deleting() {
        phase = MachinePhase::Deleting.as_str().to_owned();
    }
    if status.phase.as_deref() != Some(phase.as_str()) {
        out.event(
            machine.object_ref(),
            EventType::Normal,
            &phase,
            &format!("Machine {} is {phase}", machine.metadata.name),
        );
        status.phase = Some(phase);
        status.last_updated = Some(now.to_owned());
    }
}

#[cfg(test)]
mod tests;

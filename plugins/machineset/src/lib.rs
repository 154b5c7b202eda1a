//! The Cluster API MachineSet reconciler: Machines from a template to match replicas, deletion order, remediation, status.
//!
//! Behaviour follows CAPI's `internal/controllers/machineset` at v1beta2; what
//! is implemented, simplified and missing is listed in `docs/capi.md`.
//!
//! Machine names are `<machineset>-<5 characters>`, as CAPI's
//! `names.SimpleNameGenerator`, but the characters are derived from the
//! MachineSet's uid and an index (`fnv64("<uid>/<i>")`) instead of a random
//! source: a reconcile creates the lowest indexes whose names are not taken
//! by a Machine, bootstrap config or infrastructure machine of this set. A
//! retry that runs before the cache has seen the Machines created by the
//! previous reconcile therefore asks for the same names, and the host's
//! write path (which diffs against its own last writes) finds them present:
//! no duplicate is ever created. A memo counter would not have this property
//! (it advances past names whose creation the cache has not shown yet).
//!
//! Names of Machines once seen in the cache are also kept in `memo` (the
//! last [`SEEN_NAMES`] per set) and never handed out again, so a remediated
//! Machine's replacement does not take its name (and with it a workload
//! Node of that name that may not be gone yet). Only names already seen are
//! recorded, so a stale-cache retry still asks for the same names; an evicted
//! memo only makes reuse possible again, never duplicates.

use capstan_sdk::capi::cluster::{Cluster, Machine, MachineDeployment, MachineSet};
use capstan_sdk::capi::conditions::{self as capi_conditions};
use capstan_sdk::capi::fleet::{
    self, MachineTemplateSpec, remediation_conditions as rc, replica_conditions as c,
};
use capstan_sdk::capi::{
    BOOTSTRAP_GROUP, INFRASTRUCTURE_GROUP, Object, VERSION, annotations, finalizers, labels,
    to_value,
};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::meta::OwnerReference;
use capstan_sdk::{
    Context, Error, EventType, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler, RelationSelector,
    Snapshot, Verbs,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// Relation: the Machines this MachineSet controls.
pub const MACHINES: &str = "machines";
/// Relation: the Cluster named by `spec.clusterName`.
pub const CLUSTER: &str = "cluster";
/// Relation: the controlling MachineDeployment, if any.
pub const DEPLOYMENT: &str = "deployment";

/// A template kind this plugin clones: (group, template kind, template
/// relation, relation of the clones labelled with the set's name).
pub type TemplateKind = (&'static str, &'static str, &'static str, &'static str);

/// Bootstrap config templates (`spec.template.spec.bootstrap.configRef`).
pub const BOOTSTRAP_KINDS: &[TemplateKind] = &[(
    BOOTSTRAP_GROUP,
    "KubeadmConfigTemplate",
    "bootstrap-kubeadmconfigtemplate",
    "bootstrap-kubeadmconfigs",
)];
/// Infrastructure machine templates (`spec.template.spec.infrastructureRef`).
pub const INFRA_KINDS: &[TemplateKind] = &[(
    INFRASTRUCTURE_GROUP,
    "DevMachineTemplate",
    "infra-devmachinetemplate",
    "infra-devmachines",
)];

/// On old MachineSets of an `OnDelete` rollout: create no Machines
/// (CAPI's `DisableMachineCreateAnnotation`, set by the MachineDeployment).
pub const DISABLE_MACHINE_CREATE: &str = "cluster.x-k8s.io/disable-machine-create";

const BOOTSTRAP_REF: &str = "spec.template.spec.bootstrap.configRef";
const INFRA_REF: &str = "spec.template.spec.infrastructureRef";

/// How many seen Machine names a set remembers (in `memo`) to avoid reusing them.
pub const SEEN_NAMES: usize = 256;

fn seen_key(ms: &MachineSet) -> String {
    format!("machine-names/{}", ms.metadata.uid)
}

/// The Machine names of this set seen so far (from `memo`; empty when evicted).
fn seen_names(ctx: &Context<'_>, ms: &MachineSet) -> Vec<String> {
    ctx.memo_get(&seen_key(ms))
        .and_then(|b| String::from_utf8(b).ok())
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Add the names of `machines` (seen in the cache) to the set's memo.
fn remember_seen(ctx: &Context<'_>, ms: &MachineSet, machines: &[Machine]) {
    let mut seen = seen_names(ctx, ms);
    let before = seen.len();
    for m in machines {
        if !seen.contains(&m.metadata.name) {
            seen.push(m.metadata.name.clone());
        }
    }
    if seen.len() != before {
        let drop = seen.len().saturating_sub(SEEN_NAMES);
        ctx.memo_set(&seen_key(ms), seen[drop..].join("\n").as_bytes());
    }
}

/// The MachineSet reconciler.
#[derive(Debug)]
pub struct MachineSetReconciler;

fn core(kind: &str) -> Gvk {
    Gvk::new(capstan_sdk::capi::GROUP, VERSION, kind)
}

/// The kind of the object cloned from a template kind (`KubeadmConfigTemplate` -> `KubeadmConfig`).
fn cloned_kind(template_kind: &str) -> &str {
    template_kind
        .strip_suffix("Template")
        .unwrap_or(template_kind)
}

impl Reconciler for MachineSetReconciler {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("machineset", env!("CARGO_PKG_VERSION"), MachineSet::gvk())
            .permit(MachineSet::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
            .finalizer(finalizers::MACHINE_SET)
            // CAPI HEAD's --machineset-concurrency default.
            .concurrency(10)
            .watch(core("Machine"), KeyMapping::ControllerOwner)
            .relation(MACHINES, core("Machine"), RelationSelector::Owned)
            .permit(
                core("Machine"),
                Verbs::CREATE | Verbs::PATCH | Verbs::PATCH_STATUS | Verbs::DELETE,
            )
            .watch(
                Cluster::gvk(),
                KeyMapping::LabelledWithName(labels::CLUSTER_NAME.to_owned()),
            )
            .relation(
                CLUSTER,
                Cluster::gvk(),
                RelationSelector::FieldRef("spec.clusterName".to_owned()),
            )
            .relation(
                DEPLOYMENT,
                MachineDeployment::gvk(),
                RelationSelector::ControllerOwner,
            );
        for (kinds, path) in [(BOOTSTRAP_KINDS, BOOTSTRAP_REF), (INFRA_KINDS, INFRA_REF)] {
            for (group, kind, template_rel, clones_rel) in kinds {
                let template = Gvk::new(group, VERSION, kind);
                let clone = Gvk::new(group, VERSION, cloned_kind(kind));
                info = info
                    .watch(template.clone(), KeyMapping::ReferencedBy(path.to_owned()))
                    .relation(
                        template_rel,
                        template,
                        RelationSelector::FieldRef(path.to_owned()),
                    )
                    .relation(
                        clones_rel,
                        clone.clone(),
                        RelationSelector::Label(labels::MACHINE_SET_NAME.to_owned()),
                    )
                    .permit(clone, Verbs::CREATE | Verbs::PATCH);
            }
        }
        info
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(MachineSetReconciler);

fn require_synced(snapshot: &Snapshot, relations: &[&str]) -> Result<(), Error> {
    for r in relations {
        if !snapshot.synced(r) {
            return Err(Error::transient(format!(
                "cache of relation {r} is not synced yet"
            )));
        }
    }
    Ok(())
}

/// How many replicas a MachineSet wants (CAPI defaults `spec.replicas` to 1).
pub fn desired_replicas(ms: &MachineSet) -> i32 {
    ms.spec.replicas.unwrap_or(1).max(0)
}

/// The metadata/spec patch CAPI's reconcile makes before anything else: the
/// cluster-name label, an owner reference to the Cluster when no
/// MachineDeployment controls the set, the cluster-name label in the
/// selector and the template, and the finalizer. `None` when nothing changes.
fn ensure_metadata(ms: &MachineSet, cluster: Option<&Cluster>) -> Option<Value> {
    let cluster_name = ms.spec.cluster_name.as_str();
    let mut patch = ms.skeleton();
    let mut changed = false;
    if ms
        .metadata
        .labels
        .get(labels::CLUSTER_NAME)
        .map(String::as_str)
        != Some(cluster_name)
    {
        patch["metadata"]["labels"] = json!({labels::CLUSTER_NAME: cluster_name});
        changed = true;
    }
    let md_owned = ms
        .metadata
        .owner_references
        .iter()
        .any(|r| r.kind == "MachineDeployment");
    if let Some(cluster) = cluster
        && !md_owned
    {
        let mut refs = ms.metadata.owner_references.clone();
        let mut owner: OwnerReference = cluster.controller_reference();
        owner.controller = None;
        owner.block_owner_deletion = None;
        if fleet::ensure_owner_reference(&mut refs, owner) {
            patch["metadata"]["ownerReferences"] = to_value(&refs);
            changed = true;
        }
    }
    if !ms.metadata.is_deleting() && !ms.metadata.has_finalizer(finalizers::MACHINE_SET) {
        let mut fs = ms.metadata.finalizers.clone();
        fs.push(finalizers::MACHINE_SET.to_owned());
        patch["metadata"]["finalizers"] = json!(fs);
        changed = true;
    }
    let selector = ms.spec.selector.clone().unwrap_or_default();
    if selector
        .match_labels
        .get(labels::CLUSTER_NAME)
        .map(String::as_str)
        != Some(cluster_name)
    {
        patch["spec"]["selector"]["matchLabels"] = json!({labels::CLUSTER_NAME: cluster_name});
        changed = true;
    }
    let template = ms.spec.template.clone().unwrap_or_default();
    if template
        .metadata
        .labels
        .get(labels::CLUSTER_NAME)
        .map(String::as_str)
        != Some(cluster_name)
    {
        patch["spec"]["template"]["metadata"]["labels"] =
            json!({labels::CLUSTER_NAME: cluster_name});
        changed = true;
    }
    changed.then_some(patch)
}

/// Why a Machine is deleted first on scale down, most urgent first (CAPI's
/// deletion priorities: already deleting, `delete-machine` annotation,
/// remediation requested, unhealthy; then not available; then the order's
/// own criterion).
fn deletion_class(m: &Machine) -> u8 {
    let cs = m.status().conditions;
    if m.metadata.is_deleting() {
        0
    } else if m
        .metadata
        .annotations
        .contains_key(annotations::DELETE_MACHINE)
    {
        1
    } else if conditions::find(&cs, rc::OWNER_REMEDIATED).is_some_and(|c| c.status == FALSE) {
        2
    } else if !healthy(m) {
        3
    } else if !conditions::is_true(&cs, "Available") {
        // Not in CAPI's list: a Machine that is not available yet goes
        // before an available one, so a rolling update's scale down (sized
        // by available replicas) never costs availability.
        4
    } else {
        5
    }
}

/// CAPI's `isMachineHealthy`: a Node, and neither `NodeHealthy` nor
/// `HealthCheckSucceeded` False.
fn healthy(m: &Machine) -> bool {
    let s = m.status();
    let is_false = |t: &str| conditions::find(&s.conditions, t).is_some_and(|c| c.status == FALSE);
    s.node_ref.is_some() && !is_false("NodeHealthy") && !is_false(rc::HEALTH_CHECK_SUCCEEDED)
}

fn created(m: &Machine) -> &str {
    m.metadata
        .extra
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The Machines to delete to go down by `n`, in the order of `spec.deletion.order`
/// (`Random` (default), `Newest`, `Oldest`). `Random` is CAPI's "any healthy
/// Machine is as good as another"; ties are broken by name so the choice is
/// deterministic.
pub fn machines_to_delete<'a>(machines: &'a [Machine], order: &str, n: usize) -> Vec<&'a Machine> {
    let mut sorted: Vec<&Machine> = machines.iter().collect();
    sorted.sort_by(|a, b| {
        let by_class = deletion_class(a).cmp(&deletion_class(b));
        let by_age = match order {
            "Newest" => created(b).cmp(created(a)),
            "Oldest" => created(a).cmp(created(b)),
            _ => std::cmp::Ordering::Equal,
        };
        by_class
            .then(by_age)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    sorted.truncate(n);
    sorted
}

/// `n` free Machine names of set `ms`: the lowest indexes `i` whose name
/// `<ms>-<suffix(uid/i)>` is not in `taken`.
pub fn next_names(ms: &MachineSet, taken: &BTreeSet<String>, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    let mut i: u64 = 0;
    // Each index yields a distinct seed; collisions among 27^5 suffixes are
    // skipped like taken names. The bound only guards against a broken input.
    let bound = (taken.len() + n) as u64 * 4 + 64;
    while names.len() < n && i < bound {
        let name = format!(
            "{}-{}",
            ms.metadata.name,
            fleet::name_suffix(&format!("{}/{i}", ms.metadata.uid))
        );
        if !taken.contains(&name) && !names.contains(&name) {
            names.push(name);
        }
        i += 1;
    }
    names
}

/// Whether the set's template is the one its MachineDeployment wants now
/// (always, for a set without a MachineDeployment).
fn up_to_date(ms: &MachineSet, md: Option<&MachineDeployment>, now: &str) -> bool {
    let Some(md) = md else { return true };
    let want = fleet::deployment_template_hash(md, now);
    ms.metadata.labels.get(labels::MACHINE_TEMPLATE_HASH) == Some(&want)
}

/// A resolved template: its JSON and the reference the Machine gets.
struct Template {
    object: Value,
    group: &'static str,
    kind: &'static str,
}

enum Templates {
    Ready {
        bootstrap: Option<Template>,
        infra: Template,
    },
    Missing(String),
}

fn resolve_one(
    snapshot: &Snapshot,
    r: &Value,
    kinds: &[TemplateKind],
) -> Result<Result<Template, String>, Error> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    let (group, kind, name) = (s("apiGroup"), s("kind"), s("name"));
    let Some((g, k, rel, _)) = kinds.iter().find(|(g, k, _, _)| *g == group && *k == kind) else {
        return Ok(Err(format!(
            "{kind}.{group} is not a template kind this plugin clones"
        )));
    };
    require_synced(snapshot, &[rel])?;
    let found = snapshot
        .related::<Value>(rel)?
        .into_iter()
        .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
    Ok(match found {
        Some(object) => Ok(Template {
            object,
            group: g,
            kind: k,
        }),
        None => Err(format!("{kind} {name} does not exist")),
    })
}

fn resolve_templates(snapshot: &Snapshot, spec: &Value) -> Result<Templates, Error> {
    let bootstrap = match spec.pointer("/bootstrap/configRef") {
        Some(r)
            if r.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty()) =>
        {
            match resolve_one(snapshot, r, BOOTSTRAP_KINDS)? {
                Ok(t) => Some(t),
                Err(why) => return Ok(Templates::Missing(why)),
            }
        }
        _ => None,
    };
    let infra_ref = spec
        .get("infrastructureRef")
        .cloned()
        .unwrap_or(Value::Null);
    match resolve_one(snapshot, &infra_ref, INFRA_KINDS)? {
        Ok(infra) => Ok(Templates::Ready { bootstrap, infra }),
        Err(why) => Ok(Templates::Missing(why)),
    }
}

fn string_map(m: &std::collections::BTreeMap<String, String>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// The object cloned from `template` for Machine `name`, as CAPI's
/// `external.CreateFromTemplate`: `spec.template.spec` as spec, the
/// template's labels and annotations plus the Machine's, the cloned-from
/// annotations, an owner reference to the MachineSet (the Machine adopts it).
fn clone_from_template(
    t: &Template,
    ms: &MachineSet,
    name: &str,
    machine_labels: &Map<String, Value>,
    machine_annotations: &Map<String, Value>,
) -> Value {
    let o = &t.object;
    let mut lbls = o
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    lbls.extend(machine_labels.clone());
    let mut ann = o
        .pointer("/spec/template/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    ann.extend(machine_annotations.clone());
    ann.insert(
        annotations::CLONED_FROM_NAME.to_owned(),
        o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
    );
    ann.insert(
        annotations::CLONED_FROM_GROUP_KIND.to_owned(),
        Value::String(format!("{}.{}", t.kind, t.group)),
    );
    let mut owner = ms.controller_reference();
    owner.controller = None;
    owner.block_owner_deletion = None;
    json!({
        "apiVersion": o.get("apiVersion").cloned().unwrap_or_else(|| json!(format!("{}/{VERSION}", t.group))),
        "kind": cloned_kind(t.kind),
        "metadata": {
            "name": name,
            "namespace": ms.metadata.namespace,
            "labels": lbls,
            "annotations": ann,
            "ownerReferences": [owner],
        },
        "spec": o.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The Machine `name` from the set's template, with its labels (template
/// labels, `set-name`, `cluster-name`, `deployment-name` when the set has
/// one, `machine-template-hash`), annotations, controller owner reference
/// and references to its freshly cloned bootstrap config and infra machine.
fn desired_machine(
    ms: &MachineSet,
    template_spec: &Value,
    template: &MachineTemplateSpec,
    templates: (&Option<Template>, &Template),
    name: &str,
) -> (Value, Map<String, Value>, Map<String, Value>) {
    let mut lbls = string_map(&template.metadata.labels);
    lbls.insert(
        labels::MACHINE_SET_NAME.to_owned(),
        json!(fleet::label_value(&ms.metadata.name)),
    );
    lbls.insert(labels::CLUSTER_NAME.to_owned(), json!(ms.spec.cluster_name));
    for l in [
        labels::MACHINE_DEPLOYMENT_NAME,
        labels::MACHINE_TEMPLATE_HASH,
    ] {
        if let Some(v) = ms.metadata.labels.get(l) {
            lbls.entry(l.to_owned()).or_insert_with(|| json!(v));
        }
    }
    let ann = string_map(&template.metadata.annotations);
    let mut spec = template_spec.clone();
    spec["clusterName"] = json!(ms.spec.cluster_name);
    if let Some(b) = templates.0 {
        spec["bootstrap"]["configRef"] =
            json!({"apiGroup": b.group, "kind": cloned_kind(b.kind), "name": name});
    }
    let i = templates.1;
    spec["infrastructureRef"] =
        json!({"apiGroup": i.group, "kind": cloned_kind(i.kind), "name": name});
    let machine = json!({
        "apiVersion": Machine::api_version(),
        "kind": "Machine",
        "metadata": {
            "name": name,
            "namespace": ms.metadata.namespace,
            "labels": lbls,
            "annotations": ann,
            "ownerReferences": [ms.controller_reference()],
        },
        "spec": spec,
    });
    (machine, lbls, ann)
}

/// What this reconcile did about replicas, for the conditions.
#[derive(Default)]
struct Actions {
    /// Why Machines could not be created, if they could not.
    blocked: Option<(&'static str, String)>,
    created: usize,
    deleted: usize,
    remediated: Vec<String>,
    /// Machines this reconcile deletes (scale down and remediation).
    deleting: Vec<String>,
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let ms: MachineSet = snapshot.primary()?;
    let raw: Value = snapshot.primary()?;
    require_synced(snapshot, &[MACHINES, CLUSTER, DEPLOYMENT])?;
    let cluster: Option<Cluster> = snapshot
        .related::<Cluster>(CLUSTER)?
        .into_iter()
        .find(|c| c.metadata.name == ms.spec.cluster_name);
    let md: Option<MachineDeployment> = snapshot.related_one(DEPLOYMENT)?;
    let uid = ms.metadata.uid.as_str();
    let machines: Vec<Machine> = snapshot
        .related::<Machine>(MACHINES)?
        .into_iter()
        .filter(|m| m.metadata.controller().is_some_and(|o| o.uid == uid))
        .collect();
    let deleting = ms.metadata.is_deleting();
    let mut out = Outcome::new();
    if cluster.is_none() && !deleting {
        return Err(Error::transient(format!(
            "cluster {}/{} of machineset {} not found",
            ms.metadata.namespace, ms.spec.cluster_name, ms.metadata.name
        )));
    }
    if let Some(patch) = ensure_metadata(&ms, cluster.as_ref()) {
        out.apply(&patch)?;
        if !deleting && !ms.metadata.has_finalizer(finalizers::MACHINE_SET) {
            // As CAPI's EnsureFinalizer: nothing is created before deletion
            // is guaranteed to come back here.
            return Ok(out);
        }
    }
    let now = snapshot.now();
    let mut status = ms.status();
    if deleting {
        for m in machines.iter().filter(|m| !m.metadata.is_deleting()) {
            out.delete(m.object_ref());
        }
        if machines.is_empty() {
            ctx.memo_remove(&seen_key(&ms));
            let mut patch = ms.skeleton();
            let fs: Vec<&String> = ms
                .metadata
                .finalizers
                .iter()
                .filter(|f| *f != finalizers::MACHINE_SET)
                .collect();
            patch["metadata"]["finalizers"] = json!(fs);
            out.apply(&patch)?;
            ctx.info(format!(
                "machineset {}/{} deleted",
                ms.metadata.namespace, ms.metadata.name
            ));
            return Ok(out);
        }
        set_status(
            &ms,
            md.as_ref(),
            &machines,
            &Actions::default(),
            &mut status,
            now,
        );
        write_status(&ms, status, &mut out)?;
        return Ok(out);
    }

    remember_seen(ctx, &ms, &machines);
    let mut actions = Actions::default();
    remediate(&ms, md.as_ref(), &machines, now, &mut actions, &mut out)?;
    let desired = desired_replicas(&ms);
    let have = i32::try_from(machines.len()).unwrap_or(i32::MAX);
    if have < desired {
        match creation_blocked(&ms, cluster.as_ref()) {
            Some(why) => actions.blocked = Some(why),
            None => scale_up(
                snapshot,
                &ms,
                &raw,
                &seen_names(ctx, &ms),
                desired - have,
                &mut actions,
                &mut out,
            )?,
        }
    } else if have > desired {
        let order = ms
            .spec
            .deletion
            .as_ref()
            .and_then(|d| d.order.clone())
            .unwrap_or_else(|| "Random".to_owned());
        let n = usize::try_from(have - desired).unwrap_or(0);
        for m in machines_to_delete(&machines, &order, n) {
            if !m.metadata.is_deleting() && !actions.remediated.contains(&m.metadata.name) {
                out.delete(m.object_ref());
                out.event(
                    ms.object_ref(),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted machine {:?}", m.metadata.name),
                );
                actions.deleted += 1;
                actions.deleting.push(m.metadata.name.clone());
            }
        }
    }
    if actions.created > 0 || actions.deleted > 0 {
        ctx.info(format!(
            "machineset {}/{}: {} machines, want {desired}: created {}, deleted {}",
            ms.metadata.namespace, ms.metadata.name, have, actions.created, actions.deleted
        ));
    }
    set_status(&ms, md.as_ref(), &machines, &actions, &mut status, now);
    write_status(&ms, status, &mut out)?;
    Ok(out)
}

/// CAPI's `reconcileUnhealthyMachines`: Machines whose `OwnerRemediated` is
/// False (set by a MachineHealthCheck) are marked `MachineDeleting` and
/// deleted, at most the MachineDeployment's `remediation.maxInFlight` at a
/// time (Machines already deleting under remediation count as in flight).
/// Their replacements come from the normal scale up once they are gone.
fn remediate(
    ms: &MachineSet,
    md: Option<&MachineDeployment>,
    machines: &[Machine],
    now: &str,
    actions: &mut Actions,
    out: &mut Outcome,
) -> Result<(), Error> {
    let mut candidates: Vec<&Machine> = machines
        .iter()
        .filter(|m| !m.metadata.is_deleting())
        .filter(|m| fleet::owner_remediation_requested(m))
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    // A MachineSet of a MachineDeployment remediates only while it is the
    // current revision (an old one is being rolled out anyway).
    if let Some(md) = md
        && md.metadata.annotations.get(fleet::annotations::REVISION)
            != ms.metadata.annotations.get(fleet::annotations::REVISION)
    {
        return Ok(());
    }
    // Newest first, as CAPI (ties by name).
    candidates.sort_by(|a, b| {
        created(b)
            .cmp(created(a))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let in_flight = machines
        .iter()
        .filter(|m| m.metadata.is_deleting())
        // CAPI also checks the reason is MachineDeleting; any False will do
        // here, so a deletion seen before its status write still counts.
        .filter(|m| {
            conditions::find(&m.status().conditions, rc::OWNER_REMEDIATED)
                .is_some_and(|c| c.status == FALSE)
        })
        .count();
    let allowed = match md.and_then(|d| d.spec.remediation.as_ref()?.max_in_flight.clone()) {
        None => usize::MAX,
        Some(v) => {
            let replicas = md.and_then(|d| d.spec.replicas).unwrap_or(1);
            let max = v.scaled(replicas, true).map_err(|e| {
                Error::terminal(format!("machinedeployment remediation.maxInFlight: {e}"))
            })?;
            usize::try_from(max).unwrap_or(0).saturating_sub(in_flight)
        }
    };
    for m in candidates.into_iter().take(allowed) {
        let mut cs = m.status().conditions;
        conditions::set(
            &mut cs,
            Condition::new(rc::OWNER_REMEDIATED, FALSE, rc::MACHINE_DELETING_REASON)
                .message("Machine is deleting"),
            now,
        );
        // The whole list, read from the cache and changed in one entry: the
        // host's status patch is guarded by the resourceVersion it was
        // computed against, so a concurrent writer's conditions are never lost.
        let mut s = m.skeleton();
        s["status"] = json!({"conditions": cs});
        out.status(&s)?;
        out.delete(m.object_ref());
        actions.remediated.push(m.metadata.name.clone());
        actions.deleting.push(m.metadata.name.clone());
    }
    Ok(())
}

/// Why no Machine may be created now, if so: the set's
/// `disable-machine-create` annotation, or a control plane not initialized yet.
fn creation_blocked(ms: &MachineSet, cluster: Option<&Cluster>) -> Option<(&'static str, String)> {
    if ms
        .metadata
        .annotations
        .get(DISABLE_MACHINE_CREATE)
        .map(String::as_str)
        == Some("true")
    {
        return Some((
            c::MACHINE_CREATION_DISABLED_REASON,
            format!(
                "{DISABLE_MACHINE_CREATE} annotation is set (OnDelete rollout of an old MachineSet)"
            ),
        ));
    }
    let cp_initialized = cluster.and_then(|c| {
        c.status
            .as_ref()?
            .initialization
            .as_ref()?
            .control_plane_initialized
    }) == Some(true);
    (!cp_initialized).then(|| {
        (
            c::WAITING_FOR_CONTROL_PLANE_REASON,
            "Waiting for the control plane to be initialized".to_owned(),
        )
    })
}

/// Create `n` Machines (with their clones) under free names; `seen` are
/// names used before, never handed out again.
fn scale_up(
    snapshot: &Snapshot,
    ms: &MachineSet,
    raw: &Value,
    seen: &[String],
    n: i32,
    actions: &mut Actions,
    out: &mut Outcome,
) -> Result<(), Error> {
    let template_spec = raw
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let (bootstrap, infra) = match resolve_templates(snapshot, &template_spec)? {
        Templates::Ready { bootstrap, infra } => (bootstrap, infra),
        Templates::Missing(why) => {
            actions.blocked = Some((c::TEMPLATE_NOT_FOUND_REASON, why));
            return Ok(());
        }
    };
    let clone_rels: Vec<&str> = BOOTSTRAP_KINDS
        .iter()
        .chain(INFRA_KINDS)
        .map(|(_, _, _, r)| *r)
        .collect();
    require_synced(snapshot, &clone_rels)?;
    let mut taken: BTreeSet<String> = snapshot
        .related_json(MACHINES)
        .iter()
        .filter_map(|o| serde_json::from_str::<Value>(o).ok())
        .filter_map(|o| Some(o.pointer("/metadata/name")?.as_str()?.to_owned()))
        .collect();
    taken.extend(seen.iter().cloned());
    for r in clone_rels {
        for o in snapshot.related::<Value>(r)? {
            if let Some(n) = o.pointer("/metadata/name").and_then(Value::as_str) {
                taken.insert(n.to_owned());
            }
        }
    }
    let template = ms.spec.template.clone().unwrap_or_default();
    for name in next_names(ms, &taken, usize::try_from(n).unwrap_or(0)) {
        let (machine, lbls, ann) =
            desired_machine(ms, &template_spec, &template, (&bootstrap, &infra), &name);
        if let Some(b) = &bootstrap {
            out.apply(&clone_from_template(b, ms, &name, &lbls, &ann))?;
        }
        out.apply(&clone_from_template(&infra, ms, &name, &lbls, &ann))?;
        out.apply(&machine)?;
        out.event(
            ms.object_ref(),
            EventType::Normal,
            "SuccessfulCreate",
            &format!("Created machine {name:?}"),
        );
        actions.created += 1;
    }
    Ok(())
}

fn count(machines: &[Machine], type_: &str) -> i32 {
    let n = machines
        .iter()
        .filter(|m| conditions::is_true(&m.status().conditions, type_))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn set_status(
    ms: &MachineSet,
    md: Option<&MachineDeployment>,
    machines: &[Machine],
    actions: &Actions,
    status: &mut capstan_sdk::capi::cluster::ReplicaStatus,
    now: &str,
) {
    let generation = ms.metadata.generation;
    let desired = desired_replicas(ms);
    let current = i32::try_from(machines.len()).unwrap_or(i32::MAX);
    let fresh = up_to_date(ms, md, now);
    let live: Vec<&Machine> = machines
        .iter()
        .filter(|m| !m.metadata.is_deleting())
        .collect();
    // Ready and available count only Machines that stay: one being deleted
    // (before, or by this reconcile) is about to stop serving, and the
    // MachineDeployment sizes a rolling update's scale down by these counts.
    let staying: Vec<Machine> = live
        .iter()
        .filter(|m| !actions.deleting.contains(&m.metadata.name))
        .map(|m| (*m).clone())
        .collect();
    status.replicas = Some(current);
    status.ready_replicas = Some(count(&staying, "Ready"));
    status.available_replicas = Some(count(&staying, "Available"));
    status.up_to_date_replicas = Some(if fresh {
        i32::try_from(live.len()).unwrap_or(i32::MAX)
    } else {
        0
    });
    status.selector = Some(
        ms.spec
            .selector
            .clone()
            .unwrap_or_default()
            .to_selector_string(),
    );
    status.observed_generation = generation;

    let deleting = ms.metadata.is_deleting();
    let mut new = Vec::new();
    new.push(if current < desired && !deleting {
        let mut msg = format!("Scaling up from {current} to {desired} replicas");
        if let Some((_, why)) = &actions.blocked {
            msg.push_str(&format!(" is blocked because:\n* {why}"));
        }
        Condition::new(c::SCALING_UP, TRUE, c::SCALING_UP_REASON).message(msg)
    } else {
        Condition::new(c::SCALING_UP, FALSE, c::NOT_SCALING_UP_REASON)
    });
    let target = if deleting { 0 } else { desired };
    new.push(fleet::scaling_down(current, target));
    new.push(fleet::machines_ready(machines));
    new.push(if live.is_empty() {
        Condition::new(c::MACHINES_UP_TO_DATE, TRUE, c::NO_REPLICAS_REASON)
    } else if fresh {
        Condition::new(c::MACHINES_UP_TO_DATE, TRUE, c::UP_TO_DATE_REASON)
    } else {
        let s = if live.len() == 1 { "" } else { "s" };
        Condition::new(c::MACHINES_UP_TO_DATE, FALSE, c::NOT_UP_TO_DATE_REASON).message(format!(
            "* Machine{s} {}: Machine template is not the MachineDeployment's current template",
            fleet::name_list(live.iter().map(|m| m.metadata.name.as_str()))
        ))
    });
    new.push(fleet::remediating(machines));
    // `MachinesCreated` is v1beta1 vocabulary: it lives in
    // `status.deprecated.v1beta1.conditions`, not among the v1beta2 conditions
    // (where earlier Capstan builds wrote it: removed from there on sight).
    conditions::remove(&mut status.conditions, c::MACHINES_CREATED);
    if !deleting {
        let created = match &actions.blocked {
            Some((reason, why)) => V1beta1Condition {
                status: FALSE,
                severity: if *reason == c::TEMPLATE_NOT_FOUND_REASON {
                    "Error"
                } else {
                    "Info"
                },
                reason,
                message: why,
            },
            None => V1beta1Condition {
                status: TRUE,
                severity: "",
                reason: "",
                message: "",
            },
        };
        set_v1beta1_condition(status, c::MACHINES_CREATED, &created, now);
    }
    new.push(if deleting {
        let s = if machines.len() == 1 { "" } else { "s" };
        Condition::new(c::DELETING, TRUE, c::DELETING_REASON)
            .message(format!("Deleting {} Machine{s}", machines.len()))
    } else {
        Condition::new(c::DELETING, FALSE, c::NOT_DELETING_REASON)
    });
    new.push(Condition::new(c::PAUSED, FALSE, c::NOT_PAUSED_REASON));
    for cond in new {
        conditions::set(
            &mut status.conditions,
            cond.observed_generation(generation),
            now,
        );
    }
    capi_conditions::sort(&mut status.conditions);
}

/// A Cluster API v1beta1 condition (`api/core/v1beta1`): `severity` is set
/// only when `status` is False; `reason` and `message` may be empty.
#[derive(Debug)]
struct V1beta1Condition<'a> {
    status: &'a str,
    severity: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// Sets the v1beta1 condition `type_` in `status.deprecated.v1beta1.conditions`,
/// keeping every other field there; its `lastTransitionTime` moves only when
/// its status changes.
fn set_v1beta1_condition(
    status: &mut capstan_sdk::capi::cluster::ReplicaStatus,
    type_: &str,
    new: &V1beta1Condition<'_>,
    now: &str,
) {
    let mut deprecated = match status.extra.remove("deprecated") {
        Some(d) if d.is_object() => d,
        _ => json!({}),
    };
    if !deprecated["v1beta1"].is_object() {
        deprecated["v1beta1"] = json!({});
    }
    if !deprecated["v1beta1"]["conditions"].is_array() {
        deprecated["v1beta1"]["conditions"] = json!([]);
    }
    if let Some(list) = deprecated["v1beta1"]["conditions"].as_array_mut() {
        upsert_v1beta1(list, type_, new, now);
    }
    status.extra.insert("deprecated".into(), deprecated);
}

fn upsert_v1beta1(list: &mut Vec<Value>, type_: &str, new: &V1beta1Condition<'_>, now: &str) {
    let old = list.iter().position(|c| c["type"] == type_);
    let since = match old.map(|i| &list[i]) {
        Some(o) if o["status"] == new.status && o["lastTransitionTime"].is_string() => {
            o["lastTransitionTime"].clone()
        }
        _ => json!(now),
    };
    let mut cond = Map::new();
    cond.insert("type".into(), json!(type_));
    cond.insert("status".into(), json!(new.status));
    for (k, v) in [
        ("severity", new.severity),
        ("reason", new.reason),
        ("message", new.message),
    ] {
        if !v.is_empty() {
            cond.insert(k.into(), json!(v));
        }
    }
    cond.insert("lastTransitionTime".into(), since);
    match old {
        Some(i) => list[i] = Value::Object(cond),
        None => list.push(Value::Object(cond)),
    }
}

fn write_status(
    ms: &MachineSet,
    status: capstan_sdk::capi::cluster::ReplicaStatus,
    out: &mut Outcome,
) -> Result<(), Error> {
    if Some(&status) != ms.status.as_ref() {
        let mut s = ms.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

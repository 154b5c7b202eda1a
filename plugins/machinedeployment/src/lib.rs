//! The Cluster API MachineDeployment reconciler: MachineSets per template hash, rolling and on-delete rollouts, revisions, status.
//!
//! Behaviour follows CAPI's `internal/controllers/machinedeployment` at
//! v1beta2 (the rollout arithmetic is `mdutil`'s, itself Kubernetes'
//! Deployment controller's); what is implemented, simplified and missing is
//! listed in `docs/capi.md`.
//!
//! Each reconcile takes one safe step from what the MachineSets report:
//! the new MachineSet grows only while the total of `spec.replicas` stays
//! within `replicas + maxSurge`, and old MachineSets shrink only by what is
//! available above `replicas - maxUnavailable` (their unavailable replicas
//! first). The next step comes when a MachineSet's status changes (watch on
//! MachineSets by controller owner), so the rollout needs no requeue.

use capstan_sdk::capi::cluster::{Cluster, Machine, MachineDeployment, MachineSet, ReplicaStatus};
use capstan_sdk::capi::conditions::{self as capi_conditions};
use capstan_sdk::capi::fleet::{self, IntOrString, annotations as fa, replica_conditions as c};
use capstan_sdk::capi::{Object, VERSION, finalizers, labels, to_value};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::meta::OwnerReference;
use capstan_sdk::{
    Context, Error, EventType, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler, RelationSelector,
    Snapshot, Verbs,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Relation: the MachineSets this MachineDeployment controls.
pub const MACHINE_SETS: &str = "machine-sets";
/// Relation: the Machines labelled with this MachineDeployment's name.
pub const MACHINES: &str = "machines";
/// Relation: the Cluster named by `spec.clusterName`.
pub const CLUSTER: &str = "cluster";
/// On old MachineSets of an `OnDelete` rollout: create no Machines
/// (CAPI's `DisableMachineCreateAnnotation`).
pub const DISABLE_MACHINE_CREATE: &str = "cluster.x-k8s.io/disable-machine-create";

/// The MachineDeployment reconciler.
#[derive(Debug)]
pub struct MachineDeploymentReconciler;

fn core(kind: &str) -> Gvk {
    Gvk::new(capstan_sdk::capi::GROUP, VERSION, kind)
}

impl Reconciler for MachineDeploymentReconciler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "machinedeployment",
            env!("CARGO_PKG_VERSION"),
            MachineDeployment::gvk(),
        )
        .permit(MachineDeployment::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
        .finalizer(finalizers::MACHINE_DEPLOYMENT)
        // CAPI HEAD's --machinedeployment-concurrency default.
        .concurrency(10)
        .watch(core("MachineSet"), KeyMapping::ControllerOwner)
        .relation(MACHINE_SETS, core("MachineSet"), RelationSelector::Owned)
        .permit(
            core("MachineSet"),
            Verbs::CREATE | Verbs::PATCH | Verbs::DELETE,
        )
        .watch(
            core("Machine"),
            KeyMapping::Label(labels::MACHINE_DEPLOYMENT_NAME.to_owned()),
        )
        .relation(
            MACHINES,
            core("Machine"),
            RelationSelector::Label(labels::MACHINE_DEPLOYMENT_NAME.to_owned()),
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
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(MachineDeploymentReconciler);

/// The rollout strategy with its limits resolved against `spec.replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `RollingUpdate` with resolved `maxSurge` and `maxUnavailable`.
    RollingUpdate {
        /// Replicas allowed above `spec.replicas`.
        max_surge: i32,
        /// Replicas allowed to be unavailable.
        max_unavailable: i32,
    },
    /// `OnDelete`: old Machines go only when someone deletes them.
    OnDelete,
}

impl Strategy {
    fn max_surge(self) -> i32 {
        match self {
            Self::RollingUpdate { max_surge, .. } => max_surge,
            Self::OnDelete => 0,
        }
    }

    fn max_unavailable(self) -> i32 {
        match self {
            Self::RollingUpdate {
                max_unavailable, ..
            } => max_unavailable,
            Self::OnDelete => 0,
        }
    }
}

/// The desired replicas (CAPI defaults `spec.replicas` to 1).
pub fn desired_replicas(md: &MachineDeployment) -> i32 {
    md.spec.replicas.unwrap_or(1).max(0)
}

/// `mdutil.ResolveFenceposts` + `MaxSurge`/`MaxUnavailable`: defaults
/// `maxSurge` 1 and `maxUnavailable` 0 (CAPI's webhook defaults); a percent
/// of `maxSurge` rounds up, of `maxUnavailable` down; both zero makes
/// `maxUnavailable` 1; `maxUnavailable` is at most `spec.replicas`.
pub fn strategy(md: &MachineDeployment) -> Result<Strategy, Error> {
    let s = md
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.strategy.clone())
        .unwrap_or_default();
    match s.type_.as_deref().unwrap_or("RollingUpdate") {
        "OnDelete" => Ok(Strategy::OnDelete),
        "RollingUpdate" => {
            let replicas = desired_replicas(md);
            let ru = s.rolling_update.unwrap_or_default();
            let bad = |field: &str, e: String| {
                Error::terminal(format!(
                    "machinedeployment {}: spec.rollout.strategy.rollingUpdate.{field}: {e}",
                    md.metadata.name
                ))
            };
            let surge = ru
                .max_surge
                .unwrap_or(IntOrString::Int(1))
                .scaled(replicas, true)
                .map_err(|e| bad("maxSurge", e))?
                .max(0);
            let mut unavailable = ru
                .max_unavailable
                .unwrap_or(IntOrString::Int(0))
                .scaled(replicas, false)
                .map_err(|e| bad("maxUnavailable", e))?
                .max(0);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            Ok(Strategy::RollingUpdate {
                max_surge: surge,
                max_unavailable: unavailable.min(replicas),
            })
        }
        other => Err(Error::terminal(format!(
            "machinedeployment {}: unknown rollout strategy {other:?}",
            md.metadata.name
        ))),
    }
}

/// What a MachineSet reports, as the rollout arithmetic needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `status.replicas` (Machines that exist).
    pub current: i32,
    /// `metadata.creationTimestamp`, for oldest-first ordering.
    pub created: String,
}

impl SetState {
    fn of(ms: &MachineSet) -> Self {
        let s = ms.status();
        Self {
            name: ms.metadata.name.clone(),
            replicas: ms.spec.replicas.unwrap_or(1).max(0),
            available: s.available_replicas.unwrap_or(0).max(0),
            current: s.replicas.unwrap_or(0).max(0),
            created: ms
                .metadata
                .extra
                .get("creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }
    }
}

/// The replicas one rolling-update step gives the new MachineSet (`None`:
/// to be created) and the old ones (oldest first), as CAPI's
/// `rolloutRolling`: `reconcileNewMachineSet` (`NewMSNewReplicas`), then
/// `reconcileOldMachineSets` (`cleanupUnhealthyReplicas`, then
/// `scaleDownOldMachineSetsForRollingUpdate`).
pub fn rolling_step(
    desired: i32,
    max_surge: i32,
    max_unavailable: i32,
    new: Option<&SetState>,
    old: &[SetState],
) -> (i32, Vec<i32>) {
    let mut new_replicas = new.map_or(0, |n| n.replicas);
    let mut old_replicas: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    // reconcileNewMachineSet.
    if new_replicas > desired {
        new_replicas = desired;
    } else if new_replicas < desired {
        let total: i32 = old_replicas.iter().sum::<i32>() + new_replicas;
        let max_total = desired + max_surge;
        if total < max_total {
            new_replicas += (max_total - total).min(desired - new_replicas);
        }
    }
    // reconcileOldMachineSets.
    let old_total: i32 = old_replicas.iter().sum();
    if old_total == 0 {
        return (new_replicas, old_replicas);
    }
    let all = old_total + new_replicas;
    let min_available = desired - max_unavailable;
    let new_unavailable = (new_replicas - new.map_or(0, |n| n.available)).max(0);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return (new_replicas, old_replicas);
    }
    // cleanupUnhealthyReplicas: drop old replicas that are not available.
    let mut cleaned = 0;
    for (i, s) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = old_replicas[i] - s.available.min(old_replicas[i]);
        if unhealthy <= 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        old_replicas[i] -= n;
        cleaned += n;
    }
    // scaleDownOldMachineSetsForRollingUpdate: only what is available above
    // the minimum. Also (our addition) never more than `maxScaledDown` left
    // after the clean up: that bound is computed from `spec.replicas`, while
    // an old MachineSet's `availableReplicas` may still count Machines its
    // last scale down is removing (its status lags its spec), which alone
    // would let two consecutive reconciles remove the same availability twice.
    let available: i32 =
        old.iter().map(|s| s.available).sum::<i32>() + new.map_or(0, |n| n.available);
    let mut budget = (available - min_available).min(max_scaled_down - cleaned);
    for r in &mut old_replicas {
        if budget <= 0 {
            break;
        }
        let n = (*r).min(budget);
        *r -= n;
        budget -= n;
    }
    (new_replicas, old_replicas)
}

/// One `OnDelete` step: old MachineSets never grow back (they follow their
/// Machines down when someone deletes one), and give up their excess when
/// the total is above `desired`; the new MachineSet takes the rest.
pub fn on_delete_step(desired: i32, new: Option<&SetState>, old: &[SetState]) -> (i32, Vec<i32>) {
    let mut old_replicas: Vec<i32> = old.iter().map(|s| s.replicas.min(s.current)).collect();
    let mut excess = old_replicas.iter().sum::<i32>() + new.map_or(0, |n| n.replicas) - desired;
    for r in &mut old_replicas {
        if excess <= 0 {
            break;
        }
        let n = (*r).min(excess);
        *r -= n;
        excess -= n;
    }
    let new_replicas = (desired - old_replicas.iter().sum::<i32>()).max(0);
    (new_replicas, old_replicas)
}

fn revision(ms: &MachineSet) -> i64 {
    ms.metadata
        .annotations
        .get(fa::REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn string_map(m: &BTreeMap<String, String>) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// The defaults CAPI's webhook and reconcile put on a MachineDeployment:
/// cluster-name label, owner reference to the Cluster (not controller),
/// cluster-name and deployment-name in the selector and the template
/// labels, the finalizer, and the revision annotation. `None` when nothing changes.
fn ensure_metadata(
    md: &MachineDeployment,
    cluster: Option<&Cluster>,
    rev: Option<i64>,
) -> Option<Value> {
    let name = md.metadata.name.as_str();
    let cluster_name = md.spec.cluster_name.as_str();
    let mut patch = md.skeleton();
    let mut changed = false;
    if md
        .metadata
        .labels
        .get(labels::CLUSTER_NAME)
        .map(String::as_str)
        != Some(cluster_name)
    {
        patch["metadata"]["labels"] = json!({labels::CLUSTER_NAME: cluster_name});
        changed = true;
    }
    if let Some(rev) = rev
        && md.metadata.annotations.get(fa::REVISION) != Some(&rev.to_string())
    {
        patch["metadata"]["annotations"] = json!({fa::REVISION: rev.to_string()});
        changed = true;
    }
    if let Some(cluster) = cluster {
        let mut refs = md.metadata.owner_references.clone();
        let mut owner: OwnerReference = cluster.controller_reference();
        owner.controller = None;
        owner.block_owner_deletion = None;
        if fleet::ensure_owner_reference(&mut refs, owner) {
            patch["metadata"]["ownerReferences"] = to_value(&refs);
            changed = true;
        }
    }
    if !md.metadata.is_deleting() && !md.metadata.has_finalizer(finalizers::MACHINE_DEPLOYMENT) {
        let mut fs = md.metadata.finalizers.clone();
        fs.push(finalizers::MACHINE_DEPLOYMENT.to_owned());
        patch["metadata"]["finalizers"] = json!(fs);
        changed = true;
    }
    let want = [
        (labels::CLUSTER_NAME, cluster_name),
        (labels::MACHINE_DEPLOYMENT_NAME, name),
    ];
    let selector = md.spec.selector.clone().unwrap_or_default();
    let template = md.spec.template.clone().unwrap_or_default();
    for (k, v) in want {
        if selector.match_labels.get(k).map(String::as_str) != Some(v) {
            patch["spec"]["selector"]["matchLabels"][k] = json!(v);
            changed = true;
        }
        if template.metadata.labels.get(k).map(String::as_str) != Some(v) {
            patch["spec"]["template"]["metadata"]["labels"][k] = json!(v);
            changed = true;
        }
    }
    changed.then_some(patch)
}

/// The name of the MachineSet for template hash `hash`: `<md>-<SafeEncodeString(hash)>`
/// (as CAPI and Kubernetes Deployments name theirs).
pub fn machine_set_name(md: &MachineDeployment, hash: &str) -> String {
    format!("{}-{}", md.metadata.name, fleet::safe_encode(hash))
}

/// The new MachineSet: template, selector and labels with the hash, the
/// MachineDeployment as controller, revision and replica annotations.
fn new_machine_set(
    md: &MachineDeployment,
    raw: &Value,
    hash: &str,
    replicas: i32,
    rev: i64,
    max_replicas: i32,
) -> Value {
    let template = md.spec.template.clone().unwrap_or_default();
    let mut tlabels = string_map(&template.metadata.labels);
    tlabels.insert(labels::MACHINE_TEMPLATE_HASH.to_owned(), json!(hash));
    let mut mlabels = tlabels.clone();
    mlabels.insert(labels::CLUSTER_NAME.to_owned(), json!(md.spec.cluster_name));
    mlabels.insert(
        labels::MACHINE_DEPLOYMENT_NAME.to_owned(),
        json!(fleet::label_value(&md.metadata.name)),
    );
    let mut selector = to_value(&md.spec.selector.clone().unwrap_or_default());
    selector["matchLabels"][labels::MACHINE_TEMPLATE_HASH] = json!(hash);
    let mut spec = json!({
        "clusterName": md.spec.cluster_name,
        "replicas": replicas,
        "selector": selector,
        "template": {
            "metadata": {"labels": tlabels, "annotations": string_map(&template.metadata.annotations)},
            "spec": raw.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        },
    });
    for k in ["deletion", "machineNaming"] {
        if let Some(v) = raw.pointer(&format!("/spec/{k}")) {
            spec[k] = v.clone();
        }
    }
    json!({
        "apiVersion": MachineSet::api_version(),
        "kind": "MachineSet",
        "metadata": {
            "name": machine_set_name(md, hash),
            "namespace": md.metadata.namespace,
            "labels": mlabels,
            "annotations": {
                fa::REVISION: rev.to_string(),
                fa::DESIRED_REPLICAS: desired_replicas(md).to_string(),
                fa::MAX_REPLICAS: max_replicas.to_string(),
            },
            "ownerReferences": [md.controller_reference()],
        },
        "spec": spec,
    })
}

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

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let md: MachineDeployment = snapshot.primary()?;
    let raw: Value = snapshot.primary()?;
    require_synced(snapshot, &[MACHINE_SETS, MACHINES, CLUSTER])?;
    let uid = md.metadata.uid.as_str();
    let mut sets: Vec<MachineSet> = snapshot
        .related::<MachineSet>(MACHINE_SETS)?
        .into_iter()
        .filter(|s| s.metadata.controller().is_some_and(|o| o.uid == uid))
        .collect();
    // Oldest first, as CAPI's MachineSetsByCreationTimestamp.
    sets.sort_by(|a, b| {
        let t = |s: &MachineSet| SetState::of(s).created;
        t(a).cmp(&t(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let machines: Vec<Machine> = snapshot
        .related::<Machine>(MACHINES)?
        .into_iter()
        .filter(|m| fleet::of_deployment(&m.metadata, &fleet::label_value(&md.metadata.name)))
        .collect();
    let cluster: Option<Cluster> = snapshot
        .related::<Cluster>(CLUSTER)?
        .into_iter()
        .find(|c| c.metadata.name == md.spec.cluster_name);
    let deleting = md.metadata.is_deleting();
    let mut out = Outcome::new();
    let now = snapshot.now();
    let mut status = md.status();

    if deleting {
        if let Some(patch) = ensure_metadata(&md, cluster.as_ref(), None) {
            out.apply(&patch)?;
        }
        for s in sets.iter().filter(|s| !s.metadata.is_deleting()) {
            out.delete(s.object_ref());
        }
        if sets.is_empty() {
            let mut patch = md.skeleton();
            let fs: Vec<&String> = md
                .metadata
                .finalizers
                .iter()
                .filter(|f| *f != finalizers::MACHINE_DEPLOYMENT)
                .collect();
            patch["metadata"]["finalizers"] = json!(fs);
            out.apply(&patch)?;
            ctx.info(format!(
                "machinedeployment {}/{} deleted",
                md.metadata.namespace, md.metadata.name
            ));
            return Ok(out);
        }
        let strategy = strategy(&md).unwrap_or(Strategy::OnDelete);
        set_status(&md, &sets, &machines, None, strategy, &mut status, now);
        write_status(&md, status, &mut out)?;
        return Ok(out);
    }
    let Some(cluster) = cluster else {
        return Err(Error::transient(format!(
            "cluster {}/{} of machinedeployment {} not found",
            md.metadata.namespace, md.spec.cluster_name, md.metadata.name
        )));
    };
    if !md.metadata.has_finalizer(finalizers::MACHINE_DEPLOYMENT) {
        // As CAPI's EnsureFinalizer: the finalizer (with the defaults) first, alone.
        if let Some(patch) = ensure_metadata(&md, Some(&cluster), None) {
            out.apply(&patch)?;
        }
        return Ok(out);
    }

    let strategy = strategy(&md)?;
    let desired = desired_replicas(&md);
    let template = md.spec.template.clone().unwrap_or_default();
    let hash = fleet::deployment_template_hash(&md, now);
    if let Some(secs) = fleet::rollout_after_in(&md, now) {
        // A time-based wait: roll out when spec.rollout.after comes.
        out.requeue_after(std::time::Duration::from_secs(
            u64::try_from(secs).unwrap_or(0),
        ));
    }
    let live: Vec<&MachineSet> = sets.iter().filter(|s| !s.metadata.is_deleting()).collect();
    let new_set = live
        .iter()
        .find(|s| s.metadata.labels.get(labels::MACHINE_TEMPLATE_HASH) == Some(&hash))
        .copied();
    let old_sets: Vec<&MachineSet> = live
        .iter()
        .filter(|s| new_set.is_none_or(|n| n.metadata.uid != s.metadata.uid))
        .copied()
        .collect();
    let max_old_rev = old_sets.iter().map(|s| revision(s)).max().unwrap_or(0);
    let paused = md.spec.paused == Some(true);
    let new_rev = match new_set {
        Some(n) if revision(n) > max_old_rev => revision(n),
        Some(_) => max_old_rev + 1,
        None if paused => max_old_rev,
        None => max_old_rev + 1,
    };
    if let Some(patch) = ensure_metadata(&md, Some(&cluster), Some(new_rev).filter(|r| *r > 0)) {
        out.apply(&patch)?;
    }

    let new_state = new_set.map(SetState::of);
    let old_states: Vec<SetState> = old_sets.iter().map(|s| SetState::of(s)).collect();
    let (new_replicas, old_replicas) = if paused {
        paused_step(desired, new_state.as_ref(), &old_states)
    } else {
        match strategy {
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            } => rolling_step(
                desired,
                max_surge,
                max_unavailable,
                new_state.as_ref(),
                &old_states,
            ),
            Strategy::OnDelete => on_delete_step(desired, new_state.as_ref(), &old_states),
        }
    };
    let max_replicas = desired + strategy.max_surge();
    match new_set {
        None if !paused => {
            let ms = new_machine_set(&md, &raw, &hash, new_replicas, new_rev, max_replicas);
            if let Some(other) = sets
                .iter()
                .find(|s| s.metadata.name == ms["metadata"]["name"])
            {
                return Err(Error::terminal(format!(
                    "machineset {} exists with another template hash ({})",
                    other.metadata.name,
                    other
                        .metadata
                        .labels
                        .get(labels::MACHINE_TEMPLATE_HASH)
                        .map_or("none", String::as_str)
                )));
            }
            ctx.info(format!(
                "machinedeployment {}/{}: new machineset {} (revision {new_rev}) with {new_replicas} replicas",
                md.metadata.namespace, md.metadata.name, ms["metadata"]["name"].as_str().unwrap_or("")
            ));
            out.apply(&ms)?;
            out.event(
                md.object_ref(),
                EventType::Normal,
                "SuccessfulCreate",
                &format!(
                    "Created MachineSet {}",
                    ms["metadata"]["name"].as_str().unwrap_or("")
                ),
            );
        }
        None => {}
        Some(n) => {
            let mut patch = n.skeleton();
            patch["spec"]["replicas"] = json!(new_replicas);
            patch["metadata"]["annotations"] = json!({
                fa::REVISION: new_rev.to_string(),
                fa::DESIRED_REPLICAS: desired.to_string(),
                fa::MAX_REPLICAS: max_replicas.to_string(),
            });
            if n.metadata.annotations.contains_key(DISABLE_MACHINE_CREATE) {
                patch["metadata"]["annotations"][DISABLE_MACHINE_CREATE] = Value::Null;
            }
            // Labels and annotations of the template, and the deletion
            // order, are propagated in place (they are not part of the hash).
            let mut tlabels = string_map(&template.metadata.labels);
            tlabels.insert(labels::MACHINE_TEMPLATE_HASH.to_owned(), json!(hash));
            patch["spec"]["template"]["metadata"] = json!({"labels": tlabels,
                "annotations": string_map(&template.metadata.annotations)});
            if let Some(d) = raw.pointer("/spec/deletion") {
                patch["spec"]["deletion"] = d.clone();
            }
            apply_if_changed(n, &patch, &mut out)?;
            scale_event(
                &md,
                &n.metadata.name,
                SetState::of(n).replicas,
                new_replicas,
                &mut out,
            );
        }
    }
    for (s, replicas) in old_sets.iter().zip(&old_replicas) {
        let st = SetState::of(s);
        if *replicas == 0 && st.replicas == 0 && st.current == 0 {
            // Scaled down and empty: CAPI deletes old MachineSets (v1beta2
            // keeps no revision history).
            out.delete(s.object_ref());
            out.event(
                md.object_ref(),
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted MachineSet {}", s.metadata.name),
            );
            continue;
        }
        let mut patch = s.skeleton();
        patch["spec"]["replicas"] = json!(replicas);
        patch["metadata"]["annotations"] = json!({
            fa::DESIRED_REPLICAS: desired.to_string(),
            fa::MAX_REPLICAS: max_replicas.to_string(),
        });
        if strategy == Strategy::OnDelete && !paused {
            patch["metadata"]["annotations"][DISABLE_MACHINE_CREATE] = json!("true");
        }
        apply_if_changed(s, &patch, &mut out)?;
        scale_event(&md, &s.metadata.name, st.replicas, *replicas, &mut out);
    }
    set_status(
        &md,
        &sets,
        &machines,
        Some(&hash),
        strategy,
        &mut status,
        now,
    );
    write_status(&md, status, &mut out)?;
    Ok(out)
}

/// Event `SuccessfulScale` when a MachineSet's replicas change, as CAPI records.
fn scale_event(md: &MachineDeployment, set: &str, from: i32, to: i32, out: &mut Outcome) {
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        out.event(
            md.object_ref(),
            EventType::Normal,
            "SuccessfulScale",
            &format!("Scaled {dir} MachineSet {set} from {from} to {to} replicas"),
        );
    }
}

/// Whether merging `patch` into `current` changes it (RFC 7386 semantics).
fn changes(current: &Value, patch: &Value) -> bool {
    match patch {
        // An absent map and an empty one are the same to the API server.
        Value::Object(p) => p.iter().any(|(k, v)| match current.get(k) {
            None if v.is_object() => changes(&json!({}), v),
            None => !v.is_null(),
            Some(c) if v.is_null() => !c.is_null(),
            Some(c) if v.is_object() => !c.is_object() || changes(c, v),
            Some(c) => c != v,
        }),
        other => current != other,
    }
}

/// Add `patch` of `ms` to the outcome only when it changes something, so a
/// steady MachineDeployment returns an empty outcome.
fn apply_if_changed(ms: &MachineSet, patch: &Value, out: &mut Outcome) -> Result<(), Error> {
    if changes(&to_value(ms), patch) {
        out.apply(patch)?;
    }
    Ok(())
}

/// `spec.paused`: no new MachineSet and no rollout; only the replica count
/// follows `spec.replicas`, on the newest MachineSet (the new one if it
/// exists), taking from the newest first when going down.
fn paused_step(desired: i32, new: Option<&SetState>, old: &[SetState]) -> (i32, Vec<i32>) {
    let mut new_replicas = new.map_or(0, |n| n.replicas);
    let mut old_replicas: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    let total = new_replicas + old_replicas.iter().sum::<i32>();
    let mut diff = desired - total;
    if diff > 0 {
        match (new, old_replicas.last_mut()) {
            (Some(_), _) => new_replicas += diff,
            (None, Some(last)) => *last += diff,
            (None, None) => {}
        }
        return (new_replicas, old_replicas);
    }
    let take = |r: &mut i32, diff: &mut i32| {
        let n = (*r).min(-*diff);
        *r -= n;
        *diff += n;
    };
    if new.is_some() {
        take(&mut new_replicas, &mut diff);
    }
    for r in old_replicas.iter_mut().rev() {
        if diff >= 0 {
            break;
        }
        take(r, &mut diff);
    }
    (new_replicas, old_replicas)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

fn set_status(
    md: &MachineDeployment,
    sets: &[MachineSet],
    machines: &[Machine],
    hash: Option<&str>,
    strategy: Strategy,
    status: &mut ReplicaStatus,
    now: &str,
) {
    let generation = md.metadata.generation;
    let desired = desired_replicas(md);
    let sum = |f: &dyn Fn(&ReplicaStatus) -> Option<i32>| -> i32 {
        sets.iter().filter_map(|s| f(&s.status())).sum()
    };
    let current = sum(&|s| s.replicas);
    let available = sum(&|s| s.available_replicas);
    let is_new = |s: &MachineSet| {
        hash.is_some_and(|h| {
            s.metadata
                .labels
                .get(labels::MACHINE_TEMPLATE_HASH)
                .map(String::as_str)
                == Some(h)
        })
    };
    let up_to_date: i32 = sets
        .iter()
        .filter(|s| is_new(s))
        .filter_map(|s| s.status().up_to_date_replicas)
        .sum();
    status.replicas = Some(current);
    status.ready_replicas = Some(sum(&|s| s.ready_replicas));
    status.available_replicas = Some(available);
    status.up_to_date_replicas = Some(up_to_date);
    status.selector = Some(
        md.spec
            .selector
            .clone()
            .unwrap_or_default()
            .to_selector_string(),
    );
    status.observed_generation = generation;
    status.phase = Some(
        match current.cmp(&desired) {
            std::cmp::Ordering::Less => "ScalingUp",
            std::cmp::Ordering::Greater => "ScalingDown",
            std::cmp::Ordering::Equal => "Running",
        }
        .to_owned(),
    );

    let deleting = md.metadata.is_deleting();
    let min_available = desired - strategy.max_unavailable();
    let mut new = Vec::new();
    new.push(if deleting {
        Condition::new(c::AVAILABLE, FALSE, c::DELETING_REASON)
    } else if available >= min_available {
        Condition::new(c::AVAILABLE, TRUE, c::AVAILABLE_REASON)
    } else {
        Condition::new(c::AVAILABLE, FALSE, c::NOT_AVAILABLE_REASON).message(format!(
            "{available} available replicas, at least {min_available} required (spec.strategy.rollout.maxUnavailable is {}, spec.replicas is {desired})",
            strategy.max_unavailable()
        ))
    });
    let stale: i32 = sets
        .iter()
        .filter(|s| !is_new(s))
        .filter_map(|s| s.status().replicas)
        .sum();
    new.push(if stale > 0 && !deleting {
        let mut msg = format!("Rolling out {stale} not up-to-date replicas");
        if md.spec.paused == Some(true) {
            msg.push_str(" (paused: spec.paused is true)");
        }
        Condition::new(c::ROLLING_OUT, TRUE, c::ROLLING_OUT_REASON).message(msg)
    } else {
        Condition::new(c::ROLLING_OUT, FALSE, c::NOT_ROLLING_OUT_REASON)
    });
    let target = if deleting { 0 } else { desired };
    new.push(if current < target {
        Condition::new(c::SCALING_UP, TRUE, c::SCALING_UP_REASON)
            .message(format!("Scaling up from {current} to {target} replicas"))
    } else {
        Condition::new(c::SCALING_UP, FALSE, c::NOT_SCALING_UP_REASON)
    });
    new.push(fleet::scaling_down(current, target));
    new.push(fleet::machines_ready(machines));
    new.push(fleet::remediating(machines));
    let outdated: Vec<&str> = machines
        .iter()
        .filter(|m| !m.metadata.is_deleting())
        .filter(|m| {
            hash.is_some_and(|h| {
                m.metadata
                    .labels
                    .get(labels::MACHINE_TEMPLATE_HASH)
                    .map(String::as_str)
                    != Some(h)
            })
        })
        .map(|m| m.metadata.name.as_str())
        .collect();
    new.push(if machines.is_empty() {
        Condition::new(c::MACHINES_UP_TO_DATE, TRUE, c::NO_REPLICAS_REASON)
    } else if outdated.is_empty() {
        Condition::new(c::MACHINES_UP_TO_DATE, TRUE, c::UP_TO_DATE_REASON)
    } else {
        Condition::new(c::MACHINES_UP_TO_DATE, FALSE, c::NOT_UP_TO_DATE_REASON).message(format!(
            "* {} {}: Machine template is not the MachineDeployment's current template",
            plural(outdated.len(), "Machine"),
            fleet::name_list(outdated.iter().copied())
        ))
    });
    new.push(if deleting {
        let mut lines = Vec::new();
        if !sets.is_empty() {
            lines.push(format!(
                "* {}: {}",
                plural(sets.len(), "MachineSet"),
                fleet::name_list(sets.iter().map(|s| s.metadata.name.as_str()))
            ));
        }
        if !machines.is_empty() {
            lines.push(format!(
                "* {}: {}",
                plural(machines.len(), "Machine"),
                fleet::name_list(machines.iter().map(|m| m.metadata.name.as_str()))
            ));
        }
        Condition::new(c::DELETING, TRUE, c::DELETING_REASON).message(lines.join("\n"))
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

fn write_status(
    md: &MachineDeployment,
    status: ReplicaStatus,
    out: &mut Outcome,
) -> Result<(), Error> {
    if Some(&status) != md.status.as_ref() {
        let mut s = md.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

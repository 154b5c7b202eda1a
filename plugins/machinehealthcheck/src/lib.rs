//! The Cluster API MachineHealthCheck reconciler: Node and Machine health checks, remediation trigger, status.
//!
//! Behaviour follows CAPI's `internal/controllers/machinehealthcheck` at
//! v1beta2; what is implemented, simplified and missing is listed in
//! `docs/capi.md`.
//!
//! Remediation is "owner remediation": an unhealthy Machine gets
//! `OwnerRemediated=False` (`WaitingForRemediation`) and its MachineSet
//! deletes and replaces it. Both conditions are written with a status patch
//! of the Machine that carries its whole condition list, read from the cache
//! with only this plugin's two types changed. The host computes the patch
//! against the cached object and guards it with that object's
//! `resourceVersion`, so a concurrent write by the Machine reconciler (or
//! the MachineSet) turns into a conflict and a retry from fresh data, never
//! into lost conditions (see docs/capi.md, "Several writers of a Machine's
//! conditions").

use capstan_sdk::capi::cluster::{Cluster, Machine};
use capstan_sdk::capi::fleet::{
    self, IntOrString, MachineHealthCheck, MachineHealthCheckStatus, annotations as fa,
    mhc_conditions as hc, remediation_conditions as rc,
};
use capstan_sdk::capi::{Object, VERSION, annotations, labels, to_value};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::meta::OwnerReference;
use capstan_sdk::{
    Connection, Context, Error, EventType, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler,
    RelationSelector, Snapshot, Verbs,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Relation: the Cluster named by `spec.clusterName`.
pub const CLUSTER: &str = "cluster";
/// Relation: the Machines matching `spec.selector`.
pub const MACHINES: &str = "machines";
/// Relation: every Node of the workload cluster.
pub const NODES: &str = "nodes";
/// `checks.nodeStartupTimeoutSeconds` when unset (CAPI's webhook default, 10 minutes).
pub const DEFAULT_NODE_STARTUP_TIMEOUT_SECONDS: i64 = 600;

/// The MachineHealthCheck reconciler.
#[derive(Debug)]
pub struct MachineHealthCheckReconciler;

impl Reconciler for MachineHealthCheckReconciler {
    fn describe() -> PluginInfo {
        let machine = Gvk::new(capstan_sdk::capi::GROUP, VERSION, "Machine");
        let node = Gvk::new("", "v1", "Node");
        PluginInfo::new(
            "machinehealthcheck",
            env!("CARGO_PKG_VERSION"),
            MachineHealthCheck::gvk(),
        )
        .permit(
            MachineHealthCheck::gvk(),
            Verbs::PATCH | Verbs::PATCH_STATUS,
        )
        // CAPI HEAD's --machinehealthcheck-concurrency default.
        .concurrency(10)
        .watch(Cluster::gvk(), KeyMapping::SameCluster)
        .relation(
            CLUSTER,
            Cluster::gvk(),
            RelationSelector::FieldRef("spec.clusterName".to_owned()),
        )
        .watch(machine.clone(), KeyMapping::SameCluster)
        .relation(
            MACHINES,
            machine.clone(),
            RelationSelector::SelectorAt("spec.selector".to_owned()),
        )
        .permit(machine, Verbs::PATCH_STATUS)
        .watch_workload(node.clone(), KeyMapping::SameCluster)
        .workload_relation(NODES, node, RelationSelector::All, None)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(MachineHealthCheckReconciler);

/// The health of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Healthy; when `Some`, a timeout is running out in this many seconds
    /// (a condition held, or no Node yet) and the check must look again.
    Healthy(Option<i64>),
    /// Unhealthy: the `HealthCheckSucceeded` reason and message.
    Unhealthy(&'static str, String),
}

/// Go's `time.Duration.String()` of whole seconds (`5m0s`, `1h0m0s`, `30s`),
/// as CAPI's messages print timeouts.
pub fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn time_of(c: Option<&Condition>) -> Option<i64> {
    c.filter(|c| c.status == TRUE)
        .and_then(|c| fleet::parse_time(&c.last_transition_time))
}

fn node_conditions(node: &Value) -> Vec<Condition> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    Some(Condition {
                        type_: c.get("type")?.as_str()?.to_owned(),
                        status: c.get("status")?.as_str()?.to_owned(),
                        last_transition_time: c
                            .get("lastTransitionTime")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        ..Condition::default()
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CAPI's `needsRemediation` for one Machine at `now` (seconds).
pub fn check(
    mhc: &MachineHealthCheck,
    cluster: &Cluster,
    machine: &Machine,
    node: Option<&Value>,
    now: i64,
) -> Health {
    let checks = mhc.spec.checks.clone().unwrap_or_default();
    if machine
        .metadata
        .annotations
        .contains_key(fa::REMEDIATE_MACHINE)
    {
        return Health::Unhealthy(
            rc::HAS_REMEDIATE_ANNOTATION_REASON,
            format!(
                "Health check failed: marked for remediation via the {} annotation",
                fa::REMEDIATE_MACHINE
            ),
        );
    }
    let status = machine.status();
    let node_name = status
        .node_ref
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str);
    let mut next: Option<i64> = None;
    let mut wait = |secs: i64| {
        if secs > 0 {
            next = Some(next.map_or(secs, |n: i64| n.min(secs)));
        }
    };
    if let (Some(name), None) = (node_name, node) {
        return Health::Unhealthy(
            rc::NODE_DELETED_REASON,
            format!("Health check failed: Node {name} has been deleted"),
        );
    }
    // As CAPI: no Machine is penalized before the control plane is
    // initialized (except control-plane Machines) or while the Cluster's
    // infrastructure is not ready; the Cluster's next change wakes the check.
    let cluster_conditions = cluster.status().conditions;
    if (!conditions::is_true(&cluster_conditions, "ControlPlaneInitialized")
        && !machine.is_control_plane())
        || !conditions::is_true(&cluster_conditions, "InfrastructureReady")
    {
        return Health::Healthy(None);
    }
    // Machine conditions. A condition without a (parsable) transition time
    // has held since the epoch, as a zero `metav1.Time` in CAPI.
    for u in &checks.unhealthy_machine_conditions {
        if let Some(c) =
            conditions::find(&status.conditions, &u.type_).filter(|c| c.status == u.status)
        {
            let since = fleet::parse_time(&c.last_transition_time).unwrap_or(0);
            if now > since + u.timeout_seconds {
                return Health::Unhealthy(
                    rc::UNHEALTHY_MACHINE_REASON,
                    format!(
                        "Health check failed: Condition {} on Machine is reported as {} for more than {}",
                        u.type_,
                        u.status,
                        go_duration(u.timeout_seconds)
                    ),
                );
            }
            wait(since + u.timeout_seconds - now + 1);
        }
    }
    // (A nodeRef without its Node returned `NodeDeleted` above.)
    match node {
        None => {
            let timeout = checks
                .node_startup_timeout_seconds
                .map_or(DEFAULT_NODE_STARTUP_TIMEOUT_SECONDS, i64::from);
            if timeout <= 0 {
                return Health::Healthy(next);
            }
            // The later of: Machine creation, and the times the Cluster's
            // infrastructure, its control plane and the Machine's
            // infrastructure became ready (a Machine cannot get a Node before).
            let created = machine
                .metadata
                .extra
                .get("creationTimestamp")
                .and_then(Value::as_str)
                .and_then(fleet::parse_time)
                .unwrap_or(now);
            let start = [
                time_of(conditions::find(&cluster_conditions, "InfrastructureReady")),
                time_of(conditions::find(
                    &cluster_conditions,
                    "ControlPlaneInitialized",
                )),
                time_of(conditions::find(&status.conditions, "InfrastructureReady")),
            ]
            .into_iter()
            .flatten()
            .fold(created, i64::max);
            if now > start + timeout {
                return Health::Unhealthy(
                    rc::NODE_STARTUP_TIMEOUT_REASON,
                    format!(
                        "Health check failed: Node failed to report startup in {}",
                        go_duration(timeout)
                    ),
                );
            }
            wait(start + timeout - now + 1);
            Health::Healthy(next)
        }
        Some(node) => {
            let ncs = node_conditions(node);
            for u in &checks.unhealthy_node_conditions {
                let Some(c) = conditions::find(&ncs, &u.type_).filter(|c| c.status == u.status)
                else {
                    continue;
                };
                // Kubernetes makes `lastTransitionTime` optional on Node
                // conditions (a `kubectl patch` may leave it out): missing,
                // the condition has held since the epoch, as in CAPI.
                let since = fleet::parse_time(&c.last_transition_time).unwrap_or(0);
                if now > since + u.timeout_seconds {
                    return Health::Unhealthy(
                        rc::UNHEALTHY_NODE_REASON,
                        format!(
                            "Health check failed: Condition {} on Node is reported as {} for more than {}",
                            u.type_,
                            u.status,
                            go_duration(u.timeout_seconds)
                        ),
                    );
                }
                wait(since + u.timeout_seconds - now + 1);
            }
            Health::Healthy(next)
        }
    }
}

/// CAPI's `isAllowedRemediation`: whether `triggerIf` allows remediation
/// with `unhealthy` (targets not counted healthy: unhealthy, not started,
/// timeouts running, deleting) of `total` targets, how many remediations
/// remain allowed, and the `RemediationAllowed` False message for
/// `needs_remediation` Machines (CAPI's wording). `Err` names an invalid field.
pub fn remediation_allowed(
    mhc: &MachineHealthCheck,
    total: i32,
    unhealthy: i32,
    needs_remediation: usize,
) -> Result<(bool, i32, String), Error> {
    let trigger = mhc
        .spec
        .remediation
        .as_ref()
        .and_then(|r| r.trigger_if.clone())
        .unwrap_or_default();
    if let Some(range) = trigger.unhealthy_in_range.filter(|r| !r.is_empty()) {
        let (lo, hi) = fleet::parse_range(&range).ok_or_else(|| {
            Error::terminal(format!(
                "machinehealthcheck {}: invalid spec.remediation.triggerIf.unhealthyInRange {range:?}",
                mhc.metadata.name
            ))
        })?;
        let ok = (lo..=hi).contains(&unhealthy);
        return Ok((
            ok,
            if ok { hi - unhealthy } else { 0 },
            format!(
                "Remediation is not allowed, the number of not started or unhealthy machines does not fall within the range (total: {total}, unhealthy: {needs_remediation}, unhealthyRange: {range})"
            ),
        ));
    }
    let limit = trigger
        .unhealthy_less_than_or_equal_to
        .unwrap_or(IntOrString::String("100%".to_owned()));
    let max = limit.scaled(total, false).map_err(|e| {
        Error::terminal(format!(
            "machinehealthcheck {}: spec.remediation.triggerIf.unhealthyLessThanOrEqualTo: {e}",
            mhc.metadata.name
        ))
    })?;
    let shown = match &limit {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let ok = unhealthy <= max;
    Ok((
        ok,
        if ok { max - unhealthy } else { 0 },
        format!(
            "Remediation is not allowed, the number of not started or unhealthy machines exceeds maxUnhealthy (total: {total}, unhealthy: {needs_remediation}, maxUnhealthy: {shown})"
        ),
    ))
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

/// The label and Cluster owner reference CAPI's reconcile puts on a MachineHealthCheck.
fn ensure_metadata(mhc: &MachineHealthCheck, cluster: &Cluster) -> Option<Value> {
    let mut patch = mhc.skeleton();
    let mut changed = false;
    let cluster_name = mhc.spec.cluster_name.as_str();
    if mhc
        .metadata
        .labels
        .get(labels::CLUSTER_NAME)
        .map(String::as_str)
        != Some(cluster_name)
    {
        patch["metadata"]["labels"] = json!({labels::CLUSTER_NAME: cluster_name});
        changed = true;
    }
    let mut refs = mhc.metadata.owner_references.clone();
    let mut owner: OwnerReference = cluster.controller_reference();
    owner.controller = None;
    owner.block_owner_deletion = None;
    if fleet::ensure_owner_reference(&mut refs, owner) {
        patch["metadata"]["ownerReferences"] = to_value(&refs);
        changed = true;
    }
    changed.then_some(patch)
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let mhc: MachineHealthCheck = snapshot.primary()?;
    require_synced(snapshot, &[CLUSTER, MACHINES])?;
    let mut out = Outcome::new();
    if mhc.metadata.is_deleting() {
        // No finalizer: nothing to clean up.
        return Ok(out);
    }
    let Some(cluster) = snapshot
        .related::<Cluster>(CLUSTER)?
        .into_iter()
        .find(|c| c.metadata.name == mhc.spec.cluster_name)
    else {
        return Err(Error::transient(format!(
            "cluster {}/{} of machinehealthcheck {} not found",
            mhc.metadata.namespace, mhc.spec.cluster_name, mhc.metadata.name
        )));
    };
    if let Some(patch) = ensure_metadata(&mhc, &cluster) {
        out.apply(&patch)?;
    }
    let now_text = snapshot.now();
    let now = fleet::parse_time(now_text)
        .ok_or_else(|| Error::terminal(format!("snapshot time {now_text:?} is not RFC 3339")))?;
    // Targets as CAPI's `getTargetsFromMHC`: every selected Machine of the
    // Cluster (deleting ones too: they count, never as healthy), except
    // those with the skip-remediation or paused annotation.
    let mut targets: Vec<Machine> = snapshot
        .related::<Machine>(MACHINES)?
        .into_iter()
        .filter(|m| m.spec.cluster_name == mhc.spec.cluster_name)
        .filter(|m| mhc.spec.selector.matches(&m.metadata.labels))
        .filter(|m| {
            !m.metadata
                .annotations
                .contains_key(annotations::SKIP_REMEDIATION)
                && !m.metadata.annotations.contains_key(annotations::PAUSED)
        })
        .collect();
    targets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let needs_nodes = targets.iter().any(|m| m.status().node_ref.is_some());
    if needs_nodes && (snapshot.workload() != Connection::Connected || !snapshot.synced(NODES)) {
        return Err(Error::transient(format!(
            "workload cluster {}/{} is not reachable (connection {:?}); cannot check its Nodes",
            mhc.metadata.namespace,
            mhc.spec.cluster_name,
            snapshot.workload()
        )));
    }
    let nodes: BTreeMap<String, Value> = snapshot
        .related::<Value>(NODES)?
        .into_iter()
        .filter_map(|n| Some((n.pointer("/metadata/name")?.as_str()?.to_owned(), n)))
        .collect();
    // CAPI's `healthCheckTargets`: healthy only a Machine not being deleted,
    // with its Node, and no timeout running; a running timeout is neither
    // (nothing written, look again then); the rest needs remediation.
    let mut next: Option<i64> = None;
    let mut healthy = 0_i32;
    let mut verdicts: Vec<Option<Health>> = Vec::with_capacity(targets.len());
    for m in &targets {
        let node = m
            .status()
            .node_ref
            .as_ref()
            .and_then(|r| r.get("name")?.as_str().map(str::to_owned))
            .and_then(|n| nodes.get(&n));
        let h = check(&mhc, &cluster, m, node, now);
        let verdict = match h {
            Health::Healthy(Some(w)) => {
                next = Some(next.map_or(w, |n| n.min(w)));
                None
            }
            Health::Healthy(None) if m.metadata.is_deleting() || node.is_none() => None,
            Health::Healthy(None) => {
                healthy += 1;
                Some(h)
            }
            Health::Unhealthy(..) => Some(h),
        };
        verdicts.push(verdict);
    }
    let total = i32::try_from(targets.len()).unwrap_or(i32::MAX);
    let needs_remediation = verdicts
        .iter()
        .filter(|v| matches!(v, Some(Health::Unhealthy(..))))
        .count();
    let (allowed, remaining, restricted) =
        remediation_allowed(&mhc, total, total - healthy, needs_remediation)?;
    if !allowed && needs_remediation > 0 {
        out.event(
            mhc.object_ref(),
            EventType::Warning,
            "RemediationRestricted",
            &restricted,
        );
    }
    for (m, verdict) in targets.iter().zip(&verdicts) {
        let Some(h) = verdict else { continue };
        let mut cs = m.status().conditions;
        match h {
            Health::Healthy(_) => {
                conditions::set(
                    &mut cs,
                    Condition::new(
                        rc::HEALTH_CHECK_SUCCEEDED,
                        TRUE,
                        rc::HEALTH_CHECK_SUCCEEDED_REASON,
                    )
                    .observed_generation(m.metadata.generation),
                    now_text,
                );
                // Withdraw a remediation request the owner has not acted on.
                if conditions::find(&cs, rc::OWNER_REMEDIATED)
                    .is_some_and(|c| c.reason == rc::WAITING_FOR_REMEDIATION_REASON)
                {
                    conditions::remove(&mut cs, rc::OWNER_REMEDIATED);
                }
            }
            Health::Unhealthy(reason, message) => {
                conditions::set(
                    &mut cs,
                    Condition::new(rc::HEALTH_CHECK_SUCCEEDED, FALSE, reason)
                        .message(message.clone())
                        .observed_generation(m.metadata.generation),
                    now_text,
                );
                // As CAPI: the owner's condition is created when missing (or
                // True, a finished remediation), never on a deleting Machine.
                let ask =
                    conditions::find(&cs, rc::OWNER_REMEDIATED).is_none_or(|c| c.status == TRUE);
                if allowed && ask && !m.metadata.is_deleting() {
                    conditions::set(
                        &mut cs,
                        Condition::new(
                            rc::OWNER_REMEDIATED,
                            FALSE,
                            rc::WAITING_FOR_REMEDIATION_REASON,
                        )
                        .message("Waiting for remediation")
                        .observed_generation(m.metadata.generation),
                        now_text,
                    );
                    out.event(
                        m.object_ref(),
                        EventType::Normal,
                        "MachineMarkedUnhealthy",
                        &format!(
                            "Machine {} has been marked as unhealthy by {}: {message}",
                            m.metadata.name, mhc.metadata.name
                        ),
                    );
                    ctx.info(format!(
                        "machine {}/{} marked for remediation: {message}",
                        m.metadata.namespace, m.metadata.name
                    ));
                }
            }
        }
        if cs != m.status().conditions {
            // The whole list: the host's merge patch replaces arrays, and its
            // resourceVersion guard makes this read-modify-write safe.
            let mut s = m.skeleton();
            s["status"] = json!({"conditions": cs});
            out.status(&s)?;
        }
    }
    let mut status: MachineHealthCheckStatus = mhc.status();
    status.expected_machines = Some(total);
    status.current_healthy = Some(healthy);
    status.remediations_allowed = Some(remaining);
    status.targets = targets.iter().map(|m| m.metadata.name.clone()).collect();
    status.observed_generation = mhc.metadata.generation;
    let generation = mhc.metadata.generation;
    let allowed_condition = if allowed {
        Condition::new(
            hc::REMEDIATION_ALLOWED,
            TRUE,
            hc::REMEDIATION_ALLOWED_REASON,
        )
    } else {
        Condition::new(
            hc::REMEDIATION_ALLOWED,
            FALSE,
            hc::TOO_MANY_UNHEALTHY_REASON,
        )
        .message(restricted)
    };
    for c in [
        allowed_condition,
        Condition::new(hc::PAUSED, FALSE, hc::NOT_PAUSED_REASON),
    ] {
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now_text,
        );
    }
    capstan_sdk::capi::conditions::sort(&mut status.conditions);
    if Some(&status) != mhc.status.as_ref() {
        let mut s = mhc.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    if let Some(secs) = next {
        out.requeue_after(Duration::from_secs(u64::try_from(secs).unwrap_or(1)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

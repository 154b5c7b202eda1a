//! Control-plane component health from the workload cluster's kube-system Pods, per Machine and aggregated.
//!
//! As KCP's `UpdateStaticPodConditions`/`UpdateEtcdConditions`: each
//! control-plane Machine hosts `kube-apiserver-<node>`,
//! `kube-controller-manager-<node>`, `kube-scheduler-<node>` and
//! `etcd-<node>`. Etcd member health is read from the etcd Pod (Capstan has
//! no etcd client; see docs/capi.md).

use capstan_sdk::Connection;
use capstan_sdk::capi::cluster::Machine;
use capstan_sdk::capi::controlplane::{kcp_machine_conditions as mc, kcp_reasons as r};
use capstan_sdk::conditions::{Condition, FALSE, TRUE, UNKNOWN};
use serde_json::Value;
use std::collections::BTreeMap;

/// CAPI's reason when something could not be inspected.
pub const INSPECTION_FAILED: &str = "InspectionFailed";

/// The static Pods of a control-plane node: (component label, condition type).
pub const COMPONENTS: [(&str, &str); 4] = [
    ("kube-apiserver", mc::API_SERVER_POD_HEALTHY),
    (
        "kube-controller-manager",
        mc::CONTROLLER_MANAGER_POD_HEALTHY,
    ),
    ("kube-scheduler", mc::SCHEDULER_POD_HEALTHY),
    ("etcd", mc::ETCD_POD_HEALTHY),
];

/// What is known of the workload cluster's Pods.
#[derive(Debug)]
pub enum Pods {
    /// Connected and synced: the Pods by name.
    Known(BTreeMap<String, Value>),
    /// Not connected (or not synced): why.
    Unknown(String),
}

impl Pods {
    /// From the snapshot's connection state and the Pod relation.
    pub fn new(connection: Connection, synced: bool, pods: Vec<Value>) -> Self {
        match connection {
            Connection::Connected if synced => Self::Known(
                pods.into_iter()
                    .filter_map(|p| {
                        let n = p.pointer("/metadata/name")?.as_str()?.to_owned();
                        Some((n, p))
                    })
                    .collect(),
            ),
            Connection::Connected => Self::Unknown("Workload cluster cache not synced yet".into()),
            Connection::Unhealthy => Self::Unknown("Remote connection probe failed".into()),
            _ => Self::Unknown("Remote connection not established yet".into()),
        }
    }
}

/// The Node name of a Machine, once it has a nodeRef.
pub fn node_name(m: &Machine) -> Option<&str> {
    m.status
        .as_ref()?
        .node_ref
        .as_ref()?
        .get("name")?
        .as_str()
        .filter(|n| !n.is_empty())
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == TRUE)
        })
}

fn pod_condition(type_: &str, pod_name: &str, pod: Option<&Value>) -> Condition {
    let Some(pod) = pod else {
        return Condition::new(type_, FALSE, r::POD_DOES_NOT_EXIST)
            .message(format!("Pod {pod_name} does not exist"));
    };
    match pod.pointer("/status/phase").and_then(Value::as_str) {
        Some("Running") if pod_ready(pod) => Condition::new(type_, TRUE, r::POD_RUNNING),
        Some("Running") => Condition::new(type_, FALSE, r::POD_FAILED)
            .message(format!("Pod {pod_name} is running but not Ready")),
        Some("Pending") | None => Condition::new(type_, FALSE, r::POD_PROVISIONING)
            .message(format!("Pod {pod_name} is provisioning")),
        Some(p) => {
            Condition::new(type_, FALSE, r::POD_FAILED).message(format!("Pod {pod_name} is {p}"))
        }
    }
}

/// The per-Machine conditions KCP computes: the four Pod conditions and
/// `EtcdMemberHealthy`, in that order.
pub fn machine_conditions(m: &Machine, pods: &Pods) -> Vec<Condition> {
    let types = COMPONENTS
        .iter()
        .map(|(_, t)| *t)
        .chain([mc::ETCD_MEMBER_HEALTHY]);
    if m.metadata.is_deleting() {
        return types
            .map(|t| Condition::new(t, UNKNOWN, r::POD_DELETING).message("Machine is deleting"))
            .collect();
    }
    let pods = match pods {
        Pods::Known(p) => p,
        Pods::Unknown(why) => {
            return types
                .map(|t| Condition::new(t, UNKNOWN, r::CONNECTION_DOWN).message(why.clone()))
                .collect();
        }
    };
    let Some(node) = node_name(m) else {
        return types
            .map(|t| {
                Condition::new(t, UNKNOWN, INSPECTION_FAILED)
                    .message("Waiting for the Machine's Node (status.nodeRef)")
            })
            .collect();
    };
    let mut out: Vec<Condition> = COMPONENTS
        .iter()
        .map(|(component, t)| {
            let name = format!("{component}-{node}");
            pod_condition(t, &name, pods.get(&name))
        })
        .collect();
    let etcd = &out[3];
    let member = if etcd.status == TRUE {
        Condition::new(mc::ETCD_MEMBER_HEALTHY, TRUE, r::HEALTHY)
    } else {
        Condition::new(mc::ETCD_MEMBER_HEALTHY, FALSE, r::NOT_HEALTHY)
            .message(format!("etcd member on Node {node} is not healthy"))
    };
    out.push(member);
    out
}

/// The aggregate of `types` over each Machine's conditions, as KCP's
/// `ControlPlaneComponentsHealthy` and `EtcdClusterHealthy`: False when one
/// is False, else Unknown when one is Unknown, else True; the message lists
/// the Machines and conditions that are not True.
pub fn aggregate(
    target: &str,
    machines: &[(&str, &[Condition])],
    types: &[&str],
    pods: &Pods,
) -> Condition {
    if let Pods::Unknown(why) = pods {
        return Condition::new(target, UNKNOWN, r::CONNECTION_DOWN).message(why.clone());
    }
    if machines.is_empty() {
        return Condition::new(target, UNKNOWN, r::HEALTH_UNKNOWN)
            .message("No Machines reporting control plane status");
    }
    let (mut any_false, mut any_unknown) = (false, false);
    let mut lines = Vec::new();
    for (name, cs) in machines {
        let mut bad = Vec::new();
        for c in cs.iter().filter(|c| types.contains(&c.type_.as_str())) {
            match c.status.as_str() {
                TRUE => continue,
                FALSE => any_false = true,
                _ => any_unknown = true,
            }
            let text = if c.message.is_empty() {
                &c.reason
            } else {
                &c.message
            };
            bad.push(format!("  * {}: {text}", c.type_));
        }
        if !bad.is_empty() {
            lines.push(format!("* Machine {name}:\n{}", bad.join("\n")));
        }
    }
    let (status, reason) = if any_false {
        (FALSE, r::NOT_HEALTHY)
    } else if any_unknown {
        (UNKNOWN, r::HEALTH_UNKNOWN)
    } else {
        (TRUE, r::HEALTHY)
    };
    Condition::new(target, status, reason).message(lines.join("\n"))
}

/// Whether every condition is True.
pub fn all_true(cs: &[Condition]) -> bool {
    !cs.is_empty() && cs.iter().all(|c| c.status == TRUE)
}

//! The worker fleet's v1beta2 vocabulary: MachineHealthCheck, templates, selectors, rollout, int-or-percent, template hash, time.
//!
//! MachineDeployment and MachineSet themselves live in [`super::cluster`]
//! (their spec gains the typed fields defined here); this module holds what
//! the `machinedeployment`, `machineset` and `machinehealthcheck` reconcilers
//! share: label selectors (`metav1.LabelSelector`, matched and printed as
//! `kubectl -l` does), `intstr.IntOrString` scaled as
//! `GetScaledValueFromIntOrPercent`, the `machine-template-hash` of a
//! template, condition vocabularies, and RFC 3339 time arithmetic (plugins
//! have no clock: `snapshot.now` is the time).

use super::cluster::{MachineSpec, object};
use super::{GROUP, labels};
use crate::conditions::Condition;
use crate::meta::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

object!(
    /// A MachineHealthCheck: health checks and remediation trigger for the Machines it selects.
    MachineHealthCheck, GROUP, MachineHealthCheckSpec, MachineHealthCheckStatus
);

/// Annotations of the rollout machinery.
pub mod annotations {
    /// Revision of a MachineDeployment (and of each of its MachineSets).
    pub const REVISION: &str = "machinedeployment.clusters.x-k8s.io/revision";
    /// On a MachineSet: its MachineDeployment's `spec.replicas`.
    pub const DESIRED_REPLICAS: &str = "machinedeployment.clusters.x-k8s.io/desired-replicas";
    /// On a MachineSet: `spec.replicas + maxSurge` of its MachineDeployment.
    pub const MAX_REPLICAS: &str = "machinedeployment.clusters.x-k8s.io/max-replicas";
    /// On a Machine: remediate it now (the MachineHealthCheck marks it unhealthy).
    pub const REMEDIATE_MACHINE: &str = "cluster.x-k8s.io/remediate-machine";
}

/// `metav1.LabelSelectorRequirement`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Exact matches.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term (an empty selector matches everything).
    /// An unknown operator matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => v.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }

    /// The selector in `kubectl -l` form, as `metav1.FormatLabelSelector`
    /// writes `status.selector` (terms sorted by key, `<none>` never: an
    /// empty selector is the empty string).
    pub fn to_selector_string(&self) -> String {
        let mut terms: Vec<(String, String)> = self
            .match_labels
            .iter()
            .map(|(k, v)| (k.clone(), format!("{k}={v}")))
            .collect();
        for r in &self.match_expressions {
            let mut values = r.values.clone();
            values.sort();
            let t = match r.operator.as_str() {
                "In" => format!("{} in ({})", r.key, values.join(",")),
                "NotIn" => format!("{} notin ({})", r.key, values.join(",")),
                "Exists" => r.key.clone(),
                "DoesNotExist" => format!("!{}", r.key),
                other => format!("{} {other} ({})", r.key, values.join(",")),
            };
            terms.push((r.key.clone(), t));
        }
        terms.sort();
        terms
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Labels and annotations of a template (`ObjectMeta` of a template: only these two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateMeta {
    /// Labels copied onto created objects.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations copied onto created objects.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.template` of a MachineDeployment or MachineSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineTemplateSpec {
    /// Labels and annotations of the Machines.
    pub metadata: TemplateMeta,
    /// Spec of the Machines.
    pub spec: MachineSpec,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `intstr.IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// An absolute number.
    Int(i32),
    /// A percentage (`"25%"`) or a number as a string.
    String(String),
}

impl IntOrString {
    /// `intstr.GetScaledValueFromIntOrPercent`: an int as is, `"N%"` of
    /// `total` rounded up or down. Errors name the invalid value.
    pub fn scaled(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self {
            Self::Int(n) => Ok(*n),
            Self::String(s) => {
                let Some(p) = s.strip_suffix('%') else {
                    return s
                        .parse::<i32>()
                        .map_err(|_| format!("invalid value for IntOrString: {s:?}"));
                };
                let p: i64 = p
                    .parse()
                    .map_err(|_| format!("invalid value for IntOrString: {s:?}"))?;
                let prod = p * i64::from(total);
                let v = if round_up {
                    (prod + 99).div_euclid(100)
                } else {
                    prod.div_euclid(100)
                };
                i32::try_from(v).map_err(|_| format!("value out of range: {s:?}"))
            }
        }
    }
}

/// `spec.rollout` of a MachineDeployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rollout {
    /// Roll out Machines created before this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RolloutStrategy>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.rollout.strategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Limits of a rolling update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.rollout.strategy.rollingUpdate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RollingUpdate {
    /// Machines that may exist above `spec.replicas` (default 1; percent rounds up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Machines that may be unavailable (default 0; percent rounds down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.deletion` of a MachineDeployment or MachineSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeletionSpec {
    /// `Random` (default), `Newest`, `Oldest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.remediation` of a MachineDeployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RemediationSpec {
    /// Machines remediated at once (int or percent of replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<IntOrString>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// MachineHealthCheck `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineHealthCheckSpec {
    /// The Cluster whose Machines are checked.
    pub cluster_name: String,
    /// Which Machines are checked.
    pub selector: LabelSelector,
    /// What makes a Machine unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    /// When and how to remediate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<MhcRemediation>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.checks` of a MachineHealthCheck.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Checks {
    /// How long a Machine may go without a Node (default 600; 0 disables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_startup_timeout_seconds: Option<i32>,
    /// Node conditions that make the Machine unhealthy after their timeout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unhealthy_node_conditions: Vec<UnhealthyCondition>,
    /// Machine conditions that make the Machine unhealthy after their timeout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unhealthy_machine_conditions: Vec<UnhealthyCondition>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `unhealthyNodeConditions` / `unhealthyMachineConditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnhealthyCondition {
    /// Condition type (e.g. `Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// The status that is unhealthy (e.g. `Unknown`).
    pub status: String,
    /// For how long the condition must hold.
    pub timeout_seconds: i64,
}

/// `spec.remediation` of a MachineHealthCheck.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MhcRemediation {
    /// Remediate only while the number of unhealthy Machines allows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_if: Option<TriggerIf>,
    /// External remediation template (not supported: owner remediation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<Value>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `spec.remediation.triggerIf`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TriggerIf {
    /// At most this many (or this percent of) unhealthy Machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_less_than_or_equal_to: Option<IntOrString>,
    /// The number of unhealthy Machines lies in `[a-b]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_in_range: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// MachineHealthCheck `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MachineHealthCheckStatus {
    /// v1beta2 conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Machines the check selects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_machines: Option<i32>,
    /// Of those, healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_healthy: Option<i32>,
    /// Remediations still allowed by `triggerIf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediations_allowed: Option<i32>,
    /// Names of the selected Machines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// The generation the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parse `"[a-b]"` (CAPI's `unhealthyInRange`) into `(a, b)`.
pub fn parse_range(s: &str) -> Option<(i32, i32)> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (a, b) = inner.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// Condition types and reasons shared by MachineSet and MachineDeployment (`api/core/v1beta2`).
pub mod replica_conditions {
    /// MachineDeployment: enough Machines are available.
    pub const AVAILABLE: &str = "Available";
    /// MachineDeployment: Machines are being replaced.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Replicas are being added.
    pub const SCALING_UP: &str = "ScalingUp";
    /// Replicas are being removed.
    pub const SCALING_DOWN: &str = "ScalingDown";
    /// Aggregate of the Machines' `Ready`.
    pub const MACHINES_READY: &str = "MachinesReady";
    /// Aggregate of the Machines' up-to-dateness.
    pub const MACHINES_UP_TO_DATE: &str = "MachinesUpToDate";
    /// MachineSet: unhealthy Machines are being remediated.
    pub const REMEDIATING: &str = "Remediating";
    /// MachineSet, v1beta1 only (`status.deprecated.v1beta1.conditions`):
    /// Machines could be created.
    pub const MACHINES_CREATED: &str = "MachinesCreated";
    /// Deletion is in progress.
    pub const DELETING: &str = "Deleting";
    /// Reconciliation is paused.
    pub const PAUSED: &str = "Paused";

    /// Available true.
    pub const AVAILABLE_REASON: &str = "Available";
    /// Available false.
    pub const NOT_AVAILABLE_REASON: &str = "NotAvailable";
    /// Available / RollingOut / others while deleting.
    pub const DELETING_REASON: &str = "Deleting";
    /// RollingOut true.
    pub const ROLLING_OUT_REASON: &str = "RollingOut";
    /// RollingOut false.
    pub const NOT_ROLLING_OUT_REASON: &str = "NotRollingOut";
    /// ScalingUp true.
    pub const SCALING_UP_REASON: &str = "ScalingUp";
    /// ScalingUp false.
    pub const NOT_SCALING_UP_REASON: &str = "NotScalingUp";
    /// ScalingDown true.
    pub const SCALING_DOWN_REASON: &str = "ScalingDown";
    /// ScalingDown false.
    pub const NOT_SCALING_DOWN_REASON: &str = "NotScalingDown";
    /// MachinesReady true.
    pub const READY_REASON: &str = "Ready";
    /// MachinesReady false.
    pub const NOT_READY_REASON: &str = "NotReady";
    /// MachinesReady unknown.
    pub const READY_UNKNOWN_REASON: &str = "ReadyUnknown";
    /// MachinesUpToDate true.
    pub const UP_TO_DATE_REASON: &str = "UpToDate";
    /// MachinesUpToDate false.
    pub const NOT_UP_TO_DATE_REASON: &str = "NotUpToDate";
    /// MachinesReady / MachinesUpToDate with no Machines.
    pub const NO_REPLICAS_REASON: &str = "NoReplicas";
    /// Remediating true.
    pub const REMEDIATING_REASON: &str = "Remediating";
    /// Remediating false.
    pub const NOT_REMEDIATING_REASON: &str = "NotRemediating";
    /// MachinesCreated false: a template does not exist.
    pub const TEMPLATE_NOT_FOUND_REASON: &str = "TemplateNotFound";
    /// MachinesCreated false: the disable-machine-create annotation is set.
    pub const MACHINE_CREATION_DISABLED_REASON: &str = "MachineCreationDisabled";
    /// MachinesCreated false: waiting for the control plane to be initialized.
    pub const WAITING_FOR_CONTROL_PLANE_REASON: &str = "WaitingForControlPlaneInitialized";
    /// Deleting false.
    pub const NOT_DELETING_REASON: &str = "NotDeleting";
    /// Paused false.
    pub const NOT_PAUSED_REASON: &str = "NotPaused";
}

/// Machine conditions the health check and remediation write (`api/core/v1beta2`).
pub mod remediation_conditions {
    /// Written by the MachineHealthCheck: the Machine passed its checks.
    pub const HEALTH_CHECK_SUCCEEDED: &str = "HealthCheckSucceeded";
    /// Written by the MachineHealthCheck (False) and the owner (progress).
    pub const OWNER_REMEDIATED: &str = "OwnerRemediated";
    /// HealthCheckSucceeded true.
    pub const HEALTH_CHECK_SUCCEEDED_REASON: &str = "HealthCheckSucceeded";
    /// HealthCheckSucceeded false: a Node condition held too long.
    pub const UNHEALTHY_NODE_REASON: &str = "UnhealthyNode";
    /// HealthCheckSucceeded false: a Machine condition held too long.
    pub const UNHEALTHY_MACHINE_REASON: &str = "UnhealthyMachine";
    /// HealthCheckSucceeded false: no Node within the startup timeout.
    pub const NODE_STARTUP_TIMEOUT_REASON: &str = "NodeStartupTimeout";
    /// HealthCheckSucceeded false: the Node was deleted.
    pub const NODE_DELETED_REASON: &str = "NodeDeleted";
    /// HealthCheckSucceeded false: the remediate-machine annotation.
    pub const HAS_REMEDIATE_ANNOTATION_REASON: &str = "HasRemediateAnnotation";
    /// OwnerRemediated false: the owner has not started yet.
    pub const WAITING_FOR_REMEDIATION_REASON: &str = "WaitingForRemediation";
    /// OwnerRemediated false: the MachineSet is deleting the Machine.
    pub const MACHINE_DELETING_REASON: &str = "MachineDeleting";
}

/// MachineHealthCheck condition types and reasons.
pub mod mhc_conditions {
    /// Whether `triggerIf` allows remediation.
    pub const REMEDIATION_ALLOWED: &str = "RemediationAllowed";
    /// Paused.
    pub const PAUSED: &str = "Paused";
    /// RemediationAllowed true.
    pub const REMEDIATION_ALLOWED_REASON: &str = "RemediationAllowed";
    /// RemediationAllowed false.
    pub const TOO_MANY_UNHEALTHY_REASON: &str = "TooManyUnhealthy";
    /// Paused false.
    pub const NOT_PAUSED_REASON: &str = "NotPaused";
}

/// The `machine-template-hash` of a Machine template: FNV-1a (32 bit) over
/// the canonical JSON (keys sorted, no whitespace) of `template.spec`
/// without the fields CAPI changes in place (`minReadySeconds`,
/// `readinessGates`, `deletion`, `taints`), in decimal, as CAPI's label
/// value (the decimal of a 32-bit hash). Template labels and annotations are
/// propagated in place and not hashed either. CAPI hashes a `spew` dump of
/// the Go struct; the bytes differ, the role is the same: equal templates,
/// equal hash, on every host and version of this code.
pub fn machine_template_hash(template: &MachineTemplateSpec) -> String {
    let mut spec = serde_json::to_value(&template.spec).unwrap_or(Value::Null);
    if let Some(m) = spec.as_object_mut() {
        for k in ["minReadySeconds", "readinessGates", "deletion", "taints"] {
            m.remove(k);
        }
    }
    let mut text = String::new();
    canonical(&spec, &mut text);
    fnv1a32(text.as_bytes()).to_string()
}

/// The `machine-template-hash` a MachineDeployment wants at `now`: the
/// template's hash, and once `spec.rollout.after` has passed, the hash of
/// the template together with that time. A rollout date in the past thus
/// names a new MachineSet exactly once (CAPI compares the MachineSets'
/// creation time with `rollout.after`; with hash-named sets the date has to
/// be part of the identity). An unparsable date is ignored.
pub fn deployment_template_hash(md: &super::cluster::MachineDeployment, now: &str) -> String {
    let template = md.spec.template.clone().unwrap_or_default();
    let after = md
        .spec
        .rollout
        .as_ref()
        .and_then(|r| r.after.as_deref())
        .and_then(|a| Some((a, parse_time(a)?)));
    match (after, parse_time(now)) {
        (Some((text, at)), Some(now)) if at <= now => {
            let base = machine_template_hash(&template);
            fnv1a32(format!("{base}/{text}").as_bytes()).to_string()
        }
        _ => machine_template_hash(&template),
    }
}

/// Seconds from `now` until `spec.rollout.after`, when it is still ahead.
pub fn rollout_after_in(md: &super::cluster::MachineDeployment, now: &str) -> Option<i64> {
    let at = parse_time(md.spec.rollout.as_ref()?.after.as_deref()?)?;
    let now = parse_time(now)?;
    (at > now).then_some(at - now)
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// FNV-1a, 32 bit.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// FNV-1a, 64 bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Characters of generated names: apimachinery's `rand.SafeEncodeString`
/// alphabet (no vowels, no look-alikes).
pub const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// apimachinery's `rand.SafeEncodeString`: each byte mapped into [`SAFE_ALPHANUMS`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()]))
        .collect()
}

/// A 5-character suffix (as `names.SimpleNameGenerator` makes) derived from
/// `seed` instead of a random source.
pub fn name_suffix(seed: &str) -> String {
    let mut h = fnv1a64(seed.as_bytes());
    let n = SAFE_ALPHANUMS.len() as u64;
    (0..5)
        .map(|_| {
            let c = SAFE_ALPHANUMS[usize::try_from(h % n).unwrap_or(0)];
            h /= n;
            char::from(c)
        })
        .collect()
}

/// A label value for `name`, as CAPI's `format.MustFormatValue`: the name
/// itself when it is a valid label value (at most 63 characters), else
/// `hash_<base64url(fnv32a(name))>_z`.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = fnv1a32(name.as_bytes()).to_be_bytes();
    let bits = u64::from(u32::from_be_bytes(bytes)) << 8;
    // 4 bytes = 32 bits, unpadded base64: 6 characters (36 bits, low 4 zero).
    let enc: String = (0..6)
        .map(|i| char::from(B64[usize::try_from((bits >> (34 - 6 * i)) & 0x3f).unwrap_or(0)]))
        .collect();
    format!("hash_{enc}_z")
}

/// CAPI's `util.EnsureOwnerRef`: update the reference to the same owner
/// (same group, kind and name; apiVersion and uid refreshed) or append it.
/// Returns whether `refs` changed.
pub fn ensure_owner_reference(refs: &mut Vec<OwnerReference>, new: OwnerReference) -> bool {
    let group = |api_version: &str| {
        api_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned()
    };
    let g = group(&new.api_version);
    match refs
        .iter_mut()
        .find(|r| group(&r.api_version) == g && r.kind == new.kind && r.name == new.name)
    {
        Some(r) if *r == new => false,
        Some(r) => {
            *r = new;
            true
        }
        None => {
            refs.push(new);
            true
        }
    }
}

/// Whether `labels` mark an object of the MachineDeployment `md`.
pub fn of_deployment(meta: &ObjectMeta, md: &str) -> bool {
    meta.labels
        .get(labels::MACHINE_DEPLOYMENT_NAME)
        .map(String::as_str)
        == Some(md)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp (fractional seconds and
/// `±hh:mm` offsets accepted; the fraction is dropped); `None` when it does not parse.
pub fn parse_time(s: &str) -> Option<i64> {
    super::time::parse_timestamp(s).map(|ms| ms.div_euclid(1_000))
}

/// RFC 3339 (`Z`, whole seconds) of seconds since the Unix epoch.
pub fn format_time(secs: i64) -> String {
    super::time::format_timestamp(secs.saturating_mul(1_000))
}

/// `MachinesReady` of a MachineSet or MachineDeployment: `True`/`NoReplicas` without
/// Machines, else the aggregate of the Machines' `Ready` conditions.
pub fn machines_ready(machines: &[super::cluster::Machine]) -> crate::conditions::Condition {
    use crate::conditions::{Condition, TRUE};
    use replica_conditions as c;
    if machines.is_empty() {
        return Condition::new(c::MACHINES_READY, TRUE, c::NO_REPLICAS_REASON);
    }
    let cs: Vec<(String, Vec<Condition>)> = machines
        .iter()
        .map(|m| (m.metadata.name.clone(), m.status().conditions))
        .collect();
    super::conditions::aggregate(
        cs.iter().map(|(n, c)| (n.as_str(), c.as_slice())),
        "Ready",
        "Machine",
        c::MACHINES_READY,
        super::conditions::Reasons {
            good: c::READY_REASON,
            bad: c::NOT_READY_REASON,
            unknown: c::READY_UNKNOWN_REASON,
        },
    )
}

/// `ScalingDown` of a MachineSet or MachineDeployment with `current` replicas and
/// `target` wanted.
pub fn scaling_down(current: i32, target: i32) -> crate::conditions::Condition {
    use crate::conditions::{Condition, FALSE, TRUE};
    use replica_conditions as c;
    if current > target {
        Condition::new(c::SCALING_DOWN, TRUE, c::SCALING_DOWN_REASON)
            .message(format!("Scaling down from {current} to {target} replicas"))
    } else {
        Condition::new(c::SCALING_DOWN, FALSE, c::NOT_SCALING_DOWN_REASON)
    }
}

/// CAPI's `collections.IsUnhealthyAndOwnerRemediated`: the Machine's
/// `HealthCheckSucceeded` and `OwnerRemediated` are both False (a
/// MachineHealthCheck asked its owner to remediate it).
pub fn owner_remediation_requested(machine: &super::cluster::Machine) -> bool {
    let cs = machine.status().conditions;
    let is_false = |t: &str| {
        crate::conditions::find(&cs, t).is_some_and(|c| c.status == crate::conditions::FALSE)
    };
    is_false(remediation_conditions::HEALTH_CHECK_SUCCEEDED)
        && is_false(remediation_conditions::OWNER_REMEDIATED)
}

/// Up to three names, sorted, then how many more (CAPI's Machine lists in messages).
pub fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.into_iter().collect();
    v.sort_unstable();
    let shown = v.iter().take(3).copied().collect::<Vec<_>>().join(", ");
    if v.len() > 3 {
        format!("{shown}, ... ({} more)", v.len() - 3)
    } else {
        shown
    }
}

/// `Remediating` of a MachineSet or MachineDeployment: True (`Remediating`)
/// while some of `machines` are unhealthy with owner remediation requested
/// (deleting ones included: their remediation is in flight), naming them;
/// else False (`NotRemediating`).
pub fn remediating(machines: &[super::cluster::Machine]) -> crate::conditions::Condition {
    use crate::conditions::{Condition, FALSE, TRUE};
    use replica_conditions as c;
    let names: Vec<&str> = machines
        .iter()
        .filter(|m| owner_remediation_requested(m))
        .map(|m| m.metadata.name.as_str())
        .collect();
    if names.is_empty() {
        return Condition::new(c::REMEDIATING, FALSE, c::NOT_REMEDIATING_REASON);
    }
    let s = if names.len() == 1 { "" } else { "s" };
    Condition::new(c::REMEDIATING, TRUE, c::REMEDIATING_REASON).message(format!(
        "* Machine{s} {}: Machine is being remediated",
        name_list(names)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_and_print_like_kubectl() {
        let s: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                {"key": "d", "operator": "DoesNotExist"}]
        }))
        .expect("parses");
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(s.matches(&l(&[("a", "1"), ("b", "2"), ("c", "x")])));
        assert!(!s.matches(&l(&[("a", "1"), ("b", "2"), ("c", "z")])));
        assert!(!s.matches(&l(&[("a", "1"), ("b", "2"), ("c", "x"), ("d", "")])));
        assert!(!s.matches(&l(&[("a", "1"), ("c", "x")])));
        assert_eq!(s.to_selector_string(), "a=1,b=2,c in (x,y),!d");
        assert!(LabelSelector::default().matches(&l(&[])));
    }

    #[test]
    fn int_or_percent_scales_with_capi_rounding() {
        let p = |s: &str| IntOrString::String(s.to_owned());
        assert_eq!(p("25%").scaled(3, true), Ok(1));
        assert_eq!(p("25%").scaled(3, false), Ok(0));
        assert_eq!(p("50%").scaled(5, true), Ok(3));
        assert_eq!(p("50%").scaled(5, false), Ok(2));
        assert_eq!(p("100%").scaled(7, false), Ok(7));
        assert_eq!(IntOrString::Int(2).scaled(10, false), Ok(2));
        assert_eq!(p("3").scaled(10, false), Ok(3));
        assert!(p("x%").scaled(10, false).is_err());
        let v: IntOrString = serde_json::from_value(json!("10%")).expect("parses");
        assert_eq!(v, p("10%"));
        let v: IntOrString = serde_json::from_value(json!(1)).expect("parses");
        assert_eq!(v, IntOrString::Int(1));
    }

    #[test]
    fn template_hash_is_stable_and_ignores_in_place_fields() {
        let t = |v: Value| -> MachineTemplateSpec { serde_json::from_value(v).expect("parses") };
        let a = t(
            json!({"metadata": {"labels": {"x": "1"}}, "spec": {"clusterName": "c1", "version": "v1.34.0",
            "infrastructureRef": {"apiGroup": "g", "kind": "DevMachineTemplate", "name": "t1"}}}),
        );
        let b = t(
            json!({"metadata": {"labels": {"x": "2"}}, "spec": {"version": "v1.34.0", "clusterName": "c1",
            "minReadySeconds": 30, "infrastructureRef": {"name": "t1", "kind": "DevMachineTemplate", "apiGroup": "g"}}}),
        );
        let c = t(json!({"spec": {"clusterName": "c1", "version": "v1.35.0",
            "infrastructureRef": {"apiGroup": "g", "kind": "DevMachineTemplate", "name": "t1"}}}));
        assert_eq!(machine_template_hash(&a), machine_template_hash(&b));
        assert_ne!(machine_template_hash(&a), machine_template_hash(&c));
        assert!(machine_template_hash(&a).parse::<u32>().is_ok());
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }

    #[test]
    fn names_and_suffixes_use_the_safe_alphabet() {
        let s = name_suffix("uid-1/0");
        assert_eq!(s.len(), 5);
        assert_eq!(s, name_suffix("uid-1/0"));
        assert_ne!(s, name_suffix("uid-1/1"));
        assert!(s.bytes().all(|b| SAFE_ALPHANUMS.contains(&b)));
        assert!(
            safe_encode("12345")
                .bytes()
                .all(|b| SAFE_ALPHANUMS.contains(&b))
        );
    }

    #[test]
    fn long_names_become_hashed_label_values_and_owner_refs_are_ensured() {
        assert_eq!(label_value("md-1"), "md-1");
        let long = "x".repeat(64);
        let v = label_value(&long);
        assert!(
            v.starts_with("hash_") && v.ends_with("_z") && v.len() == 13,
            "{v}"
        );
        let r = |v: &str, uid: &str| OwnerReference {
            api_version: format!("cluster.x-k8s.io/{v}"),
            kind: "Cluster".into(),
            name: "c1".into(),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: None,
        };
        let mut refs = vec![r("v1beta1", "u0")];
        assert!(ensure_owner_reference(&mut refs, r("v1beta2", "u1")));
        assert!(!ensure_owner_reference(&mut refs, r("v1beta2", "u1")));
        assert_eq!(refs, vec![r("v1beta2", "u1")]);
    }

    #[test]
    fn fleet_objects_round_trip_unchanged() {
        use super::super::cluster::{MachineDeployment, MachineSet};
        let md = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
            "metadata": {"name": "md", "namespace": "ns", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {"machinedeployment.clusters.x-k8s.io/revision": "2"}},
            "spec": {"clusterName": "c1", "replicas": 3, "paused": false,
                "selector": {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "Exists"}]},
                "rollout": {"after": "2026-02-01T00:00:00Z", "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}},
                "deletion": {"order": "Oldest"}, "remediation": {"maxInFlight": 1},
                "machineNaming": {"template": "{{ .machineSet.name }}-{{ .random }}"},
                "template": {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}},
                    "spec": {"clusterName": "c1", "version": "v1.34.0", "minReadySeconds": 10,
                        "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate", "name": "t"}},
                        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "t"},
                        "deletion": {"nodeDrainTimeoutSeconds": 10}, "readinessGates": [{"conditionType": "X"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "upToDateReplicas": 3,
                "selector": "a=b", "phase": "Running", "observedGeneration": 4,
                "conditions": [{"type": "Available", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "deprecated": {"v1beta1": {"updatedReplicas": 3}}}});
        let typed: MachineDeployment = serde_json::from_value(md.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&typed).expect("serializes"), md);
        let ms = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineSet",
            "metadata": {"name": "ms", "namespace": "ns"},
            "spec": {"clusterName": "c1", "replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                // `bootstrap` is required by the CRD (MachineSpec keeps it non-optional).
                "template": {"metadata": {}, "spec": {"clusterName": "c1", "bootstrap": {"dataSecretName": "s"},
                    "infrastructureRef": {"apiGroup": "g", "kind": "K", "name": "n"}}}}});
        let typed: MachineSet = serde_json::from_value(ms.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&typed).expect("serializes"), ms);
        let mhc = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineHealthCheck",
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"clusterName": "c1", "selector": {"matchLabels": {"a": "b"}},
                "checks": {"nodeStartupTimeoutSeconds": 600,
                    "unhealthyNodeConditions": [{"type": "Ready", "status": "Unknown", "timeoutSeconds": 300}],
                    "unhealthyMachineConditions": [{"type": "Ready", "status": "False", "timeoutSeconds": 60}]},
                "remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%", "unhealthyInRange": "[1-3]"},
                    "templateRef": {"apiVersion": "x/v1", "kind": "T", "name": "t"}}},
            "status": {"expectedMachines": 3, "currentHealthy": 2, "remediationsAllowed": 1,
                "targets": ["a", "b", "c"], "observedGeneration": 1,
                "conditions": [{"type": "RemediationAllowed", "status": "True", "reason": "RemediationAllowed", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let typed: MachineHealthCheck = serde_json::from_value(mhc.clone()).expect("parses");
        assert_eq!(serde_json::to_value(&typed).expect("serializes"), mhc);
    }

    #[test]
    fn remediating_names_unhealthy_owner_remediated_machines() {
        use super::super::cluster::Machine;
        let m = |name: &str, hc: &str, or: Option<&str>| -> Machine {
            let mut cs = vec![
                json!({"type": "HealthCheckSucceeded", "status": hc, "reason": "X",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
            ];
            if let Some(or) = or {
                cs.push(
                    json!({"type": "OwnerRemediated", "status": or, "reason": "X",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
                );
            }
            serde_json::from_value(
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "namespace": "ns"}, "spec": {"clusterName": "c1"},
                "status": {"conditions": cs}}),
            )
            .expect("machine")
        };
        let ms = [
            m("b", "False", Some("False")),
            m("a", "False", Some("False")),
            m("c", "True", Some("False")),
            m("d", "False", None),
        ];
        assert!(owner_remediation_requested(&ms[0]));
        assert!(!owner_remediation_requested(&ms[2]) && !owner_remediation_requested(&ms[3]));
        let c = remediating(&ms);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (
                "True",
                "Remediating",
                "* Machines a, b: Machine is being remediated"
            )
        );
        let c = remediating(&ms[2..]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NotRemediating")
        );
        assert_eq!(
            name_list(["e", "d", "c", "b", "a"]),
            "a, b, c, ... (2 more)"
        );
    }

    #[test]
    fn time_round_trips() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-01-01T00:01:00Z"), Some(1_767_225_660));
        assert_eq!(
            parse_time("2026-01-01T01:01:00.123+01:00"),
            Some(1_767_225_660)
        );
        assert_eq!(format_time(1_767_225_660), "2026-01-01T00:01:00Z");
        assert_eq!(
            parse_time("2024-02-29T12:00:00Z")
                .map(format_time)
                .as_deref(),
            Some("2024-02-29T12:00:00Z")
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_range("[1-3]"), Some((1, 3)));
        assert_eq!(parse_range("[3-1]"), None);
    }
}

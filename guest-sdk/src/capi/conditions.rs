//! CAPI's v1beta2 condition helpers: mirror, summary, aggregate, ordering (util/conditions/v1beta2).
//!
//! They compute a [`Condition`] without a transition time; store it with
//! [`crate::conditions::set`], which keeps `lastTransitionTime` unless the
//! status changes.

use crate::conditions::{Condition, FALSE, TRUE, UNKNOWN, find};

/// Reason of a mirrored condition whose source has no reason.
pub const NO_REASON_REPORTED_REASON: &str = "NoReasonReported";
/// Reason of a mirrored condition the source has not reported.
pub const NOT_YET_REPORTED_REASON: &str = "NotYetReported";
/// The referenced object does not exist (and never became ready).
pub const DOES_NOT_EXIST_REASON: &str = "DoesNotExist";
/// The referenced object was deleted.
pub const DELETED_REASON: &str = "Deleted";
/// Something the controller could not determine.
pub const INTERNAL_ERROR_REASON: &str = "InternalError";

/// The condition `source_type` of an object of `source_kind` (its
/// `conditions`), renamed to `target_type`: status, reason and message
/// copied; an empty reason becomes `NoReasonReported`. When the source has
/// no such condition: `fallback` if given, else Unknown `NotYetReported`.
pub fn mirror(
    source: &[Condition],
    source_type: &str,
    source_kind: &str,
    target_type: &str,
    fallback: Option<Condition>,
) -> Condition {
    match find(source, source_type) {
        Some(c) => {
            let reason = if c.reason.is_empty() {
                NO_REASON_REPORTED_REASON
            } else {
                &c.reason
            };
            Condition::new(target_type, &c.status, reason).message(c.message.clone())
        }
        None => fallback.map_or_else(
            || {
                Condition::new(target_type, UNKNOWN, NOT_YET_REPORTED_REASON).message(format!(
                    "Condition {source_type} not yet reported from {source_kind}"
                ))
            },
            |mut f| {
                f.type_ = target_type.to_owned();
                f
            },
        ),
    }
}

/// One input of a summary: a condition type, and whether `True` is bad
/// (negative polarity, e.g. `Deleting`).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Condition type.
    pub type_: &'a str,
    /// True when status `True` is the bad state.
    pub negative: bool,
}

impl<'a> Input<'a> {
    /// A positive-polarity input.
    pub fn positive(type_: &'a str) -> Self {
        Self {
            type_,
            negative: false,
        }
    }

    /// A negative-polarity input.
    pub fn negative(type_: &'a str) -> Self {
        Self {
            type_,
            negative: true,
        }
    }
}

/// The three reasons of a summary or aggregate condition.
#[derive(Debug, Clone, Copy)]
pub struct Reasons<'a> {
    /// When every input is good.
    pub good: &'a str,
    /// When an input is bad.
    pub bad: &'a str,
    /// When no input is bad and one is unknown.
    pub unknown: &'a str,
}

enum Health {
    Good,
    Unknown,
    Bad,
}

fn health(c: &Condition, negative: bool) -> Health {
    match (c.status.as_str(), negative) {
        (TRUE, false) | (FALSE, true) => Health::Good,
        (FALSE, false) | (TRUE, true) => Health::Bad,
        _ => Health::Unknown,
    }
}

/// The summary `target_type` of `conditions` over `inputs`, as CAPI's
/// `NewSummaryCondition`: False when an input is bad, else Unknown when one
/// is unknown or missing, else True. The message lists the inputs that are
/// not good, one `* Type: message` line each, bad ones first.
pub fn summary(
    conditions: &[Condition],
    target_type: &str,
    inputs: &[Input<'_>],
    reasons: Reasons<'_>,
) -> Condition {
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for i in inputs {
        match find(conditions, i.type_) {
            None => unknown.push(format!("* {}: Condition not yet reported", i.type_)),
            Some(c) => {
                let text = if c.message.is_empty() {
                    c.reason.clone()
                } else {
                    c.message.clone()
                };
                let line = format!("* {}: {}", i.type_, indent(&text));
                match health(c, i.negative) {
                    Health::Good => {}
                    Health::Unknown => unknown.push(line),
                    Health::Bad => bad.push(line),
                }
            }
        }
    }
    let (status, reason) = if !bad.is_empty() {
        (FALSE, reasons.bad)
    } else if !unknown.is_empty() {
        (UNKNOWN, reasons.unknown)
    } else {
        (TRUE, reasons.good)
    };
    bad.extend(unknown);
    Condition::new(target_type, status, reason).message(bad.join("\n"))
}

/// Multi-line messages nest under their bullet.
fn indent(s: &str) -> String {
    s.replace('\n', "\n  ")
}

/// The aggregate `target_type` of condition `source_type` over several
/// objects of `kind` (`(name, conditions)` each), as CAPI's
/// `NewAggregateCondition`: False when one is False, else Unknown when one is
/// Unknown or missing, else True. The message names the objects that are not
/// good, grouped by status, at most three names per group.
pub fn aggregate<'a>(
    objects: impl IntoIterator<Item = (&'a str, &'a [Condition])>,
    source_type: &str,
    kind: &str,
    target_type: &str,
    reasons: Reasons<'_>,
) -> Condition {
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for (name, cs) in objects {
        match find(cs, source_type).map(|c| health(c, false)) {
            Some(Health::Good) => {}
            Some(Health::Bad) => bad.push(name.to_owned()),
            Some(Health::Unknown) | None => unknown.push(name.to_owned()),
        }
    }
    let names = |v: &mut Vec<String>, what: &str| {
        v.sort();
        let shown = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        let more = if v.len() > 3 {
            format!(", ... ({} more)", v.len() - 3)
        } else {
            String::new()
        };
        let plural = if v.len() == 1 {
            kind.to_owned()
        } else {
            format!("{kind}s")
        };
        format!("* {plural} {shown}{more}: {source_type} {what}")
    };
    let mut lines = Vec::new();
    if !bad.is_empty() {
        lines.push(names(&mut bad, "is False"));
    }
    if !unknown.is_empty() {
        lines.push(names(&mut unknown, "is Unknown or not yet reported"));
    }
    let (status, reason) = if !bad.is_empty() {
        (FALSE, reasons.bad)
    } else if !unknown.is_empty() {
        (UNKNOWN, reasons.unknown)
    } else {
        (TRUE, reasons.good)
    };
    Condition::new(target_type, status, reason).message(lines.join("\n"))
}

/// Order conditions as CAPI writes them: `Available`, `Ready` first,
/// `Deleting`, `Paused` last, the rest alphabetically.
pub fn sort(conditions: &mut [Condition]) {
    fn rank(t: &str) -> u8 {
        match t {
            "Available" => 0,
            "Ready" => 1,
            "Deleting" => 3,
            "Paused" => 4,
            _ => 2,
        }
    }
    conditions.sort_by(|a, b| {
        rank(&a.type_)
            .cmp(&rank(&b.type_))
            .then_with(|| a.type_.cmp(&b.type_))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Reasons<'static> = Reasons {
        good: "Available",
        bad: "NotAvailable",
        unknown: "AvailableUnknown",
    };

    #[test]
    fn mirror_copies_renames_and_falls_back() {
        let src = vec![Condition::new("Ready", FALSE, "Provisioning").message("VM starting")];
        let m = mirror(&src, "Ready", "DevCluster", "InfrastructureReady", None);
        assert_eq!(
            (m.type_.as_str(), m.status.as_str(), m.reason.as_str()),
            ("InfrastructureReady", FALSE, "Provisioning")
        );
        assert_eq!(m.message, "VM starting");
        let m = mirror(
            &[Condition::new("Ready", TRUE, "")],
            "Ready",
            "DevCluster",
            "InfrastructureReady",
            None,
        );
        assert_eq!(m.reason, NO_REASON_REPORTED_REASON);
        let m = mirror(&[], "Ready", "DevCluster", "InfrastructureReady", None);
        assert_eq!(
            (m.status.as_str(), m.reason.as_str()),
            (UNKNOWN, NOT_YET_REPORTED_REASON)
        );
        assert_eq!(
            m.message,
            "Condition Ready not yet reported from DevCluster"
        );
        let m = mirror(
            &[],
            "Ready",
            "DevCluster",
            "InfrastructureReady",
            Some(Condition::new("x", TRUE, "Ready")),
        );
        assert_eq!(
            (m.type_.as_str(), m.status.as_str()),
            ("InfrastructureReady", TRUE)
        );
    }

    #[test]
    fn summary_is_false_on_any_bad_input_unknown_on_missing_true_otherwise() {
        let inputs = [
            Input::positive("A"),
            Input::positive("B"),
            Input::negative("Deleting"),
        ];
        let mut cs = vec![
            Condition::new("A", TRUE, "Ok"),
            Condition::new("B", TRUE, "Ok"),
        ];
        assert_eq!(
            summary(&cs, "Available", &inputs, R).status,
            UNKNOWN,
            "Deleting missing"
        );
        cs.push(Condition::new("Deleting", FALSE, "NotDeleting"));
        let s = summary(&cs, "Available", &inputs, R);
        assert_eq!(
            (s.status.as_str(), s.reason.as_str(), s.message.as_str()),
            (TRUE, "Available", "")
        );
        cs[1] = Condition::new("B", FALSE, "Down").message("line1\nline2");
        cs[2] = Condition::new("Deleting", TRUE, "WaitingForWorkersDeletion");
        let s = summary(&cs, "Available", &inputs, R);
        assert_eq!(
            (s.status.as_str(), s.reason.as_str()),
            (FALSE, "NotAvailable")
        );
        assert_eq!(
            s.message,
            "* B: line1\n  line2\n* Deleting: WaitingForWorkersDeletion"
        );
    }

    #[test]
    fn aggregate_names_objects_by_status() {
        let good = vec![Condition::new("Available", TRUE, "Available")];
        let bad = vec![Condition::new("Available", FALSE, "NotAvailable")];
        let none: Vec<Condition> = Vec::new();
        let a = aggregate(
            [("md-a", good.as_slice()), ("md-b", good.as_slice())],
            "Available",
            "MachineDeployment",
            "WorkersAvailable",
            R,
        );
        assert_eq!((a.status.as_str(), a.message.as_str()), (TRUE, ""));
        let a = aggregate(
            [("md-a", good.as_slice()), ("md-c", none.as_slice())],
            "Available",
            "MachineDeployment",
            "WorkersAvailable",
            R,
        );
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            (UNKNOWN, "AvailableUnknown")
        );
        assert_eq!(
            a.message,
            "* MachineDeployment md-c: Available is Unknown or not yet reported"
        );
        let objs: Vec<(String, Vec<Condition>)> =
            (0..5).map(|i| (format!("md-{i}"), bad.clone())).collect();
        let a = aggregate(
            objs.iter().map(|(n, c)| (n.as_str(), c.as_slice())),
            "Available",
            "MachineDeployment",
            "WorkersAvailable",
            R,
        );
        assert_eq!(a.status, FALSE);
        assert_eq!(
            a.message,
            "* MachineDeployments md-0, md-1, md-2, ... (2 more): Available is False"
        );
    }

    #[test]
    fn sort_puts_available_ready_first_and_deleting_paused_last() {
        let mut cs: Vec<Condition> = [
            "Paused",
            "WorkersAvailable",
            "Deleting",
            "Ready",
            "InfrastructureReady",
            "Available",
        ]
        .iter()
        .map(|t| Condition::new(t, TRUE, "X"))
        .collect();
        sort(&mut cs);
        let order: Vec<&str> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            order,
            [
                "Available",
                "Ready",
                "InfrastructureReady",
                "WorkersAvailable",
                "Deleting",
                "Paused"
            ]
        );
    }
}

//! metav1.Condition with Kubernetes semantics (transition time moves only on a status change).

use serde::{Deserialize, Serialize};

/// A `metav1.Condition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, UpperCamelCase (e.g. `Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The `.metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed, RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
    /// Machine-readable reason, UpperCamelCase.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message; always serialized, even empty: metav1.Condition requires
    /// the field, and API servers refuse a condition without it.
    #[serde(default)]
    pub message: String,
}

/// Condition status `True`.
pub const TRUE: &str = "True";
/// Condition status `False`.
pub const FALSE: &str = "False";
/// Condition status `Unknown`.
pub const UNKNOWN: &str = "Unknown";

impl Condition {
    /// A condition of `type_` with `status` and `reason`; the transition time
    /// is filled in by [`set`].
    pub fn new(type_: &str, status: &str, reason: &str) -> Self {
        Self {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            ..Self::default()
        }
    }

    /// With this message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// With this observed generation.
    pub fn observed_generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Set `new` in `conditions` as meta.SetStatusCondition does: a new type is
/// appended with `lastTransitionTime = now`; an existing one keeps its
/// transition time unless the status changes, and takes the new reason,
/// message and observed generation. Returns whether anything changed.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition, now: &str) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            if new.last_transition_time.is_empty() {
                new.last_transition_time = now.to_owned();
            }
            conditions.push(new);
            true
        }
        Some(old) => {
            new.last_transition_time =
                if old.status != new.status || old.last_transition_time.is_empty() {
                    now.to_owned()
                } else {
                    old.last_transition_time.clone()
                };
            let changed = *old != new;
            *old = new;
            changed
        }
    }
}

/// Remove the condition of `type_`; true if it was present.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_changes_only_with_status() {
        let mut cs = Vec::new();
        assert!(set(
            &mut cs,
            Condition::new("Ready", FALSE, "Waiting"),
            "t1"
        ));
        assert_eq!(cs[0].last_transition_time, "t1");
        // Same status, new reason: changed, but the transition time stays.
        assert!(set(
            &mut cs,
            Condition::new("Ready", FALSE, "StillWaiting"),
            "t2"
        ));
        assert_eq!(cs[0].last_transition_time, "t1");
        assert_eq!(cs[0].reason, "StillWaiting");
        // Identical: no change.
        assert!(!set(
            &mut cs,
            Condition::new("Ready", FALSE, "StillWaiting"),
            "t3"
        ));
        // Status flips: transition time moves.
        assert!(set(
            &mut cs,
            Condition::new("Ready", TRUE, "Up").observed_generation(Some(2)),
            "t4"
        ));
        assert_eq!(cs[0].last_transition_time, "t4");
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(is_true(&cs, "Ready"));
        assert!(remove(&mut cs, "Ready"));
        assert!(cs.is_empty());
    }

    #[test]
    fn serializes_as_metav1_condition() {
        let c = Condition::new("Ready", TRUE, "Up");
        let mut cs = Vec::new();
        set(&mut cs, c, "2026-01-01T00:00:00Z");
        let v = serde_json::to_value(&cs[0]).expect("serializes");
        assert_eq!(v["type"], "Ready");
        assert_eq!(v["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert!(v.get("observedGeneration").is_none());
    }
}

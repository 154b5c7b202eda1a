//! The difference between a cached object and a plugin's desired (partial) object, as a JSON merge patch.
//!
//! A desired object says what some fields should be; fields it does not mention are left
//! alone. The patch is therefore the smallest RFC 7386 merge patch that, applied to the
//! current object, yields the current object overlaid with the desired one: keys whose
//! value already matches are omitted, objects recurse, arrays and scalars are replaced
//! whole, an explicit `null` removes a key that exists. `None` means nothing to send.

use serde_json::{Map, Value};

/// Metadata the server owns; a desired object never changes these.
const SERVER_METADATA: [&str; 8] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The merge patch taking `current` to `current` overlaid with `desired`; `None` if equal.
pub fn overlay_patch(current: &Value, desired: &Value) -> Option<Value> {
    match (current, desired) {
        (Value::Object(cur), Value::Object(des)) => {
            let mut patch = Map::new();
            for (k, dv) in des {
                match cur.get(k) {
                    Some(cv) if dv.is_null() => {
                        if !cv.is_null() {
                            patch.insert(k.clone(), Value::Null);
                        }
                    }
                    Some(cv) => {
                        if let Some(sub) = overlay_patch(cv, dv) {
                            patch.insert(k.clone(), sub);
                        }
                    }
                    None if dv.is_null() => {}
                    None => {
                        patch.insert(k.clone(), dv.clone());
                    }
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if current == desired => None,
        _ => Some(desired.clone()),
    }
}

/// The desired object without status, type fields and server-owned metadata: what a
/// metadata+spec patch may change.
pub fn spec_part(desired: &Value) -> Value {
    let mut d = desired.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SERVER_METADATA {
                meta.remove(k);
            }
        }
    }
    d
}

/// The metadata+spec patch of `desired` against `current` (status excluded); `None` if equal.
pub fn spec_patch(current: &Value, desired: &Value) -> Option<Value> {
    let mut cur = current.clone();
    if let Some(m) = cur.as_object_mut() {
        m.remove("status");
    }
    overlay_patch(&cur, &spec_part(desired))
}

/// The status patch (`{"status": ...}`) of `desired` against `current`; `None` if equal or
/// if `desired` has no status.
pub fn status_patch(current: &Value, desired: &Value) -> Option<Value> {
    let want = desired.get("status")?;
    let have = current.get("status").unwrap_or(&Value::Null);
    let have = if have.is_null() && want.is_object() {
        &Value::Object(Map::new())
    } else {
        have
    };
    let sub = overlay_patch(have, want)?;
    let mut patch = Map::new();
    patch.insert("status".into(), sub);
    Some(Value::Object(patch))
}

/// Add the optimistic-concurrency guard `metadata.resourceVersion` to a patch.
pub fn with_resource_version(mut patch: Value, rv: &str) -> Value {
    if let Some(m) = patch.as_object_mut() {
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current() -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "9", "uid": "u",
                         "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"clusterName": "c", "replicas": 1, "template": {"x": [1, 2]}},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
        })
    }

    #[test]
    fn echoing_the_cached_object_is_a_no_op() {
        let c = current();
        assert_eq!(spec_patch(&c, &c), None);
        assert_eq!(status_patch(&c, &c), None);
        // A different resourceVersion in the desired object is not a change.
        let mut d = c.clone();
        d["metadata"]["resourceVersion"] = json!("1");
        d["metadata"]["generation"] = json!(4);
        assert_eq!(spec_patch(&c, &d), None);
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let c = current();
        let d = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "m", "namespace": "ns", "labels": {"b": "3", "c": "4"}},
            "spec": {"replicas": 2, "template": {"x": [1, 2]}},
            "status": {"phase": "Running"}});
        assert_eq!(
            spec_patch(&c, &d),
            Some(json!({"metadata": {"labels": {"b": "3", "c": "4"}}, "spec": {"replicas": 2}}))
        );
        assert_eq!(
            status_patch(&c, &d),
            Some(json!({"status": {"phase": "Running"}}))
        );
    }

    #[test]
    fn arrays_are_replaced_whole_and_null_removes() {
        let c = current();
        let d = json!({"metadata": {"finalizers": null, "labels": {"a": null, "zz": null}},
                       "spec": {"template": {"x": [1, 2, 3]}}});
        assert_eq!(
            spec_patch(&c, &d),
            Some(
                json!({"metadata": {"finalizers": null, "labels": {"a": null}},
                        "spec": {"template": {"x": [1, 2, 3]}}})
            )
        );
        let s = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(status_patch(&c, &s), Some(s.clone()));
    }

    #[test]
    fn status_diff_against_missing_status_and_patch_applies_to_the_overlay() {
        let mut c = current();
        c.as_object_mut().unwrap().remove("status");
        let d = json!({"status": {"ready": true}});
        assert_eq!(
            status_patch(&c, &d),
            Some(json!({"status": {"ready": true}}))
        );
        assert_eq!(status_patch(&c, &json!({"spec": {}})), None);
        // Applying the patch to current gives the overlay.
        let c = current();
        let d = json!({"metadata": {"labels": {"a": null}}, "spec": {"template": {"y": 1}}});
        let mut patched = c.clone();
        json_patch::merge(&mut patched, &spec_patch(&c, &d).unwrap());
        assert_eq!(patched["spec"]["template"], json!({"x": [1, 2], "y": 1}));
        assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(spec_patch(&patched, &d), None, "idempotent");
    }

    #[test]
    fn resource_version_guard() {
        assert_eq!(
            with_resource_version(json!({"spec": {"a": 1}}), "42"),
            json!({"spec": {"a": 1}, "metadata": {"resourceVersion": "42"}})
        );
    }
}

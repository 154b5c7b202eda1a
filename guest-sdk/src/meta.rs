//! Object metadata helpers: labels, annotations, finalizers, owner references.
//!
//! They work on `serde_json::Value` objects (what plugins usually build their
//! desired objects from) and on the typed [`ObjectMeta`] subset.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The metadata fields reconcilers read; unknown fields are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Resource version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Generation (spec changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Set when deletion was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Finalizers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Owner references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    /// The owner reference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }

    /// Whether `finalizer` is present.
    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }

    /// Whether deletion was requested.
    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }
}

/// A Kubernetes owner reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// Owner's apiVersion.
    pub api_version: String,
    /// Owner's kind.
    pub kind: String,
    /// Owner's name.
    pub name: String,
    /// Owner's UID.
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether the owner's deletion waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

impl OwnerReference {
    /// A controller reference to `owner` (controller and blockOwnerDeletion
    /// set), as controllerutil.SetControllerReference makes.
    pub fn controller_of(owner: &Value) -> Self {
        let s = |p: &str| {
            owner
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Self {
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            name: s("/metadata/name"),
            uid: s("/metadata/uid"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// `metadata` of `obj` as a mutable map, created if missing. `None` when
/// `obj` is not a JSON object.
fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let m = obj
        .as_object_mut()?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

fn string_map_mut<'a>(obj: &'a mut Value, field: &str) -> Option<&'a mut Map<String, Value>> {
    let m = metadata_mut(obj)?
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

/// The value of label `key` on `obj`.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// Set label `key` to `value` on `obj` (a JSON object).
pub fn set_label(obj: &mut Value, key: &str, value: &str) {
    if let Some(m) = string_map_mut(obj, "labels") {
        m.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// The value of annotation `key` on `obj`.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// Set annotation `key` to `value` on `obj` (a JSON object).
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if let Some(m) = string_map_mut(obj, "annotations") {
        m.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|fs| fs.iter().any(|f| f.as_str() == Some(finalizer)))
}

/// Add `finalizer` to `obj` unless present; true if it was added.
pub fn add_finalizer(obj: &mut Value, finalizer: &str) -> bool {
    if has_finalizer(obj, finalizer) {
        return false;
    }
    let Some(m) = metadata_mut(obj) else {
        return false;
    };
    let fs = m
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !fs.is_array() {
        *fs = Value::Array(Vec::new());
    }
    if let Some(fs) = fs.as_array_mut() {
        fs.push(Value::String(finalizer.to_owned()));
    }
    true
}

/// Remove `finalizer` from `obj`; true if it was present.
pub fn remove_finalizer(obj: &mut Value, finalizer: &str) -> bool {
    let Some(fs) = obj
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = fs.len();
    fs.retain(|f| f.as_str() != Some(finalizer));
    before != fs.len()
}

/// The controller owner reference of `obj`, if any.
pub fn controller_of(obj: &Value) -> Option<OwnerReference> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .filter_map(|o| serde_json::from_value::<OwnerReference>(o.clone()).ok())
        .find(|o| o.controller == Some(true))
}

/// Make `owner` the controller of `obj`, replacing a reference to the same
/// owner (by uid, or by kind and name). Returns false, changing nothing, if
/// `obj` already has a different controller (as SetControllerReference fails).
pub fn set_controller_reference(obj: &mut Value, owner: &Value) -> bool {
    let new = OwnerReference::controller_of(owner);
    if let Some(existing) = controller_of(obj)
        && existing.uid != new.uid
        && !(existing.kind == new.kind && existing.name == new.name)
    {
        return false;
    }
    let Some(m) = metadata_mut(obj) else {
        return false;
    };
    let refs = m
        .entry("ownerReferences")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !refs.is_array() {
        *refs = Value::Array(Vec::new());
    }
    let Some(refs) = refs.as_array_mut() else {
        return false;
    };
    refs.retain(|r| {
        let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
        let same_uid = !new.uid.is_empty() && uid == new.uid;
        let same_name = r.get("kind").and_then(Value::as_str) == Some(new.kind.as_str())
            && r.get("name").and_then(Value::as_str) == Some(new.name.as_str());
        !(same_uid || same_name)
    });
    refs.push(serde_json::to_value(&new).unwrap_or(Value::Null));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_annotations_are_created_and_read() {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        set_label(&mut o, "a", "1");
        set_annotation(&mut o, "b", "2");
        assert_eq!(label(&o, "a"), Some("1"));
        assert_eq!(annotation(&o, "b"), Some("2"));
        assert_eq!(label(&o, "b"), None);
    }

    #[test]
    fn finalizers_add_once_and_remove() {
        let mut o = json!({"metadata": {"name": "x"}});
        assert!(add_finalizer(&mut o, "f"));
        assert!(!add_finalizer(&mut o, "f"));
        assert!(has_finalizer(&o, "f"));
        assert!(remove_finalizer(&mut o, "f"));
        assert!(!has_finalizer(&o, "f"));
        assert!(!remove_finalizer(&mut o, "f"));
    }

    #[test]
    fn controller_reference_is_set_once_and_refuses_a_second_controller() {
        let owner = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c1", "uid": "u1"}});
        let other = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c2", "uid": "u2"}});
        let mut o = json!({"metadata": {"name": "m"}});
        assert!(set_controller_reference(&mut o, &owner));
        assert!(set_controller_reference(&mut o, &owner));
        assert_eq!(
            o["metadata"]["ownerReferences"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(!set_controller_reference(&mut o, &other));
        let c = controller_of(&o).expect("controller");
        assert_eq!(
            (c.name.as_str(), c.block_owner_deletion),
            ("c1", Some(true))
        );
    }
}

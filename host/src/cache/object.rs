//! One cached object: its compact JSON text, kept once, and the few fields the indexes need.

use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The label CAPI puts on every object that belongs to a Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The annotation that pauses reconciliation of one CAPI object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";

/// Errors turning API data into a cached object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object has no `metadata.name`.
    #[error("object of kind {kind} has no metadata.name")]
    NoName {
        /// Kind of the object.
        kind: String,
    },
    /// The object is not a JSON object, or could not be serialized.
    #[error("object is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// Namespace and name of an object (namespace empty for cluster-scoped objects).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// An owner reference, as much of it as mapping and indexing need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    /// `apiVersion` of the owner.
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner (same namespace).
    pub name: String,
    /// UID of the owner.
    pub uid: String,
    /// Whether this is the controller reference.
    pub controller: bool,
}

impl OwnerRef {
    /// The API group of the owner (`""` for core).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }
}

/// An object as the cache holds it. Immutable; replaced wholesale on every event.
#[derive(Debug)]
pub struct CachedObject {
    /// Compact JSON text without `metadata.managedFields`; handed to plugins as is.
    pub json: Arc<str>,
    /// Namespace and name.
    pub key: ObjectKey,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.ownerReferences`.
    pub owners: Vec<OwnerRef>,
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// The `cluster.x-k8s.io/paused` annotation is present.
    pub paused_annotation: bool,
    /// `spec.paused` is true (a paused CAPI Cluster).
    pub spec_paused: bool,
    /// The Cluster it belongs to: the cluster-name label, else `spec.clusterName`.
    pub cluster_name: Option<String>,
    /// Its Cluster API cluster as the WIT `target` defines it: its own name for a
    /// `cluster.x-k8s.io` Cluster, else `spec.clusterName`, else the cluster-name label,
    /// else the name of an owner reference to a `cluster.x-k8s.io` Cluster (how CAPI finds
    /// a KubeadmControlPlane's cluster).
    pub cluster: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, p| v.get(p))?.as_str()
}

impl CachedObject {
    /// Build from an API object, stripping `metadata.managedFields`.
    pub fn from_value(mut value: Value) -> Result<Self, ObjectError> {
        let kind = str_at(&value, &["kind"]).unwrap_or_default().to_string();
        let meta = value
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or(ObjectError::NoName { kind: kind.clone() })?;
        meta.remove("managedFields");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ObjectError::NoName { kind: kind.clone() })?
            .to_string();
        let get = |k: &str| {
            meta.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let key = ObjectKey::new(get("namespace"), name);
        let uid = get("uid");
        let resource_version = get("resourceVersion");
        let deleting = meta.get("deletionTimestamp").is_some_and(|v| !v.is_null());
        let labels: Vec<(String, String)> = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let paused_annotation = meta
            .get("annotations")
            .and_then(|a| a.get(PAUSED_ANNOTATION))
            .is_some();
        let owners: Vec<OwnerRef> = meta
            .get("ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| {
                        Some(OwnerRef {
                            api_version: r.get("apiVersion")?.as_str()?.to_string(),
                            kind: r.get("kind")?.as_str()?.to_string(),
                            name: r.get("name")?.as_str()?.to_string(),
                            uid: r.get("uid")?.as_str()?.to_string(),
                            controller: r
                                .get("controller")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let spec_paused = value
            .get("spec")
            .and_then(|s| s.get("paused"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let cluster_name = labels
            .iter()
            .find(|(k, _)| k == CLUSTER_NAME_LABEL)
            .map(|(_, v)| v.clone())
            .or_else(|| str_at(&value, &["spec", "clusterName"]).map(str::to_string));
        let api_group = str_at(&value, &["apiVersion"])
            .and_then(|a| a.rsplit_once('/'))
            .map_or("", |(g, _)| g);
        let cluster = if api_group == "cluster.x-k8s.io" && kind == "Cluster" {
            Some(key.name.clone())
        } else {
            str_at(&value, &["spec", "clusterName"])
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .or_else(|| {
                    labels
                        .iter()
                        .find(|(k, v)| k == CLUSTER_NAME_LABEL && !v.is_empty())
                        .map(|(_, v)| v.clone())
                })
                .or_else(|| {
                    owners
                        .iter()
                        .find(|o| o.kind == "Cluster" && o.group() == "cluster.x-k8s.io")
                        .map(|o| o.name.clone())
                })
        };
        let json: Arc<str> = serde_json::to_string(&value)
            .map_err(ObjectError::Json)?
            .into();
        Ok(Self {
            json,
            key,
            uid,
            resource_version,
            owners,
            labels,
            paused_annotation,
            spec_paused,
            cluster_name,
            cluster,
            deleting,
        })
    }

    /// Parse JSON text (tests, tools).
    pub fn from_json(text: &str) -> Result<Self, ObjectError> {
        Self::from_value(serde_json::from_str(text).map_err(ObjectError::Json)?)
    }

    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The controller owner reference, if any.
    pub fn controller_owner(&self) -> Option<&OwnerRef> {
        self.owners.iter().find(|o| o.controller)
    }

    /// Heap and inline bytes this entry holds, for the cache memory figure.
    pub fn approx_bytes(&self) -> usize {
        let owners: usize = self
            .owners
            .iter()
            .map(|o| {
                std::mem::size_of::<OwnerRef>()
                    + o.api_version.capacity()
                    + o.kind.capacity()
                    + o.name.capacity()
                    + o.uid.capacity()
            })
            .sum();
        let labels: usize = self
            .labels
            .iter()
            .map(|(k, v)| 48 + k.capacity() + v.capacity())
            .sum();
        std::mem::size_of::<Self>()
            + 16
            + self.json.len()
            + self.key.namespace.capacity()
            + self.key.name.capacity()
            + self.uid.capacity()
            + self.resource_version.capacity()
            + owners
            + labels
            + self.cluster_name.as_ref().map_or(0, String::capacity)
            + self.cluster.as_ref().map_or(0, String::capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_fields_are_stripped_and_fields_extracted() {
        let o = CachedObject::from_json(
            r#"{"apiVersion":"cluster.x-k8s.io/v1beta2","kind":"Machine",
            "metadata":{"name":"m1","namespace":"ns","uid":"u1","resourceVersion":"7",
              "labels":{"cluster.x-k8s.io/cluster-name":"c1"},
              "annotations":{"cluster.x-k8s.io/paused":""},
              "managedFields":[{"manager":"kubectl"}],
              "ownerReferences":[{"apiVersion":"cluster.x-k8s.io/v1beta2","kind":"MachineSet","name":"ms","uid":"u0","controller":true}]},
            "spec":{"clusterName":"other"}}"#,
        )
        .unwrap();
        assert!(!o.json.contains("managedFields"));
        assert!(!o.json.contains('\n'));
        assert_eq!(o.key, ObjectKey::new("ns", "m1"));
        assert_eq!(o.resource_version, "7");
        assert_eq!(o.cluster_name.as_deref(), Some("c1"), "label wins");
        assert!(o.paused_annotation);
        let owner = o.controller_owner().unwrap();
        assert_eq!(
            (owner.group(), owner.name.as_str()),
            ("cluster.x-k8s.io", "ms")
        );
    }

    #[test]
    fn objects_without_a_name_are_rejected() {
        assert!(CachedObject::from_json(r#"{"kind":"X","metadata":{}}"#).is_err());
        assert!(CachedObject::from_json(r#"[1]"#).is_err());
    }
}

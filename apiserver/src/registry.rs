//! The resource types a server serves: built-in kinds plus those CRDs register at run time.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::schema::Node;

/// How `metadata.name` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces, services).
    Label,
    /// Any name without `/` or `%` and not `.`/`..` (RBAC kinds).
    Path,
}

/// A `scale` subresource mapping.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// `.spec.replicas`-style path of the desired replicas.
    pub spec_replicas: String,
    /// `.status.replicas`-style path of the observed replicas.
    pub status_replicas: String,
    /// Optional `.status.selector` path.
    pub label_selector: Option<String>,
}

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// Column type (`string`, `integer`, `date`, ...).
    pub ty: String,
    /// Column format.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0 = default columns, >0 = `-o wide` only.
    pub priority: i64,
    /// Simple JSONPath evaluated against the object.
    pub json_path: String,
}

/// Everything the server knows about one resource in one version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// Version served.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`all`, `cluster-api`, ...).
    pub categories: Vec<String>,
    /// Has a status subresource.
    pub status_subresource: bool,
    /// Scale subresource mapping.
    pub scale: Option<ScaleSpec>,
    /// Compiled schema (CRDs).
    pub schema: Option<Arc<Node>>,
    /// Raw schema for OpenAPI (CRDs).
    pub raw_schema: Option<Arc<Value>>,
    /// Printer columns beyond Name and Age.
    pub columns: Vec<PrinterColumn>,
    /// Registered by a CRD.
    pub custom: bool,
    /// Version objects are stored in (for all served versions of the resource).
    pub storage_version: String,
    /// Whether metadata.generation is maintained.
    pub has_generation: bool,
    /// DELETE answers with the object rather than a Status.
    pub return_deleted_object: bool,
    /// PUT without resourceVersion allowed.
    pub allow_unconditional_update: bool,
    /// Name validation rule.
    pub name_rule: NameRule,
    /// Field selector labels beyond metadata.name/namespace.
    pub field_labels: Vec<String>,
}

impl ResourceType {
    /// `group/version` or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of the storage table shared by all versions: `plural.group`.
    pub fn storage_key(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// `Kind.group` for Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Verbs listed in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Whether a strategic merge patch is accepted (built-in kinds only).
    pub fn strategic_merge(&self) -> bool {
        !self.custom
    }
}

/// Resource types by group/version/plural, plus groups in registration order.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_gvr: HashMap<(String, String, String), Arc<ResourceType>>,
    /// Groups and their versions (preferred first), in order of registration.
    groups: Vec<(String, Vec<String>)>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        let b = |group: &str,
                 version: &str,
                 plural: &str,
                 kind: &str,
                 namespaced: bool,
                 short: &[&str]| ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: vec![],
            status_subresource: false,
            scale: None,
            schema: None,
            raw_schema: None,
            columns: vec![],
            custom: false,
            storage_version: version.into(),
            has_generation: false,
            return_deleted_object: false,
            allow_unconditional_update: true,
            name_rule: NameRule::Subdomain,
            field_labels: vec![],
        };
        let mut ns = b("", "v1", "namespaces", "Namespace", false, &["ns"]);
        ns.status_subresource = true;
        ns.return_deleted_object = true;
        ns.name_rule = NameRule::Label;
        ns.field_labels = vec!["status.phase".into()];
        ns.columns = vec![col("Status", "string", ".status.phase", 0)];
        r.insert(ns);
        let mut secret = b("", "v1", "secrets", "Secret", true, &[]);
        secret.field_labels = vec!["type".into()];
        secret.columns = vec![col("Type", "string", ".type", 0)];
        r.insert(secret);
        r.insert(b("", "v1", "configmaps", "ConfigMap", true, &["cm"]));
        let mut ev = b("", "v1", "events", "Event", true, &["ev"]);
        ev.field_labels = [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        r.insert(ev);
        let mut node = b("", "v1", "nodes", "Node", false, &["no"]);
        node.status_subresource = true;
        node.field_labels = vec!["spec.unschedulable".into()];
        r.insert(node);
        let mut pod = b("", "v1", "pods", "Pod", true, &["po"]);
        pod.status_subresource = true;
        pod.return_deleted_object = true;
        pod.categories = vec!["all".into()];
        pod.field_labels = [
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        pod.columns = vec![
            col("Status", "string", ".status.phase", 0),
            col("Node", "string", ".spec.nodeName", 1),
        ];
        r.insert(pod);
        let mut svc = b("", "v1", "services", "Service", true, &["svc"]);
        svc.status_subresource = true;
        svc.name_rule = NameRule::Label;
        svc.categories = vec!["all".into()];
        svc.columns = vec![
            col("Type", "string", ".spec.type", 0),
            col("Cluster-IP", "string", ".spec.clusterIP", 0),
        ];
        r.insert(svc);
        r.insert(b(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
        ));
        r.insert(b("", "v1", "endpoints", "Endpoints", true, &["ep"]));
        r.insert(b("events.k8s.io", "v1", "events", "Event", true, &["ev"]));
        r.insert(b("coordination.k8s.io", "v1", "leases", "Lease", true, &[]));
        let mut crd = b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        );
        crd.status_subresource = true;
        crd.has_generation = true;
        crd.return_deleted_object = true;
        crd.columns = vec![col("Created At", "date", ".metadata.creationTimestamp", 0)];
        r.insert(crd);
        // apps/v1: stored kinds with status (and, but for DaemonSet, scale) subresources as
        // kube-apiserver serves them; no controller acts on them.
        for (plural, kind, short, scale) in [
            ("deployments", "Deployment", "deploy", true),
            ("replicasets", "ReplicaSet", "rs", true),
            ("statefulsets", "StatefulSet", "sts", true),
            ("daemonsets", "DaemonSet", "ds", false),
        ] {
            let mut t = b("apps", "v1", plural, kind, true, &[short]);
            t.status_subresource = true;
            t.has_generation = true;
            t.categories = vec!["all".into()];
            t.scale = scale.then(|| ScaleSpec {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".spec.selector".into()),
            });
            t.columns = match kind {
                "Deployment" => vec![
                    col("Up-to-date", "integer", ".status.updatedReplicas", 0),
                    col("Available", "integer", ".status.availableReplicas", 0),
                    col(
                        "Containers",
                        "string",
                        ".spec.template.spec.containers[*].name",
                        1,
                    ),
                    col(
                        "Images",
                        "string",
                        ".spec.template.spec.containers[*].image",
                        1,
                    ),
                ],
                "ReplicaSet" => vec![
                    col("Desired", "integer", ".spec.replicas", 0),
                    col("Current", "integer", ".status.replicas", 0),
                    col("Ready", "integer", ".status.readyReplicas", 0),
                ],
                "StatefulSet" => vec![col("Ready", "integer", ".status.readyReplicas", 0)],
                _ => vec![
                    col("Desired", "integer", ".status.desiredNumberScheduled", 0),
                    col("Current", "integer", ".status.currentNumberScheduled", 0),
                    col("Ready", "integer", ".status.numberReady", 0),
                ],
            };
            r.insert(t);
        }
        for (plural, kind, namespaced) in [
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ] {
            let mut t = b(
                "rbac.authorization.k8s.io",
                "v1",
                plural,
                kind,
                namespaced,
                &[],
            );
            t.name_rule = NameRule::Path;
            r.insert(t);
        }
        r
    }

    /// Adds or replaces a resource type.
    pub fn insert(&mut self, t: ResourceType) {
        match self.groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) => {
                if !versions.contains(&t.version) {
                    versions.push(t.version.clone());
                    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                }
            }
            None => self.groups.push((t.group.clone(), vec![t.version.clone()])),
        }
        self.by_gvr.insert(
            (t.group.clone(), t.version.clone(), t.plural.clone()),
            Arc::new(t),
        );
    }

    /// Removes every version of `plural.group`.
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.by_gvr
            .retain(|(g, _, p), _| !(g == group && p == plural));
        let live: Vec<(String, String)> = self
            .by_gvr
            .keys()
            .map(|(g, v, _)| (g.clone(), v.clone()))
            .collect();
        for (g, versions) in &mut self.groups {
            versions.retain(|v| live.iter().any(|(lg, lv)| lg == g && lv == v));
        }
        self.groups.retain(|(_, v)| !v.is_empty());
    }

    /// Looks up a resource by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceType>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Whether a group/version is served.
    pub fn has_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .iter()
            .any(|(g, vs)| g == group && vs.iter().any(|v| v == version))
    }

    /// Groups with versions, preferred version first.
    pub fn groups(&self) -> &[(String, Vec<String>)] {
        &self.groups
    }

    /// Resources of one group/version, sorted by plural.
    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        let mut v: Vec<_> = self
            .by_gvr
            .iter()
            .filter(|((g, ver, _), _)| g == group && ver == version)
            .map(|(_, t)| t.clone())
            .collect();
        v.sort_by(|a, b| a.plural.cmp(&b.plural));
        v
    }

    /// Any version of a resource by kind within a group (for ownerReference lookups).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&Arc<ResourceType>> {
        self.by_gvr
            .values()
            .find(|t| t.group == group && t.kind == kind)
    }

    /// All types, one per storage table (the storage version).
    pub fn storage_types(&self) -> Vec<Arc<ResourceType>> {
        let mut v: Vec<_> = self
            .by_gvr
            .values()
            .filter(|t| t.version == t.storage_version)
            .cloned()
            .collect();
        v.sort_by_key(|t| t.storage_key());
        v
    }
}

fn col(name: &str, ty: &str, path: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.into(),
        ty: ty.into(),
        format: String::new(),
        description: String::new(),
        priority,
        json_path: path.into(),
    }
}

/// Errors turning a CRD into resource types.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A required CRD field is missing.
    #[error("customresourcedefinition is missing {0}")]
    Missing(&'static str),
    /// A version's schema does not compile.
    #[error("customresourcedefinition version {version}: {source}")]
    Schema {
        /// The version.
        version: String,
        /// The compile error.
        #[source]
        source: crate::schema::SchemaError,
    },
}

/// The resource types a CRD object serves (one per served version).
pub fn types_from_crd(crd: &Value) -> Result<Vec<ResourceType>, CrdError> {
    let spec = crd.get("spec").ok_or(CrdError::Missing("spec"))?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or(CrdError::Missing("spec.group"))?;
    let names = spec.get("names").ok_or(CrdError::Missing("spec.names"))?;
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .ok_or(CrdError::Missing("spec.names.plural"))?;
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(CrdError::Missing("spec.names.kind"))?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = names
        .get("listKind")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strs(names.get("shortNames"));
    let categories = strs(names.get("categories"));
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or(CrdError::Missing("spec.versions"))?;
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .ok_or(CrdError::Missing("a storage version"))?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or(CrdError::Missing("spec.versions[].name"))?;
        let raw = v.pointer("/schema/openAPIV3Schema");
        let schema = match raw {
            Some(s) => Some(Arc::new(Node::compile(s).map_err(|source| {
                CrdError::Schema {
                    version: name.to_string(),
                    source,
                }
            })?)),
            None => None,
        };
        let subs = v.get("subresources");
        let scale = subs.and_then(|s| s.get("scale")).map(|s| ScaleSpec {
            spec_replicas: s
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .to_string(),
            status_replicas: s
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
        let columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: c
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        ty: c
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("string")
                            .to_string(),
                        format: c
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        description: c
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceType {
            group: group.to_string(),
            version: name.to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            status_subresource: subs.and_then(|s| s.get("status")).is_some(),
            scale,
            schema,
            raw_schema: raw.cloned().map(Arc::new),
            columns,
            custom: true,
            storage_version: storage_version.to_string(),
            has_generation: true,
            return_deleted_object: true,
            allow_unconditional_update: false,
            name_rule: NameRule::Subdomain,
            field_labels: vec![],
        });
    }
    Ok(out)
}

/// Kubernetes version priority: GA > beta > alpha > other, then by numbers (v1 > v1beta2).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (prefix, rank) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u32>()
        {
            return (rank, major, minor);
        }
    }
    (0, 0, 0)
}

impl Registry {
    /// The storage-version type of a storage table (`plural.group`).
    pub fn by_storage_key(&self, key: &str) -> Option<&Arc<ResourceType>> {
        let (plural, group) = key.split_once('.')?;
        self.by_gvr
            .values()
            .find(|t| t.plural == plural && t.group == group && t.version == t.storage_version)
    }
}

//! The write path with kube-apiserver semantics: create, update, patch, apply, delete,
//! finalizers, generation, managedFields, garbage collection, namespaces and CRD registration.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::meta::{self, FieldPath};
use crate::registry::{ResourceType, types_from_crd};
use crate::status::{self, ApiError, Cause};
use crate::store::{self, EventType, Obj, State};

/// Deletion propagation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now, dependents afterwards.
    Background,
    /// Delete dependents first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// propagationPolicy (None = the kind's default, Background).
    pub propagation: Option<Propagation>,
    /// preconditions.uid.
    pub uid: Option<String>,
    /// preconditions.resourceVersion.
    pub rv: Option<String>,
    /// dryRun=All.
    pub dry_run: bool,
}

/// Result of a delete.
#[derive(Debug)]
pub struct Deleted {
    /// The object (final state if removed, updated state if pending finalizers).
    pub obj: Arc<Obj>,
    /// Removed now (vs. waiting for finalizers).
    pub removed: bool,
}

const EXCLUDED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn obj_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// `metadata` of an object as a mutable map (created if absent).
pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    let m = obj_mut(v);
    obj_mut(m.entry("metadata").or_insert_with(|| json!({})))
}

fn meta_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get("metadata")?.get(k)?.as_str()
}

/// The object's name.
pub fn name_of(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or_default()
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(v: &mut Value, f: Vec<String>) {
    let m = meta_mut(v);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

fn is_deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// Checks apiVersion and kind of a body against the resource (filling them when absent is not
/// allowed: kube requires kind).
pub fn check_type(rt: &ResourceType, obj: &Value, raw_len: usize) -> Result<(), ApiError> {
    let Some(m) = obj.as_object() else {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    };
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in object of {raw_len} bytes"
        )));
    }
    let av = m
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if av.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in object of {raw_len} bytes"
        )));
    }
    if av != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    if m.get("metadata")
        .is_some_and(|md| !md.is_object() && !md.is_null())
    {
        return Err(ApiError::bad_request("metadata: expected an object"));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if rt.namespaced {
        let url_ns = ns.unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(b) if !b.is_empty() && b != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn validate_meta(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    let name = name_of(obj);
    if name.is_empty() {
        causes.push(status::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in meta::name_errors(rt.name_rule, name) {
            causes.push(status::invalid_value("metadata.name", &json!(name), &msg));
        }
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    match v.as_str() {
                        Some(s) => {
                            if let Some(msg) = meta::label_value_errors(s) {
                                causes.push(status::invalid_value("metadata.labels", v, &msg));
                            }
                        }
                        None => causes.push(status::type_invalid(
                            &format!("metadata.labels.{k}"),
                            v,
                            "must be a string",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(status::type_invalid(
                "metadata.labels",
                labels,
                "must be an object",
            )),
        }
    }
    if let Some(a) = obj.pointer("/metadata/annotations")
        && !a.is_null()
        && !a
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    {
        causes.push(status::type_invalid(
            "metadata.annotations",
            a,
            "must be a map of strings",
        ));
    }
    if let Some(f) = obj.pointer("/metadata/finalizers")
        && !f.is_null()
        && !f.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        causes.push(status::type_invalid(
            "metadata.finalizers",
            f,
            "must be a list of strings",
        ));
    }
}

fn invalid(rt: &ResourceType, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&rt.qualified_kind(), &rt.group, name_of(obj), causes)
}

/// Kind-specific defaults and schema admission shared by create and update.
fn admit(rt: &ResourceType, obj: &mut Value, strict: bool) -> Result<(), ApiError> {
    let mut causes = vec![];
    validate_meta(rt, obj, &mut causes);
    if !causes.is_empty() {
        return Err(invalid(rt, obj, causes));
    }
    if let Some(schema) = &rt.schema {
        let mut unknown = vec![];
        let causes = schema.admit(obj, &mut unknown);
        if strict && !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field {u:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version {v:?} cannot be handled as a {kind}: strict decoding error: {}",
                list.join(", "),
                kind = rt.kind,
                v = rt.version
            )));
        }
        if !causes.is_empty() {
            return Err(invalid(rt, obj, causes));
        }
    }
    if rt.custom {
        return Ok(());
    }
    drop_empty_maps(rt, obj);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => {
            let m = obj_mut(obj);
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                use base64::Engine;
                let data = obj_mut(m.entry("data").or_insert_with(|| json!({})));
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
            m.entry("type").or_insert_with(|| json!("Opaque"));
        }
        ("apps", kind) => crate::defaults::apps_v1(kind, obj),
        ("", "Namespace") => {
            let name = name_of(obj).to_string();
            let m = meta_mut(obj);
            let labels = obj_mut(m.entry("labels").or_insert_with(|| json!({})));
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if let Err(e) = types_from_crd(obj) {
                return Err(invalid(
                    rt,
                    obj,
                    vec![status::invalid_value("spec", &Value::Null, &e.to_string())],
                ));
            }
            let spec = obj.get("spec").cloned().unwrap_or_default();
            let names = spec.get("names").cloned().unwrap_or_default();
            let expected = format!(
                "{}.{}",
                names
                    .get("plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                spec.get("group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            if name_of(obj) != expected {
                return Err(invalid(
                    rt,
                    obj,
                    vec![status::invalid_value(
                        "metadata.name",
                        &json!(name_of(obj)),
                        "must be spec.names.plural+\".\"+spec.group",
                    )],
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Drops the empty maps a built-in kind's Go type encodes with `omitempty` (kube-apiserver
/// decodes into the typed object, so `"data": {}` is gone from what it stores and answers).
fn drop_empty_maps(rt: &ResourceType, obj: &mut Value) {
    let empty = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(Map::is_empty);
    let top: &[&str] = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") => &["data", "binaryData"],
        ("", "Secret") => &["data", "stringData"],
        _ => &[],
    };
    if let Some(m) = obj.as_object_mut() {
        for k in top {
            if empty(m.get(*k)) {
                m.remove(*k);
            }
        }
    }
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        for k in ["labels", "annotations"] {
            if empty(m.get(k)) {
                m.remove(k);
            }
        }
    }
}

/// Default field manager from a User-Agent (`kubectl/v1.32 ...` -> `kubectl`).
pub fn manager_from_agent(agent: &str) -> String {
    let m = agent.split('/').next().unwrap_or_default().trim();
    if m.is_empty() {
        "unknown".into()
    } else {
        m.chars().take(128).collect()
    }
}

/// Builds a new object for create (outside the store lock): metadata, defaults, validation.
pub fn prepare_create(
    rt: &ResourceType,
    ns: Option<&str>,
    mut obj: Value,
    manager: &str,
    raw_len: usize,
    strict: bool,
) -> Result<Value, ApiError> {
    check_type(rt, &obj, raw_len)?;
    check_namespace(rt, ns, &mut obj)?;
    {
        let m = meta_mut(&mut obj);
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty()
            && let Some(g) = m
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|g| !g.is_empty())
        {
            let base: String = g.chars().take(58).collect();
            m.insert(
                "name".into(),
                json!(format!("{base}{}", meta::random_suffix())),
            );
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        if rt.has_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    if rt.status_subresource && rt.kind != "Node" {
        obj_mut(&mut obj).remove("status");
    }
    // Decode-time defaults (kube's SetDefaults_*), which the field manager sees.
    if (rt.group.as_str(), rt.kind.as_str()) == ("", "Service") {
        let spec = obj_mut(obj_mut(&mut obj).entry("spec").or_insert_with(|| json!({})));
        spec.entry("type").or_insert_with(|| json!("ClusterIP"));
        spec.entry("sessionAffinity")
            .or_insert_with(|| json!("None"));
    }
    admit(rt, &mut obj, strict)?;
    set_update_manager(rt, None, &mut obj, manager, None);
    // PrepareForCreate: the registry's own fields, set after the field manager ran.
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            let m = obj_mut(&mut obj);
            m.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            m.insert("status".into(), json!({"phase": "Active"}));
        }
        // PrepareForCreate resets status; Go encodes the non-omitempty counters as 0.
        ("apps", kind) => {
            let status = match kind {
                "ReplicaSet" => json!({"replicas": 0}),
                "StatefulSet" => json!({"replicas": 0, "availableReplicas": 0}),
                "DaemonSet" => json!({
                    "currentNumberScheduled": 0, "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0, "numberReady": 0,
                }),
                _ => json!({}),
            };
            obj_mut(&mut obj).insert("status".into(), status);
        }
        ("", "Pod") => {
            obj_mut(&mut obj).insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        ("", "Service") => {
            obj_mut(&mut obj).insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let spec = obj.get("spec").cloned().unwrap_or_default();
            let storage: Vec<Value> = spec
                .get("versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let now = meta::now();
            obj_mut(&mut obj).insert(
                "status".into(),
                json!({
                    "acceptedNames": spec.get("names").cloned().unwrap_or_default(),
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                    ],
                    "storedVersions": storage,
                }),
            );
        }
        _ => {}
    }
    Ok(obj)
}

/// Stores a prepared object (under the lock): namespace checks, uniqueness, side effects.
pub fn commit_create(
    st: &mut State,
    rt: &ResourceType,
    mut obj: Value,
    dry_run: bool,
) -> Result<Arc<Obj>, ApiError> {
    let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
    if rt.namespaced {
        match st.get("namespaces.", &store::key("", &ns)) {
            None => return Err(ApiError::not_found("", "namespaces", &ns)),
            // Parse the namespace only when it may be terminating (hot path of every create).
            Some(o)
                if o.json.windows(19).any(|w| w == b"\"deletionTimestamp\"")
                    && is_deleting(&o.value()) =>
            {
                return Err(ApiError::forbidden(
                    &rt.group,
                    &rt.plural,
                    name_of(&obj),
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                ));
            }
            _ => {}
        }
    }
    let table = rt.storage_key();
    let mut key = store::key(&ns, name_of(&obj));
    if st.get(&table, &key).is_some() {
        let generated = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        match generated {
            Some(g) if !g.is_empty() && name_of(&obj).starts_with(&g) => {
                for _ in 0..8 {
                    let name = format!("{g}{}", meta::random_suffix());
                    key = store::key(&ns, &name);
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                    if st.get(&table, &key).is_none() {
                        break;
                    }
                }
                if st.get(&table, &key).is_some() {
                    return Err(ApiError::already_exists(
                        &rt.group,
                        &rt.plural,
                        name_of(&obj),
                    ));
                }
            }
            _ => {
                return Err(ApiError::already_exists(
                    &rt.group,
                    &rt.plural,
                    name_of(&obj),
                ));
            }
        }
    }
    if rt.group.is_empty() && rt.kind == "Service" {
        let spec = obj_mut(obj_mut(&mut obj).entry("spec").or_insert_with(|| json!({})));
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty != "ExternalName"
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            let n = st.next_service_ip;
            st.next_service_ip += 1;
            let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if dry_run {
        return Ok(Arc::new(Obj {
            rv: st.rv,
            json: serde_json::to_vec(&obj).unwrap_or_default().into(),
            labels: Box::from(""),
        }));
    }
    let is_crd = rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition";
    let stored = st.put(&table, &key, obj, EventType::Added);
    if is_crd {
        register_crd(st, &stored.value());
    }
    Ok(stored)
}

/// (Re)registers the resource types of a CRD.
pub fn register_crd(st: &mut State, crd: &Value) {
    if let Ok(types) = types_from_crd(crd) {
        if let Some(t) = types.first() {
            st.registry.remove(&t.group, &t.plural);
        }
        for t in types {
            st.registry.insert(t);
        }
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The main resource.
    Main,
    /// The status subresource.
    Status,
}

fn strip_for_fields(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(Value::Object(md)) = m.get_mut("metadata") {
            for k in EXCLUDED_META {
                md.remove(*k);
            }
            if md.is_empty() {
                m.remove("metadata");
            }
        }
    }
    c
}

fn list_key_for(rt: &ResourceType) -> impl Fn(&[String], &str) -> Option<String> + '_ {
    move |parent: &[String], field: &str| {
        if parent.len() == 2 && parent[0] == "f:metadata" && field == "finalizers" {
            return Some(".".into());
        }
        if let Some(schema) = &rt.schema {
            let mut node = &**schema;
            for seg in parent {
                if let Some(f) = seg.strip_prefix("f:") {
                    node = node.properties.get(f).or(node.additional.as_deref())?;
                } else if seg.starts_with("k:") {
                    node = node.items.as_deref()?;
                }
            }
            return match node.list_type.as_deref() {
                Some("map") => node.list_map_keys.first().cloned(),
                Some("set") => Some(".".into()),
                _ => None,
            };
        }
        meta::builtin_merge_key(field).map(str::to_string)
    }
}

fn paths_of(rt: &ResourceType, v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    meta::leaf_paths(
        &strip_for_fields(v),
        &mut vec![],
        &mut out,
        &list_key_for(rt),
    );
    // apps/v1 selectors are atomic LabelSelectors: owned as a whole.
    if rt.group == "apps" && !rt.custom {
        let selector = vec!["f:spec".to_string(), "f:selector".to_string()];
        let before = out.len();
        out.retain(|p| !p.starts_with(&selector));
        if out.len() != before {
            out.insert(selector);
        }
    }
    out
}

/// Looks up the value at a field path.
pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = seg.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        cur.as_array()?
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))
    } else if let Some(v) = seg.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).ok()?;
        cur.as_array()?.iter().find(|i| **i == val)
    } else {
        None
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove_path(v, parent_path);
        return;
    }
    let mut cur = v;
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (
            serde_json::from_str::<Map<String, Value>>(k),
            cur.as_array_mut(),
        ) {
            a.retain(|i| !key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
        }
    } else if let Some(val) = last.strip_prefix("v:")
        && let (Ok(val), Some(a)) = (serde_json::from_str::<Value>(val), cur.as_array_mut())
    {
        a.retain(|i| *i != val);
    }
}

#[derive(Debug, Clone)]
struct Managed {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

fn read_managed(v: &Value) -> Vec<Managed> {
    v.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Managed {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .into(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    time: e
                        .get("time")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    fields: e
                        .get("fieldsV1")
                        .map(meta::from_fields_v1)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes managedFields in kube-apiserver's order: by operation (Apply before Update), then
/// time (whole seconds), manager and subresource.
fn write_managed(v: &mut Value, entries: &[Managed]) {
    let mut sorted: Vec<&Managed> = entries.iter().collect();
    sorted.sort_by(|p, q| {
        (&p.operation, &p.time, &p.manager, &p.subresource).cmp(&(
            &q.operation,
            &q.time,
            &q.manager,
            &q.subresource,
        ))
    });
    let arr: Vec<Value> = sorted
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": meta::to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                m["subresource"] = json!(s);
            }
            m
        })
        .collect();
    let md = meta_mut(v);
    if arr.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert("managedFields".into(), Value::Array(arr));
    }
}

/// Records an `Update` by `manager`: it takes the fields it changed from other managers.
fn set_update_manager(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Option<&str>,
) {
    // kube-apiserver resets the status of kinds with a status subresource on main-resource
    // writes, so their managers never own status fields.
    let reset = |mut paths: BTreeSet<FieldPath>| {
        if rt.status_subresource && sub.is_none() {
            paths.retain(|p| p.first().is_none_or(|f| f != "f:status"));
        }
        paths
    };
    let new_paths = reset(paths_of(rt, new));
    let (mut entries, mut changed, removed): (
        Vec<Managed>,
        BTreeSet<FieldPath>,
        BTreeSet<FieldPath>,
    ) = match old {
        None => (vec![], new_paths.clone(), BTreeSet::new()),
        Some(old) => {
            let old_paths = reset(paths_of(rt, old));
            let changed = new_paths
                .iter()
                .filter(|p| match p.split_last() {
                    // A list item's "." is owned by whoever adds the item.
                    Some((l, parent)) if l == "." => get_path(old, parent).is_none(),
                    _ => get_path(old, p) != get_path(new, p),
                })
                .cloned()
                .collect();
            let removed = old_paths.difference(&new_paths).cloned().collect();
            (read_managed(old), changed, removed)
        }
    };
    changed.extend(added_maps(rt, old, new, &new_paths));
    // A "." entry goes when the map or item it stands for is gone.
    let gone = |p: &FieldPath| {
        p.split_last()
            .is_some_and(|(l, parent)| l == "." && get_path(new, parent).is_none())
    };
    for e in &mut entries {
        if e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == sub {
            e.fields.retain(|p| !removed.contains(p) && !gone(p));
            continue;
        }
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p) && !gone(p));
    }
    entries.retain(|e| !e.fields.is_empty());
    if !changed.is_empty() {
        let now = meta::now();
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource.as_deref() == sub
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.fields.retain(|p| !removed.contains(p));
                e.time = now;
            }
            None => entries.push(Managed {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: now,
                subresource: sub.map(str::to_string),
                fields: changed,
            }),
        }
    }
    write_managed(new, &entries);
}

/// The "." entries of maps an update adds: kube-apiserver's field manager records a map (a Go
/// map or pointer-to-struct in a built-in kind, any object in a custom resource) as owned in
/// itself by the manager that creates it. Built-in kinds' value structs (metadata, spec,
/// status, template, strategy, ...) always exist in Go, so nobody "adds" them.
fn added_maps(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &Value,
    new_paths: &BTreeSet<FieldPath>,
) -> BTreeSet<FieldPath> {
    // Fields a built-in kind's zero value already has: value structs, and lists without
    // `omitempty` (encoded as null).
    const STRUCTS: &[&str] = &[
        "f:metadata",
        "f:spec",
        "f:status",
        "f:template",
        "f:strategy",
        "f:updateStrategy",
        "f:resources",
        "f:roleRef",
        "f:names",
        "f:containers",
        "f:rules",
        "f:versions",
    ];
    let mut out = BTreeSet::new();
    for leaf in new_paths {
        for end in 1..leaf.len() {
            let p = &leaf[..end];
            let Some(last) = p.last().filter(|l| l.starts_with("f:")) else {
                continue;
            };
            if p.len() == 1 && last == "f:metadata" {
                continue;
            }
            if !rt.custom && STRUCTS.contains(&last.as_str()) {
                continue;
            }
            let nonempty = |v: &Value| match v {
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => false,
            };
            if !get_path(new, p).is_some_and(nonempty) {
                continue;
            }
            if old
                .and_then(|o| get_path(o, p))
                .is_some_and(|v| v.is_object() || v.is_array())
            {
                continue;
            }
            let mut marker = p.to_vec();
            marker.push(".".into());
            out.insert(marker);
        }
    }
    out
}

fn spec_view(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

/// Turns a requested new state into the stored new state (under the lock). Returns None for a
/// no-op. `managed` false when the caller already set managedFields (server-side apply).
#[allow(clippy::too_many_arguments)]
pub fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    mut new: Value,
    sub: Sub,
    manager: &str,
    managed: bool,
    strict: bool,
) -> Result<Option<Value>, ApiError> {
    // The field manager runs on the request before the status strategy resets everything
    // but status, so a status writer owns the labels and annotations it sent even though
    // they are not stored (kube-apiserver does this).
    let mut requested_meta: Option<Value> = None;
    if sub == Sub::Status {
        requested_meta = Some(new.get("metadata").cloned().unwrap_or_default());
        let status = new.get("status").cloned();
        let mf = new.pointer("/metadata/managedFields").cloned();
        new = old.clone();
        match status {
            Some(s) => {
                obj_mut(&mut new).insert("status".into(), s);
            }
            None => {
                obj_mut(&mut new).remove("status");
            }
        }
        if !managed && let Some(mf) = mf {
            meta_mut(&mut new).insert("managedFields".into(), mf);
        }
    } else if rt.status_subresource {
        match old.get("status") {
            Some(s) => {
                obj_mut(&mut new).insert("status".into(), s.clone());
            }
            None => {
                obj_mut(&mut new).remove("status");
            }
        }
    }
    // Immutable and server-owned metadata.
    {
        let om = old.get("metadata").cloned().unwrap_or_default();
        let m = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match om.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("resourceVersion");
        if managed {
            match om.get("managedFields") {
                Some(v) => m.insert("managedFields".into(), v.clone()),
                None => m.remove("managedFields"),
            };
        }
    }
    if is_deleting(old) {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(&new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .map(|f| format!("{f:?}"))
            .collect();
        if !added.is_empty() {
            // Go's %#v of the []string of new finalizers, as kube-apiserver words it; kube
            // validates object metadata twice on update, so the cause comes twice.
            let cause = status::forbidden_field(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    added.join(", ")
                ),
            );
            return Err(invalid(rt, &new, vec![cause.clone(), cause]));
        }
    }
    if rt.group.is_empty() && rt.kind == "Service" {
        let ip = old.pointer("/spec/clusterIP").cloned();
        if let Some(ip) = ip {
            let spec = obj_mut(obj_mut(&mut new).entry("spec").or_insert_with(|| json!({})));
            spec.insert("clusterIP".into(), ip);
        }
    }
    if rt.group.is_empty()
        && rt.kind == "Namespace"
        && sub == Sub::Main
        && let Some(s) = old.get("spec")
    {
        obj_mut(&mut new).insert("spec".into(), s.clone());
    }
    admit(rt, &mut new, strict)?;
    if rt.has_generation && spec_view(old) != spec_view(&new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    let mut old_cmp = old.clone();
    meta_mut(&mut old_cmp).remove("resourceVersion");
    if managed {
        if new == old_cmp {
            return Ok(None);
        }
        let subname = (sub == Sub::Status).then_some("status");
        match &requested_meta {
            Some(req) => {
                let mut view = new.clone();
                let m = meta_mut(&mut view);
                for k in ["labels", "annotations"] {
                    match req.get(k) {
                        Some(v) => m.insert(k.into(), v.clone()),
                        None => m.remove(k),
                    };
                }
                set_update_manager(rt, Some(old), &mut view, manager, subname);
                let mf = view.pointer("/metadata/managedFields").cloned();
                let m = meta_mut(&mut new);
                match mf {
                    Some(mf) => m.insert("managedFields".into(), mf),
                    None => m.remove("managedFields"),
                };
            }
            None => set_update_manager(rt, Some(old), &mut new, manager, subname),
        }
    } else {
        let mut a = new.clone();
        let mut b = old_cmp.clone();
        meta_mut(&mut a).remove("managedFields");
        meta_mut(&mut b).remove("managedFields");
        if a == b
            && new.pointer("/metadata/managedFields").map(strip_times)
                == old.pointer("/metadata/managedFields").map(strip_times)
        {
            return Ok(None);
        }
    }
    Ok(Some(new))
}

fn strip_times(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(a) = c.as_array_mut() {
        for e in a {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    c
}

/// Stores an updated object; removes it when it is being deleted and has no finalizers left.
pub fn commit_update(
    st: &mut State,
    rt: &ResourceType,
    key: &str,
    new: Value,
    dry_run: bool,
) -> Arc<Obj> {
    if dry_run {
        return Arc::new(Obj {
            rv: st.rv,
            json: serde_json::to_vec(&new).unwrap_or_default().into(),
            labels: Box::from(""),
        });
    }
    let table = rt.storage_key();
    if is_deleting(&new) && finalizers(&new).is_empty() {
        let removed = remove_object(st, &table, key, new.clone());
        if let Some(r) = removed {
            return r;
        }
    }
    let is_crd = rt.group == "apiextensions.k8s.io" && rt.kind == "CustomResourceDefinition";
    let stored = st.put(&table, key, new, EventType::Modified);
    if is_crd {
        register_crd(st, &stored.value());
    }
    stored
}

/// Server-side apply of `applied` by `manager` onto `old` (None = create). Returns the new
/// object with managedFields set, or 409 with conflicts.
pub fn apply(
    rt: &ResourceType,
    old: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: Sub,
) -> Result<Value, ApiError> {
    let applied_paths = paths_of(rt, applied);
    let subname = (sub == Sub::Status).then_some("status".to_string());
    let now = meta::now();
    let mine =
        |e: &Managed| e.manager == manager && e.operation == "Apply" && e.subresource == subname;
    let Some(old) = old else {
        let mut obj = applied.clone();
        write_managed(
            &mut obj,
            &[Managed {
                manager: manager.into(),
                operation: "Apply".into(),
                api_version: rt.api_version(),
                time: now,
                subresource: subname,
                fields: applied_paths,
            }],
        );
        return Ok(obj);
    };
    let mut entries = read_managed(old);
    let mut conflicts = vec![];
    let mut conflicting: BTreeSet<FieldPath> = BTreeSet::new();
    for e in entries.iter().filter(|e| !mine(e)) {
        for p in applied_paths.intersection(&e.fields) {
            if p.last().is_some_and(|l| l == ".") {
                continue;
            }
            if get_path(old, p) != get_path(applied, p) {
                conflicting.insert(p.clone());
                // kube's printManager: Apply managers by name; Update managers with their
                // version and time; a subresource named.
                let mut who = format!("{:?}", e.manager);
                if let Some(sub) = &e.subresource {
                    who = format!("{who} with subresource {sub:?}");
                }
                if e.operation == "Update" {
                    who = format!("{who} using {} at {}", e.api_version, e.time);
                }
                conflicts.push(Cause {
                    reason: "FieldManagerConflict",
                    message: format!("conflict with {who}"),
                    field: dotted_path(p),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApiError::apply_conflict(conflicts));
    }
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| mine(e))
        .flat_map(|e| e.fields.clone())
        .collect();
    let mut merged = old.clone();
    merge_apply(&mut merged, applied, &mut vec![], &list_key_for(rt));
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| e.fields.clone())
        .collect();
    for p in previous.difference(&applied_paths) {
        if !others.contains(p) {
            remove_path(&mut merged, p);
        }
    }
    if force {
        // A forced apply takes the conflicting fields; fields applied with the value they
        // already have stay shared.
        for e in entries.iter_mut().filter(|e| !mine(e)) {
            e.fields.retain(|p| !conflicting.contains(p));
        }
    }
    entries.retain(|e| !mine(e));
    entries.push(Managed {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: rt.api_version(),
        time: now,
        subresource: subname,
        fields: applied_paths,
    });
    entries.retain(|e| !e.fields.is_empty());
    write_managed(&mut merged, &entries);
    Ok(merged)
}

fn dotted_path(p: &[String]) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if seg != "." {
            s.push('[');
            s.push_str(&seg[2..]);
            s.push(']');
        }
    }
    s
}

fn merge_apply(
    live: &mut Value,
    applied: &Value,
    path: &mut Vec<String>,
    list_key: &dyn Fn(&[String], &str) -> Option<String>,
) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                if path.is_empty() && k == "metadata" {
                    // Only labels, annotations, finalizers, ownerReferences are applied.
                    let lm = obj_mut(l.entry("metadata").or_insert_with(|| json!({})));
                    for mk in [
                        "labels",
                        "annotations",
                        "finalizers",
                        "ownerReferences",
                        "generateName",
                    ] {
                        if let Some(v) = av.get(mk) {
                            let mut lv = lm.remove(mk).unwrap_or(Value::Null);
                            path.push("f:metadata".into());
                            if lv.is_null() {
                                lv = v.clone();
                            } else {
                                merge_field(&mut lv, v, path, mk, list_key);
                            }
                            path.pop();
                            lm.insert(mk.into(), lv);
                        }
                    }
                    continue;
                }
                let mut lv = l.remove(k).unwrap_or(Value::Null);
                if lv.is_null() {
                    lv = av.clone();
                } else {
                    merge_field(&mut lv, av, path, k, list_key);
                }
                l.insert(k.clone(), lv);
            }
        }
        (l, a) => *l = a.clone(),
    }
}

fn merge_field(
    lv: &mut Value,
    av: &Value,
    path: &mut Vec<String>,
    k: &str,
    list_key: &dyn Fn(&[String], &str) -> Option<String>,
) {
    match (&mut *lv, av) {
        (Value::Array(la), Value::Array(aa)) => match list_key(path, k) {
            Some(key) if key == "." => {
                for x in aa {
                    if !la.contains(x) {
                        la.push(x.clone());
                    }
                }
            }
            Some(key) => {
                for item in aa {
                    let id = item.get(&key);
                    match la.iter_mut().find(|i| id.is_some() && i.get(&key) == id) {
                        Some(existing) => {
                            path.push(format!("f:{k}"));
                            path.push(format!(
                                "k:{}",
                                json!({ key.clone(): id.cloned().unwrap_or(Value::Null) })
                            ));
                            merge_apply(existing, item, path, list_key);
                            path.pop();
                            path.pop();
                        }
                        None => la.push(item.clone()),
                    }
                }
            }
            None => *lv = av.clone(),
        },
        (Value::Object(_), Value::Object(_)) => {
            path.push(format!("f:{k}"));
            merge_apply(lv, av, path, list_key);
            path.pop();
        }
        _ => *lv = av.clone(),
    }
}

/// Strategic merge patch for built-in kinds (merge keys of the common list fields, `$patch`
/// and `$retainKeys` directives, `$deleteFromPrimitiveList`).
pub fn strategic_merge(target: &mut Value, patch: &Value, field: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut c = p.clone();
        c.remove("$patch");
        *target = Value::Object(c);
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = obj_mut(target);
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(tl)), Value::Array(del)) = (t.get_mut(list), pv) {
                tl.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            t.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                if pv.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                    continue;
                }
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, pv, k);
            }
            Value::Array(items) => {
                let merge_key = meta::builtin_merge_key(k);
                let primitive_merge = k == "finalizers" && field == "metadata";
                match (merge_key, t.get_mut(k)) {
                    (_, Some(Value::Array(existing))) if primitive_merge => {
                        for x in items {
                            if !existing.contains(x) {
                                existing.push(x.clone());
                            }
                        }
                    }
                    (Some(mk), Some(Value::Array(existing)))
                        if items.iter().all(Value::is_object) =>
                    {
                        if items
                            .iter()
                            .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
                        {
                            *existing = items
                                .iter()
                                .filter(|i| i.get("$patch").is_none())
                                .cloned()
                                .collect();
                            continue;
                        }
                        for item in items {
                            let id = item.get(mk).cloned();
                            let del = item.get("$patch").and_then(Value::as_str) == Some("delete");
                            let pos = existing
                                .iter()
                                .position(|e| id.is_some() && e.get(mk) == id.as_ref());
                            match (pos, del) {
                                (Some(i), true) => {
                                    existing.remove(i);
                                }
                                (Some(i), false) => strategic_merge(&mut existing[i], item, k),
                                (None, true) => {}
                                (None, false) => {
                                    let mut fresh = Value::Null;
                                    strategic_merge(&mut fresh, item, k);
                                    existing.push(fresh);
                                }
                            }
                        }
                    }
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .map(|i| {
                                let mut fresh = Value::Null;
                                strategic_merge(&mut fresh, i, k);
                                fresh
                            })
                            .collect();
                        t.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Deletes an object: finalizers and propagation policy decide whether it goes now.
pub fn delete(
    st: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Deleted, ApiError> {
    let table = rt.storage_key();
    let key = store::key(ns, name);
    let Some(cur) = st.get(&table, &key).cloned() else {
        return Err(ApiError::not_found(&rt.group, &rt.plural, name));
    };
    let mut v = cur.value();
    if let Some(uid) = &opts.uid
        && meta_str(&v, "uid") != Some(uid.as_str())
    {
        // kube's BeforeDelete: a Conflict on the kind (not the resource).
        return Err(ApiError::conflict(
            &rt.group,
            &rt.kind,
            name,
            &format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                meta_str(&v, "uid").unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = &opts.rv
        && *rv != cur.rv.to_string()
    {
        return Err(ApiError::conflict(
            &rt.group,
            &rt.kind,
            name,
            &format!(
                "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                cur.rv
            ),
        ));
    }
    if opts.dry_run {
        return Ok(Deleted {
            obj: cur,
            removed: true,
        });
    }
    let is_ns = rt.group.is_empty() && rt.kind == "Namespace";
    let policy = opts.propagation.unwrap_or(Propagation::Background);
    let mut fins = finalizers(&v);
    let uid = meta_str(&v, "uid").unwrap_or_default().to_string();
    match policy {
        Propagation::Orphan if !is_ns && !fins.iter().any(|f| f == "orphan") => {
            // kube-apiserver adds the `orphan` finalizer and answers with that object; the
            // garbage collector then strips the dependents' references and removes the
            // finalizer. The same steps run here at once (watchers see each of them).
            let mut pending = v.clone();
            if !is_deleting(&pending) {
                let m = meta_mut(&mut pending);
                m.insert("deletionTimestamp".into(), json!(meta::now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            let mut with_orphan = fins.clone();
            with_orphan.push("orphan".into());
            set_finalizers(&mut pending, with_orphan);
            let shown = st.put(&table, &key, pending, EventType::Modified);
            orphan_dependents(st, &uid);
            let mut done = shown.value();
            set_finalizers(&mut done, fins.clone());
            if fins.is_empty() {
                remove_object(st, &table, &key, done);
            } else {
                st.put(&table, &key, done, EventType::Modified);
            }
            return Ok(Deleted {
                obj: shown,
                removed: false,
            });
        }
        Propagation::Orphan => orphan_dependents(st, &uid),
        Propagation::Foreground
            if st.dependents.contains_key(&uid)
                && !fins.iter().any(|f| f == "foregroundDeletion") =>
        {
            fins.push("foregroundDeletion".into());
        }
        _ => {}
    }
    if is_ns || !fins.is_empty() {
        let already = is_deleting(&v);
        if !already {
            let m = meta_mut(&mut v);
            m.insert("deletionTimestamp".into(), json!(meta::now()));
            // kube-apiserver leaves a Namespace's grace period unset.
            if !is_ns {
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
        }
        set_finalizers(&mut v, fins.clone());
        if is_ns {
            obj_mut(&mut v).insert("status".into(), json!({"phase": "Terminating"}));
        }
        let changed = !already || Some(&v) != Some(&cur.value());
        let stored = if changed {
            st.put(&table, &key, v, EventType::Modified)
        } else {
            cur.clone()
        };
        if is_ns {
            empty_namespace(st, name);
            return finish_namespace(st, name).map_or(
                Ok(Deleted {
                    obj: stored,
                    removed: false,
                }),
                |o| {
                    Ok(Deleted {
                        obj: o,
                        removed: true,
                    })
                },
            );
        }
        if fins.iter().any(|f| f == "foregroundDeletion") {
            let deps: Vec<(Arc<str>, String)> = st
                .dependents
                .get(&uid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            for (t, k) in deps {
                delete_by_key(st, &t, &k, Propagation::Foreground);
            }
            if let Some(o) = check_foreground(st, &table, &key) {
                return Ok(Deleted {
                    obj: o,
                    removed: true,
                });
            }
            let obj = st.get(&table, &key).cloned().unwrap_or(stored);
            return Ok(Deleted {
                obj,
                removed: false,
            });
        }
        return Ok(Deleted {
            obj: stored,
            removed: false,
        });
    }
    let removed = remove_object(st, &table, &key, v)
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
    Ok(Deleted {
        obj: removed,
        removed: true,
    })
}

fn delete_by_key(st: &mut State, table: &str, key: &str, policy: Propagation) {
    let Some(rt) = st.registry.by_storage_key(table).cloned() else {
        return;
    };
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let opts = DeleteOpts {
        propagation: Some(policy),
        ..Default::default()
    };
    // The dependent may already be gone or be waiting on its own finalizers: both are fine.
    let _ = delete(st, &rt, ns, name, &opts);
}

fn orphan_dependents(st: &mut State, owner_uid: &str) {
    let deps: Vec<(Arc<str>, String)> = st
        .dependents
        .get(owner_uid)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for (t, k) in deps {
        if let Some(o) = st.get(&t, &k).cloned() {
            let mut v = o.value();
            strip_owner(&mut v, owner_uid);
            // The garbage collector's patch removes the reference; the field manager drops
            // everyone's ownership of it with it.
            let mut entries = read_managed(&v);
            for e in &mut entries {
                e.fields.retain(|p| {
                    p.get(1).is_none_or(|f| f != "f:ownerReferences")
                        || get_path(&v, &p[..3.min(p.len())]).is_some()
                });
            }
            entries.retain(|e| !e.fields.is_empty());
            write_managed(&mut v, &entries);
            st.put(&t, &k, v, EventType::Modified);
        }
    }
}

fn strip_owner(v: &mut Value, owner_uid: &str) {
    let m = meta_mut(v);
    if let Some(Value::Array(refs)) = m.get_mut("ownerReferences") {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
}

fn owner_alive(st: &State, dependent_ns: &str, r: &Value) -> bool {
    let api_version = r
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
    let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
    let Some(rt) = st.registry.by_kind(group, kind) else {
        return false;
    };
    let ns = if rt.namespaced { dependent_ns } else { "" };
    st.get(&rt.storage_key(), &store::key(ns, name))
        .is_some_and(|o| meta_str(&o.value(), "uid") == Some(uid))
}

/// Removes an object now and runs what follows a removal: background garbage collection of
/// its dependents, foreground owners waiting on it, namespace finalization, CRD cleanup.
pub fn remove_object(st: &mut State, table: &str, key: &str, last: Value) -> Option<Arc<Obj>> {
    let uid = meta_str(&last, "uid").unwrap_or_default().to_string();
    let owners: Vec<Value> = last
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_crd = table == "customresourcedefinitions.apiextensions.k8s.io";
    let removed = st.remove(table, key, last.clone())?;
    if is_crd {
        drop_crd(st, &last);
    }
    // Background collection of dependents.
    let deps: Vec<(Arc<str>, String)> = st
        .dependents
        .get(&uid)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for (t, k) in deps {
        let Some(o) = st.get(&t, &k).cloned() else {
            continue;
        };
        let mut v = o.value();
        let ns = k.split_once('/').map(|(n, _)| n).unwrap_or("").to_string();
        let others: Vec<Value> = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if others.iter().any(|r| owner_alive(st, &ns, r)) {
            strip_owner(&mut v, &uid);
            st.put(&t, &k, v, EventType::Modified);
        } else {
            delete_by_key(st, &t, &k, Propagation::Background);
        }
    }
    // Owners in foreground deletion that were waiting on this object.
    let ns = key
        .split_once('/')
        .map(|(n, _)| n)
        .unwrap_or("")
        .to_string();
    for r in owners {
        let api_version = r
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(rt) = st.registry.by_kind(group, kind).cloned() {
            let ons = if rt.namespaced { ns.as_str() } else { "" };
            check_foreground(st, &rt.storage_key(), &store::key(ons, name));
        }
    }
    if !ns.is_empty() {
        finish_namespace(st, &ns);
    }
    Some(removed)
}

/// Completes a foreground deletion whose dependents are all gone. Returns the removed object.
fn check_foreground(st: &mut State, table: &str, key: &str) -> Option<Arc<Obj>> {
    let o = st.get(table, key).cloned()?;
    let mut v = o.value();
    let mut fins = finalizers(&v);
    if !is_deleting(&v) || !fins.iter().any(|f| f == "foregroundDeletion") {
        return None;
    }
    let uid = meta_str(&v, "uid").unwrap_or_default().to_string();
    if st.dependents.get(&uid).is_some_and(|d| !d.is_empty()) {
        return None;
    }
    fins.retain(|f| f != "foregroundDeletion");
    set_finalizers(&mut v, fins.clone());
    if fins.is_empty() {
        remove_object(st, table, key, v)
    } else {
        st.put(table, key, v, EventType::Modified);
        None
    }
}

fn empty_namespace(st: &mut State, ns: &str) {
    let tables: Vec<Arc<str>> = st.tables.keys().cloned().collect();
    for t in tables {
        if st
            .registry
            .by_storage_key(&t)
            .is_none_or(|rt| !rt.namespaced)
        {
            continue;
        }
        let keys: Vec<String> = st
            .range(&t, Some(ns), None)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            delete_by_key(st, &t, &k, Propagation::Background);
        }
    }
}

/// Removes a terminating namespace once nothing is left in it.
fn finish_namespace(st: &mut State, ns: &str) -> Option<Arc<Obj>> {
    let nskey = store::key("", ns);
    let o = st.get("namespaces.", &nskey).cloned()?;
    let v = o.value();
    if !is_deleting(&v) || !finalizers(&v).is_empty() {
        return None;
    }
    let tables: Vec<Arc<str>> = st.tables.keys().cloned().collect();
    for t in &tables {
        if st
            .registry
            .by_storage_key(t)
            .is_some_and(|rt| rt.namespaced)
            && st.range(t, Some(ns), None).next().is_some()
        {
            return None;
        }
    }
    st.remove("namespaces.", &nskey, v)
}

fn drop_crd(st: &mut State, crd: &Value) {
    let Ok(types) = types_from_crd(crd) else {
        return;
    };
    let Some(t) = types.first() else { return };
    let table = t.storage_key();
    let keys: Vec<String> = st
        .range(&table, None, None)
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        if let Some(o) = st.get(&table, &k).cloned() {
            st.remove(&table, &k, o.value());
        }
    }
    st.drop_table(&table);
    st.registry.remove(&t.group, &t.plural);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_by_key() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}]}});
        strategic_merge(&mut t, &p, "");
        assert_eq!(
            t["spec"]["containers"],
            json!([{"name": "b", "image": "z"}])
        );
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
    }
}

//! kube-apiserver's defaulting of apps/v1 workloads and the pod templates inside them.
//!
//! The values are those of `k8s.io/kubernetes/pkg/apis/{apps,core}/v1/defaults.go` (v1.34).
//! They run on every write, before managedFields are computed, as kube's decoder defaults do,
//! so an Update manager owns the defaulted fields as it does on kube-apiserver.

use serde_json::{Map, Value, json};

/// Inserts `value` at `key` when absent (or null).
fn or_insert(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// The object at `key`, created empty when absent or not an object.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = m.entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry {
        Value::Object(c) => c,
        _ => unreachable!("an object was put there above"),
    }
}

/// Defaults an apps/v1 object of `kind` in place (objects that are not maps are left alone:
/// validation of the type happens elsewhere).
pub fn apps_v1(kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = child(root, "spec");
    match kind {
        "Deployment" => {
            or_insert(spec, "replicas", json!(1));
            let strategy = child(spec, "strategy");
            or_insert(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = child(strategy, "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!("25%"));
                or_insert(ru, "maxSurge", json!("25%"));
            }
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "progressDeadlineSeconds", json!(600));
        }
        "ReplicaSet" => or_insert(spec, "replicas", json!(1)),
        "StatefulSet" => {
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
            let us = child(spec, "updateStrategy");
            or_insert(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                or_insert(child(us, "rollingUpdate"), "partition", json!(0));
            }
            or_insert(spec, "revisionHistoryLimit", json!(10));
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            or_insert(retention, "whenDeleted", json!("Retain"));
            or_insert(retention, "whenScaled", json!("Retain"));
        }
        "DaemonSet" => {
            let us = child(spec, "updateStrategy");
            or_insert(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = child(us, "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!(1));
                or_insert(ru, "maxSurge", json!(0));
            }
            or_insert(spec, "revisionHistoryLimit", json!(10));
        }
        _ => return,
    }
    if let Some(Value::Object(template)) = spec.get_mut("template")
        && let Some(Value::Object(pod)) = template.get_mut("spec")
    {
        pod_spec(pod);
    }
}

/// SetDefaults_PodSpec plus the containers, volumes and probes inside it.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    or_insert(spec, "dnsPolicy", json!("ClusterFirst"));
    or_insert(spec, "restartPolicy", json!("Always"));
    or_insert(spec, "securityContext", json!({}));
    or_insert(spec, "terminationGracePeriodSeconds", json!(30));
    or_insert(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                container(c);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut().filter_map(Value::as_object_mut) {
            for src in ["secret", "configMap", "downwardAPI", "projected"] {
                if let Some(Value::Object(s)) = v.get_mut(src) {
                    or_insert(s, "defaultMode", json!(420));
                }
            }
        }
    }
}

/// SetDefaults_Container, SetDefaults_ContainerPort and SetDefaults_Probe.
fn container(c: &mut Map<String, Value>) {
    or_insert(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(c, "terminationMessagePolicy", json!("File"));
    if c.get("imagePullPolicy").is_none_or(Value::is_null) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let policy = if image_tag(image) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    or_insert(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            or_insert(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            or_insert(p, "timeoutSeconds", json!(1));
            or_insert(p, "periodSeconds", json!(10));
            or_insert(p, "successThreshold", json!(1));
            or_insert(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                or_insert(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// The tag of an image reference as kube's ParseImageName sees it: `latest` when the reference
/// has neither tag nor digest, none when it has only a digest.
fn image_tag(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest => None,
        None => Some("latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), Some("latest"));
        assert_eq!(image_tag("nginx:1.27"), Some("1.27"));
        assert_eq!(image_tag("registry.example:5000/app"), Some("latest"));
        assert_eq!(image_tag("registry.example:5000/app:1"), Some("1"));
        assert_eq!(image_tag("app@sha256:abcd"), None);
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "app:1", "imagePullPolicy": "Never"},
        ]}}}});
        apps_v1("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["schedulerName"], "default-scheduler");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Never");
        assert_eq!(pod["containers"][1]["resources"], json!({}));
        // A Recreate strategy gets no rollingUpdate.
        let mut r = json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}});
        apps_v1("Deployment", &mut r);
        assert_eq!(r["spec"]["replicas"], 0);
        assert!(r["spec"]["strategy"].get("rollingUpdate").is_none());
    }
}

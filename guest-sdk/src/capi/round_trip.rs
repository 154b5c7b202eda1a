//! Round trips of realistic v1beta2 objects: typed parse, serialize, nothing lost.

use super::bootstrap::{KubeadmConfig, KubeadmConfigTemplate};
use super::cluster::{Cluster, Machine};
use super::controlplane::KubeadmControlPlane;
use super::infrastructure::{DevCluster, DevMachine, DevMachineTemplate};
use super::{Object, parse, to_value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn meta(name: &str, extra: Value) -> Value {
    let mut m = json!({"name": name, "namespace": "default", "uid": format!("uid-{name}"),
        "resourceVersion": "42", "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}]});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

fn round_trip<T: Object + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &Value,
) -> T {
    let typed: T = parse(T::KIND, v).expect("parses");
    assert_eq!(&to_value(&typed), v, "{} lost or changed fields", T::KIND);
    typed
}

#[test]
fn cluster_keeps_unknown_fields_and_reads_refs() {
    let v = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": meta("c1", json!({"labels": {"env": "dev"}, "finalizers": ["cluster.cluster.x-k8s.io"]})),
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "services": {"cidrBlocks": ["10.128.0.0/12"]},
                "serviceDomain": "cluster.local", "apiServerPort": 6443},
            "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "c1-cp"},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": "c1"},
            "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20000},
            "availabilityGates": [{"conditionType": "Custom"}],
            "futureField": {"x": 1}
        },
        "status": {
            "phase": "Provisioned", "observedGeneration": 2,
            "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": false},
            "conditions": [{"type": "Available", "status": "False", "reason": "NotAvailable", "message": "* x",
                "lastTransitionTime": "2026-01-01T00:00:01Z", "observedGeneration": 2}],
            "controlPlane": {"desiredReplicas": 3, "replicas": 1, "versions": [{"version": "v1.34.0", "replicas": 1}]},
            "deprecated": {"v1beta1": {"conditions": []}}
        }
    });
    let c: Cluster = round_trip(&v);
    assert_eq!(
        c.spec.infrastructure().map(|r| r.kind.as_str()),
        Some("DevCluster")
    );
    assert_eq!(
        c.spec.control_plane().map(|r| r.name.as_str()),
        Some("c1-cp")
    );
    assert_eq!(
        c.spec.endpoint().map(ToString::to_string).as_deref(),
        Some("127.0.0.1:20000")
    );
    assert_eq!(
        c.status()
            .initialization
            .and_then(|i| i.infrastructure_provisioned),
        Some(true)
    );
    assert!(c.metadata.extra.contains_key("managedFields"));
    assert_eq!(
        c.controller_reference().api_version,
        "cluster.x-k8s.io/v1beta2"
    );
    assert_eq!(c.object_ref().namespace, "default");
}

#[test]
fn machine_and_kubeadm_control_plane_round_trip() {
    let m = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": meta("c1-cp-abcde", json!({"labels": {"cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/control-plane": ""},
            "ownerReferences": [{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
                "name": "c1-cp", "uid": "uid-kcp", "controller": true, "blockOwnerDeletion": true}]})),
        "spec": {"clusterName": "c1", "version": "v1.34.0",
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": "c1-cp-abcde"}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "c1-cp-abcde"},
            "deletion": {"nodeDrainTimeoutSeconds": 10}, "providerID": "in-memory://c1-cp-abcde"},
        "status": {"phase": "Running", "nodeRef": {"name": "c1-cp-abcde"},
            "initialization": {"bootstrapDataSecretCreated": true, "infrastructureProvisioned": true},
            "nodeInfo": {"kubeletVersion": "v1.34.0"}}
    });
    let machine: Machine = round_trip(&m);
    assert!(machine.is_control_plane());
    assert_eq!(
        machine.spec.provider_id.as_deref(),
        Some("in-memory://c1-cp-abcde")
    );
    assert_eq!(
        machine.metadata.controller().map(|o| o.kind.as_str()),
        Some("KubeadmControlPlane")
    );

    let kcp = json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane",
        "metadata": meta("c1-cp", json!({})),
        "spec": {"replicas": 3, "version": "v1.34.0",
            "machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                "kind": "DevMachineTemplate", "name": "c1-cp"}, "deletion": {"nodeDrainTimeoutSeconds": 1}}},
            "kubeadmConfigSpec": {"clusterConfiguration": {"apiServer": {"certSANs": ["localhost"]}},
                "initConfiguration": {"nodeRegistration": {"criSocket": "unix:///var/run/containerd/containerd.sock"}},
                "joinConfiguration": {"nodeRegistration": {"kubeletExtraArgs": [{"name": "eviction-hard", "value": "nodefs.available<0%"}]}}},
            "rollout": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
        "status": {"replicas": 1, "readyReplicas": 1, "initialization": {"controlPlaneInitialized": true},
            "selector": "cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/control-plane"}
    });
    let kcp: KubeadmControlPlane = round_trip(&kcp);
    assert!(kcp.initialized());
    assert_eq!(
        kcp.spec.machine_template.spec.infrastructure_ref.kind,
        "DevMachineTemplate"
    );
}

#[test]
fn kubeadm_config_and_template_round_trip() {
    let kc = json!({
        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
        "metadata": meta("c1-cp-abcde", json!({})),
        "spec": {"format": "cloud-config",
            "files": [{"path": "/etc/motd", "content": "hi", "permissions": "0644", "owner": "root:root"}],
            "preKubeadmCommands": ["echo pre"], "postKubeadmCommands": ["echo post"],
            "users": [{"name": "capi", "sshAuthorizedKeys": ["ssh-ed25519 AAAA"]}],
            "mounts": [["/dev/sdb", "/data"]], "verbosity": 5},
        "status": {"dataSecretName": "c1-cp-abcde", "initialization": {"dataSecretCreated": true},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    });
    let kc: KubeadmConfig = round_trip(&kc);
    assert!(kc.data_secret_created());
    assert_eq!(kc.spec.files[0].path, "/etc/motd");
    let t = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfigTemplate",
        "metadata": meta("workers", json!({})),
        "spec": {"template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"joinConfiguration": {"nodeRegistration": {"name": "n"}}}}}});
    let t: KubeadmConfigTemplate = round_trip(&t);
    assert!(t.spec.template.spec.join_configuration.is_some());
}

#[test]
fn dev_infrastructure_round_trips() {
    let dc = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevCluster",
        "metadata": meta("c1", json!({})),
        "spec": {"backend": {"inMemory": {}}, "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20001}},
        "status": {"initialization": {"provisioned": true},
            "failureDomains": [{"name": "fd1", "controlPlane": true}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let dc: DevCluster = round_trip(&dc);
    assert!(dc.status().provisioned());
    let provisioning = json!({"provisioning": {"startupDuration": "10s", "startupJitter": "0.2"}});
    let dm = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachine",
        "metadata": meta("m1", json!({})),
        "spec": {"providerID": "in-memory://m1", "backend": {"inMemory": {"vm": provisioning, "node": provisioning,
            "apiServer": provisioning, "etcd": provisioning}}},
        "status": {"initialization": {"provisioned": false}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
    let dm: DevMachine = round_trip(&dm);
    let vm = dm
        .spec
        .backend
        .and_then(|b| b.in_memory)
        .and_then(|m| m.vm)
        .and_then(|v| v.provisioning);
    assert_eq!(vm.and_then(|p| p.startup_duration).as_deref(), Some("10s"));
    let dmt = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
        "metadata": meta("t", json!({})),
        "spec": {"template": {"spec": {"backend": {"inMemory": {"vm": provisioning}}}}}});
    let _: DevMachineTemplate = round_trip(&dmt);
}

#[test]
fn a_wrong_type_is_a_terminal_error_naming_the_kind() {
    let bad = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "c"},
        "spec": {"paused": "yes"}});
    let err = parse::<Cluster>("Cluster default/c", &bad).expect_err("must fail");
    assert!(matches!(err, crate::Error::Terminal(m) if m.contains("Cluster default/c")));
}

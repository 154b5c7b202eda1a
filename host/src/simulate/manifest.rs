//! The objects of one simulated cluster: Cluster, DevCluster, KubeadmControlPlane, templates, MachineDeployment.
//!
//! They are what a Cluster API user applies for an in-memory cluster (as
//! `examples/capi/cluster-in-memory.yaml`), v1beta2, with the in-memory
//! backend's startup durations scaled by `--time-scale` from Cluster API's
//! in-memory quick-start (VM 30 s, node 10 s, etcd 10 s, API server 10 s,
//! jitter 0.2).

use serde_json::{Value, json};
use std::time::Duration;

/// Cluster API's in-memory quick-start durations at time-scale 1.
pub const QUICK_START_VM: Duration = Duration::from_secs(30);
/// Node startup at time-scale 1.
pub const QUICK_START_NODE: Duration = Duration::from_secs(10);
/// etcd startup at time-scale 1.
pub const QUICK_START_ETCD: Duration = Duration::from_secs(10);
/// API server startup at time-scale 1.
pub const QUICK_START_API_SERVER: Duration = Duration::from_secs(10);

/// The shape of every simulated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterShape {
    /// Namespace of every object.
    pub namespace: String,
    /// Control-plane replicas.
    pub control_plane_replicas: u32,
    /// Worker replicas of the one MachineDeployment.
    pub workers: u32,
    /// Kubernetes version.
    pub version: String,
    /// Multiplier of the quick-start startup durations.
    pub time_scale: f64,
    /// Startup jitter (fraction of the duration).
    pub jitter: f64,
}

impl Default for ClusterShape {
    fn default() -> Self {
        Self {
            namespace: "capstan-sim".into(),
            control_plane_replicas: 1,
            workers: 1,
            version: "v1.34.0".into(),
            time_scale: 0.1,
            jitter: 0.2,
        }
    }
}

/// The name of the cluster with this index (`sim-00001` for index 0): sorts
/// as it was created.
pub fn cluster_name(index: usize) -> String {
    format!("sim-{:05}", index + 1)
}

/// A Go duration string (`3s`, `1500ms`) for `d`, as the CRDs expect.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl ClusterShape {
    /// Machines a provisioned cluster has.
    pub fn expected_machines(&self) -> u32 {
        self.control_plane_replicas + self.workers
    }

    fn provisioning(&self, base: Duration) -> Value {
        json!({
            "startupDuration": go_duration(base.mul_f64(self.time_scale.max(0.0))),
            "startupJitter": format!("{}", self.jitter),
        })
    }

    fn backend(&self) -> Value {
        json!({
            "inMemory": {
                "vm": {"provisioning": self.provisioning(QUICK_START_VM)},
                "node": {"provisioning": self.provisioning(QUICK_START_NODE)},
                "etcd": {"provisioning": self.provisioning(QUICK_START_ETCD)},
                "apiServer": {"provisioning": self.provisioning(QUICK_START_API_SERVER)},
            }
        })
    }

    /// The objects of cluster `name`, in the order they are created
    /// (referenced objects first, the Cluster last but one, then the
    /// MachineDeployment).
    pub fn objects(&self, name: &str) -> Vec<Value> {
        let ns = &self.namespace;
        let meta = |n: &str| json!({"name": n, "namespace": ns});
        let cluster_label = json!({"cluster.x-k8s.io/cluster-name": name});
        let cp = format!("{name}-cp");
        let md = format!("{name}-md-0");
        vec![
            json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                "kind": "DevCluster",
                "metadata": meta(name),
                "spec": {"backend": {"inMemory": {}}},
            }),
            json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                "kind": "DevMachineTemplate",
                "metadata": meta(&cp),
                "spec": {"template": {"spec": {"backend": self.backend()}}},
            }),
            json!({
                "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
                "kind": "DevMachineTemplate",
                "metadata": meta(&md),
                "spec": {"template": {"spec": {"backend": self.backend()}}},
            }),
            json!({
                "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
                "kind": "KubeadmConfigTemplate",
                "metadata": meta(&md),
                "spec": {"template": {"spec": {"joinConfiguration": {
                    "nodeRegistration": {"criSocket": "unix:///var/run/containerd/containerd.sock"}
                }}}},
            }),
            json!({
                "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
                "kind": "KubeadmControlPlane",
                "metadata": meta(&cp),
                "spec": {
                    "replicas": self.control_plane_replicas,
                    "version": self.version,
                    "machineTemplate": {"spec": {"infrastructureRef": {
                        "apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "DevMachineTemplate",
                        "name": cp,
                    }}},
                    "kubeadmConfigSpec": {
                        "clusterConfiguration": {"apiServer": {"certSANs": ["localhost", "127.0.0.1"]}},
                        "initConfiguration": {"nodeRegistration": {"criSocket": "unix:///var/run/containerd/containerd.sock"}},
                        "joinConfiguration": {"nodeRegistration": {"criSocket": "unix:///var/run/containerd/containerd.sock"}},
                    },
                },
            }),
            json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2",
                "kind": "Cluster",
                "metadata": meta(name),
                "spec": {
                    "clusterNetwork": {
                        "pods": {"cidrBlocks": ["192.168.0.0/16"]},
                        "services": {"cidrBlocks": ["10.128.0.0/12"]},
                        "serviceDomain": "cluster.local",
                    },
                    "controlPlaneRef": {
                        "apiGroup": "controlplane.cluster.x-k8s.io",
                        "kind": "KubeadmControlPlane",
                        "name": cp,
                    },
                    "infrastructureRef": {
                        "apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "DevCluster",
                        "name": name,
                    },
                },
            }),
            json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2",
                "kind": "MachineDeployment",
                "metadata": {"name": md, "namespace": ns, "labels": cluster_label},
                "spec": {
                    "clusterName": name,
                    "replicas": self.workers,
                    "selector": {"matchLabels": {
                        "cluster.x-k8s.io/cluster-name": name,
                        "cluster.x-k8s.io/deployment-name": md,
                    }},
                    "template": {
                        "metadata": {"labels": {
                            "cluster.x-k8s.io/cluster-name": name,
                            "cluster.x-k8s.io/deployment-name": md,
                        }},
                        "spec": {
                            "clusterName": name,
                            "version": self.version,
                            "bootstrap": {"configRef": {
                                "apiGroup": "bootstrap.cluster.x-k8s.io",
                                "kind": "KubeadmConfigTemplate",
                                "name": md,
                            }},
                            "infrastructureRef": {
                                "apiGroup": "infrastructure.cluster.x-k8s.io",
                                "kind": "DevMachineTemplate",
                                "name": md,
                            },
                        },
                    },
                },
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_scale_and_format_as_go() {
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        let shape = ClusterShape::default();
        let objs = shape.objects("sim-00001");
        let tmpl = &objs[1];
        assert_eq!(
            tmpl.pointer("/spec/template/spec/backend/inMemory/vm/provisioning/startupDuration"),
            Some(&json!("3s"))
        );
        assert_eq!(
            tmpl.pointer("/spec/template/spec/backend/inMemory/etcd/provisioning/startupJitter"),
            Some(&json!("0.2"))
        );
    }

    #[test]
    fn objects_reference_each_other_by_name() {
        let shape = ClusterShape {
            workers: 3,
            ..ClusterShape::default()
        };
        let objs = shape.objects("c1");
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "DevCluster",
                "DevMachineTemplate",
                "DevMachineTemplate",
                "KubeadmConfigTemplate",
                "KubeadmControlPlane",
                "Cluster",
                "MachineDeployment"
            ]
        );
        assert_eq!(objs[5]["spec"]["controlPlaneRef"]["name"], "c1-cp");
        assert_eq!(objs[6]["spec"]["replicas"], 3);
        assert_eq!(shape.expected_machines(), 4);
        assert_eq!(cluster_name(0), "sim-00001");
    }
}

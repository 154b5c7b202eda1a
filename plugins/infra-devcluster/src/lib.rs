//! The in-memory DevCluster reconciler: reserves the workload cluster's API endpoint in the cloud, reports it, releases it on deletion.
//!
//! Behaviour follows CAPD's in-memory backend (`inmemorycluster_backend.go`,
//! CAPI HEAD): the endpoint is reserved as soon as the owning Cluster is
//! known, `spec.controlPlaneEndpoint` is set once, the workload cluster's
//! default Namespaces are created in its store, and deletion releases the
//! endpoint (which drops the store and its VMs) before the finalizer goes.
//! What is implemented and simplified is listed in `docs/capi.md`.

use capstan_sdk::capi::cluster::Cluster;
use capstan_sdk::capi::infrastructure::{DevCluster, InfraInitialization, dev_conditions as dc};
use capstan_sdk::capi::{Object, annotations, finalizers, labels, to_value};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::{
    Capabilities, Context, Error, EventType, KeyMapping, ObjectRef, Outcome, PluginInfo,
    Reconciler, RelationSelector, Snapshot, Verbs,
};
use serde_json::{Value, json};

/// Relation: the Cluster that controls this DevCluster.
pub const CLUSTER: &str = "cluster";
/// The Namespaces every workload cluster starts with.
pub const DEFAULT_NAMESPACES: [&str; 3] = ["default", "kube-public", "kube-system"];
/// Paused condition type (CAPI's common vocabulary).
pub const PAUSED: &str = "Paused";

/// The DevCluster reconciler.
#[derive(Debug)]
pub struct DevClusterReconciler;

impl Reconciler for DevClusterReconciler {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "infra-devcluster",
            env!("CARGO_PKG_VERSION"),
            DevCluster::gvk(),
        )
        // The Cluster names its DevCluster; its pause and deletion matter here.
        .watch(
            Cluster::gvk(),
            KeyMapping::Field("spec.infrastructureRef.name".to_owned()),
        )
        .relation(CLUSTER, Cluster::gvk(), RelationSelector::ControllerOwner)
        .permit(DevCluster::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
        .finalizer(finalizers::DEV_CLUSTER)
        .capabilities(Capabilities::CLOUD)
        // CAPD HEAD's --devcluster-concurrency default.
        .concurrency(50)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(DevClusterReconciler);

/// The name of the Cluster that controls `dc`: its controller owner
/// reference of kind Cluster, else its cluster-name label.
fn owner_cluster_name(dc: &DevCluster) -> Option<String> {
    dc.metadata
        .owner_references
        .iter()
        .find(|o| o.kind == "Cluster" && o.api_version.starts_with(capstan_sdk::capi::GROUP))
        .map(|o| o.name.clone())
        .or_else(|| dc.metadata.labels.get(labels::CLUSTER_NAME).cloned())
        .filter(|n| !n.is_empty())
}

fn set_finalizer(dc: &DevCluster, present: bool, out: &mut Outcome) -> Result<(), Error> {
    let mut fs: Vec<String> = dc
        .metadata
        .finalizers
        .iter()
        .filter(|f| *f != finalizers::DEV_CLUSTER)
        .cloned()
        .collect();
    if present {
        fs.push(finalizers::DEV_CLUSTER.to_owned());
    }
    let mut patch = dc.skeleton();
    patch["metadata"]["finalizers"] = json!(fs);
    out.apply(&patch)?;
    Ok(())
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let dc: DevCluster = snapshot.primary()?;
    let mut out = Outcome::new();
    if !snapshot.synced(CLUSTER) {
        return Err(Error::transient(
            "cache of relation cluster is not synced yet",
        ));
    }
    let cluster: Option<Cluster> = snapshot.related_one(CLUSTER)?;
    let deleting = dc.metadata.is_deleting();
    let Some(cluster_name) = owner_cluster_name(&dc) else {
        if deleting {
            // Never reserved anything without an owner: nothing to clean up.
            if dc.metadata.has_finalizer(finalizers::DEV_CLUSTER) {
                set_finalizer(&dc, false, &mut out)?;
            }
        } else {
            ctx.info(format!(
                "devcluster {}/{}: waiting for the Cluster controller to set the owner reference",
                dc.metadata.namespace, dc.metadata.name
            ));
        }
        return Ok(out);
    };
    let key = format!("{}/{cluster_name}", dc.metadata.namespace);
    let now = snapshot.now();
    let generation = dc.metadata.generation;
    let mut status = dc.status();

    let paused = cluster
        .as_ref()
        .is_some_and(|c| c.spec.paused == Some(true))
        || dc.metadata.annotations.contains_key(annotations::PAUSED);
    if paused {
        conditions::set(
            &mut status.conditions,
            Condition::new(PAUSED, TRUE, "Paused").observed_generation(generation),
            now,
        );
        write_status(&dc, status, &mut out)?;
        return Ok(out);
    }

    if deleting {
        if dc.metadata.has_finalizer(finalizers::DEV_CLUSTER) {
            // Releasing the endpoint stops the API server and drops the
            // workload cluster's store and VMs, as deleting the resource
            // group and the listener does in CAPD.
            ctx.cloud().release_endpoint(&key)?;
            set_finalizer(&dc, false, &mut out)?;
            out.event(
                dc.object_ref(),
                EventType::Normal,
                "EndpointReleased",
                &format!("Released the API endpoint of cluster {key}"),
            );
        }
        return Ok(out);
    }
    if cluster.is_none() {
        ctx.info(format!(
            "devcluster {}: waiting for Cluster {key}",
            dc.metadata.name
        ));
        return Ok(out);
    }
    if !dc.metadata.has_finalizer(finalizers::DEV_CLUSTER) {
        set_finalizer(&dc, true, &mut out)?;
        return Ok(out);
    }
    if dc
        .spec
        .backend
        .as_ref()
        .and_then(|b| b.in_memory.as_ref())
        .is_none()
    {
        return Err(Error::terminal(format!(
            "devcluster {}/{} has no spec.backend.inMemory; only the in-memory backend is supported",
            dc.metadata.namespace, dc.metadata.name
        )));
    }

    let endpoint = ctx.cloud().reserve_endpoint(&key)?;
    for ns in DEFAULT_NAMESPACES {
        let r = ObjectRef {
            api_version: "v1".to_owned(),
            kind: "Namespace".to_owned(),
            namespace: String::new(),
            name: ns.to_owned(),
        };
        if ctx.cloud().get_object::<Value>(&key, &r)?.is_none() {
            ctx.cloud().put_object(
                &key,
                &json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns},
                        "creationTimestamp": now},
                    "status": {"phase": "Active"}}),
            )?;
        }
    }
    // Surface the endpoint once; a user-set endpoint is kept, as CAPD does.
    let host_set = dc
        .spec
        .control_plane_endpoint
        .as_ref()
        .is_some_and(|e| !e.host.is_empty());
    if !host_set {
        let mut patch = dc.skeleton();
        patch["spec"] =
            json!({"controlPlaneEndpoint": {"host": endpoint.host, "port": endpoint.port}});
        out.apply(&patch)?;
    }

    status.initialization = Some(InfraInitialization {
        provisioned: Some(true),
        ..status.initialization.clone().unwrap_or_default()
    });
    for c in [
        Condition::new(dc::READY, TRUE, dc::READY_REASON),
        Condition::new(PAUSED, FALSE, "NotPaused"),
    ] {
        conditions::set(
            &mut status.conditions,
            c.observed_generation(generation),
            now,
        );
    }
    capstan_sdk::capi::conditions::sort(&mut status.conditions);
    write_status(&dc, status, &mut out)?;
    Ok(out)
}

fn write_status(
    dc: &DevCluster,
    status: capstan_sdk::capi::infrastructure::InfraStatus,
    out: &mut Outcome,
) -> Result<(), Error> {
    if Some(&status) != dc.status.as_ref() {
        let mut s = dc.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

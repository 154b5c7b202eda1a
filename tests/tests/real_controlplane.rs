//! Real tier: the launched kube-apiserver works as a cluster, and Cluster API's CRDs install
//! and validate v1beta2 objects on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use capstan_tests::controlplane::ControlPlane;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// Starts an owned control plane; checks the kubeconfig, basic CRUD, and that dropping it
/// stops the process and removes its folder.
#[tokio::test]
async fn launcher_starts_serves_and_stops() -> Result<()> {
    let Some(cp) = ControlPlane::start().await? else {
        return Ok(()); // skipped; the launcher printed why
    };
    let client = cp.client().await?;
    let version = client.apiserver_version().await?;
    ensure!(
        version.git_version.starts_with("v1.34."),
        "unexpected version {version:?}"
    );

    // The kubeconfig is usable as a file (the way kubectl and `capstan run` use it).
    let text = std::fs::read_to_string(cp.kubeconfig_path())?;
    ensure!(
        text.contains(cp.url()),
        "kubeconfig does not name {}",
        cp.url()
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    ensure!(namespaces.get_opt("default").await?.is_some());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "launcher-smoke"},
        "data": {"k": "v"},
    }))?;
    let created = cms.create(&PostParams::default(), &cm).await?;
    ensure!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());

    // Authorisation is RBAC, not AlwaysAllow: an anonymous-looking user is refused. Check by
    // impersonating a user outside system:masters.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?,
        &Default::default(),
    )
    .await?;
    config.auth_info.impersonate = Some("nobody".into());
    let nobody: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config)?, "default");
    match nobody.get("launcher-smoke").await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("expected 403 for an unprivileged user, got {other:?}"),
    }

    let dir = cp.dir().to_path_buf();
    drop(cp);
    // Drop waited for the process; the binary removed its own folder on the way out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(
        !dir.exists(),
        "{} still exists after shutdown",
        dir.display()
    );
    Ok(())
}

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/capi-crds")
}

/// Installs every CRD file in `dir` through the API and waits until each is Established.
async fn install_crds(client: &kube::Client, dir: &Path) -> Result<Vec<String>> {
    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let value: Value =
            serde_yaml::from_str(&text).with_context(|| file.display().to_string())?;
        let obj: DynamicObject = serde_json::from_value(value)?;
        let created = crds
            .create(&PostParams::default(), &obj)
            .await
            .with_context(|| format!("installing {}", file.display()))?;
        names.push(created.metadata.name.unwrap_or_default());
    }
    for name in &names {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let crd = crds.get(name).await?;
            let established = crd.data["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            if established {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "CRD {name} never became Established"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(names)
}

/// Cluster API's CRDs install on kube-apiserver and a v1beta2 Cluster (with its referenced
/// DevCluster) passes real validation; an invalid one is refused with the field path; the
/// status subresource and garbage collection work on the custom resources.
#[tokio::test]
async fn capi_crds_install_and_validate_v1beta2() -> Result<()> {
    let Some(cp) = ControlPlane::shared().await? else {
        return Ok(());
    };
    let client = cp.client().await?;
    let names = install_crds(&client, &crd_dir()).await?;
    ensure!(
        names.len() == 14,
        "expected 14 CAPI CRDs, installed {names:?}"
    );
    ensure!(names.iter().any(|n| n == "clusters.cluster.x-k8s.io"));

    let ns = "capi-real";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;

    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster");
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "clusters"),
    );
    let cluster = |name: &str, kind: &str| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": ns, "labels": {"cluster.x-k8s.io/cluster-name": name}},
            "spec": {
                "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
                "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": kind, "name": format!("{name}-cp")},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": name},
                "unknownField": "pruned by the structural schema",
            },
        }))?)
    };
    let created = clusters
        .create(
            &PostParams::default(),
            &cluster("c1", "KubeadmControlPlane")?,
        )
        .await
        .context("creating a valid v1beta2 Cluster")?;
    ensure!(
        created
            .types
            .as_ref()
            .is_some_and(|t| t.api_version == "cluster.x-k8s.io/v1beta2")
    );
    ensure!(
        created.data["spec"].get("unknownField").is_none(),
        "unknown field was not pruned: {}",
        created.data["spec"]
    );
    ensure!(created.data["spec"]["controlPlaneRef"]["kind"] == "KubeadmControlPlane");

    // The deprecated v1beta1 is served too (conversion strategy None: same stored object).
    let v1beta1 = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "Cluster"),
        "clusters",
    );
    let old: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &v1beta1);
    ensure!(old.get("c1").await?.metadata.uid == created.metadata.uid);

    // Invalid: kind must match ^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$.
    match clusters
        .create(&PostParams::default(), &cluster("c2", "not a kind!")?)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 422 => {
            ensure!(
                s.message.contains("spec.controlPlaneRef.kind"),
                "422 without the field path: {}",
                s.message
            );
        }
        other => bail!("expected 422 for an invalid controlPlaneRef.kind, got {other:?}"),
    }

    // A DevCluster (in-memory backend) and a KubeadmControlPlane referenced by the Cluster.
    let dev_gvk = GroupVersionKind::gvk("infrastructure.cluster.x-k8s.io", "v1beta2", "DevCluster");
    let dev: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&dev_gvk, "devclusters"),
    );
    dev.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2",
            "kind": "DevCluster",
            "metadata": {
                "name": "c1",
                "namespace": ns,
                "ownerReferences": [{
                    "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "c1",
                    "uid": created.metadata.uid.clone().unwrap_or_default(),
                }],
            },
            "spec": {"backend": {"inMemory": {}}},
        }))?,
    )
    .await
    .context("creating a v1beta2 DevCluster")?;

    // Status subresource: writing status through the main resource is ignored, through
    // /status it sticks.
    let status_patch = json!({"status": {"initialization": {"infrastructureProvisioned": true}}});
    let patched = clusters
        .patch_status(
            "c1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status_patch),
        )
        .await
        .context("patching Cluster status")?;
    ensure!(patched.data["status"]["initialization"]["infrastructureProvisioned"] == true);

    // Garbage collection reaches custom resources: deleting the Cluster removes the
    // DevCluster it owns (the collector learns CRDs from discovery every few seconds).
    clusters
        .delete("c1", &kube::api::DeleteParams::background())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dev.get_opt("c1").await?.is_some() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "owned DevCluster not collected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

//! Test bodies run against both servers through `server_test!`: the pattern the host
//! machinery and Cluster API end-to-end tests use to run on the real control plane as well.

use std::time::Duration;

use anyhow::{Result, ensure};
use capstan_tests::server::{ServerKind, TestServer};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

/// A namespace of the test's own (the real control plane is shared within a test binary).
async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    Ok(())
}

/// Owner references are collected in the background on both servers, and a kube-runtime
/// watcher sees the dependent go.
async fn owner_references_are_collected(server: &TestServer) -> Result<()> {
    let client = server.client().await?;
    let ns = match server.kind() {
        ServerKind::Memory => "gc-memory",
        ServerKind::Real => "gc-real",
    };
    namespace(&client, ns).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let child: ConfigMap = serde_json::from_value(json!({"metadata": {
        "name": "child",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                             "uid": owner.metadata.uid}],
    }}))?;
    cms.create(&PostParams::default(), &child).await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let cms = cms.clone();
        async move {
            use futures::StreamExt as _;
            let mut events = std::pin::pin!(watcher(
                cms,
                watcher::Config::default().fields("metadata.name=child")
            ));
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Delete(cm) = event {
                    let _ = tx.send(cm.metadata.name);
                }
            }
        }
    });
    // Let the watcher list before the delete.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cms.delete("owner", &DeleteParams::background()).await?;
    let deleted = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    watch.abort();
    ensure!(
        matches!(deleted, Ok(Some(Some(ref n))) if n == "child"),
        "{:?}: dependent not collected: {deleted:?}",
        server.kind()
    );
    ensure!(cms.get_opt("child").await?.is_none());
    Ok(())
}
capstan_tests::server_test!(owner_references_are_collected);

//! Host against the in-memory API server: the fan-out and reverse key mappings and the new relation selectors.

use capstan::controller::{ControllerOptions, Reconcile};
use capstan::runtime::bindings::capstan::reconciler::types::{
    FieldPair, KeyMapping, RelationSelector,
};
use capstan_tests::host::*;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn create_configmap(client: &kube::Client, body: Value) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::core::ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        },
    );
    api.create(&PostParams::default(), &serde_json::from_value(body)?)
        .await?;
    Ok(())
}

type Seen = Arc<parking_lot::Mutex<HashMap<String, Vec<(String, usize)>>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_and_fan_out_mappings_reach_exactly_their_primaries() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    let cm = gvk("", "v1", "ConfigMap");
    let mut info = widget_info("mappings");
    info.watches = vec![
        watch(
            cm.clone(),
            KeyMapping::ReferencedBy("spec.configRef".into()),
        ),
        watch(
            cm.clone(),
            KeyMapping::FieldMatch(FieldPair {
                other: "data.owner".into(),
                primary: "spec.id".into(),
            }),
        ),
        watch(cm.clone(), KeyMapping::SameCluster),
    ];
    info.relations = vec![
        relation(
            "ref",
            cm.clone(),
            RelationSelector::FieldRef("spec.configRef".into()),
        ),
        relation(
            "named",
            cm.clone(),
            RelationSelector::Named("{name}-cfg".into()),
        ),
    ];
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let plugin = FakePlugin::new(info, move |snap, primary| {
        let name = primary["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let counts = snap
            .related
            .iter()
            .map(|r| (r.relation.clone(), r.objects.len()))
            .collect();
        s.lock().insert(name, counts);
        Ok(empty_outcome())
    });
    let mgr = start_manager(
        &server,
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
    )
    .await?;
    create_widget(
        &client,
        "a",
        json!({"configRef": {"kind": "ConfigMap", "name": "cfg-a"}}),
    )
    .await?;
    create_widget(
        &client,
        "b",
        json!({"configRef": {"kind": "Secret", "name": "cfg-a"}}),
    )
    .await?;
    create_widget(&client, "c", json!({"id": "x"})).await?;
    create_widget(&client, "d", json!({"clusterName": "c1"})).await?;
    let all = ["a", "b", "c", "d"];
    eventually(Duration::from_secs(5), || async {
        all.iter().all(|n| plugin.calls_for(n) == 1)
    })
    .await?;

    // referenced-by: the ConfigMap a names (kind ConfigMap) reconciles a, not b (kind Secret).
    create_configmap(
        &client,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg-a", "namespace": "default"}}),
    )
    .await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("a") == 2
    })
    .await?;
    // named: c's `{name}-cfg` exists before c is reconciled again.
    create_configmap(
        &client,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c-cfg", "namespace": "default"}}),
    )
    .await?;
    // field-match: data.owner = c's spec.id.
    create_configmap(
        &client,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned-by-x", "namespace": "default"}, "data": {"owner": "x"}}),
    )
    .await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("c") == 2
    })
    .await?;
    // same-cluster: a ConfigMap of cluster c1 reconciles d (spec.clusterName c1).
    create_configmap(
        &client,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "of-c1", "namespace": "default",
                     "labels": {"cluster.x-k8s.io/cluster-name": "c1"}}}),
    )
    .await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("d") == 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        all.map(|n| plugin.calls_for(n)),
        [2, 1, 2, 2],
        "each event reached exactly its primaries"
    );
    let seen = seen.lock().clone();
    let rel = |n: &str| seen.get(n).cloned().unwrap_or_default();
    assert_eq!(rel("a"), [("ref".to_string(), 1), ("named".to_string(), 0)]);
    assert_eq!(rel("b"), [("ref".to_string(), 0), ("named".to_string(), 0)]);
    assert_eq!(rel("c"), [("ref".to_string(), 0), ("named".to_string(), 1)]);
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

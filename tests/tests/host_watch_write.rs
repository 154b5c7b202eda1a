//! Host against both API servers: watch mapping, conflicts, permissions, faults, metrics.

use capstan::controller::{CallFailure, ControllerOptions, Fault, Reconcile};
use capstan::runtime::bindings::capstan::reconciler::types::{KeyMapping, RelationSelector};
use capstan_tests::host::*;
use capstan_tests::server::TestServer;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

async fn patch_configmap(client: &kube::Client, name: &str, patch: Value) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn owned_and_labelled_secondaries_enqueue_their_primary(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "mapper").await?;
    let client = fx.client.clone();
    let cm = gvk("", "v1", "ConfigMap");
    let mut info = fx.widget_info("mapper");
    info.watches = vec![
        watch(cm.clone(), KeyMapping::ControllerOwner),
        watch(cm.clone(), KeyMapping::Label("widget-name".into())),
    ];
    info.relations = vec![
        relation("owned", cm.clone(), RelationSelector::Owned),
        relation(
            "labelled",
            cm.clone(),
            RelationSelector::Label("widget-name".into()),
        ),
    ];
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let plugin = FakePlugin::new(info, move |snap, _| {
        let counts: Vec<(String, bool, usize)> = snap
            .related
            .iter()
            .map(|r| (r.relation.clone(), r.synced, r.objects.len()))
            .collect();
        s.lock().push(counts);
        Ok(empty_outcome())
    });
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;
    let w = fx.create_widget("owner", json!({})).await?;
    let uid = w["metadata"]["uid"].as_str().unwrap().to_string();
    fx.create_widget("other", json!({})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("owner") == 1 && plugin.calls_for("other") == 1
    })
    .await?;

    // An owned ConfigMap appears: its controller owner is reconciled, nobody else.
    create_configmap(&client, json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "owned-cm", "namespace": "default", "ownerReferences": [
            {"apiVersion": fx.api_version(), "kind": "Widget", "name": "owner", "uid": uid, "controller": true}]},
        "data": {"ready": "false"}})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("owner") == 2
    })
    .await?;
    // It "becomes ready": an update enqueues the owner again; no requeue-after anywhere.
    patch_configmap(&client, "owned-cm", json!({"data": {"ready": "true"}})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("owner") == 3
    })
    .await?;
    // A labelled ConfigMap names "other".
    create_configmap(&client, json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lab-cm", "namespace": "default", "labels": {"widget-name": "other"}}})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("other") == 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(plugin.calls_for("owner"), 3);
    assert_eq!(plugin.calls_for("other"), 2);
    // The snapshots carried the related objects, synced.
    let last = seen.lock().last().cloned().unwrap();
    assert_eq!(
        last,
        vec![
            ("owned".to_string(), true, 0),
            ("labelled".to_string(), true, 1)
        ]
    );
    let owner_snapshots: Vec<_> = seen.lock().clone();
    assert!(owner_snapshots.iter().any(|s| s
        == &vec![
            ("owned".to_string(), true, 1),
            ("labelled".to_string(), true, 0)
        ]));
    mgr.shutdown().await?;
    Ok(())
}

async fn a_racing_external_patch_yields_a_retried_conflict_and_converges(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "racer").await?;
    let gate = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&gate);
    let fx2 = fx.clone();
    let plugin = FakePlugin::new(fx.widget_info("racer"), move |_, primary| {
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let name = primary["metadata"]["name"].as_str().unwrap_or_default();
        // Desired: spec.doubled = 2 x spec.n, computed from what the snapshot saw.
        let n = primary["spec"]["n"].as_i64().unwrap_or(0);
        let mut o = empty_outcome();
        o.apply
            .push(fx2.widget_json(name, json!({"spec": {"doubled": 2 * n}})));
        Ok(o)
    });
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;
    fx.create_widget("race", json!({"n": 1})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("race") == 1
    })
    .await?;
    // While the plugin computes from n=1, an external actor changes n.
    fx.patch_widget("race", json!({"spec": {"n": 5}})).await?;
    gate.store(true, Ordering::Release);
    eventually(Duration::from_secs(5), || async {
        fx.get_widget("race")
            .await
            .is_ok_and(|w| w["spec"]["doubled"] == json!(10))
    })
    .await?;
    let w = fx.get_widget("race").await?;
    assert_eq!(w["spec"]["n"], json!(5), "no lost update");
    assert!(
        mgr.requests_with("PATCH", "409") >= 1,
        "the stale write was refused with 409"
    );
    let body = http_get(mgr.metrics_addr, "/metrics").await?.1;
    assert!(
        metric_value(&body, "capstan_write_conflicts_total{controller=\"racer\"}").unwrap() >= 1.0
    );
    assert_eq!(
        metric_value(
            &body,
            "controller_runtime_reconcile_errors_total{controller=\"racer\"}"
        ),
        Some(0.0)
    );
    assert!(
        metric_value(
            &body,
            "controller_runtime_reconcile_total{controller=\"racer\",result=\"requeue\"}"
        )
        .unwrap()
            >= 1.0
    );
    mgr.shutdown().await?;
    Ok(())
}

async fn undeclared_writes_are_refused_and_faults_stay_local(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "refusals").await?;
    // Declares only Widget patch/patch-status, yet tries to create a ConfigMap.
    let sneaky = FakePlugin::new(fx.widget_info("sneaky"), |_, _| {
        let mut o = empty_outcome();
        o.apply.push(
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "loot", "namespace": "default"}})
            .to_string(),
        );
        Ok(o)
    });
    // Traps on the widget named "bad", works on the others.
    let fx2 = fx.clone();
    let trappy = FakePlugin::new(fx.widget_info("trappy"), move |_, primary| {
        if primary["metadata"]["name"] == json!("bad") {
            Err(CallFailure::Fault(Fault::Trap(
                "wasm trap: unreachable".into(),
            )))
        } else {
            let mut o = empty_outcome();
            let name = primary["metadata"]["name"].as_str().unwrap_or_default();
            o.status
                .push(fx2.widget_json(name, json!({"status": {"trappy": "ok"}})));
            Ok(o)
        }
    });
    let healthy = FakePlugin::new(fx.widget_info("healthy"), |_, _| Ok(empty_outcome()));
    // The ConfigMap kind must be known to the manager for the refusal to be about
    // permissions, not discovery: a third plugin reads ConfigMaps.
    let mut reader_info = fx.widget_info("reader");
    reader_info.relations = vec![relation(
        "cms",
        gvk("", "v1", "ConfigMap"),
        RelationSelector::Label("x".into()),
    )];
    let reader = FakePlugin::new(reader_info, |_, _| Ok(empty_outcome()));
    let plugins: Vec<Arc<dyn Reconcile>> =
        vec![sneaky.clone(), trappy.clone(), healthy.clone(), reader];
    let mgr = fx
        .start_manager(plugins, ControllerOptions::default())
        .await?;
    fx.create_widget("bad", json!({})).await?;
    fx.create_widget("good", json!({})).await?;
    eventually(Duration::from_secs(5), || async {
        fx.get_widget("good")
            .await
            .is_ok_and(|w| w["status"]["trappy"] == json!("ok"))
    })
    .await?;
    eventually(Duration::from_secs(5), || async {
        trappy.calls_for("bad") >= 3 && healthy.calls_for("bad") >= 1
    })
    .await?;
    eventually(Duration::from_secs(5), || async {
        sneaky.calls_for("good") >= 1 && sneaky.calls_for("bad") >= 1
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mgr.requests("POST"),
        0,
        "the refused ConfigMap was never sent"
    );
    let body = http_get(mgr.metrics_addr, "/metrics").await?.1;
    assert!(
        metric_value(&body, "capstan_writes_refused_total{controller=\"sneaky\"}").unwrap() >= 2.0
    );
    assert!(
        metric_value(
            &body,
            "controller_runtime_reconcile_panics_total{controller=\"trappy\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        metric_value(
            &body,
            "capstan_plugin_traps_total{controller=\"trappy\",fault=\"trap\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert_eq!(
        metric_value(
            &body,
            "controller_runtime_reconcile_errors_total{controller=\"healthy\"}"
        ),
        Some(0.0)
    );
    // Every metric the issue lists, with controller-runtime's labels.
    for series in [
        "controller_runtime_reconcile_total{controller=\"healthy\",result=\"success\"}",
        "controller_runtime_reconcile_errors_total{controller=\"trappy\"}",
        "controller_runtime_terminal_reconcile_errors_total{controller=\"sneaky\"}",
        "controller_runtime_reconcile_panics_total{controller=\"healthy\"}",
        "controller_runtime_reconcile_time_seconds_count{controller=\"healthy\"}",
        "controller_runtime_active_workers{controller=\"healthy\"}",
        "controller_runtime_max_concurrent_reconciles{controller=\"healthy\"}",
        "workqueue_depth{name=\"healthy\",controller=\"healthy\"}",
        "workqueue_adds_total{name=\"healthy\",controller=\"healthy\"}",
        "workqueue_queue_duration_seconds_count{name=\"healthy\",controller=\"healthy\"}",
        "workqueue_work_duration_seconds_count{name=\"healthy\",controller=\"healthy\"}",
        "workqueue_retries_total{name=\"trappy\",controller=\"trappy\"}",
        "workqueue_unfinished_work_seconds{name=\"healthy\",controller=\"healthy\"}",
        "workqueue_longest_running_processor_seconds{name=\"healthy\",controller=\"healthy\"}",
        "capstan_plugin_call_seconds_count{controller=\"healthy\"}",
        "capstan_writes_skipped_total{controller=\"healthy\"}",
    ] {
        assert!(metric_value(&body, series).is_some(), "missing {series}");
    }
    let widgets_cached = format!(
        "capstan_cache_objects{{group=\"{}\",version=\"v1\",kind=\"Widget\"}}",
        fx.group
    );
    assert_eq!(
        metric_value(
            &body,
            "controller_runtime_max_concurrent_reconciles{controller=\"healthy\"}"
        ),
        Some(2.0)
    );
    assert_eq!(metric_value(&body, &widgets_cached), Some(2.0));
    assert!(
        metric_value(
            &body,
            "controller_runtime_reconcile_total{controller=\"healthy\",result=\"success\"}"
        )
        .unwrap()
            >= 2.0
    );
    let host = fx.host.clone();
    assert!(
        body.lines()
            .any(|l| l.starts_with("rest_client_requests_total{")
                && l.contains("code=\"200\"")
                && l.contains("method=\"GET\"")
                && l.contains(&format!("host=\"{host}\""))),
        "rest_client_requests_total with code, method, host:\n{body}"
    );
    assert!(
        body.contains("rest_client_request_duration_seconds_bucket{le=\"0.005\",verb=\"PATCH\"")
    );
    mgr.shutdown().await?;
    Ok(())
}

capstan_tests::server_test!(
    owned_and_labelled_secondaries_enqueue_their_primary,
    multi_thread
);
capstan_tests::server_test!(
    a_racing_external_patch_yields_a_retried_conflict_and_converges,
    multi_thread
);
capstan_tests::server_test!(
    undeclared_writes_are_refused_and_faults_stay_local,
    multi_thread
);

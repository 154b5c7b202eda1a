//! Host against the in-memory API server: reconcile, write counts, queue semantics end to end.

use capstan::controller::{CallFailure, ControllerOptions, Reconcile};
use capstan_tests::host::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn status_of(name: &str, status: Value) -> String {
    json!({"apiVersion": "test.capstan.dev/v1", "kind": "Widget",
           "metadata": {"name": name, "namespace": "default"}, "status": status})
    .to_string()
}

/// Sets `status.ready = true` and echoes the observed spec size; otherwise a no-op.
fn status_writer() -> Arc<FakePlugin> {
    FakePlugin::new(widget_info("status-writer"), |_, primary| {
        let name = primary["metadata"]["name"].as_str().unwrap_or_default();
        let mut o = empty_outcome();
        o.status.push(status_of(
            name,
            json!({"ready": true, "size": primary["spec"]["size"]}),
        ));
        Ok(o)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_object_is_reconciled_and_no_op_reconciles_write_nothing() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    let plugin = status_writer();
    let mgr = start_manager(
        &server,
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
    )
    .await?;

    let before = write_requests(&server);
    create_widget(&client, "w1", json!({"size": 3})).await?;
    eventually(Duration::from_secs(5), || async {
        get_widget(&client, "w1")
            .await
            .is_ok_and(|w| w["status"]["ready"] == json!(true))
    })
    .await?;
    // Our status write comes back as a watch event and reconciles once more: a no-op.
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w1") >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        write_requests(&server) - before,
        2,
        "the test's create + exactly one status patch; the no-op reconcile sends none"
    );
    let last = plugin.seen().last().cloned().unwrap().1;
    assert_eq!(last["status"]["size"], json!(3));
    assert!(!last.to_string().contains("managedFields"));

    let body = http_get(mgr.metrics_addr, "/metrics").await?.1;
    assert!(
        metric_value(
            &body,
            "capstan_writes_skipped_total{controller=\"status-writer\"}"
        )
        .unwrap()
            >= 1.0
    );
    let writes = write_requests(&server);
    mgr.shutdown().await?;
    assert_eq!(write_requests(&server), writes, "shutdown writes nothing");
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_and_status_change_is_at_most_two_requests() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    let plugin = FakePlugin::new(widget_info("labeller"), |_, primary| {
        let name = primary["metadata"]["name"].as_str().unwrap_or_default();
        let mut o = empty_outcome();
        o.apply.push(
            json!({"apiVersion": "test.capstan.dev/v1", "kind": "Widget",
                   "metadata": {"name": name, "namespace": "default", "labels": {"seen": "yes"}},
                   "spec": {"owner": "labeller"}})
            .to_string(),
        );
        o.status.push(status_of(name, json!({"phase": "Seen"})));
        Ok(o)
    });
    let mgr = start_manager(
        &server,
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
    )
    .await?;
    let before = write_requests(&server);
    create_widget(&client, "w2", json!({"size": 1})).await?;
    eventually(Duration::from_secs(5), || async {
        get_widget(&client, "w2")
            .await
            .is_ok_and(|w| w["status"]["phase"] == json!("Seen"))
    })
    .await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w2") >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = get_widget(&client, "w2").await?;
    assert_eq!(w["metadata"]["labels"]["seen"], json!("yes"));
    assert_eq!(w["spec"], json!({"size": 1, "owner": "labeller"}));
    assert_eq!(
        write_requests(&server) - before,
        3,
        "the test's create + one spec patch + one status patch, then nothing"
    );
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_updates_during_a_reconcile_cause_exactly_one_more() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    let gate = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&gate);
    let plugin = FakePlugin::new(widget_info("slow"), move |_, _| {
        // The first reconcile holds until the test has made its ten updates.
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(empty_outcome())
    });
    let mgr = start_manager(
        &server,
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
    )
    .await?;
    create_widget(&client, "w3", json!({"n": 0})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w3") == 1
    })
    .await?;
    let mut rv = String::new();
    for n in 1..=10 {
        let w = patch_widget(&client, "w3", json!({"spec": {"n": n}})).await?;
        rv = w["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    // Let the ten watch events reach the cache (and the queue) before releasing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gate.store(true, Ordering::Release);
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w3") >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(plugin.calls_for("w3"), 2, "exactly one further reconcile");
    let last = plugin.seen().last().cloned().unwrap().1;
    assert_eq!(last["spec"]["n"], json!(10), "and it saw the latest state");
    assert_eq!(
        last["metadata"]["resourceVersion"].as_str(),
        Some(rv.as_str())
    );
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_after_is_honoured_and_terminal_errors_stop_retries() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    let plugin = FakePlugin::new(widget_info("timing"), |_, primary| {
        match primary["spec"]["mode"].as_str() {
            Some("requeue") => {
                let mut o = empty_outcome();
                o.requeue_after_ms = Some(300);
                Ok(o)
            }
            Some("terminal") => Err(CallFailure::Terminal("bad spec".into())),
            Some("transient") => Err(CallFailure::Transient("not yet".into())),
            _ => Ok(empty_outcome()),
        }
    });
    let mgr = start_manager(
        &server,
        vec![plugin.clone() as Arc<dyn Reconcile>],
        ControllerOptions::default(),
    )
    .await?;
    create_widget(&client, "rq", json!({"mode": "requeue"})).await?;
    create_widget(&client, "term", json!({"mode": "terminal"})).await?;
    create_widget(&client, "trans", json!({"mode": "transient"})).await?;
    let start = tokio::time::Instant::now();
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("rq") >= 3
    })
    .await?;
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "two 300 ms requeues: {:?}",
        start.elapsed()
    );
    // Transient errors back off (5, 10, 20, 40 ... ms) and keep retrying.
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("trans") >= 5
    })
    .await?;
    // Terminal: exactly one call, however long we wait...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        plugin.calls_for("term"),
        1,
        "terminal errors are not retried"
    );
    // ...until the object changes.
    patch_widget(&client, "term", json!({"spec": {"mode": "fixed"}})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("term") == 2
    })
    .await?;
    let body = http_get(mgr.metrics_addr, "/metrics").await?.1;
    assert_eq!(
        metric_value(
            &body,
            "controller_runtime_terminal_reconcile_errors_total{controller=\"timing\"}"
        ),
        Some(1.0)
    );
    assert!(
        metric_value(
            &body,
            "controller_runtime_reconcile_total{controller=\"timing\",result=\"requeue_after\"}"
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        metric_value(
            &body,
            "workqueue_retries_total{name=\"timing\",controller=\"timing\"}"
        )
        .unwrap()
            >= 6.0
    );
    mgr.shutdown().await?;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_re_enqueues_every_object() -> anyhow::Result<()> {
    let server = api_server().await?;
    let client = test_client(&server).await?;
    for i in 0..5 {
        create_widget(&client, &format!("r{i}"), json!({})).await?;
    }
    let plugin = FakePlugin::new(widget_info("resync"), |_, _| Ok(empty_outcome()));
    let options = ControllerOptions {
        sync_period: Some(Duration::from_millis(400)),
        ..ControllerOptions::default()
    };
    let mgr = start_manager(&server, vec![plugin.clone() as Arc<dyn Reconcile>], options).await?;
    eventually(Duration::from_secs(5), || async {
        (0..5).all(|i| plugin.calls_for(&format!("r{i}")) >= 3)
    })
    .await?;
    let writes = write_requests(&server);
    mgr.shutdown().await?;
    assert_eq!(write_requests(&server), writes);
    server.shutdown().await;
    Ok(())
}

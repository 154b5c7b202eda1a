//! Host against both API servers: reconcile, write counts, queue semantics end to end.

use capstan::controller::{CallFailure, ControllerOptions, Reconcile};
use capstan_tests::host::*;
use capstan_tests::server::TestServer;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Sets `status.ready = true` and echoes the observed spec size; otherwise a no-op.
fn status_writer(fx: &HostFixture) -> Arc<FakePlugin> {
    let fx2 = fx.clone();
    FakePlugin::new(fx.widget_info("status-writer"), move |_, primary| {
        let name = primary["metadata"]["name"].as_str().unwrap_or_default();
        let mut o = empty_outcome();
        o.status.push(fx2.widget_json(
            name,
            json!({"status": {"ready": true, "size": primary["spec"]["size"]}}),
        ));
        Ok(o)
    })
}

async fn created_object_is_reconciled_and_no_op_reconciles_write_nothing(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "created").await?;
    let plugin = status_writer(&fx);
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;

    fx.create_widget("w1", json!({"size": 3})).await?;
    eventually(Duration::from_secs(5), || async {
        fx.get_widget("w1")
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
        mgr.writes(),
        1,
        "exactly one status patch; the no-op reconcile sends none"
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
    let writes = mgr.writes();
    assert_eq!(mgr.shutdown().await?, writes, "shutdown writes nothing");
    Ok(())
}

async fn spec_and_status_change_is_at_most_two_requests(server: &TestServer) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "labeller").await?;
    let fx2 = fx.clone();
    let plugin = FakePlugin::new(fx.widget_info("labeller"), move |_, primary| {
        let name = primary["metadata"]["name"].as_str().unwrap_or_default();
        let mut o = empty_outcome();
        o.apply.push(fx2.widget_json(
            name,
            json!({"metadata": {"labels": {"seen": "yes"}}, "spec": {"owner": "labeller"}}),
        ));
        o.status
            .push(fx2.widget_json(name, json!({"status": {"phase": "Seen"}})));
        Ok(o)
    });
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;
    fx.create_widget("w2", json!({"size": 1})).await?;
    eventually(Duration::from_secs(5), || async {
        fx.get_widget("w2")
            .await
            .is_ok_and(|w| w["status"]["phase"] == json!("Seen"))
    })
    .await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w2") >= 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = fx.get_widget("w2").await?;
    assert_eq!(w["metadata"]["labels"]["seen"], json!("yes"));
    assert_eq!(w["spec"], json!({"size": 1, "owner": "labeller"}));
    assert_eq!(
        mgr.writes(),
        2,
        "one spec patch + one status patch, then nothing"
    );
    mgr.shutdown().await?;
    Ok(())
}

async fn ten_updates_during_a_reconcile_cause_exactly_one_more(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "tenupdates").await?;
    let gate = Arc::new(AtomicBool::new(false));
    let g = Arc::clone(&gate);
    let plugin = FakePlugin::new(fx.widget_info("slow"), move |_, _| {
        // The first reconcile holds until the test has made its ten updates.
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(empty_outcome())
    });
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;
    fx.create_widget("w3", json!({"n": 0})).await?;
    eventually(Duration::from_secs(5), || async {
        plugin.calls_for("w3") == 1
    })
    .await?;
    let mut rv = String::new();
    for n in 1..=10 {
        let w = fx.patch_widget("w3", json!({"spec": {"n": n}})).await?;
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
    Ok(())
}

async fn requeue_after_is_honoured_and_terminal_errors_stop_retries(
    server: &TestServer,
) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "timing").await?;
    let plugin =
        FakePlugin::new(
            fx.widget_info("timing"),
            |_, primary| match primary["spec"]["mode"].as_str() {
                Some("requeue") => {
                    let mut o = empty_outcome();
                    o.requeue_after_ms = Some(300);
                    Ok(o)
                }
                Some("terminal") => Err(CallFailure::Terminal("bad spec".into())),
                Some("transient") => Err(CallFailure::Transient("not yet".into())),
                _ => Ok(empty_outcome()),
            },
        );
    let mgr = fx
        .start_manager(
            vec![plugin.clone() as Arc<dyn Reconcile>],
            ControllerOptions::default(),
        )
        .await?;
    // Timed from before the create: the first reconcile may run before it returns.
    let start = tokio::time::Instant::now();
    fx.create_widget("rq", json!({"mode": "requeue"})).await?;
    fx.create_widget("term", json!({"mode": "terminal"}))
        .await?;
    fx.create_widget("trans", json!({"mode": "transient"}))
        .await?;
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
    fx.patch_widget("term", json!({"spec": {"mode": "fixed"}}))
        .await?;
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
    Ok(())
}

async fn resync_re_enqueues_every_object(server: &TestServer) -> anyhow::Result<()> {
    let fx = HostFixture::new(server, "resync").await?;
    for i in 0..5 {
        fx.create_widget(&format!("r{i}"), json!({})).await?;
    }
    let plugin = FakePlugin::new(fx.widget_info("resync"), |_, _| Ok(empty_outcome()));
    let options = ControllerOptions {
        sync_period: Some(Duration::from_millis(400)),
        ..ControllerOptions::default()
    };
    let mgr = fx
        .start_manager(vec![plugin.clone() as Arc<dyn Reconcile>], options)
        .await?;
    eventually(Duration::from_secs(5), || async {
        (0..5).all(|i| plugin.calls_for(&format!("r{i}")) >= 3)
    })
    .await?;
    assert_eq!(
        mgr.writes(),
        0,
        "resyncs of unchanged objects write nothing"
    );
    assert_eq!(mgr.shutdown().await?, 0);
    Ok(())
}

capstan_tests::server_test!(
    created_object_is_reconciled_and_no_op_reconciles_write_nothing,
    multi_thread
);
capstan_tests::server_test!(spec_and_status_change_is_at_most_two_requests, multi_thread);
capstan_tests::server_test!(
    ten_updates_during_a_reconcile_cause_exactly_one_more,
    multi_thread
);
capstan_tests::server_test!(
    requeue_after_is_honoured_and_terminal_errors_stop_retries,
    multi_thread
);
capstan_tests::server_test!(resync_re_enqueues_every_object, multi_thread);

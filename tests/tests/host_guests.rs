//! Host with real built Wasm plugins against both API servers.

use capstan::controller::{ControllerOptions, Reconcile};
use capstan::runtime::{Runtime, RuntimeConfig};
use capstan_tests::host::*;
use capstan_tests::server::TestServer;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn wasm_status_writer_writes_once_and_a_trapping_plugin_stays_contained(
    server: &TestServer,
) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let status = runtime.load_file(guest_component("host-status")?)?;
    let trap = runtime.load_file(guest_component("host-trap")?)?;
    // The guests reconcile `test.capstan.dev` Widgets: the one test of this binary owns it.
    let fx = HostFixture::with_group(server, GUEST_GROUP).await?;
    let plugins: Vec<Arc<dyn Reconcile>> = vec![Arc::new(status), Arc::new(trap)];
    let mgr = fx
        .start_manager(plugins, ControllerOptions::default())
        .await?;
    fx.create_widget("good", json!({"size": 3})).await?;
    fx.create_widget("bad", json!({"size": 4})).await?;
    for (name, size) in [("good", 3), ("bad", 4)] {
        eventually(Duration::from_secs(10), || async {
            fx.get_widget(name)
                .await
                .is_ok_and(|w| w["status"] == json!({"ready": true, "size": size}))
        })
        .await?;
    }
    // Let the status writes come back as events and be reconciled (no-ops) and the trap retry.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        mgr.writes(),
        2,
        "exactly one status patch per widget; no-op reconciles send nothing"
    );
    let body = http_get(mgr.metrics_addr, "/metrics").await?.1;
    let v = |s: &str| metric_value(&body, s).unwrap_or(-1.0);
    assert!(
        v("controller_runtime_reconcile_panics_total{controller=\"host-trap\"}") >= 2.0,
        "trap retried with backoff"
    );
    assert!(v("capstan_plugin_traps_total{controller=\"host-trap\",fault=\"trap\"}") >= 2.0);
    assert!(
        v("controller_runtime_reconcile_total{controller=\"host-trap\",result=\"success\"}") >= 1.0,
        "other keys of the trapping plugin still reconcile"
    );
    assert_eq!(
        v("controller_runtime_reconcile_errors_total{controller=\"host-status\"}"),
        0.0
    );
    assert!(
        v("controller_runtime_reconcile_total{controller=\"host-status\",result=\"success\"}")
            >= 4.0
    );
    assert!(v("capstan_plugin_call_seconds_count{controller=\"host-status\"}") >= 4.0);
    mgr.shutdown().await?;
    Ok(())
}

capstan_tests::server_test!(
    wasm_status_writer_writes_once_and_a_trapping_plugin_stays_contained,
    multi_thread
);

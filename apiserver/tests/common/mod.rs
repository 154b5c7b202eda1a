//! Helpers shared by the integration tests: start a server, build a kube client, wait for things.

#![allow(dead_code)]

use std::time::Duration;

use capstan_apiserver::Server;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The CAPI CRDs vendored in the repository (`tests/fixtures/capi-crds`, an unchanged
/// copy of Cluster API's), or `$CAPSTAN_CAPI_CRDS` when set.
pub fn capi_crds() -> std::path::PathBuf {
    match std::env::var_os("CAPSTAN_CAPI_CRDS") {
        Some(p) => p.into(),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/capi-crds")
        }
    }
}

/// A kube client for a server's default (token) context.
pub async fn client(server: &Server) -> anyhow::Result<kube::Client> {
    client_ctx(server, None).await
}

/// A kube client for a named kubeconfig context.
pub async fn client_ctx(server: &Server, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let kc = Kubeconfig::from_yaml(server.kubeconfig_yaml())?;
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Polls `f` until it returns true or 10 s pass.
pub async fn wait_for<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

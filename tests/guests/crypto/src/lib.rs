//! Test guest `crypto`: issues a CA, a client certificate and a kubeconfig through the host, and tries the undeclared cloud.

use capstan_sdk::crypto::{CertificateRequest, CertificateUsage, KeyAlgorithm, KubeconfigRequest};
use capstan_sdk::{
    Capabilities, Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs,
};
use serde_json::json;

/// The `crypto` test plugin.
#[derive(Debug)]
pub struct CryptoGuest;

fn request(cn: &str, usage: CertificateUsage, orgs: &[&str]) -> CertificateRequest {
    CertificateRequest {
        common_name: cn.into(),
        organizations: orgs.iter().map(|o| o.to_string()).collect(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".into()],
        usage,
        validity_seconds: 3600,
    }
}

impl Reconciler for CryptoGuest {
    fn describe() -> PluginInfo {
        let cm = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("test-crypto", "0.1.0", cm.clone())
            .permit(cm, Verbs::PATCH)
            .capabilities(Capabilities::CRYPTO)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let primary: serde_json::Value = snapshot.primary()?;
        let name = primary["metadata"]["name"].as_str().unwrap_or("c");
        let crypto = ctx.crypto();
        let ca_key = crypto.generate_key(KeyAlgorithm::Rsa2048)?;
        let ca = crypto.self_signed(
            &ca_key.private_key,
            &request("kubernetes", CertificateUsage::Authority, &[]),
        )?;
        let client_key = crypto.generate_key(KeyAlgorithm::EcdsaP256)?;
        let client = crypto.sign(
            &ca,
            &ca_key.private_key,
            &client_key.public_key,
            &request(
                "kubernetes-admin",
                CertificateUsage::Client,
                &["system:masters"],
            ),
        )?;
        let kubeconfig = crypto.kubeconfig(&KubeconfigRequest {
            cluster_name: name.into(),
            server: "https://127.0.0.1:6443".into(),
            certificate_authority: ca.clone(),
            client_certificate: client,
            client_key: client_key.private_key,
        })?;
        // Not declared: the host must refuse it.
        let cloud = match ctx.cloud().reserve_endpoint("ns/c") {
            Ok(_) => "granted".to_string(),
            Err(e) => e.to_string(),
        };
        let mut out = Outcome::new();
        out.apply(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": primary["metadata"]["namespace"]},
            "data": {"ca": ca, "kubeconfig": kubeconfig, "cloud": cloud},
        }))?;
        Ok(out)
    }
}

capstan_sdk::export!(CryptoGuest);

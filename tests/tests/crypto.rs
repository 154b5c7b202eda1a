//! The crypto capability's output as real TLS stacks see it: rustls verifies a served chain, kube loads the kubeconfig.

use anyhow::Result;
use capstan::runtime::bindings::capstan::reconciler::crypto::{
    CertificateRequest, CertificateUsage, KeyAlgorithm, KubeconfigRequest,
};
use capstan::runtime::crypto;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

fn request(cn: &str, usage: CertificateUsage, dns: &[&str], ips: &[&str]) -> CertificateRequest {
    CertificateRequest {
        common_name: cn.into(),
        organizations: vec![],
        dns_names: dns.iter().map(|d| d.to_string()).collect(),
        ip_addresses: ips.iter().map(|i| i.to_string()).collect(),
        usage,
        validity_seconds: 365 * 24 * 3600,
    }
}

fn verify(ca: &str, leaf: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).expect("ca pem"))
        .expect("root");
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).expect("leaf pem");
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn a_generated_ca_signs_server_certificates_rustls_accepts() -> Result<()> {
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcdsaP256] {
        let ca_key = crypto::generate_key(alg)?;
        let ca = crypto::self_signed(
            &ca_key.private_key,
            &request("kubernetes", CertificateUsage::Authority, &[], &[]),
        )?;
        let server_key = crypto::generate_key(KeyAlgorithm::EcdsaP256)?;
        let server = crypto::sign(
            &ca,
            &ca_key.private_key,
            &server_key.public_key,
            &request(
                "kube-apiserver",
                CertificateUsage::Server,
                &["localhost", "kubernetes.default.svc"],
                &["127.0.0.1"],
            ),
        )?;
        verify(&ca, &server, "localhost").expect("DNS SAN accepted");
        verify(&ca, &server, "127.0.0.1").expect("IP SAN accepted");
        assert!(
            verify(&ca, &server, "other.example").is_err(),
            "name not in SANs"
        );
        // A client certificate is not a server certificate (extended key usage).
        let client = crypto::sign(
            &ca,
            &ca_key.private_key,
            &server_key.public_key,
            &request("admin", CertificateUsage::Client, &["localhost"], &[]),
        )?;
        assert!(
            verify(&ca, &client, "localhost").is_err(),
            "clientAuth only"
        );
        // Another CA's chain is refused.
        let other_key = crypto::generate_key(KeyAlgorithm::EcdsaP256)?;
        let other = crypto::self_signed(
            &other_key.private_key,
            &request("other", CertificateUsage::Authority, &[], &[]),
        )?;
        assert!(verify(&other, &server, "localhost").is_err());
    }
    Ok(())
}

#[tokio::test]
async fn the_kubeconfig_loads_in_kube_with_its_client_identity() -> Result<()> {
    let ca_key = crypto::generate_key(KeyAlgorithm::Rsa2048)?;
    let ca = crypto::self_signed(
        &ca_key.private_key,
        &request("kubernetes", CertificateUsage::Authority, &[], &[]),
    )?;
    let client_key = crypto::generate_key(KeyAlgorithm::EcdsaP256)?;
    let mut req = request("kubernetes-admin", CertificateUsage::Client, &[], &[]);
    req.organizations = vec!["system:masters".into()];
    let client = crypto::sign(&ca, &ca_key.private_key, &client_key.public_key, &req)?;
    let text = crypto::kubeconfig(&KubeconfigRequest {
        cluster_name: "c1".into(),
        server: "https://127.0.0.1:6443".into(),
        certificate_authority: ca,
        client_certificate: client,
        client_key: client_key.private_key,
    })?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    assert_eq!(kc.current_context.as_deref(), Some("c1-admin@c1"));
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
    assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
    // Building the client parses the identity (certificate + key) into rustls.
    kube::Client::try_from(config)?;
    Ok(())
}

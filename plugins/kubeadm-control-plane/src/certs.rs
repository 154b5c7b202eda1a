//! Cluster certificate Secrets (`<cluster>-ca`, `-etcd`, `-proxy`, `-sa`) and the admin `<cluster>-kubeconfig`, generated once.
//!
//! As CAPI's `util/secret` and `util/kubeconfig`: a Secret that exists is
//! read back through its `named` relation and never regenerated; a missing
//! one is generated with the host's `crypto` and written with the
//! KubeadmControlPlane as controller. Generated material is also kept in the
//! memo under the Cluster's UID, so a reconcile that runs before the cache
//! shows the new Secret writes the same bytes instead of a second CA.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capstan_sdk::capi::cluster::Cluster;
use capstan_sdk::capi::controlplane::KubeadmControlPlane;
use capstan_sdk::capi::controlplane::cluster_secrets::{
    self, CERTIFICATE_SUFFIXES, KUBECONFIG_SUFFIX, KUBECONFIG_VALUE, TLS_CRT, TLS_KEY,
};
use capstan_sdk::capi::{CLUSTER_SECRET_TYPE, Object, labels};
use capstan_sdk::crypto::{CertificateRequest, CertificateUsage, KeyAlgorithm, KubeconfigRequest};
use capstan_sdk::meta::{self, OwnerReference};
use capstan_sdk::{Context, Error, Outcome, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Validity of the cluster CAs (CAPI: 10 years).
pub const CA_VALIDITY_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Validity of the admin client certificate (CAPI: 1 year).
pub const CLIENT_VALIDITY_SECONDS: u64 = 365 * 24 * 3600;
/// Common name of every cluster CA, as CAPI's `newSelfSignedCACert`.
pub const CA_COMMON_NAME: &str = "kubernetes";
/// The admin user of the kubeconfig.
pub const ADMIN_COMMON_NAME: &str = "kubernetes-admin";
/// The admin user's group.
pub const ADMIN_GROUP: &str = "system:masters";

/// The relation carrying the Secret `<cluster>-<suffix>`.
pub fn relation(suffix: &str) -> String {
    format!("secret-{suffix}")
}

/// A certificate (or, for `sa`, a public key) and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    /// `tls.crt`.
    pub crt: String,
    /// `tls.key`.
    pub key: String,
}

/// What certificate reconciliation found or did.
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    /// The cluster CA as read from its Secret (not when generated in this
    /// reconcile: the kubeconfig waits for the Secret to be visible).
    pub persisted_ca: Option<KeyPair>,
    /// Every certificate Secret exists or was written in this reconcile.
    pub available: bool,
    /// Suffixes generated in this reconcile.
    pub generated: Vec<&'static str>,
}

fn decode(secret: &Value, key: &str) -> Option<String> {
    let b = B64.decode(
        secret
            .pointer(&format!("/data/{}", key.replace('/', "~1")))?
            .as_str()?,
    );
    b.ok().and_then(|b| String::from_utf8(b).ok())
}

/// The key pair stored in a certificate Secret.
pub fn read(secret: &Value) -> Option<KeyPair> {
    Some(KeyPair {
        crt: decode(secret, TLS_CRT)?,
        key: decode(secret, TLS_KEY)?,
    })
}

fn owner(kcp: &KubeadmControlPlane) -> OwnerReference {
    kcp.controller_reference()
}

/// A Secret of CAPI's cluster type, labelled with the cluster name and
/// controlled by the KubeadmControlPlane.
fn secret(kcp: &KubeadmControlPlane, cluster: &Cluster, suffix: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": cluster_secrets::name(&cluster.metadata.name, suffix),
            "namespace": cluster.metadata.namespace,
            "labels": {labels::CLUSTER_NAME: cluster.metadata.name},
            "ownerReferences": [owner(kcp)],
        },
        "type": CLUSTER_SECRET_TYPE,
        "data": data,
    })
}

/// As KCP's `ensureCertificatesOwnerRef`/`adoptKubeconfigSecret`: a Secret
/// of the cluster type controlled by someone else (e.g. a KubeadmConfig) or
/// by nobody is taken over by the KubeadmControlPlane; a user Secret of
/// another type is left alone. The patch, when one is needed.
fn adoption(kcp: &KubeadmControlPlane, existing: &Value) -> Option<Value> {
    if existing.get("type").and_then(Value::as_str) != Some(CLUSTER_SECRET_TYPE) {
        return None;
    }
    let mine = owner(kcp);
    let refs: Vec<OwnerReference> = existing
        .pointer("/metadata/ownerReferences")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    if refs.contains(&mine) {
        return None;
    }
    let mut kept: Vec<OwnerReference> = refs
        .into_iter()
        .filter(|r| r.controller != Some(true) && r.uid != mine.uid)
        .collect();
    kept.push(mine);
    let r = capstan_sdk::ObjectRef::of(existing);
    Some(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": r.name, "namespace": r.namespace, "ownerReferences": kept},
    }))
}

fn memo_key(cluster: &Cluster, what: &str) -> String {
    format!("{}/{what}", cluster.metadata.uid)
}

fn memo_read(ctx: &Context<'_>, key: &str) -> Option<KeyPair> {
    ctx.memo_get(key)
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn memo_write(ctx: &Context<'_>, key: &str, pair: &KeyPair) {
    if let Ok(b) = serde_json::to_vec(pair) {
        ctx.memo_set(key, &b);
    }
}

fn generate(ctx: &Context<'_>, suffix: &str) -> Result<KeyPair, Error> {
    let crypto = ctx.crypto();
    let key = crypto.generate_key(KeyAlgorithm::Rsa2048)?;
    if suffix == "sa" {
        // CAPI's ServiceAccount "certificate" is the public key.
        return Ok(KeyPair {
            crt: key.public_key,
            key: key.private_key,
        });
    }
    let crt = crypto.self_signed(
        &key.private_key,
        &CertificateRequest {
            common_name: CA_COMMON_NAME.to_owned(),
            organizations: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: CertificateUsage::Authority,
            validity_seconds: CA_VALIDITY_SECONDS,
        },
    )?;
    Ok(KeyPair {
        crt,
        key: key.private_key,
    })
}

/// Look up the four certificate Secrets; generate and write the missing ones.
pub fn reconcile(
    ctx: &Context<'_>,
    snapshot: &Snapshot,
    kcp: &KubeadmControlPlane,
    cluster: &Cluster,
    out: &mut Outcome,
) -> Result<Certificates, Error> {
    let mut result = Certificates {
        available: true,
        ..Certificates::default()
    };
    for suffix in CERTIFICATE_SUFFIXES {
        let rel = relation(suffix);
        if !snapshot.synced(&rel) {
            return Err(Error::transient(format!(
                "cache of relation {rel} is not synced yet"
            )));
        }
        let name = cluster_secrets::name(&cluster.metadata.name, suffix);
        if let Some(existing) = snapshot.related_json(&rel).first() {
            let existing: Value = serde_json::from_str(existing)
                .map_err(|e| Error::terminal(format!("secret {name} does not parse: {e}")))?;
            let Some(pair) = read(&existing) else {
                return Err(Error::terminal(format!(
                    "secret {name} lacks {TLS_CRT} or {TLS_KEY}"
                )));
            };
            if let Some(patch) = adoption(kcp, &existing) {
                out.apply(&patch)?;
            }
            if suffix == "ca" {
                result.persisted_ca = Some(pair);
            }
            continue;
        }
        let key = memo_key(cluster, &format!("cert/{suffix}"));
        let pair = match memo_read(ctx, &key) {
            Some(p) => p,
            None => {
                let p = generate(ctx, suffix)?;
                memo_write(ctx, &key, &p);
                result.generated.push(suffix);
                p
            }
        };
        let data = json!({TLS_CRT: B64.encode(&pair.crt), TLS_KEY: B64.encode(&pair.key)});
        out.apply(&secret(kcp, cluster, suffix, data))?;
    }
    if !result.generated.is_empty() {
        ctx.info(format!(
            "generated cluster certificates {:?} for Cluster {}/{}",
            result.generated, cluster.metadata.namespace, cluster.metadata.name
        ));
    }
    Ok(result)
}

/// `https://host:port`, brackets around an IPv6 host.
pub fn server_url(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

fn fingerprint(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// What kubeconfig reconciliation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubeconfig {
    /// The Secret exists.
    Exists,
    /// Written in this reconcile.
    Written,
    /// Waiting for the endpoint or for the CA Secret to be visible.
    Waiting,
}

/// Write `<cluster>-kubeconfig` when it is missing. The admin client key and
/// certificate are cached in the memo per Cluster UID and CA, so they are
/// generated once per cluster.
pub fn reconcile_kubeconfig(
    ctx: &Context<'_>,
    snapshot: &Snapshot,
    kcp: &KubeadmControlPlane,
    cluster: &Cluster,
    ca: Option<&KeyPair>,
    out: &mut Outcome,
) -> Result<Kubeconfig, Error> {
    let rel = relation(KUBECONFIG_SUFFIX);
    if !snapshot.synced(&rel) {
        return Err(Error::transient(format!(
            "cache of relation {rel} is not synced yet"
        )));
    }
    if let Some(existing) = snapshot.related_json(&rel).first() {
        let existing: Value = serde_json::from_str(existing)
            .map_err(|e| Error::terminal(format!("kubeconfig secret does not parse: {e}")))?;
        if let Some(patch) = adoption(kcp, &existing) {
            out.apply(&patch)?;
        }
        return Ok(Kubeconfig::Exists);
    }
    let (Some(endpoint), Some(ca)) = (cluster.spec.endpoint(), ca) else {
        return Ok(Kubeconfig::Waiting);
    };
    let key = memo_key(cluster, &format!("admin/{}", fingerprint(&ca.crt)));
    let client = match memo_read(ctx, &key) {
        Some(p) => p,
        None => {
            let crypto = ctx.crypto();
            let k = crypto.generate_key(KeyAlgorithm::Rsa2048)?;
            let crt = crypto.sign(
                &ca.crt,
                &ca.key,
                &k.public_key,
                &CertificateRequest {
                    common_name: ADMIN_COMMON_NAME.to_owned(),
                    organizations: vec![ADMIN_GROUP.to_owned()],
                    dns_names: Vec::new(),
                    ip_addresses: Vec::new(),
                    usage: CertificateUsage::Client,
                    validity_seconds: CLIENT_VALIDITY_SECONDS,
                },
            )?;
            let p = KeyPair {
                crt,
                key: k.private_key,
            };
            memo_write(ctx, &key, &p);
            p
        }
    };
    let text = ctx.crypto().kubeconfig(&KubeconfigRequest {
        cluster_name: cluster.metadata.name.clone(),
        server: server_url(&endpoint.host, endpoint.port),
        certificate_authority: ca.crt.clone(),
        client_certificate: client.crt,
        client_key: client.key,
    })?;
    out.apply(&secret(
        kcp,
        cluster,
        KUBECONFIG_SUFFIX,
        json!({KUBECONFIG_VALUE: B64.encode(text)}),
    ))?;
    ctx.info(format!(
        "kubeconfig written for Cluster {}/{}",
        cluster.metadata.namespace, cluster.metadata.name
    ));
    Ok(Kubeconfig::Written)
}

/// Whether `obj` is a Secret this KCP controls (used by tests and deletion).
pub fn controlled_by(kcp: &KubeadmControlPlane, obj: &Value) -> bool {
    meta::controller_of(obj).is_some_and(|o| o.uid == kcp.metadata.uid)
}

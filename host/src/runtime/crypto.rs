//! The `crypto` capability done natively: key pairs, certificates as Cluster API issues them, kubeconfigs.
//!
//! Keys cross the boundary as PEM text: private keys PKCS#8 (`PRIVATE KEY`), public keys
//! SubjectPublicKeyInfo (`PUBLIC KEY`), certificates X.509 (`CERTIFICATE`).
//!
//! - ECDSA P-256 keys come from ring (through rcgen); RSA 2048 keys from aws-lc-rs, because
//!   ring signs with RSA but cannot generate RSA keys. aws-lc-rs is used for generation
//!   only (every signature is made by ring). It replaced the `rsa` crate: RSA key
//!   generation is the most expensive thing a cluster's provisioning does (5 keys per
//!   cluster, as Cluster API), and aws-lc generates a 2048-bit key in 87 ms of CPU on this
//!   machine against 248 ms for the `rsa` crate (a `capstan simulate` profile showed 87% of
//!   the process in the `rsa` crate's Montgomery multiplication).
//! - Certificates follow Cluster API's `util/certs` and kubeadm: a CA has basic constraints
//!   `CA:true` and key usages certSign, digitalSignature and keyEncipherment; a leaf has
//!   digitalSignature and keyEncipherment and the extended key usages of its
//!   [`CertificateUsage`]; every certificate carries a random positive 128-bit serial, a
//!   subject key identifier, and (when signed by an issuer) its authority key identifier.
//!   Validity starts five minutes in the past (clock skew between machines, as CAPI).
//! - Kubeconfigs are the YAML Cluster API writes into `<cluster>-kubeconfig`: cluster
//!   `<c>`, user `<c>-admin`, context `<c>-admin@<c>` (current), base64 `*-data` fields.
//!
//! Every input is bounded (PEM sizes, names, list lengths, validity), so a plugin cannot
//! make the host parse or sign unbounded data.

use super::bindings::capstan::reconciler::crypto::{
    CertificateRequest, CertificateUsage, KeyAlgorithm, KeyPair, KubeconfigRequest,
};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use serde_json::json;
use std::net::IpAddr;

/// Longest PEM text accepted (a 4096-bit RSA key is about 3.3 KB).
pub const MAX_PEM_BYTES: usize = 16 * 1024;
/// Longest common name, organization, DNS name or cluster name.
pub const MAX_NAME_BYTES: usize = 253;
/// Most subject alternative names (DNS plus IP) in one request.
pub const MAX_ALT_NAMES: usize = 64;
/// Most organizations in one subject.
pub const MAX_ORGANIZATIONS: usize = 2;
/// Longest validity: 100 years.
pub const MAX_VALIDITY_SECONDS: u64 = 100 * 365 * 24 * 3600;
/// How far in the past a certificate's validity starts.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// Why a crypto operation failed; the plugin receives the message.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// An input is larger than its bound.
    #[error("{what} is {len} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The bound.
        limit: usize,
    },
    /// An input is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("{0}")]
    Failed(String),
}

fn invalid(what: &'static str, reason: impl std::fmt::Display) -> CryptoError {
    CryptoError::Invalid {
        what,
        reason: reason.to_string(),
    }
}

fn bounded(what: &'static str, s: &str, limit: usize) -> Result<(), CryptoError> {
    if s.len() > limit {
        return Err(CryptoError::TooLarge {
            what,
            len: s.len(),
            limit,
        });
    }
    Ok(())
}

/// Generate a key pair.
pub fn generate_key(algorithm: KeyAlgorithm) -> Result<KeyPair, CryptoError> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| CryptoError::Failed(format!("ECDSA key generation failed: {e}")))?;
            Ok(KeyPair {
                private_key: kp.serialize_pem(),
                public_key: kp.public_key_pem(),
            })
        }
        KeyAlgorithm::Rsa2048 => {
            use aws_lc_rs::encoding::AsDer;
            let failed = |e: String| CryptoError::Failed(format!("RSA key generation failed: {e}"));
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| failed(e.to_string()))?;
            let der = key.as_der().map_err(|e| failed(e.to_string()))?;
            // rcgen re-reads the PKCS#8 key (checking it) and writes the
            // same PEM forms as for ECDSA keys.
            let kp = rcgen::KeyPair::try_from(der.as_ref()).map_err(|e| failed(e.to_string()))?;
            Ok(KeyPair {
                private_key: kp.serialize_pem(),
                public_key: kp.public_key_pem(),
            })
        }
    }
}

fn load_private_key(what: &'static str, pem: &str) -> Result<rcgen::KeyPair, CryptoError> {
    bounded(what, pem, MAX_PEM_BYTES)?;
    rcgen::KeyPair::from_pem(pem).map_err(|e| {
        invalid(
            what,
            format!("not a PKCS#8 PEM ECDSA P-256/P-384, Ed25519 or RSA private key ({e})"),
        )
    })
}

/// A DNS name for a certificate: dot-separated labels of letters, digits and `-` (not at
/// a label's ends), optionally behind a leading `*.` wildcard.
fn is_dns_name(d: &str) -> bool {
    let d = d.strip_prefix("*.").unwrap_or(d);
    !d.is_empty()
        && d.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn params(request: &CertificateRequest) -> Result<CertificateParams, CryptoError> {
    bounded("common-name", &request.common_name, MAX_NAME_BYTES)?;
    if request.common_name.trim().is_empty() {
        return Err(invalid("common-name", "it is empty"));
    }
    if request.organizations.len() > MAX_ORGANIZATIONS {
        return Err(invalid(
            "organizations",
            format!(
                "{} given, at most {MAX_ORGANIZATIONS} are supported",
                request.organizations.len()
            ),
        ));
    }
    let alt_names = request.dns_names.len() + request.ip_addresses.len();
    if alt_names > MAX_ALT_NAMES {
        return Err(invalid(
            "subject alternative names",
            format!("{alt_names} given, at most {MAX_ALT_NAMES}"),
        ));
    }
    if request.validity_seconds == 0 || request.validity_seconds > MAX_VALIDITY_SECONDS {
        return Err(invalid(
            "validity-seconds",
            format!(
                "{} is outside 1..={MAX_VALIDITY_SECONDS}",
                request.validity_seconds
            ),
        ));
    }
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (i, o) in request.organizations.iter().enumerate() {
        bounded("organization", o, MAX_NAME_BYTES)?;
        // rcgen keeps one value per attribute type; a second O goes in under its OID.
        let ty = if i == 0 {
            DnType::OrganizationName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, 10])
        };
        dn.push(ty, o.as_str());
    }
    dn.push(DnType::CommonName, request.common_name.as_str());
    p.distinguished_name = dn;
    for d in &request.dns_names {
        bounded("dns-name", d, MAX_NAME_BYTES)?;
        if !is_dns_name(d) {
            return Err(invalid("dns-name", format!("{d:?} is not a DNS name")));
        }
        let name = d
            .as_str()
            .try_into()
            .map_err(|e| invalid("dns-name", format!("{d:?}: {e}")))?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &request.ip_addresses {
        let addr: IpAddr = ip
            .parse()
            .map_err(|e| invalid("ip-address", format!("{ip:?}: {e}")))?;
        p.subject_alt_names.push(SanType::IpAddress(addr));
    }
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    let validity = i64::try_from(request.validity_seconds).unwrap_or(i64::MAX);
    p.not_after = now + time::Duration::seconds(validity);
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and exactly 16 bytes long
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    match request.usage {
        CertificateUsage::Authority => {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
        }
        usage => {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = match usage {
                CertificateUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
                CertificateUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
                _ => vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            };
        }
    }
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Issue a self-signed certificate for `private_key` (PKCS#8 PEM).
pub fn self_signed(private_key: &str, request: &CertificateRequest) -> Result<String, CryptoError> {
    let key = load_private_key("private-key", private_key)?;
    let mut p = params(request)?;
    // A self-signed certificate's authority key identifier would name itself.
    p.use_authority_key_identifier_extension = false;
    let cert = p
        .self_signed(&key)
        .map_err(|e| CryptoError::Failed(format!("signing failed: {e}")))?;
    Ok(cert.pem())
}

/// Issue a certificate for `public_key` (SubjectPublicKeyInfo PEM), signed by the issuer
/// (its certificate and PKCS#8 private key, which must belong together).
pub fn sign(
    issuer_certificate: &str,
    issuer_key: &str,
    public_key: &str,
    request: &CertificateRequest,
) -> Result<String, CryptoError> {
    bounded("issuer-certificate", issuer_certificate, MAX_PEM_BYTES)?;
    bounded("public-key", public_key, MAX_PEM_BYTES)?;
    let key = load_private_key("issuer-key", issuer_key)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(issuer_certificate.as_bytes())
        .map_err(|e| invalid("issuer-certificate", format!("not a PEM certificate ({e})")))?;
    let cert = pem.parse_x509().map_err(|e| {
        invalid(
            "issuer-certificate",
            format!("not an X.509 certificate ({e})"),
        )
    })?;
    if !cert.is_ca() {
        return Err(invalid(
            "issuer-certificate",
            "it is not a certificate authority (basic constraints CA:true)",
        ));
    }
    use rcgen::PublicKeyData as _;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(invalid(
            "issuer-key",
            "it is not the key of the issuer certificate",
        ));
    }
    let spki = SubjectPublicKeyInfo::from_pem(public_key)
        .map_err(|e| invalid("public-key", format!("not a PEM public key ({e})")))?;
    let issuer = Issuer::from_ca_cert_pem(issuer_certificate, key)
        .map_err(|e| invalid("issuer-certificate", e))?;
    let cert = params(request)?
        .signed_by(&spki, &issuer)
        .map_err(|e| CryptoError::Failed(format!("signing failed: {e}")))?;
    Ok(cert.pem())
}

fn check_pem(what: &'static str, pem: &str, label_suffix: &str) -> Result<(), CryptoError> {
    bounded(what, pem, MAX_PEM_BYTES)?;
    let begin = pem
        .find("-----BEGIN ")
        .ok_or_else(|| invalid(what, "not PEM text"))?;
    let label = pem[begin + 11..]
        .split_once("-----")
        .map(|(l, _)| l)
        .ok_or_else(|| invalid(what, "not PEM text"))?;
    if !label.ends_with(label_suffix) {
        return Err(invalid(
            what,
            format!("a PEM {label:?} block where {label_suffix:?} was expected"),
        ));
    }
    Ok(())
}

/// Whether `s` is a valid Kubernetes object name (DNS-1123 subdomain).
fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(super::validate::is_dns_label)
}

/// Render the kubeconfig Cluster API writes for a cluster's admin.
pub fn kubeconfig(request: &KubeconfigRequest) -> Result<String, CryptoError> {
    let c = &request.cluster_name;
    if !is_subdomain(c) {
        return Err(invalid(
            "cluster-name",
            format!("{c:?} is not a DNS-1123 subdomain"),
        ));
    }
    bounded("server", &request.server, 2048)?;
    let server = request.server.as_str();
    let uri: http::Uri = server
        .parse()
        .map_err(|e| invalid("server", format!("{server:?}: {e}")))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(invalid(
            "server",
            format!("{server:?} is not an https:// URL with a host"),
        ));
    }
    check_pem(
        "certificate-authority",
        &request.certificate_authority,
        "CERTIFICATE",
    )?;
    check_pem(
        "client-certificate",
        &request.client_certificate,
        "CERTIFICATE",
    )?;
    check_pem("client-key", &request.client_key, "PRIVATE KEY")?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = format!("{c}-admin");
    let context = format!("{c}-admin@{c}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": c,
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(&request.certificate_authority),
            },
        }],
        "contexts": [{
            "name": context,
            "context": {"cluster": c, "user": user},
        }],
        "current-context": context,
        "preferences": {},
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(&request.client_certificate),
                "client-key-data": b64(&request.client_key),
            },
        }],
    });
    serde_yaml::to_string(&config).map_err(|e| CryptoError::Failed(format!("YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn request(cn: &str, usage: CertificateUsage) -> CertificateRequest {
        CertificateRequest {
            common_name: cn.into(),
            organizations: vec![],
            dns_names: vec![],
            ip_addresses: vec![],
            usage,
            validity_seconds: 3600,
        }
    }

    fn parse(pem: &str) -> (Vec<u8>, String) {
        let (_, p) = parse_x509_pem(pem.as_bytes()).expect("pem");
        (p.contents.clone(), p.label.clone())
    }

    #[test]
    fn ca_and_leaf_carry_capi_extensions() {
        let ca_key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
        assert!(
            ca_key
                .private_key
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(ca_key.public_key.starts_with("-----BEGIN PUBLIC KEY-----"));
        let ca = self_signed(
            &ca_key.private_key,
            &request("kubernetes", CertificateUsage::Authority),
        )
        .expect("ca");
        let (der, label) = parse(&ca);
        assert_eq!(label, "CERTIFICATE");
        let (_, c) = X509Certificate::from_der(&der).expect("x509");
        assert!(c.is_ca());
        let ku = c.key_usage().expect("ku").expect("present").value;
        assert!(ku.key_cert_sign() && ku.digital_signature() && ku.key_encipherment());
        assert_eq!(c.subject(), c.issuer());

        let leaf_key = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
        let mut req = request("kubernetes-admin", CertificateUsage::Client);
        req.organizations = vec!["system:masters".into()];
        let leaf = sign(&ca, &ca_key.private_key, &leaf_key.public_key, &req).expect("leaf");
        let (der, _) = parse(&leaf);
        let (_, l) = X509Certificate::from_der(&der).expect("x509");
        assert!(!l.is_ca());
        let eku = l.extended_key_usage().expect("eku").expect("present").value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(l.issuer(), c.subject());
        let org: Vec<_> = l
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        assert_eq!(org, ["system:masters"]);
        assert!(l.verify_signature(Some(c.public_key())).is_ok());
        // The issuer's key must be the CA certificate's.
        let other = generate_key(KeyAlgorithm::EcdsaP256).expect("key");
        let err = sign(&ca, &other.private_key, &leaf_key.public_key, &req).unwrap_err();
        assert!(
            err.to_string().contains("not the key of the issuer"),
            "{err}"
        );
        // A leaf cannot issue.
        let err = sign(&leaf, &leaf_key.private_key, &other.public_key, &req).unwrap_err();
        assert!(
            err.to_string().contains("not a certificate authority"),
            "{err}"
        );
    }

    #[test]
    fn rsa_keys_sign_and_are_signed() {
        let ca_key = generate_key(KeyAlgorithm::Rsa2048).expect("rsa");
        assert!(
            ca_key
                .private_key
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let ca = self_signed(
            &ca_key.private_key,
            &request("kubernetes", CertificateUsage::Authority),
        )
        .expect("rsa ca");
        let server_key = generate_key(KeyAlgorithm::Rsa2048).expect("rsa");
        let mut req = request("kube-apiserver", CertificateUsage::ServerAndClient);
        req.dns_names = vec!["localhost".into()];
        req.ip_addresses = vec!["127.0.0.1".into()];
        let leaf = sign(&ca, &ca_key.private_key, &server_key.public_key, &req).expect("leaf");
        let (der, _) = parse(&leaf);
        let (_, l) = X509Certificate::from_der(&der).expect("x509");
        let eku = l.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let san = l.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2);
        let (cader, _) = parse(&ca);
        let (_, c) = X509Certificate::from_der(&cader).unwrap();
        assert!(l.verify_signature(Some(c.public_key())).is_ok());
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let k = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let mut r = request("x", CertificateUsage::Server);
        r.validity_seconds = 0;
        assert!(self_signed(&k.private_key, &r).is_err());
        let r = request("x", CertificateUsage::Server);
        assert!(self_signed("not pem", &r).is_err());
        assert!(self_signed(&"A".repeat(MAX_PEM_BYTES + 1), &r).is_err());
        let mut r2 = request("x", CertificateUsage::Server);
        r2.dns_names = vec!["bad name!".into()];
        assert!(self_signed(&k.private_key, &r2).is_err());
        let mut r3 = request("x", CertificateUsage::Server);
        r3.ip_addresses = vec!["300.1.1.1".into()];
        assert!(self_signed(&k.private_key, &r3).is_err());
        assert!(sign("junk", &k.private_key, &k.public_key, &r).is_err());
    }

    #[test]
    fn kubeconfig_as_capi_writes_it() {
        let ca_key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let ca = self_signed(
            &ca_key.private_key,
            &request("kubernetes", CertificateUsage::Authority),
        )
        .unwrap();
        let req = KubeconfigRequest {
            cluster_name: "c1".into(),
            server: "https://127.0.0.1:6443".into(),
            certificate_authority: ca.clone(),
            client_certificate: ca.clone(),
            client_key: ca_key.private_key.clone(),
        };
        let text = kubeconfig(&req).expect("kubeconfig");
        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "c1-admin@c1");
        assert_eq!(v["contexts"][0]["context"]["user"], "c1-admin");
        assert_eq!(v["clusters"][0]["name"], "c1");
        let data = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(decoded, ca.as_bytes());
        let bad = KubeconfigRequest {
            server: "http://127.0.0.1".into(),
            ..req.clone()
        };
        assert!(kubeconfig(&bad).is_err());
        let bad = KubeconfigRequest {
            client_key: ca.clone(),
            ..req.clone()
        };
        assert!(
            kubeconfig(&bad)
                .unwrap_err()
                .to_string()
                .contains("PRIVATE KEY")
        );
        let bad = KubeconfigRequest {
            cluster_name: "Bad_Name".into(),
            ..req
        };
        assert!(kubeconfig(&bad).is_err());
    }
}

//! The Cluster API kubeadm bootstrap reconciler: KubeadmConfig -> bootstrap data Secret (cloud-config with kubeadm init/join).
//!
//! Behaviour follows CAPI's CABPK (`bootstrap/kubeadm/internal/controllers`)
//! at v1beta2; what is implemented, simplified and missing is listed in
//! `docs/capi.md`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use capstan_sdk::capi::bootstrap::{
    BootstrapInitialization, KubeadmConfig, KubeadmConfigStatus, bootstrap_token,
    certificates_reasons, kubeadm_config_conditions as kc,
};
use capstan_sdk::capi::cluster::{Cluster, Machine};
use capstan_sdk::capi::conditions::{self as capi_conditions, Input, Reasons};
use capstan_sdk::capi::controlplane::cluster_secrets::{self, TLS_CRT, TLS_KEY};
use capstan_sdk::capi::{CLUSTER_SECRET_TYPE, Object, labels, to_value};
use capstan_sdk::conditions::{self, Condition, FALSE, TRUE};
use capstan_sdk::crypto::KeyAlgorithm;
use capstan_sdk::{
    Capabilities, Connection, Context, Error, Gvk, KeyMapping, Outcome, PluginInfo, Reconciler,
    RelationSelector, Snapshot, Verbs,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Relation: the Machine that controls the KubeadmConfig.
pub const MACHINE: &str = "machine";
/// Relation: the Cluster named by the KubeadmConfig's cluster-name label.
pub const CLUSTER: &str = "cluster";
/// The cluster certificate Secrets, by suffix, with the files CABPK writes
/// them to on the node (certificate file, key file).
pub const CERTIFICATES: [(&str, &str, &str); 4] = [
    (
        "ca",
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/pki/ca.key",
    ),
    (
        "etcd",
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/etcd/ca.key",
    ),
    (
        "proxy",
        "/etc/kubernetes/pki/front-proxy-ca.crt",
        "/etc/kubernetes/pki/front-proxy-ca.key",
    ),
    (
        "sa",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/sa.key",
    ),
];
/// Characters of bootstrap tokens (`[a-z0-9]`).
const TOKEN_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Where the kubeadm configuration lands on the node, for `kubeadm init`.
pub const INIT_CONFIG_PATH: &str = "/run/kubeadm/kubeadm.yaml";
/// Where the kubeadm configuration lands on the node, for `kubeadm join`.
pub const JOIN_CONFIG_PATH: &str = "/run/kubeadm/kubeadm-join-config.yaml";
/// kubeadm's config API version the data is rendered in.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
const SENTINEL: &str = "echo success > /run/cluster-api/bootstrap-success.complete";
const PLACEHOLDER: &str = "This placeholder file is used to create the /run/cluster-api sub directory in a way that is compatible with both Linux and Windows (mkdir -p /run/cluster-api does not work with Windows)";

/// The KubeadmConfig reconciler.
#[derive(Debug)]
pub struct KubeadmBootstrap;

impl Reconciler for KubeadmBootstrap {
    fn describe() -> PluginInfo {
        let machine = Machine::gvk();
        let mut info = PluginInfo::new(
            "kubeadm-bootstrap",
            env!("CARGO_PKG_VERSION"),
            KubeadmConfig::gvk(),
        )
        .watch(
            machine.clone(),
            KeyMapping::Field("spec.bootstrap.configRef.name".to_owned()),
        )
        // A Cluster event reaches every KubeadmConfig of the Cluster.
        .watch(
            Cluster::gvk(),
            KeyMapping::LabelledWithName(labels::CLUSTER_NAME.to_owned()),
        )
        .relation(MACHINE, machine, RelationSelector::ControllerOwner)
        .relation(
            CLUSTER,
            Cluster::gvk(),
            RelationSelector::ByLabelValue(labels::CLUSTER_NAME.to_owned()),
        );
        let secret = Gvk::new("", "v1", "Secret");
        for (suffix, _, _) in CERTIFICATES {
            info = info.relation(
                &certificate_relation(suffix),
                secret.clone(),
                RelationSelector::Named(format!("{{cluster}}-{suffix}")),
            );
        }
        info.permit(KubeadmConfig::gvk(), Verbs::PATCH | Verbs::PATCH_STATUS)
            .permit(secret.clone(), Verbs::CREATE | Verbs::PATCH)
            .permit_workload(secret, Verbs::CREATE | Verbs::PATCH)
            .capabilities(Capabilities::CRYPTO)
            // CAPI HEAD's --kubeadmconfig-concurrency default.
            .concurrency(100)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        reconcile(ctx, snapshot)
    }
}

capstan_sdk::export!(KubeadmBootstrap);

/// What this reconcile decided about the bootstrap data.
enum Data {
    /// Not yet: DataSecretAvailable False with this message (a watched
    /// change brings the config back).
    Wait(String),
    /// Cannot be generated from this spec (not retried until it changes).
    Unsupported(String),
    /// The data exists (in this Secret).
    Exists(String),
    /// Generate it now.
    Generate(Kind),
}

/// Which kubeadm command the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `kubeadm init`: the first control-plane Machine.
    Init,
    /// `kubeadm join --control-plane`.
    JoinControlPlane,
    /// `kubeadm join`: a worker.
    JoinWorker,
}

fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let config: KubeadmConfig = snapshot.primary()?;
    let mut out = Outcome::new();
    if config.metadata.is_deleting() {
        // No finalizer: the Secret goes with its owner by garbage collection.
        return Ok(out);
    }
    for r in [MACHINE, CLUSTER] {
        if !snapshot.synced(r) {
            return Err(Error::transient(format!(
                "cache of relation {r} is not synced yet"
            )));
        }
    }
    let machine: Option<Machine> = snapshot.related_one(MACHINE)?;
    let Some(machine) = machine.filter(|m| {
        config
            .metadata
            .controller()
            .is_some_and(|o| o.uid == m.metadata.uid && o.kind == "Machine")
    }) else {
        ctx.debug("waiting for the Machine controller to set the owner reference");
        return Ok(out);
    };
    let cluster_name = config.metadata.labels.get(labels::CLUSTER_NAME);
    let cluster: Option<Cluster> = snapshot.related_one(CLUSTER)?;
    let Some(cluster) = cluster.filter(|c| Some(&c.metadata.name) == cluster_name) else {
        // The label arrives with the Machine controller's patch (an event
        // here); the Cluster's creation reaches this key through the
        // labelled-with-name watch.
        ctx.info(format!(
            "waiting for the Cluster {} of Machine {}",
            machine.spec.cluster_name, machine.metadata.name
        ));
        return Ok(out);
    };

    let mut data = decide(&config, &machine, &cluster);
    let mut status = config.status();
    let mut init = status.initialization.clone().unwrap_or_default();
    let generation = config.metadata.generation;
    let now = snapshot.now();
    let mut material = Material::default();
    if let Data::Generate(kind) = data {
        match certificates(snapshot, &cluster, kind)? {
            Ok(found) => {
                conditions::set(
                    &mut status.conditions,
                    Condition::new(
                        kc::CERTIFICATES_AVAILABLE,
                        TRUE,
                        certificates_reasons::AVAILABLE,
                    )
                    .observed_generation(generation),
                    now,
                );
                material.certificates = found;
            }
            Err(missing) => {
                conditions::set(
                    &mut status.conditions,
                    Condition::new(
                        kc::CERTIFICATES_AVAILABLE,
                        FALSE,
                        certificates_reasons::NOT_AVAILABLE,
                    )
                    .message(format!(
                        "Waiting for Secrets {} to exist",
                        missing.join(", ")
                    ))
                    .observed_generation(generation),
                    now,
                );
                data = Data::Wait("Waiting for the cluster certificates".to_owned());
            }
        }
    }
    if let Data::Generate(kind @ (Kind::JoinControlPlane | Kind::JoinWorker)) = data {
        match token(ctx, snapshot, &config, &mut out)? {
            Some(t) => material.token = Some(t),
            None => {
                data = Data::Wait(format!(
                    "Waiting for the workload cluster connection to create a bootstrap token ({kind:?})"
                ));
            }
        }
    }
    let condition = match &data {
        Data::Wait(message) => Condition::new(
            kc::DATA_SECRET_AVAILABLE,
            FALSE,
            kc::DATA_SECRET_NOT_AVAILABLE_REASON,
        )
        .message(message.clone()),
        Data::Unsupported(message) => Condition::new(
            kc::DATA_SECRET_AVAILABLE,
            FALSE,
            kc::DATA_SECRET_NOT_AVAILABLE_REASON,
        )
        .message(message.clone()),
        Data::Exists(name) => {
            created(&mut init, &mut status, name);
            Condition::new(
                kc::DATA_SECRET_AVAILABLE,
                TRUE,
                kc::DATA_SECRET_AVAILABLE_REASON,
            )
        }
        Data::Generate(kind) => {
            let value = render(&config, &machine, &cluster, *kind, &material)?;
            out.apply(&secret(&config, &cluster, &value))?;
            ctx.info(format!(
                "bootstrap data ({kind:?}) for Machine {}/{} written to Secret {}",
                machine.metadata.namespace, machine.metadata.name, config.metadata.name
            ));
            created(&mut init, &mut status, &config.metadata.name);
            Condition::new(
                kc::DATA_SECRET_AVAILABLE,
                TRUE,
                kc::DATA_SECRET_AVAILABLE_REASON,
            )
        }
    };
    status.initialization = Some(init);
    conditions::set(
        &mut status.conditions,
        condition.observed_generation(generation),
        now,
    );
    // CertificatesAvailable counts once reported (CABPK ignores it if missing).
    let mut ready_inputs = vec![Input::positive(kc::DATA_SECRET_AVAILABLE)];
    if conditions::find(&status.conditions, kc::CERTIFICATES_AVAILABLE).is_some() {
        ready_inputs.push(Input::positive(kc::CERTIFICATES_AVAILABLE));
    }
    let ready = capi_conditions::summary(
        &status.conditions,
        kc::READY,
        &ready_inputs,
        Reasons {
            good: kc::READY_REASON,
            bad: kc::NOT_READY_REASON,
            unknown: kc::READY_UNKNOWN_REASON,
        },
    );
    conditions::set(
        &mut status.conditions,
        ready.observed_generation(generation),
        now,
    );
    capi_conditions::sort(&mut status.conditions);
    status.observed_generation = generation;
    if Some(&status) != config.status.as_ref() {
        let mut s = config.skeleton();
        s["status"] = to_value(&status);
        out.status(&s)?;
    }
    Ok(out)
}

/// The relation carrying the Secret `<cluster>-<suffix>`.
pub fn certificate_relation(suffix: &str) -> String {
    format!("secret-{suffix}")
}

/// What the data carries besides the spec: certificate files and the join token.
#[derive(Debug, Default)]
struct Material {
    /// (certificate file, key file or none, certificate PEM, key PEM).
    certificates: Vec<(&'static str, Option<&'static str>, String, String)>,
    /// The bootstrap token of a join.
    token: Option<String>,
}

fn decode(secret: &Value, key: &str) -> Option<String> {
    let b = B64
        .decode(secret.pointer(&format!("/data/{key}"))?.as_str()?)
        .ok()?;
    String::from_utf8(b).ok()
}

type Found = Vec<(&'static str, Option<&'static str>, String, String)>;

/// As CABPK's `LookupCached`: an init or a control-plane join needs the four
/// cluster certificates (with keys), a worker the cluster CA certificate.
/// They are read, never generated here (see docs/capi.md). `Err` lists the
/// missing Secrets.
fn certificates(
    snapshot: &Snapshot,
    cluster: &Cluster,
    kind: Kind,
) -> Result<Result<Found, Vec<String>>, Error> {
    let wanted: &[(&str, &str, &str)] = match kind {
        Kind::Init | Kind::JoinControlPlane => &CERTIFICATES,
        Kind::JoinWorker => &CERTIFICATES[..1],
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (suffix, crt_path, key_path) in wanted {
        let rel = certificate_relation(suffix);
        if !snapshot.synced(&rel) {
            return Err(Error::transient(format!(
                "cache of relation {rel} is not synced yet"
            )));
        }
        let name = cluster_secrets::name(&cluster.metadata.name, suffix);
        let secret: Option<Value> = snapshot.related_one(&rel)?;
        let crt = secret.as_ref().and_then(|s| decode(s, TLS_CRT));
        let key = secret.as_ref().and_then(|s| decode(s, TLS_KEY));
        match (crt, key, kind) {
            (Some(c), _, Kind::JoinWorker) => found.push((*crt_path, None, c, String::new())),
            (Some(c), Some(k), _) => found.push((*crt_path, Some(*key_path), c, k)),
            _ => missing.push(name),
        }
    }
    Ok(if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    })
}

/// `[a-z0-9]` characters drawn without bias from SHA-256 of `seed` and a counter.
fn token_chars(seed: &str, n: usize) -> String {
    let mut out = String::with_capacity(n);
    let limit = 256 - 256 % TOKEN_CHARS.len();
    for counter in 0u32.. {
        let digest = Sha256::digest(format!("{seed}/{counter}").as_bytes());
        for b in digest {
            if usize::from(b) < limit {
                out.push(TOKEN_CHARS[usize::from(b) % TOKEN_CHARS.len()] as char);
                if out.len() == n {
                    return out;
                }
            }
        }
    }
    out
}

/// The bootstrap token of a join, as CABPK's `reconcileDiscovery`: the
/// user's (`discovery.bootstrapToken.token`) when given; else one made from
/// a freshly generated key's bytes (unguessable), kept in the memo per
/// config UID, written into the config's spec as CABPK does, with its
/// `bootstrap-token-<id>` Secret applied in the workload cluster. `None`
/// when a token must be created but the workload cluster is not connected.
fn token(
    ctx: &Context<'_>,
    snapshot: &Snapshot,
    config: &KubeadmConfig,
    out: &mut Outcome,
) -> Result<Option<String>, Error> {
    let memo_key = format!("token/{}", config.metadata.uid);
    let remembered = ctx
        .memo_get(&memo_key)
        .and_then(|b| String::from_utf8(b).ok());
    let given = config
        .spec
        .join_configuration
        .as_ref()
        .and_then(|j| j.pointer("/discovery/bootstrapToken/token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if let Some(t) = &given
        && remembered.as_ref() != Some(t)
    {
        // The user's token: CABPK creates no Secret for it.
        return Ok(Some(t.clone()));
    }
    if snapshot.workload() != Connection::Connected {
        return Ok(None);
    }
    let token = match remembered {
        Some(t) => t,
        None => {
            let key = ctx.crypto().generate_key(KeyAlgorithm::EcdsaP256)?;
            let t = token_chars(&key.private_key, 22);
            let t = format!("{}.{}", &t[..6], &t[6..]);
            ctx.memo_set(&memo_key, t.as_bytes());
            t
        }
    };
    let (id, secret) = token.split_once('.').unwrap_or((&token, ""));
    let expiration = snapshot
        .now()
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| {
            t.checked_add(jiff::SignedDuration::from_secs(
                bootstrap_token::DEFAULT_TTL_SECONDS,
            ))
            .ok()
        })
        .map(|t| t.to_string())
        .ok_or_else(|| {
            Error::terminal(format!("snapshot time {} is not RFC 3339", snapshot.now()))
        })?;
    out.workload_apply(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": bootstrap_token::secret_name(id), "namespace": bootstrap_token::NAMESPACE},
        "type": bootstrap_token::SECRET_TYPE,
        "data": {
            "token-id": B64.encode(id),
            "token-secret": B64.encode(secret),
            "expiration": B64.encode(expiration),
            "usage-bootstrap-authentication": B64.encode("true"),
            "usage-bootstrap-signing": B64.encode("true"),
            "auth-extra-groups": B64.encode(bootstrap_token::EXTRA_GROUPS),
            "description": B64.encode("token generated by cluster-api-bootstrap-provider-kubeadm"),
        },
    }))?;
    if given.is_none() {
        let mut jc = config
            .spec
            .join_configuration
            .clone()
            .unwrap_or_else(|| json!({}));
        if !jc.is_object() {
            jc = json!({});
        }
        let discovery = jc
            .as_object_mut()
            .map(|m| m.entry("discovery").or_insert_with(|| json!({})));
        if let Some(d) = discovery.filter(|d| d.is_object()) {
            let bt = d
                .as_object_mut()
                .map(|m| m.entry("bootstrapToken").or_insert_with(|| json!({})));
            if let Some(bt) = bt.filter(|b| b.is_object()) {
                bt["token"] = json!(token);
            }
        }
        let mut patch = config.skeleton();
        patch["spec"] = json!({"joinConfiguration": jc});
        out.apply(&patch)?;
    }
    Ok(Some(token))
}

fn created(init: &mut BootstrapInitialization, status: &mut KubeadmConfigStatus, name: &str) {
    init.data_secret_created = Some(true);
    status.data_secret_name = Some(name.to_owned());
}

/// CABPK's decision tree, in its order.
fn decide(config: &KubeadmConfig, machine: &Machine, cluster: &Cluster) -> Data {
    let init = cluster.status().initialization.unwrap_or_default();
    if init.infrastructure_provisioned != Some(true) {
        return Data::Wait(
            "Waiting for Cluster status.initialization.infrastructureProvisioned to be true"
                .to_owned(),
        );
    }
    // Data created elsewhere (a move, a restore without status): adopt it.
    if let Some(name) = &machine.spec.bootstrap.data_secret_name
        && !config.data_secret_created()
    {
        return Data::Exists(name.clone());
    }
    if config.data_secret_created() {
        return Data::Exists(
            config
                .status()
                .data_secret_name
                .unwrap_or_else(|| config.metadata.name.clone()),
        );
    }
    let spec = &config.spec;
    if let Some(f) = spec.format.as_deref()
        && f != "cloud-config"
    {
        return Data::Unsupported(format!(
            "format {f} is not supported yet (only cloud-config)"
        ));
    }
    if let Some(i) = spec.files.iter().position(|f| f.content_from.is_some()) {
        return Data::Unsupported(format!("files[{i}].contentFrom is not supported yet"));
    }
    if init.control_plane_initialized != Some(true) {
        if !machine.is_control_plane() {
            return Data::Wait("Waiting for Cluster control plane to be initialized".to_owned());
        }
        if spec.init_configuration.is_none() && spec.cluster_configuration.is_none() {
            // A joining control-plane Machine created before the first one
            // initialized: wait, as CABPK does.
            return Data::Wait("Waiting for Cluster control plane to be initialized".to_owned());
        }
        return Data::Generate(Kind::Init);
    }
    Data::Generate(if machine.is_control_plane() {
        Kind::JoinControlPlane
    } else {
        Kind::JoinWorker
    })
}

/// The bootstrap data Secret, as CABPK's storeBootstrapData writes it.
fn secret(config: &KubeadmConfig, cluster: &Cluster, value: &str) -> Value {
    let owner = config.controller_reference();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": config.metadata.name,
            "namespace": config.metadata.namespace,
            "labels": {labels::CLUSTER_NAME: cluster.metadata.name},
            "ownerReferences": [{
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": true,
            }],
        },
        "type": CLUSTER_SECRET_TYPE,
        "data": {
            "value": B64.encode(value),
            "format": B64.encode("cloud-config"),
        },
    })
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key)
        .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
    {
        m.insert(key.to_owned(), value);
    }
}

/// Convert CAPI v1beta2's integer fields to kubeadm v1beta4 durations:
/// `timeouts.<x>Seconds: n` -> `timeouts.<x>: "ns"` and
/// `(ca)CertificateValidityPeriodDays: d` -> `(ca)CertificateValidityPeriod: "<24d>h0m0s"`.
fn to_kubeadm(m: &mut Map<String, Value>) {
    if let Some(Value::Object(t)) = m.get_mut("timeouts") {
        let converted: Map<String, Value> = std::mem::take(t)
            .into_iter()
            .map(|(k, v)| match (k.strip_suffix("Seconds"), v.as_i64()) {
                (Some(base), Some(n)) => (base.to_owned(), Value::String(format!("{n}s"))),
                _ => (k, v),
            })
            .collect();
        *t = converted;
    }
    for (from, to) in [
        ("certificateValidityPeriodDays", "certificateValidityPeriod"),
        (
            "caCertificateValidityPeriodDays",
            "caCertificateValidityPeriod",
        ),
    ] {
        if let Some(days) = m.remove(from).and_then(|v| v.as_i64()) {
            m.insert(
                to.to_owned(),
                Value::String(format!("{}h0m0s", days.saturating_mul(24))),
            );
        }
    }
}

fn document(kind: &str, mut m: Map<String, Value>) -> String {
    to_kubeadm(&mut m);
    m.insert(
        "apiVersion".into(),
        Value::String(KUBEADM_API_VERSION.into()),
    );
    m.insert("kind".into(), Value::String(kind.into()));
    // JSON is YAML: kubeadm reads each document as is.
    format!("---\n{}\n", Value::Object(m))
}

fn cidrs(r: Option<&capstan_sdk::capi::cluster::NetworkRanges>) -> Option<String> {
    r.filter(|r| !r.cidr_blocks.is_empty())
        .map(|r| r.cidr_blocks.join(","))
}

/// The ClusterConfiguration with the Cluster's settings filled in where
/// the user left them empty (CABPK's reconcileTopLevelObjectSettings).
fn cluster_configuration(
    config: &KubeadmConfig,
    machine: &Machine,
    cluster: &Cluster,
) -> Map<String, Value> {
    let mut cc = object(config.spec.cluster_configuration.as_ref());
    set_default(
        &mut cc,
        "clusterName",
        Value::String(cluster.metadata.name.clone()),
    );
    if let Some(e) = cluster.spec.endpoint() {
        set_default(
            &mut cc,
            "controlPlaneEndpoint",
            Value::String(e.to_string()),
        );
    }
    if let Some(v) = &machine.spec.version {
        set_default(&mut cc, "kubernetesVersion", Value::String(v.clone()));
    }
    if let Some(net) = &cluster.spec.cluster_network {
        let mut n = object(cc.get("networking"));
        if let Some(s) = cidrs(net.services.as_ref()) {
            set_default(&mut n, "serviceSubnet", Value::String(s));
        }
        if let Some(p) = cidrs(net.pods.as_ref()) {
            set_default(&mut n, "podSubnet", Value::String(p));
        }
        if let Some(d) = &net.service_domain {
            set_default(&mut n, "dnsDomain", Value::String(d.clone()));
        }
        if !n.is_empty() {
            cc.insert("networking".into(), Value::Object(n));
        }
    }
    cc
}

/// The cloud-config text of the bootstrap data.
fn render(
    config: &KubeadmConfig,
    machine: &Machine,
    cluster: &Cluster,
    kind: Kind,
    material: &Material,
) -> Result<String, Error> {
    let spec = &config.spec;
    let (path, kubeadm, command) = match kind {
        Kind::Init => {
            let cc = cluster_configuration(config, machine, cluster);
            let ic = object(spec.init_configuration.as_ref());
            (
                INIT_CONFIG_PATH,
                format!(
                    "{}{}",
                    document("ClusterConfiguration", cc),
                    document("InitConfiguration", ic)
                ),
                format!("kubeadm init --config {INIT_CONFIG_PATH}  && {SENTINEL}"),
            )
        }
        Kind::JoinControlPlane | Kind::JoinWorker => {
            let mut jc = object(spec.join_configuration.as_ref());
            if kind == Kind::JoinControlPlane && jc.get("controlPlane").is_none_or(Value::is_null) {
                jc.insert("controlPlane".into(), json!({}));
            }
            let mut discovery = object(jc.get("discovery"));
            if discovery.get("file").is_none() {
                let mut token = object(discovery.get("bootstrapToken"));
                if let Some(t) = &material.token {
                    set_default(&mut token, "token", Value::String(t.clone()));
                }
                if let Some(e) = cluster.spec.endpoint() {
                    set_default(
                        &mut token,
                        "apiServerEndpoint",
                        Value::String(e.to_string()),
                    );
                }
                discovery.insert("bootstrapToken".into(), Value::Object(token));
            }
            jc.insert("discovery".into(), Value::Object(discovery));
            (
                JOIN_CONFIG_PATH,
                document("JoinConfiguration", jc),
                format!("kubeadm join --config {JOIN_CONFIG_PATH}  && {SENTINEL}"),
            )
        }
    };
    let mut files: Vec<Value> = Vec::new();
    for (crt_path, key_path, crt, key) in &material.certificates {
        files.push(
            json!({"path": crt_path, "owner": "root:root", "permissions": "0640", "content": crt}),
        );
        if let Some(p) = key_path {
            files.push(
                json!({"path": p, "owner": "root:root", "permissions": "0600", "content": key}),
            );
        }
    }
    files.extend(spec.files.iter().map(|f| {
        let mut o = Map::new();
        o.insert("path".into(), Value::String(f.path.clone()));
        for (k, v) in [
            ("owner", &f.owner),
            ("permissions", &f.permissions),
            ("encoding", &f.encoding),
            ("content", &f.content),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), Value::String(v.clone()));
            }
        }
        if let Some(a) = f.append {
            o.insert("append".into(), Value::Bool(a));
        }
        Value::Object(o)
    }));
    files.push(
        json!({"path": path, "owner": "root:root", "permissions": "0640", "content": kubeadm}),
    );
    files.push(json!({"path": "/run/cluster-api/placeholder", "owner": "root:root", "permissions": "0640", "content": PLACEHOLDER}));
    let runcmd: Vec<&str> = spec
        .pre_kubeadm_commands
        .iter()
        .map(String::as_str)
        .chain([command.as_str()])
        .chain(spec.post_kubeadm_commands.iter().map(String::as_str))
        .collect();
    let mut body = Map::new();
    body.insert("write_files".into(), Value::Array(files));
    body.insert("runcmd".into(), json!(runcmd));
    if let Some(users) = &spec.users {
        body.insert("users".into(), Value::Array(users.clone()));
    }
    if let Some(ntp) = &spec.ntp {
        body.insert("ntp".into(), ntp.clone());
    }
    let text = serde_json::to_string_pretty(&Value::Object(body)).map_err(|e| {
        Error::terminal(format!(
            "cloud-config of KubeadmConfig {} does not serialize: {e}",
            config.metadata.name
        ))
    })?;
    Ok(format!("#cloud-config\n{text}\n"))
}

#[cfg(test)]
mod tests;

//! Native tests of the kubeadm bootstrap reconciler through the SDK's fake host.

use super::*;
use capstan_sdk::testing::FakeHost;

const T0: &str = "2026-01-01T00:00:00Z";

fn config(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2", "kind": "KubeadmConfig",
        "metadata": {"name": "c1-cp-0", "namespace": "ns", "uid": "uid-kc", "generation": 1,
            "labels": {labels::CLUSTER_NAME: "c1"},
            "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "c1-cp-0",
                "uid": "uid-m", "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
        "status": status,
    })
}

fn init_spec() -> Value {
    json!({
        "clusterConfiguration": {"apiServer": {"certSANs": ["localhost"], "extraArgs": [{"name": "v", "value": "2"}]},
            "certificateValidityPeriodDays": 365},
        "initConfiguration": {"nodeRegistration": {"kubeletExtraArgs": [{"name": "eviction-hard", "value": "nodefs.available<0%"}]},
            "timeouts": {"controlPlaneComponentHealthCheckSeconds": 240}},
        "files": [{"path": "/etc/motd", "content": "hello", "permissions": "0644"}],
        "preKubeadmCommands": ["echo pre"], "postKubeadmCommands": ["echo post"],
        "users": [{"name": "capi"}],
    })
}

fn machine(control_plane: bool, data_secret: Option<&str>) -> Value {
    let mut labels = json!({labels::CLUSTER_NAME: "c1"});
    if control_plane {
        labels[labels::CONTROL_PLANE] = json!("");
    }
    let mut m = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "c1-cp-0", "namespace": "ns", "uid": "uid-m", "labels": labels},
        "spec": {"clusterName": "c1", "version": "v1.34.0",
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfig", "name": "c1-cp-0"}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachine", "name": "c1-cp-0"}}});
    if let Some(s) = data_secret {
        m["spec"]["bootstrap"]["dataSecretName"] = json!(s);
    }
    m
}

fn cluster(infra: bool, cp: bool) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "c1", "namespace": "ns", "uid": "uid-c1"},
        "spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": 20000},
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "services": {"cidrBlocks": ["10.128.0.0/12", "fd00::/108"]},
                "serviceDomain": "cluster.local"}},
        "status": {"initialization": {"infrastructureProvisioned": infra, "controlPlaneInitialized": cp}}})
}

fn cert_secret(suffix: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
        "metadata": {"name": format!("c1-{suffix}"), "namespace": "ns"},
        "data": {"tls.crt": B64.encode(format!("{suffix}-crt")), "tls.key": B64.encode(format!("{suffix}-key"))}})
}

/// A snapshot with the four certificate Secrets present (or not) and the
/// workload cluster in `connection`.
fn snapshot_with(
    cfg: &Value,
    machines: &[Value],
    clusters: &[Value],
    certs: bool,
    connection: Connection,
) -> Snapshot {
    let mut snap = Snapshot::new(cfg, T0)
        .with_related(MACHINE, true, machines)
        .with_related(CLUSTER, true, clusters);
    for (suffix, _, _) in CERTIFICATES {
        let found: Vec<Value> = if certs {
            vec![cert_secret(suffix)]
        } else {
            Vec::new()
        };
        snap = snap.with_related(&certificate_relation(suffix), true, &found);
    }
    snap.with_workload(connection)
}

fn run(cfg: &Value, machines: &[Value], clusters: &[Value]) -> Outcome {
    let snap = snapshot_with(cfg, machines, clusters, true, Connection::Connected);
    FakeHost::new()
        .reconcile::<KubeadmBootstrap>(&snap)
        .expect("reconcile succeeds")
}

fn status_of(out: &Outcome) -> Value {
    assert_eq!(out.statuses().len(), 1);
    let s: Value = serde_json::from_str(&out.statuses()[0]).expect("json");
    assert_eq!(s["kind"], "KubeadmConfig");
    s["status"].clone()
}

fn cond(status: &Value, t: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .expect("condition");
    let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    (s("status"), s("reason"), s("message"))
}

fn the_secret(out: &Outcome) -> (Value, String) {
    let secrets: Vec<Value> = out
        .applied()
        .iter()
        .map(|a| serde_json::from_str::<Value>(a).expect("json"))
        .filter(|v| v["kind"] == "Secret")
        .collect();
    assert_eq!(secrets.len(), 1, "one Secret");
    let s = secrets[0].clone();
    let value = B64
        .decode(s["data"]["value"].as_str().expect("value"))
        .expect("base64");
    (s, String::from_utf8(value).expect("utf-8"))
}

/// The cloud-config body (after the `#cloud-config` line), parsed.
fn body(text: &str) -> Value {
    let rest = text
        .strip_prefix("#cloud-config\n")
        .expect("cloud-config header");
    serde_json::from_str(rest).expect("body is JSON (hence YAML)")
}

/// The kubeadm documents of the file at `path` in the cloud-config.
fn kubeadm_docs(b: &Value, path: &str) -> Vec<Value> {
    let file = b["write_files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == path))
        .expect("kubeadm file");
    file["content"]
        .as_str()
        .unwrap_or("")
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d.trim()).expect("document"))
        .collect()
}

#[test]
fn describe_declares_owner_and_cluster_relations() {
    let info = KubeadmBootstrap::describe();
    assert_eq!(info.name, "kubeadm-bootstrap");
    assert_eq!(info.primary.kind, "KubeadmConfig");
    assert_eq!(
        info.finalizer, None,
        "KubeadmConfig has no finalizer in CAPI"
    );
    assert_eq!(
        info.relations[0].selector,
        RelationSelector::ControllerOwner
    );
    assert_eq!(
        info.relations[1].selector,
        RelationSelector::ByLabelValue(labels::CLUSTER_NAME.into())
    );
    let secret = info
        .permissions
        .iter()
        .find(|p| p.kind.kind == "Secret")
        .expect("secret permission");
    assert_eq!(
        (secret.kind.group.as_str(), secret.verbs),
        ("", Verbs::CREATE | Verbs::PATCH)
    );
}

#[test]
fn first_control_plane_machine_gets_init_data() {
    let out = run(
        &config(init_spec(), json!({})),
        &[machine(true, None)],
        &[cluster(true, false)],
    );
    let (secret, text) = the_secret(&out);
    assert_eq!(secret["metadata"]["name"], "c1-cp-0");
    assert_eq!(secret["metadata"]["namespace"], "ns");
    assert_eq!(secret["type"], "cluster.x-k8s.io/secret");
    assert_eq!(
        secret["metadata"]["labels"],
        json!({labels::CLUSTER_NAME: "c1"})
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmConfig", "name": "c1-cp-0", "uid": "uid-kc", "controller": true}])
    );
    assert_eq!(
        B64.decode(secret["data"]["format"].as_str().unwrap_or(""))
            .ok(),
        Some(b"cloud-config".to_vec())
    );
    let b = body(&text);
    assert_eq!(
        b["runcmd"],
        json!([
            "echo pre",
            format!("kubeadm init --config {INIT_CONFIG_PATH}  && {SENTINEL}"),
            "echo post"
        ])
    );
    assert_eq!(b["users"], json!([{"name": "capi"}]));
    // Eight certificate files first (as CABPK), then the user's.
    assert_eq!(
        b["write_files"][8],
        json!({"path": "/etc/motd", "content": "hello", "permissions": "0644"})
    );
    let docs = kubeadm_docs(&b, INIT_CONFIG_PATH);
    assert_eq!(docs.len(), 2);
    let cc = &docs[0];
    assert_eq!(
        (cc["apiVersion"].as_str(), cc["kind"].as_str()),
        (Some(KUBEADM_API_VERSION), Some("ClusterConfiguration"))
    );
    assert_eq!(cc["clusterName"], "c1");
    assert_eq!(cc["controlPlaneEndpoint"], "127.0.0.1:20000");
    assert_eq!(cc["kubernetesVersion"], "v1.34.0");
    assert_eq!(
        cc["networking"],
        json!({"podSubnet": "192.168.0.0/16", "serviceSubnet": "10.128.0.0/12,fd00::/108", "dnsDomain": "cluster.local"})
    );
    assert_eq!(cc["certificateValidityPeriod"], "8760h0m0s");
    assert!(cc.get("certificateValidityPeriodDays").is_none());
    assert_eq!(cc["apiServer"]["certSANs"], json!(["localhost"]));
    assert_eq!(docs[1]["kind"], "InitConfiguration");
    assert_eq!(
        docs[1]["timeouts"],
        json!({"controlPlaneComponentHealthCheck": "240s"})
    );
    let s = status_of(&out);
    assert_eq!(s["initialization"], json!({"dataSecretCreated": true}));
    assert_eq!(s["dataSecretName"], "c1-cp-0");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(
        cond(&s, "Ready"),
        ("True".into(), "Ready".into(), String::new())
    );
    assert_eq!(
        cond(&s, "DataSecretAvailable"),
        ("True".into(), "Available".into(), String::new())
    );
    assert_eq!(s["conditions"][0]["type"], "Ready", "Ready sorts first");
    assert_eq!(out.requeue_after_ms(), None);
}

#[test]
fn nothing_is_generated_before_the_cluster_infrastructure_is_provisioned() {
    let out = run(
        &config(init_spec(), json!({})),
        &[machine(true, None)],
        &[cluster(false, false)],
    );
    assert!(out.applied().is_empty());
    assert_eq!(out.requeue_after_ms(), None, "watches bring it back");
    let s = status_of(&out);
    assert_eq!(
        cond(&s, "DataSecretAvailable"),
        (
            "False".into(),
            "NotAvailable".into(),
            "Waiting for Cluster status.initialization.infrastructureProvisioned to be true".into()
        )
    );
    assert_eq!(cond(&s, "Ready").0, "False");
    assert_eq!(cond(&s, "Ready").1, "NotReady");
    assert!(s.get("dataSecretName").is_none());
}

#[test]
fn workers_and_joining_control_planes_wait_for_control_plane_initialization() {
    let worker = config(json!({"joinConfiguration": {}}), json!({}));
    let out = run(&worker, &[machine(false, None)], &[cluster(true, false)]);
    assert!(out.applied().is_empty());
    assert_eq!(
        cond(&status_of(&out), "DataSecretAvailable").2,
        "Waiting for Cluster control plane to be initialized"
    );
    let cp_join = config(json!({"joinConfiguration": {}}), json!({}));
    let out = run(&cp_join, &[machine(true, None)], &[cluster(true, false)]);
    assert!(out.applied().is_empty());
    assert_eq!(out.requeue_after_ms(), None, "watches bring it back");
}

#[test]
fn a_worker_joins_once_the_control_plane_is_initialized() {
    let spec = json!({"joinConfiguration": {"nodeRegistration": {"name": "n"}}, "preKubeadmCommands": ["a", "b"]});
    let out = run(
        &config(spec, json!({})),
        &[machine(false, None)],
        &[cluster(true, true)],
    );
    let (_, text) = the_secret(&out);
    let b = body(&text);
    assert_eq!(
        b["runcmd"],
        json!([
            "a",
            "b",
            format!("kubeadm join --config {JOIN_CONFIG_PATH}  && {SENTINEL}")
        ])
    );
    let docs = kubeadm_docs(&b, JOIN_CONFIG_PATH);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "JoinConfiguration");
    assert_eq!(
        docs[0]["discovery"]["bootstrapToken"]["apiServerEndpoint"],
        "127.0.0.1:20000"
    );
    assert!(
        docs[0].get("controlPlane").is_none(),
        "a worker is not a control-plane join"
    );
    assert_eq!(docs[0]["nodeRegistration"]["name"], "n");
    assert!(b["write_files"].as_array().is_some_and(|f| {
        f.iter()
            .any(|f| f["path"] == "/run/cluster-api/placeholder")
    }));
}

#[test]
fn a_control_plane_machine_after_initialization_joins_as_control_plane() {
    let out = run(
        &config(json!({"joinConfiguration": {}}), json!({})),
        &[machine(true, None)],
        &[cluster(true, true)],
    );
    let (_, text) = the_secret(&out);
    let docs = kubeadm_docs(&body(&text), JOIN_CONFIG_PATH);
    assert_eq!(docs[0]["controlPlane"], json!({}));
}

#[test]
fn created_data_is_not_regenerated_and_a_steady_state_writes_nothing() {
    let cfg = config(init_spec(), json!({}));
    let first = run(&cfg, &[machine(true, None)], &[cluster(true, false)]);
    let mut cfg2 = cfg.clone();
    cfg2["status"] = status_of(&first);
    let again = run(&cfg2, &[machine(true, None)], &[cluster(true, true)]);
    assert_eq!(again, Outcome::new(), "no Secret, no status, no requeue");
}

#[test]
fn data_named_on_the_machine_is_adopted_without_generating() {
    let out = run(
        &config(init_spec(), json!({})),
        &[machine(true, Some("restored"))],
        &[cluster(true, true)],
    );
    assert!(out.applied().is_empty());
    let s = status_of(&out);
    assert_eq!(s["dataSecretName"], "restored");
    assert_eq!(s["initialization"]["dataSecretCreated"], true);
}

#[test]
fn unsupported_inputs_are_reported_not_half_rendered() {
    let mut spec = init_spec();
    spec["files"] = json!([{"path": "/x", "contentFrom": {"secret": {"name": "s", "key": "k"}}}]);
    let out = run(
        &config(spec, json!({})),
        &[machine(true, None)],
        &[cluster(true, false)],
    );
    assert!(out.applied().is_empty());
    assert_eq!(
        cond(&status_of(&out), "DataSecretAvailable").2,
        "files[0].contentFrom is not supported yet"
    );
    let mut spec = init_spec();
    spec["format"] = json!("ignition");
    let out = run(
        &config(spec, json!({})),
        &[machine(true, None)],
        &[cluster(true, false)],
    );
    assert!(out.applied().is_empty());
    assert!(
        cond(&status_of(&out), "DataSecretAvailable")
            .2
            .contains("ignition")
    );
    assert_eq!(out.requeue_after_ms(), None);
}

#[test]
fn without_owner_machine_or_cluster_it_waits_quietly() {
    let mut orphan = config(init_spec(), json!({}));
    orphan["metadata"]["ownerReferences"] = json!([]);
    assert_eq!(
        run(&orphan, &[machine(true, None)], &[cluster(true, false)]),
        Outcome::new()
    );
    // A Machine in the relation that is not our controller does not count.
    let mut other = machine(true, None);
    other["metadata"]["uid"] = json!("uid-other");
    assert_eq!(
        run(
            &config(init_spec(), json!({})),
            &[other],
            &[cluster(true, false)]
        ),
        Outcome::new()
    );
    let out = run(&config(init_spec(), json!({})), &[machine(true, None)], &[]);
    assert!(out.applied().is_empty() && out.statuses().is_empty());
    assert_eq!(out.requeue_after_ms(), None, "watches bring it back");
}

#[test]
fn output_is_deterministic() {
    let cfg = config(init_spec(), json!({}));
    let a = run(&cfg, &[machine(true, None)], &[cluster(true, false)]);
    let b = run(&cfg, &[machine(true, None)], &[cluster(true, false)]);
    assert_eq!(a, b);
}

#[test]
fn a_deleting_config_is_left_to_garbage_collection() {
    let mut cfg = config(init_spec(), json!({}));
    cfg["metadata"]["deletionTimestamp"] = json!(T0);
    assert_eq!(
        run(&cfg, &[machine(true, None)], &[cluster(true, false)]),
        Outcome::new()
    );
}

#[test]
fn init_waits_for_the_cluster_certificates_and_writes_them_as_files() {
    let cfg = config(init_spec(), json!({}));
    let snap = snapshot_with(
        &cfg,
        &[machine(true, None)],
        &[cluster(true, false)],
        false,
        Connection::Connected,
    );
    let host = FakeHost::new();
    let out = host.reconcile::<KubeadmBootstrap>(&snap).expect("ok");
    assert!(out.applied().is_empty(), "no data without certificates");
    assert_eq!(
        host.keys_generated(),
        0,
        "CABPK here reads certificates, never generates them"
    );
    let s = status_of(&out);
    let (st, reason, msg) = cond(&s, kc::CERTIFICATES_AVAILABLE);
    assert_eq!((st.as_str(), reason.as_str()), ("False", "NotAvailable"));
    assert!(msg.contains("c1-ca, c1-etcd, c1-proxy, c1-sa"), "{msg}");
    assert_eq!(
        cond(&s, kc::DATA_SECRET_AVAILABLE).2,
        "Waiting for the cluster certificates"
    );
    assert_eq!(cond(&s, kc::READY).0, "False");

    let out = run(&cfg, &[machine(true, None)], &[cluster(true, false)]);
    let s = status_of(&out);
    assert_eq!(cond(&s, kc::CERTIFICATES_AVAILABLE).1, "Available");
    assert_eq!(cond(&s, kc::READY).0, "True");
    let (_, text) = the_secret(&out);
    let files = body(&text)["write_files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let file = |p: &str| files.iter().find(|f| f["path"] == p).cloned();
    for (suffix, crt, key) in CERTIFICATES {
        assert_eq!(
            file(crt).expect("crt file")["content"],
            format!("{suffix}-crt")
        );
        let k = file(key).expect("key file");
        assert_eq!(k["content"], format!("{suffix}-key"));
        assert_eq!(k["permissions"], "0600");
    }
    assert!(out.workload_applied().is_empty(), "no token for an init");
}

#[test]
fn a_join_creates_a_bootstrap_token_in_the_workload_cluster_once() {
    let cfg = config(
        json!({"joinConfiguration": {"nodeRegistration": {"name": "n"}}}),
        json!({}),
    );
    let host = FakeHost::new();
    let snap = snapshot_with(
        &cfg,
        &[machine(false, None)],
        &[cluster(true, true)],
        true,
        Connection::Connected,
    );
    let out = host.reconcile::<KubeadmBootstrap>(&snap).expect("ok");
    assert_eq!(host.keys_generated(), 1, "one key seeds the token");
    assert_eq!(out.workload_applied().len(), 1);
    let tok: Value = serde_json::from_str(&out.workload_applied()[0]).expect("json");
    assert_eq!(tok["type"], "bootstrap.kubernetes.io/token");
    assert_eq!(tok["metadata"]["namespace"], "kube-system");
    let d = |k: &str| {
        String::from_utf8(B64.decode(tok["data"][k].as_str().expect(k)).expect("b64"))
            .expect("utf8")
    };
    let (id, secret) = (d("token-id"), d("token-secret"));
    assert_eq!(tok["metadata"]["name"], format!("bootstrap-token-{id}"));
    assert_eq!((id.len(), secret.len()), (6, 16));
    assert!(
        id.chars()
            .chain(secret.chars())
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_eq!(d("expiration"), "2026-01-01T00:15:00Z");
    assert_eq!(d("usage-bootstrap-authentication"), "true");
    assert_eq!(
        d("auth-extra-groups"),
        "system:bootstrappers:kubeadm:default-node-token"
    );
    let token = format!("{id}.{secret}");
    // CABPK keeps the token in the config's spec.
    let patch: Value = out
        .applied()
        .iter()
        .map(|a| serde_json::from_str::<Value>(a).expect("json"))
        .find(|v| v["kind"] == "KubeadmConfig")
        .expect("config patch");
    assert_eq!(
        patch["spec"]["joinConfiguration"]["discovery"]["bootstrapToken"]["token"],
        token
    );
    assert_eq!(
        patch["spec"]["joinConfiguration"]["nodeRegistration"]["name"],
        "n"
    );
    let (_, text) = the_secret(&out);
    let docs = kubeadm_docs(&body(&text), JOIN_CONFIG_PATH);
    assert_eq!(docs[0]["discovery"]["bootstrapToken"]["token"], token);
    // A worker gets the CA certificate only.
    let files = body(&text)["write_files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "/etc/kubernetes/pki/ca.crt")
    );
    assert!(
        !files
            .iter()
            .any(|f| f["path"] == "/etc/kubernetes/pki/ca.key")
    );

    // Again (the cache not showing the writes yet): the same token, no new key.
    let again = host.reconcile::<KubeadmBootstrap>(&snap).expect("ok");
    assert_eq!(host.keys_generated(), 1);
    assert_eq!(again.workload_applied(), out.workload_applied());
    // Another config gets another token.
    let mut other = cfg.clone();
    other["metadata"]["uid"] = json!("uid-kc-2");
    let snap2 = snapshot_with(
        &other,
        &[machine(false, None)],
        &[cluster(true, true)],
        true,
        Connection::Connected,
    );
    let third = host.reconcile::<KubeadmBootstrap>(&snap2).expect("ok");
    assert_eq!(host.keys_generated(), 2);
    assert_ne!(third.workload_applied(), out.workload_applied());
}

#[test]
fn a_join_waits_for_the_workload_connection_and_a_user_token_needs_none() {
    let cfg = config(json!({"joinConfiguration": {}}), json!({}));
    let host = FakeHost::new();
    let snap = snapshot_with(
        &cfg,
        &[machine(false, None)],
        &[cluster(true, true)],
        true,
        Connection::Disconnected,
    );
    let out = host.reconcile::<KubeadmBootstrap>(&snap).expect("ok");
    assert!(out.applied().is_empty() && out.workload_applied().is_empty());
    assert_eq!(host.keys_generated(), 0);
    let s = status_of(&out);
    assert!(
        cond(&s, kc::DATA_SECRET_AVAILABLE)
            .2
            .contains("workload cluster connection")
    );

    let cfg = config(
        json!({"joinConfiguration": {"discovery": {"bootstrapToken": {"token": "abcdef.0123456789abcdef"}}}}),
        json!({}),
    );
    let snap = snapshot_with(
        &cfg,
        &[machine(false, None)],
        &[cluster(true, true)],
        true,
        Connection::Disconnected,
    );
    let out = host.reconcile::<KubeadmBootstrap>(&snap).expect("ok");
    assert!(
        out.workload_applied().is_empty(),
        "the user's token: no Secret"
    );
    let (_, text) = the_secret(&out);
    let docs = kubeadm_docs(&body(&text), JOIN_CONFIG_PATH);
    assert_eq!(
        docs[0]["discovery"]["bootstrapToken"]["token"],
        "abcdef.0123456789abcdef"
    );
}

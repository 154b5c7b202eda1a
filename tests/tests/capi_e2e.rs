//! Issue 5 end to end: `kubectl apply` a Cluster API cluster, `capstan run` with the built plugins provisions it on the in-memory cloud, the workload API answers kubectl, KCP scales one Machine at a time, deletion removes everything; keys are generated once; the objects keep the CAPI contract.
//!
//! Runs on capstan-apiserver and on the real kube-apiserver (`server_test!`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use capstan_tests::e2e::{
    self, CLUSTER, CapiEnv, DEV_CLUSTER, DEV_MACHINE, DEV_MACHINE_TEMPLATE, KCP, KUBEADM_CONFIG,
    MACHINE, SECRET, condition, is_true, name_of,
};
use capstan_tests::server::TestServer;
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;

const NS: &str = "capi-e2e";
const NAME: &str = "e2e";
/// Generous for a debug build on a busy 2-core machine; a healthy run needs a few seconds.
const STEP: Duration = Duration::from_secs(150);

/// Control-plane Machines as a watch sees them: name -> (phase, being deleted); and, at each
/// first appearance of a Machine, the phases of the others at that moment.
#[derive(Default, Debug)]
struct MachineLog {
    machines: BTreeMap<String, (String, bool)>,
    appearances: Vec<(String, Vec<(String, String)>)>,
    max_not_running: usize,
    events: usize,
}

impl MachineLog {
    fn observe(&mut self, m: &DynamicObject) {
        let name = m.metadata.name.clone().unwrap_or_default();
        let phase = m.data["status"]["phase"].as_str().unwrap_or("").to_string();
        let deleting = m.metadata.deletion_timestamp.is_some();
        if !self.machines.contains_key(&name) {
            let others = self
                .machines
                .iter()
                .map(|(n, (p, _))| (n.clone(), p.clone()))
                .collect();
            self.appearances.push((name.clone(), others));
        }
        self.machines.insert(name, (phase, deleting));
        self.events += 1;
        let not_running = self
            .machines
            .values()
            .filter(|(p, d)| p != "Running" && !d)
            .count();
        self.max_not_running = self.max_not_running.max(not_running);
    }
}

/// Watches the cluster's control-plane Machines through kube-rs (every event, no polling gaps).
fn record_machines(client: kube::Client) -> (Arc<Mutex<MachineLog>>, e2e::AbortOnDrop) {
    let log = Arc::new(Mutex::new(MachineLog::default()));
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &MACHINE.api_resource());
    let config = watcher::Config::default().labels(&format!(
        "{}={NAME},cluster.x-k8s.io/control-plane",
        e2e::CLUSTER_NAME_LABEL
    ));
    let task = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut stream = watcher(api, config).boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                        log.lock().observe(&m);
                    }
                    Ok(watcher::Event::Delete(m)) => {
                        let name = m.metadata.name.unwrap_or_default();
                        log.lock().machines.remove(&name);
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("machine watch: {e}"),
                }
            }
        })
    };
    (log, e2e::AbortOnDrop(task))
}

/// Crypto operations per (plugin, operation) from /metrics.
fn crypto_ops(body: &str) -> BTreeMap<(String, String), f64> {
    let label = |line: &str, name: &str| -> String {
        line.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    body.lines()
        .filter(|l| l.starts_with("capstan_crypto_operations_total{"))
        .filter_map(|l| {
            let v = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some(((label(l, "plugin"), label(l, "operation")), v))
        })
        .collect()
}

fn key_generations(ops: &BTreeMap<(String, String), f64>, plugin: &str) -> f64 {
    ops.iter()
        .filter(|((p, op), _)| p == plugin && op.starts_with("generate_key"))
        .map(|(_, v)| v)
        .sum()
}

async fn provisions_scales_and_deletes_a_cluster(server: &TestServer) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut env = CapiEnv::start(server, NS).await?;
    eprintln!("[{:?}] manager serving ({:?})", started.elapsed(), env.kind);
    let (machines, watch_task) = record_machines(env.client.clone());

    let applied = env
        .kubectl
        .apply(&e2e::example_cluster_manifest(NS, NAME)?)
        .await?;
    for line in [
        "cluster.cluster.x-k8s.io/e2e created",
        "kubeadmcontrolplane.controlplane.cluster.x-k8s.io/e2e-cp created",
        "devcluster.infrastructure.cluster.x-k8s.io/e2e created",
    ] {
        ensure!(applied.contains(line), "kubectl apply printed {applied}");
    }

    // 1. The Cluster becomes Available and Provisioned.
    let cluster = env
        .wait_until(
            "Cluster Available=True and phase Provisioned",
            STEP,
            || async {
                let c = env.get(CLUSTER, NAME).await?.context("no Cluster")?;
                if c["status"]["phase"] == "Provisioned" && is_true(&c, "Available") {
                    Ok(Ok(c))
                } else {
                    Ok(Err(e2e::summarize(&c)))
                }
            },
        )
        .await?;
    eprintln!("[{:?}] cluster available", started.elapsed());
    for t in [
        "InfrastructureReady",
        "ControlPlaneInitialized",
        "ControlPlaneAvailable",
        "RemoteConnectionProbe",
    ] {
        ensure!(
            is_true(&cluster, t),
            "{t} not True: {}",
            e2e::summarize(&cluster)
        );
    }
    ensure!(cluster["status"]["initialization"]["infrastructureProvisioned"] == true);
    ensure!(cluster["status"]["initialization"]["controlPlaneInitialized"] == true);
    let endpoint = &cluster["spec"]["controlPlaneEndpoint"];
    ensure!(
        endpoint["host"] == "127.0.0.1" && endpoint["port"].as_u64().is_some_and(|p| p > 0),
        "controlPlaneEndpoint {endpoint}"
    );

    // 2. One control-plane Machine, Running, with a nodeRef.
    let machine = env
        .wait_until(
            "the control-plane Machine Running with a nodeRef",
            STEP,
            || async {
                let ms = env
                    .list(MACHINE, &format!("{}={NAME}", e2e::CLUSTER_NAME_LABEL))
                    .await?;
                match ms.as_slice() {
                    [m] if m["status"]["phase"] == "Running"
                        && m["status"]["nodeRef"]["name"].is_string() =>
                    {
                        Ok(Ok(m.clone()))
                    }
                    _ => Ok(Err(ms
                        .iter()
                        .map(e2e::summarize)
                        .collect::<Vec<_>>()
                        .join("; "))),
                }
            },
        )
        .await?;
    let node_name = machine["status"]["nodeRef"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(
        machine["spec"]["providerID"]
            == format!(
                "in-memory://{}",
                machine["spec"]["infrastructureRef"]["name"]
                    .as_str()
                    .unwrap_or("")
            ),
        "providerID {}",
        machine["spec"]["providerID"]
    );

    // 3. The kubeconfig Secret authenticates against the simulated workload API.
    let workload = env.workload_kubectl(NAME).await?;
    let nodes = workload.get_json(None, &["nodes"]).await?;
    let items = nodes["items"].as_array().cloned().unwrap_or_default();
    ensure!(items.len() == 1, "workload nodes: {nodes}");
    ensure!(
        name_of(&items[0]) == node_name,
        "node {} vs nodeRef {node_name}",
        name_of(&items[0])
    );
    ensure!(
        items[0]["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")),
        "node not Ready: {}",
        items[0]
    );
    // kubectl evaluates the Ready condition itself too. (Not the default table: the
    // in-memory API server serves Nodes as a generic Name/Age table, without kubectl's
    // STATUS column; see docs/capi.md.)
    let ready = workload
        .run(&[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ])
        .await?;
    ensure!(
        ready.lines().any(|l| l == format!("{node_name}=True")),
        "kubectl get nodes (Ready): {ready}"
    );
    // The Machine controller's annotations reached the Node.
    ensure!(
        items[0]["metadata"]["annotations"]["cluster.x-k8s.io/machine"] == name_of(&machine),
        "node annotations {}",
        items[0]["metadata"]["annotations"]
    );
    eprintln!("[{:?}] workload API answers kubectl", started.elapsed());

    // 4. Expensive work once. kubeadm-control-plane generates exactly five RSA keys per
    //    cluster: the cluster CA, the etcd CA, the front-proxy CA, the service-account key
    //    pair (certs.rs `generate`), and the admin client key of `<cluster>-kubeconfig`
    //    (memoised per Cluster UID and CA). kubeadm-bootstrap generates one ECDSA key per
    //    *joining* KubeadmConfig (the bootstrap token's entropy, memoised per config UID); the
    //    first Machine runs `kubeadm init`, so none yet. No other plugin generates keys.
    let ops = crypto_ops(&env.manager.metrics().await?);
    ensure!(
        key_generations(&ops, "kubeadm-control-plane") == 5.0,
        "kubeadm-control-plane key generations: {:?}\nmanager log:\n{}",
        ops.iter().filter(|(_, v)| **v > 0.0).collect::<Vec<_>>(),
        env.manager
            .log_grep(&["kubeadm-control-plane", "certificates", "kubeconfig"])
    );
    ensure!(
        ops.get(&("kubeadm-control-plane".into(), "generate_key_rsa".into())) == Some(&5.0),
        "{ops:?}"
    );
    ensure!(key_generations(&ops, "kubeadm-bootstrap") == 0.0, "{ops:?}");
    let all_keys: f64 = ops
        .iter()
        .filter(|((_, op), _)| op.starts_with("generate_key"))
        .map(|(_, v)| v)
        .sum();
    ensure!(all_keys == 5.0, "key generations by any plugin: {ops:?}");

    // 5. Scale the KubeadmControlPlane to 3: Machines are added one at a time.
    env.kubectl.scale(NS, KCP, &format!("{NAME}-cp"), 3).await?;
    let kcp = env
        .wait_until(
            "3 control-plane Machines Running and KCP readyReplicas 3",
            STEP,
            || async {
                let kcp = env
                    .get(KCP, &format!("{NAME}-cp"))
                    .await?
                    .context("no KCP")?;
                let ms = env
                    .list(MACHINE, &format!("{}={NAME}", e2e::CLUSTER_NAME_LABEL))
                    .await?;
                let running = ms
                    .iter()
                    .filter(|m| {
                        m["status"]["phase"] == "Running" && m["status"]["nodeRef"].is_object()
                    })
                    .count();
                if running == 3
                    && kcp["status"]["readyReplicas"] == 3
                    && kcp["status"]["replicas"] == 3
                {
                    Ok(Ok(kcp))
                } else {
                    Ok(Err(format!(
                        "{} | {}",
                        e2e::summarize(&kcp),
                        ms.iter().map(e2e::summarize).collect::<Vec<_>>().join("; ")
                    )))
                }
            },
        )
        .await?;
    eprintln!("[{:?}] scaled to 3", started.elapsed());
    ensure!(kcp["status"]["upToDateReplicas"] == 3, "{}", kcp["status"]);
    {
        let log = machines.lock();
        ensure!(log.appearances.len() == 3, "machines seen: {log:?}");
        for (i, (name, others)) in log.appearances.iter().enumerate() {
            // When each Machine appeared, all earlier ones were already Running: KCP adds
            // control-plane Machines one at a time, behind its preflight checks.
            ensure!(
                others.len() == i && others.iter().all(|(_, p)| p == "Running"),
                "Machine {name} was created while others were {others:?} (log {log:?})"
            );
        }
        ensure!(
            log.max_not_running <= 1,
            "{} control-plane Machines were not Running at once: {log:?}",
            log.max_not_running
        );
    }
    let workload_nodes = workload.get_json(None, &["nodes"]).await?;
    ensure!(
        workload_nodes["items"]
            .as_array()
            .is_some_and(|a| a.len() == 3),
        "workload nodes after scale up: {workload_nodes}"
    );

    // Two joining KubeadmConfigs: two bootstrap-token keys; kubeadm-control-plane none more.
    let ops = crypto_ops(&env.manager.metrics().await?);
    ensure!(
        key_generations(&ops, "kubeadm-control-plane") == 5.0,
        "{ops:?}"
    );
    ensure!(key_generations(&ops, "kubeadm-bootstrap") == 2.0, "{ops:?}");

    // KCP keeps reconciling (a touched KCP, a resync) without generating anything again.
    let reconciles = |body: &str| {
        e2e::metric_sum(
            body,
            "controller_runtime_reconcile_total",
            &[("controller", "kubeadm-control-plane")],
        )
    };
    let before = reconciles(&env.manager.metrics().await?);
    env.kubectl
        .patch(
            Some(NS),
            &KCP.resource(),
            &format!("{NAME}-cp"),
            None,
            &json!({"metadata": {"annotations": {"e2e.capstan.dev/touched": "1"}}}),
        )
        .await?;
    env.wait_until("another kubeadm-control-plane reconcile", STEP, || async {
        let now = reconciles(&env.manager.metrics().await?);
        Ok(if now > before {
            Ok(())
        } else {
            Err(format!("{now} reconciles"))
        })
    })
    .await?;
    let after = crypto_ops(&env.manager.metrics().await?);
    ensure!(
        after == ops,
        "crypto operations changed on a steady reconcile: {ops:?} -> {after:?}"
    );

    // 6. The contract over the final state.
    let objects = env.cluster_objects(NAME).await?;
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for k in [
        "Cluster",
        "DevCluster",
        "KubeadmControlPlane",
        "Machine",
        "KubeadmConfig",
        "DevMachine",
        "Secret",
    ] {
        ensure!(
            kinds.contains(k),
            "no {k} among the cluster's objects: {kinds:?}"
        );
    }
    ensure!(objects.iter().filter(|o| o["kind"] == "Machine").count() == 3);
    let violations = e2e::capi_contract_violations(NAME, &objects);
    ensure!(
        violations.is_empty(),
        "CAPI contract violations:\n{}",
        violations.join("\n")
    );
    // The infrastructure template is owned (not controlled) by the Cluster, as KCP does.
    let template = env
        .get(DEV_MACHINE_TEMPLATE, &format!("{NAME}-cp"))
        .await?
        .context("template")?;
    ensure!(
        template["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["kind"] == "Cluster"
                && r["uid"] == cluster["metadata"]["uid"]
                && r["controller"] != true)),
        "DevMachineTemplate owner references: {}",
        template["metadata"]["ownerReferences"]
    );
    for s in ["ca", "etcd", "proxy", "sa", "kubeconfig"] {
        ensure!(
            env.get(SECRET, &format!("{NAME}-{s}")).await?.is_some(),
            "no Secret {NAME}-{s}"
        );
    }
    let kcp = env.get(KCP, &format!("{NAME}-cp")).await?.context("KCP")?;
    for t in [
        "Available",
        "Initialized",
        "CertificatesAvailable",
        "EtcdClusterHealthy",
        "ControlPlaneComponentsHealthy",
        "MachinesReady",
    ] {
        ensure!(is_true(&kcp, t), "KCP {t}: {:?}", condition(&kcp, t));
    }
    eprintln!(
        "[{:?}] contract checked over {} objects",
        started.elapsed(),
        objects.len()
    );

    // 7. Deleting the Cluster removes every object and stops the workload endpoint.
    env.kubectl.delete(NS, CLUSTER, NAME).await?;
    env.wait_until("every object of the cluster gone", STEP, || async {
        let mut left: Vec<String> = env
            .cluster_objects(NAME)
            .await?
            .iter()
            .map(e2e::summarize)
            .collect();
        for kind in [
            CLUSTER,
            DEV_CLUSTER,
            KCP,
            MACHINE,
            KUBEADM_CONFIG,
            DEV_MACHINE,
            DEV_MACHINE_TEMPLATE,
        ] {
            left.extend(
                env.list(kind, "")
                    .await?
                    .iter()
                    .filter(|o| kind != DEV_MACHINE_TEMPLATE || name_of(o) == format!("{NAME}-cp"))
                    .map(e2e::summarize),
            );
        }
        left.extend(
            env.list(SECRET, "")
                .await?
                .iter()
                .filter(|s| s["type"] == "cluster.x-k8s.io/secret" || name_of(s).starts_with(NAME))
                .map(e2e::summarize),
        );
        left.sort();
        left.dedup();
        Ok(if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        })
    })
    .await?;
    env.wait_until(
        "the workload endpoint to stop answering",
        Duration::from_secs(30),
        || async {
            let (ok, out, err) = workload
                .output(&["get", "nodes", "--request-timeout=3s"], None)
                .await?;
            // Not answering: nothing listens (an error of authentication or of the
            // server would mean it still answers).
            Ok(if ok {
                Err(format!("still answers: {out}"))
            } else if err.contains("connect") {
                Ok(err)
            } else {
                Err(format!("fails, but not for want of a server: {err}"))
            })
        },
    )
    .await?;
    eprintln!("[{:?}] cluster deleted", started.elapsed());
    ensure!(
        env.manager.running(),
        "the manager died: {}",
        env.manager.log_tail(40)
    );
    drop(watch_task);
    Ok(())
}

capstan_tests::server_test!(provisions_scales_and_deletes_a_cluster, multi_thread);

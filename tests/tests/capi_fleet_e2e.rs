//! Issue 6 end to end: a MachineDeployment of workers on a provisioned cluster reaches Running Machines with nodeRefs, scales to 5 and back to 2, rolls a template change within maxSurge=1/maxUnavailable=0, and a MachineHealthCheck replaces a worker whose Node turns NotReady; the objects keep the CAPI contract.
//!
//! `capstan run` with every CAPI plugin against capstan-apiserver and the real kube-apiserver
//! (`server_test!`); every action through kubectl, the workload Node through the cluster's own
//! kubeconfig.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use capstan_tests::e2e::{
    self, CLUSTER, CapiEnv, MACHINE, MACHINE_DEPLOYMENT, MACHINE_HEALTH_CHECK, MACHINE_SET,
    is_true, name_of,
};
use capstan_tests::server::TestServer;
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::{Value, json};

const NS: &str = "capi-fleet";
const NAME: &str = "fleet";
const MD: &str = "fleet-md";
/// Generous for a debug build on a busy 2-core machine; a healthy run needs seconds.
const STEP: Duration = Duration::from_secs(150);

/// The cluster of issue 5 plus worker templates (two DevMachineTemplates: the second is the
/// rollout's target), a MachineDeployment of 3 with maxSurge 1 / maxUnavailable 0 and a
/// MachineHealthCheck of its Machines (Node Ready=False for 1 s is unhealthy).
fn manifest() -> anyhow::Result<String> {
    let mut m = e2e::example_cluster_manifest(NS, NAME)?;
    let template = |name: &str| {
        format!(
            r#"---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata:
  name: {name}
  namespace: {NS}
spec:
  template:
    spec:
      backend:
        inMemory:
          vm: {{provisioning: {{startupDuration: 300ms, startupJitter: "0.2"}}}}
          node: {{provisioning: {{startupDuration: 200ms, startupJitter: "0.2"}}}}
"#
        )
    };
    m.push_str(&template(&format!("{NAME}-workers")));
    m.push_str(&template(&format!("{NAME}-workers-v2")));
    m.push_str(&format!(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: {MD}
  namespace: {NS}
spec:
  clusterName: {NAME}
  replicas: 3
  selector:
    matchLabels:
      cluster.x-k8s.io/cluster-name: {NAME}
      cluster.x-k8s.io/deployment-name: {MD}
  rollout:
    strategy:
      type: RollingUpdate
      rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels:
        cluster.x-k8s.io/cluster-name: {NAME}
        cluster.x-k8s.io/deployment-name: {MD}
    spec:
      clusterName: {NAME}
      version: v1.34.0
      bootstrap:
        configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: {NAME}-workers}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: {NAME}-workers}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineHealthCheck
metadata:
  name: {MD}-health
  namespace: {NS}
spec:
  clusterName: {NAME}
  selector:
    matchLabels:
      cluster.x-k8s.io/deployment-name: {MD}
  checks:
    nodeStartupTimeoutSeconds: 600
    unhealthyNodeConditions:
    - {{type: Ready, status: "False", timeoutSeconds: 1}}
"#
    ));
    Ok(m)
}

/// The worker Machines as a watch sees them, and the extremes over a sampling window.
#[derive(Default, Debug)]
struct Fleet {
    /// name -> (available, being deleted)
    machines: BTreeMap<String, (bool, bool)>,
    sampling: bool,
    min_available: Option<usize>,
    max_total: usize,
    max_objects: usize,
    samples: usize,
    /// Every condition (type, status, reason) each Machine ever carried, in order seen
    /// (kept after it is gone): a remediated Machine's verdict changes while it is deleted
    /// (UnhealthyNode, then NodeDeleted once its Node is gone, as Cluster API writes it).
    conditions_seen: BTreeMap<String, Vec<Value>>,
    /// While sampling: one line per event (the failure message of a bound).
    timeline: Vec<String>,
    started: Option<Instant>,
}

impl Fleet {
    fn observe(&mut self, m: &DynamicObject) {
        let name = m.metadata.name.clone().unwrap_or_default();
        let available = m.data["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        });
        let deleting = m.metadata.deletion_timestamp.is_some();
        let seen = self.conditions_seen.entry(name.clone()).or_default();
        for c in m.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let same = |o: &Value| {
                o["type"] == c["type"] && o["status"] == c["status"] && o["reason"] == c["reason"]
            };
            if !seen.iter().any(same) {
                seen.push(c.clone());
            }
        }
        self.machines.insert(name.clone(), (available, deleting));
        self.sample();
        if self.sampling {
            let at = self.started.map(|t| t.elapsed()).unwrap_or_default();
            let line = format!(
                "{at:?} {name} available={available} deleting={deleting} -> {:?}",
                self.machines
            );
            self.timeline.push(line);
        }
    }

    fn sample(&mut self) {
        if !self.sampling {
            return;
        }
        // Available: Available=True and not being deleted (stricter than CAPI's count).
        let available = self.machines.values().filter(|(a, d)| *a && !*d).count();
        self.min_available = Some(self.min_available.map_or(available, |m| m.min(available)));
        // Machines being deleted are past the MachineSets' replicas (CAPI's surge counts
        // `spec.replicas`): a Machine draining while its replacement boots is a surge of one.
        let live = self.machines.values().filter(|(_, d)| !*d).count();
        self.max_total = self.max_total.max(live);
        self.max_objects = self.max_objects.max(self.machines.len());
        self.samples += 1;
    }

    fn start_sampling(&mut self) {
        self.sampling = true;
        self.min_available = None;
        self.max_total = 0;
        self.max_objects = 0;
        self.samples = 0;
        self.timeline.clear();
        self.started = Some(Instant::now());
        self.sample();
    }
}

fn watch_workers(client: kube::Client) -> (Arc<Mutex<Fleet>>, e2e::AbortOnDrop) {
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let api: Api<DynamicObject> = Api::namespaced_with(client, NS, &MACHINE.api_resource());
    let config =
        watcher::Config::default().labels(&format!("cluster.x-k8s.io/deployment-name={MD}"));
    let task = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            let mut stream = watcher(api, config).boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                        fleet.lock().observe(&m);
                    }
                    Ok(watcher::Event::Delete(m)) => {
                        let mut f = fleet.lock();
                        let name = m.metadata.name.unwrap_or_default();
                        f.machines.remove(&name);
                        f.sample();
                        if f.sampling {
                            let line = format!("{name} gone -> {:?}", f.machines);
                            f.timeline.push(line);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("worker watch: {e}"),
                }
            }
        })
    };
    (fleet, e2e::AbortOnDrop(task))
}

/// Wait until the MachineDeployment has `replicas` worker Machines, all Running with a nodeRef
/// and Available, all from `template`, and its status agrees. Returns the Machines.
async fn settled(env: &CapiEnv, replicas: usize, template: &str) -> anyhow::Result<Vec<Value>> {
    env.wait_until(
        &format!("{replicas} workers Running and available from {template}"),
        STEP,
        || async {
            let md = env.get(MACHINE_DEPLOYMENT, MD).await?.context("no MD")?;
            let ms = env
                .list(MACHINE, &format!("cluster.x-k8s.io/deployment-name={MD}"))
                .await?;
            // A Machine's infrastructure template is its MachineSet's.
            let sets: BTreeMap<String, Value> = env
                .list(
                    MACHINE_SET,
                    &format!("cluster.x-k8s.io/deployment-name={MD}"),
                )
                .await?
                .into_iter()
                .map(|s| (name_of(&s).to_string(), s))
                .collect();
            let from_template = |m: &Value| {
                e2e::label(m, "cluster.x-k8s.io/set-name")
                    .and_then(|set| sets.get(set))
                    .is_some_and(|s| {
                        s["spec"]["template"]["spec"]["infrastructureRef"]["name"] == template
                    })
            };
            let good = ms
                .iter()
                .filter(|m| {
                    m["status"]["phase"] == "Running"
                        && m["status"]["nodeRef"]["name"].is_string()
                        && is_true(m, "Available")
                        && m["metadata"]["deletionTimestamp"].is_null()
                        && from_template(m)
                })
                .count();
            let s = &md["status"];
            if ms.len() == replicas
                && good == replicas
                && s["availableReplicas"] == json!(replicas)
                && s["upToDateReplicas"] == json!(replicas)
                && s["replicas"] == json!(replicas)
            {
                Ok(Ok(ms))
            } else {
                Ok(Err(format!(
                    "MD status {s} | {}",
                    ms.iter().map(e2e::summarize).collect::<Vec<_>>().join("; ")
                )))
            }
        },
    )
    .await
}

async fn workers_scale_roll_and_heal(server: &TestServer) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut env = CapiEnv::start(server, NS).await?;
    let (fleet, watch_task) = watch_workers(env.client.clone());
    env.kubectl.apply(&manifest()?).await?;

    // 1. Three workers Running with nodeRefs; the Cluster's WorkersAvailable is True.
    settled(&env, 3, &format!("{NAME}-workers")).await?;
    env.wait_until(
        "Cluster Available with WorkersAvailable=True",
        STEP,
        || async {
            let c = env.get(CLUSTER, NAME).await?.context("no Cluster")?;
            Ok(
                if is_true(&c, "WorkersAvailable") && is_true(&c, "Available") {
                    Ok(())
                } else {
                    Err(e2e::summarize(&c))
                },
            )
        },
    )
    .await?;
    let workload = env.workload_kubectl(NAME).await?;
    let nodes = workload.get_json(None, &["nodes"]).await?;
    ensure!(
        nodes["items"].as_array().is_some_and(|n| n.len() == 4),
        "1 control-plane + 3 worker Nodes expected: {nodes}"
    );
    eprintln!("[{:?}] 3 workers", started.elapsed());

    // 2. Scale to 5 and back to 2.
    env.kubectl.scale(NS, MACHINE_DEPLOYMENT, MD, 5).await?;
    settled(&env, 5, &format!("{NAME}-workers")).await?;
    env.kubectl.scale(NS, MACHINE_DEPLOYMENT, MD, 2).await?;
    let before_rollout = settled(&env, 2, &format!("{NAME}-workers")).await?;
    ensure!(
        env.list(
            MACHINE_SET,
            &format!("cluster.x-k8s.io/deployment-name={MD}")
        )
        .await?
        .len()
            == 1,
        "one MachineSet before the rollout"
    );
    eprintln!("[{:?}] scaled 5 -> 2", started.elapsed());

    // 3. A template change rolls every Machine, never below 2 available nor above 3.
    fleet.lock().start_sampling();
    env.kubectl
        .patch(
            Some(NS),
            &MACHINE_DEPLOYMENT.resource(),
            MD,
            None,
            &json!({"spec": {"template": {"spec": {"infrastructureRef": {"name": format!("{NAME}-workers-v2")}}}}}),
        )
        .await?;
    let after_rollout = settled(&env, 2, &format!("{NAME}-workers-v2")).await?;
    {
        let mut f = fleet.lock();
        f.sampling = false;
        ensure!(f.samples > 4, "too few samples of the rollout: {f:?}");
        ensure!(
            f.min_available.is_some_and(|m| m >= 2),
            "fewer than 2 workers available during the rollout (maxUnavailable 0): min {:?}; timeline:\n{}",
            f.min_available,
            f.timeline.join("\n")
        );
        ensure!(
            f.max_total <= 3,
            "more than 3 workers not being deleted during the rollout (maxSurge 1): max {}; timeline:\n{}",
            f.max_total,
            f.timeline.join("\n")
        );
        eprintln!(
            "rollout: {} samples, min available {:?}, max live {}, max objects {}",
            f.samples, f.min_available, f.max_total, f.max_objects
        );
    }
    let old: Vec<&str> = before_rollout.iter().map(name_of).collect();
    ensure!(
        after_rollout.iter().all(|m| !old.contains(&name_of(m))),
        "Machines {old:?} survived the rollout"
    );
    let sets = env
        .list(
            MACHINE_SET,
            &format!("cluster.x-k8s.io/deployment-name={MD}"),
        )
        .await?;
    let md = env.get(MACHINE_DEPLOYMENT, MD).await?.context("MD")?;
    ensure!(
        md["metadata"]["annotations"]["machinedeployment.clusters.x-k8s.io/revision"] == "2",
        "MD revision: {}",
        md["metadata"]["annotations"]
    );
    ensure!(
        sets.iter()
            .filter(|s| s["spec"]["replicas"].as_i64().unwrap_or(0) > 0)
            .count()
            == 1,
        "one MachineSet with replicas after the rollout: {}",
        sets.iter()
            .map(e2e::summarize)
            .collect::<Vec<_>>()
            .join("; ")
    );
    eprintln!("[{:?}] rolled out", started.elapsed());

    // 4. A worker Node NotReady (set through the workload API) is remediated and replaced.
    let victim = after_rollout[0].clone();
    let victim_name = name_of(&victim).to_string();
    let node_name = victim["status"]["nodeRef"]["name"]
        .as_str()
        .context("nodeRef")?
        .to_string();
    let node = workload.get_json(None, &["node", &node_name]).await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let conditions: Vec<Value> = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if c["type"] == "Ready" {
                c["status"] = json!("False");
                c["reason"] = json!("KubeletNotReady");
                c["message"] = json!("e2e: the kubelet stopped posting status");
                c["lastTransitionTime"] = json!(now);
                c["lastHeartbeatTime"] = json!(now);
            }
            c
        })
        .collect();
    workload
        .patch(
            None,
            "node",
            &node_name,
            Some("status"),
            &json!({"status": {"conditions": conditions}}),
        )
        .await?;
    env.wait_until(
        &format!("Machine {victim_name} marked unhealthy and remediated"),
        STEP,
        || async {
            match env.get(MACHINE, &victim_name).await? {
                None => Ok(Ok(())),
                Some(m) if m["metadata"]["deletionTimestamp"].is_string() => Ok(Ok(())),
                Some(m) => Ok(Err(e2e::summarize(&m))),
            }
        },
    )
    .await?;
    let healed = settled(&env, 2, &format!("{NAME}-workers-v2")).await?;
    // The watch saw why: the MachineHealthCheck's verdict and the owner remediation request.
    let seen = fleet
        .lock()
        .conditions_seen
        .get(&victim_name)
        .cloned()
        .unwrap_or_default();
    let had = |t: &str, status: &str, reason: Option<&str>| {
        seen.iter().any(|c| {
            c["type"] == t && c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
        })
    };
    ensure!(
        had("HealthCheckSucceeded", "False", Some("UnhealthyNode")),
        "{victim_name} never got HealthCheckSucceeded=False UnhealthyNode: {}",
        Value::from(seen.clone())
    );
    ensure!(
        had("OwnerRemediated", "False", None),
        "{victim_name} never got OwnerRemediated: {}",
        Value::from(seen.clone())
    );
    ensure!(
        healed.iter().all(|m| name_of(m) != victim_name),
        "the unhealthy Machine is still there"
    );
    let mhc = env
        .get(MACHINE_HEALTH_CHECK, &format!("{MD}-health"))
        .await?
        .context("MHC")?;
    ensure!(
        mhc["status"]["expectedMachines"] == 2 && mhc["status"]["currentHealthy"] == 2,
        "MHC status {}",
        mhc["status"]
    );
    eprintln!("[{:?}] remediated", started.elapsed());

    // 5. The contract over the final state.
    let objects = env.cluster_objects(NAME).await?;
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for k in [
        "MachineDeployment",
        "MachineSet",
        "MachineHealthCheck",
        "Machine",
    ] {
        ensure!(
            kinds.contains(k),
            "no {k} labelled with the cluster: {kinds:?}"
        );
    }
    let violations = e2e::capi_contract_violations(NAME, &objects);
    ensure!(
        violations.is_empty(),
        "CAPI contract violations:\n{}",
        violations.join("\n")
    );

    // 6. Deleting the Cluster removes the fleet too.
    env.kubectl.delete(NS, CLUSTER, NAME).await?;
    env.wait_until("every object of the cluster gone", STEP, || async {
        let mut left: Vec<String> = env
            .cluster_objects(NAME)
            .await?
            .iter()
            .map(e2e::summarize)
            .collect();
        for kind in [
            MACHINE_DEPLOYMENT,
            MACHINE_SET,
            MACHINE,
            MACHINE_HEALTH_CHECK,
        ] {
            left.extend(env.list(kind, "").await?.iter().map(e2e::summarize));
        }
        left.sort();
        left.dedup();
        Ok(if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        })
    })
    .await?;
    eprintln!("[{:?}] deleted", started.elapsed());
    ensure!(
        env.manager.running(),
        "the manager died: {}",
        env.manager.log_tail(40)
    );
    drop(watch_task);
    Ok(())
}

capstan_tests::server_test!(workers_scale_roll_and_heal, multi_thread);

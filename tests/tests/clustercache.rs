//! The in-memory cloud and the cluster cache: workload API servers under a cluster CA, connections built from kubeconfig Secrets, events, health, teardown, memory per cluster.

use anyhow::Context as _;
use base64::Engine;
use capstan::cache::{Cache, CachedObject, Gvk, KindCache, ObjectKey};
use capstan::cloud::{Cloud, CloudMetrics, InMemoryCloud, ObjectKey as CloudKey};
use capstan::clustercache::{
    ClusterCache, ClusterCacheMetrics, ClusterCacheOptions, ConnectionState,
};
use capstan::metrics::Metrics;
use capstan_tests::host::eventually;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::ApiResource;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The tests of this file run one at a time: the memory test measures the process's RSS.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster CA as the control-plane plugin makes it, and admin kubeconfigs signed by it.
struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).unwrap();
        let key_pem = key.serialize_pem();
        Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(p, key),
        }
    }

    /// A kubeconfig in Cluster API's shape (`<cluster>-admin@<cluster>`).
    fn kubeconfig(&self, cluster: &str, url: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "kubernetes-admin");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: {cluster}-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {cluster}-admin@{cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\ncurrent-context: {cluster}-admin@{cluster}\n",
            b(&self.cert_pem),
            b(&cert.pem()),
            b(&key.serialize_pem())
        )
    }
}

async fn client_from(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn node(name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"providerID": format!("in-memory://{name}")},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    })
    .to_string()
}

fn node_key(name: &str) -> CloudKey {
    CloudKey {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: String::new(),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_cloud_serves_each_cluster_under_its_ca() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut registry = Registry::default();
    let cloud = Arc::new(InMemoryCloud::new(CloudMetrics::new(&mut registry)));
    // Calls are synchronous and come from blocking threads, as the runtime's imports do.
    let c = Arc::clone(&cloud);
    let ep = tokio::task::spawn_blocking(move || c.reserve_endpoint("ns/c1"))
        .await?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(ep.host, "127.0.0.1");
    assert_eq!(
        cloud
            .reserve_endpoint("ns/c1")
            .map_err(anyhow::Error::msg)?,
        ep,
        "the same endpoint on every call"
    );
    assert!(!cloud.api_server_running("ns/c1"));
    // The store exists before the server serves: the machine writes its Node.
    cloud
        .put_object("ns/c1", &node("m1"))
        .map_err(anyhow::Error::msg)?;
    assert!(
        cloud
            .get_object("ns/c1", &node_key("m1"))
            .map_err(anyhow::Error::msg)?
            .is_some()
    );
    assert!(cloud.put_object("ns/nope", &node("m1")).is_err());
    assert!(cloud.put_object("ns/c1", "not json").is_err());

    let vm = cloud.create_vm("ns/c1", "m1").map_err(anyhow::Error::msg)?;
    assert_eq!(vm.provider_id, "in-memory://m1");
    assert_eq!(
        cloud.create_vm("ns/c1", "m1").map_err(anyhow::Error::msg)?,
        vm
    );
    assert_eq!(cloud.get_vm("ns/c1", "m1"), Some(vm));
    cloud.delete_vm("ns/c1", "m1").map_err(anyhow::Error::msg)?;
    assert_eq!(cloud.get_vm("ns/c1", "m1"), None);
    cloud.delete_vm("ns/c1", "m1").map_err(anyhow::Error::msg)?;

    let ca = Ca::new("kubernetes");
    let c = Arc::clone(&cloud);
    let (cert, key) = (ca.cert_pem.clone(), ca.key_pem.clone());
    tokio::task::spawn_blocking(move || c.start_api_server("ns/c1", &cert, &key))
        .await?
        .map_err(anyhow::Error::msg)?;
    assert!(cloud.api_server_running("ns/c1"));
    let url = format!("https://{}:{}", ep.host, ep.port);
    let client = client_from(&ca.kubeconfig("c1", &url)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names, ["m1"]);

    // A watch sees a put.
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut w = nodes
        .watch(&WatchParams::default().timeout(10), &rv)
        .await?
        .boxed();
    cloud
        .put_object("ns/c1", &node("m2"))
        .map_err(anyhow::Error::msg)?;
    let ev = tokio::time::timeout(Duration::from_secs(5), w.try_next())
        .await
        .context("no watch event")??
        .context("watch ended")?;
    match ev {
        WatchEvent::Added(n) => assert_eq!(n.metadata.name.as_deref(), Some("m2")),
        other => anyhow::bail!("unexpected event {other:?}"),
    }
    cloud
        .delete_object("ns/c1", &node_key("m2"))
        .map_err(anyhow::Error::msg)?;
    cloud
        .delete_object("ns/c1", &node_key("m2"))
        .map_err(anyhow::Error::msg)?;

    // Another cluster's CA does not open this one.
    let other = Ca::new("other");
    let bad = client_from(&other.kubeconfig("c1", &url)).await?;
    assert!(
        Api::<Node>::all(bad)
            .list(&ListParams::default())
            .await
            .is_err()
    );

    let text = capstan::metrics::encode(&registry);
    assert!(text.contains("capstan_cloud_api_servers 1"), "{text}");
    assert!(text.contains("capstan_cloud_vms_created_total 1"), "{text}");

    // Release: the endpoint stops answering and everything is dropped.
    cloud
        .release_endpoint("ns/c1")
        .map_err(anyhow::Error::msg)?;
    cloud
        .release_endpoint("ns/c1")
        .map_err(anyhow::Error::msg)?;
    assert!(!cloud.api_server_running("ns/c1"));
    assert!(cloud.get_object("ns/c1", &node_key("m1")).is_err());
    eventually(Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", ep.port))
            .await
            .is_err()
    })
    .await
    .context("endpoint still answers after release")?;
    let text = capstan::metrics::encode(&registry);
    assert!(text.contains("capstan_cloud_api_servers 0"), "{text}");
    assert!(text.contains("capstan_cloud_endpoints 0"), "{text}");
    Ok(())
}

/// A management API server with the CAPI CRDs, and the host's Secret and Cluster caches fed
/// from it.
struct Management {
    server: capstan_apiserver::Server,
    client: kube::Client,
    cache: Arc<Cache>,
    stop: CancellationToken,
}

async fn management() -> anyhow::Result<Management> {
    let server = capstan_apiserver::Server::builder()
        .plain_http()
        .crds_from_dir(capstan_tests::fixture("capi-crds"))
        .start("127.0.0.1:0")
        .await?;
    let client = capstan_tests::host::test_client(&server).await?;
    let cache = Arc::new(Cache::new());
    let stop = CancellationToken::new();
    for (gvk, plural) in [
        (capstan::clustercache::secret_gvk(), "secrets"),
        (capstan::clustercache::cluster_gvk(), "clusters"),
    ] {
        let kc = cache.kind_or_insert(&gvk, || {
            KindCache::new(gvk.clone(), plural, true, Default::default())
        });
        let ar = ApiResource {
            group: gvk.group.clone(),
            version: gvk.version.clone(),
            api_version: gvk.api_version(),
            kind: gvk.kind.clone(),
            plural: plural.into(),
        };
        tokio::spawn(capstan::cache::run_watcher(
            client.clone(),
            ar,
            kc,
            stop.clone(),
        ));
    }
    Ok(Management {
        server,
        client,
        cache,
        stop,
    })
}

fn dynamic(
    api_version: &str,
    kind: &str,
    plural: &str,
    client: &kube::Client,
) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        },
    )
}

async fn create_cluster(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"paused": false}
    }))?;
    dynamic("cluster.x-k8s.io/v1beta2", "Cluster", "clusters", client)
        .create(&PostParams::default(), &obj)
        .await?;
    Ok(())
}

async fn create_kubeconfig_secret(
    client: &kube::Client,
    cluster: &str,
    kubeconfig: &str,
) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{cluster}-kubeconfig"), "namespace": "default",
            "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "type": "cluster.x-k8s.io/secret",
        "data": {"value": base64::engine::general_purpose::STANDARD.encode(kubeconfig)}
    }))?;
    dynamic("v1", "Secret", "secrets", client)
        .create(&PostParams::default(), &obj)
        .await?;
    Ok(())
}

fn fast_options() -> ClusterCacheOptions {
    ClusterCacheOptions {
        probe_interval: Duration::from_millis(50),
        probe_timeout: Duration::from_millis(500),
        failure_threshold: 3,
        retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(200),
        ..ClusterCacheOptions::default()
    }
}

fn node_gvk() -> Gvk {
    Gvk::new("", "v1", "Node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_cache_connects_follows_events_probes_and_tears_down() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let m = management().await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let cloud = Arc::new(InMemoryCloud::new(CloudMetrics::default()));
    let cc = ClusterCache::new(
        Arc::clone(&m.cache),
        metrics,
        ClusterCacheMetrics::new(&mut registry),
        fast_options(),
    );
    cc.register_kind(&node_gvk());
    let states: Arc<Mutex<Vec<(ObjectKey, ConnectionState)>>> = Arc::default();
    let events: Arc<Mutex<Vec<(ObjectKey, String)>>> = Arc::default();
    {
        let s = Arc::clone(&states);
        cc.on_state(move |c, st| s.lock().push((c.clone(), st)));
        let e = Arc::clone(&events);
        cc.on_event(&node_gvk(), move |c, ev| {
            let o: Option<&Arc<CachedObject>> = ev.new.as_ref().or(ev.old.as_ref());
            if let Some(o) = o {
                e.lock().push((c.clone(), o.key.name.clone()));
            }
        });
    }
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&cc).run(stop.clone()));

    let key = ObjectKey::new("default", "c1");
    let ep = cloud
        .reserve_endpoint("default/c1")
        .map_err(anyhow::Error::msg)?;
    cloud
        .put_object("default/c1", &node("m1"))
        .map_err(anyhow::Error::msg)?;
    let ca = Ca::new("kubernetes");
    let url = format!("https://{}:{}", ep.host, ep.port);
    create_cluster(&m.client, "c1").await?;
    // No Secret yet: no connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cc.state(&key), ConnectionState::Disconnected);
    // The Secret appears while the API server does not serve yet: still disconnected,
    // retried until it answers.
    create_kubeconfig_secret(&m.client, "c1", &ca.kubeconfig("c1", &url)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cc.state(&key), ConnectionState::Disconnected);
    cloud
        .start_api_server("default/c1", &ca.cert_pem, &ca.key_pem)
        .map_err(anyhow::Error::msg)?;
    eventually(Duration::from_secs(10), || async {
        cc.state(&key) == ConnectionState::Connected
    })
    .await
    .context("never connected")?;
    let conn = cc.connection(&key).context("connection")?;
    eventually(Duration::from_secs(5), || async {
        conn.synced(&node_gvk())
    })
    .await?;
    let nodes = conn.cache().kind(&node_gvk()).context("node informer")?;
    assert_eq!(nodes.keys(), [ObjectKey::new("", "m1")]);

    // A workload event reaches the listeners with its cluster.
    cloud
        .put_object("default/c1", &node("m2"))
        .map_err(anyhow::Error::msg)?;
    eventually(Duration::from_secs(5), || async {
        events.lock().contains(&(key.clone(), "m2".to_string()))
    })
    .await
    .context("no event for m2")?;

    // The same connection is reused: re-syncing with an unchanged Secret keeps it.
    let before = Arc::as_ptr(&conn);
    let secret_api = dynamic("v1", "Secret", "secrets", &m.client);
    secret_api
        .patch(
            "c1-kubeconfig",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        Arc::as_ptr(&cc.connection(&key).context("connection")?),
        before,
        "connection rebuilt for an unrelated Secret change"
    );

    // A plugin loaded or swapped in while running: a listener added now hears the live
    // connection, and a kind registered now gets an informer on it in place.
    let late: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let pod_gvk = Gvk::new("", "v1", "Pod");
    for gvk in [node_gvk(), pod_gvk.clone()] {
        let (l, kind) = (Arc::clone(&late), gvk.kind.clone());
        cc.on_event(&gvk, move |_, ev| {
            if let Some(o) = ev.new.as_ref() {
                l.lock().push((kind.clone(), o.key.name.clone()));
            }
        });
    }
    cloud
        .put_object(
            "default/c1",
            &json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "etcd-m1", "namespace": "kube-system"},
                "spec": {"nodeName": "m1", "containers": [{"name": "etcd", "image": "etcd"}]}})
            .to_string(),
        )
        .map_err(anyhow::Error::msg)?;
    cc.register_kind(&pod_gvk);
    eventually(Duration::from_secs(5), || async { conn.synced(&pod_gvk) })
        .await
        .context("the kind registered while connected never synced")?;
    cloud
        .put_object("default/c1", &node("m3"))
        .map_err(anyhow::Error::msg)?;
    eventually(Duration::from_secs(5), || async {
        let late = late.lock();
        late.contains(&("Pod".to_string(), "etcd-m1".to_string()))
            && late.contains(&("Node".to_string(), "m3".to_string()))
    })
    .await
    .with_context(|| format!("late listeners heard only {:?}", late.lock()))?;
    assert_eq!(
        Arc::as_ptr(&cc.connection(&key).context("connection")?),
        before,
        "a new kind rebuilt the connection"
    );
    assert_eq!(
        cc.kinds(),
        [node_gvk(), pod_gvk.clone()],
        "registering twice adds a kind once"
    );
    cc.register_kind(&pod_gvk);
    assert_eq!(cc.kinds().len(), 2);

    // A dead workload API server turns the connection unhealthy.
    cloud
        .release_endpoint("default/c1")
        .map_err(anyhow::Error::msg)?;
    eventually(Duration::from_secs(10), || async {
        cc.state(&key) == ConnectionState::Unhealthy
    })
    .await
    .context("never unhealthy")?;
    assert!(
        !conn.synced(&node_gvk()),
        "an unhealthy cluster's informers are not trusted"
    );

    // Deleting the Cluster tears the connection down.
    dynamic("cluster.x-k8s.io/v1beta2", "Cluster", "clusters", &m.client)
        .delete("c1", &Default::default())
        .await?;
    eventually(Duration::from_secs(10), || async {
        cc.connection(&key).is_none()
    })
    .await
    .context("never torn down")?;
    assert_eq!(cc.state(&key), ConnectionState::Disconnected);
    let seen: Vec<ConnectionState> = states
        .lock()
        .iter()
        .filter(|(c, _)| *c == key)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        seen,
        [
            ConnectionState::Connected,
            ConnectionState::Unhealthy,
            ConnectionState::Disconnected
        ]
    );
    let text = capstan::metrics::encode(&registry);
    assert!(
        text.contains("capstan_workload_cluster_connects_total 1"),
        "{text}"
    );
    assert!(
        text.contains("capstan_workload_cluster_connections 0"),
        "{text}"
    );
    stop.cancel();
    m.stop.cancel();
    drop(m.server);
    Ok(())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Memory of one simulated workload cluster as `capstan simulate` holds it: its API server
/// (store with a Node and four control-plane Pods, HTTPS under its CA) plus the host's
/// connection (client, Node and Pod informers, health probe). Prints the figure; fails when
/// a cluster costs more than 1 MiB (2,000 clusters must fit in 1 GiB with the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_per_workload_cluster() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    const N: usize = 100;
    let m = management().await?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let cloud = Arc::new(InMemoryCloud::new(CloudMetrics::default()));
    let cc = ClusterCache::new(
        Arc::clone(&m.cache),
        metrics,
        ClusterCacheMetrics::default(),
        ClusterCacheOptions::default(),
    );
    cc.register_kind(&node_gvk());
    cc.register_kind(&Gvk::new("", "v1", "Pod"));
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&cc).run(stop.clone()));
    // Warm up allocator arenas and one-time tables with one cluster first.
    let ca = Ca::new("kubernetes");
    let rss_start = rss_bytes();
    let mut kubeconfigs = Vec::new();
    for i in 0..=N {
        let name = format!("w{i}");
        let cluster = format!("default/{name}");
        let ep = cloud
            .reserve_endpoint(&cluster)
            .map_err(anyhow::Error::msg)?;
        cloud
            .put_object(&cluster, &node(&format!("{name}-cp")))
            .map_err(anyhow::Error::msg)?;
        for component in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{component}-{name}-cp"), "namespace": "kube-system",
                    "labels": {"component": component, "tier": "control-plane"}},
                "spec": {"nodeName": format!("{name}-cp"), "containers": [{"name": component, "image": component}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
            cloud
                .put_object(&cluster, &pod.to_string())
                .map_err(anyhow::Error::msg)?;
        }
        cloud
            .start_api_server(&cluster, &ca.cert_pem, &ca.key_pem)
            .map_err(anyhow::Error::msg)?;
        kubeconfigs.push((
            name.clone(),
            ca.kubeconfig(&name, &format!("https://{}:{}", ep.host, ep.port)),
        ));
    }
    let connect = |range: std::ops::Range<usize>| {
        let kubeconfigs = &kubeconfigs;
        let client = m.client.clone();
        async move {
            for (name, kc) in &kubeconfigs[range] {
                create_cluster(&client, name).await?;
                create_kubeconfig_secret(&client, name, kc).await?;
            }
            anyhow::Ok(())
        }
    };
    let all_synced = |n: usize| {
        let cc = Arc::clone(&cc);
        async move {
            let clusters = cc.clusters();
            clusters.len() == n
                && clusters.iter().all(|c| {
                    cc.connection(c).is_some_and(|conn| {
                        conn.synced(&node_gvk()) && conn.synced(&Gvk::new("", "v1", "Pod"))
                    })
                })
        }
    };
    let servers = rss_bytes().saturating_sub(rss_start) / (N as u64 + 1);
    connect(0..1).await?;
    eventually(Duration::from_secs(30), || all_synced(1)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    connect(1..N + 1).await?;
    eventually(Duration::from_secs(120), || all_synced(N + 1))
        .await
        .context("not every cluster connected")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let per_cluster = after.saturating_sub(before) / N as u64;
    println!(
        "memory per workload cluster, {N} clusters: API server serving a Node and 4 Pods {} KiB; host connection (client, Node and Pod informers, probe) plus the server side of its watches {} KiB; total {} KiB",
        servers / 1024,
        per_cluster / 1024,
        (servers + per_cluster) / 1024,
    );
    assert!(
        servers + per_cluster < 400 << 10,
        "a workload cluster costs {} bytes",
        servers + per_cluster
    );
    stop.cancel();
    m.stop.cancel();
    Ok(())
}

mod controller {
    //! target=workload through the manager: a plugin whose primary is a Cluster reads the
    //! workload cluster's Nodes, is woken by their events and writes a ConfigMap there.
    use super::*;
    use capstan::controller::ControllerOptions;
    use capstan::runtime::bindings::capstan::reconciler::types::{
        Connection, KeyMapping, Permission, RelationSelector, Target, Verbs,
    };
    use capstan_tests::host::{
        FakePlugin, empty_outcome, gvk, relation, start_manager, watch, widget_info,
    };

    /// Whether ConfigMap `kube-system/NAME` in workload cluster `default/c1` has
    /// `data.nodes == n`.
    async fn nodes_counted(cloud: Arc<InMemoryCloud>, name: &str, n: &str) -> bool {
        let key = CloudKey {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "kube-system".into(),
            name: name.into(),
        };
        cloud
            .get_object("default/c1", &key)
            .ok()
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["data"]["nodes"] == n)
    }

    /// A management API server with the CAPI CRDs, its client, and the in-memory cloud
    /// serving workload cluster `default/c1` (one Node, `m1`) under `ca`.
    struct Setup {
        mgmt: capstan_apiserver::Server,
        client: kube::Client,
        cloud: Arc<InMemoryCloud>,
        ca: Ca,
        /// The workload API server's URL.
        url: String,
    }

    async fn setup() -> anyhow::Result<Setup> {
        let mgmt = capstan_apiserver::Server::builder()
            .plain_http()
            .crds_from_dir(capstan_tests::fixture("capi-crds"))
            .start("127.0.0.1:0")
            .await?;
        let client = capstan_tests::host::test_client(&mgmt).await?;
        let cloud = Arc::new(InMemoryCloud::new(CloudMetrics::default()));
        let ep = cloud
            .reserve_endpoint("default/c1")
            .map_err(anyhow::Error::msg)?;
        cloud
            .put_object("default/c1", &node("m1"))
            .map_err(anyhow::Error::msg)?;
        let ca = Ca::new("kubernetes");
        cloud
            .start_api_server("default/c1", &ca.cert_pem, &ca.key_pem)
            .map_err(anyhow::Error::msg)?;
        Ok(Setup {
            mgmt,
            client,
            cloud,
            ca,
            url: format!("https://{}:{}", ep.host, ep.port),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workload_relations_watches_and_writes() -> anyhow::Result<()> {
        let _serial = super::SERIAL.lock().await;
        let Setup {
            mgmt,
            client,
            cloud,
            ca,
            url,
        } = setup().await?;

        let mut info = widget_info("summary");
        info.primary = gvk("cluster.x-k8s.io", "v1beta2", "Cluster");
        let mut nodes = relation("nodes", gvk("", "v1", "Node"), RelationSelector::All);
        nodes.target = Target::Workload;
        let mut w = watch(gvk("", "v1", "Node"), KeyMapping::SameCluster);
        w.target = Target::Workload;
        info.relations = vec![nodes];
        info.watches = vec![w];
        info.permissions = vec![Permission {
            kind: gvk("", "v1", "ConfigMap"),
            verbs: Verbs::CREATE | Verbs::PATCH,
            target: Target::Workload,
        }];
        let states: Arc<Mutex<Vec<(Connection, bool, usize)>>> = Arc::default();
        let seen = Arc::clone(&states);
        let plugin = FakePlugin::new(info, move |snap, _| {
            let rel = &snap.related[0];
            seen.lock()
                .push((snap.workload, rel.synced, rel.objects.len()));
            let mut o = empty_outcome();
            if snap.workload == Connection::Connected && rel.synced {
                o.workload_apply.push(
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "capstan-summary", "namespace": "kube-system"},
                        "data": {"nodes": rel.objects.len().to_string()}})
                    .to_string(),
                );
            }
            Ok(o)
        });
        let running =
            start_manager(&mgmt, vec![plugin.clone()], ControllerOptions::default()).await?;

        create_cluster(&client, "c1").await?;
        eventually(Duration::from_secs(10), || async {
            plugin.calls_for("c1") > 0
        })
        .await?;
        assert_eq!(
            states.lock()[0].0,
            Connection::Disconnected,
            "no kubeconfig yet"
        );
        assert!(!states.lock()[0].1, "disconnected relations are unsynced");

        // The kubeconfig Secret appears: connect, the connection event enqueues the
        // Cluster, its snapshot carries the workload Node, its write lands.
        create_kubeconfig_secret(&client, "c1", &ca.kubeconfig("c1", &url)).await?;
        let has = |n: &'static str| nodes_counted(Arc::clone(&cloud), "capstan-summary", n);
        eventually(Duration::from_secs(15), || has("1"))
            .await
            .context("the workload write never landed")?;
        assert!(
            states
                .lock()
                .iter()
                .any(|(c, synced, n)| *c == Connection::Connected && *synced && *n == 1)
        );

        // A workload event (a second Node) enqueues the Cluster; the write follows.
        cloud
            .put_object("default/c1", &node("m2"))
            .map_err(anyhow::Error::msg)?;
        eventually(Duration::from_secs(10), || has("2"))
            .await
            .context("the workload event did not reach the primary")?;

        // A Node update that leaves the summary as it is: reconciled, nothing written.
        let calls = plugin.calls_for("c1");
        let writes_before = cloud
            .instance("default/c1")
            .context("instance")?
            .metrics()
            .requests
            .iter()
            .filter(|((verb, res, _), _)| verb == "PATCH" && res.starts_with("configmaps"))
            .map(|(_, n)| *n)
            .sum::<u64>();
        let mut m2: serde_json::Value = serde_json::from_str(&node("m2"))?;
        m2["metadata"]["labels"] = json!({"touched": "yes"});
        cloud
            .put_object("default/c1", &m2.to_string())
            .map_err(anyhow::Error::msg)?;
        eventually(Duration::from_secs(10), || async {
            plugin.calls_for("c1") > calls
        })
        .await
        .context("the Node update did not enqueue the Cluster")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let writes_after = cloud
            .instance("default/c1")
            .context("instance")?
            .metrics()
            .requests
            .iter()
            .filter(|((verb, res, _), _)| verb == "PATCH" && res.starts_with("configmaps"))
            .map(|(_, n)| *n)
            .sum::<u64>();
        assert_eq!(
            writes_before, writes_after,
            "an unchanged summary is not patched again"
        );

        // Deleting the Cluster tears the connection down.
        dynamic("cluster.x-k8s.io/v1beta2", "Cluster", "clusters", &client)
            .delete("c1", &Default::default())
            .await?;
        let text_has = |s: &'static str| {
            let addr = running.metrics_addr;
            async move {
                capstan_tests::host::http_get(addr, "/metrics")
                    .await
                    .is_ok_and(|(_, body)| body.contains(s))
            }
        };
        eventually(Duration::from_secs(10), || {
            text_has("capstan_workload_cluster_connections 0")
        })
        .await
        .context("connection not torn down")?;
        assert!(text_has("capstan_workload_cluster_connects_total 1").await);
        running.shutdown().await?;
        Ok(())
    }

    /// A plugin with workload declarations dropped into the plugin folder of a manager
    /// that started with none: the reloader starts the cluster cache, the plugin's
    /// snapshots carry the workload Nodes, its workload watch and write work.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_workload_plugin_loaded_while_running_gets_the_cluster_cache() -> anyhow::Result<()> {
        use capstan::manager::{Manager, ManagerOptions, build_client};
        use capstan::reload::{ReloadOptions, Reloader};
        use capstan::runtime::{Runtime, RuntimeConfig};

        let _serial = super::SERIAL.lock().await;
        let Setup {
            mgmt,
            client,
            cloud,
            ca,
            url,
        } = setup().await?;
        create_cluster(&client, "c1").await?;
        create_kubeconfig_secret(&client, "c1", &ca.kubeconfig("c1", &url)).await?;

        let dir = tempfile::tempdir()?;
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let kc = kube::config::Kubeconfig::from_yaml(mgmt.kubeconfig_yaml())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let mut manager = Manager::new(
            build_client(config, Arc::clone(&metrics), 0.0, 0)?,
            Arc::new(registry),
            metrics,
            ManagerOptions::default(),
        );
        let reloader = Reloader::new(
            Runtime::new(RuntimeConfig::default())?,
            ReloadOptions {
                debounce: Duration::from_millis(50),
                ..ReloadOptions::new(dir.path())
            },
        );
        let mut events = reloader.subscribe();
        manager.watch_plugins(reloader);
        let stop = CancellationToken::new();
        let task = tokio::spawn(manager.run(stop.clone()));

        // Atomically, as deployment tooling does: a dotfile, then a rename.
        let tmp = dir.path().join(".workload-nodes.wasm.tmp");
        std::fs::copy(
            capstan_tests::host::guest_component("workload-nodes")?,
            &tmp,
        )?;
        std::fs::rename(&tmp, dir.path().join("workload-nodes.wasm"))?;
        let loaded = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .context("the plugin was never loaded")??;
        assert_eq!(loaded.result, "success", "{loaded:?}");
        let nodes = |n: &'static str| nodes_counted(Arc::clone(&cloud), "capstan-nodes", n);
        eventually(Duration::from_secs(20), || nodes("1"))
            .await
            .context("the plugin loaded at run time never wrote to its workload cluster")?;
        // Its workload watch: a second Node enqueues the Cluster.
        cloud
            .put_object("default/c1", &node("m2"))
            .map_err(anyhow::Error::msg)?;
        eventually(Duration::from_secs(10), || nodes("2"))
            .await
            .context("the workload watch of a plugin loaded at run time was not wired")?;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .context("manager did not stop")???;
        Ok(())
    }
}

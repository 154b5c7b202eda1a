//! Workload-cluster instances: store before serving, HTTPS under a given CA with client certificates, direct writes seen by watches, stop.

use std::time::Duration;

use base64::Engine;
use capstan_apiserver::{Instance, InstanceOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;

struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    Ca {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(p, key),
    }
}

fn kubeconfig(ca: &Ca, signer: &Ca, url: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "kubernetes-admin");
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &signer.issuer).unwrap();
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: w\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: w-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: w-admin@w\n  context:\n    cluster: w\n    user: w-admin\ncurrent-context: w-admin@w\n",
        b(&ca.cert_pem),
        b(&cert.pem()),
        b(&key.serialize_pem())
    )
}

async fn client(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn node(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"providerID": format!("in-memory://{name}")},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    })
}

#[tokio::test]
async fn store_first_then_https_with_client_certificates() {
    let inst = Instance::reserve("127.0.0.1:0", &InstanceOptions::default()).unwrap();
    let port = inst.local_addr().port();
    assert!(port > 0);
    assert!(!inst.is_serving());
    // The store exists before anything serves.
    let stored = inst.put(node("n1")).unwrap();
    assert!(stored["metadata"]["resourceVersion"].as_str().is_some());
    assert_eq!(stored["status"]["conditions"][0]["type"], "Ready");
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "etcd-n1", "namespace": "kube-system", "labels": {"component": "etcd"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "etcd", "image": "etcd"}]},
        "status": {"phase": "Running"}});
    inst.put(pod.clone()).unwrap();

    let cluster_ca = ca("kubernetes");
    inst.serve_tls(&cluster_ca.cert_pem, &cluster_ca.key_pem)
        .unwrap();
    assert!(inst.is_serving());
    assert_eq!(inst.local_addr().port(), port, "the endpoint is stable");
    // Idempotent.
    inst.serve_tls(&cluster_ca.cert_pem, &cluster_ca.key_pem)
        .unwrap();

    let c = client(&kubeconfig(&cluster_ca, &cluster_ca, &inst.url())).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let n = &list.items[0];
    assert_eq!(
        n.spec.as_ref().unwrap().provider_id.as_deref(),
        Some("in-memory://n1")
    );
    // Status kept on a direct create, even for a status-subresource kind.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "kube-system");
    let p = pods.get("etcd-n1").await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));

    // A watch sees direct writes: update, create, delete.
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut w = nodes
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let mut n1 = node("n1");
    n1["metadata"]["labels"]["extra"] = json!("x");
    inst.put(n1.clone()).unwrap();
    // A put with nothing changed produces no event.
    inst.put(n1).unwrap();
    inst.put(node("n2")).unwrap();
    assert!(inst.delete("v1", "Node", "", "n2").unwrap());
    assert!(!inst.delete("v1", "Node", "", "n2").unwrap());
    let mut seen = vec![];
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Added(n) => seen.push(format!("added {}", n.metadata.name.unwrap())),
            WatchEvent::Modified(n) => seen.push(format!("modified {}", n.metadata.name.unwrap())),
            WatchEvent::Deleted(n) => seen.push(format!("deleted {}", n.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["modified n1", "added n2", "deleted n2"]);
    let got = inst.get("v1", "Node", "", "n1").unwrap().unwrap();
    assert_eq!(got["metadata"]["labels"]["extra"], "x");
    assert!(inst.get("v1", "Node", "", "n2").unwrap().is_none());
    assert!(inst.get("v1", "NoSuchKind", "", "x").is_err());

    // A client certificate from another CA is refused.
    let other = ca("other");
    let bad = client(&kubeconfig(&cluster_ca, &other, &inst.url())).await;
    assert!(
        Api::<Node>::all(bad)
            .list(&ListParams::default())
            .await
            .is_err()
    );

    // Stopped: nothing answers on the port any more.
    inst.stop_and_wait().await;
    assert!(!inst.is_serving());
    assert!(
        tokio::net::TcpStream::connect(inst.local_addr())
            .await
            .is_err()
    );
    assert!(
        inst.serve_tls(&cluster_ca.cert_pem, &cluster_ca.key_pem)
            .is_err()
    );
}

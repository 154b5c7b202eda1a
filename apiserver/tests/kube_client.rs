//! kube-rs against the in-memory API server: typed and dynamic APIs, errors, watch, reflector,
//! auth, subresources, finalizers, garbage collection, server-side apply.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_apiserver::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind, Status};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn plain() -> (Server, kube::Client) {
    let s = Server::builder()
        .plain_http()
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let c = common::client(&s).await.unwrap();
    (s, c)
}

#[tokio::test]
async fn typed_crud_and_errors() -> anyhow::Result<()> {
    let (s, client) = plain().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("app", "x")]))
        .await?;
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse()?;
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let e = api_err(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");

    let e = api_err(cms.get("nope").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );

    let e = api_err(
        cms.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{}",
        e.message
    );

    // Optimistic concurrency: a stale resourceVersion is 409 and changes nothing.
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some(BTreeMap::from([("k".into(), "v2".into())]));
    let updated = cms.replace("a", &PostParams::default(), &fresh).await?;
    assert!(
        updated
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse::<u64>()?
            > rv1
    );
    stale.data = Some(BTreeMap::from([("k".into(), "stale".into())]));
    let e = api_err(
        cms.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(cms.get("a").await?.data.unwrap()["k"], "v2");

    // Unknown namespace and generateName.
    let nowhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let e = api_err(
        nowhere
            .create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = cms.create(&PostParams::default(), &g).await?;
    assert!(
        made.metadata.name.as_deref().unwrap().starts_with("gen-")
            && made.metadata.name.unwrap().len() == 9
    );

    // Secret stringData becomes data.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let sec: Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"p": "hi"}}),
    )?;
    let sec = secrets.create(&PostParams::default(), &sec).await?;
    assert_eq!(sec.data.unwrap()["p"].0, b"hi");
    assert!(s.metrics().by_verb("POST") >= 5);
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn selectors_and_pagination() -> anyhow::Result<()> {
    let (s, client) = plain().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(
            &PostParams::default(),
            &cm(
                &format!("cm-{i:02}"),
                &[("tier", tier), ("n", &i.to_string())],
            ),
        )
        .await?;
    }
    assert_eq!(
        cms.list(&ListParams::default().labels("tier=even"))
            .await?
            .items
            .len(),
        13
    );
    assert_eq!(
        cms.list(&ListParams::default().labels("tier in (even,odd),n notin (1,2,3)"))
            .await?
            .items
            .len(),
        22
    );
    assert_eq!(
        cms.list(&ListParams::default().labels("!tier"))
            .await?
            .items
            .len(),
        0
    );
    assert_eq!(
        cms.list(&ListParams::default().fields("metadata.name=cm-03"))
            .await?
            .items
            .len(),
        1
    );
    let e = api_err(
        cms.list(&ListParams::default().labels("tier in ("))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    let e = api_err(
        cms.list(&ListParams::default().fields("spec.foo=bar"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.foo")
    );

    let mut names = vec![];
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await?;
        pages += 1;
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // All namespaces.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 25);
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watch_history_bookmarks_and_gone() -> anyhow::Result<()> {
    let s = Server::builder()
        .plain_http()
        .history_limit(100)
        .bookmark_interval(Duration::from_millis(100))
        .start("127.0.0.1:0")
        .await?;
    let client = common::client(&s).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms.create(&PostParams::default(), &cm("w0", &[])).await?;
    let rv0 = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &cm("w1", &[("a", "b")]))
        .await?;
    cms.delete("w0", &DeleteParams::default()).await?;

    // Replay from an old resourceVersion.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv0)
        .await?
        .boxed();
    let mut seen = vec![];
    while let Some(ev) = stream.try_next().await? {
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {
                seen.push("BOOKMARK".into());
                break;
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    assert_eq!(seen, vec!["ADDED w1", "DELETED w0", "BOOKMARK"]);

    // Compaction: the old version is gone.
    s.compact();
    let mut stream = cms.watch(&WatchParams::default(), &rv0).await?.boxed();
    match stream.try_next().await? {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn watcher_and_reflector_follow_changes() -> anyhow::Result<()> {
    let (s, client) = plain().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("pre", &[("app", "r")]))
        .await?;
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(cms.clone(), watcher::Config::default().labels("app=r"))
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await?;
    assert_eq!(reader.state().len(), 1);
    cms.create(&PostParams::default(), &cm("post", &[("app", "r")]))
        .await?;
    cms.create(&PostParams::default(), &cm("other", &[("app", "zzz")]))
        .await?;
    assert!(common::wait_for(|| async { reader.state().len() == 2 }).await);
    // A label change moves an object out of the selection: the reflector sees a delete.
    cms.patch(
        "pre",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await?;
    assert!(common::wait_for(|| async { reader.state().len() == 1 }).await);
    // Dropped watches are resumed by the watcher.
    s.drop_watches();
    cms.create(&PostParams::default(), &cm("after-drop", &[("app", "r")]))
        .await?;
    assert!(common::wait_for(|| async { reader.state().len() == 2 }).await);
    assert!(s.metrics().watches >= 1);
    task.abort();
    // Streaming lists (watch with sendInitialEvents and the initial-events-end bookmark).
    let (sreader, swriter) = reflector::store::<ConfigMap>();
    let sstream = watcher(
        cms.clone(),
        watcher::Config::default().labels("app=r").streaming_lists(),
    )
    .reflect(swriter)
    .applied_objects();
    let stask = tokio::spawn(async move {
        let mut stream = std::pin::pin!(sstream);
        while stream.next().await.is_some() {}
    });
    sreader.wait_until_ready().await?;
    assert_eq!(sreader.state().len(), 2);
    stask.abort();
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tls_auth_token_cert_and_401() -> anyhow::Result<()> {
    let s = Server::builder().start("127.0.0.1:0").await?;
    assert!(s.url().starts_with("https://"));
    let token_client = common::client(&s).await?;
    let ns: Api<Namespace> = Api::all(token_client);
    assert!(ns.list(&ListParams::default()).await?.items.len() >= 4);
    let cert_client = common::client_ctx(&s, Some("capstan-cert")).await?;
    let ns: Api<Namespace> = Api::all(cert_client);
    assert!(ns.get("default").await.is_ok());
    // No credentials: 401 with a Status body.
    let mut kc = kube::config::Kubeconfig::from_yaml(s.kubeconfig_yaml())?;
    for u in &mut kc.auth_infos {
        if let Some(a) = u.auth_info.as_mut() {
            a.token = None;
            a.client_certificate_data = None;
            a.client_key_data = None;
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let anon: Api<Namespace> = Api::all(kube::Client::try_from(cfg)?);
    let e = api_err(anon.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    s.shutdown().await;
    Ok(())
}

fn cluster_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
        "clusters",
    )
}

fn cluster(name: &str) -> DynamicObject {
    let v: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cluster.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut o: DynamicObject = serde_json::from_value(v).unwrap();
    o.metadata.name = Some(name.into());
    o
}

#[tokio::test]
async fn capi_crds_serve_with_schema_and_subresources() -> anyhow::Result<()> {
    let s = Server::builder()
        .plain_http()
        .crds_from_dir(common::capi_crds())
        .start("127.0.0.1:0")
        .await?;
    let client = common::client(&s).await?;
    // Discovery sees the CAPI kinds.
    let d = kube::discovery::Discovery::new(client.clone())
        .run()
        .await?;
    let (ar, caps) = d
        .resolve_gvk(&GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta2",
            "Cluster",
        ))
        .expect("Cluster discovered");
    assert_eq!(ar.plural, "clusters");
    assert!(
        caps.subresources
            .iter()
            .any(|(a, _)| a.plural == "clusters/status" || a.plural == "status")
    );

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &cluster_ar());
    let mut c = cluster("c1");
    c.data["spec"]["unknownField"] = json!(1);
    c.data["status"] = json!({"phase": "Provisioned"});
    let made = api.create(&PostParams::default(), &c).await?;
    assert_eq!(made.metadata.generation, Some(1));
    assert!(made.data["spec"].get("unknownField").is_none(), "pruned");
    assert!(
        made.data.get("status").is_none(),
        "status ignored on create"
    );

    // Validation: 422 with field paths, nothing stored.
    let mut bad = cluster("bad");
    bad.data["spec"]["infrastructureRef"]["kind"] = json!("9-not-a-kind");
    bad.data["spec"]["paused"] = json!("yes");
    let e = api_err(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.contains("spec.infrastructureRef.kind"),
        "{}",
        e.message
    );
    assert!(e.message.contains("spec.paused"), "{}", e.message);
    assert!(api.get_opt("bad").await?.is_none());

    // Status subresource: spec ignored there, generation unchanged by status and metadata.
    let st = api
        .patch_status(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}, "status": {"phase": "Provisioning"}})),
        )
        .await?;
    assert_eq!(st.data["status"]["phase"], "Provisioning");
    assert!(st.data["spec"].get("paused").is_none());
    assert_eq!(st.metadata.generation, Some(1));
    let l = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ignored"}}),
            ),
        )
        .await?;
    assert_eq!(l.metadata.generation, Some(1));
    assert_eq!(l.data["status"]["phase"], "Provisioning");
    let g = api
        .patch(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;
    assert_eq!(g.metadata.generation, Some(2));

    // The other served version rewrites apiVersion.
    let v1b1 = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "Cluster"),
        "clusters",
    );
    let old: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &v1b1);
    assert_eq!(
        old.get("c1").await?.types.unwrap().api_version,
        "cluster.x-k8s.io/v1beta1"
    );

    // Scale subresource of MachineDeployments.
    let md_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "MachineDeployment"),
        "machinedeployments",
    );
    let mds: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &md_ar);
    let md: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": "md"},
        "spec": {"clusterName": "c1", "replicas": 1, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"clusterName": "c1",
                "bootstrap": {"dataSecretName": "x"},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevMachineTemplate", "name": "t"}}}}
    }))?;
    mds.create(&PostParams::default(), &md).await?;
    let scale = mds
        .patch_scale(
            "md",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(mds.get("md").await?.data["spec"]["replicas"], 3);
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn finalizers_and_garbage_collection() -> anyhow::Result<()> {
    let (s, client) = plain().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut owner = cm("owner", &[]);
    owner.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    let owner = cms.create(&PostParams::default(), &owner).await?;
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "blockOwnerDeletion": true}]);
    for n in ["dep-1", "dep-2"] {
        let mut d = cm(n, &[]);
        d.metadata.owner_references = Some(serde_json::from_value(oref.clone())?);
        cms.create(&PostParams::default(), &d).await?;
    }
    // Finalizer: the owner stays with a deletionTimestamp.
    cms.delete("owner", &DeleteParams::default()).await?;
    let held = cms.get("owner").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    // No new finalizers on a deleting object.
    let e = api_err(
        cms.patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "x/y"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // Removing the last finalizer removes it, and background GC takes the dependents.
    cms.patch(
        "owner",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(cms.get_opt("owner").await?.is_none());
    assert!(cms.get_opt("dep-1").await?.is_none() && cms.get_opt("dep-2").await?.is_none());

    // Orphan keeps dependents and strips their owner reference.
    let o2 = cms.create(&PostParams::default(), &cm("o2", &[])).await?;
    let mut d = cm("d2", &[]);
    d.metadata.owner_references = Some(serde_json::from_value(
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o2", "uid": o2.metadata.uid}]),
    )?);
    cms.create(&PostParams::default(), &d).await?;
    // Answered, as kube, with the owner holding the `orphan` finalizer; then it is gone.
    let answer = cms.delete("o2", &DeleteParams::orphan()).await?;
    let shown = answer.left().expect("the owner, not a Status");
    assert_eq!(shown.metadata.finalizers, Some(vec!["orphan".to_string()]));
    assert!(cms.get_opt("o2").await?.is_none());
    let d2 = cms.get("d2").await?;
    assert!(d2.metadata.owner_references.unwrap_or_default().is_empty());

    // Foreground: the owner waits for a dependent held by a finalizer.
    let o3 = cms.create(&PostParams::default(), &cm("o3", &[])).await?;
    let mut d = cm("d3", &[]);
    d.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    d.metadata.owner_references = Some(serde_json::from_value(
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o3", "uid": o3.metadata.uid, "blockOwnerDeletion": true}]),
    )?);
    cms.create(&PostParams::default(), &d).await?;
    cms.delete("o3", &DeleteParams::foreground()).await?;
    let waiting = cms.get("o3").await?;
    assert_eq!(
        waiting.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
    assert!(cms.get("d3").await?.metadata.deletion_timestamp.is_some());
    cms.patch(
        "d3",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(
            json!([{"op": "remove", "path": "/metadata/finalizers"}]),
        )?),
    )
    .await?;
    assert!(cms.get_opt("d3").await?.is_none() && cms.get_opt("o3").await?.is_none());

    // Namespace deletion removes its contents.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}}),
        )?,
    )
    .await?;
    let tmp: Api<ConfigMap> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &cm("x", &[])).await?;
    nss.delete("tmp", &DeleteParams::default()).await?;
    assert!(nss.get_opt("tmp").await?.is_none());
    assert!(tmp.get_opt("x").await?.is_none());

    // deletecollection with a selector.
    for i in 0..3 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("dc-{i}"), &[("dc", "yes")]),
        )
        .await?;
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("dc=yes"),
    )
    .await?;
    assert!(
        cms.list(&ListParams::default().labels("dc=yes"))
            .await?
            .items
            .is_empty()
    );
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn server_side_apply_managers_and_conflicts() -> anyhow::Result<()> {
    let (s, client) = plain().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let o = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await?;
    let mf = o.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("alice"), Some("Apply"))
    );
    // Bob changes a field alice owns: conflict unless forced.
    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "bob"}});
    let e = api_err(
        cms.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"alice\""),
        "{}",
        e.message
    );
    assert_eq!(cms.get("ssa").await?.data.unwrap()["a"], "1");
    let forced = cms
        .patch(
            "ssa",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await?;
    assert_eq!(forced.data.as_ref().unwrap()["a"], "bob");
    // Alice drops "b" from her config: the field goes; "a" now belongs to bob and stays.
    let alice2 =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let o = cms
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await?;
    assert_eq!(
        o.data.unwrap_or_default(),
        BTreeMap::from([("a".to_string(), "bob".to_string())])
    );
    // Apply creates when missing.
    let fresh = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-new"}, "data": {"x": "1"}});
    cms.patch(
        "ssa-new",
        &PatchParams::apply("alice"),
        &Patch::Apply(&fresh),
    )
    .await?;
    assert_eq!(cms.get("ssa-new").await?.data.unwrap()["x"], "1");
    // Strategic merge and JSON patch on a built-in.
    cms.patch(
        "ssa-new",
        &PatchParams::default(),
        &Patch::Strategic::<serde_json::Value>(json!({"metadata": {"labels": {"s": "1"}}})),
    )
    .await?;
    let e = api_err(
        cms.patch(
            "ssa-new",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(
                json!([{"op": "test", "path": "/data/x", "value": "2"}]),
            )?),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(cms.get("ssa-new").await?.metadata.labels.unwrap()["s"], "1");
    s.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_input_and_knobs() -> anyhow::Result<()> {
    let (s, _client) = plain().await;
    let http = reqwest_like(&s);
    // Malformed JSON, unknown resource, wrong kind, oversize body, unsupported patch type.
    let r = http
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            b"{not json".to_vec(),
        )
        .await?;
    assert_eq!(r.0, 400);
    let r = http
        .send("GET", "/api/v1/namespaces/default/widgets", "", vec![])
        .await?;
    assert_eq!(r.0, 404);
    let r = http
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(),
        )
        .await?;
    assert_eq!(r.0, 400);
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "a".repeat(3 * 1024 * 1024)
    );
    let r = http
        .send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            big.into_bytes(),
        )
        .await?;
    assert_eq!(r.0, 413);
    let r = http
        .send(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/x",
            "text/plain",
            b"{}".to_vec(),
        )
        .await?;
    assert_eq!(r.0, 415);
    let status: serde_json::Value = serde_json::from_slice(&r.1)?;
    assert_eq!(status["reason"], "UnsupportedMediaType");
    let r = http
        .send("GET", "/api/v1/namespaces/default/configmaps", "", vec![])
        .await?;
    let list: serde_json::Value = serde_json::from_slice(&r.1)?;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "nothing stored by rejected requests"
    );
    // Rate limit: 429 with Retry-After.
    s.set_rate_limit(Some((1.0, 1)));
    let _ = http.send("GET", "/api/v1/namespaces", "", vec![]).await?;
    let r = http.send("GET", "/api/v1/namespaces", "", vec![]).await?;
    assert_eq!(r.0, 429);
    assert!(r.2.is_some(), "Retry-After header");
    s.set_rate_limit(None);
    // Latency.
    s.set_latency(Duration::from_millis(150));
    let t = std::time::Instant::now();
    http.send("GET", "/api/v1/namespaces", "", vec![]).await?;
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.set_latency(Duration::ZERO);
    let text = s.metrics_text();
    assert!(
        text.contains(
            "apiserver_request_total{verb=\"POST\",resource=\"configmaps\",code=\"413\"} 1"
        ),
        "{text}"
    );
    s.shutdown().await;
    Ok(())
}

/// A minimal raw HTTP/1.1 client so tests can send bodies kube-rs would refuse to build.
struct RawHttp {
    addr: std::net::SocketAddr,
}

fn reqwest_like(s: &Server) -> RawHttp {
    RawHttp {
        addr: s.local_addr(),
    }
}

impl RawHttp {
    async fn send(
        &self,
        method: &str,
        path: &str,
        ct: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Vec<u8>, Option<String>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !ct.is_empty() {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        // The server may answer 413 before reading the whole body.
        let _ = s.write_all(&body).await;
        let mut out = vec![];
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).to_string();
        let code: u16 = text.split_whitespace().nth(1).unwrap_or("0").parse()?;
        let (headers, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let retry = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
            .map(|l| l[12..].trim().to_string());
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            let mut b = String::new();
            let mut r = rest;
            while let Some((len, tail)) = r.split_once("\r\n") {
                let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
                if n == 0 || tail.len() < n {
                    break;
                }
                b.push_str(&tail[..n]);
                r = tail[n..].trim_start_matches("\r\n");
            }
            b
        } else {
            rest.to_string()
        };
        Ok((code, body.into_bytes(), retry))
    }
}

#[tokio::test]
async fn server_set_runs_independent_instances() -> anyhow::Result<()> {
    let set = capstan_apiserver::ServerSet::new();
    let a = set
        .start("wl-a", Server::builder().plain_http(), "127.0.0.1:0")
        .await?;
    let b = set.start("wl-b", Server::builder(), "127.0.0.1:0").await?;
    assert!(
        set.start("wl-a", Server::builder().plain_http(), "127.0.0.1:0")
            .await
            .is_err()
    );
    let names: Vec<String> = set.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["wl-a", "wl-b"]);
    let ca: Api<ConfigMap> = Api::namespaced(common::client(&a).await?, "default");
    let cb: Api<ConfigMap> = Api::namespaced(common::client(&b).await?, "default");
    ca.create(&PostParams::default(), &cm("only-in-a", &[]))
        .await?;
    assert!(cb.get_opt("only-in-a").await?.is_none());
    assert!(set.stop("wl-a").await);
    assert!(!set.stop("wl-a").await);
    assert!(
        ca.get("only-in-a").await.is_err(),
        "stopped server no longer answers"
    );
    assert_eq!(set.list().len(), 1);
    set.stop_all().await;
    assert!(set.list().is_empty());
    Ok(())
}

//! The differential script: one fixed sequence of API requests covering the semantics a
//! controller host relies on, run the same way against any server.
//!
//! Every step also declares the HTTP status the Kubernetes API defines for it; a server that
//! answers otherwise fails the script on the spot, so the script is checked against the real
//! kube-apiserver, not only compared with it.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::transcript::{Recorder, content};

/// Namespace the script works in (the servers are fresh, so a fixed name is safe).
pub const NAMESPACE: &str = "capstan-diff";

/// Cluster API's Cluster CRD (v1beta1 and v1beta2), from the test fixtures.
const CLUSTER_CRD: &str = include_str!("../fixtures/capi-crds/cluster.x-k8s.io_clusters.yaml");

/// How long garbage collection and namespace deletion may take.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the script.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed below HTTP.
    #[error(transparent)]
    Transcript(#[from] crate::transcript::Error),
    /// A server answered a step with a status the API does not define for it.
    #[error("step {step}: expected HTTP {want}, got {got}: {body}")]
    Status {
        /// The step's name.
        step: String,
        /// The status the API defines.
        want: u16,
        /// The status received.
        got: u16,
        /// The response body.
        body: Value,
    },
    /// A watch delivered fewer events than the changes it must replay.
    #[error("step {step}: watch gave {got} of {want} events before its deadline")]
    WatchShort {
        /// The step's name.
        step: String,
        /// Events received.
        got: usize,
        /// Events expected.
        want: usize,
    },
    /// Garbage collection or namespace deletion did not finish in time.
    #[error("step {step}: server did not settle within the timeout; last state: {last}")]
    NotSettled {
        /// The step's name.
        step: String,
        /// The last body seen.
        last: Value,
    },
    /// A fixture could not be parsed.
    #[error("fixture: {0}")]
    Fixture(String),
    /// A response lacked a value the script needs for a later step.
    #[error("step {step}: response has no {what}")]
    Missing {
        /// The step's name.
        step: String,
        /// What was missing.
        what: &'static str,
    },
}

struct Script {
    rec: Recorder,
    /// Fail on the first status the API does not define (for kube-apiserver, whose answers
    /// define the API); otherwise record and go on, so a comparison sees every difference.
    strict: bool,
}

impl Script {
    async fn expect(
        &mut self,
        want: u16,
        name: &str,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let (got, value) = self
            .rec
            .call(name, method, path, content_type, body.as_ref())
            .await?;
        if got != want && self.strict {
            return Err(Error::Status {
                step: name.into(),
                want,
                got,
                body: value,
            });
        }
        Ok(value)
    }
}

fn cm_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/configmaps/{name}")
}
fn cms() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/configmaps")
}
fn cm(name: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": labels },
        "data": data,
    })
}
impl Script {
    /// Like [`Script::expect`], but records only the status code (for responses as large and
    /// server-specific as a CRD with its schema).
    async fn expect_status_only(
        &mut self,
        want: u16,
        name: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(), Error> {
        let value = self
            .expect(want, name, method, path, Some(content::JSON), body)
            .await?;
        if let Some(last) = self.rec.last_mut() {
            last.body =
                json!({"kind": value["kind"], "metadata": {"name": value["metadata"]["name"]}});
        }
        Ok(())
    }

    /// A watch that must replay `want` events within ten seconds.
    async fn watch(
        &mut self,
        name: &str,
        path: &str,
        want: usize,
        sort: bool,
    ) -> Result<(), Error> {
        let events = self
            .rec
            .watch(name, path, want, Duration::from_secs(10), sort)
            .await?;
        if events.len() < want && self.strict {
            return Err(Error::WatchShort {
                step: name.into(),
                got: events.len(),
                want,
            });
        }
        Ok(())
    }

    /// Polls `path` (unrecorded) until `done` holds for its body. In strict mode, not
    /// settling within [`SETTLE_TIMEOUT`] is an error; otherwise the next recorded step shows
    /// the state reached.
    async fn settle(
        &self,
        step: &str,
        path: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let last = self.rec.peek(path).await;
            if last
                .as_ref()
                .is_some_and(|(code, body)| *code == 200 && done(body))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                if self.strict {
                    return Err(Error::NotSettled {
                        step: step.into(),
                        last: last.map(|(_, b)| b).unwrap_or(Value::Null),
                    });
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `path` (unrecorded) until it answers `want`; see [`Script::settle`].
    async fn settle_status(&self, step: &str, path: &str, want: u16) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let last = self.rec.peek(path).await;
            if last.as_ref().is_some_and(|(code, _)| *code == want) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                if self.strict {
                    return Err(Error::NotSettled {
                        step: step.into(),
                        last: last.map(|(_, b)| b).unwrap_or(Value::Null),
                    });
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A string the script needs from a response; outside strict mode a missing one becomes
    /// empty (later steps then differ, which the comparison reports).
    fn field(
        &self,
        step: &str,
        v: &Value,
        pointer: &str,
        what: &'static str,
    ) -> Result<String, Error> {
        match v.pointer(pointer).and_then(Value::as_str) {
            Some(s) => Ok(s.to_string()),
            None if !self.strict => Ok(String::new()),
            None => Err(Error::Missing {
                step: step.into(),
                what,
            }),
        }
    }
}

/// Runs the whole script through `rec` and returns the recorder with its transcript. With
/// `strict`, any status other than the one the API defines for a step is an error; without,
/// it is recorded and the script goes on.
pub async fn run(rec: Recorder, strict: bool) -> Result<Recorder, Error> {
    let mut s = Script { rec, strict };
    let post = Method::POST;
    let json = Some(content::JSON);

    s.expect(
        201,
        "namespace.create",
        post.clone(),
        "/api/v1/namespaces",
        json,
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})),
    )
    .await?;

    // --- create, get, update with optimistic concurrency
    let a = cm(
        "cm-a",
        json!({"app": "web", "tier": "front"}),
        json!({"a": "1"}),
    );
    let created = s
        .expect(201, "create", post.clone(), &cms(), json, Some(a.clone()))
        .await?;
    let rv1 = s.field(
        "create",
        &created,
        "/metadata/resourceVersion",
        "resourceVersion",
    )?;
    s.expect(
        409,
        "create.duplicate",
        post.clone(),
        &cms(),
        json,
        Some(a.clone()),
    )
    .await?;
    s.expect(200, "get", Method::GET, &cm_path("cm-a"), None, None)
        .await?;
    s.expect(
        404,
        "get.missing",
        Method::GET,
        &cm_path("cm-nope"),
        None,
        None,
    )
    .await?;
    let mut update = created.clone();
    update["data"] = json!({"a": "2"});
    s.expect(
        200,
        "update",
        Method::PUT,
        &cm_path("cm-a"),
        json,
        Some(update.clone()),
    )
    .await?;
    // Same resourceVersion again: it is stale now.
    update["data"] = json!({"a": "3"});
    s.expect(
        409,
        "update.stale",
        Method::PUT,
        &cm_path("cm-a"),
        json,
        Some(update.clone()),
    )
    .await?;
    // ConfigMaps allow unconditional updates (no resourceVersion).
    if let Some(m) = update["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    s.expect(
        200,
        "update.unconditional",
        Method::PUT,
        &cm_path("cm-a"),
        json,
        Some(update.clone()),
    )
    .await?;
    let mut renamed = update.clone();
    renamed["metadata"]["name"] = json!("cm-other");
    s.expect(
        400,
        "update.name-mismatch",
        Method::PUT,
        &cm_path("cm-a"),
        json,
        Some(renamed),
    )
    .await?;

    // --- merge patch
    s.expect(
        200,
        "patch.merge",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::MERGE),
        Some(json!({"metadata": {"labels": {"tier": null, "extra": "y"}}, "data": {"b": "2"}})),
    )
    .await?;
    s.expect(
        409,
        "patch.merge.stale",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::MERGE),
        Some(json!({"metadata": {"resourceVersion": rv1}, "data": {"c": "x"}})),
    )
    .await?;
    s.expect(
        404,
        "patch.merge.missing",
        Method::PATCH,
        &cm_path("cm-nope"),
        Some(content::MERGE),
        Some(json!({"data": {"c": "x"}})),
    )
    .await?;

    // --- JSON patch
    s.expect(
        200,
        "patch.json",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::JSON_PATCH),
        Some(json!([
            {"op": "add", "path": "/data/c", "value": "3"},
            {"op": "replace", "path": "/data/a", "value": "4"},
            {"op": "remove", "path": "/data/b"},
            {"op": "test", "path": "/data/c", "value": "3"},
        ])),
    )
    .await?;
    s.expect(
        422,
        "patch.json.failed-test",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::JSON_PATCH),
        Some(json!([{"op": "test", "path": "/data/a", "value": "nope"}])),
    )
    .await?;
    s.expect(
        422,
        "patch.json.bad-path",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::JSON_PATCH),
        Some(json!([{"op": "remove", "path": "/data/nope"}])),
    )
    .await?;

    // --- strategic merge patch on a built-in with a keyed list (containers merge by name)
    let deploy = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NAMESPACE, "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "registry.example/app:1"},
                    {"name": "sidecar", "image": "registry.example/sidecar:1"},
                ]},
            },
        },
    });
    let deploys = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
    let web = format!("{deploys}/web");
    s.expect(
        201,
        "deployment.create",
        post.clone(),
        &deploys,
        json,
        Some(deploy),
    )
    .await?;
    s.expect(
        200,
        "patch.strategic",
        Method::PATCH,
        &web,
        Some(content::STRATEGIC),
        Some(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "registry.example/sidecar:2"},
            {"name": "extra", "image": "registry.example/extra:1"},
        ]}}}})),
    )
    .await?;
    s.expect(
        200,
        "patch.strategic.delete-directive",
        Method::PATCH,
        &web,
        Some(content::STRATEGIC),
        Some(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "extra", "$patch": "delete"},
        ]}}}})),
    )
    .await?;
    s.expect(
        200,
        "patch.strategic.configmap",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::STRATEGIC),
        Some(json!({"data": {"d": "5"}})),
    )
    .await?;

    // --- server-side apply: ownership, conflicts, force, shared and released fields
    let apply = |manager: &str, force: bool| {
        let mut p = format!("{}?fieldManager={manager}", cm_path("cm-ssa"));
        if force {
            p.push_str("&force=true");
        }
        p
    };
    let ssa = |data: Value| cm("cm-ssa", json!({"app": "ssa"}), data);
    let apply_ct = Some(content::APPLY);
    s.expect(
        201,
        "apply.create",
        Method::PATCH,
        &apply("alice", false),
        apply_ct,
        Some(ssa(json!({"x": "1", "y": "1"}))),
    )
    .await?;
    s.expect(
        200,
        "apply.same-manager",
        Method::PATCH,
        &apply("alice", false),
        apply_ct,
        Some(ssa(json!({"x": "1", "y": "2"}))),
    )
    .await?;
    s.expect(
        409,
        "apply.conflict",
        Method::PATCH,
        &apply("bob", false),
        apply_ct,
        Some(ssa(json!({"x": "2"}))),
    )
    .await?;
    s.expect(
        200,
        "apply.force",
        Method::PATCH,
        &apply("bob", true),
        apply_ct,
        Some(ssa(json!({"x": "2"}))),
    )
    .await?;
    // Alice stops applying x (bob owns it now) and y: y is released and removed, x stays.
    s.expect(
        200,
        "apply.release",
        Method::PATCH,
        &apply("alice", false),
        apply_ct,
        Some(ssa(json!({}))),
    )
    .await?;
    s.expect(
        422,
        "apply.no-field-manager",
        Method::PATCH,
        &cm_path("cm-ssa"),
        apply_ct,
        Some(ssa(json!({"z": "1"}))),
    )
    .await?;
    // An update by another manager after apply shows up in managedFields as operation Update.
    s.expect(
        200,
        "apply.then-merge",
        Method::PATCH,
        &format!("{}?fieldManager=carol", cm_path("cm-ssa")),
        Some(content::MERGE),
        Some(json!({"data": {"w": "1"}})),
    )
    .await?;

    // --- list: label selectors, field selector, pagination
    for (name, labels) in [
        ("cm-l1", json!({"app": "list", "idx": "1"})),
        ("cm-l2", json!({"app": "list", "idx": "2"})),
        ("cm-l3", json!({"app": "list", "idx": "3", "env": "prod"})),
    ] {
        s.expect(
            201,
            &format!("list.setup.{name}"),
            post.clone(),
            &cms(),
            json,
            Some(cm(name, labels, json!({}))),
        )
        .await?;
    }
    let list = |q: &str| format!("{}?{q}", cms());
    let listed = s
        .expect(
            200,
            "list.equality",
            Method::GET,
            &list("labelSelector=app%3Dlist"),
            None,
            None,
        )
        .await?;
    let list_rv = s.field(
        "list.equality",
        &listed,
        "/metadata/resourceVersion",
        "list resourceVersion",
    )?;
    for (name, query) in [
        ("list.set", "labelSelector=idx%20in%20(1,3)"),
        ("list.notin", "labelSelector=app%3Dlist,idx%20notin%20(1)"),
        ("list.not-exists", "labelSelector=app%3Dlist,!env"),
        ("list.exists", "labelSelector=env"),
        ("list.inequality", "labelSelector=app%3Dlist,idx!%3D2"),
        ("list.field-selector", "fieldSelector=metadata.name%3Dcm-l2"),
    ] {
        s.expect(200, name, Method::GET, &list(query), None, None)
            .await?;
    }
    s.expect(
        400,
        "list.bad-selector",
        Method::GET,
        &list("labelSelector=app%3D(%3D"),
        None,
        None,
    )
    .await?;
    let page1 = s
        .expect(
            200,
            "list.page1",
            Method::GET,
            &list("labelSelector=app%3Dlist&limit=2"),
            None,
            None,
        )
        .await?;
    let cont = s.field("list.page1", &page1, "/metadata/continue", "continue token")?;
    s.expect(
        200,
        "list.page2",
        Method::GET,
        &list(&format!("labelSelector=app%3Dlist&limit=2&continue={cont}")),
        None,
        None,
    )
    .await?;
    s.expect(
        200,
        "list.all-namespaces",
        Method::GET,
        "/api/v1/configmaps?labelSelector=app%3Dlist",
        None,
        None,
    )
    .await?;

    // --- watch from a resourceVersion: changes made after the list, replayed in order
    s.expect(
        200,
        "watch.setup.update",
        Method::PATCH,
        &cm_path("cm-l1"),
        Some(content::MERGE),
        Some(json!({"data": {"v": "2"}})),
    )
    .await?;
    s.expect(
        200,
        "watch.setup.delete",
        Method::DELETE,
        &cm_path("cm-l2"),
        None,
        None,
    )
    .await?;
    s.expect(
        201,
        "watch.setup.create",
        post.clone(),
        &cms(),
        json,
        Some(cm("cm-l4", json!({"app": "list", "idx": "4"}), json!({}))),
    )
    .await?;
    // A change outside the selector must not appear.
    s.expect(
        200,
        "watch.setup.unrelated",
        Method::PATCH,
        &cm_path("cm-a"),
        Some(content::MERGE),
        Some(json!({"data": {"z": "1"}})),
    )
    .await?;
    s.watch(
        "watch.from-resource-version",
        &format!(
            "{}&watch=true&resourceVersion={list_rv}&timeoutSeconds=10",
            list("labelSelector=app%3Dlist")
        ),
        3,
        false,
    )
    .await?;
    // resourceVersion=0: the current state as synthetic ADDED events (order unspecified).
    s.watch(
        "watch.from-zero",
        &format!(
            "{}&watch=true&resourceVersion=0&timeoutSeconds=10",
            list("labelSelector=app%3Dlist")
        ),
        3,
        true,
    )
    .await?;

    // --- delete with finalizers
    let mut fin = cm("cm-fin", json!({"app": "fin"}), json!({}));
    fin["metadata"]["finalizers"] = json!(["capstan.dev/hold"]);
    s.expect(
        201,
        "finalizer.create",
        post.clone(),
        &cms(),
        json,
        Some(fin),
    )
    .await?;
    s.expect(
        200,
        "finalizer.delete",
        Method::DELETE,
        &cm_path("cm-fin"),
        None,
        None,
    )
    .await?;
    s.expect(
        200,
        "finalizer.get-terminating",
        Method::GET,
        &cm_path("cm-fin"),
        None,
        None,
    )
    .await?;
    s.expect(
        200,
        "finalizer.delete-again",
        Method::DELETE,
        &cm_path("cm-fin"),
        None,
        None,
    )
    .await?;
    s.expect(
        422,
        "finalizer.add-while-deleting",
        Method::PATCH,
        &cm_path("cm-fin"),
        Some(content::MERGE),
        Some(json!({"metadata": {"finalizers": ["capstan.dev/hold", "capstan.dev/late"]}})),
    )
    .await?;
    s.expect(
        200,
        "finalizer.remove",
        Method::PATCH,
        &cm_path("cm-fin"),
        Some(content::MERGE),
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    s.expect(
        404,
        "finalizer.gone",
        Method::GET,
        &cm_path("cm-fin"),
        None,
        None,
    )
    .await?;
    s.expect(
        404,
        "delete.missing",
        Method::DELETE,
        &cm_path("cm-nope"),
        None,
        None,
    )
    .await?;
    s.expect(
        409,
        "delete.precondition-uid",
        Method::DELETE,
        &cm_path("cm-l3"),
        json,
        Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}})),
    )
    .await?;

    // --- delete with owner references, each propagation policy
    for policy in ["Background", "Foreground", "Orphan"] {
        let lower = policy.to_lowercase();
        let owner_name = format!("owner-{lower}");
        let owner = s
            .expect(
                201,
                &format!("owner.{lower}.create"),
                post.clone(),
                &cms(),
                json,
                Some(cm(&owner_name, json!({"app": "gc"}), json!({}))),
            )
            .await?;
        let uid = s.field("owner.create", &owner, "/metadata/uid", "uid")?;
        let mut child = cm(&format!("child-{lower}"), json!({"app": "gc"}), json!({}));
        child["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        }]);
        s.expect(
            201,
            &format!("owner.{lower}.child-create"),
            post.clone(),
            &cms(),
            json,
            Some(child),
        )
        .await?;
        s.expect(
            200,
            &format!("owner.{lower}.delete"),
            Method::DELETE,
            &cm_path(&owner_name),
            json,
            Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy})),
        )
        .await?;
    }
    // Garbage collection (kube-controller-manager's collector on the real control plane):
    // Background and Foreground delete the children, Orphan strips their ownerReferences.
    let gc_list = list("labelSelector=app%3Dgc");
    let settled = |v: &Value| {
        let items = v["items"].as_array().cloned().unwrap_or_default();
        items.len() == 1
            && items[0]["metadata"]["name"] == "child-orphan"
            && items[0]["metadata"].get("ownerReferences").is_none()
    };
    s.settle("owner.remaining", &gc_list, settled).await?;
    s.expect(200, "owner.remaining", Method::GET, &gc_list, None, None)
        .await?;

    // --- a CustomResourceDefinition (Cluster API's Cluster): served after creation, structural
    // pruning, OpenAPI validation, status subresource, a second served version.
    let crd: Value =
        serde_yaml::from_str(CLUSTER_CRD).map_err(|e| Error::Fixture(e.to_string()))?;
    s.expect_status_only(
        201,
        "crd.create",
        post.clone(),
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(crd),
    )
    .await?;
    let clusters = format!("/apis/cluster.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/clusters");
    s.settle_status("crd.served", &clusters, 200).await?;
    let cluster = |name: &str, kind: &str| {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
                "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": kind, "name": "cp"},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": name},
                "unknownField": "pruned",
            },
        })
    };
    s.expect(
        201,
        "cr.create",
        post.clone(),
        &clusters,
        json,
        Some(cluster("c1", "KubeadmControlPlane")),
    )
    .await?;
    s.expect(
        422,
        "cr.invalid",
        post.clone(),
        &clusters,
        json,
        Some(cluster("c2", "not a kind!")),
    )
    .await?;
    s.expect(
        200,
        "cr.status-through-main",
        Method::PATCH,
        &format!("{clusters}/c1"),
        Some(content::MERGE),
        Some(json!({"status": {"phase": "Provisioned"}, "metadata": {"labels": {"x": "y"}}})),
    )
    .await?;
    s.expect(
        200,
        "cr.status-subresource",
        Method::PATCH,
        &format!("{clusters}/c1/status"),
        Some(content::MERGE),
        Some(json!({"status": {"phase": "Provisioned"}, "metadata": {"labels": {"ignored": "y"}}})),
    )
    .await?;
    s.expect(
        200,
        "cr.get-v1beta1",
        Method::GET,
        &format!("/apis/cluster.x-k8s.io/v1beta1/namespaces/{NAMESPACE}/clusters/c1"),
        None,
        None,
    )
    .await?;

    // --- namespace deletion: Terminating, contents removed, then the namespace itself
    let ns_path = format!("/api/v1/namespaces/{NAMESPACE}");
    s.expect(
        200,
        "namespace.delete",
        Method::DELETE,
        &ns_path,
        None,
        None,
    )
    .await?;
    s.settle_status("namespace.gone", &ns_path, 404).await?;
    s.expect(404, "namespace.gone", Method::GET, &ns_path, None, None)
        .await?;
    Ok(s.rec)
}

//! hello-rust: ConfigMaps labelled `capstan.dev/hello=true` get a greeting and a data digest.
//!
//! Behaviour (shared with the Python and JavaScript versions, held to the
//! conformance vectors in `tests/vectors/hello/`), see README.md.

use capstan_sdk::meta::ObjectMeta;
use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// The label that opts a ConfigMap in.
pub const LABEL: &str = "capstan.dev/hello";
/// The greeting annotation.
pub const GREETING: &str = "capstan.dev/hello-greeting";
/// The status-like annotation: a digest of the data the greeting was made for.
pub const OBSERVED: &str = "capstan.dev/hello-observed";

/// The parts of a ConfigMap this plugin reads.
#[derive(Debug, Deserialize)]
struct ConfigMap {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// FNV-1a (64-bit) over each `data` entry in key order, as `key 0x00 value
/// 0x00`, in 16 lowercase hex digits. Simple to reproduce in any language.
pub fn data_digest(data: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (k, v) in data {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    format!("{h:016x}")
}

/// The hello reconciler.
#[derive(Debug)]
pub struct Hello;

impl Reconciler for Hello {
    fn describe() -> PluginInfo {
        let configmap = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("hello", env!("CARGO_PKG_VERSION"), configmap.clone())
            .permit(configmap, Verbs::PATCH)
            .concurrency(2)
    }

    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error> {
        let cm: ConfigMap = snapshot.primary()?;
        let meta = &cm.metadata;
        let mut outcome = Outcome::new();
        if meta.labels.get(LABEL).map(String::as_str) != Some("true") || meta.is_deleting() {
            return Ok(outcome);
        }
        let greeting = format!("hello, {}", meta.name);
        let observed = data_digest(&cm.data);
        if meta.annotations.get(GREETING) == Some(&greeting)
            && meta.annotations.get(OBSERVED) == Some(&observed)
        {
            return Ok(outcome);
        }
        ctx.info(format!("greeting {}/{}", meta.namespace, meta.name));
        outcome.apply(&json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "annotations": { GREETING: greeting, OBSERVED: observed },
            },
        }))?;
        Ok(outcome)
    }
}

capstan_sdk::export!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_sdk::testing::FakeHost;
    use serde_json::Value;

    fn run(primary: Value) -> Result<Outcome, Error> {
        FakeHost::new().reconcile::<Hello>(&Snapshot::new(&primary, "2026-01-01T00:00:00Z"))
    }

    fn cm(labels: Value, annotations: Value, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7",
                "labels": labels, "annotations": annotations},
            "data": data})
    }

    #[test]
    fn labelled_configmap_gets_greeting_and_digest() {
        let out = run(cm(json!({LABEL: "true"}), json!({}), json!({"a": "1"}))).expect("ok");
        assert_eq!(out.applied().len(), 1);
        let applied: Value = serde_json::from_str(&out.applied()[0]).expect("json");
        assert_eq!(applied["metadata"]["annotations"][GREETING], "hello, web");
        assert_eq!(
            applied["metadata"]["annotations"][OBSERVED],
            "ac4d51820e249a1d"
        );
        assert_eq!(applied["metadata"]["namespace"], "default");
    }

    #[test]
    fn unlabelled_or_false_label_is_left_alone() {
        assert!(
            run(cm(json!({}), json!({}), json!({})))
                .expect("ok")
                .applied()
                .is_empty()
        );
        let off = run(cm(json!({LABEL: "false"}), json!({}), json!({}))).expect("ok");
        assert!(off.applied().is_empty());
    }

    #[test]
    fn up_to_date_configmap_needs_nothing() {
        let digest = data_digest(&BTreeMap::from([("a".to_owned(), "1".to_owned())]));
        let done = cm(
            json!({LABEL: "true"}),
            json!({GREETING: "hello, web", OBSERVED: digest}),
            json!({"a": "1"}),
        );
        assert!(run(done).expect("ok").applied().is_empty());
    }

    #[test]
    fn digest_depends_on_keys_values_and_their_boundaries() {
        let d = |pairs: &[(&str, &str)]| {
            data_digest(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert_eq!(d(&[]), "cbf29ce484222325");
        assert_ne!(d(&[("ab", "c")]), d(&[("a", "bc")]));
        assert_ne!(d(&[("a", "1")]), d(&[("a", "2")]));
    }

    #[test]
    fn a_primary_that_is_not_an_object_is_terminal() {
        let snap = Snapshot::from_wit(
            capstan_sdk::bindings::capstan::reconciler::types::Snapshot {
                primary: "[1,2]".to_owned(),
                related: Vec::new(),
                now: "2026-01-01T00:00:00Z".to_owned(),
                workload: capstan_sdk::Connection::NotApplicable,
            },
        );
        assert!(matches!(
            FakeHost::new().reconcile::<Hello>(&snap),
            Err(Error::Terminal(_))
        ));
    }

    #[test]
    fn describe_declares_configmap_patch() {
        let info = Hello::describe();
        assert_eq!(info.name, "hello");
        assert_eq!(info.primary, Gvk::new("", "v1", "ConfigMap"));
        assert_eq!(info.permissions[0].verbs, Verbs::PATCH);
    }
}

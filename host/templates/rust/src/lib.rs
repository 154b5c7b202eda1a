//! {{name}}: a Capstan reconciler in Rust (scaffolded by `capstan plugin new --lang rust`).
//!
//! It starts as the hello reconciler: ConfigMaps labelled `capstan.dev/hello=true`
//! get a greeting and a digest of their data, and it passes Capstan's
//! conformance vectors (tests/vectors/hello/) as generated. Change `describe`
//! and `reconcile` to make it yours; README.md says how to build and test.

use capstan_sdk::meta::ObjectMeta;
use capstan_sdk::{Context, Error, Gvk, Outcome, PluginInfo, Reconciler, Snapshot, Verbs};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

const LABEL: &str = "capstan.dev/hello";
const GREETING: &str = "capstan.dev/hello-greeting";
const OBSERVED: &str = "capstan.dev/hello-observed";

/// The parts of a ConfigMap this plugin reads.
#[derive(Debug, Deserialize)]
struct ConfigMap {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// FNV-1a (64-bit) over each `data` entry in key order as `key 0x00 value 0x00`.
fn data_digest(data: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in data {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The reconciler.
#[derive(Debug)]
pub struct Plugin;

impl Reconciler for Plugin {
    fn describe() -> PluginInfo {
        let configmap = Gvk::new("", "v1", "ConfigMap");
        PluginInfo::new("{{name}}", env!("CARGO_PKG_VERSION"), configmap.clone())
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

capstan_sdk::export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_sdk::testing::FakeHost;

    #[test]
    fn labelled_configmap_gets_greeting_and_digest() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "default", "labels": {LABEL: "true"}},
            "data": {"a": "1"}});
        let out = FakeHost::new()
            .reconcile::<Plugin>(&Snapshot::new(&cm, "2026-01-01T00:00:00Z"))
            .expect("ok");
        let applied: serde_json::Value = serde_json::from_str(&out.applied()[0]).expect("json");
        assert_eq!(applied["metadata"]["annotations"][GREETING], "hello, web");
        assert_eq!(applied["metadata"]["annotations"][OBSERVED], "ac4d51820e249a1d");
    }
}

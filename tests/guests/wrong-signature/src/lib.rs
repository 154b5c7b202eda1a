//! Test guest whose `reconcile` export has another type than the contract's.
//!
//! Its imports and its `describe` are the served `capstan:reconciler@0.1.0`'s
//! (the world uses the contract's own WIT), so only `reconcile`'s type tells
//! it apart: the host must refuse it when loading, since a reconcile calls
//! `reconcile` without checking its type again.

// wit-bindgen's generated canonical-ABI glue uses `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "capstan-test:wrong-signature/reconciler",
        path: ["../../../wit", "wit"],
        generate_all,
    });
}

use bindings::capstan::reconciler::log::{Level, log};
use bindings::capstan::reconciler::types::{Capabilities, Gvk, PluginInfo};

struct WrongSignature;

impl bindings::Guest for WrongSignature {
    fn describe() -> PluginInfo {
        log(Level::Info, "describe");
        PluginInfo {
            name: "wrong-signature".to_owned(),
            version: "0.1.0".to_owned(),
            primary: Gvk {
                group: String::new(),
                version: "v1".to_owned(),
                kind: "ConfigMap".to_owned(),
            },
            watches: Vec::new(),
            relations: Vec::new(),
            permissions: Vec::new(),
            finalizer: None,
            concurrency: None,
            resync_seconds: None,
            capabilities: Capabilities::empty(),
        }
    }

    fn reconcile(snapshot: String) -> String {
        snapshot
    }
}

// The generated canonical-ABI exports are `unsafe extern` functions.
#[allow(unsafe_code)]
mod export {
    use super::{WrongSignature, bindings};
    bindings::export!(WrongSignature with_types_in bindings);
}

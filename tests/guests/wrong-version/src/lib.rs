//! Test guest built against a newer contract version (0.2.0) than the host serves.

// wit-bindgen's generated canonical-ABI glue uses `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ world: "reconciler", path: "wit" });
}

struct WrongVersion;

impl bindings::Guest for WrongVersion {
    fn describe() -> String {
        bindings::capstan::reconciler::log::log("describe");
        "wrong-version".to_owned()
    }
}

bindings::export!(WrongVersion with_types_in bindings);

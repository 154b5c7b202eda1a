//! Capstan's guest SDK: write a reconciler in Rust and build it to a component.
//!
//! A plugin implements [`Reconciler`] and names its type in [`export!`]:
//!
//! ```ignore
//! struct Hello;
//! impl capstan_sdk::Reconciler for Hello {
//!     fn describe() -> capstan_sdk::PluginInfo { /* ... */ }
//!     fn reconcile(ctx: &capstan_sdk::Context, snap: &capstan_sdk::Snapshot)
//!         -> Result<capstan_sdk::Outcome, capstan_sdk::Error> { /* ... */ }
//! }
//! capstan_sdk::export!(Hello);
//! ```
//!
//! The logic sees the host only through [`Context`] (log, memo, crypto, cloud), so the same
//! code runs in the component and natively under [`testing::FakeHost`] in a
//! plain `cargo test`.

extern crate self as capstan_sdk;

pub mod arena;
pub mod capi;
pub mod conditions;
mod context;
mod info;
pub mod meta;
mod outcome;
mod snapshot;
pub mod testing;

pub use context::{Cloud, Context, Crypto, Host, Level};
pub use outcome::Outcome;
pub use snapshot::Snapshot;

/// The one guest-side binding of the WIT contract (`wit/`).
///
/// On `wasm32` the imports call the host; on other targets wit-bindgen makes
/// them `unreachable!()`, which is why plugin code goes through [`Context`].
// wit-bindgen generates the canonical-ABI glue with `unsafe`; it is audited upstream.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "reconciler",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_reconciler",
        default_bindings_module: "::capstan_sdk::bindings",
        runtime_path: "::capstan_sdk::__wit_bindgen::rt",
        bitflags_path: "::capstan_sdk::__wit_bindgen::rt::bitflags",
        additional_derives: [PartialEq, Eq],
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::capstan::reconciler::types::{
    Capabilities, Connection, Event, EventType, FieldPair, Gvk, KeyMapping, ObjectRef, Permission,
    PluginInfo, Relation, RelationSelector, Target, Verbs, Watch,
};

/// The `crypto` capability's types (keys and certificates as PEM text).
pub mod crypto {
    pub use crate::bindings::capstan::reconciler::crypto::{
        CertificateRequest, CertificateUsage, KeyAlgorithm, KeyPair, KubeconfigRequest,
    };
}

/// The `cloud` capability's types.
pub mod cloud {
    pub use crate::bindings::capstan::reconciler::cloud::{Endpoint, Vm};
}

/// Why a reconcile failed; the host retries transient errors with backoff and
/// waits for a change of the primary or a watched object after terminal ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Worth retrying (a dependency is not ready yet, a conflict).
    Transient(String),
    /// Retrying cannot help until the input changes (invalid spec).
    Terminal(String),
}

impl Error {
    /// A transient error with this message.
    pub fn transient(msg: impl Into<String>) -> Self {
        Self::Transient(msg.into())
    }

    /// A terminal error with this message.
    pub fn terminal(msg: impl Into<String>) -> Self {
        Self::Terminal(msg.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(m) => write!(f, "transient: {m}"),
            Self::Terminal(m) => write!(f, "terminal: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for bindings::capstan::reconciler::types::ReconcileError {
    fn from(e: Error) -> Self {
        match e {
            Error::Transient(m) => Self::Transient(m),
            Error::Terminal(m) => Self::Terminal(m),
        }
    }
}

/// A reconciler plugin: its self-description and its reconcile function.
pub trait Reconciler {
    /// What the plugin reconciles, watches, reads and writes. Must be pure.
    fn describe() -> PluginInfo;

    /// Compute the desired changes for one primary object from its snapshot.
    /// Must be deterministic: read time from [`Snapshot::now`], never a clock.
    fn reconcile(ctx: &Context<'_>, snapshot: &Snapshot) -> Result<Outcome, Error>;
}

/// Export a [`Reconciler`] implementation as the component's `describe` and
/// `reconcile`. Expands to nothing on non-wasm targets, so the plugin crate
/// also builds natively (as an rlib for tests and benchmarks).
#[macro_export]
macro_rules! export {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        // The generated canonical-ABI exports are `unsafe extern` functions.
        #[allow(unsafe_code)]
        const _: () = {
            struct CapstanExport;
            impl $crate::bindings::Guest for CapstanExport {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Reconciler>::describe()
                }
                fn reconcile(
                    snapshot: $crate::bindings::capstan::reconciler::types::Snapshot,
                ) -> ::core::result::Result<
                    $crate::bindings::capstan::reconciler::types::Outcome,
                    $crate::bindings::capstan::reconciler::types::ReconcileError,
                > {
                    $crate::__run::<$ty>(snapshot)
                }
            }
    $crate::bindings::__export_reconciler!(CapstanExport with_types_in $crate::bindings);
        };
    };
}

/// The body of the exported `reconcile`: wrap the snapshot, call the plugin
/// with the real host, lower the result.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub fn __run<R: Reconciler>(
    snapshot: bindings::capstan::reconciler::types::Snapshot,
) -> Result<
    bindings::capstan::reconciler::types::Outcome,
    bindings::capstan::reconciler::types::ReconcileError,
> {
    let ctx = Context::imports();
    let snapshot = Snapshot::from_wit(snapshot);
    R::reconcile(&ctx, &snapshot)
        .map(Outcome::into_wit)
        .map_err(Into::into)
}

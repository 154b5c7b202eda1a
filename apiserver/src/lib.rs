//! An in-memory Kubernetes API server that kube-rs and kubectl cannot tell from the real one.
//!
//! It serves the Kubernetes REST API over HTTPS (a CA generated at start, bearer-token and
//! client-certificate auth) or plain HTTP, from memory: discovery (legacy and aggregated),
//! built-in kinds, CustomResourceDefinitions with structural schemas, all verbs including
//! watch, patches (merge, JSON, strategic, server-side apply), finalizers and garbage
//! collection. See `docs/apiserver.md` for what is served and how it differs from
//! kube-apiserver.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capstan_apiserver::ServerError> {
//! let server = capstan_apiserver::Server::builder()
//!     .plain_http()                       // or .tls() (the default)
//!     .crds_from_dir("tests/fixtures/capi-crds")
//!     .start("127.0.0.1:0")
//!     .await?;
//! let _kubeconfig: &str = server.kubeconfig_yaml(); // kube::config::Kubeconfig::from_yaml
//! let _url = server.url();
//! let _calls = server.metrics().by_verb("POST");
//! server.set_rate_limit(Some((100.0, 10)));    // 429 + Retry-After beyond
//! server.compact();                            // watches from older versions get 410
//! server.shutdown().await;
//!
//! // Many servers in one process, one per simulated workload cluster:
//! let set = capstan_apiserver::ServerSet::new();
//! set.start("wl-1", capstan_apiserver::Server::builder(), "127.0.0.1:0").await?;
//! assert_eq!(set.list().len(), 1);
//! set.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! Data flow: [`server`] accepts connections and authenticates; [`http`] routes a request to
//! a verb; reads come straight from [`store`] (stored JSON bytes); writes go through [`ops`]
//! (metadata, [`schema`] admission, finalizers, garbage collection) into [`store`], which
//! assigns the cluster-wide resourceVersion and fans events out to watches.

pub mod defaults;
pub mod discovery;
pub mod http;
pub mod instance;
pub mod meta;
pub mod metrics;
pub mod ops;
pub mod protobuf;
pub mod registry;
pub mod schema;
pub mod server;
pub mod status;
pub mod store;
pub mod table;

pub use instance::{Instance, InstanceOptions};
pub use metrics::MetricsSnapshot;
pub use server::{Server, ServerBuilder, ServerError, ServerSet};
pub use status::ApiError;

//! The HTTP/2 client of a workload cluster: its informers' watches and every request share one TLS connection.
//!
//! kube's own client speaks HTTP/1.1 only, and an HTTP/1.1 watch holds a connection for as
//! long as it runs: with the kinds the Cluster API plugins watch in a workload cluster
//! (Nodes, Pods, ...) that was seven connections per cluster, fourteen sockets when the
//! in-memory cloud serves the cluster from the same process, so a 2,000-cluster simulation
//! ran into the process's open-file limit (20,000 here) at 1,758 clusters, each connection
//! with its own TLS and HTTP buffers on both ends. Over HTTP/2 each watch is a stream of
//! one connection.
//!
//! The client is assembled from kube's own parts (its TLS configuration from the
//! kubeconfig, base-URI and authentication layers), with hyper-util's client in HTTP/2-only
//! mode and keep-alive pings so a dead connection is noticed. Every kube-apiserver speaks
//! HTTP/2; a workload endpoint that does not (an HTTP/1.1-only proxy) fails the
//! connection's probe and is reported unreachable. kube's client has no read timeout
//! either: a request that hears nothing is bounded by its caller (probe timeout, watch
//! timeouts), and the pings bound a silent connection.

use kube::client::{Body, ClientBuilder, ConfigExt};
use std::time::Duration;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;

/// The client's service stack under kube's `ClientBuilder`.
pub(crate) type H2Service =
    BoxCloneService<http::Request<Body>, http::Response<hyper::body::Incoming>, tower::BoxError>;

/// Interval of HTTP/2 keep-alive pings on an idle connection.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A client builder for `config` whose requests go over one HTTP/2 connection.
pub(crate) fn builder(config: &kube::Config) -> Result<ClientBuilder<H2Service>, kube::Error> {
    // ALPN (`h2` only) is set by the connector builder.
    let tls = config.rustls_client_config()?;
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(config.connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(tcp);
    let client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(PING_INTERVAL)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(https);
    let service = ServiceBuilder::new()
        .boxed_clone()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(Into::<tower::BoxError>::into)
        .service(client);
    Ok(ClientBuilder::new(
        service,
        config.default_namespace.clone(),
    ))
}

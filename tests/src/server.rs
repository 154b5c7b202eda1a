//! The API server a test runs against: capstan-apiserver in memory, or a real control plane.
//!
//! Test bodies take a [`TestServer`] and use only its client and kubeconfig, so the same body
//! runs against both; [`server_test!`](crate::server_test) declares one `#[tokio::test]` per
//! server for a body.

use std::path::{Path, PathBuf};

use crate::controlplane::{self, ControlPlane};

/// Errors of starting or connecting to a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The in-memory server failed to start.
    #[error("in-memory API server: {0}")]
    Memory(#[from] capstan_apiserver::ServerError),
    /// The real control plane failed to start or connect.
    #[error(transparent)]
    Real(#[from] controlplane::Error),
    /// A temporary folder or kubeconfig file could not be written.
    #[error("test server: {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Which implementation a [`TestServer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// capstan-apiserver, in this process.
    Memory,
    /// etcd + kube-apiserver from `make controlplane`, in a child process.
    Real,
}

/// A running API server for one test.
#[derive(Debug)]
pub enum TestServer {
    /// capstan-apiserver, started for this test.
    Memory {
        /// The server (stopped when the test's runtime ends).
        server: capstan_apiserver::Server,
        /// Its kubeconfig, written to a file for tools that need one.
        kubeconfig: PathBuf,
        /// Holds the kubeconfig's folder.
        _dir: tempfile::TempDir,
    },
    /// The process-wide real control plane (tests share it; use your own namespace).
    Real(&'static ControlPlane),
    /// A real control plane owned by this test, stopped on drop.
    RealOwned(ControlPlane),
}

impl TestServer {
    /// A fresh capstan-apiserver over TLS on a loopback port.
    pub async fn memory() -> Result<TestServer, Error> {
        Self::memory_with(capstan_apiserver::Server::builder()).await
    }

    /// A fresh capstan-apiserver from a builder (CRDs, latency, rate limits ...).
    pub async fn memory_with(
        builder: capstan_apiserver::ServerBuilder,
    ) -> Result<TestServer, Error> {
        let server = builder.start("127.0.0.1:0").await?;
        let dir = tempfile::Builder::new()
            .prefix("capstan-memory-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating a temporary folder",
                source,
            })?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        Ok(TestServer::Memory {
            server,
            kubeconfig,
            _dir: dir,
        })
    }

    /// The shared real control plane, or `None` (after a printed skip notice) when its binary
    /// is not built and not required.
    pub async fn real() -> Result<Option<TestServer>, Error> {
        Ok(ControlPlane::shared().await?.map(TestServer::Real))
    }

    /// A real control plane of this test's own (for tests that need an empty cluster).
    pub async fn real_owned() -> Result<Option<TestServer>, Error> {
        Ok(ControlPlane::start().await?.map(TestServer::RealOwned))
    }

    /// Which implementation this is.
    pub fn kind(&self) -> ServerKind {
        match self {
            TestServer::Memory { .. } => ServerKind::Memory,
            TestServer::Real(_) | TestServer::RealOwned(_) => ServerKind::Real,
        }
    }

    /// A new admin client. Make one per tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        Ok(controlplane::client_from_kubeconfig(self.kubeconfig_path()).await?)
    }

    /// A kubeconfig file for this server (admin credentials, current context set).
    pub fn kubeconfig_path(&self) -> &Path {
        match self {
            TestServer::Memory { kubeconfig, .. } => kubeconfig,
            TestServer::Real(cp) => cp.kubeconfig_path(),
            TestServer::RealOwned(cp) => cp.kubeconfig_path(),
        }
    }
}

/// Declares a module with one `#[tokio::test]` per server for an async test body
/// `async fn body(server: &TestServer) -> anyhow::Result<()>` defined next to it. The real
/// variant skips (with a printed notice) when the control plane binary is absent and not
/// required.
///
/// ```ignore
/// async fn creates_configmaps(server: &TestServer) -> anyhow::Result<()> { ... }
/// capstan_tests::server_test!(creates_configmaps);
/// // -> tests creates_configmaps::memory and creates_configmaps::real
/// ```
#[macro_export]
macro_rules! server_test {
    // `server_test!(body, multi_thread)`: the same on a two-worker runtime (bodies whose
    // background tasks must progress while the test blocks, e.g. host managers).
    ($body:ident, multi_thread) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() -> anyhow::Result<()> {
                let server = $crate::server::TestServer::memory().await?;
                super::$body(&server).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() -> anyhow::Result<()> {
                let Some(server) = $crate::server::TestServer::real().await? else {
                    return Ok(());
                };
                super::$body(&server).await
            }
        }
    };
    ($body:ident) => {
        mod $body {
            #[tokio::test]
            async fn memory() -> anyhow::Result<()> {
                let server = $crate::server::TestServer::memory().await?;
                super::$body(&server).await
            }

            #[tokio::test]
            async fn real() -> anyhow::Result<()> {
                let Some(server) = $crate::server::TestServer::real().await? else {
                    return Ok(());
                };
                super::$body(&server).await
            }
        }
    };
}

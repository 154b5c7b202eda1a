//! `capstan-apiserver`: runs one in-memory Kubernetes API server until interrupted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// An in-memory Kubernetes API server.
#[derive(Debug, Parser)]
#[command(name = "capstan-apiserver", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve plain HTTP without authentication instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// CRD YAML files or directories to install at start (repeatable).
    #[arg(long = "crds")]
    crds: Vec<PathBuf>,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Request rate limit (requests per second); 429 with Retry-After beyond it.
    #[arg(long)]
    qps: Option<f64>,
    /// Burst for --qps.
    #[arg(long, default_value_t = 100)]
    burst: u32,
    /// Watch history window (events).
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Fixed bearer token (default: random).
    #[arg(long)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut b = capstan_apiserver::Server::builder()
        .history_limit(args.history)
        .latency(Duration::from_millis(args.latency_ms));
    if args.plain_http {
        b = b.plain_http();
    }
    for c in &args.crds {
        b = b.crds_from_dir(c);
    }
    if let Some(q) = args.qps {
        b = b.rate_limit(q, args.burst);
    }
    if let Some(t) = &args.token {
        b = b.token(t);
    }
    let server = b
        .start(&format!("{}:{}", args.address, args.port))
        .await
        .context("starting the API server")?;
    if let Some(p) = &args.kubeconfig {
        server
            .write_kubeconfig(p)
            .with_context(|| format!("writing kubeconfig {}", p.display()))?;
    }
    // The first stdout line is the URL, so a parent process can wait for readiness.
    println!("{}", server.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    server.shutdown().await;
    Ok(())
}

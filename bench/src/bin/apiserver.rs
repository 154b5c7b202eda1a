//! Benchmark of capstan-apiserver over real HTTP from another process: create, get, list,
//! patch, watch fan-out and memory per stored object. Writes bench/results/apiserver.{md,json}.
//!
//! Run: `cargo run --release -p capstan-bench --bin apiserver`. The binary re-executes itself
//! with `--serve` as the server child process; the parent is the load generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const CONNECTIONS: usize = 16;
const CREATES: usize = 20_000;
const GETS: usize = 40_000;
const PATCHES: usize = 10_000;
const LIST_OBJECTS: usize = 1_000;
const LISTS: usize = 200;
const WATCHERS: usize = 10;
const WATCH_EVENTS: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::args().any(|a| a == "--serve") {
        return rt.block_on(serve());
    }
    rt.block_on(bench())
}

async fn serve() -> anyhow::Result<()> {
    let server = capstan_apiserver::Server::builder()
        .plain_http()
        .history_limit(50_000)
        .start("127.0.0.1:0")
        .await?;
    println!("{}", server.url());
    // Runs until the parent closes stdin.
    let mut buf = [0u8; 1];
    let _ = tokio::io::stdin().read(&mut buf).await;
    server.shutdown().await;
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn call(
    s: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    ct: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    s.ready().await?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("content-type", ct)
        .header("user-agent", "capstan-bench/0")
        .body(Full::new(body))?;
    let resp = s.send_request(req).await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

fn cm(ns: &str, name: &str, i: usize) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "shard": (i % 10).to_string()},
                "annotations": {"bench.capstan.dev/sent": now_ns().to_string()}},
            "data": {"config.yaml": format!("replicas: {i}\nimage: registry.example/app:v1\nfeatureFlags: [a, b, c]\n"), "owner": "bench"}
        }))
        .unwrap_or_default(),
    )
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

struct Phase {
    name: &'static str,
    ops: usize,
    secs: f64,
    lat_us: Vec<f64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        percentile(&self.lat_us, p)
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[idx.min(s.len() - 1)]
}

/// Runs `total` requests over `CONNECTIONS` keep-alive connections; `make(i)` builds request i.
async fn load<F>(
    addr: &str,
    name: &'static str,
    total: usize,
    expect: u16,
    make: F,
) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> (&'static str, String, &'static str, Bytes) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        conns.push(connect(addr).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns {
        let make = make.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (m, p, ct, b) = make(i);
                let t = Instant::now();
                let (code, body) = call(&mut c, m, &p, ct, b).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                if code != expect {
                    bail!("{m} {p}: HTTP {code}: {}", String::from_utf8_lossy(&body));
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat_us = Vec::new();
    for t in tasks {
        lat_us.extend(t.await??);
    }
    Ok(Phase {
        name,
        ops: total,
        secs: start.elapsed().as_secs_f64(),
        lat_us,
    })
}

async fn metric(addr: &str, name: &str) -> anyhow::Result<f64> {
    let mut c = connect(addr).await?;
    let (_, body) = call(&mut c, "GET", "/metrics", "text/plain", Bytes::new()).await?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("metric {name} missing"))
}

async fn create_ns(addr: &str, ns: &str) -> anyhow::Result<()> {
    let mut c = connect(addr).await?;
    let body = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )?;
    let (code, _) = call(
        &mut c,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        body.into(),
    )
    .await?;
    if code != 201 {
        bail!("namespace {ns}: HTTP {code}");
    }
    Ok(())
}

/// Opens a watch stream and returns delivery latencies (µs) of `expect` ADDED events.
async fn watcher(
    addr: String,
    ns: &str,
    rv: String,
    expect: usize,
    ready: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<f64>> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET /api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: bench\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Status line and headers.
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    ready.fetch_add(1, Ordering::SeqCst);
    let mut lat = Vec::with_capacity(expect);
    let mut pending = String::new();
    while lat.len() < expect {
        // Chunked encoding: size line, data, CRLF.
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            bail!("watch closed early");
        }
        let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
        if n == 0 {
            continue;
        }
        let mut buf = vec![0u8; n + 2];
        r.read_exact(&mut buf).await?;
        let received = now_ns();
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(pos) = pending.find('\n') {
            let ev: Value = serde_json::from_str(&pending[..pos])?;
            pending.drain(..=pos);
            if ev["type"] == "ADDED" {
                let sent: u128 = ev["object"]["metadata"]["annotations"]["bench.capstan.dev/sent"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(received);
                lat.push(received.saturating_sub(sent) as f64 / 1e3);
            }
        }
    }
    Ok(lat)
}

async fn bench() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("--serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let url = out.next_line().await?.context("server printed no URL")?;
    let addr = url.trim_start_matches("http://").to_string();
    eprintln!("server at {url} (pid {:?})", child.id());

    create_ns(&addr, "bench").await?;
    create_ns(&addr, "listing").await?;
    create_ns(&addr, "watch").await?;
    let rss0 = metric(&addr, "process_resident_memory_bytes").await?;
    let json0 = metric(&addr, "apiserver_stored_json_bytes").await?;

    let create = load(&addr, "create", CREATES, 201, |i| {
        (
            "POST",
            "/api/v1/namespaces/bench/configmaps".into(),
            "application/json",
            cm("bench", &format!("cm-{i:06}"), i),
        )
    })
    .await?;
    let rss1 = metric(&addr, "process_resident_memory_bytes").await?;
    let json1 = metric(&addr, "apiserver_stored_json_bytes").await?;
    let mem_ratio = (rss1 - rss0) / (json1 - json0);
    let bytes_per_obj = (json1 - json0) / CREATES as f64;

    let get = load(&addr, "get", GETS, 200, |i| {
        let n = (i * 7919) % CREATES;
        (
            "GET",
            format!("/api/v1/namespaces/bench/configmaps/cm-{n:06}"),
            "application/json",
            Bytes::new(),
        )
    })
    .await?;

    let patch = load(&addr, "patch (merge)", PATCHES, 200, |i| {
        let n = (i * 104_729) % CREATES;
        let body = format!(
            r#"{{"metadata":{{"labels":{{"patched":"v{i}"}}}},"data":{{"owner":"patch-{i}"}}}}"#
        );
        (
            "PATCH",
            format!("/api/v1/namespaces/bench/configmaps/cm-{n:06}"),
            "application/merge-patch+json",
            Bytes::from(body),
        )
    })
    .await?;

    load(&addr, "seed list", LIST_OBJECTS, 201, |i| {
        (
            "POST",
            "/api/v1/namespaces/listing/configmaps".into(),
            "application/json",
            cm("listing", &format!("l-{i:05}"), i),
        )
    })
    .await?;
    let list = load(&addr, "list 1k objects", LISTS, 200, |_| {
        (
            "GET",
            "/api/v1/namespaces/listing/configmaps".into(),
            "application/json",
            Bytes::new(),
        )
    })
    .await?;
    let list_sel = load(&addr, "list 1k, labelSelector shard=3", LISTS, 200, |_| {
        (
            "GET",
            "/api/v1/namespaces/listing/configmaps?labelSelector=shard%3D3".into(),
            "application/json",
            Bytes::new(),
        )
    })
    .await?;

    // Watch fan-out: 10 watchers, paced writes, latency from just before the POST to receipt.
    let rv = {
        let mut c = connect(&addr).await?;
        let (_, body) = call(
            &mut c,
            "GET",
            "/api/v1/namespaces/watch/configmaps",
            "application/json",
            Bytes::new(),
        )
        .await?;
        let v: Value = serde_json::from_slice(&body)?;
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    let ready = Arc::new(AtomicUsize::new(0));
    let mut ws = Vec::new();
    for _ in 0..WATCHERS {
        ws.push(tokio::spawn(watcher(
            addr.clone(),
            "watch",
            rv.clone(),
            WATCH_EVENTS,
            ready.clone(),
        )));
    }
    while ready.load(Ordering::SeqCst) < WATCHERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = connect(&addr).await?;
    let wstart = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..WATCH_EVENTS {
        tick.tick().await;
        let (code, body) = call(
            &mut c,
            "POST",
            "/api/v1/namespaces/watch/configmaps",
            "application/json",
            cm("watch", &format!("w-{i:05}"), i),
        )
        .await?;
        if code != 201 {
            bail!("watch create: {code} {}", String::from_utf8_lossy(&body));
        }
    }
    let mut wl = Vec::new();
    for w in ws {
        wl.extend(w.await??);
    }
    let watch = Phase {
        name: "watch delivery (10 watchers)",
        ops: WATCHERS * WATCH_EVENTS,
        secs: wstart.elapsed().as_secs_f64(),
        lat_us: wl,
    };

    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;

    let phases = [&create, &get, &patch, &list, &list_sel, &watch];
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let machine = format!("{cores} cores, {cpu}");
    let command = "cargo run --release -p capstan-bench --bin apiserver";
    let j = json!({
        "machine": machine,
        "command": command,
        "connections": CONNECTIONS,
        "phases": phases.iter().map(|p| json!({
            "name": p.name, "requests": p.ops, "seconds": p.secs, "per_second": p.rate(),
            "latency_p50_us": p.pct(0.5), "latency_p99_us": p.pct(0.99),
        })).collect::<Vec<_>>(),
        "memory": {"objects": CREATES, "json_bytes_per_object": bytes_per_obj, "rss_delta_bytes": rss1 - rss0,
            "json_delta_bytes": json1 - json0, "rss_per_json_byte": mem_ratio},
        "targets": {"creates_per_second": 10000, "gets_per_second": 20000, "watch_p99_us": 5000, "rss_per_json_byte": 2.0},
    });
    let mut md = String::new();
    md.push_str("# capstan-apiserver benchmark\n\n");
    md.push_str(&format!("Machine: {machine}. Command: `{command}`.\n\n"));
    md.push_str(&format!(
        "Load comes from a separate process (this binary re-executed with `--serve` is the server) over real HTTP/1.1 \
         keep-alive connections ({CONNECTIONS} for throughput phases); client and server share the machine's cores.\n\n"
    ));
    md.push_str("| phase | requests | requests/s | p50 latency (µs) | p99 latency (µs) |\n|---|---:|---:|---:|---:|\n");
    for p in phases {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |\n",
            p.name,
            p.ops,
            p.rate(),
            p.pct(0.5),
            p.pct(0.99)
        ));
    }
    md.push_str(&format!(
        "\nWatch: {WATCHERS} watchers on one namespace, {WATCH_EVENTS} creates paced every 2 ms; latency is from just before the \
         POST to the event's arrival at each watcher (requests/s column = deliveries/s).\n\n\
         Memory: {CREATES} ConfigMaps of {bytes_per_obj:.0} JSON bytes each: resident memory grew {:.1} MB for {:.1} MB of stored JSON, \
         **{mem_ratio:.2} bytes of RSS per JSON byte** (target <= 2).\n\n\
         Targets: >= 10,000 creates/s, >= 20,000 gets/s, watch p99 < 5,000 µs, memory <= 2x JSON.\n",
        (rss1 - rss0) / 1e6,
        (json1 - json0) / 1e6
    ));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("apiserver.json"),
        serde_json::to_string_pretty(&j)?,
    )?;
    std::fs::write(dir.join("apiserver.md"), &md)?;
    println!("{md}");
    Ok(())
}

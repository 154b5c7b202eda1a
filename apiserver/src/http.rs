//! Request handling: authentication, knobs, routing, the REST verbs and watch streaming.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery;
use crate::meta::{self, FieldTerm, LabelSelector};
use crate::metrics::Metrics;
use crate::ops::{self, DeleteOpts, Propagation, Sub};
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::store::{self, Event, EventType, Obj, State};
use crate::table::{self, Include};

/// Largest request body accepted (kube-apiserver's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Response body: a whole buffer or a watch stream.
pub type Body = Either<Full<Bytes>, StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>>;

/// Token bucket for the request-rate knob.
#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Fault and load knobs, changeable at run time.
#[derive(Debug, Default)]
pub struct Knobs {
    latency: Mutex<Duration>,
    rate: Mutex<Option<Bucket>>,
}

impl Knobs {
    /// Sets the latency added to every request.
    pub fn set_latency(&self, d: Duration) {
        *self.latency.lock() = d;
    }

    /// Limits requests to `qps` with `burst`; `None` lifts the limit.
    pub fn set_rate_limit(&self, limit: Option<(f64, u32)>) {
        *self.rate.lock() = limit.map(|(qps, burst)| Bucket {
            qps: qps.max(0.001),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        });
    }

    fn latency(&self) -> Duration {
        *self.latency.lock()
    }

    /// Takes a token; `Err(seconds)` when the caller must retry later.
    fn admit(&self) -> Result<(), u64> {
        let mut g = self.rate.lock();
        let Some(b) = g.as_mut() else { return Ok(()) };
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.qps).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / b.qps).ceil().max(1.0) as u64)
        }
    }
}

/// Shared state of one server.
#[derive(Debug)]
pub struct Inner {
    /// The store.
    pub state: RwLock<State>,
    /// Request metrics.
    pub metrics: Metrics,
    /// Knobs.
    pub knobs: Knobs,
    /// Accepted bearer tokens (empty with auth off).
    pub tokens: Vec<String>,
    /// Whether requests must authenticate.
    pub require_auth: bool,
    /// `host:port` advertised in discovery.
    pub addr: String,
    /// Bumped to end every open watch.
    pub drop_watches: tokio::sync::watch::Sender<u64>,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Continue tokens older than this resourceVersion get 410 (set by explicit compaction).
    pub continue_floor: std::sync::atomic::AtomicU64,
}

type Query = HashMap<String, String>;

fn parse_query(q: Option<&str>) -> Query {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn full(code: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    full(
        code,
        "application/json",
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

/// A Status error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Metric labels of a request, filled while routing.
#[derive(Debug, Default)]
struct Labels {
    verb: &'static str,
    resource: String,
}

/// Handles one request.
pub async fn handle(
    inner: Arc<Inner>,
    req: http::Request<Incoming>,
    cert_authenticated: bool,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let latency = inner.knobs.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut labels = Labels {
        verb: "OTHER",
        resource: String::new(),
    };
    let resp = match route(&inner, req, cert_authenticated, &mut labels).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    inner.metrics.observe(
        labels.verb,
        &labels.resource,
        resp.status().as_u16(),
        start.elapsed(),
    );
    Ok(resp)
}

fn accepts_table(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn wants_aggregated(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|p| {
                p.contains("as=APIGroupDiscoveryList")
                    && p.contains("v=v2")
                    && !p.contains("v2beta1")
            })
        })
}

async fn route(
    inner: &Arc<Inner>,
    req: http::Request<Incoming>,
    cert_ok: bool,
    labels: &mut Labels,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let public = matches!(
        path.as_str(),
        "/healthz" | "/livez" | "/readyz" | "/version"
    );
    if inner.require_auth && !cert_ok && !public {
        let token_ok = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| inner.tokens.iter().any(|x| x == t.trim()));
        if !token_ok {
            return Err(ApiError::unauthorized());
        }
    }
    if !public && path != "/metrics" {
        inner.knobs.admit().map_err(ApiError::too_many_requests)?;
    }
    let query = parse_query(parts.uri.query());
    if parts.method == Method::GET {
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => {
                return Ok(full(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"ok"),
                ));
            }
            "/version" => return Ok(json_response(200, &discovery::version())),
            "/metrics" => {
                let st = inner.state.read();
                let text = inner
                    .metrics
                    .render(st.object_count(), st.json_bytes, st.rv);
                return Ok(full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    Bytes::from(text),
                ));
            }
            "/api" | "/api/" => {
                labels.verb = "GET";
                if wants_aggregated(&parts) {
                    let v = discovery::aggregated(&inner.state.read().registry, true);
                    return Ok(aggregated_response(&v));
                }
                return Ok(json_response(200, &discovery::api_versions(&inner.addr)));
            }
            "/apis" | "/apis/" => {
                labels.verb = "GET";
                if wants_aggregated(&parts) {
                    let v = discovery::aggregated(&inner.state.read().registry, false);
                    return Ok(aggregated_response(&v));
                }
                return Ok(json_response(
                    200,
                    &discovery::api_groups(&inner.state.read().registry),
                ));
            }
            "/openapi/v3" => {
                return Ok(json_response(
                    200,
                    &discovery::openapi_v3_root(&inner.state.read().registry),
                ));
            }
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/openapi/v3/") {
            let reg = &inner.state.read().registry;
            let doc = match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["api", v] => discovery::openapi_v3_group(reg, "", v),
                ["apis", g, v] => discovery::openapi_v3_group(reg, g, v),
                _ => None,
            };
            return doc
                .map(|d| json_response(200, &d))
                .ok_or_else(ApiError::no_route);
        }
    }
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        ["apis", g] if parts.method == Method::GET => {
            let g = inner.state.read().registry.clone();
            return discovery::api_group(&g, segs[1])
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        _ => return Err(ApiError::no_route()),
    };
    if rest.is_empty() {
        if parts.method != Method::GET {
            return Err(ApiError::method_not_allowed(parts.method.as_str()));
        }
        let reg = &inner.state.read().registry;
        return discovery::resource_list(reg, group, version)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::no_route);
    }
    // Resolve the resource.
    let (rt, ns, name, sub) = {
        let st = inner.state.read();
        let reg = &st.registry;
        if !reg.has_version(group, version) {
            return Err(ApiError::no_route());
        }
        let namespaced_path = rest.len() >= 3
            && rest[0] == "namespaces"
            && reg
                .get(group, version, rest[2])
                .is_some_and(|t| t.namespaced);
        let (ns, res, name, sub, extra) = if namespaced_path {
            (
                Some(rest[1]),
                rest[2],
                rest.get(3).copied(),
                rest.get(4).copied(),
                rest.len() > 5,
            )
        } else {
            (
                None,
                rest[0],
                rest.get(1).copied(),
                rest.get(2).copied(),
                rest.len() > 3,
            )
        };
        let rt = reg
            .get(group, version, res)
            .cloned()
            .ok_or_else(ApiError::no_route)?;
        if extra || (ns.is_some() && !rt.namespaced) {
            return Err(ApiError::no_route());
        }
        (
            rt,
            ns.map(str::to_string),
            name.map(str::to_string),
            sub.map(str::to_string),
        )
    };
    labels.resource = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    if let Some(s) = &sub {
        let ok = (s == "status" && rt.status_subresource) || (s == "scale" && rt.scale.is_some());
        if !ok {
            return Err(ApiError::no_route());
        }
        labels.resource.push('/');
        labels.resource.push_str(s);
    }
    let table_wanted = accepts_table(&parts);
    let ctx = Ctx {
        inner,
        rt: &rt,
        ns: ns.as_deref(),
        query: &query,
        parts: &parts,
        table: table_wanted,
    };
    match (&parts.method, name.as_deref()) {
        (&Method::GET, None) if is_true(query.get("watch")) => {
            labels.verb = "WATCH";
            ctx.watch()
        }
        (&Method::GET, None) => {
            labels.verb = "LIST";
            ctx.list()
        }
        (&Method::GET, Some(n)) => {
            labels.verb = "GET";
            ctx.get(n, sub.as_deref())
        }
        (&Method::POST, None) => {
            labels.verb = "POST";
            if rt.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed("POST"));
            }
            let body = read_body(body).await?;
            ctx.create(&body)
        }
        (&Method::PUT, Some(n)) => {
            labels.verb = "PUT";
            let body = read_body(body).await?;
            ctx.update(n, sub.as_deref(), &body)
        }
        (&Method::PATCH, Some(n)) => {
            let ct = content_type(&parts);
            labels.verb = if ct.starts_with("application/apply-patch") {
                "APPLY"
            } else {
                "PATCH"
            };
            let body = read_body(body).await?;
            ctx.patch(n, sub.as_deref(), &ct, &body)
        }
        (&Method::DELETE, Some(n)) if sub.is_none() => {
            labels.verb = "DELETE";
            let body = read_body(body).await?;
            ctx.delete(n, &body)
        }
        (&Method::DELETE, None) => {
            labels.verb = "DELETECOLLECTION";
            let body = read_body(body).await?;
            ctx.delete_collection(&body)
        }
        (m, _) => Err(ApiError::method_not_allowed(m.as_str())),
    }
}

fn aggregated_response(v: &Value) -> Response<Body> {
    full(
        StatusCode::OK,
        discovery::AGGREGATED_V2,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v == "true" || v == "1")
}

fn content_type(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn parse_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    match ct {
        "application/json" | "" | "*/*" => parse_json(body),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}"))),
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(body).map_err(|e| match e {
                crate::protobuf::ProtoError::Unsupported(_) => ApiError::unsupported_body(ct),
                other => ApiError::bad_request(other.to_string()),
            })
        }
        other => Err(ApiError::unsupported_body(other)),
    }
}

/// One resource request.
struct Ctx<'a> {
    inner: &'a Arc<Inner>,
    rt: &'a Arc<ResourceType>,
    ns: Option<&'a str>,
    query: &'a Query,
    parts: &'a http::request::Parts,
    table: bool,
}

/// A stored object at the requested version (see [`render_value`]).
fn render(rt: &ResourceType, o: &Obj) -> Bytes {
    if rt.version == rt.storage_version {
        return o.json.clone();
    }
    Bytes::from(serde_json::to_vec(&render_value(rt, o.value())).unwrap_or_default())
}

/// A list item: built-in kinds' items leave apiVersion and kind to the list (kube-apiserver
/// encodes typed lists so); custom resources' items keep them (unstructured lists do).
fn render_item(rt: &ResourceType, o: &Obj) -> Bytes {
    if rt.custom {
        return render(rt, o);
    }
    let mut v = o.value();
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// An object read at a served version other than the storage one (conversion `None`): the
/// apiVersion is rewritten and, as kube-apiserver does after converting, the object is pruned
/// with that version's schema (defaults were applied at write with the storage version's).
fn render_value(rt: &ResourceType, mut v: Value) -> Value {
    if rt.version != rt.storage_version {
        v["apiVersion"] = json!(rt.api_version());
        if let Some(schema) = &rt.schema {
            crate::schema::prune(schema, &mut v, true, "", &mut vec![]);
        }
    }
    v
}

impl Ctx<'_> {
    fn table_key(&self) -> String {
        self.rt.storage_key()
    }

    fn manager(&self) -> String {
        match self.query.get("fieldManager") {
            Some(m) if !m.is_empty() => m.clone(),
            _ => ops::manager_from_agent(
                self.parts
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
        }
    }

    fn strict(&self) -> bool {
        self.query
            .get("fieldValidation")
            .is_some_and(|v| v == "Strict")
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }

    fn object_response(&self, code: u16, o: &Obj) -> Response<Body> {
        if self.table {
            let v = render_value(self.rt, o.value());
            let include = Include::parse(self.query.get("includeObject").map(String::as_str));
            let t = table::table(self.rt, &[v], o.rv, None, include, true);
            return json_response(code, &t);
        }
        full(
            StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            "application/json",
            render(self.rt, o),
        )
    }

    fn selectors(&self) -> Result<(LabelSelector, Vec<FieldTerm>), ApiError> {
        let ls = LabelSelector::parse(
            self.query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fs = meta::parse_field_selector(
            self.query
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or(""),
            &self.rt.field_labels,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok((ls, fs))
    }

    fn get(&self, name: &str, sub: Option<&str>) -> Result<Response<Body>, ApiError> {
        let key = store::key(self.ns.unwrap_or(""), name);
        let o = self
            .inner
            .state
            .read()
            .get(&self.table_key(), &key)
            .cloned();
        let o = o.ok_or_else(|| ApiError::not_found(&self.rt.group, &self.rt.plural, name))?;
        if sub == Some("scale") {
            return Ok(json_response(200, &scale_of(self.rt, &o.value())));
        }
        Ok(self.object_response(200, &o))
    }

    fn list(&self) -> Result<Response<Body>, ApiError> {
        let (ls, fs) = self.selectors()?;
        let rv_param = self
            .query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let limit: usize = match self.query.get("limit").map(|l| l.parse::<i64>()) {
            Some(Ok(n)) if n > 0 && rv_param != "0" => n as usize,
            Some(Err(_)) => return Err(ApiError::bad_request("limit: invalid value")),
            _ => usize::MAX,
        };
        let start = match self.query.get("continue").filter(|c| !c.is_empty()) {
            Some(c) => Some(self.decode_continue(c)?),
            None => None,
        };
        let st = self.inner.state.read();
        if let Ok(want) = rv_param.parse::<u64>()
            && want > st.rv
        {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {want}, current: {}", st.rv),
            ));
        }
        let table_key = self.table_key();
        let mut items: Vec<Arc<Obj>> = Vec::new();
        let mut next_key: Option<String> = None;
        let mut remaining = 0usize;
        let mut last_pushed: Option<&String> = None;
        for (k, o) in st.range(&table_key, self.ns, start.as_deref()) {
            if !matches(&ls, &fs, k, o) {
                continue;
            }
            if items.len() >= limit {
                if next_key.is_none() {
                    // The next page starts right after the last returned key.
                    next_key = last_pushed.map(|l| format!("{l}\u{0}"));
                }
                remaining += 1;
                continue;
            }
            last_pushed = Some(k);
            items.push(o.clone());
        }
        let rv = st.rv;
        drop(st);
        let cont = next_key.map(|k| encode_continue(rv, &k));
        if self.table {
            let include = Include::parse(self.query.get("includeObject").map(String::as_str));
            let vals: Vec<Value> = items
                .iter()
                .map(|o| render_value(self.rt, o.value()))
                .collect();
            let t = table::table(self.rt, &vals, rv, cont.as_deref(), include, true);
            return Ok(json_response(200, &t));
        }
        let mut md = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = &cont {
            md["continue"] = json!(c);
            if ls.is_empty() && fs.is_empty() {
                md["remainingItemCount"] = json!(remaining);
            }
        }
        let head =
            json!({"kind": self.rt.list_kind, "apiVersion": self.rt.api_version(), "metadata": md});
        let head = serde_json::to_vec(&head).unwrap_or_default();
        let total: usize = items.iter().map(|o| o.json.len() + 1).sum();
        let mut buf = BytesMut::with_capacity(head.len() + total + 16);
        buf.put_slice(&head[..head.len() - 1]);
        buf.put_slice(b",\"items\":[");
        for (i, o) in items.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.put_slice(&render_item(self.rt, o));
        }
        buf.put_slice(b"]}");
        Ok(full(StatusCode::OK, "application/json", buf.freeze()))
    }

    fn decode_continue(&self, c: &str) -> Result<String, ApiError> {
        use base64::Engine;
        let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(c)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(c))
            .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
        let rv = v.get("rv").and_then(Value::as_u64).unwrap_or(0);
        if rv
            < self
                .inner
                .continue_floor
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
        v.get("start")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad("missing start"))
    }

    fn create(&self, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let obj = parse_body(&content_type(self.parts), body)?;
        let prepared = ops::prepare_create(
            self.rt,
            self.ns,
            obj,
            &self.manager(),
            body.len(),
            self.strict(),
        )?;
        let stored = {
            let mut st = self.inner.state.write();
            ops::commit_create(&mut st, self.rt, prepared, self.dry_run())?
        };
        Ok(self.object_response(201, &stored))
    }

    fn update(
        &self,
        name: &str,
        sub: Option<&str>,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let new = parse_body(&content_type(self.parts), body)?;
        if sub == Some("scale") {
            return self.update_scale(name, |_| Ok(new.clone()));
        }
        ops::check_type(self.rt, &new, body.len())?;
        let body_name = ops::name_of(&new).to_string();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let ns = self.ns.unwrap_or("");
        if self.rt.namespaced
            && let Some(bns) = new.pointer("/metadata/namespace").and_then(Value::as_str)
            && !bns.is_empty()
            && bns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let body_rv = new
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        let key = store::key(ns, name);
        let mut st = self.inner.state.write();
        let old = st
            .get(&self.table_key(), &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.rt.group, &self.rt.plural, name))?;
        match &body_rv {
            Some(rv) if *rv != old.rv.to_string() => {
                return Err(ApiError::stale(&self.rt.group, &self.rt.plural, name));
            }
            None if !self.rt.allow_unconditional_update => {
                return Err(ApiError::invalid(
                    &self.rt.qualified_kind(),
                    &self.rt.group,
                    name,
                    vec![crate::status::invalid_value(
                        "metadata.resourceVersion",
                        &json!("0x0"),
                        "must be specified for an update",
                    )],
                ));
            }
            _ => {}
        }
        let oldv = old.value();
        let s = if sub == Some("status") {
            Sub::Status
        } else {
            Sub::Main
        };
        let Some(newv) =
            ops::prepare_update(self.rt, &oldv, new, s, &self.manager(), true, self.strict())?
        else {
            return Ok(self.object_response(200, &old));
        };
        let stored = ops::commit_update(&mut st, self.rt, &key, newv, self.dry_run());
        Ok(self.object_response(200, &stored))
    }

    fn update_scale(
        &self,
        name: &str,
        f: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let Some(scale) = &self.rt.scale else {
            return Err(ApiError::no_route());
        };
        let key = store::key(self.ns.unwrap_or(""), name);
        let mut st = self.inner.state.write();
        let old = st
            .get(&self.table_key(), &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.rt.group, &self.rt.plural, name))?;
        let oldv = old.value();
        let new_scale = f(&scale_of(self.rt, &oldv))?;
        if let Some(rv) = new_scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && rv != old.rv.to_string()
        {
            return Err(ApiError::stale(&self.rt.group, &self.rt.plural, name));
        }
        let replicas = new_scale
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        if !replicas.is_i64() {
            return Err(ApiError::invalid(
                "Scale.autoscaling",
                "autoscaling",
                name,
                vec![crate::status::invalid_value(
                    "spec.replicas",
                    &replicas,
                    "must be an integer",
                )],
            ));
        }
        let mut newv = oldv.clone();
        set_dotted(&mut newv, &scale.spec_replicas, replicas);
        let stored = match ops::prepare_update(
            self.rt,
            &oldv,
            newv,
            Sub::Main,
            &self.manager(),
            true,
            self.strict(),
        )? {
            Some(n) => ops::commit_update(&mut st, self.rt, &key, n, self.dry_run()),
            None => old,
        };
        Ok(json_response(200, &scale_of(self.rt, &stored.value())))
    }

    fn patch(
        &self,
        name: &str,
        sub: Option<&str>,
        ct: &str,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        enum Kind {
            Json(json_patch::Patch),
            Merge(Value),
            Strategic(Value),
            Apply(Value),
        }
        let kind = match ct {
            "application/json-patch+json" => Kind::Json(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
            ),
            "application/merge-patch+json" => Kind::Merge(parse_json(body)?),
            "application/strategic-merge-patch+json" if self.rt.strategic_merge() => {
                Kind::Strategic(parse_json(body)?)
            }
            "application/apply-patch+yaml" | "application/apply-patch+json" => Kind::Apply(
                serde_yaml::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            ),
            other => return Err(ApiError::unsupported_patch(other)),
        };
        let apply_patch = |target: &Value| -> Result<Value, ApiError> {
            let mut v = target.clone();
            match &kind {
                Kind::Json(p) => {
                    // kube-apiserver answers a failed operation with a generic 422 and empty
                    // details, whichever operation failed.
                    json_patch::patch(&mut v, p).map_err(|_| {
                        ApiError::new(
                            422,
                            "Invalid",
                            "the server rejected our request due to an error in our request",
                        )
                        .with_details(json!({}))
                    })?;
                }
                Kind::Merge(p) => json_patch::merge(&mut v, p),
                Kind::Strategic(p) => ops::strategic_merge(&mut v, p, ""),
                Kind::Apply(_) => {}
            }
            Ok(v)
        };
        if sub == Some("scale") {
            return self.update_scale(name, |s| apply_patch(s));
        }
        let ns = self.ns.unwrap_or("");
        let key = store::key(ns, name);
        let manager = self.manager();
        let s = if sub == Some("status") {
            Sub::Status
        } else {
            Sub::Main
        };
        if let Kind::Apply(applied) = &kind {
            if !self.query.contains_key("fieldManager") {
                // kube-apiserver validates PatchOptions: 422 with a cause on fieldManager.
                return Err(ApiError::invalid(
                    "PatchOptions.meta.k8s.io",
                    "meta.k8s.io",
                    "",
                    vec![crate::status::required(
                        "fieldManager",
                        "is required for apply patch",
                    )],
                ));
            }
            ops::check_type(self.rt, applied, body.len())?;
            let an = ops::name_of(applied);
            if an != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({an}) does not match the name on the URL ({name})"
                )));
            }
            let force = is_true(self.query.get("force"));
            let mut st = self.inner.state.write();
            let old = st.get(&self.table_key(), &key).cloned();
            let Some(old) = old else {
                let mut fresh = ops::apply(self.rt, None, applied, &manager, force, s)?;
                let mf = fresh.pointer("/metadata/managedFields").cloned();
                fresh = ops::prepare_create(
                    self.rt,
                    self.ns,
                    fresh,
                    &manager,
                    body.len(),
                    self.strict(),
                )?;
                if let Some(mf) = mf {
                    ops::meta_mut(&mut fresh).insert("managedFields".into(), mf);
                }
                let stored = ops::commit_create(&mut st, self.rt, fresh, self.dry_run())?;
                return Ok(self.object_response(201, &stored));
            };
            let oldv = old.value();
            let merged = ops::apply(self.rt, Some(&oldv), applied, &manager, force, s)?;
            return self.finish_patch(&mut st, &key, &old, oldv, merged, s, &manager, false);
        }
        let mut st = self.inner.state.write();
        let old = st
            .get(&self.table_key(), &key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.rt.group, &self.rt.plural, name))?;
        let oldv = old.value();
        let mut newv = apply_patch(&oldv)?;
        ops::check_type(self.rt, &newv, body.len())?;
        if ops::name_of(&newv) != name {
            return Err(ApiError::bad_request(
                "metadata.name: the name of the object cannot be changed by a patch",
            ));
        }
        if let Some(rv) = newv
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && rv != old.rv.to_string()
        {
            return Err(ApiError::stale(&self.rt.group, &self.rt.plural, name));
        }
        if let Some(m) = newv.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.finish_patch(&mut st, &key, &old, oldv, newv, s, &manager, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_patch(
        &self,
        st: &mut State,
        key: &str,
        old: &Arc<Obj>,
        oldv: Value,
        newv: Value,
        s: Sub,
        manager: &str,
        managed: bool,
    ) -> Result<Response<Body>, ApiError> {
        let Some(n) =
            ops::prepare_update(self.rt, &oldv, newv, s, manager, managed, self.strict())?
        else {
            return Ok(self.object_response(200, old));
        };
        let stored = ops::commit_update(st, self.rt, key, n, self.dry_run());
        Ok(self.object_response(200, &stored))
    }

    fn delete_opts(&self, body: &[u8]) -> Result<DeleteOpts, ApiError> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            parse_json(body)?
        };
        let policy = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.query.get("propagationPolicy").cloned());
        let orphan = v
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or_else(|| self.query.get("orphanDependents").map(|o| o == "true"));
        let propagation = match policy.as_deref() {
            Some("Foreground") => Some(Propagation::Foreground),
            Some("Background") => Some(Propagation::Background),
            Some("Orphan") => Some(Propagation::Orphan),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    "",
                    vec![crate::status::not_supported(
                        "propagationPolicy",
                        &json!(other),
                        &[
                            json!("Foreground"),
                            json!("Background"),
                            json!("Orphan"),
                            json!("nil"),
                        ],
                    )],
                ));
            }
            None => match orphan {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => None,
            },
        };
        let dry = self.dry_run()
            || v.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        Ok(DeleteOpts {
            propagation,
            uid: v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            rv: v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
            dry_run: dry,
        })
    }

    fn delete(&self, name: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let opts = self.delete_opts(body)?;
        let ns = self.ns.unwrap_or("");
        let d = {
            let mut st = self.inner.state.write();
            ops::delete(&mut st, self.rt, ns, name, &opts)?
        };
        if d.removed && !self.rt.return_deleted_object {
            let v = d.obj.value();
            let mut details = json!({"name": name, "kind": self.rt.plural, "uid": v.pointer("/metadata/uid").cloned().unwrap_or_default()});
            if !self.rt.group.is_empty() {
                details["group"] = json!(self.rt.group);
            }
            return Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ));
        }
        Ok(self.object_response(200, &d.obj))
    }

    fn delete_collection(&self, body: &[u8]) -> Result<Response<Body>, ApiError> {
        let opts = self.delete_opts(body)?;
        let (ls, fs) = self.selectors()?;
        let mut st = self.inner.state.write();
        let keys: Vec<String> = st
            .range(&self.table_key(), self.ns, None)
            .filter(|(k, o)| matches(&ls, &fs, k, o))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for k in keys {
            let (ns, name) = k.split_once('/').unwrap_or(("", &k));
            if let Ok(d) = ops::delete(&mut st, self.rt, ns, name, &opts) {
                items.push(render_value(self.rt, d.obj.value()));
            }
        }
        let rv = st.rv;
        drop(st);
        Ok(json_response(
            200,
            &json!({"kind": self.rt.list_kind, "apiVersion": self.rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
        ))
    }

    fn watch(&self) -> Result<Response<Body>, ApiError> {
        let (ls, fs) = self.selectors()?;
        let rv_param = self
            .query
            .get("resourceVersion")
            .cloned()
            .unwrap_or_default();
        let send_initial = is_true(self.query.get("sendInitialEvents"));
        let bookmarks = is_true(self.query.get("allowWatchBookmarks"));
        let timeout = self
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let table_key = self.table_key();
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
        let mut initial: Vec<Bytes> = Vec::new();
        let want_initial = rv_param.is_empty() || rv_param == "0" || send_initial;
        let (replay, sub_rx, start_rv, expired) = {
            let mut st = self.inner.state.write();
            let from = if want_initial {
                st.rv
            } else {
                rv_param.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv_param}"))
                })?
            };
            if want_initial {
                for (k, o) in st.range(&table_key, self.ns, None) {
                    if matches(&ls, &fs, k, o) {
                        initial.push(self.event_line("ADDED", o, initial.is_empty()));
                    }
                }
            }
            match st.subscribe(&table_key, from) {
                Some((replay, rx)) => (replay, Some(rx), from, None),
                None => (vec![], None, from, Some(st.compacted)),
            }
        };
        let mut resp = Response::new(Either::Right(StreamBody::new(ReceiverStream::new(rx))));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        if let Some(compacted) = expired {
            let status = ApiError::expired(format!(
                "too old resource version: {start_rv} ({})",
                compacted + 1
            ))
            .to_status();
            let line = json!({"type": "ERROR", "object": status});
            let mut b = serde_json::to_vec(&line).unwrap_or_default();
            b.push(b'\n');
            let _ = tx.try_send(Ok(Frame::data(Bytes::from(b))));
            return Ok(resp);
        }
        let Some(sub_rx) = sub_rx else {
            return Ok(resp);
        };
        let w = Watcher {
            inner: self.inner.clone(),
            rt: self.rt.clone(),
            ns: self.ns.map(str::to_string),
            ls,
            fs,
            table: self.table,
            include: Include::parse(self.query.get("includeObject").map(String::as_str)),
            first_table_event: initial.is_empty(),
            last_rv: start_rv,
        };
        let end_bookmark = send_initial && bookmarks;
        let interval = self.inner.bookmark_interval;
        let drop_rx = self.inner.drop_watches.subscribe();
        self.inner.metrics.watch_delta(1);
        tokio::spawn(w.run(
            tx,
            initial,
            end_bookmark,
            replay,
            sub_rx,
            bookmarks,
            interval,
            timeout,
            drop_rx,
        ));
        Ok(resp)
    }

    fn event_line(&self, ty: &str, o: &Obj, first: bool) -> Bytes {
        event_bytes(
            self.rt,
            self.table,
            Include::parse(self.query.get("includeObject").map(String::as_str)),
            ty,
            o,
            first,
        )
    }
}

fn event_bytes(
    rt: &ResourceType,
    table: bool,
    include: Include,
    ty: &str,
    o: &Obj,
    first: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(o.json.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(ty.as_bytes());
    b.put_slice(b"\",\"object\":");
    if table {
        let v = render_value(rt, o.value());
        let t = table::table(rt, &[v], o.rv, None, include, first);
        b.put_slice(&serde_json::to_vec(&t).unwrap_or_default());
    } else {
        b.put_slice(&render(rt, o));
    }
    b.put_slice(b"}\n");
    b.freeze()
}

fn encode_continue(rv: u64, start: &str) -> String {
    use base64::Engine;
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&v).unwrap_or_default())
}

fn matches(ls: &LabelSelector, fs: &[FieldTerm], key: &str, o: &Obj) -> bool {
    if !ls.is_empty() && !ls.matches(|k| o.label(k)) {
        return false;
    }
    if fs.is_empty() {
        return true;
    }
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let mut parsed: Option<Value> = None;
    fs.iter().all(|t| {
        let got = match t.field.as_str() {
            "metadata.name" => name.to_string(),
            "metadata.namespace" => ns.to_string(),
            f => meta::field_value(parsed.get_or_insert_with(|| o.value()), f),
        };
        (got == t.value) != t.negated
    })
}

fn set_dotted(v: &mut Value, path: &str, val: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = v;
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            if let Some(m) = cur.as_object_mut() {
                m.insert(p.to_string(), val);
            }
            return;
        }
        if !cur.get(*p).is_some_and(Value::is_object)
            && let Some(m) = cur.as_object_mut()
        {
            m.insert(p.to_string(), json!({}));
        }
        match cur.get_mut(*p) {
            Some(n) => cur = n,
            None => return,
        }
    }
}

fn scale_of(rt: &ResourceType, v: &Value) -> Value {
    let s = rt.scale.as_ref();
    let get = |p: &str| crate::table::eval(v, p).into_iter().next();
    let spec = s.and_then(|s| get(&s.spec_replicas)).unwrap_or(json!(0));
    let status = s.and_then(|s| get(&s.status_replicas)).unwrap_or(json!(0));
    let mut st = json!({"replicas": status});
    if let Some(sel) = s.and_then(|s| s.label_selector.as_deref()).and_then(get) {
        // Built-in kinds point at spec.selector (a LabelSelector); Scale carries its string form.
        st["selector"] = match sel {
            Value::Object(_) => json!(selector_string(&sel)),
            other => other,
        };
    }
    let md = v.get("metadata").cloned().unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": md.get("name"), "namespace": md.get("namespace"), "uid": md.get("uid"),
            "resourceVersion": md.get("resourceVersion"), "creationTimestamp": md.get("creationTimestamp"),
        },
        "spec": {"replicas": spec},
        "status": st,
    })
}

/// The string form of a LabelSelector (`a=b,c in (d,e),!f`), as kube's Scale status shows it.
fn selector_string(sel: &Value) -> String {
    let mut terms: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            terms.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("DoesNotExist") => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    terms.join(",")
}

/// A running watch stream.
struct Watcher {
    inner: Arc<Inner>,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    ls: LabelSelector,
    fs: Vec<FieldTerm>,
    table: bool,
    include: Include,
    first_table_event: bool,
    last_rv: u64,
}

impl Watcher {
    fn visible(&self, key: &str, o: &Obj) -> bool {
        matches(&self.ls, &self.fs, key, o)
    }

    /// The line to send for an event, or None when this watcher does not see it.
    fn line(&mut self, ev: &Event) -> Option<Bytes> {
        if let Some(ns) = &self.ns
            && ev.namespace() != ns
        {
            return None;
        }
        let now = self.visible(&ev.key, &ev.obj);
        let ty = match ev.kind {
            EventType::Modified => {
                let before = ev.prev.as_ref().is_none_or(|p| self.visible(&ev.key, p));
                match (before, now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            k if now => k.as_str(),
            _ => return None,
        };
        let first = self.first_table_event;
        self.first_table_event = false;
        Some(event_bytes(
            &self.rt,
            self.table,
            self.include,
            ty,
            &ev.obj,
            first,
        ))
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": md});
        let mut b =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        mut self,
        tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        initial: Vec<Bytes>,
        end_bookmark: bool,
        replay: Vec<Arc<Event>>,
        mut rx: broadcast::Receiver<Arc<Event>>,
        bookmarks: bool,
        interval: Duration,
        timeout: Duration,
        mut drop_rx: tokio::sync::watch::Receiver<u64>,
    ) {
        let inner = self.inner.clone();
        let _guard = WatchGuard(inner.clone());
        for b in initial {
            if tx.send(Ok(Frame::data(b))).await.is_err() {
                return;
            }
        }
        if end_bookmark && tx.send(Ok(Frame::data(self.bookmark(true)))).await.is_err() {
            return;
        }
        for ev in replay {
            if ev.rv <= self.last_rv {
                continue;
            }
            self.last_rv = ev.rv;
            if let Some(b) = self.line(&ev)
                && tx.send(Ok(Frame::data(b))).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = drop_rx.changed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(Ok(Frame::data(self.bookmark(false)))).await.is_err() {
                        return;
                    }
                }
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= self.last_rv {
                            continue;
                        }
                        self.last_rv = ev.rv;
                        if let Some(b) = self.line(&ev)
                            && tx.send(Ok(Frame::data(b))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Catch up from history, or tell the client to relist.
                        let sub = inner.state.write().subscribe(&self.rt.storage_key(), self.last_rv);
                        match sub {
                            Some((replay, new_rx)) => {
                                rx = new_rx;
                                for ev in replay {
                                    self.last_rv = ev.rv;
                                    if let Some(b) = self.line(&ev)
                                        && tx.send(Ok(Frame::data(b))).await.is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                            None => {
                                let status = ApiError::expired(format!("too old resource version: {}", self.last_rv)).to_status();
                                let mut b = serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
                                b.push(b'\n');
                                let _ = tx.send(Ok(Frame::data(Bytes::from(b)))).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

struct WatchGuard(Arc<Inner>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.metrics.watch_delta(-1);
    }
}

//! Records raw API requests and responses, normalises them and diffs two transcripts.
//!
//! The differential tests run one scripted request sequence against two API servers (the real
//! kube-apiserver and capstan-apiserver) through a [`Recorder`] each, then compare the two
//! [`Transcript`]s step by step. Values that legitimately differ between servers are replaced
//! before comparing: object uids by the name of the object they belong to (so an owner
//! reference still names its owner, and a managedFields key `k:{"uid":..}` compares too),
//! resourceVersions, timestamps and continue tokens by placeholders.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::Value;

/// Errors of a recorded call that are not HTTP responses (those are recorded, not errors).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be built.
    #[error("step {step}: building request: {source}")]
    Request {
        /// The step's name.
        step: String,
        /// The underlying error.
        #[source]
        source: http::Error,
    },
    /// The request could not be sent or its body not read.
    #[error("step {step}: {source}")]
    Transport {
        /// The step's name.
        step: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
}

/// One request and its response.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's name, unique in a script.
    pub name: String,
    /// Method and path, for reports.
    pub request: String,
    /// HTTP status code.
    pub status: u16,
    /// The response body (JSON; non-JSON bodies are stored as a string).
    pub body: Value,
}

/// Everything one server answered to a script.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// Sends requests for a script and records their responses.
pub struct Recorder {
    client: kube::Client,
    transcript: Transcript,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("steps", &self.transcript.steps.len())
            .finish_non_exhaustive()
    }
}

/// Content types of the four patch kinds and of plain JSON.
pub mod content {
    /// `application/json`.
    pub const JSON: &str = "application/json";
    /// RFC 7386 JSON merge patch.
    pub const MERGE: &str = "application/merge-patch+json";
    /// RFC 6902 JSON patch.
    pub const JSON_PATCH: &str = "application/json-patch+json";
    /// Kubernetes strategic merge patch.
    pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
    /// Server-side apply.
    pub const APPLY: &str = "application/apply-patch+yaml";
}

impl Recorder {
    /// A recorder sending through `client`.
    pub fn new(client: kube::Client) -> Self {
        Recorder {
            client,
            transcript: Transcript::default(),
        }
    }

    /// The last recorded step, to trim what it keeps.
    pub fn last_mut(&mut self) -> Option<&mut Step> {
        self.transcript.steps.last_mut()
    }

    /// The transcript so far.
    pub fn into_transcript(self) -> Transcript {
        self.transcript
    }

    /// Sends one request, records it under `name` and returns (status, body).
    pub async fn call(
        &mut self,
        name: &str,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Error> {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::ACCEPT, content::JSON);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = req
            .body(kube::client::Body::from(bytes))
            .map_err(|source| Error::Request {
                step: name.into(),
                source,
            })?;
        let transport = |source| Error::Transport {
            step: name.into(),
            source,
        };
        let res = self.client.send(req).await.map_err(transport)?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect_bytes().await.map_err(transport)?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        self.transcript.steps.push(Step {
            name: name.into(),
            request: format!("{method} {path}"),
            status,
            body: value.clone(),
        });
        Ok((status, value))
    }

    /// A GET that is not recorded (for polling until a server has settled); `None` when the
    /// request fails below HTTP or the body is not JSON.
    pub async fn peek(&self, path: &str) -> Option<(u16, Value)> {
        let req = http::Request::get(path)
            .header(http::header::ACCEPT, content::JSON)
            .body(kube::client::Body::from(Vec::new()))
            .ok()?;
        let res = self.client.send(req).await.ok()?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect_bytes().await.ok()?;
        Some((status, serde_json::from_slice(&bytes).ok()?))
    }

    /// Opens a watch (`path` must carry `watch=true` and its parameters), reads up to `want`
    /// events within `deadline` (fewer if the deadline or the stream's end comes first), and
    /// records them as a JSON array (sorted by object name when
    /// `sort` is set, for watches whose order the API leaves open).
    pub async fn watch(
        &mut self,
        name: &str,
        path: &str,
        want: usize,
        deadline: Duration,
        sort: bool,
    ) -> Result<Vec<Value>, Error> {
        let req = http::Request::get(path)
            .header(http::header::ACCEPT, content::JSON)
            .body(kube::client::Body::from(Vec::new()))
            .map_err(|source| Error::Request {
                step: name.into(),
                source,
            })?;
        let transport = |source| Error::Transport {
            step: name.into(),
            source,
        };
        let res = self.client.send(req).await.map_err(transport)?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        let end = tokio::time::Instant::now() + deadline;
        while events.len() < want {
            let frame = match tokio::time::timeout_at(end, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => return Err(transport(e)),
                Ok(None) | Err(_) => break,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    events.push(v);
                }
            }
        }
        let mut recorded = events.clone();
        if sort {
            recorded.sort_by(|a, b| {
                let key = |v: &Value| v.pointer("/object/metadata/name").map(|n| n.to_string());
                key(a).cmp(&key(b))
            });
        }
        self.transcript.steps.push(Step {
            name: name.into(),
            request: format!("GET {path}"),
            status,
            body: Value::Array(recorded),
        });
        Ok(events)
    }
}

/// Replaces server-specific values (see the module documentation) throughout a transcript.
pub fn normalise(t: &Transcript) -> Transcript {
    let mut ids = Ids::default();
    for s in &t.steps {
        ids.collect(&s.body);
    }
    Transcript {
        steps: t
            .steps
            .iter()
            .map(|s| Step {
                body: ids.rewrite(&s.body, None),
                ..s.clone()
            })
            .collect(),
    }
}

/// Object uids of one transcript, by the object they belong to.
#[derive(Default)]
struct Ids {
    names: BTreeMap<String, String>,
}

impl Ids {
    /// Learns `uid -> <uid:namespace/name>` from every object's metadata.
    fn collect(&mut self, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(meta) = map.get("metadata")
                    && let (Some(uid), Some(name)) = (
                        meta.get("uid").and_then(Value::as_str),
                        meta.get("name").and_then(Value::as_str),
                    )
                {
                    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
                    self.names
                        .insert(uid.to_string(), format!("<uid:{ns}/{name}>"));
                }
                map.values().for_each(|c| self.collect(c));
            }
            Value::Array(items) => items.iter().for_each(|c| self.collect(c)),
            _ => {}
        }
    }

    /// Replaces uids anywhere in a string (also inside managedFields keys such as
    /// `k:{"uid":"..."}`).
    fn replace_uids(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (uid, name) in &self.names {
            if out.contains(uid.as_str()) {
                out = out.replace(uid.as_str(), name);
            }
        }
        out
    }

    fn rewrite(&self, v: &Value, key: Option<&str>) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, c)| (self.replace_uids(k), self.rewrite(c, Some(k.as_str()))))
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|c| self.rewrite(c, key)).collect())
            }
            Value::String(s) => Value::String(match key {
                Some("uid") => self
                    .names
                    .get(s)
                    .cloned()
                    .unwrap_or_else(|| "<uid:unknown>".to_string()),
                Some("resourceVersion") if !s.is_empty() => "<rv>".to_string(),
                Some(
                    "creationTimestamp" | "deletionTimestamp" | "time" | "lastTransitionTime"
                    | "lastUpdateTime",
                ) => "<time>".to_string(),
                Some("continue") if !s.is_empty() => "<continue>".to_string(),
                _ => self.replace_uids(s),
            }),
            other => other.clone(),
        }
    }
}

/// One difference between two normalised transcripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The step's name.
    pub step: String,
    /// Where: `status` for the HTTP status, else a JSON pointer into the body.
    pub path: String,
    /// The first server's value (`-` when absent).
    pub left: String,
    /// The second server's value (`-` when absent).
    pub right: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: real={} memory={}",
            self.step, self.path, self.left, self.right
        )
    }
}

/// Every difference between two transcripts of the same script, after normalising both.
pub fn diff(left: &Transcript, right: &Transcript) -> Vec<Difference> {
    let (left, right) = (normalise(left), normalise(right));
    let mut out = Vec::new();
    let n = left.steps.len().max(right.steps.len());
    for i in 0..n {
        match (left.steps.get(i), right.steps.get(i)) {
            (Some(l), Some(r)) => {
                if l.status != r.status {
                    out.push(Difference {
                        step: l.name.clone(),
                        path: "status".into(),
                        left: l.status.to_string(),
                        right: r.status.to_string(),
                    });
                }
                diff_values(&l.name, "", Some(&l.body), Some(&r.body), &mut out);
            }
            (Some(l), None) => out.push(missing(&l.name, true)),
            (None, Some(r)) => out.push(missing(&r.name, false)),
            (None, None) => {}
        }
    }
    out
}

fn missing(step: &str, left_has: bool) -> Difference {
    let (left, right) = if left_has {
        ("recorded", "-")
    } else {
        ("-", "recorded")
    };
    Difference {
        step: step.into(),
        path: "step".into(),
        left: left.into(),
        right: right.into(),
    }
}

fn diff_values(
    step: &str,
    path: &str,
    l: Option<&Value>,
    r: Option<&Value>,
    out: &mut Vec<Difference>,
) {
    let show = |v: Option<&Value>| v.map_or_else(|| "-".to_string(), short);
    match (l, r) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                diff_values(step, &p, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(step, &format!("{path}/{i}"), Some(x), Some(y), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Difference {
            step: step.into(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            left: show(a),
            right: show(b),
        }),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        let cut: String = s.chars().take(157).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(name: &str, status: u16, body: Value) -> Step {
        Step {
            name: name.into(),
            request: String::new(),
            status,
            body,
        }
    }

    #[test]
    fn uids_compare_by_object_name() {
        let a = Transcript {
            steps: vec![
                step(
                    "create",
                    201,
                    json!({"metadata": {"name": "o", "uid": "u-1", "resourceVersion": "17"}}),
                ),
                step(
                    "child",
                    201,
                    json!({"metadata": {"name": "c", "uid": "u-2", "ownerReferences": [{"uid": "u-1"}], "managedFields": [{"fieldsV1": {"k:{\"uid\":\"u-1\"}": {}}}]}}),
                ),
            ],
        };
        let b = Transcript {
            steps: vec![
                step(
                    "create",
                    201,
                    json!({"metadata": {"name": "o", "uid": "x", "resourceVersion": "2"}}),
                ),
                step(
                    "child",
                    201,
                    json!({"metadata": {"name": "c", "uid": "y", "ownerReferences": [{"uid": "y"}], "managedFields": [{"fieldsV1": {"k:{\"uid\":\"x\"}": {}}}]}}),
                ),
            ],
        };
        let d = diff(&a, &b);
        // The second server's child names itself as owner: the only difference.
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "/metadata/ownerReferences/0/uid");
        assert_eq!(
            (d[0].left.as_str(), d[0].right.as_str()),
            ("\"<uid:/o>\"", "\"<uid:/c>\"")
        );
    }

    #[test]
    fn status_timestamps_and_missing_fields() {
        let a = Transcript {
            steps: vec![step(
                "get",
                200,
                json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"a": "1"}}),
            )],
        };
        let b = Transcript {
            steps: vec![step(
                "get",
                404,
                json!({"metadata": {"creationTimestamp": "2027-01-01T00:00:00Z"}}),
            )],
        };
        let d: Vec<String> = diff(&a, &b).iter().map(|d| d.path.clone()).collect();
        assert_eq!(d, vec!["status", "/data"]);
    }
}

//! The write path: turns a plugin's outcome into the fewest API requests, checked and guarded.
//!
//! For every desired object (CAPI's `util/patch` "defer patch", done by the host):
//!
//! - absent from the cache: create it (status is not sent on create);
//! - present: one JSON merge patch of metadata+spec computed against the cached object,
//!   and separately one merge patch of `status` to the status subresource; an empty
//!   difference sends nothing and counts `capstan_writes_skipped_total`;
//! - every patch carries the `metadata.resourceVersion` it was computed against
//!   (optimistic concurrency). A 409 fails the reconcile with [`WriteError::Conflict`],
//!   which the controller requeues with backoff without counting an error;
//! - an object of a kind without spec (a Secret's `type` and `data`, a ConfigMap's `data`)
//!   is handled the same way: created whole, then patched on every top-level field except
//!   `status`;
//! - deletions carry a uid precondition; finalizers are the API server's business. Deleting
//!   an object already gone, or patching the status of an object that is gone (404), is
//!   what the plugin wanted: counted as skipped, not an error;
//! - an outcome is written in the order the WIT gives: every `apply`, then every `status`,
//!   then every `delete`, then events. The workload part goes through the workload
//!   cluster's own write path ([`WritePath::write_workload`]) after the management part.
//!
//! Before any request of an outcome is sent, every write in it is checked against the
//! plugin's declared permissions (kind and verb); one undeclared write refuses the whole
//! outcome ([`WriteError::Refused`], counted in `capstan_writes_refused_total`).
//!
//! Writes to one object are serialized, and each diff is computed against the freshest
//! state the host knows: the cache, or the response of the host's own last write when the
//! cache has not caught up yet ("read your writes"). Overlapping reconciles that want the
//! same change thus coalesce into one request; the second finds nothing left to send.
//!
//! Requests go through the kube client built by the manager, whose tower stack holds the
//! client-side QPS/burst limiter, the REST metrics and retries of 429/503/504 that honour
//! `Retry-After` (see [`layers`]).

mod api;
pub mod diff;
pub mod layers;

pub use api::{ApiError, BoxFut, KubeWriteApi, Resource, WriteApi};

use crate::cache::{Cache, CachedObject, Gvk, ObjectKey};
use crate::metrics::ControllerMetrics;
use crate::runtime::bindings::capstan::reconciler::types::{
    EventType, ObjectRef, Outcome, Permission, Target, Verbs,
};
use kube::core::ApiResource;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// A write verb, as declared in a plugin's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Create an object.
    Create,
    /// Patch metadata/spec.
    Patch,
    /// Patch the status subresource.
    PatchStatus,
    /// Delete an object.
    Delete,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Create => "create",
            Verb::Patch => "patch",
            Verb::PatchStatus => "patch-status",
            Verb::Delete => "delete",
        })
    }
}

/// The kinds and verbs a plugin declared.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    by_kind: HashMap<Gvk, Verbs>,
}

impl Grants {
    /// From a plugin's management `permissions` (workload permissions grant nothing here).
    pub fn new(permissions: &[Permission]) -> Self {
        Self::for_target(permissions, Target::Management)
    }

    /// From a plugin's `permissions` of `target`.
    pub fn for_target(permissions: &[Permission], target: Target) -> Self {
        let mut by_kind: HashMap<Gvk, Verbs> = HashMap::new();
        for p in permissions.iter().filter(|p| p.target == target) {
            *by_kind.entry(Gvk::from(&p.kind)).or_insert(Verbs::empty()) |= p.verbs;
        }
        Self { by_kind }
    }

    /// Whether `verb` on `gvk` was declared.
    pub fn allows(&self, gvk: &Gvk, verb: Verb) -> bool {
        let flag = match verb {
            Verb::Create => Verbs::CREATE,
            Verb::Patch => Verbs::PATCH,
            Verb::PatchStatus => Verbs::PATCH_STATUS,
            Verb::Delete => Verbs::DELETE,
        };
        self.by_kind.get(gvk).is_some_and(|v| v.contains(flag))
    }

    /// Every declared kind.
    pub fn kinds(&self) -> impl Iterator<Item = &Gvk> {
        self.by_kind.keys()
    }
}

/// Why an outcome was not (fully) written.
///
/// Large (it names the kind and object), but only built on the rare failure path.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The outcome holds an object that is not valid JSON or lacks apiVersion, kind or name.
    #[error("plugin {plugin} returned an invalid object: {reason}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin did not declare this kind and verb; nothing of the outcome was sent.
    #[error("plugin {plugin} may not {verb} {kind} {object}: not declared in its permissions")]
    Refused {
        /// Plugin name.
        plugin: String,
        /// The verb.
        verb: Verb,
        /// The kind.
        kind: Gvk,
        /// The object.
        object: ObjectKey,
    },
    /// The object changed since the cache saw it (409); requeue.
    #[error("conflict writing {kind} {object}: it changed since it was read")]
    Conflict {
        /// The kind.
        kind: Gvk,
        /// The object.
        object: ObjectKey,
    },
    /// The API request failed otherwise.
    #[error("writing {kind} {object} failed")]
    Api {
        /// The kind.
        kind: Gvk,
        /// The object.
        object: ObjectKey,
        /// The failure.
        #[source]
        source: ApiError,
    },
}

/// What one outcome cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Requests sent (creates, patches, deletes; events excluded).
    pub requests: u32,
    /// Desired objects/statuses that equalled the known state.
    pub skipped: u32,
    /// Events recorded.
    pub events: u32,
    /// Creations and deletions sent, which the cache has to show before the same
    /// primary is reconciled again ([`WritePath::observed`]).
    pub pending: Vec<Pending>,
}

/// A creation or deletion the cache has not necessarily shown yet.
///
/// A reconcile that created a Machine and runs again before the Machine reaches the cache
/// would see one Machine too few and create another (deletions: one too many, and delete
/// another). Cluster API's MachineSet controller waits for its creations and deletions to
/// reach its cache for this reason; here the controller defers the primary's next
/// reconcile until they have (see `controller`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Created: shown once the cache holds the object.
    Created {
        /// Kind.
        gvk: Gvk,
        /// Namespace and name.
        key: ObjectKey,
    },
    /// Deleted: shown once the cache no longer holds this uid, or holds it deleting.
    Deleted {
        /// Kind.
        gvk: Gvk,
        /// Namespace and name.
        key: ObjectKey,
        /// The uid deleted.
        uid: String,
    },
}

/// Who writes: the plugin's name, its grants and its metrics, and what it read.
#[derive(Debug)]
pub struct Writer<'a> {
    /// Plugin name.
    pub plugin: &'a str,
    /// Declared permissions.
    pub grants: &'a Grants,
    /// The plugin's metrics.
    pub metrics: &'a ControllerMetrics,
    /// The primary object the plugin's snapshot held: (kind, key, resourceVersion).
    /// Writes to it are guarded with that resourceVersion, so a change made after the
    /// plugin read the object (even one the cache has already seen) is a 409, as with
    /// controller-runtime's `MergeFromWithOptimisticLock`.
    pub observed: Option<(&'a Gvk, &'a ObjectKey, &'a str)>,
}

/// The resourceVersion each write of one outcome is guarded with: what the plugin read,
/// advanced by this outcome's own earlier writes (spec patch, then status patch).
type Guards = HashMap<ObjId, String>;

fn guard<'g>(guards: &'g Guards, gvk: &Gvk, key: &ObjectKey, current: &'g str) -> &'g str {
    guards
        .get(&(gvk.clone(), key.clone()))
        .map_or(current, String::as_str)
}

#[derive(Debug)]
struct Recent {
    /// resourceVersions older than `after` that the cache may still hold: what it held
    /// before our first write, then each of our intermediate writes ("" = absent).
    superseded: Vec<String>,
    /// The object our write returned.
    after: Arc<CachedObject>,
    at: Instant,
}

type ObjId = (Gvk, ObjectKey);

/// The write path shared by all controllers of one manager.
#[derive(Debug)]
pub struct WritePath {
    api: Arc<dyn WriteApi>,
    cache: Arc<Cache>,
    resources: RwLock<HashMap<Gvk, Resource>>,
    recent: Mutex<HashMap<ObjId, Recent>>,
    locks: Mutex<HashMap<ObjId, Arc<tokio::sync::Mutex<()>>>>,
    instance: String,
}

/// How long a write's response stands in for a cache that has not seen it yet.
const RECENT_TTL: Duration = Duration::from_secs(60);

enum Planned {
    Apply {
        gvk: Gvk,
        key: ObjectKey,
        value: Value,
    },
    Status {
        gvk: Gvk,
        key: ObjectKey,
        value: Value,
    },
    Delete {
        gvk: Gvk,
        key: ObjectKey,
    },
}

#[allow(clippy::result_large_err)] // see WriteError
fn parse_object(plugin: &str, text: &str) -> Result<(Gvk, ObjectKey, Value), WriteError> {
    let invalid = |reason: String| WriteError::Invalid {
        plugin: plugin.to_string(),
        reason,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = s(value.get("apiVersion"));
    let kind = s(value.get("kind"));
    let meta = value.get("metadata");
    let name = s(meta.and_then(|m| m.get("name")));
    let ns = s(meta.and_then(|m| m.get("namespace")));
    if api_version.is_empty() || kind.is_empty() || name.is_empty() {
        return Err(invalid(
            "an object needs apiVersion, kind and metadata.name".into(),
        ));
    }
    Ok((
        Gvk::from_api_version(&api_version, &kind),
        ObjectKey::new(ns, name),
        value,
    ))
}

fn events_resource() -> Resource {
    Resource {
        api: ApiResource {
            group: "events.k8s.io".into(),
            version: "v1".into(),
            api_version: "events.k8s.io/v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
        },
        namespaced: true,
    }
}

impl WritePath {
    /// A write path sending through `api`, diffing against `cache`.
    pub fn new(api: Arc<dyn WriteApi>, cache: Arc<Cache>, instance: &str) -> Self {
        Self {
            api,
            cache,
            resources: RwLock::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            instance: instance.to_string(),
        }
    }

    /// Make `gvk` writable (its resource name and scope, from discovery).
    pub fn add_resource(&self, gvk: Gvk, resource: Resource) {
        self.resources.write().insert(gvk, resource);
    }

    fn resource(&self, gvk: &Gvk) -> Option<Resource> {
        self.resources.read().get(gvk).cloned()
    }

    /// The freshest state known of an object: the cache, unless our own newer write has
    /// not reached it yet.
    pub fn freshest(&self, gvk: &Gvk, key: &ObjectKey) -> Option<Arc<CachedObject>> {
        let cached = self.cache.kind(gvk).and_then(|k| k.get(key));
        let id = (gvk.clone(), key.clone());
        let mut recent = self.recent.lock();
        let Some(r) = recent.get(&id) else {
            return cached;
        };
        let cached_rv = cached.as_ref().map_or("", |c| c.resource_version.as_str());
        let stale = r.superseded.iter().any(|rv| rv == cached_rv);
        if stale && r.at.elapsed() < RECENT_TTL {
            return Some(Arc::clone(&r.after));
        }
        recent.remove(&id);
        cached
    }

    /// Whether the cache shows `pending` (a kind without a cache cannot show it and
    /// counts as shown).
    pub fn observed(&self, pending: &Pending) -> bool {
        match pending {
            Pending::Created { gvk, key } => {
                self.cache.kind(gvk).is_none_or(|k| k.get(key).is_some())
            }
            Pending::Deleted { gvk, key, uid } => self
                .cache
                .kind(gvk)
                .and_then(|k| k.get(key))
                .is_none_or(|o| o.uid != *uid || o.deleting),
        }
    }

    /// Record our write's response; returns its resourceVersion. `base` is the
    /// resourceVersion the write was made against ("" for a create): the cache may still
    /// show it, or an earlier version we superseded, until it sees our write. It is not
    /// what the cache holds when the response comes back: by then the cache may already
    /// show our write, or a later change by someone else (a deletion, say), and such a
    /// version must never be taken for an older one.
    fn remember(&self, gvk: &Gvk, key: &ObjectKey, base: &str, response: Value) -> Option<String> {
        let after = CachedObject::from_value(response).ok()?;
        let rv = after.resource_version.clone();
        let id = (gvk.clone(), key.clone());
        let mut recent = self.recent.lock();
        if recent.len() > 4096 {
            recent.retain(|_, r| r.at.elapsed() < RECENT_TTL);
        }
        let superseded = match recent.remove(&id) {
            // Written on top of our earlier write, which the cache may not show yet
            // either: it may hold any of these.
            Some(mut r) if r.after.resource_version == base => {
                r.superseded.push(base.to_string());
                r.superseded
            }
            _ => vec![base.to_string()],
        };
        recent.insert(
            id,
            Recent {
                superseded,
                after: Arc::new(after),
                at: Instant::now(),
            },
        );
        Some(rv)
    }

    fn lock_for(&self, id: &ObjId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.locks.lock().entry(id.clone()).or_default())
    }

    fn release(&self, id: &ObjId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock();
        drop(lock);
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }

    /// Run `write` holding the per-object lock of `id` (writes to one object are
    /// serialized; the lock entry is dropped once nobody waits on it).
    async fn locked<T>(&self, id: &ObjId, write: impl Future<Output = T>) -> T {
        let lock = self.lock_for(id);
        let result = {
            let _held = lock.lock().await;
            write.await
        };
        self.release(id, lock);
        result
    }

    fn refuse(&self, w: &Writer<'_>, verb: Verb, gvk: &Gvk, key: &ObjectKey) -> WriteError {
        w.metrics.writes_refused.inc();
        tracing::warn!(plugin = w.plugin, %verb, kind = %gvk, object = %key, "write refused: not declared");
        WriteError::Refused {
            plugin: w.plugin.to_string(),
            verb,
            kind: gvk.clone(),
            object: key.clone(),
        }
    }

    /// Write the management part of `outcome` (`apply`, `status`, `delete`, events):
    /// validate, check every write against the grants, then send what differs.
    pub async fn write(
        &self,
        w: &Writer<'_>,
        outcome: &Outcome,
    ) -> Result<WriteReport, WriteError> {
        self.write_entries(
            w,
            &outcome.apply,
            &outcome.status,
            &outcome.delete,
            &outcome.events,
        )
        .await
    }

    /// Write the workload part of `outcome` (`workload-apply`, `workload-status`,
    /// `workload-delete`) through this write path, which must be the workload cluster's
    /// (its client and cache), with `w.grants` built from the plugin's workload
    /// permissions ([`Grants::for_target`]). Events are the management write's.
    pub async fn write_workload(
        &self,
        w: &Writer<'_>,
        outcome: &Outcome,
    ) -> Result<WriteReport, WriteError> {
        self.write_entries(
            w,
            &outcome.workload_apply,
            &outcome.workload_status,
            &outcome.workload_delete,
            &[],
        )
        .await
    }

    /// Apply entries first, then status entries, then deletes; events last.
    async fn write_entries(
        &self,
        w: &Writer<'_>,
        apply: &[String],
        status: &[String],
        delete: &[ObjectRef],
        events: &[crate::runtime::bindings::capstan::reconciler::types::Event],
    ) -> Result<WriteReport, WriteError> {
        let mut plan = Vec::with_capacity(apply.len() + status.len() + delete.len());
        for text in apply {
            let (gvk, key, value) = parse_object(w.plugin, text)?;
            plan.push(Planned::Apply { gvk, key, value });
        }
        for text in status {
            let (gvk, key, value) = parse_object(w.plugin, text)?;
            plan.push(Planned::Status { gvk, key, value });
        }
        for r in delete {
            plan.push(Planned::Delete {
                gvk: Gvk::from_api_version(&r.api_version, &r.kind),
                key: ObjectKey::new(r.namespace.clone(), r.name.clone()),
            });
        }
        // Permissions: all checked before the first request.
        for p in &plan {
            let (gvk, key, verb) = match p {
                Planned::Apply { gvk, key, .. } => {
                    let verb = if self.freshest(gvk, key).is_some() {
                        Verb::Patch
                    } else {
                        Verb::Create
                    };
                    (gvk, key, verb)
                }
                Planned::Status { gvk, key, .. } => (gvk, key, Verb::PatchStatus),
                Planned::Delete { gvk, key } => (gvk, key, Verb::Delete),
            };
            if !w.grants.allows(gvk, verb) || self.resource(gvk).is_none() {
                return Err(self.refuse(w, verb, gvk, key));
            }
        }
        let mut report = WriteReport::default();
        let mut guards = Guards::new();
        if let Some((g, k, rv)) = w.observed {
            guards.insert((g.clone(), k.clone()), rv.to_string());
        }
        for p in plan {
            match p {
                Planned::Apply { gvk, key, value } => {
                    self.apply(w, &gvk, &key, value, &mut guards, &mut report)
                        .await?
                }
                Planned::Status { gvk, key, value } => {
                    self.status(w, &gvk, &key, value, &mut guards, &mut report)
                        .await?
                }
                Planned::Delete { gvk, key } => self.delete(w, &gvk, &key, &mut report).await?,
            }
        }
        for ev in events {
            self.event(w, ev).await;
            report.events += 1;
        }
        Ok(report)
    }

    fn api_error(gvk: &Gvk, key: &ObjectKey, e: ApiError) -> WriteError {
        match e {
            ApiError::Conflict | ApiError::AlreadyExists => WriteError::Conflict {
                kind: gvk.clone(),
                object: key.clone(),
            },
            source => WriteError::Api {
                kind: gvk.clone(),
                object: key.clone(),
                source,
            },
        }
    }

    /// Send one merge patch, of the object or of its status subresource, guarded by
    /// `base` (the resourceVersion it was computed against), and remember the response
    /// so the next diff of this object starts from it.
    #[allow(clippy::too_many_arguments)]
    async fn send_patch(
        &self,
        res: &Resource,
        gvk: &Gvk,
        key: &ObjectKey,
        patch: Value,
        base: &str,
        status: bool,
        guards: &mut Guards,
        report: &mut WriteReport,
    ) -> Result<(), WriteError> {
        let patch = diff::with_resource_version(patch, base);
        let verb = if status { "patch-status" } else { "patch" };
        let span = tracing::debug_span!("write", verb, kind = %gvk, object = %key);
        let patched = self
            .api
            .patch(res, &key.namespace, &key.name, patch, status)
            .instrument(span)
            .await
            .map_err(|e| Self::api_error(gvk, key, e))?;
        report.requests += 1;
        if let Some(rv) = self.remember(gvk, key, base, patched) {
            guards.insert((gvk.clone(), key.clone()), rv);
        }
        Ok(())
    }

    async fn apply(
        &self,
        w: &Writer<'_>,
        gvk: &Gvk,
        key: &ObjectKey,
        value: Value,
        guards: &mut Guards,
        report: &mut WriteReport,
    ) -> Result<(), WriteError> {
        let res = self
            .resource(gvk)
            .ok_or_else(|| self.refuse(w, Verb::Patch, gvk, key))?;
        let id = (gvk.clone(), key.clone());
        self.locked(&id, async {
            match self.freshest(gvk, key) {
                None => {
                    if !w.grants.allows(gvk, Verb::Create) {
                        return Err(self.refuse(w, Verb::Create, gvk, key));
                    }
                    let mut body = value;
                    if let Some(m) = body.as_object_mut() {
                        m.remove("status");
                        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                            meta.remove("resourceVersion");
                            meta.remove("uid");
                        }
                    }
                    let span =
                        tracing::debug_span!("write", verb = "create", kind = %gvk, object = %key);
                    let created = self
                        .api
                        .create(&res, &key.namespace, body)
                        .instrument(span)
                        .await
                        .map_err(|e| Self::api_error(gvk, key, e))?;
                    report.requests += 1;
                    report.pending.push(Pending::Created {
                        gvk: gvk.clone(),
                        key: key.clone(),
                    });
                    if let Some(rv) = self.remember(gvk, key, "", created) {
                        guards.insert(id.clone(), rv);
                    }
                    Ok(())
                }
                Some(current) => {
                    let cur: Value = serde_json::from_str(&current.json).unwrap_or(Value::Null);
                    let Some(patch) = diff::spec_patch(&cur, &value) else {
                        report.skipped += 1;
                        w.metrics.writes_skipped.inc();
                        return Ok(());
                    };
                    if !w.grants.allows(gvk, Verb::Patch) {
                        return Err(self.refuse(w, Verb::Patch, gvk, key));
                    }
                    let base = guard(guards, gvk, key, &current.resource_version).to_string();
                    self.send_patch(&res, gvk, key, patch, &base, false, guards, report)
                        .await
                }
            }
        })
        .await
    }

    async fn status(
        &self,
        w: &Writer<'_>,
        gvk: &Gvk,
        key: &ObjectKey,
        value: Value,
        guards: &mut Guards,
        report: &mut WriteReport,
    ) -> Result<(), WriteError> {
        let res = self
            .resource(gvk)
            .ok_or_else(|| self.refuse(w, Verb::PatchStatus, gvk, key))?;
        let id = (gvk.clone(), key.clone());
        self.locked(&id, async {
            let Some(current) = self.freshest(gvk, key) else {
                // Gone (or never created): nothing to report a status on.
                tracing::debug!(plugin = w.plugin, kind = %gvk, object = %key, "status of an absent object skipped");
                report.skipped += 1;
                w.metrics.writes_skipped.inc();
                return Ok(());
            };
            let cur: Value = serde_json::from_str(&current.json).unwrap_or(Value::Null);
            let Some(patch) = diff::status_patch(&cur, &value) else {
                report.skipped += 1;
                w.metrics.writes_skipped.inc();
                return Ok(());
            };
            let base = guard(guards, gvk, key, &current.resource_version).to_string();
            match self
                .send_patch(&res, gvk, key, patch, &base, true, guards, report)
                .await
            {
                // Deleted since the cache saw it: its status no longer matters.
                Err(WriteError::Api {
                    source: ApiError::NotFound,
                    ..
                }) => {
                    tracing::debug!(plugin = w.plugin, kind = %gvk, object = %key, "status patch found the object gone; skipped");
                    report.skipped += 1;
                    w.metrics.writes_skipped.inc();
                    Ok(())
                }
                other => other,
            }
        })
        .await
    }

    async fn delete(
        &self,
        w: &Writer<'_>,
        gvk: &Gvk,
        key: &ObjectKey,
        report: &mut WriteReport,
    ) -> Result<(), WriteError> {
        let Some(res) = self.resource(gvk) else {
            return Ok(());
        };
        let Some(current) = self.freshest(gvk, key) else {
            report.skipped += 1;
            w.metrics.writes_skipped.inc();
            return Ok(());
        };
        if current.deleting {
            report.skipped += 1;
            w.metrics.writes_skipped.inc();
            return Ok(());
        }
        let span = tracing::debug_span!("write", verb = "delete", kind = %gvk, object = %key);
        match self
            .api
            .delete(&res, &key.namespace, &key.name, &current.uid)
            .instrument(span)
            .await
        {
            Ok(()) => {
                report.requests += 1;
                report.pending.push(Pending::Deleted {
                    gvk: gvk.clone(),
                    key: key.clone(),
                    uid: current.uid.clone(),
                });
                Ok(())
            }
            // Already gone: what the plugin wanted.
            Err(ApiError::NotFound) => {
                report.skipped += 1;
                w.metrics.writes_skipped.inc();
                Ok(())
            }
            Err(e) => Err(Self::api_error(gvk, key, e)),
        }
    }

    async fn event(
        &self,
        w: &Writer<'_>,
        ev: &crate::runtime::bindings::capstan::reconciler::types::Event,
    ) {
        let now = jiff::Timestamp::now();
        let ns = if ev.regarding.namespace.is_empty() {
            "default"
        } else {
            &ev.regarding.namespace
        };
        let regarding_uid = self
            .cache
            .kind(&Gvk::from_api_version(
                &ev.regarding.api_version,
                &ev.regarding.kind,
            ))
            .and_then(|k| {
                k.get(&ObjectKey::new(
                    ev.regarding.namespace.clone(),
                    ev.regarding.name.clone(),
                ))
            })
            .map(|o| o.uid.clone())
            .unwrap_or_default();
        let body = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{}.{:016x}", ev.regarding.name, rand::random::<u64>()),
                "namespace": ns,
            },
            "eventTime": format!("{}.{:06}Z", now.strftime("%Y-%m-%dT%H:%M:%S"), now.subsec_microsecond()),
            "reportingController": format!("capstan.dev/{}", w.plugin),
            "reportingInstance": self.instance,
            "action": ev.reason,
            "reason": ev.reason,
            "note": ev.message,
            "type": match ev.event_type { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "regarding": {
                "apiVersion": ev.regarding.api_version,
                "kind": ev.regarding.kind,
                "namespace": ev.regarding.namespace,
                "name": ev.regarding.name,
                "uid": regarding_uid,
            },
        });
        let res = events_resource();
        let span = tracing::debug_span!("write", verb = "create", kind = "Event", object = %ev.regarding.name);
        if let Err(error) = self.api.create(&res, ns, body).instrument(span).await {
            tracing::warn!(plugin = w.plugin, object = %ev.regarding.name, %error, "recording event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KindCache;
    use crate::runtime::bindings::capstan::reconciler::types::Gvk as WitGvk;
    use prometheus_client::metrics::gauge::Gauge;

    /// Records requests; answers a patch with the object merged and its rv bumped.
    #[derive(Debug, Default)]
    struct FakeApi {
        requests: Mutex<Vec<(String, Value)>>,
        objects: Mutex<HashMap<String, Value>>,
        /// When set, the next patch's result and then this object (somebody else's
        /// later change) reach this cache before the patch's response returns, as
        /// watch events can.
        watch_beats_response: Mutex<Option<(Arc<KindCache>, Value)>>,
    }

    impl WriteApi for FakeApi {
        fn create<'a>(
            &'a self,
            _: &'a Resource,
            _: &'a str,
            body: Value,
        ) -> BoxFut<'a, Result<Value, ApiError>> {
            Box::pin(async move {
                self.requests.lock().push(("create".into(), body.clone()));
                let mut o = body;
                o["metadata"]["resourceVersion"] = json!("1");
                Ok(o)
            })
        }
        fn patch<'a>(
            &'a self,
            _: &'a Resource,
            _: &'a str,
            name: &'a str,
            patch: Value,
            status: bool,
        ) -> BoxFut<'a, Result<Value, ApiError>> {
            Box::pin(async move {
                // Let overlapping writers interleave.
                tokio::task::yield_now().await;
                self.requests.lock().push((
                    if status { "status" } else { "patch" }.into(),
                    patch.clone(),
                ));
                let mut objects = self.objects.lock();
                let o = objects.get_mut(name).ok_or(ApiError::NotFound)?;
                if patch["metadata"]["resourceVersion"] != o["metadata"]["resourceVersion"] {
                    return Err(ApiError::Conflict);
                }
                json_patch::merge(o, &patch);
                let rv: u64 = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                o["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                let response = o.clone();
                if let Some((cache, later)) = self.watch_beats_response.lock().take() {
                    cache.apply(CachedObject::from_value(response.clone()).unwrap());
                    cache.apply(CachedObject::from_value(later.clone()).unwrap());
                    *o = later;
                }
                Ok(response)
            })
        }
        fn delete<'a>(
            &'a self,
            _: &'a Resource,
            _: &'a str,
            name: &'a str,
            _: &'a str,
        ) -> BoxFut<'a, Result<(), ApiError>> {
            Box::pin(async move {
                self.requests
                    .lock()
                    .push(("delete".into(), json!({"name": name})));
                self.objects
                    .lock()
                    .remove(name)
                    .map(|_| ())
                    .ok_or(ApiError::NotFound)
            })
        }
    }

    fn widget(rv: &str) -> Value {
        json!({"apiVersion": "test.dev/v1", "kind": "Widget",
               "metadata": {"name": "w", "namespace": "ns", "uid": "u", "resourceVersion": rv},
               "spec": {"a": 1}})
    }

    fn setup() -> (Arc<FakeApi>, WritePath, Grants) {
        let gvk = Gvk::new("test.dev", "v1", "Widget");
        let cache = Arc::new(Cache::new());
        let kc = cache.kind_or_insert(&gvk, || {
            KindCache::new(gvk.clone(), "widgets", true, Gauge::default())
        });
        kc.apply(CachedObject::from_value(widget("10")).unwrap());
        let api = Arc::new(FakeApi::default());
        api.objects.lock().insert("w".into(), widget("10"));
        let path = WritePath::new(api.clone(), cache, "test");
        path.add_resource(
            gvk.clone(),
            Resource {
                api: ApiResource {
                    group: "test.dev".into(),
                    version: "v1".into(),
                    api_version: "test.dev/v1".into(),
                    kind: "Widget".into(),
                    plural: "widgets".into(),
                },
                namespaced: true,
            },
        );
        let grants = widget_grants(
            Verbs::PATCH | Verbs::PATCH_STATUS,
            crate::runtime::Target::Management,
        );
        (api, path, grants)
    }

    /// Grants of `verbs` on the test Widget kind, for `target`.
    /// The test plugin `p`'s writer, writing to no observed primary.
    fn writer<'a>(grants: &'a Grants, metrics: &'a ControllerMetrics) -> Writer<'a> {
        Writer {
            plugin: "p",
            grants,
            metrics,
            observed: None,
        }
    }

    fn widget_grants(verbs: Verbs, target: crate::runtime::Target) -> Grants {
        Grants::new(&[Permission {
            kind: WitGvk {
                group: "test.dev".into(),
                version: "v1".into(),
                kind: "Widget".into(),
            },
            verbs,
            target,
        }])
    }

    fn outcome(apply: &[Value], status: &[Value]) -> Outcome {
        Outcome {
            apply: apply.iter().map(Value::to_string).collect(),
            status: status.iter().map(Value::to_string).collect(),
            delete: vec![],
            events: vec![],
            requeue_after_ms: None,
            workload_apply: vec![],
            workload_status: vec![],
            workload_delete: vec![],
        }
    }

    #[tokio::test]
    async fn spec_then_status_chain_their_resource_versions_and_repeat_is_free() {
        let (api, path, grants) = setup();
        let metrics = ControllerMetrics::detached();
        let gvk = Gvk::new("test.dev", "v1", "Widget");
        let key = ObjectKey::new("ns", "w");
        let w = Writer {
            observed: Some((&gvk, &key, "10")),
            ..writer(&grants, &metrics)
        };
        let desired = json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"},
                             "spec": {"a": 2}, "status": {"ok": true}});
        let r = path
            .write(
                &w,
                &outcome(
                    std::slice::from_ref(&desired),
                    std::slice::from_ref(&desired),
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.requests, 2);
        let reqs = api.requests.lock().clone();
        assert_eq!(
            reqs[0].1,
            json!({"spec": {"a": 2}, "metadata": {"resourceVersion": "10"}})
        );
        assert_eq!(
            reqs[1].1,
            json!({"status": {"ok": true}, "metadata": {"resourceVersion": "11"}})
        );
        // The cache has not caught up; the same outcome again is diffed against our own
        // write and sends nothing.
        let w2 = Writer {
            observed: None,
            ..w
        };
        let r = path
            .write(
                &w2,
                &outcome(
                    std::slice::from_ref(&desired),
                    std::slice::from_ref(&desired),
                ),
            )
            .await
            .unwrap();
        assert_eq!((r.requests, r.skipped), (0, 2));
        assert_eq!(metrics.writes_skipped.get(), 2);
    }

    #[tokio::test]
    async fn a_later_change_the_cache_shows_before_our_response_is_not_hidden_by_it() {
        // Our status patch (rv 10 -> 11), then somebody else's deletion (rv 12), both
        // reach the cache before our response is handled. The freshest state is the
        // deletion: our response must not stand in for it (a reconcile of the deleting
        // object would see it alive, find nothing to do and never come back).
        let (api, path, grants) = setup();
        let metrics = ControllerMetrics::detached();
        let gvk = Gvk::new("test.dev", "v1", "Widget");
        let key = ObjectKey::new("ns", "w");
        let mut deleting = widget("12");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-29T07:00:00Z");
        deleting["status"] = json!({"ok": true});
        *api.watch_beats_response.lock() = Some((path.cache.kind(&gvk).unwrap(), deleting));
        let desired = json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"},
                             "spec": {"a": 1}, "status": {"ok": true}});
        let r = path
            .write(&writer(&grants, &metrics), &outcome(&[], &[desired]))
            .await
            .unwrap();
        assert_eq!(r.requests, 1);
        let fresh = path.freshest(&gvk, &key).unwrap();
        assert_eq!(fresh.resource_version, "12");
        assert!(fresh.deleting);

        // While the cache lags, our response does stand in for what it shows.
        let (_, path, grants) = setup();
        let r = path
            .write(
                &writer(&grants, &metrics),
                &outcome(
                    &[],
                    &[json!({"apiVersion": "test.dev/v1", "kind": "Widget",
                    "metadata": {"name": "w", "namespace": "ns"}, "status": {"ok": true}})],
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.requests, 1);
        assert_eq!(path.freshest(&gvk, &key).unwrap().resource_version, "11");
    }

    #[tokio::test]
    async fn overlapping_identical_writes_coalesce_into_one_request() {
        let (api, path, grants) = setup();
        let metrics = ControllerMetrics::detached();
        let w = writer(&grants, &metrics);
        let desired = json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}, "spec": {"a": 5}});
        let o = outcome(&[desired], &[]);
        let (a, b) = tokio::join!(path.write(&w, &o), path.write(&w, &o));
        assert_eq!(a.unwrap().requests + b.unwrap().requests, 1);
        assert_eq!(api.requests.lock().len(), 1);
    }

    #[tokio::test]
    async fn a_stale_read_is_a_conflict_and_undeclared_writes_send_nothing() {
        let (api, path, grants) = setup();
        let metrics = ControllerMetrics::detached();
        let gvk = Gvk::new("test.dev", "v1", "Widget");
        let key = ObjectKey::new("ns", "w");
        // The plugin read rv 9; the object is at 10 by now.
        let w = Writer {
            observed: Some((&gvk, &key, "9")),
            ..writer(&grants, &metrics)
        };
        let desired = json!({"apiVersion": "test.dev/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}, "spec": {"a": 3}});
        assert!(matches!(
            path.write(&w, &outcome(std::slice::from_ref(&desired), &[]))
                .await,
            Err(WriteError::Conflict { .. })
        ));
        // Declared Widget only: a ConfigMap create is refused before the Widget patch goes out.
        api.requests.lock().clear();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}});
        let w = Writer {
            observed: None,
            ..w
        };
        let err = path
            .write(&w, &outcome(&[desired, cm], &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                WriteError::Refused {
                    verb: Verb::Create,
                    ..
                }
            ),
            "{err}"
        );
        assert!(api.requests.lock().is_empty());
        assert_eq!(metrics.writes_refused.get(), 1);
        let bad = path
            .write(
                &w,
                &Outcome {
                    apply: vec!["{not json".into()],
                    ..outcome(&[], &[])
                },
            )
            .await;
        assert!(matches!(bad, Err(WriteError::Invalid { .. })));
    }

    fn add_secrets(path: &WritePath, cache: &Cache) -> Gvk {
        let gvk = Gvk::new("", "v1", "Secret");
        cache.kind_or_insert(&gvk, || {
            KindCache::new(gvk.clone(), "secrets", true, Gauge::default())
        });
        path.add_resource(
            gvk.clone(),
            Resource {
                api: ApiResource {
                    group: String::new(),
                    version: "v1".into(),
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    plural: "secrets".into(),
                },
                namespaced: true,
            },
        );
        gvk
    }

    #[tokio::test]
    async fn a_secret_is_created_whole_then_patched_on_data_and_type() {
        let (api, path, _) = setup();
        let gvk = add_secrets(&path, &path.cache);
        let grants = Grants::new(&[Permission {
            kind: WitGvk {
                group: String::new(),
                version: "v1".into(),
                kind: "Secret".into(),
            },
            verbs: Verbs::CREATE | Verbs::PATCH,
            target: Target::Management,
        }]);
        let metrics = ControllerMetrics::detached();
        let w = writer(&grants, &metrics);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "c1-ca", "namespace": "ns"},
            "type": "cluster.x-k8s.io/secret", "data": {"tls.crt": "Y2E=", "tls.key": "a2V5"}});
        path.write(&w, &outcome(std::slice::from_ref(&secret), &[]))
            .await
            .unwrap();
        let created = api.requests.lock()[0].clone();
        assert_eq!(created.0, "create");
        assert_eq!(created.1["type"], "cluster.x-k8s.io/secret");
        assert_eq!(created.1["data"]["tls.key"], "a2V5");
        // Once cached, only the changed data key is patched; type and the rest stay out.
        let mut stored = secret.clone();
        stored["metadata"]["uid"] = json!("s");
        stored["metadata"]["resourceVersion"] = json!("3");
        api.objects.lock().insert("c1-ca".into(), stored.clone());
        path.cache
            .kind(&gvk)
            .unwrap()
            .apply(CachedObject::from_value(stored).unwrap());
        api.requests.lock().clear();
        let mut changed = secret.clone();
        changed["data"]["tls.crt"] = json!("bmV3");
        let r = path
            .write(&w, &outcome(&[secret.clone(), changed], &[]))
            .await
            .unwrap();
        assert_eq!((r.requests, r.skipped), (1, 1));
        assert_eq!(
            api.requests.lock()[0].1,
            json!({"data": {"tls.crt": "bmV3"}, "metadata": {"resourceVersion": "3"}})
        );
    }

    #[tokio::test]
    async fn entries_go_apply_status_delete_and_gone_objects_are_skipped() {
        let (api, path, _) = setup();
        let grants = widget_grants(
            Verbs::PATCH | Verbs::PATCH_STATUS | Verbs::DELETE,
            crate::runtime::Target::Management,
        );
        let metrics = ControllerMetrics::detached();
        let w = writer(&grants, &metrics);
        let desired = json!({"apiVersion": "test.dev/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns"}, "spec": {"a": 9}, "status": {"s": 1}});
        let mut o = outcome(
            std::slice::from_ref(&desired),
            std::slice::from_ref(&desired),
        );
        o.delete.push(ObjectRef {
            api_version: "test.dev/v1".into(),
            kind: "Widget".into(),
            namespace: "ns".into(),
            name: "w".into(),
        });
        let r = path.write(&w, &o).await.unwrap();
        let verbs: Vec<String> = api.requests.lock().iter().map(|(v, _)| v.clone()).collect();
        assert_eq!(verbs, ["patch", "status", "delete"]);
        assert_eq!(r.requests, 3);
        // The object is gone from the server but the cache still has it: a status patch
        // answers 404 and a delete answers 404; both are skipped, not errors.
        api.requests.lock().clear();
        let mut again = outcome(
            &[],
            &[json!({"apiVersion": "test.dev/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns"}, "status": {"s": 2}})],
        );
        again.delete = o.delete.clone();
        let before = metrics.writes_skipped.get();
        let r = path.write(&w, &again).await.unwrap();
        assert_eq!((r.requests, r.skipped), (0, 2));
        assert_eq!(metrics.writes_skipped.get(), before + 2);
        // A workload grant does not open the management cluster.
        let workload_only = widget_grants(Verbs::PATCH, crate::runtime::Target::Workload);
        assert!(!workload_only.allows(&Gvk::new("test.dev", "v1", "Widget"), Verb::Patch));
        assert!(
            Grants::for_target(&workload_only_perms(), Target::Workload)
                .allows(&Gvk::new("test.dev", "v1", "Widget"), Verb::Patch)
        );
    }

    fn workload_only_perms() -> Vec<Permission> {
        vec![Permission {
            kind: WitGvk {
                group: "test.dev".into(),
                version: "v1".into(),
                kind: "Widget".into(),
            },
            verbs: Verbs::PATCH,
            target: Target::Workload,
        }]
    }

    #[tokio::test]
    async fn creations_and_deletions_are_pending_until_the_cache_shows_them() {
        let (_api, path, _) = setup();
        let gvk = Gvk::new("test.dev", "v1", "Widget");
        let grants = widget_grants(
            Verbs::CREATE | Verbs::PATCH | Verbs::DELETE,
            crate::runtime::Target::Management,
        );
        let metrics = ControllerMetrics::detached();
        let w = writer(&grants, &metrics);
        let kc = path.cache.kind(&gvk).unwrap();
        let fresh = json!({"apiVersion": "test.dev/v1", "kind": "Widget",
                           "metadata": {"name": "w2", "namespace": "ns"}, "spec": {"a": 2}});
        let mut o = outcome(std::slice::from_ref(&fresh), &[]);
        o.delete.push(ObjectRef {
            api_version: "test.dev/v1".into(),
            kind: "Widget".into(),
            namespace: "ns".into(),
            name: "w".into(),
        });
        let report = path.write(&w, &o).await.unwrap();
        let created = Pending::Created {
            gvk: gvk.clone(),
            key: ObjectKey::new("ns", "w2"),
        };
        let deleted = Pending::Deleted {
            gvk: gvk.clone(),
            key: ObjectKey::new("ns", "w"),
            uid: "u".into(),
        };
        assert_eq!(report.pending, [created.clone(), deleted.clone()]);
        // The cache lags: neither shows.
        assert!(!path.observed(&created) && !path.observed(&deleted));
        // The watch delivers the creation, then the deletion (as a deletion timestamp first).
        let mut w2 = fresh.clone();
        w2["metadata"]["uid"] = json!("u2");
        w2["metadata"]["resourceVersion"] = json!("11");
        kc.apply(CachedObject::from_value(w2).unwrap());
        assert!(path.observed(&created) && !path.observed(&deleted));
        let mut deleting = widget("12");
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-28T12:00:00Z");
        kc.apply(CachedObject::from_value(deleting).unwrap());
        assert!(path.observed(&deleted));
        // Gone, or replaced by a namesake with another uid, shows it too.
        kc.delete(&ObjectKey::new("ns", "w"));
        assert!(path.observed(&deleted));
        let mut namesake = widget("13");
        namesake["metadata"]["uid"] = json!("other");
        kc.apply(CachedObject::from_value(namesake).unwrap());
        assert!(path.observed(&deleted));
        // A kind without a cache cannot show anything: not waited for.
        assert!(path.observed(&Pending::Created {
            gvk: Gvk::new("", "v1", "ConfigMap"),
            key: ObjectKey::new("ns", "c"),
        }));
    }
}

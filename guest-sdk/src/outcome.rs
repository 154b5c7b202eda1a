//! The outcome a reconcile returns: desired objects, statuses, deletions, events.

use crate::bindings::capstan::reconciler::types as wit;
use crate::{Error, Event, EventType, ObjectRef};
use serde::Serialize;
use std::time::Duration;

/// The desired changes of one reconcile. The host diffs each object against
/// its cache and writes only what differs, at most one patch per object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    apply: Vec<String>,
    status: Vec<String>,
    delete: Vec<ObjectRef>,
    events: Vec<Event>,
    requeue_after_ms: Option<u64>,
    workload_apply: Vec<String>,
    workload_status: Vec<String>,
    workload_delete: Vec<ObjectRef>,
}

fn to_json(obj: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(obj)
        .map_err(|e| Error::terminal(format!("object does not serialize: {e}")))
}

impl Outcome {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Desire this object (apiVersion, kind, metadata.name/namespace and the
    /// fields the plugin owns). Created when absent, patched when different.
    pub fn apply(&mut self, object: &impl Serialize) -> Result<&mut Self, Error> {
        self.apply.push(to_json(object)?);
        Ok(self)
    }

    /// Desire an object given as JSON text, as is (the host validates it).
    pub fn apply_json(&mut self, object: String) -> &mut Self {
        self.apply.push(object);
        self
    }

    /// Desire this status: an object with apiVersion, kind, metadata.name and
    /// namespace, and `status`. Written to the status subresource.
    pub fn status(&mut self, object: &impl Serialize) -> Result<&mut Self, Error> {
        self.status.push(to_json(object)?);
        Ok(self)
    }

    /// Delete this object.
    pub fn delete(&mut self, object: ObjectRef) -> &mut Self {
        self.delete.push(object);
        self
    }

    /// Record an event about `regarding`.
    pub fn event(
        &mut self,
        regarding: ObjectRef,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> &mut Self {
        self.events.push(Event {
            regarding,
            event_type,
            reason: reason.to_owned(),
            message: message.to_owned(),
        });
        self
    }

    /// Desire this object in the primary's workload cluster (as
    /// [`Outcome::apply`]).
    pub fn workload_apply(&mut self, object: &impl Serialize) -> Result<&mut Self, Error> {
        self.workload_apply.push(to_json(object)?);
        Ok(self)
    }

    /// Desire this status in the primary's workload cluster (as
    /// [`Outcome::status`]).
    pub fn workload_status(&mut self, object: &impl Serialize) -> Result<&mut Self, Error> {
        self.workload_status.push(to_json(object)?);
        Ok(self)
    }

    /// Delete this object in the primary's workload cluster.
    pub fn workload_delete(&mut self, object: ObjectRef) -> &mut Self {
        self.workload_delete.push(object);
        self
    }

    /// Reconcile again after `after` even if nothing changes (time-based
    /// waits only; watches cover the rest).
    pub fn requeue_after(&mut self, after: Duration) -> &mut Self {
        self.requeue_after_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Desired objects, as JSON text.
    pub fn applied(&self) -> &[String] {
        &self.apply
    }

    /// Desired statuses, as JSON text.
    pub fn statuses(&self) -> &[String] {
        &self.status
    }

    /// Deletions.
    pub fn deletions(&self) -> &[ObjectRef] {
        &self.delete
    }

    /// Events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The requested requeue, if any.
    pub fn requeue_after_ms(&self) -> Option<u64> {
        self.requeue_after_ms
    }

    /// Desired workload-cluster objects, as JSON text.
    pub fn workload_applied(&self) -> &[String] {
        &self.workload_apply
    }

    /// Desired workload-cluster statuses, as JSON text.
    pub fn workload_statuses(&self) -> &[String] {
        &self.workload_status
    }

    /// Workload-cluster deletions.
    pub fn workload_deletions(&self) -> &[ObjectRef] {
        &self.workload_delete
    }

    /// Whether this outcome asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Lower into the WIT record.
    pub fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            apply: self.apply,
            status: self.status,
            delete: self.delete,
            events: self.events,
            requeue_after_ms: self.requeue_after_ms,
            workload_apply: self.workload_apply,
            workload_status: self.workload_status,
            workload_delete: self.workload_delete,
        }
    }
}

impl ObjectRef {
    /// A reference to the object described by this JSON (its apiVersion, kind,
    /// metadata.namespace and metadata.name; missing fields are empty).
    pub fn of(object: &serde_json::Value) -> Self {
        let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Self {
            api_version: s(object.get("apiVersion")),
            kind: s(object.get("kind")),
            namespace: s(object.pointer("/metadata/namespace")),
            name: s(object.pointer("/metadata/name")),
        }
    }
}

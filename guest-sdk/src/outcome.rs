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

    /// Lower into the WIT record.
    pub fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            apply: self.apply,
            status: self.status,
            delete: self.delete,
            events: self.events,
            requeue_after_ms: self.requeue_after_ms,
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

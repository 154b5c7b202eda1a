//! The seam between the controller and workload-cluster access: what the controller asks, and the default that has none.
//!
//! A plugin may read (`relation.target = workload`), watch (`watch.target = workload`) and
//! write (`outcome.workload-*`) objects of the workload cluster of each primary. The
//! primary's cluster is [`crate::cache::CachedObject::cluster`] in the primary's namespace
//! (the `ObjectKey` of the Cluster API `Cluster`). The controller does not know how the host
//! reaches a workload cluster; it asks a [`WorkloadAccess`], given to
//! [`super::Controller::new`] through [`super::ControllerOptions::workload`]:
//!
//! - [`WorkloadAccess::connection`] — the state put in `snapshot.workload`;
//! - [`WorkloadAccess::cache`] — the workload cluster's cache of one kind, once connected.
//!   The controller evaluates every workload relation selector itself against it
//!   (`super::select`), so an implementation only keeps informers; `None` (not connected,
//!   kind not watched yet) makes the relation `synced: false` with no objects;
//! - [`WorkloadAccess::writer`] — the write path of the workload cluster; the controller
//!   writes `workload-apply`, `workload-status`, `workload-delete` through it with the
//!   plugin's workload permissions ([`crate::writer::WritePath::write_workload`]); an `Err`
//!   fails the reconcile as transient with that message;
//! - [`WorkloadAccess::register`] — called once per controller with the workload kinds the
//!   plugin reads or watches and a [`WorkloadEvents`] sink: the implementation calls
//!   [`WorkloadEvents::event`] for every change of a watched kind in any workload cluster
//!   (mapped to primary keys by the plugin's workload watches, see `crate::watch::Scope`),
//!   and [`WorkloadEvents::connection_changed`] when a cluster connects or disconnects
//!   (enqueues that cluster's primaries, so their snapshots see the new state).
//!
//! [`NoWorkloadAccess`] is the default: every cluster is `disconnected`, workload relations
//! are unsynced, and workload writes fail with "workload cluster access is not configured".

use crate::cache::{CacheEvent, Gvk, KindCache, ObjectKey};
use crate::runtime::bindings::capstan::reconciler::types::Connection;
use crate::writer::WritePath;
use std::fmt;
use std::sync::Arc;

/// The error of every workload write on a host without workload access.
pub const NOT_CONFIGURED: &str = "workload cluster access is not configured";

/// What the controller needs of the host's workload-cluster access (the cluster cache).
pub trait WorkloadAccess: Send + Sync + fmt::Debug + 'static {
    /// The host's connection to the workload cluster of `cluster` (the Cluster's key).
    fn connection(&self, cluster: &ObjectKey) -> Connection;
    /// The cache of `gvk` in that workload cluster, if connected and watched.
    fn cache(&self, cluster: &ObjectKey, gvk: &Gvk) -> Option<Arc<KindCache>>;
    /// The write path of that workload cluster; `Err` is a transient reason.
    fn writer(&self, cluster: &ObjectKey) -> Result<Arc<WritePath>, String>;
    /// Plugin `plugin` reads or watches `kinds` in every workload cluster of its
    /// primaries; report their changes and connection changes to `events`.
    fn register(&self, plugin: &str, kinds: Vec<Gvk>, events: Arc<dyn WorkloadEvents>);
}

/// Where a [`WorkloadAccess`] reports what happens in workload clusters (the controller).
pub trait WorkloadEvents: Send + Sync + 'static {
    /// An object of `gvk` changed in the workload cluster of `cluster`.
    fn event(&self, cluster: &ObjectKey, gvk: &Gvk, event: &CacheEvent);
    /// The connection to the workload cluster of `cluster` changed.
    fn connection_changed(&self, cluster: &ObjectKey);
}

/// No workload access: disconnected, unsynced, writes refused as transient.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWorkloadAccess;

impl WorkloadAccess for NoWorkloadAccess {
    fn connection(&self, _: &ObjectKey) -> Connection {
        Connection::Disconnected
    }
    fn cache(&self, _: &ObjectKey, _: &Gvk) -> Option<Arc<KindCache>> {
        None
    }
    fn writer(&self, _: &ObjectKey) -> Result<Arc<WritePath>, String> {
        Err(NOT_CONFIGURED.to_string())
    }
    fn register(&self, _: &str, _: Vec<Gvk>, _: Arc<dyn WorkloadEvents>) {}
}

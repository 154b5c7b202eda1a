//! The runtime's Wasm plugins as the controller's reconcilers: one call, its failure classified.

use super::{CallFailure, Fault, Reconcile};
use crate::runtime::bindings::capstan::reconciler::types::{Outcome, PluginInfo, Snapshot};
use crate::runtime::{CallError, Plugin};

impl Reconcile for Plugin {
    fn info(&self) -> &PluginInfo {
        Plugin::info(self)
    }

    fn reconcile(&self, key: &str, snapshot: &Snapshot) -> Result<Outcome, CallFailure> {
        Plugin::reconcile(self, key, snapshot).map_err(classify)
    }

    fn digest(&self) -> Option<&str> {
        Some(Plugin::digest(self))
    }
}

/// Map a runtime call error to the controller's notion: the plugin's own errors keep
/// their meaning; faults are counted by class; a host that cannot instantiate (every
/// pooled slot busy) is a transient condition, not the plugin's fault.
pub fn classify(e: CallError) -> CallFailure {
    match e {
        CallError::Transient { message, .. } => CallFailure::Transient(message),
        CallError::Terminal { message, .. } => CallFailure::Terminal(message),
        CallError::Trap { message, .. } => CallFailure::Fault(Fault::Trap(message)),
        CallError::DeadlineExceeded { .. } | CallError::FuelExhausted { .. } => {
            CallFailure::Fault(Fault::Deadline)
        }
        CallError::MemoryLimitExceeded { .. } => CallFailure::Fault(Fault::Memory),
        CallError::InvalidOutcome { reason, .. } => {
            CallFailure::Fault(Fault::InvalidOutcome(reason))
        }
        e @ CallError::Instantiate { .. } => CallFailure::Transient(e.to_string()),
    }
}

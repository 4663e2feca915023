//! This node's own state, as operators and load balancers see it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by every listener: whether the node is draining (maintenance). A draining node keeps
/// serving its live sessions, but its health pages turn red so that load balancers stop sending
/// it new ones.
#[derive(Debug, Default)]
pub struct NodeState {
    draining: AtomicBool,
}

impl NodeState {
    /// A node in service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or stops draining; returns the previous state.
    pub fn set_draining(&self, draining: bool) -> bool {
        self.draining.swap(draining, Ordering::Relaxed)
    }
}

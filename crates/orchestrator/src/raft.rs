//! openraft's type configuration for DistriQueue: a log entry is a [`Batch`] of lifecycle
//! commands and its response the [`Outcome`] of each.

use std::io::Cursor;

use distriqueue_core::{Batch, Outcome};
use openraft::BasicNode;

/// A node's id in the orchestrator cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// DistriQueue's Raft types: entries carry command batches, responses one outcome per command.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

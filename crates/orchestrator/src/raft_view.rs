//! What openraft's metrics say of this node, in DistriQueue's terms: its role, the commit index
//! (which openraft 0.9 does not report: on the leader, the highest index a majority of the
//! voters hold), and, on the leader, how far each other member's log matches. The Raft status
//! route and the Prometheus gauges both read it, so they never disagree.

use distriqueue_core::api::RaftRole;
use openraft::{BasicNode, RaftMetrics, ServerState};

use crate::raft::NodeId;

/// A view of one node's Raft metrics.
pub(crate) struct RaftView {
    pub(crate) metrics: RaftMetrics<NodeId, BasicNode>,
}

impl RaftView {
    pub(crate) fn new(metrics: RaftMetrics<NodeId, BasicNode>) -> RaftView {
        RaftView { metrics }
    }

    /// The node's role.
    pub(crate) fn role(&self) -> RaftRole {
        match self.metrics.state {
            ServerState::Leader => RaftRole::Leader,
            ServerState::Follower => RaftRole::Follower,
            ServerState::Candidate => RaftRole::Candidate,
            ServerState::Learner => RaftRole::Learner,
            ServerState::Shutdown => RaftRole::Shutdown,
        }
    }

    /// The highest index applied to the state machine.
    pub(crate) fn applied_index(&self) -> Option<u64> {
        self.metrics.last_applied.map(|log_id| log_id.index)
    }

    /// The highest index known committed: on the leader, the highest index a majority of the
    /// voters hold (a voter without a matched entry holds none); elsewhere the applied index
    /// (a follower applies what the leader says is committed; openraft does not report how far
    /// that is ahead of applying).
    pub(crate) fn commit_index(&self) -> Option<u64> {
        let Some(replication) = &self.metrics.replication else {
            return self.applied_index();
        };
        let mut held: Vec<u64> = self
            .metrics
            .membership_config
            .membership()
            .voter_ids()
            .map(|voter| {
                replication
                    .get(&voter)
                    .copied()
                    .flatten()
                    .map_or(0, |log_id| log_id.index)
            })
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        // With n voters, a majority is n/2 + 1: the (n/2)-th highest index, from 0.
        held.get(held.len() / 2).copied().or(self.applied_index())
    }

    /// On the leader: each other member's matched index (`None`: nothing matched yet), by id.
    /// Empty elsewhere.
    pub(crate) fn followers(&self) -> Vec<(NodeId, Option<u64>)> {
        self.metrics
            .replication
            .iter()
            .flatten()
            .filter(|(member, _)| **member != self.metrics.id)
            .map(|(member, matched)| (*member, matched.map(|log_id| log_id.index)))
            .collect()
    }

    /// How many entries `matched` is behind this node's log.
    pub(crate) fn lag(&self, matched: Option<u64>) -> u64 {
        self.metrics
            .last_log_index
            .unwrap_or(0)
            .saturating_sub(matched.unwrap_or(0))
    }
}

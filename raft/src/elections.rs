//! The pre-vote guard (`prevote.rs` holds the state it reads): every heartbeat interval it
//! decides openraft's election switch from this master's own view and, when a leader seems
//! gone, from asking the other voters whether they have heard one.

use std::sync::Weak;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{ServerState, Vote};

use crate::network::call;
use crate::node::RaftNode;
use crate::NodeId;

/// What the guard concludes from this master's own state, before asking anyone.
#[derive(Debug, PartialEq, Eq)]
enum Own {
    /// Elections stay as openraft would have them (no membership yet, this master is the only
    /// voter, or not a voter at all).
    Open,
    /// Elections stay off (leaving, leading, or a leader was heard within `quiet`).
    Closed,
    /// Elections open if these other voters make a majority with this master.
    Ask(Vec<NodeId>),
}

impl RaftNode {
    /// Records an append or snapshot chunk sent by the leader of `vote` (the Raft port).
    pub(crate) fn heard_from(&self, vote: &Vote<NodeId>) {
        let mine = self.raft.metrics().borrow().vote;
        self.prevote.heard(vote, &mine);
    }

    /// This master's answer to another voter's pre-vote: true when it, too, has heard from no
    /// leader for `quiet` and does not lead with a quorum's recent acknowledgement.
    pub fn prevote_answer(&self) -> bool {
        let quiet_ms = self.prevote.quiet().as_millis() as u64;
        let leading = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.state == ServerState::Leader
                && m.millis_since_quorum_ack.is_some_and(|ms| ms < quiet_ms)
        };
        !leading && self.prevote.is_quiet()
    }

    fn own_view(&self) -> Own {
        if self.prevote.is_leaving() {
            return Own::Closed;
        }
        let m = self.raft.metrics();
        let m = m.borrow();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if !voters.contains(&self.id) || voters.len() == 1 {
            return Own::Open;
        }
        if m.state == ServerState::Leader || !self.prevote.is_quiet() {
            return Own::Closed;
        }
        Own::Ask(voters.into_iter().filter(|id| *id != self.id).collect())
    }

    /// Asks `others` whether they, too, have heard from no leader; true once enough say so to
    /// make a majority with this master.
    async fn majority_agrees(&self, others: Vec<NodeId>) -> bool {
        // A majority of the voters, this master one of them.
        let needed = (others.len() + 1) / 2;
        let cluster = self.cluster_id();
        let mut asks: FuturesUnordered<_> = others
            .into_iter()
            .filter_map(|id| {
                let url = self.peer_url(id, "prevote")?;
                let cluster = cluster.clone();
                Some(async move {
                    let asked = call::<(), bool>(
                        &self.client,
                        &url,
                        cluster.as_deref(),
                        Some(self.id),
                        &(),
                        self.prevote.quiet(),
                    );
                    matches!(asked.await, Ok(true))
                })
            })
            .collect();
        let mut yes = 0;
        while let Some(agreed) = asks.next().await {
            yes += usize::from(agreed);
            if yes >= needed {
                return true;
            }
        }
        false
    }
}

/// Decides openraft's election switch every `every` ([`crate::prevote::PreVote`]); ends with
/// the node.
pub(crate) async fn guard_elections(node: Weak<RaftNode>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_open = false;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let (open, asked) = match node.own_view() {
            Own::Open => (true, false),
            Own::Closed => (false, false),
            // A leader heard while the others were asked closes elections again.
            Own::Ask(others) => (
                node.majority_agrees(others).await && node.prevote.is_quiet(),
                true,
            ),
        };
        if open && asked && !was_open {
            tracing::info!(
                "pre-vote: no leader heard for {:?} here and at a majority: elections open",
                node.prevote.silence()
            );
        }
        was_open = open;
        node.prevote.set(&node.raft, open);
    }
}

//! Pre-vote, outside openraft (0.9 has none): a master starts an election only while a majority
//! of the voters, itself included, has heard from no leader for a while.
//!
//! Without it, one follower that misses its leader for an election timeout — starved of CPU on a
//! loaded machine, or its Raft core held up behind a slow fsync while heartbeats queue — campaigns
//! with a higher term. The leader, whose lease over its own vote ran out long ago, grants that
//! vote, and leadership moves although nothing was wrong: 26 leader changes in 5 minutes of 256
//! writers on the 2-core machine, where etcd (PreVote and CheckQuorum) had none.
//!
//! So openraft's timer-driven elections (`RuntimeConfig::elect`) stay switched off unless the
//! guard ([`guard_elections`]), which decides every heartbeat interval, has just found that
//! 1. this master is not leaving (a leader handing over must not win its leadership back),
//! 2. it has heard from no leader for `quiet` (the minimum election timeout), and
//! 3. enough other voters, asked over `/raft/prevote`, say the same that with this master they
//!    are a majority. A voter says so when it has heard from no leader for `quiet` and is not
//!    itself a leader acknowledged by a quorum within `quiet`; one that does not answer within
//!    `quiet` counts as saying no.
//!
//! Contact is recorded where a leader's append or snapshot chunk arrives on the Raft port, before
//! openraft sees it, so heartbeats queued behind a stalled Raft core still count.
//!
//! Safety is untouched: this only withholds elections; votes are granted by openraft's rules.
//! Failover is not slowed: when the leader dies every follower stops hearing from it at once, and
//! the guard opens after `quiet` plus a round trip, before openraft's own timer fires (the lease
//! plus a random election timeout: at least 180 ms by default). A campaign asked for by a leader
//! handing over (`Trigger::elect`) does not consult the switch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::{ServerState, Vote};

use crate::network::call;
use crate::node::RaftNode;
use crate::NodeId;

/// This master's side of pre-vote: when a leader last reached it, and whether it is leaving.
pub(crate) struct PreVote {
    epoch: Instant,
    /// Milliseconds after `epoch`, plus one, when a leader last reached this master; 0: never.
    contact: AtomicU64,
    leaving: AtomicBool,
    /// Silence after which a leader counts as gone: the minimum election timeout.
    quiet: Duration,
    /// Held while openraft's election switch is set, so that [`PreVote::leave`] is never undone
    /// by a guard decision taken just before it.
    switch: Mutex<()>,
}

impl PreVote {
    pub(crate) fn new(quiet: Duration) -> Self {
        PreVote {
            epoch: Instant::now(),
            contact: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            quiet,
            switch: Mutex::new(()),
        }
    }

    /// Records a message from the leader of `vote` (an append or a snapshot chunk), when that is
    /// a leader's vote no older than this master's own, `mine`.
    pub(crate) fn heard(&self, vote: &Vote<NodeId>, mine: &Vote<NodeId>) {
        if vote.is_committed() && vote >= mine {
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            self.contact.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// How long since a leader last reached this master (`None`: never).
    fn silence(&self) -> Option<Duration> {
        match self.contact.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }

    /// True when no leader has reached this master for `quiet`.
    fn is_quiet(&self) -> bool {
        self.silence().is_none_or(|s| s >= self.quiet)
    }

    /// Switches elections off for good: this master is handing its leadership over.
    pub(crate) fn leave(&self, raft: &crate::Raft) {
        let _switch = self.switch.lock().expect("pre-vote switch");
        self.leaving.store(true, Ordering::SeqCst);
        raft.runtime_config().elect(false);
    }

    /// Sets openraft's election switch to `open`, unless this master is leaving.
    fn set(&self, raft: &crate::Raft, open: bool) {
        let _switch = self.switch.lock().expect("pre-vote switch");
        raft.runtime_config()
            .elect(open && !self.leaving.load(Ordering::SeqCst));
    }
}

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
        let quiet_ms = self.prevote.quiet.as_millis() as u64;
        let leading = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.state == ServerState::Leader
                && m.millis_since_quorum_ack.is_some_and(|ms| ms < quiet_ms)
        };
        !leading && self.prevote.is_quiet()
    }

    fn own_view(&self) -> Own {
        if self.prevote.leaving.load(Ordering::SeqCst) {
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
                        self.prevote.quiet,
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

/// Decides openraft's election switch every `every` ([`PreVote`]); ends with the node.
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

#[cfg(test)]
mod tests {
    use openraft::Vote;

    use super::*;

    fn leader_vote(term: u64, id: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, id)
    }

    #[test]
    fn only_a_current_leader_counts_as_contact() {
        let pv = PreVote::new(Duration::from_secs(3600));
        let mine = leader_vote(5, 2);
        assert!(pv.is_quiet(), "never heard from anyone");
        // A candidate's vote, or an older leader's, is no contact.
        pv.heard(&Vote::new(6, 3), &mine);
        pv.heard(&leader_vote(4, 1), &mine);
        assert!(pv.is_quiet());
        pv.heard(&leader_vote(5, 2), &mine);
        assert!(!pv.is_quiet(), "the leader this master follows");
    }

    #[test]
    fn contact_fades_after_quiet() {
        let pv = PreVote::new(Duration::from_millis(30));
        let mine = Vote::new(1, 1);
        pv.heard(&leader_vote(1, 1), &mine);
        assert!(!pv.is_quiet());
        std::thread::sleep(Duration::from_millis(60));
        assert!(pv.is_quiet());
    }
}

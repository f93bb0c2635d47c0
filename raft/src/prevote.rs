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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::Vote;

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
    pub(crate) fn silence(&self) -> Option<Duration> {
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
    pub(crate) fn is_quiet(&self) -> bool {
        self.silence().is_none_or(|s| s >= self.quiet)
    }

    /// The silence after which a leader counts as gone.
    pub(crate) fn quiet(&self) -> Duration {
        self.quiet
    }

    /// True once this master is handing its leadership over.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// Switches elections off for good: this master is handing its leadership over.
    pub(crate) fn leave(&self, raft: &crate::Raft) {
        let _switch = self.switch.lock().expect("pre-vote switch");
        self.leaving.store(true, Ordering::SeqCst);
        raft.runtime_config().elect(false);
    }

    /// Sets openraft's election switch to `open`, unless this master is leaving.
    pub(crate) fn set(&self, raft: &crate::Raft, open: bool) {
        let _switch = self.switch.lock().expect("pre-vote switch");
        raft.runtime_config()
            .elect(open && !self.leaving.load(Ordering::SeqCst));
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

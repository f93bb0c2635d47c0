//! Graceful leader stop: before it exits, a leader hands its leadership to an up-to-date
//! follower, so the cluster does not wait out an election timeout.
//!
//! openraft 0.9 has no leader transfer, but its vote rule allows one. A master refuses every
//! vote while the lease of the leader it follows runs (`election_timeout_max` since it last
//! heard from it); a leader's own lease runs from its election, so a leader that has led longer
//! than the lease grants the vote of a candidate whose log is at least as long as its own. The
//! procedure ([`RaftNode::hand_over`]):
//!
//! 1. close the write gate: new proposals on this master are answered `NoQuorum` (certainly no
//!    effect: the forwarding layer retries them with the next leader), and the writes already
//!    proposed are awaited, so the log stops growing;
//! 2. wait until a voter has replicated the whole log, and pick it;
//! 3. in a cluster of more than three voters the candidate needs votes beyond the leader's:
//!    stop heartbeats and let the followers' leases run out first (the lease, not a random
//!    election timeout on top of it);
//! 4. ask the chosen follower to campaign (`/raft/campaign`), and wait until it leads.
//!
//! With three masters, the old leader's vote and the candidate's own are a majority, so the
//! new leader is elected in one round trip. If any step fails or times out, the master simply
//! stops: the followers elect a leader after their timeouts, as after a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::error::ClusterError;
use crate::network::call;
use crate::node::RaftNode;
use crate::NodeId;

/// Keeps the node's [`crate::gate::Tenure`] in step with openraft's metrics, until Raft stops.
pub(crate) async fn follow_tenure(node: Arc<RaftNode>) {
    let mut rx = node.raft.metrics();
    loop {
        let (leading, term) = {
            let m = rx.borrow_and_update();
            // A leader whose Raft stopped (its storage failed) leads no more.
            let leading = m.state == ServerState::Leader && m.running_state.is_ok();
            (leading, m.current_term)
        };
        node.tenure.observe(leading, term);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl RaftNode {
    /// Hands leadership to an up-to-date follower, when this master leads; returns that
    /// follower once it leads, or `None` (not the leader, no follower caught up, or no new
    /// leader before `timeout`). Call it just before stopping: this master campaigns no more.
    pub async fn hand_over(&self, timeout: Duration) -> Option<NodeId> {
        let start = Instant::now();
        let deadline = start + timeout;
        if self.raft.metrics().borrow().state != ServerState::Leader {
            return None;
        }
        // This master is leaving: it must not win the next election back.
        self.prevote.leave(&self.raft);
        let drained = self.gate.close_and_drain(deadline).await;
        let chosen = if drained {
            self.caught_up_follower(deadline).await
        } else {
            None
        };
        let handed = match chosen {
            Some((target, voters)) => self.campaign_at(target, voters, deadline).await,
            None => None,
        };
        self.gate.open();
        match handed {
            Some(to) => tracing::info!(
                "handed leadership to master {to} in {} ms",
                start.elapsed().as_millis()
            ),
            None => tracing::warn!(
                drained,
                "could not hand leadership over: the followers elect a leader after their timeout"
            ),
        }
        handed
    }

    /// The voter that has replicated this leader's whole log (the first such, by id), with the
    /// number of voters; waits for one until `deadline`.
    async fn caught_up_follower(&self, deadline: Instant) -> Option<(NodeId, usize)> {
        let mut rx = self.raft.metrics();
        loop {
            let found = {
                let m = rx.borrow_and_update();
                if m.state != ServerState::Leader {
                    return None;
                }
                let last = m.last_log_index;
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                if !voters.iter().any(|id| *id != self.id) {
                    // A single master: nobody to hand over to.
                    return None;
                }
                let matched = m.replication.as_ref()?;
                let target = voters.iter().copied().find(|id| {
                    *id != self.id && matched.get(id).is_some_and(|l| l.map(|l| l.index) >= last)
                });
                target.map(|t| (t, voters.len()))
            };
            if found.is_some() {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Asks `target` to campaign and waits until it leads.
    async fn campaign_at(
        &self,
        target: NodeId,
        voters: usize,
        deadline: Instant,
    ) -> Option<NodeId> {
        // The lease: openraft's `election_timeout_max`.
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        // This leader grants the vote only once its lease over its own vote has run out: at
        // once unless it was elected less than a lease ago.
        if let Some(since) = self.tenure.since() {
            let lease_end = since + lease + Duration::from_millis(10);
            tokio::time::sleep_until(lease_end.into()).await;
        }
        if voters > 3 {
            // Beyond three, the candidate needs the votes of followers, which refuse while
            // their lease from this leader runs: let it run out, without heartbeats.
            self.raft.runtime_config().heartbeat(false);
            tokio::time::sleep(lease + Duration::from_millis(25)).await;
        }
        let url = self.peer_url(target, "campaign")?;
        let left = deadline.saturating_duration_since(Instant::now());
        let cluster = self.cluster_id();
        let asked = call::<(), Result<(), ClusterError>>(
            &self.client,
            &url,
            cluster.as_deref(),
            Some(self.id),
            &(),
            left.max(Duration::from_millis(1)),
        )
        .await;
        let refusal = match asked {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refusal {
            tracing::warn!("master {target} would not campaign: {why}");
            return None;
        }
        let mut rx = self.raft.metrics();
        loop {
            let leader = rx.borrow_and_update().current_leader;
            if leader.is_some_and(|l| l != self.id) {
                return leader;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Campaigns at once, when asked by the leader this master follows (the Raft port's
    /// `/raft/campaign`, whose caller is proved by its certificate).
    pub async fn campaign(&self, asked_by: NodeId) -> Result<(), ClusterError> {
        if self.leader().map(|(id, _)| id) != Some(asked_by) {
            return Err(ClusterError::Invalid(format!(
                "master {asked_by} is not the leader this master follows"
            )));
        }
        tracing::info!("master {asked_by} hands leadership over: campaigning");
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| ClusterError::Fatal(e.to_string()))
    }
}

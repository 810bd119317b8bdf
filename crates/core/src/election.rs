//! Failure detection and leader election: the ballot leader election (BLE) of Omni-Paxos
//! (Ng, Haridi, Carbone; EuroSys'23 §4), adapted to PMMC's ballots.
//!
//! Every node runs heartbeat *rounds*: it asks every peer for a [`Heartbeat`] and, when the
//! round ends, looks at who answered. A node is *quorum-connected* if a majority (itself
//! included) answered. A *candidate* is a node that claims to lead with some ballot and
//! is quorum-connected; everyone follows the highest candidate ballot it hears. A node is
//! *happy* when it hears such a leader.
//!
//! A node that stays unhappy for a randomized election timeout takes over with a ballot
//! above every ballot it has seen — but only if it is quorum-connected itself and no peer
//! it hears is happy. These two conditions are what let Omni-Paxos make progress where
//! Raft stalls: under *quorum-loss* and *constrained election* the one quorum-connected
//! node takes over whatever its log looks like (phase 1 brings its log up to date), and in
//! the *chained* scenario a node cut off from the leader does not depose a leader that its
//! neighbour still sees, so there is no livelock. A leader that is not quorum-connected
//! for an election timeout steps down. A preempted leader backs off for a random time.

use std::collections::BTreeMap;

use rand::Rng;

use crate::message::Heartbeat;
use crate::types::{Ballot, NodeId, Slot, Time};

/// What the node must do after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionEvent {
    /// Nothing changes.
    Steady,
    /// Start phase 1 with this ballot.
    TakeOver(Ballot),
    /// Stop leading: not quorum-connected, or a higher leader is in charge.
    StepDown,
}

#[derive(Debug)]
pub struct Election {
    id: NodeId,
    /// Every other member: voters and learners of the configurations in force.
    peers: Vec<NodeId>,
    /// The voters of the configuration that governs this node's next undecided slot,
    /// whose replies make a quorum.
    voters: Vec<NodeId>,
    quorum: usize,
    heartbeat_us: u64,
    election_timeout_us: u64,
    backoff_max_us: u64,
    round: u64,
    /// Replies received in the current round.
    replies: BTreeMap<NodeId, Heartbeat>,
    /// The last heartbeat heard from each peer, and when (for status: lag per peer).
    last_heard: BTreeMap<NodeId, (Time, Heartbeat)>,
    ballot_max: Ballot,
    /// The ballot of the leader this node follows (its own when it leads).
    leader: Option<Ballot>,
    quorum_connected: bool,
    /// When a round last ended with a majority heard (see `quorum_heard_at`).
    quorum_heard_at: Option<Time>,
    happy: bool,
    unhappy_since: Option<Time>,
    /// This node may take over. False while it recovers from lost storage: it must not
    /// vote, and a leader votes for its own ballot.
    may_lead: bool,
    timeout_us: u64,
    backoff_until: Time,
    /// Take over at the end of the first round, until then, that heard a quorum
    /// (`take_over_now`).
    take_over_until: Option<Time>,
    next_round_at: Time,
}

impl Election {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        voters: &[NodeId],
        members: &[NodeId],
        heartbeat_ms: u64,
        election_timeout_ms: u64,
        backoff_max_ms: u64,
        ballot_max: Ballot,
        now: Time,
    ) -> Election {
        let mut election = Election {
            id,
            peers: Vec::new(),
            voters: Vec::new(),
            quorum: 1,
            heartbeat_us: heartbeat_ms * 1000,
            election_timeout_us: election_timeout_ms * 1000,
            backoff_max_us: backoff_max_ms * 1000,
            round: 0,
            replies: BTreeMap::new(),
            last_heard: BTreeMap::new(),
            ballot_max,
            leader: None,
            quorum_connected: false,
            quorum_heard_at: None,
            happy: false,
            unhappy_since: None,
            may_lead: true,
            timeout_us: election_timeout_ms * 1000,
            backoff_until: now,
            take_over_until: None,
            next_round_at: now,
        };
        election.reconfigure(voters, members);
        election
    }

    /// The configuration changed: `voters` make quorums from now on (those of the
    /// configuration that governs the next undecided slot), and every one of `members`
    /// (voters and learners of the configurations in force) is asked each round. A node
    /// that is no voter never takes over.
    pub fn reconfigure(&mut self, voters: &[NodeId], members: &[NodeId]) {
        self.voters = voters.to_vec();
        self.quorum = voters.len() / 2 + 1;
        let mut peers: Vec<NodeId> =
            members.iter().chain(voters).copied().filter(|m| *m != self.id).collect();
        peers.sort();
        peers.dedup();
        self.peers = peers;
        self.replies.retain(|id, _| self.peers.contains(id));
        self.last_heard.retain(|id, _| self.peers.contains(id));
    }

    /// This node votes in the configuration in force.
    pub fn is_voter(&self) -> bool {
        self.voters.contains(&self.id)
    }

    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }
    pub fn leader(&self) -> Option<Ballot> {
        self.leader
    }
    pub fn ballot_max(&self) -> Ballot {
        self.ballot_max
    }
    pub fn quorum_connected(&self) -> bool {
        self.quorum_connected
    }
    /// When a round last ended with a majority heard. A reply that comes a moment after
    /// its round ended (a busy machine) makes one round miss its majority; a caller that
    /// must not act on one such round asks how long ago the majority was last heard.
    pub fn quorum_heard_at(&self) -> Option<Time> {
        self.quorum_heard_at
    }
    pub fn next_round_at(&self) -> Time {
        self.next_round_at
    }
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Allows or forbids taking over (see `may_lead`).
    pub fn set_may_lead(&mut self, may_lead: bool) {
        self.may_lead = may_lead;
    }

    /// This node's answer to a heartbeat request.
    pub fn heartbeat(&self, decided_upto: Slot) -> Heartbeat {
        Heartbeat {
            ballot_max: self.ballot_max,
            leader: self.leader,
            quorum_connected: self.quorum_connected,
            happy: self.happy,
            decided_upto,
            accepted_upto: 0,
            lease: false,
            ..Heartbeat::default()
        }
    }

    /// Any ballot seen anywhere (prepare, accept, nack, heartbeat) raises `ballot_max`,
    /// so a takeover always picks a fresh, higher ballot.
    pub fn observe(&mut self, ballot: Ballot) {
        self.ballot_max = self.ballot_max.max(ballot);
    }

    /// The last heartbeat heard from each peer and when.
    pub fn last_heard(&self) -> &BTreeMap<NodeId, (Time, Heartbeat)> {
        &self.last_heard
    }

    pub fn on_reply(&mut self, now: Time, from: NodeId, round: u64, heartbeat: Heartbeat) {
        if self.peers.contains(&from) {
            self.last_heard.insert(from, (now, heartbeat));
        }
        self.observe(heartbeat.ballot_max);
        if let Some(leader) = heartbeat.leader {
            self.observe(leader);
        }
        if round == self.round && self.peers.contains(&from) {
            self.replies.insert(from, heartbeat);
        }
    }

    /// The leader asked this node to take over (leadership transfer): the round that ends
    /// next takes over at once if this node is quorum-connected, whatever the timeouts,
    /// the backoff and the happiness of its peers (the leader it would defer to is the one
    /// handing over).
    pub fn take_over_now(&mut self, now: Time) {
        self.take_over_until = Some(now.plus_micros(self.election_timeout_us));
        self.backoff_until = now;
    }

    /// Our scout or commander was preempted by `promised`: give up the claim and back off
    /// with jitter so that two proposers do not keep preempting each other.
    pub fn on_preempted(&mut self, now: Time, promised: Ballot, rng: &mut impl Rng) {
        self.observe(promised);
        if self.leader.is_some_and(|b| b.leader == self.id) {
            self.leader = None;
        }
        self.backoff_until = now.plus_micros(rng.gen_range(0..self.backoff_max_us.max(1)));
        self.unhappy_since = None;
    }

    /// Ends the current round and starts the next. `leading` is the ballot this node's
    /// leader role holds (scouting or active), if any. Returns what to do and the number
    /// of the new round, whose requests the node sends to every peer.
    pub fn on_round(
        &mut self,
        now: Time,
        rng: &mut impl Rng,
        leading: Option<Ballot>,
    ) -> (ElectionEvent, u64) {
        let event = self.evaluate(now, rng, leading);
        self.round += 1;
        self.replies.clear();
        self.next_round_at = now.plus_micros(self.heartbeat_us);
        (event, self.round)
    }

    fn evaluate(&mut self, now: Time, rng: &mut impl Rng, leading: Option<Ballot>) -> ElectionEvent {
        let heard = self.replies.keys().filter(|id| self.voters.contains(id)).count();
        self.quorum_connected = heard + usize::from(self.is_voter()) >= self.quorum;
        if self.quorum_connected {
            self.quorum_heard_at = Some(now);
        }
        // A ballot of ours is a live claim only while our leader role holds it. Peers may
        // still report an older ballot of ours (we restarted, or were preempted); following
        // it would leave the cluster behind a leader that does not lead (simulator seeds
        // 7521 and 6184).
        if self.leader.is_some_and(|b| b.leader == self.id) && self.leader != leading {
            self.leader = None;
        }
        // Candidates: quorum-connected nodes that claim to lead with their own ballot.
        let mut best = leading.filter(|_| self.quorum_connected);
        for (peer, heartbeat) in &self.replies {
            if let Some(ballot) = heartbeat.leader {
                if ballot.leader == *peer && heartbeat.quorum_connected && self.voters.contains(peer) {
                    best = best.max(Some(ballot));
                }
            }
        }
        if self.take_over_until.is_some_and(|until| now >= until) {
            self.take_over_until = None; // The handover did not happen in time.
        }
        if self.take_over_until.is_some() && self.quorum_connected && self.may_lead && self.is_voter() {
            if let Some(ballot) = self.ballot_max.next_for(self.id) {
                self.take_over_until = None;
                self.observe(ballot);
                self.leader = Some(ballot);
                self.unhappy_since = None;
                return ElectionEvent::TakeOver(ballot);
            }
        }
        let mut event = ElectionEvent::Steady;
        if let Some(ballot) = best {
            if leading.is_some_and(|own| own < ballot) {
                event = ElectionEvent::StepDown;
            }
            self.leader = Some(ballot);
        }
        self.happy = best.is_some() && self.quorum_connected;
        if self.happy {
            self.unhappy_since = None;
            return event;
        }
        let since = *self.unhappy_since.get_or_insert_with(|| {
            self.timeout_us = rng.gen_range(self.election_timeout_us..2 * self.election_timeout_us);
            now
        });
        if now.saturating_sub(since) < self.timeout_us {
            return event;
        }
        self.unhappy_since = None;
        if leading.is_some() && self.leader == leading {
            // A leader that cannot hear a majority steps down (no split brain to serve).
            self.leader = None;
            return ElectionEvent::StepDown;
        }
        let peer_happy = self
            .replies
            .values()
            .filter(|h| h.happy)
            .filter_map(|h| h.leader)
            .filter(|b| b.leader != self.id)
            .max();
        if let Some(ballot) = peer_happy {
            // Someone we hear still sees a healthy leader (the chained scenario): follow
            // it through them rather than depose it.
            self.leader = Some(ballot);
            return event;
        }
        if self.quorum_connected && now >= self.backoff_until && self.may_lead && self.is_voter() {
            // The round space ends only where forged ballots pushed it (see
            // `Ballot::ROUND_JUMP_MAX`): then this node cannot lead, but a peer with a
            // higher id still can.
            let Some(ballot) = self.ballot_max.next_for(self.id) else { return event };
            self.observe(ballot);
            self.leader = Some(ballot);
            return ElectionEvent::TakeOver(ballot);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    fn election(id: u32) -> Election {
        Election::new(NodeId(id), &MEMBERS, &MEMBERS, 50, 300, 300, Ballot::ZERO, Time(0))
    }

    fn heartbeat(leader: Option<Ballot>, quorum_connected: bool, happy: bool) -> Heartbeat {
        Heartbeat {
            ballot_max: leader.unwrap_or(Ballot::ZERO),
            leader,
            quorum_connected,
            happy,
            decided_upto: 0,
            accepted_upto: 0,
            lease: false,
            ..Heartbeat::default()
        }
    }

    /// Runs rounds every 50 ms, with `reply` giving each round's replies, until an event
    /// other than Steady or `until_ms`.
    fn run(e: &mut Election, until_ms: u64, reply: impl Fn(&mut Election)) -> (ElectionEvent, u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut t = 0;
        while t <= until_ms {
            reply(e);
            let leading = e.leader().filter(|b| b.leader == e.id);
            let (event, _) = e.on_round(Time::from_millis(t), &mut rng, leading);
            if event != ElectionEvent::Steady {
                return (event, t);
            }
            t += 50;
        }
        (ElectionEvent::Steady, t)
    }

    #[test]
    fn quorum_connected_follower_takes_over_after_the_randomized_timeout() {
        let mut e = election(1);
        let (event, t) = run(&mut e, 2000, |e| {
            let r = e.round();
            e.on_reply(Time(0), NodeId(2), r, heartbeat(None, true, false));
        });
        assert_eq!(event, ElectionEvent::TakeOver(Ballot { round: 1, leader: NodeId(1) }));
        assert!((300..=700).contains(&t), "took over at {t} ms");
    }

    #[test]
    fn node_without_a_quorum_never_takes_over() {
        let mut e = election(1);
        let (event, _) = run(&mut e, 5000, |_| {});
        assert_eq!(event, ElectionEvent::Steady);
        assert_eq!(e.leader(), None);
    }

    #[test]
    fn node_cut_off_from_the_leader_does_not_depose_it_while_a_peer_is_happy() {
        // Chained: we hear node 2, node 2 hears leader 3; we do not hear 3.
        let leader = Ballot { round: 4, leader: NodeId(3) };
        let mut e = election(1);
        let (event, _) = run(&mut e, 5000, |e| {
            let r = e.round();
            e.on_reply(Time(0), NodeId(2), r, heartbeat(Some(leader), true, true));
        });
        assert_eq!(event, ElectionEvent::Steady);
        assert_eq!(e.leader(), Some(leader));
    }

    #[test]
    fn leader_that_loses_its_quorum_steps_down() {
        let mut e = election(1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut t = 0;
        let mut took = None;
        while took.is_none() {
            let r = e.round();
            e.on_reply(Time(0), NodeId(2), r, heartbeat(None, true, false));
            if let (ElectionEvent::TakeOver(b), _) = e.on_round(Time::from_millis(t), &mut rng, None) {
                took = Some(b);
            }
            t += 50;
        }
        let (event, _) = run(&mut e, 5000, |_| {});
        assert_eq!(event, ElectionEvent::StepDown);
        assert_eq!(e.leader(), None);
    }

    /// On a busy machine a peer's reply can miss the end of its round by a moment: that
    /// round has no majority, but the majority was heard one round ago, which is what a
    /// caller refusing work "without a quorum" must look at (a write once failed with
    /// `no_quorum` on an idle cluster this way).
    #[test]
    fn a_reply_that_misses_its_round_loses_the_round_but_not_the_recent_majority() {
        let mut e = election(1);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let r = e.round();
        e.on_reply(Time::from_millis(10), NodeId(2), r, heartbeat(None, true, false));
        let _ = e.on_round(Time::from_millis(50), &mut rng, None);
        assert!(e.quorum_connected());
        let late = e.round();
        let _ = e.on_round(Time::from_millis(100), &mut rng, None);
        e.on_reply(Time::from_millis(101), NodeId(2), late, heartbeat(None, true, false));
        assert!(!e.quorum_connected(), "the reply came after its round ended");
        assert_eq!(e.quorum_heard_at(), Some(Time::from_millis(50)));
    }

    #[test]
    fn follower_follows_the_highest_quorum_connected_leader() {
        let mut e = election(1);
        let low = Ballot { round: 2, leader: NodeId(2) };
        let high = Ballot { round: 3, leader: NodeId(3) };
        let r = e.round();
        e.on_reply(Time(0), NodeId(2), r, heartbeat(Some(low), true, true));
        e.on_reply(Time(0), NodeId(3), r, heartbeat(Some(high), true, true));
        let (event, _) = e.on_round(Time(0), &mut ChaCha8Rng::seed_from_u64(0), None);
        assert_eq!(event, ElectionEvent::Steady);
        assert_eq!(e.leader(), Some(high));
    }

    #[test]
    fn node_never_follows_an_old_ballot_of_its_own_that_it_no_longer_holds() {
        // We restarted: peers still report our old ballot as their happy leader.
        let old = Ballot { round: 2, leader: NodeId(1) };
        let mut e = election(1);
        let (event, _) = run(&mut e, 5000, |e| {
            let r = e.round();
            e.on_reply(Time(0), NodeId(2), r, heartbeat(Some(old), true, true));
        });
        assert_eq!(event, ElectionEvent::TakeOver(Ballot { round: 3, leader: NodeId(1) }));
    }
}

//! Tunables, each with a bound and a unit in its name (TigerBeetle style).

/// Timing and size limits of one node. The defaults suit a laptop and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// One failure-detection round: every node pings every peer this often.
    pub heartbeat_ms: u64,
    /// A follower that has not heard a healthy leader for a timeout drawn uniformly from
    /// `[election_timeout_ms, 2 * election_timeout_ms)` tries to lead.
    pub election_timeout_ms: u64,
    /// A preempted leader waits a random time in `[0, backoff_max_ms)` before it tries
    /// again, so two proposers do not duel.
    pub backoff_max_ms: u64,
    /// Scouts and Commanders resend to acceptors that have not answered after this long.
    pub retransmit_ms: u64,
    /// A Requester resends a pending client command to the (possibly new) leader after
    /// this long without a reply.
    pub request_retry_ms: u64,
    /// Slots a leader may have in flight beyond the first undecided one (pipelining).
    pub window_slots: u64,
    /// Commands per slot at most (batching).
    pub batch_commands_max: usize,
    /// Client commands a node holds for proposal or forwarding at most; more are refused
    /// with `Rejection::Busy`.
    pub requests_pending_max: usize,
    /// Decisions per catch-up reply at most.
    pub catchup_batch_max: usize,
    /// Client sessions kept at most; the least recently used is evicted in log order.
    pub sessions_max: usize,
    /// Leader lease (C6). A node that answers its leader's heartbeat promises no other
    /// node for this long (by its own clock), so a leader that heard a majority answer a
    /// round it sent at `t` may serve reads alone until `t + lease_ms·(1−ρ)/(1+ρ)`.
    /// Must be below `election_timeout_ms` so that leases never delay an election much.
    pub lease_ms: u64,
    /// ρ, the bound on clock drift between any two nodes' rates, in parts per million
    /// (50,000 = 5%). Leases are only as safe as this bound is true.
    pub clock_drift_bound_ppm: u64,
    /// A node checkpoints its state machine every this many applied slots and compacts
    /// its log before the checkpoint (storage issue). 0 never checkpoints.
    pub checkpoint_every_slots: u64,
    /// Decided values kept in memory below the newest checkpoint, so that a peer lagging
    /// by less catches up from the log instead of a snapshot.
    pub catchup_retain_slots: u64,
    /// State transfer sends a snapshot in chunks of at most this many bytes, one in
    /// flight per receiver.
    pub snapshot_chunk_bytes: usize,
    /// A snapshot larger than this is refused by a receiver (a bound on its memory).
    pub snapshot_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            backoff_max_ms: 300,
            retransmit_ms: 100,
            request_retry_ms: 400,
            window_slots: 64,
            batch_commands_max: 512,
            requests_pending_max: 16_384,
            catchup_batch_max: 256,
            sessions_max: 100_000,
            lease_ms: 200,
            clock_drift_bound_ppm: 50_000,
            checkpoint_every_slots: 20_000,
            catchup_retain_slots: 5_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 8 << 30,
        }
    }
}

impl Options {
    /// How far beyond its decided prefix a node votes for or learns a slot. A leader
    /// proposes within `window_slots` of its own prefix and followers trail it by about
    /// that, so sixteen windows leave room to spare; a node further behind ignores
    /// Accepts and Decisions until it has caught up. This bounds every slot an honest
    /// acceptor holds a vote in (and so every Promise: see `Node::check_claims`), so that a
    /// vote forged at a far slot can never make a new leader fill 2^62 slots with no-ops.
    pub fn slots_ahead_max(&self) -> u64 {
        self.window_slots.saturating_mul(16)
    }

    /// How long after sending a heartbeat round a leader may rely on the lease a
    /// majority granted in answer to it, in microseconds of its own clock: the grant
    /// lasts `lease_ms` on the grantor's clock from receipt, which is at least
    /// `lease_ms/(1+ρ)` real time after sending; the leader's clock may run fast by
    /// `1/(1−ρ)`.
    pub fn lease_leader_us(&self) -> u64 {
        let ppm = self.clock_drift_bound_ppm;
        self.lease_ms * 1000 * (1_000_000 - ppm) / (1_000_000 + ppm)
    }

    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), OptionsError> {
        use OptionsError::*;
        let checks = [
            (self.heartbeat_ms == 0, HeartbeatZero),
            (self.election_timeout_ms < 2 * self.heartbeat_ms, ElectionTimeoutTooShort),
            (
                self.window_slots == 0 || self.batch_commands_max == 0 || self.catchup_batch_max == 0,
                BatchBoundZero,
            ),
            (self.window_slots > crate::membership::ALPHA, WindowAboveAlpha),
            (self.lease_ms >= self.election_timeout_ms, LeaseNotBelowElectionTimeout),
            (self.clock_drift_bound_ppm >= 500_000, DriftBoundTooLarge),
            (self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > 8 << 20, SnapshotChunkOutOfRange),
            (self.sessions_max == 0 || self.requests_pending_max == 0, TableBoundZero),
        ];
        match checks.into_iter().find(|(broken, _)| *broken) {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}

/// Why a set of [`Options`] cannot run a node. Nothing was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    HeartbeatZero,
    ElectionTimeoutTooShort,
    BatchBoundZero,
    /// A leader must know the configuration of every slot it proposes in (`membership`).
    WindowAboveAlpha,
    LeaseNotBelowElectionTimeout,
    DriftBoundTooLarge,
    SnapshotChunkOutOfRange,
    TableBoundZero,
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptionsError::HeartbeatZero => "heartbeat_ms must be positive",
            OptionsError::ElectionTimeoutTooShort => {
                "election_timeout_ms must be at least two heartbeat rounds"
            }
            OptionsError::BatchBoundZero => {
                "window_slots, batch_commands_max and catchup_batch_max must be positive"
            }
            OptionsError::WindowAboveAlpha => "window_slots must be at most membership::ALPHA (256)",
            OptionsError::LeaseNotBelowElectionTimeout => "lease_ms must be below election_timeout_ms",
            OptionsError::DriftBoundTooLarge => "clock_drift_bound_ppm must be below 500000 (50%)",
            OptionsError::SnapshotChunkOutOfRange => {
                "snapshot_chunk_bytes must be in 1..=8 MiB (one frame carries a chunk)"
            }
            OptionsError::TableBoundZero => "sessions_max and requests_pending_max must be positive",
        })
    }
}

impl std::error::Error for OptionsError {}

/// Bugs the simulator can plant to prove its checkers catch them. Only the simulator
/// sets these; no server flag or configuration reaches them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Count N/2 acceptors as a quorum instead of N/2 + 1.
    pub small_quorum: bool,
    /// A node that regains leadership proposes with its new ballot without running
    /// phase 1 first, so it never learns what earlier ballots accepted.
    pub stale_ballot: bool,
    /// A node that believes it is the active leader serves reads at once from what it has
    /// applied, without checking its lease: a deposed leader answers with stale data.
    pub stale_read: bool,
    /// A configuration governs from the slot after its decision instead of `ALPHA` slots
    /// later: a leader proposing a window ahead uses a configuration another leader does
    /// not, and two values can be chosen in one slot.
    pub reconfig_at_once: bool,
    /// The leader's commander counts its own acceptor's vote before it is durable, so a
    /// decision (released once written) can rest on a vote that a crash takes back.
    pub own_vote_early: bool,
}

//! # synod-sim: the real protocol code under seeded faults
//!
//! A deterministic simulator in the style of TigerBeetle's VOPR and FoundationDB's
//! simulator. One thread and one `u64` seed drive everything: the cluster's
//! [`synod_core::Node`]s (the very code the server runs), a network, a disk per node,
//! clients with timeouts, and a nemesis that injects faults. Events wait in one priority
//! queue ordered by (simulated time, sequence number), so a seed always replays the same
//! run, event for event, and a failure is reproduced by its seed alone.
//!
//! **Architecture Invariant:** nothing in a run depends on anything but the seed and the
//! [`SimOptions`]: no wall clock, no thread scheduling, no hash-map iteration order. Every
//! random choice comes from a ChaCha8 stream derived from the seed (one stream per
//! concern, so that tracing or checking never perturbs the run).
//!
//! ## The fault model
//!
//! Each seed draws its own fault mix (swarm testing, as TigerBeetle's VOPR does): some
//! seeds run almost fault-free, others under heavy fire. A fault kind is enabled or not
//! per seed, and its rate is drawn per seed.
//!
//! | fault | how it is simulated | what the protocol must do |
//! |---|---|---|
//! | message loss | each frame is dropped with a per-seed probability (up to 20%) | retransmit |
//! | duplication | a frame is delivered twice with a per-seed probability | be idempotent |
//! | delay, reordering | each copy takes its own random delay, with a long tail | tolerate any order |
//! | corruption | 1–2 bit flips, or a truncated frame; the wire CRC32C catches it and the receiver drops the frame | treat it as loss |
//! | symmetric partition | a minority or majority side is cut off from the rest | minority stops, majority goes on |
//! | leader isolation | the current leader is cut off from everyone | re-elect elsewhere |
//! | one-way partition | one side's frames to the other are dropped, not the reverse | not split brain |
//! | partial connectivity | the quorum-loss and chained patterns of Omni-Paxos (EuroSys'23) | elect a quorum-connected leader |
//! | crash and restart | the process is dropped with every record not yet fsynced and every unreleased `Ready`; it restarts from the durable state after a random downtime. Some crashes are armed to strike right after the node's next vote: inside its fsync window, or right after the vote left | persist before you promise |
//! | pivot | a partition leaves the leader a bare majority; one voter on its side crashes right after its next vote and changes sides, where it and the nodes that never saw the leader's proposals are a majority | a vote once sent survives |
//! | pause and resume | a paused node processes nothing; its messages, timers and client requests wait until it resumes | a stale leader must not act stale |
//! | clock drift | each node's local clock runs at rate 1 ± d, d ≤ a per-seed bound (≤ 5%), from a random offset | timeouts stay sane |
//! | slow disk | `persist` records and the `Ready`'s checkpoint become durable only after a random fsync latency, FIFO (group commit) | hold messages until durable |
//! | torn write | a crash keeps a random prefix of the unsynced records, in order (a checkpoint only whole, after its records) | nothing: it was never acknowledged |
//! | bit flip, unreadable sector | in the synced log: the bad record and the rest of its segment are lost; the node boots damaged | recover from the peers before voting |
//! | bad or missing checkpoint | the snapshot is gone, and the log below it was compacted; the base batch above survives; the node boots damaged | recover, and get a snapshot from a peer |
//! | disk replaced | an empty disk and no flag: nothing survives, not even the identity or the damage marker; the node boots as a new replica | recover, from nothing, on its own |
//! | membership changes | on half the seeds, a simulated operator asks the leader to add spares as learners and promote them, remove voters (the leader after a handover), and replace a voter that died with its disk (`membership`) | any change safe, refusals typed, liveness in the newest configuration |
//!
//! **Storage faults are placed so that a majority keeps a good copy of every record**: a
//! disk fault strikes only a node that is down, and only while no other node is damaged
//! and not yet repaired (its damage marker is cleared when the `Ready` carrying
//! `repaired` is durable). Every failure the checkers find is then a real bug, never an
//! impossible fault. Each seed also draws small `checkpoint_every_slots` (8..64, or never),
//! `catchup_retain_slots` (0..32) and `snapshot_chunk_bytes` (32..4096), so that
//! compaction and chunked snapshot transfers happen all the time.
//!
//! With a planted bug ([`Bug`]) every seed *hunts*: crashes, partitions and pivots are
//! always on, frequent and short, so that the bug shows within a few hundred seeds. The
//! `vote-while-recovering` hunt also strikes most restarts with a disk fault and crashes
//! its pivots right after their vote left, so that the vote a disk fault takes back was
//! one that counted. The `reconfig-no-overlap` hunt always changes the membership, and
//! often; the other hunts never do, so that they keep the runs they were tuned on.
//!
//! ## Link models
//!
//! The simulated network is a **fair-loss link**: a frame sent infinitely often is
//! delivered infinitely often (every loss is an independent coin flip, partitions heal),
//! frames are never created (the CRC turns corruption into loss), but they may be lost,
//! duplicated and reordered. The protocol core builds the stronger links itself:
//!
//! - **stubborn link** (deliver infinitely often): Scouts and Commanders retransmit
//!   Prepare/Accept every `retransmit_ms` to acceptors that have not answered,
//!   Requesters resend client commands every `request_retry_ms`, heartbeats repeat, and
//!   lagging replicas ask again with `CatchUp`.
//! - **perfect link** (deliver once, no duplication): Paxos messages are idempotent (a
//!   second Promise or Accepted for the same ballot counts once), and client commands are
//!   deduplicated by their (client id, sequence number) session, so a command retried at
//!   several nodes is applied exactly once.
//!
//! ## Checkers
//!
//! - **agreement**: every `Record::Decided` any node ever writes is compared with a
//!   global map slot → value; two values for one slot is a safety violation.
//! - **replica consistency**: at every checkpoint, the state hash of each replica is
//!   compared with the first hash ever seen for the same applied prefix. A replica that
//!   installed a snapshot never wrote `Decided` for the slots it skipped: agreement judges
//!   the decisions it did write, and its state hash at its new applied prefix must match.
//!   Every checker judges effects, never the route a replica took to them.
//! - **linearizability** of the client history ([`synod_check::check`]), and for the bank
//!   workload **money conserved and never negative** ([`synod_check::bank::check_bank`]).
//! - **core assertions**: a node that panics (an invariant of the core broke) ends the
//!   run as a safety violation with the panic message.
//! - **membership**: a node that says it was removed leads nothing and votes in no slot
//!   from its decided prefix on; agreement and replica consistency cover learners, removed
//!   nodes and outsiders alike.
//! - **liveness**: after the fault phase everything heals (crashed nodes restart, paused
//!   ones resume, partitions and lossy links go away) and no new operation starts; within
//!   40 election timeouts every pending operation must complete, every replica must
//!   reach the same applied prefix and state hash, and every node that recovers from lost
//!   storage must have its vote back. With membership changes, the replicas are the
//!   voters and learners of the newest configuration (a dead member comes back on a new
//!   disk; removed nodes and unused spares are left out).
//!
//! ## Replaying a seed
//!
//! ```text
//! synod sim --seed 1234                 # one line: ok, or the first violation
//! synod sim --seed 1234 --trace-dir t   # also writes t/seed-1234.trace, one line per event
//! synod sim --seeds 1000                # seeds 1..=1000 on every core
//! synod sim --seeds 300 --bug skip-fsync-before-ack   # prove the checkers catch a planted bug
//! synod sim --scenario quorum-loss      # the partial-connectivity scenarios
//! ```
//!
//! From Rust: [`run_seed`] runs one seed, [`write_trace`] re-runs it with tracing on
//! (tracing never changes a run: the trace hash is the same) and writes the trace file,
//! [`run_scenario`] runs a partial-connectivity scenario.
//!
//! ## Code map
//!
//! `world` (event queue, phases, checkpoints) · `driver` (one node: input, `Ready`,
//! persist, release) · `nemesis` (crash, pause, partition, pivot, heal) · `network`
//! (links, partitions, corruption) · `disk` (fsync latency, checkpoints and compaction,
//! torn writes, damage and the damage marker) · `faults` (swarm parameters, seeds of the random streams) · `clients`
//! (timeouts, retries, give-ups, the history) · `workload` (register and bank, their
//! history conventions and checks) · `checkers` (agreement, replica consistency) ·
//! `trace` (trace hash, readable lines) · `scenarios` (Omni-Paxos partial connectivity) ·
//! `membership` (the simulated operator) · `membership_scenarios` (scripted changes).

#![forbid(unsafe_code)]

mod catch_up;
mod checkers;
mod clients;
mod disk;
mod driver;
mod faults;
mod membership;
mod membership_scenarios;
mod nemesis;
mod network;
mod scenarios;
mod trace;
mod workload;
mod world;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use catch_up::{run_catch_up, CatchUpReport};
pub use faults::{FaultRate, MembershipParams, SwarmParams};
pub use membership_scenarios::{run_membership_scenario, MembershipReport, MembershipScenario};

/// The most nodes a run has, spares included (`synod_core::VOTERS_MAX` voters at most).
pub const NODES_MAX: usize = 9;
pub use network::{LinkParams, Partition};
pub use scenarios::{run_scenario, Scenario, ScenarioReport};

/// A bug the simulator plants to prove its checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// A node acknowledges before its log write is synced: the driver sends messages
    /// before their records are durable (`release_unpersisted`), so a crash can take
    /// back a promise or an accepted vote that was already sent. Also `skip-persist`.
    #[serde(alias = "skip-persist")]
    SkipFsyncBeforeAck,
    /// Nodes count N/2 acceptors as a quorum instead of N/2 + 1.
    SmallQuorum,
    /// A node that regains leadership skips phase 1.
    StaleBallot,
    /// A leader serves lease reads without checking that its lease still holds.
    StaleRead,
    /// A node whose storage is damaged boots without `recover_from_peers`: it votes at
    /// once with the promises and votes it lost.
    VoteWhileRecovering,
    /// The leader counts its own vote before it is durable: with Accepts sent early and
    /// decisions released once written, a crash can take back a vote a decision rested on.
    OwnVoteEarly,
    /// A configuration governs from the slot after its decision instead of `ALPHA` slots
    /// later (`PlantedBugs::reconfig_at_once`): a leader proposing ahead of its decided
    /// prefix uses an old configuration where another uses the new one, and their quorums
    /// need not intersect. Its hunt always changes the membership.
    ReconfigNoOverlap,
}

impl Bug {
    pub const ALL: [Bug; 7] = [
        Bug::SkipFsyncBeforeAck,
        Bug::SmallQuorum,
        Bug::StaleBallot,
        Bug::StaleRead,
        Bug::VoteWhileRecovering,
        Bug::OwnVoteEarly,
        Bug::ReconfigNoOverlap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipFsyncBeforeAck => "skip-fsync-before-ack",
            Bug::SmallQuorum => "small-quorum",
            Bug::StaleBallot => "stale-ballot",
            Bug::StaleRead => "stale-read",
            Bug::VoteWhileRecovering => "vote-while-recovering",
            Bug::OwnVoteEarly => "own-vote-early",
            Bug::ReconfigNoOverlap => "reconfig-no-overlap",
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;
    fn from_str(s: &str) -> Result<Bug, String> {
        if s == "skip-persist" {
            return Ok(Bug::SkipFsyncBeforeAck); // The name it had before the storage issue.
        }
        Bug::ALL.into_iter().find(|bug| bug.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
            format!("unknown bug {s:?}: expected one of {}", names.join(", "))
        })
    }
}

/// What the simulated clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// get / put / cas on a few keys of the key-value store, checked for
    /// linearizability per key.
    Register,
    /// Transfers between a few accounts plus full-balance reads, checked for
    /// linearizability and for money conserved and never negative.
    Bank,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Bank => "bank",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<WorkloadKind, String> {
        match s {
            "register" | "kv" => Ok(WorkloadKind::Register),
            "bank" => Ok(WorkloadKind::Bank),
            _ => Err(format!("unknown workload {s:?}: expected register or bank")),
        }
    }
}

/// What to run. Everything left `None` is drawn from the seed.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Cluster size (3 or 5); drawn from the seed when `None`.
    pub nodes: Option<usize>,
    /// The workload; drawn from the seed when `None`.
    pub workload: Option<WorkloadKind>,
    /// A bug to plant.
    pub bug: Option<Bug>,
    /// Record a readable line per event (slower; never changes the run).
    pub trace: bool,
    /// Length of the fault phase in simulated milliseconds; drawn when `None`.
    pub fault_phase_ms: Option<u64>,
    /// Wall-clock budget of the linearizability checker per history.
    pub check_budget: Duration,
    /// Membership changes on or off; drawn from the seed when `None` (half the seeds).
    pub membership: Option<bool>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: None,
            workload: None,
            bug: None,
            trace: false,
            fault_phase_ms: None,
            check_budget: Duration::from_secs(3),
            membership: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// A safety property broke (agreement, replica consistency, linearizability, bank
    /// invariants, or a core assertion fired).
    Safety(String),
    /// After healing, the cluster did not finish the pending operations or converge.
    Liveness(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The first line of the outcome, at most 300 characters (the checkers' full
    /// explanations span many lines; the trace file keeps them whole).
    pub fn headline(&self) -> String {
        let text = self.to_string();
        let line = text.lines().next().unwrap_or_default();
        match line.char_indices().nth(300) {
            Some((cut, _)) => format!("{} …", &line[..cut]),
            None if text.contains('\n') => format!("{line} …"),
            None => line.to_string(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Safety(why) => write!(f, "SAFETY VIOLATION: {why}"),
            Outcome::Liveness(why) => write!(f, "LIVENESS VIOLATION: {why}"),
        }
    }
}

/// Client operations by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// Faults that actually happened in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub crashes: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub messages_sent: u64,
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_corrupted: u64,
    /// Frames the receiver refused because the CRC (or length) did not match.
    pub frames_refused: u64,
    /// Records a crash took back before they were fsynced.
    pub records_lost: u64,
    /// Crashes that left a prefix of the unsynced records on disk (never acknowledged).
    pub torn_writes: u64,
    /// Disk faults on a crashed node: a bit flip or unreadable sector in the log, a bad
    /// or missing checkpoint, a whole disk lost.
    pub log_damage: u64,
    pub checkpoints_lost: u64,
    pub disks_lost: u64,
    /// Boots that found the damage marker set (and so recovered from their peers).
    pub damaged_boots: u64,
    /// Recoveries completed: the `Ready` with `repaired` became durable.
    pub repairs: u64,
    /// Checkpoints made durable (periodic, after a snapshot arrived, after a repair).
    pub checkpoints: u64,
    /// Snapshots nodes installed from their peers (state transfer).
    pub snapshots_installed: u64,
    /// Membership changes the operator asked for and the leader took (proposed), those
    /// it refused (`ChangeError`: retried later), and leadership transfers started.
    pub changes: u64,
    pub changes_refused: u64,
    pub transfers: u64,
    /// The newest configuration epoch any node decided (1: no change).
    pub epoch: u64,
}

impl FaultCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &FaultCounts) {
        self.crashes += other.crashes;
        self.pauses += other.pauses;
        self.partitions += other.partitions;
        self.messages_sent += other.messages_sent;
        self.messages_lost += other.messages_lost;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_corrupted += other.messages_corrupted;
        self.frames_refused += other.frames_refused;
        self.records_lost += other.records_lost;
        self.torn_writes += other.torn_writes;
        self.log_damage += other.log_damage;
        self.checkpoints_lost += other.checkpoints_lost;
        self.disks_lost += other.disks_lost;
        self.damaged_boots += other.damaged_boots;
        self.repairs += other.repairs;
        self.checkpoints += other.checkpoints;
        self.snapshots_installed += other.snapshots_installed;
        self.changes += other.changes;
        self.changes_refused += other.changes_refused;
        self.transfers += other.transfers;
        self.epoch = self.epoch.max(other.epoch);
    }

    /// The membership counters, for one line of output.
    pub fn membership_summary(&self) -> String {
        format!(
            "changes={} refused={} transfers={} epoch={}",
            self.changes, self.changes_refused, self.transfers, self.epoch
        )
    }

    /// The storage counters, for one line of output.
    pub fn storage_summary(&self) -> String {
        format!(
            "torn={} log-damage={} ckpt-lost={} disk-lost={} damaged-boots={} repairs={} checkpoints={} snapshots={}",
            self.torn_writes,
            self.log_damage,
            self.checkpoints_lost,
            self.disks_lost,
            self.damaged_boots,
            self.repairs,
            self.checkpoints,
            self.snapshots_installed,
        )
    }
}

/// What one seed did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub workload: WorkloadKind,
    pub bug: Option<Bug>,
    /// The operator changed the membership in this run (`membership`), with this many
    /// spare nodes beyond `nodes`.
    pub membership: bool,
    pub spares: usize,
    pub outcome: Outcome,
    /// A hash of every processed event (time, kind, node, message bytes): equal for
    /// equal runs.
    pub trace_hash: u64,
    pub events: u64,
    pub simulated_us: u64,
    pub ops: OpCounts,
    /// The linearizability checker ran out of budget (not a violation).
    pub linearizability_unknown: bool,
    pub faults: FaultCounts,
    pub wall_us: u64,
    /// One readable line per event, when `SimOptions::trace` was set.
    #[serde(skip)]
    pub trace: Vec<String>,
}

impl SimReport {
    /// One line: seed, shape, sizes, and `ok` or the first violation last.
    pub fn summary(&self) -> String {
        let bug = self.bug.map(|b| format!(" bug={b}")).unwrap_or_default();
        let unknown = if self.linearizability_unknown { " lin=unknown" } else { "" };
        let membership = if self.membership {
            format!(" membership spares={} {}", self.spares, self.faults.membership_summary())
        } else {
            String::new()
        };
        format!(
            "seed={} nodes={} workload={}{bug}{membership} events={} simulated={:.1}s ops ok={} fail={} info={}{unknown} crashes={} pauses={} partitions={} {} trace={:016x} wall={:.0}ms {}",
            self.seed,
            self.nodes,
            self.workload,
            self.events,
            self.simulated_us as f64 / 1e6,
            self.ops.ok,
            self.ops.fail,
            self.ops.info,
            self.faults.crashes,
            self.faults.pauses,
            self.faults.partitions,
            self.faults.storage_summary(),
            self.trace_hash,
            self.wall_us as f64 / 1e3,
            self.outcome.headline(),
        )
    }
}

/// Runs one seed. With `options.trace` the report carries one line per event in
/// `SimReport::trace` (tracing never changes the run).
pub fn run_seed(seed: u64, options: &SimOptions) -> SimReport {
    let started = Instant::now();
    let params = SwarmParams::draw(seed, options);
    let mut report = match params.workload {
        WorkloadKind::Register => world::run(seed, options, params, workload::Register::new(seed)),
        WorkloadKind::Bank => world::run(seed, options, params, workload::BankWorkload::new(seed)),
    };
    report.wall_us = started.elapsed().as_micros() as u64;
    report
}

/// Re-runs `seed` with tracing on and writes `dir/seed-N.trace`: a header, one line per
/// event, and the outcome. Returns the path.
pub fn write_trace(seed: u64, options: &SimOptions, dir: &Path) -> std::io::Result<PathBuf> {
    use std::io::Write;
    let traced = SimOptions { trace: true, ..options.clone() };
    let report = run_seed(seed, &traced);
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("seed-{seed}.trace"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "# synod sim --seed {seed}{}", replay_flags(options))?;
    writeln!(out, "# {}", report.summary())?;
    for line in &report.trace {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "# outcome: {}", report.outcome)?;
    out.flush()?;
    Ok(path)
}

/// Silences the panic messages of nodes that panic inside a run (a core assertion that
/// fires becomes the run's `Outcome::Safety`, with the message); panics anywhere else
/// still print. Installs a process-wide panic hook once.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !world::IN_RUN.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// The command-line flags that reproduce `options`.
pub fn replay_flags(options: &SimOptions) -> String {
    let mut flags = String::new();
    if let Some(nodes) = options.nodes {
        flags.push_str(&format!(" --nodes {nodes}"));
    }
    if let Some(workload) = options.workload {
        flags.push_str(&format!(" --workload {workload}"));
    }
    if let Some(bug) = options.bug {
        flags.push_str(&format!(" --bug {bug}"));
    }
    if let Some(ms) = options.fault_phase_ms {
        flags.push_str(&format!(" --fault-phase-ms {ms}"));
    }
    if let Some(on) = options.membership {
        flags.push_str(if on { " --membership on" } else { " --membership off" });
    }
    flags
}

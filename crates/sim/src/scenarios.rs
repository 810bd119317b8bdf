//! The partial-connectivity scenarios of the Omni-Paxos paper (Ng et al., "Omni-Paxos:
//! Breaking the Barriers of Partial Connectivity", EuroSys'23, §2 and §7), scripted on
//! the simulator with no random faults.
//!
//! - **quorum loss** (5 nodes): once a leader L is established, every link is cut except
//!   those of one node C, which stays connected to everyone. Only C is quorum-connected.
//!   Expected: C takes over and progress resumes.
//! - **constrained election** (5 nodes): as quorum loss, but C's log was made to lag
//!   first by isolating it while writes went on. Raft stalls here (C's log is stale, so
//!   nobody votes for it, and nobody else can gather a quorum); Multi-Paxos with ballot
//!   leader election lets C lead and learn the missing slots in phase 1.
//! - **chained** (3 nodes A–B–C with the leader at end A): the A–C link is cut. Expected:
//!   progress continues with at most one leader change, no livelock.
//!
//! Each reports the time from the fault to the first client operation committed in a
//! slot that was not yet decided anywhere at the fault, in election timeouts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::faults::SwarmParams;
use crate::network::Partition;
use crate::workload::Register;
use crate::world::World;
use crate::{Outcome, SimOptions, WorkloadKind};

/// How long a scenario waits for recovery before it reports a liveness failure.
const RECOVERY_BOUND_ELECTION_TIMEOUTS: u64 = 20;
/// How long the lagging node is isolated in the constrained election.
const LAG_US: u64 = 2_000_000;
/// How long a scenario watches after recovery (leader changes in the chained case).
const OBSERVE_US: u64 = 3_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    QuorumLoss,
    ConstrainedElection,
    Chained,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::QuorumLoss, Scenario::ConstrainedElection, Scenario::Chained];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::QuorumLoss => "quorum-loss",
            Scenario::ConstrainedElection => "constrained-election",
            Scenario::Chained => "chained",
        }
    }

    pub fn nodes(self) -> usize {
        match self {
            Scenario::QuorumLoss | Scenario::ConstrainedElection => 5,
            Scenario::Chained => 3,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s).ok_or_else(|| {
            format!("unknown scenario {s:?}: expected quorum-loss, constrained-election or chained")
        })
    }
}

/// What a scenario showed. Node numbers are 1-based, as in traces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub seed: u64,
    pub nodes: usize,
    /// The leader when the fault struck.
    pub leader_before: usize,
    /// The node left connected to everyone (quorum loss, constrained election) or the
    /// middle of the chain.
    pub center: usize,
    /// How many slots the center lagged behind the leader when the fault struck
    /// (constrained election).
    pub center_lag_slots: u64,
    pub fault_at_us: u64,
    /// From the fault to the first newly committed client operation.
    pub recovery_us: Option<u64>,
    pub election_timeout_us: u64,
    /// Nodes that became the active leader after the fault, in order.
    pub leaders_after: Vec<usize>,
    pub outcome: Outcome,
    pub trace_hash: u64,
}

impl ScenarioReport {
    /// Recovery time in election timeouts.
    pub fn recovery_election_timeouts(&self) -> Option<f64> {
        self.recovery_us.map(|us| us as f64 / self.election_timeout_us as f64)
    }

    pub fn summary(&self) -> String {
        let recovery = match (self.recovery_us, self.recovery_election_timeouts()) {
            (Some(us), Some(timeouts)) => {
                format!("{:.0}ms = {timeouts:.2} election timeouts", us as f64 / 1e3)
            }
            _ => "never".to_string(),
        };
        let leaders: Vec<String> = self.leaders_after.iter().map(|n| format!("n{n}")).collect();
        let lag = if self.scenario == Scenario::ConstrainedElection {
            format!(" (lagging {} slots)", self.center_lag_slots)
        } else {
            String::new()
        };
        format!(
            "scenario={} nodes={} leader=n{} center=n{}{lag} recovery={recovery} leader changes={} [{}] {}",
            self.scenario,
            self.nodes,
            self.leader_before,
            self.center,
            self.leaders_after.len(),
            leaders.join(" "),
            self.outcome
        )
    }
}

/// Runs `scenario` deterministically from `seed` (the seed only shapes client choices and
/// message delays; the faults are scripted).
pub fn run_scenario(scenario: Scenario, seed: u64) -> ScenarioReport {
    let nodes = scenario.nodes();
    let mut params = SwarmParams::quiet(nodes, WorkloadKind::Register);
    params.fault_phase_us = u64::MAX / 4;
    let options = SimOptions::default();
    let mut world = World::new(seed, &options, params, Register::new(seed), false);
    let election_timeout_us = world.options.election_timeout_ms * 1000;
    world.start();

    // A leader with some progress behind it.
    world.run_until(2_000_000);
    let mut report = ScenarioReport {
        scenario,
        seed,
        nodes,
        leader_before: 0,
        center: 0,
        center_lag_slots: 0,
        fault_at_us: 0,
        recovery_us: None,
        election_timeout_us,
        leaders_after: Vec::new(),
        outcome: Outcome::Ok,
        trace_hash: 0,
    };
    let Some(leader) = world.leader() else {
        report.outcome = Outcome::Liveness("no leader was established before the fault".into());
        return report;
    };
    let center = (leader + 1) % nodes;
    report.leader_before = leader + 1;
    report.center = center + 1;
    match scenario {
        Scenario::QuorumLoss => world.set_partition(Partition::QuorumLoss { center }),
        Scenario::ConstrainedElection => {
            world.set_partition(Partition::Split { side: vec![center] });
            world.run_until(world.now_us + LAG_US);
            world.set_partition(Partition::QuorumLoss { center });
        }
        Scenario::Chained => {
            // A = leader, B = center (the middle), C = the other end.
            let end = (leader + 2) % nodes;
            world.set_partition(Partition::Chained { a: leader, c: end });
        }
    }
    let decided_upto = |world: &World<Register>, i: usize| world.status(i).map_or(0, |s| s.decided_upto);
    report.center_lag_slots = decided_upto(&world, leader).saturating_sub(decided_upto(&world, center));
    let fault_at = world.now_us;
    report.fault_at_us = fault_at;
    let mark = (0..nodes).map(|i| decided_upto(&world, i)).max().unwrap_or(0);
    world.clients.commit_mark = Some(mark);
    let elections_before = world.elections.len();

    let bound = fault_at + RECOVERY_BOUND_ELECTION_TIMEOUTS * election_timeout_us;
    while world.clients.committed_after_mark_us.is_none() && world.failure.is_none() && world.now_us < bound {
        world.run_until(world.now_us + 10_000);
    }
    report.recovery_us = world.clients.committed_after_mark_us.map(|at| at - fault_at);
    world.run_until(world.now_us + OBSERVE_US);
    report.leaders_after = world.elections[elections_before..].iter().map(|&(_, i)| i + 1).collect();

    let mut outcome = world.failure.clone().unwrap_or(Outcome::Ok);
    if outcome.is_ok() && report.recovery_us.is_none() {
        outcome = Outcome::Liveness(format!(
            "no client operation committed within {RECOVERY_BOUND_ELECTION_TIMEOUTS} election timeouts of the fault"
        ));
    }
    if outcome.is_ok() && scenario == Scenario::Chained && report.leaders_after.len() > 1 {
        outcome = Outcome::Liveness(format!(
            "{} leader changes after cutting one link (livelock?)",
            report.leaders_after.len()
        ));
    }
    let history = world.finish();
    if let Outcome::Safety(_) = history.outcome {
        outcome = history.outcome.clone();
    }
    report.trace_hash = history.trace_hash;
    report.outcome = outcome;
    report
}

//! Scripted membership changes on the simulator, with clients writing throughout and no
//! random faults but the ones each script makes: grow 3 → 5, shrink 5 → 3, replace a node
//! that died with its disk, remove the leader, a leader that crashes in the middle of a
//! change, and the refusal of a change that would lose the majority.
//!
//! Each script asks the leader of the moment, as an operator would, and waits for each
//! change to come into force; then everything heals and the members of the newest
//! configuration must converge (the swarm's liveness rule), and the history must be
//! linearizable. The report carries the final configuration for the tests to judge.

use std::fmt;

use serde::{Deserialize, Serialize};
use synod_core::{Change, ChangeError, NodeId};

use crate::faults::{MembershipParams, SwarmParams};
use crate::workload::Register;
use crate::world::{Phase, World, LIVENESS_ELECTION_TIMEOUTS};
use crate::{Outcome, SimOptions, WorkloadKind};

/// How long a script waits for one change to be taken and come into force.
const CHANGE_BOUND_US: u64 = 10_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MembershipScenario {
    /// Three voters; two spares join as learners and are promoted one after the other.
    Grow,
    /// Five voters; two that do not lead are removed.
    Shrink,
    /// Three voters; one dies with its disk, is removed, and a spare takes its place.
    ReplaceDead,
    /// Five voters; the leader hands its leadership over and is then removed.
    RemoveLeader,
    /// Three voters; the leader crashes right after it proposed adding a learner, and
    /// restarts; the change is asked for again until it holds, then the learner is
    /// promoted.
    LeaderCrashesMidChange,
    /// Three voters, one down: removing a live one is refused (the rest would be no
    /// majority), removing the dead one is taken.
    RefuseLosingMajority,
}

impl MembershipScenario {
    pub const ALL: [MembershipScenario; 6] = [
        MembershipScenario::Grow,
        MembershipScenario::Shrink,
        MembershipScenario::ReplaceDead,
        MembershipScenario::RemoveLeader,
        MembershipScenario::LeaderCrashesMidChange,
        MembershipScenario::RefuseLosingMajority,
    ];

    fn shape(self) -> (usize, usize) {
        match self {
            MembershipScenario::Grow => (3, 2),
            MembershipScenario::Shrink | MembershipScenario::RemoveLeader => (5, 0),
            MembershipScenario::ReplaceDead | MembershipScenario::LeaderCrashesMidChange => (3, 1),
            MembershipScenario::RefuseLosingMajority => (3, 0),
        }
    }
}

impl fmt::Display for MembershipScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// What a membership script showed. Node numbers are 1-based, as in traces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipReport {
    pub scenario: MembershipScenario,
    pub seed: u64,
    /// The newest configuration decided, and whether it is in force at every member.
    pub epoch: u64,
    pub voters: Vec<usize>,
    pub learners: Vec<usize>,
    pub in_force_everywhere: bool,
    /// Live nodes that report `Node::is_removed`.
    pub removed: Vec<usize>,
    /// The leader before the script's changes and at the end.
    pub leader_before: Option<usize>,
    pub leader_after: Option<usize>,
    /// Every refusal the leader answered, in order.
    pub refusals: Vec<String>,
    /// The members converged after the heal (same applied prefix and state, none
    /// recovering, every operation done).
    pub converged: bool,
    /// Slots every member applied at the end.
    pub applied: u64,
    pub ops_ok: u64,
    pub outcome: Outcome,
    pub trace_hash: u64,
}

impl MembershipReport {
    pub fn summary(&self) -> String {
        format!(
            "membership {} seed={}: epoch {} voters {:?} learners {:?} removed {:?} leader {:?} -> {:?}, refusals {:?}, converged={} applied={} ops ok={} {}",
            self.scenario,
            self.seed,
            self.epoch,
            self.voters,
            self.learners,
            self.removed,
            self.leader_before,
            self.leader_after,
            self.refusals,
            self.converged,
            self.applied,
            self.ops_ok,
            self.outcome
        )
    }
}

/// A world under a script: the operator's calls, and waiting for their effect.
struct Script {
    world: World<Register>,
    refusals: Vec<String>,
}

impl Script {
    fn leader(&mut self) -> Option<usize> {
        self.world.leader()
    }

    fn run_for(&mut self, us: u64) {
        let until = self.world.now_us + us;
        self.world.run_until(until);
    }

    /// Waits for a leader, up to the change bound.
    fn wait_leader(&mut self) -> Option<usize> {
        let until = self.world.now_us + CHANGE_BOUND_US;
        while self.world.now_us < until && self.world.failure.is_none() {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            self.run_for(10_000);
        }
        None
    }

    /// Asks the leader for `change` until it takes it (refusals are recorded and retried,
    /// as an operator would), then waits until it is in force at every live member.
    /// Returns the first refusal if it never took.
    fn change(&mut self, change: Change) -> Result<(), ChangeError> {
        let until = self.world.now_us + CHANGE_BOUND_US;
        let mut last = None;
        while self.world.now_us < until && self.world.failure.is_none() {
            let Some(leader) = self.leader() else {
                self.run_for(10_000);
                continue;
            };
            let epoch = self.world.nodes[leader].node.as_ref().expect("leads").latest_configuration().epoch;
            match self.world.reconfigure(leader, change.clone()) {
                Ok(()) => {
                    if let Change::AddLearner { id, .. } = &change {
                        self.world.start_spare(id.0 as usize - 1);
                    }
                    return self.wait_in_force(epoch + 1);
                }
                Err(error) => {
                    self.refusals.push(error.to_string());
                    last = Some(error);
                    self.run_for(50_000);
                }
            }
        }
        Err(last.unwrap_or(ChangeError::NotLeader { leader: None }))
    }

    /// Runs until every live member has configuration `epoch` (or a later one) in force.
    fn wait_in_force(&mut self, epoch: u64) -> Result<(), ChangeError> {
        let until = self.world.now_us + CHANGE_BOUND_US;
        while self.world.now_us < until && self.world.failure.is_none() {
            if self.in_force_everywhere(epoch) {
                return Ok(());
            }
            self.run_for(10_000);
        }
        Err(ChangeError::ChangeInFlight { epoch })
    }

    fn in_force_everywhere(&mut self, epoch: u64) -> bool {
        let members = self.world.members();
        members.iter().all(|&i| match &self.world.nodes[i].node {
            Some(node) => node.configuration().epoch >= epoch,
            None => self.world.is_retired(i), // A dead member is judged by the others.
        })
    }
}

/// Runs `scenario` from `seed` (which shapes only client choices and delays).
pub fn run_membership_scenario(scenario: MembershipScenario, seed: u64) -> MembershipReport {
    crate::quiet_panics();
    let (nodes, spares) = scenario.shape();
    let mut params = SwarmParams::quiet(nodes, WorkloadKind::Register);
    params.fault_phase_us = u64::MAX / 4;
    params.membership = Some(MembershipParams { spares, interval_mean_us: u64::MAX / 4 });
    let options = SimOptions { membership: Some(true), ..SimOptions::default() };
    let mut world = World::new(seed, &options, params, Register::new(seed), false);
    world.operator.as_mut().expect("membership on").scripted = true;
    let mut script = Script { world, refusals: Vec::new() };
    script.world.start();
    script.run_for(1_000_000);
    let leader_before = script.wait_leader();
    let id = |i: usize| NodeId(i as u32 + 1);
    let mut outcome = Ok(());
    if let Some(leader) = leader_before {
        let others: Vec<usize> = (0..nodes).filter(|&i| i != leader).collect();
        outcome = match scenario {
            MembershipScenario::Grow => script
                .change(Change::AddLearner { id: id(3), address: "n4".into() })
                .and_then(|()| script.change(Change::Promote { id: id(3) }))
                .and_then(|()| script.change(Change::AddLearner { id: id(4), address: "n5".into() }))
                .and_then(|()| script.change(Change::Promote { id: id(4) })),
            MembershipScenario::Shrink => script
                .change(Change::Remove { id: id(others[0]) })
                .and_then(|()| script.change(Change::Remove { id: id(others[1]) })),
            MembershipScenario::ReplaceDead => {
                script.world.kill(others[0]);
                script.run_for(500_000);
                script
                    .change(Change::Remove { id: id(others[0]) })
                    .and_then(|()| script.change(Change::AddLearner { id: id(3), address: "n4".into() }))
                    .and_then(|()| script.change(Change::Promote { id: id(3) }))
            }
            MembershipScenario::RemoveLeader => {
                let local = script.world.local_now(leader);
                let node = script.world.nodes[leader].node.as_mut().expect("leads");
                let handed = node.transfer_leadership(local, id(others[0]));
                script.world.after_input(leader);
                script.world.arm_timer(leader);
                script.run_for(2_000_000);
                match handed {
                    Ok(()) => script.change(Change::Remove { id: id(leader) }),
                    Err(error) => Err(error),
                }
            }
            MembershipScenario::LeaderCrashesMidChange => {
                let taken =
                    script.world.reconfigure(leader, Change::AddLearner { id: id(3), address: "n4".into() });
                script.world.start_spare(3);
                // The Accepts for the change are on their way; the leader dies with them.
                script.run_for(1_000);
                script.world.crash(leader);
                script.run_for(500_000);
                script.world.restart(leader);
                script.run_for(500_000);
                let member = |s: &mut Script| s.world.members().contains(&3);
                let again = if member(&mut script) {
                    script.wait_in_force(2)
                } else {
                    script.change(Change::AddLearner { id: id(3), address: "n4".into() })
                };
                taken.and(again).and_then(|()| script.change(Change::Promote { id: id(3) }))
            }
            MembershipScenario::RefuseLosingMajority => {
                script.world.crash(others[0]);
                script.run_for(1_000_000);
                let leader = script.leader().unwrap_or(leader);
                let refused = script.world.reconfigure(leader, Change::Remove { id: id(others[1]) });
                if let Err(error) = &refused {
                    script.refusals.push(error.to_string());
                }
                match refused {
                    Ok(()) => Ok(()), // The test judges the final configuration.
                    Err(_) => script.change(Change::Remove { id: id(others[0]) }),
                }
            }
        };
    }
    finish(scenario, seed, script, leader_before, outcome)
}

fn finish(
    scenario: MembershipScenario,
    seed: u64,
    mut script: Script,
    leader_before: Option<usize>,
    outcome: Result<(), ChangeError>,
) -> MembershipReport {
    let world = &mut script.world;
    // Heal as the swarm does, then the members must converge within the liveness bound.
    world.heal_all();
    let bound = LIVENESS_ELECTION_TIMEOUTS * world.options.election_timeout_ms * 1000;
    world.run_until(world.now_us + bound);
    let converged = world.phase == Phase::Done;
    let members = world.members();
    let operator = world.operator.as_ref().expect("membership on");
    let latest = operator.latest.clone();
    let in_force_everywhere = members
        .iter()
        .all(|&i| world.nodes[i].node.as_ref().is_some_and(|n| n.configuration().epoch == latest.epoch));
    let removed: Vec<usize> = (0..world.nodes.len())
        .filter(|&i| world.nodes[i].node.as_ref().is_some_and(|n| n.is_removed()))
        .map(|i| i + 1)
        .collect();
    let applied = members.iter().filter_map(|&i| world.status(i)).map(|s| s.applied_upto).min().unwrap_or(0);
    let leader_after = world.leader().map(|i| i + 1);
    let mut failure = world.failure.clone();
    if failure.is_none() && !converged {
        failure = Some(Outcome::Liveness(world.describe_stuck()));
    }
    if let (None, Err(error)) = (&failure, &outcome) {
        failure = Some(Outcome::Liveness(format!("the script's change never held: {error}")));
    }
    let report = script.world.finish();
    let outcome = match (failure, report.outcome) {
        (_, safety @ Outcome::Safety(_)) => safety,
        (Some(failure), _) => failure,
        (None, outcome) => outcome,
    };
    MembershipReport {
        scenario,
        seed,
        epoch: latest.epoch,
        voters: latest.voters.iter().map(|v| v.0 as usize).collect(),
        learners: latest.learners.iter().map(|v| v.0 as usize).collect(),
        in_force_everywhere,
        removed,
        leader_before: leader_before.map(|i| i + 1),
        leader_after,
        refusals: script.refusals,
        converged,
        applied,
        ops_ok: report.ops.ok,
        outcome,
        trace_hash: report.trace_hash,
    }
}

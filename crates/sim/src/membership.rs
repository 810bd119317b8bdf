//! The simulated operator: membership changes during the fault phase (see
//! `synod_core::membership` for the rule that makes any change safe).
//!
//! On a seed that changes its membership the world holds spare nodes beyond the founding
//! ones: outsiders with empty disks, in no configuration, never started. The operator
//! asks the current leader, through `Node::reconfigure`, to carry out plans one at a time:
//!
//! - **grow**: a spare is started (with the configuration in force, as a server is given
//!   the current member list), added as a learner, and promoted once caught up;
//! - **shrink**: a voter or learner is removed; if it leads, the leadership is handed to
//!   another voter first (`Node::transfer_leadership`) and the new leader removes it;
//! - **replace**: a voter's machine dies with its disk (it is crashed, its disk lost, and
//!   it never restarts); it is removed and a spare takes its place, then is promoted.
//!
//! Each step of a plan is a goal judged against the newest configuration decided, not a
//! request to remember: a change the leader took but that a crash or a partition lost is
//! simply asked for again, and refusals (`ChangeError`: not the leader, one change at a
//! time, a learner behind, a majority not heard lately) are normal and retried at the
//! next step. Changes happen among the crashes, pauses and partitions of the fault phase
//! and stop with it, so that liveness can be checked: after the heal, a majority of the
//! newest configuration is up (a dead node that is still a member comes back on a new
//! disk), and its members must converge. Removed nodes and unused spares are left out of
//! that check; a removed node must say so (`Node::is_removed`), lead nothing, and vote in
//! no slot its configuration no longer governs.
//!
//! Everything the operator draws comes from its own random stream, so seeds that do not
//! change their membership replay the runs they always did.

use std::collections::{BTreeSet, VecDeque};

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use synod_core::{Change, ChangeError, Configuration, NodeId};

use crate::disk::DiskFault;
use crate::faults::{rng_for, stream, FaultRate, MembershipParams};
use crate::workload::Workload;
use crate::world::World;

/// The operator never grows the group beyond this many voters (of `VOTERS_MAX`).
const VOTERS_GROW_MAX: usize = 7;
/// Nor shrinks it below this many: fewer would leave no room for the nemesis's faults.
const VOTERS_SHRINK_MIN: usize = 3;

/// What one step of a plan wants to be true of the newest configuration (node indices,
/// shown 1-based as in traces).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// The node is a member (a learner, or a voter already).
    Learner(usize),
    /// The node is a voter.
    Voter(usize),
    /// The node is in no configuration.
    Removed(usize),
}

impl std::fmt::Debug for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::Learner(i) => write!(f, "n{} a member", i + 1),
            Goal::Voter(i) => write!(f, "n{} a voter", i + 1),
            Goal::Removed(i) => write!(f, "n{} removed", i + 1),
        }
    }
}

pub(crate) struct Operator {
    rng: ChaCha8Rng,
    rate: FaultRate,
    /// Spares never started, in the order they will be used.
    spares: VecDeque<usize>,
    /// Nodes out of service for good: dead with their disks (`replace`), or removed from
    /// the group. Never restarted, but for a dead one still a member at the heal.
    retired: BTreeSet<usize>,
    plan: VecDeque<Goal>,
    /// The newest configuration any live node has decided, as last seen.
    pub(crate) latest: Configuration,
    /// The newest configuration in force at some live node: an empty disk starts from it.
    pub(crate) in_force: Configuration,
    /// A script drives the changes (`membership_scenarios`): no steps of its own.
    pub(crate) scripted: bool,
}

impl Operator {
    pub(crate) fn new(
        seed: u64,
        params: MembershipParams,
        founding: usize,
        initial: Configuration,
    ) -> Operator {
        // Its own stream, apart from the one `MembershipParams::draw` used.
        let rng = rng_for(seed ^ 0x6f70_6572_6174_6f72, stream::MEMBERSHIP);
        let rate =
            FaultRate { interval_mean_us: params.interval_mean_us, duration_min_us: 0, duration_max_us: 0 };
        Operator {
            rng,
            rate,
            spares: (founding..founding + params.spares).collect(),
            retired: BTreeSet::new(),
            plan: VecDeque::new(),
            latest: initial.clone(),
            in_force: initial,
            scripted: false,
        }
    }

    pub(crate) fn next_interval(&mut self) -> u64 {
        self.rate.next_interval(&mut self.rng)
    }

    pub(crate) fn retired_any(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Draws the next plan against the newest configuration, with `leader` leading now;
    /// `may_kill` says a voter may die now (see `operator_step`). Returns the goals, and
    /// the node to kill first if the plan replaces a dead one.
    fn draw_plan(&mut self, leader: usize, may_kill: bool) -> (Vec<Goal>, Option<usize>) {
        let voters: Vec<usize> = self.latest.voters.iter().map(|v| v.0 as usize - 1).collect();
        let learners: Vec<usize> = self.latest.learners.iter().map(|v| v.0 as usize - 1).collect();
        let spare = self.spares.front().copied();
        let mut options: Vec<(Vec<Goal>, Option<usize>)> = Vec::new();
        if let Some(s) = spare.filter(|_| voters.len() < VOTERS_GROW_MAX) {
            options.push((vec![Goal::Learner(s), Goal::Voter(s)], None));
            options.push((vec![Goal::Learner(s)], None));
        }
        if voters.len() > VOTERS_SHRINK_MIN {
            // The leader as often as any other: its removal needs a handover first.
            let x = *voters.choose(&mut self.rng).expect("voters");
            options.push((vec![Goal::Removed(x)], None));
            options.push((vec![Goal::Removed(leader)], None));
        }
        if let Some(&l) = learners.first() {
            if self.rng.gen_bool(0.5) {
                options.push((vec![Goal::Voter(l)], None));
            } else {
                options.push((vec![Goal::Removed(l)], None));
            }
        }
        if let Some(s) = spare.filter(|_| may_kill && voters.len() >= 3) {
            let x = *voters.choose(&mut self.rng).expect("voters");
            options.push((vec![Goal::Removed(x), Goal::Learner(s), Goal::Voter(s)], Some(x)));
        }
        options.choose(&mut self.rng).cloned().unwrap_or_default()
    }

    fn is_member(&self, i: usize) -> bool {
        self.latest.is_member(NodeId(i as u32 + 1))
    }

    fn satisfied(&self, goal: Goal) -> bool {
        let id = |i: usize| NodeId(i as u32 + 1);
        match goal {
            Goal::Learner(i) => self.latest.is_member(id(i)),
            Goal::Voter(i) => self.latest.is_voter(id(i)),
            Goal::Removed(i) => !self.latest.is_member(id(i)),
        }
    }
}

impl<W: Workload> World<W> {
    /// Node `i` is no part of the group's life: a spare never started, or a retired node
    /// no longer a member. The nemesis does not count it as down.
    pub(crate) fn is_out(&self, i: usize) -> bool {
        let Some(operator) = &self.operator else { return false };
        operator.spares.contains(&i) || (operator.retired.contains(&i) && !operator.is_member(i))
    }

    /// Node `i` is out of service for good: it never restarts.
    pub(crate) fn is_retired(&self, i: usize) -> bool {
        self.operator.as_ref().is_some_and(|o| o.retired.contains(&i))
    }

    /// The nodes that must converge: the voters and learners of the newest configuration
    /// (every node, on a seed without membership changes).
    pub(crate) fn members(&mut self) -> Vec<usize> {
        self.refresh_configurations();
        match &self.operator {
            None => (0..self.nodes.len()).collect(),
            Some(operator) => (0..self.nodes.len()).filter(|&i| operator.is_member(i)).collect(),
        }
    }

    /// `id` is a voter of a configuration some live node holds, or was one of the newest
    /// configuration as last seen.
    pub(crate) fn was_voter(&self, id: NodeId) -> bool {
        let Some(operator) = &self.operator else { return false };
        operator.latest.is_voter(id)
            || self
                .nodes
                .iter()
                .filter_map(|s| s.node.as_ref())
                .any(|n| n.configurations().any(|c| c.is_voter(id)))
    }

    /// The node a client's request for node `i` goes to: `i` itself, or, on a seed that
    /// changes its membership and if `i` is no member of the newest configuration as last
    /// seen (a spare, a removed node), a member chosen by `i` (clients learn the member
    /// list as a server's clients do from its configuration).
    pub(crate) fn route(&self, i: usize) -> usize {
        let Some(operator) = &self.operator else { return i };
        if operator.is_member(i) && !operator.retired.contains(&i) {
            return i;
        }
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&m| operator.is_member(m) && !operator.retired.contains(&m))
            .collect();
        if members.is_empty() {
            i
        } else {
            members[i % members.len()]
        }
    }

    /// Looks up the newest configurations the live nodes know.
    fn refresh_configurations(&mut self) {
        let Some(operator) = self.operator.as_mut() else { return };
        for slot in &self.nodes {
            let Some(node) = &slot.node else { continue };
            if node.latest_configuration().epoch > operator.latest.epoch {
                operator.latest = node.latest_configuration().clone();
            }
            if node.configuration().epoch > operator.in_force.epoch {
                operator.in_force = node.configuration().clone();
            }
        }
        self.faults.epoch = operator.latest.epoch;
    }

    /// Safety checks of membership, at every checkpoint: a node that says it was removed
    /// does not lead.
    pub(crate) fn check_membership(&self) -> Result<(), String> {
        for (i, slot) in self.nodes.iter().enumerate() {
            let Some(node) = &slot.node else { continue };
            if node.is_removed() && node.status().is_leader {
                return Err(format!(
                    "n{} leads although it was removed (configuration {} has voters {:?})",
                    i + 1,
                    node.latest_configuration().epoch,
                    node.latest_configuration().voters
                ));
            }
        }
        Ok(())
    }

    /// The newest configuration, for the liveness report.
    pub(crate) fn describe_membership(&self) -> String {
        match &self.operator {
            None => String::new(),
            Some(o) => format!(
                "; configuration {} voters {:?} learners {:?} (in force at some node: {}), retired {:?}",
                o.latest.epoch,
                o.latest.voters,
                o.latest.learners,
                o.in_force.epoch,
                o.retired.iter().map(|i| i + 1).collect::<Vec<_>>()
            ),
        }
    }

    /// The heal: a dead node that is still a member comes back on a new disk (the
    /// machine was replaced under the same name) and recovers, so that a majority of the
    /// newest configuration is up and recovering members can hear every voter.
    pub(crate) fn revive_members(&mut self) {
        self.refresh_configurations();
        let Some(operator) = self.operator.as_mut() else { return };
        let revive: Vec<usize> =
            operator.retired.iter().copied().filter(|&i| operator.is_member(i)).collect();
        for &i in &revive {
            operator.retired.remove(&i);
        }
        for i in revive {
            self.trace_line(|| {
                format!("operator: n{} is still a member: it comes back on a new disk", i + 1)
            });
        }
    }

    /// One step of the operator: draw a plan if none is under way, then ask the leader for
    /// what the plan's next goal still needs.
    pub(crate) fn operator_step(&mut self) {
        self.refresh_configurations();
        let Some(leader) = self.leader() else { return };
        // A voter may die with its disk only where the rest keep a good copy of every
        // record and can still decide: no disk is damaged and not yet repaired, no other
        // dead member waits for its removal, and the newest configuration is in force at
        // the leader (the slots before it need the old voters), with three voters or more
        // (so that the others are a majority).
        let damaged = self.nodes.iter().any(|s| s.disk.damaged());
        let node = self.nodes[leader].node.as_ref().expect("the leader is up");
        let settled = node.configuration().epoch == node.latest_configuration().epoch;
        let operator = self.operator.as_mut().expect("stepped only with one");
        let settled = settled && node.latest_configuration().epoch == operator.latest.epoch;
        let may_kill = settled && !damaged && operator.retired.iter().all(|&r| !operator.is_member(r));
        while operator.plan.front().is_some_and(|g| operator.satisfied(*g)) {
            let done = operator.plan.pop_front().expect("peeked");
            if let Goal::Removed(i) = done {
                // A removed node is decommissioned: once down, it stays down.
                operator.retired.insert(i);
            }
        }
        if operator.plan.is_empty() {
            let (plan, kill) = operator.draw_plan(leader, may_kill);
            operator.plan.extend(plan.iter().copied());
            if !plan.is_empty() {
                self.trace_line(|| format!("operator: plan {plan:?}"));
            }
            if let Some(x) = kill {
                self.kill(x);
                return; // The leader may have died with it: the next step finds the new one.
            }
        }
        let Some(goal) = self.operator.as_ref().and_then(|o| o.plan.front().copied()) else { return };
        let id = |i: usize| NodeId(i as u32 + 1);
        let change = match goal {
            Goal::Removed(x) if x == leader => {
                self.hand_over(leader);
                return;
            }
            Goal::Learner(s) => Change::AddLearner { id: id(s), address: format!("n{}", s + 1) },
            Goal::Voter(s) => Change::Promote { id: id(s) },
            Goal::Removed(x) => Change::Remove { id: id(x) },
        };
        let result = self.reconfigure(leader, change.clone());
        if result.is_ok() {
            if let Goal::Learner(s) = goal {
                self.start_spare(s);
            }
        }
    }

    /// Asks node `at` (the leader) for `change`, unforced, and counts the answer.
    pub(crate) fn reconfigure(&mut self, at: usize, change: Change) -> Result<(), ChangeError> {
        let local = self.local_now(at);
        let node = self.nodes[at].node.as_mut().expect("the leader is up");
        let result = node.reconfigure(local, change.clone(), false);
        match &result {
            Ok(()) => self.faults.changes += 1,
            Err(_) => self.faults.changes_refused += 1,
        }
        self.trace_line(|| match &result {
            Ok(()) => format!("operator: n{} takes {change:?}", at + 1),
            Err(e) => format!("operator: n{} refuses {change:?}: {e}", at + 1),
        });
        self.after_input(at);
        self.arm_timer(at);
        result
    }

    /// The leader is to be removed: it hands its leadership to a live voter in force.
    fn hand_over(&mut self, leader: usize) {
        let node = self.nodes[leader].node.as_ref().expect("the leader is up");
        let voters: Vec<usize> = node
            .configuration()
            .voters
            .iter()
            .map(|v| v.0 as usize - 1)
            .filter(|&v| v != leader && self.nodes[v].node.is_some() && self.nodes[v].paused.is_none())
            .collect();
        let operator = self.operator.as_mut().expect("stepped only with one");
        let Some(&to) = voters.choose(&mut operator.rng) else { return };
        let local = self.local_now(leader);
        let node = self.nodes[leader].node.as_mut().expect("the leader is up");
        let result = node.transfer_leadership(local, NodeId(to as u32 + 1));
        match &result {
            Ok(()) => self.faults.transfers += 1,
            Err(_) => self.faults.changes_refused += 1,
        }
        self.trace_line(|| match &result {
            Ok(()) => format!("operator: n{} hands its leadership to n{}", leader + 1, to + 1),
            Err(e) => format!("operator: n{} refuses to hand over to n{}: {e}", leader + 1, to + 1),
        });
        self.after_input(leader);
        self.arm_timer(leader);
    }

    /// Starts spare `s` on its empty disk, once: it boots as a new replica from the
    /// configuration in force and recovers from its peers once they admit it.
    pub(crate) fn start_spare(&mut self, s: usize) {
        let operator = self.operator.as_mut().expect("spares only with an operator");
        let Some(index) = operator.spares.iter().position(|&x| x == s) else { return };
        operator.spares.remove(index);
        self.trace_line(|| format!("operator: starts spare n{}", s + 1));
        self.boot(s);
    }

    /// Node `x`'s machine dies with its disk: it never comes back (unless still a member
    /// at the heal, on a new disk).
    pub(crate) fn kill(&mut self, x: usize) {
        if self.nodes[x].node.is_some() {
            self.crash(x);
        }
        self.nodes[x].crash_trap = None;
        if self.nodes[x].disk.strike(DiskFault::DiskLost, &mut self.rng_storage) {
            self.faults.disks_lost += 1;
        }
        self.operator.as_mut().expect("only with an operator").retired.insert(x);
        self.trace_line(|| format!("operator: n{} dies with its disk; it is to be replaced", x + 1));
    }
}

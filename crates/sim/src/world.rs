//! The simulated world: one event queue, the nodes with their disks and clocks, the
//! network, the clients and the nemesis, driven by one loop.
//! Node driving is in `driver`, faults in `nemesis`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use synod_core::{Command, Configuration, Node, NodeId, Options, PlantedBugs, Ready, StateMachine, Time};

use crate::checkers::SafetyChecker;
use crate::clients::{ClientTiming, Clients, Mode};
use crate::disk::Disk;
use crate::faults::{derive_seed, rng_for, stream, SwarmParams};
use crate::network::Network;
use crate::trace::{kind, Tracer};
use crate::workload::{Cmd, Workload};
use crate::{Bug, FaultCounts, Outcome, SimOptions, SimReport};

/// A cheap-checks checkpoint this often (state hashes, convergence in the heal phase).
const CHECK_INTERVAL_US: u64 = 100_000;
/// Setup (opening the bank's accounts) runs fault-free and must finish within this.
const SETUP_BOUND_US: u64 = 20_000_000;
/// After healing, everything must complete within this many election timeouts.
pub(crate) const LIVENESS_ELECTION_TIMEOUTS: u64 = 40;
/// A run processes at most this many events (a spinning timer is a liveness bug).
const EVENTS_MAX: u64 = 5_000_000;

pub(crate) enum Ev<C> {
    Deliver {
        from: usize,
        to: usize,
        frame: Vec<u8>,
    },
    Timer {
        node: usize,
        incarnation: u32,
    },
    Fsync {
        node: usize,
        incarnation: u32,
        ticket: u64,
    },
    Request {
        node: usize,
        command: Command<C>,
    },
    ClientWake {
        client: usize,
        token: u64,
    },
    Crash,
    Pause,
    Partition,
    /// A crash armed by the nemesis strikes right after an input that wrote records:
    /// inside the fsync window, when unsynced state is most at risk.
    CrashNow {
        node: usize,
        incarnation: u32,
        down_us: u64,
    },
    Restart {
        node: usize,
        incarnation: u32,
    },
    Resume {
        node: usize,
        token: u64,
    },
    Heal {
        token: u64,
    },
    Check,
    /// The simulated operator's next step (`membership`).
    Operator,
    EndFaults,
    /// The phase must be over by now: `Setup` for the setup's bound, `Heal` for the
    /// liveness bound (which covers the final operation too).
    Deadline {
        phase: Phase,
    },
}

pub(crate) struct Scheduled<C> {
    pub(crate) at_us: u64,
    pub(crate) seq: u64,
    pub(crate) ev: Ev<C>,
}

impl<C> PartialEq for Scheduled<C> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl<C> Eq for Scheduled<C> {}
impl<C> PartialOrd for Scheduled<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<C> Ord for Scheduled<C> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// A node's local clock: `offset + global × rate`, rate = 1 ± drift (bounded drift).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) offset_us: u64,
    pub(crate) rate_ppm: u64,
}

impl Clock {
    pub(crate) fn local(&self, global_us: u64) -> Time {
        Time(self.offset_us + (u128::from(global_us) * u128::from(self.rate_ppm) / 1_000_000) as u64)
    }

    /// The first global instant at which the local clock reads at least `local`.
    pub(crate) fn global(&self, local: Time) -> u64 {
        let since = local.0.saturating_sub(self.offset_us);
        let global = (u128::from(since) * 1_000_000).div_ceil(u128::from(self.rate_ppm));
        global.min(u128::from(u64::MAX / 2)) as u64
    }
}

/// Inputs that wait while a node is paused.
pub(crate) enum Input<C> {
    Message { from: usize, frame: Vec<u8> },
    Request(Command<C>),
}

pub(crate) struct NodeSlot<S: StateMachine> {
    pub node: Option<Node<S>>,
    pub incarnation: u32,
    /// `Some(token)` while paused.
    pub paused: Option<u64>,
    pub(crate) inbox: VecDeque<Input<S::Command>>,
    pub(crate) disk: Disk<S::Command>,
    /// Readies waiting for their disk batch to be synced, in input order.
    pub(crate) waiting: VecDeque<Waiting<S>>,
    pub(crate) clock: Clock,
    /// The earliest timer event in the queue for this incarnation.
    pub(crate) timer_at_us: Option<u64>,
    pub(crate) was_leader: bool,
    /// Crash inside the fsync window of the next input that writes a vote.
    pub(crate) crash_trap: Option<CrashTrap>,
    /// Reads served under the leader's lease, waiting for their read index to be applied
    /// and every earlier `Ready` to be released: (read index, command).
    pub(crate) lease_reads: BTreeMap<u64, (u64, Command<S::Command>)>,
    /// The last token given to `Node::lease_read` (the keys of `lease_reads`).
    pub(crate) read_tokens: u64,
    /// The node's `Status::snapshots_installed` as last counted (per incarnation).
    pub(crate) snapshots_seen: u64,
    /// The synced lsn this incarnation of the node was last told of (`handle_persisted`).
    pub(crate) persisted_told: u64,
    /// The state hash last computed, with what it was computed at: (incarnation,
    /// applied_upto, snapshots installed). A state changes only by applying a slot or
    /// installing a snapshot, so an equal key means an equal state and the hash (a walk
    /// over the whole state) need not be computed again.
    pub(crate) state_hash_at: Option<(u32, u64, u64, u64)>,
    /// The configuration the node was first started with on an empty disk, if not the
    /// founding one (a spare, or a replaced disk): its log replays on top of it.
    pub(crate) boot_configuration: Option<Configuration>,
}

/// An armed crash (see `NodeSlot::crash_trap`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CrashTrap {
    /// How long the node then stays down.
    pub down_us: u64,
    /// Strike at the last instant of the fsync window, when replies to the Accepts that
    /// left early may be in, rather than at once.
    pub late: bool,
}

/// A `Ready` taken from a node, waiting to be released.
pub(crate) type Waiting<S> = (Release, Ready<<S as StateMachine>::Command, <S as StateMachine>::Output>);

/// When a waiting `Ready` may be released, once every earlier one was.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Release {
    /// `Some(ticket)`: once its disk batch is synced (see `Disk::write`). `None`: at once,
    /// its batch holds decisions only (`Ready::release_written`) or nothing.
    pub synced_ticket: Option<u64>,
}

/// A pivot fault in progress (see `World::start_pivot`).
pub(crate) struct Pivot {
    pub node: usize,
    /// The leader's side of the first partition.
    pub side: Vec<usize>,
    /// The first partition's token: the flip happens only while it stands.
    pub token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup,
    Faults,
    Heal,
    Final,
    Done,
}

pub(crate) struct World<W: Workload> {
    pub(crate) seed: u64,
    pub now_us: u64,
    pub(crate) seq: u64,
    pub(crate) queue: BinaryHeap<Scheduled<Cmd<W>>>,
    pub nodes: Vec<NodeSlot<W::Sm>>,
    pub(crate) configuration: Configuration,
    pub options: Options,
    pub(crate) cluster_id: u64,
    pub(crate) bug: Option<Bug>,
    pub params: SwarmParams,
    pub net: Network,
    pub(crate) rng_net: ChaCha8Rng,
    pub(crate) rng_disk: ChaCha8Rng,
    pub(crate) rng_nemesis: ChaCha8Rng,
    pub(crate) rng_clients: ChaCha8Rng,
    /// Torn writes and disk faults.
    pub(crate) rng_storage: ChaCha8Rng,
    pub clients: Clients<W>,
    pub(crate) safety: SafetyChecker<Cmd<W>>,
    pub(crate) trace: Tracer,
    pub phase: Phase,
    pub(crate) events: u64,
    pub faults: FaultCounts,
    pub failure: Option<Outcome>,
    pub(crate) partition_token: u64,
    pub(crate) pause_token: u64,
    pub(crate) pivot: Option<Pivot>,
    /// Every time a node became the active leader: (time, node).
    pub elections: Vec<(u64, usize)>,
    /// Scenarios script their own faults and never heal on their own.
    pub(crate) auto_heal: bool,
    pub(crate) check_budget: std::time::Duration,
    /// The simulated operator, on seeds that change their membership.
    pub(crate) operator: Option<crate::membership::Operator>,
}

thread_local! {
    /// Set while a run executes on this thread (see `quiet_panics`).
    pub(crate) static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs one seed to the end and reports.
pub(crate) fn run<W: Workload>(
    seed: u64,
    options: &SimOptions,
    params: SwarmParams,
    workload: W,
) -> SimReport {
    let mut world = World::new(seed, options, params, workload, true);
    IN_RUN.with(|flag| flag.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        world.start();
        world.run_until(u64::MAX);
    }));
    IN_RUN.with(|flag| flag.set(false));
    if let Err(panic) = result {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        world.fail(Outcome::Safety(format!("a node panicked (a core assertion fired): {message}")));
    }
    world.finish()
}

impl<W: Workload> World<W> {
    pub(crate) fn new(
        seed: u64,
        options: &SimOptions,
        params: SwarmParams,
        workload: W,
        auto_heal: bool,
    ) -> World<W> {
        let founding = params.nodes;
        let spares = params.membership.map_or(0, |m| m.spares);
        let n = founding + spares;
        let configuration = Configuration::new((1..=founding as u32).map(NodeId).collect());
        let mut rng_clock = rng_for(seed, stream::CLOCK);
        let nodes = (0..n)
            .map(|_| {
                let drift = params.drift_ppm_max as i64;
                let rate_ppm = (1_000_000 + rng_clock.gen_range(-drift..=drift)) as u64;
                NodeSlot {
                    node: None,
                    incarnation: 0,
                    paused: None,
                    inbox: VecDeque::new(),
                    disk: Disk::new(params.segment_records),
                    waiting: VecDeque::new(),
                    lease_reads: BTreeMap::new(),
                    read_tokens: 0,
                    clock: Clock { offset_us: rng_clock.gen_range(0..10_000_000), rate_ppm },
                    timer_at_us: None,
                    was_leader: false,
                    crash_trap: None,
                    snapshots_seen: 0,
                    persisted_told: 0,
                    state_hash_at: None,
                    boot_configuration: None,
                }
            })
            .collect();
        let timing = ClientTiming {
            nodes: n,
            think_max_us: params.think_max_us,
            timeout_us: params.client_timeout_us,
            give_up_us: params.give_up_us,
        };
        let params_membership = params.membership;
        let configuration_copy = configuration.clone();
        World {
            seed,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            configuration,
            options: Options {
                checkpoint_every_slots: params.checkpoint_every_slots,
                catchup_retain_slots: params.catchup_retain_slots,
                snapshot_chunk_bytes: params.snapshot_chunk_bytes,
                ..Options::default()
            },
            cluster_id: derive_seed(seed, 0xc1u64),
            bug: options.bug,
            net: Network::new(n, params.link.clone()),
            rng_net: rng_for(seed, stream::NETWORK),
            rng_disk: rng_for(seed, stream::DISK),
            rng_nemesis: rng_for(seed, stream::NEMESIS),
            rng_clients: rng_for(seed, stream::CLIENTS),
            rng_storage: rng_for(seed, stream::STORAGE),
            clients: Clients::new(workload, params.clients, timing),
            params,
            safety: SafetyChecker::new(),
            trace: Tracer::new(options.trace),
            phase: Phase::Setup,
            events: 0,
            faults: FaultCounts::default(),
            failure: None,
            partition_token: 0,
            pause_token: 0,
            pivot: None,
            elections: Vec::new(),
            auto_heal,
            check_budget: options.check_budget,
            operator: params_membership
                .map(|m| crate::membership::Operator::new(seed, m, founding, configuration_copy)),
        }
    }

    pub(crate) fn push(&mut self, at_us: u64, ev: Ev<Cmd<W>>) {
        self.seq += 1;
        self.queue.push(Scheduled { at_us: at_us.max(self.now_us), seq: self.seq, ev });
    }

    pub(crate) fn fail(&mut self, outcome: Outcome) {
        if self.failure.is_none() {
            if self.trace.enabled() {
                self.trace.line(self.now_us, &format!("VIOLATION {outcome}"));
            }
            self.failure = Some(outcome);
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.phase {
            Phase::Faults => Mode { issue: true, give_up: true },
            _ => Mode { issue: false, give_up: false },
        }
    }

    pub(crate) fn bugs(&self) -> PlantedBugs {
        PlantedBugs {
            small_quorum: self.bug == Some(Bug::SmallQuorum),
            stale_ballot: self.bug == Some(Bug::StaleBallot),
            stale_read: self.bug == Some(Bug::StaleRead),
            own_vote_early: self.bug == Some(Bug::OwnVoteEarly),
            reconfig_at_once: self.bug == Some(Bug::ReconfigNoOverlap),
        }
    }

    pub(crate) fn node_seed(&self, i: usize) -> u64 {
        derive_seed(
            derive_seed(self.seed, stream::NODE),
            (i as u64) << 32 | u64::from(self.nodes[i].incarnation),
        )
    }

    /// Boots every founding node (spares wait for the operator) and starts the setup (or,
    /// without one, the fault phase).
    pub(crate) fn start(&mut self) {
        for i in 0..self.params.nodes {
            self.boot(i);
        }
        self.push(CHECK_INTERVAL_US, Ev::Check);
        let setup = self.clients.workload.setup();
        if setup.is_empty() {
            self.begin_faults();
        } else {
            self.push(SETUP_BOUND_US, Ev::Deadline { phase: Phase::Setup });
            let actions = self.clients.script(self.now_us, setup);
            self.apply(actions);
        }
    }

    pub(crate) fn begin_faults(&mut self) {
        self.phase = Phase::Faults;
        self.trace_line(|| "phase: faults".to_string());
        let actions = self.clients.start(self.now_us, &mut self.rng_clients);
        self.apply(actions);
        if let Some(rate) = self.params.crash {
            let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
            self.push(at, Ev::Crash);
        }
        if let Some(rate) = self.params.pause {
            let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
            self.push(at, Ev::Pause);
        }
        if let Some(rate) = self.params.partition {
            let at = self.now_us + rate.next_interval(&mut self.rng_nemesis);
            self.push(at, Ev::Partition);
        }
        if let Some(operator) = self.operator.as_mut().filter(|o| !o.scripted) {
            let at = self.now_us + operator.next_interval();
            self.push(at, Ev::Operator);
        }
        if self.auto_heal {
            self.push(self.now_us + self.params.fault_phase_us, Ev::EndFaults);
        }
    }

    /// Processes events up to `until_us` (inclusive), or until the run is done or failed.
    pub(crate) fn run_until(&mut self, until_us: u64) {
        while self.failure.is_none() && self.phase != Phase::Done {
            match self.queue.peek() {
                Some(next) if next.at_us <= until_us => {}
                _ => break,
            }
            let Scheduled { at_us, ev, .. } = self.queue.pop().expect("peeked");
            self.now_us = at_us;
            self.events += 1;
            if self.events > EVENTS_MAX {
                self.fail(Outcome::Liveness(format!("event budget of {EVENTS_MAX} exhausted")));
                break;
            }
            self.step(ev);
        }
        if until_us != u64::MAX {
            self.now_us = self.now_us.max(until_us);
        }
    }

    pub(crate) fn step(&mut self, ev: Ev<Cmd<W>>) {
        let now = self.now_us;
        match ev {
            Ev::Deliver { from, to, frame } => {
                self.trace.event(now, kind::DELIVER, to, &frame);
                let slot = &mut self.nodes[to];
                if slot.node.is_none() {
                    self.trace_line(|| format!("n{} down: drops a frame from n{}", to + 1, from + 1));
                } else if slot.paused.is_some() {
                    slot.inbox.push_back(Input::Message { from, frame });
                } else {
                    self.deliver(to, from, frame);
                }
            }
            Ev::Timer { node, incarnation } => {
                self.trace.event(now, kind::TIMER, node, &[]);
                let slot = &mut self.nodes[node];
                if slot.incarnation != incarnation || slot.node.is_none() {
                    return;
                }
                if slot.timer_at_us == Some(now) {
                    slot.timer_at_us = None;
                }
                if slot.paused.is_some() {
                    return;
                }
                let local = slot.clock.local(now);
                let node_ref = slot.node.as_mut().expect("checked above");
                if node_ref.poll_timeout().is_some_and(|deadline| deadline <= local) {
                    node_ref.handle_timeout(local);
                    self.after_input(node);
                }
                self.arm_timer(node);
            }
            Ev::Fsync { node, incarnation, ticket } => {
                self.trace.event(now, kind::FSYNC, node, &ticket.to_le_bytes());
                let slot = &mut self.nodes[node];
                if slot.incarnation != incarnation {
                    return; // The node crashed before this fsync returned.
                }
                let synced = slot.disk.sync_through(ticket);
                let live = slot.node.is_some() && slot.paused.is_none();
                self.faults.checkpoints += synced.checkpoints;
                if synced.repaired {
                    self.faults.repairs += 1;
                    self.trace_line(|| format!("n{} repaired: damage marker cleared", node + 1));
                }
                if live {
                    self.release_synced(node);
                }
            }
            Ev::Request { node, command } => {
                self.trace.event(now, kind::REQUEST, node, &command.client_id.to_le_bytes());
                let slot = &mut self.nodes[node];
                if slot.node.is_none() {
                    self.trace_line(|| {
                        format!("n{} down: client {} seq {} lost", node + 1, command.client_id, command.seq)
                    });
                } else if slot.paused.is_some() {
                    slot.inbox.push_back(Input::Request(command));
                } else {
                    self.invoke(node, command);
                }
            }
            Ev::ClientWake { client, token } => {
                self.trace.event(now, kind::CLIENT, client, &token.to_le_bytes());
                let mode = self.mode();
                let actions = self.clients.wake(client, token, now, mode, &mut self.rng_clients);
                self.apply(actions);
            }
            Ev::Crash
            | Ev::Pause
            | Ev::Partition
            | Ev::CrashNow { .. }
            | Ev::Restart { .. }
            | Ev::Resume { .. }
            | Ev::Heal { .. } => {
                self.trace.event(now, kind::NEMESIS, 0, &[]);
                self.nemesis(ev);
            }
            Ev::Check => {
                self.trace.event(now, kind::CHECK, 0, &[]);
                self.check();
                self.push(now + CHECK_INTERVAL_US, Ev::Check);
            }
            Ev::Operator => {
                self.trace.event(now, kind::NEMESIS, 1, &[]);
                if self.phase == Phase::Faults {
                    self.operator_step();
                    let at = now + self.operator.as_mut().expect("scheduled only with one").next_interval();
                    self.push(at, Ev::Operator);
                }
            }
            Ev::EndFaults => {
                self.trace.event(now, kind::PHASE, 0, &[]);
                self.heal_all();
                let bound = LIVENESS_ELECTION_TIMEOUTS * self.options.election_timeout_ms * 1000;
                self.push(now + bound, Ev::Deadline { phase: Phase::Heal });
            }
            Ev::Deadline { phase } => {
                self.trace.event(now, kind::PHASE, 1, &[]);
                let missed = match phase {
                    Phase::Setup => self.phase == Phase::Setup,
                    _ => self.phase != Phase::Done,
                };
                if missed {
                    let why = self.describe_stuck();
                    self.fail(Outcome::Liveness(why));
                }
            }
        }
    }

    pub(crate) fn trace_line(&mut self, text: impl FnOnce() -> String) {
        if self.trace.enabled() {
            let text = text();
            self.trace.line(self.now_us, &text);
        }
    }

    pub(crate) fn local_now(&self, i: usize) -> Time {
        self.nodes[i].clock.local(self.now_us)
    }

    /// The periodic checkpoint: replica consistency, and in the heal phase, convergence.
    pub(crate) fn check(&mut self) {
        let mut states = Vec::new();
        for i in 0..self.nodes.len() {
            let slot = &mut self.nodes[i];
            if let Some(node) = &slot.node {
                let status = node.status();
                let key = (slot.incarnation, status.applied_upto, status.snapshots_installed);
                let hash = match slot.state_hash_at {
                    Some((incarnation, applied, installed, hash))
                        if (incarnation, applied, installed) == key =>
                    {
                        hash
                    }
                    _ => node.state_machine().state_hash(),
                };
                slot.state_hash_at = Some((key.0, key.1, key.2, hash));
                states.push((i, status.applied_upto, hash));
            }
        }
        for &(i, applied_upto, hash) in &states {
            if let Err(violation) = self.safety.on_state(i, applied_upto, hash, self.now_us) {
                self.fail(Outcome::Safety(violation));
                return;
            }
        }
        if let Err(violation) = self.check_membership() {
            self.fail(Outcome::Safety(violation));
            return;
        }
        // Converged also means repaired: with every member up and connected, a node that
        // recovers from lost storage must get its vote back (`synod_core::recovery`).
        // Members are the voters and learners of the newest configuration: outsiders and
        // removed nodes need not keep up.
        let members = self.members();
        let states: Vec<_> = states.into_iter().filter(|(i, ..)| members.contains(i)).collect();
        let converged = states.len() == members.len()
            && members.iter().all(|&i| self.nodes[i].paused.is_none())
            && members.iter().all(|&i| self.nodes[i].node.as_ref().is_some_and(|n| !n.is_recovering()))
            && states.windows(2).all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2));
        match self.phase {
            Phase::Heal if converged && self.clients.idle() => match self.clients.workload.final_op() {
                Some(op) => {
                    self.phase = Phase::Final;
                    self.trace_line(|| "phase: final operation".to_string());
                    let actions = self.clients.script(self.now_us, vec![op]);
                    self.apply(actions);
                }
                None => self.phase = Phase::Done,
            },
            Phase::Final if converged && self.clients.script_done() => self.phase = Phase::Done,
            _ => {}
        }
    }

    pub(crate) fn describe_stuck(&self) -> String {
        let statuses: Vec<String> = (0..self.nodes.len())
            .map(|i| match self.status(i) {
                None => format!("n{} down", i + 1),
                Some(s) => format!(
                    "n{} applied {} leader {} ballot {}{}{}{}{}",
                    i + 1,
                    s.applied_upto,
                    s.leader.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    s.ballot_max,
                    match &self.operator {
                        Some(_) => format!(
                            " epoch {}/{}{}",
                            s.epoch,
                            s.latest_epoch,
                            if s.quorum_connected { "" } else { " not-quorum-connected" }
                        ),
                        None => String::new(),
                    },
                    if s.is_leader { " LEADING" } else { "" },
                    if self.nodes[i].paused.is_some() { " paused" } else { "" },
                    match s.recovery {
                        Some(r) => format!(
                            " RECOVERING ({}/{} reported, horizon {})",
                            r.reported,
                            r.needed,
                            r.horizon.map_or("-".to_string(), |h| h.to_string())
                        ),
                        None => String::new(),
                    }
                ),
            })
            .collect();
        let pending = self.clients.describe_pending();
        let when = match self.phase {
            Phase::Setup => format!("setup not finished within {:.1}s", SETUP_BOUND_US as f64 / 1e6),
            phase => format!(
                "{phase:?} not finished {:.1}s after healing",
                (LIVENESS_ELECTION_TIMEOUTS * self.options.election_timeout_ms) as f64 / 1e3
            ),
        };
        format!(
            "{when}: {}{}{}",
            statuses.join(", "),
            self.describe_membership(),
            if pending.is_empty() { String::new() } else { format!("; pending: {pending}") }
        )
    }

    /// Runs the history checks and builds the report.
    pub(crate) fn finish(mut self) -> SimReport {
        let mut unknown = false;
        if !matches!(self.failure, Some(Outcome::Safety(_))) {
            let verdict = self.clients.workload.check(&self.clients.history, self.check_budget);
            unknown = verdict.unknown;
            if let Some(violation) = verdict.violation {
                self.failure = None;
                self.fail(Outcome::Safety(violation));
            }
        }
        SimReport {
            seed: self.seed,
            nodes: self.params.nodes,
            workload: self.params.workload,
            bug: self.bug,
            membership: self.operator.is_some(),
            spares: self.nodes.len() - self.params.nodes,
            outcome: self.failure.take().unwrap_or(Outcome::Ok),
            trace_hash: self.trace.hash(),
            events: self.events,
            simulated_us: self.now_us,
            ops: self.clients.counts,
            linearizability_unknown: unknown,
            faults: self.faults,
            wall_us: 0,
            trace: self.trace.take_lines(),
        }
    }
}

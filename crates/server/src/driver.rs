//! The node's protocol thread: the only owner of the sans-IO [`Node`].
//!
//! It loops because the node is a state machine that only moves when fed: each turn it
//! waits for the next input or the node's deadline, then drains every further input that
//! is already queued (bounded), so that **one fsync covers all of them** (group commit),
//! and only after that sync releases the messages and client replies — the effect
//! contract of `synod_core::effects`. An fsync error stops the process: a node that
//! cannot make its promises durable must not make any.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_core::{
    Change, ChangeError, ClientId, Command, Configuration, Message, Node, NodeId, Output, Persisted, Ready,
    Rejection, ReleaseMode, Released, StateMachine, Status, Time,
};
use synod_storage::Storage;
use tokio::sync::oneshot;

use crate::assembly::Links;
use crate::log_limit::{WarnLimiter, WARN_WINDOW};

/// Inputs drained into one sync at most: bounds the latency a burst adds.
pub const INPUTS_PER_SYNC_MAX: usize = 4096;
/// Readies taken in one turn at most: after a sync the node may have more to do (its own
/// votes count once durable), but a turn must end for new inputs to be read.
const READIES_PER_TURN_MAX: usize = 4;
/// Client calls waiting for their output at most; more are refused with Busy.
pub const WAITERS_MAX: usize = 65_536;

/// Where the node's records become durable (files in production).
pub type Wal<C> = Box<dyn Storage<C> + Send>;

/// What a client call gets back.
pub type CallResult<O> = Result<O, Rejection>;

/// Where a local read's answer goes: the output (`None` for a write) and the node's status.
pub type LocalReply<S> = oneshot::Sender<(Option<<S as StateMachine>::Output>, Status)>;

/// A lease read waiting for its read index: the command and where the answer goes.
type LeaseRead<S> = (<S as StateMachine>::Command, oneshot::Sender<Option<<S as StateMachine>::Output>>);

/// What the protocol thread is fed.
pub enum Input<S: StateMachine> {
    Peer(NodeId, Message<S::Command>),
    Invoke(Command<S::Command>, oneshot::Sender<CallResult<S::Output>>),
    /// Answer a read-only command from this replica's applied state (a stale read).
    ReadLocal(S::Command, LocalReply<S>),
    /// A linearizable read under the leader's lease (C6); `None` back means "no lease
    /// here: order the read through the log".
    ReadLease(S::Command, oneshot::Sender<Option<S::Output>>),
    /// Propose a membership change (`Node::reconfigure`); the reply says whether it was
    /// proposed, and the epoch it will have once decided (watch `DriverStats::latest`).
    Reconfigure {
        change: Change,
        force: bool,
        reply: oneshot::Sender<Result<u64, ChangeError>>,
    },
    /// Hand the leadership to `to`, or to the most caught-up voter in force (`None`); the
    /// reply names the target.
    TransferLeader {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId, ChangeError>>,
    },
    /// Stop after persisting and releasing what is in hand.
    Shutdown,
}

/// Numbers the protocol thread publishes for status and metrics.
#[derive(Clone, Debug, Default)]
pub struct DriverStats {
    pub status: Option<Status>,
    pub storage: synod_storage::StorageStats,
    pub peer_queue_frames: usize,
    pub turns: u64,
    pub commands_applied: u64,
    pub waiters: usize,
    /// The configuration governing the next undecided slot, and the newest decided (the
    /// same one unless a change is on its way to taking force).
    pub configuration: Option<Configuration>,
    pub latest_configuration: Option<Configuration>,
    /// This node is in no configuration in force: the group removed it.
    pub removed: bool,
}

pub struct Driver<S: StateMachine> {
    node: Node<S>,
    wal: Wal<S::Command>,
    /// The links to the peers, which follow the configuration.
    links: Links,
    /// The epochs (in force, newest) the links were last set for.
    links_epochs: (u64, u64),
    started: Instant,
    waiters: HashMap<(ClientId, u64), oneshot::Sender<CallResult<S::Output>>>,
    stats: Arc<Mutex<DriverStats>>,
    /// Answers a read-only command from the state machine.
    reader: fn(&S, &S::Command) -> Option<S::Output>,
    /// Local reads wait for the turn's sync: the state they see may rest on this node's
    /// own accept votes, which count only once durable.
    reads: Vec<(S::Command, LocalReply<S>)>,
    /// Lease reads waiting for the node to hand their token back (`Released::reads`).
    lease_reads: HashMap<u64, LeaseRead<S>>,
    next_read_token: u64,
    /// Whether the node was recovering at the last turn (to log the change).
    was_recovering: bool,
    /// Messages the node refused so far (to log new refusals, rate-limited per sender).
    refusals_logged: u64,
    refusal_warnings: WarnLimiter<NodeId>,
}

impl<S: StateMachine> Driver<S> {
    pub(crate) fn new(
        node: Node<S>,
        wal: Wal<S::Command>,
        links: Links,
        started: Instant,
        stats: Arc<Mutex<DriverStats>>,
        reader: fn(&S, &S::Command) -> Option<S::Output>,
    ) -> Self {
        let node_recovering = node.is_recovering();
        Driver {
            node,
            wal,
            links,
            links_epochs: (0, 0),
            started,
            waiters: HashMap::new(),
            stats,
            reader,
            reads: Vec::new(),
            lease_reads: HashMap::new(),
            next_read_token: 0,
            was_recovering: node_recovering,
            refusals_logged: 0,
            refusal_warnings: WarnLimiter::new(WARN_WINDOW),
        }
    }

    fn now(&self) -> Time {
        Time(self.started.elapsed().as_micros() as u64)
    }

    /// Runs until `Shutdown` or until every sender is gone.
    pub fn run(mut self, inputs: Receiver<Input<S>>) {
        loop {
            let now = self.now();
            let deadline = self.node.poll_timeout().unwrap_or(now.plus_millis(100));
            // Work left by the last turn's bound on Readies is taken at once.
            let deadline = if self.node.has_ready() { now } else { deadline };
            let wait = Duration::from_micros(deadline.saturating_sub(now));
            let mut stop = false;
            match inputs.recv_timeout(wait) {
                Ok(input) => stop |= self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            for _ in 0..INPUTS_PER_SYNC_MAX {
                match inputs.try_recv() {
                    Ok(input) => stop |= self.handle(input),
                    Err(_) => break,
                }
            }
            let now = self.now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            // One Ready for the whole turn: its commands share one batch and one sync.
            let mut ready = Some(self.node.take_ready());
            let mut readies = 0;
            // A Ready is taken only to be persisted in this turn: one taken and dropped
            // would lose its records, and a later `Persisted::through` would claim them
            // durable (and a one-voter cluster would wait forever for its own votes).
            while let Some(taken) = ready.take() {
                readies += 1;
                // Once synced, our own votes count (`Node::handle_persisted`): with a quorum
                // of one, or a peer's vote already in, that decides a slot at once.
                let Some(lsn) = self.persist_and_release(taken) else { break };
                self.node.handle_persisted(self.now(), Persisted::through(lsn));
                if readies < READIES_PER_TURN_MAX && self.node.has_ready() {
                    ready = Some(self.node.take_ready());
                }
            }
            if stop {
                tracing::info!("protocol thread stopped");
                return;
            }
        }
    }

    /// Feeds one input; true on shutdown.
    fn handle(&mut self, input: Input<S>) -> bool {
        let now = self.now();
        match input {
            Input::Peer(from, message) => self.node.handle_message(now, from, message),
            Input::Invoke(command, reply) => {
                if self.waiters.len() >= WAITERS_MAX {
                    let _ = reply.send(Err(Rejection::Busy));
                    return false;
                }
                // A newer call of the same session replaces an older one; the older caller
                // sees its channel close (an unknown outcome).
                self.waiters.insert((command.client_id, command.seq), reply);
                self.node.invoke(now, command);
            }
            Input::ReadLocal(command, reply) => self.reads.push((command, reply)),
            Input::ReadLease(command, reply) => {
                self.next_read_token += 1;
                if self.node.lease_read(now, self.next_read_token) {
                    self.lease_reads.insert(self.next_read_token, (command, reply));
                } else {
                    let _ = reply.send(None);
                }
            }
            Input::Reconfigure { change, force, reply } => {
                let epoch = self.node.latest_configuration().epoch + 1;
                let result = self.node.reconfigure(now, change, force).map(|()| epoch);
                let _ = reply.send(result);
            }
            Input::TransferLeader { to, reply } => {
                let to = to.or_else(|| self.transfer_target());
                let result = match to {
                    Some(to) => self.node.transfer_leadership(now, to).map(|()| to),
                    None => Err(ChangeError::BadTransferTarget {
                        id: self.node.id(),
                        reason: "no other voter in force answers",
                    }),
                };
                let _ = reply.send(result);
            }
            Input::Shutdown => return true,
        }
        false
    }

    /// The voter in force, other than this node, that lags least as last heard: the best
    /// candidate to take the leadership over at once.
    fn transfer_target(&self) -> Option<NodeId> {
        let me = self.node.id();
        let voters_in_force = |id: NodeId| {
            id != me
                && self.node.configuration().is_voter(id)
                && self.node.latest_configuration().is_voter(id)
        };
        let status = self.node.status_at(self.now());
        status
            .peers
            .iter()
            .filter(|p| voters_in_force(p.id))
            .max_by_key(|p| (p.decided_upto, std::cmp::Reverse(p.heard_us_ago)))
            .map(|p| p.id)
    }

    /// Persists and releases one `Ready`; returns the lsn through which every record is
    /// now durable if it synced (a batch of decisions alone is only written).
    fn persist_and_release(&mut self, mut ready: Ready<S::Command, S::Output>) -> Option<u64> {
        // Phase-2a Accepts leave first: the followers write their votes while we write ours
        // (`Ready::take_accepts` says why this is safe). Every later turn starts after
        // this one's sync, so the decisions their replies enable rest on a synced vote.
        for envelope in ready.take_accepts() {
            self.links.outbound.send(envelope.to, &envelope.message);
        }
        // Decisions alone are written now and synced with the next vote: the cluster keeps
        // them (see `Ready::release_written`), and the commit path saves an fsync.
        let mode = ready.release_mode();
        if !ready.persist.is_empty() {
            if let Err(error) = self.wal.append(&ready.persist) {
                fatal(&format!("write-ahead log append failed: {error}"));
            }
        }
        // (A checkpoint or marker without records is synced by the storage call itself.)
        let synced = mode == ReleaseMode::OnceSynced && !ready.persist.is_empty();
        if synced {
            if let Err(error) = self.wal.sync() {
                // Never retry an fsync and carry on: the kernel may have dropped the pages
                // (the "fsyncgate" lesson). Stop; recovery will tell what survived.
                fatal(&format!("fsync failed: {error}"));
            }
        }
        if let Some(snapshot) = ready.checkpoint.take() {
            // Written before the release: what follows may rest on it (an installed
            // snapshot). The log before it is compacted by the storage.
            let meta = crate::disk::checkpoint_meta(&snapshot);
            match self.wal.checkpoint(&meta, &snapshot.state) {
                Ok(info) => {
                    tracing::debug!(last_slot = info.last_slot, bytes = info.file_bytes, "checkpoint")
                }
                Err(error) => fatal(&format!("checkpoint failed: {error}")),
            }
        }
        if ready.damaged {
            // Before anything of this batch leaves: a restart must recover too.
            if let Err(error) = self.wal.mark_damaged("peers remember another identity for this replica") {
                fatal(&format!("cannot set the damage marker: {error}"));
            }
            tracing::error!(
                "peers remember another data directory for this node: it recovers from them before it votes again"
            );
        }
        if ready.repaired {
            if let Err(error) = self.wal.mark_repaired() {
                fatal(&format!("cannot clear the damage marker: {error}"));
            }
            tracing::warn!("repaired from peers: this replica votes again");
        }
        self.log_refusals();
        let status_epochs = (self.node.configuration().epoch, self.node.latest_configuration().epoch);
        if status_epochs != self.links_epochs {
            // A member joined or left: connect to the configurations' members, and admit
            // their hellos, before the messages of this batch go out.
            self.links_epochs = status_epochs;
            let me = self.node.id();
            self.links.follow(me, self.node.configurations());
            tracing::info!(
                epoch = status_epochs.0,
                latest = status_epochs.1,
                voters = ?self.node.latest_configuration().voters,
                learners = ?self.node.latest_configuration().learners,
                "configuration"
            );
        }
        let recovering = self.node.is_recovering();
        if recovering && !self.was_recovering {
            tracing::warn!("recovering from lost storage: not voting until every other member answers");
        }
        self.was_recovering = recovering;
        let lsn = ready.persist_lsn;
        let Released { messages, outputs, reads } = match mode {
            ReleaseMode::OnceSynced => ready.release(Persisted::through(lsn)),
            ReleaseMode::OnceWritten | ReleaseMode::AtOnce => ready.release_written(Persisted::through(lsn)),
        };
        for envelope in messages {
            self.links.outbound.send(envelope.to, &envelope.message);
        }
        let applied = outputs.len() as u64;
        for output in outputs {
            let (key, result) = match output {
                Output::Applied { client_id, seq, output, .. } => ((client_id, seq), Ok(output)),
                Output::Rejected { client_id, seq, reason } => ((client_id, seq), Err(reason)),
            };
            if let Some(reply) = self.waiters.remove(&key) {
                let _ = reply.send(result);
            }
        }
        // Every Ready taken so far is released: the applied state rests on durable votes.
        for token in reads {
            if let Some((command, reply)) = self.lease_reads.remove(&token) {
                let _ = reply.send((self.reader)(self.node.state_machine(), &command));
            }
        }
        if !self.reads.is_empty() {
            let status = self.node.status();
            for (command, reply) in self.reads.drain(..) {
                let _ = reply.send(((self.reader)(self.node.state_machine(), &command), status.clone()));
            }
        }
        // Callers that gave up (timed out) closed their channel: forget them.
        if self.waiters.len() > WAITERS_MAX / 2 {
            self.waiters.retain(|_, reply| !reply.is_closed());
        }
        let mut stats = self.stats.lock().expect("stats lock");
        stats.status = Some(self.node.status_at(self.now()));
        stats.storage = self.wal.stats();
        stats.peer_queue_frames = self.links.outbound.queue_depth();
        stats.turns += 1;
        stats.commands_applied += applied;
        stats.waiters = self.waiters.len();
        // Configurations change rarely: cloned only when their epochs move.
        let epochs = (self.node.configuration().epoch, self.node.latest_configuration().epoch);
        if stats.configuration.as_ref().map(|c| c.epoch) != Some(epochs.0)
            || stats.latest_configuration.as_ref().map(|c| c.epoch) != Some(epochs.1)
        {
            stats.configuration = Some(self.node.configuration().clone());
            stats.latest_configuration = Some(self.node.latest_configuration().clone());
        }
        // Removed once the removal is decided: the node may never see it in force, since
        // the group stops sending it decisions once it is (a removed member is refused).
        stats.removed = self.node.is_removed() || !self.node.latest_configuration().is_member(self.node.id());
        synced.then_some(lsn)
    }
}

impl<S: StateMachine> Driver<S> {
    /// A peer's message that broke the protocol's rules was refused (`synod_core::Refusal`):
    /// a bug or a hostile sender, worth a warning, but never one line per message.
    fn log_refusals(&mut self) {
        let refusals = self.node.refusals();
        let total = refusals.total();
        if total == self.refusals_logged {
            return;
        }
        let new = total - self.refusals_logged;
        self.refusals_logged = total;
        let Some((reason, from, kind)) = refusals.last else { return };
        if let Some(suppressed) = self.refusal_warnings.admit(&from, Instant::now()) {
            tracing::warn!(
                peer = %from,
                reason = reason.name(),
                message = kind,
                new,
                suppressed,
                "refused a message that breaks the protocol's rules (a bug or a hostile sender; \
                 synod_peer_messages_refused_total counts them all)"
            );
        }
    }
}

fn fatal(message: &str) -> ! {
    tracing::error!("{message}; stopping this node");
    eprintln!("synod: {message}; stopping this node");
    std::process::exit(70);
}

//! Driving one node: inputs in, `Ready` out, persisted before released.
//!
//! The driver follows the core's contract to the letter (see `synod_core::effects`):
//! after **every** input it takes the node's `Ready`, writes the records to the node's
//! disk, and releases the messages and outputs only once the disk says those records
//! are synced. Readies are released in order, so a message never overtakes the records of
//! an earlier input either. A `Ready`'s checkpoint is durable with its records, at the
//! same fsync. The one exception is the core's: phase-2a Accepts leave at once
//! (`Ready::take_accepts`). The planted `skip-fsync-before-ack` bug breaks exactly this.

use rand::Rng;
use synod_core::{
    wire, Command, Envelope, Message, Node, NodeId, Output, Persisted, Record, Refusal, ReleaseMode,
    Released, Status,
};

use crate::clients::ClientAction;
use crate::disk::Marker;
use crate::trace::{describe_message, kind};
use crate::workload::{Cmd, Out, Workload};
use crate::world::{CrashTrap, Ev, Phase, Release, World};
use crate::{Bug, Outcome};

impl<W: Workload> World<W> {
    pub(crate) fn deliver(&mut self, to: usize, from: usize, frame: Vec<u8>) {
        let message = match wire::decode::<Message<Cmd<W>>>(self.cluster_id, &frame) {
            Ok(message) => message,
            Err(error) => {
                self.faults.frames_refused += 1;
                self.trace_line(|| format!("n{} <- n{} refused frame: {error}", to + 1, from + 1));
                return;
            }
        };
        self.trace_line(|| format!("n{} <- n{} {}", to + 1, from + 1, describe_message(&message)));
        let local = self.local_now(to);
        let node = self.nodes[to].node.as_mut().expect("only live nodes get messages");
        node.handle_message(local, NodeId(from as u32 + 1), message);
        self.after_input(to);
    }

    pub(crate) fn invoke(&mut self, i: usize, command: Command<Cmd<W>>) {
        if self.trace.enabled() {
            let op = self.clients.workload.describe_op(&command.op);
            self.trace_line(|| {
                format!("n{} invoke client {} seq {} {op}", i + 1, command.client_id, command.seq)
            });
        }
        let local = self.local_now(i);
        let node = self.nodes[i].node.as_mut().expect("only live nodes get requests");
        // A read at a leader that holds its lease skips the log (C6), by the core's one
        // lease-read path (`Node::lease_read`); the checkers judge these reads like all
        // others. Asked in this order: the lease check is cheap, evaluating the read is not.
        let index = node.lease_read_index(local);
        if let Some(index) = index.filter(|_| W::read_local(node.state_machine(), &command.op).is_some()) {
            self.trace_line(|| format!("n{} lease read, index {index}", i + 1));
            let slot = &mut self.nodes[i];
            slot.read_tokens += 1;
            let token = slot.read_tokens;
            let leased = slot.node.as_mut().expect("checked above").lease_read(local, token);
            assert!(leased, "the lease held a moment ago");
            slot.lease_reads.insert(token, (index, command));
            self.after_input(i);
            return;
        }
        node.invoke(local, command);
        self.after_input(i);
    }

    /// Hands out what a released `Ready` holds: messages, outputs, and the answers to the
    /// lease reads it reached (from the state machine as it stands now, every earlier
    /// `Ready` released: the applied state rests on durable votes only).
    fn hand_out(&mut self, i: usize, released: Released<Cmd<W>, Out<W>>) {
        let Released { messages, mut outputs, reads } = released;
        let slot = &mut self.nodes[i];
        if let Some(node) = slot.node.as_ref() {
            for token in reads {
                let Some((index, command)) = slot.lease_reads.remove(&token) else { continue };
                let output = W::read_local(node.state_machine(), &command.op).expect("read-only");
                outputs.push(Output::Applied {
                    client_id: command.client_id,
                    seq: command.seq,
                    slot: index,
                    output,
                });
            }
        }
        self.dispatch(i, messages, outputs);
    }

    /// Takes the node's `Ready` after an input: records (and checkpoint) to disk, then
    /// (once synced) messages and outputs out.
    pub(crate) fn after_input(&mut self, i: usize) {
        let now = self.now_us;
        let slot = &mut self.nodes[i];
        let node = slot.node.as_mut().expect("inputs go to live nodes");
        let mut ready = node.take_ready();
        let status = node.status();
        let became_leader = status.is_leader && !slot.was_leader;
        slot.was_leader = status.is_leader;
        // No simulated peer lies, so a refused message is a bug of ours. But a message from
        // a node removed from the group, or an outsider, is no lie: it may not know yet. Nor
        // is a voter's ballot refused by a node that lags behind the voter's promotion.
        let tolerated = |world: &Self, (reason, from, _): &(Refusal, NodeId, &str)| {
            *reason == Refusal::NotMember || (*reason == Refusal::ForeignBallot && world.was_voter(*from))
        };
        if let Some((reason, from, kind)) = status.refusals.last.filter(|last| !tolerated(self, last)) {
            let reason = reason.name();
            self.fail(Outcome::Safety(format!("n{} refused a {kind} from {from}: {reason}", i + 1)));
        }
        let slot = &mut self.nodes[i];
        let installed = status.snapshots_installed - slot.snapshots_seen;
        slot.snapshots_seen = status.snapshots_installed;
        self.faults.snapshots_installed += installed;
        if installed > 0 {
            self.trace_line(|| {
                format!("n{} installed a snapshot from a peer: applied {}", i + 1, status.applied_upto)
            });
        }
        if became_leader {
            self.elections.push((now, i));
            self.trace_line(|| format!("n{} becomes the active leader", i + 1));
        }
        // A node that knows it was removed is in no configuration from its decided prefix
        // on: no correct leader asks it to vote there (`synod_core::membership`).
        let removed = self.nodes[i].node.as_ref().is_some_and(Node::is_removed);
        for record in &ready.persist {
            match record {
                Record::Decided { slot, value } => {
                    if let Err(violation) = self.safety.on_decided(i, *slot, value, now) {
                        self.fail(Outcome::Safety(violation));
                    }
                }
                Record::Accepted { pvalue } if removed && pvalue.slot >= status.decided_upto => {
                    let slot = pvalue.slot;
                    self.fail(Outcome::Safety(format!(
                        "n{} voted in slot {slot} although it was removed from the group (decided up to {})",
                        i + 1,
                        status.decided_upto
                    )));
                }
                _ => {}
            }
        }
        // The release rule is the core's (`Ready::release_mode`), as in the server. Phase-2a
        // Accepts leave at once, before this batch is written (`Ready::take_accepts`).
        let mode = ready.release_mode();
        let accepts = ready.take_accepts();
        if !accepts.is_empty() {
            self.dispatch(i, accepts, Vec::new());
        }
        // The records stay in the `Ready` until it is written: `holds_votes` reads them.
        let votes = ready.holds_votes();
        let checkpoint = ready.checkpoint.take();
        let marker = Marker::of(ready.damaged, ready.repaired);
        // Every `Ready` is released in input order (the waiting queue is FIFO); one with
        // votes, a checkpoint or a marker also waits for its own fsync, decisions alone are
        // written and released without waiting (the next fsync covers them).
        let release = if mode == ReleaseMode::AtOnce {
            Release { synced_ticket: None }
        } else {
            let records = std::mem::take(&mut ready.persist);
            let count = records.len();
            let what = format!(
                "{}{}",
                checkpoint
                    .as_ref()
                    .map_or(String::new(), |c| format!(" + checkpoint through slot {}", c.last_slot)),
                match marker {
                    Marker::Keep => "",
                    Marker::Set => " + damaged",
                    Marker::Clear => " + repaired",
                }
            );
            let slot = &mut self.nodes[i];
            let ticket = slot.disk.write(records, ready.persist_lsn, checkpoint, marker);
            let incarnation = slot.incarnation;
            if mode == ReleaseMode::OnceWritten {
                self.trace_line(|| {
                    format!(
                        "n{} writes {count} decisions through lsn {}, synced with the next fsync",
                        i + 1,
                        ready.persist_lsn
                    )
                });
                Release { synced_ticket: None }
            } else {
                let latency = self.rng_disk.gen_range(self.params.fsync_min_us..=self.params.fsync_max_us);
                let done_at = self.nodes[i].disk.fsync(now, latency);
                self.push(done_at, Ev::Fsync { node: i, incarnation, ticket });
                self.trace_line(|| {
                    format!(
                        "n{} writes {count} records through lsn {}{what}, synced at {:.3}ms",
                        i + 1,
                        ready.persist_lsn,
                        done_at as f64 / 1e3
                    )
                });
                if votes {
                    if let Some(CrashTrap { down_us, late }) = self.nodes[i].crash_trap.take() {
                        // Inside the fsync window (the vote dies with the process, unsent),
                        // or right after the fsync returned and the vote left: then only a
                        // disk fault can take it back, and recovery must make up for it.
                        // Inside the window, at once or at its last instant: by then the
                        // Accepts that left early may have brought votes back, and whatever
                        // this node did with them must not outlive its own lost vote.
                        let after_release = self.rng_storage.gen_bool(self.params.crash_after_release);
                        let at = match (after_release, late) {
                            (true, _) => done_at,
                            (false, true) => done_at.saturating_sub(1).max(now),
                            (false, false) => now,
                        };
                        self.push(at, Ev::CrashNow { node: i, incarnation, down_us });
                    }
                }
                Release { synced_ticket: Some(ticket) }
            }
        };
        if self.bug == Some(Bug::SkipFsyncBeforeAck) {
            // The planted bug: acknowledge before the write is synced.
            self.hand_out(i, ready.release_unpersisted());
        } else {
            self.nodes[i].waiting.push_back((release, ready));
            self.release_synced(i);
        }
    }

    /// Releases, in order, every waiting `Ready` whose batch is synced, or that needs no
    /// fsync of its own (decisions only, or nothing to write); then tells the node what
    /// is durable, as the server does after each sync (its own votes count from then on).
    pub(crate) fn release_synced(&mut self, i: usize) {
        self.release_waiting(i);
        let slot = &mut self.nodes[i];
        let synced = slot.disk.synced_lsn();
        if slot.node.is_none() || slot.paused.is_some() || synced <= slot.persisted_told {
            return;
        }
        slot.persisted_told = synced;
        let local = self.local_now(i);
        let node = self.nodes[i].node.as_mut().expect("checked above");
        node.handle_persisted(local, Persisted::through(synced));
        self.after_input(i);
    }

    fn release_waiting(&mut self, i: usize) {
        loop {
            let slot = &mut self.nodes[i];
            match slot.waiting.front() {
                Some((Release { synced_ticket: Some(ticket) }, _)) if *ticket > slot.disk.synced_ticket() => {
                    return
                }
                Some(_) => {}
                None => return,
            }
            let (release, ready) = slot.waiting.pop_front().expect("peeked");
            let released = match release.synced_ticket {
                Some(_) => ready.release(Persisted::through(slot.disk.synced_lsn())),
                // Everything before it was released, so every earlier vote is synced; what
                // this one adds (if anything) is decisions, written.
                None => {
                    let written = ready.persist_lsn;
                    ready.release_written(Persisted::through(written))
                }
            };
            self.hand_out(i, released);
        }
    }

    pub(crate) fn dispatch(
        &mut self,
        i: usize,
        messages: Vec<Envelope<Cmd<W>>>,
        outputs: Vec<Output<Out<W>>>,
    ) {
        let mut copies = Vec::new();
        for Envelope { to, message } in messages {
            let to = to.0 as usize - 1;
            let frame = wire::encode(self.cluster_id, &message);
            copies.clear();
            let fate = self.net.transmit(&mut self.rng_net, i, to, frame, &mut self.faults, &mut copies);
            if self.trace.enabled() {
                let fate = match fate {
                    Err(drop) => format!(" DROPPED ({drop:?})"),
                    Ok(()) => copies
                        .iter()
                        .map(|c| {
                            format!(
                                " +{:.3}ms{}",
                                c.delay_us as f64 / 1e3,
                                if c.corrupted { " CORRUPTED" } else { "" }
                            )
                        })
                        .collect(),
                };
                let kind = message.kind();
                self.trace_line(|| format!("n{} -> n{} {kind}{fate}", i + 1, to + 1));
            }
            for copy in copies.drain(..) {
                self.push(self.now_us + copy.delay_us, Ev::Deliver { from: i, to, frame: copy.frame });
            }
        }
        let answered = !outputs.is_empty();
        for output in outputs {
            self.trace.event(self.now_us, kind::OUTPUT, i, &[]);
            if self.trace.enabled() {
                let text = match &output {
                    Output::Applied { client_id, seq, slot, output } => format!(
                        "client {client_id} seq {seq} applied in slot {slot}: {}",
                        self.clients.workload.describe_output(output)
                    ),
                    Output::Rejected { client_id, seq, reason } => {
                        format!("client {client_id} seq {seq} rejected: {reason:?}")
                    }
                };
                self.trace_line(|| format!("n{} output {text}", i + 1));
            }
            let mode = self.mode();
            let actions = self.clients.on_output(output, self.now_us, mode, &mut self.rng_clients);
            self.apply(actions);
        }
        if answered && self.phase == Phase::Setup && self.clients.script_done() {
            self.begin_faults();
        }
    }

    pub(crate) fn apply(&mut self, actions: Vec<ClientAction<Cmd<W>>>) {
        for action in actions {
            match action {
                ClientAction::Send { node, command } => {
                    let node = self.route(node);
                    let latency = self.rng_clients.gen_range(0..=self.params.client_latency_max_us);
                    self.trace_line(|| {
                        format!("client {} seq {} -> n{}", command.client_id, command.seq, node + 1)
                    });
                    self.push(self.now_us + latency, Ev::Request { node, command });
                }
                ClientAction::Wake { client, token, at_us } => {
                    self.push(at_us, Ev::ClientWake { client, token })
                }
            }
        }
    }

    /// Makes sure a timer event is queued for the node's next deadline.
    pub(crate) fn arm_timer(&mut self, i: usize) {
        let slot = &self.nodes[i];
        let Some(node) = &slot.node else { return };
        if slot.paused.is_some() {
            return;
        }
        let Some(deadline) = node.poll_timeout() else { return };
        let at_us = slot.clock.global(deadline).max(self.now_us);
        if !matches!(slot.timer_at_us, Some(armed) if armed <= at_us) {
            let incarnation = slot.incarnation;
            self.nodes[i].timer_at_us = Some(at_us);
            self.push(at_us, Ev::Timer { node: i, incarnation });
        }
    }

    /// Starts (or restarts) node `i` from its disk's durable state. A damaged disk (the
    /// marker is set) boots into recovery from the peers: the node may not vote until it
    /// has repaired (`synod_core::recovery`).
    pub(crate) fn boot(&mut self, i: usize) {
        // A disk that holds nothing and has no identity yet is a new replica, whether the
        // cluster is being founded (every disk at the start) or the disk was replaced: it
        // gets an identity and the damage marker, and recovers from its peers (the server's
        // `disk::open` without `--bootstrap`).
        let rng = &mut self.rng_storage;
        let (dir_id, new_replica) = self.nodes[i].disk.identify(|| rng.gen());
        if new_replica {
            self.trace_line(|| {
                format!("n{} boots on an empty disk: a new replica, identity {dir_id:x}", i + 1)
            });
        }
        // A disk that holds nothing starts from the configuration in force as the operator
        // knows it (as a server is started with the current member list); a disk with a
        // log replays it on top of the configuration it first started from.
        if new_replica {
            if let Some(operator) = &self.operator {
                self.nodes[i].boot_configuration = Some(operator.in_force.clone());
            }
        }
        let configuration =
            self.nodes[i].boot_configuration.clone().unwrap_or_else(|| self.configuration.clone());
        let (durable, damaged) = self.nodes[i].disk.recover();
        let local = self.local_now(i);
        let state_machine = self.clients.workload.state_machine();
        let seed = self.node_seed(i);
        let mut node = Node::new(
            NodeId(i as u32 + 1),
            configuration,
            self.options.clone(),
            state_machine,
            durable,
            seed,
            local,
        );
        node.plant_bugs(self.bugs());
        node.check_invariants_always();
        node.set_dir_id(dir_id);
        if damaged {
            // The founding boots of a fresh cluster recover too, but count as no fault.
            self.faults.damaged_boots += u64::from(self.now_us > 0);
            if self.bug == Some(Bug::VoteWhileRecovering) {
                // The planted bug: the driver ignores the damage and clears the marker.
                self.nodes[i].disk.ignore_damage();
                self.trace_line(|| format!("n{} boots damaged and votes at once (planted bug)", i + 1));
            } else {
                self.trace_line(|| format!("n{} boots damaged: recovers from its peers", i + 1));
                node.recover_from_peers();
            }
        }
        let slot = &mut self.nodes[i];
        slot.node = Some(node);
        slot.timer_at_us = None;
        slot.snapshots_seen = 0;
        slot.persisted_told = 0;
        self.after_input(i);
        self.arm_timer(i);
    }

    pub(crate) fn status(&self, i: usize) -> Option<Status> {
        self.nodes[i].node.as_ref().map(Node::status)
    }

    /// The live, running node that leads with the highest ballot, if any.
    pub(crate) fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].paused.is_none())
            .filter_map(|i| self.status(i).filter(|s| s.is_leader).map(|s| (s.ballot_max, i)))
            .max()
            .map(|(_, i)| i)
    }
}

//! A Synod server's protocol state: every role of the paper in one sans-IO object.

use crate::effects::{DurableState, Ready};
use crate::message::Message;
use crate::options::{Options, PlantedBugs};
use crate::state_machine::StateMachine;
use crate::types::{Ballot, Command, Configuration, NodeId, Slot, Time};

/// A snapshot of a node's view, for status pages and the simulator's checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    /// The highest ballot this node has seen.
    pub ballot_max: Ballot,
    /// The leader this node follows, if any.
    pub leader: Option<Ballot>,
    /// This node is the active leader (phase 1 done for its ballot).
    pub is_leader: bool,
    /// The node heard from a majority in its last heartbeat round.
    pub quorum_connected: bool,
    /// Every slot below this is decided at this node.
    pub decided_upto: Slot,
    /// Every slot below this is applied to the state machine.
    pub applied_upto: Slot,
    /// Client commands waiting at this node.
    pub requests_pending: usize,
}

/// One server: acceptor, replica, leader (with scout and commanders), requester and
/// failure detector.
pub struct Node<S: StateMachine> {
    _s: std::marker::PhantomData<S>,
}

impl<S: StateMachine> Node<S> {
    /// Starts a node from what its storage recovered (`DurableState::default()` for a
    /// new node). The state machine is rebuilt by applying the decided prefix of the log.
    pub fn new(
        id: NodeId,
        configuration: Configuration,
        options: Options,
        state_machine: S,
        durable: DurableState<S::Command>,
        seed: u64,
        now: Time,
    ) -> Self {
        let _ = (id, configuration, options, state_machine, durable, seed, now);
        todo!()
    }

    /// Simulator only: plants known bugs to prove the checkers catch them.
    #[doc(hidden)]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        let _ = bugs;
        todo!()
    }

    pub fn id(&self) -> NodeId {
        todo!()
    }

    /// A client attached to this node submits `command`. Its output arrives later as an
    /// [`crate::Output`] in a `Ready` of this node.
    pub fn invoke(&mut self, now: Time, command: Command<S::Command>) {
        let _ = (now, command);
        todo!()
    }

    /// A message arrived from `from`.
    pub fn handle_message(&mut self, now: Time, from: NodeId, message: Message<S::Command>) {
        let _ = (now, from, message);
        todo!()
    }

    /// The deadline returned by `poll_timeout` has passed.
    pub fn handle_timeout(&mut self, now: Time) {
        let _ = now;
        todo!()
    }

    /// When the node next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// Takes the effects of the inputs so far. Call after every input.
    pub fn take_ready(&mut self) -> Ready<S::Command, S::Output> {
        todo!()
    }

    pub fn status(&self) -> Status {
        todo!()
    }

    pub fn state_machine(&self) -> &S {
        todo!()
    }
}

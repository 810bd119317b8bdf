//! # synod-core: a sans-IO Multi-Paxos replicated state machine
//!
//! The roles of "Paxos Made Moderately Complex" (van Renesse & Altinbuken, ACM Computing
//! Surveys 2015) — [`acceptor`], [`replica`], [`leader`] with its [`scout`] and
//! [`commander`] — plus the [`requester`] that tracks client calls and the ballot
//! leader [`election`] of Omni-Paxos (EuroSys'23), combined in one [`Node`].
//!
//! **The core does no I/O.** No sockets, files, clocks, threads or global randomness:
//! every input carries `now`, randomness comes from a seed, and every output is an
//! explicit effect in a [`Ready`] (persist these records, *then* send these messages and
//! deliver these outputs). The same code runs in the deterministic simulator and in the
//! server.
//!
//! Inputs are `handle_*` and `invoke`; outputs are taken with [`Node::take_ready`] after
//! every input, and [`Node::poll_timeout`] says when to call [`Node::handle_timeout`].

#![forbid(unsafe_code)]

pub mod acceptor;
pub mod apps;
pub mod commander;
pub mod effects;
pub mod election;
pub mod leader;
pub mod membership;
pub mod message;
pub mod node;
pub mod options;
pub mod recovery;
pub mod replica;
pub mod requester;
pub mod scout;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wire;

pub use effects::{
    DurableState, Envelope, LogEntry, Output, Persisted, Ready, Record, Rejection, ReleaseMode, Released,
};
pub use membership::{Membership, ALPHA};
pub use message::{Heartbeat, Message};
pub use node::{Change, ChangeError, Node, PeerView, Refusal, Refusals, Status};
pub use options::{Options, OptionsError, PlantedBugs};
pub use recovery::RecoveryView;
pub use snapshot::Snapshot;
pub use state_machine::{Payload, SnapshotError, StateMachine};
pub use types::{
    Ballot, ClientId, Command, Configuration, NodeId, PValue, Slot, Time, Value, EPHEMERAL_CLIENT_BIT,
    SLOT_MAX, VOTERS_MAX,
};

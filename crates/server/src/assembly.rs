//! Putting a node together: the one assembly the server and an embedding [`Member`] share
//! (the same `Node`, the same driver thread, the same transport), so that what the tests of
//! one prove holds for the other.
//!
//! [`Member`]: crate::member::Member

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rand::Rng;
use synod_core::{Configuration, Node, NodeId, Options, PlantedBugs, StateMachine};
use tokio::net::TcpListener;

use crate::disk::Opened;
use crate::driver::{Driver, DriverStats, Input};
use crate::transport::{self, TransportStats};

/// Inputs queued for the protocol thread at most; peers' frames beyond are dropped and
/// clients get 503 busy (backpressure instead of unbounded memory).
pub const INPUT_QUEUE_MAX: usize = 65_536;

/// Everything a node is made of, before it runs.
pub(crate) struct Parts<S: StateMachine> {
    pub node_id: u32,
    /// (id, peer address, HTTP address if any) of every member of the first
    /// configuration, this node included.
    pub members: Vec<(u32, String, Option<String>)>,
    /// How the first configuration differs from "every member votes, epoch 1": a node that
    /// joined a running cluster starts from the configuration that admitted it (`Joined`).
    pub joined: Option<crate::config::Joined>,
    /// The wire cluster id (`synod_core::wire::cluster_id`).
    pub cluster_id: u64,
    pub options: Options,
    pub state_machine: S,
    /// The data directory, opened and recovered (`disk::open`).
    pub opened: Opened<S::Command>,
    /// Answers a read-only command from the state machine (`None`: not a read).
    pub reader: fn(&S, &S::Command) -> Option<S::Output>,
    /// Test builds only (the `planted-bugs` feature): a deliberately unsafe node.
    pub bugs: PlantedBugs,
    /// The protocol thread's name.
    pub thread_name: String,
}

/// A running node: its input queue, its published numbers, its protocol thread.
pub(crate) struct Running<S: StateMachine> {
    pub inputs: mpsc::SyncSender<Input<S>>,
    pub stats: Arc<Mutex<DriverStats>>,
    pub transport: Arc<TransportStats>,
    pub protocol: JoinHandle<()>,
    pub started: Instant,
}

/// Starts the node of `parts`: its protocol thread, its outbound links, and the inbound
/// peer listener on `peer_listener` (spawned on the current tokio runtime).
pub(crate) fn start<S>(parts: Parts<S>, peer_listener: TcpListener) -> Result<Running<S>, String>
where
    S: StateMachine + Send + 'static,
    S::Command: Send,
    S::Output: Send,
{
    let id = NodeId(parts.node_id);
    let members: Vec<NodeId> = parts.members.iter().map(|m| NodeId(m.0)).collect();
    let addresses = parts
        .members
        .iter()
        .map(|(id, peer, http)| (NodeId(*id), member_address(peer, http.as_deref())))
        .collect();
    let configuration = match &parts.joined {
        None => Configuration::new(members.clone()).with_addresses(addresses),
        Some(joined) => {
            let learners: Vec<NodeId> = joined.learners.iter().copied().map(NodeId).collect();
            let voters = members.iter().copied().filter(|m| !learners.contains(m)).collect();
            let mut configuration = Configuration::new(voters).with_addresses(addresses);
            configuration.epoch = joined.epoch;
            configuration.learners = learners;
            configuration.learners.sort();
            configuration
        }
    };
    let started = Instant::now();
    let opened = parts.opened;
    let mut node = Node::new(
        id,
        configuration.clone(),
        parts.options,
        parts.state_machine,
        opened.durable,
        rand::thread_rng().gen(),
        synod_core::Time(0),
    );
    if node.is_removed() {
        // Its own log says the group removed it: voting as a member of an old
        // configuration could count a vote the group no longer expects.
        return Err(format!(
            "node {id} was removed from the cluster (configuration {} has voters {:?} and learners {:?}): \
             it cannot start as a member; to rejoin, start it on an empty data directory with --join",
            node.latest_configuration().epoch,
            node.latest_configuration().voters,
            node.latest_configuration().learners,
        ));
    }
    node.set_dir_id(opened.dir_id);
    if opened.recover_from_peers {
        node.recover_from_peers();
    }
    if parts.bugs != PlantedBugs::default() {
        tracing::warn!(bugs = ?parts.bugs, "PLANTED BUG: this node is deliberately unsafe (a test build)");
        node.plant_bugs(parts.bugs);
    }
    let transport = Arc::new(TransportStats::default());
    let peers: BTreeMap<NodeId, String> = parts.members.iter().map(|m| (NodeId(m.0), m.1.clone())).collect();
    let outbound = transport::start_outbound(id, parts.cluster_id, &peers, transport.clone());
    let stats = Arc::new(Mutex::new(DriverStats::default()));
    let (inputs, receiver) = mpsc::sync_channel::<Input<S>>(INPUT_QUEUE_MAX);
    let policy = transport::InboundPolicy::new(id, parts.cluster_id, members);
    let links = Links { outbound, inbound_members: policy.members.clone(), configured: peers };
    let driver = Driver::new(node, Box::new(opened.storage), links, started, stats.clone(), parts.reader);
    let protocol = std::thread::Builder::new()
        .name(parts.thread_name)
        .spawn(move || driver.run(receiver))
        .map_err(|e| format!("cannot start the protocol thread: {e}"))?;
    let deliver_to = inputs.clone();
    tokio::spawn(transport::serve_inbound(peer_listener, policy, transport.clone(), move |from, message| {
        // A full queue drops the frame: links are fair-loss, the protocol retransmits.
        let _ = deliver_to.try_send(Input::Peer(from, message));
    }));
    Ok(Running { inputs, stats, transport, protocol, started })
}

/// A member's address as a configuration carries it (opaque to the core): `peer`, or
/// `peer/http` when the member serves HTTP.
pub(crate) fn member_address(peer: &str, http: Option<&str>) -> String {
    match http {
        Some(http) => format!("{peer}/{http}"),
        None => peer.to_string(),
    }
}

/// The peer address within a configuration's address of a member (see `member_address`).
pub(crate) fn peer_address(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

/// The protocol thread's links to its peers, which follow the configuration.
pub(crate) struct Links {
    pub outbound: transport::Outbound,
    /// Who may say hello on the peer port (shared with the inbound listener).
    pub inbound_members: Arc<std::sync::RwLock<Vec<NodeId>>>,
    /// The peer addresses the node was started with: a member whose configuration holds no
    /// address (a checkpoint from before addresses were replicated) is reached there.
    pub configured: BTreeMap<NodeId, String>,
}

impl Links {
    /// The configurations in force changed: connect to their members, drop the others.
    pub fn follow<'a>(&mut self, me: NodeId, configurations: impl Iterator<Item = &'a Configuration>) {
        let mut peers = BTreeMap::new();
        for configuration in configurations {
            for member in configuration.members() {
                let address = configuration
                    .addresses
                    .get(&member)
                    .map(|a| peer_address(a).to_string())
                    .or_else(|| self.configured.get(&member).cloned());
                if let Some(address) = address {
                    peers.insert(member, address);
                }
            }
        }
        let mut members: Vec<NodeId> = peers.keys().copied().collect();
        members.retain(|m| *m != me);
        *self.inbound_members.write().expect("members lock") = members;
        self.outbound.set_peers(&peers);
    }
}

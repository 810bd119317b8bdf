//! Assembles a node: binds its sockets, starts the protocol thread, the peer transport
//! and the HTTP API, and stops them all cleanly when `shutdown` resolves.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use synod_core::apps::App;
use synod_core::{Configuration, DurableState, Node, NodeId, StateMachine};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::disk;
use crate::driver::{Driver, DriverStats, Input, Wal};
use crate::http::{self, NodeInfo, Shared};
use crate::http_serve::{self, HttpLimits, HttpStats};
use crate::limits;
use crate::metrics::Metrics;
use crate::transport::{self, TransportStats};

/// Inputs queued for the protocol thread at most; peers' frames beyond are dropped and
/// clients get 503 busy (backpressure instead of unbounded memory).
pub const INPUT_QUEUE_MAX: usize = 65_536;

/// What a node recovered from its disk.
pub struct Recovered {
    pub durable: DurableState<<App as StateMachine>::Command>,
    pub wal: Wal<<App as StateMachine>::Command>,
    /// The storage was damaged, is new (an empty directory) or `--rejoin` was given: the
    /// node recovers from its peers before it votes (see [`crate::disk`]).
    pub recover_from_peers: bool,
    /// The data directory's identity.
    pub dir_id: u64,
}

/// Opens (or creates) the node's storage under `config.data_dir` and recovers it. Damage
/// does not stop the node: it starts in recovery and says so (see [`crate::disk`]).
pub fn open_storage(config: &Config) -> Result<Recovered, String> {
    let open_as = disk::OpenAs {
        node_id: config.node_id,
        cluster_id: config.cluster_id(),
        rejoin: config.rejoin,
        bootstrap: config.bootstrap,
    };
    let opened = disk::open(&config.data_dir, open_as)?;
    Ok(Recovered {
        durable: opened.durable,
        wal: Box::new(opened.storage),
        recover_from_peers: opened.recover_from_peers,
        dir_id: opened.dir_id,
    })
}

/// Runs one node until `shutdown` resolves. Errors are for the operator: they name the
/// address or file at fault.
pub async fn run(
    config: Config,
    recovered: Recovered,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    config.validate()?;
    // Clients get a bounded share of the process's descriptors, the rest is kept for the
    // storage and the peers (see `limits`).
    let open_files = limits::raise_nofile_limit();
    let fd_claim = limits::claim_http_connections(
        config.http.connections_max,
        config.members.len(),
        http_serve::REFUSING_MAX as u64,
        open_files,
    )?;
    if fd_claim.http_connections < config.http.connections_max {
        tracing::warn!(
            configured = config.http.connections_max,
            allowed = fd_claim.http_connections,
            open_files,
            "HTTP connections capped below http.connections_max to fit the open-file limit"
        );
    }
    let http_stats = Arc::new(HttpStats::default());
    http_stats.open_files_limit.store(open_files, std::sync::atomic::Ordering::Relaxed);
    let me = config.me()?.clone();
    let listen_peer = config.listen_peer.clone().unwrap_or(me.peer.clone());
    let listen_http = config.listen_http.clone().unwrap_or(me.http.clone());
    let peer_listener = TcpListener::bind(&listen_peer)
        .await
        .map_err(|e| format!("cannot listen for peers on {listen_peer}: {e}"))?;
    let http_listener = TcpListener::bind(&listen_http)
        .await
        .map_err(|e| format!("cannot listen for clients on {listen_http}: {e}"))?;

    let id = NodeId(config.node_id);
    let members: Vec<NodeId> = config.members.iter().map(|m| NodeId(m.id)).collect();
    let cluster_id = config.cluster_id();
    let started = Instant::now();
    let configuration = Configuration::new(members.clone());
    let mut node = Node::new(
        id,
        configuration.clone(),
        config.options(),
        App::default(),
        recovered.durable,
        rand::thread_rng().gen(),
        synod_core::Time(0),
    );
    node.set_dir_id(recovered.dir_id);
    if recovered.recover_from_peers {
        node.recover_from_peers();
    }
    #[cfg(feature = "planted-bugs")]
    {
        let bugs = config.planted_bugs()?;
        if bugs != synod_core::PlantedBugs::default() {
            tracing::warn!(?bugs, "PLANTED BUG: this node is deliberately unsafe (a test build)");
        }
        node.plant_bugs(bugs);
    }
    let transport_stats = Arc::new(TransportStats::default());
    let peers: BTreeMap<NodeId, String> =
        config.members.iter().map(|m| (NodeId(m.id), m.peer.clone())).collect();
    let outbound = transport::start_outbound(id, cluster_id, &peers, transport_stats.clone());
    let stats = Arc::new(Mutex::new(DriverStats::default()));
    let (inputs, receiver) = mpsc::sync_channel::<Input<App>>(INPUT_QUEUE_MAX);
    let driver = Driver::new(node, recovered.wal, outbound, started, stats.clone(), App::read)
        .with_configuration(&configuration);
    let protocol = std::thread::Builder::new()
        .name(format!("synod-node-{}", config.node_id))
        .spawn(move || driver.run(receiver))
        .map_err(|e| format!("cannot start the protocol thread: {e}"))?;

    let deliver_to = inputs.clone();
    tokio::spawn(transport::serve_inbound(
        peer_listener,
        transport::InboundPolicy::new(id, cluster_id, members),
        transport_stats.clone(),
        move |from, message| {
            // A full queue drops the frame: links are fair-loss, the protocol retransmits.
            let _ = deliver_to.try_send(Input::Peer(from, message));
        },
    ));

    let shared = Arc::new(Shared {
        inputs: inputs.clone(),
        stats,
        transport: transport_stats,
        info: NodeInfo {
            node: config.node_id,
            cluster: config.cluster.clone(),
            members: config
                .members
                .iter()
                .map(|m| (m.id, m.peer.clone(), format!("http://{}", m.http)))
                .collect(),
            heartbeat_ms: config.protocol.heartbeat_ms,
        },
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        started,
        metrics: Metrics::new(),
        http: http_stats.clone(),
    });
    let http_limits = HttpLimits {
        connections_max: fd_claim.http_connections,
        header_timeout: Duration::from_millis(config.http.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
    };
    tracing::info!(
        node = config.node_id,
        %listen_http,
        %listen_peer,
        cluster = %config.cluster,
        http_connections_max = http_limits.connections_max,
        "serving"
    );
    http_serve::serve(http_listener, http::router(shared), http_limits, http_stats, shutdown).await;
    // Stop the protocol thread after it persisted and released what it holds.
    let _ = inputs.send(Input::Shutdown);
    let _ = tokio::task::spawn_blocking(move || protocol.join()).await;
    tracing::info!(node = config.node_id, "stopped");
    drop(fd_claim);
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

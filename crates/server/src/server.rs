//! A server node: binds its sockets, starts the node (`assembly`) and the HTTP API, and
//! stops them all cleanly when `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use synod_core::apps::{App, AppCommand};
use tokio::net::TcpListener;

use crate::assembly;
use crate::config::Config;
use crate::disk::{self, Opened};
use crate::driver::Input;
use crate::http::{self, NodeInfo, Shared};
use crate::http_serve::{self, HttpLimits, HttpStats};
use crate::limits;
use crate::metrics::Metrics;

pub use crate::assembly::INPUT_QUEUE_MAX;

/// Opens (or creates) the node's storage under `config.data_dir` and recovers it. Damage
/// does not stop the node: it starts in recovery and says so (see [`crate::disk`]).
pub fn open_storage(config: &Config) -> Result<Opened<AppCommand>, String> {
    let open_as = disk::OpenAs {
        node_id: config.node_id,
        cluster_id: config.cluster_id(),
        rejoin: config.rejoin,
        bootstrap: config.bootstrap,
    };
    disk::open(&config.data_dir, open_as)
}

/// Runs one node until `shutdown` resolves. Errors are for the operator: they name the
/// address or file at fault.
pub async fn run(
    config: Config,
    recovered: Opened<AppCommand>,
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

    #[cfg(feature = "planted-bugs")]
    let bugs = config.planted_bugs()?;
    #[cfg(not(feature = "planted-bugs"))]
    let bugs = synod_core::PlantedBugs::default();
    let parts = assembly::Parts {
        node_id: config.node_id,
        members: config.members.iter().map(|m| (m.id, m.peer.clone(), Some(m.http.clone()))).collect(),
        joined: config.joined.clone(),
        cluster_id: config.cluster_id(),
        options: config.options(),
        state_machine: App::default(),
        opened: recovered,
        reader: App::read,
        bugs,
        thread_name: format!("synod-node-{}", config.node_id),
    };
    let assembly::Running { inputs, stats, transport: transport_stats, protocol, started } =
        assembly::start(parts, peer_listener)?;

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

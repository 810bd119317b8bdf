//! `synod server` (one node) and `synod dev` (a three-node cluster on loopback).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use synod_server::config::{Config, MemberConfig};
use synod_server::server;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format: human-readable lines or JSON objects.
    #[arg(long, env = "SYNOD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// Starts structured logging; the level comes from `RUST_LOG` (default: info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file (flags and SYNOD_* variables override it).
    #[arg(long, env = "SYNOD_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (one of the members).
    #[arg(long, env = "SYNOD_NODE_ID")]
    node_id: Option<u32>,
    /// The cluster's name; nodes of other clusters are refused.
    #[arg(long, env = "SYNOD_CLUSTER")]
    cluster: Option<String>,
    /// Every member as ID=PEER_HOST:PORT/HTTP_HOST:PORT, comma-separated,
    /// e.g. 1=10.0.0.1:7101/10.0.0.1:7001,2=...
    #[arg(long, env = "SYNOD_MEMBERS", value_delimiter = ',')]
    members: Vec<String>,
    /// Directory for the write-ahead log and checkpoints.
    #[arg(long, env = "SYNOD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bind address for peers (default: this member's peer address).
    #[arg(long, env = "SYNOD_LISTEN_PEER")]
    listen_peer: Option<String>,
    /// Bind address for clients (default: this member's HTTP address).
    #[arg(long, env = "SYNOD_LISTEN_HTTP")]
    listen_http: Option<String>,
    /// This node's storage is not to be trusted (an old backup put back): do not vote until
    /// it has repaired from every other member. Damage that recovery finds, and an empty
    /// directory, imply it.
    #[arg(long, env = "SYNOD_REJOIN")]
    rejoin: bool,
    /// Found a new cluster without every member at hand: an empty data directory votes at
    /// once. Without it, a node on an empty directory votes only once every other member
    /// has answered it (a replaced disk must not vote as if it remembered its promises).
    #[arg(long, env = "SYNOD_BOOTSTRAP")]
    bootstrap: bool,
    /// Join a running cluster: ask one of these members (HTTP host:port, comma-separated)
    /// to admit this node as a learner, then fetch the state from its peers. Needs an
    /// empty data directory the first time; a restart with the same flags starts as the
    /// member it became. Without --node-id, the leader picks the id.
    #[arg(long, env = "SYNOD_JOIN", value_delimiter = ',', conflicts_with_all = ["members", "bootstrap"])]
    join: Vec<String>,
    /// With --join: the peer address the cluster reaches this node at (default: --listen-peer).
    #[arg(long, env = "SYNOD_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// With --join: the HTTP address clients reach this node at (default: --listen-http).
    #[arg(long, env = "SYNOD_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    /// Checkpoint every this many applied slots and compact the log (0: never).
    #[arg(long, env = "SYNOD_CHECKPOINT_EVERY_SLOTS")]
    checkpoint_every_slots: Option<u64>,
    /// Decided slots kept in memory behind the newest checkpoint for lagging peers;
    /// a peer further behind receives a snapshot.
    #[arg(long, env = "SYNOD_CATCHUP_RETAIN_SLOTS")]
    catchup_retain_slots: Option<u64>,
    /// Client connections held at once at most (default 10000; lowered to fit under the
    /// open-file limit). Past it, new connections get 503 too_many_connections.
    #[arg(long, env = "SYNOD_HTTP_CONNECTIONS_MAX")]
    http_connections_max: Option<usize>,
    /// A request's head must arrive within this many milliseconds of the connection's
    /// opening, or of its first byte on a kept-alive connection (default 10000).
    #[arg(long, env = "SYNOD_HTTP_HEADER_TIMEOUT_MS")]
    http_header_timeout_ms: Option<u64>,
    /// A kept-alive connection without a request for this many milliseconds is closed,
    /// and a request unanswered this long is cut (default 60000).
    #[arg(long, env = "SYNOD_HTTP_IDLE_TIMEOUT_MS")]
    http_idle_timeout_ms: Option<u64>,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_member(text: &str) -> Result<MemberConfig, String> {
    let (id, addrs) =
        text.split_once('=').ok_or_else(|| format!("member {text:?}: expected ID=PEER/HTTP"))?;
    let (peer, http) =
        addrs.split_once('/').ok_or_else(|| format!("member {text:?}: expected ID=PEER/HTTP"))?;
    let id = id.trim().parse().map_err(|_| format!("member {text:?}: the id must be a number"))?;
    Ok(MemberConfig { id, peer: peer.trim().to_string(), http: http.trim().to_string() })
}

impl ServerArgs {
    fn config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => {
                let joining = !self.join.is_empty();
                if !joining && (self.members.is_empty() || self.node_id.is_none()) {
                    return Err("give --config FILE, or --node-id and --members (see synod server --help); \
                                for a local cluster run `synod dev`"
                        .into());
                }
                Config::from_toml("node_id = 0\nmembers = []").expect("a minimal configuration parses")
            }
        };
        if let Some(id) = self.node_id {
            config.node_id = id;
        }
        if let Some(cluster) = &self.cluster {
            config.cluster = cluster.clone();
        }
        if !self.members.is_empty() {
            config.members = self.members.iter().map(|m| parse_member(m)).collect::<Result<_, _>>()?;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        config.rejoin |= self.rejoin;
        config.bootstrap |= self.bootstrap;
        if let Some(every) = self.checkpoint_every_slots {
            config.protocol.checkpoint_every_slots = every;
        }
        if let Some(retain) = self.catchup_retain_slots {
            config.protocol.catchup_retain_slots = retain;
        }
        if let Some(max) = self.http_connections_max {
            config.http.connections_max = max;
        }
        if let Some(ms) = self.http_header_timeout_ms {
            config.http.header_timeout_ms = ms;
        }
        if let Some(ms) = self.http_idle_timeout_ms {
            config.http.idle_timeout_ms = ms;
        }
        if self.listen_peer.is_some() {
            config.listen_peer = self.listen_peer.clone();
        }
        if self.listen_http.is_some() {
            config.listen_http = self.listen_http.clone();
        }
        if self.join.is_empty() {
            self.adopt_cluster_name(&mut config)?;
            config.validate()?;
        }
        Ok(config)
    }

    /// A one-node cluster founded with `--bootstrap` and no cluster name gets a fresh one,
    /// kept in the data directory (`CLUSTER`) for its later starts: two such clusters
    /// never take each other's frames (the wire cluster id is the name's hash), and a node
    /// joins one only by its name (`--join` learns it from the member that admits it).
    fn adopt_cluster_name(&self, config: &mut Config) -> Result<(), String> {
        let path = config.data_dir.join("CLUSTER");
        let kept = match std::fs::read_to_string(&path) {
            Ok(name) => Some(name.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let named = self.cluster.is_some() || self.config.is_some();
        match kept {
            Some(kept) if named && kept != config.cluster => Err(format!(
                "data directory {} belongs to cluster {kept:?}, not {:?}",
                config.data_dir.display(),
                config.cluster
            )),
            Some(kept) => {
                config.cluster = kept;
                Ok(())
            }
            None if config.bootstrap && !named && config.members.len() == 1 => {
                config.cluster = format!("synod-{:016x}", rand::random::<u64>());
                std::fs::create_dir_all(&config.data_dir)
                    .and_then(|()| std::fs::write(&path, format!("{}\n", config.cluster)))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                tracing::info!(cluster = %config.cluster, "founded a new one-node cluster");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// `--join`: ask the cluster to admit this node, and start as the member it became.
    async fn join(&self, config: &mut Config) -> Result<(), String> {
        let peer = self.advertise_peer.as_ref().or(self.listen_peer.as_ref());
        let http = self.advertise_http.as_ref().or(self.listen_http.as_ref());
        let (Some(peer), Some(http)) = (peer, http) else {
            return Err("--join needs this node's addresses: --listen-peer and --listen-http \
                        (and --advertise-peer/--advertise-http if others reach it elsewhere)"
                .into());
        };
        let joining = crate::join::Joining {
            members: &self.join,
            node_id: self.node_id,
            cluster: self.cluster.as_deref(),
            peer_addr: peer,
            http_addr: http,
        };
        crate::join::join(config, joining).await?;
        config.validate()
    }
}

pub fn server(args: ServerArgs) -> ExitCode {
    init_logging(args.log.log_format);
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("synod server: {error}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    runtime.block_on(async move {
        if !args.join.is_empty() {
            if let Err(error) = args.join(&mut config).await {
                eprintln!("synod server: {error}");
                return ExitCode::from(1);
            }
        }
        let recovered = match server::open_storage(&config) {
            Ok(recovered) => recovered,
            Err(error) => {
                eprintln!("synod server: {error}");
                return ExitCode::from(1);
            }
        };
        match server::run(config, recovered, server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("synod server: {error}");
                ExitCode::from(1)
            }
        }
    })
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the three nodes keep their data (reused by the next run).
    #[arg(long, default_value = "synod-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    log: LogArgs,
}

/// Three nodes on loopback in this process: real TCP between them, real files, the same
/// code as `synod server`. Runs until Ctrl-C or SIGTERM.
pub fn dev(args: DevArgs) -> ExitCode {
    init_logging(args.log.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    runtime.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut nodes = Vec::new();
        let reused = args.data_dir.join("node-1").exists();
        for id in 1..=3 {
            let config = Config::dev(id, &args.data_dir);
            let recovered = match server::open_storage(&config) {
                Ok(recovered) => recovered,
                Err(error) => {
                    eprintln!("synod dev: node {id}: {error}");
                    return ExitCode::from(1);
                }
            };
            let mut stopped = stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            nodes.push(tokio::spawn(server::run(config, recovered, shutdown)));
        }
        // A node that cannot bind its ports fails at once: report it rather than a banner.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if nodes.iter().any(|n| n.is_finished()) {
            let _ = stop.send(true);
            for (i, node) in nodes.into_iter().enumerate() {
                if let Ok(Err(error)) = node.await {
                    eprintln!("synod dev: node {}: {error}", i + 1);
                }
            }
            eprintln!("synod dev: is another cluster running on ports 7001-7003 / 7101-7103?");
            return ExitCode::from(1);
        }
        println!("Synod dev cluster: 3 nodes, data in {} ({})", args.data_dir.display(),
                 if reused { "reused" } else { "new" });
        println!("  HTTP:  http://127.0.0.1:7001  http://127.0.0.1:7002  http://127.0.0.1:7003");
        println!("  try:   curl -X PUT localhost:7001/v1/kv/greeting -d '{{\"value\":\"hello\"}}' -H 'content-type: application/json'");
        println!("         curl localhost:7002/v1/kv/greeting");
        println!("         synod kv put a 1 && synod kv get a && synod status");
        println!("  stop:  Ctrl-C");
        server::shutdown_signal().await;
        let _ = stop.send(true);
        let mut code = ExitCode::SUCCESS;
        for (i, node) in nodes.into_iter().enumerate() {
            match node.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    eprintln!("synod dev: node {}: {error}", i + 1);
                    code = ExitCode::from(1);
                }
                Err(error) => {
                    eprintln!("synod dev: node {}: {error}", i + 1);
                    code = ExitCode::from(1);
                }
            }
        }
        code
    })
}

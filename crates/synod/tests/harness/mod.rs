//! The harness of the process-level tests: HTTP/1.1 by hand, and a cluster of real
//! `synod server` processes on loopback that cleans up after itself.
//!
//! Plain HTTP from the test, not the client library, so that every header and status the
//! API sends is visible and a request can be replayed byte for byte (same session
//! headers). Each cluster has its own temporary data directories and ports the kernel
//! handed out (tests run in parallel); dropping it SIGKILLs every child, and a failing
//! test prints the tail of every node's log and keeps the directory.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

/// The `synod` the servers run: `SYNOD_TEST_BIN` if set (a release build, for
/// measurements), else the one cargo built for these tests.
pub fn synod_bin() -> String {
    std::env::var("SYNOD_TEST_BIN").unwrap_or_else(|_| SYNOD.to_string())
}
/// The servers' default election timeout; the deadlines below are multiples of it.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);
/// The servers' default `request_timeout_ms`: a call not applied by then answers 503.
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One HTTP exchange from the test at most (above the server's own request timeout).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a fresh cluster may take to elect a leader. Generous: two shared cores, and
/// other test binaries may be compiling or running beside us.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// HTTP/1.1, by hand.

pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {:?}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The stable error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .into()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body)
    }
}

/// One request on a fresh connection (`Connection: close`), so that nothing is pooled and
/// a killed server shows up as a connection error, not as a stale pooled socket.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or(b"");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP reply: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = synod_nemesis::http::dechunk(&body)?;
    }
    Some(Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

pub fn get(addr: SocketAddr, path: &str) -> io::Result<Reply> {
    http(addr, "GET", path, &[], None, HTTP_TIMEOUT)
}

pub fn put(addr: SocketAddr, key: &str, value: &str) -> io::Result<Reply> {
    let body = json!({ "value": value }).to_string();
    http(addr, "PUT", &format!("/v1/kv/{key}"), &[], Some(body.as_bytes()), HTTP_TIMEOUT)
}

pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &Value) -> io::Result<Reply> {
    http(addr, "POST", path, headers, Some(body.to_string().as_bytes()), HTTP_TIMEOUT)
}

/// A linearizable read of `key` through `addr`: its value, or `None` if absent.
pub fn read(addr: SocketAddr, key: &str) -> Option<String> {
    let reply = get(addr, &format!("/v1/kv/{key}")).expect("the read gets an answer");
    assert_eq!(reply.status, 200, "read of {key} through {addr}: {reply:?}");
    reply.json()["value"].as_str().map(str::to_string)
}

/// The value of one series of `addr`'s `/metrics`, e.g.
/// `synod_peer_frames_refused_total{reason="checksum"}`; `None` if absent or unreachable.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let reply = http(addr, "GET", "/metrics", &[], None, Duration::from_secs(2)).ok()?;
    reply.body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How many lines of the file at `path` contain `needle` (0 if it cannot be read).
pub fn count_lines(path: &Path, needle: &str) -> usize {
    fs::read_to_string(path).unwrap_or_default().lines().filter(|line| line.contains(needle)).count()
}

pub fn balance(addr: SocketAddr, account: u64) -> u64 {
    let reply = get(addr, &format!("/v1/bank/accounts/{account}")).expect("the read gets an answer");
    assert_eq!(reply.status, 200, "balance of {account} through {addr}: {reply:?}");
    reply.json()["balance"].as_u64().expect("a balance")
}

/// Polls `probe` every 20 ms until it gives a value; panics after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// A cluster of real processes.

pub struct Node {
    pub id: u32,
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// The open-file limit (soft and hard) this node's process starts with, if not the
    /// test's own.
    pub nofile: Option<u64>,
    /// A node added to the running cluster starts with `--join` at these HTTP addresses
    /// (and is restarted the same way), not with the static `--members`.
    pub join: Option<String>,
}

/// Three `synod server` processes. Dropping it SIGKILLs them all and removes their data,
/// unless the test failed: then it prints each node's log tail and keeps the directory.
pub struct Cluster {
    pub name: String,
    pub root: PathBuf,
    pub members: String,
    pub nodes: Vec<Node>,
    /// Extra environment for every `synod server` this cluster starts.
    pub env: Vec<(String, String)>,
}

/// Ports the kernel hands out to `bind(0)`: free now, though another process may take one
/// before our server binds it (then `Cluster::start` tries again with fresh ones).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a probe port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a local address").port()).collect()
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// Starts three nodes and waits until they agree on a leader.
    pub fn start(test: &str) -> Cluster {
        Cluster::start_with_env(test, &[])
    }

    /// Starts three nodes with extra environment variables (e.g. `SYNOD_*` settings).
    pub fn start_with_env(test: &str, env: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(test, env, |_| {})
    }

    /// Starts three nodes with extra environment variables, after `configure` has set
    /// what it wants of the nodes (e.g. a node's `nofile`).
    pub fn start_with(test: &str, env: &[(&str, &str)], configure: impl Fn(&mut Cluster)) -> Cluster {
        const ATTEMPTS_MAX: u32 = 3;
        for attempt in 1..=ATTEMPTS_MAX {
            let mut cluster = Cluster::create(test);
            cluster.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            configure(&mut cluster);
            match (0..3).try_for_each(|i| cluster.spawn(i)) {
                Ok(()) => {
                    cluster.wait_for_leader(ELECTION_DEADLINE);
                    return cluster;
                }
                Err(error) if attempt < ATTEMPTS_MAX => {
                    eprintln!("{test}: attempt {attempt} to start the cluster failed ({error}); retrying");
                }
                Err(error) => panic!("{test}: cannot start the cluster: {error}"),
            }
        }
        unreachable!()
    }

    fn create(test: &str) -> Cluster {
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let name = format!("it-{test}-{}-{serial}", std::process::id());
        let root = std::env::temp_dir().join(format!("synod-{name}"));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the test's data directory");
        let ports = free_ports(6);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                id: i as u32 + 1,
                peer: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                http: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                dir: root.join(format!("node-{}", i + 1)),
                log: root.join(format!("node-{}.log", i + 1)),
                child: None,
                nofile: None,
                join: None,
            })
            .collect();
        let members =
            nodes.iter().map(|n| format!("{}={}/{}", n.id, n.peer, n.http)).collect::<Vec<_>>().join(",");
        Cluster { name, root, members, nodes, env: Vec::new() }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].http
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// Starts node `i` (again, on the same data directory and ports) and waits until it
    /// answers `/healthz`. An error means the process exited (e.g. a port was taken).
    pub fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} is already running", node.id);
        let log = OpenOptions::new().create(true).append(true).open(&node.log).expect("open the node's log");
        let mut command = Command::new(synod_bin());
        if let Some(nofile) = node.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
            // SAFETY: between fork and exec, only setrlimit (async-signal-safe) runs.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command.arg("server").args(["--node-id", &node.id.to_string()]).args(["--cluster", &self.name]);
        match &node.join {
            None => command.args(["--members", &self.members]),
            Some(join) => command
                .args(["--join", join])
                .args(["--listen-peer", &node.peer.to_string()])
                .args(["--listen-http", &node.http.to_string()]),
        };
        let child = command
            .arg("--data-dir")
            .arg(&node.dir)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("SYNOD_CONFIG")
            .env_remove("SYNOD_LISTEN_PEER")
            .env_remove("SYNOD_LISTEN_HTTP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn synod server");
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let node = &mut self.nodes[i];
            if let Some(status) = node.child.as_mut().expect("spawned").try_wait().expect("try_wait") {
                node.child = None;
                return Err(format!("node {} exited with {status}: {}", node.id, tail(&node.log, 5)));
            }
            if matches!(http(node.http, "GET", "/healthz", &[], None, Duration::from_secs(1)), Ok(r) if r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("node {} did not answer /healthz within 10 s", node.id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new node with an empty data directory and fresh ports, joining the running
    /// cluster through `via`'s HTTP address; returns its index once it answers `/healthz`
    /// (it was admitted as a learner by then: `--join` waits for the decision).
    pub fn join(&mut self, via: &[usize]) -> usize {
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let join = via.iter().map(|&i| self.nodes[i].http.to_string()).collect::<Vec<_>>().join(",");
        for attempt in 1..=3 {
            let ports = free_ports(2);
            let i = self.nodes.len();
            self.nodes.push(Node {
                id,
                peer: SocketAddr::from(([127, 0, 0, 1], ports[0])),
                http: SocketAddr::from(([127, 0, 0, 1], ports[1])),
                dir: self.root.join(format!("node-{id}")),
                log: self.root.join(format!("node-{id}.log")),
                child: None,
                nofile: None,
                join: Some(join.clone()),
            });
            match self.spawn(i) {
                Ok(()) => return i,
                Err(error) if attempt < 3 => {
                    eprintln!("join of node {id}: attempt {attempt} failed ({error}); retrying");
                    let node = self.nodes.pop().expect("just pushed");
                    let _ = fs::remove_dir_all(&node.dir);
                }
                Err(error) => panic!("node {id} could not join: {error}"),
            }
        }
        unreachable!()
    }

    /// The process id of node `i`, which must be running.
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].child.as_ref().expect("the node is running").id()
    }

    /// Whether node `i`'s process has exited (and with what), without waiting.
    pub fn exited(&mut self, i: usize) -> Option<ExitStatus> {
        self.nodes[i].child.as_mut().expect("the node was started").try_wait().expect("try_wait")
    }

    pub fn restart(&mut self, i: usize) {
        self.spawn(i).unwrap_or_else(|e| panic!("restart node {}: {e}", self.nodes[i].id));
    }

    /// SIGKILL: the process gets no chance to flush or say goodbye.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed node");
    }

    /// SIGTERM, then waits for the exit at most `within`.
    pub fn terminate(&mut self, i: usize, within: Duration) -> Result<ExitStatus, String> {
        let mut child = self.nodes[i].child.take().expect("the node is running");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM: {}", io::Error::last_os_error());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("node {} still running {within:?} after SIGTERM", self.nodes[i].id));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        let reply = http(self.addr(i), "GET", "/v1/status", &[], None, Duration::from_secs(2)).ok()?;
        (reply.status == 200).then(|| reply.json())
    }

    /// Waits until every live node follows the same leader, which is live and active and
    /// hears a majority; returns the leader's index.
    pub fn wait_for_leader(&self, within: Duration) -> usize {
        eventually("the live nodes agree on an active leader", within, || {
            let mut leader = None;
            for i in self.live() {
                let status = self.status(i)?;
                let follows = status["leader"].as_u64()?;
                if leader.is_some_and(|l| l != follows) || status["quorum_connected"] != json!(true) {
                    return None;
                }
                leader = Some(follows);
            }
            let index = self.nodes.iter().position(|n| Some(n.id as u64) == leader)?;
            let leads = self.is_up(index) && self.status(index)?["is_leader"] == json!(true);
            leads.then_some(index)
        })
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("---- node {} log (last 30 lines) ----\n{}", node.id, tail(&node.log, 30));
            }
            eprintln!("---- data and logs kept in {} ----", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

//! The Docker image and the Compose cluster, end to end: `docker/build.sh` builds the static
//! binary and the image `FROM scratch`, `docker compose up` starts the three nodes of
//! `docker-compose.yml` under a project name of this test's own, and the test talks to them
//! the way the README tells people to: HTTP on the published ports, and the `synod` CLI.
//!
//! Without Docker (no `docker` on PATH, no daemon, no Compose) the test prints
//! "skipped: docker unavailable" and passes, unless `SYNOD_REQUIRE_DOCKER=1` says that a
//! skip is a failure (for CI machines that are meant to have Docker).
//!
//! Everything the test starts is torn down by a guard, pass or fail: `compose down -v` (the
//! containers, the network, the volumes) and the test's image tag. Every wait is a poll
//! against a deadline, and every command is killed at its own deadline.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const SYNOD: &str = env!("CARGO_BIN_EXE_synod");
/// The static release build dominates: about five minutes from scratch on two cores,
/// seconds when target/static is warm.
const BUILD_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// Any one docker or compose command (up, down, port, inspect).
const DOCKER_COMMAND_DEADLINE: Duration = Duration::from_secs(120);
/// From `compose up` until all three nodes answer /readyz and Docker calls them healthy.
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// One HTTP exchange (above the server's own 5 s request timeout).
const HTTP_TIMEOUT: Duration = Duration::from_secs(8);
/// The nodes' HTTP port inside their containers.
const HTTP_PORT_IN_CONTAINER: u16 = 7000;
const SERVICES: [&str; 3] = ["synod1", "synod2", "synod3"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

// ---------------------------------------------------------------------------------------
// Commands with deadlines.

struct Finished {
    success: bool,
    stdout: String,
    /// stdout, then stderr: for messages.
    output: String,
}

/// Runs `command` to completion or until `deadline`, when its whole process group is killed
/// (build.sh runs cargo, which runs rustc: killing the shell alone would orphan them).
/// Output goes to files rather than pipes so that a chatty child can never block on a full
/// pipe while we poll; stdout stays apart from stderr, where Docker prints its warnings.
fn run(command: &mut Command, deadline: Duration) -> io::Result<Finished> {
    let path = |stream: &str| {
        std::env::temp_dir().join(format!(
            "synod-docker-test-{}-{}.{stream}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
        ))
    };
    let (stdout_path, stderr_path) = (path("stdout"), path("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path)?)
        .stderr(File::create(&stderr_path)?)
        .process_group(0)
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > deadline {
            // SAFETY: kill(2) on the group this child leads; no memory is involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |path: &Path| {
        let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let _ = std::fs::remove_file(path);
        text
    };
    let stdout = read(&stdout_path);
    let output = format!("{stdout}{}", read(&stderr_path));
    match status {
        Some(status) => Ok(Finished { success: status.success(), stdout, output }),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{command:?} still running after {deadline:?}; output so far:\n{}", tail(&output, 40)),
        )),
    }
}

/// Runs `command` and returns its stdout, panicking with all its output if it fails.
fn run_ok(command: &mut Command, deadline: Duration) -> String {
    let what = format!("{command:?}");
    match run(command, deadline) {
        Ok(Finished { success: true, stdout, .. }) => stdout,
        Ok(Finished { success: false, output, .. }) => panic!("{what} failed:\n{}", tail(&output, 60)),
        Err(error) => panic!("{what}: {error}"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Is Docker here?

/// The Compose command this machine has: Compose v2 as a docker plugin, or v1 standalone.
fn compose_program() -> Option<Vec<String>> {
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    candidates.into_iter().map(|c| c.iter().map(|s| s.to_string()).collect::<Vec<_>>()).find(|c| {
        let mut command = Command::new(&c[0]);
        command.args(&c[1..]).arg("version");
        matches!(run(&mut command, Duration::from_secs(30)), Ok(Finished { success: true, .. }))
    })
}

/// Why Docker cannot be used here, if it cannot.
fn docker_unavailable() -> Option<String> {
    let mut info = Command::new("docker");
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    match run(&mut info, Duration::from_secs(30)) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Some("`docker` is not on PATH".into()),
        Err(error) => Some(format!("`docker info`: {error}")),
        Ok(Finished { success: false, output, .. }) => {
            Some(format!("the Docker daemon is unreachable: {}", output.trim()))
        }
        Ok(Finished { success: true, .. }) => None,
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 by hand, so the test needs no curl and no HTTP client beyond std.

struct Reply {
    status: u16,
    body: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.body.trim())
    }
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {:?}", self.status, self.body))
    }
}

/// One request on a fresh connection (`Connection: close`: read to EOF, nothing pooled).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = || {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {:?}", String::from_utf8_lossy(&raw)))
    };
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok(Reply { status, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------
// The cluster, torn down by its guard.

struct ComposeCluster {
    compose: Vec<String>,
    compose_file: PathBuf,
    project: String,
    image: String,
}

impl ComposeCluster {
    /// A `compose` command for this project, with the image and ports this test chose.
    fn compose(&self) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command
            .args(&self.compose[1..])
            .arg("--file")
            .arg(&self.compose_file)
            .args(["--project-name", &self.project]);
        command.env("SYNOD_IMAGE", &self.image);
        // Empty host ports: Docker picks free ones (tests may run beside `synod dev`, which
        // holds 7001-7003); `http_addrs` asks Compose which it picked.
        for n in 1..=SERVICES.len() {
            command.env(format!("SYNOD_HTTP_PORT_{n}"), "");
        }
        command
    }

    fn up(&self) {
        run_ok(self.compose().args(["up", "--detach"]), DOCKER_COMMAND_DEADLINE);
    }

    /// Stops and removes the containers but keeps the volumes (the nodes' data).
    fn down_keeping_volumes(&self) {
        run_ok(self.compose().args(["down", "--timeout", "10"]), DOCKER_COMMAND_DEADLINE);
    }

    /// Each node's HTTP API on the host, in service order.
    fn http_addrs(&self) -> Vec<SocketAddr> {
        SERVICES
            .iter()
            .map(|service| {
                let out = run_ok(
                    self.compose().args(["port", service, &HTTP_PORT_IN_CONTAINER.to_string()]),
                    DOCKER_COMMAND_DEADLINE,
                );
                let line = out.lines().map(str::trim).find(|l| l.parse::<SocketAddr>().is_ok());
                line.unwrap_or_else(|| panic!("compose port {service}: no address in {out:?}"))
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    fn container_ids(&self) -> Vec<String> {
        let out = run_ok(self.compose().args(["ps", "--quiet"]), DOCKER_COMMAND_DEADLINE);
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(String::from)
            .collect()
    }

    /// Polls until every node answers /readyz with 200 (a majority and a leader) and Docker's
    /// HEALTHCHECK (`synod status` inside the container) calls every container healthy.
    fn wait_ready(&self, started: Instant) -> Vec<SocketAddr> {
        let addrs = self.http_addrs();
        loop {
            let ready: Vec<String> = addrs
                .iter()
                .map(|&addr| match http(addr, "GET", "/readyz", None) {
                    Ok(reply) if reply.status == 200 => "ready".to_string(),
                    Ok(reply) => format!("{reply:?}"),
                    Err(error) => error.to_string(),
                })
                .collect();
            let health = if ready.iter().all(|r| r == "ready") {
                let mut inspect = Command::new("docker");
                inspect.args(["inspect", "--format", "{{.State.Health.Status}}"]).args(self.container_ids());
                run_ok(&mut inspect, DOCKER_COMMAND_DEADLINE).split_whitespace().map(String::from).collect()
            } else {
                Vec::new()
            };
            if health.len() == SERVICES.len() && health.iter().all(|h| h == "healthy") {
                return addrs;
            }
            assert!(
                started.elapsed() < READY_DEADLINE,
                "cluster not ready after {READY_DEADLINE:?}: readyz {ready:?}, health {health:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(logs) =
                run(self.compose().args(["logs", "--no-color", "--tail", "40"]), DOCKER_COMMAND_DEADLINE)
            {
                eprintln!("--- compose logs (last 40 lines per node) ---\n{}", logs.output);
            }
        }
        // Down with the volumes, then the test's tag (the layers stay if another tag, such as
        // synod:latest, points at the same image).
        match run(
            self.compose().args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]),
            DOCKER_COMMAND_DEADLINE,
        ) {
            Ok(Finished { success: true, .. }) => {}
            Ok(Finished { output, .. }) => eprintln!("compose down failed for {}:\n{output}", self.project),
            Err(error) => eprintln!("compose down failed for {}: {error}", self.project),
        }
        let _ = run(Command::new("docker").args(["image", "rm", &self.image]), DOCKER_COMMAND_DEADLINE);
    }
}

// ---------------------------------------------------------------------------------------

/// The value of `key` read linearizably through `addr`.
fn get(addr: SocketAddr, key: &str) -> Value {
    let reply = http(addr, "GET", &format!("/v1/kv/{key}"), None).expect("GET answers");
    assert_eq!(reply.status, 200, "GET {key} via {addr}: {reply:?}");
    reply.json()["value"].clone()
}

/// A synod CLI command against `endpoint`, without proxies (the published ports are local).
fn cli(endpoint: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new(SYNOD);
    command.args(args).arg("--endpoints").arg(format!("http://{endpoint}"));
    for proxy in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        command.env_remove(proxy);
    }
    run_ok(&mut command, Duration::from_secs(30)).trim().to_string()
}

#[test]
fn image_from_scratch_runs_a_compose_cluster_that_serves_linearizable_reads_through_any_node() {
    let test_started = Instant::now();
    let unavailable = docker_unavailable();
    let compose = if unavailable.is_none() { compose_program() } else { None };
    let Some(compose) = compose else {
        let reason =
            unavailable.unwrap_or_else(|| "neither `docker compose` nor `docker-compose` works".into());
        if std::env::var("SYNOD_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("docker unavailable and SYNOD_REQUIRE_DOCKER=1: {reason}");
        }
        eprintln!("skipped: docker unavailable ({reason})");
        return;
    };
    let root = repo_root();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000
    );
    let image = format!("synod:docker-test-{unique}");

    // The guard exists before anything is built, so that a failed build still removes a
    // half-made tag; `down` on a project that never came up is a harmless no-op.
    let cluster = ComposeCluster {
        compose,
        compose_file: root.join("docker-compose.yml"),
        project: format!("synod-docker-test-{unique}"),
        image: image.clone(),
    };

    let phase = Instant::now();
    run_ok(Command::new(root.join("docker/build.sh")).arg(&image), BUILD_DEADLINE);
    let mut inspect = Command::new("docker");
    inspect.args(["image", "inspect", "--format", "{{.Size}}", &image]);
    let image_bytes: u64 = run_ok(&mut inspect, DOCKER_COMMAND_DEADLINE).trim().parse().expect("a size");
    eprintln!("image {image}: {:.1} MB, built in {:.1?}", image_bytes as f64 / 1e6, phase.elapsed());

    let phase = Instant::now();
    cluster.up();
    let addrs = cluster.wait_ready(phase);
    eprintln!("three nodes ready and healthy in {:.1?} (HTTP on {addrs:?})", phase.elapsed());

    // A write through node 1, read back linearizably through node 3 (a different container,
    // a different replica: the read goes through consensus, not node 1's memory).
    let value = format!("written through synod1 by {}", cluster.project);
    let put =
        http(addrs[0], "PUT", "/v1/kv/docker-smoke", Some(&json!({ "value": value }))).expect("PUT answers");
    assert_eq!(put.status, 200, "PUT via synod1: {put:?}");
    assert_eq!(get(addrs[2], "docker-smoke"), json!(value), "read via synod3");
    // The CLI from the README, against a published port.
    assert_eq!(cli(addrs[1], &["kv", "get", "docker-smoke"]), value, "synod kv get via synod2");

    // Containers are disposable, volumes are not: recreate every container and the write is
    // still there, so each node really kept its log in its volume.
    let phase = Instant::now();
    cluster.down_keeping_volumes();
    cluster.up();
    let addrs = cluster.wait_ready(phase);
    assert_eq!(
        get(addrs[1], "docker-smoke"),
        json!(value),
        "read via synod2 after recreating the containers"
    );
    eprintln!("recreated and ready again in {:.1?}", phase.elapsed());

    drop(cluster);
    eprintln!("docker test took {:.1?} in all", test_started.elapsed());
}

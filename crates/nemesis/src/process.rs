//! The `synod server` processes, one per node namespace: start, SIGKILL, SIGSTOP,
//! SIGCONT, restart, and status.
//!
//! A server is started by the harness itself (no `ip netns exec` wrapper): the child
//! enters its node's namespace with `setns(2)` between fork and exec, so the pid the
//! harness holds is the server's and every signal goes straight to it. The child also
//! asks for SIGKILL when the harness thread that started it dies (`PR_SET_PDEATHSIG`),
//! so a harness killed with SIGKILL leaves no server behind.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{self, Sent};

/// A server answers `/healthz` within this long after it starts, or the start failed.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// What a node runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    /// SIGSTOPped.
    Paused,
    /// Killed by the nemesis (or not started yet).
    Down,
    /// Exited on its own; the message says how.
    Exited(String),
    /// Not a member: a spare host nothing runs on yet, or a node the membership nemesis
    /// removed and stopped for good. Nothing restarts it (a removed node refuses to).
    Retired,
}

pub struct Server {
    pub id: u32,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    ns_path: PathBuf,
    child: Option<Child>,
    pub state: State,
    /// The `--join ...` flags a node that joined a running cluster starts with, every
    /// time: with them it reads the `JOINED` file its first start wrote, and starts as the
    /// member it became. Empty for the founding members.
    pub join: Vec<String>,
}

impl Server {
    pub fn new(id: u32, http: SocketAddr, dir: &Path, ns_path: PathBuf) -> Server {
        Server {
            id,
            http,
            data_dir: dir.join(format!("node-{id}")),
            config: dir.join(format!("node-{id}.toml")),
            log: dir.join(format!("node-{id}.log")),
            ns_path,
            child: None,
            state: State::Down,
            join: Vec::new(),
        }
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.id() as libc::pid_t)
    }

    /// Starts the server and waits until it answers `/healthz`. An error says why (the
    /// server exited, e.g. refusing a damaged data directory, with its log's tail).
    pub fn start(&mut self, binary: &Path) -> Result<(), String> {
        self.start_with(binary, &[])
    }

    /// [`Server::start`] with more flags after `synod server --config FILE`.
    pub fn start_with(&mut self, binary: &Path, flags: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let ns = File::open(&self.ns_path)
            .map_err(|e| format!("cannot open the namespace {}: {e}", self.ns_path.display()))?;
        let ns_fd = ns.as_raw_fd();
        let mut command = Command::new(binary);
        command
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .args(&self.join)
            .args(flags)
            .env("RUST_LOG", "info")
            .env_remove("SYNOD_CONFIG")
            .env_remove("SYNOD_LISTEN_PEER")
            .env_remove("SYNOD_LISTEN_HTTP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: only async-signal-safe calls (setns, prctl) between fork and exec; `ns`
        // outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        drop(ns);
        self.child = Some(child);
        self.state = State::Running;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(exited) = self.reap() {
                return Err(format!("node {} exited at start ({exited}): {}", self.id, tail(&self.log, 3)));
            }
            if let Sent::Reply(r) = self.get("/healthz", Duration::from_secs(1)) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("node {} did not answer /healthz within {START_DEADLINE:?}", self.id));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// If the process has exited, records how and says so.
    pub fn reap(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                let how = status.to_string();
                self.state = State::Exited(how.clone());
                Some(how)
            }
            _ => None,
        }
    }

    /// SIGKILL: no flush, no goodbye. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if matches!(self.state, State::Running | State::Paused) {
            self.state = State::Down;
        }
    }

    pub fn pause(&mut self) {
        if let (Some(pid), State::Running) = (self.pid(), &self.state) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            self.state = State::Paused;
        }
    }

    pub fn resume(&mut self) {
        if let (Some(pid), State::Paused) = (self.pid(), &self.state) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            self.state = State::Running;
        }
    }

    pub fn get(&self, path: &str, timeout: Duration) -> Sent {
        http::request(self.http, "GET", path, &[], None, timeout, timeout)
    }

    /// `/v1/status` as JSON, if the node answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        match self.get("/v1/status", Duration::from_secs(1)) {
            Sent::Reply(r) if r.status == 200 => r.json(),
            _ => None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file, on one line.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

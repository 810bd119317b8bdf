//! A local cluster of `synod server` processes, and CPU time from /proc.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of one process, in seconds (fields 14 and 15 of `/proc/PID/stat`).
fn process_cpu_seconds(stat_path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // the last ')'. There, field 3 (state) has index 0, so utime is at 11 and stime at 12.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// Total CPU seconds of `pids`; `None` if there are none or one cannot be read.
pub(super) fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))).sum()
}

pub(super) fn cpu_seconds_self() -> Option<f64> {
    process_cpu_seconds(Path::new("/proc/self/stat"))
}

/// Many clients hold many sockets, here and in the servers we start (they inherit the
/// limit): lift the soft limit on open files to the hard one.
pub(super) fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit write and read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Three `synod server` processes of this very binary on loopback, with ports the kernel
/// handed out and a data directory of their own. Dropping it kills them.
pub struct LocalCluster {
    pub(super) root: PathBuf,
    /// Remove `root` when done (we made it).
    remove_root: bool,
    http: Vec<String>,
    children: Vec<Child>,
}

impl LocalCluster {
    const NODES: usize = 3;
    const START_ATTEMPTS_MAX: u32 = 3;

    /// `extra` is a TOML fragment every node's configuration file gets.
    pub(super) async fn start(data_dir: Option<PathBuf>, extra: String) -> Result<LocalCluster, String> {
        let mut last = String::new();
        for attempt in 1..=Self::START_ATTEMPTS_MAX {
            match Self::try_start(data_dir.clone(), &extra, attempt) {
                Ok(cluster) => match cluster.wait_until_serving(Duration::from_secs(20)).await {
                    Ok(()) => return Ok(cluster),
                    Err(error) => last = error,
                },
                Err(error) => last = error,
            }
            eprintln!("synod bench: starting the local cluster failed ({last}); trying again");
        }
        Err(format!("cannot start a local cluster: {last}"))
    }

    fn try_start(data_dir: Option<PathBuf>, extra: &str, attempt: u32) -> Result<LocalCluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let name = format!("bench-{}-{attempt}", std::process::id());
        let (root, remove_root) = match data_dir {
            Some(dir) => (dir, false),
            None => (std::env::temp_dir().join(format!("synod-{name}")), true),
        };
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // Ports are free when we ask; another process may take one before a node binds
        // it, and then `start` tries again.
        let ports = free_ports(2 * Self::NODES)?;
        let members: Vec<String> = (0..Self::NODES)
            .map(|i| format!("{}=127.0.0.1:{}/127.0.0.1:{}", i + 1, ports[2 * i], ports[2 * i + 1]))
            .collect();
        let mut cluster = LocalCluster {
            root: root.clone(),
            remove_root,
            http: (0..Self::NODES).map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1])).collect(),
            children: Vec::new(),
        };
        for i in 0..Self::NODES {
            let log_path = root.join(format!("node-{}.log", i + 1));
            let log = std::fs::File::create(&log_path)
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            // The flags below override these placeholders; the file carries `extra`.
            let config_path = root.join(format!("node-{}.toml", i + 1));
            std::fs::write(&config_path, format!("node_id = 0\nmembers = []\n{extra}\n"))
                .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
            let child = Command::new(&exe)
                .arg("server")
                .arg("--config")
                .arg(&config_path)
                .args(["--node-id", &(i + 1).to_string()])
                .args(["--cluster", &name])
                .args(["--members", &members.join(",")])
                .arg("--data-dir")
                .arg(root.join(format!("node-{}", i + 1)))
                .env_remove("SYNOD_CONFIG")
                .env_remove("SYNOD_LISTEN_PEER")
                .env_remove("SYNOD_LISTEN_HTTP")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// Waits until every node answers `/healthz`; an exited node is an error with its log.
    async fn wait_until_serving(&self, within: Duration) -> Result<(), String> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(1)).build().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + within;
        for (i, endpoint) in self.http.iter().enumerate() {
            loop {
                // A child that exited already is reaped by `Drop`; here we only look.
                let pid = self.children[i].id();
                if has_exited(pid) {
                    let log = std::fs::read_to_string(self.root.join(format!("node-{}.log", i + 1)))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    return Err(format!("node {} exited: {}", i + 1, tail.join(" | ")));
                }
                if matches!(http.get(format!("{endpoint}/healthz")).send().await, Ok(r) if r.status().is_success())
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} did not answer at {endpoint}", i + 1));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    pub(super) fn endpoints(&self) -> Vec<String> {
        self.http.clone()
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

/// `count` loopback ports that were free when we asked. Another process may take one
/// before a server binds it; callers then start again with fresh ports.
pub(super) fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let probes: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))?;
    probes.iter().map(|p| p.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

/// Whether a child process is gone: exited and not yet reaped, or unknown to /proc.
pub(super) fn has_exited(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| text.rfind(')').map(|i| text[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(true)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time() {
        assert!(cpu_seconds_self().is_some());
        assert_eq!(cpu_seconds(&[]), None);
    }
}

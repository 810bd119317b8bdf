//! Hosts: one Linux network namespace per node, wired to a private switch.
//!
//! ```text
//!   root namespace (the harness and its clients)
//!     snm<X>h 10.77.X.254 ──veth──┐
//!                                 │  switch namespace: bridge br0 (no firewall of its own)
//!   node namespace n1: eth0 10.77.X.1 ──veth──┤
//!   node namespace n2: eth0 10.77.X.2 ──veth──┤
//!   ...                                       ┘
//! ```
//!
//! Why a switch namespace rather than a bridge in the root namespace: with `br_netfilter`
//! loaded, bridged frames pass the root namespace's `FORWARD` chain, whose policy a
//! Docker host sets to `DROP`. A bridge in a namespace of its own has an empty firewall,
//! so the harness never touches the host's rules. Everything it creates is named after
//! the run (`synodnm-<pid>-<X>-...` namespaces, one `snm<X>h` link in the root
//! namespace), where `X` is the third octet of the run's private /24, chosen under a lock
//! so that parallel runs never share one; it is all deleted at the end, by `Drop` on
//! failure, and by [`sweep_stale`] if the run's process died.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// Namespace names start with this, then `<pid>-<octet>-`.
pub const NAME_PREFIX: &str = "synodnm-";
/// The private range every run takes a /24 of.
const FIRST_OCTETS: [u8; 2] = [10, 77];
/// The host's address in each run's /24.
const HOST_OCTET: u8 = 254;
/// Third octets a run may take.
const OCTETS: std::ops::RangeInclusive<u8> = 1..=250;

/// The chain in each node namespace's `filter` table that holds every fault rule, hooked
/// into `INPUT`; healing the network is flushing it.
pub const FAULT_CHAIN: &str = "SYNODNM";

/// Runs `ip`/`iptables`/`tc`, returning stdout or a message naming the command.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if !output.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks that this process may create namespaces and links; the message says what is
/// missing.
pub fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "synod nemesis needs root: it creates network namespaces, links and firewall rules".into()
        );
    }
    for tool in ["ip", "iptables", "tc"] {
        sh(&[tool, "-V"]).map_err(|e| format!("{tool} is needed ({e})"))?;
    }
    let probe = format!("{NAME_PREFIX}{}-probe", std::process::id());
    sh(&["ip", "netns", "add", &probe]).map_err(|e| format!("network namespaces are unavailable: {e}"))?;
    let firewall = sh(&["ip", "netns", "exec", &probe, "iptables", "-S"]);
    let _ = sh(&["ip", "netns", "del", &probe]);
    firewall.map_err(|e| format!("iptables does not work inside a network namespace: {e}"))?;
    Ok(())
}

/// Whether `tc netem` works on this kernel (many container kernels lack it).
pub fn netem_available() -> bool {
    let probe = format!("{NAME_PREFIX}{}-netem", std::process::id());
    if sh(&["ip", "netns", "add", &probe]).is_err() {
        return false;
    }
    let ok = sh(&[
        "ip", "netns", "exec", &probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
    ])
    .is_ok();
    let _ = sh(&["ip", "netns", "del", &probe]);
    ok
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks existence only.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// (pid, octet) of a namespace name of ours; probes have no octet.
fn parse_name(name: &str) -> Option<(u32, Option<u8>)> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let octet = parts.next().and_then(|o| o.parse().ok());
    Some((pid, octet))
}

fn namespaces() -> Vec<String> {
    sh(&["ip", "netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NAME_PREFIX))
        .map(str::to_string)
        .collect()
}

/// Deletes what runs whose process is gone left behind: their servers, namespaces and
/// host link. Best effort; returns what it removed.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in namespaces() {
        let Some((pid, octet)) = parse_name(&name) else { continue };
        if pid_alive(pid) {
            continue;
        }
        // Servers of a dead run may still be running inside (they die with their parent
        // thread normally, see `process`); they hold nothing we need.
        for p in sh(&["ip", "netns", "pids", &name]).unwrap_or_default().split_whitespace() {
            if let Ok(p) = p.parse::<i32>() {
                // SAFETY: kill(2) on a process inside a namespace named by our own scheme.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = sh(&["ip", "netns", "del", &name]);
        if let Some(octet) = octet {
            let _ = sh(&["ip", "link", "del", &host_link(octet)]);
        }
        removed.push(name);
    }
    removed
}

fn host_link(octet: u8) -> String {
    format!("snm{octet}h")
}

/// An exclusive `flock` on a file in the temporary directory, released on drop.
struct Lock(File);

impl Lock {
    fn take() -> Result<Lock, String> {
        let path = std::env::temp_dir().join("synod-nemesis.lock");
        let file = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {}", path.display()));
        }
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor we locked.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The run's hosts. Dropping it deletes them.
pub struct Network {
    pub octet: u8,
    pub nodes: usize,
    /// Namespaces created so far (the switch first), for teardown.
    created: Vec<String>,
    host_link_created: bool,
}

impl Network {
    /// Creates the switch, `nodes` node namespaces and the host's link.
    pub fn create(nodes: usize) -> Result<Network, String> {
        assert!((1..=9).contains(&nodes), "1 to 9 nodes");
        let lock = Lock::take()?;
        let taken: Vec<u8> = namespaces().iter().filter_map(|n| parse_name(n)?.1).collect();
        let routes = sh(&["ip", "-4", "route", "show"]).unwrap_or_default();
        let prefix = format!("{}.{}.", FIRST_OCTETS[0], FIRST_OCTETS[1]);
        let start = std::process::id() as usize % OCTETS.len();
        let octet = (0..OCTETS.len())
            .map(|k| *OCTETS.start() + ((start + k) % OCTETS.len()) as u8)
            .find(|o| !taken.contains(o) && !routes.contains(&format!("{prefix}{o}.")))
            .ok_or("every 10.77.X.0/24 is taken by another run")?;
        let mut network = Network { octet, nodes, created: Vec::new(), host_link_created: false };
        network.build()?;
        drop(lock);
        Ok(network)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        sh(&["ip", "netns", "add", name])?;
        self.created.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build(&mut self) -> Result<(), String> {
        let switch = self.switch_ns();
        self.add_namespace(&switch)?;
        sh(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.node_ns(i);
            self.add_namespace(&ns)?;
            let port = format!("n{}", i + 1);
            // Both ends are created inside private namespaces, so their names never
            // collide with another run's.
            sh(&[
                "ip", "link", "add", &port, "netns", &switch, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            sh(&["ip", "-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.node_ip(i));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            let exec = ["ip", "netns", "exec", &ns, "iptables"];
            sh(&[&exec[..], &["-N", FAULT_CHAIN]].concat())?;
            sh(&[&exec[..], &["-I", "INPUT", "-j", FAULT_CHAIN]].concat())?;
        }
        let link = host_link(self.octet);
        sh(&["ip", "link", "add", &link, "type", "veth", "peer", "name", "host", "netns", &switch])?;
        self.host_link_created = true;
        sh(&["ip", "-n", &switch, "link", "set", "host", "master", "br0", "up"])?;
        sh(&["ip", "addr", "add", &format!("{}/24", self.host_ip()), "dev", &link])?;
        sh(&["ip", "link", "set", &link, "up"])?;
        Ok(())
    }

    fn base(&self) -> String {
        format!("{NAME_PREFIX}{}-{}", std::process::id(), self.octet)
    }

    fn switch_ns(&self) -> String {
        format!("{}-switch", self.base())
    }

    /// The namespace of node `i` (0-based).
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{}", self.base(), i + 1)
    }

    /// The file that names node `i`'s namespace, for `setns(2)`.
    pub fn node_ns_path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.node_ns(i))
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(FIRST_OCTETS[0], FIRST_OCTETS[1], self.octet, i as u8 + 1)
    }

    /// The harness's own address: client traffic comes from it.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(FIRST_OCTETS[0], FIRST_OCTETS[1], self.octet, HOST_OCTET)
    }

    /// Runs a command inside node `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let ns = self.node_ns(i);
        sh(&[&["ip", "netns", "exec", &ns][..], args].concat())
    }

    /// Appends a rule to node `i`'s fault chain.
    pub fn add_rule(&self, i: usize, rule: &[&str]) -> Result<(), String> {
        self.exec(i, &[&["iptables", "-A", FAULT_CHAIN][..], rule].concat()).map(|_| ())
    }

    /// Node `i` stops receiving anything from node `from` (one direction of a cut).
    pub fn drop_from(&self, i: usize, from: usize) -> Result<(), String> {
        let source = self.node_ip(from).to_string();
        self.add_rule(i, &["-s", &source, "-j", "DROP"])
    }

    /// Removes every fault rule and queueing discipline from every node.
    pub fn heal(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for i in 0..self.nodes {
            if let Err(e) = self.exec(i, &["iptables", "-F", FAULT_CHAIN]) {
                errors.push(e);
            }
            // Deleting the root qdisc when there is none fails harmlessly.
            let _ = self.exec(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Deletes everything this network created. Idempotent.
    pub fn teardown(&mut self) {
        for name in self.created.drain(..).rev() {
            let _ = sh(&["ip", "netns", "del", &name]);
        }
        if std::mem::take(&mut self.host_link_created) {
            // Usually gone already with its peer in the switch namespace.
            let _ = sh(&["ip", "link", "del", &host_link(self.octet)]);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_owner_pid_and_octet() {
        assert_eq!(parse_name("synodnm-1234-77-n2"), Some((1234, Some(77))));
        assert_eq!(parse_name("synodnm-1234-probe"), Some((1234, None)));
        assert_eq!(parse_name("other-1-2"), None);
    }
}

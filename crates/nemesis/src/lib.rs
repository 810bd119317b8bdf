//! # synod-nemesis: fault injection against real processes
//!
//! The simulator proves the protocol; this proves the program, in the manner of Jepsen:
//! real `synod server` processes, each on a host of its own (a Linux network namespace
//! with its own address, see [`hosts`]); a nemesis that kills, pauses, partitions, drops
//! and delays packets and damages disks on a schedule drawn from a seed ([`nemesis`]);
//! concurrent clients that record what they saw as a history ([`workload`]); and the
//! checkers of `synod-check` that judge it ([`report`]). [`run`] does all of it and cleans
//! up everything it created, also when it fails.
//!
//! ```text
//!   run ─▶ hosts::Network (namespaces, bridge, veths) ─▶ process::Server × N
//!        ─▶ workload clients (threads, one op at a time, recorded) ─┐
//!        ─▶ nemesis cycles on this thread (inject … heal)           ├─▶ history.jsonl
//!        ─▶ heal all, restart all, wait for convergence, final reads ┘
//!        ─▶ checkers ─▶ report.txt, report.json
//! ```
//!
//! Needs root (namespaces, links, iptables, tc). Only addresses in the run's own
//! `10.77.X.0/24` are ever used.

pub mod hosts;
pub mod http;
pub mod membership;
pub mod nemesis;
pub mod process;
pub mod report;
mod run;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use nemesis::{Cycle, Fault, FaultKind, MemberAction, Shape, Target, Timing};
pub use report::Report;
pub use run::run;

/// Planted bugs of the harness, not of the servers: they make the wipe nemesis bring a
/// wiped node back the unsafe way, or the membership nemesis start a node the unsafe way,
/// so that the run must fail. Test builds only (the
/// `planted-bugs` feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HarnessBug {
    /// `wipe-bootstraps`: the wiped node restarts with `--bootstrap`, so it votes at once
    /// from its empty directory, under a new identity.
    WipeBootstraps,
    /// `wipe-keeps-identity`: the wipe deletes everything but the directory's `IDENTITY`
    /// file, so the node votes at once from an empty log under its old identity, which
    /// its peers still trust: what every wiped node did before directories had one.
    WipeKeepsIdentity,
    /// `join-bootstraps`: the membership nemesis starts a joining node with `--bootstrap`
    /// instead of `--join`, so it founds a one-node cluster of its own, and offers it to
    /// the clients at once, as if it had joined: it answers from an empty state.
    JoinBootstraps,
}

impl HarnessBug {
    pub const ALL: [HarnessBug; 3] =
        [HarnessBug::WipeBootstraps, HarnessBug::WipeKeepsIdentity, HarnessBug::JoinBootstraps];

    pub fn name(self) -> &'static str {
        match self {
            HarnessBug::WipeBootstraps => "wipe-bootstraps",
            HarnessBug::WipeKeepsIdentity => "wipe-keeps-identity",
            HarnessBug::JoinBootstraps => "join-bootstraps",
        }
    }

    /// The harness bug named `bug`, if it is one (else it is the servers').
    pub fn parse(bug: &str) -> Option<HarnessBug> {
        HarnessBug::ALL.into_iter().find(|b| b.name() == bug)
    }
}

/// Which workload the clients run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// get/put/cas/delete on rotating keys, checked for linearizability per key.
    Register,
    /// Transfers and full reads, checked by the bank checker and for linearizability.
    Bank,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Bank => "bank",
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `synod` binary to run as `synod server`.
    pub binary: PathBuf,
    pub workload: WorkloadKind,
    /// 3 or 5.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How long the workload runs (faults stop `timing.cooldown` before the end).
    pub duration: Duration,
    pub seed: u64,
    pub nemeses: Vec<FaultKind>,
    pub timing: Timing,
    /// Where the history, the report, and the nodes' configs, logs and data go.
    pub out: PathBuf,
    /// A client request not answered within this long is recorded as `info`.
    pub op_timeout: Duration,
    /// The servers' `request_timeout_ms` (below `op_timeout`, so that a server usually
    /// says "unknown" itself before the client gives up).
    pub server_request_timeout: Duration,
    /// Each client waits up to this between operations (bounds the load).
    pub think_max: Duration,
    /// A write whose outcome is unknown is retried (same session) for this long before
    /// it is recorded as `info`: unknown outcomes make the checkers' search explode.
    pub retry_window: Duration,
    /// Wall-clock budget of each linearizability check.
    pub check_budget: Duration,
    /// An explicit schedule instead of one drawn from the seed (a scenario test).
    pub schedule: Option<Vec<Cycle>>,
    /// Register workload: keys in use at once (fewer keys, more contention per key).
    pub register_keys: usize,
    /// A planted bug for the servers (`stale-read`); only servers built with the
    /// `planted-bugs` feature accept it. Or one of the harness itself ([`HarnessBug`]),
    /// which only this crate built with that feature accepts.
    pub planted_bug: Option<String>,
    /// Set from a signal handler to end the run early (it still heals, checks and
    /// cleans up).
    pub interrupt: Option<&'static AtomicBool>,
}

impl RunConfig {
    /// A run with the defaults; change fields as needed.
    pub fn new(binary: PathBuf, workload: WorkloadKind, out: PathBuf) -> RunConfig {
        RunConfig {
            binary,
            workload,
            nodes: 3,
            clients: 8,
            duration: Duration::from_secs(60),
            seed: 1,
            nemeses: vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Partition],
            timing: Timing::default(),
            out,
            op_timeout: Duration::from_secs(3),
            server_request_timeout: Duration::from_millis(2000),
            think_max: Duration::from_millis(20),
            retry_window: Duration::from_secs(10),
            check_budget: Duration::from_secs(120),
            register_keys: 6,
            schedule: None,
            planted_bug: None,
            interrupt: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.nodes != 3 && self.nodes != 5 {
            return Err(format!("--nodes must be 3 or 5, not {}", self.nodes));
        }
        if !(1..=64).contains(&self.clients) {
            return Err(format!("--clients must be between 1 and 64, not {}", self.clients));
        }
        if self.duration < Duration::from_secs(5) {
            return Err("--duration must be at least 5s".into());
        }
        if !(1..=1000).contains(&self.register_keys) {
            return Err("register keys must be between 1 and 1000".into());
        }
        if self.op_timeout <= self.server_request_timeout {
            return Err("the client timeout must exceed the servers' request timeout".into());
        }
        if let Some(bug) = self.planted_bug.as_deref().and_then(HarnessBug::parse) {
            if !cfg!(feature = "planted-bugs") {
                return Err(format!(
                    "the planted bug {} exists only in test builds (the planted-bugs feature)",
                    bug.name()
                ));
            }
        }
        Ok(())
    }
}

/// Parses `90s`, `5m`, `1h`, `1500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 60s or 5m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
    }

    /// Without the feature (a release build of `synod`) the harness's planted bugs are
    /// refused; a server's planted bug is left for the server to refuse.
    #[test]
    #[cfg(not(feature = "planted-bugs"))]
    fn harness_bugs_are_refused_outside_test_builds() {
        let mut config = RunConfig::new("synod".into(), WorkloadKind::Bank, "out".into());
        for bug in HarnessBug::ALL {
            config.planted_bug = Some(bug.name().into());
            assert!(config.validate().unwrap_err().contains("only in test builds"), "{bug:?}");
        }
        config.planted_bug = Some("stale-read".into());
        assert_eq!(config.validate(), Ok(()));
    }
}

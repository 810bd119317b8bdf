//! The membership nemesis: the cluster's configuration changes through the log while the
//! clients run, the way an operator changes it (README, Membership): a fresh node joins
//! with `--join` on an empty directory as a learner, catches up and is promoted; a voter,
//! sometimes the leader (which hands the leadership over first), is removed and stopped;
//! a killed voter is removed and a fresh node takes its place.
//!
//! Each change is one reconfiguration decided in a slot and in force `ALPHA` slots later
//! (Paxos Made Moderately Complex §3.4, Lamport's α); one at a time, so the quorums of
//! two consecutive configurations always intersect. The nemesis keeps 3 to 5 voters and
//! never changes two things at once: a drawn action that the voters then in place do not
//! allow turns into one that they do (an add at five voters removes, a removal at three
//! adds), as recorded.
//!
//! Clients follow the configuration (`workload::Clients::nodes`): a node is offered to
//! them once promoted and taken away before its removal is asked for, so the history
//! holds no operation sent to a node that already left. One under way when it left is
//! recorded by what it got back, as any other.
//!
//! A refusal (`change_in_flight`, `learner_behind`, `503` while a leadership is on its
//! way) is retried until [`CHANGE_DEADLINE`]; one that lasts, or any other, is recorded as
//! a change that did not take effect, and the cluster is put back as it was (a killed
//! voter whose removal was refused is restarted; a learner that could not be promoted is
//! removed). It is never a failed run: the checkers judge the history, not the nemesis.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::hosts::Network;
use crate::http::{self, Sent};
use crate::nemesis::MemberAction;
use crate::process::{Server, State};
use crate::report::MembershipChange;
use crate::run::{HTTP_PORT, PEER_PORT};

/// A change (with its refusals retried) must be decided and in force within this long:
/// decided, then `ALPHA` slots of no-ops, on two shared cores.
const CHANGE_DEADLINE: Duration = Duration::from_secs(20);
/// A learner counts as caught up once the leader sees it this few slots behind; the
/// leader itself decides with `learner_behind` whether a promotion may go on.
const CAUGHT_UP_LAG_SLOTS: u64 = 64;
/// One membership request; a change is answered once decided, after waiting (within the
/// servers' request timeout) for it to take force.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// The most voters the nemesis makes, and the fewest it leaves.
const VOTERS_MAX: usize = 5;
const VOTERS_MIN: usize = 3;
/// Hosts made up front for joining nodes, beyond the founding ones.
pub const SPARE_HOSTS: usize = 2;

/// The membership as the nemesis made it, and its record.
pub struct Members {
    cluster: String,
    binary: PathBuf,
    dir: PathBuf,
    /// Lines every joining node's config carries besides its id and directory.
    config_extra: String,
    /// Hosts whose node is a voter.
    voters: BTreeSet<usize>,
    /// A learner that joined at injection and is promoted at heal.
    learner: Option<usize>,
    /// A voter killed at injection, removed and replaced at heal.
    replacing: Option<usize>,
    next_id: u32,
    clock: Instant,
    /// The planted harness bug `join-bootstraps` (test builds only).
    join_bootstraps: bool,
    pub changes: Vec<MembershipChange>,
}

/// A reply to a membership request, or why there was none.
type Answer = Result<(Json, Duration), String>;

impl Members {
    pub fn new(
        cluster: String,
        binary: PathBuf,
        dir: PathBuf,
        config_extra: String,
        founding: usize,
    ) -> Members {
        Members {
            cluster,
            binary,
            dir,
            config_extra,
            voters: (0..founding).collect(),
            learner: None,
            replacing: None,
            next_id: founding as u32 + 1,
            clock: Instant::now(),
            join_bootstraps: false,
            changes: Vec::new(),
        }
    }

    /// Plants the harness bug `join-bootstraps` (test builds only).
    pub fn plant_join_bootstraps(&mut self) {
        self.join_bootstraps = true;
    }

    /// Times in the record count from here (the workload's start).
    pub fn start_clock(&mut self, at: Instant) {
        self.clock = at;
    }

    /// Applies the first half of `action`; returns what was done.
    #[allow(clippy::too_many_arguments)]
    pub fn inject(
        &mut self,
        action: MemberAction,
        on_leader: bool,
        pick: usize,
        leader: Option<usize>,
        servers: &mut [Server],
        network: &Network,
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> String {
        let vacant = servers.iter().any(|s| s.state == State::Retired);
        let n = self.voters.len();
        let action = match action {
            MemberAction::Add if n < VOTERS_MAX && vacant => MemberAction::Add,
            MemberAction::Add => MemberAction::Remove,
            MemberAction::Remove | MemberAction::Replace if n <= VOTERS_MIN => MemberAction::Add,
            other => other,
        };
        if action == MemberAction::Add && !(vacant && n < VOTERS_MAX) {
            return "membership (skipped: no spare host)".into();
        }
        let voters: Vec<usize> = self.voters.iter().copied().collect();
        let victim = match leader.filter(|l| on_leader && self.voters.contains(l)) {
            Some(l) => l,
            None => voters[pick % voters.len()],
        };
        let label = |i: usize| {
            let lead = if leader == Some(i) { ", leader" } else { "" };
            format!("node {} on n{}{lead}", servers[i].id, i + 1)
        };
        match action {
            MemberAction::Add => match self.join(servers, network, targets) {
                Some(host) => {
                    self.learner = Some(host);
                    format!("membership add: node {} joins on n{} as a learner", servers[host].id, host + 1)
                }
                None => "membership add (the join failed)".into(),
            },
            MemberAction::Remove => {
                let what = label(victim);
                let via = (leader == Some(victim)).then_some(servers[victim].http);
                let done = self.remove(victim, via, servers, targets);
                format!("membership remove {what}{}", if done { "" } else { " (refused)" })
            }
            MemberAction::Replace => {
                let what = label(victim);
                let at_s = self.at_s();
                targets.write().expect("targets lock").retain(|a| *a != servers[victim].http);
                servers[victim].kill();
                self.replacing = Some(victim);
                self.record(
                    at_s,
                    "kill",
                    &servers[victim],
                    victim,
                    true,
                    None,
                    "before its replacement".into(),
                );
                format!("membership replace {what}: killed")
            }
        }
    }

    /// Finishes what the injection began: promotes the learner, or removes the killed
    /// voter and has a fresh node take its place. Returns a note.
    pub fn heal(
        &mut self,
        servers: &mut [Server],
        network: &Network,
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> Option<String> {
        if let Some(host) = self.learner.take() {
            return Some(self.promote(host, servers, targets));
        }
        let dead = self.replacing.take()?;
        if !self.remove(dead, None, servers, targets) {
            // Refused: the cluster keeps the node, so it comes back.
            let at_s = self.at_s();
            let started = servers[dead].start(&self.binary);
            if started.is_ok() {
                targets.write().expect("targets lock").push(servers[dead].http);
            }
            let detail = started.as_ref().err().cloned().unwrap_or_else(|| "its removal was refused".into());
            self.record(at_s, "restart", &servers[dead], dead, started.is_ok(), None, detail);
            return Some("removal refused; the node restarted".into());
        }
        let Some(host) = self.join(servers, network, targets) else {
            return Some("removed; the replacement could not join".into());
        };
        let id = servers[host].id;
        let promoted = self.promote(host, servers, targets);
        Some(format!("removed; node {id} on n{}: {promoted}", host + 1))
    }

    /// The configuration the leader has in force, with each node's host.
    pub fn final_configuration(&self, servers: &[Server]) -> Option<String> {
        let reply =
            servers.iter().filter(|s| s.state == State::Running).find_map(|s| {
                match http::request(s.http, "GET", "/v1/members", &[], None, REQUEST_TIMEOUT, REQUEST_TIMEOUT)
                {
                    Sent::Reply(r) if r.status == 200 => r.json(),
                    _ => None,
                }
            })?;
        let c = &reply["configuration"];
        let name = |id: &Json| {
            let id = id.as_u64().unwrap_or(0) as u32;
            match servers.iter().position(|s| s.id == id && s.state != State::Retired) {
                Some(h) => format!("{id} (n{})", h + 1),
                None => format!("{id}"),
            }
        };
        let list = |key: &str| c[key].as_array().map(|a| a.iter().map(name).collect::<Vec<_>>().join(", "));
        Some(format!(
            "epoch {}: voters {}; learners {}",
            c["epoch"],
            list("voters").unwrap_or_default(),
            list("learners").filter(|l| !l.is_empty()).unwrap_or_else(|| "none".into())
        ))
    }

    fn at_s(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        at_s: f64,
        action: &str,
        server: &Server,
        host: usize,
        took_effect: bool,
        took: Option<Duration>,
        detail: String,
    ) {
        self.changes.push(MembershipChange {
            at_s,
            action: action.into(),
            node: server.id,
            host: format!("n{}", host + 1),
            took_effect,
            took_s: took.map(|d| d.as_secs_f64()),
            detail,
        });
    }

    /// The HTTP addresses of the running voters, to ask for changes.
    fn member_addrs(&self, servers: &[Server]) -> Vec<SocketAddr> {
        self.voters
            .iter()
            .filter(|&&i| servers[i].state == State::Running)
            .map(|&i| servers[i].http)
            .collect()
    }

    /// Starts a fresh node with an empty directory on a vacant host and `--join`s it to
    /// the running voters; returns its host once it answers (a learner by then).
    fn join(
        &mut self,
        servers: &mut [Server],
        network: &Network,
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> Option<usize> {
        let host = servers.iter().position(|s| s.state == State::Retired)?;
        let id = self.next_id;
        self.next_id += 1;
        let at_s = self.at_s();
        let ip = network.node_ip(host);
        let mut server =
            Server::new(id, SocketAddr::from((ip, HTTP_PORT)), &self.dir, network.node_ns_path(host));
        let _ = std::fs::remove_dir_all(&server.data_dir);
        let toml = format!(
            "node_id = {id}\ncluster = \"{}\"\ndata_dir = \"{}\"\n{}members = []\n",
            self.cluster,
            server.data_dir.display(),
            self.config_extra
        );
        if let Err(e) = std::fs::write(&server.config, toml) {
            self.record(at_s, "add", &server, host, false, None, format!("cannot write its config: {e}"));
            return None;
        }
        let join: Vec<String> = self.member_addrs(servers).iter().map(SocketAddr::to_string).collect();
        server.join = [
            "--join",
            &join.join(","),
            "--cluster",
            &self.cluster,
            "--node-id",
            &id.to_string(),
            "--listen-peer",
            &format!("{ip}:{PEER_PORT}"),
            "--listen-http",
            &format!("{ip}:{HTTP_PORT}"),
        ]
        .map(str::to_string)
        .to_vec();
        if self.join_bootstraps {
            let me = format!("{id}={ip}:{PEER_PORT}/{ip}:{HTTP_PORT}");
            server.join =
                ["--bootstrap", "--cluster", &self.cluster, "--node-id", &id.to_string(), "--members", &me]
                    .map(str::to_string)
                    .to_vec();
        }
        let started = Instant::now();
        let result = server.start(&self.binary);
        servers[host] = server;
        match result {
            Ok(()) => {
                if self.join_bootstraps {
                    targets.write().expect("targets lock").push(servers[host].http);
                }
                let detail = format!("joined by --join {} as a learner", join.join(","));
                self.record(at_s, "add", &servers[host], host, true, Some(started.elapsed()), detail);
                Some(host)
            }
            Err(e) => {
                servers[host].kill();
                servers[host].state = State::Retired;
                self.record(at_s, "add", &servers[host], host, false, None, e);
                // It may have been admitted before it failed: a learner that never runs
                // holds up nothing, but it is taken out again for a tidy configuration.
                let _ = self.change(servers, None, "DELETE", &format!("/v1/members/{id}"));
                None
            }
        }
    }

    /// Waits until the learner on `host` has caught up, promotes it and offers it to the
    /// clients; if it cannot be, removes it.
    fn promote(&mut self, host: usize, servers: &mut [Server], targets: &RwLock<Vec<SocketAddr>>) -> String {
        let id = servers[host].id;
        let at_s = self.at_s();
        let asked = Instant::now();
        let caught_up = self.await_caught_up(id, servers);
        let answer = self.change(servers, None, "POST", &format!("/v1/members/{id}/promote"));
        let answer = answer.and_then(|_| self.await_in_force(servers, |c| contains(&c["voters"], id)));
        let caught = match caught_up {
            Some(d) => format!("caught up {:.1}s after the promotion was due", d.as_secs_f64()),
            None => "not seen caught up".into(),
        };
        match answer {
            Ok(()) => {
                self.voters.insert(host);
                targets.write().expect("targets lock").push(servers[host].http);
                let detail = format!("in force; {caught}");
                self.record(at_s, "promote", &servers[host], host, true, Some(asked.elapsed()), detail);
                format!("promoted node {id}")
            }
            Err(e) => {
                self.record(at_s, "promote", &servers[host], host, false, None, format!("{e}; {caught}"));
                let _ = self.change(servers, None, "DELETE", &format!("/v1/members/{id}"));
                targets.write().expect("targets lock").retain(|a| *a != servers[host].http);
                servers[host].kill();
                servers[host].state = State::Retired;
                format!("promotion of node {id} not taken: {e}")
            }
        }
    }

    /// Removes the voter on `host` (through `via` first, when it is the leader: it hands
    /// the leadership over and sends the request on) and stops it once the removal is in
    /// force. The clients stop using it first. Whether it was removed.
    fn remove(
        &mut self,
        host: usize,
        via: Option<SocketAddr>,
        servers: &mut [Server],
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> bool {
        let id = servers[host].id;
        let at_s = self.at_s();
        let addr = servers[host].http;
        targets.write().expect("targets lock").retain(|a| *a != addr);
        let asked = Instant::now();
        let answer = self.change(servers, via, "DELETE", &format!("/v1/members/{id}"));
        let answer = answer.and_then(|_| self.await_in_force(servers, |c| !contains(&c["voters"], id)));
        match answer {
            Ok(()) => {
                let took = asked.elapsed();
                self.voters.remove(&host);
                let note = if via.is_some() { "in force; the leader handed over first" } else { "in force" };
                self.record(at_s, "remove", &servers[host], host, true, Some(took), note.into());
                servers[host].kill();
                servers[host].state = State::Retired;
                true
            }
            Err(e) => {
                if servers[host].state == State::Running {
                    targets.write().expect("targets lock").push(addr);
                }
                self.record(at_s, "remove", &servers[host], host, false, None, e);
                false
            }
        }
    }

    /// Polls the leader until it sees learner `id` at most [`CAUGHT_UP_LAG_SLOTS`] behind;
    /// how long that took, or `None` within the deadline (the promotion is tried anyway:
    /// the leader decides).
    fn await_caught_up(&self, id: u32, servers: &[Server]) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < CHANGE_DEADLINE {
            let lag = self.member_addrs(servers).into_iter().find_map(|addr| {
                let reply = match http::request(
                    addr,
                    "GET",
                    "/v1/members",
                    &[],
                    None,
                    REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ) {
                    Sent::Reply(r) if r.status == 200 => r.json()?,
                    _ => return None,
                };
                if reply["leader"].as_u64() != Some(reply["node"].as_u64()?) {
                    return None;
                }
                let learners = reply["learners"].as_array()?;
                learners.iter().find(|l| l["id"].as_u64() == Some(id as u64))?["lag_slots"].as_u64()
            });
            if lag.is_some_and(|lag| lag <= CAUGHT_UP_LAG_SLOTS) {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Waits until the leader's configuration in force satisfies `done`.
    fn await_in_force(&self, servers: &[Server], done: impl Fn(&Json) -> bool) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < CHANGE_DEADLINE {
            let in_force = servers.iter().filter(|s| s.state == State::Running).any(|s| {
                s.status().is_some_and(|st| st["is_leader"] == json!(true) && done(&st["configuration"]))
            });
            if in_force {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("decided but not seen in force within {CHANGE_DEADLINE:?}"))
    }

    /// One change, through `via` or any running voter, following a `307 not_leader` to
    /// the leader, and retrying the refusals that pass. `Ok` is a 200 and how long it
    /// took; `Err` names the refusal or what went wrong.
    fn change(&self, servers: &[Server], via: Option<SocketAddr>, method: &str, path: &str) -> Answer {
        let started = Instant::now();
        let mut last = String::from("no member answered");
        // A request whose answer was lost may have been applied: its repeat is then
        // refused as not applicable, which means it took effect.
        let mut maybe_applied = false;
        for attempt in 0usize.. {
            if started.elapsed() > CHANGE_DEADLINE {
                return Err(format!("{last} (for {CHANGE_DEADLINE:?})"));
            }
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            let members = self.member_addrs(servers);
            let Some(mut addr) =
                via.filter(|_| attempt == 0).or_else(|| members.get(attempt % members.len().max(1)).copied())
            else {
                return Err("no running voter to ask".into());
            };
            let mut path = path.to_string();
            let mut reply = None;
            for _hop in 0..4 {
                match http::request(addr, method, &path, &[], None, REQUEST_TIMEOUT, REQUEST_TIMEOUT) {
                    Sent::Reply(r) if r.status == 307 => {
                        let Some((to, rest)) = r.location.as_deref().and_then(split_location) else {
                            last = "a 307 without a usable Location".into();
                            break;
                        };
                        (addr, path) = (to, rest);
                    }
                    Sent::Reply(r) => {
                        reply = Some(r);
                        break;
                    }
                    Sent::NotSent(e) => {
                        last = format!("{addr}: {e}");
                        break;
                    }
                    Sent::Unknown(e) => {
                        maybe_applied = true;
                        last = format!("{addr}: no answer ({e})");
                        break;
                    }
                }
            }
            let Some(reply) = reply else { continue };
            let code = reply.error_code().unwrap_or_default();
            match reply.status {
                200 => return Ok((reply.json().unwrap_or(Json::Null), started.elapsed())),
                409 if maybe_applied && code == "not_applicable" => {
                    return Ok((Json::Null, started.elapsed()))
                }
                503 => last = format!("503 {code}"),
                409 if matches!(code.as_str(), "change_in_flight" | "learner_behind") => last = code,
                status => return Err(format!("refused: {status} {code}: {}", reply.error_message())),
            }
        }
        unreachable!()
    }
}

/// Whether a JSON list of ids holds `id`.
fn contains(list: &Json, id: u32) -> bool {
    list.as_array().is_some_and(|a| a.iter().any(|v| v.as_u64() == Some(id as u64)))
}

/// `http://10.77.3.2:7000/v1/members/4` → the address and the path.
fn split_location(location: &str) -> Option<(SocketAddr, String)> {
    let rest = location.strip_prefix("http://")?;
    let (host, tail) = rest.split_once('/')?;
    Some((host.parse().ok()?, format!("/{tail}")))
}

/// The data directory of a node that joined and the path of its log, for the report.
pub fn node_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .map(|n| format!("nodes/{n}"))
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_names_the_leader_and_the_same_request() {
        let (addr, path) = split_location("http://10.77.3.2:7000/v1/members/4?force=true").unwrap();
        assert_eq!(addr, "10.77.3.2:7000".parse().unwrap());
        assert_eq!(path, "/v1/members/4?force=true");
        assert!(split_location("https://x/").is_none());
    }
}

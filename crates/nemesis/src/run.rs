//! One run, start to finish: hosts, servers, clients and nemesis, healing, convergence,
//! final reads, checks, report. Whatever happens, the servers and hosts it created are
//! gone when it returns (their `Drop`s run on every path).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;
use synod_check::{History, ModelKind};

use crate::hosts::{self, Network};
use crate::membership::{self, Members};
use crate::nemesis::{self, Cycle, DelayMethod, Fault, FaultKind, Target};
use crate::process::{tail, Server, State};
use crate::report::{self, FaultRecord, Repair, Report};
use crate::workload::{self, Bank, ClientOptions, Recorder, Register, Workload};
use crate::{HarnessBug, RunConfig, WorkloadKind};

/// Every node's peer and HTTP ports (each node has an address of its own).
pub(crate) const PEER_PORT: u16 = 7100;
pub(crate) const HTTP_PORT: u16 = 7000;
/// After healing, the cluster must agree again within this long.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(90);
/// The register workload: operations per key before it retires.
const REGISTER_OPS_PER_KEY: u32 = 300;
/// The bank: accounts and their initial balance.
const BANK_ACCOUNTS: u64 = 5;
const BANK_INITIAL_BALANCE: u64 = 100;
/// A corrupted or wiped node must have repaired from its peers this long after its cycle
/// healed (every other member must answer it, and one may be down or cut off meanwhile).
const REPAIR_DEADLINE: Duration = Duration::from_secs(30);
/// What a server logs when it starts on an empty data directory without `--bootstrap`: a
/// new replica, which recovers from its peers before it votes (`synod_server::disk`).
const NEW_REPLICA_LOG: &str = "the data directory is empty";
/// A paused node healed together with other faults wakes this long before they heal.
const RESUME_BEFORE_HEAL: Duration = Duration::from_millis(500);
/// Final reads are recorded under process numbers from here.
const FINAL_PROCESS_BASE: u64 = 1 << 40;

/// Runs the whole test. `Err` means it could not run (not root, no namespaces, servers
/// would not start); a run that ran returns its report, passed or not.
pub fn run(config: &RunConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    config.validate()?;
    hosts::preflight()?;
    let swept = hosts::sweep_stale();
    if !swept.is_empty() {
        progress(&format!("removed {} namespaces left by dead runs", swept.len()));
    }
    let nodes_dir = config.out.join("nodes");
    std::fs::create_dir_all(&nodes_dir).map_err(|e| format!("cannot create {}: {e}", nodes_dir.display()))?;
    let delay_method = if config.nemeses.contains(&FaultKind::Delay) && !hosts::netem_available() {
        DelayMethod::HtbRateLimit
    } else {
        DelayMethod::Netem
    };
    let schedule = match &config.schedule {
        Some(schedule) => schedule.clone(),
        None => {
            nemesis::schedule(config.seed, &config.nemeses, config.nodes, config.duration, &config.timing)
        }
    };
    progress(&format!(
        "setup: {} nodes, {} fault cycles from seed {}",
        config.nodes,
        schedule.len(),
        config.seed
    ));

    // Joining nodes need hosts of their own, made up front with the others.
    let spares = if config.nemeses.contains(&FaultKind::Membership) { membership::SPARE_HOSTS } else { 0 };
    let network = Network::create(config.nodes + spares)?;
    let mut run = Run::new(config, &network, &nodes_dir, delay_method)?;
    let result = run.execute(&schedule, progress);
    // Servers first (they live in the namespaces), then the namespaces.
    run.servers.clear();
    drop(network);
    result
}

struct Run<'a> {
    config: &'a RunConfig,
    network: &'a Network,
    servers: Vec<Server>,
    delay_method: DelayMethod,
    incidents: Vec<String>,
    faults: Vec<FaultRecord>,
    /// Nodes whose storage the nemesis damaged or deleted and that have not been seen
    /// repaired since. While one is, no other node's storage is touched, so a majority
    /// always keeps a good copy of every record (`FaultKind::damages_storage`).
    unrepaired: BTreeSet<usize>,
    /// When each node restarted after its storage fault, and whether it came back in
    /// recovery; taken into the fault's record once its cycle healed.
    restarts: BTreeMap<usize, (Instant, bool)>,
    /// A planted bug of the harness (test builds only): how a wiped node comes back
    /// unsafely.
    harness_bug: Option<HarnessBug>,
    /// The membership nemesis's view of the configuration, and its record.
    members: Members,
    final_configuration: Option<String>,
}

impl<'a> Run<'a> {
    fn new(
        config: &'a RunConfig,
        network: &'a Network,
        dir: &Path,
        delay_method: DelayMethod,
    ) -> Result<Run<'a>, String> {
        let cluster = format!("nemesis-{}", config.seed);
        let members: Vec<String> = (0..config.nodes)
            .map(|i| {
                let ip = network.node_ip(i);
                format!("  {{ id = {}, peer = \"{ip}:{PEER_PORT}\", http = \"{ip}:{HTTP_PORT}\" }},", i + 1)
            })
            .collect();
        let mut servers = Vec::new();
        let mut config_extra =
            format!("request_timeout_ms = {}\n", config.server_request_timeout.as_millis());
        if let Some(bug) = config.planted_bug.as_ref().filter(|b| HarnessBug::parse(b).is_none()) {
            config_extra.push_str(&format!("planted_bug = \"{bug}\"\n"));
        }
        for i in config.nodes..network.nodes {
            // A spare host: nothing runs there until a node joins on it.
            let mut spare = Server::new(
                0,
                SocketAddr::from((network.node_ip(i), HTTP_PORT)),
                dir,
                network.node_ns_path(i),
            );
            spare.state = State::Retired;
            servers.push(spare);
        }
        for i in 0..config.nodes {
            let http = SocketAddr::from((network.node_ip(i), HTTP_PORT));
            let server = Server::new(i as u32 + 1, http, dir, network.node_ns_path(i));
            let _ = std::fs::remove_dir_all(&server.data_dir);
            let _ = std::fs::remove_file(&server.log);
            let mut toml = format!(
                "node_id = {}\ncluster = \"{cluster}\"\ndata_dir = \"{}\"\n{config_extra}",
                i + 1,
                server.data_dir.display(),
            );
            toml.push_str(&format!("members = [\n{}\n]\n", members.join("\n")));
            std::fs::write(&server.config, toml)
                .map_err(|e| format!("cannot write {}: {e}", server.config.display()))?;
            servers.insert(i, server);
        }
        let mut members =
            Members::new(cluster, config.binary.clone(), dir.to_path_buf(), config_extra, config.nodes);
        if config.planted_bug.as_deref().and_then(HarnessBug::parse) == Some(HarnessBug::JoinBootstraps) {
            members.plant_join_bootstraps();
        }
        Ok(Run {
            config,
            network,
            servers,
            delay_method,
            incidents: Vec::new(),
            faults: Vec::new(),
            unrepaired: BTreeSet::new(),
            restarts: BTreeMap::new(),
            harness_bug: config.planted_bug.as_deref().and_then(HarnessBug::parse),
            members,
            final_configuration: None,
        })
    }

    /// The founding members' addresses.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().filter(|s| s.state != State::Retired).map(|s| s.http).collect()
    }

    fn interrupted(&self) -> bool {
        self.config.interrupt.is_some_and(|i| i.load(Ordering::Relaxed))
    }

    fn execute(&mut self, schedule: &[Cycle], progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
        for server in self.servers.iter_mut().filter(|s| s.state != State::Retired) {
            server.start(&self.config.binary)?;
        }
        progress("setup: waiting for a leader");
        self.wait_converged(Duration::from_secs(60))
            .map_err(|e| format!("the fresh cluster did not elect a leader: {e}"))?;
        let workload: Box<dyn Workload> = match self.config.workload {
            WorkloadKind::Register => {
                Box::new(Register::new(self.config.register_keys, REGISTER_OPS_PER_KEY))
            }
            WorkloadKind::Bank => Box::new(Bank::new(BANK_ACCOUNTS, BANK_INITIAL_BALANCE)),
        };
        workload.setup(&self.addrs())?;

        let options = ClientOptions {
            clients: self.config.clients,
            op_timeout: self.config.op_timeout,
            connect_timeout: Duration::from_secs(1),
            think_max: self.config.think_max,
            retry_window: self.config.retry_window,
            seed: self.config.seed,
        };
        let started = Instant::now();
        let recorder = Recorder::new(started);
        let until = started + self.config.duration;
        let stop = AtomicBool::new(false);
        let targets = RwLock::new(self.addrs());
        self.members.start_clock(started);
        std::thread::scope(|scope| {
            for index in 0..self.config.clients {
                let rng = ChaCha8Rng::seed_from_u64(self.config.seed.wrapping_add(1 + index as u64));
                let clients = workload::Clients {
                    workload: &*workload,
                    nodes: &targets,
                    recorder: &recorder,
                    options: &options,
                    stop: &stop,
                    until,
                };
                scope.spawn(move || workload::client_loop(index, &clients, rng));
            }
            self.nemesis_loop(schedule, &recorder, started, until, &targets, progress);
            stop.store(true, Ordering::Relaxed);
            progress("workload: waiting for the last operations to complete");
        });

        progress("healing: network, paused and stopped nodes");
        let healed_at = recorder.now_ns();
        self.heal_everything();
        progress("converging: waiting until every node agrees");
        if let Err(e) = self.wait_converged(CONVERGE_DEADLINE) {
            self.incidents.push(format!(
                "the cluster did not converge within {CONVERGE_DEADLINE:?} after healing: {e}"
            ));
        }
        let converged = Duration::from_nanos(recorder.now_ns() - healed_at);
        progress(&format!("final reads (converged {:.1}s after healing)", converged.as_secs_f64()));
        let addrs = targets.read().expect("targets lock").clone();
        let final_ops = workload.final_ops();
        for (n, op) in final_ops.iter().enumerate() {
            let answered = workload::run_recorded_until_answered(
                &*workload,
                op,
                FINAL_PROCESS_BASE + n as u64,
                &addrs,
                &recorder,
                &options,
                Duration::from_secs(30),
            );
            if !answered {
                self.incidents.push(format!("final {} {:?} got no answer after healing", op.f, op.key));
                break;
            }
        }
        if self.config.nemeses.contains(&FaultKind::Membership) {
            self.final_configuration = self.members.final_configuration(&self.servers);
        }
        for server in &mut self.servers {
            if let Some(how) = server.reap() {
                self.incidents.push(format!(
                    "node {} exited on its own ({how}): {}",
                    server.id,
                    tail(&server.log, 3)
                ));
            }
            server.kill();
        }
        let recorded = recorder.take();
        self.finish(recorded, progress)
    }

    /// Runs the schedule on this thread while the clients run on theirs.
    fn nemesis_loop(
        &mut self,
        schedule: &[Cycle],
        recorder: &Recorder,
        started: Instant,
        until: Instant,
        targets: &RwLock<Vec<SocketAddr>>,
        progress: &mut dyn FnMut(&str),
    ) {
        let mut cycles = schedule.iter().peekable();
        // Faults in force: (index into self.faults, the fault).
        let mut active: Vec<(usize, Fault, Option<usize>)> = Vec::new();
        let mut heal_at: Option<Duration> = None;
        let mut last_progress = Instant::now() - Duration::from_secs(10);
        while Instant::now() < until && !self.interrupted() {
            let now = started.elapsed();
            if heal_at.is_some_and(|h| now >= h) {
                // In injection order: a node paused and then cut off wakes up while it is
                // still cut off, believing what it believed before — the false leader.
                let mut healing = std::mem::take(&mut active);
                // Membership last: its changes need a majority, which the other faults
                // of the cycle may be holding down.
                healing.sort_by_key(|(_, fault, _)| fault.kind() == FaultKind::Membership);
                let mut repairs: Vec<(usize, usize, Instant, bool)> = Vec::new();
                let last = healing.len().saturating_sub(1);
                for (n, (record, fault, node)) in healing.into_iter().enumerate() {
                    let note = self.heal(&fault, node, targets);
                    if fault.kind() == FaultKind::Pause && n < last {
                        // Give the woken node time to act on its stale view before the
                        // rest heals.
                        std::thread::sleep(RESUME_BEFORE_HEAL);
                    }
                    self.faults[record].healed_s = Some(recorder.now_ns() as f64 / 1e9);
                    self.add_note(record, note);
                    if let Some(i) = node.filter(|_| fault.kind().damages_storage()) {
                        if let Some((restarted, recovering_at_restart)) = self.restarts.remove(&i) {
                            let repair =
                                Repair { node: i as u32 + 1, recovering_at_restart, repaired_after_s: None };
                            self.faults[record].repair = Some(repair);
                            repairs.push((record, i, restarted, recovering_at_restart));
                        }
                    }
                }
                // Only once the whole cycle healed: repair needs every other member.
                for (record, i, restarted, recovering_at_restart) in repairs.drain(..) {
                    let (note, took) = self.await_repair(i, restarted, recovering_at_restart);
                    if let Some(repair) = &mut self.faults[record].repair {
                        repair.repaired_after_s = took.map(|d| d.as_secs_f64());
                    }
                    self.add_note(record, Some(note));
                }
                heal_at = None;
            }
            if heal_at.is_none() && cycles.peek().is_some_and(|c| now >= c.at) {
                let cycle = cycles.next().expect("peeked");
                // "The leader" is the leader when the cycle starts, for every fault of
                // the cycle (once paused, it no longer answers to say so).
                let leader = self.leader();
                for fault in &cycle.faults {
                    let (description, node, note) = self.inject(fault, leader, targets);
                    self.faults.push(FaultRecord {
                        kind: fault.kind().name().into(),
                        description,
                        injected_s: recorder.now_ns() as f64 / 1e9,
                        healed_s: None,
                        recovery_after_inject_s: None,
                        recovery_after_heal_s: None,
                        note,
                        repair: None,
                    });
                    active.push((self.faults.len() - 1, fault.clone(), node));
                }
                heal_at = Some(cycle.heal_at);
            }
            self.reap_unexpected_exits();
            if last_progress.elapsed() >= Duration::from_secs(1) {
                last_progress = Instant::now();
                let (ok, fail, info) = recorder.counts();
                let faults: Vec<String> =
                    active.iter().map(|(r, _, _)| self.faults[*r].description.clone()).collect();
                progress(&format!(
                    "running {:>4.0}s/{:.0}s  ok {ok} fail {fail} info {info}  faults: {}",
                    now.as_secs_f64(),
                    self.config.duration.as_secs_f64(),
                    if faults.is_empty() { "none".into() } else { faults.join(" + ") }
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Interrupted or out of time with faults in force: heal them now.
        active.sort_by_key(|(_, fault, _)| fault.kind() == FaultKind::Membership);
        for (record, fault, node) in active.drain(..) {
            let _ = self.heal(&fault, node, targets);
            self.faults[record].healed_s = Some(recorder.now_ns() as f64 / 1e9);
        }
    }

    /// A server that exited without the nemesis killing it is a finding; it is
    /// restarted so the run goes on.
    fn reap_unexpected_exits(&mut self) {
        for server in &mut self.servers {
            if matches!(server.state, State::Running | State::Paused) {
                if let Some(how) = server.reap() {
                    self.incidents.push(format!(
                        "node {} exited on its own ({how}): {}",
                        server.id,
                        tail(&server.log, 3)
                    ));
                    if let Err(e) = server.start(&self.config.binary) {
                        self.incidents.push(format!("node {} could not be restarted: {e}", server.id));
                    }
                }
            }
        }
    }

    /// The node that leads now, by its own account (and a majority behind it).
    fn leader(&self) -> Option<usize> {
        self.servers.iter().position(|s| {
            s.state == State::Running
                && s.status().is_some_and(|st| {
                    st.get("is_leader") == Some(&Json::Bool(true))
                        && st.get("quorum_connected") == Some(&Json::Bool(true))
                })
        })
    }

    fn resolve(target: Target, leader: Option<usize>) -> (usize, bool) {
        match target {
            Target::Node(i) => (i, leader == Some(i)),
            Target::Leader => match leader {
                Some(i) => (i, true),
                None => (0, false),
            },
        }
    }

    fn label(i: usize, leader: bool) -> String {
        format!("n{}{}", i + 1, if leader { " (leader)" } else { "" })
    }

    /// Injects one fault: (what was done, the node it hit, a note).
    fn inject(
        &mut self,
        fault: &Fault,
        leader: Option<usize>,
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> (String, Option<usize>, Option<String>) {
        let result = match fault {
            Fault::Membership { action, leader: on_leader, pick } => {
                let servers = &mut self.servers;
                let done =
                    self.members.inject(*action, *on_leader, *pick, leader, servers, self.network, targets);
                return (done, None, None);
            }
            Fault::Kill { target } | Fault::Pause { target } => {
                let (i, leader) = Self::resolve(*target, leader);
                let verb = fault.kind().name();
                let server = &mut self.servers[i];
                if server.state != State::Running {
                    return (
                        format!("{verb} {} (skipped: {:?})", Self::label(i, leader), server.state),
                        None,
                        None,
                    );
                }
                if fault.kind() == FaultKind::Kill {
                    server.kill();
                } else {
                    server.pause();
                }
                return (format!("{verb} {}", Self::label(i, leader)), Some(i), None);
            }
            Fault::Partition { shape, order } => {
                let cuts = nemesis::partition_cuts(*shape, order, leader);
                let links: Vec<String> = cuts.iter().map(|(a, b)| format!("{}->{}", a + 1, b + 1)).collect();
                let leader_text = leader.map_or("no leader".into(), |l| format!("leader n{}", l + 1));
                let description = format!("{fault} [{leader_text}; cut {}]", links.join(" "));
                nemesis::apply_cuts(self.network, &cuts).map(|_| description)
            }
            Fault::Loss { probability } => {
                nemesis::apply_loss(self.network, *probability).map(|_| fault.to_string())
            }
            Fault::Delay { ms, rate_kbit } => {
                let description = match self.delay_method {
                    DelayMethod::Netem => format!("delay {ms} ms ± {} ms (netem)", ms / 5),
                    DelayMethod::HtbRateLimit => {
                        format!("delay by rate limit {rate_kbit} kbit/s (htb, no netem)")
                    }
                };
                nemesis::apply_delay(self.network, self.delay_method, *ms, *rate_kbit).map(|_| description)
            }
            Fault::Corrupt { target, .. } | Fault::Wipe { target } => {
                let verb = fault.kind().name();
                let leader = leader == Some(*target);
                let server = &self.servers[*target];
                if server.state != State::Running {
                    return (format!("{verb} n{} (skipped: {:?})", target + 1, server.state), None, None);
                }
                if !server.join.is_empty() {
                    // A joined node comes back by `--join` and its `JOINED` file; with the
                    // file gone it would ask to be admitted again, under an id in use.
                    return (format!("{verb} n{} (skipped: a joined node)", target + 1), None, None);
                }
                if let Some(other) = self.unrepaired.iter().find(|&&j| j != *target) {
                    let why = format!("n{}'s storage is not repaired yet", other + 1);
                    return (format!("{verb} n{} (skipped: {why})", target + 1), None, None);
                }
                self.unrepaired.insert(*target);
                let server = &mut self.servers[*target];
                server.kill();
                let description = format!("{verb} {}", Self::label(*target, leader));
                let Fault::Corrupt { checkpoint, salt, .. } = fault else {
                    let keep_identity = self.harness_bug == Some(HarnessBug::WipeKeepsIdentity);
                    return match nemesis::wipe(&server.data_dir, keep_identity) {
                        Ok(w) => (
                            description,
                            Some(*target),
                            Some(format!("deleted the data directory: {} files, {} bytes", w.files, w.bytes)),
                        ),
                        Err(e) => {
                            // The node is down and restarts at heal either way; a wipe
                            // that deleted nothing proves nothing, so the run says so.
                            self.incidents.push(format!("could not wipe node {}: {e}", target + 1));
                            (description, Some(*target), Some(format!("nothing deleted: {e}")))
                        }
                    };
                };
                return match nemesis::corrupt(&server.data_dir, *checkpoint, *salt) {
                    Ok(d) => (
                        description,
                        Some(*target),
                        Some(format!("flipped {} bytes at {} offset {}", d.bytes, d.file, d.offset)),
                    ),
                    Err(e) => (description, Some(*target), Some(format!("nothing damaged: {e}"))),
                };
            }
        };
        match result {
            Ok(description) => (description, None, None),
            Err(e) => {
                self.incidents.push(format!("could not inject {fault}: {e}"));
                (format!("{fault} (failed)"), None, None)
            }
        }
    }

    /// Heals one fault; returns a note worth reporting.
    fn heal(
        &mut self,
        fault: &Fault,
        node: Option<usize>,
        targets: &RwLock<Vec<SocketAddr>>,
    ) -> Option<String> {
        match fault.kind() {
            FaultKind::Membership => self.members.heal(&mut self.servers, self.network, targets),
            FaultKind::Kill | FaultKind::Corrupt | FaultKind::Wipe => {
                let i = node?;
                let server = &mut self.servers[i];
                if server.state != State::Down {
                    return None;
                }
                // Where this start's lines begin in the node's log (appended across starts).
                let log_from = std::fs::metadata(&server.log).map_or(0, |m| m.len());
                // The operator's accident restarts the node exactly as before, with no flag;
                // only the planted bug says `--bootstrap` (it votes at once).
                let flags: &[&str] = match fault.kind() {
                    FaultKind::Wipe if self.harness_bug == Some(HarnessBug::WipeBootstraps) => {
                        &["--bootstrap"]
                    }
                    _ => &[],
                };
                let started = server.start_with(&self.config.binary, flags);
                let restarted = Instant::now();
                match started {
                    Ok(()) if fault.kind().damages_storage() => {
                        // It must come back in recovery: `recovering` in the status or, if
                        // it repaired before we asked (it can take well under a second),
                        // what it logged at start.
                        let recovering = server.status().and_then(|s| s.get("recovering").cloned());
                        let logged = |needle: &str| {
                            std::fs::read(&server.log).ok().is_some_and(|log| {
                                let since = &log[(log_from as usize).min(log.len())..];
                                String::from_utf8_lossy(since).contains(needle)
                            })
                        };
                        let recovering = recovering.is_some_and(|r| !r.is_null());
                        let (came_back, note) = if fault.kind() == FaultKind::Corrupt {
                            match recovering {
                                true => (true, "damage detected at restart"),
                                false if logged("storage damage found") => {
                                    (true, "damage detected at restart (in its log)")
                                }
                                false => (false, "restarted without reporting damage"),
                            }
                        } else {
                            // Only its own start decides: a node that votes at once may be
                            // told by its peers a moment later that it must recover, and the
                            // status then says `recovering` too (the second defence, which
                            // must not hide the first one's failure).
                            match (recovering, logged(NEW_REPLICA_LOG)) {
                                (true, true) => (true, "came back as a new replica, recovering"),
                                (false, true) => (true, "came back as a new replica (in its log)"),
                                (true, false) => (
                                    false,
                                    "came back voting at once; recovering only once its peers told it to",
                                ),
                                (false, false) => (false, "came back voting at once, not as a new replica"),
                            }
                        };
                        if fault.kind() == FaultKind::Wipe && !came_back {
                            // A node must never take an empty directory for intact
                            // storage: voting from it, it may break promises it forgot.
                            self.incidents.push(format!(
                                "node {} restarted on a wiped data directory without recovering from its peers",
                                i + 1
                            ));
                        }
                        self.restarts.insert(i, (restarted, came_back));
                        Some(note.to_string())
                    }
                    Ok(()) => None,
                    Err(e) => {
                        if fault.kind().damages_storage() {
                            self.incidents.push(format!(
                                "node {} did not restart after its {} fault: {e}",
                                i + 1,
                                fault.kind().name()
                            ));
                        }
                        Some(format!("did not restart: {e}"))
                    }
                }
            }
            FaultKind::Pause => {
                self.servers[node?].resume();
                None
            }
            FaultKind::Partition | FaultKind::Loss | FaultKind::Delay => {
                if let Err(e) = self.network.heal() {
                    self.incidents.push(format!("could not heal the network: {e}"));
                }
                None
            }
        }
    }

    fn add_note(&mut self, record: usize, note: Option<String>) {
        if let Some(note) = note {
            let r = &mut self.faults[record];
            r.note = Some(r.note.take().map_or(note.clone(), |n| format!("{n}; {note}")));
        }
    }

    /// After a corrupted or wiped node restarted and its cycle healed: it must stop saying
    /// it is recovering (it repaired from its peers and votes again). Returns the note and
    /// the time from its restart until then. A node that did not come back recovering has
    /// nothing to time (the note at its restart says so).
    fn await_repair(
        &mut self,
        i: usize,
        restarted: Instant,
        recovering_at_restart: bool,
    ) -> (String, Option<Duration>) {
        if !recovering_at_restart {
            self.unrepaired.remove(&i);
            return ("no repair to wait for".into(), None);
        }
        let started = Instant::now();
        while started.elapsed() < REPAIR_DEADLINE {
            if let Some(status) = self.servers[i].status() {
                if status.get("recovering").is_none_or(Json::is_null) {
                    let took = restarted.elapsed();
                    self.unrepaired.remove(&i);
                    let note = format!(
                        "repaired from peers, voting again {:.1}s after it restarted",
                        took.as_secs_f64()
                    );
                    return (note, Some(took));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.incidents
            .push(format!("node {} still recovering {REPAIR_DEADLINE:?} after its cycle healed", i + 1));
        (format!("still recovering after {REPAIR_DEADLINE:?}"), None)
    }

    /// Heals the network, resumes paused nodes and starts stopped ones. A node that will
    /// not start (e.g. refusing damaged data) is an incident.
    fn heal_everything(&mut self) {
        if let Err(e) = self.network.heal() {
            self.incidents.push(format!("could not heal the network: {e}"));
        }
        for server in &mut self.servers {
            match server.state.clone() {
                State::Paused => server.resume(),
                State::Down | State::Exited(_) => {
                    if let Err(e) = server.start(&self.config.binary) {
                        self.incidents.push(format!("after healing, node {} did not start: {e}", server.id));
                    }
                }
                State::Running | State::Retired => {}
            }
        }
    }

    /// Waits until every running node follows the same leader, which leads with a
    /// majority, and all have applied the same prefix.
    fn wait_converged(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let statuses: Vec<Option<Json>> =
                self.servers.iter().filter(|s| s.state == State::Running).map(|s| s.status()).collect();
            let leaders: Vec<Option<u64>> =
                statuses.iter().map(|s| s.as_ref().and_then(|s| s.get("leader")?.as_u64())).collect();
            let applied: Vec<Option<u64>> =
                statuses.iter().map(|s| s.as_ref().and_then(|s| s.get("applied_upto")?.as_u64())).collect();
            let leader_ok =
                leaders.first().is_some_and(|l| l.is_some()) && leaders.windows(2).all(|w| w[0] == w[1]);
            let leads =
                leader_ok && self.leader().is_some_and(|i| Some(self.servers[i].id as u64) == leaders[0]);
            let applied_ok = applied.iter().all(Option::is_some) && applied.windows(2).all(|w| w[0] == w[1]);
            let repaired = statuses.iter().flatten().all(|s| s.get("recovering").is_none_or(Json::is_null));
            if leads && applied_ok && repaired {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("leaders {leaders:?}, applied {applied:?}, repaired {repaired}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn finish(
        &mut self,
        recorded: workload::Recorded,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Report, String> {
        let out = &self.config.out;
        let history = History { events: recorded.events };
        let file = std::fs::File::create(out.join("history.jsonl"))
            .map_err(|e| format!("cannot write the history: {e}"))?;
        history
            .write_jsonl(std::io::BufWriter::new(file))
            .map_err(|e| format!("cannot write the history: {e}"))?;
        progress(&format!("checking {} events", history.events.len()));
        let budget = self.config.check_budget;
        let checks = match self.config.workload {
            WorkloadKind::Register => {
                vec![report::check_linearizable(ModelKind::Kv, &history.events, budget)]
            }
            WorkloadKind::Bank => {
                let initial = Bank::new(BANK_ACCOUNTS, BANK_INITIAL_BALANCE).initial();
                let mut linearizable = report::check_linearizable(ModelKind::Bank, &history.events, budget);
                if linearizable.verdict == "unknown" {
                    // One partition holding every operation: a long bank history is beyond
                    // the search. The bank checker and the final audit decide; a violation
                    // found would still fail the run.
                    linearizable.verdict = "unknown (not counted)".into();
                }
                vec![
                    report::check_bank_invariants(&history.events, initial.clone()),
                    report::audit_bank_final(&history.events, &initial),
                    linearizable,
                ]
            }
        };
        for f in &mut self.faults {
            let ns = |s: f64| (s * 1e9) as u64;
            f.recovery_after_inject_s =
                report::recovery_after(&recorded.acks, ns(f.injected_s)).map(|d| d.as_secs_f64());
            f.recovery_after_heal_s = f
                .healed_s
                .and_then(|h| report::recovery_after(&recorded.acks, ns(h)))
                .map(|d| d.as_secs_f64());
        }
        let mut files = vec!["history.jsonl".to_string(), "report.txt".into(), "report.json".into()];
        files.extend(membership::node_files(&self.config.out.join("nodes")));
        let passed = self.incidents.is_empty()
            && checks.iter().all(|c| c.verdict != "fail" && c.verdict != "unknown")
            && !self.interrupted();
        if self.interrupted() {
            self.incidents.push("interrupted before the end".into());
        }
        let report = Report {
            workload: self.config.workload.name().into(),
            seed: self.config.seed,
            nodes: self.config.nodes,
            clients: self.config.clients,
            duration_s: self.config.duration.as_secs_f64(),
            nemeses: self.config.nemeses.iter().map(|k| k.name().to_string()).collect(),
            delay_method: match self.delay_method {
                _ if !self.config.nemeses.contains(&FaultKind::Delay) => "n/a".into(),
                DelayMethod::Netem => "netem".into(),
                DelayMethod::HtbRateLimit => "htb rate limit (no netem in this kernel)".into(),
            },
            planted_bug: self.config.planted_bug.clone(),
            operations: report::count_operations(&history.events),
            faults: std::mem::take(&mut self.faults),
            membership: std::mem::take(&mut self.members.changes),
            final_configuration: self.final_configuration.take(),
            checks,
            incidents: std::mem::take(&mut self.incidents),
            files,
            passed,
        };
        report.write(out)?;
        Ok(report)
    }
}

//! The nemesis: a schedule of faults drawn from the seed, and how each is injected into
//! and healed from the real processes and network.
//!
//! The schedule is a list of *cycles*: a quiet time, then one fault (sometimes two of
//! different kinds at once) held for a while, then healed. Which faults, when, how long,
//! which shape and which node (by position, or "the leader") all come from the seed, so a
//! run prints its schedule and the same seed gives the same schedule; what a fault hits
//! at run time (who leads just then) is recorded as it happens.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::hosts::Network;

/// Kinds of fault, each switchable on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// SIGKILL a server, restart it at heal.
    Kill,
    /// SIGSTOP a server, SIGCONT at heal (the paused, falsely-still-leading node).
    Pause,
    /// Cut links between nodes (several shapes).
    Partition,
    /// Drop a share of every node's incoming peer packets (iptables `statistic`).
    Loss,
    /// Slow the links: `tc netem` delay where the kernel has it, else a rate limit that
    /// delays by queueing (see [`DelayMethod`]).
    Delay,
    /// SIGKILL a server, damage bytes in its log or checkpoint, restart it at heal.
    Corrupt,
    /// SIGKILL a server, delete its whole data directory (a replaced disk, a container
    /// started without its volume), restart it at heal with no flag at all.
    Wipe,
    /// Change the membership through the log: a fresh node joins as a learner and is
    /// promoted, a voter (sometimes the leader) is removed and stopped, or a killed voter
    /// is replaced by a fresh node (see [`crate::membership`]).
    Membership,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Delay,
        FaultKind::Corrupt,
        FaultKind::Wipe,
        FaultKind::Membership,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Delay => "delay",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Wipe => "wipe",
            FaultKind::Membership => "membership",
        }
    }

    /// Whether this fault damages a node's storage. Such a node must repair from its
    /// peers before it votes again, so at most one node's storage is damaged at a time:
    /// a majority always keeps a good copy of every record, and whatever the checkers
    /// find is a real bug rather than a fault no protocol can survive.
    pub fn damages_storage(self) -> bool {
        matches!(self, FaultKind::Corrupt | FaultKind::Wipe)
    }

    pub fn parse(text: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == text).ok_or_else(|| {
            format!(
                "unknown nemesis {text:?}; choose from kill, pause, partition, loss, delay, corrupt, wipe, membership"
            )
        })
    }
}

/// Which node a fault hits: the leader at injection time, or one by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Leader,
    Node(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// A random minority cut off from the majority, both ways.
    MajorityMinority,
    /// The leader cut off from everyone, both ways.
    IsolateLeader,
    /// The leader hears no one but is heard by all (`inbound`), or the reverse.
    OneWay { inbound: bool },
    /// Two halves that each see one middle node but not each other (the Omni-Paxos
    /// chained shape; for 3 nodes, a chain 1-2-3).
    Bridge,
}

/// One fault as planned.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fault {
    Kill {
        target: Target,
    },
    Pause {
        target: Target,
    },
    Partition {
        shape: Shape,
        order: Vec<usize>,
    },
    Loss {
        probability: f64,
    },
    Delay {
        ms: u64,
        rate_kbit: u64,
    },
    Corrupt {
        target: usize,
        checkpoint: bool,
        salt: u64,
    },
    Wipe {
        target: usize,
    },
    /// `leader`: a removal or replacement hits the leader; else the voter at `pick`
    /// (modulo the voters then). What is possible depends on the voters at injection
    /// (3 to 5 are kept), so the action may turn into another one, as recorded.
    Membership {
        action: MemberAction,
        leader: bool,
        pick: usize,
    },
}

/// What the membership nemesis does in one cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberAction {
    /// Inject: a fresh node joins as a learner. Heal: it is promoted once caught up.
    Add,
    /// Inject: a voter is removed (the leader hands over first), then stopped.
    Remove,
    /// Inject: a voter is killed. Heal: it is removed, and a fresh node joins in its
    /// place and is promoted.
    Replace,
}

impl fmt::Display for MemberAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberAction::Add => "add",
            MemberAction::Remove => "remove",
            MemberAction::Replace => "replace",
        })
    }
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Kill { .. } => FaultKind::Kill,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::Loss { .. } => FaultKind::Loss,
            Fault::Delay { .. } => FaultKind::Delay,
            Fault::Corrupt { .. } => FaultKind::Corrupt,
            Fault::Wipe { .. } => FaultKind::Wipe,
            Fault::Membership { .. } => FaultKind::Membership,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = |t: &Target| match t {
            Target::Leader => "leader".to_string(),
            Target::Node(i) => format!("n{}", i + 1),
        };
        match self {
            Fault::Kill { target: t } => write!(f, "kill {}", target(t)),
            Fault::Pause { target: t } => write!(f, "pause {}", target(t)),
            Fault::Partition { shape, .. } => match shape {
                Shape::MajorityMinority => write!(f, "partition majority/minority"),
                Shape::IsolateLeader => write!(f, "partition isolate-leader"),
                Shape::OneWay { inbound: true } => write!(f, "partition one-way (leader hears no one)"),
                Shape::OneWay { inbound: false } => write!(f, "partition one-way (no one hears the leader)"),
                Shape::Bridge => write!(f, "partition bridge"),
            },
            Fault::Loss { probability } => write!(f, "loss {:.0}%", probability * 100.0),
            Fault::Delay { ms, rate_kbit } => write!(f, "delay {ms} ms (or {rate_kbit} kbit/s)"),
            Fault::Corrupt { target, checkpoint, .. } => {
                write!(f, "corrupt n{} {}", target + 1, if *checkpoint { "checkpoint" } else { "log" })
            }
            Fault::Wipe { target } => write!(f, "wipe n{}", target + 1),
            Fault::Membership { action: MemberAction::Add, .. } => write!(f, "membership add"),
            Fault::Membership { action, leader: true, .. } => write!(f, "membership {action} leader"),
            Fault::Membership { action, pick, .. } => write!(f, "membership {action} voter #{pick}"),
        }
    }
}

/// One cycle of the schedule: faults injected at `at`, healed at `heal_at` (from the
/// start of the workload).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cycle {
    #[serde(serialize_with = "secs")]
    pub at: Duration,
    #[serde(serialize_with = "secs")]
    pub heal_at: Duration,
    pub faults: Vec<Fault>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Timing of the schedule.
#[derive(Clone, Debug)]
pub struct Timing {
    /// No fault before this (the workload starts clean).
    pub warmup: Duration,
    /// Every fault is healed at least this long before the workload ends.
    pub cooldown: Duration,
    pub quiet: (Duration, Duration),
    pub hold: (Duration, Duration),
    /// Chance that a cycle combines two faults of different kinds.
    pub combine_probability: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            warmup: Duration::from_secs(3),
            cooldown: Duration::from_secs(3),
            quiet: (Duration::from_millis(1500), Duration::from_secs(4)),
            hold: (Duration::from_secs(3), Duration::from_secs(8)),
            combine_probability: 0.3,
        }
    }
}

fn between(rng: &mut ChaCha8Rng, (lo, hi): (Duration, Duration)) -> Duration {
    Duration::from_millis(rng.gen_range(lo.as_millis() as u64..=hi.as_millis() as u64))
}

/// Draws the whole schedule from `seed`.
pub fn schedule(
    seed: u64,
    kinds: &[FaultKind],
    nodes: usize,
    duration: Duration,
    timing: &Timing,
) -> Vec<Cycle> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut cycles = Vec::new();
    if kinds.is_empty() {
        return cycles;
    }
    let mut t = timing.warmup;
    loop {
        let hold = between(&mut rng, timing.hold);
        if t + hold + timing.cooldown > duration {
            return cycles;
        }
        let first = *kinds.choose(&mut rng).expect("kinds is not empty");
        let mut faults = vec![draw(&mut rng, first, nodes)];
        if kinds.len() > 1 && rng.gen_bool(timing.combine_probability) {
            // Never two storage faults at once: two damaged nodes of three would leave
            // no majority with a good copy (see `FaultKind::damages_storage`).
            let others: Vec<FaultKind> = kinds
                .iter()
                .copied()
                .filter(|&k| k != first && !(k.damages_storage() && first.damages_storage()))
                .collect();
            if let Some(&second) = others.choose(&mut rng) {
                faults.push(draw(&mut rng, second, nodes));
            }
        }
        cycles.push(Cycle { at: t, heal_at: t + hold, faults });
        t += hold + between(&mut rng, timing.quiet);
    }
}

fn draw(rng: &mut ChaCha8Rng, kind: FaultKind, nodes: usize) -> Fault {
    let target = |rng: &mut ChaCha8Rng| {
        if rng.gen_bool(0.5) {
            Target::Leader
        } else {
            Target::Node(rng.gen_range(0..nodes))
        }
    };
    match kind {
        FaultKind::Kill => Fault::Kill { target: target(rng) },
        FaultKind::Pause => Fault::Pause { target: target(rng) },
        FaultKind::Partition => {
            let shape = match rng.gen_range(0..4) {
                0 => Shape::MajorityMinority,
                1 => Shape::IsolateLeader,
                2 => Shape::OneWay { inbound: rng.gen_bool(0.5) },
                _ => Shape::Bridge,
            };
            let mut order: Vec<usize> = (0..nodes).collect();
            order.shuffle(rng);
            Fault::Partition { shape, order }
        }
        FaultKind::Loss => Fault::Loss { probability: rng.gen_range(5..=30) as f64 / 100.0 },
        FaultKind::Delay => Fault::Delay { ms: rng.gen_range(20..=200), rate_kbit: rng.gen_range(96..=384) },
        FaultKind::Corrupt => {
            Fault::Corrupt { target: rng.gen_range(0..nodes), checkpoint: rng.gen_bool(0.3), salt: rng.gen() }
        }
        // Like corrupt, a node by position, which may or may not be the leader then.
        FaultKind::Wipe => Fault::Wipe { target: rng.gen_range(0..nodes) },
        FaultKind::Membership => {
            let action = *[MemberAction::Add, MemberAction::Remove, MemberAction::Replace]
                .choose(rng)
                .expect("not empty");
            Fault::Membership { action, leader: rng.gen_bool(0.4), pick: rng.gen_range(0..5) }
        }
    }
}

/// How the delay nemesis slows links on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DelayMethod {
    /// `tc qdisc netem delay D`: every packet waits D (the real thing).
    Netem,
    /// No netem in this kernel. `tc htb` limits each node's egress to the drawn rate
    /// with a 200-packet FIFO: packets wait in the queue, so the delay grows with the
    /// traffic (a congested link) rather than being a fixed D, and a full queue drops.
    HtbRateLimit,
}

/// The directed links `(from, to)` a partition cuts, given the leader at injection.
pub fn partition_cuts(shape: Shape, order: &[usize], leader: Option<usize>) -> Vec<(usize, usize)> {
    let n = order.len();
    let both = |a: &[usize], b: &[usize]| {
        let mut cuts = Vec::new();
        for &x in a {
            for &y in b {
                cuts.push((x, y));
                cuts.push((y, x));
            }
        }
        cuts
    };
    let leader = leader.unwrap_or(order[0]);
    let others: Vec<usize> = order.iter().copied().filter(|&i| i != leader).collect();
    match shape {
        Shape::MajorityMinority => {
            let (minority, majority) = order.split_at(n / 2);
            both(minority, majority)
        }
        Shape::IsolateLeader => both(&[leader], &others),
        Shape::OneWay { inbound: true } => others.iter().map(|&o| (o, leader)).collect(),
        Shape::OneWay { inbound: false } => others.iter().map(|&o| (leader, o)).collect(),
        Shape::Bridge => {
            // order[0] is the middle; the rest split into two halves.
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            both(a, b)
        }
    }
}

/// Applies a partition: each cut (from, to) is a DROP at `to` of packets from `from`.
/// Clients (the host) are never cut off.
pub fn apply_cuts(network: &Network, cuts: &[(usize, usize)]) -> Result<(), String> {
    for &(from, to) in cuts {
        network.drop_from(to, from)?;
    }
    Ok(())
}

/// Every node drops `probability` of what its peers send it.
pub fn apply_loss(network: &Network, probability: f64) -> Result<(), String> {
    let subnet = format!("{}/24", network.node_ip(0));
    let host = network.host_ip().to_string();
    let p = format!("{probability:.3}");
    for i in 0..network.nodes {
        // Clients' packets leave the chain first (iptables takes one `-s` per rule).
        network.add_rule(i, &["-s", &host, "-j", "RETURN"])?;
        let rule = ["-s", &subnet, "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"];
        network.add_rule(i, &rule)?;
    }
    Ok(())
}

/// Slows every node's outgoing traffic.
pub fn apply_delay(network: &Network, method: DelayMethod, ms: u64, rate_kbit: u64) -> Result<(), String> {
    for i in 0..network.nodes {
        match method {
            DelayMethod::Netem => {
                let delay = format!("{ms}ms");
                let jitter = format!("{}ms", ms / 5);
                network.exec(
                    i,
                    &["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &delay, &jitter],
                )?;
            }
            DelayMethod::HtbRateLimit => {
                let rate = format!("{rate_kbit}kbit");
                network.exec(
                    i,
                    &["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10"],
                )?;
                network.exec(
                    i,
                    &[
                        "tc", "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb",
                        "rate", &rate, "ceil", &rate,
                    ],
                )?;
                network.exec(
                    i,
                    &[
                        "tc", "qdisc", "add", "dev", "eth0", "parent", "1:10", "handle", "10:", "pfifo",
                        "limit", "200",
                    ],
                )?;
            }
        }
    }
    Ok(())
}

/// What the corrupt nemesis did to a file.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    pub file: String,
    pub offset: u64,
    pub bytes: usize,
}

/// Bytes flipped per corruption.
const CORRUPT_BYTES: usize = 8;

fn files_in(dir: &Path, extension: &str) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len())))
        .collect();
    files.sort();
    files
}

/// Flips bytes in the middle of the node's (stopped) data: the checkpoint if asked and
/// there is one, else the largest log segment. The middle, between a quarter and three
/// quarters of the file, because damage there is followed by valid records, which is
/// what tells it apart from a torn write at the tail (that one recovery may cut off).
pub fn corrupt(data_dir: &Path, checkpoint: bool, salt: u64) -> Result<Damage, String> {
    let checkpoints = files_in(&data_dir.join("checkpoint"), "ckpt");
    let segments = files_in(&data_dir.join("wal"), "log");
    let largest = |files: &[(PathBuf, u64)]| files.iter().max_by_key(|f| f.1).cloned();
    let (file, len) = match (checkpoint, largest(&checkpoints), largest(&segments)) {
        (true, Some(c), _) => c,
        (_, _, Some(s)) => s,
        (_, Some(c), None) => c,
        (_, None, None) => return Err(format!("no log or checkpoint under {}", data_dir.display())),
    };
    if len < 256 {
        return Err(format!("{} is too small to damage in the middle ({len} bytes)", file.display()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(salt);
    let offset = rng.gen_range(len / 4..len * 3 / 4);
    let mut bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    for b in &mut bytes[offset as usize..offset as usize + CORRUPT_BYTES] {
        *b ^= rng.gen_range(1..=255u8);
    }
    std::fs::write(&file, &bytes).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let name = file.strip_prefix(data_dir).unwrap_or(&file).display().to_string();
    Ok(Damage { file: name, offset, bytes: CORRUPT_BYTES })
}

/// What the wipe nemesis deleted.
#[derive(Clone, Debug, Serialize)]
pub struct Wiped {
    pub files: u64,
    pub bytes: u64,
}

/// Deletes the node's (stopped) data directory and everything in it: the identity, the
/// log, the checkpoints and the damage marker. The node must come back from nothing, as
/// it would on a replaced disk or in a container started without its volume.
/// `keep_identity` is the planted harness bug `wipe-keeps-identity` only: the `IDENTITY`
/// file is put back alone.
pub fn wipe(data_dir: &Path, keep_identity: bool) -> Result<Wiped, String> {
    fn count(dir: &Path, wiped: &mut Wiped) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                count(&entry.path(), wiped);
            } else {
                wiped.files += 1;
                wiped.bytes += meta.len();
            }
        }
    }
    let mut wiped = Wiped { files: 0, bytes: 0 };
    count(data_dir, &mut wiped);
    if wiped.files == 0 {
        return Err(format!("{} holds no file to delete", data_dir.display()));
    }
    let identity_file = data_dir.join("IDENTITY");
    let identity = if keep_identity { std::fs::read(&identity_file).ok() } else { None };
    std::fs::remove_dir_all(data_dir).map_err(|e| format!("cannot delete {}: {e}", data_dir.display()))?;
    if let Some(identity) = identity {
        std::fs::create_dir_all(data_dir)
            .and_then(|()| std::fs::write(&identity_file, identity))
            .map_err(|e| format!("cannot put {} back: {e}", identity_file.display()))?;
    }
    Ok(wiped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_faults_are_healed_before_the_end() {
        let kinds = [FaultKind::Kill, FaultKind::Pause, FaultKind::Partition];
        let duration = Duration::from_secs(120);
        let a = schedule(7, &kinds, 3, duration, &Timing::default());
        assert_eq!(a, schedule(7, &kinds, 3, duration, &Timing::default()));
        assert_ne!(a, schedule(8, &kinds, 3, duration, &Timing::default()));
        assert!(a.len() >= 8, "{}", a.len());
        for c in &a {
            assert!(c.heal_at + Timing::default().cooldown <= duration);
            assert!(c.faults.iter().all(|f| kinds.contains(&f.kind())));
        }
        assert!(a.windows(2).all(|w| w[0].heal_at < w[1].at));
    }

    #[test]
    fn partition_shapes_cut_the_links_they_name() {
        let order = [2, 0, 1, 3, 4];
        // Majority/minority: {2,0} vs {1,3,4}, both ways.
        let cuts = partition_cuts(Shape::MajorityMinority, &order, None);
        assert_eq!(cuts.len(), 2 * 2 * 3);
        assert!(cuts.contains(&(2, 4)) && cuts.contains(&(4, 2)) && !cuts.contains(&(2, 0)));
        // Bridge: middle 2; halves {0,1} and {3,4}; the middle keeps every link.
        let cuts = partition_cuts(Shape::Bridge, &order, Some(4));
        assert!(cuts.iter().all(|&(a, b)| a != 2 && b != 2));
        assert!(cuts.contains(&(0, 3)) && cuts.contains(&(4, 1)) && !cuts.contains(&(0, 1)));
        // One way: no one hears the leader, the leader hears everyone.
        let cuts = partition_cuts(Shape::OneWay { inbound: false }, &order, Some(4));
        assert_eq!(cuts, vec![(4, 2), (4, 0), (4, 1), (4, 3)]);
        let cuts = partition_cuts(Shape::IsolateLeader, &[0, 1, 2], Some(1));
        assert_eq!(cuts.len(), 4);
    }

    #[test]
    fn corruption_lands_in_the_middle_of_the_largest_segment() {
        let dir = std::env::temp_dir().join(format!("synod-nemesis-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("wal")).unwrap();
        std::fs::write(dir.join("wal/1.log"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("wal/2.log"), vec![0u8; 4000]).unwrap();
        let damage = corrupt(&dir, true, 3).unwrap();
        assert_eq!(damage.file, "wal/2.log");
        assert!((1000..3000).contains(&damage.offset));
        let bytes = std::fs::read(dir.join("wal/2.log")).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), CORRUPT_BYTES);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wipe_deletes_the_whole_data_directory() {
        let dir = std::env::temp_dir().join(format!("synod-nemesis-wipe-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("wal")).unwrap();
        std::fs::write(dir.join("IDENTITY"), [1u8; 40]).unwrap();
        std::fs::write(dir.join("wal/1.log"), vec![0u8; 1000]).unwrap();
        let wiped = wipe(&dir, false).unwrap();
        assert_eq!((wiped.files, wiped.bytes), (2, 1040));
        assert!(!dir.exists());
        assert!(wipe(&dir, false).is_err(), "nothing left to wipe is an error, not a silent no-op");
    }

    #[test]
    fn storage_faults_are_never_drawn_together() {
        let kinds = [FaultKind::Kill, FaultKind::Corrupt, FaultKind::Wipe];
        let timing = Timing { combine_probability: 1.0, ..Timing::default() };
        for seed in 0..50 {
            for cycle in schedule(seed, &kinds, 3, Duration::from_secs(120), &timing) {
                let storage = cycle.faults.iter().filter(|f| f.kind().damages_storage()).count();
                assert!(storage <= 1, "seed {seed}: {:?}", cycle.faults);
            }
        }
        // Only the two storage kinds: a cycle holds one fault.
        let cycles = schedule(1, &[FaultKind::Corrupt, FaultKind::Wipe], 3, Duration::from_secs(60), &timing);
        assert!(!cycles.is_empty() && cycles.iter().all(|c| c.faults.len() == 1));
    }
}

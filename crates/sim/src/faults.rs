//! Swarm parameters (each seed draws its own fault mix) and the nemesis's choices.
//!
//! Swarm testing (Groce et al., ISSTA'12; TigerBeetle's VOPR): instead of one fault mix
//! for every run, each seed enables a random subset of fault kinds with random rates.
//! A few seeds run almost clean and reach deep protocol states; others run under heavy
//! fire. Together they cover more than any single well-tuned mix.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synod_core::Options;

use crate::network::{LinkParams, Partition};
use crate::{SimOptions, WorkloadKind};

/// Derives an independent 64-bit seed for stream `stream` of run `seed` (SplitMix64).
pub(crate) fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random streams of one run. One per concern, so that a change in how often one
/// concern draws does not reshuffle the others.
pub(crate) mod stream {
    pub const PARAMS: u64 = 1;
    pub const NETWORK: u64 = 2;
    pub const DISK: u64 = 3;
    pub const NEMESIS: u64 = 4;
    pub const CLIENTS: u64 = 5;
    pub const WORKLOAD: u64 = 6;
    pub const NODE: u64 = 7;
    pub const CLOCK: u64 = 8;
    /// The storage parameters of `SwarmParams` (drawn apart so that the older draws keep
    /// their values), and the storage faults of the run.
    pub const STORAGE_PARAMS: u64 = 9;
    pub const STORAGE: u64 = 10;
    /// Whether a seed changes its membership, how, and when (`membership`): drawn apart
    /// so that seeds without membership changes replay the runs they always did.
    pub const MEMBERSHIP: u64 = 11;
}

pub(crate) fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive_seed(seed, stream))
}

/// How often a fault strikes and how long it lasts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultRate {
    /// Mean time between two strikes (exponentially distributed).
    pub interval_mean_us: u64,
    pub duration_min_us: u64,
    pub duration_max_us: u64,
}

impl FaultRate {
    pub(crate) fn next_interval(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        ((-u.ln()) * self.interval_mean_us as f64) as u64 + 1
    }

    pub(crate) fn duration(&self, rng: &mut ChaCha8Rng) -> u64 {
        rng.gen_range(self.duration_min_us..=self.duration_max_us)
    }
}

/// One seed's world: cluster shape, workload, fault mix and client behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct SwarmParams {
    pub nodes: usize,
    pub workload: WorkloadKind,
    /// Faults strike during this much simulated time; then everything heals.
    pub fault_phase_us: u64,
    pub link: LinkParams,
    pub fsync_min_us: u64,
    pub fsync_max_us: u64,
    /// Each node's clock runs at rate 1 ± d with d ≤ this, in parts per million.
    pub drift_ppm_max: u64,
    pub crash: Option<FaultRate>,
    /// Probability that a crash strikes inside an fsync window (right after an input
    /// that wrote records) rather than at a random instant.
    pub crash_in_fsync_window: f64,
    pub pause: Option<FaultRate>,
    pub partition: Option<FaultRate>,
    /// Probability that a partition is a pivot fault (a bare-majority partition, a crash
    /// of a voter inside its fsync window, and a flip of sides; see `World::start_pivot`).
    pub pivot: f64,
    /// Crashed plus paused nodes at most (a minority, or sometimes everyone).
    pub down_max: usize,
    /// Probability that a crash, pause or partition aims at the current leader.
    pub target_leader: f64,
    pub clients: usize,
    /// A client waits up to this long between two operations.
    pub think_max_us: u64,
    /// A client retries at another node after this long without an answer.
    pub client_timeout_us: u64,
    /// A client gives up (records `info`) after this long, during the fault phase.
    pub give_up_us: u64,
    /// Client to node latency (clients run beside the nodes).
    pub client_latency_max_us: u64,
    /// Checkpoints and state transfer: small values, so that compaction and chunked
    /// snapshot transfers happen all the time (`Options` of the same names).
    pub checkpoint_every_slots: u64,
    pub catchup_retain_slots: u64,
    pub snapshot_chunk_bytes: usize,
    /// Records per simulated log segment (a damaged record takes the rest of its segment).
    pub segment_records: usize,
    /// A crash keeps a random prefix of the unsynced records (see `disk`).
    pub torn_writes: bool,
    /// Probability that an armed crash (see `crash_in_fsync_window`, pivots) strikes
    /// right after the node's vote left rather than inside its fsync window.
    pub crash_after_release: f64,
    /// Probability that a pivot's crash inside the fsync window strikes at its last
    /// instant, when replies to the Accepts that left early may be in, rather than at once.
    pub crash_late_in_window: f64,
    /// Probability that a disk fault strikes a crashed node before it restarts (during
    /// the fault phase, and only while no other node is damaged: see `World::restart`).
    pub disk_fault: f64,
    /// Membership changes by the simulated operator (`membership`), if this seed has any.
    pub membership: Option<MembershipParams>,
}

/// How the simulated operator changes the membership on a seed that does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipParams {
    /// Nodes beyond the founding ones: outsiders with empty disks, until the operator
    /// adds them (each id joins at most once).
    pub spares: usize,
    /// Mean time between two of the operator's steps (exponentially distributed).
    pub interval_mean_us: u64,
}

impl MembershipParams {
    /// Draws whether `seed` changes its membership and how (from a stream of its own).
    /// Half the seeds do; with a planted bug only the `reconfig-no-overlap` hunt does,
    /// always, so that the other hunts keep their runs.
    pub fn draw(seed: u64, options: &SimOptions, nodes: usize) -> Option<MembershipParams> {
        let mut rng = rng_for(seed, stream::MEMBERSHIP);
        let on = match (options.membership, options.bug) {
            (Some(on), _) => on,
            (None, Some(bug)) => bug == crate::Bug::ReconfigNoOverlap,
            (None, None) => rng.gen_bool(0.5),
        };
        let hunting = options.bug == Some(crate::Bug::ReconfigNoOverlap);
        let spares = rng.gen_range(2..=4).min(crate::NODES_MAX - nodes);
        let interval_max_us = if hunting { 400_000.0 } else { 1_500_000.0 };
        let interval_mean_us = log_uniform(&mut rng, 50_000.0, interval_max_us) as u64;
        on.then_some(MembershipParams { spares, interval_mean_us })
    }
}

/// Log-uniform in `[lo, hi]`: as many small values as large ones per decade.
fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.gen_range(lo.ln()..=hi.ln())).exp()
}

impl SwarmParams {
    /// Draws the parameters of `seed`; `options` pins some of them.
    pub fn draw(seed: u64, options: &SimOptions) -> SwarmParams {
        let mut rng = rng_for(seed, stream::PARAMS);
        let rng = &mut rng;
        let nodes = options.nodes.unwrap_or(if rng.gen_bool(0.5) { 3 } else { 5 });
        let workload = options.workload.unwrap_or(if rng.gen_bool(0.5) {
            WorkloadKind::Register
        } else {
            WorkloadKind::Bank
        });
        let fault_phase_us = options
            .fault_phase_ms
            .map(|ms| ms * 1000)
            .unwrap_or_else(|| rng.gen_range(3_000_000..=8_000_000));
        // One seed in eight is calm: no faults but delays, to reach deep protocol states.
        // With a planted bug every seed hunts: crashes and partitions always on, often,
        // and short, so that unsynced votes get lost and leaders change around them.
        let hunting = options.bug.is_some();
        let calm = !hunting && rng.gen_bool(0.125);
        let enabled = |rng: &mut ChaCha8Rng, p: f64| !calm && rng.gen_bool(p);

        let delay_min_us = rng.gen_range(50..=1_000);
        let delay_max_us = delay_min_us + log_uniform(rng, 10.0, 20_000.0) as u64;
        let link = LinkParams {
            loss: if enabled(rng, 0.5) { log_uniform(rng, 0.001, 0.2) } else { 0.0 },
            duplication: if enabled(rng, 0.4) { log_uniform(rng, 0.001, 0.1) } else { 0.0 },
            corruption: if enabled(rng, 0.3) { log_uniform(rng, 0.001, 0.05) } else { 0.0 },
            delay_min_us,
            delay_max_us,
            tail: if enabled(rng, 0.4) { log_uniform(rng, 0.001, 0.05) } else { 0.0 },
            tail_max_us: delay_max_us + log_uniform(rng, 10_000.0, 500_000.0) as u64,
        };
        let fsync_min_us = rng.gen_range(10..=500);
        let fsync_max_us = fsync_min_us + log_uniform(rng, 10.0, 20_000.0) as u64;
        let drift_ppm_max = if enabled(rng, 0.7) { rng.gen_range(0..=50_000) } else { 0 };

        let rate = |rng: &mut ChaCha8Rng, p: f64, duration_max_us: u64| {
            (hunting || enabled(rng, p)).then(|| {
                let duration_min_us = rng.gen_range(10_000..=200_000);
                let interval_max_us = if hunting { 1_000_000.0 } else { 4_000_000.0 };
                FaultRate {
                    interval_mean_us: log_uniform(rng, 100_000.0, interval_max_us) as u64,
                    duration_min_us,
                    duration_max_us: duration_min_us
                        + log_uniform(rng, 1_000.0, duration_max_us as f64) as u64,
                }
            })
        };
        let crash = rate(rng, 0.6, 3_000_000);
        let crash_in_fsync_window = rng.gen_range(if hunting { 0.5 } else { 0.0 }..1.0);
        let pause = rate(rng, 0.4, 2_000_000);
        let partition = rate(rng, 0.6, 3_000_000);
        let pivot = if hunting { rng.gen_range(0.3..0.9) } else { rng.gen_range(0.0..0.3) };
        let minority = (nodes - 1) / 2;
        let down_max = if rng.gen_bool(if hunting { 0.5 } else { 0.2 }) { nodes } else { minority };
        let target_leader = rng.gen_range(0.0..0.8);

        let clients = rng.gen_range(1..=6);
        let think_max_us = log_uniform(rng, 100.0, 100_000.0) as u64;
        let client_timeout_us = rng.gen_range(300_000..=1_500_000);
        let give_up_us = client_timeout_us * rng.gen_range(2..=6);
        let client_latency_max_us = rng.gen_range(10..=500);

        // Storage, from a stream of its own (the draws above keep their values).
        let mut storage_rng = rng_for(seed, stream::STORAGE_PARAMS);
        let rng = &mut storage_rng;
        let checkpoint_every_slots = if rng.gen_bool(0.1) { 0 } else { rng.gen_range(8..=64) };
        let catchup_retain_slots = rng.gen_range(0..=32);
        let snapshot_chunk_bytes = log_uniform(rng, 32.0, 4096.0) as usize;
        let segment_records = rng.gen_range(4..=64);
        let torn_writes = enabled(rng, 0.5);
        // The planted vote-while-recovering bug needs damaged nodes: every restart of the
        // hunt risks one.
        let disk_fault = if options.bug == Some(crate::Bug::VoteWhileRecovering) {
            rng.gen_range(0.5..=1.0)
        } else if enabled(rng, 0.5) {
            rng.gen_range(0.05..0.5)
        } else {
            0.0
        };
        // A crash right after a vote left tests recovery (only a disk fault can take the
        // vote back); inside the fsync window it tests persist-before-send. Each hunt
        // gets the one its bug needs.
        let crash_after_release = match options.bug {
            Some(crate::Bug::VoteWhileRecovering) => 1.0,
            Some(_) => 0.0,
            None => rng.gen_range(0.0..0.5),
        };
        let crash_late_in_window = match options.bug {
            Some(crate::Bug::OwnVoteEarly) => 1.0,
            _ => rng.gen_range(0.0..0.5),
        };
        SwarmParams {
            nodes,
            workload,
            fault_phase_us,
            link,
            fsync_min_us,
            fsync_max_us,
            drift_ppm_max,
            crash,
            crash_in_fsync_window,
            pause,
            partition,
            pivot,
            down_max,
            target_leader,
            clients,
            think_max_us,
            client_timeout_us,
            give_up_us,
            client_latency_max_us,
            checkpoint_every_slots,
            catchup_retain_slots,
            snapshot_chunk_bytes,
            segment_records,
            torn_writes,
            crash_after_release,
            crash_late_in_window,
            disk_fault,
            membership: MembershipParams::draw(seed, options, nodes),
        }
    }

    /// Parameters for a scripted scenario: no random faults, short delays, fast disks.
    pub fn quiet(nodes: usize, workload: WorkloadKind) -> SwarmParams {
        SwarmParams {
            nodes,
            workload,
            fault_phase_us: 0,
            link: LinkParams::reliable(200, 2_000),
            fsync_min_us: 50,
            fsync_max_us: 500,
            drift_ppm_max: 0,
            crash: None,
            crash_in_fsync_window: 0.0,
            pause: None,
            partition: None,
            pivot: 0.0,
            down_max: 0,
            target_leader: 0.0,
            clients: 3,
            think_max_us: 10_000,
            client_timeout_us: 500_000,
            give_up_us: u64::MAX / 4,
            client_latency_max_us: 100,
            checkpoint_every_slots: Options::default().checkpoint_every_slots,
            catchup_retain_slots: Options::default().catchup_retain_slots,
            snapshot_chunk_bytes: Options::default().snapshot_chunk_bytes,
            segment_records: 64,
            torn_writes: false,
            crash_after_release: 0.0,
            crash_late_in_window: 0.0,
            disk_fault: 0.0,
            membership: None,
        }
    }
}

/// Picks the target of a crash or pause: the leader with probability `target_leader`,
/// else any node in `candidates`.
pub(crate) fn pick_target(
    rng: &mut ChaCha8Rng,
    params: &SwarmParams,
    leader: Option<usize>,
    candidates: &[usize],
) -> Option<usize> {
    if let Some(leader) = leader {
        if candidates.contains(&leader) && rng.gen_bool(params.target_leader) {
            return Some(leader);
        }
    }
    candidates.choose(rng).copied()
}

/// Draws a partition: symmetric minority/majority splits, leader isolation, one-way cuts
/// and the partial-connectivity patterns of Omni-Paxos.
pub(crate) fn draw_partition(rng: &mut ChaCha8Rng, nodes: usize, leader: Option<usize>) -> Partition {
    let mut all: Vec<usize> = (0..nodes).collect();
    let leader = leader.unwrap_or_else(|| rng.gen_range(0..nodes));
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    match rng.gen_range(0..7) {
        // A random minority or majority, cut off symmetrically.
        0 => {
            all.shuffle(rng);
            let size = rng.gen_range(1..nodes);
            Partition::Split { side: sorted(all[..size].to_vec()) }
        }
        // The leader in a minority (majority side must elect a new one).
        1 => {
            let mut side = others.clone();
            side.shuffle(rng);
            side.truncate(rng.gen_range(0..=(nodes - 1) / 2 - 1));
            side.push(leader);
            Partition::Split { side: sorted(side) }
        }
        // Leader isolation.
        2 => Partition::Split { side: vec![leader] },
        // The leader can send but not hear (it keeps heartbeating while deaf), or hear
        // but not be heard.
        3 => Partition::OneWay { from: others, to: vec![leader] },
        4 => Partition::OneWay { from: vec![leader], to: others },
        // Quorum loss around a non-leader.
        5 => Partition::QuorumLoss { center: *others.choose(rng).expect("at least two nodes") },
        // Chained: cut one link, at the leader.
        _ => Partition::Chained { a: leader, c: *others.choose(rng).expect("at least two nodes") },
    }
}

fn sorted(mut nodes: Vec<usize>) -> Vec<usize> {
    nodes.sort_unstable();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_a_function_of_the_seed() {
        let options = SimOptions::default();
        assert_eq!(SwarmParams::draw(7, &options), SwarmParams::draw(7, &options));
        let distinct = (0..20).map(|seed| SwarmParams::draw(seed, &options).link.delay_max_us);
        let mut distinct: Vec<u64> = distinct.collect();
        distinct.dedup();
        assert!(distinct.len() > 10);
    }

    #[test]
    fn options_pin_the_shape() {
        let options =
            SimOptions { nodes: Some(5), workload: Some(WorkloadKind::Bank), ..SimOptions::default() };
        for seed in 0..50 {
            let params = SwarmParams::draw(seed, &options);
            assert_eq!(params.nodes, 5);
            assert_eq!(params.workload, WorkloadKind::Bank);
        }
    }

    #[test]
    fn partitions_put_the_leader_in_a_minority_when_asked() {
        let mut rng = rng_for(1, stream::NEMESIS);
        for _ in 0..200 {
            let partition = draw_partition(&mut rng, 5, Some(3));
            if let Partition::Split { side } = &partition {
                assert!(!side.is_empty() && side.len() < 5, "{partition}");
            }
        }
    }
}

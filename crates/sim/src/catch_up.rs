//! A scripted storage scenario: a lagging replica catches up by snapshot while the
//! cluster keeps writing and checkpointing.
//!
//! One node is cut off long enough that its peers compact the decisions it misses; then
//! it reconnects under steady client load, with a checkpoint every few slots and tiny
//! snapshot chunks, so that the sender checkpoints many times during one transfer. The
//! lagging node must still catch up within a bound: a transfer must see one snapshot
//! from its first chunk to its last (`synod_core::snapshot`; before the sender pinned
//! the snapshot a transfer began with, this scenario never caught up).

use serde::{Deserialize, Serialize};

use crate::faults::SwarmParams;
use crate::network::Partition;
use crate::workload::Register;
use crate::world::World;
use crate::{Outcome, SimOptions, WorkloadKind};

/// How long the lagging node is cut off.
const LAG_US: u64 = 2_000_000;
/// How long it may take to catch up once reconnected.
const CATCH_UP_BOUND_US: u64 = 5_000_000;
/// The cluster's checkpoint interval and snapshot chunk size in this scenario: many
/// checkpoints per transfer.
const CHECKPOINT_EVERY_SLOTS: u64 = 1;
const SNAPSHOT_CHUNK_BYTES: usize = 8;

/// What the catch-up scenario showed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CatchUpReport {
    pub seed: u64,
    /// The lagging node (1-based) and how far behind the leader it was on reconnecting.
    pub lagging: usize,
    pub lag_slots: u64,
    /// From reconnecting until it applied everything the leader had applied then.
    pub caught_up_us: Option<u64>,
    /// Slots the cluster decided meanwhile (it kept writing).
    pub slots_during_catch_up: u64,
    pub snapshots_installed: u64,
    pub checkpoints: u64,
    pub outcome: Outcome,
    pub trace_hash: u64,
}

impl CatchUpReport {
    pub fn summary(&self) -> String {
        let caught_up = match self.caught_up_us {
            Some(us) => format!("{:.0}ms", us as f64 / 1e3),
            None => "never".to_string(),
        };
        format!(
            "catch-up seed={} lagging=n{} lag={} slots caught up in {caught_up} while {} more slots were decided; snapshots installed={} checkpoints={} {}",
            self.seed,
            self.lagging,
            self.lag_slots,
            self.slots_during_catch_up,
            self.snapshots_installed,
            self.checkpoints,
            self.outcome
        )
    }
}

/// Runs the scenario from `seed` (which shapes only client choices and delays).
pub fn run_catch_up(seed: u64) -> CatchUpReport {
    let mut params = SwarmParams::quiet(3, WorkloadKind::Register);
    params.fault_phase_us = u64::MAX / 4;
    params.clients = 6;
    params.think_max_us = 1_000;
    // A round trip of several milliseconds per chunk: a transfer spans checkpoints.
    params.link = crate::network::LinkParams::reliable(2_000, 8_000);
    params.checkpoint_every_slots = CHECKPOINT_EVERY_SLOTS;
    params.catchup_retain_slots = 0;
    params.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
    let mut world = World::new(seed, &SimOptions::default(), params, Register::new(seed), false);
    world.start();
    world.run_until(1_000_000);
    let mut report = CatchUpReport {
        seed,
        lagging: 0,
        lag_slots: 0,
        caught_up_us: None,
        slots_during_catch_up: 0,
        snapshots_installed: 0,
        checkpoints: 0,
        outcome: Outcome::Ok,
        trace_hash: 0,
    };
    let Some(leader) = world.leader() else {
        report.outcome = Outcome::Liveness("no leader was established".into());
        return report;
    };
    let lagging = (leader + 1) % 3;
    report.lagging = lagging + 1;
    world.set_partition(Partition::Split { side: vec![lagging] });
    world.run_until(world.now_us + LAG_US);
    world.heal_partition();
    let applied = |world: &World<Register>, i: usize| world.status(i).map_or(0, |s| s.applied_upto);
    let target = applied(&world, leader);
    report.lag_slots = target.saturating_sub(applied(&world, lagging));
    let healed_at = world.now_us;
    while world.failure.is_none() && world.now_us < healed_at + CATCH_UP_BOUND_US {
        world.run_until(world.now_us + 10_000);
        if applied(&world, lagging) >= target {
            report.caught_up_us = Some(world.now_us - healed_at);
            break;
        }
    }
    report.slots_during_catch_up = applied(&world, leader).saturating_sub(target);
    report.snapshots_installed = world.faults.snapshots_installed;
    report.checkpoints = world.faults.checkpoints;
    let mut outcome = world.failure.clone().unwrap_or(Outcome::Ok);
    if outcome.is_ok() && report.caught_up_us.is_none() {
        outcome = Outcome::Liveness(format!(
            "n{} did not catch up {} slots within {:.1}s of reconnecting",
            lagging + 1,
            report.lag_slots,
            CATCH_UP_BOUND_US as f64 / 1e6
        ));
    }
    let history = world.finish();
    if let Outcome::Safety(_) = history.outcome {
        outcome = history.outcome.clone();
    }
    report.trace_hash = history.trace_hash;
    report.outcome = outcome;
    report
}

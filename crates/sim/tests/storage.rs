//! Storage scenarios: state transfer under load.

use synod_sim::{run_catch_up, Outcome};

/// The leader checkpoints every 8 slots and serves 16-byte chunks while clients keep
/// writing: a transfer spans many checkpoints, and must still complete.
#[test]
fn a_lagging_replica_catches_up_by_snapshot_while_the_cluster_keeps_checkpointing() {
    synod_sim::quiet_panics();
    for seed in 1..=5 {
        let report = run_catch_up(seed);
        println!("{}", report.summary());
        assert_eq!(report.outcome, Outcome::Ok, "{}", report.summary());
        assert!(report.snapshots_installed >= 1, "the lag must need a snapshot: {}", report.summary());
        assert!(report.slots_during_catch_up > 0, "the cluster kept writing: {}", report.summary());
    }
}

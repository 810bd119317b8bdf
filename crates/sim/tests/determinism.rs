//! A seed is a complete description of a run: replaying it replays every event.

use synod_sim::{run_seed, SimOptions, WorkloadKind};

#[test]
fn the_same_seed_twice_gives_the_same_run() {
    let options = SimOptions::default();
    for seed in [1, 2, 3, 42] {
        let first = run_seed(seed, &options);
        let second = run_seed(seed, &options);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.events, second.events, "seed {seed}");
        assert_eq!(first.simulated_us, second.simulated_us, "seed {seed}");
        assert_eq!(first.ops, second.ops, "seed {seed}");
        assert_eq!(first.outcome, second.outcome, "seed {seed}");
        println!("seed {seed}: trace hash {:016x}, {} events", first.trace_hash, first.events);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let options = SimOptions::default();
    let mut hashes: Vec<u64> = (1..=20).map(|seed| run_seed(seed, &options).trace_hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 20, "twenty seeds, twenty different runs");
}

#[test]
fn tracing_does_not_change_the_run() {
    for workload in [WorkloadKind::Register, WorkloadKind::Bank] {
        let options = SimOptions { workload: Some(workload), ..SimOptions::default() };
        let plain = run_seed(7, &options);
        let traced = run_seed(7, &SimOptions { trace: true, ..options });
        assert_eq!(plain.trace_hash, traced.trace_hash);
        assert_eq!(plain.events, traced.events);
        assert!(plain.trace.is_empty());
        assert!(traced.trace.len() as u64 >= traced.events / 2, "about a line per event");
    }
}

#[test]
fn a_failing_seed_writes_a_readable_trace() {
    let dir = std::env::temp_dir().join(format!("synod-sim-trace-test-{}", std::process::id()));
    let options = SimOptions { bug: Some(synod_sim::Bug::SmallQuorum), ..SimOptions::default() };
    let seed =
        (1..=200).find(|&seed| !run_seed(seed, &options).outcome.is_ok()).expect("small-quorum is caught");
    let path = synod_sim::write_trace(seed, &options, &dir).expect("trace written");
    let text = std::fs::read_to_string(&path).expect("trace readable");
    assert!(text.starts_with(&format!("# synod sim --seed {seed} --bug small-quorum")));
    assert!(text.contains("VIOLATION"), "the trace ends at the violation");
    assert!(text.lines().count() > 100);
    std::fs::remove_dir_all(&dir).ok();
}

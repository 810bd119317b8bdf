//! The checkers catch known bugs: each planted bug is found by a swarm of at most 200
//! seeds. A simulator that never fails proves nothing.

use synod_sim::{run_seed, Bug, SimOptions};

/// Runs seeds 1..=200 in order and returns the first that finds a violation.
fn first_failing_seed(bug: Bug) -> Option<(u64, String)> {
    synod_sim::quiet_panics();
    let options = SimOptions { bug: Some(bug), ..SimOptions::default() };
    (1..=200).find_map(|seed| {
        let report = run_seed(seed, &options);
        (!report.outcome.is_ok()).then(|| (seed, report.summary()))
    })
}

fn assert_caught(bug: Bug) {
    match first_failing_seed(bug) {
        Some((seed, summary)) => println!("{bug}: caught by seed {seed}: {summary}"),
        None => panic!("planted bug {bug} went unnoticed by 200 seeds"),
    }
}

#[test]
fn skip_persist_is_caught() {
    assert_caught(Bug::SkipPersist);
}

#[test]
fn small_quorum_is_caught() {
    assert_caught(Bug::SmallQuorum);
}

#[test]
fn stale_ballot_is_caught() {
    assert_caught(Bug::StaleBallot);
}

#[test]
fn stale_read_is_caught() {
    assert_caught(Bug::StaleRead);
}

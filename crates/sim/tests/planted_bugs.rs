//! The checkers catch known bugs: each planted bug is found by a swarm of at most 300
//! seeds. A simulator that never fails proves nothing.

use synod_sim::{run_seed, Bug, SimOptions};

/// The bound: a planted bug must show within this many seeds.
const SEEDS_MAX: u64 = 300;

/// Runs seeds 1..=`SEEDS_MAX` in order and returns the first that finds a violation.
fn first_failing_seed(bug: Bug) -> Option<(u64, String)> {
    synod_sim::quiet_panics();
    let options = SimOptions { bug: Some(bug), ..SimOptions::default() };
    (1..=SEEDS_MAX).find_map(|seed| {
        let report = run_seed(seed, &options);
        (!report.outcome.is_ok()).then(|| (seed, report.summary()))
    })
}

fn assert_caught(bug: Bug) {
    match first_failing_seed(bug) {
        Some((seed, summary)) => println!("{bug}: caught by seed {seed}: {summary}"),
        None => panic!("planted bug {bug} went unnoticed by {SEEDS_MAX} seeds"),
    }
}

/// A node acknowledges before its log write is synced, so a crash loses a sent vote.
#[test]
fn skip_fsync_before_ack_is_caught() {
    assert_caught(Bug::SkipFsyncBeforeAck);
}

#[test]
fn skip_persist_still_names_the_same_bug() {
    assert_eq!("skip-persist".parse::<Bug>(), Ok(Bug::SkipFsyncBeforeAck));
    assert_eq!("skip-fsync-before-ack".parse::<Bug>(), Ok(Bug::SkipFsyncBeforeAck));
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

/// A node whose disk was damaged votes at once with the promises and votes it lost: the
/// recovery rule (`synod_core::recovery`) is what keeps storage faults safe.
#[test]
fn vote_while_recovering_is_caught() {
    assert_caught(Bug::VoteWhileRecovering);
}

/// The leader counts its own vote before it is durable: with Accepts sent early and
/// decisions released once written, a crash takes back a vote that a released decision
/// rested on, and another value is chosen in that slot.
#[test]
fn own_vote_early_is_caught() {
    assert_caught(Bug::OwnVoteEarly);
}

/// A configuration governs from the slot after its decision instead of `ALPHA` slots
/// later: a leader proposing ahead of its decided prefix sends a slot's Accepts to the
/// old configuration while another leader uses the new one, and two values are chosen.
/// Its hunt always changes the membership.
#[test]
fn reconfig_no_overlap_is_caught() {
    assert_caught(Bug::ReconfigNoOverlap);
}

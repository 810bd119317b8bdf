//! The partial-connectivity scenarios of Omni-Paxos (EuroSys'23): progress resumes
//! within a bound, with the expected leader.

use synod_sim::{run_scenario, Outcome, Scenario};

/// Recovery must take at most this many election timeouts.
const BOUND_ELECTION_TIMEOUTS: f64 = 10.0;

fn recovers(scenario: Scenario) -> synod_sim::ScenarioReport {
    let report = run_scenario(scenario, 1);
    println!("{}", report.summary());
    assert_eq!(report.outcome, Outcome::Ok, "{}", report.summary());
    let timeouts = report.recovery_election_timeouts().expect("recovered");
    assert!(timeouts <= BOUND_ELECTION_TIMEOUTS, "{scenario} took {timeouts:.2} election timeouts");
    report
}

#[test]
fn quorum_loss_the_only_quorum_connected_node_takes_over() {
    let report = recovers(Scenario::QuorumLoss);
    assert_eq!(report.leaders_after.last(), Some(&report.center), "{}", report.summary());
}

#[test]
fn constrained_election_a_lagging_node_still_leads_and_catches_up() {
    let report = recovers(Scenario::ConstrainedElection);
    assert!(report.center_lag_slots > 0, "the center must lag for this scenario to mean anything");
    assert_eq!(report.leaders_after.last(), Some(&report.center), "{}", report.summary());
}

#[test]
fn chained_progress_continues_with_at_most_one_leader_change() {
    let report = recovers(Scenario::Chained);
    assert!(report.leaders_after.len() <= 1, "{}", report.summary());
}

#[test]
fn scenarios_are_deterministic() {
    let a = run_scenario(Scenario::QuorumLoss, 3);
    let b = run_scenario(Scenario::QuorumLoss, 3);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.recovery_us, b.recovery_us);
}

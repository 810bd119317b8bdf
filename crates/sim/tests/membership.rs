//! Membership changes on the simulator (see `synod_sim::MembershipScenario`): each
//! script changes the group while clients write, then everything heals and the members
//! of the newest configuration must converge with a linearizable history.

use synod_sim::{run_membership_scenario, MembershipReport, MembershipScenario, Outcome};

const SEED: u64 = 1;

fn run(scenario: MembershipScenario) -> MembershipReport {
    let report = run_membership_scenario(scenario, SEED);
    println!("{}", report.summary());
    assert_eq!(report.outcome, Outcome::Ok, "{}", report.summary());
    assert!(report.converged, "{}", report.summary());
    assert!(report.in_force_everywhere, "{}", report.summary());
    assert!(report.ops_ok > 0, "clients wrote throughout: {}", report.summary());
    report
}

#[test]
fn three_voters_grow_to_five_through_learners_that_catch_up() {
    let report = run(MembershipScenario::Grow);
    assert_eq!(report.voters, vec![1, 2, 3, 4, 5], "{}", report.summary());
    assert!(report.learners.is_empty());
    assert_eq!(report.epoch, 5, "four changes: two learners added, two promoted");
}

#[test]
fn five_voters_shrink_to_three_and_the_removed_ones_know_it() {
    let report = run(MembershipScenario::Shrink);
    assert_eq!(report.voters.len(), 3, "{}", report.summary());
    assert_eq!(report.epoch, 3);
    assert_eq!(report.removed.len(), 2, "both removed nodes say so: {}", report.summary());
    for removed in &report.removed {
        assert!(!report.voters.contains(removed));
        assert_ne!(report.leader_after, Some(*removed));
    }
}

#[test]
fn a_node_dead_with_its_disk_is_replaced_by_a_spare() {
    let report = run(MembershipScenario::ReplaceDead);
    assert_eq!(report.voters.len(), 3, "{}", report.summary());
    assert!(report.voters.contains(&4), "the spare votes: {}", report.summary());
    assert_eq!(report.epoch, 4, "removed, added, promoted");
    let leader = report.leader_before.unwrap();
    let dead = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    assert!(!report.voters.contains(&dead), "{}", report.summary());
}

#[test]
fn the_leader_hands_over_and_is_removed() {
    let report = run(MembershipScenario::RemoveLeader);
    let old = report.leader_before.unwrap();
    assert_eq!(report.voters.len(), 4, "{}", report.summary());
    assert!(!report.voters.contains(&old), "{}", report.summary());
    assert!(report.removed.contains(&old), "the old leader knows it was removed: {}", report.summary());
    assert!(report.leader_after.is_some_and(|l| l != old), "{}", report.summary());
}

#[test]
fn a_change_survives_the_crash_of_the_leader_that_proposed_it() {
    let report = run(MembershipScenario::LeaderCrashesMidChange);
    assert_eq!(report.voters, vec![1, 2, 3, 4], "{}", report.summary());
    assert_eq!(report.epoch, 3, "one learner added once, then promoted: {}", report.summary());
}

#[test]
fn a_change_that_would_lose_the_majority_is_refused_and_removing_the_dead_node_is_not() {
    let report = run(MembershipScenario::RefuseLosingMajority);
    let first = report.refusals.first().expect("a refusal");
    assert!(first.contains("answer lately"), "refused for the majority: {}", report.summary());
    assert_eq!(report.voters.len(), 2, "{}", report.summary());
    assert!(report.voters.contains(&report.leader_before.unwrap()), "{}", report.summary());
    assert_eq!(report.epoch, 2);
}

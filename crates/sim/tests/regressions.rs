//! Every failure the simulator found becomes a named test with its seed (replay with
//! `synod sim --seed N`). Seeds name runs of this simulator version: if the simulator
//! changes how it draws, a seed may stop reproducing, and the test then guards nothing
//! until a new seed is found; the trace in the test's doc says what to look for. Seeds
//! found before the simulator changed membership replay with membership changes off
//! (`--membership off`), the scenario they were found in.

use synod_sim::{run_seed, Outcome, SimOptions};

fn passes(seed: u64) {
    passes_with(seed, false);
}

/// Seeds found with membership changes replay with them on (`--membership on`).
fn passes_with_membership(seed: u64) {
    passes_with(seed, true);
}

fn passes_with(seed: u64, membership: bool) {
    synod_sim::quiet_panics();
    let report = run_seed(seed, &SimOptions { membership: Some(membership), ..SimOptions::default() });
    assert_eq!(report.outcome, Outcome::Ok, "{}", report.summary());
}

/// A leader (n3, ballot 2.3) crashes and restarts before its followers time out. They
/// still report ballot 2.3 as their happy leader, the restarted node adopts its own old
/// ballot as the cluster's leader without running phase 1 again, and nobody ever takes
/// over: every client waits forever (liveness).
#[test]
fn a_restarted_leader_that_its_followers_still_follow_leads_again_seed_7521() {
    passes(7521);
}

/// n3 leads with ballot 4.3; n5 takes over with 5.5 while n3 is cut off, then n5 is cut
/// off by a one-way partition. After healing, the ballot leader election settles on n3's
/// old ballot 4.3 again (everyone reports `leader=4.3`, `ballot_max=5.5`), but n3's
/// leader role was preempted by 5.5 and never runs phase 1 with a higher ballot, and no
/// one times out because a leader is elected: every client waits forever (liveness).
#[test]
fn an_elected_leader_preempted_by_a_higher_ballot_takes_over_again_seed_6184() {
    passes(6184);
}

/// Five nodes, disks lost and damaged. After healing, n2 recovers from lost storage: all
/// four others answered, and it must decide up to horizon 8, but every node has applied
/// 7. Slot 7 holds a vote that an acceptor cast for an earlier ballot, outside the phase-1
/// quorum of the leader n1, whose next slot is 7: with no more commands the slot stays
/// open and n2 never votes again (liveness). The leader now closes such slots with no-ops.
#[test]
fn a_recovering_node_is_not_held_up_by_an_orphan_vote_beyond_the_leaders_next_slot_seed_25350() {
    passes(25350);
}

/// Three nodes, crashes with torn writes, partitions. n1 leads with ballot 3.1, cut off
/// from n2; it writes its own vote for slot 61 (synced only later), n3's vote arrives and
/// n1 decides slot 61 at once, counting its own unsynced vote, and releases the decision
/// once written; then it crashes and loses that vote. n2 later gathers promises from n1
/// and itself, neither holding a vote for slot 61, and decides another value there
/// (agreement). A node's own vote now counts only once durable
/// (`Node::handle_persisted`); the planted bug `own-vote-early` brings the old rule back.
#[test]
fn a_leader_decides_nothing_on_its_own_vote_before_that_vote_is_durable_seed_1008524() {
    passes(1_008_524);
}

/// Three nodes, partitions only, a chained one: n1 cut from n2, both reach n3. n2 leads
/// with ballot 1.2. n3 promises n1's ballot 2.1 (its lease to n2 had run out), n1 becomes
/// the active leader and acknowledges a delete; meanwhile n3's election still follows
/// 1.2 and grants n2 a fresh lease, so n2 answers a lease read with the value from before
/// the delete (linearizability). A node that promised a higher ballot now grants no lease
/// to a lower one (`synod_core::node::lease`).
#[test]
fn a_follower_that_promised_a_new_leader_grants_the_old_one_no_lease_seed_1002989() {
    passes(1_002_989);
}

/// Five nodes and four spares, membership changes on. n4 leads and the group removes n5;
/// before that change comes into force, n5 takes over with ballot 4.5, the highest ever,
/// and steps down once it no longer votes. Every node's highest ballot now names n5,
/// which no configuration held counts as a voter: every heartbeat was refused as naming
/// a foreign ballot, no node heard a majority, and no leader was elected again
/// (liveness). A ballot reported as seen may now name a voter removed since
/// (`synod_core::node::validate`).
#[test]
fn a_removed_leaders_ballot_in_every_heartbeat_does_not_silence_the_group_seed_12() {
    passes_with_membership(12);
}

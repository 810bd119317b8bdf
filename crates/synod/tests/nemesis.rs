//! Fault injection against real `synod server` processes (`synod nemesis`): each node in
//! a network namespace of its own, a seeded nemesis, recording clients, the checkers.
//!
//! These need root and network namespaces. Where they are missing each test prints
//! `skipped: ...` and passes, unless `SYNOD_REQUIRE_NETNS=1` (CI), which makes that a
//! failure. The runs go one at a time (a lock): three clusters at once on two cores would
//! measure the machine, not the servers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use synod_nemesis::{
    Cycle, Fault, FaultKind, MemberAction, Report, RunConfig, Shape, Target, Timing, WorkloadKind,
};

const SYNOD: &str = env!("CARGO_BIN_EXE_synod");

static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `None` when the tests can run here; the reason otherwise (or a panic under CI).
fn skip_reason() -> Option<String> {
    let reason = synod_nemesis::hosts::preflight().err()?;
    if std::env::var("SYNOD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("SYNOD_REQUIRE_NETNS=1 but network namespaces are unavailable: {reason}");
    }
    eprintln!("skipped: {reason}");
    Some(reason)
}

fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("synod-nemesis-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Faults come quickly in a short run: a few seconds of quiet, a few of fault.
fn short_timing() -> Timing {
    Timing {
        warmup: Duration::from_secs(2),
        cooldown: Duration::from_secs(2),
        quiet: (Duration::from_millis(1000), Duration::from_millis(2500)),
        hold: (Duration::from_millis(2000), Duration::from_millis(5000)),
        combine_probability: 0.3,
    }
}

fn run(config: &RunConfig) -> Report {
    let started = Instant::now();
    let report = synod_nemesis::run(config, &mut |line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("the run could not run: {e}"));
    eprintln!("{}\n(run took {:.0}s)", report.text(), started.elapsed().as_secs_f64());
    report
}

/// Keeps the output of a failed run for inspection, removes that of a passed one.
fn clean_up(config: &RunConfig, keep: bool) {
    if keep {
        eprintln!("output kept in {}", config.out.display());
    } else {
        let _ = std::fs::remove_dir_all(&config.out);
    }
}

#[test]
fn a_register_run_with_kills_pauses_and_partitions_passes_every_check() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    // Through the command line, as an operator runs it: the exit code is the verdict.
    let out = out_dir("register");
    let started = Instant::now();
    let output = Command::new(SYNOD)
        .args(["nemesis", "--workload", "register", "--duration", "40s", "--seed", "11"])
        .args(["--nemesis", "kill,pause,partition", "--clients", "6"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run synod nemesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "{stdout}\n{}\n(took {:.0}s)",
        String::from_utf8_lossy(&output.stderr),
        started.elapsed().as_secs_f64()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json written"))
            .expect("report.json is JSON");
    assert!(out.join("history.jsonl").exists(), "the history is written");
    assert!(
        report["faults"].as_array().is_some_and(|f| f.len() >= 3),
        "faults were injected: {}",
        report["faults"]
    );
    assert_eq!(report["checks"][0]["verdict"], "pass", "{}", report["checks"]);
    assert!(output.status.success(), "synod nemesis failed: {stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bank_run_with_kills_pauses_and_partitions_conserves_money_and_is_linearizable() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Bank, out_dir("bank"));
    config.duration = Duration::from_secs(40);
    config.seed = 12;
    config.clients = 6;
    config.nemeses = vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Partition];
    config.timing = short_timing();
    let report = run(&config);
    assert!(report.faults.len() >= 3, "faults were injected");
    assert!(report.operations.get("transfer").is_some_and(|t| t.ok > 0), "transfers were acknowledged");
    clean_up(&config, !report.passed);
    assert!(report.passed, "the bank run failed its checks");
}

/// A leader that serves reads without checking its lease (the planted `stale-read` bug)
/// answers from its old state once it wakes from a pause while still cut off from its
/// peers, who have elected a new leader and moved on: the checker must see it. Only the
/// test build of `synod` accepts the planted bug.
///
/// The schedule is explicit, Jepsen's classic false leader: pause the leader, cut it off
/// from its peers (clients still reach it), let the others elect a leader and take
/// writes, wake the old leader while it is still cut off (it answers the reads that
/// queued up while it slept, and new ones), then heal.
#[test]
fn a_planted_stale_read_bug_is_caught_as_a_linearizability_violation() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Register, out_dir("planted"));
    config.duration = Duration::from_secs(40);
    config.seed = 13;
    // Enough clients that some are still free to write to the new leader and then read
    // from the old one while others wait on it.
    config.clients = 12;
    config.register_keys = 2;
    config.nemeses = vec![FaultKind::Pause, FaultKind::Partition];
    let false_leader = |at_ms: u64| Cycle {
        at: Duration::from_millis(at_ms),
        heal_at: Duration::from_millis(at_ms + 2500),
        faults: vec![
            Fault::Pause { target: Target::Leader },
            Fault::Partition { shape: Shape::IsolateLeader, order: vec![0, 1, 2] },
        ],
    };
    // Each wake-up is a race (the woken leader steps down within an election timeout, and
    // a read must reach it before that): six of them.
    config.schedule = Some((0..6).map(|k| false_leader(3_000 + 5_500 * k)).collect());

    // The control: the same schedule against correct servers passes, so what the second
    // run finds is the planted bug and nothing else.
    let control = run(&config);
    clean_up(&config, !control.passed);
    assert!(control.passed, "the false-leader schedule failed without a planted bug");

    config.planted_bug = Some("stale-read".into());
    let report = run(&config);
    let linearizability =
        report.checks.iter().find(|c| c.checker.starts_with("linearizability")).expect("checked");
    clean_up(&config, linearizability.verdict != "fail");
    assert_eq!(
        linearizability.verdict, "fail",
        "the planted stale read went unnoticed: {}",
        linearizability.detail
    );
    assert!(!report.passed);
}

/// The corrupted-disk case: a node is stopped, bytes in its log or checkpoint are
/// flipped, and it is restarted. It must report the damage, repair from its peers, vote
/// again, and the bank's final audit must find every acknowledged transfer applied once.
#[test]
fn a_corrupted_disk_is_detected_and_repaired_from_peers_without_losing_acknowledged_writes() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Bank, out_dir("corrupt"));
    config.duration = Duration::from_secs(30);
    config.seed = 14;
    config.clients = 6;
    config.nemeses = vec![FaultKind::Corrupt];
    config.timing = short_timing();
    let report = run(&config);
    let repaired: Vec<&str> = report
        .faults
        .iter()
        .filter_map(|f| f.note.as_deref())
        .filter(|note| note.contains("damage detected at restart") && note.contains("repaired from peers"))
        .collect();
    clean_up(&config, !report.passed || repaired.is_empty());
    assert!(!repaired.is_empty(), "no damaged node was detected and repaired: {:?}", report.faults);
    let audit = report.checks.iter().find(|c| c.checker.starts_with("bank final audit")).expect("audited");
    assert_eq!(audit.verdict, "pass", "{}", audit.detail);
    assert!(report.passed, "the corrupt run failed its checks");
}

/// The schedule under which a wiped node that votes at once loses acknowledged writes:
/// rounds of 9 s from 3 s. n3 is killed for 4 s while n1 and n2 take writes; the moment
/// n3 answers again, before it has caught up, n1 is wiped and n2 cut off for 2 s. When
/// n1 restarts, n1 and the lagging n3 are a majority by themselves until n2's links come
/// back (dropped links are redialled within about 1.5 s): if n1 voted from its empty
/// directory, a leader could be chosen by the two of them and forget every transfer that
/// n3 missed. A new replica instead waits until every other member (n2 too) answered it.
fn wipe_while_another_node_is_behind(rounds: u64) -> Vec<Cycle> {
    let ms = Duration::from_millis;
    let mut cycles = Vec::new();
    for round in 0..rounds {
        let t = 3_000 + 9_000 * round;
        cycles.push(Cycle {
            at: ms(t),
            heal_at: ms(t + 4_000),
            faults: vec![Fault::Kill { target: Target::Node(2) }],
        });
        cycles.push(Cycle {
            at: ms(t + 4_000),
            heal_at: ms(t + 6_000),
            faults: vec![
                // The wipe first: at heal, n1 restarts before n2's links are restored.
                Fault::Wipe { target: 0 },
                Fault::Partition { shape: Shape::MajorityMinority, order: vec![1, 0, 2] },
            ],
        });
    }
    cycles
}

fn wipe_config(test: &str, rounds: u64) -> RunConfig {
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Bank, out_dir(test));
    config.duration = Duration::from_secs(3 + 9 * rounds);
    config.seed = 15;
    config.clients = 6;
    config.nemeses = vec![FaultKind::Kill, FaultKind::Partition, FaultKind::Wipe];
    config.schedule = Some(wipe_while_another_node_is_behind(rounds));
    config
}

fn verdict<'a>(report: &'a Report, checker: &str) -> &'a str {
    report.checks.iter().find(|c| c.checker.starts_with(checker)).map_or("missing", |c| c.verdict.as_str())
}

/// The wiped-disk case, the operator's accident: a node is stopped, its whole data
/// directory is deleted (a replaced disk, a container started without its volume), and
/// it is restarted with no flag at all, while another node is behind and a third cut
/// off. It must come back as a new replica, repair from its peers before it votes, and
/// the bank's final audit must find every acknowledged transfer applied exactly once.
#[test]
fn a_wiped_disk_comes_back_as_a_new_replica_and_repairs_without_losing_acknowledged_writes() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let config = wipe_config("wipe", 3);
    let report = run(&config);
    let repaired: Vec<&synod_nemesis::report::Repair> = report
        .faults
        .iter()
        .filter(|f| f.kind == "wipe")
        .filter_map(|f| f.repair.as_ref())
        .filter(|r| r.recovering_at_restart && r.repaired_after_s.is_some())
        .collect();
    clean_up(&config, !report.passed || repaired.is_empty());
    assert!(
        !repaired.is_empty(),
        "no wiped node came back as a new replica and repaired: {:?}",
        report.faults
    );
    assert_eq!(verdict(&report, "bank final audit"), "pass");
    assert!(report.passed, "the wipe run failed its checks");
}

/// The same schedule, with the wiped node brought back the unsafe way by the harness's
/// planted bugs (test builds only).
///
/// `wipe-keeps-identity` deletes everything but the `IDENTITY` file: the node votes at
/// once from an empty log under the identity its peers trust, as every wiped node did
/// before directories had identities. It and the lagging node choose a leader that
/// forgets acknowledged transfers, and the checkers must say so.
///
/// `wipe-bootstraps` restarts it with `--bootstrap`: it votes at once under a new
/// identity. The run must fail because it did not come back as a new replica. (Its peers
/// remember its old identity, ignore its votes and tell it to recover, which in our runs
/// saved every acknowledged write; that second defence is not what this asserts.)
#[test]
fn a_wiped_node_that_votes_at_once_fails_the_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = wipe_config("wipe-planted", 2);
    config.planted_bug = Some("wipe-keeps-identity".into());
    let report = run(&config);
    let caught =
        ["bank final audit", "linearizability", "bank ("].iter().any(|c| verdict(&report, c) == "fail");
    clean_up(&config, !caught);
    assert!(
        caught,
        "the checkers missed the writes lost by a node voting from an empty log: {:?}",
        report.checks
    );
    assert!(!report.passed);

    let mut config = wipe_config("wipe-bootstraps", 1);
    config.planted_bug = Some("wipe-bootstraps".into());
    let report = run(&config);
    let voted_at_once = report.incidents.iter().any(|i| i.contains("without recovering from its peers"));
    clean_up(&config, !voted_at_once);
    assert!(voted_at_once, "a wiped node restarted with --bootstrap went unnoticed: {:?}", report.incidents);
    assert!(!report.passed);
}

/// The membership steps of a run that took effect, by action.
fn took_effect(report: &Report, action: &str) -> usize {
    report.membership.iter().filter(|m| m.action == action && m.took_effect).count()
}

/// The cluster changes under the clients' feet: a fresh node joins on an empty directory
/// and is promoted once caught up, the leader is removed (it hands over first), another
/// joins, a voter is killed and replaced by a fresh one, the leader is killed, a voter
/// is removed. Clients follow the configuration; every check must pass, and the report
/// must show the changes in force and the configuration at the end.
#[test]
fn a_register_run_whose_membership_changes_under_kills_is_linearizable() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Register, out_dir("membership"));
    config.duration = Duration::from_secs(38);
    config.seed = 16;
    config.clients = 6;
    config.nemeses = vec![FaultKind::Kill, FaultKind::Membership];
    let cycle = |at_s: u64, hold_s: u64, fault: Fault| Cycle {
        at: Duration::from_secs(at_s),
        heal_at: Duration::from_secs(at_s + hold_s),
        faults: vec![fault],
    };
    let change = |action, leader, pick| Fault::Membership { action, leader, pick };
    config.schedule = Some(vec![
        cycle(3, 3, change(MemberAction::Add, false, 0)),
        cycle(8, 2, change(MemberAction::Remove, true, 0)),
        cycle(12, 3, change(MemberAction::Add, false, 0)),
        cycle(17, 3, change(MemberAction::Replace, false, 1)),
        cycle(25, 3, Fault::Kill { target: Target::Leader }),
        cycle(30, 2, change(MemberAction::Remove, false, 0)),
    ]);
    let report = run(&config);
    clean_up(&config, !report.passed);
    for action in ["add", "promote", "remove"] {
        assert!(
            took_effect(&report, action) >= 2,
            "fewer than two {action}s took effect: {:?}",
            report.membership
        );
    }
    assert!(
        report
            .membership
            .iter()
            .any(|m| m.action == "remove" && m.took_effect && m.detail.contains("handed over")),
        "the leader was not removed: {:?}",
        report.membership
    );
    assert!(report.final_configuration.as_ref().is_some_and(|c| c.contains("voters")));
    assert!(report.passed, "the membership run failed its checks");
}

/// The same nemesis drawn from a seed, with kills, under the bank: money is conserved
/// and every acknowledged transfer applied once, whatever the configuration did.
#[test]
fn a_bank_run_with_membership_changes_and_kills_conserves_money() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Bank, out_dir("membership-bank"));
    config.duration = Duration::from_secs(40);
    config.seed = 17;
    config.clients = 6;
    config.nemeses = vec![FaultKind::Kill, FaultKind::Membership];
    config.timing = short_timing();
    let report = run(&config);
    clean_up(&config, !report.passed);
    for action in ["add", "promote", "remove"] {
        assert!(took_effect(&report, action) >= 1, "no {action} took effect: {:?}", report.membership);
    }
    assert_eq!(verdict(&report, "bank final audit"), "pass");
    assert!(report.passed, "the membership bank run failed its checks");
}

/// The harness's planted bug `join-bootstraps` (test builds only): a "joining" node is
/// started with `--bootstrap`, founds a one-node cluster of its own, and is offered to
/// the clients at once as if it had joined. It answers from an empty state, and the
/// checker must see it; its promotion is refused (it is no learner of the cluster).
#[test]
fn a_node_that_bootstraps_instead_of_joining_fails_the_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_reason().is_some() {
        return;
    }
    let mut config = RunConfig::new(SYNOD.into(), WorkloadKind::Register, out_dir("join-bootstraps"));
    config.duration = Duration::from_secs(12);
    config.seed = 18;
    config.clients = 6;
    config.register_keys = 2;
    config.nemeses = vec![FaultKind::Membership];
    config.planted_bug = Some("join-bootstraps".into());
    config.schedule = Some(vec![Cycle {
        at: Duration::from_secs(3),
        heal_at: Duration::from_secs(7),
        faults: vec![Fault::Membership { action: MemberAction::Add, leader: false, pick: 0 }],
    }]);
    let report = run(&config);
    let caught = verdict(&report, "linearizability") == "fail";
    clean_up(&config, !caught);
    assert!(caught, "a node answering from a cluster of its own went unnoticed: {:?}", report.checks);
    assert!(took_effect(&report, "promote") == 0, "{:?}", report.membership);
    assert!(!report.passed);
}

//! The report of a run: operations by outcome, the faults as they happened with their
//! recovery times, the checkers' verdicts, and the files written. Text for people,
//! JSON for tools; both in the run's output directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use synod_check::bank::{check_bank, BankSpec};
use synod_check::{CheckOptions, Event, EventType, ModelKind, Outcome, Verdict};

/// A fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub kind: String,
    /// What was done, naming the nodes it hit (resolved at injection: "kill n2 (leader)").
    pub description: String,
    /// Seconds from the start of the workload.
    pub injected_s: f64,
    pub healed_s: Option<f64>,
    /// Seconds from injection until a write invoked after it was acknowledged.
    pub recovery_after_inject_s: Option<f64>,
    /// Seconds from healing until a write invoked after it was acknowledged.
    pub recovery_after_heal_s: Option<f64>,
    /// For the corrupt and wipe nemeses: what was damaged or deleted, and how the node
    /// came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For the corrupt and wipe nemeses, once the node restarted: whether it came back in
    /// recovery and how long it took to repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// How a node whose storage was damaged (corrupt) or deleted (wipe) came back.
#[derive(Clone, Debug, Serialize)]
pub struct Repair {
    /// The node (1-based, as in `n2`).
    pub node: u32,
    /// It restarted in recovery: it found the damage (corrupt), or came back as a new
    /// replica (wipe: its log says the data directory is empty, or its status shows it
    /// recovering). Not so is a failed run for a wipe, which nothing can mistake.
    pub recovering_at_restart: bool,
    /// Seconds from its restart until its status no longer showed it recovering (it
    /// repaired from its peers and votes again); `None` if it did not within the bound,
    /// which fails the run, or if it did not come back recovering.
    pub repaired_after_s: Option<f64>,
}

/// One step of the membership nemesis, as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct MembershipChange {
    /// Seconds from the start of the workload, when the step began.
    pub at_s: f64,
    /// `add` (joined as a learner), `promote`, `remove`, `kill` (before a replacement),
    /// `restart` (a replacement whose removal was refused).
    pub action: String,
    /// The node's id, and the host it runs on (`n4`).
    pub node: u32,
    pub host: String,
    /// Whether the change took effect: a join answered, a promotion or removal in force.
    pub took_effect: bool,
    /// Seconds from the first request until it took effect (refusals retried included).
    pub took_s: Option<f64>,
    /// How it went: `in force`, `learner caught up after 1.2s`, a refusal's code...
    pub detail: String,
}

/// One checker's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub checker: String,
    /// `pass`, `fail` or `unknown` (the search ran out of budget: not a pass).
    pub verdict: String,
    pub detail: String,
    pub elapsed_s: f64,
}

/// Counts of one operation kind by outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub seed: u64,
    pub nodes: usize,
    pub clients: usize,
    pub duration_s: f64,
    pub nemeses: Vec<String>,
    pub delay_method: String,
    pub planted_bug: Option<String>,
    pub operations: BTreeMap<String, Outcomes>,
    pub faults: Vec<FaultRecord>,
    /// The membership nemesis's steps, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub membership: Vec<MembershipChange>,
    /// The configuration in force at the end, as the leader saw it (membership runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_configuration: Option<String>,
    pub checks: Vec<CheckResult>,
    /// Things that went wrong outside the history: a server that exited on its own, a
    /// cluster that did not recover after healing.
    pub incidents: Vec<String>,
    pub files: Vec<String>,
    pub passed: bool,
}

/// Operations by kind and outcome.
pub fn count_operations(events: &[Event]) -> BTreeMap<String, Outcomes> {
    let mut counts: BTreeMap<String, Outcomes> = BTreeMap::new();
    for e in events {
        let c = counts.entry(e.f.clone()).or_default();
        match e.kind {
            EventType::Ok => c.ok += 1,
            EventType::Fail => c.fail += 1,
            EventType::Info => c.info += 1,
            EventType::Invoke => {}
        }
    }
    counts
}

/// Time from `t` until the first acknowledged write invoked at or after `t` completed.
pub fn recovery_after(acks: &[(u64, u64)], t: u64) -> Option<Duration> {
    acks.iter().filter(|(invoked, _)| *invoked >= t).map(|(_, done)| done - t).min().map(Duration::from_nanos)
}

fn verdict(passed: Option<bool>) -> String {
    match passed {
        Some(true) => "pass".into(),
        Some(false) => "fail".into(),
        None => "unknown".into(),
    }
}

/// Runs the linearizability checker (`model`) on the history.
pub fn check_linearizable(model: ModelKind, events: &[Event], budget: Duration) -> CheckResult {
    let report = synod_check::check(model, events, &CheckOptions { budget, kv_missing_is_empty: false });
    let passed = match report.verdict {
        Verdict::Linearizable => Some(true),
        Verdict::NotLinearizable => Some(false),
        Verdict::Unknown => None,
    };
    let mut detail = format!("{} operations in {} partitions", report.operations, report.partitions);
    if let Some(key) = &report.failing_key {
        let _ = write!(detail, "; key {key} is not linearizable");
    }
    if let Some(explanation) = &report.explanation {
        let _ = write!(detail, "\n{explanation}");
    }
    CheckResult {
        checker: format!(
            "linearizability ({})",
            if model == ModelKind::Bank { "bank" } else { "kv registers" }
        ),
        verdict: verdict(passed),
        detail,
        elapsed_s: report.elapsed.as_secs_f64(),
    }
}

/// Runs the bank checker: every read sees all accounts, none negative, the total
/// conserved.
pub fn check_bank_invariants(events: &[Event], initial: BTreeMap<String, i64>) -> CheckResult {
    let started = std::time::Instant::now();
    let report = check_bank(events, &BankSpec { initial });
    let detail = if report.ok {
        format!("{} reads checked, {} transfers acknowledged", report.reads_checked, report.transfers_acked)
    } else {
        report.errors.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    };
    CheckResult {
        checker: "bank (conservation, no negative balance)".into(),
        verdict: verdict(Some(report.ok)),
        detail,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

/// Unknown transfers the final audit tries every subset of, at most.
const AUDIT_UNKNOWN_MAX: usize = 16;

/// The bank's final audit, which a conserved total cannot show: the balances of the last
/// read (after healing, once every client stopped) must be the initial balances plus
/// exactly the acknowledged transfers, plus some subset of the transfers whose outcome is
/// unknown, and no refused one. A lost or doubled acknowledged transfer fails it.
pub fn audit_bank_final(events: &[Event], initial: &BTreeMap<String, i64>) -> CheckResult {
    let started = std::time::Instant::now();
    let result = |verdict: Option<bool>, detail: String| CheckResult {
        checker: "bank final audit (acknowledged transfers applied exactly once)".into(),
        verdict: self::verdict(verdict),
        detail,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let ops = match synod_check::pair_operations(events) {
        Ok(ops) => ops,
        Err(e) => return result(Some(false), format!("malformed history: {e}")),
    };
    let transfers: Vec<&synod_check::Operation> = ops.iter().filter(|o| o.f == "transfer").collect();
    let last_transfer = transfers.iter().map(|t| t.completed.unwrap_or(t.call)).max().unwrap_or(0);
    let Some(last_read) =
        ops.iter().rfind(|o| o.f == "read" && o.outcome == Outcome::Ok && o.call > last_transfer)
    else {
        return result(None, "no read after the last transfer".into());
    };
    let mut expected = initial.clone();
    let mut unknown: Vec<(String, String, i64)> = Vec::new();
    for t in &transfers {
        let field = |k: &str| t.input.get(k).cloned().unwrap_or(serde_json::Value::Null);
        let (from, to) = (
            field("from").as_str().unwrap_or("").to_string(),
            field("to").as_str().unwrap_or("").to_string(),
        );
        let amount = field("amount").as_i64().unwrap_or(0);
        match t.outcome {
            Outcome::Ok => {
                *expected.entry(from).or_default() -= amount;
                *expected.entry(to).or_default() += amount;
            }
            Outcome::Unknown => unknown.push((from, to, amount)),
            Outcome::Fail => {}
        }
    }
    let read: BTreeMap<String, i64> = last_read
        .output
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(i64::MIN))).collect())
        .unwrap_or_default();
    let matches = |subset: u64| {
        let mut balances = expected.clone();
        for (i, (from, to, amount)) in unknown.iter().enumerate() {
            if subset & (1 << i) != 0 {
                *balances.entry(from.clone()).or_default() -= amount;
                *balances.entry(to.clone()).or_default() += amount;
            }
        }
        balances == read
    };
    let acked = transfers.iter().filter(|t| t.outcome == Outcome::Ok).count();
    if matches(0) {
        return result(Some(true), format!("final balances = initial + the {acked} acknowledged transfers"));
    }
    if unknown.len() > AUDIT_UNKNOWN_MAX {
        return result(
            None,
            format!("{} transfers of unknown outcome: too many subsets to try", unknown.len()),
        );
    }
    match (1..1u64 << unknown.len()).find(|&subset| matches(subset)) {
        Some(subset) => result(
            Some(true),
            format!(
                "final balances = initial + the {acked} acknowledged transfers + {} of {} with unknown outcome",
                subset.count_ones(),
                unknown.len()
            ),
        ),
        None => result(Some(false), format!("final read {read:?} but the acknowledged transfers give {expected:?}")),
    }
}

fn fmt_s(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |s| format!("{s:.2}s"))
}

impl Report {
    /// The report for a person.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "synod nemesis: workload {} seed {} nodes {} clients {} duration {:.0}s",
            self.workload, self.seed, self.nodes, self.clients, self.duration_s
        );
        let _ = writeln!(t, "nemeses: {} (delay by {})", self.nemeses.join(","), self.delay_method);
        if let Some(bug) = &self.planted_bug {
            let _ = writeln!(t, "PLANTED BUG: {bug}");
        }
        let _ = writeln!(t, "\noperations          ok     fail     info");
        for (f, c) in &self.operations {
            let _ = writeln!(t, "  {f:<12} {:>8} {:>8} {:>8}", c.ok, c.fail, c.info);
        }
        let _ = writeln!(
            t,
            "\nfaults ({}); recovery = time until a write invoked after it is acknowledged",
            self.faults.len()
        );
        let _ = writeln!(t, "  {:>8} {:>8}  {:>9} {:>9}  fault", "inject", "heal", "rec.inj", "rec.heal");
        for f in &self.faults {
            let _ = writeln!(
                t,
                "  {:>7.1}s {:>8}  {:>9} {:>9}  {}{}",
                f.injected_s,
                f.healed_s.map_or_else(|| "-".into(), |h| format!("{h:.1}s")),
                fmt_s(f.recovery_after_inject_s),
                fmt_s(f.recovery_after_heal_s),
                f.description,
                f.note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default()
            );
        }
        for (label, values) in self.recovery_summary() {
            let _ = writeln!(t, "  {label}: {values}");
        }
        if !self.membership.is_empty() {
            let _ = writeln!(t, "\nmembership changes ({})", self.membership.len());
            for m in &self.membership {
                let _ = writeln!(
                    t,
                    "  {:>7.1}s {:<8} node {} on {}: {} ({}){}",
                    m.at_s,
                    m.action,
                    m.node,
                    m.host,
                    if m.took_effect { "took effect" } else { "NOT taken effect" },
                    m.detail,
                    m.took_s.map(|s| format!(" in {s:.2}s")).unwrap_or_default()
                );
            }
        }
        if let Some(c) = &self.final_configuration {
            let _ = writeln!(t, "final configuration: {c}");
        }
        let _ = writeln!(t, "\nchecks");
        for c in &self.checks {
            let first = c.detail.lines().next().unwrap_or("");
            let _ =
                writeln!(t, "  {:<8} {} ({:.1}s): {first}", c.verdict.to_uppercase(), c.checker, c.elapsed_s);
            if c.verdict == "fail" {
                for line in c.detail.lines().skip(1).take(40) {
                    let _ = writeln!(t, "           {line}");
                }
            }
        }
        if !self.incidents.is_empty() {
            let _ = writeln!(t, "\nincidents");
            for i in &self.incidents {
                let _ = writeln!(t, "  {i}");
            }
        }
        let _ = writeln!(t, "\nfiles: {}", self.files.join(", "));
        let _ = writeln!(t, "result: {}", if self.passed { "PASS" } else { "FAIL" });
        t
    }

    /// Recovery statistics for the two cases that matter most: after the leader was
    /// killed, and after a partition healed.
    pub fn recovery_summary(&self) -> Vec<(String, String)> {
        let stats = |values: Vec<f64>| {
            if values.is_empty() {
                return "none".to_string();
            }
            let mut v = values;
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            format!(
                "n={} min {:.2}s median {:.2}s mean {:.2}s max {:.2}s",
                v.len(),
                v[0],
                v[v.len() / 2],
                mean,
                v[v.len() - 1]
            )
        };
        let leader_kills = self
            .faults
            .iter()
            .filter(|f| f.kind == "kill" && f.description.contains("(leader)"))
            .filter_map(|f| f.recovery_after_inject_s)
            .collect();
        let partition_heals = self
            .faults
            .iter()
            .filter(|f| f.kind == "partition")
            .filter_map(|f| f.recovery_after_heal_s)
            .collect();
        let mut summary = vec![
            ("recovery after leader kill".into(), stats(leader_kills)),
            ("recovery after partition heal".into(), stats(partition_heals)),
        ];
        // Only for the storage nemeses in use: how many nodes came back in recovery, and
        // how long from their restart until they voted again.
        for (kind, came_back) in [("corrupt", "detected its damage"), ("wipe", "came back as a new replica")]
        {
            let repairs: Vec<&Repair> =
                self.faults.iter().filter(|f| f.kind == kind).filter_map(|f| f.repair.as_ref()).collect();
            if repairs.is_empty() && !self.nemeses.iter().any(|n| n == kind) {
                continue;
            }
            let recovering = repairs.iter().filter(|r| r.recovering_at_restart).count();
            let unrepaired =
                repairs.iter().filter(|r| r.recovering_at_restart && r.repaired_after_s.is_none()).count();
            let times = repairs.iter().filter_map(|r| r.repaired_after_s).collect();
            summary.push((
                format!("repair after {kind}"),
                format!(
                    "{recovering} of {} {came_back}, {unrepaired} not repaired; time to repair: {}",
                    repairs.len(),
                    stats(times)
                ),
            ));
        }
        summary
    }

    /// Writes `report.txt` and `report.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("report.json"), json)
            .map_err(|e| format!("cannot write report.json: {e}"))?;
        std::fs::write(dir.join("report.txt"), self.text())
            .map_err(|e| format!("cannot write report.txt: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_audit_catches_a_lost_acknowledged_transfer_and_allows_an_unknown_one() {
        use serde_json::json;
        let ev = |process, kind, f: &str, value, time| Event {
            process,
            kind,
            f: f.into(),
            key: None,
            value,
            time,
        };
        let t1 = json!({"id": 1, "from": "0", "to": "1", "amount": 5});
        let t2 = json!({"id": 2, "from": "1", "to": "0", "amount": 3});
        let history = |final_read| {
            vec![
                ev(0, EventType::Invoke, "transfer", t1.clone(), 1),
                ev(0, EventType::Ok, "transfer", t1.clone(), 2),
                ev(1, EventType::Invoke, "transfer", t2.clone(), 3),
                ev(1, EventType::Info, "transfer", t2.clone(), 4),
                ev(2, EventType::Invoke, "read", json!(null), 5),
                ev(2, EventType::Ok, "read", final_read, 6),
            ]
        };
        let initial: BTreeMap<String, i64> = [("0".into(), 10), ("1".into(), 10)].into();
        let verdict = |read| audit_bank_final(&history(read), &initial).verdict;
        assert_eq!(verdict(json!({"0": 5, "1": 15})), "pass", "the unknown one was not applied");
        assert_eq!(verdict(json!({"0": 8, "1": 12})), "pass", "the unknown one was applied");
        assert_eq!(verdict(json!({"0": 10, "1": 10})), "fail", "the acknowledged one was lost");
    }

    #[test]
    fn recovery_is_measured_from_writes_invoked_after_the_fault() {
        // A write invoked before the fault does not count, however late it completes.
        let acks = [(5, 100), (20, 60), (30, 45)];
        assert_eq!(recovery_after(&acks, 10), Some(Duration::from_nanos(35)));
        assert_eq!(recovery_after(&acks, 31), None);
    }
}

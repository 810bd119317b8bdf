//! Linearizability and bank checkers for Synod histories.
//!
//! # Algorithm
//!
//! A history is a list of [`Event`]s; each invocation is paired with its process's next
//! completion into an [`Operation`]. A history is *linearizable* if every operation can be
//! given a single point in time between its invocation and its completion such that the
//! operations, run one at a time in that order, give the results the history recorded
//! (Herlihy & Wing 1990). Operations whose outcome is unknown (`info`, or still pending at
//! the end) may take effect at any point after their invocation, or never: they get return
//! time +infinity. `fail` operations did not take effect and are dropped.
//!
//! Deciding this is NP-complete in general, so the checker searches, as follows.
//!
//! 1. **P-compositionality** (Horn & Kroening 2015, "Faster linearizability checking via
//!    P-compositionality"): a key-value history is linearizable iff each key's
//!    sub-history is, so [`ModelKind::Kv`] splits the history by key and checks the keys
//!    independently, in parallel (rayon), stopping the others as soon as one fails. The
//!    register and the bank are one partition.
//! 2. **Backtracking search** over one partition (Wing & Gong 1993, "Testing and
//!    verifying concurrent objects"), in Lowe's formulation (Lowe 2017, "Testing for
//!    linearizability"): call and return entries in one time-ordered doubly linked list;
//!    a call may be linearized next if the model accepts it; reaching a return that was not
//!    linearized means backtracking.
//! 3. **Memoization** of every explored (set of linearized operations, model state) pair,
//!    as Lowe and Porcupine (Athalye, <https://github.com/anishathalye/porcupine>) do: the
//!    future of a search node depends on nothing else, so no pair is explored twice.
//! 4. **Lookahead** for key-value partitions with appends (ours, sound by construction):
//!    every later value of a key is the current one or a pending write's, extended by
//!    appends, so a step after which a nearby pending read can no longer see its value is
//!    dropped at once. Without it the search tries every order of concurrent appends
//!    before the next read rules them out (Jepsen's c50 histories: 100x faster).
//! 5. **Unobservable operations** are left out (ours, sound by construction): a write or
//!    cas with unknown outcome whose value nothing else mentions can be observed by no
//!    one, so it changes no verdict; each such pending write would otherwise double the
//!    search space.
//! 6. **Rounds** across partitions: proving one partition non-linearizable settles the
//!    verdict, and some partitions take microseconds where others take seconds, so
//!    partitions run with a geometrically growing step allowance (see
//!    `search_partitions`) rather than to completion in a fixed order.
//!
//! Each check has a time budget ([`CheckOptions::budget`]) and each search a memory
//! limit; past either the verdict is [`Verdict::Unknown`], never a guess.
//!
//! On a violation the checker explains it (see [`Violation`]): the failing key; the
//! shortest prefix of that key's history that is already not linearizable (a prefix cut
//! at a completion time, found by binary search, since linearizability is prefix-closed);
//! the longest partial linearization of that prefix, as Porcupine reports it, with the
//! state it reaches; the operations that could not go next, each with the reason; and a
//! text rendering of the history around them. [`html::render`] draws the same as a
//! timeline.
//!
//! The bank checker ([`bank::check_bank`]) is separate: Jepsen's bank invariants on every
//! read, plus an audit of the final ledger (every acknowledged transfer applied exactly
//! once, no failed one applied, final balances = initial + applied transfers).
//!
//! # Formats
//!
//! Our own history format is JSON lines of [`Event`]; [`formats`] also reads Jepsen's etcd
//! logs and key-value EDN maps. Value conventions: register and key-value values are JSON
//! integers or strings, `null` = absent; a read/get's `ok` carries what it read; `write`
//! and `put` carry the value; `append` a string to concatenate; `delete` `null`; `cas`
//! `[expected, new]` (`ok` = applied, `fail` = did not; `expected` `null` = key absent).
//! Bank: `transfer` `{"id":7,"from":"a0","to":"a1","amount":5}`, `read` ok =
//! `{account: balance}`, final `ledger` ok = `{"balances":{..},"transfers":[ids]}`.
//! Events with equal times count as concurrent (a call sorts before a return at the same
//! time), so a coarse clock can hide a violation but never invent one.
//!
//! # Architecture
//!
//! `history` (events, pairing) → `model` (sequential specifications, compiled operations)
//! → `search` (one partition) → this file (partitioning, parallelism, verdicts) →
//! `explain` (violation reports) → `html`. **Architecture Invariant:** the search never
//! touches JSON and a memo probe allocates nothing; everything the search needs is
//! compiled up front.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

pub mod bank;
mod explain;
pub mod formats;
pub mod history;
pub mod html;
mod model;
mod search;

pub use explain::{Candidate, Violation};
pub use history::{pair_operations, Event, EventType, History, HistoryError, Operation, Outcome};

use model::{BankModel, Model, ValueModel};
use search::{GaveUp, SearchOp, Stop};

/// Which sequential specification to check against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// One compare-and-set register: `read`, `write`, `cas`. Keys are ignored.
    Register,
    /// A key-value store: `get`, `put`, `append`, `delete`, `cas` per key; checked key by
    /// key.
    Kv,
    /// The bank: `transfer`s and `read`s (and the final `ledger`'s balances) on one
    /// shared state. The initial balances are not in the history: the first read
    /// linearized fixes them; [`bank::check_bank`] checks them against the spec.
    Bank,
}

/// How to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall-clock time for the whole check; past it the verdict is `Unknown`.
    pub budget: Duration,
    /// Kv (and register): a missing key reads as the empty string, as in Jepsen's
    /// key-value histories.
    pub kv_missing_is_empty: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { budget: Duration::from_secs(10), kv_missing_is_empty: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The budget ran out (or the history was malformed: see the report's explanation).
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not-linearizable",
            Verdict::Unknown => "unknown",
        })
    }
}

/// The answer of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub verdict: Verdict,
    /// The key whose sub-history is not linearizable (kv only).
    pub failing_key: Option<String>,
    /// For a violation: the text rendering of [`Violation`]. For `Unknown`: why.
    pub explanation: Option<String>,
    pub elapsed: Duration,
    /// Operations in the history (including failed ones).
    pub operations: usize,
    pub partitions: usize,
}

/// Checks `events` against `model`. Never panics on a malformed history: that is reported
/// as `Unknown` with the reason in `explanation`.
pub fn check(model: ModelKind, events: &[Event], opts: &CheckOptions) -> CheckReport {
    match analyze(model, events, opts, true) {
        Ok(a) => a.report(),
        Err(e) => CheckReport {
            verdict: Verdict::Unknown,
            failing_key: None,
            explanation: Some(format!("malformed history: {e}")),
            elapsed: Duration::ZERO,
            operations: 0,
            partitions: 0,
        },
    }
}

/// One independently checked sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The key (kv), or `None` (register, bank).
    pub key: Option<String>,
    /// The operations the search considered (indices into [`Analysis::operations`]);
    /// failed operations and reads with unknown results take no part.
    pub ops: Vec<usize>,
    pub verdict: Verdict,
    /// The linearization found, in order.
    pub linearization: Option<Vec<usize>>,
}

/// Everything a check found, for reports and the HTML timeline.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub model: ModelKind,
    pub verdict: Verdict,
    pub operations: Vec<Operation>,
    pub events: Vec<Event>,
    pub partitions: Vec<Partition>,
    pub violation: Option<Violation>,
    /// Why the verdict is `Unknown`.
    pub note: Option<String>,
    pub elapsed: Duration,
}

impl Analysis {
    pub fn report(&self) -> CheckReport {
        CheckReport {
            verdict: self.verdict,
            failing_key: self.violation.as_ref().and_then(|v| v.key.clone()),
            explanation: match &self.violation {
                Some(_) => Some(self.explain_text()),
                None => self.note.clone(),
            },
            elapsed: self.elapsed,
            operations: self.operations.len(),
            partitions: self.partitions.len(),
        }
    }

    /// The violation rendered for a person (empty if there is none).
    pub fn explain_text(&self) -> String {
        explain::render_text(self)
    }
}

/// Checks and keeps everything found. With `explain`, a violation is minimized to the
/// shortest failing prefix (within what is left of the budget); without it, the violation
/// carries the search's longest partial linearization of the whole failing partition.
pub fn analyze(
    model: ModelKind,
    events: &[Event],
    opts: &CheckOptions,
    explain: bool,
) -> Result<Analysis, HistoryError> {
    let started = Instant::now();
    let ops = pair_operations(events)?;
    let mut analysis = match model {
        ModelKind::Register | ModelKind::Kv => {
            let m = ValueModel { missing_is_empty: opts.kv_missing_is_empty };
            run(model, &m, &ops, |m, op| m.compile(op), opts, explain, started)?
        }
        ModelKind::Bank => {
            let m = BankModel::new(&ops);
            run(model, &m, &ops, |m, op| m.compile(op), opts, explain, started)?
        }
    };
    analysis.events = events.to_vec();
    analysis.operations = ops;
    analysis.elapsed = started.elapsed();
    Ok(analysis)
}

type Compile<M> = fn(&M, &Operation) -> Result<Option<<M as Model>::Op>, HistoryError>;

fn run<M: Model>(
    kind: ModelKind,
    model: &M,
    ops: &[Operation],
    compile: Compile<M>,
    opts: &CheckOptions,
    explain: bool,
    started: Instant,
) -> Result<Analysis, HistoryError> {
    let deadline = started + opts.budget;
    // Partition, keeping each partition's ops in invocation order.
    type Keyed<O> = Vec<(usize, SearchOp<O>)>;
    let mut by_key: BTreeMap<Option<String>, Keyed<M::Op>> = BTreeMap::new();
    for op in ops {
        let Some(compiled) = compile(model, op)? else { continue };
        let key = match kind {
            ModelKind::Kv => Some(op.key.clone().ok_or_else(|| HistoryError {
                event: op.invoke_event,
                message: format!("kv operation {} has no key", op.f),
            })?),
            ModelKind::Register | ModelKind::Bank => None,
        };
        by_key
            .entry(key)
            .or_default()
            .push((op.index, SearchOp { call: op.call, ret: op.ret(), op: compiled }));
    }
    // (key, op indices, compiled ops) per partition.
    type Part<O> = (Option<String>, Vec<usize>, Vec<SearchOp<O>>);
    let parts: Vec<Part<M::Op>> = by_key
        .into_iter()
        .map(|(key, v)| {
            let (mut ids, mut sops) = v.into_iter().unzip();
            search::drop_unobservable(model, &mut ids, &mut sops);
            (key, ids, sops)
        })
        .collect();

    let outcomes = search_partitions(model, &parts.iter().map(|p| &p.2[..]).collect::<Vec<_>>(), deadline);

    let mut partitions = Vec::with_capacity(parts.len());
    let mut failing: Option<(usize, search::Partial)> = None;
    let mut gave_up: Option<(usize, GaveUp)> = None;
    for (i, ((key, ids, _), out)) in parts.iter().zip(outcomes).enumerate() {
        let (verdict, linearization) = match out {
            search::Outcome::Linearizable(order) => {
                (Verdict::Linearizable, Some(order.iter().map(|&l| ids[l]).collect()))
            }
            search::Outcome::NotLinearizable(p) => {
                if failing.is_none() {
                    failing = Some((i, p));
                }
                (Verdict::NotLinearizable, None)
            }
            search::Outcome::GaveUp(why) => {
                if !matches!(why, GaveUp::Cancelled | GaveUp::Iterations) && gave_up.is_none() {
                    gave_up = Some((i, why));
                }
                (Verdict::Unknown, None)
            }
        };
        partitions.push(Partition { key: key.clone(), ops: ids.clone(), verdict, linearization });
    }

    let mut note = None;
    let (verdict, violation) = if let Some((i, partial)) = failing {
        let (key, ids, _) = &parts[i];
        // A fresh cancel flag: the shared one is set now, since this partition failed.
        let fresh = AtomicBool::new(false);
        let stop = Stop { deadline, cancel: &fresh, iterations_max: u64::MAX };
        let v = explain::violation(model, ops, key.clone(), ids, partial, compile, explain, &stop);
        (Verdict::NotLinearizable, Some(v))
    } else if partitions.iter().all(|p| p.verdict == Verdict::Linearizable) {
        (Verdict::Linearizable, None)
    } else {
        let (i, why) = gave_up.expect("a partition that is neither linearizable nor failing gave up");
        let what = match &parts[i].0 {
            Some(k) => format!("key {k:?} ({} operations)", parts[i].1.len()),
            None => format!("the history ({} operations)", parts[i].1.len()),
        };
        note = Some(match why {
            GaveUp::Budget => {
                format!("the budget of {} ms ran out while checking {what}", opts.budget.as_millis())
            }
            GaveUp::MemoFull => {
                format!(
                    "the search memo reached its limit of {} MiB while checking {what}",
                    search::MEMO_BYTES_MAX >> 20
                )
            }
            GaveUp::Cancelled | GaveUp::Iterations => unreachable!("cancelled searches are not recorded"),
        });
        (Verdict::Unknown, None)
    };
    Ok(Analysis {
        model: kind,
        verdict,
        operations: Vec::new(),
        events: Vec::new(),
        partitions,
        violation,
        note,
        elapsed: Duration::ZERO,
    })
}

/// Iterations a partition's search gets in the first round; each later round gets
/// `ROUND_GROWTH` times more.
const ROUND_ITERATIONS_FIRST: u64 = 1 << 14;
const ROUND_GROWTH: u64 = 8;

/// Searches every partition, in parallel, stopping all as soon as one is found not
/// linearizable.
///
/// Why rounds: proving a partition *not* linearizable means exhausting its search, which
/// for some partitions takes seconds while for others it takes microseconds; one quick
/// failure settles the verdict. Run to completion in a fixed order, two slow partitions
/// would hold both cores while the quick failure waits behind them. So partitions run in
/// rounds with an iteration allowance that grows geometrically, and each round
/// restarts the ones not yet decided: the work thrown away is at most 1/(growth-1) of the
/// total. Once no more partitions remain than there are threads, they run unbounded.
fn search_partitions<M: Model>(
    model: &M,
    parts: &[&[SearchOp<M::Op>]],
    deadline: Instant,
) -> Vec<search::Outcome> {
    let cancel = AtomicBool::new(false);
    let mut outcomes: Vec<Option<search::Outcome>> = (0..parts.len()).map(|_| None).collect();
    // Largest first within a round, so that the two cores finish together.
    let mut pending: Vec<usize> = (0..parts.len()).collect();
    pending.sort_by_key(|&i| std::cmp::Reverse(parts[i].len()));
    let mut allowance = ROUND_ITERATIONS_FIRST;
    while !pending.is_empty() {
        let unbounded = pending.len() <= rayon::current_num_threads();
        let stop =
            Stop { deadline, cancel: &cancel, iterations_max: if unbounded { u64::MAX } else { allowance } };
        let round: Vec<(usize, search::Outcome)> = pending
            .par_iter()
            .map(|&i| {
                if cancel.load(Ordering::Relaxed) {
                    return (i, search::Outcome::GaveUp(GaveUp::Cancelled));
                }
                let out = search::search(model, parts[i], &stop);
                if matches!(out, search::Outcome::NotLinearizable(_)) {
                    cancel.store(true, Ordering::Relaxed);
                }
                (i, out)
            })
            .collect();
        pending.clear();
        for (i, out) in round {
            match out {
                search::Outcome::GaveUp(GaveUp::Iterations) if !cancel.load(Ordering::Relaxed) => {
                    pending.push(i)
                }
                out => outcomes[i] = Some(out),
            }
        }
        if cancel.load(Ordering::Relaxed) {
            for &i in &pending {
                outcomes[i] = Some(search::Outcome::GaveUp(GaveUp::Cancelled));
            }
            pending.clear();
        }
        allowance = allowance.saturating_mul(ROUND_GROWTH);
    }
    outcomes.into_iter().map(|o| o.expect("every partition was decided or gave up")).collect()
}

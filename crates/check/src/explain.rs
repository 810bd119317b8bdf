//! Violation reports: what a person needs to see why a history is not linearizable.
//!
//! The search of the whole failing partition already yields Porcupine's "longest partial
//! linearization". Its dead end can lie far from the real contradiction, so the report
//! first shrinks the history: linearizability is prefix-closed (a prefix of a
//! linearizable history, with the operations still open at the cut given unknown
//! outcomes, is linearizable), so the shortest non-linearizable prefix ending at a
//! completion time can be found by binary search over completion times, and it ends at
//! the completion that makes the history impossible. The longest partial linearization of
//! that prefix, and the operations that could not follow it, are the report.

use std::fmt::Write as _;

use crate::history::{Operation, Outcome};
use crate::model::{Model, Step};
use crate::search::{self, Partial, SearchOp, Stop};
use crate::{Analysis, Compile, ModelKind};

/// Why a partition is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The failing key (kv), or `None`.
    pub key: Option<String>,
    /// The history up to and including this time is already not linearizable (operations
    /// open at the cut count as outcome unknown). `None` if the budget ran out before the
    /// prefix could be shrunk: the report then covers the whole partition.
    pub cut: Option<u64>,
    /// The operations of that prefix (indices into [`Analysis::operations`]).
    pub prefix_ops: Vec<usize>,
    pub initial_state: String,
    /// The longest partial linearization: each operation with the state after it.
    pub partial: Vec<(usize, String)>,
    /// The operation whose completion the search reached without being able to
    /// linearize it.
    pub blocked: usize,
    /// The operations that could have gone next after the partial linearization (the
    /// blocked one included), none of which leads to a linearization.
    pub candidates: Vec<Candidate>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub op: usize,
    pub reason: String,
}

/// The operations of partition `ids` as seen at `cut`: those invoked by then, with any
/// that complete later given an unknown outcome. `None` keeps everything as it is.
fn prefix<M: Model>(
    model: &M,
    ops: &[Operation],
    ids: &[usize],
    cut: Option<u64>,
    compile: Compile<M>,
) -> (Vec<usize>, Vec<SearchOp<M::Op>>) {
    let mut globals = Vec::new();
    let mut sops = Vec::new();
    for &g in ids {
        let op = &ops[g];
        let (compiled, ret) = match cut {
            None => (compile(model, op), op.ret()),
            Some(t) if op.call > t => continue,
            Some(t) => match op.ret() {
                Some(r) if r <= t => (compile(model, op), Some(r)),
                _ => {
                    let open = Operation {
                        outcome: Outcome::Unknown,
                        output: serde_json::Value::Null,
                        ..op.clone()
                    };
                    (compile(model, &open), None)
                }
            },
        };
        if let Some(c) = compiled.expect("the operation compiled for the full search") {
            globals.push(g);
            sops.push(SearchOp { call: op.call, ret, op: c });
        }
    }
    // Operations open at the cut may have become unobservable; for the whole partition
    // (no cut) this drops nothing more, so indices match the search's.
    search::drop_unobservable(model, &mut globals, &mut sops);
    (globals, sops)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn violation<M: Model>(
    model: &M,
    ops: &[Operation],
    key: Option<String>,
    ids: &[usize],
    full_partial: Partial,
    compile: Compile<M>,
    shrink: bool,
    stop: &Stop<'_>,
) -> Violation {
    let mut best: (Option<u64>, Partial) = (None, full_partial);
    if shrink {
        let mut cuts: Vec<u64> = ids.iter().filter_map(|&g| ops[g].ret()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        // Invariant: the prefix at cuts[hi] is not linearizable (the last cut keeps every
        // completed operation; what follows it is open and can be placed at the end).
        let (mut lo, mut hi) = (0usize, cuts.len().saturating_sub(1));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (_, sops) = prefix(model, ops, ids, Some(cuts[mid]), compile);
            match search::search(model, &sops, stop) {
                search::Outcome::NotLinearizable(p) => {
                    best = (Some(cuts[mid]), p);
                    hi = mid;
                }
                search::Outcome::Linearizable(_) => lo = mid + 1,
                search::Outcome::GaveUp(_) => break,
            }
        }
        if lo == hi && best.0.is_none() && !cuts.is_empty() {
            let (_, sops) = prefix(model, ops, ids, Some(cuts[hi]), compile);
            if let search::Outcome::NotLinearizable(p) = search::search(model, &sops, stop) {
                best = (Some(cuts[hi]), p);
            }
        }
    }
    let (cut, partial) = best;
    let (globals, sops) = prefix(model, ops, ids, cut, compile);

    let mut state = model.init();
    let initial_state = model.show_state(&state);
    let mut lin = Vec::with_capacity(partial.order.len());
    for &l in &partial.order {
        match model.step(&state, &sops[l].op) {
            Step::Changed(s) => state = s,
            Step::Unchanged => {}
            Step::Invalid => unreachable!("the search linearized an invalid step"),
        }
        lin.push((globals[l], model.show_state(&state)));
    }
    let linearized: Vec<bool> = {
        let mut v = vec![false; sops.len()];
        partial.order.iter().for_each(|&l| v[l] = true);
        v
    };
    let candidates = partial
        .candidates
        .iter()
        .map(|&l| Candidate {
            op: globals[l],
            reason: match model.step(&state, &sops[l].op) {
                Step::Invalid => "impossible in that state".to_string(),
                Step::Unchanged => why_dead_end(model, ops, &globals, &sops, &linearized, l, &state),
                Step::Changed(next) => why_dead_end(model, ops, &globals, &sops, &linearized, l, &next),
            },
        })
        .collect();
    Violation {
        key,
        cut,
        prefix_ops: globals.clone(),
        initial_state,
        partial: lin,
        blocked: globals[partial.blocked],
        candidates,
    }
}

/// Why linearizing `l` next, reaching `next`, leads nowhere: names a pending operation
/// that could then never return what it returned (every later value is the current one or
/// a pending reset's, extended by appends), if there is one.
fn why_dead_end<M: Model>(
    model: &M,
    ops: &[Operation],
    globals: &[usize],
    sops: &[SearchOp<M::Op>],
    linearized: &[bool],
    l: usize,
    next: &M::State,
) -> String {
    let pending = |i: usize| i != l && !linearized[i];
    let stranded = (0..sops.len())
        .filter(|&o| pending(o) && model.constrains(&sops[o].op) && !model.may_precede(next, &sops[o].op))
        .filter(|&o| {
            !(0..sops.len()).any(|r| {
                r != o
                    && pending(r)
                    && model.is_reset(&sops[r].op)
                    && model.may_follow_reset(&sops[r].op, &sops[o].op)
            })
        })
        .min_by_key(|&o| sops[o].ret.unwrap_or(u64::MAX));
    match stranded {
        Some(o) => {
            let op = &ops[globals[o]];
            format!(
                "possible, but then #{} p{} ({}) could never return its value",
                op.index,
                op.process,
                clip(&label(ModelKind::Kv, op))
            )
        }
        None => "possible, but every way on from there fails".to_string(),
    }
}

/// Long values (appended strings) are cut in the middle of the text rendering: their
/// ends are where they differ.
const VALUE_CHARS_MAX: usize = 72;

fn clip(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= VALUE_CHARS_MAX {
        return s.to_string();
    }
    let head: String = chars[..VALUE_CHARS_MAX / 3].iter().collect();
    let tail: String = chars[chars.len() - 2 * VALUE_CHARS_MAX / 3..].iter().collect();
    format!("{head}...{tail}")
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "nil".into(),
        serde_json::Value::Array(a) if a.len() == 2 => format!("{}->{}", compact(&a[0]), compact(&a[1])),
        serde_json::Value::Object(m) => {
            m.iter().map(|(k, v)| format!("{k}:{}", compact(v))).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

/// A short label: `write 3`, `read -> 3`, `cas 1->2`, `transfer #7 a0->a1 5`.
pub(crate) fn label(model: ModelKind, op: &Operation) -> String {
    let key = match (&op.key, model) {
        (Some(k), ModelKind::Kv) => format!("[{k}] "),
        _ => String::new(),
    };
    let body = match op.f.as_str() {
        "read" | "get" | "ledger" => match op.outcome {
            Outcome::Ok => format!("{} -> {}", op.f, compact(&op.output)),
            _ => op.f.clone(),
        },
        "delete" => op.f.clone(),
        "transfer" => {
            let t = crate::bank::Transfer::from_value(&op.input);
            match t {
                Ok(t) => format!("transfer #{} {}->{} {}", t.id, t.from, t.to, t.amount),
                Err(_) => format!("transfer {}", op.input),
            }
        }
        f => format!("{f} {}", compact(&op.input)),
    };
    let outcome = match op.outcome {
        Outcome::Ok => "",
        Outcome::Fail => " (failed)",
        Outcome::Unknown if op.completed.is_some() => " (info: outcome unknown)",
        Outcome::Unknown => " (pending: outcome unknown)",
    };
    format!("{key}{body}{outcome}")
}

fn describe(model: ModelKind, op: &Operation) -> String {
    format!("#{} p{} {}", op.index, op.process, clip(&label(model, op)))
}

fn span(op: &Operation) -> String {
    match op.completed {
        Some(c) => format!("[t {}..{}]", op.call, c),
        None => format!("[t {}..]", op.call),
    }
}

/// Lines of the partial linearization shown, at most; the rest are summarized.
const PARTIAL_LINES_MAX: usize = 25;
/// Events of the history shown around the failure, at most.
const HISTORY_LINES_MAX: usize = 60;
/// Events shown before the earliest candidate's invocation, for context.
const HISTORY_CONTEXT_LINES: usize = 20;

pub(crate) fn render_text(a: &Analysis) -> String {
    let Some(v) = &a.violation else { return String::new() };
    let ops = &a.operations;
    let mut out = String::new();
    let w = &mut out;
    let where_ = match &v.key {
        Some(k) => format!(" at key {k:?}"),
        None => String::new(),
    };
    let _ = writeln!(w, "NOT LINEARIZABLE{where_}.");
    let blocked = &ops[v.blocked];
    match v.cut {
        Some(t) => {
            let _ = writeln!(
                w,
                "The history is already not linearizable at t={t}: the {} operations invoked by then \
                 (those still open at t={t} counted as outcome unknown) cannot be linearized.",
                v.prefix_ops.len()
            );
        }
        None => {
            let _ = writeln!(w, "(The budget ran out before the failing prefix could be shrunk.)");
        }
    }
    let _ = writeln!(
        w,
        "\nLongest partial linearization: {} operations, from initial state {}:",
        v.partial.len(),
        v.initial_state
    );
    let skip = v.partial.len().saturating_sub(PARTIAL_LINES_MAX);
    if skip > 0 {
        let _ = writeln!(w, "    ... {skip} earlier operations ...");
    }
    for (n, (g, state)) in v.partial.iter().enumerate().skip(skip) {
        let _ = writeln!(
            w,
            "  {:>4}. {:<48} {:<16} => {state}",
            n + 1,
            describe(a.model, &ops[*g]),
            span(&ops[*g])
        );
    }
    let last_state = v.partial.last().map_or(&v.initial_state, |(_, s)| s);
    let _ = writeln!(w, "It ends in state {}.", clip(last_state));
    let _ = writeln!(
        w,
        "\nThen {} {} had to take effect before it completed, but no operation could go next:",
        describe(a.model, blocked),
        span(blocked)
    );
    for c in &v.candidates {
        let _ =
            writeln!(w, "    {:<48} {:<16} {}", describe(a.model, &ops[c.op]), span(&ops[c.op]), c.reason);
    }
    if v.candidates.iter().any(|c| c.reason.starts_with("possible")) {
        let _ = writeln!(
            w,
            "(\"possible\": the model allows it next, but no linearization continues from there.)"
        );
    }

    // The history around it: this partition's events (failed operations included, as
    // context), from a little before the earliest candidate's invocation up to the cut.
    let in_partition = |op: &Operation| a.model != ModelKind::Kv || op.key == v.key;
    let mut owner = vec![usize::MAX; a.events.len()];
    for op in ops.iter().filter(|op| in_partition(op)) {
        owner[op.invoke_event] = op.index;
        if let Some(c) = op.complete_event {
            owner[c] = op.index;
        }
    }
    let first_call =
        v.candidates.iter().map(|c| ops[c.op].invoke_event).min().unwrap_or(blocked.invoke_event);
    // Up to the cut: the completion there is what made the history impossible.
    let last = match v.cut {
        Some(t) => a.events.iter().rposition(|e| e.time <= t).unwrap_or(0),
        None => match blocked.complete_event {
            Some(c) if blocked.outcome != Outcome::Unknown => c,
            _ => a.events.len().saturating_sub(1),
        },
    };
    let mut shown: Vec<usize> = (0..=last).filter(|&e| owner[e] != usize::MAX).collect();
    let start = shown.partition_point(|&e| e < first_call).saturating_sub(HISTORY_CONTEXT_LINES);
    shown.drain(..start);
    let drop = shown.len().saturating_sub(HISTORY_LINES_MAX);
    shown.drain(..drop);
    let order: std::collections::HashMap<usize, usize> =
        v.partial.iter().enumerate().map(|(n, (g, _))| (*g, n + 1)).collect();
    let _ = writeln!(
        w,
        "\nHistory around it (! = could not go next, * = completes at the cut, n = position in the partial \
         linearization):"
    );
    let at_cut: Option<usize> = v.cut.and_then(|t| {
        ops.iter()
            .find(|op| in_partition(op) && op.outcome == Outcome::Ok && op.completed == Some(t))
            .map(|op| op.index)
    });
    for e in shown {
        let ev = &a.events[e];
        let g = owner[e];
        let mark = if g == v.blocked || v.candidates.iter().any(|c| c.op == g) {
            "!".to_string()
        } else if Some(g) == at_cut {
            "*".to_string()
        } else if let Some(n) = order.get(&g) {
            n.to_string()
        } else {
            String::new()
        };
        let kind = format!("{:?}", ev.kind).to_lowercase();
        let value = if ev.kind == crate::EventType::Invoke || ev.kind == crate::EventType::Ok {
            clip(&compact(&ev.value))
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "  {mark:>4}  t={:<12} p{:<4} {kind:<6} {} {value}   #{g}",
            ev.time, ev.process, ev.f
        );
    }
    out
}

//! The linearizability search for one sub-history: Wing & Gong's backtracking with Lowe's
//! list of call and return entries and memoization of (linearized set, state), as in
//! Porcupine.
//!
//! Entries are the operations' calls and returns sorted by time (a call sorts before a
//! return at the same time, so operations whose intervals touch count as concurrent), kept
//! in a doubly linked list. Scanning from the head, a call entry is a candidate to
//! linearize next; linearizing it *lifts* its call and return out of the list and restarts
//! the scan. Reaching a return entry means that operation had to be linearized before this
//! point and was not: backtrack (pop the last linearized operation and try the next
//! candidate after it). The history is linearizable iff the list empties.
//!
//! Memoization (Lowe 2017 §4; Porcupine): two search nodes with the same set of linearized
//! operations and the same model state have the same future, so each such pair is
//! explored at most once. The cache stores each set's bits in one flat arena and is keyed
//! by a Zobrist hash of the set (updated in O(1) per step) mixed with the state's hash, so
//! a probe allocates nothing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::{Model, Step};

/// One operation as the search sees it.
#[derive(Debug)]
pub(crate) struct SearchOp<O> {
    pub call: u64,
    /// `None`: returns at +infinity (unknown outcome).
    pub ret: Option<u64>,
    pub op: O,
}

/// Leaves out the operations [`Model::unobservable`] names, repeatedly until none is left
/// (dropping one can make another unobservable), from `sops` and the parallel `ids`.
/// Applying it again to its own output changes nothing, so explanations that rebuild a
/// partition from its remaining ids see the same operations as the search did.
pub(crate) fn drop_unobservable<M: Model>(model: &M, ids: &mut Vec<usize>, sops: &mut Vec<SearchOp<M::Op>>) {
    assert_eq!(ids.len(), sops.len());
    loop {
        let view: Vec<(&M::Op, bool)> = sops.iter().map(|s| (&s.op, s.ret.is_none())).collect();
        let drop = model.unobservable(&view);
        if !drop.contains(&true) {
            return;
        }
        let mut keep = drop.iter().map(|d| !d);
        let mut keep2 = keep.clone();
        ids.retain(|_| keep.next().expect("same length"));
        sops.retain(|_| keep2.next().expect("same length"));
    }
}

/// When to give up.
pub(crate) struct Stop<'a> {
    pub deadline: Instant,
    /// Set by a sibling partition that found a violation: the answer is already known.
    pub cancel: &'a AtomicBool,
    /// Loop iterations allowed (see `lib.rs` for why a search may be cut short and
    /// restarted with a larger allowance).
    pub iterations_max: u64,
}

/// Memory one search's memo may hold, at most (estimated from above). Two searches run
/// at once, and the machine is shared.
pub(crate) const MEMO_BYTES_MAX: usize = 256 << 20;

/// For monotone partitions: how many entries at the head of the list are checked with
/// [`Model::may_precede`] after each step. The head holds the operations with the nearest
/// deadlines, which are the ones that rule states out soonest.
const LOOKAHEAD_ENTRIES: usize = 64;

/// How often (in loop iterations) the search looks at the clock and the cancel flag. A
/// power of two.
const STOP_CHECK_EVERY: u64 = 1 << 10;

/// Why a search gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GaveUp {
    Budget,
    Cancelled,
    MemoFull,
    Iterations,
}

/// The deepest dead end the search reached: Porcupine's "longest partial linearization".
#[derive(Clone, Debug, Default)]
pub(crate) struct Partial {
    /// Linearized operations, in order (indices into the search's op slice).
    pub order: Vec<usize>,
    /// The operation whose return entry was reached unlinearized.
    pub blocked: usize,
    /// Operations that were candidates to go next at that point (their calls come before
    /// the blocked return), the blocked one included.
    pub candidates: Vec<usize>,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    /// A linearization, in order (indices into the search's op slice).
    Linearizable(Vec<usize>),
    NotLinearizable(Partial),
    GaveUp(GaveUp),
}

const NIL: u32 = u32::MAX;

/// The entry list. Position 0 is the head sentinel; entries follow in time order.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For each position: the op, and whether it is its call.
    op: Vec<u32>,
    is_call: Vec<bool>,
    call_pos: Vec<u32>,
    ret_pos: Vec<u32>,
}

impl Entries {
    fn new<O>(ops: &[SearchOp<O>]) -> Entries {
        let n = ops.len();
        // (time, kind, op): calls (0) before returns (1) at equal times.
        let mut sorted: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
        for (i, o) in ops.iter().enumerate() {
            let ret = o.ret.unwrap_or(u64::MAX);
            assert!(ret >= o.call, "op {i} returns before it is called");
            sorted.push((o.call, 0, i as u32));
            sorted.push((ret, 1, i as u32));
        }
        sorted.sort_unstable();
        let len = 2 * n + 1;
        let mut e = Entries {
            next: (1..=len as u32).collect(),
            prev: (0..len as u32).map(|p| p.wrapping_sub(1)).collect(),
            op: vec![NIL; len],
            is_call: vec![false; len],
            call_pos: vec![NIL; n],
            ret_pos: vec![NIL; n],
        };
        e.next[len - 1] = NIL;
        for (i, &(_, kind, op)) in sorted.iter().enumerate() {
            let pos = i + 1;
            e.op[pos] = op;
            e.is_call[pos] = kind == 0;
            if kind == 0 {
                e.call_pos[op as usize] = pos as u32;
            } else {
                e.ret_pos[op as usize] = pos as u32;
            }
        }
        e
    }

    fn unlink(&mut self, p: u32) {
        let (prev, next) = (self.prev[p as usize], self.next[p as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    /// Undoes `unlink(p)`; unlinks must be undone in reverse order.
    fn relink(&mut self, p: u32) {
        let (prev, next) = (self.prev[p as usize], self.next[p as usize]);
        self.next[prev as usize] = p;
        if next != NIL {
            self.prev[next as usize] = p;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_pos[op]);
        self.unlink(self.ret_pos[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_pos[op]);
        self.relink(self.call_pos[op]);
    }
}

/// FxHash (rustc's hasher): fast, and good enough once the result is finalized.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// For keys that are already well-mixed hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys");
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set of explored (linearized set, state) pairs.
struct Memo<S> {
    words: usize,
    /// Hash -> newest entry with that hash; older ones chain through `chain`.
    head: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    chain: Vec<u32>,
    bits: Vec<u64>,
    states: Vec<S>,
    /// Estimated bytes held.
    bytes: usize,
}

impl<S: Eq + Clone> Memo<S> {
    fn new(words: usize) -> Self {
        Memo {
            words,
            head: HashMap::default(),
            chain: Vec::new(),
            bits: Vec::new(),
            states: Vec::new(),
            bytes: 0,
        }
    }

    /// Records (`lin` plus bit `add`, `state`) unless it is already there; true if new.
    /// `state_heap_bytes` is the state's own heap use, for the estimate.
    fn insert(&mut self, hash: u64, lin: &[u64], add: usize, state: &S, state_heap_bytes: usize) -> bool {
        let (add_word, add_bit) = (add / 64, 1u64 << (add % 64));
        let mut at = self.head.get(&hash).copied().unwrap_or(NIL);
        let first = at;
        while at != NIL {
            let i = at as usize;
            let stored = &self.bits[i * self.words..(i + 1) * self.words];
            let same_set = stored.iter().zip(lin).enumerate().all(|(w, (&s, &l))| {
                let l = if w == add_word { l | add_bit } else { l };
                s == l
            });
            if same_set && self.states[i] == *state {
                return false;
            }
            at = self.chain[i];
        }
        let i = self.states.len() as u32;
        self.bits.extend_from_slice(lin);
        self.bits[i as usize * self.words + add_word] |= add_bit;
        self.states.push(state.clone());
        self.chain.push(first);
        self.head.insert(hash, i);
        // Bits, state, chain link, and a hash table slot (key, value, control byte, slack).
        self.bytes += self.words * 8 + std::mem::size_of::<S>() + state_heap_bytes + 4 + 24;
        true
    }
}

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = FxHasher::default();
    t.hash(&mut h);
    h.finish()
}

/// Decides whether `ops` (one partition) is linearizable with respect to `model`.
pub(crate) fn search<M: Model>(model: &M, ops: &[SearchOp<M::Op>], stop: &Stop<'_>) -> Outcome {
    let n = ops.len();
    let mut entries = Entries::new(ops);
    let words = n.div_ceil(64).max(1);
    let zobrist: Vec<u64> = (0..n as u64).map(|i| splitmix64(i ^ 0x5eed)).collect();
    let mut memo: Memo<M::State> = Memo::new(words);
    let mut lin = vec![0u64; words];
    let mut lin_hash = 0u64;
    let mut state = model.init();
    // The linearized ops, each with the state from before it.
    let mut calls: Vec<(usize, M::State)> = Vec::with_capacity(n);
    let mut partial: Option<Partial> = None;
    let mut entry = entries.next[0];
    let mut iterations = 0u64;
    let lookahead = Lookahead::new(model, ops);

    while entries.next[0] != NIL {
        iterations += 1;
        if iterations & (STOP_CHECK_EVERY - 1) == 0 {
            if stop.cancel.load(Ordering::Relaxed) {
                return Outcome::GaveUp(GaveUp::Cancelled);
            }
            if Instant::now() >= stop.deadline {
                return Outcome::GaveUp(GaveUp::Budget);
            }
            if iterations >= stop.iterations_max {
                return Outcome::GaveUp(GaveUp::Iterations);
            }
        }
        // The last remaining entry is always a return (a call's return sorts after it),
        // so the scan meets a return before it runs off the end of the list.
        assert_ne!(entry, NIL, "scan ran past the last return entry");
        let pos = entry as usize;
        let op = entries.op[pos] as usize;
        if entries.is_call[pos] {
            let next_state = match model.step(&state, &ops[op].op) {
                Step::Invalid => None,
                Step::Unchanged => Some(state.clone()),
                Step::Changed(s) => Some(s),
            };
            let next_state = next_state.filter(|s| match &lookahead {
                Some(l) => l.allows(model, ops, &entries, &lin, op, s),
                None => true,
            });
            if let Some(next_state) = next_state {
                let set_hash = lin_hash ^ zobrist[op];
                let key = splitmix64(set_hash ^ hash_of(&next_state).rotate_left(29));
                if memo.insert(key, &lin, op, &next_state, model.state_heap_bytes(&next_state)) {
                    if memo.bytes > MEMO_BYTES_MAX {
                        return Outcome::GaveUp(GaveUp::MemoFull);
                    }
                    calls.push((op, std::mem::replace(&mut state, next_state)));
                    lin[op / 64] |= 1 << (op % 64);
                    lin_hash = set_hash;
                    entries.lift(op);
                    entry = entries.next[0];
                    continue;
                }
            }
            entry = entries.next[pos];
        } else {
            // `op` had to be linearized by now and was not: a dead end.
            let deeper = match &partial {
                None => true,
                Some(p) => calls.len() > p.order.len(),
            };
            if deeper {
                let mut candidates = Vec::new();
                let mut p = entries.next[0];
                while p != entry {
                    if entries.is_call[p as usize] {
                        candidates.push(entries.op[p as usize] as usize);
                    }
                    p = entries.next[p as usize];
                }
                partial =
                    Some(Partial { order: calls.iter().map(|c| c.0).collect(), blocked: op, candidates });
            }
            let Some((last, before)) = calls.pop() else {
                return Outcome::NotLinearizable(partial.expect("recorded just above"));
            };
            state = before;
            lin[last / 64] &= !(1 << (last % 64));
            lin_hash ^= zobrist[last];
            entries.unlift(last);
            entry = entries.next[entries.call_pos[last] as usize];
        }
    }
    Outcome::Linearizable(calls.into_iter().map(|c| c.0).collect())
}

/// Pairs of (constraining op, reset) examined to set up the lookahead, at most; past it
/// the partition is searched without lookahead.
const LOOKAHEAD_PAIRS_MAX: usize = 1 << 22;

/// The lookahead of [`Model::may_precede`]: after each step, the operations at the head
/// of the list (the nearest deadlines) must each still be possible later, directly or
/// after some pending reset that can lead to them.
struct Lookahead {
    /// Per constraining op, the resets that may lead to it. Empty for the others.
    enablers: Vec<Vec<u32>>,
    constrains: Vec<bool>,
}

impl Lookahead {
    fn new<M: Model>(model: &M, ops: &[SearchOp<M::Op>]) -> Option<Lookahead> {
        if !ops.iter().any(|o| model.wants_lookahead(&o.op)) {
            return None;
        }
        let constrains: Vec<bool> = ops.iter().map(|o| model.constrains(&o.op)).collect();
        let resets: Vec<usize> = (0..ops.len()).filter(|&i| model.is_reset(&ops[i].op)).collect();
        let constraining = constrains.iter().filter(|&&c| c).count();
        if constraining.saturating_mul(resets.len()) > LOOKAHEAD_PAIRS_MAX {
            return None;
        }
        let enablers = (0..ops.len())
            .map(|o| {
                if !constrains[o] {
                    return Vec::new();
                }
                resets
                    .iter()
                    .filter(|&&r| r != o && model.may_follow_reset(&ops[r].op, &ops[o].op))
                    .map(|&r| r as u32)
                    .collect()
            })
            .collect();
        Some(Lookahead { enablers, constrains })
    }

    /// Whether `state`, reached by linearizing `op`, leaves every operation near the head
    /// of the list still possible.
    fn allows<M: Model>(
        &self,
        model: &M,
        ops: &[SearchOp<M::Op>],
        entries: &Entries,
        lin: &[u64],
        op: usize,
        state: &M::State,
    ) -> bool {
        let pending = |i: usize| i != op && lin[i / 64] & (1 << (i % 64)) == 0;
        let mut p = entries.next[0];
        let mut seen = 0;
        while p != NIL && seen < LOOKAHEAD_ENTRIES {
            let o = entries.op[p as usize] as usize;
            if o != op
                && self.constrains[o]
                && !model.may_precede(state, &ops[o].op)
                && !self.enablers[o].iter().any(|&r| pending(r as usize))
            {
                return false;
            }
            p = entries.next[p as usize];
            seen += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Val, ValueModel, ValueOp};
    use std::time::Duration;

    fn run(ops: Vec<SearchOp<ValueOp>>) -> Outcome {
        let cancel = AtomicBool::new(false);
        let stop = Stop {
            deadline: Instant::now() + Duration::from_secs(5),
            cancel: &cancel,
            iterations_max: u64::MAX,
        };
        search(&ValueModel { missing_is_empty: false }, &ops, &stop)
    }

    fn op(call: u64, ret: Option<u64>, op: ValueOp) -> SearchOp<ValueOp> {
        SearchOp { call, ret, op }
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_it() {
        let out = run(vec![
            op(0, Some(10), ValueOp::Write(Val::Int(1))),
            op(5, Some(6), ValueOp::Read(Val::Int(1))),
        ]);
        assert!(matches!(out, Outcome::Linearizable(order) if order == vec![0, 1]));
    }

    #[test]
    fn a_read_after_a_completed_write_must_see_it() {
        let out = run(vec![
            op(0, Some(1), ValueOp::Write(Val::Int(1))),
            op(2, Some(3), ValueOp::Read(Val::Absent)),
        ]);
        let Outcome::NotLinearizable(p) = out else { panic!("{out:?}") };
        assert_eq!(p.order, vec![0]);
        assert_eq!(p.blocked, 1);
    }

    #[test]
    fn an_unknown_write_may_never_take_effect() {
        let out =
            run(vec![op(0, None, ValueOp::Write(Val::Int(1))), op(2, Some(3), ValueOp::Read(Val::Absent))]);
        assert!(matches!(out, Outcome::Linearizable(order) if order == vec![1, 0]));
    }
}

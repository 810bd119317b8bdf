//! A key-value store state machine: the etcd / ZooKeeper niche.
//!
//! Keys and values are bytes. Besides get, put and delete it offers compare-and-set and
//! etcd's multi-key transaction ([`KvCommand::Txn`]: if every comparison holds, run the
//! success operations, else the failure ones, all within one `apply`), which is what
//! clients build locks, leases and leader election on.
//!
//! Every command and every output is bounded (the `*_MAX` constants) so that it fits in
//! one wire frame. The server runs [`validate`] before it proposes a command; `apply`
//! runs it again and answers [`KvOutput::Invalid`] without touching the state, so a
//! command that slipped through (an older server, a hand-made client) can neither panic
//! a replica nor make replicas diverge: every replica refuses it the same way.
//!
//! Exactly-once delivery of retried commands is the replica's job (client sessions), not
//! this module's.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state_machine::{hash_encoding, SnapshotError, StateMachine};

/// The longest key (and scan prefix), as in ZooKeeper's and etcd's small-key design.
pub const KEY_BYTES_MAX: usize = 4096;
/// The longest value: etcd's default request limit is 1.5 MiB, ZooKeeper's `jute.maxbuffer` 1 MiB.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// The most comparisons, and the most operations in each branch, of one transaction
/// (etcd's `--max-txn-ops` default, applied to each list separately as etcd does).
pub const TXN_OPS_MAX: usize = 128;
/// The most entries one scan returns.
pub const SCAN_LIMIT_MAX: u32 = 10_000;
/// The most key and value bytes one command carries. Only a transaction can reach it:
/// 128 puts of 1 MiB each would not fit in a wire frame.
pub const COMMAND_BYTES_MAX: usize = 4 << 20;
/// The most key and value bytes one output carries. A scan stops before it (and says
/// `more`); a transaction whose results would exceed it is refused whole.
pub const OUTPUT_BYTES_MAX: usize = 4 << 20;

// An output must fit in one frame with room to spare for the message around it, and
// the largest single entry must fit in an output, or a scan could never make progress.
const _: () = assert!(OUTPUT_BYTES_MAX < crate::wire::FRAME_BYTES_MAX / 2);
const _: () = assert!(COMMAND_BYTES_MAX < crate::wire::FRAME_BYTES_MAX / 2);
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX <= OUTPUT_BYTES_MAX);
const _: () = assert!(KEY_BYTES_MAX + 2 * VALUE_BYTES_MAX <= COMMAND_BYTES_MAX);

/// An operation on the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Reads one key. Answers [`KvOutput::Get`].
    Get { key: Vec<u8> },
    /// Sets a key. Answers [`KvOutput::Put`] with the value it replaced.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Removes a key. Answers [`KvOutput::Delete`] with the value it removed.
    Delete { key: Vec<u8> },
    /// Compare-and-set: sets the key to `new` (`None` deletes it) if and only if its
    /// current value is `expected` (`None` means absent). Answers [`KvOutput::Cas`].
    Cas { key: Vec<u8>, expected: Option<Vec<u8>>, new: Option<Vec<u8>> },
    /// Reads up to `limit` entries whose keys start with `prefix`, in key order.
    /// Answers [`KvOutput::Scan`].
    Scan { prefix: Vec<u8>, limit: u32 },
    /// An etcd-style transaction: if every comparison holds, runs `success`, otherwise
    /// `failure`, in order and atomically (later operations see earlier writes).
    /// Answers [`KvOutput::Txn`].
    Txn { compare: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp> },
}

impl KvCommand {
    /// Whether the command never changes the state, so a server may answer it from a
    /// replica's state with [`KvStore::read`] (a lease or read-index read) instead of
    /// putting it through the log.
    pub fn is_read_only(&self) -> bool {
        match self {
            KvCommand::Get { .. } | KvCommand::Scan { .. } => true,
            KvCommand::Put { .. } | KvCommand::Delete { .. } | KvCommand::Cas { .. } => false,
            KvCommand::Txn { success, failure, .. } => {
                success.iter().chain(failure).all(|op| matches!(op, TxnOp::Get { .. }))
            }
        }
    }

    /// The key and value bytes the command carries (what [`COMMAND_BYTES_MAX`] bounds).
    pub fn payload_bytes(&self) -> usize {
        let option_len = |value: &Option<Vec<u8>>| value.as_ref().map_or(0, Vec::len);
        match self {
            KvCommand::Get { key } | KvCommand::Delete { key } => key.len(),
            KvCommand::Put { key, value } => key.len() + value.len(),
            KvCommand::Cas { key, expected, new } => key.len() + option_len(expected) + option_len(new),
            KvCommand::Scan { prefix, .. } => prefix.len(),
            KvCommand::Txn { compare, success, failure } => {
                let compare_bytes: usize = compare
                    .iter()
                    .map(|c| match &c.target {
                        CompareTarget::ValueEquals(value) => c.key.len() + option_len(value),
                        CompareTarget::Exists | CompareTarget::Missing => c.key.len(),
                    })
                    .sum();
                let op_bytes: usize = success.iter().chain(failure).map(TxnOp::payload_bytes).sum();
                compare_bytes + op_bytes
            }
        }
    }
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub target: CompareTarget,
}

/// What a [`Compare`] requires of its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's value is exactly this (`None`: the key is absent).
    ValueEquals(Option<Vec<u8>>),
    /// The key is present, whatever its value.
    Exists,
    /// The key is absent.
    Missing,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Get { key: Vec<u8> },
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl TxnOp {
    pub fn key(&self) -> &[u8] {
        match self {
            TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }

    fn payload_bytes(&self) -> usize {
        match self {
            TxnOp::Get { key } | TxnOp::Delete { key } => key.len(),
            TxnOp::Put { key, value } => key.len() + value.len(),
        }
    }
}

/// The result of one [`TxnOp`], in the order of the branch that ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    /// The value read, `None` if absent.
    Get { value: Option<Vec<u8>> },
    /// The value the put replaced, `None` if the key was absent.
    Put { previous: Option<Vec<u8>> },
    /// The value the delete removed, `None` if the key was absent.
    Delete { previous: Option<Vec<u8>> },
}

impl TxnOpResult {
    fn payload_bytes(&self) -> usize {
        match self {
            TxnOpResult::Get { value: bytes }
            | TxnOpResult::Put { previous: bytes }
            | TxnOpResult::Delete { previous: bytes } => bytes.as_ref().map_or(0, Vec::len),
        }
    }
}

/// The answer to a [`KvCommand`]: one variant per command, plus `Invalid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    /// The key's value, `None` if absent.
    Get { value: Option<Vec<u8>> },
    /// The value the put replaced, `None` if the key was new.
    Put { previous: Option<Vec<u8>> },
    /// The value removed, `None` if the key did not exist (nothing changed).
    Delete { previous: Option<Vec<u8>> },
    /// Whether the compare-and-set applied, and the key's value after it (on failure,
    /// the value that did not match, so the client can retry without a read).
    Cas { succeeded: bool, current: Option<Vec<u8>> },
    /// Entries in key order; `more` is true if further entries match the prefix (the
    /// scan stopped at `limit` or at [`OUTPUT_BYTES_MAX`]).
    Scan { entries: Vec<(Vec<u8>, Vec<u8>)>, more: bool },
    /// Whether every comparison held (so `success` ran, else `failure`), and the
    /// result of each operation of the branch that ran.
    Txn { succeeded: bool, results: Vec<TxnOpResult> },
    /// The command was refused; the state did not change.
    Invalid(KvError),
}

/// Why a command was refused. Every variant left the state unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvError {
    /// A key or scan prefix is longer than [`KEY_BYTES_MAX`].
    KeyTooLarge { key_bytes: usize },
    /// A value is longer than [`VALUE_BYTES_MAX`].
    ValueTooLarge { value_bytes: usize },
    /// A scan asked for more than [`SCAN_LIMIT_MAX`] entries.
    ScanLimitTooLarge { limit: u32 },
    /// A transaction list (compare, success or failure) is longer than [`TXN_OPS_MAX`].
    TooManyTxnOps { ops: usize },
    /// The command carries more than [`COMMAND_BYTES_MAX`] key and value bytes.
    CommandTooLarge { command_bytes: usize },
    /// A transaction's results would carry more than [`OUTPUT_BYTES_MAX`] bytes. Only
    /// `apply` can find this, since it depends on the state; the transaction did not run.
    OutputTooLarge { output_bytes: usize },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::KeyTooLarge { key_bytes } => {
                write!(f, "key of {key_bytes} bytes exceeds the limit of {KEY_BYTES_MAX}")
            }
            KvError::ValueTooLarge { value_bytes } => {
                write!(f, "value of {value_bytes} bytes exceeds the limit of {VALUE_BYTES_MAX}")
            }
            KvError::ScanLimitTooLarge { limit } => {
                write!(f, "scan limit {limit} exceeds the limit of {SCAN_LIMIT_MAX}")
            }
            KvError::TooManyTxnOps { ops } => {
                write!(f, "transaction list of {ops} entries exceeds the limit of {TXN_OPS_MAX}")
            }
            KvError::CommandTooLarge { command_bytes } => write!(
                f,
                "command of {command_bytes} key and value bytes exceeds the limit of \
                 {COMMAND_BYTES_MAX}"
            ),
            KvError::OutputTooLarge { output_bytes } => write!(
                f,
                "transaction result of {output_bytes} bytes would exceed the limit of \
                 {OUTPUT_BYTES_MAX}; nothing was changed"
            ),
        }
    }
}

impl std::error::Error for KvError {}

/// Checks a command against the limits. The server calls it before proposing, so that
/// clients learn of a bad command at once; `apply` calls it too.
pub fn validate(command: &KvCommand) -> Result<(), KvError> {
    match command {
        KvCommand::Get { key } | KvCommand::Delete { key } => check_key(key)?,
        KvCommand::Put { key, value } => {
            check_key(key)?;
            check_value(value)?;
        }
        KvCommand::Cas { key, expected, new } => {
            check_key(key)?;
            for value in expected.iter().chain(new) {
                check_value(value)?;
            }
        }
        KvCommand::Scan { prefix, limit } => {
            check_key(prefix)?;
            if *limit > SCAN_LIMIT_MAX {
                return Err(KvError::ScanLimitTooLarge { limit: *limit });
            }
        }
        KvCommand::Txn { compare, success, failure } => {
            for ops in [compare.len(), success.len(), failure.len()] {
                if ops > TXN_OPS_MAX {
                    return Err(KvError::TooManyTxnOps { ops });
                }
            }
            for condition in compare {
                check_key(&condition.key)?;
                if let CompareTarget::ValueEquals(Some(value)) = &condition.target {
                    check_value(value)?;
                }
            }
            for op in success.iter().chain(failure) {
                check_key(op.key())?;
                if let TxnOp::Put { value, .. } = op {
                    check_value(value)?;
                }
            }
        }
    }
    let command_bytes = command.payload_bytes();
    if command_bytes > COMMAND_BYTES_MAX {
        return Err(KvError::CommandTooLarge { command_bytes });
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::KeyTooLarge { key_bytes: key.len() });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(KvError::ValueTooLarge { value_bytes: value.len() });
    }
    Ok(())
}

/// The store: an ordered map, so that scans are in key order and every replica iterates
/// (and snapshots) identically.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value of `key`, read locally (no linearizability by itself).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers a read-only command (see [`KvCommand::is_read_only`]) without changing
    /// the state; `None` if the command writes. Gives the same output `apply` would.
    pub fn read(&self, command: &KvCommand) -> Option<KvOutput> {
        if !command.is_read_only() {
            return None;
        }
        if let Err(error) = validate(command) {
            return Some(KvOutput::Invalid(error));
        }
        let output = match command {
            KvCommand::Get { key } => KvOutput::Get { value: self.entries.get(key).cloned() },
            KvCommand::Scan { prefix, limit } => self.scan(prefix, *limit),
            KvCommand::Txn { compare, success, failure } => {
                let succeeded = self.all_hold(compare);
                let ops = if succeeded { success } else { failure };
                let output_bytes = self.txn_output_bytes(ops);
                if output_bytes > OUTPUT_BYTES_MAX {
                    return Some(KvOutput::Invalid(KvError::OutputTooLarge { output_bytes }));
                }
                let results = ops
                    .iter()
                    .map(|op| TxnOpResult::Get { value: self.entries.get(op.key()).cloned() })
                    .collect();
                KvOutput::Txn { succeeded, results }
            }
            KvCommand::Put { .. } | KvCommand::Delete { .. } | KvCommand::Cas { .. } => {
                unreachable!("is_read_only admitted a write: {command:?}")
            }
        };
        Some(output)
    }

    fn scan(&self, prefix: &[u8], limit: u32) -> KvOutput {
        debug_assert!(limit <= SCAN_LIMIT_MAX);
        let mut matching = self
            .entries
            .range::<[u8], _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .peekable();
        let mut entries = Vec::new();
        let mut output_bytes = 0;
        while let Some((key, value)) = matching.peek() {
            let entry_bytes = key.len() + value.len();
            if entries.len() == limit as usize || output_bytes + entry_bytes > OUTPUT_BYTES_MAX {
                break;
            }
            output_bytes += entry_bytes;
            entries.push(((*key).clone(), (*value).clone()));
            matching.next();
        }
        let more = matching.peek().is_some();
        // A single entry always fits (see the const assertions), so a scan with a
        // positive limit makes progress whenever anything matches.
        debug_assert!(limit == 0 || !more || !entries.is_empty());
        KvOutput::Scan { entries, more }
    }

    fn holds(&self, condition: &Compare) -> bool {
        let current = self.entries.get(&condition.key);
        match &condition.target {
            CompareTarget::ValueEquals(expected) => current == expected.as_ref(),
            CompareTarget::Exists => current.is_some(),
            CompareTarget::Missing => current.is_none(),
        }
    }

    fn all_hold(&self, compare: &[Compare]) -> bool {
        compare.iter().all(|condition| self.holds(condition))
    }

    /// The bytes the results of `ops` would carry, found without writing anything:
    /// `pending` plays the branch's earlier writes, which later operations must see.
    /// Checking before writing keeps the transaction all or nothing without an undo log.
    fn txn_output_bytes(&self, ops: &[TxnOp]) -> usize {
        let mut pending: BTreeMap<&[u8], Option<usize>> = BTreeMap::new();
        let mut output_bytes = 0;
        for op in ops {
            let key = op.key();
            let current_bytes = match pending.get(key) {
                Some(pending_bytes) => *pending_bytes,
                None => self.entries.get(key).map(Vec::len),
            };
            // Every operation's result carries the key's value before it ran.
            output_bytes += current_bytes.unwrap_or(0);
            match op {
                TxnOp::Get { .. } => {}
                TxnOp::Put { value, .. } => {
                    pending.insert(key, Some(value.len()));
                }
                TxnOp::Delete { .. } => {
                    pending.insert(key, None);
                }
            }
        }
        output_bytes
    }

    fn apply_txn(&mut self, compare: &[Compare], success: &[TxnOp], failure: &[TxnOp]) -> KvOutput {
        let succeeded = self.all_hold(compare);
        let ops = if succeeded { success } else { failure };
        let output_bytes = self.txn_output_bytes(ops);
        if output_bytes > OUTPUT_BYTES_MAX {
            return KvOutput::Invalid(KvError::OutputTooLarge { output_bytes });
        }
        // From here on nothing can fail, so applying the operations one by one is atomic:
        // apply runs to completion before any other command sees the state.
        let results: Vec<TxnOpResult> = ops
            .iter()
            .map(|op| match op {
                TxnOp::Get { key } => TxnOpResult::Get { value: self.entries.get(key).cloned() },
                TxnOp::Put { key, value } => {
                    TxnOpResult::Put { previous: self.entries.insert(key.clone(), value.clone()) }
                }
                TxnOp::Delete { key } => TxnOpResult::Delete { previous: self.entries.remove(key) },
            })
            .collect();
        assert_eq!(
            results.iter().map(TxnOpResult::payload_bytes).sum::<usize>(),
            output_bytes,
            "the transaction's dry run disagrees with its application"
        );
        KvOutput::Txn { succeeded, results }
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Output = KvOutput;

    fn apply(&mut self, command: &KvCommand) -> KvOutput {
        if let Err(error) = validate(command) {
            return KvOutput::Invalid(error);
        }
        match command {
            KvCommand::Get { key } => KvOutput::Get { value: self.entries.get(key).cloned() },
            KvCommand::Put { key, value } => {
                KvOutput::Put { previous: self.entries.insert(key.clone(), value.clone()) }
            }
            KvCommand::Delete { key } => KvOutput::Delete { previous: self.entries.remove(key) },
            KvCommand::Cas { key, expected, new } => {
                if self.entries.get(key) != expected.as_ref() {
                    return KvOutput::Cas { succeeded: false, current: self.entries.get(key).cloned() };
                }
                match new {
                    Some(value) => {
                        self.entries.insert(key.clone(), value.clone());
                    }
                    None => {
                        self.entries.remove(key);
                    }
                }
                KvOutput::Cas { succeeded: true, current: new.clone() }
            }
            KvCommand::Scan { prefix, limit } => self.scan(prefix, *limit),
            KvCommand::Txn { compare, success, failure } => self.apply_txn(compare, success, failure),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a map of byte strings always serializes")
    }

    fn state_hash(&self) -> u64 {
        hash_encoding(self)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let (store, rest): (KvStore, &[u8]) =
            postcard::take_from_bytes(snapshot).map_err(|e| SnapshotError(format!("kv store: {e}")))?;
        if !rest.is_empty() {
            return Err(SnapshotError(format!("kv store: {} trailing bytes", rest.len())));
        }
        // apply never stores an entry over the limits, so one that is there was not
        // written by a KvStore: refuse it rather than serve it.
        for (key, value) in &store.entries {
            if key.len() > KEY_BYTES_MAX || value.len() > VALUE_BYTES_MAX {
                return Err(SnapshotError(format!(
                    "kv store: entry of {} key and {} value bytes exceeds the limits",
                    key.len(),
                    value.len()
                )));
            }
        }
        *self = store;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;

    fn bytes(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put { key: bytes(key), value: bytes(value) }
    }

    fn get(store: &mut KvStore, key: &str) -> Option<Vec<u8>> {
        match store.apply(&KvCommand::Get { key: bytes(key) }) {
            KvOutput::Get { value } => value,
            other => panic!("get answered {other:?}"),
        }
    }

    #[test]
    fn put_returns_the_previous_value_and_get_reads_the_new_one() {
        let mut store = KvStore::new();
        assert_eq!(store.apply(&put("a", "1")), KvOutput::Put { previous: None });
        assert_eq!(store.apply(&put("a", "2")), KvOutput::Put { previous: Some(bytes("1")) });
        assert_eq!(get(&mut store, "a"), Some(bytes("2")));
        assert_eq!(get(&mut store, "b"), None);
    }

    #[test]
    fn delete_returns_the_removed_value_or_none_if_absent() {
        let mut store = KvStore::new();
        store.apply(&put("a", "1"));
        let delete = KvCommand::Delete { key: bytes("a") };
        assert_eq!(store.apply(&delete), KvOutput::Delete { previous: Some(bytes("1")) });
        assert_eq!(store.apply(&delete), KvOutput::Delete { previous: None });
        assert!(store.is_empty());
    }

    #[test]
    fn cas_applies_only_when_expected_matches() {
        let mut store = KvStore::new();
        let create = KvCommand::Cas { key: bytes("k"), expected: None, new: Some(bytes("1")) };
        assert_eq!(store.apply(&create), KvOutput::Cas { succeeded: true, current: Some(bytes("1")) });
        // The key exists now, so "create if absent" fails and reports the current value.
        assert_eq!(store.apply(&create), KvOutput::Cas { succeeded: false, current: Some(bytes("1")) });

        let stale = KvCommand::Cas { key: bytes("k"), expected: Some(bytes("0")), new: Some(bytes("2")) };
        assert_eq!(store.apply(&stale), KvOutput::Cas { succeeded: false, current: Some(bytes("1")) });
        assert_eq!(get(&mut store, "k"), Some(bytes("1")));

        let swap = KvCommand::Cas { key: bytes("k"), expected: Some(bytes("1")), new: Some(bytes("2")) };
        assert_eq!(store.apply(&swap), KvOutput::Cas { succeeded: true, current: Some(bytes("2")) });
        assert_eq!(get(&mut store, "k"), Some(bytes("2")));
    }

    #[test]
    fn cas_with_new_none_deletes_the_key() {
        let mut store = KvStore::new();
        store.apply(&put("k", "1"));
        let remove = KvCommand::Cas { key: bytes("k"), expected: Some(bytes("1")), new: None };
        assert_eq!(store.apply(&remove), KvOutput::Cas { succeeded: true, current: None });
        assert_eq!(get(&mut store, "k"), None);
    }

    #[test]
    fn scan_returns_prefix_matches_in_key_order_up_to_the_limit() {
        let mut store = KvStore::new();
        for key in ["b/2", "a", "b/1", "b/3", "c", "b"] {
            store.apply(&put(key, key));
        }
        let scan = |store: &mut KvStore, limit| store.apply(&KvCommand::Scan { prefix: bytes("b/"), limit });
        let entry = |key: &str| (bytes(key), bytes(key));
        assert_eq!(
            scan(&mut store, 10),
            KvOutput::Scan { entries: vec![entry("b/1"), entry("b/2"), entry("b/3")], more: false }
        );
        assert_eq!(
            scan(&mut store, 2),
            KvOutput::Scan { entries: vec![entry("b/1"), entry("b/2")], more: true }
        );
        assert_eq!(scan(&mut store, 0), KvOutput::Scan { entries: vec![], more: true });
    }

    #[test]
    fn scan_stops_before_the_output_limit_and_says_more() {
        let mut store = KvStore::new();
        let value = vec![7u8; VALUE_BYTES_MAX];
        for key in 0u8..6 {
            store.apply(&KvCommand::Put { key: vec![key], value: value.clone() });
        }
        let output = store.apply(&KvCommand::Scan { prefix: vec![], limit: 100 });
        let KvOutput::Scan { entries, more } = output else { panic!("scan answered {output:?}") };
        assert!(more);
        assert_eq!(entries.len(), OUTPUT_BYTES_MAX / (VALUE_BYTES_MAX + 1));
    }

    #[test]
    fn txn_applies_success_ops_atomically() {
        let mut store = KvStore::new();
        store.apply(&put("lock", "free"));
        let txn = KvCommand::Txn {
            compare: vec![
                Compare { key: bytes("lock"), target: CompareTarget::ValueEquals(Some(bytes("free"))) },
                Compare { key: bytes("owner"), target: CompareTarget::Missing },
            ],
            success: vec![
                TxnOp::Put { key: bytes("lock"), value: bytes("held") },
                TxnOp::Put { key: bytes("owner"), value: bytes("n1") },
                // Later operations see the earlier writes of the same branch.
                TxnOp::Get { key: bytes("owner") },
            ],
            failure: vec![TxnOp::Get { key: bytes("owner") }],
        };
        assert_eq!(
            store.apply(&txn),
            KvOutput::Txn {
                succeeded: true,
                results: vec![
                    TxnOpResult::Put { previous: Some(bytes("free")) },
                    TxnOpResult::Put { previous: None },
                    TxnOpResult::Get { value: Some(bytes("n1")) },
                ],
            }
        );
        assert_eq!(get(&mut store, "lock"), Some(bytes("held")));
    }

    #[test]
    fn txn_runs_failure_ops_when_any_comparison_fails() {
        let mut store = KvStore::new();
        store.apply(&put("owner", "n2"));
        let txn = KvCommand::Txn {
            compare: vec![
                Compare { key: bytes("owner"), target: CompareTarget::Exists },
                Compare { key: bytes("owner"), target: CompareTarget::ValueEquals(Some(bytes("n1"))) },
            ],
            success: vec![TxnOp::Delete { key: bytes("owner") }],
            failure: vec![TxnOp::Get { key: bytes("owner") }],
        };
        assert_eq!(
            store.apply(&txn),
            KvOutput::Txn { succeeded: false, results: vec![TxnOpResult::Get { value: Some(bytes("n2")) }] }
        );
        assert_eq!(get(&mut store, "owner"), Some(bytes("n2")));
    }

    #[test]
    fn txn_whose_results_exceed_the_output_limit_changes_nothing() {
        let mut store = KvStore::new();
        let big = vec![1u8; VALUE_BYTES_MAX];
        store.apply(&KvCommand::Put { key: bytes("big"), value: big });
        let before = store.state_hash();
        let mut success = vec![TxnOp::Put { key: bytes("other"), value: bytes("x") }];
        success.extend((0..5).map(|_| TxnOp::Get { key: bytes("big") }));
        let txn = KvCommand::Txn { compare: vec![], success, failure: vec![] };
        assert!(validate(&txn).is_ok());
        assert_eq!(
            store.apply(&txn),
            KvOutput::Invalid(KvError::OutputTooLarge { output_bytes: 5 * VALUE_BYTES_MAX })
        );
        assert_eq!(store.state_hash(), before);
    }

    #[test]
    fn oversize_commands_are_invalid_and_change_nothing() {
        let mut store = KvStore::new();
        store.apply(&put("a", "1"));
        let before = store.state_hash();
        let too_long_key = vec![0u8; KEY_BYTES_MAX + 1];
        let too_long_value = vec![0u8; VALUE_BYTES_MAX + 1];
        let cases = [
            (
                KvCommand::Put { key: too_long_key.clone(), value: vec![] },
                KvError::KeyTooLarge { key_bytes: KEY_BYTES_MAX + 1 },
            ),
            (
                KvCommand::Put { key: bytes("a"), value: too_long_value.clone() },
                KvError::ValueTooLarge { value_bytes: VALUE_BYTES_MAX + 1 },
            ),
            (
                KvCommand::Cas { key: bytes("a"), expected: Some(bytes("1")), new: Some(too_long_value) },
                KvError::ValueTooLarge { value_bytes: VALUE_BYTES_MAX + 1 },
            ),
            (
                KvCommand::Scan { prefix: vec![], limit: SCAN_LIMIT_MAX + 1 },
                KvError::ScanLimitTooLarge { limit: SCAN_LIMIT_MAX + 1 },
            ),
            (
                KvCommand::Txn {
                    compare: vec![],
                    success: vec![TxnOp::Delete { key: bytes("a") }; TXN_OPS_MAX + 1],
                    failure: vec![],
                },
                KvError::TooManyTxnOps { ops: TXN_OPS_MAX + 1 },
            ),
            (
                KvCommand::Txn {
                    compare: vec![],
                    success: vec![TxnOp::Put { key: bytes("a"), value: vec![0u8; VALUE_BYTES_MAX] }; 5],
                    failure: vec![],
                },
                KvError::CommandTooLarge { command_bytes: 5 * (VALUE_BYTES_MAX + 1) },
            ),
            (
                KvCommand::Txn {
                    compare: vec![],
                    success: vec![],
                    failure: vec![TxnOp::Delete { key: too_long_key }],
                },
                KvError::KeyTooLarge { key_bytes: KEY_BYTES_MAX + 1 },
            ),
        ];
        for (command, error) in cases {
            assert_eq!(validate(&command), Err(error.clone()));
            assert_eq!(store.apply(&command), KvOutput::Invalid(error));
            assert_eq!(store.state_hash(), before);
        }
    }

    #[test]
    fn read_only_commands_are_answered_by_read_as_apply_would() {
        let mut store = KvStore::new();
        store.apply(&put("a", "1"));
        let reads = [
            KvCommand::Get { key: bytes("a") },
            KvCommand::Scan { prefix: vec![], limit: 5 },
            KvCommand::Txn {
                compare: vec![Compare { key: bytes("a"), target: CompareTarget::Exists }],
                success: vec![TxnOp::Get { key: bytes("a") }],
                failure: vec![],
            },
        ];
        for command in reads {
            assert!(command.is_read_only());
            let read = store.read(&command);
            assert_eq!(read, Some(store.apply(&command)));
        }
        assert_eq!(store.read(&put("a", "2")), None);
    }

    #[test]
    fn snapshot_restore_round_trip_gives_an_equal_state_hash() {
        let mut store = KvStore::new();
        for i in 0u32..50 {
            store.apply(&KvCommand::Put { key: i.to_be_bytes().to_vec(), value: vec![i as u8; i as usize] });
        }
        let mut restored = KvStore::new();
        restored.restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.state_hash(), store.state_hash());
    }

    #[test]
    fn restore_of_garbage_bytes_is_an_error_and_keeps_the_state() {
        let mut store = KvStore::new();
        store.apply(&put("a", "1"));
        let before = store.state_hash();
        let mut snapshot = store.snapshot();
        snapshot.push(0);
        for garbage in [vec![0xff; 16], vec![0x80], snapshot, vec![0x05, 0x01]] {
            assert!(store.restore(&garbage).is_err(), "{garbage:?} was accepted");
            assert_eq!(store.state_hash(), before);
        }
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        // A tiny alphabet so that keys collide and prefixes nest; rarely, an oversize key.
        prop_oneof![
            20 => proptest::collection::vec(0u8..3, 0..3),
            1 => Just(vec![0u8; KEY_BYTES_MAX + 1]),
        ]
    }

    fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..3, 0..3)
    }

    fn txn_op_strategy() -> impl Strategy<Value = TxnOp> {
        prop_oneof![
            key_strategy().prop_map(|key| TxnOp::Get { key }),
            (key_strategy(), value_strategy()).prop_map(|(key, value)| TxnOp::Put { key, value }),
            key_strategy().prop_map(|key| TxnOp::Delete { key }),
        ]
    }

    fn command_strategy() -> impl Strategy<Value = KvCommand> {
        let target = prop_oneof![
            proptest::option::of(value_strategy()).prop_map(CompareTarget::ValueEquals),
            Just(CompareTarget::Exists),
            Just(CompareTarget::Missing),
        ];
        let compare = (key_strategy(), target).prop_map(|(key, target)| Compare { key, target });
        prop_oneof![
            key_strategy().prop_map(|key| KvCommand::Get { key }),
            (key_strategy(), value_strategy()).prop_map(|(key, value)| KvCommand::Put { key, value }),
            key_strategy().prop_map(|key| KvCommand::Delete { key }),
            (key_strategy(), proptest::option::of(value_strategy()), proptest::option::of(value_strategy()))
                .prop_map(|(key, expected, new)| KvCommand::Cas { key, expected, new }),
            (key_strategy(), prop_oneof![0u32..4, Just(SCAN_LIMIT_MAX + 1)])
                .prop_map(|(prefix, limit)| KvCommand::Scan { prefix, limit }),
            (
                proptest::collection::vec(compare, 0..3),
                proptest::collection::vec(txn_op_strategy(), 0..4),
                proptest::collection::vec(txn_op_strategy(), 0..4),
            )
                .prop_map(|(compare, success, failure)| KvCommand::Txn {
                    compare,
                    success,
                    failure
                }),
        ]
    }

    proptest! {
        // A fixed seed and no persistence file: every run explores the same cases, and a
        // failure found here becomes a named test above.
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x6b76),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn replicas_applying_the_same_commands_stay_identical(
            commands in proptest::collection::vec(command_strategy(), 0..64)
        ) {
            let mut a = KvStore::new();
            let mut b = KvStore::new();
            let mut from_snapshot: Option<KvStore> = None;
            for (i, command) in commands.iter().enumerate() {
                if i == commands.len() / 2 {
                    let mut restored = KvStore::new();
                    restored.restore(&a.snapshot()).unwrap();
                    from_snapshot = Some(restored);
                }
                let before = a.state_hash();
                let output = a.apply(command);
                if command.is_read_only() {
                    prop_assert_eq!(b.read(command), Some(output.clone()));
                    prop_assert_eq!(a.state_hash(), before);
                }
                prop_assert_eq!(b.apply(command), output.clone());
                if let Some(c) = from_snapshot.as_mut() {
                    prop_assert_eq!(c.apply(command), output.clone());
                }
                if validate(command).is_err() {
                    prop_assert!(matches!(output, KvOutput::Invalid(_)));
                    prop_assert_eq!(a.state_hash(), before);
                }
                prop_assert_eq!(a.state_hash(), b.state_hash());
            }
            if let Some(c) = from_snapshot {
                prop_assert_eq!(c.state_hash(), a.state_hash());
            }
        }
    }
}

//! A bank ledger state machine: the seeds' running example of money that must never be
//! lost or made, on TigerBeetle's ledger model, simplified.
//!
//! Accounts have `u64` ids and `u64` balances. Money enters only through
//! [`BankCommand::Open`] (the initial balance); a [`Transfer`] moves it between two
//! accounts and never makes a balance negative. **Invariant: the sum of all balances
//! equals the sum of the initial balances of the opened accounts** ([`Bank::total`]),
//! and a snapshot that breaks it is refused.
//!
//! Transfer ids are chosen by the client and are the application's idempotency key
//! (TigerBeetle's `id`): a transfer id is decided once, and a repeat with the same fields
//! returns that first result and changes nothing, even if the first result was a
//! refusal. This is on top of, not instead of, the replica's client sessions: sessions
//! make one client's retry apply once; transfer ids make the same transfer apply once
//! even when it is resubmitted by a different client or session.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::state_machine::{encode_with_capacity, hash_encoding, SnapshotError, StateMachine};

/// The most transfers in one [`BankCommand::TransferBatch`]: TigerBeetle's batch size
/// (8190 transfers of 128 bytes fill its 1 MiB message).
pub const TRANSFER_BATCH_MAX: usize = 8190;

/// An account id.
pub type AccountId = u64;
/// A client-chosen transfer id: the idempotency key.
pub type TransferId = u64;

/// Moves `amount` from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub from: AccountId,
    pub to: AccountId,
    pub amount: u64,
}

/// What became of a transfer. Every variant but `Ok` left every balance unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferResult {
    /// The amount moved.
    Ok,
    /// `from` holds less than `amount`.
    InsufficientFunds,
    /// `from` or `to` was never opened.
    NoSuchAccount,
    /// `from == to`.
    SameAccount,
    /// `amount == 0`.
    ZeroAmount,
    /// `to` would hold more than `u64::MAX` (TigerBeetle's `overflows_credits`).
    BalanceOverflow,
    /// The id was already decided for a transfer with other `from`, `to` or `amount`.
    /// Unlike the others, this result is not recorded: the id keeps its first transfer.
    IdReused,
}

/// An operation on the bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankCommand {
    /// Opens an account holding `initial_balance`. Answers [`BankOutput::Opened`], or
    /// [`BankOutput::AlreadyExists`] (state unchanged) if the id is taken, even by an
    /// identical open.
    Open { account: AccountId, initial_balance: u64 },
    /// Answers [`BankOutput::Transfer`].
    Transfer(Transfer),
    /// Applies the transfers in order, atomically within one `apply`: later transfers
    /// see the effects of earlier ones, including their ids. At most
    /// [`TRANSFER_BATCH_MAX`]. Answers [`BankOutput::TransferBatch`], one result each.
    TransferBatch(Vec<Transfer>),
    /// Answers [`BankOutput::Balance`].
    Balance { account: AccountId },
    /// Every balance: the bank workload's full read. Answers [`BankOutput::ReadAll`].
    ReadAll,
    /// Every balance and the ids of the transfers that moved money, for the checkers'
    /// exactly-once test. Answers [`BankOutput::Ledger`].
    Ledger,
}

impl BankCommand {
    /// Whether the command never changes the state, so a server may answer it from a
    /// replica's state with [`Bank::read`] instead of putting it through the log.
    pub fn is_read_only(&self) -> bool {
        match self {
            BankCommand::Balance { .. } | BankCommand::ReadAll | BankCommand::Ledger => true,
            BankCommand::Open { .. } | BankCommand::Transfer(_) | BankCommand::TransferBatch(_) => false,
        }
    }
}

/// The answer to a [`BankCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankOutput {
    /// The account was created with its initial balance.
    Opened,
    /// The account existed already and holds `balance`; nothing changed.
    AlreadyExists {
        balance: u64,
    },
    Transfer(TransferResult),
    TransferBatch(Vec<TransferResult>),
    /// The account's balance, `None` if it was never opened.
    Balance(Option<u64>),
    ReadAll(BTreeMap<AccountId, u64>),
    Ledger(Ledger),
    /// The command was refused; the state did not change.
    Invalid(BankError),
}

/// The bank's full state as the checkers read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub balances: BTreeMap<AccountId, u64>,
    /// The ids of the transfers whose result was `Ok`, ascending.
    pub transfers_ok: Vec<TransferId>,
}

/// Why a command was refused. Every variant left the state unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    /// A batch holds more than [`TRANSFER_BATCH_MAX`] transfers.
    BatchTooLarge { transfers: usize },
}

impl fmt::Display for BankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankError::BatchTooLarge { transfers } => {
                write!(f, "batch of {transfers} transfers exceeds the limit of {TRANSFER_BATCH_MAX}")
            }
        }
    }
}

impl std::error::Error for BankError {}

/// Checks a command against the limits. The server calls it before proposing; `apply`
/// calls it too, so that an unchecked command is refused identically on every replica.
pub fn validate(command: &BankCommand) -> Result<(), BankError> {
    match command {
        BankCommand::TransferBatch(transfers) if transfers.len() > TRANSFER_BATCH_MAX => {
            Err(BankError::BatchTooLarge { transfers: transfers.len() })
        }
        _ => Ok(()),
    }
}

/// The ledger. Ordered maps only, so that every replica iterates and snapshots alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bank {
    balances: BTreeMap<AccountId, u64>,
    /// Every decided transfer id with its transfer and first result: the ledger's
    /// history and the idempotency table. It grows without bound; pruning it (say,
    /// below a client-acknowledged horizon, or by moving it to an on-disk tree as
    /// TigerBeetle's LSM forest does) is future work.
    transfers: BTreeMap<TransferId, (Transfer, TransferResult)>,
    /// The sum of the initial balances of the opened accounts: what `total` must equal.
    opened_total: u128,
}

impl Bank {
    pub fn new() -> Bank {
        Bank::default()
    }

    /// The sum of all balances. Equals the sum of the opened accounts' initial
    /// balances, always (a `u128` cannot overflow: at most 2^64 accounts of < 2^64).
    pub fn total(&self) -> u128 {
        self.balances.values().map(|&balance| u128::from(balance)).sum()
    }

    /// The balance of `account`, `None` if it was never opened.
    pub fn balance(&self, account: AccountId) -> Option<u64> {
        self.balances.get(&account).copied()
    }

    /// The first result decided for transfer `id`, if any.
    pub fn transfer(&self, id: TransferId) -> Option<(Transfer, TransferResult)> {
        self.transfers.get(&id).copied()
    }

    /// Answers a read-only command (see [`BankCommand::is_read_only`]) without changing
    /// the state; `None` if the command writes. Gives the same output `apply` would.
    pub fn read(&self, command: &BankCommand) -> Option<BankOutput> {
        let output = match command {
            BankCommand::Balance { account } => BankOutput::Balance(self.balance(*account)),
            BankCommand::ReadAll => BankOutput::ReadAll(self.balances.clone()),
            BankCommand::Ledger => BankOutput::Ledger(self.ledger()),
            BankCommand::Open { .. } | BankCommand::Transfer(_) | BankCommand::TransferBatch(_) => {
                return None
            }
        };
        Some(output)
    }

    /// The balances and the ids of the transfers that moved money. The list grows with
    /// the transfer table (see `transfers`); it is meant for test clusters.
    pub fn ledger(&self) -> Ledger {
        let transfers_ok = self
            .transfers
            .iter()
            .filter(|(_, (_, result))| *result == TransferResult::Ok)
            .map(|(&id, _)| id)
            .collect();
        Ledger { balances: self.balances.clone(), transfers_ok }
    }

    fn open(&mut self, account: AccountId, initial_balance: u64) -> BankOutput {
        if let Some(&balance) = self.balances.get(&account) {
            return BankOutput::AlreadyExists { balance };
        }
        self.balances.insert(account, initial_balance);
        self.opened_total += u128::from(initial_balance);
        BankOutput::Opened
    }

    /// Decides one transfer. The checks run in TigerBeetle's order: the id first (a
    /// retry must get its first answer even if the accounts changed since), then the
    /// transfer's own fields, then the accounts.
    fn transfer_once(&mut self, transfer: &Transfer) -> TransferResult {
        if let Some((first, result)) = self.transfers.get(&transfer.id) {
            return if first == transfer { *result } else { TransferResult::IdReused };
        }
        let result = self.decide(transfer);
        self.transfers.insert(transfer.id, (*transfer, result));
        result
    }

    fn decide(&mut self, transfer: &Transfer) -> TransferResult {
        if transfer.from == transfer.to {
            return TransferResult::SameAccount;
        }
        if transfer.amount == 0 {
            return TransferResult::ZeroAmount;
        }
        let (Some(&from_before), Some(&to_before)) =
            (self.balances.get(&transfer.from), self.balances.get(&transfer.to))
        else {
            return TransferResult::NoSuchAccount;
        };
        let Some(from_after) = from_before.checked_sub(transfer.amount) else {
            return TransferResult::InsufficientFunds;
        };
        let Some(to_after) = to_before.checked_add(transfer.amount) else {
            return TransferResult::BalanceOverflow;
        };
        // Conservation, locally: what left one account arrived in the other. (Summing
        // every balance after every transfer would cost O(accounts); `restore` and the
        // tests check the global sum.)
        assert_eq!(
            u128::from(from_before) + u128::from(to_before),
            u128::from(from_after) + u128::from(to_after),
            "transfer {} created or destroyed money",
            transfer.id
        );
        self.balances.insert(transfer.from, from_after);
        self.balances.insert(transfer.to, to_after);
        TransferResult::Ok
    }
}

impl StateMachine for Bank {
    type Command = BankCommand;
    type Output = BankOutput;

    fn apply(&mut self, command: &BankCommand) -> BankOutput {
        if let Err(error) = validate(command) {
            return BankOutput::Invalid(error);
        }
        match command {
            BankCommand::Open { account, initial_balance } => self.open(*account, *initial_balance),
            BankCommand::Transfer(transfer) => BankOutput::Transfer(self.transfer_once(transfer)),
            // Each transfer of a batch is all or nothing and none can fail half-way, so
            // applying them one after another within this apply is the batch's atomicity:
            // no other command runs in between.
            BankCommand::TransferBatch(transfers) => BankOutput::TransferBatch(
                transfers.iter().map(|transfer| self.transfer_once(transfer)).collect(),
            ),
            BankCommand::Balance { .. } | BankCommand::ReadAll | BankCommand::Ledger => {
                self.read(command).expect("a read-only command has a read answer")
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        // Varints: an account and its balance take at most 20 bytes, a transfer entry
        // about 40 in practice (ids, amount, result).
        encode_with_capacity(self, 32 + 20 * self.balances.len() + 40 * self.transfers.len())
    }

    fn state_hash(&self) -> u64 {
        hash_encoding(self)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let (bank, rest): (Bank, &[u8]) =
            postcard::take_from_bytes(snapshot).map_err(|e| SnapshotError(format!("bank: {e}")))?;
        if !rest.is_empty() {
            return Err(SnapshotError(format!("bank: {} trailing bytes", rest.len())));
        }
        // Check after reading what apply checked before writing: a snapshot in which
        // money was made or lost was not written by a correct Bank.
        if bank.total() != bank.opened_total {
            return Err(SnapshotError(format!(
                "bank: balances sum to {} but the accounts were opened with {}",
                bank.total(),
                bank.opened_total
            )));
        }
        if let Some((id, (transfer, _))) = bank.transfers.iter().find(|(id, (t, _))| **id != t.id) {
            return Err(SnapshotError(format!("bank: transfer {} is filed under id {id}", transfer.id)));
        }
        *self = bank;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;

    fn bank_with(accounts: &[(AccountId, u64)]) -> Bank {
        let mut bank = Bank::new();
        for &(account, initial_balance) in accounts {
            assert_eq!(bank.apply(&BankCommand::Open { account, initial_balance }), BankOutput::Opened);
        }
        bank
    }

    fn transfer(id: TransferId, from: AccountId, to: AccountId, amount: u64) -> BankCommand {
        BankCommand::Transfer(Transfer { id, from, to, amount })
    }

    #[test]
    fn open_creates_the_initial_balance_once() {
        let mut bank = bank_with(&[(1, 100)]);
        let again = BankCommand::Open { account: 1, initial_balance: 100 };
        assert_eq!(bank.apply(&again), BankOutput::AlreadyExists { balance: 100 });
        let other = BankCommand::Open { account: 1, initial_balance: 5 };
        assert_eq!(bank.apply(&other), BankOutput::AlreadyExists { balance: 100 });
        assert_eq!(bank.total(), 100);
    }

    #[test]
    fn transfer_moves_money_and_conserves_the_total() {
        let mut bank = bank_with(&[(1, 100), (2, 50)]);
        assert_eq!(bank.apply(&transfer(7, 1, 2, 30)), BankOutput::Transfer(TransferResult::Ok));
        assert_eq!(bank.balance(1), Some(70));
        assert_eq!(bank.balance(2), Some(80));
        assert_eq!(bank.total(), 150);
    }

    #[test]
    fn transfer_never_makes_a_balance_negative() {
        let mut bank = bank_with(&[(1, 10), (2, 0)]);
        assert_eq!(
            bank.apply(&transfer(1, 1, 2, 11)),
            BankOutput::Transfer(TransferResult::InsufficientFunds)
        );
        assert_eq!(bank.apply(&transfer(2, 1, 2, 10)), BankOutput::Transfer(TransferResult::Ok));
        assert_eq!(bank.balance(1), Some(0));
    }

    #[test]
    fn transfer_refusals_change_no_balance() {
        let mut bank = bank_with(&[(1, 10), (2, u64::MAX - 5)]);
        let cases = [
            (transfer(1, 1, 1, 5), TransferResult::SameAccount),
            (transfer(2, 1, 2, 0), TransferResult::ZeroAmount),
            (transfer(3, 1, 9, 5), TransferResult::NoSuchAccount),
            (transfer(4, 9, 1, 5), TransferResult::NoSuchAccount),
            (transfer(5, 1, 2, 6), TransferResult::BalanceOverflow),
        ];
        let before = bank.read(&BankCommand::ReadAll);
        for (command, result) in cases {
            assert_eq!(bank.apply(&command), BankOutput::Transfer(result));
        }
        assert_eq!(bank.read(&BankCommand::ReadAll), before);
    }

    #[test]
    fn repeated_transfer_id_returns_the_first_result() {
        let mut bank = bank_with(&[(1, 100), (2, 0)]);
        let ok = transfer(1, 1, 2, 60);
        assert_eq!(bank.apply(&ok), BankOutput::Transfer(TransferResult::Ok));
        // The repeat would now be refused for want of funds, but it is the same transfer:
        // it gets its first answer and moves nothing.
        assert_eq!(bank.apply(&ok), BankOutput::Transfer(TransferResult::Ok));
        assert_eq!(bank.balance(1), Some(40));

        // A refusal is decided once too: opening the account later does not revive it.
        let refused = transfer(2, 1, 3, 10);
        assert_eq!(bank.apply(&refused), BankOutput::Transfer(TransferResult::NoSuchAccount));
        bank.apply(&BankCommand::Open { account: 3, initial_balance: 0 });
        assert_eq!(bank.apply(&refused), BankOutput::Transfer(TransferResult::NoSuchAccount));
        assert_eq!(bank.balance(3), Some(0));
    }

    #[test]
    fn reused_transfer_id_with_other_fields_is_refused_and_changes_nothing() {
        let mut bank = bank_with(&[(1, 100), (2, 0)]);
        bank.apply(&transfer(1, 1, 2, 10));
        let before = bank.state_hash();
        assert_eq!(bank.apply(&transfer(1, 1, 2, 20)), BankOutput::Transfer(TransferResult::IdReused));
        assert_eq!(bank.apply(&transfer(1, 2, 1, 10)), BankOutput::Transfer(TransferResult::IdReused));
        assert_eq!(bank.state_hash(), before);
        assert_eq!(
            bank.transfer(1),
            Some((Transfer { id: 1, from: 1, to: 2, amount: 10 }, TransferResult::Ok))
        );
    }

    #[test]
    fn batch_transfers_apply_in_order_and_see_earlier_ones() {
        let mut bank = bank_with(&[(1, 10), (2, 0), (3, 0)]);
        let batch = BankCommand::TransferBatch(vec![
            Transfer { id: 1, from: 1, to: 2, amount: 10 },
            // Funded only by the transfer before it.
            Transfer { id: 2, from: 2, to: 3, amount: 10 },
            Transfer { id: 3, from: 2, to: 3, amount: 1 },
            // A duplicate within the batch gets the first result; a conflicting one is refused.
            Transfer { id: 1, from: 1, to: 2, amount: 10 },
            Transfer { id: 2, from: 2, to: 3, amount: 5 },
        ]);
        assert_eq!(
            bank.apply(&batch),
            BankOutput::TransferBatch(vec![
                TransferResult::Ok,
                TransferResult::Ok,
                TransferResult::InsufficientFunds,
                TransferResult::Ok,
                TransferResult::IdReused,
            ])
        );
        assert_eq!(
            bank.read(&BankCommand::ReadAll),
            Some(BankOutput::ReadAll(BTreeMap::from([(1, 0), (2, 0), (3, 10)])))
        );
    }

    #[test]
    fn oversize_batch_is_invalid_and_changes_nothing() {
        let mut bank = bank_with(&[(1, 10), (2, 0)]);
        let before = bank.state_hash();
        let batch = BankCommand::TransferBatch(
            (0..=TRANSFER_BATCH_MAX as u64).map(|id| Transfer { id, from: 1, to: 2, amount: 1 }).collect(),
        );
        let error = BankError::BatchTooLarge { transfers: TRANSFER_BATCH_MAX + 1 };
        assert_eq!(validate(&batch), Err(error.clone()));
        assert_eq!(bank.apply(&batch), BankOutput::Invalid(error));
        assert_eq!(bank.state_hash(), before);
    }

    #[test]
    fn ledger_lists_the_ids_of_ok_transfers_in_order() {
        let mut bank = bank_with(&[(1, 10), (2, 0)]);
        bank.apply(&transfer(9, 1, 2, 1));
        bank.apply(&transfer(3, 1, 2, 100));
        bank.apply(&transfer(5, 1, 2, 1));
        assert_eq!(
            bank.apply(&BankCommand::Ledger),
            BankOutput::Ledger(Ledger {
                balances: BTreeMap::from([(1, 8), (2, 2)]),
                transfers_ok: vec![5, 9]
            })
        );
        assert_eq!(bank.apply(&BankCommand::Balance { account: 2 }), BankOutput::Balance(Some(2)));
        assert_eq!(bank.apply(&BankCommand::Balance { account: 4 }), BankOutput::Balance(None));
    }

    #[test]
    fn snapshot_restore_round_trip_gives_an_equal_state_hash() {
        let mut bank = bank_with(&[(1, 100), (2, 5)]);
        bank.apply(&transfer(1, 1, 2, 30));
        bank.apply(&transfer(2, 2, 1, 300));
        let mut restored = Bank::new();
        restored.restore(&bank.snapshot()).unwrap();
        assert_eq!(restored, bank);
        assert_eq!(restored.state_hash(), bank.state_hash());
    }

    #[test]
    fn restore_of_garbage_bytes_is_an_error_and_keeps_the_state() {
        let mut bank = bank_with(&[(1, 100)]);
        let before = bank.state_hash();
        let mut trailing = bank.snapshot();
        trailing.push(0);
        for garbage in [vec![0xff; 16], vec![0x80], trailing, vec![0x03, 0x01]] {
            assert!(bank.restore(&garbage).is_err(), "{garbage:?} was accepted");
            assert_eq!(bank.state_hash(), before);
        }
    }

    #[test]
    fn restore_refuses_a_snapshot_that_made_money() {
        let mut forged = bank_with(&[(1, 100)]);
        forged.balances.insert(1, 1_000_000);
        let mut bank = Bank::new();
        assert!(bank.restore(&forged.snapshot()).is_err());
        assert_eq!(bank, Bank::new());
    }

    const ACCOUNTS: u64 = 5;

    fn transfer_strategy() -> impl Strategy<Value = Transfer> {
        // Few ids, accounts and amounts, so that ids repeat, accounts run dry and some
        // transfers name accounts that were never opened.
        (0u64..24, 0..ACCOUNTS + 1, 0..ACCOUNTS + 1, prop_oneof![0u64..60, Just(u64::MAX)])
            .prop_map(|(id, from, to, amount)| Transfer { id, from, to, amount })
    }

    fn command_strategy() -> impl Strategy<Value = BankCommand> {
        prop_oneof![
            2 => (0..ACCOUNTS, prop_oneof![0u64..100, Just(u64::MAX)])
                .prop_map(|(account, initial_balance)| BankCommand::Open { account, initial_balance }),
            6 => transfer_strategy().prop_map(BankCommand::Transfer),
            2 => proptest::collection::vec(transfer_strategy(), 0..6).prop_map(BankCommand::TransferBatch),
            1 => (0..ACCOUNTS + 1).prop_map(|account| BankCommand::Balance { account }),
            1 => Just(BankCommand::ReadAll),
            1 => Just(BankCommand::Ledger),
        ]
    }

    proptest! {
        // A fixed seed and no persistence file: every run explores the same cases, and a
        // failure found here becomes a named test above.
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(0xba2c),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn replicas_stay_identical_and_money_is_conserved(
            commands in proptest::collection::vec(command_strategy(), 0..64)
        ) {
            let mut a = Bank::new();
            let mut b = Bank::new();
            let mut opened_total: u128 = 0;
            let mut first_results: BTreeMap<TransferId, (Transfer, TransferResult)> = BTreeMap::new();
            for (i, command) in commands.iter().enumerate() {
                if i == commands.len() / 2 {
                    // b continues from a snapshot of a, as a lagging replica would.
                    b = Bank::new();
                    b.restore(&a.snapshot()).unwrap();
                }
                let output = a.apply(command);
                prop_assert_eq!(b.apply(command), output.clone());
                prop_assert_eq!(a.state_hash(), b.state_hash());
                if command.is_read_only() {
                    prop_assert_eq!(a.read(command), Some(output.clone()));
                }

                if let (BankCommand::Open { initial_balance, .. }, BankOutput::Opened) = (command, &output) {
                    opened_total += u128::from(*initial_balance);
                }
                let decided: Vec<(Transfer, TransferResult)> = match (command, &output) {
                    (BankCommand::Transfer(t), BankOutput::Transfer(r)) => vec![(*t, *r)],
                    (BankCommand::TransferBatch(ts), BankOutput::TransferBatch(rs)) => {
                        ts.iter().copied().zip(rs.iter().copied()).collect()
                    }
                    _ => vec![],
                };
                // Each id is decided once: a repeat gets the first result or IdReused.
                for (t, r) in decided {
                    match first_results.get(&t.id) {
                        Some((first, first_result)) if *first == t => prop_assert_eq!(r, *first_result),
                        Some(_) => prop_assert_eq!(r, TransferResult::IdReused),
                        None => {
                            prop_assert_ne!(r, TransferResult::IdReused);
                            first_results.insert(t.id, (t, r));
                        }
                    }
                }

                prop_assert_eq!(a.total(), opened_total);
            }
            let ok: Vec<TransferId> = first_results
                .iter()
                .filter(|(_, (_, r))| *r == TransferResult::Ok)
                .map(|(&id, _)| id)
                .collect();
            prop_assert_eq!(a.ledger().transfers_ok, ok);
        }
    }
}

//! The state machines that ship with Synod: a key-value store and a bank ledger, and
//! [`App`], both in one log — what `synod server` runs.

pub mod bank;
pub mod kv;

use serde::{Deserialize, Serialize};

use crate::state_machine::{SnapshotError, StateMachine};
use bank::{Bank, BankCommand, BankOutput};
use kv::{KvCommand, KvOutput, KvStore};

/// The server's state machine: the key-value store and the bank side by side, ordered by
/// one log (a transfer and a put in the same log are totally ordered).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct App {
    pub kv: KvStore,
    pub bank: Bank,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppCommand {
    Kv(KvCommand),
    Bank(BankCommand),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppOutput {
    Kv(KvOutput),
    Bank(BankOutput),
}

impl AppCommand {
    /// Reads change nothing and may be served by a leaseholder without the log.
    pub fn is_read_only(&self) -> bool {
        match self {
            AppCommand::Kv(command) => command.is_read_only(),
            AppCommand::Bank(command) => command.is_read_only(),
        }
    }
}

impl App {
    /// Answers a read-only command from local state; `None` for a write.
    pub fn read(&self, command: &AppCommand) -> Option<AppOutput> {
        match command {
            AppCommand::Kv(command) => self.kv.read(command).map(AppOutput::Kv),
            AppCommand::Bank(command) => self.bank.read(command).map(AppOutput::Bank),
        }
    }
}

impl StateMachine for App {
    type Command = AppCommand;
    type Output = AppOutput;

    fn apply(&mut self, command: &AppCommand) -> AppOutput {
        match command {
            AppCommand::Kv(command) => AppOutput::Kv(self.kv.apply(command)),
            AppCommand::Bank(command) => AppOutput::Bank(self.bank.apply(command)),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&(self.kv.snapshot(), self.bank.snapshot())).expect("snapshots serialize")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let (kv, bank): (Vec<u8>, Vec<u8>) =
            postcard::from_bytes(snapshot).map_err(|e| SnapshotError(e.to_string()))?;
        let mut restored = App::default();
        restored.kv.restore(&kv)?;
        restored.bank.restore(&bank)?;
        *self = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_snapshot_round_trips_both_stores() {
        let mut app = App::default();
        app.apply(&AppCommand::Kv(KvCommand::Put { key: b"a".to_vec(), value: b"1".to_vec() }));
        app.apply(&AppCommand::Bank(BankCommand::Open { account: 1, initial_balance: 10 }));
        let mut copy = App::default();
        copy.restore(&app.snapshot()).unwrap();
        assert_eq!(copy, app);
        assert_eq!(copy.state_hash(), app.state_hash());
    }
}

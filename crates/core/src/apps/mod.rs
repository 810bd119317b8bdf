//! The state machines that ship with Synod: a key-value store and a bank ledger.

pub mod bank;
pub mod kv;

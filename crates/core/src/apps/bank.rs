//! Bank ledger state machine (to be written).

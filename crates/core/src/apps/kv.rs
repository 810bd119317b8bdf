//! Key-value store state machine (to be written).

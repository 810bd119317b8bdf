//! The application interface (seed 003): a deterministic state machine that the log
//! drives. Every replica applies the same commands in the same order, so every replica
//! holds the same state (Schneider's state machine approach).

use std::fmt::Debug;
use std::hash::Hasher;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What commands and outputs must be: cloneable, comparable, and serializable, because
/// they travel in messages and live in the durable log.
pub trait Payload: Clone + Debug + PartialEq + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Debug + PartialEq + Serialize + DeserializeOwned + 'static> Payload for T {}

/// A deterministic state machine.
///
/// `apply` must be a pure function of the state and the command: no clocks, no
/// randomness, no I/O, no iteration over hash maps with random seeds. Replicas compare
/// `state_hash` to catch any divergence.
pub trait StateMachine {
    type Command: Payload;
    type Output: Payload;

    /// Applies one decided command and returns its output for the client.
    fn apply(&mut self, command: &Self::Command) -> Self::Output;

    /// Serializes the whole state (for checkpoints and state transfer).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a snapshot taken by `snapshot`.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;

    /// A digest of the state. Equal applied prefixes must give equal hashes.
    fn state_hash(&self) -> u64 {
        let mut hasher = Fnv64::default();
        hasher.write(&self.snapshot());
        hasher.finish()
    }
}

/// A snapshot could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid snapshot: {}", self.0)
    }
}

impl std::error::Error for SnapshotError {}

/// FNV-1a, 64 bit: a stable hash (std's `DefaultHasher` may change between releases,
/// and state hashes are compared across processes).
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

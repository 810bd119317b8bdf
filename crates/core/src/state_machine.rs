//! The application interface: a deterministic state machine that the log
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

/// The `Fnv64` digest of a value's postcard encoding, computed as the encoding is
/// produced: the same digest as hashing `postcard::to_allocvec(value)`, without building
/// the buffer (the simulator hashes every replica's whole state several times a
/// simulated second).
pub fn hash_encoding<T: Serialize + ?Sized>(value: &T) -> u64 {
    struct Hashing(Fnv64);
    impl postcard::ser_flavors::Flavor for Hashing {
        type Output = u64;
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.0.write(&[byte]);
            Ok(())
        }
        fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
            self.0.write(bytes);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<u64> {
            Ok(self.0.finish())
        }
    }
    postcard::serialize_with_flavor(value, Hashing(Fnv64::default())).expect("hashing cannot run out of room")
}

/// The length of a value's postcard encoding, counted as it is produced (nothing is
/// built): what bounds a batch or a catch-up message in bytes before it is encoded.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counting(usize);
    impl postcard::ser_flavors::Flavor for Counting {
        type Output = usize;
        fn try_push(&mut self, _byte: u8) -> postcard::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
            self.0 += bytes.len();
            Ok(())
        }
        fn finalize(self) -> postcard::Result<usize> {
            Ok(self.0)
        }
    }
    postcard::serialize_with_flavor(value, Counting(0)).expect("counting cannot run out of room")
}

/// Encodes `value` into a buffer of `capacity` bytes to start with: a snapshot's size is
/// known roughly in advance, and growing the buffer by doubling copies it over and over.
pub fn encode_with_capacity<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Vec<u8> {
    postcard::to_extend(value, Vec::with_capacity(capacity)).expect("in-memory state always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hashing_the_encoding_as_it_is_produced_equals_hashing_the_encoded_bytes() {
        let value: BTreeMap<u64, (Vec<u8>, String)> =
            (0..300u64).map(|i| (i * 7919, (vec![i as u8; (i % 17) as usize], format!("v{i}")))).collect();
        let bytes = postcard::to_allocvec(&value).unwrap();
        let mut fnv = Fnv64::default();
        fnv.write(&bytes);
        assert_eq!(hash_encoding(&value), fnv.finish());
        assert_eq!(encode_with_capacity(&value, 3), bytes);
        assert_eq!(encoded_len(&value), bytes.len());
        let mut other = value.clone();
        other.insert(1, (vec![], String::new()));
        assert_ne!(hash_encoding(&other), hash_encoding(&value));
    }
}

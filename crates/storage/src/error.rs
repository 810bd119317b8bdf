//! What can go wrong, in two kinds (STYLE.md "Two kinds of failure"): operating errors
//! that left state as it was, and fatal errors after which the node must stop.

use std::io;
use std::path::PathBuf;

use synod_core::Slot;

/// Why a storage call failed. Each variant says what it did to state.
///
/// **[`StorageError::SyncFailed`] AND [`StorageError::Poisoned`] ARE FATAL: THE NODE MUST
/// STOP, NEVER RETRY AND CARRY ON.** After a failed fsync the kernel may already have
/// dropped the dirty pages and marked them clean, so a retried fsync can "succeed" over
/// data that never reached the disk (the PostgreSQL "fsyncgate" of 2018; Rebello et al.,
/// "Can Applications Recover from fsync Failures?", ATC'20). Restarting runs recovery,
/// which reads back what truly survived. [`StorageError::is_fatal`] tells them apart.
#[derive(Debug)]
pub enum StorageError {
    /// FATAL. An fsync or fdatasync failed. What was appended since the last successful
    /// sync may or may not be on disk. The storage is poisoned: every later call fails
    /// with [`StorageError::Poisoned`]. STOP THE NODE.
    SyncFailed { path: PathBuf, source: io::Error },
    /// FATAL. An earlier fatal error (named in `cause`) poisoned this storage; the call
    /// did nothing. STOP THE NODE.
    Poisoned { cause: String },
    /// A read, write, create, rename or delete failed (for example the disk is full).
    /// The call had no effect on durable state: a failed append was cut back to where
    /// its batch began, and its records got no log sequence numbers.
    Io { action: String, path: PathBuf, source: io::Error },
    /// One record encodes to more bytes than `StorageOptions::record_bytes_max`.
    /// Nothing was written.
    RecordTooLarge { bytes: usize, max: usize },
    /// A checkpoint older than the one already installed was offered. Nothing changed.
    StaleCheckpoint { last_slot: Slot, installed: Slot },
    /// There is no checkpoint to send. Nothing changed.
    NoCheckpoint,
    /// Another process holds the directory's lock. Nothing was read or changed.
    Locked { path: PathBuf },
    /// The directory holds no storage and `create_if_missing` is off. Nothing changed.
    NotFound { path: PathBuf },
    /// A received checkpoint chunk was refused (bad checksum, unexpected offset, another
    /// checkpoint, over the size bound). The receiver is unchanged: ask for it again.
    BadChunk { offset: u64, reason: String },
    /// A checkpoint file fails verification at `offset`. It was not installed or sent.
    CorruptCheckpoint { path: PathBuf, offset: u64, reason: String },
    /// The directory's `IDENTITY` file is unreadable or fails its checksum: whose storage
    /// this is cannot be told. Nothing was changed; the operator must look.
    CorruptIdentity { path: PathBuf, reason: String },
}

impl StorageError {
    /// The node must stop (see the type's docs).
    pub fn is_fatal(&self) -> bool {
        matches!(self, StorageError::SyncFailed { .. } | StorageError::Poisoned { .. })
    }

    pub(crate) fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        StorageError::Io { action: action.into(), path: path.into(), source }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::SyncFailed { path, source } => {
                write!(f, "FATAL: fsync of {} failed: {source}; the node must stop", path.display())
            }
            StorageError::Poisoned { cause } => {
                write!(f, "FATAL: storage stopped after an earlier error: {cause}")
            }
            StorageError::Io { action, path, source } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
            StorageError::RecordTooLarge { bytes, max } => {
                write!(f, "a record of {bytes} bytes exceeds the limit of {max} bytes")
            }
            StorageError::StaleCheckpoint { last_slot, installed } => {
                write!(
                    f,
                    "checkpoint through slot {last_slot} is older than the installed one (slot {installed})"
                )
            }
            StorageError::NoCheckpoint => write!(f, "no checkpoint has been written"),
            StorageError::Locked { path } => write!(f, "{} is locked by another process", path.display()),
            StorageError::NotFound { path } => write!(f, "no storage in {}", path.display()),
            StorageError::BadChunk { offset, reason } => {
                write!(f, "checkpoint chunk at byte {offset} refused: {reason}")
            }
            StorageError::CorruptCheckpoint { path, offset, reason } => {
                write!(f, "checkpoint {} is corrupt at byte {offset}: {reason}", path.display())
            }
            StorageError::CorruptIdentity { path, reason } => {
                write!(
                    f,
                    "identity file {} is corrupt ({reason}): whose storage this is cannot be told",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::SyncFailed { source, .. } | StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

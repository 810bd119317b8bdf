//! The data directory's identity: who it belongs to, and which incarnation of storage it
//! is. Written once, when the directory is created, and checked at every start.
//!
//! ```text
//! <dir>/IDENTITY = b"synod-identity\n" | version u8 | postcard(DirIdentity) | crc32c u32
//! ```
//!
//! `dir_id` is drawn at random when the directory is created: an empty directory (a
//! replaced disk, a wrong volume, a container without its volume) gets a new one, so its
//! peers can tell that it is not the storage they remember (`synod_core`'s
//! `node/identity.rs`). The cluster and node it was created for let a start refuse a
//! directory that belongs to another node or another cluster.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{sync_dir, StorageError};

/// The file's name inside the data directory.
pub const IDENTITY_FILE: &str = "IDENTITY";
const MAGIC: &[u8] = b"synod-identity\n";
const VERSION: u8 = 1;

/// What the `IDENTITY` file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirIdentity {
    /// Random and never 0, drawn when the directory was created.
    pub dir_id: u64,
    /// The wire cluster id (`synod_core::wire::cluster_id`) it was created for.
    pub cluster_id: u64,
    /// The member it was created for.
    pub node_id: u32,
}

/// Reads `<dir>/IDENTITY`: `Ok(None)` if there is none, an error if it is unreadable or
/// fails its checksum (damage the operator must look at: the directory's owner is unknown).
pub fn read_identity(dir: &Path) -> Result<Option<DirIdentity>, StorageError> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("read", &path, error)),
    };
    let corrupt =
        |reason: &str| StorageError::CorruptIdentity { path: path.clone(), reason: reason.to_string() };
    let body_len = bytes.len().checked_sub(4).ok_or_else(|| corrupt("too short"))?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| corrupt("not an identity file"))?;
    let (&version, payload) = rest.split_first().ok_or_else(|| corrupt("too short"))?;
    if version != VERSION {
        return Err(corrupt(&format!("version {version}, expected {VERSION}")));
    }
    let identity: DirIdentity = postcard::from_bytes(payload).map_err(|e| corrupt(&e.to_string()))?;
    if identity.dir_id == 0 {
        return Err(corrupt("a zero identity"));
    }
    Ok(Some(identity))
}

/// Writes `<dir>/IDENTITY` durably: temporary file, fsync, rename, directory fsync.
pub fn write_identity(dir: &Path, identity: &DirIdentity) -> Result<(), StorageError> {
    assert_ne!(identity.dir_id, 0, "an identity is never 0");
    let mut bytes = MAGIC.to_vec();
    bytes.push(VERSION);
    bytes.extend(postcard::to_allocvec(identity).expect("an identity encodes"));
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let path = dir.join(IDENTITY_FILE);
    fs::write(&temp, &bytes).map_err(|e| StorageError::io("write", &temp, e))?;
    File::open(&temp)
        .and_then(|file| file.sync_all())
        .map_err(|source| StorageError::SyncFailed { path: temp.clone(), source })?;
    fs::rename(&temp, &path).map_err(|e| StorageError::io("rename", &path, e))?;
    sync_dir(dir)?;
    debug_assert_eq!(
        read_identity(dir).ok().flatten().as_ref(),
        Some(identity),
        "read back what was written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_a_flipped_bit_is_refused() {
        let dir = std::env::temp_dir().join(format!("synod-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_identity(&dir).unwrap(), None);
        let identity = DirIdentity { dir_id: 0x1234_5678_9abc, cluster_id: 7, node_id: 2 };
        write_identity(&dir, &identity).unwrap();
        assert_eq!(read_identity(&dir).unwrap(), Some(identity));
        let path = dir.join(IDENTITY_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 3] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_identity(&dir), Err(StorageError::CorruptIdentity { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}

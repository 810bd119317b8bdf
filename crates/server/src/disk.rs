//! Opening a node's data directory: recovery, checkpoints, and what damage means.
//!
//! A torn write at the end of the log was never acknowledged and is cut off silently.
//! Any other damage (a bad checksum mid-log, a missing or bad checkpoint) means this
//! replica may have lost promises or votes it gave: it starts anyway, but in recovery
//! (`synod_core::recovery`) — it votes again only once every other member has answered it
//! and it has caught up past everything they hold, and it says so in its log and in
//! `/v1/status`. The `DAMAGED` marker keeps it that way across restarts until the repair
//! is durable. `rejoin` asks for the same treatment for a directory that looks fresh
//! (a replaced disk: an empty directory cannot tell "new" from "lost").

use std::path::Path;

use synod_core::{DurableState, Payload, Snapshot};
use synod_storage::{Checkpoint, CheckpointMeta, FileStorage, StorageOptions};

/// A recovered data directory, ready for `Node::new`.
pub struct Opened<C> {
    pub storage: FileStorage<C>,
    pub durable: DurableState<C>,
    /// The node must start with `Node::recover_from_peers`.
    pub recover_from_peers: bool,
}

/// Opens (or creates) `dir` and recovers it. `rejoin`: treat the directory as lost.
pub fn open<C: Payload>(dir: &Path, rejoin: bool) -> Result<Opened<C>, String> {
    let (storage, recovered) = FileStorage::<C>::open(dir, StorageOptions::default())
        .map_err(|e| format!("cannot open the data directory {}: {e}", dir.display()))?;
    let report = &recovered.report;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(?torn, "truncated a torn write at the end of the log (it was never acknowledged)");
    }
    if report.damaged {
        for damage in &report.damage {
            tracing::error!(%damage, "storage damage found");
        }
        tracing::error!(
            dir = %dir.display(),
            "this replica's storage is damaged and it may have lost promises it made: it will not vote \
             until it has repaired from its peers (every other member must answer it)"
        );
    } else if rejoin {
        tracing::warn!(
            dir = %dir.display(),
            "rejoin: treating this replica's storage as lost; it will not vote until it has repaired \
             from its peers"
        );
    }
    let mut durable = recovered.state;
    durable.snapshot = recovered.checkpoint.map(snapshot_of);
    tracing::info!(
        dir = %dir.display(),
        fresh = report.fresh,
        records = report.records_replayed,
        checkpoint = ?durable.snapshot.as_ref().map(|s| s.last_slot),
        "recovered storage"
    );
    Ok(Opened { storage, durable, recover_from_peers: report.damaged || rejoin })
}

/// The core's snapshot in a checkpoint file: the state machine's bytes are the
/// checkpoint's snapshot, the sessions ride in its metadata.
pub fn snapshot_of(checkpoint: Checkpoint) -> Snapshot {
    Snapshot {
        last_slot: checkpoint.meta.last_slot,
        state: checkpoint.snapshot,
        sessions: checkpoint.meta.sessions,
    }
}

/// The checkpoint metadata for a core snapshot.
pub fn checkpoint_meta(snapshot: &Snapshot, configuration: &[u8]) -> CheckpointMeta {
    CheckpointMeta {
        last_slot: snapshot.last_slot,
        configuration: configuration.to_vec(),
        sessions: snapshot.sessions.clone(),
    }
}

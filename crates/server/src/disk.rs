//! Opening a node's data directory: recovery, checkpoints, identity, and what damage means.
//!
//! A torn write at the end of the log was never acknowledged and is cut off silently.
//! Any other damage (a bad checksum mid-log, a missing or bad checkpoint) means this
//! replica may have lost promises or votes it gave: it starts anyway, but in recovery
//! (`synod_core::recovery`) — it votes again only once every other member has answered it
//! and it has caught up past everything they hold, and it says so in its log and in
//! `/v1/status`. The `DAMAGED` marker keeps it that way across restarts until the repair
//! is durable.
//!
//! **An empty directory is not a new cluster.** A replaced disk, a wrong volume or a
//! container started without its volume all look empty, and a member that voted from an
//! empty directory would have forgotten every promise it made: acknowledged writes could
//! be lost. So a directory created empty gets a new identity (`IDENTITY`) and the damage
//! marker, and the node recovers from its peers like a damaged one — for the first start
//! of a new cluster that simply means: it votes once every other member has answered.
//! `bootstrap` says the opposite explicitly (founding a cluster without every member at
//! hand): an empty directory votes at once. `rejoin` forces recovery on a directory that
//! is not empty (an old backup put back).

use std::path::Path;

use synod_core::{Configuration, DurableState, Membership, NodeId, Payload, Snapshot};
use synod_storage::{
    read_identity, write_identity, Checkpoint, CheckpointMeta, DirIdentity, FileStorage, StorageOptions,
};

/// A recovered data directory, ready for `Node::new`.
pub struct Opened<C> {
    pub storage: FileStorage<C>,
    pub durable: DurableState<C>,
    /// The node must start with `Node::recover_from_peers`.
    pub recover_from_peers: bool,
    /// The directory's identity, for `Node::set_dir_id`.
    pub dir_id: u64,
}

/// Whose directory this is and how to treat an empty one.
#[derive(Clone, Copy, Debug)]
pub struct OpenAs {
    pub node_id: u32,
    /// The wire cluster id (`synod_core::wire::cluster_id` of the cluster's name).
    pub cluster_id: u64,
    /// Treat the directory as lost even if it is not empty.
    pub rejoin: bool,
    /// An empty directory founds a new cluster and votes at once.
    pub bootstrap: bool,
}

/// Opens (or creates) `dir`, checks whose it is, and recovers it.
pub fn open<C: Payload>(dir: &Path, open_as: OpenAs) -> Result<Opened<C>, String> {
    let (mut storage, recovered) = FileStorage::<C>::open(dir, StorageOptions::default())
        .map_err(|e| format!("cannot open the data directory {}: {e}", dir.display()))?;
    let report = &recovered.report;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(?torn, "truncated a torn write at the end of the log (it was never acknowledged)");
    }
    let empty = report.records_replayed == 0 && recovered.checkpoint.is_none();
    let identity = read_identity(dir).map_err(|e| format!("data directory {}: {e}", dir.display()))?;
    let mut new_replica = false;
    let dir_id = match identity {
        Some(identity) => {
            if identity.node_id != open_as.node_id || identity.cluster_id != open_as.cluster_id {
                return Err(format!(
                    "data directory {} belongs to node {} of cluster {:#x}, not to node {} of cluster {:#x}: \
                     is this the right volume?",
                    dir.display(),
                    identity.node_id,
                    identity.cluster_id,
                    open_as.node_id,
                    open_as.cluster_id
                ));
            }
            identity.dir_id
        }
        None => {
            // The marker first: a crash before the identity is written leaves a directory
            // that is still empty, or already marked.
            new_replica = empty && !open_as.bootstrap;
            if new_replica {
                storage
                    .mark_damaged(
                        "a new replica on an empty directory: it recovers from its peers before it votes",
                    )
                    .map_err(|e| format!("data directory {}: {e}", dir.display()))?;
            }
            let dir_id = loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            let identity = DirIdentity { dir_id, cluster_id: open_as.cluster_id, node_id: open_as.node_id };
            write_identity(dir, &identity).map_err(|e| format!("data directory {}: {e}", dir.display()))?;
            if !empty {
                tracing::info!(dir = %dir.display(), "gave an existing data directory its identity");
            }
            dir_id
        }
    };
    if report.damaged {
        for damage in &report.damage {
            tracing::error!(%damage, "storage damage found");
        }
        tracing::error!(
            dir = %dir.display(),
            "this replica's storage is damaged and it may have lost promises it made: it will not vote \
             until it has repaired from its peers (every other member must answer it)"
        );
    } else if new_replica {
        tracing::warn!(
            dir = %dir.display(),
            "the data directory is empty: this replica votes only once every other member has answered it \
             and it has caught up (use --bootstrap to found a cluster without every member)"
        );
    } else if open_as.rejoin {
        tracing::warn!(
            dir = %dir.display(),
            "rejoin: treating this replica's storage as lost; it will not vote until it has repaired \
             from its peers"
        );
        storage
            .mark_damaged("rejoin: the operator said this replica's storage was lost")
            .map_err(|e| format!("data directory {}: {e}", dir.display()))?;
    }
    let mut durable = recovered.state;
    durable.snapshot = recovered
        .checkpoint
        .map(snapshot_of)
        .transpose()
        .map_err(|e| format!("data directory {}: {e}", dir.display()))?;
    tracing::info!(
        dir = %dir.display(),
        dir_id = format!("{dir_id:016x}"),
        empty,
        records = report.records_replayed,
        checkpoint = ?durable.snapshot.as_ref().map(|s| s.last_slot),
        "recovered storage"
    );
    let recover_from_peers = report.damaged || new_replica || open_as.rejoin;
    Ok(Opened { storage, durable, recover_from_peers, dir_id })
}

/// The core's snapshot in a checkpoint file: the state machine's bytes are the
/// checkpoint's snapshot; the sessions and the membership ride in its metadata (a
/// checkpoint written before configurations changed through the log holds the static
/// member list there instead, read as the first configuration).
pub fn snapshot_of(checkpoint: Checkpoint) -> Result<Snapshot, String> {
    #[derive(serde::Deserialize)]
    struct StaticMembers {
        members: Vec<NodeId>,
    }
    let bytes = &checkpoint.meta.configuration;
    let membership = match postcard::from_bytes::<Membership>(bytes) {
        Ok(membership) => membership,
        Err(error) => match postcard::from_bytes::<StaticMembers>(bytes) {
            Ok(old) if !old.members.is_empty() => Membership::new(Configuration::new(old.members)),
            _ => return Err(format!("the checkpoint's membership does not decode: {error}")),
        },
    };
    Ok(Snapshot {
        last_slot: checkpoint.meta.last_slot,
        state: checkpoint.snapshot,
        sessions: checkpoint.meta.sessions,
        membership,
    })
}

/// The checkpoint metadata for a core snapshot.
pub fn checkpoint_meta(snapshot: &Snapshot) -> CheckpointMeta {
    CheckpointMeta {
        last_slot: snapshot.last_slot,
        configuration: postcard::to_allocvec(&snapshot.membership).expect("a membership encodes"),
        sessions: snapshot.sessions.clone(),
    }
}

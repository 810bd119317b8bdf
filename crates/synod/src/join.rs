//! `synod server --join ADDR[,ADDR...]`: an empty node asks a running cluster to admit it
//! as a learner, then starts from the configuration that admitted it.
//!
//! The member's answer (the decided change) carries the cluster's name and the new
//! configuration with every member's addresses: the joining node needs nothing else. It is
//! kept in the data directory (`JOINED`), so that a restart with the same command line
//! does not ask again. A cluster name given with `--cluster` travels with the request and
//! a member of another cluster refuses it (409 `cluster_mismatch`); a data directory of
//! another cluster is refused by its identity (`disk`). The node then starts on an empty
//! directory, so it recovers from its peers before it could ever vote, and fetches the
//! state the existing way (the log, or a snapshot when the leader compacted it).

use std::path::Path;

use serde::{Deserialize, Serialize};
use synod_client::api::{AddMemberRequest, MemberChangeResponse};
use synod_client::{Client, Error, Options};
use synod_server::config::{Config, Joined, MemberConfig};

/// The file in the data directory that remembers how this node joined.
const JOINED_FILE: &str = "JOINED";

/// How long a join waits for another change to take force before it gives up.
const CHANGE_IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What `JOINED` holds: enough to start again as the node that was admitted.
#[derive(Debug, Serialize, Deserialize)]
struct JoinedFile {
    cluster: String,
    node_id: u32,
    members: Vec<MemberConfig>,
    joined: Joined,
}

/// Where this node is reached, as it asks to be admitted.
pub struct Joining<'a> {
    pub members: &'a [String],
    pub node_id: Option<u32>,
    pub cluster: Option<&'a str>,
    pub peer_addr: &'a str,
    pub http_addr: &'a str,
}

/// Fills `config` with the cluster this node joined: from `JOINED` if it joined before,
/// else by asking one of `joining.members` to admit it.
pub async fn join(config: &mut Config, joining: Joining<'_>) -> Result<(), String> {
    let path = config.data_dir.join(JOINED_FILE);
    let file = match read(&path)? {
        Some(file) => {
            tracing::info!(node = file.node_id, cluster = %file.cluster, "joined before: starting as that member");
            file
        }
        None => {
            let file = ask(&joining).await?;
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
            write(&path, &file)?;
            file
        }
    };
    if let Some(cluster) = joining.cluster {
        if cluster != file.cluster {
            return Err(format!(
                "this data directory joined cluster {:?}, not {cluster:?}: is this the right volume?",
                file.cluster
            ));
        }
    }
    if joining.node_id.is_some_and(|id| id != file.node_id) {
        return Err(format!(
            "this data directory joined as node {}, not {}",
            file.node_id,
            joining.node_id.unwrap()
        ));
    }
    config.node_id = file.node_id;
    config.cluster = file.cluster;
    config.members = file.members;
    config.joined = Some(file.joined);
    Ok(())
}

async fn ask(joining: &Joining<'_>) -> Result<JoinedFile, String> {
    let endpoints = joining
        .members
        .iter()
        .map(|m| if m.starts_with("http") { m.clone() } else { format!("http://{m}") })
        .collect();
    let client = Client::new(endpoints, Options::default());
    let request = AddMemberRequest {
        id: joining.node_id,
        peer_addr: joining.peer_addr.to_string(),
        http_addr: joining.http_addr.to_string(),
        cluster: joining.cluster.map(str::to_string),
    };
    // Another change (another node joining, say) may be taking force: one change at a
    // time, so wait for it, a bounded while.
    let deadline = std::time::Instant::now() + CHANGE_IN_FLIGHT_WAIT;
    let answer: MemberChangeResponse = loop {
        match client.add_member(&request).await {
            Ok(answer) => break answer,
            Err(Error::Rejected { code, .. })
                if code == "change_in_flight" && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => return Err(format!("the cluster did not admit this node: {error}")),
        }
    };
    let latest = &answer.members.latest;
    tracing::info!(
        node = answer.id,
        cluster = %answer.members.cluster,
        epoch = latest.epoch,
        voters = ?latest.voters,
        learners = ?latest.learners,
        "admitted as a learner"
    );
    let members = latest
        .members
        .iter()
        .map(|m| MemberConfig {
            id: m.id,
            peer: m.peer_addr.clone(),
            http: m.http_addr.trim_start_matches("http://").to_string(),
        })
        .collect();
    Ok(JoinedFile {
        cluster: answer.members.cluster.clone(),
        node_id: answer.id,
        members,
        joined: Joined { epoch: latest.epoch, learners: latest.learners.clone() },
    })
}

fn read(path: &Path) -> Result<Option<JoinedFile>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is damaged: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Written whole to a temporary file, synced, then renamed: a crash leaves the old state
/// or the new, never half a file.
fn write(path: &Path, file: &JoinedFile) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(file).expect("serializable");
    let temporary = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(&text)?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

//! `Member`: Synod as a library (PMMC's replica interface: propose, then learn the
//! decision). Give it your deterministic [`StateMachine`], the cluster's members and a
//! data directory; call
//! [`Member::invoke`], which resolves with your state machine's output once the command
//! is decided and applied — exactly once, however often it is retried.
//!
//! ```no_run
//! # use synod_server::member::{Member, MemberOptions};
//! # async fn example<S: synod_core::StateMachine + Send + 'static>(my_state_machine: S, cmd: S::Command)
//! # where S::Command: Send, S::Output: Send {
//! let members = vec![(1, "10.0.0.1:7100".to_string()), (2, "10.0.0.2:7100".into()), (3, "10.0.0.3:7100".into())];
//! let member = Member::start(MemberOptions::new(1, members, "/var/lib/app/synod"), my_state_machine)
//!     .await
//!     .expect("started");
//! let output = member.invoke(cmd).await;
//! # }
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use synod_core::{Command, Options, Rejection, StateMachine, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::driver::{DriverStats, Input};

/// How to start a member.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    pub node_id: u32,
    /// Every member: (id, peer address `host:port`).
    pub members: Vec<(u32, String)>,
    pub data_dir: PathBuf,
    /// The cluster's name; frames of other clusters are refused.
    pub cluster: String,
    pub protocol: Options,
    /// An `invoke` that is not applied within this long fails with `Timeout`.
    pub invoke_timeout: Duration,
    /// Found a new cluster: an empty data directory votes at once instead of waiting for
    /// every other member to answer first (see `disk`).
    pub bootstrap: bool,
}

impl MemberOptions {
    pub fn new(node_id: u32, members: Vec<(u32, String)>, data_dir: impl Into<PathBuf>) -> Self {
        MemberOptions {
            node_id,
            members,
            data_dir: data_dir.into(),
            cluster: "synod".into(),
            protocol: Options::default(),
            invoke_timeout: Duration::from_secs(10),
            bootstrap: false,
        }
    }
}

/// Why an `invoke` did not return an output. Each says what is known of its effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeError {
    /// Not applied within the timeout: it may still be applied later, once.
    Timeout,
    /// Refused before proposal (queue full): not applied.
    Busy,
    /// The member is shutting down: the outcome is unknown.
    Stopped,
}

/// A running member of a Synod cluster.
pub struct Member<S: StateMachine> {
    inputs: mpsc::SyncSender<Input<S>>,
    stats: Arc<Mutex<DriverStats>>,
    client_id: u64,
    seq: AtomicU64,
    timeout: Duration,
    protocol: Option<std::thread::JoinHandle<()>>,
}

impl<S> Member<S>
where
    S: StateMachine + Send + 'static,
    S::Command: Send,
    S::Output: Send,
{
    /// Recovers the data directory, binds the peer address and starts the protocol.
    /// Needs a tokio runtime (the transport runs on it).
    pub async fn start(options: MemberOptions, state_machine: S) -> Result<Member<S>, String> {
        let me = options.members.iter().find(|m| m.0 == options.node_id).ok_or("node_id is not a member")?;
        let listener =
            TcpListener::bind(&me.1).await.map_err(|e| format!("cannot listen on {}: {e}", me.1))?;
        let cluster_id = synod_core::wire::cluster_id(&options.cluster);
        let open_as = crate::disk::OpenAs {
            node_id: options.node_id,
            cluster_id,
            rejoin: false,
            bootstrap: options.bootstrap,
        };
        let parts = crate::assembly::Parts {
            node_id: options.node_id,
            members: options.members.iter().map(|(id, peer)| (*id, peer.clone(), None)).collect(),
            joined: None,
            cluster_id,
            options: options.protocol.clone(),
            state_machine,
            opened: crate::disk::open::<S::Command>(&options.data_dir, open_as)?,
            // Members answer only through `invoke`: no local reads, so no reader is needed.
            reader: |_, _| None,
            bugs: synod_core::PlantedBugs::default(),
            thread_name: format!("synod-member-{}", options.node_id),
        };
        let crate::assembly::Running { inputs, stats, protocol, .. } =
            crate::assembly::start(parts, listener)?;
        Ok(Member {
            inputs,
            stats,
            client_id: rand::thread_rng().gen_range(1..synod_core::EPHEMERAL_CLIENT_BIT),
            seq: AtomicU64::new(1),
            timeout: options.invoke_timeout,
            protocol: Some(protocol),
        })
    }

    /// Proposes `command` and resolves with its output once it is decided and applied.
    pub async fn invoke(&self, command: S::Command) -> Result<S::Output, InvokeError> {
        // Each call is its own session step; concurrent calls use distinct sessions so
        // that none replaces another's pending command.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let client_id = self.client_id.wrapping_add(seq) & !synod_core::EPHEMERAL_CLIENT_BIT;
        let (reply, receiver) = oneshot::channel();
        self.inputs
            .try_send(Input::Invoke(Command { client_id, seq: 1, op: command }, reply))
            .map_err(|_| InvokeError::Busy)?;
        match tokio::time::timeout(self.timeout, receiver).await {
            Ok(Ok(Ok(output))) => Ok(output),
            Ok(Ok(Err(Rejection::Busy))) => Err(InvokeError::Busy),
            // Each call has a fresh session, so neither can happen here; were one to,
            // `Stopped` (the outcome is unknown) is the cautious answer.
            Ok(Ok(Err(Rejection::SessionExpired | Rejection::SessionConflict))) => Err(InvokeError::Stopped),
            Ok(Err(_)) => Err(InvokeError::Stopped),
            Err(_) => Err(InvokeError::Timeout),
        }
    }

    /// This member's view of the cluster.
    pub fn status(&self) -> Option<Status> {
        self.stats.lock().expect("stats lock").status.clone()
    }

    /// Stops the protocol after persisting and releasing what it holds.
    pub fn shutdown(mut self) {
        let _ = self.inputs.send(Input::Shutdown);
        if let Some(protocol) = self.protocol.take() {
            let _ = protocol.join();
        }
    }
}

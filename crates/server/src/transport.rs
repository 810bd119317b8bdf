//! TCP between servers. Each node keeps one outbound connection per peer and accepts
//! inbound connections from peers; a connection starts with a `Hello` naming the sender,
//! then carries frames of `synod_core::wire` (length, version, cluster id, CRC32C).
//!
//! Links are fair-loss by design (seed 002): a full send queue or a broken connection
//! drops messages, and the protocol's retransmissions make up for it. Reconnection uses
//! capped exponential backoff with full jitter (seed 001's thundering herd).
//!
//! A partition that drops packets silently leaves both ends of a connection "established"
//! while TCP retransmits with an exponential backoff that reaches seconds: after the
//! partition heals, the link would stay mute until the next retransmission, and a
//! leader killed in that window could not be replaced because its survivors did not hear
//! each other (seen by `synod nemesis`: 3-7 s without a leader instead of 0.5 s). So an
//! outbound connection whose data stays unacknowledged for [`PEER_USER_TIMEOUT`] is
//! dropped (`TCP_USER_TIMEOUT`) and redialled within [`RECONNECT_CAP_MS`]; heartbeats
//! keep data in flight, so a dead link is found within that time. Inbound connections
//! use TCP keepalive with the same bound, so the reader of a connection whose sender is
//! gone (its reset lost in the partition) ends instead of lingering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use synod_core::wire::{self, FrameError};
use synod_core::{Message, NodeId, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Frames waiting for one peer's connection at most; more are dropped (fair-loss).
pub const PEER_QUEUE_FRAMES_MAX: usize = 4096;
const RECONNECT_BASE_MS: u64 = 50;
const RECONNECT_CAP_MS: u64 = 500;
/// Sent data unacknowledged this long means the link is dead (see the module docs). Well
/// above a loaded machine's round trip, well below an election timeout's multiple.
const PEER_USER_TIMEOUT: Duration = Duration::from_millis(1_500);
/// A connection attempt that takes longer is abandoned and retried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Bounds how long a peer connection can stay silently broken (module docs).
fn bound_dead_link(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_tcp_user_timeout(Some(PEER_USER_TIMEOUT));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_millis(500))
        .with_interval(Duration::from_millis(500))
        .with_retries(3);
    let _ = socket.set_tcp_keepalive(&keepalive);
}

/// The first frame of every connection.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    from: NodeId,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub frames_sent: AtomicU64,
    pub frames_dropped_queue_full: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_refused: AtomicU64,
    pub connects: AtomicU64,
}

/// The sending half: one bounded queue per peer.
#[derive(Clone)]
pub struct Outbound {
    queues: Arc<BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>>,
    cluster_id: u64,
    stats: Arc<TransportStats>,
}

impl Outbound {
    /// Encodes and queues `message` for `to`; drops it if the queue is full.
    pub fn send<C: Payload>(&self, to: NodeId, message: &Message<C>) {
        let Some(queue) = self.queues.get(&to) else { return };
        let frame = wire::encode(self.cluster_id, message);
        if queue.try_send(frame).is_err() {
            self.stats.frames_dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn queue_depth(&self) -> usize {
        self.queues.values().map(|q| q.max_capacity() - q.capacity()).sum()
    }
}

/// Starts one connection task per peer and returns the sending half.
pub fn start_outbound(
    me: NodeId,
    cluster_id: u64,
    peers: &BTreeMap<NodeId, String>,
    stats: Arc<TransportStats>,
) -> Outbound {
    let mut queues = BTreeMap::new();
    for (&peer, addr) in peers {
        let addr = addr.clone();
        if peer == me {
            continue;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
        queues.insert(peer, tx);
        tokio::spawn(peer_connection(me, peer, addr, cluster_id, rx, stats.clone()));
    }
    Outbound { queues: Arc::new(queues), cluster_id, stats }
}

/// Keeps a connection to `peer` up and writes queued frames to it.
async fn peer_connection(
    me: NodeId,
    peer: NodeId,
    addr: String,
    cluster_id: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<TransportStats>,
) {
    let mut attempt: u32 = 0;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await;
        let stream = match connected.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
            Ok(stream) => stream,
            Err(error) => {
                attempt = attempt.saturating_add(1);
                let cap = RECONNECT_CAP_MS.min(RECONNECT_BASE_MS << attempt.min(10));
                let delay = rand::thread_rng().gen_range(0..=cap);
                tracing::debug!(%peer, %addr, %error, delay_ms = delay, "connect failed");
                // Frames queued while the peer is unreachable are stale: drop them.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(delay)).await;
                continue;
            }
        };
        attempt = 0;
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        bound_dead_link(&stream);
        tracing::info!(%peer, %addr, "connected");
        let mut writer = BufWriter::new(stream);
        let hello = wire::encode(cluster_id, &Hello { from: me });
        if writer.write_all(&hello).await.is_err() {
            continue;
        }
        loop {
            let Some(frame) = rx.recv().await else { return };
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            // Coalesce whatever else is queued into the same write.
            while let Ok(frame) = rx.try_recv() {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            if writer.flush().await.is_err() {
                break;
            }
        }
        tracing::info!(%peer, "connection lost");
    }
}

/// Accepts peer connections and hands every decoded message to `deliver`.
pub async fn serve_inbound<C: Payload>(
    listener: TcpListener,
    cluster_id: u64,
    members: Vec<NodeId>,
    stats: Arc<TransportStats>,
    deliver: impl Fn(NodeId, Message<C>) + Clone + Send + Sync + 'static,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        bound_dead_link(&stream);
        let deliver = deliver.clone();
        let stats = stats.clone();
        let members = members.clone();
        tokio::spawn(async move {
            if let Err(error) = read_peer(stream, cluster_id, &members, &stats, deliver).await {
                tracing::warn!(%remote, %error, "peer connection closed");
            }
        });
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let len = wire::frame_len(&prefix).map_err(std::io::Error::other)?;
    let mut frame = vec![0u8; len];
    frame[..4].copy_from_slice(&prefix);
    stream.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

async fn read_peer<C: Payload>(
    mut stream: TcpStream,
    cluster_id: u64,
    members: &[NodeId],
    stats: &TransportStats,
    deliver: impl Fn(NodeId, Message<C>),
) -> std::io::Result<()> {
    let hello: Hello = wire::decode(cluster_id, &read_frame(&mut stream).await?).map_err(|e| {
        stats.frames_refused.fetch_add(1, Ordering::Relaxed);
        std::io::Error::other(format!("refused hello: {e}"))
    })?;
    if !members.contains(&hello.from) {
        return Err(std::io::Error::other(format!("{} is not a member", hello.from)));
    }
    loop {
        let frame = read_frame(&mut stream).await?;
        match wire::decode::<Message<C>>(cluster_id, &frame) {
            Ok(message) => {
                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                deliver(hello.from, message);
            }
            Err(error @ (FrameError::Checksum | FrameError::Decode(_))) => {
                // A corrupted frame is a drop, never a vote.
                stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(from = %hello.from, %error, "dropped frame");
            }
            Err(error) => {
                stats.frames_refused.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::other(format!("refused frame: {error}")));
            }
        }
    }
}

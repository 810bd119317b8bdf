//! TCP between servers. Each node keeps one outbound connection per peer and accepts
//! inbound connections from peers; a connection starts with a `Hello` naming the sender,
//! then carries frames of `synod_core::wire` (length, version, cluster id, CRC32C).
//!
//! Links are fair-loss by design (seed 002): a full send queue or a broken connection
//! drops messages, and the protocol's retransmissions make up for it. Reconnection uses
//! capped exponential backoff with full jitter (so that a recovering peer is not met by a
//! thundering herd of reconnects; "Exponential Backoff And Jitter", AWS Architecture Blog).
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
//!
//! Nothing authenticates a peer: anyone who reaches the peer port can claim a member's id
//! (keep it on a private network). What the transport does guarantee is that a stranger
//! costs little: an inbound connection must send a small hello naming a member other than
//! this node within [`HELLO_TIMEOUT`], inbound connections are few
//! ([`InboundPolicy::connections_max`]), a frame's buffer grows only as its bytes arrive
//! ([`read_frame`]), every refusal is counted by reason, and warnings about them are
//! rate-limited per remote address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use synod_core::wire::{self, FrameError};
use synod_core::{Message, NodeId, Payload};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::log_limit::{WarnLimiter, WARN_WINDOW};

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

/// The first frame of every connection: who is sending.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub from: NodeId,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub frames_sent: AtomicU64,
    pub frames_dropped_queue_full: AtomicU64,
    pub frames_received: AtomicU64,
    /// Every refused frame, whatever the reason (the sum of `frames_refused_by`).
    pub frames_refused: AtomicU64,
    pub connects: AtomicU64,
    /// Refused frames by reason, indexed like [`FrameRefusal::ALL`].
    pub frames_refused_by: [AtomicU64; FrameRefusal::ALL.len()],
    /// Inbound connections refused at their hello or for want of a slot, indexed like
    /// [`ConnectionRefusal::ALL`].
    pub connections_refused: [AtomicU64; ConnectionRefusal::ALL.len()],
    /// Inbound connections open now.
    pub inbound_connections: AtomicU64,
    /// Failed `accept`s on the peer port (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
}

impl TransportStats {
    fn refuse_frame(&self, reason: FrameRefusal) {
        self.frames_refused.fetch_add(1, Ordering::Relaxed);
        let index = FrameRefusal::ALL.iter().position(|r| *r == reason).expect("listed");
        self.frames_refused_by[index].fetch_add(1, Ordering::Relaxed);
    }

    fn refuse_connection(&self, reason: ConnectionRefusal) {
        let index = ConnectionRefusal::ALL.iter().position(|r| *r == reason).expect("listed");
        self.connections_refused[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Frames refused for `reason` so far.
    pub fn frames_refused_for(&self, reason: FrameRefusal) -> u64 {
        let index = FrameRefusal::ALL.iter().position(|r| *r == reason).expect("listed");
        self.frames_refused_by[index].load(Ordering::Relaxed)
    }

    /// Inbound connections refused for `reason` so far.
    pub fn connections_refused_for(&self, reason: ConnectionRefusal) -> u64 {
        let index = ConnectionRefusal::ALL.iter().position(|r| *r == reason).expect("listed");
        self.connections_refused[index].load(Ordering::Relaxed)
    }
}

/// The sending half: one bounded queue per peer, and the connection task behind it. The
/// peers follow the configuration (`set_peers`): a new member gets a connection, a removed
/// one loses it.
pub struct Outbound {
    me: NodeId,
    queues: BTreeMap<NodeId, (String, mpsc::Sender<Vec<u8>>)>,
    cluster_id: u64,
    stats: Arc<TransportStats>,
    runtime: tokio::runtime::Handle,
}

impl Outbound {
    /// Connects to every peer in `peers` (id to address) not connected yet, or at another
    /// address, and drops the connections of those no longer in it (their tasks end when
    /// their queue closes).
    pub fn set_peers(&mut self, peers: &BTreeMap<NodeId, String>) {
        self.queues.retain(|id, (addr, _)| peers.get(id) == Some(addr));
        for (&peer, addr) in peers {
            if peer == self.me || self.queues.contains_key(&peer) {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
            self.queues.insert(peer, (addr.clone(), tx));
            let task = peer_connection(self.me, peer, addr.clone(), self.cluster_id, rx, self.stats.clone());
            self.runtime.spawn(task);
        }
    }

    /// The peers connected to, and their addresses.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.queues.iter().map(|(id, (addr, _))| (*id, addr.as_str()))
    }

    /// Encodes and queues `message` for `to`; drops it if the queue is full.
    pub fn send<C: Payload>(&self, to: NodeId, message: &Message<C>) {
        let Some((_, queue)) = self.queues.get(&to) else { return };
        let frame = match wire::try_encode(self.cluster_id, message) {
            Ok(frame) => frame,
            Err(len) => {
                // The core bounds what it sends (batches, catch-up) below a frame; a
                // message that still outgrows one is a bug, not a reason to stop the node.
                tracing::error!(to = %to, kind = message.kind(), len, "a message too large for one frame was not sent");
                return;
            }
        };
        if queue.try_send(frame).is_err() {
            self.stats.frames_dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn queue_depth(&self) -> usize {
        self.queues.values().map(|(_, q)| q.max_capacity() - q.capacity()).sum()
    }
}

/// Starts one connection task per peer and returns the sending half.
pub fn start_outbound(
    me: NodeId,
    cluster_id: u64,
    peers: &BTreeMap<NodeId, String>,
    stats: Arc<TransportStats>,
) -> Outbound {
    let runtime = tokio::runtime::Handle::current();
    let mut outbound = Outbound { me, queues: BTreeMap::new(), cluster_id, stats, runtime };
    outbound.set_peers(peers);
    outbound
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
                // Frames queued while the peer is unreachable are stale: drop them. A queue
                // closed by `set_peers` ends the task: the peer left the configuration.
                loop {
                    match rx.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
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

// ---------------------------------------------------------------------------------------
// Inbound: what arrives on the peer port is not trusted until it says who it is.

/// How long a new inbound connection may take to send its hello. A peer sends it as soon
/// as its connection is up, so this only bounds connections that say nothing, each of
/// which holds one of the few inbound slots.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest hello read: a hello is a frame around one node id, a handful of bytes. A
/// stranger can make the node allocate this much at most before it is known.
pub const HELLO_BYTES_MAX: usize = 1024;
/// The peer port holds at most this many inbound connections per member, in total (a
/// peer's link, and its next while the old one is being noticed dead), plus
/// [`INBOUND_SLACK`]; more are refused. A stranger that takes slots holds each for at
/// most [`HELLO_TIMEOUT`] unless it claims a member's id.
pub const INBOUND_PER_MEMBER: usize = 2;
pub const INBOUND_SLACK: usize = 4;
/// A failed `accept` is retried after this pause (see [`serve_inbound`]).
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// A frame's buffer grows by at least this much when it is full (and by doubling beyond),
/// never by the length the frame announces: see [`read_frame`].
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A connection's buffer is kept between frames up to this size; a larger one (after a
/// snapshot chunk) is released.
const BUFFER_KEEP_BYTES: usize = 256 * 1024;

/// Why an inbound connection was refused at the door, before or at its hello (the
/// `reason` label of `synod_peer_connections_refused_total`). A connection that a bad
/// frame ends later is counted by that frame's [`FrameRefusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The hello names a node that is not a member.
    NotMember,
    /// The hello names this node itself: no member dials itself.
    OwnId,
    /// No readable hello: a bad frame, too large, or the connection ended before it.
    BadHello,
    /// No hello within [`HELLO_TIMEOUT`].
    HelloTimeout,
    /// Every inbound slot was taken.
    TooMany,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 5] = [
        ConnectionRefusal::NotMember,
        ConnectionRefusal::OwnId,
        ConnectionRefusal::BadHello,
        ConnectionRefusal::HelloTimeout,
        ConnectionRefusal::TooMany,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::NotMember => "not_member",
            ConnectionRefusal::OwnId => "own_id",
            ConnectionRefusal::BadHello => "bad_hello",
            ConnectionRefusal::HelloTimeout => "hello_timeout",
            ConnectionRefusal::TooMany => "too_many",
        }
    }
}

/// Why a frame was refused (the `reason` label of `synod_peer_frames_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRefusal {
    TooLarge,
    Truncated,
    Checksum,
    Version,
    Cluster,
    Decode,
}

impl FrameRefusal {
    pub const ALL: [FrameRefusal; 6] = [
        FrameRefusal::TooLarge,
        FrameRefusal::Truncated,
        FrameRefusal::Checksum,
        FrameRefusal::Version,
        FrameRefusal::Cluster,
        FrameRefusal::Decode,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FrameRefusal::TooLarge => "too_large",
            FrameRefusal::Truncated => "truncated",
            FrameRefusal::Checksum => "checksum",
            FrameRefusal::Version => "version",
            FrameRefusal::Cluster => "cluster",
            FrameRefusal::Decode => "decode",
        }
    }

    fn of(error: &FrameError) -> FrameRefusal {
        match error {
            FrameError::TooLarge(_) => FrameRefusal::TooLarge,
            FrameError::Truncated => FrameRefusal::Truncated,
            FrameError::Checksum => FrameRefusal::Checksum,
            FrameError::Version(_) => FrameRefusal::Version,
            FrameError::Cluster(_) => FrameRefusal::Cluster,
            FrameError::Decode(_) => FrameRefusal::Decode,
        }
    }

    /// Whether the connection can go on after such a frame. A frame with a bad checksum or
    /// payload was still delimited by its length, so the next one can be read; another
    /// version or cluster means the sender is not one of ours, and a refused length leaves
    /// the stream unreadable.
    fn connection_survives(self) -> bool {
        matches!(self, FrameRefusal::Truncated | FrameRefusal::Checksum | FrameRefusal::Decode)
    }
}

/// Why [`read_frame`] returned no frame.
#[derive(Debug)]
pub enum ReadError {
    /// The stream ended or failed.
    Io(std::io::Error),
    /// The frame announces this many bytes (length prefix included), more than the
    /// reader accepts. Nothing past the length prefix was read or allocated.
    TooLarge(usize),
}

/// Reads one frame, length prefix included, into `buf` (cleared first), refusing one that
/// announces more than `max_bytes`. The buffer grows only as bytes arrive — by doubling,
/// at least [`READ_CHUNK_BYTES`], never past the frame — and not to the announced length
/// up front: a sender that announces 16 MiB and sends ten bytes costs ten bytes and a
/// chunk, not 16 MiB. Memory follows what a sender actually sent.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
    buf: &mut Vec<u8>,
) -> Result<(), ReadError> {
    buf.clear();
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.map_err(ReadError::Io)?;
    let total = u32::from_le_bytes(prefix) as usize + 4;
    if total > max_bytes {
        return Err(ReadError::TooLarge(total));
    }
    buf.extend_from_slice(&prefix);
    while buf.len() < total {
        let missing = total - buf.len();
        if buf.len() == buf.capacity() {
            buf.reserve_exact(missing.min(buf.len().max(READ_CHUNK_BYTES)));
        }
        let read = (&mut *reader).take(missing as u64).read_buf(buf).await.map_err(ReadError::Io)?;
        if read == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(())
}

/// Who may connect to the peer port, and how many at once.
#[derive(Clone, Debug)]
pub struct InboundPolicy {
    /// This node: a hello naming it is refused.
    pub me: NodeId,
    pub cluster_id: u64,
    /// The members of the configurations in force (shared with the protocol thread,
    /// which updates it when the configuration changes): a hello naming anyone else is
    /// refused.
    pub members: Arc<std::sync::RwLock<Vec<NodeId>>>,
    pub hello_timeout: Duration,
    pub connections_max: usize,
}

impl InboundPolicy {
    /// The defaults: [`HELLO_TIMEOUT`], and [`INBOUND_PER_MEMBER`] connections per member
    /// plus [`INBOUND_SLACK`].
    pub fn new(me: NodeId, cluster_id: u64, members: Vec<NodeId>) -> InboundPolicy {
        // Room for the group to grow to its largest configuration (voters and learners).
        let connections_max =
            members.len().max(2 * synod_core::VOTERS_MAX) * INBOUND_PER_MEMBER + INBOUND_SLACK;
        let members = Arc::new(std::sync::RwLock::new(members));
        InboundPolicy { me, cluster_id, members, hello_timeout: HELLO_TIMEOUT, connections_max }
    }
}

/// Lowers the inbound-connection gauge when a connection's task ends, however it ends.
struct InboundGuard(Arc<TransportStats>);

impl Drop for InboundGuard {
    fn drop(&mut self) {
        self.0.inbound_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts peer connections and hands every decoded message to `deliver`, attributed to
/// the member its connection's hello named. Connections are bounded in number, must
/// name a member other than this node within the hello timeout, and cost no memory
/// beyond what they send (see [`read_frame`]). Warnings about refusals are rate-limited
/// per remote address ([`crate::log_limit`]); every refusal is counted in `stats`.
pub async fn serve_inbound<C: Payload>(
    listener: TcpListener,
    policy: InboundPolicy,
    stats: Arc<TransportStats>,
    deliver: impl Fn(NodeId, Message<C>) + Clone + Send + Sync + 'static,
) {
    let policy = Arc::new(policy);
    let slots = Arc::new(Semaphore::new(policy.connections_max));
    let warnings = Arc::new(WarnLimiter::<IpAddr>::new(WARN_WINDOW));
    let accept_warnings = WarnLimiter::<()>::new(WARN_WINDOW);
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (EMFILE) or memory: the connection stays queued
                // and the next accept would fail at once, so pause rather than spin.
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = accept_warnings.admit(&(), Instant::now()) {
                    tracing::warn!(%error, suppressed, "cannot accept a peer connection");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refuse_connection(ConnectionRefusal::TooMany);
            if let Some(suppressed) = warnings.admit(&remote.ip(), Instant::now()) {
                tracing::warn!(%remote, suppressed, max = policy.connections_max, "refused a peer connection: too many");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        bound_dead_link(&stream);
        stats.inbound_connections.fetch_add(1, Ordering::Relaxed);
        let guard = InboundGuard(stats.clone());
        let (deliver, stats, policy, warnings) =
            (deliver.clone(), stats.clone(), policy.clone(), warnings.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _guard = guard;
            let warn = |why: String| {
                if let Some(suppressed) = warnings.admit(&remote.ip(), Instant::now()) {
                    tracing::warn!(%remote, suppressed, "peer connection: {why}");
                }
            };
            let error = read_peer(stream, &policy, &stats, warn, deliver).await;
            tracing::debug!(%remote, %error, "peer connection closed");
        });
    }
}

/// Reads the hello, then frames until the connection ends or a frame ends it; returns
/// why it ended. Every refusal is counted in `stats` and reported through `warn`.
async fn read_peer<C: Payload>(
    mut stream: TcpStream,
    policy: &InboundPolicy,
    stats: &TransportStats,
    warn: impl Fn(String),
    deliver: impl Fn(NodeId, Message<C>),
) -> std::io::Error {
    let mut buf = Vec::new();
    let refuse = |reason: ConnectionRefusal, why: String| {
        stats.refuse_connection(reason);
        warn(format!("refused: {why}"));
        std::io::Error::other(why)
    };
    let hello =
        tokio::time::timeout(policy.hello_timeout, read_frame(&mut stream, HELLO_BYTES_MAX, &mut buf));
    let from = match hello.await {
        Err(_) => {
            let why = format!("no hello within {} ms", policy.hello_timeout.as_millis());
            return refuse(ConnectionRefusal::HelloTimeout, why);
        }
        Ok(Err(ReadError::Io(error))) => {
            return refuse(ConnectionRefusal::BadHello, format!("no hello: {error}"))
        }
        Ok(Err(ReadError::TooLarge(len))) => {
            stats.refuse_frame(FrameRefusal::TooLarge);
            let why = format!("a hello of {len} bytes (at most {HELLO_BYTES_MAX})");
            return refuse(ConnectionRefusal::BadHello, why);
        }
        Ok(Ok(())) => match wire::decode::<Hello>(policy.cluster_id, &buf) {
            Ok(hello) => hello.from,
            Err(error) => {
                stats.refuse_frame(FrameRefusal::of(&error));
                return refuse(ConnectionRefusal::BadHello, format!("bad hello: {error}"));
            }
        },
    };
    if from == policy.me {
        return refuse(ConnectionRefusal::OwnId, format!("the hello names this node ({from})"));
    }
    if !policy.members.read().expect("members lock").contains(&from) {
        return refuse(ConnectionRefusal::NotMember, format!("the hello names {from}, not a member"));
    }
    tracing::debug!(%from, "peer connection accepted");
    loop {
        match read_frame(&mut stream, wire::FRAME_BYTES_MAX, &mut buf).await {
            Ok(()) => {}
            Err(ReadError::Io(error)) => return error,
            Err(ReadError::TooLarge(len)) => {
                stats.refuse_frame(FrameRefusal::TooLarge);
                let why = format!("from {from}: a frame of {len} bytes exceeds {}", wire::FRAME_BYTES_MAX);
                warn(format!("closed: {why}"));
                return std::io::Error::other(why);
            }
        }
        // Frames are attributed to the member the hello named, and to nothing else.
        match wire::decode::<Message<C>>(policy.cluster_id, &buf) {
            Ok(message) => {
                stats.frames_received.fetch_add(1, Ordering::Relaxed);
                deliver(from, message);
            }
            Err(error) => {
                // A corrupted frame is a drop, never a vote.
                let reason = FrameRefusal::of(&error);
                stats.refuse_frame(reason);
                if !reason.connection_survives() {
                    warn(format!("closed: from {from}: {error}"));
                    return std::io::Error::other(error);
                }
                warn(format!("dropped a frame from {from}: {error}"));
            }
        }
        if buf.capacity() > BUFFER_KEEP_BYTES {
            buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that announces a 16 MiB frame and then sends ten bytes (and ends).
    fn huge_announcement() -> Vec<u8> {
        let mut bytes = ((16 << 20) as u32 - 4).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"0123456789");
        bytes
    }

    #[tokio::test]
    async fn a_frame_buffer_grows_with_the_bytes_that_arrive_not_with_the_announced_length() {
        let stream = huge_announcement();
        let mut buf = Vec::new();
        let result = read_frame(&mut stream.as_slice(), wire::FRAME_BYTES_MAX, &mut buf).await;
        assert!(matches!(result, Err(ReadError::Io(ref e)) if e.kind() == std::io::ErrorKind::UnexpectedEof));
        assert_eq!(buf.len(), 14, "the length prefix and the ten bytes that arrived");
        assert!(buf.capacity() <= 2 * READ_CHUNK_BYTES, "capacity {} for 14 bytes", buf.capacity());
    }

    #[tokio::test]
    async fn a_hello_that_announces_more_than_its_cap_is_refused_before_anything_is_read() {
        let stream = huge_announcement();
        let mut reader = stream.as_slice();
        let mut buf = Vec::new();
        let result = read_frame(&mut reader, HELLO_BYTES_MAX, &mut buf).await;
        assert!(matches!(result, Err(ReadError::TooLarge(n)) if n == 16 << 20));
        assert_eq!(buf.capacity(), 0, "nothing allocated");
        assert_eq!(reader.len(), 10, "nothing read past the length prefix");
    }

    #[tokio::test]
    async fn frames_of_every_size_read_back_whole_with_a_capacity_within_twice_their_size() {
        let mut stream = Vec::new();
        let sizes = [0usize, 1, 100, READ_CHUNK_BYTES, READ_CHUNK_BYTES + 1, 3 << 20];
        for &size in &sizes {
            stream.extend(wire::encode(7, &vec![0xa5u8; size]));
        }
        let mut reader = stream.as_slice();
        let mut buf = Vec::new();
        for &size in &sizes {
            read_frame(&mut reader, wire::FRAME_BYTES_MAX, &mut buf).await.unwrap();
            let back: Vec<u8> = wire::decode(7, &buf).unwrap();
            assert_eq!(back.len(), size);
            assert!(
                buf.capacity() <= (2 * buf.len()).max(READ_CHUNK_BYTES + 4),
                "{} for {}",
                buf.capacity(),
                buf.len()
            );
        }
    }
}

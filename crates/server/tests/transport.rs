//! The peer port over real sockets: who may connect, how long it may stay silent, how
//! many may connect, and what a sender that announces a huge frame costs. Each test runs
//! `serve_inbound` on a loopback port of its own, as node 1 of members 1, 2 and 3.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synod_core::{wire, Message, NodeId};
use synod_server::transport::{self, ConnectionRefusal, FrameRefusal, Hello, InboundPolicy, TransportStats};

const CLUSTER: u64 = 0x5eed;

type Delivered = Arc<Mutex<Vec<(NodeId, Message<u64>)>>>;

struct Inbound {
    addr: SocketAddr,
    stats: Arc<TransportStats>,
    delivered: Delivered,
}

/// Serves the peer port of node 1 (members 1, 2, 3) with `policy` adjusted by `adjust`.
async fn serve(adjust: impl FnOnce(&mut InboundPolicy)) -> Inbound {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut policy = InboundPolicy::new(NodeId(1), CLUSTER, vec![NodeId(1), NodeId(2), NodeId(3)]);
    adjust(&mut policy);
    let stats = Arc::new(TransportStats::default());
    let delivered: Delivered = Arc::default();
    let sink = delivered.clone();
    tokio::spawn(transport::serve_inbound(listener, policy, stats.clone(), move |from, message| {
        sink.lock().unwrap().push((from, message));
    }));
    Inbound { addr, stats, delivered }
}

fn hello(from: u32) -> Vec<u8> {
    wire::encode(CLUSTER, &Hello { from: NodeId(from) })
}

fn heartbeat(round: u64) -> Vec<u8> {
    wire::encode(CLUSTER, &Message::<u64>::HeartbeatRequest { round, dir_id: 0, recovering: false })
}

/// Blocking I/O from a thread of its own, so that the server's runtime keeps running.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took;
/// panics if it is still open after `within`.
fn closed_within(mut stream: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the server sent bytes on the peer port"),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
        Err(e) => panic!("still open after {within:?} ({e})"),
    }
    started.elapsed()
}

/// Polls `probe` until it holds; panics after `within`.
async fn eventually(what: &str, within: Duration, probe: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_from_a_non_member_or_from_this_node_is_refused_and_counted() {
    let inbound = serve(|_| {}).await;
    let addr = inbound.addr;
    for from in [9, 1] {
        blocking(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(&hello(from)).unwrap();
            // Frames after the refused hello are never read, let alone delivered.
            let _ = stream.write_all(&heartbeat(7));
            closed_within(stream, Duration::from_secs(5));
        })
        .await;
    }
    assert_eq!(inbound.stats.connections_refused_for(ConnectionRefusal::NotMember), 1);
    assert_eq!(inbound.stats.connections_refused_for(ConnectionRefusal::OwnId), 1);
    assert!(inbound.delivered.lock().unwrap().is_empty());

    // A member's hello is accepted, and its frames are attributed to it.
    blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&hello(3)).unwrap();
        stream.write_all(&heartbeat(42)).unwrap();
        stream
    })
    .await;
    eventually("the member's frame is delivered", Duration::from_secs(5), || {
        !inbound.delivered.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        inbound.delivered.lock().unwrap()[0],
        (NodeId(3), Message::HeartbeatRequest { round: 42, dir_id: 0, recovering: false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_hello_is_closed_after_the_hello_timeout() {
    let inbound = serve(|p| p.hello_timeout = Duration::from_millis(300)).await;
    let addr = inbound.addr;
    let took = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // Half a hello, then silence: trickling is no way around the timeout.
        stream.write_all(&hello(2)[..5]).unwrap();
        closed_within(stream, Duration::from_secs(5))
    })
    .await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}, before the timeout");
    assert_eq!(inbound.stats.connections_refused_for(ConnectionRefusal::HelloTimeout), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_that_announces_a_huge_frame_is_refused_at_once_without_reading_it() {
    // A long hello timeout: the refusal must come from the announced length alone.
    let inbound = serve(|p| p.hello_timeout = Duration::from_secs(60)).await;
    let addr = inbound.addr;
    let took = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&((16u32 << 20) - 4).to_le_bytes()).unwrap();
        stream.write_all(b"0123456789").unwrap();
        closed_within(stream, Duration::from_secs(5))
    })
    .await;
    assert!(took < Duration::from_secs(5));
    assert_eq!(inbound.stats.connections_refused_for(ConnectionRefusal::BadHello), 1);
    assert_eq!(inbound.stats.frames_refused_for(FrameRefusal::TooLarge), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_beyond_the_cap_are_refused_until_a_slot_frees() {
    let inbound = serve(|p| {
        p.connections_max = 2;
        p.hello_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = inbound.addr;
    let held: Vec<TcpStream> =
        blocking(move || (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect()).await;
    let stats = inbound.stats.clone();
    eventually("both connections are held", Duration::from_secs(5), || {
        stats.inbound_connections.load(Ordering::Relaxed) == 2
    })
    .await;
    blocking(move || closed_within(TcpStream::connect(addr).unwrap(), Duration::from_secs(5))).await;
    assert_eq!(inbound.stats.connections_refused_for(ConnectionRefusal::TooMany), 1);

    // One of the two leaves: a member's connection gets its slot and is served.
    drop(held);
    eventually("the slots are free", Duration::from_secs(5), || {
        stats.inbound_connections.load(Ordering::Relaxed) == 0
    })
    .await;
    let _member = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&hello(2)).unwrap();
        stream.write_all(&heartbeat(1)).unwrap();
        stream
    })
    .await;
    eventually("the member's frame is delivered", Duration::from_secs(5), || {
        inbound.delivered.lock().unwrap().len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_after_a_hello_are_dropped_and_counted_and_good_ones_still_arrive() {
    let inbound = serve(|_| {}).await;
    let addr = inbound.addr;
    let _stream = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&hello(2)).unwrap();
        let mut corrupted = heartbeat(1);
        corrupted[14] ^= 0x01; // the payload's first byte
        stream.write_all(&corrupted).unwrap();
        // A valid checksum around a payload that is no message (variant 127).
        stream.write_all(&wire::encode(CLUSTER, &[0x7fu8; 3])).unwrap();
        stream.write_all(&heartbeat(2)).unwrap();
        stream
    })
    .await;
    eventually("the good frame is delivered", Duration::from_secs(5), || {
        inbound.delivered.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(
        inbound.delivered.lock().unwrap()[0],
        (NodeId(2), Message::HeartbeatRequest { round: 2, dir_id: 0, recovering: false })
    );
    assert_eq!(inbound.stats.frames_refused_for(FrameRefusal::Checksum), 1);
    assert_eq!(inbound.stats.frames_refused_for(FrameRefusal::Decode), 1);
    assert_eq!(inbound.stats.frames_refused.load(Ordering::Relaxed), 2);
}

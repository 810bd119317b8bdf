//! The HTTP listener over real sockets, with limits small enough for tests to see them
//! act within a second: the connection cap and its 503, the header timeout against
//! slowloris, the idle timeout of kept-alive connections, and graceful shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use synod_server::http_serve::{self, HttpLimits, HttpStats};
use tokio::sync::oneshot;

struct Listener {
    addr: SocketAddr,
    stats: Arc<HttpStats>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

/// Serves `/fast` (at once), `/slow` (after 800 ms) and `POST /echo` (the body back).
async fn serve(connections_max: usize, header_ms: u64, idle_ms: u64) -> Listener {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow"
            }),
        )
        .route("/echo", post(|body: String| async move { body }));
    let limits = HttpLimits {
        connections_max,
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
    };
    let stats = Arc::new(HttpStats::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(http_serve::serve(listener, router, limits, stats.clone(), async {
        let _ = stopped.await;
    }));
    Listener { addr, stats, stop: Some(stop), served }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// Sends a kept-alive GET and reads its response (status, body) by its content-length.
fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed in a response head: {raw:?}");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Waits until the server closes `stream`; returns how long that took. Panics if it
/// stays open `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(within)).unwrap();
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return started.elapsed()
            }
            Err(e) => panic!("still open after {within:?}: {e}"),
        }
    }
}

/// Whether `stream` is still open and silent after `wait`.
fn open_after(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

async fn eventually(what: &str, probe: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_answered_503_too_many_connections_and_closed() {
    let listener = serve(3, 10_000, 10_000).await;
    let addr = listener.addr;
    let held: Vec<TcpStream> = blocking(move || (0..3).map(|_| connect(addr)).collect()).await;
    let stats = listener.stats.clone();
    eventually("three connections are held", || stats.connections_open.load(Ordering::Relaxed) == 3).await;

    let refused = blocking(move || {
        let mut stream = connect(addr);
        write!(stream, "GET /fast HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        raw
    })
    .await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("retry-after: 1\r\n"), "{refused}");
    let body: serde_json::Value = serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_eq!(listener.stats.connections_refused.load(Ordering::Relaxed), 1);

    // A slot freed is a slot served.
    drop(held);
    eventually("the slots are free", || stats.connections_open.load(Ordering::Relaxed) == 0).await;
    let answer = blocking(move || get_on(&mut connect(addr), "/fast")).await;
    assert_eq!(answer, (200, "fast".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_does_not_arrive_in_time_closes_the_connection_however_it_trickles() {
    let listener = serve(100, 300, 5_000).await;
    let addr = listener.addr;
    let (silent, trickling) = blocking(move || {
        let opened = Instant::now();
        let mut silent = connect(addr);
        let mut trickling = connect(addr);
        write!(trickling, "GET /fast HTTP/1.1\r\nHost: test\r\n").unwrap();
        // A header line every 100 ms on a thread of its own, until the server hangs up.
        let mut writer = trickling.try_clone().unwrap();
        std::thread::spawn(move || {
            for n in 0.. {
                std::thread::sleep(Duration::from_millis(100));
                if write!(writer, "x-slow-{n}: 1\r\n").is_err() {
                    return;
                }
            }
        });
        // Both are measured from their opening.
        closed_within(&mut silent, Duration::from_secs(3));
        let silent = opened.elapsed();
        closed_within(&mut trickling, Duration::from_secs(3));
        (silent, opened.elapsed())
    })
    .await;
    for took in [silent, trickling] {
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "closed after {took:?}");
    }
    assert_eq!(listener.stats.header_timeouts.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_lives_past_the_header_timeout_and_closes_at_the_idle_timeout() {
    let listener = serve(100, 300, 1_200).await;
    let addr = listener.addr;
    let idle_for = blocking(move || {
        let mut stream = connect(addr);
        assert_eq!(get_on(&mut stream, "/fast"), (200, "fast".into()));
        // Idle for twice the header timeout: still open, and serves the next request.
        assert!(open_after(&mut stream, Duration::from_millis(600)));
        assert_eq!(get_on(&mut stream, "/fast"), (200, "fast".into()));
        let answered = Instant::now();
        closed_within(&mut stream, Duration::from_secs(5));
        answered.elapsed()
    })
    .await;
    assert!(
        idle_for >= Duration::from_millis(1_100) && idle_for < Duration::from_secs(3),
        "closed after {idle_for:?}"
    );
    assert_eq!(listener.stats.idle_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(listener.stats.header_timeouts.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_larger_than_the_read_buffer_is_refused_with_431() {
    let listener = serve(100, 10_000, 10_000).await;
    let addr = listener.addr;
    let (status, _) = blocking(move || {
        let mut stream = connect(addr);
        write!(stream, "GET /fast HTTP/1.1\r\nHost: test\r\n").unwrap();
        // Header lines up to twice the buffer; the server may stop reading half way.
        let line = format!("x-filler: {}\r\n", "a".repeat(1000));
        for _ in 0..2 * http_serve::READ_BUFFER_BYTES_MAX / line.len() {
            if stream.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        read_response(&mut stream)
    })
    .await;
    assert_eq!(status, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_begun_on_an_idle_kept_alive_connection_must_arrive_within_the_header_timeout() {
    let listener = serve(100, 300, 5_000).await;
    let addr = listener.addr;
    let took = blocking(move || {
        let mut stream = connect(addr);
        assert_eq!(get_on(&mut stream, "/fast"), (200, "fast".into()));
        assert!(open_after(&mut stream, Duration::from_millis(500)));
        // Half a head, after the idle wait: the header timeout runs from its first byte,
        // however long the idle timeout still had to go.
        write!(stream, "GET /fast HTTP/1.1\r\n").unwrap();
        let started = Instant::now();
        closed_within(&mut stream, Duration::from_secs(4));
        started.elapsed()
    })
    .await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1_500),
        "closed after {took:?}"
    );
    assert_eq!(listener.stats.header_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_is_answered_but_a_trickled_body_is_cut_at_the_idle_timeout() {
    let listener = serve(100, 300, 1_000).await;
    let addr = listener.addr;
    // The handler takes 800 ms, longer than the header timeout: nothing is cut.
    let slow = blocking(move || get_on(&mut connect(addr), "/slow")).await;
    assert_eq!(slow, (200, "slow".into()));
    // A body of 100 bytes sent one byte every 50 ms would take 5 s: cut after 1 s.
    let took = blocking(move || {
        let mut stream = connect(addr);
        write!(stream, "POST /echo HTTP/1.1\r\nHost: test\r\ncontent-length: 100\r\n\r\n").unwrap();
        let mut writer = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(50));
                if writer.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        closed_within(&mut stream, Duration::from_secs(4))
    })
    .await;
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "cut after {took:?}");
    assert_eq!(listener.stats.idle_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_request_in_progress_and_closes_every_connection() {
    let mut listener = serve(100, 10_000, 60_000).await;
    let addr = listener.addr;
    let mut idle = blocking(move || {
        let mut idle = connect(addr);
        assert_eq!(get_on(&mut idle, "/fast"), (200, "fast".into()));
        idle
    })
    .await;
    let slow = tokio::task::spawn_blocking(move || get_on(&mut connect(addr), "/slow"));
    let stats = listener.stats.clone();
    eventually("both connections are open", || stats.connections_open.load(Ordering::Relaxed) == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    listener.stop.take().unwrap().send(()).unwrap();
    assert_eq!(slow.await.unwrap(), (200, "slow".into()));
    tokio::time::timeout(Duration::from_secs(3), &mut listener.served).await.expect("serve returns").unwrap();
    blocking(move || closed_within(&mut idle, Duration::from_secs(1))).await;
    assert!(TcpStream::connect(addr).is_err(), "the port is closed");
}

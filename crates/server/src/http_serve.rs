//! The HTTP listener: an accept loop of our own around hyper's HTTP/1.1 connections,
//! because `axum::serve` has no limits and a public port needs three.
//!
//! - **A cap on connections** ([`HttpLimits::connections_max`], fitted under the
//!   open-file limit by [`crate::limits`]). Past it, a new connection is answered `503`
//!   with the JSON error `too_many_connections` and closed; while more than
//!   [`REFUSING_MAX`] are being answered so, further ones are closed without a word.
//! - **A header timeout** ([`HttpLimits::header_timeout`]): a request's head must arrive
//!   whole within it of the connection's opening, or of the first byte of the head on a
//!   kept-alive connection. A client that sends a header line now and then (slowloris)
//!   is closed.
//! - **An idle timeout** ([`HttpLimits::idle_timeout`]): a kept-alive connection without
//!   a request for this long is closed, and a request still unanswered after this long
//!   (a body trickled byte by byte) is cut.
//!
//! These are the semantics of Go's `net/http` `ReadHeaderTimeout` and `IdleTimeout`.
//! hyper's own `header_read_timeout` starts whenever hyper waits for a head, so it would
//! also close every idle kept-alive connection at the header timeout; it is disabled
//! here, and the connection's task keeps the deadlines itself from what it observes:
//! bytes read and written (a wrapper around the socket) and requests begun and answered
//! (a wrapper around the service).
//!
//! An `accept` that fails (out of file descriptors, EMFILE) is counted, logged at most
//! once per [`WARN_WINDOW`], and retried after [`ACCEPT_ERROR_PAUSE`]: it neither stops
//! the listener nor spins.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use synod_client::api::{ErrorBody, ErrorDetail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::log_limit::{WarnLimiter, WARN_WINDOW};

/// The listener's limits (see the module docs).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub connections_max: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections held now.
    pub connections_open: AtomicU64,
    /// The cap in force.
    pub connections_max: AtomicU64,
    /// Connections refused at the cap (answered 503, or closed).
    pub connections_refused: AtomicU64,
    /// Connections closed because a request's head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Connections closed idle, or cut with a request unanswered for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Failed `accept`s (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// The process's open-file limit (soft `RLIMIT_NOFILE`) after start.
    pub open_files_limit: AtomicU64,
}

/// Refused connections answered `503` at once at most; beyond, they are closed unanswered.
/// Their descriptors are part of the reserve of [`crate::limits`].
pub const REFUSING_MAX: usize = 32;
/// How long a refused connection is kept to deliver its `503` and read what the client
/// sent. Closing a socket with unread data sends a reset, not a FIN (RFC 1122,
/// §4.2.2.13), and a reset can destroy the `503` before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// Bytes read from a refused connection at most.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;
/// The largest read buffer of a connection, which bounds a request's head (hyper answers
/// 431 beyond). hyper's default, about 400 KiB, would let the connections a node holds
/// pin gigabytes with heads that never end; our heads are a path of at most a few KiB
/// (a key is at most 4 KiB) and a few headers.
pub const READ_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// A failed `accept` is retried after this pause: the failing connection stays queued,
/// so an immediate retry would fail again at once, in a loop.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then closes
/// every connection gracefully (a request in progress is answered first) and returns once
/// all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
) {
    stats.connections_max.store(limits.connections_max as u64, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let refusing = Arc::new(Semaphore::new(REFUSING_MAX));
    let refusal: Arc<[u8]> = refusal_response(limits.connections_max).into();
    let limits = Arc::new(limits);
    let service = TowerToHyperService::new(router);
    let (stop, stopping) = watch::channel(false);
    let accept_warnings = WarnLimiter::<()>::new(WARN_WINDOW);
    let refusal_warnings = WarnLimiter::<IpAddr>::new(WARN_WINDOW);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = accept_warnings.admit(&(), Instant::now()) {
                    tracing::warn!(%error, suppressed, "cannot accept an HTTP connection");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = refusal_warnings.admit(&remote.ip(), Instant::now()) {
                tracing::warn!(%remote, suppressed, max = limits.connections_max, "refused an HTTP connection: too many");
            }
            refuse(stream, refusal.clone(), &refusing);
            continue;
        };
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let held = Held { stats: stats.clone(), _slot: slot };
        let (service, limits, stopping) = (service.clone(), limits.clone(), stopping.clone());
        tokio::spawn(async move {
            serve_connection(stream, service, &limits, &held.stats, stopping).await;
            drop(held);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is closed: all slots back means all closed.
    let _ = slots.acquire_many(limits.connections_max as u32).await;
}

/// A connection's slot and its count in `connections_open`, given back however its task
/// ends.
struct Held {
    stats: Arc<HttpStats>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `503` a connection past the cap receives.
fn refusal_response(connections_max: usize) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "too_many_connections".into(),
            message: format!(
                "this node holds its maximum of {connections_max} client connections; retry shortly or use another node"
            ),
        },
    };
    let body = serde_json::to_string(&body).expect("an error body serializes");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection past the cap with `response` and closes it, or closes it at once
/// if [`REFUSING_MAX`] are being answered already.
fn refuse(mut stream: TcpStream, response: Arc<[u8]>, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let _permit = permit;
        let answer = async {
            stream.write_all(&response).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < REFUSAL_DRAIN_BYTES {
                match stream.read(&mut sink).await? {
                    0 => break,
                    read => drained += read,
                }
            }
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
    });
}

/// What ends a connection when its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A request's head did not arrive whole in time: closed at once.
    Header,
    /// A request still unanswered after the idle timeout: cut.
    Request,
    /// No request for the idle timeout: closed gracefully.
    Idle,
}

/// What a connection's task observes of its connection (see the module docs).
struct Activity {
    state: Mutex<ActivityState>,
    /// Signalled when a head starts arriving on an idle connection: its deadline moves
    /// earlier, from the idle to the header timeout.
    head_started: Notify,
}

struct ActivityState {
    /// Since when the head of the next request is due: the connection's opening, or the
    /// first byte read after the previous request was answered. `None` while a request
    /// is in progress or the connection is idle between requests.
    head_since: Option<Instant>,
    /// Since when a request (there is one at a time in HTTP/1.1) has been in progress.
    request_since: Option<Instant>,
    /// The last time bytes moved either way or a request was answered.
    last_active: Instant,
}

impl Activity {
    fn new(opened: Instant) -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                head_since: Some(opened),
                request_since: None,
                last_active: opened,
            }),
            head_started: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().expect("connection activity lock")
    }

    fn read(&self, now: Instant) {
        let mut state = self.lock();
        state.last_active = now;
        if state.head_since.is_none() && state.request_since.is_none() {
            state.head_since = Some(now);
            self.head_started.notify_one();
        }
    }

    fn wrote(&self, now: Instant) {
        self.lock().last_active = now;
    }

    fn request_began(&self, now: Instant) {
        let mut state = self.lock();
        state.head_since = None;
        state.request_since = Some(now);
    }

    fn request_answered(&self, now: Instant) {
        let mut state = self.lock();
        state.request_since = None;
        state.last_active = now;
    }

    /// The connection's next deadline, and what it ends.
    fn due(&self, limits: &HttpLimits) -> (Instant, Expiry) {
        let state = self.lock();
        match (state.head_since, state.request_since) {
            (Some(since), _) => (since + limits.header_timeout, Expiry::Header),
            (None, Some(since)) => (since + limits.idle_timeout, Expiry::Request),
            (None, None) => (state.last_active + limits.idle_timeout, Expiry::Idle),
        }
    }
}

/// Serves one connection until it closes or a deadline ends it.
async fn serve_connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: &HttpLimits,
    stats: &HttpStats,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Observed { stream, activity: activity.clone() });
    let service = Tracked { inner: service, activity: activity.clone() };
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(READ_BUFFER_BYTES_MAX)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let (deadline, expiry) = activity.due(limits);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep_until(deadline.into()) => {
                // The deadline may be stale (a request began since): check it again.
                let (deadline, expiry) = activity.due(limits);
                if Instant::now() < deadline {
                    continue;
                }
                match expiry {
                    Expiry::Header => {
                        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("HTTP connection closed: no request head in time");
                        return;
                    }
                    Expiry::Request | Expiry::Idle if closing => return,
                    Expiry::Request => {
                        stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("HTTP connection cut: a request unanswered past the idle timeout");
                        return;
                    }
                    Expiry::Idle => {
                        stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        // Idle, so hyper closes it at once; a response still being
                        // written to a client that does not read is cut at the next
                        // deadline.
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            () = activity.head_started.notified(), if expiry == Expiry::Idle => {}
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The socket, reporting bytes read and written to the connection's [`Activity`].
struct Observed {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Observed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Observed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote(Instant::now());
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.wrote(Instant::now());
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The router, reporting requests begun and answered to the connection's [`Activity`].
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

/// Reports the request answered when dropped: when its handler returns, or when the
/// connection is closed under it.
struct Answered(Arc<Activity>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.request_answered(Instant::now());
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.request_began(Instant::now());
        let answered = Answered(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(answered);
            response
        })
    }
}

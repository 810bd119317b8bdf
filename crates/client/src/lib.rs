//! # synod-client
//!
//! A client for Synod's HTTP API that does not stampede (the thundering herd):
//! it finds the leader, retries failed calls with capped exponential backoff and full
//! jitter, and makes retries safe: every mutating call carries the client's session id
//! and a sequence number, so a retried call is applied once and returns the first reply.
//!
//! A [`Client`] is one session and runs one mutating call at a time (its calls queue on an
//! internal lock); for concurrency, use many clients.

#![forbid(unsafe_code)]

pub mod api;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use api::*;

/// The dev cluster's HTTP endpoints: what every command uses when given none.
pub const DEFAULT_ENDPOINTS: [&str; 3] =
    ["http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"];

/// What went wrong with a call. Each variant says what is known about its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server refused the request (4xx): nothing was changed.
    Rejected { status: u16, code: String, message: String },
    /// The call's session pair (client id and sequence number) had already carried a
    /// different request (HTTP 409 `session_conflict`): nothing of this call was applied,
    /// and the cluster keeps the first request's reply for that pair. A [`Client`] takes a
    /// fresh sequence number for every call, so this means another client uses its id.
    SessionConflict { message: String },
    /// No node could serve the call within the retry budget. A mutating call may or may
    /// not have been applied (retrying it later with the same client is safe).
    Unavailable { attempts: u32, last: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Rejected { status, code, message } => write!(f, "{message} ({code}, HTTP {status})"),
            Error::SessionConflict { message } => {
                write!(f, "session conflict: {message} ({SESSION_CONFLICT_CODE}, HTTP 409)")
            }
            Error::Unavailable { attempts, last } => {
                write!(f, "no node answered after {attempts} attempts (last: {last})")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Retry and timeout policy.
#[derive(Clone, Debug)]
pub struct Options {
    /// One HTTP attempt at most this long.
    pub attempt_timeout: Duration,
    /// Attempts per call at most.
    pub attempts_max: u32,
    /// Backoff before retry `n` is uniform in `[0, min(cap, base * 2^n))` (full jitter).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            attempt_timeout: Duration::from_secs(5),
            attempts_max: 8,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(2),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint to try first: the leader once known.
    preferred: AtomicUsize,
    options: Options,
    client_id: u64,
    /// The session's next sequence number; held for the whole of a mutating call.
    seq: Mutex<u64>,
}

impl Client {
    /// A client for the cluster at `endpoints` (base URLs like `http://127.0.0.1:7001`).
    pub fn new(endpoints: Vec<String>, options: Options) -> Client {
        assert!(!endpoints.is_empty(), "a client needs at least one endpoint");
        let http = reqwest::Client::builder()
            .timeout(options.attempt_timeout)
            // A 307 `not_leader` names the leader by the address the cluster knows it by,
            // which may not resolve here (a container's name): `call` goes to the
            // endpoint of ours it names, or to our next one.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .build()
            .expect("an HTTP client builds");
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Client {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
            options,
            // Ids with the top bit set are reserved for ephemeral (read) sessions.
            client_id: rand::thread_rng().gen_range(1..1u64 << 63),
            seq: Mutex::new(1),
        }
    }

    /// The dev cluster on loopback.
    pub fn dev() -> Client {
        Client::new(DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(), Options::default())
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.options.backoff_base.as_micros() as u64;
        let cap = self.options.backoff_cap.as_micros() as u64;
        let ceiling = cap.min(base.saturating_mul(1 << attempt.min(20)));
        Duration::from_micros(rand::thread_rng().gen_range(0..=ceiling))
    }

    /// Sends one call, retrying on transport errors, 5xx and 503 on other endpoints.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        session: Option<(u64, u64)>,
    ) -> Result<R, Error> {
        let mut last = String::new();
        // Where a 307 sent the next attempt: one of our endpoints, or the leader's URL
        // as the cluster names it (tried once; it may not resolve from here).
        let mut redirected: Option<usize> = None;
        let mut sent_to: Option<String> = None;
        for attempt in 0..self.options.attempts_max {
            if attempt > 0 && redirected.is_none() && sent_to.is_none() {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            let index = redirected.take().unwrap_or_else(|| {
                (self.preferred.load(Ordering::Relaxed) + attempt as usize) % self.endpoints.len()
            });
            let url = sent_to.take().unwrap_or_else(|| format!("{}{}", self.endpoints[index], path));
            let mut request = self.http.request(method.clone(), &url).query(query);
            if let Some((client_id, seq)) = session {
                request = request.header(CLIENT_ID_HEADER, client_id).header(SEQ_HEADER, seq);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last = format!("{url}: {error}");
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::TEMPORARY_REDIRECT {
                // Not the leader: the leader's endpoint if it is one of ours, else our next.
                let location =
                    response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
                let named = location
                    .and_then(|l| self.endpoints.iter().position(|e| l.starts_with(&format!("{e}/"))));
                last = format!("{url}: not the leader (sent to {})", location.unwrap_or("?"));
                match (named, location) {
                    (Some(leader), _) => {
                        self.preferred.store(leader, Ordering::Relaxed);
                        redirected = Some(leader);
                    }
                    // Not one of ours: that URL once (its query included), then our next.
                    (None, Some(location)) if !url.starts_with(location) => {
                        sent_to = Some(location.split('?').next().unwrap_or(location).to_string());
                    }
                    _ => redirected = Some((index + 1) % self.endpoints.len()),
                }
                continue;
            }
            if status.is_success() {
                self.prefer_leader(index, response.headers());
                return response.json::<R>().await.map_err(|e| Error::Unavailable {
                    attempts: attempt + 1,
                    last: format!("{url}: undecodable reply: {e}"),
                });
            }
            let body: Option<ErrorBody> = response.json().await.ok();
            let (code, message) = body
                .map(|b| (b.error.code, b.error.message))
                .unwrap_or_else(|| ("internal".into(), format!("HTTP {status}")));
            if status == StatusCode::CONFLICT && code == SESSION_CONFLICT_CODE {
                return Err(Error::SessionConflict { message });
            }
            if status.is_client_error() {
                return Err(Error::Rejected { status: status.as_u16(), code, message });
            }
            last = format!("{url}: {message} ({code})");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                continue; // No quorum there, or busy: another node, after a backoff.
            }
        }
        Err(Error::Unavailable { attempts: self.options.attempts_max, last })
    }

    /// Remembers where to go first next time: the leader the answering node names, if it is
    /// one of our endpoints, else the endpoint that just answered.
    fn prefer_leader(&self, answered: usize, headers: &reqwest::header::HeaderMap) {
        let leader = headers
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|leader| self.endpoints.iter().position(|e| e == leader.trim_end_matches('/')));
        self.preferred.store(leader.unwrap_or(answered), Ordering::Relaxed);
    }

    /// A mutating call: takes the next sequence number of the session and keeps it for
    /// every retry, so the cluster applies the call at most once.
    async fn mutate<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, Error> {
        let mut seq = self.seq.lock().await;
        let result = self.call(method, path, &[], body, Some((self.client_id, *seq))).await;
        // Move on even after an error: the outcome is unknown or the call was refused.
        *seq += 1;
        result
    }

    pub async fn get(&self, key: &str, stale: bool) -> Result<GetResponse, Error> {
        let query = if stale { vec![("consistency", "stale".to_string())] } else { vec![] };
        self.call::<(), _>(Method::GET, &format!("/v1/kv/{}", encode(key)), &query, None, None).await
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<PreviousResponse, Error> {
        let body = PutRequest { value: value.to_string() };
        self.mutate(Method::PUT, &format!("/v1/kv/{}", encode(key)), Some(&body)).await
    }

    pub async fn delete(&self, key: &str) -> Result<PreviousResponse, Error> {
        self.mutate::<(), _>(Method::DELETE, &format!("/v1/kv/{}", encode(key)), None).await
    }

    pub async fn cas(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<CasResponse, Error> {
        let body = CasRequest { expected: expected.map(str::to_string), new: new.map(str::to_string) };
        self.mutate(Method::POST, &format!("/v1/kv/{}/cas", encode(key)), Some(&body)).await
    }

    pub async fn scan(&self, prefix: &str, limit: u32) -> Result<ScanResponse, Error> {
        let query = vec![("prefix", prefix.to_string()), ("limit", limit.to_string())];
        self.call::<(), _>(Method::GET, "/v1/kv", &query, None, None).await
    }

    pub async fn txn(&self, txn: &TxnRequest) -> Result<TxnResponse, Error> {
        self.mutate(Method::POST, "/v1/txn", Some(txn)).await
    }

    pub async fn open_account(
        &self,
        account: u64,
        initial_balance: u64,
    ) -> Result<OpenAccountResponse, Error> {
        let body = OpenAccountRequest { account, initial_balance };
        self.mutate(Method::POST, "/v1/bank/accounts", Some(&body)).await
    }

    pub async fn transfer(&self, transfer: TransferRequest) -> Result<TransferResponse, Error> {
        self.mutate(Method::POST, "/v1/bank/transfers", Some(&transfer)).await
    }

    pub async fn transfer_batch(
        &self,
        transfers: Vec<TransferRequest>,
    ) -> Result<TransferBatchResponse, Error> {
        self.mutate(Method::POST, "/v1/bank/transfers/batch", Some(&TransferBatchRequest { transfers })).await
    }

    pub async fn balance(&self, account: u64) -> Result<BalanceResponse, Error> {
        self.call::<(), _>(Method::GET, &format!("/v1/bank/accounts/{account}"), &[], None, None).await
    }

    pub async fn balances(&self) -> Result<BalancesResponse, Error> {
        self.call::<(), _>(Method::GET, "/v1/bank/accounts", &[], None, None).await
    }

    pub async fn status(&self) -> Result<StatusResponse, Error> {
        self.call::<(), _>(Method::GET, "/v1/status", &[], None, None).await
    }

    /// The configurations in force and decided, the leader, and each learner's lag.
    pub async fn members(&self) -> Result<MembersResponse, Error> {
        self.call::<(), _>(Method::GET, "/v1/members", &[], None, None).await
    }

    /// Admits a new member as a learner; answers once the change is decided. A node that
    /// does not lead sends the call on to the leader (HTTP 307, followed here).
    pub async fn add_member(&self, request: &AddMemberRequest) -> Result<MemberChangeResponse, Error> {
        self.call(Method::POST, "/v1/members", &[], Some(request), None).await
    }

    /// Makes a caught-up learner a voter.
    pub async fn promote_member(&self, id: u32) -> Result<MemberChangeResponse, Error> {
        self.call::<(), _>(Method::POST, &format!("/v1/members/{id}/promote"), &[], None, None).await
    }

    /// Removes a member (`force`: even if the voters heard lately would be no majority
    /// after it). Removing the leader hands its leadership over first.
    pub async fn remove_member(&self, id: u32, force: bool) -> Result<MemberChangeResponse, Error> {
        let query = if force { vec![("force", "true".to_string())] } else { vec![] };
        self.call::<(), _>(Method::DELETE, &format!("/v1/members/{id}"), &query, None, None).await
    }

    /// Hands the leadership to `to` (or the most caught-up voter).
    pub async fn transfer_leader(&self, to: Option<u32>) -> Result<TransferLeaderResponse, Error> {
        self.call(Method::POST, "/v1/leader/transfer", &[], Some(&TransferLeaderRequest { to }), None).await
    }

    /// Asks any node who leads and prefers that endpoint from now on.
    pub async fn discover_leader(&self) -> Result<Option<String>, Error> {
        let status = self.status().await?;
        if let Some(leader) = &status.leader_http {
            if let Some(i) = self.endpoints.iter().position(|e| e == leader) {
                self.preferred.store(i, Ordering::Relaxed);
            }
        }
        Ok(status.leader_http)
    }
}

/// Percent-encodes a key for a URL path segment.
fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_in_paths() {
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
        assert_eq!(encode("plain-key_1.x~"), "plain-key_1.x~");
    }

    /// Answers one HTTP request on a loopback port with `status` and `body`, then closes.
    fn answer_once(status: &'static str, body: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Read the head, then as much body as it announces.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                assert!(n > 0, "the client hung up mid-request");
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_session_conflict_is_a_typed_error() {
        let endpoint = answer_once(
            "409 Conflict",
            r#"{"error":{"code":"session_conflict","message":"this pair already carried a different request"}}"#,
        );
        let client = Client::new(vec![endpoint], Options::default());
        let error = client.put("k", "v").await.unwrap_err();
        assert_eq!(
            error,
            Error::SessionConflict { message: "this pair already carried a different request".into() }
        );
        assert!(error.to_string().contains("session_conflict, HTTP 409"), "{error}");
    }

    #[tokio::test]
    async fn other_conflicts_stay_plain_rejections() {
        let endpoint =
            answer_once("409 Conflict", r#"{"error":{"code":"session_expired","message":"too old"}}"#);
        let client = Client::new(vec![endpoint], Options::default());
        let error = client.delete("k").await.unwrap_err();
        assert!(matches!(error, Error::Rejected { status: 409, ref code, .. } if code == "session_expired"));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let client = Client::new(vec!["http://127.0.0.1:1".into()], Options::default());
        for attempt in 0..40 {
            assert!(client.backoff(attempt) <= Options::default().backoff_cap);
        }
    }
}

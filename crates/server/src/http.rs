//! The client API over HTTP/JSON (axum). Any node accepts any request: the node's
//! requester hands commands to the leader, and the reply comes back once the command is
//! decided and applied here. Routes are listed in `router`; their shapes live in
//! `synod_client::api` and are described by `/v1/openapi.json`.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde::de::DeserializeOwned;
use synod_client::api::{CLIENT_ID_HEADER, LEADER_HEADER, SEQ_HEADER};
use synod_core::apps::{App, AppCommand, AppOutput};
use synod_core::{Command, Status, EPHEMERAL_CLIENT_BIT};
use tokio::sync::oneshot;

use crate::driver::{DriverStats, Input};
use crate::errors::ApiError;
use crate::http_serve::HttpStats;
use crate::metrics::Metrics;
use crate::transport::TransportStats;

/// Everything a handler needs.
pub struct Shared {
    pub inputs: SyncSender<Input<App>>,
    pub stats: Arc<Mutex<DriverStats>>,
    pub transport: Arc<TransportStats>,
    pub info: NodeInfo,
    pub request_timeout: Duration,
    pub started: Instant,
    pub metrics: Metrics,
    /// The listener's connection counters.
    pub http: Arc<HttpStats>,
}

/// Static facts about this node and its cluster, for status pages.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: u32,
    pub cluster: String,
    /// (id, peer address, HTTP address) of every member.
    pub members: Vec<(u32, String, String)>,
    /// The protocol's heartbeat interval (a round), for judging quorum reports.
    pub heartbeat_ms: u64,
}

pub type AppState = Arc<Shared>;

/// How often a pending call checks that its node still reaches a majority.
const QUORUM_CHECK_MS: u64 = 100;
/// Heartbeat rounds a majority may go unheard before calls are refused (`require_quorum`).
const QUORUM_GRACE_ROUNDS: u64 = 3;

/// Why a pending call stopped waiting.
enum Waited {
    TimedOut,
    QuorumLost,
}

/// The request body limit: larger bodies get 413 before they are read.
pub const BODY_BYTES_MAX: usize = 8 << 20;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/kv", get(crate::kv_api::scan))
        .route("/v1/kv/{key}", get(crate::kv_api::get).put(crate::kv_api::put).delete(crate::kv_api::delete))
        .route("/v1/kv/{key}/cas", post(crate::kv_api::cas))
        .route("/v1/txn", post(crate::kv_api::txn))
        .route("/v1/bank/accounts", get(crate::bank_api::list).post(crate::bank_api::open))
        .route("/v1/bank/accounts/{account}", get(crate::bank_api::balance))
        .route("/v1/bank/transfers", post(crate::bank_api::transfer))
        .route("/v1/bank/transfers/batch", post(crate::bank_api::transfer_batch))
        .route("/v1/members", get(crate::members_api::list).post(crate::members_api::add))
        .route("/v1/members/{id}", axum::routing::delete(crate::members_api::remove))
        .route("/v1/members/{id}/promote", post(crate::members_api::promote))
        .route("/v1/leader/transfer", post(crate::members_api::transfer))
        .route("/v1/status", get(status))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::map_response_with_state(state.clone(), leader_hint))
        .with_state(state)
}

/// Names the leader in every response, so clients can go there directly.
async fn leader_hint(State(state): State<AppState>, mut response: Response) -> Response {
    if let Some(http) = state.leader_http() {
        if let Ok(value) = header::HeaderValue::from_str(&http) {
            response.headers_mut().insert(LEADER_HEADER, value);
        }
    }
    response
}

/// `Json<T>` whose rejections are our JSON errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {BODY_BYTES_MAX} bytes"),
        );
    }
    ApiError::bad_request(rejection.body_text())
}

/// The `consistency` query parameter: true for `stale`, false for `linearizable` (the
/// default).
pub fn is_stale(consistency: Option<&str>) -> Result<bool, ApiError> {
    match consistency {
        None | Some("linearizable") => Ok(false),
        Some("stale") => Ok(true),
        Some(other) => {
            Err(ApiError::bad_request(format!("consistency must be linearizable or stale, not {other}")))
        }
    }
}

/// The session of a mutating request: from the headers (idempotent retries), or a fresh
/// one-off session.
pub fn session(headers: &HeaderMap) -> Result<(u64, u64), ApiError> {
    let parse = |name: &str| -> Result<Option<u64>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => {
                value.to_str().ok().and_then(|v| v.parse::<u64>().ok()).map(Some).ok_or_else(|| {
                    ApiError::bad_request(format!("header {name} must be an unsigned integer"))
                })
            }
        }
    };
    match (parse(CLIENT_ID_HEADER)?, parse(SEQ_HEADER)?) {
        (Some(client_id), Some(seq))
            if client_id != 0 && client_id & EPHEMERAL_CLIENT_BIT == 0 && seq > 0 =>
        {
            Ok((client_id, seq))
        }
        (None, None) => Ok((rand::thread_rng().gen_range(1..EPHEMERAL_CLIENT_BIT), 1)),
        _ => Err(ApiError::bad_request(format!(
            "send both {CLIENT_ID_HEADER} (1..2^63) and {SEQ_HEADER} (from 1), or neither"
        ))),
    }
}

impl Shared {
    fn status(&self) -> Option<Status> {
        self.stats.lock().expect("stats lock").status.clone()
    }

    /// The leader's HTTP endpoint, if this node follows one.
    fn leader_http(&self) -> Option<String> {
        let leader = self.status()?.leader?.leader.0;
        self.member_http(leader)
    }

    /// A member's HTTP endpoint (`http://host:port`): as the newest configuration carries
    /// it (members come and go), else as this node was started with.
    pub(crate) fn member_http(&self, id: u32) -> Option<String> {
        let stats = self.stats.lock().expect("stats lock");
        let configured = [&stats.latest_configuration, &stats.configuration]
            .into_iter()
            .flatten()
            .find_map(|c| c.addresses.get(&synod_core::NodeId(id)))
            .and_then(|address| crate::members_api::split_address(address).1);
        drop(stats);
        configured
            .map(|http| format!("http://{http}"))
            .or_else(|| self.info.members.iter().find(|m| m.0 == id).map(|m| m.2.clone()))
    }

    /// Refuses early when this node cannot reach a majority: the call could only hang.
    /// A majority heard within the last [`QUORUM_GRACE_ROUNDS`] heartbeat rounds counts:
    /// on a busy machine a peer's reply can miss the end of its round by a moment, and one
    /// such round made a write fail with `no_quorum` although nothing was wrong.
    fn require_quorum(&self) -> Result<(), ApiError> {
        let grace_us = QUORUM_GRACE_ROUNDS * self.info.heartbeat_ms * 1000;
        let heard = |status: &Status| {
            status.quorum_connected || status.quorum_heard_us_ago.is_some_and(|ago| ago <= grace_us)
        };
        match self.status() {
            Some(status) if heard(&status) && status.leader.is_some() => Ok(()),
            _ => Err(ApiError::unavailable(
                "no_quorum",
                "this node does not currently reach a majority with a leader; retry here later or try another node",
            )),
        }
    }

    /// Runs `command` through the log and waits for its output.
    pub async fn invoke(&self, session: (u64, u64), command: AppCommand) -> Result<AppOutput, ApiError> {
        self.require_quorum()?;
        let started = Instant::now();
        let (reply, receiver) = oneshot::channel();
        let command = Command { client_id: session.0, seq: session.1, op: command };
        match self.inputs.try_send(Input::Invoke(command, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::unavailable("busy", "the node's input queue is full"))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::unavailable("stopping", "the node is stopping"))
            }
        }
        let result = self.wait_with_quorum(receiver).await;
        match result {
            Ok(Ok(Ok(output))) => {
                self.metrics.observe_commit(started.elapsed());
                Ok(output)
            }
            Ok(Ok(Err(reason))) => Err(ApiError::from(reason)),
            Ok(Err(_)) => Err(ApiError::unavailable("stopping", "the node stopped; the outcome is unknown")),
            Err(Waited::QuorumLost) => Err(ApiError::unavailable(
                "no_quorum",
                "this node lost its majority while the call was pending; the outcome is unknown \
                 (retry with the same session headers to be safe)",
            )),
            Err(Waited::TimedOut) => Err(ApiError::unavailable(
                "timeout",
                format!(
                    "not applied within {} ms; the outcome is unknown (retry with the same session headers to be safe)",
                    self.request_timeout.as_millis()
                ),
            )),
        }
    }

    /// Waits for a call's reply, but not past the request timeout, and not after this node
    /// has been without a majority for a while: a client should hear "unknown outcome, try
    /// elsewhere" promptly rather than hang (checked every `QUORUM_CHECK_MS`).
    async fn wait_with_quorum<T>(
        &self,
        mut receiver: oneshot::Receiver<T>,
    ) -> Result<Result<T, oneshot::error::RecvError>, Waited> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut without_quorum = 0u32;
        loop {
            let check = tokio::time::sleep(Duration::from_millis(QUORUM_CHECK_MS));
            tokio::select! {
                reply = &mut receiver => return Ok(reply),
                _ = tokio::time::sleep_until(deadline) => return Err(Waited::TimedOut),
                _ = check => {
                    without_quorum = if self.require_quorum().is_err() { without_quorum + 1 } else { 0 };
                    // Two checks in a row: a lost heartbeat round is not a lost majority.
                    if without_quorum >= 2 {
                        return Err(Waited::QuorumLost);
                    }
                }
            }
        }
    }

    /// A linearizable read. At a leader holding its lease (C6) it is answered locally once
    /// the read index is applied; anywhere else it is ordered through the log like a write
    /// (an ephemeral session: no session record), so it sees every write acknowledged
    /// before it started.
    pub async fn read(&self, command: AppCommand) -> Result<AppOutput, ApiError> {
        // Only a leader can hold a lease: followers go straight to the log.
        let leading = self.status().is_some_and(|s| s.is_leader);
        let (reply, receiver) = oneshot::channel();
        if leading && self.inputs.try_send(Input::ReadLease(command.clone(), reply)).is_ok() {
            if let Ok(Ok(Some(output))) = tokio::time::timeout(self.request_timeout, receiver).await {
                self.metrics.observe_lease_read();
                return Ok(output);
            }
        }
        let client_id = EPHEMERAL_CLIENT_BIT | rand::thread_rng().gen_range(1..EPHEMERAL_CLIENT_BIT);
        self.invoke((client_id, 1), command).await
    }

    /// A stale read from this replica's applied state; says how far it has applied.
    pub async fn read_stale(&self, command: AppCommand) -> Result<(AppOutput, Status), ApiError> {
        let (reply, receiver) = oneshot::channel();
        self.inputs
            .try_send(Input::ReadLocal(command, reply))
            .map_err(|_| ApiError::unavailable("busy", "the node's input queue is full"))?;
        match tokio::time::timeout(self.request_timeout, receiver).await {
            Ok(Ok((Some(output), status))) => Ok((output, status)),
            Ok(Ok((None, _))) => Err(ApiError::bad_request("not a read-only command")),
            _ => Err(ApiError::unavailable("timeout", "the node did not answer in time")),
        }
    }
}

async fn status(
    State(state): State<AppState>,
) -> Result<axum::Json<synod_client::api::StatusResponse>, ApiError> {
    let stats = state.stats.lock().expect("stats lock").clone();
    let Some(status) = stats.status else {
        return Err(ApiError::unavailable("starting", "the node is starting"));
    };
    let leader = status.leader.map(|b| b.leader.0);
    let leader_http = leader.and_then(|id| state.member_http(id));
    let configuration = stats.configuration.as_ref().map(crate::members_api::view);
    let latest_configuration = stats.latest_configuration.as_ref().map(crate::members_api::view);
    // The members of the newest configuration; before one is published, those this node
    // was started with.
    let members = match &latest_configuration {
        Some(latest) => latest.members.clone(),
        None => state
            .info
            .members
            .iter()
            .map(|(id, peer, http)| synod_client::api::PeerStatus {
                id: *id,
                peer_addr: peer.clone(),
                http_addr: http.clone(),
            })
            .collect(),
    };
    Ok(axum::Json(synod_client::api::StatusResponse {
        node: state.info.node,
        cluster_id: state.info.cluster.clone(),
        members,
        leader,
        leader_http,
        is_leader: status.is_leader,
        ballot: status.ballot_max.to_string(),
        quorum_connected: status.quorum_connected,
        decided_upto: status.decided_upto,
        applied_upto: status.applied_upto,
        requests_pending: status.requests_pending,
        peers: status
            .peers
            .iter()
            .map(|p| synod_client::api::PeerLag {
                id: p.id.0,
                decided_upto: p.decided_upto,
                lag_slots: status.decided_upto.saturating_sub(p.decided_upto),
                heard_ms_ago: p.heard_us_ago / 1000,
            })
            .collect(),
        fsyncs: stats.storage.wal_syncs,
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        recovering: status.recovery.as_ref().map(|r| synod_client::api::RecoveryStatus {
            members_answered: r.reported,
            members_needed: r.needed,
            catch_up_to: r.horizon,
        }),
        checkpoint_slot: status.checkpoint_slot,
        compacted_upto: status.compacted_upto,
        snapshots_installed: status.snapshots_installed,
        configuration,
        latest_configuration,
        removed: stats.removed,
    }))
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.require_quorum()?;
    Ok("ready\n")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.stats.lock().expect("stats lock").clone();
    let body = state.metrics.render(&stats, &state.transport, &state.http, stats.peer_queue_frames);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

//! Membership routes: the operator's side of live reconfiguration (`synod_core::membership`
//! has the rule that makes every change safe; `Node::reconfigure` what it refuses).
//!
//! - `GET /v1/members`: the configuration in force, the newest decided, the leader, and
//!   how far behind each learner is;
//! - `POST /v1/members`: admit a learner (a joining node calls this, `synod server --join`);
//! - `POST /v1/members/{id}/promote`, `DELETE /v1/members/{id}[?force=true]`;
//! - `POST /v1/leader/transfer`: hand the leadership over (Raft's TimeoutNow).
//!
//! Only the leader proposes a change; any other node answers 307 to the leader's same URL
//! (code `not_leader`), or 503 `not_leader` while no leader is known. A change is answered
//! like a write: once it is **decided** (or 503 `timeout` with an unknown outcome), and
//! then after waiting, within the same request timeout, for it to take force `ALPHA` slots
//! later, so that the operator's next change is not refused as `change_in_flight`.
//!
//! **Removing the leader** transfers the leadership first, then answers 307 to the new
//! leader's same URL, which removes the old one: one request for the operator, and the
//! core's rule (a leader never removes itself) holds.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use synod_client::api::{
    AddMemberRequest, ConfigurationView, LearnerLag, MemberChangeResponse, MembersResponse, PeerStatus,
    TransferLeaderRequest, TransferLeaderResponse,
};
use synod_core::{Change, ChangeError, Configuration, NodeId};
use tokio::sync::oneshot;

use crate::driver::Input;
use crate::errors::ApiError;
use crate::http::{ApiJson, AppState};

/// How often a pending change looks at the configurations the protocol thread published.
const POLL_MS: u64 = 20;

/// The `peer` and `http` parts of a member's address in a configuration (`peer/http`, see
/// `assembly::member_address`).
pub(crate) fn split_address(address: &str) -> (String, Option<String>) {
    match address.split_once('/') {
        Some((peer, http)) => (peer.to_string(), Some(http.to_string())),
        None => (address.to_string(), None),
    }
}

pub(crate) fn view(configuration: &Configuration) -> ConfigurationView {
    ConfigurationView {
        epoch: configuration.epoch,
        voters: configuration.voters.iter().map(|v| v.0).collect(),
        learners: configuration.learners.iter().map(|l| l.0).collect(),
        members: configuration
            .members()
            .map(|id| {
                let (peer, http) =
                    configuration.addresses.get(&id).map(|a| split_address(a)).unwrap_or_default();
                PeerStatus {
                    id: id.0,
                    peer_addr: peer,
                    http_addr: http.map(|h| format!("http://{h}")).unwrap_or_default(),
                }
            })
            .collect(),
    }
}

/// Why a change was refused, as the API says it. Exhaustive: a new [`ChangeError`] cannot
/// reach an operator without a status and a stable code.
fn refused(state: &AppState, uri: &str, error: ChangeError) -> Response {
    if let ChangeError::NotLeader { leader } = error {
        return not_leader(state, uri, leader.map(|l| l.0));
    }
    let (status, code) = status_and_code(&error);
    ApiError::new(status, code, error.to_string()).into_response()
}

/// The status and stable code of a refusal (`not_leader` is a redirect, see `not_leader`).
fn status_and_code(error: &ChangeError) -> (StatusCode, &'static str) {
    match error {
        ChangeError::NotLeader { .. } => (StatusCode::TEMPORARY_REDIRECT, "not_leader"),
        ChangeError::ChangeInFlight { .. } => (StatusCode::CONFLICT, "change_in_flight"),
        ChangeError::NotApplicable { .. } => (StatusCode::CONFLICT, "not_applicable"),
        ChangeError::VoterCount { .. } => (StatusCode::BAD_REQUEST, "voter_count"),
        ChangeError::LearnerBehind { .. } => (StatusCode::CONFLICT, "learner_behind"),
        ChangeError::WouldLoseMajority { .. } => (StatusCode::CONFLICT, "would_lose_majority"),
        ChangeError::RemovingLeader => (StatusCode::CONFLICT, "removing_leader"),
        ChangeError::BadTransferTarget { .. } => (StatusCode::BAD_REQUEST, "bad_transfer_target"),
    }
}

/// 307 to the same URL at the leader, whose HTTP endpoint the configuration names; 503 if
/// no leader is known (or it serves no HTTP).
fn not_leader(state: &AppState, uri: &str, leader: Option<u32>) -> Response {
    // Elected but not active yet (phase 1 waits out the old leader's leases): no redirect
    // to ourselves, a moment's wait instead.
    let leader = leader.filter(|l| *l != state.info.node);
    match leader.and_then(|l| state.member_http(l).map(|http| (l, http))) {
        Some((leader, http)) => {
            let location = format!("{http}{uri}");
            let error = ApiError::new(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!("node {} does not lead; node {leader} does, at {http}", state.info.node),
            );
            let mut response = error.into_response();
            if let Ok(value) = header::HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        None => ApiError::unavailable(
            "not_leader",
            "this node follows no leader now (an election is under way, or it is cut off); retry later",
        )
        .into_response(),
    }
}

fn members(state: &AppState) -> Result<MembersResponse, ApiError> {
    let stats = state.stats.lock().expect("stats lock").clone();
    let (Some(status), Some(configuration), Some(latest)) =
        (stats.status, stats.configuration, stats.latest_configuration)
    else {
        return Err(ApiError::unavailable("starting", "the node is starting"));
    };
    let leader = status.leader.map(|b| b.leader.0);
    let lag = |id: NodeId| {
        if id.0 == state.info.node {
            return Some(0);
        }
        let peer = status.peers.iter().find(|p| p.id == id)?;
        Some(status.decided_upto.saturating_sub(peer.decided_upto))
    };
    Ok(MembersResponse {
        cluster: state.info.cluster.clone(),
        node: state.info.node,
        leader,
        leader_http: leader.and_then(|l| state.member_http(l)),
        configuration: view(&configuration),
        learners: latest.learners.iter().map(|l| LearnerLag { id: l.0, lag_slots: lag(*l) }).collect(),
        latest: view(&latest),
    })
}

pub async fn list(State(state): State<AppState>) -> Result<Json<MembersResponse>, ApiError> {
    members(&state).map(Json)
}

/// The configurations as the protocol thread last published them: (in force, newest).
fn epochs(state: &AppState) -> (u64, u64) {
    let stats = state.stats.lock().expect("stats lock");
    let epoch = |c: &Option<Configuration>| c.as_ref().map_or(0, |c| c.epoch);
    (epoch(&stats.configuration), epoch(&stats.latest_configuration))
}

/// Proposes `change` and answers once it is decided (then waits, within the same request
/// timeout, for it to take force). `holds` says whether a decided configuration carries
/// out the change: another change of the same epoch may have won instead (a new leader's
/// proposal), and then this one was lost.
async fn change(
    state: &AppState,
    uri: &str,
    id: u32,
    change: Change,
    force: bool,
    holds: impl Fn(&Configuration) -> bool,
) -> Response {
    let (reply, receiver) = oneshot::channel();
    if state.inputs.try_send(Input::Reconfigure { change, force, reply }).is_err() {
        return ApiError::unavailable("busy", "the node's input queue is full").into_response();
    }
    let epoch = match receiver.await {
        Ok(Ok(epoch)) => epoch,
        Ok(Err(error)) => return refused(state, uri, error),
        Err(_) => return ApiError::unavailable("stopping", "the node is stopping").into_response(),
    };
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let decided = wait_until(deadline, || epochs(state).1 >= epoch).await;
    if !decided {
        return ApiError::unavailable(
            "timeout",
            format!(
                "configuration {epoch} was proposed but not decided within {} ms; the outcome is unknown \
                 (see GET /v1/members)",
                state.request_timeout.as_millis()
            ),
        )
        .into_response();
    }
    let latest = state.stats.lock().expect("stats lock").latest_configuration.clone();
    if !latest.as_ref().is_some_and(&holds) {
        return ApiError::new(
            StatusCode::CONFLICT,
            "change_lost",
            format!("another change took epoch {epoch} first; look at GET /v1/members and ask again"),
        )
        .into_response();
    }
    let in_force = wait_until(deadline, || epochs(state).0 >= epoch).await;
    match members(state) {
        Ok(members) => Json(MemberChangeResponse { id, in_force, members }).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Polls `done` until it holds (true) or `deadline` passes (false).
async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

pub async fn add(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    ApiJson(request): ApiJson<AddMemberRequest>,
) -> Response {
    if let Some(cluster) = &request.cluster {
        if *cluster != state.info.cluster {
            return ApiError::new(
                StatusCode::CONFLICT,
                "cluster_mismatch",
                format!("this node belongs to cluster {:?}, not {cluster:?}", state.info.cluster),
            )
            .into_response();
        }
    }
    if request.peer_addr.is_empty() || request.http_addr.is_empty() || request.peer_addr.contains('/') {
        return ApiError::bad_request("peer_addr and http_addr must be host:port").into_response();
    }
    let Some(latest) = state.stats.lock().expect("stats lock").latest_configuration.clone() else {
        return ApiError::unavailable("starting", "the node is starting").into_response();
    };
    let address = crate::assembly::member_address(&request.peer_addr, Some(&request.http_addr));
    let admitted = latest.learners.iter().find(|l| latest.addresses.get(l) == Some(&address)).map(|l| l.0);
    let id = match request.id {
        Some(0) => return ApiError::bad_request("member ids start at 1").into_response(),
        Some(id) => id,
        // A retried join without an id: the learner at these addresses is the one asking.
        None if admitted.is_some() => admitted.expect("checked"),
        // Above every id this configuration knows: an id is never handed out twice while
        // its holder is a member. (A removed member's id may come back: its data directory
        // is gone, and a new one recovers before it takes part.)
        None => latest.members().map(|m| m.0).max().unwrap_or(0) + 1,
    };
    // A retried join (the first answer was lost) finds itself admitted already.
    if latest.is_learner(NodeId(id)) && latest.addresses.get(&NodeId(id)) == Some(&address) {
        return match members(&state) {
            Ok(members) => {
                let in_force = members.configuration.epoch == members.latest.epoch;
                Json(MemberChangeResponse { id, in_force, members }).into_response()
            }
            Err(error) => error.into_response(),
        };
    }
    let uri = uri.to_string();
    let wanted = address.clone();
    change(&state, &uri, id, Change::AddLearner { id: NodeId(id), address }, false, move |c| {
        c.is_learner(NodeId(id)) && c.addresses.get(&NodeId(id)) == Some(&wanted)
    })
    .await
}

pub async fn promote(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u32>,
) -> Response {
    let uri = uri.to_string();
    change(&state, &uri, id, Change::Promote { id: NodeId(id) }, false, move |c| c.is_voter(NodeId(id))).await
}

#[derive(Debug, Deserialize)]
pub struct RemoveQuery {
    /// Propose the removal even if the voters heard lately would be no majority after it.
    #[serde(default)]
    force: bool,
}

pub async fn remove(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<u32>,
    Query(query): Query<RemoveQuery>,
) -> Response {
    let uri = uri.to_string();
    let status = state.stats.lock().expect("stats lock").status.clone();
    let leads = status.as_ref().is_some_and(|s| s.is_leader);
    if leads && id == state.info.node {
        // The leader goes: hand over first (module docs), then send the operator on.
        return match transfer_to(&state, None).await {
            Ok((leader, _)) => not_leader(&state, &uri, Some(leader)),
            Err(response) => response,
        };
    }
    change(&state, &uri, id, Change::Remove { id: NodeId(id) }, query.force, move |c| {
        !c.is_member(NodeId(id))
    })
    .await
}

/// Hands the leadership to `to` (or the most caught-up voter) and waits until another
/// node leads: (new leader, its HTTP endpoint).
async fn transfer_to(state: &AppState, to: Option<u32>) -> Result<(u32, Option<String>), Response> {
    let (reply, receiver) = oneshot::channel();
    if state.inputs.try_send(Input::TransferLeader { to: to.map(NodeId), reply }).is_err() {
        return Err(ApiError::unavailable("busy", "the node's input queue is full").into_response());
    }
    let target = match receiver.await {
        Ok(Ok(target)) => target.0,
        Ok(Err(error)) => return Err(refused(state, "/v1/leader/transfer", error)),
        Err(_) => return Err(ApiError::unavailable("stopping", "the node is stopping").into_response()),
    };
    let me = state.info.node;
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let led_by_another = || {
        let status = state.stats.lock().expect("stats lock").status.clone();
        status.and_then(|s| s.leader).map(|b| b.leader.0).filter(|l| *l != me)
    };
    if !wait_until(deadline, || led_by_another().is_some()).await {
        return Err(ApiError::unavailable(
            "timeout",
            format!("node {target} did not take the leadership over in time; this node leads on"),
        )
        .into_response());
    }
    let leader = led_by_another().expect("checked above");
    Ok((leader, state.member_http(leader)))
}

pub async fn transfer(State(state): State<AppState>, OriginalUri(uri): OriginalUri, body: Bytes) -> Response {
    let request: TransferLeaderRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TransferLeaderRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => return ApiError::bad_request(format!("bad JSON body: {error}")).into_response(),
        }
    };
    let leads = state.stats.lock().expect("stats lock").status.as_ref().is_some_and(|s| s.is_leader);
    if !leads {
        let leader = state.stats.lock().expect("stats lock").status.as_ref().and_then(|s| s.leader);
        return not_leader(&state, &uri.to_string(), leader.map(|b| b.leader.0));
    }
    match transfer_to(&state, request.to).await {
        Ok((leader, leader_http)) => Json(TransferLeaderResponse { leader, leader_http }).into_response(),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_stable_code_and_a_client_error_status() {
        let id = NodeId(4);
        let errors = [
            ChangeError::ChangeInFlight { epoch: 3 },
            ChangeError::NotApplicable { id, reason: "already a member" },
            ChangeError::VoterCount { voters: 0 },
            ChangeError::LearnerBehind { id, behind: Some(900) },
            ChangeError::WouldLoseMajority { reachable: 1, quorum: 2 },
            ChangeError::RemovingLeader,
            ChangeError::BadTransferTarget { id, reason: "it leads already" },
        ];
        let mut codes: Vec<&str> = errors.iter().map(|e| status_and_code(e).1).collect();
        for error in &errors {
            assert!(status_and_code(error).0.is_client_error(), "{error:?}");
        }
        assert_eq!(
            status_and_code(&ChangeError::WouldLoseMajority { reachable: 1, quorum: 2 }).0,
            StatusCode::CONFLICT
        );
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), errors.len(), "codes are distinct: {codes:?}");
    }

    #[test]
    fn a_member_address_splits_into_peer_and_http() {
        assert_eq!(split_address("h:7100/h:7000"), ("h:7100".into(), Some("h:7000".into())));
        assert_eq!(split_address("h:7100"), ("h:7100".into(), None));
    }
}

//! Key-value routes. Keys and values are UTF-8 strings over HTTP; the store holds bytes.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use synod_client::api::*;
use synod_core::apps::kv::{self, Compare, CompareTarget, KvCommand, KvOutput, TxnOpResult as CoreTxnResult};
use synod_core::apps::{AppCommand, AppOutput};

use crate::errors::ApiError;
use crate::http::{is_stale, session, ApiJson, AppState};

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    /// `linearizable` (default) or `stale`.
    #[serde(default)]
    consistency: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ScanQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    consistency: Option<String>,
}

/// Checks the limits before anything is proposed: bad input is a 4xx, never a crash.
fn validated(command: KvCommand) -> Result<AppCommand, ApiError> {
    kv::validate(&command).map_err(|error| {
        let code = match error {
            kv::KvError::KeyTooLarge { .. } => "key_too_large",
            kv::KvError::ValueTooLarge { .. } => "value_too_large",
            kv::KvError::TooManyTxnOps { .. } => "batch_too_large",
            kv::KvError::CommandTooLarge { .. } => "body_too_large",
            _ => "bad_request",
        };
        let status =
            if code == "body_too_large" { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
        ApiError::new(status, code, error.to_string())
    })?;
    Ok(AppCommand::Kv(command))
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn kv_output(output: AppOutput) -> Result<KvOutput, ApiError> {
    match output {
        AppOutput::Kv(KvOutput::Invalid(error)) => Err(ApiError::bad_request(error.to_string())),
        AppOutput::Kv(output) => Ok(output),
        AppOutput::Bank(_) => Err(unexpected()),
    }
}

/// The output is not of the kind the handler's own command produces. A session answers a
/// `(client, seq)` pair only with the output of the command it carried (a different
/// command under a used pair is a `session_conflict`), so this is a bug, never a client's
/// doing: it is logged and answered 500.
fn unexpected() -> ApiError {
    tracing::error!("a key-value command got an output of another kind");
    ApiError::internal("the output does not match the command (a bug; see the server log)")
}

pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<GetResponse>, ApiError> {
    let command = validated(KvCommand::Get { key: key.clone().into_bytes() })?;
    let (output, applied_upto) = if is_stale(query.consistency.as_deref())? {
        let (output, status) = state.read_stale(command).await?;
        (output, Some(status.applied_upto))
    } else {
        (state.read(command).await?, None)
    };
    match kv_output(output)? {
        KvOutput::Get { value } => Ok(Json(GetResponse { key, value: text(value), applied_upto })),
        _ => Err(unexpected()),
    }
}

pub async fn put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PutRequest>,
) -> Result<Json<PreviousResponse>, ApiError> {
    let command = validated(KvCommand::Put { key: key.into_bytes(), value: body.value.into_bytes() })?;
    match kv_output(state.invoke(session(&headers)?, command).await?)? {
        KvOutput::Put { previous } => Ok(Json(PreviousResponse { previous: text(previous) })),
        _ => Err(unexpected()),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PreviousResponse>, ApiError> {
    let command = validated(KvCommand::Delete { key: key.into_bytes() })?;
    match kv_output(state.invoke(session(&headers)?, command).await?)? {
        KvOutput::Delete { previous } => Ok(Json(PreviousResponse { previous: text(previous) })),
        _ => Err(unexpected()),
    }
}

pub async fn cas(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CasRequest>,
) -> Result<Json<CasResponse>, ApiError> {
    let command = validated(KvCommand::Cas {
        key: key.into_bytes(),
        expected: body.expected.map(String::into_bytes),
        new: body.new.map(String::into_bytes),
    })?;
    match kv_output(state.invoke(session(&headers)?, command).await?)? {
        KvOutput::Cas { succeeded, current } => Ok(Json(CasResponse { succeeded, current: text(current) })),
        _ => Err(unexpected()),
    }
}

pub async fn scan(
    State(state): State<AppState>,
    Query(query): Query<ScanQuery>,
) -> Result<Json<ScanResponse>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    let command = validated(KvCommand::Scan { prefix: query.prefix.into_bytes(), limit })?;
    let output = if is_stale(query.consistency.as_deref())? {
        state.read_stale(command).await?.0
    } else {
        state.read(command).await?
    };
    match kv_output(output)? {
        KvOutput::Scan { entries, more } => Ok(Json(ScanResponse {
            entries: entries
                .into_iter()
                .map(|(k, v)| Entry {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    value: String::from_utf8_lossy(&v).into_owned(),
                })
                .collect(),
            more,
        })),
        _ => Err(unexpected()),
    }
}

fn txn_op(op: TxnOp) -> kv::TxnOp {
    match op {
        TxnOp::Get { key } => kv::TxnOp::Get { key: key.into_bytes() },
        TxnOp::Put { key, value } => kv::TxnOp::Put { key: key.into_bytes(), value: value.into_bytes() },
        TxnOp::Delete { key } => kv::TxnOp::Delete { key: key.into_bytes() },
    }
}

pub async fn txn(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TxnRequest>,
) -> Result<Json<TxnResponse>, ApiError> {
    let compare = body
        .compare
        .into_iter()
        .map(|c| match c {
            TxnCompare::Equals { key, value } => Compare {
                key: key.into_bytes(),
                target: CompareTarget::ValueEquals(value.map(String::into_bytes)),
            },
            TxnCompare::Exists { key } => Compare { key: key.into_bytes(), target: CompareTarget::Exists },
            TxnCompare::Missing { key } => Compare { key: key.into_bytes(), target: CompareTarget::Missing },
        })
        .collect();
    let command = validated(KvCommand::Txn {
        compare,
        success: body.success.into_iter().map(txn_op).collect(),
        failure: body.failure.into_iter().map(txn_op).collect(),
    })?;
    match kv_output(state.invoke(session(&headers)?, command).await?)? {
        KvOutput::Txn { succeeded, results } => Ok(Json(TxnResponse {
            succeeded,
            results: results
                .into_iter()
                .map(|r| match r {
                    CoreTxnResult::Get { value } => TxnOpResult::Get { value: text(value) },
                    CoreTxnResult::Put { previous } => TxnOpResult::Put { previous: text(previous) },
                    CoreTxnResult::Delete { previous } => TxnOpResult::Delete { previous: text(previous) },
                })
                .collect(),
        })),
        _ => Err(unexpected()),
    }
}

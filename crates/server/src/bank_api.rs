//! Bank routes: accounts, idempotent transfers (client-chosen ids) and balances.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use synod_client::api::*;
use synod_core::apps::bank::{self, BankCommand, BankOutput, Transfer, TransferResult};
use synod_core::apps::{AppCommand, AppOutput};

use crate::errors::ApiError;
use crate::http::{is_stale, session, ApiJson, AppState};

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    #[serde(default)]
    consistency: Option<String>,
}

fn bank_output(output: AppOutput) -> Result<BankOutput, ApiError> {
    match output {
        AppOutput::Bank(BankOutput::Invalid(error)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "batch_too_large", error.to_string()))
        }
        AppOutput::Bank(output) => Ok(output),
        AppOutput::Kv(_) => Err(unexpected()),
    }
}

/// The output is not of the kind the handler's own command produces: a bug (see
/// `kv_api::unexpected`), logged and answered 500.
fn unexpected() -> ApiError {
    tracing::error!("a bank command got an output of another kind");
    ApiError::internal("the output does not match the command (a bug; see the server log)")
}

fn result_name(result: TransferResult) -> &'static str {
    match result {
        TransferResult::Ok => "ok",
        TransferResult::InsufficientFunds => "insufficient_funds",
        TransferResult::NoSuchAccount => "no_such_account",
        TransferResult::SameAccount => "same_account",
        TransferResult::ZeroAmount => "zero_amount",
        TransferResult::BalanceOverflow => "balance_overflow",
        TransferResult::IdReused => "id_reused",
    }
}

fn transfer_of(t: TransferRequest) -> Transfer {
    Transfer { id: t.id, from: t.from, to: t.to, amount: t.amount }
}

async fn run_read(state: &AppState, command: BankCommand, stale: bool) -> Result<BankOutput, ApiError> {
    let command = AppCommand::Bank(command);
    let output = if stale { state.read_stale(command).await?.0 } else { state.read(command).await? };
    bank_output(output)
}

pub async fn open(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OpenAccountRequest>,
) -> Result<Json<OpenAccountResponse>, ApiError> {
    let command =
        AppCommand::Bank(BankCommand::Open { account: body.account, initial_balance: body.initial_balance });
    match bank_output(state.invoke(session(&headers)?, command).await?)? {
        BankOutput::Opened => Ok(Json(OpenAccountResponse {
            account: body.account,
            result: "opened".into(),
            balance: body.initial_balance,
        })),
        BankOutput::AlreadyExists { balance } => {
            Ok(Json(OpenAccountResponse { account: body.account, result: "already_exists".into(), balance }))
        }
        _ => Err(unexpected()),
    }
}

pub async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Result<Json<TransferResponse>, ApiError> {
    let command = AppCommand::Bank(BankCommand::Transfer(transfer_of(body)));
    match bank_output(state.invoke(session(&headers)?, command).await?)? {
        BankOutput::Transfer(result) => {
            Ok(Json(TransferResponse { id: body.id, result: result_name(result).into() }))
        }
        _ => Err(unexpected()),
    }
}

pub async fn transfer_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<TransferBatchRequest>,
) -> Result<Json<TransferBatchResponse>, ApiError> {
    let transfers: Vec<Transfer> = body.transfers.iter().copied().map(transfer_of).collect();
    let command = BankCommand::TransferBatch(transfers);
    bank::validate(&command)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "batch_too_large", e.to_string()))?;
    match bank_output(state.invoke(session(&headers)?, AppCommand::Bank(command)).await?)? {
        BankOutput::TransferBatch(results) => Ok(Json(TransferBatchResponse {
            results: body
                .transfers
                .iter()
                .zip(results)
                .map(|(t, r)| TransferResponse { id: t.id, result: result_name(r).into() })
                .collect(),
        })),
        _ => Err(unexpected()),
    }
}

pub async fn balance(
    State(state): State<AppState>,
    Path(account): Path<u64>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<BalanceResponse>, ApiError> {
    match run_read(&state, BankCommand::Balance { account }, is_stale(query.consistency.as_deref())?).await? {
        BankOutput::Balance(Some(balance)) => Ok(Json(BalanceResponse { account, balance })),
        BankOutput::Balance(None) => Err(ApiError::not_found(format!("no account {account}"))),
        _ => Err(unexpected()),
    }
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<BalancesResponse>, ApiError> {
    match run_read(&state, BankCommand::ReadAll, is_stale(query.consistency.as_deref())?).await? {
        BankOutput::ReadAll(balances) => Ok(Json(BalancesResponse { balances })),
        _ => Err(unexpected()),
    }
}

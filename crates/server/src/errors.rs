//! Errors as the HTTP API reports them: JSON with a stable code and a human message, the
//! right status, and `Retry-After` where retrying helps.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use synod_client::api::{ErrorBody, ErrorDetail, SESSION_CONFLICT_CODE, SESSION_EXPIRED_CODE};
use synod_core::Rejection;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after_seconds: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The node cannot serve now; the same request may succeed elsewhere or later.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError { retry_after_seconds: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }
    /// A handler's assumption about the output of its own command did not hold: a bug.
    /// Sessions answer a pair only with the output of the very command that carried it
    /// (`Sessions::apply` compares command digests), so no client can cause this.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// Why the core refused a command, as the API says it. The match is exhaustive, so a new
/// [`Rejection`] cannot reach a client without a status and a stable code.
impl From<Rejection> for ApiError {
    fn from(reason: Rejection) -> Self {
        match reason {
            Rejection::Busy => ApiError::unavailable("busy", "too many requests pending at this node"),
            Rejection::SessionExpired => ApiError::new(
                StatusCode::CONFLICT,
                SESSION_EXPIRED_CODE,
                "this sequence number is older than the session's last; its reply is gone",
            ),
            Rejection::SessionConflict => ApiError::new(
                StatusCode::CONFLICT,
                SESSION_CONFLICT_CODE,
                "this synod-client-id and synod-seq pair already carried a different request; nothing of this \
                 request was applied (a retry must repeat the request exactly; a new request takes the next \
                 synod-seq)",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

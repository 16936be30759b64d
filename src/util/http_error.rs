//! The JSON error body of every REST route and refused upgrade.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error body: `{"error": code, "message": …}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiError {
    /// A stable code, e.g. `invalid_token`, `device_limit`, `not_found`.
    pub(crate) error: String,
    /// A human-readable explanation.
    pub(crate) message: String,
}

/// A JSON error response: `{"error": code, "message": …}`.
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ApiError { error: code.to_owned(), message: message.to_owned() })).into_response()
}

//! Errors as Kubernetes `Status` responses.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

pub use crate::registry::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(self.to_status())).into_response()
    }
}

/// Decodes a JSON request body; a syntax error names its line and column.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's message ends with "at line L column C".
        ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
    })
}

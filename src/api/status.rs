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

/// A request body as JSON: a protobuf body (`Content-Type: application/vnd.kubernetes.protobuf`,
/// what client-go's typed clients send for the kinds `keelson_model::protobuf` reads) becomes
/// the JSON it encodes; any other body is taken as it is. A protobuf body of another kind is
/// 415, malformed protobuf 400.
pub fn json_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::body::Bytes, ApiError> {
    use keelson_model::protobuf;
    let protobuf = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(protobuf::MEDIA_TYPE));
    if !protobuf {
        return Ok(body);
    }
    match protobuf::decode(&body) {
        Ok(obj) => Ok(serde_json::to_vec(&obj).expect("json").into()),
        Err(e @ protobuf::Error::Unsupported(_)) => Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

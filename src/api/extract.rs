//! Extractors whose rejections are Kubernetes `Status` objects: axum's own answer a malformed
//! query string or path with a plain-text body, which clients of a Kubernetes API cannot read
//! (and which the OpenAPI document does not promise).

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The query string decoded into `T`; a value of the wrong type, a repeated parameter or bad
/// percent-encoding is 400 `BadRequest` naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid query parameters: {}",
                e.body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// The path parameters decoded into `T`; a segment that does not percent-decode to UTF-8 is
/// 404 `NotFound`, as no object can have such a name.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(ApiPath(p)),
            Err(e) => Err(ApiError::not_found(format!(
                "the server could not find the requested resource ({})",
                e.body_text()
            ))),
        }
    }
}

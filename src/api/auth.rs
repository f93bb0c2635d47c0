//! Bearer-token authentication from a token file, as the API server's `--token-auth-file`.
//!
//! The file holds one token per line, optionally followed by `,user[,uid,...]` (Kubernetes'
//! static token CSV). Health, readiness and metrics answer without a token. Without a token
//! file the API is open, for local tests; `keelson up` always creates one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Tokens and the users they name.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Option<Arc<HashMap<String, String>>>);

impl Tokens {
    /// No authentication.
    pub fn open() -> Self {
        Tokens(None)
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
        let mut map = HashMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut parts = line.split(',');
            let token = parts.next().unwrap_or("").trim().to_string();
            let user = parts.next().unwrap_or("admin").trim().to_string();
            if !token.is_empty() {
                map.insert(token, user);
            }
        }
        if map.is_empty() {
            anyhow::bail!("token file {} holds no token", path.display());
        }
        Ok(Tokens(Some(Arc::new(map))))
    }
}

fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/metrics")
}

/// The authenticated user of a request (a request extension), for per-user limits.
#[derive(Debug, Clone)]
pub struct User(pub String);

/// Middleware: every other path needs `Authorization: Bearer <token>`.
pub async fn authenticate(State(tokens): State<Tokens>, req: Request, next: Next) -> Response {
    let Some(map) = &tokens.0 else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(t) if map.contains_key(t.trim()) => {
            let user = User(map[t.trim()].clone());
            let mut req = req;
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized: invalid bearer token",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized: a bearer token is required",
        )
        .into_response(),
    }
}

//! Limits that keep one client from taking a master down, with kube-apiserver's defaults:
//!
//! - at most `max_inflight` requests in flight (400), `max_mutating` of them writes (200);
//!   beyond that a request is answered at once with 429 `TooManyRequests` and `Retry-After`;
//! - long-running requests (watches, followed logs) are not counted there, as in
//!   kube-apiserver, but each user may hold at most `max_watches_per_user` of them;
//! - a request body must arrive within `body_read` (408 otherwise), and is at most
//!   [`super::MAX_BODY`] bytes (413).
//!
//! Header read timeouts are the server loop's (`master::http`). The agents' heartbeat stream
//! is a route of its own, outside these limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::auth::User;
use super::{ApiError, MAX_BODY};

/// The limits' settings (flags of `keelson master`).
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    pub max_inflight: usize,
    pub max_mutating: usize,
    pub max_watches_per_user: usize,
    pub body_read: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_inflight: 400,
            max_mutating: 200,
            max_watches_per_user: 5000,
            body_read: Duration::from_secs(60),
        }
    }
}

/// The counters behind the limits, shared by every request of a master.
pub struct Limits {
    config: LimitConfig,
    inflight: Semaphore,
    mutating: Semaphore,
    watches: Mutex<HashMap<String, usize>>,
}

impl Limits {
    pub fn new(config: LimitConfig) -> Arc<Self> {
        Arc::new(Limits {
            config,
            inflight: Semaphore::new(config.max_inflight),
            mutating: Semaphore::new(config.max_mutating),
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a long-running request of `user`, if under the cap.
    fn open_watch(self: &Arc<Self>, user: &str) -> Option<WatchSlot> {
        let mut w = self.watches.lock().expect("watch counts");
        let n = w.entry(user.to_string()).or_default();
        if *n >= self.config.max_watches_per_user {
            return None;
        }
        *n += 1;
        Some(WatchSlot {
            limits: self.clone(),
            user: user.to_string(),
        })
    }
}

/// One long-running request counted against its user, for as long as its answer streams.
struct WatchSlot {
    limits: Arc<Limits>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.limits.watches.lock().expect("watch counts");
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// Watches (`?watch=true`, `/watch/` paths) and followed logs: they last as long as the client
/// wants.
fn long_running(req: &Request) -> bool {
    let query = req.uri().query().unwrap_or("");
    let flag = |name: &str| {
        query.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == name && matches!(v, "" | "1" | "true")
        })
    };
    let path = req.uri().path();
    flag("watch") || path.contains("/watch/") || (path.ends_with("/log") && flag("follow"))
}

fn too_many(message: String) -> Response {
    let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
        .with_retry_after(1)
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Middleware enforcing the limits (runs after authentication, which names the user).
pub async fn enforce(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    // Health and metrics answer even when the master is saturated (probes, scrapes).
    if matches!(
        req.uri().path(),
        "/healthz" | "/livez" | "/readyz" | "/metrics"
    ) {
        return next.run(req).await;
    }
    if long_running(&req) {
        let user = req
            .extensions()
            .get::<User>()
            .map_or("anonymous", |u| u.0.name.as_str())
            .to_string();
        let Some(slot) = limits.open_watch(&user) else {
            return too_many(format!(
                "user {user:?} has {} long-running requests open, the most allowed",
                limits.config.max_watches_per_user
            ));
        };
        let resp = next.run(req).await;
        // The slot is released when the answer's stream ends.
        let (parts, body) = resp.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let Ok(_permit) = limits.inflight.try_acquire() else {
        return too_many(format!(
            "too many requests in flight (at most {}); retry",
            limits.config.max_inflight
        ));
    };
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let _write_permit = if mutating {
        match limits.mutating.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                return too_many(format!(
                    "too many writes in flight (at most {}); retry",
                    limits.config.max_mutating
                ))
            }
        }
    } else {
        None
    };
    // The whole body, within the body timeout and the size limit.
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(
        limits.config.body_read,
        axum::body::to_bytes(body, MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("the request body is over the limit of {MAX_BODY} bytes, or broken: {e}"),
            )
            .into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits.config.body_read.as_secs_f64()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    #[test]
    fn long_running_requests() {
        for yes in [
            "/api/v1/pods?watch=true",
            "/api/v1/namespaces/default/pods?labelSelector=a&watch=1",
            "/api/v1beta1/watch/pods",
            "/api/v1/namespaces/default/pods/p/log?follow=true",
            "/kv?prefix=a&watch",
        ] {
            assert!(long_running(&req(yes)), "{yes}");
        }
        for no in [
            "/api/v1/pods",
            "/api/v1/pods?watch=false",
            "/api/v1/namespaces/default/pods/p/log",
            "/api/v1/pods?watcher=1",
        ] {
            assert!(!long_running(&req(no)), "{no}");
        }
    }

    #[test]
    fn watch_slots_are_counted_per_user_and_released() {
        let l = Limits::new(LimitConfig {
            max_watches_per_user: 2,
            ..Default::default()
        });
        let a = l.open_watch("alice").unwrap();
        let _b = l.open_watch("alice").unwrap();
        assert!(l.open_watch("alice").is_none());
        assert!(l.open_watch("bob").is_some());
        drop(a);
        assert!(l.open_watch("alice").is_some());
    }
}

//! The store's key/value surface: create, update and delete with preconditions, get, list by
//! prefix, and watch from a resource version. The object API is built on the same store calls;
//! this surface stays as the store's own test and chaos surface.
//!
//! - `POST /kv/{key}` (body = value): create; 409 `AlreadyExists` if present.
//! - `PUT /kv/{key}?resourceVersion=N`: update, only if last written at N (409 `Conflict`
//!   otherwise, 404 if absent); `?upsert=true` stores whether or not the key exists.
//! - `DELETE /kv/{key}?resourceVersion=N`: delete, with an optional precondition.
//! - `GET /kv/{key}`, `GET /kv?prefix=P`: linearizable; `resourceVersion=0` reads this replica.
//! - `GET /kv?prefix=P&watch=true&resourceVersion=N`: one JSON event per line for every change
//!   after N; with N unset or 0, first an `ADDED` event per current key. 410 `Expired` when N is
//!   older than the change feed's window.
//!
//! Invariant: **the surface is fenced.** Its keys live under [`SPACE`] in the store, a space of
//! their own: no key given here can read, write or watch `/registry/` (the API objects), whose
//! validation it would skip.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use keelson_raft::command::Record;
use keelson_raft::feed::{EventKind, Subscription};
use keelson_raft::{Command, OpResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{ApiPath, ApiQuery};
use super::metrics::OpenWatch;
use super::{ApiError, ApiState};

pub fn routes() -> Router<ApiState> {
    Router::new().route("/kv", get(list)).route(
        "/kv/{*key}",
        get(read).post(create).put(update).delete(remove),
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params {
    resource_version: Option<String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    watch: Option<String>,
    #[serde(default)]
    upsert: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | ""))
}

impl Params {
    /// The resource version as a number, if one was given.
    fn rv(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {s:?} is not a number"))
            }),
        }
    }
}

/// Where this surface's keys live in the store.
pub const SPACE: &str = "/kv/";

/// The store key of a key of this surface.
fn stored(key: &str) -> String {
    format!("{SPACE}{key}")
}

/// The key of this surface a store key holds (every key of the fenced space has the prefix).
fn visible(stored_key: &str) -> &str {
    stored_key.strip_prefix(SPACE).unwrap_or(stored_key)
}

fn item(key: &str, r: &Record) -> Value {
    json!({
        "key": key,
        "value": String::from_utf8_lossy(&r.value),
        "resourceVersion": r.mod_rv,
        "createRevision": r.create_rv,
    })
}

fn value_of(body: Bytes) -> Result<Bytes, ApiError> {
    let max = crate::registry::MAX_OBJECT_BYTES;
    if body.len() > max {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "the value of {} bytes is over the limit of {max} bytes",
                body.len()
            ),
        ));
    }
    std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("value is not UTF-8: {e}")))?;
    Ok(body)
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 1024 {
        return Err(ApiError::bad_request("key must be 1 to 1024 bytes"));
    }
    Ok(())
}

/// Runs one command and returns its single result.
async fn run(s: &ApiState, cmd: Command) -> Result<OpResult, ApiError> {
    let resp = s.node.write(cmd).await?;
    match resp.results.into_iter().next() {
        Some(OpResult::NoSpace) => Err(ApiError::no_space(&s.node)),
        Some(result) => Ok(result),
        None => Err(ApiError::internal("no result")),
    }
}

fn outcome(key: &str, result: OpResult) -> Result<Response, ApiError> {
    match result {
        OpResult::Stored { rv, created } => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                code,
                Json(json!({"key": key, "resourceVersion": rv, "created": created})),
            )
                .into_response())
        }
        OpResult::Deleted { rv, prev } => Ok(Json(
            json!({"key": key, "resourceVersion": rv, "value": String::from_utf8_lossy(&prev)}),
        )
        .into_response()),
        OpResult::AlreadyExists { current_rv } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("key {key:?} already exists (resourceVersion {current_rv})"),
        )),
        OpResult::Conflict { current_rv } => Err(ApiError::conflict(format!(
            "key {key:?} was modified: it is at resourceVersion {current_rv}"
        ))),
        OpResult::NotFound => Err(ApiError::not_found(format!("key {key:?} not found"))),
        OpResult::Refused => Err(ApiError::internal(format!(
            "the write of key {key:?} was refused: its log entry held too many operations"
        ))),
        OpResult::NoSpace => Err(ApiError::internal("no space")),
    }
}

async fn create(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let value = value_of(body)?;
    outcome(
        &key,
        run(
            &s,
            Command::Create {
                key: stored(&key),
                value,
            },
        )
        .await?,
    )
}

async fn update(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let value = value_of(body)?;
    let cmd = if truthy(&p.upsert) {
        Command::Put {
            key: stored(&key),
            value,
        }
    } else {
        Command::Update {
            key: stored(&key),
            value,
            precondition: p.rv()?,
        }
    };
    outcome(&key, run(&s, cmd).await?)
}

async fn remove(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    outcome(
        &key,
        run(
            &s,
            Command::Delete {
                key: stored(&key),
                precondition: p.rv()?,
            },
        )
        .await?,
    )
}

/// Linearizable unless `resourceVersion=0`.
async fn barrier(s: &ApiState, p: &Params) -> Result<(), ApiError> {
    if p.resource_version.as_deref() != Some("0") && !s.unsafe_stale_reads {
        s.node.read_barrier().await?;
    }
    Ok(())
}

async fn read(
    State(s): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    barrier(&s, &p).await?;
    match s.node.get(&stored(&key)) {
        (Some(r), _) => Ok(Json(item(&key, &r)).into_response()),
        (None, _) => Err(ApiError::not_found(format!("key {key:?} not found"))),
    }
}

async fn list(
    State(s): State<ApiState>,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Response, ApiError> {
    if truthy(&p.watch) {
        return watch(s, p).await;
    }
    barrier(&s, &p).await?;
    let (items, rv) = s.node.list(&stored(&p.prefix));
    let items: Vec<Value> = items.iter().map(|(k, r)| item(visible(k), r)).collect();
    Ok(Json(json!({"items": items, "resourceVersion": rv})).into_response())
}

fn event_line(kind: &str, key: &str, value: &[u8], rv: u64) -> Bytes {
    let mut line = serde_json::to_vec(&json!({
        "type": kind,
        "key": key,
        "value": String::from_utf8_lossy(value),
        "resourceVersion": rv,
    }))
    .expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch(s: ApiState, p: Params) -> Result<Response, ApiError> {
    let prefix = stored(&p.prefix);
    let (initial, sub): (Vec<Bytes>, Subscription) = match p.rv()? {
        None | Some(0) => {
            let (items, _rv, sub) = s.node.store.list_and_subscribe(&prefix);
            (
                items
                    .iter()
                    .map(|(k, r)| event_line("ADDED", visible(k), &r.value, r.mod_rv))
                    .collect(),
                sub,
            )
        }
        Some(n) => match s.node.watch(n) {
            Ok(sub) => (Vec::new(), sub),
            Err(e) => return Err(ApiError::new(StatusCode::GONE, "Expired", e.to_string())),
        },
    };
    let guard = OpenWatch::new(&s.metrics);
    let live = futures::stream::unfold(Some((sub, prefix, guard)), |state| async move {
        let (mut sub, prefix, guard) = state?;
        loop {
            match sub.next().await {
                Ok(e) if !e.key.starts_with(&prefix) => continue,
                Ok(e) => {
                    let kind = match e.kind {
                        EventKind::Created => "ADDED",
                        EventKind::Updated => "MODIFIED",
                        EventKind::Deleted => "DELETED",
                    };
                    guard.metrics().watch_events.inc();
                    return Some((
                        event_line(kind, visible(&e.key), &e.value, e.rv),
                        Some((sub, prefix, guard)),
                    ));
                }
                Err(end) => {
                    // Tell the client to re-list; the stream ends after this line.
                    let mut line = serde_json::to_vec(&json!({
                        "type": "ERROR",
                        "object": {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410, "message": end.to_string()},
                    }))
                    .expect("json");
                    line.push(b'\n');
                    return Some((Bytes::from(line), None));
                }
            }
        }
    });
    let stream = futures::stream::iter(initial)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

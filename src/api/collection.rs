//! Reading collections of core/v1: lists (paged with `limit`/`continue`) and watches, as JSON
//! or as server-side printed Tables, and watch-list (`sendInitialEvents=true`).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::table::{self, TableRequest};
use super::target::{truthy, Params, Target};
use super::watch::{self, WatchOptions, WatchSpec};
use super::{ApiError, ApiState};
use crate::registry::{self, ResourceInfo};

fn list_kind(info: &ResourceInfo) -> String {
    format!("{}List", info.kind)
}

fn position(obj: &Value) -> String {
    format!(
        "{}/{}",
        registry::meta_str(obj, "namespace").unwrap_or(""),
        registry::meta_str(obj, "name").unwrap_or("")
    )
}

/// The longest a watch runs, whatever its `timeoutSeconds` (kube-apiserver's watches last 30 to
/// 60 minutes by default).
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most items one page holds, whatever its `limit`: a larger limit gets pages of this size
/// with a `continue` token, as the API allows a server to answer.
pub const MAX_PAGE: usize = 5000;

/// `GET` a collection: a `{Kind}List`, or a Table when asked for.
pub async fn list(
    s: &ApiState,
    t: &Target,
    p: &Params,
    table: Option<TableRequest>,
) -> Result<Response, ApiError> {
    let (labels, fields) = p.selectors(t.info)?;
    let (objects, rv) = s
        .registry()
        .list(t.info, t.namespace.as_deref(), p.consistent())
        .await?;
    let after = match &p.continue_token {
        Some(tok) if !tok.is_empty() => Some(decode_continue(tok)?),
        _ => None,
    };
    let mut items = Vec::new();
    let mut next = None;
    for obj in objects {
        if after
            .as_ref()
            .is_some_and(|a| position(&obj).as_str() <= a.as_str())
        {
            continue;
        }
        if !(labels.matches_object(&obj) && fields.matches(&obj)) {
            continue;
        }
        if p.limit
            .is_some_and(|l| l > 0 && items.len() == l.min(MAX_PAGE))
        {
            next = items.last().map(position);
            break;
        }
        items.push(obj);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        metadata["continue"] = json!(encode_continue(&n));
    }
    if let Some(req) = table {
        return Ok(Json(table::table(t.info, &items, metadata, req, true)).into_response());
    }
    Ok(Json(json!({"kind": list_kind(t.info), "apiVersion": "v1", "metadata": metadata, "items": items})).into_response())
}

pub fn encode_continue(position: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_continue(tok: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

/// What a core/v1 watch follows, rendered as JSON objects or one-row Tables.
pub fn watch_spec(
    t: &Target,
    p: &Params,
    table: Option<TableRequest>,
) -> Result<WatchSpec, ApiError> {
    let (labels, fields) = p.selectors(t.info)?;
    let render: Arc<dyn Fn(&Value) -> Value + Send + Sync> = match table {
        Some(req) => table::watch_renderer(t.info, req),
        None => Arc::new(Value::clone),
    };
    Ok(WatchSpec {
        info: t.info,
        prefix: registry::prefix(t.info, t.namespace.as_deref()),
        exact: false,
        labels,
        fields,
        from: p.rv()?,
        bookmarks: truthy(&p.allow_watch_bookmarks),
        // Bounded (and so never an overflow): a watch may end at any time, clients re-watch.
        timeout: p
            .timeout_seconds
            .map(|t| Duration::from_secs(t).min(MAX_WATCH_TIMEOUT)),
        render,
    })
}

fn invalid_watch(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("ListOptions.meta.k8s.io \"\" is invalid: {message}"),
    )
}

/// The watch-list options, checked as the API server checks them.
fn watch_options(p: &Params) -> Result<WatchOptions, ApiError> {
    let send = match p.send_initial_events.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid sendInitialEvents {other:?}"
            )))
        }
    };
    let rv_match = p.resource_version_match.as_deref().unwrap_or("");
    if send {
        if rv_match != "NotOlderThan" {
            return Err(invalid_watch("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        if !truthy(&p.allow_watch_bookmarks) {
            return Err(invalid_watch("allowWatchBookmarks: Required value: allowWatchBookmarks must be true when sendInitialEvents is true"));
        }
    } else if !rv_match.is_empty() && p.send_initial_events.is_some() {
        return Err(invalid_watch("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
    }
    Ok(WatchOptions {
        send_initial_events: send,
    })
}

/// `GET` a collection with `watch`: a stream of events; with `sendInitialEvents=true`, the
/// current state (at least as new as a linearizable read) first, then the end bookmark.
pub async fn watch(
    s: &ApiState,
    t: &Target,
    p: &Params,
    table: Option<TableRequest>,
) -> Result<Response, ApiError> {
    let options = watch_options(p)?;
    if options.send_initial_events {
        s.node.read_barrier().await?;
    }
    watch::serve_with(
        &s.node,
        watch_spec(t, p, table)?,
        options,
        s.metrics.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        assert_eq!(
            decode_continue(&encode_continue("default/web-1")).unwrap(),
            "default/web-1"
        );
        assert!(decode_continue("%%%").is_err());
    }

    #[test]
    fn watch_list_needs_not_older_than_and_bookmarks() {
        let p = |send: &str, m: &str, b: &str| Params {
            send_initial_events: Some(send.into()),
            resource_version_match: Some(m.into()),
            allow_watch_bookmarks: Some(b.into()),
            ..Default::default()
        };
        assert!(
            watch_options(&p("true", "NotOlderThan", "true"))
                .unwrap()
                .send_initial_events
        );
        assert_eq!(
            watch_options(&p("true", "Exact", "true")).unwrap_err().code,
            422
        );
        assert_eq!(
            watch_options(&p("true", "NotOlderThan", "false"))
                .unwrap_err()
                .code,
            422
        );
        assert!(
            !watch_options(&Params::default())
                .unwrap()
                .send_initial_events
        );
    }
}

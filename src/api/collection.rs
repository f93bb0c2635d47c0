//! Reading collections of core/v1: lists (paged with `limit`/`continue`) and watches, as JSON
//! or as server-side printed Tables, and watch-list (`sendInitialEvents=true`).

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
use keelson_model::selectors::{LabelSelector, Requirement};

fn list_kind(info: &ResourceInfo) -> String {
    format!("{}List", info.kind)
}

/// Where an object sits in its kind's key space: `namespace/name`, or `name`.
fn position(obj: &Value) -> String {
    let name = registry::meta_str(obj, "name").unwrap_or("");
    match registry::meta_str(obj, "namespace") {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The longest a watch runs, whatever its `timeoutSeconds` (kube-apiserver's watches last 30 to
/// 60 minutes by default).
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most items one page holds, whatever its `limit`: a larger limit gets pages of this size
/// with a `continue` token, as the API allows a server to answer.
pub const MAX_PAGE: usize = 5000;

/// Records read at a time while a selector filters them.
const FILTER_CHUNK: usize = 500;

/// `GET` a collection: a `{Kind}List`, or a Table when asked for. With `limit`, a page and a
/// `continue` token; every later page reads the collection as it stood at the first page's
/// resource version, as Kubernetes' continue tokens do, and costs O(limit), not O(collection).
pub async fn list(
    s: &ApiState,
    t: &Target,
    p: &Params,
    table: Option<TableRequest>,
) -> Result<Response, ApiError> {
    let (labels, fields) = p.selectors(t.info)?;
    let token = match &p.continue_token {
        Some(tok) if !tok.is_empty() => Some(Continue::decode(tok)?),
        _ => None,
    };
    if token.is_some() && !p.consistent() {
        return Err(ApiError::bad_request(
            "resourceVersion: Forbidden: specifying resource version is not allowed when using continue",
        ));
    }
    let exact = exact_version(p)?;
    let limit = match p.limit {
        Some(l) if l > 0 => l.min(MAX_PAGE),
        _ => usize::MAX,
    };
    let filtered = !(labels.0.is_empty() && fields.0.is_empty());
    let continued = token.is_some();
    let (mut after, mut at) = match token {
        Some(c) => (Some(c.start), Some(c.rv)),
        None => (None, exact),
    };
    let (mut candidates, fixed) = indexed(s, t, &labels, at, p.consistent()).await?;
    at = at.or(fixed);
    // A new list may start over once, at the applied state and without the index, if it read
    // at the version its index was taken at and the change feed no longer reaches back there.
    let mut may_restart = !continued && exact.is_none() && fixed.is_some();
    // One item past the limit tells whether another page follows.
    let mut items = Vec::new();
    let rv = loop {
        let missing = (limit - items.len()).saturating_add(1);
        let want = if filtered {
            missing.max(FILTER_CHUNK)
        } else {
            missing
        };
        let page = s
            .registry()
            .list_page(
                t.info,
                t.namespace.as_deref(),
                after.as_deref(),
                at,
                want,
                p.consistent(),
                candidates.as_deref(),
            )
            .await;
        let page = match page {
            Err(e) if e.code == StatusCode::GONE && may_restart => {
                may_restart = false;
                (candidates, at, after) = (None, None, None);
                items.clear();
                continue;
            }
            page => page.map_err(|e| match e.code.as_u16() {
                410 if continued => ApiError::new(e.code, e.reason, format!("The provided continue parameter is too old to display a consistent list result ({}). Start a new list without the continue parameter.", e.message)),
                _ => e,
            })?,
        };
        items.extend(
            page.objects
                .into_iter()
                .filter(|o| labels.matches_object(o) && fields.matches(o)),
        );
        if items.len() > limit || page.next.is_none() {
            break page.rv;
        }
        (after, at) = (page.next, Some(page.rv));
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if items.len() > limit {
        items.truncate(limit);
        let start = items.last().map(position).unwrap_or_default();
        metadata["continue"] = json!(Continue { rv, start }.encode());
    }
    if let Some(req) = table {
        return Ok(Json(table::table(t.info, &items, metadata, req, true)).into_response());
    }
    Ok(Json(json!({"kind": list_kind(t.info), "apiVersion": t.info.api_version(), "metadata": metadata, "items": items})).into_response())
}

/// How long a list by label waits for the informers to reach its version before it reads the
/// collection without their index.
const INDEX_WAIT: Duration = Duration::from_secs(1);

/// The pods an informer index says may match `labels`: the keys (sorted) its equality
/// requirement with the fewest pods names, once the index reflects the version the list reads
/// (`at`, or the applied state after a read barrier when `consistent`). The list reads those
/// and the keys changed since, so it misses none that matched. `None` when no index serves the
/// list: it reads the collection. Also the version it fixed when `at` was `None`, which the
/// list then reads at (its read barrier is done).
async fn indexed(
    s: &ApiState,
    t: &Target,
    labels: &LabelSelector,
    at: Option<u64>,
    consistent: bool,
) -> Result<(Option<Vec<String>>, Option<u64>), ApiError> {
    use crate::informer::{pod, PodFacts};
    use keelson_informer::Facts as _;
    let Some(informers) = s.informers.as_ref() else {
        return Ok((None, None));
    };
    if t.info.plural != PodFacts::PLURAL {
        return Ok((None, None));
    }
    let values = |r: &Requirement| -> Option<Vec<String>> {
        match r {
            Requirement::Equals(k, v) => Some(vec![pod::label(k, v)]),
            Requirement::In(k, vs) => Some(vs.iter().map(|v| pod::label(k, v)).collect()),
            _ => None,
        }
    };
    let pods = &informers.pods;
    let count = |vs: &[String]| -> usize {
        vs.iter()
            .map(|v| pods.count_by_index(pod::BY_LABEL, v))
            .sum()
    };
    let Some(best) = labels
        .0
        .iter()
        .filter_map(values)
        .min_by_key(|vs| count(vs))
    else {
        return Ok((None, None));
    };
    let (rv, fixed) = match at {
        Some(rv) => (rv, None),
        None => {
            if consistent {
                s.node.read_barrier().await?;
            }
            let rv = s.node.store.applied_rv();
            (rv, Some(rv))
        }
    };
    // A version not applied here yet is the registry's to wait for, or to refuse.
    if rv > s.node.store.applied_rv() || !informers.wait_synced(rv, INDEX_WAIT).await {
        return Ok((None, fixed));
    }
    let mut keys: Vec<String> = best
        .iter()
        .flat_map(|v| pods.keys_by_index(pod::BY_LABEL, v))
        .collect();
    if best.len() > 1 {
        keys.sort_unstable();
        keys.dedup();
    }
    Ok((Some(keys), fixed))
}

/// The version of a list with `resourceVersionMatch=Exact`; `None` for `NotOlderThan` or none.
fn exact_version(p: &Params) -> Result<Option<u64>, ApiError> {
    let invalid = |m: &str| invalid_list(&format!("resourceVersionMatch: {m}"));
    let unless_rv =
        "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided";
    match (p.resource_version_match.as_deref(), p.rv()?) {
        (None | Some(""), _) | (Some("NotOlderThan"), Some(_)) => Ok(None),
        (Some("Exact"), Some(n)) if n > 0 => Ok(Some(n)),
        (Some("Exact"), Some(_)) => Err(invalid(
            "Forbidden: resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        )),
        (Some("Exact" | "NotOlderThan"), None) => Err(invalid(unless_rv)),
        (Some(other), _) => Err(invalid(&format!(
            "Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// A `continue` token, as Kubernetes encodes one (unpadded URL-safe base64 of JSON): the
/// first page's resource version, and the position after which the next page starts.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Continue {
    pub rv: u64,
    pub start: String,
}

/// The longest continue token taken: a position is a namespace and a name.
const MAX_CONTINUE: usize = 2048;

impl Continue {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": self.start});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    pub fn decode(tok: &str) -> Result<Continue, ApiError> {
        use base64::Engine;
        let invalid = || {
            ApiError::bad_request(format!(
                "continue: Invalid value: {tok:.64?}: not a continue token of this server"
            ))
        };
        if tok.len() > MAX_CONTINUE {
            return Err(invalid());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok)
            .map_err(|_| invalid())?;
        let c: Continue = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if c.rv == 0 {
            return Err(invalid());
        }
        Ok(c)
    }
}

/// What a core/v1 watch follows, rendered as JSON objects or one-row Tables.
pub fn watch_spec(
    t: &Target,
    p: &Params,
    table: Option<TableRequest>,
) -> Result<WatchSpec, ApiError> {
    let (labels, fields) = p.selectors(t.info)?;
    let render = table.map(|req| table::watch_renderer(t.info, req));
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

fn invalid_list(message: &str) -> ApiError {
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
            return Err(invalid_list("resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        if !truthy(&p.allow_watch_bookmarks) {
            return Err(invalid_list("allowWatchBookmarks: Required value: allowWatchBookmarks must be true when sendInitialEvents is true"));
        }
    } else if !rv_match.is_empty() && p.send_initial_events.is_some() {
        return Err(invalid_list("resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
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
        let c = Continue {
            rv: 42 << 16,
            start: "default/web-1".into(),
        };
        assert_eq!(Continue::decode(&c.encode()).unwrap(), c);
        for bad in ["%%%", "e30", &"A".repeat(4096)] {
            let e = Continue::decode(bad).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.starts_with("continue: "), "{}", e.message);
        }
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

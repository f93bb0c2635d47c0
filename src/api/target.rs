//! What a core/v1 request addresses and asks: the target parsed from its path (resource,
//! namespace, name, subresource, watch) and the query parameters every verb shares.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::ApiError;
use crate::registry::selectors::{FieldSelector, LabelSelector};
use crate::registry::{self, lookup_in, ResourceInfo, Subresource};

/// The object a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    pub watch: bool,
}

/// Parses the part of the path after `/api/v1/`.
#[cfg(test)]
pub fn parse_target(rest: &str) -> Result<Target, ApiError> {
    parse_target_in("", "v1", rest)
}

/// Parses the part of the path after `/api/v1/` (`group` empty) or `/apis/GROUP/VERSION/`.
pub fn parse_target_in(group: &str, version: &str, rest: &str) -> Result<Target, ApiError> {
    let lookup = |plural: &str| lookup_in(group, version, plural);
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let watch = segs.first() == Some(&"watch");
    if watch {
        segs.remove(0);
    }
    let unknown = |what: &str| {
        ApiError::not_found(format!(
            "the server could not find the requested resource ({what})"
        ))
    };
    let resource = |plural: &str| lookup(plural).ok_or_else(|| unknown(plural));
    let own = |s: &str| Some(s.to_string());
    let t = match segs.as_slice() {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|r| r.namespaced) => {
            let info = resource(plural)?;
            match tail {
                [] => Target {
                    info,
                    namespace: own(ns),
                    name: None,
                    sub: None,
                    watch,
                },
                [name] => Target {
                    info,
                    namespace: own(ns),
                    name: own(name),
                    sub: None,
                    watch,
                },
                [name, sub] => Target {
                    info,
                    namespace: own(ns),
                    name: own(name),
                    sub: own(sub),
                    watch,
                },
                _ => return Err(unknown(rest)),
            }
        }
        [plural] => Target {
            info: resource(plural)?,
            namespace: None,
            name: None,
            sub: None,
            watch,
        },
        [plural, name] => Target {
            info: resource(plural)?,
            namespace: None,
            name: own(name),
            sub: None,
            watch,
        },
        [plural, name, sub] => Target {
            info: resource(plural)?,
            namespace: None,
            name: own(name),
            sub: own(sub),
            watch,
        },
        _ => return Err(unknown(rest)),
    };
    if t.name.is_some() && t.info.namespaced && t.namespace.is_none() {
        return Err(unknown(rest));
    }
    Ok(t)
}

/// Query parameters of every verb.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub limit: Option<usize>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub watch: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: Option<String>,
    pub resource_version_match: Option<String>,
    /// Table rows: `None`, `Metadata` (default) or `Object`.
    pub include_object: Option<String>,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub force: Option<String>,
}

pub fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

impl Params {
    /// The resource version asked for, if any.
    pub fn rv(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
        }
    }

    /// A linearizable read unless `resourceVersion` was given (Kubernetes: "0" = any, N = not
    /// older than N; both are served from this replica).
    pub fn consistent(&self) -> bool {
        self.resource_version.as_deref().is_none_or(str::is_empty)
    }

    /// The label and field selectors asked for, the latter over `info`'s selectable fields.
    pub fn selectors(
        &self,
        info: &ResourceInfo,
    ) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(
            self.field_selector.as_deref().unwrap_or(""),
            registry::resource(info).selectable_fields(),
        )
        .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub fn subresource(t: &Target, sub: Option<&str>) -> Result<Subresource, ApiError> {
    match sub {
        None => Ok(Subresource::Main),
        Some("status") if t.info.has_status => Ok(Subresource::Status),
        Some(other) => Err(ApiError::not_found(format!(
            "{}/{} is not a served subresource",
            t.info.plural, other
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                t.info.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_target("watch/namespaces/ns1/services").unwrap();
        assert!(t.watch && t.name.is_none());
        let t = parse_target("namespaces/kube-system").unwrap();
        assert_eq!(
            (t.info.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_target("nodes/n1/status").unwrap();
        assert_eq!((t.info.plural, t.sub.as_deref()), ("nodes", Some("status")));
        assert_eq!(parse_target("pods").unwrap().namespace, None);
        assert!(
            parse_target("pods/web").is_err(),
            "a namespaced object needs its namespace"
        );
        assert!(parse_target("widgets").is_err());
    }
}

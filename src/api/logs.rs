//! The `log` subresource of pods: the master finds the pod's node and streams the container's
//! log from that node's agent (`/containerLogs/{namespace}/{pod}/{container}` on the port the
//! node reports in `status.daemonEndpoints.kubeletEndpoint.Port`), as kube-apiserver does with
//! kubelets: over HTTPS, presenting this master's peer certificate (agents serve logs to masters
//! only) and trusting the peer CA for the agent's serving certificate; over plain HTTP when the
//! master has no peer certificate (local tests).

use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::registry::{lookup, ResourceInfo};

/// The query of `GET .../pods/{name}/log`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: Option<String>,
    pub previous: Option<String>,
    pub timestamps: Option<String>,
    pub tail_lines: Option<i64>,
}

/// How this master reaches the agents' log endpoint.
#[derive(Clone)]
pub struct Agents {
    client: reqwest::Client,
    scheme: &'static str,
}

impl Agents {
    /// Plain HTTP, no client certificate.
    pub fn plain() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        Agents {
            client,
            scheme: "http",
        }
    }

    /// HTTPS with `tls` (this master's peer certificate and the CA it trusts).
    pub fn tls(tls: &keelson_raft::network::PeerTls) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&tls.ca_pem)?)
            .identity(reqwest::Identity::from_pem(&tls.identity_pem)?)
            .build()?;
        Ok(Agents {
            client,
            scheme: "https",
        })
    }
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | ""))
}

/// Streams the log of one container of pod `name`.
pub async fn pod_log(
    s: &ApiState,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    q: &LogParams,
) -> Result<Response, ApiError> {
    let pod = s.registry().get(info, ns, name, false).await?;
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match (&q.container, names.as_slice()) {
        (Some(c), _) if names.contains(&c.as_str()) => c.clone(),
        (Some(c), _) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        (None, [only]) => only.to_string(),
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = s
        .registry()
        .get(lookup("nodes").expect("nodes"), None, node_name, false)
        .await?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("");
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    if port == 0 {
        // The agent reported no endpoint (it runs without its HTTP server).
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the agent of node {node_name} does not serve logs"),
        ));
    }
    let namespace = ns.unwrap_or("default");
    let mut url = format!(
        "{}://{address}:{port}/containerLogs/{namespace}/{name}/{container}?follow={}&previous={}&timestamps={}",
        s.agents.scheme,
        flag(&q.follow),
        flag(&q.previous),
        flag(&q.timestamps)
    );
    if let Some(n) = q.tail_lines {
        url.push_str(&format!("&tailLines={n}"));
    }
    let unavailable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("the agent of node {node_name} does not serve logs: {e}"),
        )
    };
    let resp = s
        .agents
        .client
        .get(&url)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if !resp.status().is_success() {
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(if code == reqwest::StatusCode::NOT_FOUND {
            ApiError::bad_request(text)
        } else {
            unavailable(format!("{code}: {text}"))
        });
    }
    Ok((
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain")],
        Body::from_stream(resp.bytes_stream()),
    )
        .into_response())
}

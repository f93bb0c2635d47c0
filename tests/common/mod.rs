//! Helpers shared by the integration tests: an API client that fails over between masters,
//! polling with a deadline (never sleeps as synchronisation), and kubectl (`kubectl.rs`).

#![allow(dead_code)]

pub mod docker;
pub mod kubectl;
pub mod tmpfs;
pub mod writer;

use std::time::{Duration, Instant};

use serde_json::Value;

/// The masters' Kubernetes API, tried in order until one answers (masters may be down).
pub struct Api {
    pub http: reqwest::Client,
    pub urls: Vec<String>,
    pub token: Option<String>,
}

impl Api {
    /// `ca_pem`: the CA of masters serving HTTPS.
    pub fn new(urls: Vec<String>, token: Option<String>, ca_pem: Option<&[u8]>) -> Self {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(pem) = ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA"));
        }
        Api {
            http: b.build().expect("http client"),
            urls,
            token,
        }
    }

    /// Sends to the first master that answers: the status code and the JSON body (or the text
    /// as a JSON string when the body is not JSON, e.g. logs).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        for url in &self.urls {
            let mut req = self
                .http
                .request(method.parse().unwrap(), format!("{url}{path}"));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                let ct = if method == "PATCH" {
                    "application/merge-patch+json"
                } else {
                    "application/json"
                };
                req = req
                    .header("content-type", ct)
                    .body(serde_json::to_vec(b).unwrap());
            }
            if let Ok(resp) = req.send().await {
                let code = resp.status().as_u16();
                if code == 503 || code == 504 {
                    continue;
                }
                let text = resp.text().await.unwrap_or_default();
                let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                return (code, v);
            }
        }
        (0, Value::Null)
    }

    /// The API of a test cluster's masters (plain HTTP, no token).
    pub fn of(c: &keelson_chaos::Cluster) -> Self {
        Api::new(c.ids().iter().map(|id| c.url(*id)).collect(), None, None)
    }

    pub async fn items(&self, path: &str) -> Vec<Value> {
        let (_, v) = self.call("GET", path, None).await;
        v["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Whether a pod is Running with its Ready condition True.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

//! A client for the store's key/value surface (`/kv`), as workloads and tests use it.

use std::time::Duration;

use serde_json::Value;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The master answered with a `Status`: a definite outcome (except 5xx, see
    /// [`KvError::is_definite_failure`]).
    #[error("{code} {reason}: {message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer (connection refused, reset or timed out).
    #[error("transport: {0}")]
    Transport(String),
}

impl KvError {
    /// The HTTP code, if the master answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KvError::Status { code, .. } => Some(*code),
            KvError::Transport(_) => None,
        }
    }

    /// True when the write certainly did not happen: a 4xx answer, a 503 (no leader was
    /// reached, so nothing was proposed) or a 507 (refused for want of space: by the replicated
    /// quota in apply, or by a master whose disk is full before anything). A timeout or 504 is
    /// indeterminate.
    pub fn is_definite_failure(&self) -> bool {
        match self {
            KvError::Status { code, .. } => *code < 500 || *code == 503 || *code == 507,
            // Refused before anything was sent (not "connection closed…", which may follow a
            // request the master read).
            KvError::Transport(msg) => msg.starts_with("connect: "),
        }
    }
}

/// A client bound to one master's API.
#[derive(Clone)]
pub struct Kv {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Kv {
    /// A client for the master at `base` (`http://HOST:PORT`, or `https://` with a certificate
    /// of a well-known CA), with a per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Self {
        Kv {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("http client"),
            base: base.to_string(),
            token: None,
        }
    }

    /// A client for the master at `base` over `http`, a client of the caller's (one that
    /// trusts a cluster's CA: [`Cluster::client_builder`](crate::Cluster::client_builder)).
    pub fn with_http(base: &str, http: reqwest::Client) -> Self {
        Kv {
            http,
            base: base.to_string(),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, KvError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        answer(req.send().await).await
    }

    /// `/kv/{key}`, with a resource-version precondition when given.
    fn key_url(&self, key: &str, rv: Option<u64>) -> String {
        match rv {
            Some(rv) => format!("{}/kv/{key}?resourceVersion={rv}", self.base),
            None => format!("{}/kv/{key}", self.base),
        }
    }

    fn rv_of(v: &Value) -> u64 {
        v["resourceVersion"].as_u64().unwrap_or(0)
    }

    /// Creates `key`; returns its resource version.
    pub async fn create(&self, key: &str, value: &str) -> Result<u64, KvError> {
        let v = self
            .send(
                self.http
                    .post(format!("{}/kv/{key}", self.base))
                    .body(value.to_string()),
            )
            .await?;
        Ok(Self::rv_of(&v))
    }

    /// Updates `key`, only if it is at `rv` when given (compare-and-set).
    pub async fn update(&self, key: &str, value: &str, rv: Option<u64>) -> Result<u64, KvError> {
        let url = self.key_url(key, rv);
        let v = self
            .send(self.http.put(url).body(value.to_string()))
            .await?;
        Ok(Self::rv_of(&v))
    }

    /// Stores `value` under `key` whether or not it exists.
    pub async fn put(&self, key: &str, value: &str) -> Result<u64, KvError> {
        let v = self
            .send(
                self.http
                    .put(format!("{}/kv/{key}?upsert=true", self.base))
                    .body(value.to_string()),
            )
            .await?;
        Ok(Self::rv_of(&v))
    }

    /// Deletes `key`, only if it is at `rv` when given.
    pub async fn delete(&self, key: &str, rv: Option<u64>) -> Result<u64, KvError> {
        let url = self.key_url(key, rv);
        let v = self.send(self.http.delete(url)).await?;
        Ok(Self::rv_of(&v))
    }

    /// Reads `key`: linearizable, or this replica's state with `local`. `None` if absent.
    pub async fn get(&self, key: &str, local: bool) -> Result<Option<(String, u64)>, KvError> {
        let url = format!(
            "{}/kv/{key}{}",
            self.base,
            if local { "?resourceVersion=0" } else { "" }
        );
        match self.send(self.http.get(url)).await {
            Ok(v) => Ok(Some((
                v["value"].as_str().unwrap_or("").to_string(),
                Self::rv_of(&v),
            ))),
            Err(KvError::Status { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists keys under `prefix`: `(key, value, rv)` in key order, and the list's version.
    pub async fn list(
        &self,
        prefix: &str,
        local: bool,
    ) -> Result<(Vec<(String, String, u64)>, u64), KvError> {
        let url = format!(
            "{}/kv?prefix={prefix}{}",
            self.base,
            if local { "&resourceVersion=0" } else { "" }
        );
        let v = self.send(self.http.get(url)).await?;
        let items = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["key"].as_str().unwrap_or("").to_string(),
                            i["value"].as_str().unwrap_or("").to_string(),
                            Self::rv_of(i),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((items, Self::rv_of(&v)))
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// The JSON body of a successful answer; a transport failure or a Kubernetes `Status` (any code
/// from 300) as a [`KvError`]. Every client of the campaign maps answers through this.
pub(crate) async fn answer(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<Value, KvError> {
    let resp = sent.map_err(|e| {
        // With the causes: "connection closed before message completed" and a reset read alike
        // as "error sending request" on their own.
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        KvError::Transport(if e.is_connect() {
            format!("connect: {text}")
        } else {
            text
        })
    })?;
    let code = resp.status().as_u16();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| KvError::Transport(e.to_string()))?;
    if code >= 300 {
        return Err(KvError::Status {
            code,
            reason: v["reason"].as_str().unwrap_or("").to_string(),
            message: v["message"].as_str().unwrap_or("").to_string(),
        });
    }
    Ok(v)
}

/// The HTTP status a server answers to a POST that declares a `len`-byte body, read before any
/// of the body is sent: how a size limit is tested without racing the server, which closes the
/// connection after refusing while a client would still be writing.
pub async fn status_of_declared_post(base: &str, path: &str, len: usize) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

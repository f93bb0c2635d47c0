//! The agent's connection to the masters: requests to any master (failing over), watches (the
//! transport of its informers), and the heartbeat stream to the leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use keelson_informer::remote::{self, Source};
use serde_json::Value;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Status(u16, String),
    #[error("no master answered: {0}")]
    Unreachable(String),
}

/// How long a watch may send nothing before it is taken for dead: masters send a bookmark
/// every second to a watch that asks for them, and a half-open connection would otherwise
/// last until TCP keep-alive gives up.
const WATCH_SILENCE: Duration = Duration::from_secs(10);

/// A client certificate and its key (PEM files), as reqwest presents it.
pub fn identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<reqwest::Identity> {
    use anyhow::Context as _;
    let mut pem =
        std::fs::read(cert).with_context(|| format!("read --cert-file {}", cert.display()))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(key).with_context(|| format!("read --key-file {}", key.display()))?);
    reqwest::Identity::from_pem(&pem).with_context(|| {
        format!(
            "--cert-file {} and --key-file {}",
            cert.display(),
            key.display()
        )
    })
}

/// The masters, with the one that answered last tried first.
#[derive(Clone)]
pub struct Masters {
    urls: Arc<Vec<String>>,
    preferred: Arc<AtomicUsize>,
    token: Option<String>,
    http: reqwest::Client,
    /// Without a timeout: for watches and the heartbeat stream.
    streaming: reqwest::Client,
}

impl Masters {
    /// `ca_file`: PEM CA certificate(s) trusted for `https://` masters, besides the usual roots;
    /// `identity`: the node's client certificate, presented to every master.
    pub fn new(
        urls: Vec<String>,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
        identity: Option<reqwest::Identity>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if urls.is_empty() {
            anyhow::bail!("--masters needs at least one URL");
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(1));
        let mut streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .tcp_keepalive(Duration::from_secs(10));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("read --ca-file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("--ca-file {} holds no PEM certificate", path.display());
            }
            for cert in certs {
                http = http.add_root_certificate(cert.clone());
                streaming = streaming.add_root_certificate(cert);
            }
        }
        if let Some(identity) = identity {
            http = http.identity(identity.clone());
            streaming = streaming.identity(identity);
        }
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        Ok(Masters {
            urls: Arc::new(urls),
            preferred: Arc::new(AtomicUsize::new(0)),
            token,
            http: http.build()?,
            streaming: streaming.build()?,
        })
    }

    fn order(&self) -> Vec<usize> {
        let first = self.preferred.load(Ordering::Relaxed) % self.urls.len();
        (0..self.urls.len())
            .map(|i| (first + i) % self.urls.len())
            .collect()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a JSON request to the first master that answers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        self.request(method, path, body, "application/json").await
    }

    /// A JSON merge patch (RFC 7386) to the first master that answers.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, Error> {
        self.request(
            reqwest::Method::PATCH,
            path,
            Some(patch),
            "application/merge-patch+json",
        )
        .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, Error> {
        let mut last = String::new();
        for i in self.order() {
            let mut req = self.auth(
                self.http
                    .request(method.clone(), format!("{}{}", self.urls[i], path)),
            );
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(serde_json::to_vec(b).unwrap_or_default());
            }
            match req.send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    if code == 503 || code == 504 {
                        last = format!("{code} from {}", self.urls[i]);
                        continue;
                    }
                    self.preferred.store(i, Ordering::Relaxed);
                    if code >= 300 {
                        return Err(Error::Status(
                            code,
                            v["message"].as_str().unwrap_or("").to_string(),
                        ));
                    }
                    return Ok(v);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Unreachable(last))
    }

    /// Opens a watch on the first master that answers: its events, one JSON object each (an
    /// `ERROR` event included), until the stream ends or breaks.
    pub async fn watch(&self, path: &str) -> Result<BoxStream<'static, Value>, Error> {
        let mut last = String::new();
        for i in self.order() {
            let req = self.auth(self.streaming.get(format!("{}{}", self.urls[i], path)));
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(remote::events(resp.bytes_stream(), Some(WATCH_SILENCE)));
                }
                Ok(resp) => last = format!("{} from {}", resp.status(), self.urls[i]),
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::Unreachable(last))
    }

    /// The leader's API URL, as any master reports it.
    async fn leader_url(&self) -> Option<String> {
        let status = self
            .send(reqwest::Method::GET, "/cluster", None)
            .await
            .ok()?;
        let leader = status["leader"].as_u64()?;
        let api = status["members"][leader.to_string()]["api"]
            .as_str()?
            .to_string();
        (!api.is_empty()).then_some(api)
    }
}

/// The informers' transport: lists and watches on any master.
impl Source for Masters {
    fn list(&self, path: String) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            self.send(reqwest::Method::GET, &path, None)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn watch(&self, path: String) -> BoxFuture<'_, Result<BoxStream<'static, Value>, String>> {
        Box::pin(async move { Masters::watch(self, &path).await.map_err(|e| e.to_string()) })
    }
}

/// Streams heartbeats to the leader for ever: one long-lived request, one line per beat.
/// Follows leader changes and reconnects with backoff.
pub async fn heartbeat_forever(masters: Masters, node: String, every: Duration) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let target = masters.leader_url().await;
        if let Some(url) = target {
            let beats =
                futures::stream::unfold(tokio::time::interval(every), |mut tick| async move {
                    tick.tick().await;
                    super::metrics::get().beat_sent();
                    Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}\n")),
                        tick,
                    ))
                });
            super::metrics::get().stream_opened();
            let req = masters.auth(
                masters
                    .streaming
                    .post(format!("{url}/agent/heartbeats?node={node}")),
            );
            let started = tokio::time::Instant::now();
            match req.body(reqwest::Body::wrap_stream(beats)).send().await {
                Ok(resp) => tracing::info!("heartbeat stream to {url} ended: {}", resp.status()),
                Err(e) => tracing::info!("heartbeat stream to {url} broke: {e}"),
            }
            super::metrics::get().stream_closed();
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(100);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

//! Where `keelson ctl` finds the cluster (kubeconfig, `keelson up`'s data directory) and how it
//! talks to it: HTTP(S) with a bearer token, trusting the cluster's CA, failing over between
//! masters, errors as kubectl prints them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use crate::process::ClusterFile;

/// A failure the server reported as a Kubernetes `Status` (or a bare HTTP error).
///
/// Displays as kubectl does: `Error from server (NotFound): pods "x" not found`.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "Error from server: {}", self.message)
        } else {
            write!(f, "Error from server ({}): {}", self.reason, self.message)
        }
    }
}

impl std::error::Error for ServerError {}

impl ServerError {
    /// The error an answer with a failure status carries: its `Status` if the body is one,
    /// else the body's text.
    fn from_body(code: reqwest::StatusCode, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(body).trim().to_string();
        let message = match v["message"].as_str() {
            Some(m) => m.to_string(),
            None if text.is_empty() => format!("the server answered {code}"),
            None => text,
        };
        let reason = v["reason"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reason_of(code).to_string());
        ServerError {
            code: code.as_u16(),
            reason,
            message,
        }
    }
}

/// Kubernetes' `StatusReason` for an HTTP status without a `Status` body.
fn reason_of(code: reqwest::StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// The parts of a kubeconfig `keelson ctl` uses: the current context's server, its CA, token
/// and namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kubeconfig {
    pub server: String,
    /// The CA certificate(s), PEM: `certificate-authority-data`, or the file
    /// `certificate-authority` names.
    pub ca: Option<Vec<u8>>,
    /// `insecure-skip-tls-verify`.
    pub insecure: bool,
    pub token: Option<String>,
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// Parses kubeconfig text (YAML or JSON). The token is `user.token`, or the content of
    /// `user.tokenFile`; the CA is `cluster.certificate-authority-data` (base64 PEM), or the
    /// file `cluster.certificate-authority` (files relative to `base`).
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let v: Value = serde_norway::from_str(text).context("not a valid kubeconfig")?;
        let named = |list: &str, name: &str| -> Option<Value> {
            v[list]
                .as_array()?
                .iter()
                .find(|e| e["name"].as_str() == Some(name))
                .cloned()
        };
        let context = match v["current-context"].as_str().filter(|c| !c.is_empty()) {
            Some(name) => named("contexts", name)
                .ok_or_else(|| anyhow!("context {name:?} is not in the kubeconfig"))?,
            None => match v["contexts"].as_array().map(Vec::as_slice) {
                Some([only]) => only.clone(),
                _ => bail!("the kubeconfig has no current-context"),
            },
        };
        let ctx = &context["context"];
        let cluster_name = ctx["cluster"].as_str().unwrap_or("");
        let cluster = named("clusters", cluster_name)
            .ok_or_else(|| anyhow!("cluster {cluster_name:?} is not in the kubeconfig"))?;
        let server = cluster["cluster"]["server"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("cluster {cluster_name:?} has no server"))?
            .trim_end_matches('/')
            .to_string();
        let ca = ca_of(&cluster["cluster"], base)
            .with_context(|| format!("cluster {cluster_name:?}"))?;
        let insecure = cluster["cluster"]["insecure-skip-tls-verify"]
            .as_bool()
            .unwrap_or(false);
        let user = ctx["user"]
            .as_str()
            .and_then(|u| named("users", u))
            .unwrap_or(Value::Null);
        let token = match (
            user["user"]["token"].as_str(),
            user["user"]["tokenFile"].as_str(),
        ) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(f)) => {
                let path = base.join(f);
                let t = std::fs::read_to_string(&path)
                    .with_context(|| format!("read tokenFile {}", path.display()))?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        Ok(Kubeconfig {
            server,
            ca,
            insecure,
            token,
            namespace: ctx["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        })
    }

    /// Reads and parses the kubeconfig at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read kubeconfig {}", path.display()))?;
        Kubeconfig::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("kubeconfig {}", path.display()))
    }
}

/// The CA (PEM) of a kubeconfig cluster: `certificate-authority-data` (base64), or the file
/// `certificate-authority` (relative to `base`).
fn ca_of(cluster: &Value, base: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    if let Some(data) = cluster["certificate-authority-data"].as_str() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("certificate-authority-data is not base64")?;
        return Ok(Some(pem));
    }
    match cluster["certificate-authority"].as_str() {
        Some(f) => {
            let path = base.join(f);
            let pem = std::fs::read(&path)
                .with_context(|| format!("read certificate-authority {}", path.display()))?;
            Ok(Some(pem))
        }
        None => Ok(None),
    }
}

/// The first token of a `tokens.csv` file (`token,user,uid` lines).
pub fn first_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| l.split(',').next())
        .map(str::trim)
        .find(|t| !t.is_empty())
        .map(str::to_string)
}

/// How the command line named the cluster.
pub struct Target<'a> {
    pub server: Option<&'a str>,
    pub token: Option<&'a str>,
    /// A PEM CA file to trust (`--certificate-authority`); overrides the kubeconfig's.
    pub ca_file: Option<&'a Path>,
    pub kubeconfig: Option<&'a Path>,
    pub data_dir: &'a Path,
}

/// Where to send requests: servers in order of preference, the CA to trust, the token and the
/// namespace of the kubeconfig's context.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub servers: Vec<String>,
    /// PEM CA certificate(s) trusted besides the usual roots.
    pub ca: Option<Vec<u8>>,
    pub insecure: bool,
    pub token: Option<String>,
    pub namespace: Option<String>,
}

/// Resolves the cluster: `--server`/`--token` override; then `--kubeconfig` or `KUBECONFIG`
/// (the first existing file of a `:`-separated list); then `DATA_DIR/kubeconfig`, with the
/// other masters of `DATA_DIR/cluster.json` as fallbacks; then `cluster.json` (with its CA) and
/// `tokens.csv` alone.
pub fn resolve(t: &Target, kubeconfig_env: Option<&str>) -> anyhow::Result<Resolved> {
    let explicit: Option<PathBuf> = match (t.kubeconfig, kubeconfig_env) {
        (Some(p), _) => Some(p.to_path_buf()),
        (None, Some(list)) => std::env::split_paths(list).find(|p| p.is_file()),
        (None, None) => None,
    };
    let mut r = Resolved::default();
    if let Some(path) = explicit {
        let k = Kubeconfig::load(&path)?;
        r.servers.push(k.server);
        r.ca = k.ca;
        r.insecure = k.insecure;
        r.token = k.token;
        r.namespace = k.namespace;
    } else {
        let path = t.data_dir.join("kubeconfig");
        if path.is_file() {
            let k = Kubeconfig::load(&path)?;
            r.servers.push(k.server);
            r.ca = k.ca;
            r.insecure = k.insecure;
            r.token = k.token;
            r.namespace = k.namespace;
        }
        if let Some(f) = ClusterFile::load(t.data_dir)? {
            if let (None, Some(ca)) = (&r.ca, &f.ca_file) {
                r.ca = Some(
                    std::fs::read(ca).with_context(|| format!("read the CA {}", ca.display()))?,
                );
            }
            for m in f.masters {
                if !r.servers.contains(&m.api) {
                    r.servers.push(m.api);
                }
            }
        }
        if r.token.is_none() {
            r.token = first_token(&t.data_dir.join("tokens.csv"));
        }
    }
    if let Some(s) = t.server {
        r.servers = vec![s.trim_end_matches('/').to_string()];
    }
    if let Some(tok) = t.token {
        r.token = Some(tok.to_string());
    }
    if let Some(ca) = t.ca_file {
        r.ca = Some(std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?);
    }
    if r.servers.is_empty() {
        bail!(
            "no cluster to talk to: pass --kubeconfig or --server, set KUBECONFIG, or run `keelson up` (no {} found)",
            t.data_dir.join("kubeconfig").display()
        );
    }
    Ok(r)
}

/// An HTTP client for the masters.
pub struct Client {
    http: reqwest::Client,
    /// Without an overall timeout: for watches, logs that follow.
    streaming: reqwest::Client,
    servers: Vec<String>,
    token: Option<String>,
}

/// A request body and its content type.
pub type Body<'a> = Option<(&'a str, Vec<u8>)>;

impl Client {
    /// A client of `servers` trusting the CA certificate(s) of `r` (besides the usual roots),
    /// or any certificate if `r.insecure`.
    pub fn new(r: Resolved) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(90));
        let mut streaming = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &r.ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .context("the certificate authority is not PEM")?;
            if certs.is_empty() {
                bail!("the certificate authority holds no PEM certificate");
            }
            for cert in certs {
                http = http.add_root_certificate(cert.clone());
                streaming = streaming.add_root_certificate(cert);
            }
        }
        if r.insecure {
            http = http.danger_accept_invalid_certs(true);
            streaming = streaming.danger_accept_invalid_certs(true);
        }
        Ok(Client {
            http: http.build()?,
            streaming: streaming.build()?,
            servers: r.servers,
            token: r.token,
        })
    }

    /// Sends to the first master that can be reached. A request is sent to the next master
    /// only if it could not have reached the previous one (connection refused) — or if it is
    /// a read. Answers of any status are returned.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        streaming: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let http = if streaming {
            &self.streaming
        } else {
            &self.http
        };
        let mut last_err = None;
        for server in &self.servers {
            let mut req = http.request(method.clone(), format!("{server}{path}"));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some((ct, b)) = &body {
                req = req.header("content-type", *ct).body(b.clone());
            }
            match req.send().await {
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() || method == Method::GET => {
                    last_err = Some(format!("{server}: {e}"))
                }
                Err(e) => return Err(anyhow!("{server}: {e}")),
            }
        }
        bail!(
            "Unable to connect to the server: {}",
            last_err.unwrap_or_default()
        )
    }

    /// Sends and checks the status: a failure becomes a [`ServerError`].
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        streaming: bool,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self.send(method, path, body, streaming).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ServerError::from_body(code, &bytes).into())
    }

    /// A request whose answer is JSON.
    pub async fn json(&self, method: Method, path: &str, body: Body<'_>) -> anyhow::Result<Value> {
        let resp = self.ok(method, path, body, false).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).with_context(|| format!("the answer to {path} is not JSON"))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None).await
    }

    /// GETs `path` from one given master (`server`, its API URL), with this client's
    /// credentials, waiting at most `timeout`: for questions each master answers of itself.
    pub async fn get_from(
        &self,
        server: &str,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let req = self
            .http
            .get(format!("{}{path}", server.trim_end_matches('/')));
        let resp = self.send_to(req.timeout(timeout), timeout).await?;
        let code = resp.status();
        let bytes = resp.bytes().await?;
        if !code.is_success() {
            return Err(ServerError::from_body(code, &bytes).into());
        }
        serde_json::from_slice(&bytes).with_context(|| format!("the answer to {path} is not JSON"))
    }

    /// GETs `path` from one given master as a stream of any length (a backup); a failure is a
    /// [`ServerError`].
    pub async fn stream_from(&self, server: &str, path: &str) -> anyhow::Result<reqwest::Response> {
        let req = self
            .streaming
            .get(format!("{}{path}", server.trim_end_matches('/')));
        let resp = self.send_to(req, Duration::from_secs(5)).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ServerError::from_body(code, &bytes).into())
    }

    /// Sends `req` with this client's credentials; a failure to send says why.
    async fn send_to(
        &self,
        mut req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Response> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.map_err(|e| {
            // reqwest's own message names only "error sending request": say why, with the
            // innermost cause ("Connection refused (os error 111)").
            let mut cause = None;
            let mut next = std::error::Error::source(&e);
            while let Some(err) = next {
                cause = Some(err.to_string());
                next = err.source();
            }
            match cause {
                Some(c) if e.is_connect() => anyhow!("cannot connect: {c}"),
                _ if e.is_timeout() => anyhow!("no answer in {timeout:?}"),
                _ => anyhow!("{e}"),
            }
        })
    }

    /// A request with a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.json(
            method,
            path,
            Some(("application/json", serde_json::to_vec(body)?)),
        )
        .await
    }

    /// Opens a watch; `on_event` gets every event (`{"type", "object"}`) and returns false to
    /// stop. Returns when the server ends the stream.
    pub async fn watch(
        &self,
        path: &str,
        mut on_event: impl FnMut(Value) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let resp = self.ok(Method::GET, path, None, true).await?;
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev: Value =
                    serde_json::from_slice(&line).context("a watch event that is not JSON")?;
                if ev["type"] == "ERROR" {
                    let o = &ev["object"];
                    return Err(ServerError {
                        code: o["code"].as_u64().unwrap_or(500) as u16,
                        reason: o["reason"].as_str().unwrap_or("").to_string(),
                        message: o["message"].as_str().unwrap_or("watch failed").to_string(),
                    }
                    .into());
                }
                if !on_event(ev)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

pub use crate::process::url::enc;

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: https://127.0.0.1:6441/\n    certificate-authority-data: LS0tLS1CRUdJTg==\nusers:\n- name: admin\n  user:\n    token: s3cret\ncontexts:\n- name: other\n  context:\n    cluster: nowhere\n- name: keelson\n  context:\n    cluster: keelson\n    user: admin\n    namespace: team\ncurrent-context: keelson\n";

    #[test]
    fn kubeconfig_current_context() {
        let k = Kubeconfig::parse(KUBECONFIG, Path::new(".")).unwrap();
        assert_eq!(
            k,
            Kubeconfig {
                server: "https://127.0.0.1:6441".into(),
                ca: Some(b"-----BEGIN".to_vec()),
                insecure: false,
                token: Some("s3cret".into()),
                namespace: Some("team".into()),
            }
        );
        let other = KUBECONFIG.replace("current-context: keelson", "current-context: other");
        assert!(Kubeconfig::parse(&other, Path::new(".")).is_err());
        assert!(Kubeconfig::parse("{{{", Path::new(".")).is_err());
        assert!(Kubeconfig::parse("", Path::new(".")).is_err());
    }

    #[test]
    fn server_errors_print_like_kubectl() {
        let body =
            br#"{"kind":"Status","reason":"NotFound","message":"pods \"x\" not found","code":404}"#;
        let e = ServerError::from_body(reqwest::StatusCode::NOT_FOUND, body);
        assert_eq!(
            e.to_string(),
            r#"Error from server (NotFound): pods "x" not found"#
        );
        let e = ServerError::from_body(reqwest::StatusCode::BAD_GATEWAY, b"");
        assert!(e
            .to_string()
            .starts_with("Error from server: the server answered 502"));
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("app in (a,b)"), "app%20in%20%28a%2Cb%29");
        assert_eq!(enc("web-1.x"), "web-1.x");
    }
}

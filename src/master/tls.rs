//! TLS for the API port: the rustls server configuration of `--tls-cert-file` /
//! `--tls-private-key-file`, a listener that completes handshakes before handing connections to
//! `axum::serve` (so its graceful shutdown works as for plain TCP), and the certificates
//! `keelson up` generates: the CA, the API serving certificate and each master's peer
//! certificate (whose use is `peer_tls.rs`).
//!
//! rustls runs with the ring provider, chosen explicitly, as reqwest's `rustls-tls` does.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server configuration for a PEM certificate chain and its PEM private key; with
/// `client_ca`, clients may present a certificate, which must be signed by that CA.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| anyhow::anyhow!("--tls-cert-file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert-file {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-private-key-file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("--client-ca-file {}: {e}", path.display()))?
            {
                roots
                    .add(ca)
                    .with_context(|| format!("--client-ca-file {}", path.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .with_context(|| format!("--client-ca-file {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("--tls-cert-file and --tls-private-key-file do not make a usable pair")?;
    // The API server speaks HTTP/1.1 (axum without its http2 feature), as over plain TCP.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections are handed out once their TLS handshake is done.
///
/// A background task accepts TCP connections and runs each handshake in a task of its own (a
/// slow or silent client holds up nobody); finished ones go through a channel to `accept`.
/// When `axum::serve` drops the listener (graceful shutdown), the task ends and the port closes.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            use std::io::ErrorKind::*;
                            if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
                                // As axum does for plain TCP (EMFILE and the like): wait a little.
                                tracing::error!("accept error: {e}");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task is gone (it ends only when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The files of a cluster's certificate authority and the masters' serving certificate.
#[derive(Debug, Clone)]
pub struct ClusterCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterCerts {
    /// `DIR/ca.crt`, `ca.key`, `apiserver.crt`, `apiserver.key` (kubeadm's names).
    pub fn in_dir(dir: &Path) -> Self {
        ClusterCerts {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("apiserver.crt"),
            key: dir.join("apiserver.key"),
        }
    }

    /// Creates what is missing: the CA (kept once made), and a serving certificate signed by it
    /// for `localhost`, 127.0.0.1 and `ips`. Existing files are reused as they are.
    pub fn ensure(&self, ips: &[IpAddr]) -> anyhow::Result<()> {
        let have = |p: &Path| p.is_file();
        let ca_key = if have(&self.ca_cert) && have(&self.ca_key) {
            let pem = std::fs::read_to_string(&self.ca_key)
                .with_context(|| format!("read {}", self.ca_key.display()))?;
            rcgen::KeyPair::from_pem(&pem)
                .with_context(|| format!("{} is not a private key", self.ca_key.display()))?
        } else {
            let key = rcgen::KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            crate::files::write_private(&self.ca_key, &key.serialize_pem())?;
            write_file(&self.ca_cert, &cert.pem())?;
            // A new CA: any older serving certificate is not signed by it.
            let _ = std::fs::remove_file(&self.cert);
            key
        };
        if have(&self.cert) && have(&self.key) {
            return Ok(());
        }
        // The CA's parameters are fixed, so its name and key identifier are the same as when
        // ca.crt was made: what it signs now chains to ca.crt.
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for ip in ips {
            if !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
        }
        let mut params = rcgen::CertificateParams::new(names)?;
        set_validity(&mut params);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keelson-apiserver");
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        crate::files::write_private(&self.key, &key.serialize_pem())?;
        write_file(&self.cert, &cert.pem())?;
        Ok(())
    }
}

impl ClusterCerts {
    /// The CA's private key, to sign with.
    fn ca_key(&self) -> anyhow::Result<rcgen::KeyPair> {
        let pem = std::fs::read_to_string(&self.ca_key)
            .with_context(|| format!("read {}", self.ca_key.display()))?;
        rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a private key", self.ca_key.display()))
    }

    /// `DIR/master-<id>-peer.crt` and `.key`: master `id`'s certificate on the Raft port.
    pub fn peer_paths(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("master-{id}-peer.crt")),
            dir.join(format!("master-{id}-peer.key")),
        )
    }

    /// Creates master `id`'s peer certificate, signed by the CA (which must exist), unless it
    /// exists: CN and DNS name `master-<id>` and its Raft IP. Remove the two files to re-issue.
    pub fn ensure_peer(&self, dir: &Path, id: u64, raft_ip: IpAddr) -> anyhow::Result<()> {
        let (cert, key) = Self::peer_paths(dir, id);
        if cert.is_file() && key.is_file() {
            return Ok(());
        }
        let ca_key = self.ca_key()?;
        let (cert_pem, key_pem) = issue_peer_cert(ca_params(), ca_key, id, raft_ip)?;
        crate::files::write_private(&key, &key_pem)?;
        write_file(&cert, &cert_pem)?;
        Ok(())
    }
}

impl ClusterCerts {
    /// `DIR/agent-NAME.crt` and `.key`: node `NAME`'s client certificate for the API.
    pub fn agent_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("agent-{name}.crt")),
            dir.join(format!("agent-{name}.key")),
        )
    }

    /// `DIR/agent-NAME-serving.crt` and `.key`: node `NAME`'s serving certificate, for its
    /// HTTPS port (metrics, health, container logs).
    pub fn agent_serving_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("agent-{name}-serving.crt")),
            dir.join(format!("agent-{name}-serving.key")),
        )
    }

    /// Creates node `name`'s two certificates, signed by the CA (which must exist), unless they
    /// exist: its client certificate, CN `system:node:NAME`, O `system:nodes` (the Node
    /// authorizer's identity), usable only to call; and its serving certificate for `address`,
    /// `localhost` and 127.0.0.1, usable only to serve. Remove the files to re-issue.
    pub fn ensure_agent(&self, dir: &Path, name: &str, address: &str) -> anyhow::Result<()> {
        let (cert, key) = Self::agent_paths(dir, name);
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, keelson_model::rbac::NODES);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_unless_present(&cert, &key, params)?;

        let (cert, key) = Self::agent_serving_paths(dir, name);
        let mut names = vec![
            address.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ];
        names.dedup();
        let mut params = rcgen::CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_unless_present(&cert, &key, params)
    }

    /// Signs `params` (with the validity, key usage and key identifier every certificate here
    /// has) with the CA into `cert` and `key` (0600), unless both exist.
    fn issue_unless_present(
        &self,
        cert: &Path,
        key: &Path,
        mut params: rcgen::CertificateParams,
    ) -> anyhow::Result<()> {
        if cert.is_file() && key.is_file() {
            return Ok(());
        }
        let issuer = rcgen::Issuer::new(ca_params(), self.ca_key()?);
        set_validity(&mut params);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let pair = rcgen::KeyPair::generate()?;
        let issued = params.signed_by(&pair, &issuer)?;
        crate::files::write_private(key, &pair.serialize_pem())?;
        write_file(cert, &issued.pem())?;
        Ok(())
    }
}

/// Issues master `id`'s peer certificate, signed by the CA whose parameters are `ca_params` and
/// key `ca_key`: CN and DNS name `master-<id>`, the Raft IP, usable to serve and to call.
/// Returns (certificate, key) as PEM.
fn issue_peer_cert(
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    id: u64,
    raft_ip: IpAddr,
) -> anyhow::Result<(String, String)> {
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let name = format!("master-{id}");
    let mut params = rcgen::CertificateParams::new(vec![name.clone(), raft_ip.to_string()])?;
    set_validity(&mut params);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA's parameters: the same every time (see [`ClusterCerts::ensure`]).
pub(crate) fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keelson-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

/// Valid from the start of last year (clocks differ) for ten years.
pub(crate) fn set_validity(params: &mut rcgen::CertificateParams) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one route over TLS with `certs`' serving certificate; GET it trusting ca.crt.
    async fn get_over_tls(certs: &ClusterCerts) -> anyhow::Result<String> {
        let config = server_config(&certs.cert, &certs.key, Some(&certs.ca_cert))?;
        let tcp = TcpListener::bind("127.0.0.1:0").await?;
        let listener = TlsListener::new(tcp, config)?;
        let addr = axum::serve::Listener::local_addr(&listener)?;
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca_cert)?)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()?;
        let got = http.get(format!("https://{addr}/")).send().await;
        server.abort();
        Ok(got?.text().await?)
    }

    #[tokio::test]
    async fn generated_certificates_serve_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let certs = ClusterCerts::in_dir(dir.path());
        certs.ensure(&["127.0.0.2".parse().unwrap()]).unwrap();
        assert_eq!(get_over_tls(&certs).await.unwrap(), "hello");
        let ca = std::fs::read(&certs.ca_cert).unwrap();
        let cert = std::fs::read(&certs.cert).unwrap();
        certs.ensure(&[]).unwrap();
        assert_eq!(std::fs::read(&certs.ca_cert).unwrap(), ca);
        assert_eq!(std::fs::read(&certs.cert).unwrap(), cert);
        // A lost serving certificate is signed again by the same CA, and still trusted.
        std::fs::remove_file(&certs.cert).unwrap();
        certs.ensure(&[]).unwrap();
        assert_eq!(std::fs::read(&certs.ca_cert).unwrap(), ca);
        assert_ne!(std::fs::read(&certs.cert).unwrap(), cert);
        assert_eq!(get_over_tls(&certs).await.unwrap(), "hello");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&certs.ca_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "ca.key is private");
        // A key where the certificate belongs is refused at start-up.
        assert!(server_config(&certs.key, &certs.key, None).is_err());
    }
}

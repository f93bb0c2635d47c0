//! A cluster of real `keelson master` processes for tests and chaos campaigns.
//!
//! Master N listens on its own loopback address 127.SLOT.0.N (Linux routes all of 127/8 to `lo`),
//! on free ports, so that packet filters can cut one master from another. Every master logs to
//! `ROOT/master-N.log`. Dropping the [`Cluster`] kills every process it started.
//!
//! [`Cluster::start_with_token`] starts a cluster as `keelson up` does: a bearer token and the
//! API over HTTPS, with a CA of the cluster's own (`ROOT/ca.crt`) and a serving certificate per
//! master (`ROOT/master-N.crt`, for its address, `localhost` and 127.0.0.1).
//!
//! Every cluster speaks mutual TLS on the Raft port, as `keelson up` does: a peer CA of its own
//! (`ROOT/peer-ca.crt`) and a peer certificate per master (`ROOT/master-N-peer.crt`, `.key`,
//! named `master-N` and its Raft IP), issued when the master first starts. A cluster started with
//! `--insecure-plaintext-peers` among its extra arguments gets none.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Addresses and directory of one master.
#[derive(Debug, Clone)]
pub struct MasterSpec {
    pub id: u64,
    pub raft: SocketAddr,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    /// Started with `--join` (added to a running cluster) rather than as an initial member.
    pub join: bool,
    /// Serves its API over HTTPS.
    pub tls: bool,
}

impl MasterSpec {
    /// `http://HOST:PORT` (or `https://`) of its API.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }
}

/// The certificate authority of a cluster started with TLS.
struct TestCa {
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn params() -> rcgen::CertificateParams {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "keelson-test-ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p
    }

    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = Self::params().self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A serving certificate for `ip`, `localhost` and 127.0.0.1: (certificate, key), PEM.
    fn issue(&self, ip: Ipv4Addr) -> (String, String) {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem).expect("CA key");
        let issuer = rcgen::Issuer::new(Self::params(), ca_key);
        let mut p = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            ip.to_string(),
        ])
        .expect("names");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "keelson-apiserver");
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate for the API: CN `user`, one O per group: (certificate, key), PEM.
    fn issue_client(&self, user: &str, groups: &[&str]) -> (String, String) {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem).expect("CA key");
        let issuer = rcgen::Issuer::new(Self::params(), ca_key);
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, user);
        for g in groups {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *g);
        }
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A peer certificate for master `id` at `ip` (CN and DNS name `master-<id>`, the IP),
    /// usable to serve and to call: (certificate, key), PEM.
    pub fn issue_peer(&self, id: u64, ip: Ipv4Addr) -> (String, String) {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem).expect("CA key");
        let issuer = rcgen::Issuer::new(Self::params(), ca_key);
        let name = format!("master-{id}");
        let mut p =
            rcgen::CertificateParams::new(vec![name.clone(), ip.to_string()]).expect("names");
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A certificate authority of its own and peer certificates it signs: for a cluster's Raft port,
/// or for a hostile test's client that holds a certificate of ANOTHER CA.
pub struct PeerCa(TestCa);

impl PeerCa {
    /// A new CA.
    pub fn new() -> PeerCa {
        PeerCa(TestCa::new())
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.0.cert_pem
    }

    /// A peer certificate for `master-<id>` at `ip`: (certificate, key), PEM.
    pub fn issue(&self, id: u64, ip: Ipv4Addr) -> (String, String) {
        self.0.issue_peer(id, ip)
    }

    /// A reqwest client presenting a fresh certificate of this CA for `master-<id>` and
    /// trusting `server_ca_pem` only.
    pub fn client(&self, id: u64, server_ca_pem: &str) -> reqwest::Client {
        let (cert, key) = self.issue(id, Ipv4Addr::LOCALHOST);
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server_ca_pem.as_bytes()).expect("CA"),
            )
            .identity(
                reqwest::Identity::from_pem(format!("{cert}\n{key}").as_bytes()).expect("identity"),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .expect("peer client")
    }
}

impl Default for PeerCa {
    fn default() -> Self {
        Self::new()
    }
}

struct Master {
    spec: MasterSpec,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub cluster_id: String,
    slot: u8,
    peers: String,
    masters: BTreeMap<u64, Master>,
    extra_args: Vec<String>,
    /// The CA of a cluster whose masters serve HTTPS.
    tls: Option<TestCa>,
    /// The bearer token the masters require, if any.
    token: Option<String>,
    /// The CA of the masters' peer certificates (mTLS on the Raft port).
    peer_ca: PeerCa,
}

/// The address of master `id` of the cluster in `slot`: 127.SLOT.0.ID.
///
/// Each master has an address of its own, and so does each cluster started by this process:
/// a master's outgoing connections are bound to its address, so no other master (of this
/// cluster or of one running beside it) can take its ports with an ephemeral port while it is
/// down, and a restarted master always gets its ports back.
pub fn master_ip(slot: u8, id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, slot, 0, (id % 250) as u8 + 1)
}

/// A second octet for a new cluster: distinct for every cluster of this process, and likely
/// distinct between processes.
fn next_slot() -> u8 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id();
    (10 + n % 240) as u8
}

/// A free port on `ip`.
pub fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr")
}

impl Cluster {
    /// Starts `n` masters with ids 1..=n in a fresh temporary directory. `extra_args` go to
    /// every `keelson master` (timeouts, snapshot policy).
    pub fn start(bin: &Path, n: u64, extra_args: &[&str]) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keelson-cluster-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        let mut c = Cluster::new_in(bin, &root, n, extra_args);
        c._tmp = Some(tmp);
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts `n` masters as `keelson up` does: they require the bearer `token` (from a token
    /// file of the cluster's own) and serve the API over HTTPS with certificates of the
    /// cluster's CA ([`Cluster::ca_pem`]). Returns once every master serves an authenticated
    /// request.
    pub async fn start_with_token(bin: &Path, n: u64, token: &str) -> Cluster {
        Self::start_with_token_and(bin, n, token, &[]).await
    }

    /// [`Cluster::start_with_token`] with more flags for every master.
    pub async fn start_with_token_and(
        bin: &Path,
        n: u64,
        token: &str,
        extra_args: &[&str],
    ) -> Cluster {
        Self::start_with_users(bin, n, token, &[], extra_args).await
    }

    /// [`Cluster::start_with_token_and`] whose token file also holds `users`, lines of
    /// Kubernetes' static token CSV (`token,user,uid,"group1,group2"`). `token` is the
    /// administrator's (`admin` in `system:masters`).
    pub async fn start_with_users(
        bin: &Path,
        n: u64,
        token: &str,
        users: &[&str],
        extra_args: &[&str],
    ) -> Cluster {
        Self::prepare_with_users(bin, n, token, users, extra_args)
            .serve()
            .await
    }

    /// [`Cluster::start_with_users`] without starting anything: the masters' addresses, data
    /// directories and credentials are decided, so a test can prepare their data directories
    /// (restore a backup) before [`Cluster::serve`].
    pub fn prepare_with_users(
        bin: &Path,
        n: u64,
        token: &str,
        users: &[&str],
        extra_args: &[&str],
    ) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keelson-cluster-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().to_path_buf();
        let tokens = root.join("tokens.csv");
        let mut lines = format!("{token},admin,admin,system:masters\n");
        for user in users {
            lines.push_str(user);
            lines.push('\n');
        }
        std::fs::write(&tokens, lines).expect("write the token file");
        let mut c = Cluster::new_in(
            bin,
            &root,
            n,
            &[
                &["--token-file", tokens.to_str().expect("UTF-8 path")],
                extra_args,
            ]
            .concat(),
        );
        c._tmp = Some(tmp);
        let ca = TestCa::new();
        std::fs::write(root.join("ca.crt"), &ca.cert_pem).expect("write ca.crt");
        c.tls = Some(ca);
        c.token = Some(token.to_string());
        for m in c.masters.values_mut() {
            m.spec.tls = true;
        }
        c
    }

    /// Starts every master of a prepared cluster and returns once each serves an
    /// authenticated request.
    pub async fn serve(mut self) -> Cluster {
        let c = &mut self;
        let token = c.token.clone().expect("a prepared cluster has a token");
        let token = token.as_str();
        for id in c.ids() {
            c.spawn(id);
        }
        let http = c
            .client_builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(60);
        for id in c.ids() {
            loop {
                let ok = http
                    .get(format!("{}/api/v1/namespaces/default/pods", c.url(id)))
                    .bearer_auth(token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "master {id} never served the API\n{}",
                    c.log_tail(id, 20)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self
    }

    /// The masters' `--peers` (`ID=RAFT/API,…`) and the cluster's `--cluster-id`.
    pub fn peers_and_id(&self) -> (&str, &str) {
        (&self.peers, &self.cluster_id)
    }

    /// Writes a kubeconfig at `path` for master `via` with the bearer `token` (and the
    /// cluster's CA, as `certificate-authority-data`, if it serves HTTPS).
    pub fn write_kubeconfig(&self, path: &Path, via: u64, token: &str) {
        use base64::Engine as _;
        let ca = match &self.tls {
            Some(ca) => format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem)
            ),
            None => String::new(),
        };
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: {}\n{ca}users:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: keelson\n  context:\n    cluster: keelson\n    user: admin\n    namespace: default\ncurrent-context: keelson\n",
            self.url(via)
        );
        std::fs::write(path, config).expect("write the kubeconfig");
    }

    /// A client certificate of the cluster's CA (its masters serve HTTPS): CN `user`, one O per
    /// group, as (certificate, key) PEM files written in the cluster's directory.
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> (PathBuf, PathBuf) {
        let ca = self.tls.as_ref().expect("a cluster serving HTTPS");
        let (cert_pem, key_pem) = ca.issue_client(user, groups);
        let stem = user.replace(':', "-");
        let (cert, key) = (
            self.root.join(format!("{stem}.crt")),
            self.root.join(format!("{stem}.key")),
        );
        std::fs::write(&cert, cert_pem).expect("write the client certificate");
        std::fs::write(&key, key_pem).expect("write the client key");
        (cert, key)
    }

    /// The cluster's CA certificate (PEM) if its masters serve HTTPS.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|ca| ca.cert_pem.as_bytes())
    }

    /// A reqwest client builder that trusts the cluster's CA (if it has one).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder();
        match self.ca_pem() {
            Some(pem) => b.add_root_certificate(
                reqwest::Certificate::from_pem(pem).expect("the CA certificate"),
            ),
            None => b,
        }
    }

    /// Like [`Cluster::start`] but in `root`, which is kept; masters are not started yet.
    pub fn new_in(bin: &Path, root: &Path, n: u64, extra_args: &[&str]) -> Cluster {
        std::fs::create_dir_all(root).expect("create root");
        let slot = next_slot();
        let mut masters = BTreeMap::new();
        for id in 1..=n {
            let ip = master_ip(slot, id);
            let spec = MasterSpec {
                id,
                raft: free_addr(ip),
                api: free_addr(ip),
                data_dir: root.join(format!("master-{id}")),
                join: false,
                tls: false,
            };
            masters.insert(id, Master { spec, child: None });
        }
        let peers = masters
            .values()
            .map(|m| format!("{}={}/{}", m.spec.id, m.spec.raft, m.spec.api))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            _tmp: None,
            cluster_id: format!("test-{}", rand::random::<u64>()),
            slot,
            peers,
            masters,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: None,
            token: None,
            peer_ca: PeerCa::new(),
        }
    }

    /// True unless the masters run with `--insecure-plaintext-peers`.
    pub fn peer_mtls(&self) -> bool {
        !self
            .extra_args
            .iter()
            .any(|a| a == "--insecure-plaintext-peers")
    }

    /// The CA of the masters' peer certificates.
    pub fn peer_ca(&self) -> &PeerCa {
        &self.peer_ca
    }

    /// `ROOT/master-<id>-peer.crt` and `.key`.
    pub fn peer_cert_paths(&self, id: u64) -> (PathBuf, PathBuf) {
        (
            self.root.join(format!("master-{id}-peer.crt")),
            self.root.join(format!("master-{id}-peer.key")),
        )
    }

    /// Issues master `id`'s peer certificate anew (the files change; a running master keeps
    /// the old one until restarted).
    pub fn reissue_peer_cert(&self, id: u64) {
        let ip = match self.spec(id).raft.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        };
        let (cert_pem, key_pem) = self.peer_ca.issue(id, ip);
        let (cert, key) = self.peer_cert_paths(id);
        write_private(&key, &key_pem);
        std::fs::write(&cert, cert_pem).expect("write the peer certificate");
    }

    /// A client of the Raft port holding a valid peer certificate of a member (the first
    /// master's, as that master would): the masters refuse a certificate of a non-member.
    pub fn peer_client(&self) -> reqwest::Client {
        let id = self.ids().first().copied().unwrap_or(1);
        self.peer_ca.client(id, self.peer_ca.cert_pem())
    }

    /// `https://RAFT_ADDR/raft/PATH` of master `id` (`http://` without peer mTLS).
    pub fn raft_url(&self, id: u64, path: &str) -> String {
        let scheme = if self.peer_mtls() { "https" } else { "http" };
        format!("{scheme}://{}/raft/{path}", self.spec(id).raft)
    }

    /// The folder holding data directories and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts every master that is not running.
    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.masters.keys().copied().collect();
        for id in ids {
            if !self.is_running(id) {
                self.spawn(id);
            }
        }
    }

    /// Starts master `id` (which must be known) as a process.
    pub fn spawn(&mut self, id: u64) {
        let m = self.masters.get(&id).expect("known master");
        assert!(m.child.is_none(), "master {id} already running");
        let spec = m.spec.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("master-{id}.log")))
            .expect("open log");
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ca) = &self.tls {
            let cert = self.root.join(format!("master-{id}.crt"));
            let key = self.root.join(format!("master-{id}.key"));
            if !cert.is_file() || !key.is_file() {
                let ip = match spec.api.ip() {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
                };
                let (cert_pem, key_pem) = ca.issue(ip);
                std::fs::write(&key, key_pem).expect("write the master's key");
                std::fs::write(&cert, cert_pem).expect("write the master's certificate");
            }
            tls_args = vec![
                "--tls-cert-file".into(),
                cert.into(),
                "--tls-private-key-file".into(),
                key.into(),
                // Clients may also authenticate with a certificate of the same CA.
                "--client-ca-file".into(),
                self.root.join("ca.crt").into(),
            ];
        }
        if self.peer_mtls() {
            let ca = self.root.join("peer-ca.crt");
            if !ca.is_file() {
                std::fs::write(&ca, self.peer_ca.cert_pem()).expect("write peer-ca.crt");
            }
            let (cert, key) = self.peer_cert_paths(id);
            if !cert.is_file() || !key.is_file() {
                self.reissue_peer_cert(id);
            }
            tls_args.extend([
                "--peer-cert-file".into(),
                cert.into(),
                "--peer-key-file".into(),
                key.into(),
                "--peer-trusted-ca-file".into(),
                ca.into(),
            ]);
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("master")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--raft-addr", &spec.raft.to_string()])
            .args(["--api-addr", &spec.api.to_string()])
            .args(["--cluster-id", &self.cluster_id])
            .args(&self.extra_args)
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if spec.join {
            cmd.arg("--join");
        } else {
            cmd.args(["--peers", &self.peers]);
        }
        let child = cmd.spawn().expect("spawn keelson master");
        self.masters.get_mut(&id).expect("known").child = Some(child);
    }

    /// Declares a new master (not started) that will join the running cluster.
    pub fn declare_joiner(&mut self, id: u64) -> MasterSpec {
        let ip = master_ip(self.slot, id);
        let spec = MasterSpec {
            id,
            raft: free_addr(ip),
            api: free_addr(ip),
            data_dir: self.root.join(format!("master-{id}")),
            join: true,
            tls: self.tls.is_some(),
        };
        self.masters.insert(
            id,
            Master {
                spec: spec.clone(),
                child: None,
            },
        );
        spec
    }

    /// Forgets master `id` (killing it if it runs).
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.masters.remove(&id);
    }

    /// The spec of master `id`.
    pub fn spec(&self, id: u64) -> &MasterSpec {
        &self.masters[&id].spec
    }

    /// API URL of master `id`.
    pub fn url(&self, id: u64) -> String {
        self.spec(id).url()
    }

    /// Ids of every known master.
    pub fn ids(&self) -> Vec<u64> {
        self.masters.keys().copied().collect()
    }

    /// Ids of the masters whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.masters
            .iter()
            .filter(|(_, m)| m.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// True when master `id`'s process was started and not killed by us.
    pub fn is_running(&self, id: u64) -> bool {
        self.masters.get(&id).is_some_and(|m| m.child.is_some())
    }

    /// True once master `id`'s process has exited, or when it is not running.
    pub fn has_exited(&mut self, id: u64) -> bool {
        match self.masters.get_mut(&id).and_then(|m| m.child.as_mut()) {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Master `id`'s exit status once its process has exited by itself (it is then no longer
    /// running, and may be spawned again); `None` while it runs.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let m = self.masters.get_mut(&id)?;
        let status = m.child.as_mut()?.try_wait().ok()??;
        m.child = None;
        Some(status)
    }

    /// Process id of master `id`.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.masters.get(&id)?.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, id: u64, sig: i32) {
        if let Some(pid) = self.pid(id) {
            // SAFETY: signalling a child process we started.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(m) = self.masters.get_mut(&id) {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// SIGTERM, and wait for a clean exit; returns its exit status.
    pub fn terminate(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        self.signal(id, libc::SIGTERM);
        let m = self.masters.get_mut(&id)?;
        let mut child = m.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP.
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    /// SIGKILL then start again with the same data.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    /// Deletes master `id`'s data directory (it must be stopped).
    pub fn wipe(&mut self, id: u64) {
        assert!(!self.is_running(id), "wipe a running master");
        let _ = std::fs::remove_dir_all(&self.spec(id).data_dir);
    }

    /// The tail of master `id`'s log, for failure messages.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        file_tail(&self.root.join(format!("master-{id}.log")), lines)
    }

    /// `GET /cluster` of master `id`.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let client = self
            .client_builder()
            .timeout(Duration::from_millis(500))
            .build()
            .ok()?;
        let mut req = client.get(format!("{}/cluster", self.url(id)));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.ok()?.json().await.ok()
    }

    /// Waits until a running master reports itself leader and every running master that
    /// answers and is a voter in that leader's membership agrees (same leader, same term);
    /// returns its id. A voter judged by its own membership would let one that has not yet
    /// heard from the new leader (term 0, no membership) pass as agreeing.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for id in self.running() {
                if let Some(s) = self.status(id).await {
                    statuses.push((id, s));
                }
            }
            let leaders: Vec<u64> = statuses
                .iter()
                .filter(|(_, s)| s["state"] == "Leader")
                .map(|(id, _)| *id)
                .collect();
            if let [leader] = leaders[..] {
                let own = statuses
                    .iter()
                    .find(|(id, _)| *id == leader)
                    .map(|(_, s)| s)
                    .expect("the leader's status");
                let voters = own["voters"].as_array().cloned().unwrap_or_default();
                let agreed = statuses
                    .iter()
                    .filter(|(_, s)| voters.iter().any(|v| v.as_u64() == s["id"].as_u64()))
                    .all(|(_, s)| s["leader"].as_u64() == Some(leader) && s["term"] == own["term"]);
                if agreed {
                    return Some(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Waits until every running master answers and reports itself ready (it knows a leader and
    /// has applied what it holds, as `/readyz`): [`Cluster::wait_leader`] skips a master whose
    /// API does not answer yet. On timeout, names the first that is not, with its log's tail.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for id in self.running() {
            while self.status(id).await.is_none_or(|s| s["ready"] != true) {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "master {id} is not ready\n{}",
                        self.log_tail(id, 30)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Waits until master `id` has applied the write at resource version `rv` (a list's or an
    /// object's): the entry that holds it ([`keelson_raft::revision::index_of`]).
    pub async fn wait_rv(&self, id: u64, rv: u64, timeout: Duration) -> bool {
        self.wait_applied(id, keelson_raft::revision::index_of(rv), timeout)
            .await
    }

    /// Waits until master `id` has applied at least log index `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.status(id).await {
                if s["applied_index"].as_u64().unwrap_or(0) >= index {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Set (to anything) to keep a cluster's directory — data, certificates and the masters' logs —
/// when it is dropped, to read after a test or a benchmark; its path goes to standard error.
pub const KEEP_ENV: &str = "KEELSON_KEEP_CLUSTER";

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.masters.values_mut() {
            if let Some(mut child) = m.child.take() {
                // SAFETY: continue a possibly paused child so that SIGKILL is delivered at once.
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            if let Some(tmp) = self._tmp.take() {
                eprintln!("{KEEP_ENV}: kept {}", tmp.keep().display());
            }
        }
    }
}

/// Writes a private key, readable by its owner only.
fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("open a key file");
    f.write_all(text.as_bytes()).expect("write a key file");
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read), for failure
/// messages: a master's or an agent's log.
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

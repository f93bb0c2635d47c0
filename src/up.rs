//! `keelson up`: a local cluster of master processes and node agents under one data directory,
//! ready for `keelson ctl`, kubectl and Prometheus (`DATA_DIR/prometheus.yml`, `alerts.yml`).
//!
//! The first run creates `DATA_DIR/cluster.json` (addresses, cluster id, pids, the CA) and a
//! certificate authority (`ca.crt`, `ca.key`) with the masters' serving certificate
//! (`apiserver.crt`, `apiserver.key`): the masters serve their API over HTTPS only, and
//! `kubeconfig` carries the CA and the token. Each master also gets a peer certificate of the
//! same CA (`master-N-peer.crt`, `master-N-peer.key`, named `master-N` and its Raft IP) for
//! mutual TLS on the Raft port, and each agent a client certificate (`agent-NAME.crt`,
//! `system:node:NAME` in `system:nodes`) it calls the API with; `tokens.csv` holds the
//! administrator's token (`system:masters`); each master keeps an audit log
//! (`master-N-audit.log`). A later run with the same data directory resumes
//! the same cluster with its data and its certificates. Ctrl-C or SIGTERM stops every
//! child. Agents (`--agents N`, 2 by default, Docker unless `--runtime hollow`; `keelson up` first
//! builds the local images `keelson/pause` and `user/mysite`) are `node-1..N`, at the masters'
//! loopback address + 10 + (i − 1) (127.0.0.11, .12… for the default 127.0.0.1; else on `--host`),
//! serving metrics and container logs on port 10250+i and the services' ports through their
//! proxies. With Docker, the cluster gets two Docker networks of its own (`agent::networks`):
//! pods join one, the other's subnet is the service cluster IP range. Stopping `keelson up` leaves
//! the containers running (and says so); the next run's agents adopt them, and `keelson down`
//! removes them (and the networks).
//! A master that dies (a chaos test's SIGKILL) is reported, not restarted: restarting is
//! the operator's (or the harness's) decision. One that exits asking to be started again (75:
//! it stopped on a full disk and there is room now) is started again.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::{Child, Command};

use crate::master::tls::ClusterCerts;
use crate::process::{AgentEntry, ClusterFile, MasterEntry};

/// Flags of `keelson up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of masters (1, 3 or 5; an odd number tolerates the most failures).
    #[arg(long, default_value_t = 3)]
    pub masters: u64,
    /// Where every master's data, the logs, `cluster.json` and the generated configuration live.
    #[arg(long, default_value = ".keelson")]
    pub data_dir: PathBuf,
    /// Node agents to start next to the masters.
    #[arg(long, default_value_t = 2)]
    pub agents: u32,
    /// Runtime of the agents: docker (real containers) or hollow (nothing runs; no Docker needed).
    #[arg(long, default_value = "docker")]
    pub runtime: String,
    /// The static busybox the local images (`keelson/pause`, the seed's `user/mysite`) are built
    /// from when Docker lacks them (Debian's busybox-static).
    #[arg(long, default_value = crate::agent::images::DEFAULT_BUSYBOX)]
    pub busybox: PathBuf,
    /// Address the masters listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Master N serves its API on this port + N.
    #[arg(long, default_value_t = 6440)]
    pub api_port_base: u16,
    /// Master N listens for Raft peers on this port + N.
    #[arg(long, default_value_t = 7440)]
    pub raft_port_base: u16,
    /// Each process's log (`master-N.log`, `agent-NAME.log`) is rotated past this size (a
    /// quantity: `10Mi`, `500k`…).
    #[arg(long, default_value = "10Mi", value_parser = crate::process::parse_size)]
    pub log_max_size: u64,
    /// Rotated logs kept per process (`master-1.log.1` the newest).
    #[arg(long, default_value_t = 5)]
    pub log_max_backups: usize,
}

/// Where the output of `keelson up`'s processes goes: `DATA_DIR/NAME.log`, rotated by size.
#[derive(Clone)]
struct ChildLogs {
    data_dir: PathBuf,
    max_bytes: u64,
    backups: usize,
}

impl ChildLogs {
    fn path(&self, name: &str) -> PathBuf {
        self.data_dir.join(format!("{name}.log"))
    }

    /// Copies `child`'s standard output and error (both piped), line by line, into its log
    /// `NAME.log`, each on a thread of its own so a busy disk never slows the cluster's loop.
    fn attach(&self, name: &str, child: &mut Child) -> anyhow::Result<()> {
        use crate::process::rotating::{RotatingFile, Rotation};
        use std::sync::{Arc, Mutex};
        let path = self.path(name);
        let file = RotatingFile::open(Rotation {
            path: path.clone(),
            max_bytes: self.max_bytes,
            backups: self.backups,
        })
        .with_context(|| format!("open {}", path.display()))?;
        let file = Arc::new(Mutex::new(file));
        let stdout = child.stdout.take().map(|s| s.into_owned_fd());
        let stderr = child.stderr.take().map(|s| s.into_owned_fd());
        for fd in [stdout, stderr].into_iter().flatten() {
            let fd = fd.context("take a child's output")?;
            blocking(&fd)?;
            let file = file.clone();
            std::thread::Builder::new()
                .name(format!("log {name}"))
                .spawn(move || copy_lines(std::fs::File::from(fd), &file))?;
        }
        Ok(())
    }
}

/// Clears `O_NONBLOCK` (tokio set it on its pipes), so that a thread can read the pipe.
fn blocking(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a file descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Appends every line read from `from` to `to` until it ends (the process exited).
fn copy_lines(from: std::fs::File, to: &std::sync::Mutex<crate::process::rotating::RotatingFile>) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let mut file = to.lock().unwrap_or_else(|e| e.into_inner());
                let _ = file.write_record(&line);
                // Flushed while nothing more is waiting, so `tail -f` sees each line.
                if reader.buffer().is_empty() {
                    let _ = file.flush();
                }
            }
        }
    }
}

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
}

/// Alerting rules written next to `prometheus.yml` (the repository's ready-to-use file).
const ALERT_RULES: &str = include_str!("../deploy/prometheus/alerts.yml");

/// The agents `keelson up` starts: `node-1..N`.
fn agent_entries(args: &UpArgs) -> Vec<AgentEntry> {
    (1..=args.agents)
        .map(|i| {
            // On loopback every agent takes its own address (127.0.0.11, .12… next to masters on
            // 127.0.0.1), so their proxies and published ports behave like separate hosts.
            let address = match args.host {
                IpAddr::V4(v4) if v4.is_loopback() && v4.octets()[3] as u32 + 9 + i <= 254 => {
                    let [a, b, c, d] = v4.octets();
                    format!("{a}.{b}.{c}.{}", d as u32 + 9 + i)
                }
                _ => args.host.to_string(),
            };
            let port = 10250 + i as u16;
            let api = match args.host {
                IpAddr::V6(_) if address.contains(':') => format!("https://[{address}]:{port}"),
                _ => format!("https://{address}:{port}"),
            };
            AgentEntry {
                name: format!("node-{i}"),
                pid: 0,
                address,
                api,
            }
        })
        .collect()
}

/// `HOST:PORT` of an `http://` or `https://` URL.
fn addr_of(url: &str) -> &str {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
}

/// The Prometheus configuration for this cluster's masters (scraped with the token in
/// `token_file`) and agents.
fn prometheus_config(file: &ClusterFile, token_file: &Path) -> String {
    let masters: Vec<String> = file
        .masters
        .iter()
        .map(|m| format!("'{}'", addr_of(&m.api)))
        .collect();
    let mut out = String::from(
        "# Generated by `keelson up`: scrapes every master and agent of this cluster.\n",
    );
    out.push_str("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    out.push_str("rule_files:\n  - alerts.yml\n");
    out.push_str("scrape_configs:\n  - job_name: keelson-masters\n");
    out.push_str(&format!(
        "    authorization:\n      credentials_file: '{}'\n",
        token_file.display()
    ));
    if let Some(ca) = &file.ca_file {
        out.push_str(&format!(
            "    scheme: https\n    tls_config:\n      ca_file: '{}'\n",
            ca.display()
        ));
    }
    out.push_str("    static_configs:\n");
    out.push_str(&format!("      - targets: [{}]\n", masters.join(", ")));
    let agents: Vec<String> = file
        .agents
        .iter()
        .map(|a| format!("'{}'", addr_of(&a.api)))
        .collect();
    if !agents.is_empty() {
        out.push_str("  - job_name: keelson-agents\n");
        if let Some(ca) = &file.ca_file {
            out.push_str(&format!(
                "    scheme: https\n    tls_config:\n      ca_file: '{}'\n",
                ca.display()
            ));
        }
        out.push_str("    static_configs:\n");
        out.push_str(&format!("      - targets: [{}]\n", agents.join(", ")));
    }
    out
}

/// The cluster's bearer tokens, in `DATA_DIR/tokens.csv` (created once, kept across runs):
/// first the `admin` user's, in `system:masters`, which this returns; then `prometheus`'s, in
/// `system:monitoring` (allowed to read `/metrics`), which is also written alone to
/// `DATA_DIR/prometheus.token` for `prometheus.yml`. An older file gets what it lacks: its first
/// token stays the administrator's, with the group added if it was written before groups.
fn ensure_tokens(data_dir: &Path) -> anyhow::Result<String> {
    use keelson_model::rbac::{MASTERS, MONITORING};
    let path = data_dir.join("tokens.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let token_of = |line: &str| {
        let t = line.split(',').next().unwrap_or("").trim();
        (!t.is_empty()).then(|| t.to_string())
    };
    let in_group = |group: &str| text.lines().find(|l| l.contains(group)).and_then(token_of);
    let admin = in_group(MASTERS)
        .or_else(|| text.lines().find_map(token_of))
        .unwrap_or_else(random_id);
    let prometheus = in_group(MONITORING).unwrap_or_else(random_id);
    let lines =
        format!("{admin},admin,admin,{MASTERS}\n{prometheus},prometheus,prometheus,{MONITORING}\n");
    if lines != text {
        crate::files::write_private(&path, &lines)?;
    }
    crate::files::write_private(&data_dir.join("prometheus.token"), &prometheus)?;
    Ok(admin)
}

/// A kubeconfig for kubectl and the client libraries: the first master, the CA (PEM) that
/// signed its certificate, and the token.
fn kubeconfig(file: &ClusterFile, ca_pem: &[u8], token: &str) -> String {
    use base64::Engine as _;
    let server = file
        .masters
        .first()
        .map(|m| m.api.clone())
        .unwrap_or_default();
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: keelson\n  context:\n    cluster: keelson\n    user: admin\n    namespace: default\ncurrent-context: keelson\n"
    )
}

/// Runs the cluster until Ctrl-C or SIGTERM: the runtime's images, the data directory and its
/// credentials, the masters then the agents, the configuration files, a leader, then supervision.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.masters == 0 || args.masters > 7 {
        bail!("--masters must be between 1 and 7 (3 or 5 recommended)");
    }
    // The handlers are installed here: from now on Ctrl-C and SIGTERM wait for `supervise`.
    let stop_signal = crate::process::shutdown_signal();
    let engine = prepare_runtime(&args).await?;
    crate::files::private_dir(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let mut file = load_or_create_cluster(&args, &data_dir)?;
    if let Some(engine) = &engine {
        let networks =
            crate::agent::networks::ensure(engine, &file.cluster_id, file.networks.as_ref())
                .await
                .context("the cluster's Docker networks")?;
        file.networks = Some(networks);
    }
    let certs = ensure_certificates(&args, &data_dir, &mut file)?;
    let ca_pem = std::fs::read(&certs.ca_cert)
        .with_context(|| format!("read {}", certs.ca_cert.display()))?;
    let token = ensure_tokens(&data_dir)?;
    let exe = std::env::current_exe().context("locate the keelson binary")?;
    // Masters first, then agents; `masters_started` splits the two.
    let logs = ChildLogs {
        data_dir: data_dir.clone(),
        max_bytes: args.log_max_size,
        backups: args.log_max_backups,
    };
    let mut children = start_masters(&data_dir, &logs, &exe, &certs, &mut file)?;
    let masters_started = children.len();
    start_agents(
        &args,
        &data_dir,
        &logs,
        &exe,
        &certs,
        &mut file,
        &mut children,
    )?;
    file.up_pid = Some(std::process::id());
    write_config_files(&data_dir, &file, &ca_pem, &token)?;

    let client = api_client(&ca_pem)?;
    let leader = wait_for_leader(&client, &file, &token, Duration::from_secs(30)).await;
    print_summary(&args, &data_dir, &file, leader);
    // No leader yet (a loaded machine, a slow disk): say when there is one.
    let late_ready = leader.is_none().then(|| {
        let (file, ready) = (file.clone(), ready_line(&args, &data_dir));
        tokio::spawn(async move {
            if wait_for_leader(&client, &file, &token, Duration::from_secs(600))
                .await
                .is_some()
            {
                println!("{ready}");
            }
        })
    });
    // A master that exits asking to be started again (its disk was full and has room now) is.
    let restart = |i: usize, file: &ClusterFile| {
        let peers = peers_of(file);
        let m = &file.masters[i];
        start_master(&data_dir, &logs, &exe, &certs, m, &peers, file)
    };
    let mut supervised = Supervised {
        children: &mut children,
        masters_started,
        file: &mut file,
        data_dir: &data_dir,
        restart: &restart,
    };
    supervise(stop_signal, &mut supervised).await?;
    if let Some(task) = late_ready {
        task.abort();
    }
    stop_cluster(&mut children).await;
    println!(
        "stopped {} master(s) and {} agent(s); left running: the pods' containers (the next `keelson up` adopts them) — `keelson down --data-dir {}` removes them, `--purge` the data too",
        masters_started,
        children.len() - masters_started,
        args.data_dir.display()
    );
    Ok(())
}

/// Checks the agents' runtime; for Docker, builds the local images it lacks and returns the
/// engine.
async fn prepare_runtime(args: &UpArgs) -> anyhow::Result<Option<bollard::Docker>> {
    if args.agents > 0 {
        match args.runtime.as_str() {
            "hollow" => {}
            "docker" => {
                // Fail before starting anything, in one line, when Docker is not there.
                let engine = crate::agent::docker::connect().await?;
                for image in crate::agent::images::ensure(&engine, &args.busybox, true, false)
                    .await
                    .context("build the local images")?
                {
                    println!("built image {image} from {}", args.busybox.display());
                }
                return Ok(Some(engine));
            }
            other => bail!("--runtime {other}: expected docker or hollow"),
        }
    }
    Ok(None)
}

/// The cluster of `DATA_DIR/cluster.json` when there is one (its API URLs moved to HTTPS), else
/// a new cluster of `--masters` masters.
fn load_or_create_cluster(args: &UpArgs, data_dir: &Path) -> anyhow::Result<ClusterFile> {
    Ok(match ClusterFile::load(data_dir)? {
        Some(mut existing) => {
            if existing
                .masters
                .iter()
                .any(|m| m.api.starts_with("http://"))
            {
                eprintln!(
                    "note: {} was created before keelson up served HTTPS; its masters now do, but the membership they recorded names http:// API URLs (agents follow those to the leader): start a new data directory to be rid of them",
                    data_dir.display()
                );
                for m in existing.masters.iter_mut() {
                    m.api = format!("https://{}", addr_of(&m.api));
                }
            }
            // The directory may have moved (copied, or unpacked elsewhere): each master's data
            // is where `keelson up` keeps it, under this one, never at the old path.
            for m in existing.masters.iter_mut() {
                m.data_dir = data_dir.join(format!("master-{}", m.id));
            }
            if existing.masters.len() as u64 != args.masters {
                eprintln!(
                    "note: {} holds a cluster of {} masters; resuming it as it is (change membership with `keelson ctl masters`)",
                    data_dir.display(),
                    existing.masters.len()
                );
            }
            existing
        }
        None => ClusterFile {
            cluster_id: random_id(),
            masters: (1..=args.masters)
                .map(|id| MasterEntry {
                    id,
                    pid: 0,
                    api: format!("https://{}:{}", args.host, args.api_port_base + id as u16),
                    raft: format!("{}:{}", args.host, args.raft_port_base + id as u16),
                    data_dir: data_dir.join(format!("master-{id}")),
                })
                .collect(),
            agents: vec![],
            ca_file: None,
            up_pid: None,
            networks: None,
        },
    })
}

/// The CA and the masters' serving certificate, made once: for localhost, 127.0.0.1 and every
/// master's address. Records the CA in `file`.
fn ensure_certificates(
    args: &UpArgs,
    data_dir: &Path,
    file: &mut ClusterFile,
) -> anyhow::Result<ClusterCerts> {
    let certs = ClusterCerts::in_dir(data_dir);
    let mut ips: Vec<IpAddr> = vec![args.host];
    for m in &file.masters {
        if let Ok(a) = m.raft.parse::<std::net::SocketAddr>() {
            ips.push(a.ip());
        }
        if let Ok(a) = addr_of(&m.api).parse::<std::net::SocketAddr>() {
            ips.push(a.ip());
        }
    }
    certs
        .ensure(&ips)
        .context("create the cluster's CA and certificates")?;
    file.ca_file = Some(certs.ca_cert.clone());
    Ok(certs)
}

/// Starts every master of `file` in turn, recording their pids: the children, named `master N`.
fn start_masters(
    data_dir: &Path,
    logs: &ChildLogs,
    exe: &Path,
    certs: &ClusterCerts,
    file: &mut ClusterFile,
) -> anyhow::Result<Vec<(String, Child)>> {
    let peers = peers_of(file);
    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 0..file.masters.len() {
        let child = start_master(data_dir, logs, exe, certs, &file.masters[i], &peers, file)?;
        file.masters[i].pid = child.id().unwrap_or(0);
        children.push((format!("master {}", file.masters[i].id), child));
    }
    Ok(children)
}

/// The `--peers` entries of the masters of `file`.
fn peers_of(file: &ClusterFile) -> Vec<String> {
    file.masters
        .iter()
        .map(|m| format!("{}={}/{}", m.id, m.raft, addr_of(&m.api)))
        .collect()
}

/// Starts one master logging to `DATA_DIR/master-N.log`, first issuing its peer certificate.
fn start_master(
    data_dir: &Path,
    logs: &ChildLogs,
    exe: &Path,
    certs: &ClusterCerts,
    m: &MasterEntry,
    peers: &[String],
    file: &ClusterFile,
) -> anyhow::Result<Child> {
    let raft_ip = m
        .raft
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .with_context(|| format!("master {}: Raft address {:?}", m.id, m.raft))?;
    certs
        .ensure_peer(data_dir, m.id, raft_ip)
        .with_context(|| format!("issue master {}'s peer certificate", m.id))?;
    let (peer_cert, peer_key) = ClusterCerts::peer_paths(data_dir, m.id);
    let mut child = Command::new(exe)
        .arg("master")
        .args(["--id", &m.id.to_string()])
        .arg("--data-dir")
        .arg(&m.data_dir)
        .args(["--raft-addr", &m.raft])
        .args(["--api-addr", addr_of(&m.api)])
        .args(["--peers", &peers.join(",")])
        .args(["--cluster-id", &file.cluster_id])
        .args(
            file.networks
                .iter()
                .flat_map(|n| ["--service-cluster-ip-range", &n.services_subnet]),
        )
        .arg("--token-file")
        .arg(data_dir.join("tokens.csv"))
        .arg("--tls-cert-file")
        .arg(&certs.cert)
        .arg("--tls-private-key-file")
        .arg(&certs.key)
        .arg("--client-ca-file")
        .arg(&certs.ca_cert)
        .arg("--audit-log-path")
        .arg(data_dir.join(format!("master-{}-audit.log", m.id)))
        .arg("--peer-cert-file")
        .arg(&peer_cert)
        .arg("--peer-key-file")
        .arg(&peer_key)
        .arg("--peer-trusted-ca-file")
        .arg(&certs.ca_cert)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start a master")?;
    logs.attach(&format!("master-{}", m.id), &mut child)?;
    Ok(child)
}

/// Starts the agents `node-1..N` (recorded in `file` with their pids), each logging to
/// `DATA_DIR/agent-NAME.log`, and adds them to `children` as `agent NAME`.
fn start_agents(
    args: &UpArgs,
    data_dir: &Path,
    logs: &ChildLogs,
    exe: &Path,
    certs: &ClusterCerts,
    file: &mut ClusterFile,
    children: &mut Vec<(String, Child)>,
) -> anyhow::Result<()> {
    file.agents = agent_entries(args);
    let master_urls: Vec<String> = file.masters.iter().map(|m| m.api.clone()).collect();
    let pod_network = file.networks.as_ref().map(|n| n.pods.clone());
    for a in file.agents.iter_mut() {
        certs
            .ensure_agent(data_dir, &a.name, &a.address)
            .with_context(|| format!("issue agent {}'s certificates", a.name))?;
        let (cert, key) = ClusterCerts::agent_paths(data_dir, &a.name);
        let (serving_cert, serving_key) = ClusterCerts::agent_serving_paths(data_dir, &a.name);
        let mut child = Command::new(exe)
            .arg("agent")
            .args(["--name", &a.name])
            .args(["--runtime", &args.runtime])
            .args(pod_network.iter().flat_map(|n| ["--pod-network", n]))
            .arg("--data-dir")
            .arg(data_dir.join(format!("agent-{}", a.name)))
            .arg("--busybox")
            .arg(&args.busybox)
            .args(["--address", &a.address])
            .args(["--api-addr", addr_of(&a.api)])
            .args(["--masters", &master_urls.join(",")])
            .arg("--ca-file")
            .arg(&certs.ca_cert)
            // Its own identity, `system:node:NAME`, not the administrator's token.
            .arg("--cert-file")
            .arg(&cert)
            .arg("--key-file")
            .arg(&key)
            // HTTPS, and container logs for masters only (their peer certificates, of the CA).
            .arg("--tls-cert-file")
            .arg(&serving_cert)
            .arg("--tls-private-key-file")
            .arg(&serving_key)
            .arg("--client-ca-file")
            .arg(&certs.ca_cert)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start an agent")?;
        logs.attach(&format!("agent-{}", a.name), &mut child)?;
        a.pid = child.id().unwrap_or(0);
        children.push((format!("agent {}", a.name), child));
    }
    Ok(())
}

/// Writes `cluster.json`, `alerts.yml`, `prometheus.yml` and the kubeconfig into the data dir.
fn write_config_files(
    data_dir: &Path,
    file: &ClusterFile,
    ca_pem: &[u8],
    token: &str,
) -> anyhow::Result<()> {
    file.save(data_dir)?;
    std::fs::write(data_dir.join("alerts.yml"), ALERT_RULES)?;
    let token_file = data_dir.join("prometheus.token");
    std::fs::write(
        data_dir.join("prometheus.yml"),
        prometheus_config(file, &token_file),
    )?;
    // The kubeconfig carries the admin token.
    crate::files::write_private(
        &data_dir.join("kubeconfig"),
        &kubeconfig(file, ca_pem, token),
    )?;
    Ok(())
}

/// A client of the masters' API that trusts the cluster's CA, each request limited to 1 s.
fn api_client(ca_pem: &[u8]) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem)?)
        .build()?)
}

/// Prints the cluster: its masters (the leader marked) and agents with their logs, the
/// Prometheus command and how to reach it, or a warning when no leader was elected.
fn print_summary(args: &UpArgs, data_dir: &Path, file: &ClusterFile, leader: Option<u64>) {
    println!(
        "keelson cluster {} — data in {}",
        file.cluster_id,
        data_dir.display()
    );
    println!(
        "{:<8} {:<8} {:<28} {:<22} LOG",
        "MASTER", "PID", "API", "RAFT"
    );
    for m in &file.masters {
        let mark = if leader == Some(m.id) {
            " (leader)"
        } else {
            ""
        };
        println!(
            "{:<8} {:<8} {:<28} {:<22} {}{}",
            m.id,
            m.pid,
            m.api,
            m.raft,
            data_dir.join(format!("master-{}.log", m.id)).display(),
            mark
        );
    }
    if !file.agents.is_empty() {
        println!("{:<8} {:<8} {:<36} LOG", "AGENT", "PID", "METRICS");
        for a in &file.agents {
            println!(
                "{:<8} {:<8} {:<36} {}",
                a.name,
                a.pid,
                format!("{}/metrics", a.api),
                data_dir.join(format!("agent-{}.log", a.name)).display()
            );
        }
    }
    println!(
        "prometheus: `prometheus --config.file {}`",
        data_dir.join("prometheus.yml").display()
    );
    match leader {
        Some(_) => println!("{}", ready_line(args, data_dir)),
        None => println!(
            "warning: no leader elected yet; see the logs above (a line says when there is one)"
        ),
    }
}

/// What `keelson up` prints once the cluster has a leader.
fn ready_line(args: &UpArgs, data_dir: &Path) -> String {
    format!(
        "ready: try `keelson ctl --data-dir {} masters list` or `kubectl --kubeconfig {} get nodes`; Ctrl-C stops the cluster",
        args.data_dir.display(),
        data_dir.join("kubeconfig").display()
    )
}

/// What `supervise` watches: the children (the first `masters_started` are the masters, in the
/// order of `file.masters`), and how to start master `i` again.
struct Supervised<'a, R: Fn(usize, &ClusterFile) -> anyhow::Result<Child>> {
    children: &'a mut Vec<(String, Child)>,
    masters_started: usize,
    file: &'a mut ClusterFile,
    data_dir: &'a Path,
    restart: &'a R,
}

/// Watches the children every 500 ms until `stop_signal`, reporting each one that exits; a
/// master that exits with [`crate::master::storage_failure::EXIT_SPACE_FREED`] (it stopped on a full disk, and
/// there is room again) is started again, its new pid recorded. Fails when every master has
/// exited.
async fn supervise<R: Fn(usize, &ClusterFile) -> anyhow::Result<Child>>(
    stop_signal: impl std::future::Future<Output = ()>,
    s: &mut Supervised<'_, R>,
) -> anyhow::Result<()> {
    let mut stop = Box::pin(stop_signal);
    let mut alive: Vec<bool> = vec![true; s.children.len()];
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for i in 0..s.children.len() {
                    if !alive[i] {
                        continue;
                    }
                    let Ok(Some(status)) = s.children[i].1.try_wait() else {
                        continue;
                    };
                    let id = s.children[i].0.clone();
                    let again = i < s.masters_started
                        && status.code() == Some(crate::master::storage_failure::EXIT_SPACE_FREED);
                    if !again {
                        alive[i] = false;
                        println!("{id} exited ({status}); the others keep running");
                        continue;
                    }
                    println!("{id} exited after its disk had filled up, now that there is room: starting it again");
                    match (s.restart)(i, s.file) {
                        Ok(child) => {
                            s.file.masters[i].pid = child.id().unwrap_or(0);
                            s.children[i].1 = child;
                            if let Err(e) = s.file.save(s.data_dir) {
                                println!("cannot record {id}'s new pid: {e:#}");
                            }
                        }
                        Err(e) => {
                            alive[i] = false;
                            println!("{id} could not be started again: {e:#}");
                        }
                    }
                }
                if alive[..s.masters_started].iter().all(|a| !a) {
                    bail!("every master has exited");
                }
            }
        }
    }
    Ok(())
}

/// Sends SIGTERM to every child, then waits for them (killing those still running after 10 s).
async fn stop_cluster(children: &mut [(String, Child)]) {
    println!("stopping the cluster");
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    stop_children(children, Duration::from_secs(10)).await;
}

/// Waits for every signalled child to exit, saying each second which ones it still waits
/// for; those still running after `grace` are killed.
async fn stop_children(children: &mut [(String, tokio::process::Child)], grace: Duration) {
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(1);
    loop {
        let waiting: Vec<String> = children
            .iter_mut()
            .filter_map(|(id, c)| matches!(c.try_wait(), Ok(None)).then(|| id.clone()))
            .collect();
        if waiting.is_empty() {
            return;
        }
        if started.elapsed() >= grace {
            break;
        }
        if Instant::now() >= next_report {
            println!("waiting for {} to stop", waiting.join(", "));
            next_report += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("{id} did not stop in {grace:?}: killing it");
            let _ = child.kill().await;
        }
    }
}

/// Asks each master in turn for the cluster's leader until one names it or `timeout` passes.
async fn wait_for_leader(
    client: &reqwest::Client,
    file: &ClusterFile,
    token: &str,
    timeout: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for m in &file.masters {
            if let Ok(resp) = client
                .get(format!("{}/cluster", m.api))
                .bearer_auth(token)
                .send()
                .await
            {
                if let Ok(v) = resp.json::<serde_json::Value>().await {
                    if let Some(l) = v["leader"].as_u64() {
                        return Some(l);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

//! The service proxy: every agent makes every service port reachable on its node's address (the
//! seed's "port 10000 on every node") and, in the kernel mode, on the service's cluster IP, spread
//! over the service's ready endpoints.
//!
//! Two modes (`--proxy-mode`): `nftables` ([`nftables`]: DNAT rules in a table of the agent's
//! own, kube-proxy's newest mode) and `userspace` ([`userspace`]: a listener per service port that
//! copies each connection, node addresses only). Without the flag the agent takes nftables when
//! the host lets it (the `nft` program, CAP_NET_ADMIN) and says in one line why it falls back.
//! Both follow the same caches and derive the same [`services::ServicePort`]s.

pub mod nftables;
pub mod services;
mod userspace;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::client::Masters;
use super::metrics;
use crate::informer::cache::HandlerGuard;
use crate::informer::remote::{self, Source};
use crate::informer::{Cache, Facts, ServiceFacts};
use services::ServicePort;

/// How often the kernel mode checks that its table is still there (a `flush ruleset` by
/// something else, e.g. a restart of the host's nftables service, is repaired this soon).
const CHECK: Duration = Duration::from_secs(30);

/// How often a sync that left work undone (a port that could not be bound, rules that could not
/// be written) is tried again without any change.
const RETRY: Duration = Duration::from_secs(5);

/// How services reach their endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// DNAT rules in the kernel (nftables): no copy in user space, cluster IPs served.
    Nftables,
    /// A listener per service port on the node's address, copying each connection.
    Userspace,
}

impl Mode {
    /// Whether pods must be reachable at their own IP (the kernel mode DNATs to it), rather than
    /// at ports published on the node's address.
    pub fn pods_by_ip(self) -> bool {
        self == Mode::Nftables
    }
}

/// What the agent was asked for and what the host allows: the mode to run, saying in one line
/// why when the kernel mode is not available.
pub async fn choose(asked: Option<Mode>, table: &str) -> anyhow::Result<Mode> {
    let nft = nftables::Nft {
        table: table.to_string(),
    };
    match asked {
        Some(Mode::Userspace) => Ok(Mode::Userspace),
        Some(Mode::Nftables) => {
            nft.probe().await.map_err(|e| {
                anyhow::anyhow!("--proxy-mode nftables: this host does not allow it: {e}")
            })?;
            Ok(Mode::Nftables)
        }
        None => match nft.probe().await {
            Ok(()) => Ok(Mode::Nftables),
            Err(e) => {
                tracing::warn!("proxy: nftables unavailable ({e}); using the userspace proxy");
                Ok(Mode::Userspace)
            }
        },
    }
}

/// The proxy's rules, in the chosen mode.
enum Rules {
    Userspace(userspace::Proxy),
    Nftables {
        nft: nftables::Nft,
        node: Option<Ipv4Addr>,
        /// What the table holds (`None`: nothing written yet, or the last write failed: the
        /// next sync replaces the whole table).
        applied: Option<nftables::Ruleset>,
    },
}

impl Rules {
    /// Brings the rules in line with `ports`; rules per service, or why they could not be
    /// written.
    async fn sync(&mut self, ports: &[ServicePort]) -> Result<Vec<(String, usize)>, String> {
        match self {
            Rules::Userspace(proxy) => {
                proxy.reconcile(ports).await;
                Ok(proxy.listeners_per_service())
            }
            Rules::Nftables { nft, node, applied } => {
                let ruleset = nftables::render(*node, ports);
                for c in &ruleset.conflicts {
                    tracing::debug!("proxy: {c} is already another service's port here");
                }
                let rules = ruleset.rules.clone().into_iter().collect();
                match applied.take() {
                    Some(old) if old == ruleset => *applied = Some(old),
                    Some(old) => {
                        nft.update(&old, &ruleset).await?;
                        *applied = Some(ruleset);
                    }
                    None => {
                        nft.replace(&ruleset).await?;
                        *applied = Some(ruleset);
                    }
                }
                Ok(rules)
            }
        }
    }

    /// Whether the rules written are still in place; when not, the next sync writes them all.
    async fn still_in_place(&mut self) -> bool {
        match self {
            Rules::Userspace(_) => true,
            Rules::Nftables { nft, applied, .. } => {
                if applied.is_some() && !nft.exists().await {
                    tracing::warn!(table = %nft.table, "proxy: the table is gone from the kernel: writing it again");
                    *applied = None;
                    return false;
                }
                true
            }
        }
    }

    /// Whether the last sync left work to retry.
    fn pending(&self) -> bool {
        match self {
            Rules::Userspace(proxy) => proxy.has_unbound(),
            Rules::Nftables { applied, .. } => applied.is_none(),
        }
    }
}

/// An Endpoints object in the proxy's cache, which decodes the whole object when it reconciles.
struct EndpointsFacts;

impl Facts for EndpointsFacts {
    const PLURAL: &'static str = "endpoints";
    fn from_object(_: &Value) -> Self {
        EndpointsFacts
    }
}

/// What the proxy follows, in all namespaces: services and endpoints, each an informer's cache
/// fed by list and watch.
struct Followed {
    services: Arc<Cache<ServiceFacts>>,
    endpoints: Arc<Cache<EndpointsFacts>>,
    /// Whether each cache (services, endpoints) holds a whole state: its first list arrived.
    listed: [AtomicBool; 2],
    changed: Arc<Notify>,
    _wake: (HandlerGuard<ServiceFacts>, HandlerGuard<EndpointsFacts>),
}

impl Followed {
    fn new() -> Self {
        let services: Arc<Cache<ServiceFacts>> = Arc::default();
        let endpoints: Arc<Cache<EndpointsFacts>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (s, e) = (changed.clone(), changed.clone());
        Followed {
            _wake: (
                services.on_change(move |_, _| s.notify_one()),
                endpoints.on_change(move |_, _| e.notify_one()),
            ),
            services,
            endpoints,
            listed: Default::default(),
            changed,
        }
    }

    fn mark_listed(&self, which: usize) {
        self.listed[which].store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

/// Keeps the rules in line with the caches, once both hold a whole state (no service without
/// its endpoints): after every burst of changes, and while a sync has work left to retry.
async fn follow(followed: Arc<Followed>, mut rules: Rules) {
    let m = metrics::get();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = followed.changed.notified() => {}
            _ = retry.tick(), if rules.pending() => {}
            _ = check.tick() => {
                if rules.still_in_place().await {
                    continue;
                }
            }
        }
        if !followed.listed.iter().all(|l| l.load(Ordering::SeqCst)) {
            continue;
        }
        let started = Instant::now();
        let services = objects(&followed.services);
        let endpoints = objects(&followed.endpoints);
        let ports = services::service_ports(services.iter(), endpoints.iter());
        match rules.sync(&ports).await {
            Ok(per_service) => {
                m.proxy_sync_seconds
                    .observe(started.elapsed().as_secs_f64());
                m.proxy_last_sync.set(jiff::Timestamp::now().as_second());
                for (service, n) in &per_service {
                    m.proxy_rules.with_label_values(&[service]).set(*n as i64);
                }
                let now: Vec<String> = per_service.into_iter().map(|(s, _)| s).collect();
                for gone in reported.iter().filter(|s| !now.contains(s)) {
                    let _ = m.proxy_rules.remove_label_values(&[gone]);
                }
                reported = now;
            }
            Err(e) => {
                m.proxy_sync_failures.inc();
                tracing::warn!("proxy: {e} (retrying)");
            }
        }
    }
}

/// Every object a cache holds, decoded.
fn objects<T: Facts>(cache: &Cache<T>) -> Vec<Value> {
    cache
        .list()
        .iter()
        .filter_map(|i| i.object().ok())
        .collect()
}

/// The running proxy.
pub struct Running {
    task: JoinHandle<()>,
    nft: Option<nftables::Nft>,
}

impl Running {
    /// Stops following and removes what the proxy put in place: listeners close with the task,
    /// the kernel mode's table is deleted (a clean stop leaves no rule behind).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(nft) = self.nft {
            match nft.remove().await {
                Ok(()) => tracing::info!(table = %nft.table, "proxy: rules removed"),
                Err(e) => tracing::warn!("proxy: remove table {}: {e}", nft.table),
            }
        }
    }
}

/// Starts the service proxy in `mode` for the node at `address`, following the services and
/// endpoints of all namespaces; `table` names the kernel mode's table.
pub fn start(masters: Masters, address: String, mode: Mode, table: String) -> Running {
    let (rules, nft) = match mode {
        Mode::Userspace => (Rules::Userspace(userspace::Proxy::new(address)), None),
        Mode::Nftables => {
            let node = address.parse::<Ipv4Addr>().ok();
            if node.is_none() {
                tracing::warn!("proxy: --address {address} is not an IPv4 address: services are served on their cluster IPs only");
            }
            if node.is_some_and(|a| a.is_loopback()) {
                if let Err(e) = nftables::allow_localnet() {
                    tracing::warn!(
                        "proxy: {e}: connections from 127.0.0.0/8 to services will fail"
                    );
                }
            }
            let nft = nftables::Nft { table };
            tracing::info!(table = %nft.table, "proxy: nftables mode");
            (
                Rules::Nftables {
                    nft: nft.clone(),
                    node,
                    applied: None,
                },
                Some(nft),
            )
        }
    };
    let followed = Arc::new(Followed::new());
    let source: Arc<dyn Source> = Arc::new(masters);
    let task = tokio::spawn(async move {
        tokio::join!(
            remote::follow(
                source.clone(),
                "/api/v1/services",
                "",
                followed.services.clone(),
                || followed.mark_listed(0),
            ),
            remote::follow(
                source,
                "/api/v1/endpoints",
                "",
                followed.endpoints.clone(),
                || followed.mark_listed(1),
            ),
            follow(followed.clone(), rules),
        );
    });
    Running { task, nft }
}

//! The service proxy: for every TCP port of every service, a listener on the service port at
//! the agent's address that forwards each connection to one of the service's endpoints, round
//! robin.
//!
//! The endpoints controller already resolves each service port to the port its endpoints are
//! reachable at (target port, published host port), so a service port is matched to the
//! Endpoints port of the same `name` (both empty for a single unnamed port) and the proxy dials
//! `ip:port` as listed. Endpoint changes swap the backend list a listener picks from; connections
//! already open keep their backend. A listener without endpoints closes each connection at once;
//! a service (or port) that goes away closes its listener. A port that cannot be bound (taken) is
//! logged once and retried on the next change, and periodically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::client::Masters;
use super::metrics::{self, ProxyServiceMetrics};
use crate::informer::cache::HandlerGuard;
use crate::informer::remote::{self, Source};
use crate::informer::{Cache, Facts, ServiceFacts};

/// How long one attempt to connect to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often listeners that could not be bound are retried without any change.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub host: String,
    pub port: u16,
}

/// A listener: service `namespace/name` and service port.
pub type ListenerKey = (String, u16);

/// The endpoints a listener picks from; replaced as a whole on every change.
type Backends = Arc<RwLock<Arc<Vec<Backend>>>>;

struct Listener {
    backends: Backends,
    #[cfg_attr(not(test), allow(dead_code))]
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxy's listeners, reconciled with the services and endpoints it is given.
pub struct Proxy {
    address: String,
    listeners: HashMap<ListenerKey, Listener>,
    /// Listeners that could not be bound (already warned about).
    unbound: HashSet<ListenerKey>,
}

fn key_of(v: &Value) -> String {
    format!(
        "{}/{}",
        v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default"),
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn is_tcp(port: &Value) -> bool {
    port.get("protocol")
        .and_then(Value::as_str)
        .map_or(true, |p| p.eq_ignore_ascii_case("TCP"))
}

fn port_name(port: &Value) -> &str {
    port.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The backends of the service port named `name` in an Endpoints object.
fn backends_of(endpoints: Option<&Value>, name: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    let subsets = endpoints
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array);
    for subset in subsets.into_iter().flatten() {
        let port = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| port_name(p) == name && is_tcp(p))
            .and_then(|p| p.get("port"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let Some(port) = port else { continue };
        let addresses = subset.get("addresses").and_then(Value::as_array);
        for a in addresses.into_iter().flatten() {
            if let Some(ip) = a
                .get("ip")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
            {
                out.push(Backend {
                    host: ip.to_string(),
                    port,
                });
            }
        }
    }
    out
}

/// The listeners the services call for, each with its backends (pure).
pub fn desired<'a>(
    services: impl IntoIterator<Item = &'a Value>,
    endpoints: impl IntoIterator<Item = &'a Value>,
) -> BTreeMap<ListenerKey, Vec<Backend>> {
    let endpoints: HashMap<String, &Value> =
        endpoints.into_iter().map(|e| (key_of(e), e)).collect();
    let mut out = BTreeMap::new();
    for svc in services {
        if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
            continue;
        }
        let key = key_of(svc);
        let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
        for p in ports.into_iter().flatten() {
            if !is_tcp(p) {
                continue;
            }
            let Some(port) = p
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
            else {
                continue;
            };
            let backends = backends_of(endpoints.get(&key).copied(), port_name(p));
            out.insert((key.clone(), port), backends);
        }
    }
    out
}

impl Proxy {
    /// A proxy listening at `address` (an IP or host name of this node).
    pub fn new(address: impl Into<String>) -> Self {
        Proxy {
            address: address.into(),
            listeners: HashMap::new(),
            unbound: HashSet::new(),
        }
    }

    /// The listeners open, with the address each is bound to.
    #[cfg(test)]
    pub fn listening(&self) -> BTreeMap<ListenerKey, SocketAddr> {
        self.listeners
            .iter()
            .map(|(k, l)| (k.clone(), l.local))
            .collect()
    }

    /// Whether some listener could not be bound (and should be retried).
    pub fn has_unbound(&self) -> bool {
        !self.unbound.is_empty()
    }

    /// Brings the listeners in line with `services` and their `endpoints` (core/v1 objects):
    /// closes those no longer wanted, swaps the backends of the others and opens new ones.
    pub async fn reconcile<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Value>,
        endpoints: impl IntoIterator<Item = &'a Value>,
    ) {
        let m = metrics::get();
        let mut desired = desired(services, endpoints);
        let wanted_services: HashSet<String> = desired.keys().map(|(s, _)| s.clone()).collect();
        // Close first, so that a port moving between services is free again.
        let gone: Vec<ListenerKey> = self
            .listeners
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut l) = self.listeners.remove(&key) {
                l.task.abort();
                // Resolves once the task, and with it the socket, is dropped.
                let _ = (&mut l.task).await;
                tracing::info!(service = %key.0, port = key.1, "proxy: listener closed");
            }
            if !wanted_services.contains(&key.0) {
                m.forget_proxy_service(&key.0);
            }
        }
        self.unbound.retain(|k| desired.contains_key(k));
        for (key, backends) in std::mem::take(&mut desired) {
            if let Some(l) = self.listeners.get(&key) {
                let mut current = l.backends.write().unwrap_or_else(|e| e.into_inner());
                if **current != backends {
                    *current = Arc::new(backends);
                }
                continue;
            }
            match TcpListener::bind((self.address.as_str(), key.1)).await {
                Ok(listener) => {
                    let local = listener
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], key.1)));
                    let shared: Backends = Arc::new(RwLock::new(Arc::new(backends)));
                    let task =
                        tokio::spawn(serve(listener, shared.clone(), m.proxy_service(&key.0)));
                    tracing::info!(service = %key.0, %local, "proxy: listening");
                    self.unbound.remove(&key);
                    self.listeners.insert(
                        key,
                        Listener {
                            backends: shared,
                            local,
                            task,
                        },
                    );
                }
                Err(e) => {
                    m.proxy_listen_failures.inc();
                    if self.unbound.insert(key.clone()) {
                        tracing::warn!(
                            service = %key.0,
                            "proxy: cannot listen on {}:{}: {e} (retrying on changes)",
                            self.address,
                            key.1
                        );
                    } else {
                        tracing::debug!(service = %key.0, "proxy: still cannot listen on port {}: {e}", key.1);
                    }
                }
            }
        }
        m.proxy_listeners.set(self.listeners.len() as i64);
    }
}

/// Accepts connections for one service port, handing each to the next backend in turn.
async fn serve(listener: TcpListener, backends: Backends, m: ProxyServiceMetrics) {
    let mut next: usize = 0;
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                m.accepted.inc();
                let snapshot = backends.read().unwrap_or_else(|e| e.into_inner()).clone();
                let start = next;
                next = next.wrapping_add(1);
                tokio::spawn(forward(client, snapshot, start, m.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: do not spin.
                tracing::debug!("proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decrements the active-connections gauge when the connection ends, however it ends.
struct Active(prometheus::IntGauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connects to `backends[start]`, or the following ones once around the ring.
async fn dial(backends: &[Backend], start: usize, m: &ProxyServiceMetrics) -> Option<TcpStream> {
    for i in 0..backends.len() {
        let b = &backends[(start + i) % backends.len()];
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((b.host.as_str(), b.port)),
        )
        .await
        {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) => tracing::debug!("proxy: endpoint {}:{}: {e}", b.host, b.port),
            Err(_) => tracing::debug!("proxy: endpoint {}:{}: connect timed out", b.host, b.port),
        }
        m.endpoint_failures.inc();
    }
    None
}

async fn forward(
    client: TcpStream,
    backends: Arc<Vec<Backend>>,
    start: usize,
    m: ProxyServiceMetrics,
) {
    m.active.inc();
    let _active = Active(m.active.clone());
    if backends.is_empty() {
        m.no_endpoints.inc();
        return; // dropping the socket closes the connection
    }
    let Some(upstream) = dial(&backends, start, &m).await else {
        m.unreachable.inc();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut client = Counted {
        inner: client,
        bytes: m.bytes_in.clone(),
    };
    let mut upstream = Counted {
        inner: upstream,
        bytes: m.bytes_out.clone(),
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("proxy: connection ended: {e}");
    }
}

/// A stream that counts the bytes read from it (as they flow, not at the end).
struct Counted<S> {
    inner: S,
    bytes: prometheus::IntCounter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.inc_by(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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

/// Keeps the proxy in line with the caches, once both hold a whole state (no listener without
/// its endpoints): after every burst of changes, and while a port waits to be bound.
async fn follow(followed: Arc<Followed>, mut proxy: Proxy) {
    let mut retry = tokio::time::interval(BIND_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = followed.changed.notified() => {}
            _ = retry.tick(), if proxy.has_unbound() => {}
        }
        if !followed.listed.iter().all(|l| l.load(Ordering::SeqCst)) {
            continue;
        }
        let services = objects(&followed.services);
        let endpoints = objects(&followed.endpoints);
        proxy.reconcile(services.iter(), endpoints.iter()).await;
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

/// Runs the service proxy for ever: listeners at `address` for every service, following the
/// services and endpoints of all namespaces. Aborting the task closes every listener.
pub async fn run(masters: Masters, address: String) {
    let followed = Arc::new(Followed::new());
    let source: Arc<dyn Source> = Arc::new(masters);
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
        follow(followed.clone(), Proxy::new(address)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// A backend that sends its id (one byte) on every connection, then echoes.
    async fn backend(id: u8) -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    if s.write_all(&[id]).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn service(name: &str, port: u16) -> Value {
        json!({"metadata": {"namespace": "test", "name": name},
               "spec": {"ports": [{"port": port, "protocol": "TCP", "targetPort": 8080}]}})
    }

    fn endpoints(name: &str, backends: &[SocketAddr]) -> Value {
        let subsets: Vec<Value> = backends
            .iter()
            .map(|b| json!({"addresses": [{"ip": b.ip().to_string()}], "ports": [{"port": b.port(), "protocol": "TCP"}]}))
            .collect();
        json!({"metadata": {"namespace": "test", "name": name}, "subsets": subsets})
    }

    /// Connects through the proxy and reads the id of the backend it reached.
    async fn connect(port: u16) -> (TcpStream, u8) {
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        let mut id = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut id))
            .await
            .expect("id in time")
            .expect("id");
        (s, id[0])
    }

    async fn echo(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(buf, msg);
    }

    #[test]
    fn desired_matches_ports_by_name_and_skips_udp() {
        let svc = json!({"metadata": {"namespace": "ns", "name": "web"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "port": 9100, "targetPort": 9100},
                {"name": "dns", "port": 53, "protocol": "UDP"}]}});
        let ep = json!({"metadata": {"namespace": "ns", "name": "web"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9100, "protocol": "TCP"}]},
            {"addresses": [{"ip": "127.0.0.2"}], "ports": [{"name": "http", "port": 32001, "protocol": "TCP"}]}]});
        let other = json!({"metadata": {"namespace": "ns", "name": "other"}, "spec": {"ports": [{"port": 81}]}});
        let external = json!({"metadata": {"namespace": "ns", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "x", "ports": [{"port": 82}]}});
        let d = desired([&svc, &other, &external], [&ep]);
        let b = |h: &str, p| Backend {
            host: h.into(),
            port: p,
        };
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(
            d[&("ns/web".to_string(), 80)],
            vec![
                b("10.0.0.1", 8080),
                b("10.0.0.2", 8080),
                b("127.0.0.2", 32001)
            ]
        );
        assert_eq!(
            d[&("ns/web".to_string(), 9100)],
            vec![b("10.0.0.1", 9100), b("10.0.0.2", 9100)]
        );
        assert!(d[&("ns/other".to_string(), 81)].is_empty());
    }

    #[tokio::test]
    async fn round_robin_live_updates_and_removal() {
        let (a, _ta) = backend(b'A').await;
        let (b, _tb) = backend(b'B').await;
        let port = free_port();
        let svc = service("rr", port);
        let mut proxy = Proxy::new("127.0.0.1");
        proxy.reconcile([&svc], [&endpoints("rr", &[a, b])]).await;
        assert_eq!(proxy.listening().len(), 1);

        // Round robin.
        let mut ids = Vec::new();
        let mut open = Vec::new();
        for _ in 0..4 {
            let (mut s, id) = connect(port).await;
            echo(&mut s, b"hello").await;
            ids.push(id);
            open.push((s, id));
        }
        assert_ne!(ids[0], ids[1], "{ids:?}");
        assert_eq!(ids[0], ids[2], "{ids:?}");
        assert_eq!(ids[1], ids[3], "{ids:?}");
        let m = metrics::get().proxy_service("test/rr");
        assert!(m.accepted.get() >= 4);
        assert!(m.bytes_in.get() >= 20 && m.bytes_out.get() >= 24);
        assert_eq!(m.active.get(), 4);

        // Only B left: open connections (to A too) keep working, new ones go to B.
        proxy.reconcile([&svc], [&endpoints("rr", &[b])]).await;
        for (s, _) in open.iter_mut() {
            echo(s, b"still there").await;
        }
        for _ in 0..3 {
            let (mut s, id) = connect(port).await;
            assert_eq!(id, b'B');
            echo(&mut s, b"x").await;
        }

        // No endpoints: a new connection is closed at once.
        proxy.reconcile([&svc], [&endpoints("rr", &[])]).await;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 8];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed promptly")
        {
            Ok(n) => assert_eq!(n, 0, "nothing served"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
        assert!(m.no_endpoints.get() >= 1);
        for (s, _) in open.iter_mut() {
            echo(s, b"and still").await;
        }

        // Service removed: the listener is closed.
        proxy.reconcile([], []).await;
        assert!(proxy.listening().is_empty());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpStream::connect(("127.0.0.1", port)).await {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                other => {
                    assert!(Instant::now() < deadline, "listener still open: {other:?}");
                    tokio::task::yield_now().await;
                }
            }
        }
        // Connections already open survive the listener.
        for (s, _) in open.iter_mut() {
            echo(s, b"bye").await;
        }
    }

    /// Polls until connecting to `port` succeeds (`true`) or is refused (`false`).
    async fn wait_listening(port: u16, listening: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = TcpStream::connect(("127.0.0.1", port)).await.is_ok();
            if ok == listening {
                return;
            }
            assert!(Instant::now() < deadline, "port {port} listening: {ok}");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn follow_applies_cache_changes() {
        let (a, _ta) = backend(b'A').await;
        let port = free_port();
        let svc = service("follow", port);
        let followed = Arc::new(Followed::new());
        let task = tokio::spawn(follow(followed.clone(), Proxy::new("127.0.0.1")));
        let record = |v: &Value| remote::record_of::<ServiceFacts>(&with_rv(v)).unwrap();
        followed.services.replace(vec![record(&svc)]);
        followed.mark_listed(0);
        // No listener before the endpoints' cache holds a whole state too.
        followed.endpoints.replace(Vec::new());
        followed.mark_listed(1);
        wait_listening(port, true).await;
        let ep = with_rv(&endpoints("follow", &[a]));
        let (key, rec) = remote::record_of::<EndpointsFacts>(&ep).unwrap();
        followed.endpoints.apply(&key, Some(rec));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut id = [0u8; 1];
            if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut id)).await {
                assert_eq!(id[0], b'A');
                break;
            }
            assert!(Instant::now() < deadline, "endpoints never applied");
        }
        // A re-list without the service closes its listener.
        followed.services.replace(Vec::new());
        wait_listening(port, false).await;
        task.abort();
    }

    fn with_rv(v: &Value) -> Value {
        let mut v = v.clone();
        v["metadata"]["resourceVersion"] = json!("1");
        v
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_skipped() {
        let (a, _ta) = backend(b'A').await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let port = free_port();
        let svc = service("skip", port);
        let mut proxy = Proxy::new("127.0.0.1");
        proxy
            .reconcile([&svc], [&endpoints("skip", &[dead, a])])
            .await;
        for _ in 0..4 {
            let (mut s, id) = connect(port).await;
            assert_eq!(id, b'A');
            echo(&mut s, b"ok").await;
        }
        let m = metrics::get().proxy_service("test/skip");
        assert!(m.endpoint_failures.get() >= 2);
    }

    #[tokio::test]
    async fn taken_port_is_retried_not_fatal() {
        let (a, _ta) = backend(b'A').await;
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = blocker.local_addr().unwrap().port();
        let svc = service("taken", port);
        let ep = endpoints("taken", &[a]);
        let mut proxy = Proxy::new("127.0.0.1");
        proxy.reconcile([&svc], [&ep]).await;
        assert!(proxy.listening().is_empty());
        assert!(proxy.has_unbound());
        proxy.reconcile([&svc], [&ep]).await;
        assert!(proxy.has_unbound());
        drop(blocker);
        proxy.reconcile([&svc], [&ep]).await;
        assert!(!proxy.has_unbound());
        let (mut s, id) = connect(port).await;
        assert_eq!(id, b'A');
        echo(&mut s, b"ok").await;
    }
}

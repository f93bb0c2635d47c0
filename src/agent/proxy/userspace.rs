//! The userspace proxy (`--proxy-mode userspace`): for every TCP port of every service, a
//! listener on the service port at the agent's address that forwards each connection to one of
//! the service's endpoints, round robin. Cluster IPs are not served (they are not this host's
//! addresses): that takes the kernel mode.
//!
//! Endpoint changes swap the backend list a listener picks from; connections already open keep
//! their backend. A listener without endpoints closes each connection at once; a service (or
//! port) that goes away closes its listener. A port that cannot be bound (taken) is logged once
//! and retried on the next change, and periodically.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::services::{Backend, Protocol, ServicePort};
use crate::agent::metrics::{self, ProxyServiceMetrics};

/// How long one attempt to connect to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The listeners the service ports call for (TCP ones), each with its backends.
fn desired(ports: &[ServicePort]) -> BTreeMap<ListenerKey, Vec<Backend>> {
    ports
        .iter()
        .filter(|p| p.protocol == Protocol::Tcp)
        .map(|p| ((p.service.clone(), p.port), p.backends.clone()))
        .collect()
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

    /// Listeners open per service.
    pub fn listeners_per_service(&self) -> Vec<(String, usize)> {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for (service, _) in self.listeners.keys() {
            *out.entry(service.clone()).or_default() += 1;
        }
        out.into_iter().collect()
    }

    /// Whether some listener could not be bound (and should be retried).
    pub fn has_unbound(&self) -> bool {
        !self.unbound.is_empty()
    }

    /// Brings the listeners in line with the service ports: closes those no longer wanted,
    /// swaps the backends of the others and opens new ones.
    pub async fn reconcile(&mut self, ports: &[ServicePort]) {
        let m = metrics::get();
        let mut desired = desired(ports);
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

#[cfg(test)]
mod tests {
    use super::super::services::service_ports;
    use super::super::{follow, EndpointsFacts, Followed, Rules};
    use super::*;
    use crate::informer::{remote, ServiceFacts};
    use serde_json::{json, Value};
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

    #[tokio::test]
    async fn round_robin_live_updates_and_removal() {
        let (a, _ta) = backend(b'A').await;
        let (b, _tb) = backend(b'B').await;
        let port = free_port();
        let svc = service("rr", port);
        let mut proxy = Proxy::new("127.0.0.1");
        proxy
            .reconcile(&service_ports([&svc], [&endpoints("rr", &[a, b])]))
            .await;
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
        proxy
            .reconcile(&service_ports([&svc], [&endpoints("rr", &[b])]))
            .await;
        for (s, _) in open.iter_mut() {
            echo(s, b"still there").await;
        }
        for _ in 0..3 {
            let (mut s, id) = connect(port).await;
            assert_eq!(id, b'B');
            echo(&mut s, b"x").await;
        }

        // No endpoints: a new connection is closed at once.
        proxy
            .reconcile(&service_ports([&svc], [&endpoints("rr", &[])]))
            .await;
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
        proxy.reconcile(&service_ports([], [])).await;
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
        let task = tokio::spawn(follow(
            followed.clone(),
            Rules::Userspace(Proxy::new("127.0.0.1")),
        ));
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
            .reconcile(&service_ports([&svc], [&endpoints("skip", &[dead, a])]))
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
        proxy.reconcile(&service_ports([&svc], [&ep])).await;
        assert!(proxy.listening().is_empty());
        assert!(proxy.has_unbound());
        proxy.reconcile(&service_ports([&svc], [&ep])).await;
        assert!(proxy.has_unbound());
        drop(blocker);
        proxy.reconcile(&service_ports([&svc], [&ep])).await;
        assert!(!proxy.has_unbound());
        let (mut s, id) = connect(port).await;
        assert_eq!(id, b'A');
        echo(&mut s, b"ok").await;
    }
}

//! The HTTP/1.1 server loop of both master ports, in place of `axum::serve`, which cannot bound
//! how long a client may take to send its request headers: a client that never finishes them
//! (a slow loris) would hold its connection, and a task, forever. Here hyper reads headers under
//! [`Timeouts::header_read`]; request bodies are bounded by the API's own body timeout layer.
//!
//! Graceful shutdown, so that a client of a rolling restart sees an answer, a 503 or a refused
//! connection — never a connection reset under a request it sent:
//! - on `stop`, for [`DRAIN`], the listener stays open and every new connection is answered 503
//!   ("stopping", `Connection: close`), a definite failure a client retries elsewhere (and
//!   learns to avoid this master by): closing the listener at once would reset the connections
//!   the kernel had already queued, whose requests were sent;
//! - meanwhile the connections already open run on, so a request already sent is read;
//! - then the listener closes, and every connection finishes its request in flight within
//!   [`SHUTDOWN_GRACE`] (a watch does not finish: it is cut) and closes; the loop returns once
//!   all have, so a master stops promptly however many watches it serves.

use std::time::Duration;

use crate::api::auth::ClientCertificate;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use keelson_raft::server::PeerIdentity;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

/// What a connection's transport proved about its caller, attached to each of its requests:
/// the client certificate it presented (verified by the listener's CA), and on the Raft port
/// the master that certificate names. Plain TCP and TLS without a client certificate prove
/// nothing.
pub trait Peer {
    fn certificate(&self) -> Option<ClientCertificate>;
}

impl Peer for TcpStream {
    fn certificate(&self) -> Option<ClientCertificate> {
        None
    }
}

impl Peer for TlsStream<TcpStream> {
    fn certificate(&self) -> Option<ClientCertificate> {
        let cert = self.get_ref().1.peer_certificates()?.first()?;
        Some(ClientCertificate(cert.clone().into_owned()))
    }
}

/// How long a connection may take to finish its request after the stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long after the stop signal new connections are answered 503 and open ones run on, before
/// the listener closes and open connections are told to close.
const DRAIN: Duration = Duration::from_millis(300);

/// How long a client may take over the parts of a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the connection's start (or the previous response) to the end of the headers.
    pub header_read: Duration,
}

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    L: Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin + Peer,
{
    // Connections hold a receiver each; once every one is dropped, all have closed.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut draining_until = None;
    loop {
        let (io, peer) = match draining_until {
            None => tokio::select! {
                biased;
                _ = stopped(&mut stop) => {
                    draining_until = Some(tokio::time::Instant::now() + DRAIN);
                    continue;
                }
                conn = listener.accept() => conn,
            },
            Some(until) => tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                (io, _) = listener.accept() => {
                    tokio::spawn(refuse(io, closed_rx.clone()));
                    continue;
                }
            },
        };
        let router = router.clone();
        let mut stop = stop.clone();
        let closed = closed_rx.clone();
        let certificate = io.certificate();
        let identity = certificate
            .as_ref()
            .map(|c| PeerIdentity(super::peer_tls::certified_master(&c.0)));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                if let Some(certificate) = &certificate {
                    req.extensions_mut().insert(certificate.clone());
                }
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!("connection: {e}");
                    }
                }
                _ = stopped(&mut stop) => {
                    // Requests already sent are read ([`DRAIN`]); then requests in flight
                    // finish, and long-running ones (watches, which clients resume elsewhere)
                    // are cut after the grace.
                    if tokio::time::timeout(DRAIN, conn.as_mut()).await.is_err() {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                    }
                }
            }
            drop(closed);
        });
    }
    drop(closed_rx);
    closed_tx.closed().await;
}

/// Answers every request of a connection accepted while stopping with 503, and closes it.
async fn refuse<I>(io: I, closed: watch::Receiver<()>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
        let status = crate::registry::ApiError::new(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this master is stopping: retry on another",
        )
        .to_status();
        hyper::Response::builder()
            .status(hyper::StatusCode::SERVICE_UNAVAILABLE)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONNECTION, "close")
            .body(axum::body::Body::from(status.to_string()))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(SHUTDOWN_GRACE)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
    drop(closed);
}

/// Resolves once `stop` is true (without holding its lock across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

//! The admin HTTP server's accept loop, with the bounds `axum::serve`
//! does not offer.
//!
//! The admin endpoint shares the process's file descriptors with the RESP
//! listener. Unbounded, a few hundred idle admin connections (a scanner, a
//! misconfigured health checker, anyone on the network) exhausted them and
//! RESP clients got no answer. So: at most
//! [`AdminLimits::max_connections`] at a time (more are closed the moment
//! they are accepted, so descriptors stay bounded), a connection must send
//! its request headers within [`AdminLimits::header_timeout`] (also the
//! keep-alive idle limit between requests), and one that moves no byte
//! either way for [`AdminLimits::idle_timeout`] is closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::idle::IdleTimeout;

/// Default [`AdminLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default [`AdminLimits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`AdminLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// After a failed `accept` (out of descriptors, most likely) the loop
/// pauses this long instead of spinning on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Refusals and accept errors are logged at most this often: under a
/// flood, one line with a count beats thousands.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// On stop, open connections get this long to finish their request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How many connections the admin server keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Open connections at most; more are closed as soon as accepted.
    pub max_connections: usize,
    /// A connection must send a request's headers within this, counted
    /// from its opening or from the end of its previous response.
    pub header_timeout: Duration,
    /// A connection that moves no byte either way (a body that never
    /// comes, a response nobody reads) for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Counts events to log and says when to log them.
struct Throttled {
    count: u64,
    last: Option<Instant>,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            count: 0,
            last: None,
        }
    }

    /// Counts one event; returns how many to report now, if it is time.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// Accepts and serves until `stop` turns true, then lets open connections
/// finish (within [`SHUTDOWN_GRACE`]) and returns.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Semaphore::new panics above MAX_PERMITS; no process holds that many.
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut conns = JoinSet::new();
    let mut refused = Throttled::new();
    let mut failed = Throttled::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Reap finished connections so the set stays as small as the bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        conns.spawn(connection(stream, app.clone(), limits, permit, stop.clone()));
                    }
                    Err(_) => {
                        // Dropping the stream closes it: the descriptor is
                        // back at once and the client sees the close.
                        drop(stream);
                        if let Some(n) = refused.hit() {
                            tracing::warn!(
                                closed = n,
                                max_connections = limits.max_connections,
                                "admin: connection(s) closed at once because admin.max_connections are open; \
                                 if this is legitimate traffic raise admin.max_connections, otherwise find who holds them open"
                            );
                        }
                    }
                },
                Err(e) => {
                    if let Some(n) = failed.hit() {
                        tracing::warn!(error = %e, failures = n, "admin: accept failed; retrying shortly");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        _ = stopped(&mut stop) => break,
                    }
                }
            },
        }
    }
    drop(listener);
    // Connections saw `stop` too and are shutting down gracefully; the
    // rest are cut when the set is dropped.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves once `stop` is true (or its sender is gone: nobody can stop
/// us any more, so stopping is right).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection with the header and idle timeouts; its permit is
/// released when it ends.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: AdminLimits,
    _permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = http.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and clients going away are routine here.
        tracing::debug!(error = %e, "admin: connection ended");
    }
}

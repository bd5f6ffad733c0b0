//! The listener: accepts clients, enforces `max_clients`, and drains on
//! shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use upstream::{HealthHandle, Upstream};

use crate::config::LimitsConfig;
use crate::incident::IncidentCounters;
use crate::metrics::{publish_state, Metrics};
use crate::session::Session;

/// What the proxy needs to start.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Address to listen on (`127.0.0.1:6380`; port 0 picks a free one).
    pub listen: String,
    /// Per-client limits.
    pub limits: LimitsConfig,
}

/// State every session shares.
pub(crate) struct Shared {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) health: HealthHandle,
    pub(crate) limits: LimitsConfig,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) counters: Arc<IncidentCounters>,
    clients: AtomicUsize,
    next_id: AtomicU64,
}

/// The proxy server.
pub struct Proxy;

/// A running proxy.
pub struct ProxyHandle {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    done: mpsc::Receiver<()>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the listener and starts accepting clients.
    pub async fn start(
        settings: ProxySettings,
        upstream: Arc<Upstream>,
        health: HealthHandle,
    ) -> std::io::Result<ProxyHandle> {
        let listener = TcpListener::bind(&settings.listen).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream,
            health: health.clone(),
            limits: settings.limits,
            metrics: Metrics::new(),
            shutdown: shutdown_rx.clone(),
            counters: Arc::default(),
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let (done_tx, done_rx) = mpsc::channel(1);
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            done_tx,
            shutdown_rx.clone(),
        ));
        tokio::spawn(watch_state(health, shutdown_rx));
        Ok(ProxyHandle {
            local_addr,
            shutdown: shutdown_tx,
            accept,
            done: done_rx,
            shared,
        })
    }
}

impl ProxyHandle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connected clients now.
    pub fn clients(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Counts for the incident log (served locally, journaled, rejected).
    pub fn counters(&self) -> Arc<IncidentCounters> {
        self.shared.counters.clone()
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.shared.upstream
    }

    /// Resolves when shutdown has been asked for (e.g. by `shutdown`).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops accepting, lets every session finish what it has in flight
    /// (each command is bounded by its deadline), waits at most `grace`,
    /// then returns. True when every session finished in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        let _ = (&mut self.accept).await;
        tokio::time::timeout(grace, self.done.recv()).await.is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    done: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let n = shared.clients.fetch_add(1, Ordering::AcqRel) + 1;
        if n > shared.limits.max_clients {
            shared.clients.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.rejected.increment(1);
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = stream.write_all(b"-ERR max number of clients reached (limits.max_clients); connection closed\r\n").await;
            });
            continue;
        }
        shared.metrics.clients.increment(1.0);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let local = stream.local_addr().unwrap_or(peer);
        let session = Session::new(shared.clone(), id, peer, local);
        let shared2 = shared.clone();
        let done = done.clone();
        tokio::spawn(async move {
            session.run(stream).await;
            shared2.clients.fetch_sub(1, Ordering::AcqRel);
            shared2.metrics.clients.decrement(1.0);
            drop(done);
        });
    }
}

async fn watch_state(health: HealthHandle, mut shutdown: watch::Receiver<bool>) {
    let mut rx = health.subscribe();
    loop {
        publish_state(rx.borrow_and_update().state);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

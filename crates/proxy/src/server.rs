//! The listeners: accept clients, enforce `max_clients`, and drain on
//! shutdown. The same accept loop serves the proxy's sessions and
//! standalone mode's; only the session differs. Beside the plain listener
//! an optional TLS one ([`TlsListen`]) runs the handshake in the client's
//! own task, so a slow handshake never holds up accepting others.

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
    /// Durable keyspaces served locally during outages (`None`: every key
    /// is fail-fast).
    pub outage: Option<Arc<crate::outage::Outage>>,
    /// `[auth]`: pass-through to Redis's users, or Redoubt's own.
    pub auth: crate::access::AuthMode,
    /// `[tls]`: a TLS listener beside the plain one.
    pub tls: Option<TlsListen>,
}

/// A TLS listener: its address and the acceptor whose certificate SIGHUP
/// reloads.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// Address to listen on (port 0 picks a free one).
    pub listen: String,
    /// Runs each client's handshake with the current certificate.
    pub acceptor: Arc<tls::Acceptor>,
}

/// A client that has not finished its TLS handshake by then is dropped:
/// it holds a `max_clients` slot meanwhile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// State every proxy session shares.
pub(crate) struct Shared {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) health: HealthHandle,
    pub(crate) limits: LimitsConfig,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) counters: Arc<IncidentCounters>,
    pub(crate) outage: Option<Arc<crate::outage::Outage>>,
    /// Logins and what sessions may touch when Redoubt answers itself.
    pub(crate) access: Arc<crate::access::Access>,
    /// `CLIENT LIST` rows of the connected sessions, by client id.
    pub(crate) clients: std::sync::Mutex<std::collections::BTreeMap<u64, ClientRow>>,
    /// Redis's client id of each session's connection for blocking
    /// commands, by the session's id: `CLIENT UNBLOCK` names the session,
    /// Redis knows the connection.
    pub(crate) blocking_ids: std::sync::Mutex<std::collections::HashMap<u64, i64>>,
    /// Local subscribers, for `PUBLISH` while Redis is down.
    pub(crate) pubsub: crate::pubsub::Hub,
}

/// One session's `CLIENT LIST` row: the line with `{age}` left to fill in.
pub(crate) struct ClientRow {
    pub(crate) created: std::time::Instant,
    pub(crate) line: String,
}

/// The proxy server.
pub struct Proxy;

/// A running server (proxy or standalone).
pub struct ProxyHandle {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept: JoinHandle<()>,
    tls_accept: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    listener: Arc<Listener>,
    upstream: Option<Arc<Upstream>>,
    access: Option<Arc<crate::access::Access>>,
}

/// A session's future.
pub(crate) type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
/// Starts one client's session (stream, peer, client id).
pub(crate) type Spawner = Arc<dyn Fn(tls::Stream, SocketAddr, u64) -> BoxFuture + Send + Sync>;

/// What the accept loop shares with the handle.
pub(crate) struct Listener {
    pub(crate) limits: LimitsConfig,
    pub(crate) metrics: Metrics,
    pub(crate) counters: Arc<IncidentCounters>,
    clients: AtomicUsize,
    next_id: AtomicU64,
}

impl Listener {
    pub(crate) fn new(
        limits: LimitsConfig,
        metrics: Metrics,
        counters: Arc<IncidentCounters>,
    ) -> Arc<Listener> {
        Arc::new(Listener {
            limits,
            metrics,
            counters,
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        })
    }
}

impl Proxy {
    /// Binds the listener and starts accepting clients.
    pub async fn start(
        settings: ProxySettings,
        upstream: Arc<Upstream>,
        health: HealthHandle,
    ) -> std::io::Result<ProxyHandle> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Metrics::new();
        let counters: Arc<IncidentCounters> = settings
            .outage
            .as_ref()
            .map(|o| o.counters())
            .unwrap_or_default();
        // Permissions matter wherever Redoubt answers itself: connection
        // commands (`CLIENT …`, `HELLO`) always, local data in outages.
        let access = crate::access::Access::new(
            settings.auth.clone(),
            upstream.url().clone(),
            health.clone(),
            true,
            Duration::from_millis(settings.limits.command_timeout_ms),
        );
        if let Some(dir) = settings.outage.as_ref().and_then(|o| o.data_dir()) {
            access.keep_default_in(dir.join("acl-default.resp"));
        }
        let pools = Arc::downgrade(&upstream);
        access.on_revoked(move |user, unauthenticated| {
            if let Some(up) = pools.upgrade() {
                tracing::info!(
                    user,
                    "redis no longer accepts this login: its pooled connections are closed"
                );
                up.close_logins(user, unauthenticated);
            }
        });
        access.spawn_refresh(shutdown_rx.clone());
        let shared = Arc::new(Shared {
            upstream: upstream.clone(),
            health: health.clone(),
            limits: settings.limits,
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            counters: counters.clone(),
            outage: settings.outage.clone(),
            access: access.clone(),
            clients: Default::default(),
            blocking_ids: Default::default(),
            pubsub: Default::default(),
        });
        let state = Listener::new(settings.limits, metrics, counters);
        let spawn: Spawner = Arc::new(move |stream: tls::Stream, peer, id| {
            let local = stream.local_addr().unwrap_or(peer);
            let session = Session::new(shared.clone(), id, peer, local);
            Box::pin(session.run(stream))
        });
        tokio::spawn(watch_state(health, shutdown_rx.clone()));
        let mut handle = listen(
            &settings.listen,
            settings.tls.as_ref(),
            state,
            Some(upstream),
            (shutdown_tx, shutdown_rx),
            spawn,
        )
        .await?;
        handle.access = Some(access);
        Ok(handle)
    }
}

/// Binds `addr` (and the TLS listener, if any) and runs `spawn` for every
/// accepted client.
pub(crate) async fn listen(
    addr: &str,
    tls: Option<&TlsListen>,
    state: Arc<Listener>,
    upstream: Option<Arc<Upstream>>,
    shutdown: (watch::Sender<bool>, watch::Receiver<bool>),
    spawn: Spawner,
) -> std::io::Result<ProxyHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    // Both bound before either accepts: a TLS address that cannot be
    // bound fails the start, not half of it.
    let tls_listener = match tls {
        Some(t) => {
            let l = TcpListener::bind(&t.listen).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("tls.listen {}: {e}", t.listen))
            })?;
            Some((l, t.acceptor.clone()))
        }
        None => None,
    };
    let (done_tx, done_rx) = mpsc::channel(1);
    let mut tls_addr = None;
    let mut tls_accept = None;
    if let Some((l, acceptor)) = tls_listener {
        tls_addr = Some(l.local_addr()?);
        tls_accept = Some(tokio::spawn(accept_loop(
            l,
            Some(acceptor),
            state.clone(),
            done_tx.clone(),
            shutdown.1.clone(),
            spawn.clone(),
        )));
    }
    let accept = tokio::spawn(accept_loop(
        listener,
        None,
        state.clone(),
        done_tx,
        shutdown.1,
        spawn,
    ));
    Ok(ProxyHandle {
        local_addr,
        tls_addr,
        shutdown: shutdown.0,
        accept,
        tls_accept,
        done: done_rx,
        listener: state,
        upstream,
        access: None,
    })
}

impl ProxyHandle {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the TLS listener listens, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Connected clients now.
    pub fn clients(&self) -> usize {
        self.listener.clients.load(Ordering::Relaxed)
    }

    /// Counts for the incident log (served locally, journaled, rejected).
    pub fn counters(&self) -> Arc<IncidentCounters> {
        self.listener.counters.clone()
    }

    /// The upstream it forwards to (`None` in standalone mode).
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }

    /// Logins and learned permissions (`None` in standalone mode).
    pub fn access(&self) -> Option<&Arc<crate::access::Access>> {
        self.access.as_ref()
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
        if let Some(t) = self.tls_accept.take() {
            t.abort();
            let _ = t.await;
        }
        tokio::time::timeout(grace, self.done.recv()).await.is_ok()
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<tls::Acceptor>>,
    state: Arc<Listener>,
    done: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
    spawn: Spawner,
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
        let n = state.clients.fetch_add(1, Ordering::AcqRel) + 1;
        if n > state.limits.max_clients {
            state.clients.fetch_sub(1, Ordering::AcqRel);
            state.metrics.rejected.increment(1);
            state.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if tls.is_some() {
                // Plain text would be garbage to a TLS client; a handshake
                // just to refuse would spend what the limit protects.
                continue;
            }
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached (limits.max_clients); connection closed\r\n")
                    .await;
            });
            continue;
        }
        state.metrics.clients.increment(1.0);
        let slot = ClientSlot {
            state: state.clone(),
            _done: done.clone(),
        };
        let id = state.next_id.fetch_add(1, Ordering::Relaxed);
        let Some(acceptor) = tls.clone() else {
            let session = spawn(tls::Stream::Plain(stream), peer, id);
            tokio::spawn(async move {
                // The slot is given back when the task ends, however it
                // ends: a session that panics must not keep its
                // `max_clients` slot.
                let _slot = slot;
                session.await;
            });
            continue;
        };
        let spawn = spawn.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => spawn(stream, peer, id).await,
                Ok(Err(why)) => {
                    tracing::debug!(%peer, %why, "TLS handshake with a client failed")
                }
                Err(_) => tracing::debug!(%peer, "TLS handshake with a client timed out"),
            }
        });
    }
}

/// A client's place under `max_clients`, held by its session's task.
struct ClientSlot {
    state: Arc<Listener>,
    /// Shutdown waits until every session has dropped its sender.
    _done: mpsc::Sender<()>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.state.clients.fetch_sub(1, Ordering::AcqRel);
        self.state.metrics.clients.decrement(1.0);
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

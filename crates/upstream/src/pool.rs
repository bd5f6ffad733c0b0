//! Shared pipelined connections per (user, db, protocol), and the capped
//! supply of dedicated ones.
//!
//! Many client sessions share a few connections: that keeps Redis far from
//! `maxclients` and lets it read many commands per syscall. Connections are
//! opened lazily, and a failed connect waits out a jittered exponential
//! backoff before the next try, so proxies never stampede a recovering
//! Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::conn::{open_stream, Conn, ConnectError, Credentials, Handshake};
use crate::endpoint::Endpoint;
use crate::url::UpstreamUrl;

/// Shared connections per pool by default.
pub const DEFAULT_SHARED_CONNECTIONS: usize = 2;
/// Dedicated connections (WATCH, blocking commands, subscribers) at most.
pub const DEFAULT_MAX_DEDICATED: usize = 1000;

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Shared connections in each pool.
    pub shared_connections: usize,
    /// Cap on dedicated connections, all pools together.
    pub max_dedicated: usize,
    /// Connect plus handshake timeout.
    pub connect_timeout: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            shared_connections: DEFAULT_SHARED_CONNECTIONS,
            max_dedicated: DEFAULT_MAX_DEDICATED,
            connect_timeout: Duration::from_millis(1000),
        }
    }
}

/// What makes connections interchangeable: the same identity, database
/// and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// `None`: no `AUTH` (Redis's `default` user without a password).
    pub auth: Option<Credentials>,
    /// Selected database.
    pub db: u32,
    /// RESP version, 2 or 3.
    pub proto: u8,
}

/// The upstream Redis: its address and every pool to it.
pub struct Upstream {
    url: UpstreamUrl,
    cfg: UpstreamConfig,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    dedicated: Arc<Semaphore>,
}

/// Why no dedicated connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum DedicatedError {
    /// All `max_dedicated` are in use.
    #[error(
        "all {0} dedicated upstream connections are in use (blocking commands, WATCH, subscribers)"
    )]
    Exhausted(usize),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// A connection held by one session; the cap's permit is returned and the
/// connection closed when it is dropped.
pub struct Dedicated {
    /// The connection.
    pub conn: Conn,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        self.conn.close();
    }
}

impl Upstream {
    /// An upstream at `url`; nothing connects until used.
    pub fn new(url: UpstreamUrl, cfg: UpstreamConfig) -> Arc<Upstream> {
        Arc::new(Upstream {
            url,
            cfg,
            pools: Mutex::new(HashMap::new()),
            dedicated: Arc::new(Semaphore::new(cfg.max_dedicated)),
        })
    }

    /// The configured URL.
    pub fn url(&self) -> &UpstreamUrl {
        &self.url
    }

    /// The pool for `key`, created on first use.
    pub fn pool(&self, key: &PoolKey) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(key) {
            return p.clone();
        }
        let p = Arc::new(Pool::new(self.url.endpoint(), handshake(key), self.cfg));
        pools.insert(key.clone(), p.clone());
        p
    }

    /// Drops the pool for `key` (after Redis refused its credentials), so
    /// failed logins do not accumulate empty pools.
    pub fn forget(&self, key: &PoolKey) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if pools.get(key).is_some_and(|p| p.live() == 0) {
            pools.remove(key);
        }
    }

    /// Closes and drops every pool that logs in as `user` (`AUTH pw`
    /// counts as `default`), and with `unauthenticated` also the pools
    /// that send no `AUTH` at all: Redis no longer accepts that login, and
    /// a connection opened before the change must not serve new sessions.
    pub fn close_logins(&self, user: &str, unauthenticated: bool) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|k, p| {
            let hit = match &k.auth {
                None => unauthenticated,
                Some(c) => c.user.as_deref().unwrap_or("default") == user,
            };
            if hit {
                p.close_all();
            }
            !hit
        });
    }

    /// Total live shared connections (for metrics and tests).
    pub fn shared_connections(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.values().map(|p| p.live()).sum()
    }

    /// Dedicated connections in use.
    pub fn dedicated_in_use(&self) -> usize {
        self.cfg.max_dedicated - self.dedicated.available_permits()
    }

    fn permit(&self) -> Result<OwnedSemaphorePermit, DedicatedError> {
        self.dedicated
            .clone()
            .try_acquire_owned()
            .map_err(|_| DedicatedError::Exhausted(self.cfg.max_dedicated))
    }

    /// A pipelined connection for one session alone (WATCH, blocking).
    pub async fn dedicated(&self, key: &PoolKey) -> Result<Dedicated, DedicatedError> {
        let permit = self.permit()?;
        let conn = Conn::connect(
            &self.url.endpoint(),
            &handshake(key),
            self.cfg.connect_timeout,
        )
        .await?;
        Ok(Dedicated {
            conn,
            _permit: permit,
        })
    }

    /// A raw stream for one session alone (subscribers, MONITOR), with the
    /// permit that counts it against the cap.
    pub async fn tunnel(
        &self,
        key: &PoolKey,
    ) -> Result<(tls::Stream, OwnedSemaphorePermit), DedicatedError> {
        self.tunnel_to(key, &self.url.endpoint()).await
    }

    /// [`Upstream::tunnel`] to `endpoint`: in front of a cluster, the node
    /// a sharded subscriber's channel lives on.
    pub async fn tunnel_to(
        &self,
        key: &PoolKey,
        endpoint: &Endpoint,
    ) -> Result<(tls::Stream, OwnedSemaphorePermit), DedicatedError> {
        let permit = self.permit()?;
        let s = open_stream(endpoint, &handshake(key), self.cfg.connect_timeout).await?;
        Ok((s, permit))
    }
}

fn handshake(key: &PoolKey) -> Handshake {
    Handshake {
        auth: key.auth.clone(),
        db: key.db,
        proto: key.proto,
        name: None,
    }
}

/// Shared connections with one identity, db and protocol.
pub struct Pool {
    addr: Endpoint,
    hs: Handshake,
    connect_timeout: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<Retry>,
}

struct Retry {
    not_before: Option<Instant>,
    backoff: Backoff,
    last_error: Option<ConnectError>,
}

impl Slot {
    fn alive(&self) -> Option<Conn> {
        self.conn
            .lock()
            .ok()?
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned()
    }
}

impl Pool {
    fn new(addr: Endpoint, hs: Handshake, cfg: UpstreamConfig) -> Pool {
        let slots = (0..cfg.shared_connections.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(Retry {
                    not_before: None,
                    backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
                    last_error: None,
                }),
            })
            .collect();
        Pool {
            addr,
            hs,
            connect_timeout: cfg.connect_timeout,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// Closes every connection; commands in flight on them fail as on a
    /// lost connection.
    fn close_all(&self) {
        for slot in &self.slots {
            if let Some(c) = slot.conn.lock().ok().and_then(|mut g| g.take()) {
                c.close();
            }
        }
    }

    /// Live connections in this pool.
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.alive().is_some()).count()
    }

    /// A live connection, round-robin; connects one if none is alive, no
    /// later than `deadline`. An authentication error comes back at once.
    pub async fn get(self: &Arc<Self>, deadline: Instant) -> Result<Conn, ConnectError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        if let Some(c) = self.slots[start].alive() {
            return Ok(c);
        }
        if let Some(c) = (1..n).find_map(|i| self.slots[(start + i) % n].alive()) {
            // Use a live one now and bring the empty slot up in the
            // background, so load spreads once it is there.
            let me = self.clone();
            tokio::spawn(async move {
                let _ = me
                    .connect_slot(start, Instant::now() + me.connect_timeout)
                    .await;
            });
            return Ok(c);
        }
        self.connect_slot(start, deadline).await
    }

    async fn connect_slot(&self, i: usize, deadline: Instant) -> Result<Conn, ConnectError> {
        let slot = &self.slots[i];
        let timeout_err = || ConnectError::Timeout(self.addr.to_string());
        let mut retry = tokio::time::timeout_at(deadline, slot.connecting.lock())
            .await
            .map_err(|_| timeout_err())?;
        if let Some(c) = slot.alive() {
            return Ok(c);
        }
        if let Some(t) = retry.not_before {
            if t > deadline {
                return Err(retry.last_error.clone().unwrap_or_else(timeout_err));
            }
            tokio::time::sleep_until(t).await;
        }
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(self.connect_timeout);
        match Conn::connect(&self.addr, &self.hs, budget).await {
            Ok(c) => {
                retry.backoff.reset();
                retry.not_before = None;
                retry.last_error = None;
                if let Ok(mut g) = slot.conn.lock() {
                    *g = Some(c.clone());
                }
                Ok(c)
            }
            Err(e) => {
                retry.not_before = Some(Instant::now() + retry.backoff.next_delay());
                retry.last_error = Some(e.clone());
                Err(e)
            }
        }
    }
}

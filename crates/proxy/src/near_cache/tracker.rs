//! The invalidation listener: one dedicated RESP3 connection in
//! `CLIENT TRACKING ON BCAST` mode whose push frames drop keys from the
//! [`NearCache`].
//!
//! Its life, as a loop: connect (`HELLO 3` with the upstream credentials,
//! then `CLIENT TRACKING ON BCAST PREFIX …`); on `+OK` flush the cache and
//! mark it fresh ([`NearCache::start_tracking`]); apply every `invalidate`
//! push (a key list drops those keys, nil — `FLUSHALL`/`FLUSHDB` — drops
//! everything); when the connection breaks, or health turns Down (a
//! stopped Redis keeps its sockets open and sends nothing, so the
//! connection alone cannot tell), close it, start the staleness clock
//! ([`NearCache::stop_tracking`]) and reconnect with jittered exponential
//! backoff, but never while health says Down (reads are served from the
//! cache then, and a new connection would flush it): at once when health
//! leaves Down.
//!
//! This connection only ever reads after its setup: replies and pushes
//! never share a queue with data-path commands, so a push cannot be taken
//! for a reply.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use resp::frame::encode_command;
use resp::{parse_frame, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use upstream::backoff::Backoff;
use upstream::conn::open_stream;
use upstream::{Handshake, Health, HealthHandle, State};

use super::NearCache;

/// `CLIENT SETNAME` of the tracking connection when the handshake names
/// none, so operators can spot it in `CLIENT LIST`.
pub const CONNECTION_NAME: &str = "redoubt-tracking";
/// Connect + handshake + `CLIENT TRACKING` reply bound.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First reconnect wait (upper bound of the jittered draw).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest reconnect wait.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Where and how the tracker connects.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Where Redis is (plain or TLS).
    pub addr: upstream::Endpoint,
    /// Credentials (from the upstream URL) and name. `proto` is forced to
    /// 3, since invalidations arrive as RESP3 pushes; `db` does not matter
    /// (tracking is per key name, across dbs).
    pub handshake: Handshake,
    /// Bound on connecting and setting up tracking.
    pub connect_timeout: Duration,
    /// First reconnect wait.
    pub backoff_base: Duration,
    /// Longest reconnect wait.
    pub backoff_cap: Duration,
}

impl TrackerConfig {
    /// The defaults for everything but where and who. What is tracked is
    /// the cache's [`NearCache::tracked`].
    pub fn new(addr: impl Into<upstream::Endpoint>, handshake: Handshake) -> TrackerConfig {
        TrackerConfig {
            addr: addr.into(),
            handshake,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
        }
    }
}

/// What the tracker has done so far, published on every change (for
/// `/status`, logs and tests that await an event instead of sleeping).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerStatus {
    /// A tracking connection is established.
    pub connected: bool,
    /// Tracking connections established (each flushed the cache).
    pub connects: u64,
    /// Tracking connections lost or closed on health Down.
    pub disconnects: u64,
    /// `invalidate` pushes applied (one may name many keys).
    pub invalidations: u64,
    /// Why the last connection ended or the last attempt failed.
    pub last_error: Option<String>,
}

/// The running tracker. Dropping it stops the task (and marks the cache
/// stopped), so keep it as long as the proxy runs.
#[must_use = "dropping the Tracker stops it"]
pub struct Tracker {
    task: JoinHandle<()>,
    status: watch::Receiver<TrackerStatus>,
}

impl Tracker {
    /// A receiver of [`TrackerStatus`] changes.
    pub fn status(&self) -> watch::Receiver<TrackerStatus> {
        self.status.clone()
    }

    /// Stops the task and waits for it to end; the cache is then marked
    /// stopped (its staleness clock runs from now).
    pub async fn stop(mut self) {
        self.task.abort();
        // Aborted or not, the task is over once this resolves, and its
        // `StopOnDrop` has run.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the tracker for `cache`. It runs until the [`Tracker`] is
/// dropped, watching `health` for Down.
pub fn spawn_tracker(cache: Arc<NearCache>, cfg: TrackerConfig, health: HealthHandle) -> Tracker {
    let (tx, rx) = watch::channel(TrackerStatus::default());
    let task = tokio::spawn(run(cache, cfg, health, tx));
    Tracker { task, status: rx }
}

/// Marks the cache stopped however the task ends (abort included), so a
/// cache whose tracker is gone never passes for fresh.
struct StopOnDrop(Arc<NearCache>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop_tracking(unix_ms(SystemTime::now()));
    }
}

/// Why a tracking connection ended.
enum End {
    /// Read error, EOF, or a frame that does not parse.
    Lost(String),
    /// Health turned Down at this moment.
    Down(SystemTime),
}

async fn run(
    cache: Arc<NearCache>,
    mut cfg: TrackerConfig,
    health: HealthHandle,
    status: watch::Sender<TrackerStatus>,
) {
    let _stop = StopOnDrop(cache.clone());
    cfg.handshake.proto = 3;
    if cfg.handshake.name.is_none() {
        cfg.handshake.name = Some(CONNECTION_NAME.to_string());
    }
    let mut watcher = HealthWatch::new(&health);
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    loop {
        // While health says Down the cache is what reads are served from;
        // Redis accepting again before the prober has seen `up_after` good
        // probes must not flush it yet. Reconnect once health leaves Down.
        if watcher.down_now() {
            watcher.left_down().await;
        }
        match connect(&cfg, &cache).await {
            Ok(_) if watcher.down_now() => {
                // Health turned Down while connecting: keep the cache.
                continue;
            }
            Ok((stream, buf)) => {
                backoff.reset();
                cache.start_tracking();
                tracing::info!(addr = %cfg.addr, "near-cache: tracking invalidations; cache flushed");
                status.send_modify(|s| {
                    s.connected = true;
                    s.connects += 1;
                });
                let end = follow(stream, buf, &cache, &mut watcher, &status).await;
                let (at, why) = match end {
                    End::Lost(why) => (SystemTime::now(), why),
                    End::Down(since) => (since, "redis is down".to_string()),
                };
                cache.stop_tracking(unix_ms(at));
                tracing::warn!(
                    addr = %cfg.addr,
                    %why,
                    max_stale_ms = cache.max_stale_ms(),
                    "near-cache: invalidations stopped; serving cached values until max_stale_ms"
                );
                status.send_modify(|s| {
                    s.connected = false;
                    s.disconnects += 1;
                    s.last_error = Some(why);
                });
            }
            Err(why) => {
                tracing::debug!(addr = %cfg.addr, %why, "near-cache: tracking connection failed");
                status.send_modify(|s| s.last_error = Some(why));
            }
        }
        // Wait, but not past the moment health says Redis is back: then
        // reconnecting at once is what restores a fresh cache soonest.
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = watcher.left_down() => {}
        }
    }
}

/// Opens the connection and turns tracking on. Returns the stream and any
/// bytes read past the `+OK`.
async fn connect(
    cfg: &TrackerConfig,
    cache: &NearCache,
) -> Result<(tls::Stream, BytesMut), String> {
    let mut stream = open_stream(&cfg.addr, &cfg.handshake, cfg.connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    encode_command(&mut out, &cache.tracked().command());
    let setup = async {
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("sending CLIENT TRACKING: {e}"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("sending CLIENT TRACKING: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            match parse_frame(&buf, &Limits::upstream()) {
                Ok(Some((frame, n))) => {
                    buf.advance(n);
                    match frame {
                        // Nothing is tracked yet, but a push is never the
                        // reply: skip it.
                        Frame::Push(_) => continue,
                        f if f.is_error() => {
                            let text = f.error_text().unwrap_or_default();
                            return Err(format!(
                                "CLIENT TRACKING refused: {}",
                                String::from_utf8_lossy(text)
                            ));
                        }
                        _ => return Ok(buf),
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad reply to CLIENT TRACKING: {e}")),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("connection closed during CLIENT TRACKING".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading CLIENT TRACKING reply: {e}")),
            }
        }
    };
    let buf = tokio::time::timeout(cfg.connect_timeout, setup)
        .await
        .map_err(|_| format!("no reply to CLIENT TRACKING from {} in time", cfg.addr))??;
    Ok((stream, buf))
}

/// Applies pushes until the connection ends or health turns Down.
async fn follow(
    mut stream: tls::Stream,
    mut buf: BytesMut,
    cache: &NearCache,
    watcher: &mut HealthWatch,
    status: &watch::Sender<TrackerStatus>,
) -> End {
    let limits = Limits::upstream();
    loop {
        loop {
            match parse_frame(&buf, &limits) {
                Ok(Some((frame, n))) => {
                    buf.advance(n);
                    if apply(&frame, cache) {
                        status.send_modify(|s| s.invalidations += 1);
                    } else {
                        tracing::debug!(?frame, "near-cache: ignoring unexpected frame");
                    }
                }
                Ok(None) => break,
                Err(e) => return End::Lost(format!("unreadable frame from redis: {e}")),
            }
        }
        tokio::select! {
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => return End::Lost("connection closed by redis".into()),
                Ok(_) => {}
                Err(e) => return End::Lost(format!("reading invalidations: {e}")),
            },
            since = watcher.went_down() => return End::Down(since),
        }
    }
}

/// Applies one frame if it is an `invalidate` push; false otherwise.
fn apply(frame: &Frame, cache: &NearCache) -> bool {
    let Frame::Push(items) = frame else {
        return false;
    };
    let [kind, keys] = items.as_slice() else {
        return false;
    };
    if !kind
        .as_bytes()
        .is_some_and(|k| k.eq_ignore_ascii_case(b"invalidate"))
    {
        return false;
    }
    match keys {
        Frame::Array(ks) | Frame::Set(ks) => {
            for k in ks {
                if let Some(key) = k.as_bytes() {
                    cache.invalidate(key);
                }
            }
        }
        // `FLUSHALL` / `FLUSHDB`: Redis cannot name the keys.
        Frame::Null | Frame::NullArray | Frame::NullBulk => cache.flush(),
        other => {
            // Unknown shape: dropping everything is the safe reading.
            tracing::warn!(
                ?other,
                "near-cache: unexpected invalidate payload; flushing"
            );
            cache.flush();
        }
    }
    true
}

/// Health transitions into and out of Down.
struct HealthWatch {
    /// `None` once the prober is gone: then no transition will come.
    rx: Option<watch::Receiver<Health>>,
    down: bool,
}

impl HealthWatch {
    fn new(health: &HealthHandle) -> HealthWatch {
        let mut rx = health.subscribe();
        let down = rx.borrow_and_update().state == State::Down;
        HealthWatch { rx: Some(rx), down }
    }

    /// Whether health says Down now (remembered, like a seen transition).
    fn down_now(&mut self) -> bool {
        if let Some(rx) = self.rx.as_mut() {
            self.down = rx.borrow_and_update().state == State::Down;
        }
        self.down
    }

    /// The next health observation (pending forever without a prober).
    async fn next(&mut self) -> Health {
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return std::future::pending().await;
            };
            if rx.changed().await.is_err() {
                self.rx = None;
                continue;
            }
            return rx.borrow_and_update().clone();
        }
    }

    /// Resolves when the state goes from anything else to Down, with the
    /// moment it did. Cancel-safe: a transition seen is remembered.
    async fn went_down(&mut self) -> SystemTime {
        loop {
            let h = self.next().await;
            let was = std::mem::replace(&mut self.down, h.state == State::Down);
            if self.down && !was {
                return h.since;
            }
        }
    }

    /// Resolves when the state goes from Down to anything else.
    async fn left_down(&mut self) {
        loop {
            let h = self.next().await;
            let was = std::mem::replace(&mut self.down, h.state == State::Down);
            if was && !self.down {
                return;
            }
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

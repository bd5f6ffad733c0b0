//! Shared fixtures: a real redis-server and an in-process proxy in front
//! of it, plus a raw RESP client for exact-byte assertions.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proxy::{LimitsConfig, Proxy, ProxyHandle, ProxySettings};
use resp::{parse_frame, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upstream::health::spawn_prober;
use upstream::{HealthConfig, HealthHandle, State, Upstream, UpstreamConfig, UpstreamUrl};

pub use test_support::RedisServer;

pub struct Fixture {
    pub proxy: ProxyHandle,
    pub health: HealthHandle,
    pub upstream: Arc<Upstream>,
}

pub fn fast_health() -> HealthConfig {
    HealthConfig {
        interval_ms: 50,
        timeout_ms: 100,
        down_after: 2,
        up_after: 2,
    }
}

pub async fn start_with(url: &str, health: HealthConfig, limits: LimitsConfig) -> Fixture {
    let url = UpstreamUrl::parse(url).expect("test URL parses");
    let health = spawn_prober(url.clone(), health);
    let upstream = Upstream::new(
        url,
        UpstreamConfig {
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let proxy = Proxy::start(
        ProxySettings {
            listen: "127.0.0.1:0".into(),
            limits,
            outage: None,
            auth: Default::default(),
            tls: None,
        },
        upstream.clone(),
        health.clone(),
    )
    .await
    .expect("proxy binds");
    Fixture {
        proxy,
        health,
        upstream,
    }
}

pub async fn start(redis: &RedisServer) -> Fixture {
    let f = start_with(&redis.url(), fast_health(), LimitsConfig::default()).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    f
}

impl Fixture {
    pub fn addr(&self) -> String {
        self.proxy.local_addr().to_string()
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Waits for the prober to publish `state` (an event, not a sleep).
    pub async fn wait_state(&self, state: State, within: Duration) {
        let mut rx = self.health.subscribe();
        tokio::time::timeout(within, rx.wait_for(|h| h.state == state))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "state did not become {state:?} within {within:?}; now {:?}",
                    self.health.current()
                )
            })
            .expect("prober alive");
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect through proxy")
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.addr()).await
    }
}

/// A raw RESP connection: send bytes, read decoded frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one command without reading its reply (a client that blocks,
    /// or one whose reply is read later).
    pub async fn send_cmd(&mut self, args: &[&str]) {
        let mut out = BytesMut::new();
        resp::frame::encode_command(&mut out, args);
        self.send(&out).await;
    }

    pub async fn cmd(&mut self, args: &[&str]) -> Frame {
        self.send_cmd(args).await;
        self.read().await.expect("a reply")
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn read(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, n)) =
                parse_frame(&self.buf, &Limits::upstream()).expect("valid RESP from proxy")
            {
                let _ = self.buf.split_to(n);
                return Some(f);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("reply within 10 s")
                    .ok()?;
            if n == 0 {
                return None;
            }
        }
    }
}

pub fn err_text(f: &Frame) -> String {
    String::from_utf8_lossy(
        f.error_text()
            .unwrap_or_else(|| panic!("expected an error, got {f:?}")),
    )
    .into_owned()
}

/// A proxy with local keyspaces in front of Redis at `url`: journal in a
/// temporary data_dir, recovery running, probes every 50 ms (a 500 ms
/// timeout, so a loaded CI machine does not flap the state).
pub struct Local {
    pub f: Fixture,
    pub outage: Arc<proxy::outage::Outage>,
    pub journal: Arc<journal::Journal>,
    pub dir: tempfile::TempDir,
}

/// Starts [`Local`] with node id `node`, `auth`, and a near-cache of 1 MiB
/// when `near_cache`; returns once Redis is Up (and the near-cache's
/// invalidations flow).
pub async fn start_local(
    url: &str,
    keyspaces: proxy::policy::Keyspaces,
    node: &str,
    auth: proxy::access::AuthMode,
    near_cache: bool,
) -> Local {
    let cfg = journal::JournalConfig::default();
    start_local_journal(url, keyspaces, node, auth, near_cache, cfg).await
}

/// [`start_local`] with a journal configured as `cfg`.
pub async fn start_local_journal(
    url: &str,
    keyspaces: proxy::policy::Keyspaces,
    node: &str,
    auth: proxy::access::AuthMode,
    near_cache: bool,
    cfg: journal::JournalConfig,
) -> Local {
    let health = HealthConfig {
        interval_ms: 50,
        timeout_ms: 500,
        down_after: 2,
        up_after: 2,
    };
    start_local_health(url, keyspaces, node, auth, near_cache, cfg, health).await
}

/// [`start_local_journal`] with the prober configured as `health`.
pub async fn start_local_health(
    url: &str,
    keyspaces: proxy::policy::Keyspaces,
    node: &str,
    auth: proxy::access::AuthMode,
    near_cache: bool,
    cfg: journal::JournalConfig,
    health: HealthConfig,
) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = journal::Journal::open(dir.path(), cfg).unwrap();
    let journal = Arc::new(journal);
    let outage = proxy::outage::Outage::new(keyspaces, journal.clone(), Arc::default()).unwrap();
    let url = UpstreamUrl::parse(url).unwrap();
    let health = spawn_prober(url.clone(), health);
    outage.spawn_recovery(
        url.clone(),
        dir.path().to_path_buf(),
        node.into(),
        health.clone(),
    );
    if near_cache {
        outage.start_near_cache(1 << 20, 60_000, &url, health.clone());
    }
    let upstream = Upstream::new(
        url,
        UpstreamConfig {
            connect_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let proxy = Proxy::start(
        ProxySettings {
            listen: "127.0.0.1:0".into(),
            limits: LimitsConfig::default(),
            outage: Some(outage.clone()),
            auth,
            tls: None,
        },
        upstream.clone(),
        health.clone(),
    )
    .await
    .expect("proxy binds");
    let f = Fixture {
        proxy,
        health,
        upstream,
    };
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    if let Some(near) = outage.near_cache() {
        // Reads are kept only once invalidations flow.
        test_support::wait_for("tracking to start", Duration::from_secs(5), || {
            near.is_tracking()
        });
    }
    Local {
        f,
        outage,
        journal,
        dir,
    }
}

impl Local {
    /// Waits until Redoubt has read `user`'s permissions: local data goes
    /// only to sessions whose Redis user is known.
    pub fn wait_knows(&self, user: &str) {
        let access = self.f.proxy.access().expect("proxy mode has access");
        test_support::wait_for(
            &format!("redoubt to read {user}'s ACL"),
            Duration::from_secs(5),
            || access.knows(user),
        );
    }
}

/// Attaches a replica of `keyspaces`' durable keys to `s`'s outage and
/// waits until its first full resync is loaded.
pub async fn attach_replica(
    s: &Local,
    url: &str,
    keyspaces: proxy::policy::Keyspaces,
) -> Arc<proxy::replica::Replica> {
    attach_replica_keeping(s, url, keyspaces, false).await
}

/// [`attach_replica`], keeping the `cache` keyspaces too when `cache`.
pub async fn attach_replica_keeping(
    s: &Local,
    url: &str,
    keyspaces: proxy::policy::Keyspaces,
    cache: bool,
) -> Arc<proxy::replica::Replica> {
    let url = UpstreamUrl::parse(url).unwrap();
    let max_bytes = 256 << 20;
    let link = proxy::replica::link_config(&url, 0, s.dir.path(), max_bytes);
    let replica = proxy::replica::Replica::spawn(
        keyspaces,
        proxy::replica::ReplicaConfig {
            link,
            max_bytes,
            restore: true,
            cache,
        },
        Some(s.f.health.clone()),
    );
    s.outage.attach_replica(replica.clone());
    let r = replica.clone();
    tokio::task::spawn_blocking(move || {
        test_support::wait_for("the replica's first sync", Duration::from_secs(10), || {
            r.is_complete()
        })
    })
    .await
    .unwrap();
    replica
}

/// Waits until `replica` has applied everything `redis` has replicated.
pub async fn wait_caught_up(redis: &RedisServer, replica: &proxy::replica::Replica) {
    let info = redis.cmd(&["INFO", "replication"]);
    let master: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO replication has master_repl_offset");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while replica.status().offset < master {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica stays behind: {} < {master}: {:?}",
            replica.status().offset,
            replica.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A Redis that keeps every acknowledged write across a kill (AOF,
/// `always`) and sends its replicas the RDB at once.
pub fn aof_redis() -> RedisServer {
    RedisServer::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--repl-diskless-sync-delay",
        "0",
    ])
}

/// Waits until Redis reports `n` clients blocked.
pub fn wait_blocked(redis: &RedisServer, n: usize) {
    let want = format!("blocked_clients:{n}\r\n");
    test_support::wait_for("clients to block in redis", Duration::from_secs(5), || {
        redis.cmd(&["INFO", "clients"]).contains(&want)
    });
}

/// Waits until `n` blocking commands wait on `s`'s local store.
pub async fn wait_blocked_locally(s: &Local, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while s.outage.store().waiting_for_pushes() != n {
        assert!(tokio::time::Instant::now() < deadline, "no worker waits");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Redoubt in front of `redis` with `pattern` durable, once it knows
/// `default`'s permissions: local data goes only to sessions whose Redis
/// user is known, here unauthenticated ones.
pub async fn durable(redis: &RedisServer, pattern: &str) -> Local {
    let s = start_local(
        &redis.url(),
        proxy::policy::Keyspaces::new(vec![(pattern.into(), proxy::policy::Policy::Durable)]),
        "test-node",
        Default::default(),
        false,
    )
    .await;
    s.wait_knows("default");
    s
}

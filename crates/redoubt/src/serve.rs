//! `redoubt serve`: start the proxy, the prober and the admin endpoint,
//! then wait for SIGTERM/SIGINT and drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use upstream::{health::spawn_prober, Upstream, UpstreamConfig, UpstreamUrl};

use crate::config::{self, Loaded};

/// Runs `serve` (logging already set up by [`init_logging`]); exit 2 on
/// invalid config, 0 after a clean shutdown.
pub fn run(loaded: Loaded) -> ExitCode {
    if !loaded.problems.is_empty() {
        for p in &loaded.problems {
            eprintln!("config: {p}");
        }
        eprintln!(
            "{} problem(s) in the configuration; not started (see `redoubt config check`)",
            loaded.problems.len()
        );
        return ExitCode::from(2);
    }
    // Standalone runs on one thread: the journal's order must be the order
    // in which commands changed the store (see proxy::standalone). A proxy
    // given one CPU runs on one thread too: a pool of one worker still
    // hands work between that worker and the thread driving the runtime,
    // which cost about a tenth of the unpipelined throughput in
    // scripts/bench.sh's placement.
    let standalone = loaded.config.upstream.is_empty();
    let threads = match loaded.config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    let rt = if standalone || threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redoubt: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = if standalone {
        rt.block_on(serve_standalone(loaded.config))
    } else {
        rt.block_on(serve(loaded.config))
    };
    // A script that never ends runs on a blocking thread the runtime would
    // otherwise wait for at exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redoubt: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for a person at a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr, `RUST_LOG` filtered (default `info`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // Colour codes inside JSON strings would only corrupt the values.
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// `redoubt_build_info{version}`: always 1; the label says which release
/// answers, so a dashboard can show it and an alert can join on it.
const BUILD_INFO: &str = "redoubt_build_info";

/// Describes every metric (this crate's and the proxy's) and publishes the
/// build info. Descriptions go to the installed recorder, so this runs
/// right after it is installed, in both modes.
fn describe_metrics() {
    proxy::metrics::describe();
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label is the running Redoubt's version"
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(upstream::health::PROBE_DURATION.into()),
            proxy::metrics::DURATION_BUCKETS,
        )
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe_metrics();
    // Histogram samples pile up until upkeep folds them into buckets;
    // without a scraper nothing else would, and memory would grow.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Creates and locks `data_dir` (one process per data dir: two would share
/// a journal and a node id) and returns the lock with the node id.
fn claim_data_dir(
    cfg: &config::Config,
    mode: &str,
) -> anyhow::Result<(journal::DataDirLock, String)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    // A predecessor killed inside an fsync still holds the lock for a
    // moment; a supervisor restarting us at once must not be refused for
    // that. Blocking here is harmless: nothing runs on the runtime yet.
    let lock = journal::DataDirLock::acquire_waiting(
        &cfg.data_dir,
        journal::lock::EXITING_HOLDER_PATIENCE,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // A standalone server's journal is its whole dataset; a proxy would
    // replay it into Redis as if it were an outage's writes (and a proxy's
    // journal is not a dataset). Each data_dir serves one mode.
    let path = cfg.data_dir.join("mode");
    match std::fs::read_to_string(&path) {
        Ok(m) if m.trim() != mode => anyhow::bail!(
            "data_dir {} belongs to a redoubt that ran {}; starting it as {mode} would mix the two \
             (a standalone dataset would be replayed into Redis, or an outage journal served as a dataset). \
             Nothing was started. Use another data_dir, or, if you mean it, move the data away and delete {}",
            cfg.data_dir.display(),
            m.trim(),
            path.display()
        ),
        Ok(_) => {}
        Err(_) => std::fs::write(&path, format!("{mode}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?,
    }
    let id = node_id(&cfg.data_dir, &cfg.node_id)?;
    Ok((lock, id))
}

/// Opens the journal and says what recovery found.
fn open_journal(
    cfg: &config::Config,
    jcfg: journal::JournalConfig,
) -> anyhow::Result<journal::Journal> {
    let (journal, recovery) = journal::Journal::open(&cfg.data_dir, jcfg)
        .with_context(|| format!("cannot open the journal in {}", cfg.data_dir.display()))?;
    if let Some(t) = &recovery.torn_tail {
        tracing::warn!(%t, "journal: a torn last record was dropped (a write that was never acknowledged)");
    }
    if let Some(c) = &recovery.corruption {
        tracing::error!(%c, "journal: corrupt record; nothing after it is used and durable writes are refused until an operator acts (redoubt journal inspect, then redoubt journal repair)");
    }
    Ok(journal)
}

/// No upstream: the local store serves everything, journaled.
async fn serve_standalone(cfg: config::Config) -> anyhow::Result<ExitCode> {
    let (_lock, node_id) = claim_data_dir(&cfg, "standalone")?;
    let prometheus = install_metrics()?;
    let limits = config::limits(&cfg).map_err(anyhow::Error::msg)?;
    let jcfg = config::journal(&cfg).map_err(anyhow::Error::msg)?;
    let journal = open_journal(&cfg, jcfg.clone())?;
    tokio::spawn(journal.relay());
    let journal = Arc::new(journal);
    metrics::gauge!(proxy::metrics::JOURNAL_MAX_BYTES).set(jcfg.max_bytes as f64);
    let store = store::Store::new(store::StoreConfig::default());
    // INFO shows the port clients reach us on.
    if let Some(port) = cfg.listen.rsplit(':').next() {
        let _ = store.set_param("port", port);
    }
    let started = std::time::Instant::now();
    let bar = crate::journal_cmd::terminal_counter("restoring the store from the journal");
    let restored = proxy::standalone::restore_watched(&store, &journal, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tracing::info!(
        entries = restored.entries,
        commands = restored.commands,
        errors = restored.errors,
        ms = started.elapsed().as_millis() as u64,
        "restored the store from the journal"
    );
    let settings = proxy::standalone::StandaloneSettings {
        listen: cfg.listen.clone(),
        limits,
        journal_max_bytes: jcfg.max_bytes,
        compact_ratio: cfg.journal.compact_ratio,
        compact_min_bytes: cfg
            .journal
            .compact_min_bytes
            .bytes()
            .map_err(anyhow::Error::msg)?,
        users: match config::auth(&cfg).map_err(anyhow::Error::msg)? {
            proxy::access::AuthMode::Local(users) => users,
            proxy::access::AuthMode::Passthrough => Vec::new(),
        },
        tls: tls_listen(&cfg)?,
    };
    spawn_reload_on_hangup(settings.tls.as_ref().map(|t| t.acceptor.clone()));
    let server = proxy::standalone::Standalone::start(settings, store.clone(), journal.clone())
        .await
        .with_context(|| format!("cannot listen on {} (listen)", cfg.listen))?;
    let health = upstream::HealthHandle::fixed(upstream::State::Standalone);
    let status_journal = journal.clone();
    let metrics_journal = journal.clone();
    let metrics_store = store.clone();
    let ready_journal = journal.clone();
    let ready_max = jcfg.max_bytes;
    let status_store = store.clone();
    let status_max = jcfg.max_bytes;
    let started = std::time::Instant::now();
    let status: admin::StatusFn = Arc::new(move || {
        // Refusing because it failed (corrupt, an I/O error) or because it
        // is full: the page and `redoubt status` say either, as /readyz does.
        let refusing =
            proxy::standalone::write_refusal(&status_journal, status_max, 0).map(|(_, why)| why);
        let usage = status_store.try_usage();
        serde_json::json!({
            "state": "standalone",
            "node_id": node_id,
            "uptime_seconds": started.elapsed().as_secs(),
            // Null while a script holds the store.
            "keys": usage.map(|(keys, _)| keys),
            "used_memory": usage.map(|(_, bytes)| bytes),
            "journal": {
                "bytes": status_journal.bytes(),
                "max_bytes": status_max,
                "fsyncs": status_journal.fsyncs(),
                "refusing": refusing,
            },
        })
    });
    let token = (!cfg.admin.token.is_empty()).then(|| cfg.admin.token.clone());
    let admin = admin::serve(
        &cfg.admin.listen,
        config::admin_limits(&cfg),
        admin::AdminState {
            health,
            local_keyspaces: true,
            metrics: Arc::new(move || {
                // The standalone journal is the dataset and grows with every
                // write; read its size at the scrape, when it is wanted.
                metrics::gauge!(proxy::metrics::JOURNAL_BYTES).set(metrics_journal.bytes() as f64);
                // The store is the dataset: its keys and memory, as of the
                // scrape (the last figures stand while a script holds it).
                if let Some((keys, bytes)) = metrics_store.try_usage() {
                    metrics::gauge!(proxy::metrics::FALLBACK_KEYS).set(keys as f64);
                    metrics::gauge!(proxy::metrics::FALLBACK_MEMORY).set(bytes as f64);
                }
                let mut text = prometheus.render();
                proxy::metrics::DURATIONS.render(&mut text);
                text
            }),
            status,
            incidents: Arc::new(|| serde_json::json!({ "open": null, "recent": [] })),
            token,
            replay: None,
            writes_refused: Some(Arc::new(move || {
                proxy::standalone::write_refusal(&ready_journal, ready_max, 0).map(|(_, why)| why)
            })),
        },
    )
    .await
    .with_context(|| format!("cannot listen on {} (admin.listen)", cfg.admin.listen))?;
    tracing::info!(mode = "standalone", listen = %server.local_addr(), tls_listen = ?server.tls_addr(), admin = %admin.local_addr, data_dir = %cfg.data_dir.display(), "redoubt serving standalone: no upstream, the local store serves every command");
    wait_for_signal().await;
    let grace = Duration::from_millis(cfg.limits.command_timeout_ms) + Duration::from_secs(1);
    server.shutdown(grace).await;
    admin.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: config::Config) -> anyhow::Result<ExitCode> {
    let (_lock, node_id) = claim_data_dir(&cfg, "proxy")?;
    let prometheus = install_metrics()?;
    let mut url =
        UpstreamUrl::parse(&cfg.upstream)?.with_sentinel_auth(config::sentinel_auth(&cfg));
    let mut tls_client = None;
    if url.tls {
        let client = config::upstream_tls(&cfg)
            .map_err(|e| anyhow::anyhow!("upstream_tls: {e}; nothing was started"))?;
        if client.options().insecure_skip_verify {
            tracing::warn!(
                upstream = %url.redacted(),
                "upstream_tls.insecure_skip_verify is on: Redis's certificate is NOT checked, so anyone between here and Redis can read and change every command and reply; use it only to test, and set upstream_tls.ca_file instead"
            );
        }
        url = url.with_tls(client.clone());
        tls_client = Some(client);
    }
    let limits = config::limits(&cfg).map_err(anyhow::Error::msg)?;
    let auth = config::auth(&cfg).map_err(anyhow::Error::msg)?;
    let health = spawn_prober(url.clone(), cfg.health);
    let upstream = Upstream::new(
        url.clone(),
        UpstreamConfig {
            connect_timeout: Duration::from_millis(limits.command_timeout_ms),
            ..UpstreamConfig::default()
        },
    );
    let outage = local_keyspaces(&cfg, &url, &node_id, &health)?;
    let tls_listener = tls_listen(&cfg)?;
    spawn_reload_on_hangup(tls_listener.as_ref().map(|t| t.acceptor.clone()));
    let proxy = proxy::Proxy::start(
        proxy::ProxySettings {
            listen: cfg.listen.clone(),
            limits,
            outage: outage.clone(),
            auth,
            tls: tls_listener.clone(),
        },
        upstream.clone(),
        health.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on {} (listen)", cfg.listen))?;
    let incidents = proxy::incident::IncidentLog::new(
        Some(cfg.data_dir.join("incidents.jsonl")),
        proxy.counters(),
    );
    let alerts = crate::ops::Alerts::spawn(&cfg.alert, &node_id);
    {
        let alerts = alerts.clone();
        incidents.on_close(move |i| alerts.incident_closed(i));
    }
    crate::ops::spawn_state_alerts(health.clone(), alerts.clone());
    crate::ops::spawn_remediation(
        cfg.remediation.clone(),
        health.clone(),
        incidents.clone(),
        alerts,
    );
    incidents.spawn_follower(health.clone());
    if let Some(replica) = outage.as_ref().and_then(|o| o.replica()) {
        let log = incidents.clone();
        replica.on_restore(move |facts| {
            log.add_restore(serde_json::to_value(facts).unwrap_or_default());
        });
    }
    if let Some(s) = &url.sentinel {
        let log = incidents.clone();
        s.on_failover(move |f| log.add_failover(serde_json::to_value(f).unwrap_or_default()));
    }
    if let Some(c) = &url.cluster {
        incidents.spawn_cluster_follower(c.clone(), health.clone());
    }
    let metrics_incidents = incidents.clone();
    let diagnosis = spawn_diagnosis_on_state_change(
        cfg.upstream.clone(),
        config::sentinel_auth(&cfg),
        tls_client,
        health.clone(),
        incidents.clone(),
    );
    let status_diagnosis = diagnosis.clone();
    let status_outage = outage.clone();
    let status_health = health.clone();
    let status_upstream = upstream.clone();
    let status_access = proxy.access().cloned();
    let redacted = url.redacted();
    let status_sentinel = url.sentinel.clone();
    let status_cluster = url.cluster.clone();
    let started = std::time::Instant::now();
    // The page says what is served while Redis is away ("serving 2
    // keyspaces locally"), and journal.max_bytes is the whole its journal
    // bar measures against.
    let keyspaces: Vec<serde_json::Value> = cfg
        .keyspace
        .iter()
        .map(|k| serde_json::json!({ "pattern": k.pattern, "policy": k.policy }))
        .collect();
    let journal_max = config::journal(&cfg).map(|j| j.max_bytes).ok();
    let status: admin::StatusFn = Arc::new(move || {
        let h = status_health.current();
        let mut journal = status_outage.as_ref().map(|o| o.status_json());
        if let (Some(serde_json::Value::Object(j)), Some(max)) = (journal.as_mut(), journal_max) {
            j.insert("max_bytes".into(), max.into());
        }
        serde_json::json!({
            "state": h.state.as_str(),
            "reason": h.reason,
            "busy": h.busy,
            "since_unix_ms": h.since.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "upstream": redacted,
            "sentinel": status_sentinel.as_ref().map(|s| s.status()),
            "cluster": status_cluster.as_ref().map(|c| c.status()),
            "node_id": node_id,
            "server": h.facts,
            "uptime_seconds": started.elapsed().as_secs(),
            "upstream_connections": { "shared": status_upstream.shared_connections(), "dedicated": status_upstream.dedicated_in_use() },
            "keyspaces": keyspaces,
            "journal": journal,
            "auth": status_access.as_ref().map(|a| a.status_json()),
            "latest_diagnosis": status_diagnosis.lock().ok().and_then(|d| d.clone()),
        })
    });
    let token = (!cfg.admin.token.is_empty()).then(|| cfg.admin.token.clone());
    let admin = admin::serve(
        &cfg.admin.listen,
        config::admin_limits(&cfg),
        admin::AdminState {
            health: health.clone(),
            local_keyspaces: outage.is_some(),
            metrics: Arc::new(move || {
                metrics_incidents.publish_current();
                let mut text = prometheus.render();
                proxy::metrics::DURATIONS.render(&mut text);
                text
            }),
            status,
            incidents: Arc::new(move || incidents.to_json()),
            token,
            replay: outage
                .clone()
                .map(|o| -> admin::StatusFn { Arc::new(move || o.request_replay()) }),
            writes_refused: outage
                .clone()
                .map(|o| -> admin::RefusingFn { Arc::new(move || o.write_refusal()) }),
        },
    )
    .await
    .with_context(|| format!("cannot listen on {} (admin.listen)", cfg.admin.listen))?;
    tracing::info!(
        mode = "proxy",
        listen = %proxy.local_addr(),
        tls_listen = ?proxy.tls_addr(),
        admin = %admin.local_addr,
        upstream = %config::redact_url(&cfg.upstream),
        keyspaces = cfg.keyspace.len(),
        local_keyspaces = outage.is_some(),
        data_dir = %cfg.data_dir.display(),
        "redoubt serving in front of Redis"
    );
    spawn_reachability_log(config::redact_url(&cfg.upstream), health.clone());

    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight commands");
    let grace = Duration::from_millis(cfg.limits.command_timeout_ms) + Duration::from_secs(1);
    let drained = proxy.shutdown(grace).await;
    admin.stop().await;
    if !drained {
        tracing::warn!("some clients were still connected after {grace:?}; closed them");
    }
    Ok(ExitCode::SUCCESS)
}

/// With `durable` or `cache` keyspaces configured: the journal and the
/// local store that serve them while Redis is not Up, the near-cache fed
/// while it is, and the replay when it is back.
fn local_keyspaces(
    cfg: &config::Config,
    url: &UpstreamUrl,
    node_id: &str,
    health: &upstream::HealthHandle,
) -> anyhow::Result<Option<Arc<proxy::outage::Outage>>> {
    use proxy::policy::{Keyspaces, Policy};
    let rules: Vec<(String, Policy)> = cfg
        .keyspace
        .iter()
        .map(|k| {
            (
                k.pattern.clone(),
                Policy::parse(&k.policy).unwrap_or(Policy::FailFast),
            )
        })
        .collect();
    let keyspaces = Keyspaces::new(rules);
    if !keyspaces.any_local() {
        return Ok(None);
    }
    let jcfg = config::journal(cfg).map_err(anyhow::Error::msg)?;
    metrics::gauge!(proxy::metrics::JOURNAL_MAX_BYTES).set(jcfg.max_bytes as f64);
    let journal = open_journal(cfg, jcfg)?;
    tokio::spawn(journal.relay());
    let replica_keyspaces = keyspaces.clone();
    let outage = proxy::outage::Outage::new(keyspaces, Arc::new(journal), Arc::default())?;
    // In front of a cluster, a failed primary's slots are served from the
    // copy of that primary and what the outage writes. The near-cache's
    // invalidation feed reaches one node, not one per shard: not started
    // (README, "Redis Cluster").
    let cluster = url.cluster.clone();
    if let Some(c) = &cluster {
        outage.attach_cluster(c.clone());
        if cfg.replica.mode == "auto" && replica_keyspaces.any_durable() {
            let max_bytes = cfg.replica.max_bytes.bytes().map_err(anyhow::Error::msg)?;
            let host = listen_host(&cfg.listen);
            let port = upstream::replica_face::spawn(host, url.endpoint())
                .with_context(|| format!("cannot listen on {host} for the replica links' face"))?;
            let (url, data_dir, keyspaces) =
                (url.clone(), cfg.data_dir.clone(), replica_keyspaces.clone());
            let make: proxy::shard_replicas::MakeReplica = Box::new(move |addr: &str| {
                // Each primary's full resyncs in a directory of its own.
                let dir = data_dir
                    .join("shards")
                    .join(addr.replace([':', '[', ']'], "_"));
                let mut link = proxy::replica::link_config(&url, port, &dir, max_bytes);
                link.addr = upstream::Endpoint::plain(addr);
                proxy::replica::Replica::spawn(
                    keyspaces.clone(),
                    proxy::replica::ReplicaConfig {
                        link,
                        max_bytes,
                        // Which shard lost what is not tracked per shard yet.
                        restore: false,
                        cache: false,
                    },
                    None,
                )
            });
            outage.attach_shard_replicas(proxy::shard_replicas::ShardReplicas::spawn(
                c.clone(),
                make,
            ));
        }
    }
    if cluster.is_none()
        && cfg.replica.mode == "auto"
        && (replica_keyspaces.any_durable()
            || (cfg.replica.cache_keyspaces && replica_keyspaces.any_local()))
    {
        let max_bytes = cfg.replica.max_bytes.bytes().map_err(anyhow::Error::msg)?;
        // Shown in Redis's INFO replication as this replica's port, where a
        // Sentinel watching Redis will look: a face that answers as a
        // replica never to be promoted, not the proxy (which would pass
        // Sentinel's REPLICAOF on to Redis).
        let host = listen_host(&cfg.listen);
        let port = upstream::replica_face::spawn(host, url.endpoint())
            .with_context(|| format!("cannot listen on {host} for the replica link's face"))?;
        let link = proxy::replica::link_config(url, port, &cfg.data_dir, max_bytes);
        let replica = proxy::replica::Replica::spawn(
            replica_keyspaces,
            proxy::replica::ReplicaConfig {
                link,
                max_bytes,
                restore: cfg.replica.on_data_loss == "restore",
                cache: cfg.replica.cache_keyspaces,
            },
            Some(health.clone()),
        );
        outage.attach_replica(replica);
    }
    let near_max = cfg
        .near_cache
        .max_bytes
        .bytes()
        .map_err(anyhow::Error::msg)?;
    outage.start_near_cache(
        if cluster.is_some() {
            0
        } else {
            near_max as usize
        },
        cfg.near_cache.max_stale_ms,
        url,
        health.clone(),
    );
    outage.spawn_recovery(
        url.clone(),
        cfg.data_dir.clone(),
        node_id.to_string(),
        health.clone(),
    );
    let writer = if cfg.outage.writer == "never" {
        proxy::writer::Writer::never()
    } else {
        proxy::writer::Writer::alone()
    };
    let journal = outage.journal().clone();
    writer.spawn_lease(
        url.clone(),
        node_id.to_string(),
        health.clone(),
        move || journal.pending_entries() > 0,
    );
    outage.attach_writer(writer);
    Ok(Some(outage))
}

/// The host part of a `listen` address, where the replica links' face
/// listens.
fn listen_host(listen: &str) -> &str {
    listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or("127.0.0.1")
}

/// While Redis stays unreachable, how often the warning is repeated: often
/// enough that someone tailing the log sees it, rarely enough not to bury
/// everything else.
const UNREACHABLE_REMINDER: Duration = Duration::from_secs(30);

/// Says in the log when Redis cannot be reached and why (once, then every
/// [`UNREACHABLE_REMINDER`] while it stays so), and when it answers. The
/// prober logs state changes only, and it starts Down: a misspelt or
/// unreachable upstream would otherwise never be mentioned after startup.
fn spawn_reachability_log(upstream: String, health: upstream::HealthHandle) {
    tokio::spawn(async move {
        let mut rx = health.subscribe();
        // When the last warning was logged, while unreachable.
        let mut warned: Option<std::time::Instant> = None;
        let mut answered = false;
        loop {
            let (state, reason, since, failures) = {
                let h = rx.borrow_and_update();
                (h.state, h.reason.clone(), h.since, h.consecutive_failures)
            };
            match state {
                // Before the first probe: nothing to say yet.
                upstream::State::Down if failures == 0 => {}
                upstream::State::Down => {
                    if !matches!(warned, Some(at) if at.elapsed() < UNREACHABLE_REMINDER) {
                        let down_s = std::time::SystemTime::now()
                            .duration_since(since)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        tracing::warn!(
                            upstream = %upstream,
                            reason = %reason,
                            down_for_s = down_s,
                            "redis is unreachable or not serving"
                        );
                        warned = Some(std::time::Instant::now());
                    }
                }
                _ => {
                    if warned.take().is_some() || !answered {
                        tracing::info!(upstream = %upstream, state = state.as_str(), "redis answers");
                    }
                    answered = true;
                }
            }
            // The prober publishes after every probe while Redis is down,
            // so the reminder needs no timer of its own.
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Latest diagnosis, JSON, with the state change that triggered it.
type Diagnosis = Arc<std::sync::Mutex<Option<serde_json::Value>>>;

/// Runs the doctor whenever Redis changes state (down, back, writes
/// rejected): the connection diagnosis while it is unreachable, the full
/// checks once it answers. `/status` shows the latest.
fn spawn_diagnosis_on_state_change(
    url: String,
    sentinel_auth: Option<upstream::Credentials>,
    tls: Option<tls::TlsClient>,
    health: upstream::HealthHandle,
    incidents: Arc<proxy::incident::IncidentLog>,
) -> Diagnosis {
    let latest: Diagnosis = Arc::new(std::sync::Mutex::new(None));
    let out = latest.clone();
    tokio::spawn(async move {
        let mut rx = health.subscribe();
        let mut last = rx.borrow().state;
        let mut baseline = None;
        while rx.changed().await.is_ok() {
            let (state, reason) = {
                let h = rx.borrow_and_update();
                (h.state, h.reason.clone())
            };
            if state == last {
                continue;
            }
            let from = last;
            last = state;
            if matches!(state, upstream::State::Down | upstream::State::WritesDown) {
                // Open it now (the incident follower may not have yet), so
                // the diagnosis of the way down attaches to this outage. Not
                // after diagnosing: by then the outage may be over.
                incidents.open(state, &reason);
            }
            let opts = doctor::DoctorOptions {
                total_timeout: Duration::from_secs(5),
                baseline: baseline.clone(),
                tls: tls.clone(),
                sentinel_auth: sentinel_auth.clone(),
                ..doctor::DoctorOptions::default()
            };
            let report = doctor::diagnose(&url, &opts).await;
            baseline = Some(report.counters.clone());
            tracing::info!(from = from.as_str(), to = state.as_str(), worst = ?report.worst(), findings = report.findings.len(), "diagnosis after state change");
            let json = serde_json::json!({
                "trigger": format!("{} -> {}", from.as_str(), state.as_str()),
                "at_unix_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                "report": report.to_json(),
            });
            incidents.attach(json.clone());
            if let Ok(mut g) = out.lock() {
                *g = Some(json);
            }
        }
    });
    latest
}

/// The configured node id, or the one made on first start and kept in
/// `<data_dir>/node_id` (the replay checkpoint key is named after it).
fn node_id(data_dir: &std::path::Path, configured: &str) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            // Written whole and synced before it is used: a crash at first
            // start must not leave an empty file, whose replacement would
            // name another checkpoint key.
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = data_dir.join("node_id.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{id}\n").as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(data_dir)?.sync_all()
            };
            write().with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}

/// `[tls]`: the TLS listener's settings with its certificate read, or
/// `None` without `tls.listen`.
fn tls_listen(cfg: &config::Config) -> anyhow::Result<Option<proxy::TlsListen>> {
    let acceptor =
        config::tls_acceptor(cfg).map_err(|e| anyhow::anyhow!("tls: {e}; nothing was started"))?;
    Ok(acceptor.map(|acceptor| proxy::TlsListen {
        listen: cfg.tls.listen.clone(),
        acceptor,
    }))
}

/// SIGHUP reads the TLS listener's certificate and key again: handshakes
/// after it use the new ones, connections already open keep theirs. A
/// file that does not load leaves the old certificate in use. Handled
/// even without a TLS listener, so SIGHUP never ends the process.
fn spawn_reload_on_hangup(acceptor: Option<std::sync::Arc<tls::Acceptor>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; the TLS certificate cannot be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &acceptor {
                None => tracing::info!("SIGHUP: no [tls] listener, nothing to reload"),
                Some(a) => match a.reload() {
                    Ok(()) => tracing::info!(
                        cert_file = %a.options().cert_file.display(),
                        "SIGHUP: TLS certificate reloaded; new handshakes use it"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "SIGHUP: the TLS certificate could not be reloaded; the old one stays in use"
                    ),
                },
            }
        }
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

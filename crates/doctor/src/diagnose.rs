//! Running a diagnosis: connect (diagnosing the connection itself when
//! that fails), gather one snapshot with bounded reads, then run
//! every check on it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resp::Frame;
use tokio::time::Instant;

use crate::checks::{checks, NOT_FOR_REDOUBT};
use crate::conn::{self, text, Conn, ConnError};
use crate::finding::Finding;
use crate::host::HostFacts;
use crate::report::Report;
use crate::severity::Severity;
use crate::snapshot::{
    parse_client_list, parse_info, Counters, LatencyEvent, SampledKey, SlowEntry, Snapshot,
};
use crate::target::{Target, UrlError};
use crate::thresholds::Thresholds;
use crate::unreachable;
use crate::vitals::Vitals;

/// True when INFO comes from a Redoubt rather than a `redis-server`: a
/// standalone Redoubt names itself (`redoubt_version`, `executable:redoubt`),
/// a proxy answering locally while Redis is down adds `redoubt_serving`.
fn is_redoubt(info: &std::collections::HashMap<String, String>) -> bool {
    info.contains_key("redoubt_version")
        || info.contains_key("redoubt_serving")
        || info
            .get("executable")
            .and_then(|e| std::path::Path::new(e).file_name())
            .is_some_and(|n| n == "redoubt")
}

/// Whole diagnosis budget (DESIGN: bounded, default 10 s).
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Budget for resolving and connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Budget for one command's reply.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys asked for per SCAN call: small pages keep each call short on a busy server.
const SCAN_PAGE: usize = 100;
/// Slowlog entries read: Redis keeps 128 by default.
const SLOWLOG_ENTRIES: usize = 128;
/// Name the doctor gives its connection, so its own commands can be told
/// apart in CLIENT LIST and SLOWLOG (with a 0 µs slowlog threshold every
/// command it sends is logged).
pub const CLIENT_NAME: &str = "redoubt-doctor";

/// CONFIG parameters the checks read, one CONFIG GET each (a multi-key
/// CONFIG GET needs Redis 7).
const CONFIG_KEYS: &[&str] = &[
    "maxmemory-policy",
    "save",
    "appendonly",
    "stop-writes-on-bgsave-error",
    "timeout",
    "tcp-backlog",
    "slowlog-log-slower-than",
    "latency-monitor-threshold",
    "replica-read-only",
    "repl-timeout",
    "bind",
    "protected-mode",
    "requirepass",
    "maxclients",
];

/// Commands an application user should not be able to run; probed with
/// ACL DRYRUN, which only checks permissions and runs nothing.
const DANGEROUS_PROBES: &[&[&str]] = &[
    &["FLUSHALL"],
    &["KEYS", "*"],
    &["CONFIG", "SET", "maxmemory", "0"],
];

/// Whether to read host facts (`/proc`, `/sys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChecks {
    /// Only when the URL's host is loopback or `localhost`.
    Auto,
    /// Never (e.g. Redis runs in another container on the same host name).
    Off,
}

/// How to run a diagnosis.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Upper bound for the whole diagnosis.
    pub total_timeout: Duration,
    /// Upper bound for DNS + TCP connect.
    pub connect_timeout: Duration,
    /// Upper bound for each reply.
    pub command_timeout: Duration,
    /// Limits the checks compare against.
    pub thresholds: Thresholds,
    /// The ACL user the application uses, for security.dangerous-commands;
    /// without it the `default` user is judged, as information only.
    pub app_user: Option<String>,
    /// When to run host checks.
    pub host_checks: HostChecks,
    /// Root under which `/proc` and `/sys` are read (`/`; a mount of the
    /// host's root when the doctor runs in a container).
    pub host_root: PathBuf,
    /// Counters of an earlier diagnosis of the same Redis
    /// ([`Report::counters`]): counting checks then report what happened
    /// since, not since Redis started.
    pub baseline: Option<Counters>,
    /// TLS settings for a `rediss://` URL (`[upstream_tls]`); `None`: the
    /// system's roots, no client certificate.
    pub tls: Option<tls::TlsClient>,
    /// Checks to mute: an id (`host.overcommit`) or an area (`host` or
    /// `host.*`). A muted finding is left out of the findings and the exit
    /// code and named in [`Report::ignored`].
    pub ignore: Vec<String>,
    /// Password used when the URL carries none (`redis-cli`'s
    /// `REDISCLI_AUTH`).
    pub password: Option<String>,
    /// For a `redis+sentinel://` URL: the Sentinels' own credentials
    /// (`[sentinel]`).
    pub sentinel_auth: Option<upstream::Credentials>,
}

/// Why an ignore pattern is refused: it mutes no check or connection
/// problem, most likely a typo that would leave a gate failing (or worse,
/// believed muted). `None` when it names at least one.
pub fn unknown_ignore(pattern: &str) -> Option<String> {
    let known = checks()
        .iter()
        .map(|c| c.id)
        .chain(unreachable::problems().iter().map(|p| p.id))
        .chain(["doctor.incomplete"]);
    if known.clone().any(|id| ignores(pattern, id)) {
        return None;
    }
    let mut areas: Vec<&str> = known
        .filter_map(|id| id.split_once('.').map(|(a, _)| a))
        .collect();
    areas.dedup();
    areas.sort_unstable();
    areas.dedup();
    Some(format!(
        "'{pattern}' names no doctor check; give a check id as the report prints it (host.overcommit) or an area ({})",
        areas.join(", ")
    ))
}

/// True when `pattern` (an id, `area` or `area.*`) mutes the check `id`.
pub fn ignores(pattern: &str, id: &str) -> bool {
    let area = pattern.strip_suffix(".*").unwrap_or(pattern);
    id == pattern
        || id
            .strip_prefix(area)
            .is_some_and(|rest| rest.starts_with('.'))
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            thresholds: Thresholds::default(),
            app_user: None,
            host_checks: HostChecks::Auto,
            host_root: PathBuf::from("/"),
            baseline: None,
            tls: None,
            ignore: Vec::new(),
            password: None,
            sentinel_auth: None,
        }
    }
}

/// Diagnoses the Redis at `url` (`redis[s]://[user:pass@]host:port[/db]`).
/// Never fails: an unreachable Redis yields a report with
/// `diagnosable: false` whose findings explain why. Returns within
/// `opts.total_timeout` (plus scheduling slack).
pub async fn diagnose(url: &str, opts: &DoctorOptions) -> Report {
    let started = Instant::now();
    let deadline = started + opts.total_timeout;
    let mut report = Report {
        target: url.to_string(),
        diagnosable: false,
        findings: Vec::new(),
        redis_version: None,
        role: None,
        redoubt: false,
        vitals: None,
        ignored: Vec::new(),
        host_checks: false,
        checks_run: 0,
        keys_sampled: 0,
        counters: Counters::default(),
        skipped: Vec::new(),
        elapsed_ms: 0,
    };
    let followed = match sentinel_primary(url, opts.sentinel_auth.clone()).await {
        Some(t) => Some(t),
        None => cluster_primary(url).await,
    };
    let target = match followed.unwrap_or_else(|| Target::parse(url)) {
        Ok(mut t) => {
            if t.password.is_none() {
                t.password.clone_from(&opts.password);
            }
            t
        }
        Err(e) => {
            let id = match e {
                UrlError::Unsupported(_) => "connection.unsupported-scheme",
                UrlError::Invalid(_) => "connection.bad-url",
                UrlError::NoPrimary(_) => "connection.no-primary",
            };
            report.target = redact_unparsed(url);
            report
                .findings
                .push(unreachable::finding(id, e.to_string()));
            return finish(report, started, &opts.ignore);
        }
    };
    report.target = target.redacted();
    if url.starts_with("redis+sentinel://") {
        report.target = format!("{} (primary of {})", report.target, redact_unparsed(url));
    }
    if url.starts_with("redis+cluster://") {
        report.target = format!(
            "{} (primary of slot 0 of {})",
            report.target,
            redact_unparsed(url)
        );
    }
    // Belt and braces: every step already honours the deadline, this
    // also bounds anything that does not (slow host file reads).
    let budget = opts.total_timeout + Duration::from_millis(500);
    match tokio::time::timeout(budget, run(&target, opts, deadline, &mut report)).await {
        Ok(()) => {}
        Err(_) => report.findings.push(unreachable::finding(
            "connection.timeout",
            format!(
                "the diagnosis did not finish within {:?}",
                opts.total_timeout
            ),
        )),
    }
    finish(report, started, &opts.ignore)
}

fn finish(mut report: Report, started: Instant, ignore: &[String]) -> Report {
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    let (muted, kept) = std::mem::take(&mut report.findings)
        .into_iter()
        .partition(|f: &Finding| ignore.iter().any(|p| ignores(p, &f.id)));
    report.findings = kept;
    report.ignored = muted.into_iter().map(|f| f.id).collect();
    report.sort();
    report
}

/// How long the doctor spends finding out what a port speaks when TLS
/// or plain text failed there.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects, authenticates, gathers and checks, filling `report`.
async fn run(target: &Target, opts: &DoctorOptions, deadline: Instant, report: &mut Report) {
    let addr = target.addr();
    let client = if target.tls {
        match opts.tls.clone().map(Ok).unwrap_or_else(|| {
            tls::TlsClient::new(&tls::ClientOptions::default()).map_err(|e| e.to_string())
        }) {
            Ok(c) => Some(c),
            Err(e) => {
                report
                    .findings
                    .push(unreachable::finding("connection.tls-config", e));
                return;
            }
        }
    } else {
        None
    };
    let mut conn = match Conn::connect(
        &target.host,
        target.port,
        client.as_ref(),
        opts.connect_timeout,
        opts.command_timeout,
        deadline,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let id = refine(target, &e).await;
            report
                .findings
                .push(unreachable::finding(id, format!("{addr}: {e}")));
            return;
        }
    };
    if let Err((id, e)) = handshake(&mut conn, target).await {
        let (id, detail) = match e {
            Step::Transport(e) => (refine(target, &e).await, e.to_string()),
            Step::Reply(t) => (id, t),
        };
        report
            .findings
            .push(unreachable::finding(id, format!("{addr}: {detail}")));
        return;
    }
    let info = match conn.call(&["INFO"]).await {
        Ok(f) if f.is_error() => {
            let t = text(&f).unwrap_or_default();
            let id = unreachable::classify_reply(&t).unwrap_or("connection.noperm");
            report.findings.push(unreachable::finding(
                id,
                format!("{addr}: INFO answered {t}"),
            ));
            return;
        }
        Ok(f) => parse_info(&text(&f).unwrap_or_default()),
        Err(e) => {
            report.findings.push(unreachable::finding(
                unreachable::classify(&e),
                format!("{addr}: INFO: {e}"),
            ));
            return;
        }
    };
    report.diagnosable = true;
    report.redis_version = info.get("redis_version").cloned();
    report.role = info.get("role").cloned();
    report.redoubt = is_redoubt(&info);
    // One timed PING, apart from the bulk reads, as the latency a client sees.
    let ping_started = Instant::now();
    let ping_us = match conn.call(&["PING"]).await {
        Ok(f) if !f.is_error() => Some(ping_started.elapsed().as_micros() as u64),
        _ => None,
    };
    let mut snap = Snapshot {
        info,
        now_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        baseline: opts.baseline.clone(),
        ..Default::default()
    };
    report.counters = snap.counters();
    if let Err(e) = gather(&mut conn, opts, &mut snap, &mut report.skipped).await {
        report.skipped.push(format!("the rest of the data ({e})"));
        if matches!(e, ConnError::Timeout(_)) && Instant::now() >= deadline {
            // Our own time budget ran out (a slow link, a huge sample):
            // not a Redis fault. Checks run on what was read.
            report.findings.push(Finding {
                id: "doctor.incomplete".into(),
                severity: Severity::Info,
                title: "The diagnosis ran out of time; some checks had no data".into(),
                detail: format!("budget {:?} used up; see 'not checked'", opts.total_timeout),
                fix: "Run again with a larger time budget or a smaller key sample.".into(),
                causes: Vec::new(),
            });
        } else {
            // Redis answered INFO, then stopped answering: that is a
            // finding in itself, and the checks still run on what was read.
            report.findings.push(unreachable::finding(
                unreachable::classify(&e),
                format!("{addr}: Redis stopped answering during the diagnosis: {e}"),
            ));
        }
    }
    let local = opts.host_checks == HostChecks::Auto && target.is_local();
    if local {
        let pid = snap.u("process_id").and_then(|p| u32::try_from(p).ok());
        snap.host = Some(HostFacts::read(&opts.host_root, pid));
    }
    report.host_checks = local;
    report.keys_sampled = snap.keys.len();
    report.vitals = Some(Vitals::read(&snap, ping_us));
    let redoubt = report.redoubt;
    for check in checks()
        .iter()
        .filter(|c| local || !c.host)
        .filter(|c| !(redoubt && NOT_FOR_REDOUBT.contains(&c.id)))
    {
        report.checks_run += 1;
        if let Some(f) = check.run(&snap, &opts.thresholds) {
            report.findings.push(f);
        }
    }
}

/// Which connection problem `e` is, looking again at the port when the
/// error alone cannot tell: a plain connection dropped without a word may
/// have reached a TLS port, and a TLS handshake that got no TLS answer
/// (garbage, silence, a close) may have reached a plain one.
async fn refine(target: &Target, e: &ConnError) -> &'static str {
    let id = unreachable::classify(e);
    let dropped = matches!(e, ConnError::Closed | ConnError::Tls(tls::Failure::Closed))
        || matches!(e, ConnError::Io(io) if matches!(io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe));
    if target.tls {
        let no_tls_answer = dropped
            || matches!(
                e,
                ConnError::Timeout(_) | ConnError::Tls(tls::Failure::NotTls)
            );
        if no_tls_answer && conn::speaks_plain_resp(&target.host, target.port, PROBE_TIMEOUT).await
        {
            return "connection.plain-port";
        }
    } else if dropped && conn::speaks_tls(&target.host, target.port, PROBE_TIMEOUT).await {
        return "connection.tls";
    }
    id
}

/// Why a handshake step failed.
enum Step {
    /// The connection failed.
    Transport(ConnError),
    /// Redis answered with this error.
    Reply(String),
}

/// AUTH, SELECT and PING; an `Err` names the connection problem.
async fn handshake(conn: &mut Conn, target: &Target) -> Result<(), (&'static str, Step)> {
    let mut steps: Vec<Vec<String>> = Vec::new();
    if let Some(pass) = &target.password {
        match &target.user {
            Some(u) => steps.push(vec!["AUTH".into(), u.clone(), pass.clone()]),
            None => steps.push(vec!["AUTH".into(), pass.clone()]),
        }
    }
    if target.db != 0 {
        steps.push(vec!["SELECT".into(), target.db.to_string()]);
    }
    steps.push(vec!["CLIENT".into(), "SETNAME".into(), CLIENT_NAME.into()]);
    steps.push(vec!["PING".into()]);
    for step in steps {
        let reply = conn
            .call(&step)
            .await
            .map_err(|e| (unreachable::classify(&e), Step::Transport(e)))?;
        if let Some(t) = reply.error_text() {
            let t = String::from_utf8_lossy(t).into_owned();
            if let Some(id) = unreachable::classify_reply(&t) {
                return Err((id, Step::Reply(t)));
            }
            // Other errors (LOADING, MASTERDOWN, AUTH without a configured
            // password) do not stop INFO from working; checks report them.
        }
    }
    Ok(())
}

/// Reads everything but INFO. Error replies skip one piece of data; a
/// transport error stops gathering (the connection is no longer in step).
async fn gather(
    conn: &mut Conn,
    opts: &DoctorOptions,
    snap: &mut Snapshot,
    skipped: &mut Vec<String>,
) -> Result<(), ConnError> {
    let cmds: Vec<Vec<Vec<u8>>> = CONFIG_KEYS
        .iter()
        .map(|k| args(&["CONFIG", "GET", k]))
        .collect();
    for (k, reply) in CONFIG_KEYS.iter().zip(conn.pipeline(&cmds).await?) {
        match reply {
            Frame::Array(kv) if kv.len() >= 2 => {
                let v = text(&kv[1]).unwrap_or_default();
                // Keep only whether a password is set, never the password.
                let v = if *k == "requirepass" && !v.is_empty() {
                    "(set)".to_string()
                } else {
                    v
                };
                snap.config.insert(k.to_string(), v);
            }
            Frame::Map(kv) if !kv.is_empty() => {
                snap.config
                    .insert(k.to_string(), text(&kv[0].1).unwrap_or_default());
            }
            f if f.is_error() => {
                skipped.push(format!("CONFIG GET {k}: {}", text(&f).unwrap_or_default()))
            }
            _ => {}
        }
    }
    match conn.call(&["CLIENT", "LIST"]).await? {
        f if f.is_error() => skipped.push(format!("CLIENT LIST: {}", text(&f).unwrap_or_default())),
        f => {
            snap.clients = parse_client_list(&text(&f).unwrap_or_default());
            snap.clients.retain(|c| c.name != CLIENT_NAME);
        }
    }
    let slow = conn
        .pipeline(&[
            args(&["SLOWLOG", "LEN"]),
            args(&["SLOWLOG", "GET", &SLOWLOG_ENTRIES.to_string()]),
        ])
        .await?;
    let own = |f: &&Frame| matches!(f, Frame::Array(p) if p.get(5).and_then(text).as_deref() == Some(CLIENT_NAME));
    let own_count = match &slow[1] {
        Frame::Array(entries) => {
            snap.slowlog = entries
                .iter()
                .filter(|f| !own(f))
                .filter_map(slow_entry)
                .collect();
            entries.iter().filter(own).count() as u64
        }
        _ => 0,
    };
    match &slow[0] {
        Frame::Integer(n) => {
            snap.slowlog_len = u64::try_from(*n).ok().map(|n| n.saturating_sub(own_count))
        }
        f => skipped.push(format!("SLOWLOG: {}", text(f).unwrap_or_default())),
    }
    match conn.call(&["LATENCY", "LATEST"]).await? {
        Frame::Array(rows) => snap.latency = rows.iter().filter_map(latency_event).collect(),
        f => skipped.push(format!("LATENCY LATEST: {}", text(&f).unwrap_or_default())),
    }
    if snap.s("cluster_enabled") == Some("1") {
        match conn.call(&["CLUSTER", "INFO"]).await? {
            f if f.is_error() => {
                skipped.push(format!("CLUSTER INFO: {}", text(&f).unwrap_or_default()))
            }
            f => snap.cluster = parse_info(&text(&f).unwrap_or_default()),
        }
    }
    gather_acl(conn, opts, snap, skipped).await?;
    // Loading servers refuse SCAN and friends; the load itself is the finding.
    if snap.s("loading") != Some("1") {
        snap.keys = sample_keys(conn, opts.thresholds.scan_sample_keys, skipped).await?;
    }
    Ok(())
}

async fn gather_acl(
    conn: &mut Conn,
    opts: &DoctorOptions,
    snap: &mut Snapshot,
    skipped: &mut Vec<String>,
) -> Result<(), ConnError> {
    gather_replica_grant(conn, snap, skipped).await?;
    match conn.call(&["ACL", "LIST"]).await? {
        Frame::Array(lines) => snap.acl_users = lines.iter().filter_map(text).collect(),
        // Redis < 6 has no ACL; requirepass then tells about passwords.
        f => {
            skipped.push(format!("ACL LIST: {}", text(&f).unwrap_or_default()));
            return Ok(());
        }
    }
    let user = match &opts.app_user {
        Some(u) => u.clone(),
        None => {
            // Judge the default user only while it is enabled: it is who
            // every client that skips AUTH acts as.
            let default_on = snap
                .acl_users
                .iter()
                .any(|l| l.starts_with("user default ") && l.split_whitespace().any(|w| w == "on"));
            if !default_on {
                return Ok(());
            }
            "default".to_string()
        }
    };
    let cmds: Vec<Vec<Vec<u8>>> = DANGEROUS_PROBES
        .iter()
        .map(|p| {
            let mut a = args(&["ACL", "DRYRUN", &user]);
            a.extend(p.iter().map(|s| s.as_bytes().to_vec()));
            a
        })
        .collect();
    let replies = conn.pipeline(&cmds).await?;
    let mut allowed = Vec::new();
    for (probe, reply) in DANGEROUS_PROBES.iter().zip(&replies) {
        match reply {
            Frame::Simple(s) if s.as_ref() == b"OK" => {
                allowed.push(probe[..probe.len().min(2)].join(" "))
            }
            // DRYRUN needs Redis 7; an error means we cannot tell.
            Frame::Error(e) => {
                skipped.push(format!("ACL DRYRUN {user}: {}", String::from_utf8_lossy(e)));
                return Ok(());
            }
            _ => {}
        }
    }
    snap.app_user_named = opts.app_user.is_some();
    snap.dangerous = Some((user, allowed));
    Ok(())
}

/// Whether the user this connection acts as (Redoubt's, when `serve` runs
/// the doctor) may attach as a replica: `PSYNC` and `REPLCONF`. `ACL
/// DRYRUN` tells when the user may run it; a user too restricted for that
/// is asked `REPLCONF listening-port` itself, which changes nothing.
async fn gather_replica_grant(
    conn: &mut Conn,
    snap: &mut Snapshot,
    skipped: &mut Vec<String>,
) -> Result<(), ConnError> {
    let me = match conn.call(&["ACL", "WHOAMI"]).await? {
        Frame::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    };
    if let Some(me) = &me {
        let probes: [&[&str]; 2] = [
            &["PSYNC", "?", "-1"],
            &["REPLCONF", "listening-port", "6380"],
        ];
        let cmds: Vec<Vec<Vec<u8>>> = probes
            .iter()
            .map(|p| {
                let mut a = args(&["ACL", "DRYRUN", me]);
                a.extend(p.iter().map(|s| s.as_bytes().to_vec()));
                a
            })
            .collect();
        let replies = conn.pipeline(&cmds).await?;
        let mut missing = Vec::new();
        let mut judged = true;
        for (probe, reply) in probes.iter().zip(replies) {
            match reply {
                Frame::Simple(s) if s.as_ref() == b"OK" => {}
                // DRYRUN's answer for a missing grant is the reason, as text.
                Frame::Bulk(_) => missing.push(probe[0].to_lowercase()),
                _ => judged = false,
            }
        }
        if judged {
            snap.replica_grant = Some((me.clone(), missing));
            return Ok(());
        }
    }
    let who = me.unwrap_or_else(|| "(the connecting user)".into());
    match conn.call(&["REPLCONF", "listening-port", "6380"]).await? {
        Frame::Error(e) if e.starts_with(b"NOPERM") => {
            snap.replica_grant = Some((who, vec!["replconf".into()]));
        }
        f => skipped.push(format!(
            "replica grant of {who}: REPLCONF allowed ({}); PSYNC cannot be checked without ACL DRYRUN",
            text(&f).unwrap_or_default()
        )),
    }
    Ok(())
}

/// A bounded SCAN sample: at most `max` keys, with type, size and TTL,
/// in pages of [`SCAN_PAGE`] so no single call blocks Redis for long.
async fn sample_keys(
    conn: &mut Conn,
    max: usize,
    skipped: &mut Vec<String>,
) -> Result<Vec<SampledKey>, ConnError> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut cursor = b"0".to_vec();
    // SCAN may return empty pages; bound the calls as well as the keys.
    let max_calls = max / SCAN_PAGE + 10;
    for _ in 0..max_calls {
        let reply = conn
            .call(&[
                b"SCAN".as_slice(),
                &cursor,
                b"COUNT",
                SCAN_PAGE.to_string().as_bytes(),
            ])
            .await?;
        let Frame::Array(parts) = reply else {
            skipped.push(format!("SCAN: {}", text(&reply).unwrap_or_default()));
            return Ok(Vec::new());
        };
        let (Some(next), Some(Frame::Array(keys))) =
            (parts.first().and_then(|f| f.as_bytes()), parts.get(1))
        else {
            break;
        };
        cursor = next.to_vec();
        names.extend(keys.iter().filter_map(|k| k.as_bytes().map(<[u8]>::to_vec)));
        if names.len() >= max || cursor == b"0" {
            break;
        }
    }
    names.truncate(max);
    let mut out = Vec::with_capacity(names.len());
    for chunk in names.chunks(SCAN_PAGE) {
        let types = conn
            .pipeline(
                &chunk
                    .iter()
                    .map(|k| vec![b"TYPE".to_vec(), k.clone()])
                    .collect::<Vec<_>>(),
            )
            .await?;
        let kinds: Vec<String> = types.iter().map(|t| text(t).unwrap_or_default()).collect();
        let mut cmds = Vec::with_capacity(chunk.len() * 2);
        for (k, kind) in chunk.iter().zip(&kinds) {
            let size_cmd: &[u8] = match kind.as_str() {
                "string" => b"STRLEN",
                "hash" => b"HLEN",
                "list" => b"LLEN",
                "set" => b"SCARD",
                "zset" => b"ZCARD",
                "stream" => b"XLEN",
                // Module types and keys gone since SCAN: TTL stands in so
                // replies stay paired; its value is not used as a size.
                _ => b"TTL",
            };
            cmds.push(vec![size_cmd.to_vec(), k.clone()]);
            cmds.push(vec![b"TTL".to_vec(), k.clone()]);
        }
        let replies = conn.pipeline(&cmds).await?;
        for ((k, kind), pair) in chunk.iter().zip(kinds).zip(replies.chunks(2)) {
            let known = matches!(
                kind.as_str(),
                "string" | "hash" | "list" | "set" | "zset" | "stream"
            );
            let size = match (&pair[0], known) {
                (Frame::Integer(n), true) => u64::try_from(*n).ok(),
                _ => None,
            };
            let ttl = match &pair[1] {
                Frame::Integer(n) => *n,
                _ => -1,
            };
            // -2: the key vanished between SCAN and TTL.
            if ttl == -2 {
                continue;
            }
            out.push(SampledKey {
                name: String::from_utf8_lossy(k).into_owned(),
                kind,
                size,
                ttl,
            });
        }
    }
    Ok(out)
}

fn slow_entry(f: &Frame) -> Option<SlowEntry> {
    let Frame::Array(parts) = f else { return None };
    let micros = match parts.get(2)? {
        Frame::Integer(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let command = match parts.get(3)? {
        Frame::Array(a) => a.first().and_then(text).unwrap_or_default(),
        _ => String::new(),
    };
    Some(SlowEntry { micros, command })
}

fn latency_event(f: &Frame) -> Option<LatencyEvent> {
    let Frame::Array(p) = f else { return None };
    let n = |i: usize| match p.get(i) {
        Some(Frame::Integer(v)) => u64::try_from(*v).ok(),
        _ => None,
    };
    Some(LatencyEvent {
        event: text(p.first()?)?,
        latest_ms: n(2)?,
        max_ms: n(3)?,
    })
}

fn args(a: &[&str]) -> Vec<Vec<u8>> {
    a.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Best-effort password removal from a URL that did not parse.
fn redact_unparsed(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// For a `redis+cluster://` URL, the primary serving slot 0 (the node
/// Redoubt sends keyless commands to; the diagnosis is of it); `None` for
/// any other URL.
async fn cluster_primary(url: &str) -> Option<Result<Target, UrlError>> {
    let u = upstream::UpstreamUrl::parse(url).ok()?;
    let c = u.cluster.clone()?;
    Some(match c.ready_map().await {
        Ok(m) => match m.node(0) {
            Some(primary) => Target::parse(&format!("redis://{primary}")).map(|t| Target {
                user: u.user.clone(),
                password: u.password.clone(),
                ..t
            }),
            None => Err(UrlError::NoPrimary("no primary serves slot 0".into())),
        },
        Err(e) => Err(UrlError::NoPrimary(e)),
    })
}

/// For a `redis+sentinel://` URL, the primary the Sentinels name now (the
/// diagnosis is of it); `None` for any other URL.
async fn sentinel_primary(
    url: &str,
    auth: Option<upstream::Credentials>,
) -> Option<Result<Target, UrlError>> {
    let u = upstream::UpstreamUrl::parse(url)
        .ok()?
        .with_sentinel_auth(auth);
    let s = u.sentinel.clone()?;
    Some(match s.resolve().await {
        Ok(primary) => Target::parse(&format!("redis://{primary}")).map(|t| Target {
            user: u.user.clone(),
            password: u.password.clone(),
            db: u.db,
            ..t
        }),
        Err(e) => Err(UrlError::NoPrimary(e)),
    })
}

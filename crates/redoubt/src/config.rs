//! The configuration file, environment and flags, assembled into one
//! effective [`Config`] with every problem reported at once.
//!
//! Precedence: flags > `REDOUBT_<SECTION>_<KEY>` environment > TOML file >
//! defaults. Unknown keys are errors, wherever they come from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::Value;
use upstream::{HealthConfig, UpstreamUrl};

/// DESIGN defaults.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6380";
/// Admin endpoint default.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9380";
/// Data directory default.
pub const DEFAULT_DATA_DIR: &str = "./redoubt-data";

/// Most `threads`: past the CPUs a machine has, more threads only add
/// hand-offs.
pub const MAX_THREADS: u32 = 1024;

/// The effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client listener.
    pub listen: String,
    /// `""`: standalone; else `redis[s]://[user:pass@]host:port[/db]`,
    /// `redis+sentinel://[user:pass@]host:26379,host2:26379/master[/db]` or
    /// `redis+cluster://[user:pass@]host:port[,host:port…]`.
    pub upstream: String,
    /// Journal, node id, incidents; locked by one process.
    pub data_dir: PathBuf,
    /// `""`: a UUID made on first start and kept in `data_dir`.
    pub node_id: String,
    /// Threads serving clients in proxy mode; 0: one per CPU the process
    /// may run on. With one, the whole data path runs on one thread with
    /// no hand-off between threads. Standalone always runs on one.
    pub threads: u32,
    /// `[admin]`
    pub admin: AdminSection,
    /// `[health]`
    pub health: HealthConfig,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[journal]`
    pub journal: JournalSection,
    /// `[near_cache]`
    pub near_cache: NearCacheSection,
    /// `[replica]`
    pub replica: ReplicaSection,
    /// `[outage]`
    pub outage: OutageSection,
    /// `[auth]`
    pub auth: AuthSection,
    /// `[[keyspace]]`
    pub keyspace: Vec<Keyspace>,
    /// `[[alert]]`
    pub alert: Vec<Alert>,
    /// `[remediation]`
    pub remediation: RemediationSection,
    /// `[tls]`: the TLS listener for clients.
    pub tls: TlsSection,
    /// `[upstream_tls]`: how a `rediss://` upstream is reached.
    pub upstream_tls: UpstreamTlsSection,
    /// `[sentinel]`: the Sentinels' own credentials.
    pub sentinel: SentinelSection,
    /// `[doctor]`
    pub doctor: DoctorSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.into(),
            upstream: String::new(),
            data_dir: DEFAULT_DATA_DIR.into(),
            node_id: String::new(),
            threads: 0,
            admin: AdminSection::default(),
            health: HealthConfig::default(),
            limits: LimitsSection::default(),
            journal: JournalSection::default(),
            near_cache: NearCacheSection::default(),
            replica: ReplicaSection::default(),
            outage: OutageSection::default(),
            auth: AuthSection::default(),
            keyspace: Vec::new(),
            alert: Vec::new(),
            remediation: RemediationSection::default(),
            tls: TlsSection::default(),
            upstream_tls: UpstreamTlsSection::default(),
            sentinel: SentinelSection::default(),
            doctor: DoctorSection::default(),
        }
    }
}

/// `[tls]`: a TLS listener for clients beside `listen`. Its certificate is
/// read again on SIGHUP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// `""`: no TLS listener; else `host:port`.
    pub listen: String,
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// `""`: no client certificates asked for; else clients must present
    /// one signed by a CA in this PEM file.
    pub client_ca_file: String,
}

/// `[upstream_tls]`: TLS to Redis, used when `upstream` is `rediss://`.
/// A section of its own because `[tls]`'s `cert_file` is the listener's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsSection {
    /// `""`: the system's roots; else only the CAs in this PEM file.
    pub ca_file: String,
    /// Client certificate for Redis's `tls-auth-clients yes` (mutual TLS).
    pub cert_file: String,
    /// Its private key.
    pub key_file: String,
    /// Accept any certificate from Redis (logged as a warning at start).
    pub insecure_skip_verify: bool,
}

/// `[sentinel]`: for a `redis+sentinel://` upstream, how Redoubt logs in
/// to the Sentinels (`requirepass` / ACL of the Sentinels themselves). The
/// URL's user and password are Redis's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelSection {
    /// `""`: the `default` user.
    pub username: String,
    /// `""`: the Sentinels ask for no password.
    pub password: String,
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// HTTP listener.
    pub listen: String,
    /// Required when `listen` is not loopback.
    pub token: String,
    /// See [`admin::AdminLimits::max_connections`].
    pub max_connections: usize,
    /// See [`admin::AdminLimits::header_timeout`].
    pub header_timeout_ms: u64,
    /// See [`admin::AdminLimits::idle_timeout`].
    pub idle_timeout_ms: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        let d = admin::AdminLimits::default();
        AdminSection {
            listen: DEFAULT_ADMIN_LISTEN.into(),
            token: String::new(),
            max_connections: d.max_connections,
            header_timeout_ms: d.header_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
        }
    }
}

/// `[limits]`, sizes as written (`"1GiB"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// See [`proxy::LimitsConfig`].
    pub command_timeout_ms: u64,
    /// See [`proxy::LimitsConfig`].
    pub max_clients: usize,
    /// See [`proxy::LimitsConfig`].
    pub max_inflight_per_client: usize,
    /// See [`proxy::LimitsConfig`].
    pub max_query_buffer_bytes: Size,
    /// See [`proxy::LimitsConfig`].
    pub max_output_buffer_bytes: Size,
    /// See [`proxy::LimitsConfig`].
    pub proto_max_bulk_len: Size,
    /// See [`proxy::LimitsConfig`].
    pub max_nesting: usize,
    /// See [`proxy::LimitsConfig`].
    pub client_write_timeout_ms: u64,
    /// See [`proxy::LimitsConfig`].
    pub hold_during_outage_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = proxy::LimitsConfig::default();
        LimitsSection {
            command_timeout_ms: d.command_timeout_ms,
            max_clients: d.max_clients,
            max_inflight_per_client: d.max_inflight_per_client,
            max_query_buffer_bytes: Size::text("1GiB"),
            max_output_buffer_bytes: Size::text("256MiB"),
            proto_max_bulk_len: Size::text("512MiB"),
            max_nesting: d.max_nesting,
            client_write_timeout_ms: d.client_write_timeout_ms,
            hold_during_outage_ms: d.hold_during_outage_ms,
        }
    }
}

/// `[journal]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// `always` | `everysec` | `no`.
    pub fsync: String,
    /// Full journal refuses durable writes.
    pub max_bytes: Size,
    /// How long replayed segments are kept.
    pub retain_after_replay: String,
    /// Standalone: compact into a snapshot when the journal is this many
    /// times the live data…
    pub compact_ratio: f64,
    /// …and at least this big.
    pub compact_min_bytes: Size,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            fsync: "always".into(),
            max_bytes: Size::text("1GiB"),
            retain_after_replay: "1h".into(),
            compact_ratio: proxy::standalone::DEFAULT_COMPACT_RATIO,
            compact_min_bytes: Size::text("64MiB"),
        }
    }
}

/// `[near_cache]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NearCacheSection {
    /// Byte bound of the LRU.
    pub max_bytes: Size,
    /// Staleness bound during an outage.
    pub max_stale_ms: u64,
}

impl Default for NearCacheSection {
    fn default() -> Self {
        NearCacheSection {
            max_bytes: Size::text("64MiB"),
            max_stale_ms: 300_000,
        }
    }
}

/// `[replica]`: Redoubt's copy of the durable keyspaces, kept as a Redis
/// replica (`PSYNC`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSection {
    /// `auto`: attach as a replica when there are durable keyspaces, and
    /// fall back to the near-cache if Redis refuses; `off`: near-cache only.
    pub mode: String,
    /// Byte bound of the copy (approximate, as Redis's `used_memory`).
    pub max_bytes: Size,
    /// `restore`: a Redis that comes back without durable keys the copy
    /// holds gets them back (then the outage's journal) before Up;
    /// `replay-only`: only the journal is replayed.
    pub on_data_loss: String,
    /// Keep the `cache` keyspaces in the copy too: during an outage their
    /// reads answer with what Redis held, not only what the near-cache
    /// read. They are never restored into Redis.
    pub cache_keyspaces: bool,
}

impl Default for ReplicaSection {
    fn default() -> Self {
        ReplicaSection {
            mode: "auto".into(),
            max_bytes: Size::text("1GiB"),
            on_data_loss: "restore".into(),
            cache_keyspaces: false,
        }
    }
}

/// `[outage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageSection {
    /// `auto`: take durable writes during an outage when this instance
    /// holds the outage-writer lease (one instance per Redis does);
    /// `never`: serve durable reads only.
    pub writer: String,
}

impl Default for OutageSection {
    fn default() -> Self {
        OutageSection {
            writer: "auto".into(),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `passthrough` | `local`.
    pub mode: String,
    /// Users for `mode = "local"`.
    pub users: Vec<User>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: "passthrough".into(),
            users: Vec::new(),
        }
    }
}

/// One local user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub name: String,
    /// Hex SHA-256 of the password.
    pub password_sha256: String,
}

/// One `[[keyspace]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    /// Redis glob.
    pub pattern: String,
    /// `durable` | `cache` | `fail-fast`.
    pub policy: String,
}

/// Default `[[alert]] timeout_ms`.
pub const DEFAULT_ALERT_TIMEOUT_MS: u64 = 2000;

fn default_alert_timeout_ms() -> u64 {
    DEFAULT_ALERT_TIMEOUT_MS
}

/// One `[[alert]]`: a webhook POSTed a JSON body on every state change,
/// incident close and remediation attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// `http[s]://host[:port][/path]`.
    pub url: String,
    /// For an `https://` URL: trust only the CAs in this PEM file (default:
    /// the system's roots).
    #[serde(default)]
    pub ca_file: String,
    /// Per delivery attempt: connect, send and read the status line.
    #[serde(default = "default_alert_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[remediation]`: a command run when Redis stays Down.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationSection {
    /// argv, run without a shell; empty: no remediation.
    pub on_down: Vec<String>,
    /// How long Redis must have been Down before the first attempt.
    pub after_ms: u64,
    /// Attempts per outage (reset when Redis is Up again).
    pub max_attempts: u32,
    /// Before the second attempt; each next waits twice as long (64× at
    /// most).
    pub backoff_ms: u64,
}

impl Default for RemediationSection {
    fn default() -> Self {
        RemediationSection {
            on_down: Vec::new(),
            after_ms: 10_000,
            max_attempts: 3,
            backoff_ms: 30_000,
        }
    }
}

/// `[doctor]`: how `redoubt doctor` judges a Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DoctorSection {
    /// Checks muted, by id (`host.overcommit`) or area (`host`, `host.*`):
    /// states accepted for this deployment, so the exit code can gate it.
    pub ignore: Vec<String>,
}

/// A byte size written as a number or with a unit (`"64MiB"`, `"1GB"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Size {
    /// Plain bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

impl Size {
    fn text(s: &str) -> Size {
        Size::Text(s.to_string())
    }

    /// The size in bytes, or why it is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(b) => Ok(*b),
            Size::Text(t) => parse_size(t),
        }
    }
}

// By hand rather than `untagged`: a negative number or a table would
// otherwise be "did not match any variant", which tells nobody anything.
impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes, or a string such as \"64MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size::Bytes)
                    .map_err(|_| E::custom(format!("{v} is negative; a size is 0 bytes or more")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses `512`, `64k`, `64KiB`, `1GB`, `1.5GiB` (binary and decimal
/// units). A size that does not fit in 64 bits is an error, not the
/// largest number (`as u64` would quietly saturate).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let not_a_size = || format!("'{s}' is not a size (examples: 1048576, \"64MiB\", \"1GB\")");
    let too_big =
        || format!("'{s}' is more than 16 EiB, which does not fit in 64 bits; give a smaller size");
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(format!(
                "'{s}' has an unknown unit '{u}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    if num.contains('.') {
        let n: f64 = num.parse().map_err(|_| not_a_size())?;
        let bytes = n * mult as f64;
        // 2^64 is exact as an f64; anything from it up does not fit.
        if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
            return Err(too_big());
        }
        return Ok(bytes as u64);
    }
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            too_big()
        } else {
            not_a_size()
        }
    })?;
    n.checked_mul(mult).ok_or_else(too_big)
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d` into milliseconds; one that
/// does not fit in 64 bits of milliseconds is an error.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let too_long = || {
        format!("'{s}' is longer than 64 bits of milliseconds (584 million years); give a shorter duration")
    };
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if *e.kind() == std::num::IntErrorKind::PosOverflow {
            too_long()
        } else {
            format!("'{s}' is not a duration (examples: \"500ms\", \"30s\", \"1h\")")
        }
    })?;
    let mult: u64 = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => {
            return Err(format!(
                "'{s}' has an unknown unit '{u}' (use ms, s, m, h, d)"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(too_long)
}

/// `url` with the password in its user info replaced by `***`, whether or
/// not it parses: for `config print` and for error messages, which must
/// never show the upstream's password.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The same split as the parser: the user info ends at the last '@'.
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, pass)) if !pass.is_empty() => format!("{scheme}{user}:***@{host}"),
        _ => url.to_string(),
    }
}

/// Command-line overrides (`redoubt serve` flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--upstream`
    pub upstream: Option<String>,
    /// `--admin`
    pub admin: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
}

/// Where the effective configuration came from, and what is wrong with it.
#[derive(Debug)]
pub struct Loaded {
    /// The config (defaults where a value had a problem).
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// Every problem found; empty means valid.
    pub problems: Vec<String>,
}

const SECTIONS: &[&str] = &[
    "admin",
    "health",
    "limits",
    "journal",
    "near_cache",
    "replica",
    "outage",
    "auth",
    "remediation",
    "tls",
    "upstream_tls",
    "sentinel",
    "doctor",
];

/// Reads the file (explicit, or `./redoubt.toml` if present), overlays the
/// environment and the flags, and validates.
pub fn load(file: Option<&Path>, env: &[(String, String)], flags: &Overrides) -> Loaded {
    let mut problems = Vec::new();
    let path = match file {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from("redoubt.toml")).filter(|p| p.exists()),
    };
    let mut text = None;
    let mut root = match &path {
        None => toml::Table::new(),
        Some(p) => match std::fs::read_to_string(p) {
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", p.display()));
                toml::Table::new()
            }
            Ok(t) => match t.parse::<toml::Table>() {
                Ok(table) => {
                    text = Some(t);
                    table
                }
                Err(e) => {
                    let at = e
                        .span()
                        .map(|r| format!(":{}", line_of(&t, r.start)))
                        .unwrap_or_default();
                    problems.push(format!(
                        "{}{at}: not valid TOML: {}",
                        p.display(),
                        e.message()
                    ));
                    toml::Table::new()
                }
            },
        },
    };
    overlay_env(&mut root, env, &mut problems);
    let set = |root: &mut toml::Table, k: &str, v: Value| {
        root.insert(k.to_string(), v);
    };
    if let Some(v) = &flags.listen {
        set(&mut root, "listen", Value::String(v.clone()));
    }
    if let Some(v) = &flags.upstream {
        set(&mut root, "upstream", Value::String(v.clone()));
    }
    if let Some(v) = &flags.data_dir {
        set(
            &mut root,
            "data_dir",
            Value::String(v.display().to_string()),
        );
    }
    if let Some(v) = &flags.admin {
        let admin = root
            .entry("admin")
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if let Value::Table(t) = admin {
            t.insert("listen".into(), Value::String(v.clone()));
        }
    }
    let config = build(root, &mut problems);
    problems.extend(validate(&config));
    if let (Some(p), Some(text)) = (&path, &text) {
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok();
        for problem in &mut problems {
            if let Some(line) = doc.as_ref().and_then(|d| problem_line(d, text, problem)) {
                *problem = format!("{}:{line}: {problem}", p.display());
            }
        }
    }
    Loaded {
        config,
        file: path,
        problems,
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line in the file of the key a problem is about (`health.down_after:
/// …`, `keyspace[1].policy: …`, `typo: unknown key`), from the TOML
/// parser's spans; `None` when the key is not in the file (a default, an
/// environment variable, a flag) or the problem names no key.
fn problem_line(doc: &toml_edit::ImDocument<&str>, text: &str, problem: &str) -> Option<usize> {
    use toml_edit::{Item, Value as V};
    enum Node<'a> {
        Table(&'a toml_edit::Table),
        Inline(&'a toml_edit::InlineTable),
        Array(&'a toml_edit::Array),
        Tables(&'a toml_edit::ArrayOfTables),
        Leaf,
    }
    fn of_value(v: &V) -> Node<'_> {
        match v {
            V::InlineTable(t) => Node::Inline(t),
            V::Array(a) => Node::Array(a),
            _ => Node::Leaf,
        }
    }
    fn of_item(i: &Item) -> Node<'_> {
        match i {
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
            Item::Value(v) => of_value(v),
            Item::None => Node::Leaf,
        }
    }
    // Problems start with the key: `health.down_after: …` or
    // `health.down_after must be …`.
    let key = problem.split([':', ' ']).next()?;
    let mut span = None;
    let mut cur = Node::Table(doc.as_table());
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()),
            ),
            None => (part, None),
        };
        cur = match cur {
            Node::Table(t) => {
                let Some((k, i)) = t.get_key_value(name) else {
                    break;
                };
                span = k.span().or(span);
                of_item(i)
            }
            Node::Inline(t) => {
                let Some((k, i)) = t.get_key_value(name) else {
                    break;
                };
                span = k.span().or(span);
                of_item(i)
            }
            _ => break,
        };
        if let Some(i) = index {
            cur = match cur {
                Node::Tables(a) => {
                    let Some(t) = a.get(i) else { break };
                    span = t.span().or(span);
                    Node::Table(t)
                }
                Node::Array(a) => {
                    let Some(v) = a.get(i) else { break };
                    span = v.span().or(span);
                    of_value(v)
                }
                _ => break,
            };
        }
    }
    span.map(|r| line_of(text, r.start))
}

fn overlay_env(root: &mut toml::Table, env: &[(String, String)], problems: &mut Vec<String>) {
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("REDOUBT_") else {
            continue;
        };
        // A Kubernetes Service named `redoubt` gives every pod in its
        // namespace these variables; refusing them would keep the pod from
        // starting. A real setting of the same name would still win.
        if is_service_link(rest) && !is_setting(rest) {
            tracing::debug!(
                var = %k,
                "ignoring a Kubernetes service-link variable, not a setting"
            );
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let value = if let Ok(i) = v.parse::<i64>() {
            Value::Integer(i)
        } else if let Ok(b) = v.parse::<bool>() {
            Value::Boolean(b)
        } else {
            Value::String(v.clone())
        };
        let section = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_")));
        match section {
            Some(s) => {
                let key = rest[s.len() + 1..].to_string();
                // Strings stay strings for keys that are strings by default
                // (e.g. REDOUBT_ADMIN_TOKEN=1234).
                let value = match (&value, default_is_string(s, &key)) {
                    (Value::Integer(_) | Value::Boolean(_), true) => Value::String(v.clone()),
                    _ => value,
                };
                let t = root.entry(s.to_string()).or_insert_with(|| Value::Table(toml::Table::new()));
                if let Value::Table(t) = t {
                    t.insert(key, value);
                }
            }
            None if rest == "threads" => {
                root.insert(rest, value);
            }
            None if ["listen", "upstream", "data_dir", "node_id"].contains(&rest.as_str()) => {
                root.insert(rest, Value::String(v.clone()));
            }
            None => problems.push(format!("environment: {k} is not a known setting (REDOUBT_<SECTION>_<KEY>, e.g. REDOUBT_HEALTH_INTERVAL_MS)")),
        }
    }
}

/// Whether `REDOUBT_<rest>` has the shape of a variable Kubernetes injects
/// for a Service named `redoubt`: `SERVICE_HOST`, `SERVICE_PORT`,
/// `SERVICE_PORT_<NAME>`, `PORT`, `PORT_<n>_<PROTO>` and that one's
/// `_PROTO`, `_PORT` and `_ADDR`.
fn is_service_link(rest: &str) -> bool {
    // Kubernetes upper-cases port names and turns '-' into '_'.
    let port_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if let Some(svc) = rest.strip_prefix("SERVICE_") {
        return match svc {
            "HOST" | "PORT" => true,
            _ => svc.strip_prefix("PORT_").is_some_and(port_name),
        };
    }
    if rest == "PORT" {
        return true;
    }
    let Some(port) = rest.strip_prefix("PORT_") else {
        return false;
    };
    let mut parts = port.splitn(3, '_');
    let number = parts.next().unwrap_or("");
    let proto = parts.next().unwrap_or("");
    let field = parts.next();
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(proto, "TCP" | "UDP" | "SCTP")
        && matches!(field, None | Some("PROTO" | "PORT" | "ADDR"))
}

/// Whether `REDOUBT_<rest>` names a real setting (`LISTEN`, `HEALTH_INTERVAL_MS`).
fn is_setting(rest: &str) -> bool {
    setting_env_names()
        .iter()
        .any(|n| n.strip_prefix("REDOUBT_") == Some(rest))
}

/// The environment name of every setting the environment can set.
fn setting_env_names() -> Vec<String> {
    let Ok(Value::Table(d)) = Value::try_from(Config::default()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for (key, value) in &d {
        match value {
            Value::Table(t) => names.extend(
                t.keys()
                    .map(|k| format!("REDOUBT_{key}_{k}").to_ascii_uppercase()),
            ),
            // `[[keyspace]]` has no environment form.
            Value::Array(_) => {}
            _ => names.push(format!("REDOUBT_{key}").to_ascii_uppercase()),
        }
    }
    names
}

fn default_is_string(section: &str, key: &str) -> bool {
    let Ok(Value::Table(d)) = Value::try_from(Config::default()) else {
        return false;
    };
    matches!(
        d.get(section).and_then(|s| s.get(key)),
        Some(Value::String(_))
    )
}

/// Builds the config section by section, so one bad value does not hide
/// the others; unknown keys are collected with their full names.
fn build(mut root: toml::Table, problems: &mut Vec<String>) -> Config {
    let defaults = match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    for key in root.keys().cloned().collect::<Vec<_>>() {
        match defaults.get(&key) {
            None if key != "keyspace" && key != "alert" => {
                problems.push(format!("{key}: unknown key"));
                root.remove(&key);
            }
            Some(Value::Table(dt)) => {
                if let Some(Value::Table(t)) = root.get_mut(&key) {
                    let unknown: Vec<String> =
                        t.keys().filter(|k| !dt.contains_key(*k)).cloned().collect();
                    for k in unknown {
                        problems.push(format!("{key}.{k}: unknown key"));
                        t.remove(&k);
                    }
                }
            }
            _ => {}
        }
    }
    let mut c = Config::default();
    take(&root, "listen", &mut c.listen, problems);
    take(&root, "upstream", &mut c.upstream, problems);
    take(&root, "data_dir", &mut c.data_dir, problems);
    take(&root, "node_id", &mut c.node_id, problems);
    take(&root, "threads", &mut c.threads, problems);
    section(&root, "admin", &mut c.admin, problems);
    section(&root, "health", &mut c.health, problems);
    section(&root, "limits", &mut c.limits, problems);
    section(&root, "journal", &mut c.journal, problems);
    section(&root, "near_cache", &mut c.near_cache, problems);
    section(&root, "replica", &mut c.replica, problems);
    section(&root, "outage", &mut c.outage, problems);
    section(&root, "auth", &mut c.auth, problems);
    section(&root, "remediation", &mut c.remediation, problems);
    section(&root, "tls", &mut c.tls, problems);
    section(&root, "upstream_tls", &mut c.upstream_tls, problems);
    section(&root, "sentinel", &mut c.sentinel, problems);
    section(&root, "doctor", &mut c.doctor, problems);
    if let Some(v) = root.get("keyspace") {
        match v {
            Value::Array(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    match e.clone().try_into::<Keyspace>() {
                        Ok(k) => c.keyspace.push(k),
                        Err(e) => problems.push(format!("keyspace[{i}]: {}", e.message().trim())),
                    }
                }
            }
            _ => problems.push(
                "keyspace: must be an array of tables ([[keyspace]] with pattern and policy)"
                    .into(),
            ),
        }
    }
    if let Some(v) = root.get("alert") {
        match v {
            Value::Array(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    match e.clone().try_into::<Alert>() {
                        Ok(a) => c.alert.push(a),
                        Err(e) => problems.push(format!("alert[{i}]: {}", e.message().trim())),
                    }
                }
            }
            _ => problems.push(
                "alert: must be an array of tables ([[alert]] with url and optional timeout_ms)"
                    .into(),
            ),
        }
    }
    c
}

/// Keys whose values are secrets: a type error names the key, never the
/// value.
const SECRET_KEYS: &[&str] = &["upstream", "admin.token"];

/// The deserializer's complaint about `key`, or a value-free one for a
/// secret.
fn type_problem(key: &str, e: &toml::de::Error) -> String {
    if SECRET_KEYS.contains(&key) {
        format!("{key}: must be a string (the value is not shown: it may be a secret)")
    } else {
        format!("{key}: {}", e.message().trim())
    }
}

/// A top-level key into `into`, if present.
fn take<T: DeserializeOwned>(
    root: &toml::Table,
    key: &str,
    into: &mut T,
    problems: &mut Vec<String>,
) {
    if let Some(v) = root.get(key) {
        match v.clone().try_into::<T>() {
            Ok(x) => *into = x,
            Err(e) => problems.push(type_problem(key, &e)),
        }
    }
}

/// A section into `into` (which holds its defaults), key by key: each key
/// is tried alone on top of the defaults, so a wrong type in one key is
/// reported without hiding the others, and the good keys still apply.
fn section<T: Serialize + DeserializeOwned>(
    root: &toml::Table,
    name: &str,
    into: &mut T,
    problems: &mut Vec<String>,
) {
    let Some(v) = root.get(name) else {
        return;
    };
    let Value::Table(given) = v else {
        problems.push(format!("{name}: must be a table ([{name}])"));
        return;
    };
    let Ok(Value::Table(defaults)) = Value::try_from(&*into) else {
        problems.push(format!(
            "{name}: internal error: its defaults do not serialize; please report this"
        ));
        return;
    };
    let mut good = defaults.clone();
    for (key, value) in given {
        let mut one = defaults.clone();
        one.insert(key.clone(), value.clone());
        match Value::Table(one).try_into::<T>() {
            Ok(_) => {
                good.insert(key.clone(), value.clone());
            }
            Err(e) => problems.push(type_problem(&format!("{name}.{key}"), &e)),
        }
    }
    match Value::Table(good).try_into::<T>() {
        Ok(x) => *into = x,
        Err(e) => problems.push(format!("{name}: {}", e.message().trim())),
    }
}

/// More admin connections than this is more than a process can hold open
/// (Linux's `nr_open` default), and would overflow the server's counter.
const MAX_ADMIN_CONNECTIONS: usize = 1 << 20;

/// A listen address: `host:port` with a port from 1 to 65535. Port 0 would
/// bind a port the system picks, which no client could be told.
fn check_listen(addr: &str) -> Result<(), String> {
    let port = match addr.parse::<SocketAddr>() {
        Ok(a) => a.port(),
        Err(_) => match addr.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() => port
                .parse::<u16>()
                .map_err(|_| format!("'{addr}' is not host:port (port from 1 to 65535)"))?,
            _ => return Err(format!("'{addr}' is not host:port")),
        },
    };
    if port == 0 {
        return Err(format!(
            "'{addr}' has port 0, which would listen on a port the system picks and nobody is told; give a port from 1 to 65535"
        ));
    }
    Ok(())
}

/// Semantic checks, every one of them.
pub fn validate(c: &Config) -> Vec<String> {
    let mut p = Vec::new();
    if c.threads > MAX_THREADS {
        p.push(format!(
            "threads: {} is more than {MAX_THREADS}; give 0 (one per CPU) or the number of CPUs Redoubt may use",
            c.threads
        ));
    }
    if let Err(e) = check_listen(&c.listen) {
        p.push(format!("listen: {e}"));
    } else if c.upstream.is_empty()
        && c.auth.mode != "local"
        && !proxy::standalone::is_loopback(&c.listen)
    {
        // Redis's protected mode: a server every host can reach and that
        // asks nobody for a password is refused.
        p.push(format!(
            "listen: protected mode: '{}' is reachable from other hosts and standalone has no [auth] users, so anyone could read and write every key; add [auth] mode = \"local\" with users, or listen on 127.0.0.1",
            c.listen
        ));
    }
    if !c.upstream.is_empty() {
        match UpstreamUrl::parse(&c.upstream) {
            // The parser's messages quote the URL as given, password and all.
            Err(e) => p.push(format!(
                "upstream: {}",
                e.to_string().replace(&c.upstream, &redact_url(&c.upstream))
            )),
            Ok(u) if u.port == 0 => p.push(format!(
                "upstream: '{}' has port 0, which no Redis listens on; give its port (default 6379)",
                redact_url(&c.upstream)
            )),
            Ok(u) if u.sentinel.is_none() && !c.sentinel.password.is_empty() => p.push(
                "sentinel.password: set, but upstream is not a redis+sentinel:// URL, so nothing would use it".into(),
            ),
            // The near-cache that cache keyspaces serve from is fed by one
            // node's invalidations, not every shard's.
            Ok(u) if u.cluster.is_some() && c.keyspace.iter().any(|k| k.policy == "cache") => p.push(
                "keyspace: cache keyspaces are not supported with a redis+cluster:// upstream yet (durable and fail-fast ones are); make them durable or fail-fast, or front a single Redis or a Sentinel-managed one".into(),
            ),
            Ok(_) => {}
        }
    }
    if let Err(e) = check_listen(&c.admin.listen) {
        p.push(format!("admin.listen: {e}"));
    } else if !proxy::standalone::is_loopback(&c.admin.listen) && c.admin.token.is_empty() {
        p.push(format!(
            "admin.token: required because admin.listen '{}' is not a loopback address",
            c.admin.listen
        ));
    }
    if c.admin.max_connections == 0 {
        p.push("admin.max_connections: 0 would refuse every admin connection (/readyz included); give at least 1 (default 64)".into());
    } else if c.admin.max_connections > MAX_ADMIN_CONNECTIONS {
        p.push(format!(
            "admin.max_connections: {} is more connections than a process can open files; give at most {MAX_ADMIN_CONNECTIONS} (default 64)",
            c.admin.max_connections
        ));
    }
    for (key, ms) in [
        ("admin.header_timeout_ms", c.admin.header_timeout_ms),
        ("admin.idle_timeout_ms", c.admin.idle_timeout_ms),
    ] {
        if ms == 0 {
            p.push(format!(
                "{key}: 0 would close every admin connection before its request; give at least 1"
            ));
        }
    }
    p.extend(c.health.problems());
    for (key, size) in [
        (
            "limits.max_query_buffer_bytes",
            &c.limits.max_query_buffer_bytes,
        ),
        (
            "limits.max_output_buffer_bytes",
            &c.limits.max_output_buffer_bytes,
        ),
        ("limits.proto_max_bulk_len", &c.limits.proto_max_bulk_len),
        ("journal.max_bytes", &c.journal.max_bytes),
        ("journal.compact_min_bytes", &c.journal.compact_min_bytes),
        ("near_cache.max_bytes", &c.near_cache.max_bytes),
        ("replica.max_bytes", &c.replica.max_bytes),
    ] {
        if let Err(e) = size.bytes() {
            p.push(format!("{key}: {e}"));
        }
    }
    // A size that does not parse is reported above; its default stands in
    // so that the other limits are still checked.
    // Field by field, so a limit added to the proxy keeps its default here.
    let mut lenient = proxy::LimitsConfig::default();
    let sizes = &c.limits;
    if let Ok(b) = sizes.max_query_buffer_bytes.bytes() {
        lenient.max_query_buffer_bytes = b;
    }
    if let Ok(b) = sizes.max_output_buffer_bytes.bytes() {
        lenient.max_output_buffer_bytes = b;
    }
    if let Ok(b) = sizes.proto_max_bulk_len.bytes() {
        lenient.proto_max_bulk_len = b;
    }
    lenient.command_timeout_ms = c.limits.command_timeout_ms;
    lenient.max_clients = c.limits.max_clients;
    lenient.max_inflight_per_client = c.limits.max_inflight_per_client;
    lenient.max_nesting = c.limits.max_nesting;
    lenient.client_write_timeout_ms = c.limits.client_write_timeout_ms;
    lenient.hold_during_outage_ms = c.limits.hold_during_outage_ms;
    p.extend(lenient.problems());
    if lenient.max_output_buffer_bytes == 0 {
        p.push("limits.max_output_buffer_bytes: 0 would disconnect every client at its first reply; give a size such as \"256MiB\" (the default)".into());
    }
    if c.journal.max_bytes.bytes() == Ok(0) {
        p.push("journal.max_bytes: 0 would refuse every durable write; give a size such as \"1GiB\" (the default)".into());
    }
    if !["always", "everysec", "no"].contains(&c.journal.fsync.as_str()) {
        p.push(format!(
            "journal.fsync: '{}' is not one of always, everysec, no",
            c.journal.fsync
        ));
    }
    // `inf` and `nan` are valid TOML floats; neither is a ratio.
    if !c.journal.compact_ratio.is_finite() || c.journal.compact_ratio <= 1.0 {
        p.push(format!(
            "journal.compact_ratio: {} must be a finite number more than 1 (default 4.0)",
            c.journal.compact_ratio
        ));
    }
    if let Err(e) = parse_duration_ms(&c.journal.retain_after_replay) {
        p.push(format!("journal.retain_after_replay: {e}"));
    }
    if !matches!(c.replica.mode.as_str(), "auto" | "off") {
        p.push(format!(
            "replica.mode: '{}' is not one of auto, off",
            c.replica.mode
        ));
    }
    if !matches!(c.outage.writer.as_str(), "auto" | "never") {
        p.push(format!(
            "outage.writer: '{}' is not one of auto, never",
            c.outage.writer
        ));
    }
    if !matches!(c.replica.on_data_loss.as_str(), "restore" | "replay-only") {
        p.push(format!(
            "replica.on_data_loss: '{}' is not one of restore, replay-only",
            c.replica.on_data_loss
        ));
    }
    if c.replica.max_bytes.bytes() == Ok(0) {
        p.push("replica.max_bytes: must be more than 0 (set replica.mode = \"off\" to have no replica)".into());
    }
    match c.auth.mode.as_str() {
        "passthrough" => {}
        "local" if c.auth.users.is_empty() => {
            p.push("auth.users: mode = \"local\" needs at least one user".into())
        }
        "local" => {}
        m => p.push(format!("auth.mode: '{m}' is not one of passthrough, local")),
    }
    for (i, u) in c.auth.users.iter().enumerate() {
        if u.password_sha256.len() != 64
            || !u.password_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            p.push(format!("auth.users[{i}].password_sha256: must be 64 hex digits (sha256sum of the password)"));
        }
    }
    for (i, a) in c.alert.iter().enumerate() {
        match crate::ops::HttpUrl::parse(&a.url) {
            Err(e) => p.push(format!("alert[{i}].url: {e}")),
            Ok(u) if !u.tls && !a.ca_file.is_empty() => p.push(format!(
                "alert[{i}].ca_file: set, but the url is http://, so nothing would use it; write https:// or remove it"
            )),
            Ok(u) if u.tls => {
                if let Err(e) = crate::ops::webhook_tls(&a.ca_file) {
                    p.push(format!("alert[{i}].ca_file: {e}"));
                }
            }
            Ok(_) => {}
        }
        if a.timeout_ms == 0 {
            p.push(format!(
                "alert[{i}].timeout_ms: 0 would give up on every delivery before it starts; give at least 1 (default {DEFAULT_ALERT_TIMEOUT_MS})"
            ));
        }
    }
    let r = &c.remediation;
    if r.on_down.first().is_some_and(|prog| prog.trim().is_empty()) {
        p.push("remediation.on_down: the first element is the program to run and must not be empty (e.g. [\"systemctl\", \"restart\", \"redis-server\"])".into());
    }
    if r.after_ms == 0 {
        p.push("remediation.after_ms: 0 would run the command on the first failed probe, for any blip; give at least 1 (default 10000)".into());
    }
    if r.max_attempts == 0 {
        p.push("remediation.max_attempts: 0 would never run the command; give at least 1 (default 3), or leave on_down empty to turn remediation off".into());
    }
    p.extend(tls_problems(c));
    for (i, pattern) in c.doctor.ignore.iter().enumerate() {
        if let Some(why) = doctor::unknown_ignore(pattern) {
            p.push(format!("doctor.ignore[{i}]: {why}"));
        }
    }
    for (i, k) in c.keyspace.iter().enumerate() {
        if k.pattern.is_empty() {
            p.push(format!("keyspace[{i}].pattern: must not be empty"));
        }
        if !["durable", "cache", "fail-fast"].contains(&k.policy.as_str()) {
            p.push(format!(
                "keyspace[{i}].policy: '{}' is not one of durable, cache, fail-fast",
                k.policy
            ));
        }
    }
    p
}

/// `""` as "not set".
fn path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// `[tls]` and `[upstream_tls]`: the keys that go together, and the files
/// themselves (read and built as they will be at start, so a missing file
/// or a key that does not match its certificate is found by `config
/// check`).
fn tls_problems(c: &Config) -> Vec<String> {
    let mut p = Vec::new();
    let t = &c.tls;
    if t.listen.is_empty() {
        for (key, v) in [
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
            ("client_ca_file", &t.client_ca_file),
        ] {
            if !v.is_empty() {
                p.push(format!(
                    "tls.{key}: set, but tls.listen is empty, so no TLS listener would use it; give tls.listen (e.g. \"0.0.0.0:6390\") or remove it"
                ));
            }
        }
    } else {
        let mut complete = true;
        if let Err(e) = check_listen(&t.listen) {
            p.push(format!("tls.listen: {e}"));
        } else if t.listen == c.listen {
            p.push(format!(
                "tls.listen: '{}' is also listen; give the TLS listener a port of its own",
                t.listen
            ));
        }
        for (key, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            if v.is_empty() {
                complete = false;
                p.push(format!("tls.{key}: required with tls.listen (a PEM file)"));
            }
        }
        if complete {
            if let Err(e) = tls_acceptor(c) {
                p.push(format!("tls: {e}"));
            }
        }
    }
    let u = &c.upstream_tls;
    let rediss = UpstreamUrl::parse(&c.upstream).is_ok_and(|u| u.tls);
    let set: Vec<&str> = [
        ("ca_file", !u.ca_file.is_empty()),
        ("cert_file", !u.cert_file.is_empty()),
        ("key_file", !u.key_file.is_empty()),
        ("insecure_skip_verify", u.insecure_skip_verify),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    if !rediss {
        for key in set {
            p.push(format!(
                "upstream_tls.{key}: set, but upstream is not a rediss:// URL, so nothing would use it; write the upstream as rediss://host:port, or remove it"
            ));
        }
        return p;
    }
    if u.cert_file.is_empty() != u.key_file.is_empty() {
        let (given, missing) = if u.key_file.is_empty() {
            ("cert_file", "key_file")
        } else {
            ("key_file", "cert_file")
        };
        p.push(format!(
            "upstream_tls.{missing}: required with upstream_tls.{given} (a client certificate needs both)"
        ));
        return p;
    }
    if u.insecure_skip_verify && !u.ca_file.is_empty() {
        p.push("upstream_tls.ca_file: has no effect with insecure_skip_verify = true, which trusts any certificate; remove one of them".into());
        return p;
    }
    if let Err(e) = upstream_tls(c) {
        p.push(format!("upstream_tls: {e}"));
    }
    p
}

/// The TLS listener's acceptor, or `None` without `tls.listen`.
pub fn tls_acceptor(c: &Config) -> Result<Option<std::sync::Arc<tls::Acceptor>>, String> {
    if c.tls.listen.is_empty() {
        return Ok(None);
    }
    tls::Acceptor::new(tls::ServerOptions {
        cert_file: PathBuf::from(&c.tls.cert_file),
        key_file: PathBuf::from(&c.tls.key_file),
        client_ca_file: path(&c.tls.client_ca_file),
    })
    .map(|a| Some(std::sync::Arc::new(a)))
    .map_err(|e| e.to_string())
}

/// The Sentinels' credentials from `[sentinel]`, if any.
pub fn sentinel_auth(c: &Config) -> Option<upstream::Credentials> {
    (!c.sentinel.password.is_empty()).then(|| upstream::Credentials {
        user: (!c.sentinel.username.is_empty()).then(|| c.sentinel.username.clone()),
        password: c.sentinel.password.clone(),
    })
}

/// The `[upstream_tls]` options.
pub fn upstream_tls_options(c: &Config) -> tls::ClientOptions {
    let u = &c.upstream_tls;
    tls::ClientOptions {
        ca_file: path(&u.ca_file),
        cert_file: path(&u.cert_file),
        key_file: path(&u.key_file),
        insecure_skip_verify: u.insecure_skip_verify,
    }
}

/// The TLS client for a `rediss://` upstream (built from `[upstream_tls]`).
pub fn upstream_tls(c: &Config) -> Result<tls::TlsClient, String> {
    tls::TlsClient::new(&upstream_tls_options(c)).map_err(|e| e.to_string())
}

/// The proxy's limits in bytes.
pub fn limits(c: &Config) -> Result<proxy::LimitsConfig, String> {
    Ok(proxy::LimitsConfig {
        command_timeout_ms: c.limits.command_timeout_ms,
        max_clients: c.limits.max_clients,
        max_inflight_per_client: c.limits.max_inflight_per_client,
        max_query_buffer_bytes: c.limits.max_query_buffer_bytes.bytes()?,
        max_output_buffer_bytes: c.limits.max_output_buffer_bytes.bytes()?,
        proto_max_bulk_len: c.limits.proto_max_bulk_len.bytes()?,
        max_nesting: c.limits.max_nesting,
        client_write_timeout_ms: c.limits.client_write_timeout_ms,
        hold_during_outage_ms: c.limits.hold_during_outage_ms,
    })
}

/// The admin server's bounds.
pub fn admin_limits(c: &Config) -> admin::AdminLimits {
    admin::AdminLimits {
        max_connections: c.admin.max_connections,
        header_timeout: std::time::Duration::from_millis(c.admin.header_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(c.admin.idle_timeout_ms),
    }
}

/// The `[auth]` mode, with local users' password hashes decoded.
pub fn auth(c: &Config) -> Result<proxy::access::AuthMode, String> {
    match c.auth.mode.as_str() {
        "passthrough" => Ok(proxy::access::AuthMode::Passthrough),
        "local" => c
            .auth
            .users
            .iter()
            .map(|u| proxy::access::LocalUser::new(&u.name, &u.password_sha256))
            .collect::<Result<Vec<_>, _>>()
            .map(proxy::access::AuthMode::Local),
        other => Err(format!("auth.mode: '{other}'")),
    }
}

/// The journal settings.
pub fn journal(c: &Config) -> Result<journal::JournalConfig, String> {
    let fsync = match c.journal.fsync.as_str() {
        "always" => journal::Fsync::Always,
        "everysec" => journal::Fsync::EverySec,
        "no" => journal::Fsync::No,
        other => return Err(format!("journal.fsync: '{other}'")),
    };
    Ok(journal::JournalConfig {
        fsync,
        max_bytes: c.journal.max_bytes.bytes()?,
        retain_after_replay: std::time::Duration::from_millis(parse_duration_ms(
            &c.journal.retain_after_replay,
        )?),
        ..journal::JournalConfig::default()
    })
}

/// The effective config as TOML, for `config print`.
pub fn to_toml(c: &Config) -> String {
    let mut c = c.clone();
    if !c.admin.token.is_empty() {
        c.admin.token = "***".into();
    }
    if !c.sentinel.password.is_empty() {
        c.sentinel.password = "***".into();
    }
    c.upstream = redact_url(&c.upstream);
    // Webhook URLs often carry their secret in the path (chat services'
    // incoming webhooks do); the host is enough to tell which one is set.
    for a in &mut c.alert {
        if let Ok(u) = crate::ops::HttpUrl::parse(&a.url) {
            if u.path != "/" {
                a.url = format!("http://{}/***", u.authority());
            }
        }
    }
    let mut s = toml::to_string_pretty(&c).unwrap_or_default();
    if c.keyspace.is_empty() {
        s.push_str("\n# no [[keyspace]]: every key is fail-fast during an outage\n");
    }
    s
}

/// `REDOUBT_*` variables of this process.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("REDOUBT_"))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)], flags: Overrides) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, toml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load(Some(&p), &env, &flags)
    }

    #[test]
    fn defaults_are_valid_and_match_design() {
        let l = load_str("", &[], Overrides::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let c = l.config;
        assert_eq!(c.listen, "127.0.0.1:6380");
        assert_eq!(c.admin.listen, "127.0.0.1:9380");
        assert_eq!(c.health.interval_ms, 250);
        assert_eq!(limits(&c).unwrap().max_query_buffer_bytes, 1 << 30);
        assert_eq!(c.journal.fsync, "always");
        assert_eq!(
            admin_limits(&c),
            admin::AdminLimits {
                max_connections: 64,
                header_timeout: std::time::Duration::from_secs(5),
                idle_timeout: std::time::Duration::from_secs(30),
            }
        );
    }

    #[test]
    fn tls_keys_that_go_together_are_checked_and_the_environment_sets_them() {
        let all = problems_of(
            r#"
            upstream = "rediss://h:6380"
            [tls]
            cert_file = "/a.pem"
            [upstream_tls]
            cert_file = "/c.pem"
            "#,
        );
        assert_has(
            &all,
            &[
                "tls.cert_file: set, but tls.listen is empty",
                "upstream_tls.key_file: required with upstream_tls.cert_file",
            ],
        );
        let all = problems_of(
            r#"
            [tls]
            listen = "127.0.0.1:6380"
            "#,
        );
        assert_has(
            &all,
            &[
                "tls.listen: '127.0.0.1:6380' is also listen",
                "tls.cert_file: required with tls.listen",
                "tls.key_file: required with tls.listen",
            ],
        );
        let l = load_str(
            "",
            &[
                ("REDOUBT_TLS_LISTEN", "127.0.0.1:6390"),
                ("REDOUBT_UPSTREAM_TLS_INSECURE_SKIP_VERIFY", "true"),
            ],
            Overrides::default(),
        );
        assert_eq!(l.config.tls.listen, "127.0.0.1:6390");
        assert!(l.config.upstream_tls.insecure_skip_verify);
        assert_has(
            &l.problems.join("\n"),
            &["upstream_tls.insecure_skip_verify: set, but upstream is not a rediss:// URL"],
        );
    }

    fn problems_of(toml: &str) -> String {
        load_str(toml, &[], Overrides::default())
            .problems
            .join("\n")
    }

    fn assert_has(all: &str, needles: &[&str]) {
        for needle in needles {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn a_type_error_in_one_key_hides_no_other_problem_of_its_section() {
        let l = load_str(
            r#"
            [health]
            interval_ms = "fast"
            timeout_ms = 0
            down_after = "two"
            up_after = 7
            [limits]
            command_timeout_ms = "1s"
            max_clients = 0
            max_nesting = 16
            [journal]
            fsync = 1
            compact_ratio = 0.5
            retain_after_replay = "2h"
            [admin]
            max_connections = "many"
            idle_timeout_ms = 0
            "#,
            &[],
            Overrides::default(),
        );
        let all = l.problems.join("\n");
        assert_has(
            &all,
            &[
                "health.interval_ms: invalid type",
                "health.timeout_ms must be at least 1",
                "health.down_after: invalid type",
                "limits.command_timeout_ms: invalid type",
                "limits.max_clients must be at least 1",
                "journal.fsync: invalid type",
                "journal.compact_ratio: 0.5 must be a finite number more than 1",
                "admin.max_connections: invalid type",
                "admin.idle_timeout_ms: 0 would close",
            ],
        );
        // The good keys beside the bad ones still apply.
        assert_eq!(l.config.health.up_after, 7);
        assert_eq!(l.config.limits.max_nesting, 16);
        assert_eq!(l.config.journal.retain_after_replay, "2h");
    }

    #[test]
    fn zero_where_it_makes_no_sense_is_refused() {
        let all = problems_of(
            r#"
            listen = "127.0.0.1:0"
            upstream = "redis://127.0.0.1:0"
            [admin]
            listen = "127.0.0.1:0"
            max_connections = 0
            header_timeout_ms = 0
            [limits]
            max_output_buffer_bytes = 0
            [journal]
            max_bytes = "0"
            "#,
        );
        assert_has(
            &all,
            &[
                "listen: '127.0.0.1:0' has port 0",
                "admin.listen: '127.0.0.1:0' has port 0",
                "upstream: 'redis://127.0.0.1:0' has port 0",
                "admin.max_connections: 0 would refuse",
                "admin.header_timeout_ms: 0 would close",
                "limits.max_output_buffer_bytes: 0 would disconnect",
                "journal.max_bytes: 0 would refuse every durable write",
            ],
        );
        // Zero that means something stays allowed.
        let l = load_str(
            "[near_cache]\nmax_bytes = 0\nmax_stale_ms = 0\n[journal]\nretain_after_replay = \"0s\"\ncompact_min_bytes = 0\n",
            &[],
            Overrides::default(),
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
    }

    #[test]
    fn infinite_nan_negative_and_overflowing_values_are_refused() {
        let all = problems_of(
            r#"
            [journal]
            compact_ratio = inf
            retain_after_replay = "99999999999999999999d"
            compact_min_bytes = -1
            [near_cache]
            max_bytes = "99999999999999999999999TiB"
            [limits]
            proto_max_bulk_len = "17179869184GiB"
            max_query_buffer_bytes = "1.5e3"
            [admin]
            max_connections = 9223372036854775807
            "#,
        );
        assert_has(
            &all,
            &[
                "journal.compact_ratio: inf must be a finite number",
                "journal.retain_after_replay: '99999999999999999999d' is longer than 64 bits",
                "journal.compact_min_bytes: -1 is negative",
                "near_cache.max_bytes: '99999999999999999999999TiB' is more than 16 EiB",
                "limits.proto_max_bulk_len: '17179869184GiB' is more than 16 EiB",
                "limits.max_query_buffer_bytes: '1.5e3' has an unknown unit",
                "admin.max_connections: 9223372036854775807 is more connections",
            ],
        );
        assert!(problems_of("[journal]\ncompact_ratio = nan\n")
            .contains("journal.compact_ratio: NaN must be a finite number"));
        assert!(problems_of("[journal]\ncompact_ratio = -inf\n").contains("journal.compact_ratio"));
    }

    #[test]
    fn the_upstream_password_is_never_printed() {
        let url = "redis://app:hunter2@10.0.0.1:6390/3";
        let l = load_str(
            &format!("upstream = \"{url}\"\n"),
            &[],
            Overrides::default(),
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.upstream, url, "the effective value keeps it");
        let printed = to_toml(&l.config);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("redis://app:***@10.0.0.1:6390/3"),
            "{printed}"
        );
        // Refused URLs: the parser quotes them, the messages must not.
        for bad in [
            "redis://app:hunter2@10.0.0.1:notaport",
            "redis://:hunter2@:6379",
            "http://app:hunter2@10.0.0.1:6379",
            "app:hunter2@10.0.0.1:6379",
            "redis://app:hunter2@10.0.0.1:0",
            "redis://app:hunter2@10.0.0.1:6379/notadb",
        ] {
            let all = problems_of(&format!("upstream = \"{bad}\"\n"));
            assert!(all.contains("upstream:"), "{bad} is refused: {all}");
            assert!(!all.contains("hunter2"), "{all}");
        }
        // From the environment too, and a secret of the wrong type is
        // named, not shown.
        let l = load_str(
            "[admin]\ntoken = 271828\n",
            &[("REDOUBT_UPSTREAM", "redis://u:hunter2@h:notaport")],
            Overrides::default(),
        );
        let all = l.problems.join("\n");
        assert!(all.contains("admin.token: must be a string"), "{all}");
        assert!(!all.contains("hunter2") && !all.contains("271828"), "{all}");
    }

    #[test]
    fn alerts_and_remediation_load_and_print_without_the_webhook_path() {
        let l = load_str(
            "[[alert]]\nurl = \"http://hooks.internal:8080/T0/B1/s3cret\"\n[[alert]]\nurl = \"http://relay\"\ntimeout_ms = 500\n[remediation]\non_down = [\"systemctl\", \"restart\", \"redis-server\"]\n",
            &[("REDOUBT_REMEDIATION_AFTER_MS", "2000")],
            Overrides::default(),
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let c = &l.config;
        assert_eq!(c.alert.len(), 2);
        assert_eq!(c.alert[0].timeout_ms, DEFAULT_ALERT_TIMEOUT_MS);
        assert_eq!(c.alert[1].timeout_ms, 500);
        assert_eq!(c.remediation.on_down.len(), 3);
        assert_eq!(c.remediation.after_ms, 2000);
        assert_eq!(c.remediation.max_attempts, 3);
        let printed = to_toml(c);
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("http://hooks.internal:8080/***"),
            "{printed}"
        );
        assert!(printed.contains("http://relay"), "{printed}");
        assert!(
            problems_of("[remediation]\nmax_attempts = 0\non_down = [\"\"]\n")
                .contains("remediation.max_attempts: 0")
        );
        assert!(problems_of("alert = 1\n").contains("alert: must be an array of tables"));
    }

    #[test]
    fn redact_url_masks_only_the_password() {
        for (given, want) in [
            ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
            ("redis://:p@h:1", "redis://:***@h:1"),
            ("redis://u:p@ss@h:1", "redis://u:***@h:1"),
            ("u:p@h:1", "u:***@h:1"),
            ("redis://u@h:1", "redis://u@h:1"),
            ("redis://h:1", "redis://h:1"),
            ("", ""),
        ] {
            assert_eq!(redact_url(given), want, "{given}");
        }
    }

    #[test]
    fn a_cluster_upstream_takes_durable_and_fail_fast_keyspaces_not_cache_ones() {
        let with = |policy: &str| {
            load_str(
                &format!(
                    "upstream = \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001\"\n[[keyspace]]\npattern = \"s:*\"\npolicy = \"{policy}\"\n"
                ),
                &[],
                Overrides::default(),
            )
            .problems
            .join("\n")
        };
        assert_eq!(with("fail-fast"), "");
        assert_eq!(with("durable"), "");
        let p = with("cache");
        assert!(
            p.contains("cache keyspaces are not supported with a redis+cluster:// upstream yet"),
            "{p}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_key_names() {
        let l = load_str(
            r#"
            upstream = "rediss+cluster://h:1"
            bogus = 1
            [health]
            interval_ms = "fast"
            [limits]
            max_query_buffer_bytes = "12 parsecs"
            nope = 2
            [journal]
            fsync = "sometimes"
            [[keyspace]]
            pattern = "sess:*"
            policy = "forever"
            [admin]
            listen = "0.0.0.0:9380"
            "#,
            &[],
            Overrides::default(),
        );
        let all = l.problems.join("\n");
        for needle in [
            "bogus: unknown key",
            "limits.nope: unknown key",
            "upstream: scheme 'rediss+cluster://' is not supported yet",
            "health.interval_ms",
            "limits.max_query_buffer_bytes",
            "journal.fsync",
            "keyspace[0].policy",
            "admin.token: required",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn standalone_on_an_address_other_hosts_reach_needs_users() {
        let open = load_str("listen = \"0.0.0.0:6380\"", &[], Overrides::default());
        assert!(
            open.problems.join("\n").contains("protected mode"),
            "{:?}",
            open.problems
        );
        let proxy = load_str(
            "listen = \"0.0.0.0:6380\"\nupstream = \"redis://127.0.0.1:6379\"",
            &[],
            Overrides::default(),
        );
        assert!(proxy.problems.is_empty(), "{:?}", proxy.problems);
        let local = load_str("listen = \"[::1]:6380\"", &[], Overrides::default());
        assert!(local.problems.is_empty(), "{:?}", local.problems);
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let l = load_str(
            "upstream = \"redis://file:1\"\nlisten = \"127.0.0.1:1\"\n[health]\ninterval_ms = 100\n",
            &[("REDOUBT_UPSTREAM", "redis://env:2"), ("REDOUBT_HEALTH_INTERVAL_MS", "50"), ("REDOUBT_LISTEN", "127.0.0.1:2")],
            Overrides { listen: Some("127.0.0.1:3".into()), ..Default::default() },
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.upstream, "redis://env:2");
        assert_eq!(l.config.health.interval_ms, 50);
        assert_eq!(l.config.listen, "127.0.0.1:3");
    }

    #[test]
    fn threads_come_from_the_file_or_the_environment_and_are_bounded() {
        let l = load_str("threads = 3\n", &[], Overrides::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.threads, 3);
        let l = load_str(
            "threads = 3\n",
            &[("REDOUBT_THREADS", "1")],
            Overrides::default(),
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.threads, 1);
        let l = load_str("threads = 5000\n", &[], Overrides::default());
        assert!(
            l.problems
                .iter()
                .any(|p| p.contains("threads: 5000 is more than 1024")),
            "{:?}",
            l.problems
        );
        let l = load_str("threads = -1\n", &[], Overrides::default());
        assert!(
            l.problems.iter().any(|p| p.contains("threads")),
            "{:?}",
            l.problems
        );
    }

    #[test]
    fn unknown_env_is_a_problem() {
        let l = load_str(
            "",
            &[("REDOUBT_HEALTH_NOPE", "1"), ("REDOUBT_WHATEVER", "x")],
            Overrides::default(),
        );
        let all = l.problems.join("\n");
        assert!(all.contains("health.nope: unknown key"), "{all}");
        assert!(all.contains("REDOUBT_WHATEVER"), "{all}");
    }

    /// What a Kubernetes Service named `redoubt` (ports `resp` 6379 and
    /// `admin-http` 9380) puts in every pod's environment.
    const SERVICE_LINKS: &[(&str, &str)] = &[
        ("REDOUBT_SERVICE_HOST", "10.0.0.1"),
        ("REDOUBT_SERVICE_PORT", "6379"),
        ("REDOUBT_SERVICE_PORT_RESP", "6379"),
        ("REDOUBT_SERVICE_PORT_ADMIN_HTTP", "9380"),
        ("REDOUBT_PORT", "tcp://10.0.0.1:6379"),
        ("REDOUBT_PORT_6379_TCP", "tcp://10.0.0.1:6379"),
        ("REDOUBT_PORT_6379_TCP_PROTO", "tcp"),
        ("REDOUBT_PORT_6379_TCP_PORT", "6379"),
        ("REDOUBT_PORT_6379_TCP_ADDR", "10.0.0.1"),
        ("REDOUBT_PORT_9380_UDP_ADDR", "10.0.0.1"),
    ];

    #[test]
    fn kubernetes_service_links_are_ignored() {
        let l = load_str("", SERVICE_LINKS, Overrides::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(
            l.config.listen, DEFAULT_LISTEN,
            "nothing was taken from them"
        );
        // Alongside real settings, which still apply.
        let mut env = SERVICE_LINKS.to_vec();
        env.push(("REDOUBT_HEALTH_INTERVAL_MS", "50"));
        let l = load_str("", &env, Overrides::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(l.config.health.interval_ms, 50);
    }

    #[test]
    fn near_misses_of_service_links_and_misspelt_settings_are_refused() {
        for k in [
            "REDOUBT_HEALTH_INTERVL_MS",
            "REDOUBT_SERVICE_HOSTS",
            "REDOUBT_SERVICE_PORT_",
            "REDOUBT_SERVICE_PORT_resp",
            "REDOUBT_SERVICE",
            "REDOUBT_PORTS",
            "REDOUBT_PORT_6379",
            "REDOUBT_PORT_6379_HTTP",
            "REDOUBT_PORT_X_TCP",
            "REDOUBT_PORT_6379_TCP_HOST",
            "REDOUBT_PORT_6379_TCP_ADDR_X",
            "REDOUBT_LISTN",
        ] {
            let l = load_str("", &[(k, "1")], Overrides::default());
            assert_eq!(l.problems.len(), 1, "{k} is refused: {:?}", l.problems);
        }
    }

    #[test]
    fn no_setting_is_named_like_a_service_link() {
        let names = setting_env_names();
        assert!(
            names.contains(&"REDOUBT_HEALTH_INTERVAL_MS".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"REDOUBT_LISTEN".to_string()), "{names:?}");
        for n in &names {
            let rest = n.strip_prefix("REDOUBT_").unwrap_or(n);
            assert!(
                !is_service_link(rest),
                "{n} would be ignored as a service link"
            );
            assert!(is_setting(rest), "{n}");
        }
    }

    #[test]
    fn local_auth_decodes_its_users_and_needs_an_upstream() {
        let users = r#"
            [auth]
            mode = "local"
            users = [{ name = "app", password_sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" }]
            "#;
        let l = load_str(
            &format!("upstream = \"redis://127.0.0.1:6379\"\n{users}"),
            &[],
            Overrides::default(),
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        match auth(&l.config) {
            Ok(proxy::access::AuthMode::Local(u)) => assert_eq!(u.len(), 1),
            other => panic!("{other:?}"),
        }
        // Standalone checks logins too.
        let l = load_str(users, &[], Overrides::default());
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let l = load_str("", &[], Overrides::default());
        assert!(matches!(
            auth(&l.config),
            Ok(proxy::access::AuthMode::Passthrough)
        ));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216TiB").is_err(), "2^64 does not fit");
        assert_eq!(parse_size("16777215TiB").unwrap(), 16_777_215 << 40);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("1.5e300TiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_duration_ms("213503982334601d").is_err());
        assert_eq!(parse_duration_ms("0s").unwrap(), 0);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert!(parse_duration_ms("soon").is_err());
    }
}

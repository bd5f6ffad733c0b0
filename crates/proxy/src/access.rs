//! Who a session is, and what it may touch when Redoubt answers from local
//! data (DESIGN, Security).
//!
//! Two modes (`[auth] mode`):
//! - **pass-through**: clients log in to Redis as they would directly. A
//!   session that has not sent `AUTH` is Redis's `default` user, never
//!   Redoubt's own identity (the URL's credentials are for probes, replay
//!   and the `ACL GETUSER` reads below). While Redis is up, Redis judges
//!   every login and command. For the times Redoubt answers itself (an
//!   outage, keys still being replayed), it keeps two things in memory:
//!   - the credentials Redis accepted recently, as salted hashes
//!     ([`credentials`]), so a client reconnecting during an outage can
//!     log in again; a wrong password and credentials never seen get
//!     the same `UNAVAILABLE` (so an outage does not reveal which user
//!     names exist);
//!   - each user's permissions from `ACL GETUSER` ([`acl`]), read with
//!     Redoubt's identity when the user logs in, when Redis comes up, and
//!     every [`REFRESH_EVERY`] while it is up. Local data is served only
//!     for commands and keys the user may use, else Redis's `NOPERM`.
//!
//!   When a user's permissions could not be read (Redoubt's identity may
//!   not run `ACL GETUSER`, or Redis was never up since Redoubt started),
//!   local data is refused to that user with `UNAVAILABLE`: serving it
//!   might hand keys to someone Redis would refuse, and refusing is the
//!   safe side. A Redis without ACLs (before 6.0: `ERR unknown command`)
//!   has no per-user permissions: whoever logs in has every key, and an
//!   unauthenticated session has them when Redis answers it without
//!   `AUTH`.
//! - **local**: Redoubt checks clients against its own users (SHA-256 of
//!   the password, compared in constant time) and talks to Redis with its
//!   own identity. Until a session logs in, everything but the commands
//!   Redis allows before `AUTH` (`AUTH`, `HELLO`, `QUIT`, `RESET`) is
//!   `NOAUTH`. Logged-in sessions may use every key locally: Redoubt's
//!   users carry no per-key rules, and logging in needs no Redis.
//!
//! # Layout
//! - [`acl`]: [`AclProfile`], parsing `ACL GETUSER` and judging commands
//!   and keys.
//! - [`credentials`]: [`CredentialMemory`], salted hashes of recently
//!   accepted credentials, bounded in users and age.

pub mod acl;
pub mod credentials;
pub mod standalone_acl;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use resp::Frame;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use upstream::{Conn, Credentials, Handshake, HealthHandle, State, UpstreamUrl};

pub use acl::{AclProfile, Categories};
pub use credentials::{constant_time_eq, CredentialMemory, Recall};

use crate::gate::{Gated, Refusal};
use crate::reply;

/// Users whose credentials are remembered at most (the least recently
/// accepted is dropped first). Also bounds the permissions kept.
pub const MAX_REMEMBERED_USERS: usize = 1024;
/// Credentials are forgotten this long after Redis last accepted them.
pub const REMEMBER_FOR: Duration = Duration::from_secs(24 * 3600);
/// Permissions are read again this often while Redis is up, so an
/// `ACL SETUSER` reaches local serving within this time.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A login retries reading permissions that could not be read after this.
const RETRY_FAILED: Duration = Duration::from_secs(5);

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const AUTH_WITHOUT_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
const NOT_SEEN: &str =
    "UNAVAILABLE redis is down and these credentials cannot be checked now (only logins redis accepted recently are known): command not executed; retry when redis is back";

/// `[auth] mode`.
#[derive(Debug, Clone, Default)]
pub enum AuthMode {
    /// Clients log in to Redis; Redoubt remembers what Redis accepted.
    #[default]
    Passthrough,
    /// Clients log in to Redoubt's own users.
    Local(Vec<LocalUser>),
}

/// One of Redoubt's own users (`[auth] users`).
#[derive(Clone)]
pub struct LocalUser {
    name: String,
    password_sha256: [u8; 32],
}

impl LocalUser {
    /// A user with the hex SHA-256 of its password (64 hex digits).
    pub fn new(name: &str, password_sha256_hex: &str) -> Result<LocalUser, String> {
        let hex = password_sha256_hex.as_bytes();
        if hex.len() != 64 {
            return Err(format!(
                "password_sha256 of user '{name}' must be 64 hex digits"
            ));
        }
        let mut digest = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            digest[i] = u8::from_str_radix(s, 16)
                .map_err(|_| format!("password_sha256 of user '{name}' must be 64 hex digits"))?;
        }
        Ok(LocalUser {
            name: name.to_string(),
            password_sha256: digest,
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The password's SHA-256 in hex, as Redis shows passwords in `ACL
    /// LIST` and `ACL GETUSER`.
    pub fn password_hex(&self) -> String {
        self.password_sha256
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Checks `password` for `user` against Redoubt's users: every user's
/// digest is compared alike (constant time), so timing does not tell
/// which names exist. True when it logs in.
pub fn check_users(users: &[LocalUser], user: &str, password: &[u8]) -> bool {
    let digest: [u8; 32] = Sha256::digest(password).into();
    let mut found = false;
    for u in users {
        let same = constant_time_eq(&u.password_sha256, &digest);
        found |= same & (u.name == user);
    }
    found
}

impl std::fmt::Debug for LocalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who a session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Pass-through, no `AUTH` yet: Redis's `default` user, as Redis would
    /// treat an unauthenticated connection.
    Default,
    /// Pass-through, logged in as this Redis user.
    Redis(String),
    /// Local mode, not logged in.
    Anonymous,
    /// Local mode, logged in as this Redoubt user.
    Local(String),
}

impl Identity {
    /// The user name `CLIENT LIST` shows.
    pub fn name(&self) -> &str {
        match self {
            Identity::Default | Identity::Anonymous => "default",
            Identity::Redis(u) | Identity::Local(u) => u,
        }
    }
}

/// What is known of a Redis user's permissions.
#[derive(Debug, Clone)]
enum Known {
    Profile(Arc<AclProfile>),
    /// `ACL GETUSER` said nil: the user was deleted.
    Missing,
    /// Redis has no ACL (before 6.0); `open`: an unauthenticated
    /// connection is served.
    NoAcl {
        open: bool,
    },
    /// Could not be read: why.
    Failed(String),
}

struct Learned {
    known: Known,
    at: Instant,
}

#[derive(Default)]
struct Profiles {
    users: HashMap<String, Learned>,
    categories: Categories,
}

/// Closes the pooled connections of `(user, unauthenticated_too)`.
type Revoke = Box<dyn Fn(&str, bool) + Send + Sync>;

/// The sessions' shared access state: mode, credential memory, learned
/// permissions.
pub struct Access {
    mode: AuthMode,
    url: UpstreamUrl,
    health: HealthHandle,
    /// Read users' permissions from Redis (pass-through: Redoubt answers
    /// connection commands itself, and local data during outages).
    learn: bool,
    timeout: Duration,
    memory: Mutex<CredentialMemory>,
    profiles: Mutex<Profiles>,
    /// Where `default`'s permissions are kept across restarts (see
    /// [`Access::keep_default_in`]).
    default_file: Mutex<Option<std::path::PathBuf>>,
    /// Closes the pooled connections of a login Redis stopped accepting.
    on_revoked: std::sync::OnceLock<Revoke>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("mode", &self.mode)
            .field("learn", &self.learn)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Access in `mode` in front of `url`. `learn`: read users'
    /// permissions from Redis (there is local data to guard). `timeout`
    /// bounds each read.
    pub fn new(
        mode: AuthMode,
        url: UpstreamUrl,
        health: HealthHandle,
        learn: bool,
        timeout: Duration,
    ) -> Arc<Access> {
        Arc::new(Access {
            mode,
            url,
            health,
            learn,
            timeout,
            memory: Mutex::new(CredentialMemory::new(MAX_REMEMBERED_USERS, REMEMBER_FOR)),
            profiles: Mutex::default(),
            default_file: Mutex::default(),
            on_revoked: std::sync::OnceLock::new(),
        })
    }

    /// Keeps `default`'s permissions (Redis's `ACL GETUSER default` reply
    /// without its password hashes, and the categories it names) in
    /// `path`, and loads what an
    /// earlier run kept there. So a Redoubt restarted during an outage
    /// still serves unauthenticated sessions the keys `default` may
    /// access. Other users cannot log in after such a restart anyway (their
    /// credentials live in memory only).
    pub fn keep_default_in(&self, path: std::path::PathBuf) {
        if let Some((reply, cats)) = load_default(&path) {
            if let Ok(Some(p)) = acl::parse_getuser(&reply) {
                if let Ok(mut known) = self.profiles.lock() {
                    known.categories.extend(cats);
                }
                self.store("default", Known::Profile(Arc::new(p)), true);
                tracing::info!(path = %path.display(), "default user's permissions loaded from the last run");
            }
        }
        if let Ok(mut f) = self.default_file.lock() {
            *f = Some(path);
        }
    }

    fn persist_default(&self, reply: &Frame, p: &AclProfile) {
        let Some(path) = self.default_file.lock().ok().and_then(|f| f.clone()) else {
            return;
        };
        // The password hashes stay in memory: the file is for permissions.
        let strip = |pairs: &[Frame]| -> Vec<Frame> {
            pairs
                .chunks(2)
                .flat_map(|kv| match kv {
                    [k, _] if k.as_bytes() == Some(&b"passwords"[..]) => {
                        vec![k.clone(), Frame::Array(Vec::new())]
                    }
                    other => other.to_vec(),
                })
                .collect()
        };
        let reply = match reply {
            Frame::Array(v) => Frame::Array(strip(v)),
            Frame::Map(m) => Frame::Map(
                m.iter()
                    .map(|(k, v)| {
                        if k.as_bytes() == Some(&b"passwords"[..]) {
                            (k.clone(), Frame::Array(Vec::new()))
                        } else {
                            (k.clone(), v.clone())
                        }
                    })
                    .collect(),
            ),
            other => other.clone(),
        };
        let mut items = vec![reply];
        if let Ok(known) = self.profiles.lock() {
            for cat in p.categories() {
                if let Some(members) = known.categories.get(cat) {
                    let mut row = vec![Frame::bulk(cat)];
                    row.extend(members.iter().map(Frame::bulk));
                    items.push(Frame::Array(row));
                }
            }
        }
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, Frame::Array(items).to_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the default user's permissions; after a restart during an outage local data is refused until Redis is back");
        }
    }

    /// True in local mode.
    pub fn is_local(&self) -> bool {
        matches!(self.mode, AuthMode::Local(_))
    }

    /// A new session's identity.
    pub fn anonymous(&self) -> Identity {
        match self.mode {
            AuthMode::Passthrough => Identity::Default,
            AuthMode::Local(_) => Identity::Anonymous,
        }
    }

    /// The identity a new session's upstream connections use: none in
    /// pass-through (Redis's `default`), Redoubt's own in local mode.
    pub fn upstream_auth(&self) -> Option<Credentials> {
        match self.mode {
            AuthMode::Passthrough => None,
            AuthMode::Local(_) => self.own_credentials(),
        }
    }

    fn own_credentials(&self) -> Option<Credentials> {
        self.url.password.clone().map(|password| Credentials {
            user: self.url.user.clone(),
            password,
        })
    }

    /// Local mode, before `AUTH`: the refusal for a command Redis would
    /// not run unauthenticated. `None`: go ahead.
    pub fn gate(&self, who: &Identity, args: &[Bytes]) -> Option<Refusal> {
        if *who != Identity::Anonymous {
            return None;
        }
        // The command table says which commands Redis runs before `AUTH`.
        let allowed = resp::lookup(args).is_some_and(|s| s.has(resp::command::F_NO_AUTH));
        (!allowed).then_some(Refusal::NoAuth)
    }

    /// The refusal for a `HELLO` without `AUTH` from a session that is not
    /// logged in (Redis answers `HELLO` only to logged-in clients): in
    /// local mode before `AUTH`; in pass-through when `default` needs a
    /// password.
    pub fn hello_refusal(&self, who: &Identity) -> Option<Bytes> {
        let refused = match who {
            Identity::Anonymous => true,
            Identity::Default => match self.known("default") {
                Some(Known::Profile(p)) => !(p.enabled && p.nopass),
                Some(Known::NoAcl { open }) => !open,
                Some(Known::Missing) => true,
                None | Some(Known::Failed(_)) => false,
            },
            _ => false,
        };
        refused.then(|| Refusal::HelloNoAuth.reply())
    }

    /// Local mode: checks `creds` against Redoubt's users.
    pub fn check_local(&self, creds: &Credentials) -> Result<Identity, Bytes> {
        let AuthMode::Local(users) = &self.mode else {
            return Err(reply::error(WRONGPASS));
        };
        let name = creds.user.as_deref().unwrap_or("default");
        let found = check_users(users, name, creds.password.as_bytes());
        if found {
            Ok(Identity::Local(name.to_string()))
        } else {
            Err(reply::error(WRONGPASS))
        }
    }

    /// Redis accepted `creds` just now: remember them, and make sure the
    /// user's permissions are known and fresh before the session uses
    /// local data.
    pub async fn accepted(&self, creds: &Credentials) -> Identity {
        let user = creds.user.as_deref().unwrap_or("default");
        if let Ok(mut m) = self.memory.lock() {
            m.remember(user, creds.password.as_bytes(), Instant::now());
        }
        if self.learn && !self.fresh(user) {
            // Bounded: a slow read must not hold the login up; the refresh
            // task reads remembered users again anyway.
            let users = [user.to_string()];
            let _ = tokio::time::timeout(self.timeout, self.learn_users(&users)).await;
        }
        Identity::Redis(user.to_string())
    }

    /// Redis refused `creds` with `text`: a refused password is forgotten.
    pub fn refused(&self, creds: &Credentials, text: &str) {
        if text.starts_with("WRONGPASS") {
            let user = creds.user.as_deref().unwrap_or("default");
            if let Ok(mut m) = self.memory.lock() {
                m.forget_password(user, creds.password.as_bytes());
            }
        }
    }

    /// Redis cannot judge `creds` now (down, or it did not answer): the
    /// credential memory does. `why` is the reply for credentials never
    /// seen.
    pub fn recall(&self, creds: &Credentials, why: Bytes) -> Result<Identity, Bytes> {
        let user = creds.user.as_deref().unwrap_or("default");
        let recall = match self.memory.lock() {
            Ok(mut m) => m.recall(user, creds.password.as_bytes(), Instant::now()),
            Err(_) => Recall::Unknown,
        };
        let nopass = matches!(
            self.known(user),
            Some(Known::Profile(p)) if p.enabled && p.nopass
        );
        if nopass && creds.user.is_none() {
            // Redis's answer to `AUTH <password>` when `default` needs none.
            return Err(reply::error(AUTH_WITHOUT_PASSWORD));
        }
        match recall {
            Recall::Match => Ok(Identity::Redis(user.to_string())),
            // A `nopass` user logs in with any password, as in Redis.
            Recall::Mismatch | Recall::Unknown if nopass => Ok(Identity::Redis(user.to_string())),
            // A wrong password and a user never seen answer alike, so an
            // outage does not tell a caller which user names exist.
            Recall::Mismatch | Recall::Unknown => Err(why),
        }
    }

    /// The reply for credentials never seen while Redis is down.
    pub fn not_seen() -> Bytes {
        reply::error(NOT_SEEN)
    }

    /// A session's view for checking one command.
    pub fn caller<'a>(self: &'a Arc<Self>, who: &'a Identity) -> Caller<'a> {
        Caller { access: self, who }
    }

    fn known(&self, user: &str) -> Option<Known> {
        let p = self.profiles.lock().ok()?;
        p.users.get(user).map(|l| l.known.clone())
    }

    /// Read recently enough that a login need not read it again. A failed
    /// read is retried sooner, but not on every login: a pool opening
    /// fifty connections must not cost fifty failing reads.
    fn fresh(&self, user: &str) -> bool {
        self.profiles.lock().is_ok_and(|p| {
            p.users.get(user).is_some_and(|l| {
                let ttl = match l.known {
                    Known::Failed(_) => RETRY_FAILED,
                    _ => REFRESH_EVERY,
                };
                l.at.elapsed() < ttl
            })
        })
    }

    /// True once something definite is known of `user`'s permissions.
    pub fn knows(&self, user: &str) -> bool {
        !matches!(self.known(user), None | Some(Known::Failed(_)))
    }

    /// Keeps permissions current: reads `default`'s and every known
    /// user's when Redis comes up and every [`REFRESH_EVERY`] while it is
    /// up, until `shutdown`. Nothing in local mode or without local data.
    pub fn spawn_refresh(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.is_local() || !self.learn {
            return;
        }
        let me = Arc::downgrade(self);
        let mut rx = self.health.subscribe();
        tokio::spawn(async move {
            let mut answering = false;
            let mut next = tokio::time::Instant::now();
            loop {
                let now_answering = matches!(
                    rx.borrow_and_update().state,
                    State::Up | State::Recovering | State::WritesDown
                );
                let came_up = now_answering && !answering;
                answering = now_answering;
                if answering && (came_up || tokio::time::Instant::now() >= next) {
                    let Some(access) = me.upgrade() else { return };
                    let mut users: Vec<String> = access
                        .profiles
                        .lock()
                        .map(|p| p.users.keys().cloned().collect())
                        .unwrap_or_default();
                    if let Ok(m) = access.memory.lock() {
                        users.extend(m.users().map(str::to_string));
                    }
                    users.push("default".into());
                    users.sort();
                    users.dedup();
                    access.learn_users(&users).await;
                    next = tokio::time::Instant::now() + REFRESH_EVERY;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep_until(next), if answering => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// Reads `users`' permissions on one connection with Redoubt's
    /// identity. A failed read keeps what was known before: a blip must
    /// not turn a known user into an unknown one.
    async fn learn_users(&self, users: &[String]) {
        let hs = Handshake {
            auth: self.own_credentials(),
            db: 0,
            proto: 2,
            name: Some("redoubt-acl".into()),
        };
        let conn = match Conn::connect(&self.url.endpoint(), &hs, self.timeout).await {
            Ok(c) => Closing(c),
            Err(e) => {
                for u in users {
                    self.store(u, Known::Failed(e.to_string()), false);
                }
                return;
            }
        };
        for user in users {
            let known = match conn.0.call(&["ACL", "GETUSER", user], self.timeout).await {
                Err(e) => Known::Failed(e.to_string()),
                Ok(f) => match error_text(&f) {
                    Some(e) if e.starts_with("ERR unknown command") => Known::NoAcl {
                        open: user != "default" || self.answers_unauthenticated().await,
                    },
                    Some(e) => Known::Failed(e),
                    None => match acl::parse_getuser(&f) {
                        Ok(Some(p)) => {
                            self.learn_categories(&conn.0, &p).await;
                            if user == "default" {
                                self.persist_default(&f, &p);
                            }
                            Known::Profile(Arc::new(p))
                        }
                        Ok(None) => Known::Missing,
                        Err(e) => Known::Failed(e),
                    },
                },
            };
            let definite = !matches!(known, Known::Failed(_));
            if let Known::Failed(why) = &known {
                tracing::warn!(user = %user, why = %why, "cannot read the user's ACL permissions; local data is refused to it during outages");
            }
            self.store(user, known, definite);
        }
    }

    /// Records what was learned of `user`; `definite` replaces anything,
    /// a failure only an earlier failure or nothing. Drops remembered
    /// credentials Redis would no longer accept.
    fn store(&self, user: &str, known: Known, definite: bool) {
        let Ok(mut p) = self.profiles.lock() else {
            return;
        };
        let forget = match (&known, p.users.get(user).map(|l| &l.known)) {
            (Known::Missing, _) => true,
            (Known::Profile(new), _) if !new.enabled => true,
            (Known::Profile(new), Some(Known::Profile(old))) => old.passwords() != new.passwords(),
            _ => false,
        };
        // `default` that needs a password now: connections that never
        // sent `AUTH` are no longer logged in for new sessions.
        let locked = |k: &Known| match k {
            Known::Profile(p) => !(p.enabled && p.nopass),
            Known::Missing => true,
            _ => false,
        };
        let default_locked = user == "default"
            && locked(&known)
            && !p.users.get(user).is_some_and(|l| locked(&l.known));
        let keep_old = !definite
            && p.users
                .get(user)
                .is_some_and(|l| !matches!(l.known, Known::Failed(_)));
        if !keep_old {
            p.users.insert(
                user.to_string(),
                Learned {
                    known,
                    at: Instant::now(),
                },
            );
        }
        if p.users.len() > MAX_REMEMBERED_USERS + 1 {
            // `default` always stays; otherwise the least recently read.
            if let Some(oldest) = p
                .users
                .iter()
                .filter(|(name, _)| name.as_str() != "default" && name.as_str() != user)
                .min_by_key(|(_, l)| l.at)
                .map(|(name, _)| name.clone())
            {
                p.users.remove(&oldest);
            }
        }
        drop(p);
        if forget {
            if let Ok(mut m) = self.memory.lock() {
                m.forget_user(user);
            }
        }
        if forget || default_locked {
            if let Some(close) = self.on_revoked.get() {
                close(user, default_locked);
            }
        }
    }

    /// Tells Access how to close the pooled connections of a login Redis
    /// stopped accepting: `close(user, unauthenticated_too)`.
    pub fn on_revoked(&self, close: impl Fn(&str, bool) + Send + Sync + 'static) {
        let _ = self.on_revoked.set(Box::new(close));
    }

    /// Reads the members of the categories `p`'s rules name that are not
    /// known yet. One that cannot be read stays unknown (and so denies).
    async fn learn_categories(&self, conn: &Conn, p: &AclProfile) {
        let missing: Vec<String> = match self.profiles.lock() {
            Ok(known) => p
                .categories()
                .filter(|c| !known.categories.contains_key(*c))
                .map(str::to_string)
                .collect(),
            Err(_) => return,
        };
        for cat in missing {
            let Ok(Frame::Array(items)) = conn.call(&["ACL", "CAT", &cat], self.timeout).await
            else {
                continue;
            };
            let members = items
                .iter()
                .filter_map(|f| f.as_bytes())
                .map(|b| String::from_utf8_lossy(b).to_ascii_lowercase())
                .collect();
            if let Ok(mut known) = self.profiles.lock() {
                known.categories.insert(cat, members);
            }
        }
    }

    /// Redis before 6.0: does it serve a connection that sent no `AUTH`?
    async fn answers_unauthenticated(&self) -> bool {
        let Ok(conn) =
            Conn::connect(&self.url.endpoint(), &Handshake::default(), self.timeout).await
        else {
            return false;
        };
        let conn = Closing(conn);
        matches!(
            conn.0.call(&["PING"], self.timeout).await,
            Ok(Frame::Simple(ref s)) if &s[..] == b"PONG"
        )
    }

    /// For `/status`: the mode and how much is held in memory (never names
    /// or hashes).
    pub fn status_json(&self) -> serde_json::Value {
        let remembered = self.memory.lock().map(|m| m.len()).unwrap_or(0);
        let (known, failed) = self
            .profiles
            .lock()
            .map(|p| {
                let failed = p
                    .users
                    .values()
                    .filter(|l| matches!(l.known, Known::Failed(_)))
                    .count();
                (p.users.len() - failed, failed)
            })
            .unwrap_or((0, 0));
        serde_json::json!({
            "mode": if self.is_local() { "local" } else { "passthrough" },
            "remembered_users": remembered,
            "users_with_known_permissions": known,
            "users_with_unknown_permissions": failed,
        })
    }

    fn version_at_least_7_2(&self) -> bool {
        let v = self.health.redis_version().unwrap_or_default();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (7, 2)
    }

    /// The refusal when `user`'s permissions could not be read, worded for
    /// the state Redoubt answers in.
    fn unknown(&self, user: &str, why: &str) -> Refusal {
        let redis = match self.health.state() {
            State::WritesDown => "redis rejects writes",
            State::Recovering => "redoubt is replaying the outage's writes",
            _ => "redis is down",
        };
        Refusal::Unavailable(format!(
            "{redis} and the permissions of user '{user}' are unknown ({why}); redoubt's own identity needs +acl|getuser +acl|cat: command not executed"
        ))
    }
}

/// A connection closed when dropped, also when a read is abandoned at its
/// deadline (a dropped [`Conn`] handle alone leaves the socket open).
struct Closing(Conn);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn error_text(f: &Frame) -> Option<String> {
    f.error_text()
        .map(|t| String::from_utf8_lossy(t).into_owned())
}

/// One session's identity, checking the commands Redoubt answers itself.
pub struct Caller<'a> {
    access: &'a Arc<Access>,
    who: &'a Identity,
}

/// A [`Caller`] that owns its parts: for checks made later, inside the
/// local store (each command a script runs during an outage).
#[derive(Clone)]
pub struct OwnedCaller {
    access: Arc<Access>,
    who: Identity,
}

impl OwnedCaller {
    /// [`Caller::check`], for this session.
    pub fn check(&self, args: &[Bytes]) -> Option<Refusal> {
        self.access.caller(&self.who).check(args)
    }
}

impl Caller<'_> {
    /// This caller, owned.
    pub fn to_owned(&self) -> OwnedCaller {
        OwnedCaller {
            access: self.access.clone(),
            who: self.who.clone(),
        }
    }

    /// Whether this session may run `args` on local data: `None` when it
    /// may, else the refusal (Redis's `NOAUTH`/`NOPERM`, or `UNAVAILABLE`
    /// when the user's permissions are unknown). Runs the gate first, so
    /// a malformed command is refused as Redis refuses it.
    pub fn check(&self, args: &[Bytes]) -> Option<Refusal> {
        match crate::gate::admit(args) {
            Ok(g) => self.judge(args, &g),
            Err(r) => Some(r),
        }
    }

    /// Whether this session's user may run the gated request `args`, as
    /// Redis would judge it: `None` when it may.
    pub fn judge(&self, args: &[Bytes], g: &Gated) -> Option<Refusal> {
        let no_auth_cmd = g.spec.is_some_and(|s| s.has(resp::command::F_NO_AUTH));
        let user = match self.who {
            Identity::Local(_) => return None,
            Identity::Anonymous if no_auth_cmd => return None,
            Identity::Anonymous => return Some(Refusal::NoAuth),
            Identity::Default => "default",
            Identity::Redis(u) => u.as_str(),
        };
        let unauthenticated = *self.who == Identity::Default;
        let a = self.access;
        let no_keys = || {
            let keys = g.keys(args);
            keys.named.is_empty() && keys.every_key.is_none()
        };
        // Only a refusal needs it: not read for every command allowed.
        let new_wording = || a.version_at_least_7_2();
        // One lock for the user's permissions and the categories they
        // name, held while judging (nothing here waits or takes it again).
        let profiles = a.profiles.lock().ok();
        let known = profiles
            .as_ref()
            .and_then(|p| p.users.get(user))
            .map(|l| &l.known);
        match known {
            None | Some(Known::Failed(_)) if no_keys() => None,
            None => Some(a.unknown(user, "never read: redis was not up since redoubt started")),
            Some(Known::Failed(why)) => Some(a.unknown(user, why)),
            Some(Known::NoAcl { open }) => (unauthenticated && !*open).then_some(Refusal::NoAuth),
            Some(Known::Missing) if unauthenticated => Some(Refusal::NoAuth),
            Some(Known::Missing) => Some(Refusal::NoPermCommand {
                user: user.to_string(),
                command: g.acl_name(args).into_owned(),
                new_wording: new_wording(),
            }),
            Some(Known::Profile(p)) => {
                // An unauthenticated connection is `default` only when
                // Redis would log it in without a password.
                if unauthenticated && !(p.enabled && p.nopass) && !no_auth_cmd {
                    return Some(Refusal::NoAuth);
                }
                let name = g.acl_name(args);
                // Redis lets every user run the commands allowed before
                // `AUTH` (`AUTH`, `HELLO`, `QUIT`, `RESET`).
                let may_run = no_auth_cmd
                    || profiles
                        .as_ref()
                        .is_some_and(|known| p.may_run(&name, &known.categories));
                if !may_run {
                    return Some(Refusal::NoPermCommand {
                        user: user.to_string(),
                        command: name.into_owned(),
                        new_wording: new_wording(),
                    });
                }
                if p.may_access_every_key() {
                    // Every key it names, and every key it may touch
                    // while it runs: nothing to look up.
                    return None;
                }
                let keys = g.keys(args);
                if !keys
                    .named
                    .iter()
                    .all(|&(i, flags)| args.get(i).is_some_and(|k| p.may_access(k, flags)))
                {
                    return Some(Refusal::NoPermKey {
                        new_wording: new_wording(),
                    });
                }
                match keys.every_key {
                    Some(opt) if !p.may_access_every_key() => Some(match g.spec.map(|s| s.name) {
                        Some("sort" | "sort_ro") => Refusal::SortOption(opt),
                        _ => Refusal::NoPermKey {
                            new_wording: new_wording(),
                        },
                    }),
                    _ => None,
                }
            }
        }
    }
}

/// What [`Access::persist_default`] wrote: the `ACL GETUSER` reply and
/// the categories it names.
fn load_default(path: &std::path::Path) -> Option<(Frame, acl::Categories)> {
    let bytes = std::fs::read(path).ok()?;
    let (frame, _) = resp::parse_frame(&bytes, &resp::Limits::upstream()).ok()??;
    let Frame::Array(mut items) = frame else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    let reply = items.remove(0);
    let mut cats = acl::Categories::new();
    for row in items {
        if let Frame::Array(row) = row {
            let mut names = row
                .iter()
                .filter_map(|f| f.as_bytes())
                .map(|b| String::from_utf8_lossy(b).to_ascii_lowercase());
            if let Some(cat) = names.next() {
                cats.insert(cat, names.collect());
            }
        }
    }
    Some((reply, cats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn local(users: &[(&str, &str)]) -> Arc<Access> {
        let users = users
            .iter()
            .map(|(n, pw)| {
                let hex: String = Sha256::digest(pw.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                LocalUser::new(n, &hex).unwrap()
            })
            .collect();
        Access::new(
            AuthMode::Local(users),
            UpstreamUrl::parse("redis://me:own@127.0.0.1:1").unwrap(),
            HealthHandle::fixed(State::Down),
            true,
            Duration::from_millis(100),
        )
    }

    fn creds(user: Option<&str>, pw: &str) -> Credentials {
        Credentials {
            user: user.map(str::to_string),
            password: pw.into(),
        }
    }

    #[test]
    fn local_users_log_in_by_password_hash() {
        let acc = local(&[("app", "s3cret"), ("default", "dflt")]);
        assert_eq!(
            acc.check_local(&creds(Some("app"), "s3cret")),
            Ok(Identity::Local("app".into()))
        );
        assert_eq!(
            acc.check_local(&creds(None, "dflt")),
            Ok(Identity::Local("default".into()))
        );
        for bad in [
            creds(Some("app"), "wrong"),
            creds(Some("app"), "dflt"),
            creds(Some("nobody"), "s3cret"),
        ] {
            assert_eq!(
                acc.check_local(&bad),
                Err(reply::error(WRONGPASS)),
                "{bad:?}"
            );
        }
        assert_eq!(
            acc.upstream_auth(),
            Some(creds(Some("me"), "own")),
            "redoubt's own identity upstream"
        );
        assert!(format!("{:?}", acc.mode).contains("app"));
        assert!(!format!("{:?}", acc.mode).contains("password"));
    }

    #[test]
    fn local_mode_refuses_all_but_the_login_commands_before_auth() {
        let acc = local(&[("app", "pw")]);
        let who = acc.anonymous();
        for cmd in [&["GET", "k"][..], &["PING"], &["CLIENT", "SETNAME", "x"]] {
            assert_eq!(acc.gate(&who, &a(cmd)), Some(Refusal::NoAuth));
        }
        for cmd in [
            &["AUTH", "app", "pw"][..],
            &["HELLO", "3", "AUTH", "app", "pw"],
            &["QUIT"],
            &["RESET"],
        ] {
            assert_eq!(acc.gate(&who, &a(cmd)), None, "{cmd:?}");
        }
        assert_eq!(acc.hello_refusal(&who), Some(Refusal::HelloNoAuth.reply()));
        assert_eq!(acc.hello_refusal(&Identity::Local("app".into())), None);
        assert_eq!(
            acc.gate(&Identity::Local("app".into()), &a(&["GET", "k"])),
            None
        );
        assert_eq!(
            acc.caller(&Identity::Local("app".into()))
                .check(&a(&["SET", "any", "1"])),
            None,
            "local users may use every key"
        );
    }

    #[test]
    fn local_user_hashes_must_be_hex() {
        assert!(LocalUser::new("a", "zz").is_err());
        assert!(LocalUser::new("a", &"g".repeat(64)).is_err());
        assert!(LocalUser::new("a", &"ab".repeat(32)).is_ok());
    }

    fn passthrough() -> Arc<Access> {
        Access::new(
            AuthMode::Passthrough,
            UpstreamUrl::parse("redis://127.0.0.1:1").unwrap(),
            HealthHandle::fixed(State::Down),
            true,
            Duration::from_millis(100),
        )
    }

    fn profile(flags: &[&str], commands: &str, keys: &str) -> Known {
        let f = Frame::Array(vec![
            Frame::bulk("flags"),
            Frame::Array(flags.iter().map(Frame::bulk).collect()),
            Frame::bulk("commands"),
            Frame::bulk(commands),
            Frame::bulk("keys"),
            Frame::bulk(keys),
        ]);
        Known::Profile(Arc::new(acl::parse_getuser(&f).unwrap().unwrap()))
    }

    #[test]
    fn passthrough_checks_commands_and_keys_against_the_learned_profile() {
        let acc = passthrough();
        let app = Identity::Redis("app".into());
        let set = a(&["SET", "sess:1", "v"]);
        let text = |r: Option<Refusal>| r.map(|r| String::from_utf8_lossy(&r.reply()).into_owned());
        // Nothing known: keys are refused, keyless commands pass.
        assert!(text(acc.caller(&app).check(&set)).is_some_and(|t| t.starts_with("-UNAVAILABLE")));
        assert_eq!(acc.caller(&app).check(&a(&["PING"])), None);

        acc.store("app", profile(&["on"], "-@all +get +set", "~sess:*"), true);
        assert_eq!(acc.caller(&app).check(&set), None);
        assert_eq!(
            text(acc.caller(&app).check(&a(&["GET", "other"]))).as_deref(),
            Some("-NOPERM this user has no permissions to access one of the keys used as arguments\r\n")
        );
        assert_eq!(
            text(acc.caller(&app).check(&a(&["DEL", "sess:1"]))).as_deref(),
            Some("-NOPERM this user has no permissions to run the 'del' command\r\n")
        );

        // A failed refresh keeps the known profile.
        acc.store("app", Known::Failed("blip".into()), false);
        assert_eq!(acc.caller(&app).check(&set), None);

        // Unauthenticated sessions are `default`, and only when Redis
        // would serve them without a password.
        let anon = Identity::Default;
        acc.store(
            "default",
            profile(&["on", "nopass"], "+@all", "~public:*"),
            true,
        );
        assert_eq!(acc.caller(&anon).check(&a(&["SET", "public:1", "v"])), None);
        assert!(text(acc.caller(&anon).check(&set)).is_some_and(|t| t.starts_with("-NOPERM")));
        acc.store("default", profile(&["off", "nopass"], "+@all", "~*"), true);
        assert_eq!(acc.caller(&anon).check(&set), Some(Refusal::NoAuth));
        acc.store("default", profile(&["on"], "+@all", "~*"), true);
        assert_eq!(
            acc.caller(&anon).check(&a(&["PING"])),
            Some(Refusal::NoAuth),
            "default with a password (requirepass)"
        );
        // Redis without ACLs.
        acc.store("default", Known::NoAcl { open: false }, true);
        assert_eq!(acc.caller(&anon).check(&set), Some(Refusal::NoAuth));
        acc.store("default", Known::NoAcl { open: true }, true);
        assert_eq!(acc.caller(&anon).check(&set), None);
        // A deleted user.
        acc.store("app", Known::Missing, true);
        assert!(text(acc.caller(&app).check(&set)).is_some_and(|t| t.starts_with("-NOPERM")));
    }

    #[tokio::test]
    async fn credentials_are_recalled_and_dropped_when_redis_changes_the_user() {
        let acc = passthrough();
        let good = creds(Some("app"), "pw");
        let who = acc.accepted(&good).await;
        assert_eq!(who, Identity::Redis("app".into()));
        let why = Access::not_seen();
        assert_eq!(acc.recall(&good, why.clone()), Ok(who.clone()));
        // A wrong password answers exactly as an unknown user does.
        assert_eq!(
            acc.recall(&creds(Some("app"), "bad"), why.clone()),
            Err(why.clone())
        );
        assert_eq!(
            acc.recall(&creds(Some("new"), "pw"), why.clone()),
            Err(why.clone())
        );
        // The same user's passwords changed in Redis: forget what we had.
        acc.store("app", profile(&["on"], "+@all", "~*"), true);
        assert_eq!(acc.recall(&good, why.clone()), Ok(who.clone()));
        let changed = Frame::Array(vec![
            Frame::bulk("flags"),
            Frame::Array(vec![Frame::bulk("on")]),
            Frame::bulk("passwords"),
            Frame::Array(vec![Frame::bulk("abc")]),
        ]);
        let changed = Known::Profile(Arc::new(acl::parse_getuser(&changed).unwrap().unwrap()));
        acc.store("app", changed, true);
        assert_eq!(acc.recall(&good, why.clone()), Err(why.clone()));
        // Refused by Redis: forgotten.
        acc.accepted(&good).await;
        acc.refused(&good, "WRONGPASS invalid username-password pair");
        assert_eq!(acc.recall(&good, why.clone()), Err(why.clone()));
        // A nopass user logs in with any password…
        acc.store("free", profile(&["on", "nopass"], "+@all", "~*"), true);
        assert!(acc.recall(&creds(Some("free"), "x"), why.clone()).is_ok());
        // … but `AUTH <password>` with a nopass `default` is an error.
        acc.store("default", profile(&["on", "nopass"], "+@all", "~*"), true);
        assert!(acc
            .recall(&creds(Some("default"), "x"), why.clone())
            .is_ok());
        assert_eq!(
            acc.recall(&creds(None, "x"), why),
            Err(reply::error(AUTH_WITHOUT_PASSWORD))
        );
    }
}

//! Standalone mode: no upstream. The local store serves every command, and
//! every write is journaled — durable under the fsync policy — before its
//! reply is written.
//!
//! Ordering: a command's journal entry is appended right after it executes,
//! with no `.await` in between, on a current-thread runtime. So no other
//! command can run between the two, and the journal's order is the order
//! in which commands changed the store. Restoring replays that order.
//! [`Standalone::start`] refuses to run on a multi-thread runtime for this
//! reason.
//!
//! Compaction: when the journal outgrows `compact_ratio` × the live data
//! (and at least `compact_min_bytes`), a new segment is started and the
//! store snapshotted in the same instant; the snapshot is written in the
//! background and replaces every older segment. Clients are not stalled:
//! the snapshot copies key maps, not values (values are shared until
//! written).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use journal::{Entry, Journal, JournalError};
use resp::RequestDecoder;
use store::{Executed, Store};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use upstream::State;

use crate::config::LimitsConfig;
use crate::incident::IncidentCounters;
use crate::metrics::{publish_state, Metrics};
use crate::reply;
use crate::server::{listen, Listener, ProxyHandle, Spawner};

/// Default: compact when the journal is 4× the live data.
pub const DEFAULT_COMPACT_RATIO: f64 = 4.0;
/// Default: never compact a journal smaller than 64 MiB.
pub const DEFAULT_COMPACT_MIN_BYTES: u64 = 64 << 20;
/// How often active expiry runs (Redis: 10 times a second).
const EXPIRE_EVERY: Duration = Duration::from_millis(100);
/// How often the compaction condition is checked.
const COMPACT_CHECK_EVERY: Duration = Duration::from_millis(500);

/// What standalone mode needs to start.
#[derive(Debug, Clone)]
pub struct StandaloneSettings {
    /// Address to listen on.
    pub listen: String,
    /// Per-client limits.
    pub limits: LimitsConfig,
    /// `journal.max_bytes`: writes are refused before the journal is full.
    pub journal_max_bytes: u64,
    /// Compact when journal bytes exceed this multiple of the live data.
    pub compact_ratio: f64,
    /// ... and at least this many bytes.
    pub compact_min_bytes: u64,
    /// `[auth] users`: clients must `AUTH` as one of them. Empty: no
    /// login, and then only a loopback `listen` is allowed (Redis's
    /// protected mode).
    pub users: Vec<crate::access::LocalUser>,
    /// `[tls]`: a TLS listener beside the plain one.
    pub tls: Option<crate::server::TlsListen>,
}

/// What a restore found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Journal entries applied.
    pub entries: u64,
    /// Commands applied.
    pub commands: u64,
    /// Commands the store refused while restoring (should be 0).
    pub errors: u64,
    /// Why restoring stopped early, if it did (a corrupt record).
    pub stopped: Option<String>,
}

/// Rebuilds the store from the journal (latest snapshot, then segments).
pub fn restore(store: &Store, journal: &Journal) -> Result<Restored, JournalError> {
    restore_watched(store, journal, |_| {})
}

/// [`restore`], telling `progress` the entries applied so far (every
/// 4096, and at the end).
pub fn restore_watched(
    store: &Store,
    journal: &Journal,
    mut progress: impl FnMut(u64),
) -> Result<Restored, JournalError> {
    let mut r = Restored::default();
    for entry in journal.replay_all()? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                r.stopped = Some(e.to_string());
                break;
            }
        };
        r.entries += 1;
        if r.entries.is_multiple_of(4096) {
            progress(r.entries);
        }
        for cmd in &entry.commands {
            r.commands += 1;
            if store.apply(entry.db as usize, cmd).is_error() {
                r.errors += 1;
            }
        }
    }
    progress(r.entries);
    Ok(r)
}

/// The standalone server.
pub struct Standalone;

struct Local {
    store: Store,
    journal: Arc<Journal>,
    limits: LimitsConfig,
    max_bytes: u64,
    users: Vec<crate::access::LocalUser>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
    /// A write ran since the store last matched the journal: a refused
    /// append then means rebuilding from what is durable.
    unjournaled: AtomicBool,
    /// A script runs on a thread of its own ([`runs_script`]); no other
    /// command runs until its effects are journaled.
    script: ScriptFlight,
}

/// A script running off the runtime thread, so that this thread can go on
/// telling other clients `BUSY` (and take their `SCRIPT KILL`) as Redis
/// does from inside a slow script. The journal's order must stay the
/// store's (module docs): every other command waits until the script's
/// effects are appended.
///
/// A script whose earlier runs were all short runs on this thread instead
/// ([`ScriptHistory`]): the hand-off to another thread and back costs more
/// than such a script, and Redis too answers nobody while a script runs
/// shorter than busy-reply-threshold.
#[derive(Default)]
struct ScriptFlight {
    running: AtomicBool,
    done: tokio::sync::Notify,
    history: std::sync::Mutex<ScriptHistory>,
}

/// How each script (by EVALSHA's digest, EVAL's body, FCALL's function)
/// has run lately, to pick where the next run goes: its count of short runs
/// in a row. A long run starts the count over, so a script that has grown
/// slow goes back to its own thread; a thread's run that only looked long
/// because this busy machine ran something else meanwhile costs a few
/// runs on the thread, nothing more.
#[derive(Default)]
struct ScriptHistory {
    /// By [`ScriptHistory::key`]: a script's name stands for itself only
    /// here, and two that shared a key would only share this heuristic.
    /// Keyed by hashes already: not hashed again.
    runs: std::collections::HashMap<
        u64,
        u32,
        std::hash::BuildHasherDefault<crate::prehashed::Prehashed>,
    >,
}

impl ScriptHistory {
    /// Short runs in a row before a script may run inline, and how short
    /// each must be. Far under busy-reply-threshold (5 s by default): a
    /// script that ran this fast this often is not expected to near it.
    const RUNS: u32 = 8;
    const FAST: Duration = Duration::from_millis(2);
    /// Scripts remembered; past this the table starts over.
    const MAX: usize = 10_000;

    /// A script's key from its digest, body or function name: hashed once
    /// per run, where keeping the name would copy or share its bytes.
    fn key(name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(name)
    }

    fn inline(&self, key: u64) -> bool {
        self.runs.get(&key).is_some_and(|&n| n >= Self::RUNS)
    }

    /// Whether a run of `took` can change what the history decides for a
    /// script that ran `inline`: one inline already that stayed short
    /// cannot, so its run is not recorded (a lock per run less).
    fn changes(inline: bool, took: Duration) -> bool {
        !(inline && took < Self::FAST)
    }

    fn ran(&mut self, key: u64, took: Duration) {
        let short = took < Self::FAST;
        if let Some(n) = self.runs.get_mut(&key) {
            *n = if short { n.saturating_add(1) } else { 0 };
            return;
        }
        if self.runs.len() >= Self::MAX {
            self.runs.clear();
        }
        self.runs.insert(key, short as u32);
    }
}

/// Clears [`ScriptFlight::running`] however the script's turn ends.
struct ScriptTurn<'a>(&'a ScriptFlight);

impl Drop for ScriptTurn<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}

/// Commands that run Lua: they may run for as long as the script does.
fn runs_script(spec: Option<&resp::command::CommandSpec>) -> bool {
    spec.is_some_and(|s| {
        matches!(
            s.name,
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "function|load"
        )
    })
}

impl Local {
    /// Undoes writes the journal refused after they ran: the journal is
    /// fenced (so nothing that ran meanwhile becomes durable behind the
    /// undo), every append already called is answered, and the store is
    /// rebuilt from what is durable. Blocks this (current-thread) runtime
    /// on purpose: no session may run, or read the refused write, midway.
    /// A refused write is then never readable, and the replies of writes
    /// that ran after it, also refused, say so.
    fn roll_back(&self) {
        if !self.unjournaled.swap(false, Ordering::AcqRel) {
            // The store already matches the journal.
            self.journal.unfence();
            return;
        }
        self.journal.fence();
        if let Err(e) = self.journal.barrier_blocking() {
            tracing::error!(error = %e, "journal closed while undoing refused writes");
            return;
        }
        let _ = self.store.apply(0, &[Bytes::from_static(b"FLUSHALL")]);
        match restore(&self.store, &self.journal) {
            Ok(r) if r.stopped.is_none() => {
                tracing::warn!(
                    commands = r.commands,
                    "writes the journal refused were undone: data rebuilt from the journal"
                );
                self.journal.unfence();
            }
            // Writes stay refused (fenced): serving on from a store that
            // is not what the journal holds would lose acknowledged data
            // at the next restart.
            Ok(r) => tracing::error!(
                stopped = r.stopped.as_deref().unwrap_or(""),
                "undoing refused writes: the journal could not be read back; writes refused until restart"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "undoing refused writes: the journal could not be read back; writes refused until restart"
            ),
        }
    }
}

impl Standalone {
    /// Serves `store`, journaling into `journal` (already restored with
    /// [`restore`]). Must be called on a current-thread runtime.
    pub async fn start(
        settings: StandaloneSettings,
        store: Store,
        journal: Arc<Journal>,
    ) -> std::io::Result<ProxyHandle> {
        if tokio::runtime::Handle::current().runtime_flavor()
            != tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return Err(std::io::Error::other(
                "standalone mode needs a current-thread runtime (journal order = execution order)",
            ));
        }
        if settings.users.is_empty() && !is_loopback(&settings.listen) {
            return Err(std::io::Error::other(format!(
                "protected mode: listen = {} is reachable from other hosts and no [auth] users are configured, so anyone could read and write every key: not started; add [auth] mode = \"local\" with users, or listen on 127.0.0.1",
                settings.listen
            )));
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let metrics = Metrics::new();
        publish_state(State::Standalone);
        let local = Arc::new(Local {
            store: store.clone(),
            journal: journal.clone(),
            limits: settings.limits,
            max_bytes: settings.journal_max_bytes,
            users: settings.users.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            unjournaled: AtomicBool::new(false),
            script: ScriptFlight::default(),
        });
        // A refused append whose client left before its reply still has to
        // be undone: the journal says when it fenced itself.
        let undo = local.clone();
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = undo.journal.fenced() => undo.roll_back(),
                    _ = stop.wait_for(|s| *s) => return,
                }
                if undo.journal.is_fenced() {
                    // Nothing more to undo: the journal could not be read
                    // back and refuses writes until restart.
                    return;
                }
            }
        });
        let counters: Arc<IncidentCounters> = Arc::default();
        let state = Listener::new(settings.limits, metrics, counters);
        let compact_local = local.clone();
        let spawn: Spawner = Arc::new(move |stream: tls::Stream, peer, _id| {
            Box::pin(run_session(local.clone(), stream, peer))
        });
        let expiry = store.spawn_active_expire(EXPIRE_EVERY);
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            expiry.abort();
        });
        tokio::spawn(compact_loop(
            compact_local,
            settings.clone(),
            shutdown_rx.clone(),
        ));
        listen(
            &settings.listen,
            settings.tls.as_ref(),
            state,
            None,
            (shutdown_tx, shutdown_rx),
            spawn,
        )
        .await
    }
}

/// True for `127.0.0.1:…`, `[::1]:…`, `localhost:…`: reachable from this
/// host only.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the login gate decided for one request.
enum Login {
    /// Answer this, run nothing (the command given back, for the stats).
    Reply(Bytes, Vec<Bytes>),
    /// Run these arguments (`HELLO` without its `AUTH` part).
    Run(Vec<Bytes>),
}

/// Standalone's login gate, as Redis's with `requirepass`/ACL users:
/// before `AUTH` only the commands Redis allows unauthenticated run; a
/// failed `AUTH` leaves the session as it was; `RESET` logs out.
/// `user`: the name logged in (`default` throughout when no users are
/// configured), `None` before a login. `spec`: the command's row, as the
/// gate found it (its arity already checked there).
fn login(
    users: &[crate::access::LocalUser],
    user: &mut Option<Bytes>,
    args: Vec<Bytes>,
    spec: Option<&resp::CommandSpec>,
) -> Login {
    use crate::gate::Refusal;
    let wrongpass =
        || reply::error("WRONGPASS invalid username-password pair or user is disabled.");
    let name = spec.map_or("", |s| s.name);
    if name == "config|set"
        && args[2..]
            .iter()
            .step_by(2)
            .any(|p| p.eq_ignore_ascii_case(b"requirepass"))
    {
        return Login::Reply(reply::error(
            "ERR requirepass cannot be set at run time: redoubt's logins are its [auth] users (mode = \"local\") in its config file",
        ), args);
    }
    if users.is_empty() {
        return Login::Run(args);
    }
    let check = |user: &[u8], pass: &[u8]| {
        crate::access::check_users(users, &String::from_utf8_lossy(user), pass)
    };
    match name {
        "auth" => {
            let (name, ok) = match args.len() {
                2 => (Bytes::from_static(b"default"), check(b"default", &args[1])),
                3 => (args[1].clone(), check(&args[1], &args[2])),
                _ => return Login::Reply(reply::error("ERR syntax error"), args),
            };
            if ok {
                *user = Some(name);
                Login::Reply(reply::ok(), args)
            } else {
                Login::Reply(wrongpass(), args)
            }
        }
        "hello" => {
            let at = args
                .iter()
                .skip(2)
                .position(|a| a.eq_ignore_ascii_case(b"auth"))
                .map(|i| i + 2);
            match at {
                Some(i) if i + 2 < args.len() => {
                    if !check(&args[i + 1], &args[i + 2]) {
                        return Login::Reply(wrongpass(), args);
                    }
                    *user = Some(args[i + 1].clone());
                    let mut rest = args[..i].to_vec();
                    rest.extend_from_slice(&args[i + 3..]);
                    Login::Run(rest)
                }
                Some(_) => Login::Reply(
                    reply::error("ERR Syntax error in HELLO option 'auth'"),
                    args,
                ),
                None if user.is_none() => Login::Reply(Refusal::HelloNoAuth.reply(), args),
                None => Login::Run(args),
            }
        }
        "reset" => {
            *user = None;
            Login::Run(args)
        }
        _ if user.is_some() => Login::Run(args),
        _ if spec.is_some_and(|s| s.has(resp::command::F_NO_AUTH)) => Login::Run(args),
        _ => Login::Reply(Refusal::NoAuth.reply(), args),
    }
}

/// True when the journal has outgrown the live data.
pub fn should_compact(journal_bytes: u64, live_bytes: u64, ratio: f64, min_bytes: u64) -> bool {
    journal_bytes >= min_bytes && journal_bytes as f64 > ratio * live_bytes as f64
}

/// One compaction: rotate and snapshot in the same instant (no `.await`
/// between them), then write the snapshot off the runtime thread.
pub async fn compact(store: &Store, journal: &Arc<Journal>) -> Result<(), JournalError> {
    let rotated = journal.rotate();
    let snap = store.snapshot();
    let base = rotated.await?;
    let j = journal.clone();
    let now = now_ms();
    tokio::task::spawn_blocking(move || {
        let entries = snap
            .commands()
            .map(|e| Entry::command(e.db as u32, e.args, now));
        j.write_snapshot(base, entries).map(|_| ())
    })
    .await
    .map_err(|e| JournalError::Failed {
        cause: format!("snapshot task: {e}"),
    })?
}

async fn compact_loop(
    local: Arc<Local>,
    s: StandaloneSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let (store, journal) = (&local.store, &local.journal);
    let mut tick = tokio::time::interval(COMPACT_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Never while a script runs or is about to (the snapshot would
        // park this thread behind it); no await between this check and the
        // snapshot, so none starts in between.
        if local.script.running.load(Ordering::Acquire) {
            continue;
        }
        let Some((_, live)) = store.try_usage() else {
            continue;
        };
        if should_compact(
            journal.bytes(),
            live as u64,
            s.compact_ratio,
            s.compact_min_bytes,
        ) {
            let before = journal.bytes();
            match compact(store, journal).await {
                Ok(()) => tracing::info!(
                    before,
                    after = journal.bytes(),
                    "journal compacted into a snapshot"
                ),
                Err(e) => tracing::error!(error = %e, "journal compaction failed; will retry"),
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hands `append` the journal entries for one execution, in order: one
/// entry for an EXEC whose effects share a database (replayed as a unit),
/// else one per effect. `turn_ms` is the wall clock read once per turn (a
/// turn lasts well under a millisecond): the entries' time, for `journal
/// inspect` and `export`. Returns how many entries there were.
fn entries(exec: &mut Executed, turn_ms: &mut Option<u64>, mut append: impl FnMut(Entry)) -> usize {
    // Taken, not copied: the reply is all that is left to send.
    let effects = std::mem::take(&mut exec.effects);
    if effects.is_empty() {
        return 0;
    }
    let now = *turn_ms.get_or_insert_with(now_ms);
    let same_db = effects.windows(2).all(|w| w[0].db == w[1].db);
    if exec.atomic && same_db {
        let db = effects[0].db as u32;
        let commands = effects.into_iter().map(|e| e.args).collect();
        append(Entry {
            db,
            commands,
            time_ms: now,
        });
        return 1;
    }
    let n = effects.len();
    for e in effects {
        append(Entry::command(e.db as u32, e.args, now));
    }
    n
}

type Durable = journal::Staged;

/// The replies of one turn of a session's loop, encoded back to back into
/// one buffer kept for the session's life (no allocation per reply); each
/// waits for its journal entries to be durable before it is written.
#[derive(Default)]
struct Turn {
    replies: BytesMut,
    /// Per reply: where it ends in `replies`, and how many of `durable`
    /// (taken in order) are its.
    ends: Vec<(usize, usize)>,
    durable: Vec<Durable>,
}

impl Turn {
    /// A reply with nothing to wait for.
    fn push(&mut self, reply: &[u8]) {
        self.replies.extend_from_slice(reply);
        self.ends.push((self.replies.len(), 0));
    }

    /// Bytes of the replies so far.
    fn bytes(&self) -> usize {
        self.replies.len()
    }
}

/// Why the journal refuses writes now, if it does: the reason's label
/// for `redoubt_writes_refused_total` and the text a client and
/// `/readyz` see. `incoming`: the size of the write about to be made (0
/// for "is it refusing now"), so a write that would not fit is refused
/// before it runs, never applied and then found not durable.
pub fn write_refusal(
    journal: &Journal,
    max_bytes: u64,
    incoming: u64,
) -> Option<(&'static str, String)> {
    let bytes = match journal.refusal_or_bytes() {
        Ok(bytes) => bytes,
        Err(e) => return Some(("journal-failed", e.to_string())),
    };
    let full = if incoming == 0 {
        bytes >= max_bytes || journal.refusing_full()
    } else {
        bytes.saturating_add(incoming) > max_bytes
    };
    full.then(|| {
        (
            "journal-full",
            format!(
                "journal full ({bytes} of journal.max_bytes {max_bytes} bytes): write not executed; raise journal.max_bytes or delete data"
            ),
        )
    })
}

/// Bytes a journal record of the command `args` may take: its effects
/// are the command itself or close to it (relative expiries made absolute
/// add a few bytes), and the request's framing (`*`, `$` and two CRLFs
/// per argument) outweighs the record's.
fn record_estimate(args: &[Bytes]) -> u64 {
    args.iter().map(|a| a.len() as u64 + 16).sum::<u64>() + 64
}

fn refuse_write(local: &Local, args: &[Bytes]) -> Option<Bytes> {
    let (reason, text) = write_refusal(&local.journal, local.max_bytes, record_estimate(args))?;
    if reason == "journal-full" {
        local.journal.note_refused_full();
    }
    crate::metrics::count_write_refused(reason);
    Some(reply::error(format!("ERR {text}")))
}

async fn run_session(local: Arc<Local>, stream: tls::Stream, peer: SocketAddr) {
    let (mut rd, mut wr) = stream.into_split();
    let mut session = local.store.session();
    session.set_addr(&peer.to_string());
    // Every reply here is only written out.
    session.set_wire_replies(true);
    let mut decoder = RequestDecoder::new(local.limits.decoder()).without_raw();
    let mut inbuf = BytesMut::new();
    let mut out = BytesMut::new();
    // One wait for shutdown for the whole session, polled only once woken
    // (see `Woken`): made in every select, it registered and unregistered
    // itself each time the client was waited for.
    let mut stop = upstream::woken::until_set(local.shutdown.clone());
    // The same for the session's pushes (pub/sub, invalidations): polling
    // the channel registered the task's waker anew each time.
    let mut push_gate = upstream::woken::WakeGate::new();
    let mut closing = false;
    let mut user: Option<Bytes> = local
        .users
        .is_empty()
        .then(|| Bytes::from_static(b"default"));
    let mut turn = Turn::default();
    let mut tally = crate::metrics::Tally::new(local.metrics.local.clone(), local.metrics.duration);
    loop {
        turn.replies.clear();
        turn.ends.clear();
        // Read at most once per turn; see `entries`.
        let mut turn_ms = None;
        // When the command before this one in the turn ended: the next
        // one's start, as long as nothing was awaited in between (one
        // clock read per command, not two).
        let mut ended: Option<std::time::Instant> = None;
        let mut quit = false;
        // Replies are written once they pass reply::FLUSH_AT: a client pipelining
        // reads of a big value and never reading the replies then holds
        // one batch, not every reply to everything it sent.
        while !quit && turn.bytes() < reply::FLUSH_AT {
            let req = match decoder.decode(&mut inbuf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    turn.push(&reply::error(format!("ERR {e}; connection closed")));
                    quit = true;
                    break;
                }
            };
            // The gate, as in proxy mode: shape, then login.
            let gated = match crate::gate::admit(&req.args) {
                Ok(g) => g,
                Err(r) => {
                    local.metrics.rejected.increment(1);
                    let r = r.reply();
                    local.store.count_unlocked(&req.args, &r);
                    turn.push(&r);
                    continue;
                }
            };
            let req = match login(&local.users, &mut user, req.args, gated.spec) {
                Login::Reply(r, args) => {
                    local.store.count_unlocked(&args, &r);
                    turn.push(&r);
                    continue;
                }
                Login::Run(args) => resp::Request { args, raw: req.raw },
            };
            // The users are standalone's, not the store's.
            if req.args[0].eq_ignore_ascii_case(b"acl") && !session.in_multi() {
                let whoami = user
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let r = crate::access::standalone_acl::answer(
                    &local.users,
                    &whoami,
                    &req.args,
                    session.protocol(),
                )
                .to_bytes();
                local.store.count_unlocked(&req.args, &r);
                turn.push(&r);
                continue;
            }
            if req.args[0].eq_ignore_ascii_case(b"quit") {
                turn.push(&reply::ok());
                quit = true;
                break;
            }
            // Another session's script holds the store: wait for its
            // effects to be journaled, or answer what Redis answers once
            // the script is past busy-reply-threshold.
            let mut busy = None;
            while local.script.running.load(Ordering::Acquire) {
                ended = None;
                if let Some(r) = local.store.busy_reply(&req.args, session.protocol() >= 3) {
                    busy = Some(r);
                    break;
                }
                let done = local.script.done.notified();
                tokio::select! {
                    _ = done => {}
                    // The threshold passes with no event to wait for.
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            if let Some(r) = busy {
                let r = r.to_bytes();
                local.store.count_unlocked(&req.args, &r);
                turn.push(&r);
                continue;
            }
            // The gate's row: logging in keeps the command's name.
            let spec = gated.spec;
            let is_write = spec.is_some_and(|s| s.is_write());
            let is_script = runs_script(spec);
            if is_script {
                ended = None;
            }
            let started = ended.unwrap_or_else(std::time::Instant::now);
            if is_write && !session.in_multi() {
                if let Some(r) = refuse_write(&local, &req.args) {
                    local.metrics.rejected.increment(1);
                    local.store.count_unlocked(&req.args, &r);
                    turn.push(&r);
                    continue;
                }
            }
            // A script waits out CLIENT PAUSE before it takes its turn, so
            // the other clients are not told BUSY meanwhile.
            if is_script {
                local.store.wait_unpaused(&session, &req.args).await;
            }
            // EVALSHA's digest, EVAL's body, FCALL's function.
            let history_key = (is_script && !session.in_multi())
                .then(|| req.args.get(1).map(|a| ScriptHistory::key(a)))
                .flatten();
            let is_script = history_key.is_some();
            let inline =
                history_key.is_some_and(|k| local.script.history.lock().is_ok_and(|h| h.inline(k)));
            let script_turn = (is_script && !inline).then(|| {
                local.script.running.store(true, Ordering::Release);
                ScriptTurn(&local.script)
            });
            let mut ran_for = None;
            let exec = if script_turn.is_some() {
                // Off this thread, holding the store; see ScriptFlight.
                let store = local.store.clone();
                let handle = tokio::runtime::Handle::current();
                let args = req.args;
                let mut s = session;
                match tokio::task::spawn_blocking(move || {
                    // The script's own time, without the hand-offs (which
                    // a busy machine can stretch): what ScriptHistory keeps.
                    let t = std::time::Instant::now();
                    let e = handle.block_on(store.execute(&mut s, args));
                    (s, e, t.elapsed())
                })
                .await
                {
                    Ok((s, e, took)) => {
                        session = s;
                        ran_for = Some(took);
                        Some(e)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a script's thread failed; closing its client");
                        return;
                    }
                }
            } else {
                // A blocked command is given up if the client leaves, so a
                // pop never hands an element to a closed socket.
                let mut probe = [0u8; 1];
                let row = gated.row.zip(gated.spec);
                let run = local.store.execute_row(&mut session, req.args, row);
                tokio::pin!(run);
                let mut watching = true;
                loop {
                    tokio::select! {
                        biased;
                        e = &mut run => break Some(e),
                        r = rd.peek(&mut probe), if watching => match r {
                            Ok(0) | Err(_) => break None,
                            Ok(_) => watching = false,
                        },
                    }
                }
            };
            let Some(mut exec) = exec else { return };
            if let Some(k) = history_key {
                let took = ran_for.unwrap_or_else(|| started.elapsed());
                if ScriptHistory::changes(inline, took) {
                    if let Ok(mut h) = local.script.history.lock() {
                        h.ran(k, took);
                    }
                }
            }
            // No await between execute and append: see the module docs.
            let durable = entries(&mut exec, &mut turn_ms, |e| {
                turn.durable.push(local.journal.stage(e))
            });
            drop(script_turn);
            if durable > 0 {
                local.unjournaled.store(true, Ordering::Release);
            }
            if !session.silenced() {
                exec.reply.encode(&mut turn.replies);
                for m in &exec.more {
                    m.encode(&mut turn.replies);
                }
            }
            turn.ends.push((turn.replies.len(), durable));
            let now = std::time::Instant::now();
            tally.record(now - started);
            ended = Some(now);
            if session.is_killed() {
                quit = true;
            }
        }
        tally.flush();
        let full = turn.bytes() >= reply::FLUSH_AT;
        // Every other client with input ready runs its turn before this
        // one waits for its journal writes and sends its replies, as Redis
        // writes replies once per event loop iteration: the appends of all
        // those turns reach the file in one write, and the replies leave
        // back to back, so a client process woken by the first finds the
        // rest without being woken again (each wake-up of a sleeping
        // client cost a sixth of a pipelined SET).
        if !turn.ends.is_empty() {
            tokio::task::yield_now().await;
        }
        // Replies go out only once their writes are durable; a write the
        // journal failed to keep is reported, not acknowledged.
        let mut durable = turn.durable.drain(..);
        let mut start = 0;
        for &(end, n) in &turn.ends {
            let mut failed = None;
            for d in durable.by_ref().take(n) {
                if let Err(e) = local.journal.durable(d).await {
                    failed = Some(e);
                }
            }
            let reply = &turn.replies[start..end];
            start = end;
            match failed {
                None => out.extend_from_slice(reply),
                Some(e) => {
                    crate::metrics::count_write_refused(match e {
                        JournalError::Full { .. } => "journal-full",
                        _ => "journal-failed",
                    });
                    tracing::error!(error = %e, "journal append failed");
                    // Undone before the client hears of it: once the error
                    // arrives, nobody can read the write.
                    local.roll_back();
                    out.extend_from_slice(&reply::error(format!("ERR {e}")));
                }
            }
        }
        while let Ok(push) = session.pushes().try_recv() {
            push.encode(&mut out);
        }
        if out.len() as u64 > local.limits.max_output_buffer_bytes {
            tracing::warn!(%peer, bytes = out.len(), "output buffer over limits.max_output_buffer_bytes; closing");
            return;
        }
        if !out.is_empty() {
            // Nothing more is read or run for a client while its replies
            // wait; one that reads none of them in time is let go.
            match wr.send_within(&out, local.limits.write_timeout()).await {
                Ok(()) => {}
                Err(tls::SendError::Failed(_)) => return,
                Err(tls::SendError::TimedOut) => {
                    tracing::warn!(%peer, bytes = out.len(), "client read none of its replies within limits.client_write_timeout_ms; closing");
                    return;
                }
            }
            reply::written(&mut out);
        }
        if quit || (closing && !full) {
            let _ = wr.shutdown().await;
            return;
        }
        if full {
            // Commands may be waiting in `inbuf` already: run them before
            // waiting for more input.
            continue;
        }
        if inbuf.len() as u64 > local.limits.max_query_buffer_bytes {
            let _ = tls::send(&mut wr, &reply::error("ERR Protocol error: query buffer over limits.max_query_buffer_bytes; connection closed")).await;
            return;
        }
        reply::idle_read_buffer(&mut inbuf);
        tokio::select! {
            r = rd.read_into(&mut inbuf, reply::READ_CHUNK) => match r {
                Ok(0) | Err(_) => closing = true,
                Ok(_) => {}
            },
            Some(push) = std::future::poll_fn(|cx| push_gate.poll_with(cx, |cx| session.pushes().poll_recv(cx))) => push.encode(&mut out),
            _ = &mut stop, if !closing => closing = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_threshold() {
        assert!(!should_compact(10, 1, 4.0, 64), "below the minimum size");
        assert!(should_compact(100, 10, 4.0, 64));
        assert!(!should_compact(100, 30, 4.0, 64), "not 4× the live data");
    }

    #[test]
    fn a_script_runs_inline_only_after_enough_short_runs_in_a_row() {
        let mut h = ScriptHistory::default();
        let (fast, slow) = (ScriptHistory::key(b"fast"), ScriptHistory::key(b"slow"));
        assert_ne!(fast, slow);
        for n in 0..ScriptHistory::RUNS {
            assert!(!h.inline(fast), "inline after {n} runs");
            h.ran(fast, Duration::from_micros(50));
        }
        assert!(h.inline(fast));
        // One long run sends it back to its own thread, until it has run
        // short enough times in a row again.
        h.ran(fast, ScriptHistory::FAST);
        assert!(!h.inline(fast));
        for _ in 0..ScriptHistory::RUNS * 2 {
            h.ran(slow, Duration::from_millis(30));
            h.ran(slow, Duration::from_micros(50));
        }
        assert!(!h.inline(slow), "never eight short runs in a row");
        // Short runs of an inline script go unrecorded; a long one is.
        for _ in 0..ScriptHistory::RUNS {
            h.ran(fast, Duration::from_micros(50));
        }
        assert!(h.inline(fast));
        assert!(!ScriptHistory::changes(true, Duration::from_micros(50)));
        assert!(ScriptHistory::changes(false, Duration::from_micros(50)));
        assert!(ScriptHistory::changes(true, ScriptHistory::FAST));
    }
}

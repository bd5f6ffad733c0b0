//! The running script's state as other clients see it, readable without
//! the store lock: a script holds the lock for its whole run, so a client
//! that must be told `BUSY` (or that sends `SCRIPT KILL`) cannot wait for
//! it. Redis gets the same effect by serving clients from inside the
//! script's instruction hook once the script is past
//! `busy-reply-threshold`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use resp::Frame;

use crate::ctx::err;

/// Redis's `slowevalerr`: a client's command while an EVAL is busy.
pub(crate) const BUSY_EVAL: &str =
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.";
/// Redis's `slowscripterr`: a client's command while an FCALL is busy.
pub(crate) const BUSY_FUNCTION: &str =
    "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
pub(crate) const NOT_BUSY: &str = "NOTBUSY No scripts in execution right now.";
const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// Shared by the running script (which sets it) and every client (which
/// reads it before taking the lock).
pub(crate) struct Gate {
    base: Instant,
    /// A script holds the lock right now.
    pub running: AtomicBool,
    /// The running script is past the threshold: others get BUSY.
    pub timed_out: AtomicBool,
    /// SCRIPT KILL / FUNCTION KILL asked it to stop.
    pub kill: AtomicBool,
    /// It ran a write command: it can no longer be killed.
    pub wrote: AtomicBool,
    /// It is an EVAL (SCRIPT KILL) rather than an FCALL (FUNCTION KILL).
    pub eval_mode: AtomicBool,
    /// Start of the run, µs since `base`.
    started_us: AtomicU64,
    /// busy-reply-threshold in ms for this run; 0 never times out.
    threshold_ms: AtomicU64,
    /// While FUNCTION LOAD runs a library's code: when it must give up,
    /// µs since `base` (0: no limit).
    load_deadline_us: AtomicU64,
    /// `math.random`'s generator: one per store, shared by EVAL and
    /// functions and kept across SCRIPT FLUSH, like Redis's global one.
    pub rng: std::sync::Arc<super::engine::Rand48>,
    /// What FUNCTION STATS tells about the running script, set as it
    /// starts: it is answered without the lock the script holds.
    stats: std::sync::Mutex<Option<RunningStats>>,
}

/// The running script and the engine's counts as the script started.
/// Kept between runs and overwritten in place: its buffers are reused.
#[derive(Default)]
pub(crate) struct RunningStats {
    name: String,
    command: Vec<Vec<u8>>,
    libraries: i64,
    functions: i64,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            base: Instant::now(),
            running: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            eval_mode: AtomicBool::new(true),
            started_us: AtomicU64::new(0),
            threshold_ms: AtomicU64::new(0),
            load_deadline_us: AtomicU64::new(0),
            rng: std::sync::Arc::new(super::engine::Rand48::new()),
            stats: std::sync::Mutex::new(None),
        }
    }

    /// Remembers what FUNCTION STATS reports while this run is busy.
    pub fn set_stats(&self, name: &str, command: &[bytes::Bytes], libraries: i64, functions: i64) {
        let Ok(mut s) = self.stats.lock() else { return };
        let s = s.get_or_insert_with(RunningStats::default);
        s.name.clear();
        s.name.push_str(name);
        s.command.resize_with(command.len(), Vec::new);
        for (to, from) in s.command.iter_mut().zip(command) {
            to.clear();
            to.extend_from_slice(from);
        }
        s.libraries = libraries;
        s.functions = functions;
    }

    /// FUNCTION STATS while a script is past the threshold (Redis allows it
    /// then); `None` when nothing is busy, and the command runs as usual.
    pub fn stats_reply(&self, resp3: bool) -> Option<Frame> {
        if !self.timed_out.load(Ordering::SeqCst) || !self.running.load(Ordering::SeqCst) {
            return None;
        }
        let guard = self.stats.lock().ok()?;
        let s = guard.as_ref()?;
        let map = |pairs: Vec<(Frame, Frame)>| {
            if resp3 {
                Frame::Map(pairs)
            } else {
                Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
        };
        let elapsed_ms = self
            .now_us()
            .saturating_sub(self.started_us.load(Ordering::Relaxed))
            / 1000;
        let running = map(vec![
            (Frame::bulk("name"), Frame::Bulk(s.name.clone().into())),
            (
                Frame::bulk("command"),
                Frame::Array(
                    s.command
                        .iter()
                        .map(|a| Frame::Bulk(bytes::Bytes::copy_from_slice(a)))
                        .collect(),
                ),
            ),
            (
                Frame::bulk("duration_ms"),
                Frame::Integer(elapsed_ms as i64),
            ),
        ]);
        let lua = map(vec![
            (Frame::bulk("libraries_count"), Frame::Integer(s.libraries)),
            (Frame::bulk("functions_count"), Frame::Integer(s.functions)),
        ]);
        Some(map(vec![
            (Frame::bulk("running_script"), running),
            (Frame::bulk("engines"), map(vec![(Frame::bulk("LUA"), lua)])),
        ]))
    }

    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// Called under the lock as a script starts. Release stores (plain
    /// moves, where sequentially consistent ones are locked instructions,
    /// on every run): a client that reads `running` set reads the rest as
    /// stored before it.
    pub fn begin(&self, eval_mode: bool, threshold_ms: u64) {
        self.timed_out.store(false, Ordering::Release);
        self.kill.store(false, Ordering::Release);
        self.wrote.store(false, Ordering::Release);
        self.eval_mode.store(eval_mode, Ordering::Release);
        self.threshold_ms.store(threshold_ms, Ordering::Release);
        self.started_us.store(self.now_us(), Ordering::Release);
        self.running.store(true, Ordering::Release);
    }

    /// Called under the lock as the script ends, however it ends.
    pub fn end(&self) {
        self.running.store(false, Ordering::Release);
        self.timed_out.store(false, Ordering::Release);
        self.kill.store(false, Ordering::Release);
    }

    /// FUNCTION LOAD's time limit (Redis: 500 ms) for a library's code;
    /// `None` lifts it.
    pub fn load_limit(&self, ms: Option<u64>) {
        let at = ms.map_or(0, |ms| self.now_us() + ms * 1000);
        self.load_deadline_us.store(at, Ordering::SeqCst);
    }

    /// From the instruction hook: why the running Lua code must stop now,
    /// if it must. A script enters the timed-out state once past the
    /// threshold (others get BUSY) and stops when killed; a library's load
    /// code stops at its deadline.
    pub fn tick(&self) -> Option<&'static str> {
        if !self.running.load(Ordering::SeqCst) {
            let deadline = self.load_deadline_us.load(Ordering::SeqCst);
            return (deadline != 0 && self.now_us() > deadline)
                .then_some("ERR FUNCTION LOAD timeout");
        }
        if !self.timed_out.load(Ordering::SeqCst) {
            let limit = self.threshold_ms.load(Ordering::Relaxed);
            if limit == 0 {
                return None;
            }
            let elapsed_ms = self
                .now_us()
                .saturating_sub(self.started_us.load(Ordering::Relaxed))
                / 1000;
            if elapsed_ms < limit {
                return None;
            }
            tracing::warn!(
                elapsed_ms,
                "slow script detected: still in execution; SCRIPT KILL or FUNCTION KILL can stop it"
            );
            self.timed_out.store(true, Ordering::SeqCst);
        }
        self.killed().then_some(super::engine::KILLED)
    }

    /// True once a kill was accepted for the running script.
    pub fn killed(&self) -> bool {
        self.kill.load(Ordering::SeqCst)
    }

    /// The BUSY reply for a command that is not allowed while busy, or the
    /// reply to SCRIPT KILL / FUNCTION KILL, when a timed-out script runs;
    /// `None` when nothing is busy. `kill` is `Some(is_eval)` for the kill
    /// commands.
    pub fn refuse(&self, kill: Option<bool>) -> Option<Frame> {
        if !self.timed_out.load(Ordering::SeqCst) || !self.running.load(Ordering::SeqCst) {
            return None;
        }
        let eval = self.eval_mode.load(Ordering::SeqCst);
        Some(match kill {
            None => err(if eval { BUSY_EVAL } else { BUSY_FUNCTION }),
            Some(_) if self.wrote.load(Ordering::SeqCst) => err(UNKILLABLE),
            // SCRIPT KILL cannot stop a function and FUNCTION KILL cannot
            // stop an EVAL; Redis answers with the BUSY text naming the
            // right command.
            Some(true) if !eval => err(BUSY_FUNCTION),
            Some(false) if eval => err(BUSY_EVAL),
            Some(_) => {
                self.kill.store(true, Ordering::SeqCst);
                Frame::simple("OK")
            }
        })
    }
}

//! Redis diagnosis as a library: `redoubt doctor` (checks of a live Redis
//! and, when it cannot be reached, of the connection itself) and
//! `redoubt triage` (known problems found in application and server logs).
//!
//! Nothing here prints or exits: the binary renders the reports and maps
//! their `exit_code()` to the process exit code.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let report = doctor::diagnose("redis://127.0.0.1:6379", &doctor::DoctorOptions::default()).await;
//! print!("{}", report.render_text(true)); // or report.to_json()
//! let code = report.exit_code(); // 0 healthy, 1 warnings, 2 critical, 3 could not diagnose
//!
//! let file = std::fs::File::open("app.log")?; // unreadable input: the binary exits 4
//! let triage = doctor::triage_reader(std::io::BufReader::new(file))?;
//! print!("{}", triage.render_text(false));
//! let code = triage.exit_code(); // 0 nothing found, 1 findings
//! # Ok(()) }
//! ```
//!
//! The same [`diagnose()`] serves the proxy when Redis goes down or comes
//! back: it is bounded in time ([`DoctorOptions::total_timeout`], 10 s by
//! default) and in load (a SCAN sample of at most
//! [`Thresholds::scan_sample_keys`] keys, never `KEYS`), and an
//! unreachable Redis yields the connection diagnosis instead. Passing the
//! previous report's [`Report::counters`] as [`DoctorOptions::baseline`]
//! makes counting checks (rejected connections, evictions, lost replicas)
//! report what happened since then rather than since Redis started.
//!
//! [`DoctorOptions::ignore`] mutes checks by id (`host.overcommit`) or
//! area (`host`, `host.*`) so a known, accepted state does not fail a
//! deploy gate; muted findings are listed in [`Report::ignored`]. A
//! standalone Redoubt is recognised from its INFO ([`Report::redoubt`]),
//! and checks about `redis-server` itself ([`checks::NOT_FOR_REDOUBT`])
//! are not run against it.
//!
//! For `redoubt triage FILE...`, [`triage_files`] reads the files in
//! order (locations read `FILE:LINE`) and returns an [`InputError`] naming
//! an unreadable file (exit code 4); [`triage_reader`] reads stdin.
//!
//! # Layout
//! - [`diagnose`](mod@diagnose): options and the diagnosis run: connect,
//!   handshake, gather a snapshot, run the checks.
//! - [`checks`]: the check table ([`checks::checks`]), one row per stable
//!   id (`memory.near-maxmemory`, …) covering catalog part A.
//! - [`unreachable`](mod@unreachable): the table of connection problems (`connection.*`)
//!   with likely causes and first steps.
//! - [`report`]: [`Report`], its exit code, text and JSON.
//! - [`logtime`]: [`LogTime`](logtime::LogTime), the time at the start of
//!   a log line, for triage's timeline.
//! - [`vitals`]: [`Vitals`], the numbers shown above the findings.
//! - [`finding`] and [`severity`]: [`Finding`], [`Severity`].
//! - [`thresholds`]: [`Thresholds`] with defaults as named constants.
//! - [`target`]: [`Target`], the parsed `redis://` URL.
//! - [`triage`]: [`Triage`], the streaming log matcher, and
//!   [`TriageReport`]; its signatures are `data/signatures.toml`, compiled in.
//! - `conn` (private): the doctor's own async RESP connection with
//!   per-step timeouts; `snapshot` (private): what one diagnosis read;
//!   `host` (private): `/proc` and `/sys` facts for a local Redis.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checks;
mod conn;
pub mod diagnose;
pub mod finding;
mod host;
pub mod logtime;
pub mod report;
pub mod severity;
mod snapshot;
pub mod target;
pub mod thresholds;
pub mod triage;
pub mod unreachable;
pub mod vitals;

pub use diagnose::{diagnose, ignores, unknown_ignore, DoctorOptions, HostChecks};
pub use finding::Finding;
pub use report::Report;
pub use severity::Severity;
pub use snapshot::Counters;
pub use target::{Target, UrlError};
pub use thresholds::Thresholds;
pub use triage::{
    triage_files, triage_reader, InputError, Location, Triage, TriageGroup, TriageReport,
};
pub use vitals::Vitals;

//! WIP
#![forbid(unsafe_code)]
#![warn(missing_docs)]
pub mod checks;
mod conn;
mod diagnose;
mod finding;
mod host;
mod report;
mod severity;
mod snapshot;
mod target;
pub mod thresholds;
pub mod triage;
pub mod unreachable;
pub use diagnose::{diagnose, DoctorOptions, HostChecks};
pub use finding::Finding;
pub use report::Report;
pub use severity::Severity;
pub use target::{Target, UrlError};
pub use thresholds::Thresholds;
pub use triage::{triage_reader, Triage, TriageGroup, TriageReport};

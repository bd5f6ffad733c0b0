//! One thing the doctor found: what, how bad, the numbers, and the fix.

use serde::Serialize;

use crate::severity::Severity;

/// A finding in a [`Report`](crate::Report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id, e.g. `memory.near-maxmemory`; tests and alerting key on it.
    pub id: String,
    /// How bad it is.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub title: String,
    /// The measured values that triggered it.
    pub detail: String,
    /// What to do about it, first step first.
    pub fix: String,
    /// Likely causes, most likely first (connection problems list them;
    /// checks of a live server usually know their cause and leave it empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

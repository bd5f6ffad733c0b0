//! How bad a finding is, and how it looks on a terminal.

use serde::{Deserialize, Serialize};

/// Severity of a finding, ordered from harmless to urgent so that
/// `max()` picks the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine; only used when a caller asks for passing checks.
    Ok,
    /// Worth knowing, nothing to fix now.
    Info,
    /// Will hurt later or under load; fix soon.
    Warn,
    /// Hurting now, or data at risk; fix first.
    Critical,
}

impl Severity {
    /// Lower-case name as shown in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Critical => "critical",
        }
    }

    /// The label used in text reports, padded so columns line up.
    pub(crate) fn label(self, color: bool) -> String {
        let (text, code) = match self {
            Severity::Ok => ("OK  ", "32"),
            Severity::Info => ("INFO", "36"),
            Severity::Warn => ("WARN", "33"),
            Severity::Critical => ("CRIT", "1;31"),
        };
        paint(text, code, color)
    }
}

/// Wraps `text` in an ANSI SGR sequence when `color` is on.
pub(crate) fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_severity_is_the_maximum() {
        let all = [
            Severity::Info,
            Severity::Critical,
            Severity::Ok,
            Severity::Warn,
        ];
        assert_eq!(all.iter().max(), Some(&Severity::Critical));
        assert!(Severity::Warn > Severity::Info);
    }

    #[test]
    fn labels_are_coloured_only_on_request() {
        assert_eq!(Severity::Warn.label(false), "WARN");
        assert!(Severity::Warn.label(true).starts_with("\x1b[33m"));
    }
}

//! The result of one diagnosis, its exit code, and its text and JSON forms.

use serde::Serialize;

use crate::finding::Finding;
use crate::severity::{paint, Severity};
use crate::snapshot::Counters;
use crate::vitals::Vitals;

/// What `diagnose` found about one Redis.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The URL diagnosed, password removed.
    pub target: String,
    /// False when Redis could not be reached or read (the findings then
    /// explain why); exit code 3.
    pub diagnosable: bool,
    /// Findings, worst first.
    pub findings: Vec<Finding>,
    /// `redis_version`, when read.
    pub redis_version: Option<String>,
    /// `role` (master / slave), when read.
    pub role: Option<String>,
    /// True when the server is a Redoubt (standalone, or a proxy answering
    /// locally while Redis is down), recognised from its INFO: checks of
    /// `redis-server` itself were not run.
    pub redoubt: bool,
    /// Vital signs, when INFO was read.
    pub vitals: Option<Vitals>,
    /// Ids of findings that fired but were muted by
    /// [`DoctorOptions::ignore`](crate::DoctorOptions::ignore); they do not
    /// count towards the exit code.
    pub ignored: Vec<String>,
    /// Whether host checks (THP, overcommit, swap, ...) ran: only for a
    /// Redis on this machine.
    pub host_checks: bool,
    /// Number of checks evaluated.
    pub checks_run: usize,
    /// Keys looked at by the bounded SCAN sample.
    pub keys_sampled: usize,
    /// Counters to pass as the next diagnosis's baseline.
    pub counters: Counters,
    /// Data that could not be read (command renamed, no permission, time
    /// ran out); checks needing it stayed silent.
    pub skipped: Vec<String>,
    /// Time the diagnosis took, in milliseconds.
    pub elapsed_ms: u64,
}

impl Report {
    /// Sorts findings worst first, keeping check order within a severity.
    pub(crate) fn sort(&mut self) {
        self.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }

    /// The worst severity found (`Ok` when nothing fired).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    /// True when a finding with this id is present.
    pub fn has(&self, id: &str) -> bool {
        self.findings.iter().any(|f| f.id == id)
    }

    /// The finding with this id.
    pub fn get(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    /// DESIGN's exit code for `redoubt doctor`: 0 healthy (info only),
    /// 1 warnings, 2 critical, 3 could not diagnose.
    pub fn exit_code(&self) -> i32 {
        if !self.diagnosable {
            return 3;
        }
        match self.worst() {
            Severity::Critical => 2,
            Severity::Warn => 1,
            Severity::Ok | Severity::Info => 0,
        }
    }

    /// A report a person reads in ten seconds: a verdict line, then each
    /// finding worst first with its numbers and its fix.
    pub fn render_text(&self, color: bool) -> String {
        let mut out = String::new();
        let verdict = match (self.diagnosable, self.worst()) {
            (false, _) => paint("could not diagnose", "1;31", color),
            (true, Severity::Critical) => paint("CRITICAL problems", "1;31", color),
            (true, Severity::Warn) => paint("warnings", "33", color),
            (true, _) => paint("healthy", "32", color),
        };
        let mut about = Vec::new();
        if self.redoubt {
            about.push("Redoubt".to_string());
        } else if let Some(v) = &self.redis_version {
            about.push(format!("Redis {v}"));
        }
        if let Some(r) = &self.role {
            about.push(r.clone());
        }
        let about = if about.is_empty() {
            String::new()
        } else {
            format!(" ({})", about.join(", "))
        };
        out.push_str(&format!(
            "redoubt doctor: {}{about}: {verdict}\n",
            self.target
        ));
        if let Some(v) = &self.vitals {
            out.push_str(&format!("{}\n", v.line()));
        }
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        out.push_str(&format!(
            "{} critical, {} warning, {} info; {} checks in {} ms{}\n",
            count(Severity::Critical),
            count(Severity::Warn),
            count(Severity::Info),
            self.checks_run,
            self.elapsed_ms,
            if self.diagnosable && !self.host_checks {
                "; host checks skipped (Redis is not local)"
            } else {
                ""
            }
        ));
        if self.redoubt {
            out.push_str("this is a Redoubt: checks of redis-server itself (persistence, version, fork) were not run\n");
        }
        if !self.ignored.is_empty() {
            out.push_str(&format!(
                "ignored (muted, not counted): {}\n",
                self.ignored.join(", ")
            ));
        }
        for f in &self.findings {
            out.push('\n');
            out.push_str(&format!(
                "{} {}  {}\n",
                f.severity.label(color),
                paint(&f.title, "1", color),
                paint(&f.id, "2", color)
            ));
            if !f.detail.is_empty() {
                out.push_str(&format!("     {}\n", f.detail));
            }
            for (i, c) in f.causes.iter().enumerate() {
                out.push_str(&format!("     cause {}: {c}\n", i + 1));
            }
            out.push_str(&format!("     fix: {}\n", f.fix));
        }
        if !self.skipped.is_empty() {
            out.push_str(&format!("\nnot checked: {}\n", self.skipped.join("; ")));
        }
        out
    }

    /// The report as JSON (the same fields, plus `exit_code` and `worst`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), self.exit_code().into());
            o.insert("worst".into(), self.worst().as_str().into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            severity,
            title: format!("t {id}"),
            detail: "d".into(),
            fix: "do x".into(),
            causes: vec![],
        }
    }

    fn report(findings: Vec<Finding>, diagnosable: bool) -> Report {
        let mut r = Report {
            target: "redis://h:1".into(),
            diagnosable,
            findings,
            redis_version: Some("7.2.4".into()),
            role: Some("master".into()),
            redoubt: false,
            vitals: None,
            ignored: vec![],
            host_checks: true,
            checks_run: 40,
            keys_sampled: 0,
            counters: Counters::default(),
            skipped: vec![],
            elapsed_ms: 5,
        };
        r.sort();
        r
    }

    #[test]
    fn exit_codes_follow_the_worst_finding() {
        assert_eq!(report(vec![], true).exit_code(), 0);
        assert_eq!(report(vec![f("a", Severity::Info)], true).exit_code(), 0);
        assert_eq!(
            report(vec![f("a", Severity::Info), f("b", Severity::Warn)], true).exit_code(),
            1
        );
        assert_eq!(
            report(
                vec![f("b", Severity::Warn), f("c", Severity::Critical)],
                true
            )
            .exit_code(),
            2
        );
        assert_eq!(
            report(vec![f("c", Severity::Critical)], false).exit_code(),
            3
        );
    }

    #[test]
    fn text_lists_worst_first_with_fixes() {
        let r = report(
            vec![
                f("low", Severity::Info),
                f("high", Severity::Critical),
                f("mid", Severity::Warn),
            ],
            true,
        );
        let t = r.render_text(false);
        let pos = |s: &str| t.find(s).unwrap_or_else(|| panic!("{s} missing in {t}"));
        assert!(pos("high") < pos("mid") && pos("mid") < pos("low"));
        assert_eq!(t.matches("fix: do x").count(), 3);
        assert!(t.contains("CRITICAL problems"));
        assert!(!t.contains('\x1b'));
        assert!(r.render_text(true).contains("\x1b[1;31m"));
    }

    #[test]
    fn json_carries_ids_severity_and_exit_code() {
        let r = report(vec![f("memory.near-maxmemory", Severity::Warn)], true);
        let j = r.to_json();
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["worst"], "warn");
        assert_eq!(j["findings"][0]["id"], "memory.near-maxmemory");
        assert_eq!(j["findings"][0]["severity"], "warn");
        assert!(j["findings"][0].get("causes").is_none());
    }
}

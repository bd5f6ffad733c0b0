//! `redoubt triage`: a streaming matcher that reads logs line by line
//! and groups the lines that point at a Redis problem by cause.
//!
//! Signatures live in `data/signatures.toml`, compiled in. Memory stays
//! bounded whatever the input size: lines are never collected, each is
//! read into one reused buffer capped at [`MAX_LINE_BYTES`], and the
//! report keeps one example line per cause.

use std::collections::BTreeSet;
use std::io::{self, BufRead};
use std::path::Path;
use std::sync::OnceLock;

use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::logtime::LogTime;
use crate::severity::{paint, Severity};

/// Bytes of one line that are looked at; the rest of a longer line is
/// skipped (a stack trace squeezed on one line, a binary blob).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Characters kept of the example line shown for a cause.
const EXAMPLE_CHARS: usize = 300;

const SIGNATURES_TOML: &str = include_str!("../data/signatures.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    cause: Vec<CauseDef>,
    signature: Vec<SignatureDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CauseDef {
    id: String,
    title: String,
    severity: Severity,
    causes: Vec<String>,
    first_step: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureDef {
    id: String,
    cause: String,
    catalog: String,
    patterns: Vec<String>,
}

/// The parsed and compiled signature table.
struct Compiled {
    causes: Vec<CauseDef>,
    signatures: Vec<SignatureDef>,
    /// Cause index of each signature.
    sig_cause: Vec<usize>,
    /// All patterns of all signatures in one automaton.
    set: RegexSet,
    /// Signature index of each pattern in `set`.
    pattern_sig: Vec<usize>,
}

/// Why the compiled-in table is unusable. Only a broken edit of
/// `signatures.toml` causes this, and the crate's tests catch it.
#[derive(Debug, thiserror::Error)]
enum TableError {
    #[error("signatures.toml: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("signatures.toml: signature {0} names unknown cause {1}")]
    UnknownCause(String, String),
    #[error("signatures.toml: {0}")]
    Regex(#[from] regex::Error),
}

fn compile(text: &str) -> Result<Compiled, TableError> {
    let catalog: Catalog = toml::from_str(text)?;
    let mut sig_cause = Vec::new();
    let mut patterns = Vec::new();
    let mut pattern_sig = Vec::new();
    for (i, s) in catalog.signature.iter().enumerate() {
        let c = catalog
            .cause
            .iter()
            .position(|c| c.id == s.cause)
            .ok_or_else(|| TableError::UnknownCause(s.id.clone(), s.cause.clone()))?;
        sig_cause.push(c);
        for p in &s.patterns {
            patterns.push(p.as_str());
            pattern_sig.push(i);
        }
    }
    let set = RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(64 << 20)
        .build()?;
    Ok(Compiled {
        causes: catalog.cause,
        signatures: catalog.signature,
        sig_cause,
        set,
        pattern_sig,
    })
}

fn compiled() -> &'static Compiled {
    static TABLE: OnceLock<Compiled> = OnceLock::new();
    // The table is part of the program, not input: a failure here is a
    // build defect, caught by `signature_table_compiles`.
    TABLE.get_or_init(|| compile(SIGNATURES_TOML).unwrap_or_else(|e| panic!("{e}")))
}

/// A signature, as listed by [`Triage::signatures`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureInfo {
    /// Stable signature id.
    pub id: &'static str,
    /// Cause (group) id it counts toward.
    pub cause: &'static str,
    /// Catalog entry (B… application errors, C… server log lines).
    pub catalog: &'static str,
}

/// Where a line was: source name (file) and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// File name, or `None` for a single unnamed stream (stdin).
    pub source: Option<String>,
    /// 1-based line number within the source.
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{s}:{}", self.line),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// All lines pointing at one cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriageGroup {
    /// Cause id, e.g. `oom`.
    pub cause: String,
    /// What happened.
    pub title: String,
    /// How bad.
    pub severity: Severity,
    /// Matching lines.
    pub count: u64,
    /// First matching line.
    pub first: Location,
    /// Last matching line.
    pub last: Location,
    /// The first matching line (ANSI removed, shortened).
    pub example: String,
    /// When the first matching line was logged (RFC 3339, UTC): its own
    /// time, or that of the last dated line before it when it has none
    /// (a kernel line between application lines). `None` before any
    /// dated line.
    pub first_time: Option<String>,
    /// When the last matching line was logged, as `first_time`.
    pub last_time: Option<String>,
    /// Signature ids that matched, sorted.
    pub signatures: Vec<String>,
    /// Likely causes, most likely first.
    pub likely_causes: Vec<String>,
    /// What to do first.
    pub first_step: String,
}

/// The result of triaging one or more logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriageReport {
    /// Cause ids in the order they first appeared (by time where the lines
    /// have one, else by position): the first is the earliest cause, most
    /// often the root one; the others tend to be its consequences.
    pub timeline: Vec<String>,
    /// Lines read.
    pub lines: u64,
    /// Lines longer than [`MAX_LINE_BYTES`], matched on their beginning only.
    pub long_lines: u64,
    /// Causes found, worst first, then most frequent.
    pub groups: Vec<TriageGroup>,
}

struct Acc {
    /// Position of the first matching line among all lines read.
    seq: u64,
    first_time: Option<LogTime>,
    last_time: Option<LogTime>,
    count: u64,
    first: Location,
    last: Location,
    example: String,
    signatures: BTreeSet<&'static str>,
}

/// Streaming matcher: feed it lines, then [`finish`](Triage::finish).
pub struct Triage {
    table: &'static Compiled,
    source: Option<String>,
    line: u64,
    lines: u64,
    long_lines: u64,
    acc: Vec<Option<Acc>>,
    clean: Vec<u8>,
    hits: Vec<usize>,
    /// Time of the last dated line, carried to undated ones.
    now: Option<LogTime>,
}

impl Default for Triage {
    fn default() -> Self {
        Triage::new()
    }
}

impl Triage {
    /// A matcher with the compiled-in signatures.
    pub fn new() -> Triage {
        let table = compiled();
        Triage {
            table,
            source: None,
            line: 0,
            lines: 0,
            long_lines: 0,
            acc: table.causes.iter().map(|_| None).collect(),
            clean: Vec::with_capacity(1024),
            hits: Vec::new(),
            now: None,
        }
    }

    /// Every signature in the table.
    pub fn signatures() -> Vec<SignatureInfo> {
        let t = compiled();
        t.signatures
            .iter()
            .zip(&t.sig_cause)
            .map(|(s, c)| SignatureInfo {
                id: &s.id,
                cause: &t.causes[*c].id,
                catalog: &s.catalog,
            })
            .collect()
    }

    /// Starts a new named source (a file): line numbers restart at 1.
    pub fn begin_source(&mut self, name: impl Into<String>) {
        self.source = Some(name.into());
        self.line = 0;
    }

    /// Matches one line (with or without its line ending). ANSI colour
    /// codes are removed and invalid UTF-8 replaced before matching.
    pub fn feed(&mut self, line: &[u8]) {
        self.line += 1;
        self.lines += 1;
        let mut line = line;
        while let Some((b'\n' | b'\r', rest)) = line.split_last() {
            line = rest;
        }
        strip_ansi(line, &mut self.clean);
        let text = String::from_utf8_lossy(&self.clean);
        if let Some(at) = LogTime::find(&text, self.now.map(LogTime::year)) {
            self.now = Some(at);
        }
        let now = self.now;
        let seq = self.lines;
        let t = self.table;
        self.hits.clear();
        for p in t.set.matches(&text).iter() {
            let sig = t.pattern_sig[p];
            self.hits.push(sig);
        }
        if self.hits.is_empty() {
            return;
        }
        // One line counts once per cause, however many patterns matched.
        self.hits.sort_unstable_by_key(|s| (t.sig_cause[*s], *s));
        let here = Location {
            source: self.source.clone(),
            line: self.line,
        };
        let mut last_cause = usize::MAX;
        for &sig in &self.hits {
            let cause = t.sig_cause[sig];
            let slot = &mut self.acc[cause];
            let acc = slot.get_or_insert_with(|| Acc {
                seq,
                first_time: now,
                last_time: now,
                count: 0,
                first: here.clone(),
                last: here.clone(),
                example: shorten(&text, EXAMPLE_CHARS),
                signatures: BTreeSet::new(),
            });
            acc.signatures.insert(&t.signatures[sig].id);
            if cause != last_cause {
                acc.count += 1;
                acc.last = here.clone();
                acc.last_time = now;
                last_cause = cause;
            }
        }
    }

    /// Reads `r` to the end, line by line, in bounded memory.
    pub fn feed_reader<R: BufRead>(&mut self, mut r: R) -> io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            match read_line_capped(&mut r, &mut buf, MAX_LINE_BYTES)? {
                None => return Ok(()),
                Some(truncated) => {
                    if truncated {
                        self.long_lines += 1;
                    }
                    self.feed(&buf);
                }
            }
        }
    }

    /// The report: groups worst first, then by count.
    pub fn finish(self) -> TriageReport {
        let t = self.table;
        let found = self
            .acc
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
            .collect::<Vec<_>>();
        // Earliest first: dated before undated would misplace nothing,
        // since an undated first line came before any dated one.
        let mut order: Vec<(Option<LogTime>, u64, usize)> = found
            .iter()
            .map(|(i, a)| (a.first_time, a.seq, *i))
            .collect();
        order.sort();
        let timeline: Vec<String> = order
            .iter()
            .map(|(_, _, i)| t.causes[*i].id.clone())
            .collect();
        let mut groups: Vec<TriageGroup> = found
            .into_iter()
            .map(|(i, a)| {
                let c = &t.causes[i];
                TriageGroup {
                    cause: c.id.clone(),
                    title: c.title.clone(),
                    severity: c.severity,
                    count: a.count,
                    first: a.first,
                    last: a.last,
                    example: a.example,
                    first_time: a.first_time.map(LogTime::rfc3339),
                    last_time: a.last_time.map(LogTime::rfc3339),
                    signatures: a.signatures.into_iter().map(str::to_string).collect(),
                    likely_causes: c.causes.clone(),
                    first_step: c.first_step.clone(),
                }
            })
            .collect();
        groups.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.count.cmp(&a.count))
                .then(a.first.line.cmp(&b.first.line))
        });
        TriageReport {
            timeline,
            lines: self.lines,
            long_lines: self.long_lines,
            groups,
        }
    }
}

/// Triage of one stream (stdin, one file). Errors are read errors only;
/// the binary maps them to exit code 4.
pub fn triage_reader<R: BufRead>(r: R) -> io::Result<TriageReport> {
    let mut t = Triage::new();
    t.feed_reader(r)?;
    Ok(t.finish())
}

/// A log file that could not be opened or read (`redoubt triage` exits 4).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct InputError {
    /// The file as given.
    pub path: String,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

/// Triage of several files in order, each with its own line numbers
/// (locations read `FILE:LINE`). Stops at the first unreadable file.
pub fn triage_files<P: AsRef<Path>>(paths: &[P]) -> Result<TriageReport, InputError> {
    let mut t = Triage::new();
    for p in paths {
        let p = p.as_ref();
        let err = |source| InputError {
            path: p.display().to_string(),
            source,
        };
        let file = std::fs::File::open(p).map_err(err)?;
        t.begin_source(p.display().to_string());
        t.feed_reader(io::BufReader::with_capacity(64 * 1024, file))
            .map_err(err)?;
    }
    Ok(t.finish())
}

impl TriageReport {
    /// DESIGN's exit code for `redoubt triage`: 0 nothing found, 1 findings.
    pub fn exit_code(&self) -> i32 {
        if self.groups.is_empty() {
            0
        } else {
            1
        }
    }

    /// The group for a cause id.
    pub fn group(&self, cause: &str) -> Option<&TriageGroup> {
        self.groups.iter().find(|g| g.cause == cause)
    }

    /// Grouped, worst first: title, count and line span, one example, the
    /// ranked likely causes and the first step.
    pub fn render_text(&self, color: bool) -> String {
        let mut out = format!(
            "redoubt triage: {} lines, {}\n",
            self.lines,
            match self.groups.len() {
                0 => paint("no known Redis problem found", "32", color),
                1 => "1 cause found".to_string(),
                n => format!("{n} causes found"),
            }
        );
        if let Some(first) = self.timeline.first().and_then(|c| self.group(c)) {
            out.push_str(&format!(
                "earliest cause: {} ({}), first at {}{}\n",
                paint(&first.title, "1", color),
                first.cause,
                first.first,
                first
                    .first_time
                    .as_ref()
                    .map(|t| format!(", {t}"))
                    .unwrap_or_default()
            ));
        }
        if self.timeline.len() > 1 {
            out.push_str("\ntimeline (first line of each cause):\n");
            for g in self.timeline.iter().filter_map(|c| self.group(c)) {
                out.push_str(&format!(
                    "  {:<24} {} {}  ×{}, {}\n",
                    g.first_time.as_deref().unwrap_or("(no time)"),
                    g.severity.label(color),
                    g.cause,
                    g.count,
                    g.first
                ));
            }
        }
        for g in &self.groups {
            let span = if g.first == g.last {
                format!("{}", g.first)
            } else {
                format!("{} … {}", g.first, g.last)
            };
            out.push_str(&format!(
                "\n{} {}  {} ×{}, {}\n",
                g.severity.label(color),
                paint(&g.title, "1", color),
                paint(&g.cause, "2", color),
                g.count,
                span
            ));
            out.push_str(&format!("     e.g. {}\n", g.example));
            for (i, c) in g.likely_causes.iter().enumerate() {
                out.push_str(&format!("     likely {}: {c}\n", i + 1));
            }
            out.push_str(&format!("     first step: {}\n", g.first_step));
        }
        if self.long_lines > 0 {
            out.push_str(&format!(
                "\n{} lines longer than {} KiB were matched on their start only\n",
                self.long_lines,
                MAX_LINE_BYTES / 1024
            ));
        }
        out
    }

    /// The report as JSON, with `exit_code`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), self.exit_code().into());
        }
        v
    }
}

/// Reads one line (up to and including `\n`) into `buf`, keeping at most
/// `cap` bytes and skipping the rest of a longer line. `None` at end of
/// input; otherwise whether the line was cut.
fn read_line_capped<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<Option<bool>> {
    let mut read_any = false;
    let mut truncated = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&avail[..take.min(room)]);
        truncated |= take > room;
        r.consume(take);
        if done {
            return Ok(Some(truncated));
        }
    }
}

/// Copies `line` into `out` without ANSI escape sequences (CSI colour
/// codes, OSC titles, charset switches and two-byte escapes).
fn strip_ansi(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < line.len() {
        if line[i] != 0x1b {
            out.push(line[i]);
            i += 1;
            continue;
        }
        match line.get(i + 1) {
            // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
            Some(b'[') => {
                i += 2;
                while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                    i += 1;
                }
                i += 1;
            }
            // OSC: up to BEL or ESC \.
            Some(b']') => {
                i += 2;
                while i < line.len()
                    && line[i] != 0x07
                    && !(line[i] == 0x1b && line.get(i + 1) == Some(&b'\\'))
                {
                    i += 1;
                }
                i += if line.get(i) == Some(&0x07) { 1 } else { 2 };
            }
            // ESC, intermediates 0x20..=0x2f, a final byte (e.g. ESC ( B).
            Some(0x20..=0x2f) => {
                i += 1;
                while i < line.len() && (0x20..=0x2f).contains(&line[i]) {
                    i += 1;
                }
                i += 1;
            }
            Some(_) => i += 2,
            None => i += 1,
        }
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_table_compiles() {
        let t = compile(SIGNATURES_TOML).unwrap();
        assert!(t.signatures.len() >= 70);
        let mut ids = BTreeSet::new();
        for s in &t.signatures {
            assert!(ids.insert(&s.id), "duplicate signature {}", s.id);
            assert!(!s.patterns.is_empty(), "{}", s.id);
        }
        // Every cause is used, and carries its advice.
        for (i, c) in t.causes.iter().enumerate() {
            assert!(t.sig_cause.contains(&i), "cause {} has no signature", c.id);
            assert!(
                !c.causes.is_empty() && !c.first_step.is_empty() && !c.title.is_empty(),
                "{}",
                c.id
            );
        }
        // Catalog parts B (41 rows) and C (32 rows) are covered.
        let cat: BTreeSet<&str> = t.signatures.iter().map(|s| s.catalog.as_str()).collect();
        assert_eq!(cat.iter().filter(|c| c.starts_with('B')).count(), 41);
        assert_eq!(cat.iter().filter(|c| c.starts_with('C')).count(), 32);
    }

    #[test]
    fn unknown_cause_and_bad_regex_are_rejected() {
        let bad = "[[cause]]\nid='a'\ntitle='t'\nseverity='warn'\ncauses=['x']\nfirst_step='y'\n[[signature]]\nid='s'\ncause='b'\ncatalog='B1'\npatterns=['x']\n";
        assert!(matches!(compile(bad), Err(TableError::UnknownCause(..))));
        let bad = bad
            .replace("cause='b'", "cause='a'")
            .replace("patterns=['x']", "patterns=['(']");
        assert!(matches!(compile(&bad), Err(TableError::Regex(_))));
    }

    #[test]
    fn ansi_sequences_are_removed() {
        let mut out = Vec::new();
        strip_ansi(b"\x1b[31mERR\x1b[0m x \x1b]0;title\x07y \x1b(Bz", &mut out);
        assert_eq!(out, b"ERR x y z");
        strip_ansi(b"tail \x1b[", &mut out);
        assert_eq!(out, b"tail ");
    }

    #[test]
    fn long_lines_are_capped_and_the_rest_skipped() {
        let mut input = vec![b'a'; 100];
        input.extend_from_slice(b"\nshort\nlast-no-newline");
        let mut r = io::BufReader::with_capacity(7, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut buf, 10).unwrap(), Some(true));
        assert_eq!(buf, vec![b'a'; 10]);
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf, 10).unwrap(), Some(false));
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 100).unwrap(),
            Some(false)
        );
        assert_eq!(buf, b"last-no-newline");
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf, 100).unwrap(), None);
    }

    #[test]
    fn example_is_shortened_on_a_char_boundary() {
        assert_eq!(shorten("ééé", 2), "éé…");
        assert_eq!(shorten("ab", 5), "ab");
    }
}

//! Counters INFO reports (`INFO stats`, `errorstats`, `commandstats`),
//! reset by CONFIG RESETSTAT.

use std::collections::BTreeMap;

use resp::Frame;

/// Server-wide counters.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub commands_processed: u64,
    pub connections_received: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub rejected_calls: u64,
    pub pubsub_messages: u64,
    /// Changes since start (INFO persistence `rdb_changes_since_last_save`).
    pub dirty: u64,
    /// Error replies sent (`total_error_replies`).
    pub error_replies: u64,
    /// Error replies by their code, the first word (`errorstat_<CODE>`);
    /// sorted, as Redis lists them.
    pub errors: BTreeMap<String, u64>,
    /// Per command, by its row in the command table
    /// (`resp::command::lookup_id`; sized on first use): an index, not a
    /// hash of the name, on every command.
    pub commands: Vec<CommandStat>,
}

/// One command's line of `INFO commandstats`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CommandStat {
    pub calls: u64,
    pub usec: u64,
    /// Refused before it ran (arity, OOM, ACL, a script's read-only rule).
    pub rejected: u64,
    /// Ran and answered an error.
    pub failed: u64,
}

impl Stats {
    /// What CONFIG RESETSTAT clears (Redis keeps `dirty`).
    pub fn reset(&mut self) {
        let dirty = self.dirty;
        *self = Stats {
            dirty,
            ..Stats::default()
        };
    }

    /// One error reply sent, its text with or without the leading `-`.
    /// The code is the first word within 32 bytes, else `ERR`, as Redis's
    /// `afterErrorReply` takes it.
    pub fn error(&mut self, text: &[u8]) {
        let text = text.strip_prefix(b"-").unwrap_or(text);
        let code = match text[..text.len().min(32)].iter().position(|&b| b == b' ') {
            Some(end) => String::from_utf8_lossy(&text[..end]).into_owned(),
            None => "ERR".to_string(),
        };
        self.error_replies += 1;
        *self.errors.entry(code).or_default() += 1;
    }

    /// A command that ran for `usec` microseconds; `failed` if it answered
    /// an error.
    pub fn called(&mut self, name: &'static str, usec: u64, failed: bool) {
        if let Some(row) = row_of(name) {
            self.called_row(row, usec, failed);
        }
    }

    /// [`called`](Self::called) for the command at `row`.
    pub fn called_row(&mut self, row: usize, usec: u64, failed: bool) {
        if let Some(c) = self.at(row) {
            c.calls += 1;
            c.usec += usec;
            c.failed += failed as u64;
        }
    }

    /// A call counted already (a blocked command, retried) that ended in
    /// an error.
    pub fn failed(&mut self, name: &'static str) {
        if let Some(c) = row_of(name).and_then(|r| self.at(r)) {
            c.failed += 1;
        }
    }

    /// A command refused before it ran.
    pub fn rejected(&mut self, name: &'static str) {
        if let Some(c) = row_of(name).and_then(|r| self.at(r)) {
            c.rejected += 1;
        }
    }

    fn at(&mut self, row: usize) -> Option<&mut CommandStat> {
        if self.commands.is_empty() {
            self.commands = vec![CommandStat::default(); resp::command::row_count()];
        }
        self.commands.get_mut(row)
    }

    /// Every command with something counted, by name.
    pub fn by_name(&self) -> Vec<(&'static str, CommandStat)> {
        let mut out: Vec<_> = self
            .commands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.calls + c.rejected + c.failed > 0)
            .filter_map(|(row, c)| Some((resp::command::row(row)?.name, *c)))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    /// A refusal sent instead of running a command: the error, and the
    /// command's rejected call when the table names one.
    pub fn refused(&mut self, reply: &Frame, name: Option<&'static str>) {
        if let Frame::Error(e) | Frame::BulkError(e) = reply {
            self.error(e);
        }
        if let Some(name) = name {
            self.rejected(name);
        }
    }
}

/// The row of the command table named `name` (`get`, `config|set`).
fn row_of(name: &str) -> Option<usize> {
    let found = match name.split_once('|') {
        Some((cmd, sub)) => resp::command::lookup_id(&[cmd, sub]),
        None => resp::command::lookup_id(&[name]),
    };
    found.map(|(row, _)| row)
}

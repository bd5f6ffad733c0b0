//! `redoubt journal inspect|export|replay|repair`: work on a journal
//! without a running Redoubt. `inspect` and `export` take no lock and
//! change nothing; `replay` and `repair` lock the data dir, so they refuse
//! one a Redoubt is using.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// `journal inspect DIR [--json]`: 0 clean, 1 torn tail or corruption
/// found (described), 2 unreadable.
pub fn inspect(dir: &Path, json: bool) -> ExitCode {
    match journal::inspect(dir) {
        Err(e) => {
            eprintln!("redoubt journal inspect: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if json {
                // The epoch-ms fields stay as they are for scripts; the
                // RFC 3339 ones beside them are for whoever reads the JSON.
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    for (ms, text) in [
                        (report.first_time_ms, "first_time"),
                        (report.last_time_ms, "last_time"),
                    ] {
                        o.insert(text.into(), ms.map(journal::rfc3339_millis).into());
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{report}");
            }
            if report.corruption.is_some() || report.torn_tail.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// `journal export DIR --format resp`: plain RESP on stdout for
/// `redis-cli --pipe`. Exit 1 when it stopped at a corrupt record (what
/// came before it was written), 2 when unreadable.
pub fn export(dir: &Path) -> ExitCode {
    let stdout = std::io::stdout();
    // The bar measures RESP bytes written against the journal's size on
    // disk: close (both are the commands' arguments plus a little framing),
    // and it needs nothing from the exporter.
    let bar = terminal_bar(journal::inspect(dir).map_or(0, |r| r.bytes), "exporting");
    let mut out = Counted {
        inner: std::io::BufWriter::new(stdout.lock()),
        bar: bar.clone(),
    };
    let report = journal::export_resp(dir, &mut out);
    let flushed = out.flush();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match report {
        Err(e) => {
            eprintln!("redoubt journal export: {e}");
            ExitCode::from(2)
        }
        Ok(_) if flushed.is_err() => {
            eprintln!("redoubt journal export: cannot write to stdout");
            ExitCode::from(2)
        }
        Ok(r) => {
            eprintln!(
                "exported {} entries ({} commands) from {}",
                r.entries,
                r.commands,
                r.dir.display()
            );
            if let Some(t) = &r.torn_tail {
                eprintln!("note: a torn last record was not exported: {t}");
            }
            match &r.corruption {
                Some(c) => {
                    eprintln!("stopped at a corrupt record: {c}; nothing after it was exported. Run `redoubt journal inspect {}` for details", dir.display());
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
    }
}

/// `journal replay DIR --to URL`: 0 drained, 1 paused or disconnected
/// (nothing lost; run again to resume), 2 error.
pub fn replay(dir: &Path, url: &str, node_id: Option<&str>, tls: &tls::ClientOptions) -> ExitCode {
    crate::serve::init_logging(crate::serve::LogFormat::Human);
    let client = if *tls == tls::ClientOptions::default() {
        None
    } else {
        match tls::TlsClient::new(tls) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("redoubt journal replay: TLS settings: {e}; nothing was replayed");
                return ExitCode::from(2);
            }
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redoubt journal replay: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ticker = None;
    let watch = |progress: proxy::replay::ProgressHandle| {
        let Some(bar) = terminal_bar(progress.snapshot().remaining, "replaying") else {
            return;
        };
        let total = bar.length().unwrap_or(0);
        ticker = Some((
            bar.clone(),
            // Polls the replayer's counters: nothing on the replay path
            // waits for the bar.
            tokio::spawn(async move {
                loop {
                    let p = progress.snapshot();
                    bar.set_position(total.saturating_sub(p.remaining));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }),
        ));
    };
    let outcome = rt.block_on(proxy::replay::replay_dir_watched(
        dir, url, node_id, client, watch,
    ));
    if let Some((bar, task)) = ticker {
        task.abort();
        bar.finish_and_clear();
    }
    match outcome {
        Ok(proxy::replay::ReplayOutcome::Drained { replayed, failed }) => {
            println!("replayed {replayed} commands into {url}; {failed} refused by Redis (see replay-failed.jsonl)");
            ExitCode::SUCCESS
        }
        Ok(proxy::replay::ReplayOutcome::Paused {
            reason, replayed, ..
        }) => {
            eprintln!("replay paused after {replayed} commands: Redis refuses writes ({reason}); nothing was lost, run again once it accepts writes");
            ExitCode::from(1)
        }
        Ok(proxy::replay::ReplayOutcome::ConnectionLost {
            reason, replayed, ..
        }) => {
            eprintln!("replay stopped after {replayed} commands: {reason}; nothing was lost or doubled, run again to resume from the checkpoint");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("redoubt journal replay: {e}");
            ExitCode::from(2)
        }
    }
}

/// `journal repair DIR [--json]`: what the corruption error asks for. The
/// corrupt record and everything after it go into a quarantine directory
/// (nothing is deleted) and the journal is cut there, so Redoubt starts
/// and takes writes again. 0 repaired or nothing to repair, 2 not done
/// (no journal, data dir in use, I/O error).
pub fn repair(dir: &Path, json: bool) -> ExitCode {
    let Some(data_dir) = data_dir_of(dir) else {
        eprintln!(
            "redoubt journal repair: no journal in {}: nothing was changed; give the data_dir (the directory holding journal/)",
            dir.display()
        );
        return ExitCode::from(2);
    };
    // The lock makes sure no Redoubt has this journal open while it is cut.
    let lock = match journal::DataDirLock::acquire(&data_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("redoubt journal repair: {e}; the journal was not changed");
            return ExitCode::from(2);
        }
    };
    match journal::repair(&lock) {
        Err(e) => {
            eprintln!(
                "redoubt journal repair: {e}; run `redoubt journal inspect {}` to see its state",
                data_dir.display()
            );
            ExitCode::from(2)
        }
        Ok(None) => {
            if json {
                println!("{}", serde_json::json!({ "repaired": false }));
            } else {
                println!(
                    "journal in {} has no corrupt record: nothing to repair, nothing changed",
                    data_dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Some(r)) => {
            if json {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("repaired".into(), true.into());
                }
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("repaired the journal in {}", data_dir.display());
                println!("  was: {}", r.corruption);
                println!(
                    "  moved aside: {} in {} file(s) to {}",
                    journal::human_bytes(r.bytes_moved),
                    r.moved.len(),
                    r.quarantine.display()
                );
                for m in &r.moved {
                    println!("    {}", m.display());
                }
                println!(
                    "the commands in the quarantine will not be replayed or restored; keep it until you are sure they are not needed. Redoubt can start on this data_dir again."
                );
            }
            ExitCode::SUCCESS
        }
    }
}

/// The data dir of `dir`, which may be the data dir or its `journal/`
/// directory (as `inspect` takes either). `None` when neither holds a
/// journal: the lock would otherwise create an empty data dir there.
fn data_dir_of(dir: &Path) -> Option<std::path::PathBuf> {
    if dir.join(journal::JOURNAL_DIR).is_dir() {
        return Some(dir.to_path_buf());
    }
    if dir.is_dir() && dir.file_name().is_some_and(|n| n == journal::JOURNAL_DIR) {
        return dir.parent().map(Path::to_path_buf);
    }
    None
}

/// A counter of entries with its rate on stderr, for work whose total is
/// not known up front, only when stderr is a terminal.
pub(crate) fn terminal_counter(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(s) = indicatif::ProgressStyle::with_template(
        "{prefix} {spinner} {pos} entries ({per_sec}, {elapsed})",
    ) {
        bar.set_style(s);
    }
    bar.set_prefix(what.to_string());
    Some(bar)
}

/// A progress bar on stderr of `len` units, only when stderr is a terminal:
/// piped or redirected output (scripts, tests) stays free of redraws.
fn terminal_bar(len: u64, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || len == 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    let counts = if what == "exporting" {
        "{bytes}/{total_bytes}"
    } else {
        "{pos}/{len} entries"
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{prefix}} [{{bar:40}}] {{percent:>3}}% {counts} ({{elapsed}}, ~{{eta}} left)"
    ))
    .map(|s| s.progress_chars("=> "));
    if let Ok(s) = style {
        bar.set_style(s);
    }
    bar.set_prefix(what.to_string());
    Some(bar)
}

/// A writer that advances a progress bar by the bytes it passes on.
struct Counted<W> {
    inner: W,
    bar: Option<indicatif::ProgressBar>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(b) = &self.bar {
            // Clamped: the RESP form can be a little larger than the journal.
            let len = b.length().unwrap_or(0);
            b.set_position((b.position() + n as u64).min(len));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

//! `redoubt journal inspect|export`: read a journal without a running
//! Redoubt (it takes no lock and changes nothing).

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
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = journal::export_resp(dir, &mut out);
    let flushed = out.flush();
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
    match rt.block_on(proxy::replay::replay_dir_tls(dir, url, node_id, client)) {
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

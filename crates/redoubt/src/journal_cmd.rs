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
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
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

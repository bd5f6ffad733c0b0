//! `redoubt doctor` and `redoubt triage`: run the doctor crate's diagnosis
//! or log triage, print, and map the verdict to DESIGN's exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// `doctor [URL] [--json] [--cacert FILE --cert FILE --key FILE
/// --insecure]`: 0 healthy, 1 warnings, 2 critical, 3 could not diagnose.
pub fn doctor(url: &str, json: bool, tls: &tls::ClientOptions) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redoubt doctor: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let mut opts = doctor::DoctorOptions::default();
    let wants_tls = url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("rediss://");
    if wants_tls {
        match tls::TlsClient::new(tls) {
            Ok(c) => opts.tls = Some(c),
            Err(e) => {
                eprintln!("redoubt doctor: TLS settings: {e}; nothing was diagnosed");
                return ExitCode::from(3);
            }
        }
    } else if *tls != tls::ClientOptions::default() {
        eprintln!("redoubt doctor: --cacert, --cert, --key and --insecure are for a rediss:// URL");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let report = rt.block_on(doctor::diagnose(url, &opts));
    finish(
        json,
        report.to_json(),
        |color| report.render_text(color),
        report.exit_code(),
    )
}

/// `triage [FILE...] [--json]` (stdin without FILE): 0 nothing found, 1
/// findings, 4 input unreadable.
pub fn triage(files: &[PathBuf], json: bool) -> ExitCode {
    let read = if files.is_empty() {
        doctor::triage_reader(std::io::stdin().lock())
            .map_err(|e| format!("cannot read standard input: {e}"))
    } else {
        doctor::triage_files(files).map_err(|e| e.to_string())
    };
    let report = match read {
        Ok(r) => r,
        Err(e) => {
            eprintln!("redoubt triage: {e}; nothing was analysed");
            return ExitCode::from(4);
        }
    };
    finish(
        json,
        report.to_json(),
        |color| report.render_text(color),
        report.exit_code(),
    )
}

/// Prints a report as JSON or as text (coloured on a terminal) and turns
/// its verdict into the exit code.
fn finish(
    json: bool,
    as_json: serde_json::Value,
    text: impl Fn(bool) -> String,
    exit: i32,
) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json).unwrap_or_default()
        );
    } else {
        print!("{}", text(std::io::stdout().is_terminal()));
    }
    code(exit)
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(3))
}

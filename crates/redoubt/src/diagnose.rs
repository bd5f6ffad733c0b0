//! `redoubt doctor` and `redoubt triage`: run the doctor crate's diagnosis
//! or log triage, print, and map the verdict to DESIGN's exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where `doctor` looks when no URL is given and no config names an upstream.
const DEFAULT_DOCTOR_URL: &str = "redis://127.0.0.1:6379";

/// `doctor [URL] [--ignore CHECK]... [--config FILE] [--json] [--cacert
/// FILE --cert FILE --key FILE --insecure]`: 0 healthy, 1 warnings, 2
/// critical, 3 could not diagnose, 64 an invalid config or an --ignore
/// naming no check (nothing was diagnosed).
pub fn doctor(
    url: Option<String>,
    ignore: Vec<String>,
    file: Option<&Path>,
    json: bool,
    tls: &tls::ClientOptions,
) -> ExitCode {
    let loaded = crate::config::load(
        file,
        &crate::config::process_env(),
        &crate::config::Overrides::default(),
    );
    if !loaded.problems.is_empty() {
        for p in &loaded.problems {
            eprintln!("config: {p}");
        }
        eprintln!("redoubt doctor: {} config problem(s): nothing was diagnosed; fix them (redoubt config check) or pass --config", loaded.problems.len());
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let bad: Vec<String> = ignore
        .iter()
        .filter_map(|p| doctor::unknown_ignore(p))
        .collect();
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("redoubt doctor: --ignore {b}");
        }
        eprintln!("nothing was diagnosed");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let url = url
        .or_else(|| Some(loaded.config.upstream.clone()).filter(|u| !u.is_empty()))
        .unwrap_or_else(|| DEFAULT_DOCTOR_URL.into());
    let mut opts = doctor::DoctorOptions {
        ignore: loaded
            .config
            .doctor
            .ignore
            .iter()
            .cloned()
            .chain(ignore)
            .collect(),
        // What redis-cli reads, so `REDISCLI_AUTH=… redoubt doctor host:port`
        // works as `redis-cli -h host -p port` does; a password in the URL wins.
        password: std::env::var("REDISCLI_AUTH")
            .ok()
            .filter(|p| !p.is_empty()),
        sentinel_auth: crate::config::sentinel_auth(&loaded.config),
        ..Default::default()
    };
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
    let report = rt.block_on(doctor::diagnose(&url, &opts));
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

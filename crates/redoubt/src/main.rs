//! `redoubt`: the command line. Assembles configuration, starts the
//! pieces, maps outcomes to exit codes; no business logic lives here.
// Unsafe code only where the global allocator calls mimalloc (`alloc`).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod alloc;
mod config;
mod diagnose;
mod incidents;
mod journal_cmd;
mod ops;
mod serve;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc, for the reasons in `alloc`.
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

/// Exit code for usage errors, everywhere (DESIGN).
pub(crate) const EXIT_USAGE: u8 = 64;

/// Redoubt sits between your applications and Redis and makes a Redis
/// outage a non-event: every command is answered within a deadline, durable
/// keyspaces keep working from a local journal and are replayed when Redis
/// returns, and Redis's health is reported on /readyz and /metrics.
#[derive(Parser, Debug)]
#[command(name = "redoubt", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run Redoubt: in front of a Redis with --upstream, or without one as a
    /// small durable Redis-compatible server (standalone).
    Serve {
        /// TOML config file (default: ./redoubt.toml if present).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Client listen address (default 127.0.0.1:6380).
        #[arg(long)]
        listen: Option<String>,
        /// Redis to front: redis://[user:pass@]host:port[/db], rediss://
        /// for TLS (settings in [upstream_tls]), or
        /// redis+sentinel://[user:pass@]host:26379,host2:26379/master[/db]
        /// (Sentinels' login in [sentinel]), or
        /// redis+cluster://[user:pass@]host:port[,host:port…] (a Redis
        /// Cluster shown as one Redis); none: standalone.
        #[arg(long)]
        upstream: Option<String>,
        /// Admin HTTP address (default 127.0.0.1:9380).
        #[arg(long)]
        admin: Option<String>,
        /// Data directory (default ./redoubt-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log lines on stderr: `human` text, or `json` (one object per
        /// line, with `level` and `fields`) for a log collector.
        #[arg(long, value_enum, default_value_t = serve::LogFormat::Human)]
        log_format: serve::LogFormat,
    },
    /// Diagnose a Redis: what is wrong and what to do (exit 0 healthy,
    /// 1 warnings, 2 critical, 3 could not diagnose, 64 a bad config or
    /// --ignore): usable as a deploy gate, with accepted states muted by
    /// --ignore or `[doctor] ignore`.
    Doctor {
        /// The Redis to diagnose: redis://[user:pass@]host:port[/db] or
        /// host:port (default: the config's upstream, else
        /// 127.0.0.1:6379). Without a password in it, REDISCLI_AUTH is
        /// used, as redis-cli does.
        url: Option<String>,
        /// Mute a check by id (host.overcommit) or area (host); repeatable,
        /// added to the config's `[doctor] ignore`.
        #[arg(long, value_name = "CHECK")]
        ignore: Vec<String>,
        /// TOML config file for `[doctor] ignore` and the upstream
        /// (default: ./redoubt.toml if present).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: TlsFlags,
    },
    /// Find known Redis failure signatures in application or server logs
    /// (exit 0 nothing found, 1 findings, 4 input unreadable).
    Triage {
        /// Log files; standard input when none.
        files: Vec<PathBuf>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check or print the effective configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Read a journal directory: inspect it, export it as RESP, replay it
    /// into a Redis, or repair a corrupt one.
    Journal {
        #[command(subcommand)]
        action: JournalAction,
    },
    /// The incident log of a running Redoubt: each outage's start, end,
    /// cause and what was served, journaled, replayed and refused (newest
    /// first; --json for the raw form). Exit 0 none open, 1 one open, 3
    /// the admin endpoint does not answer.
    Incidents {
        /// Admin address of the running Redoubt.
        #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin: String,
        /// Bearer token, if admin.token is set.
        #[arg(long, env = "REDOUBT_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The /incidents JSON, with RFC 3339 times added.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running Redoubt how it is doing: a short summary (or --json).
    /// Exit 0 Redis up or standalone; 1 degraded (Redis rejects writes,
    /// the outage's journal is being replayed, Redis is down with local
    /// keyspaces serving, or the journal refuses writes); 2 Redis down and
    /// nothing served locally; 3 the admin endpoint does not answer.
    Status {
        /// Admin address of the running Redoubt.
        #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin: String,
        /// Bearer token, if admin.token is set.
        #[arg(long, env = "REDOUBT_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The raw /status JSON instead of the summary (same exit codes).
        #[arg(long)]
        json: bool,
    },
}

/// TLS settings for a rediss:// URL given on the command line (as
/// redis-cli names them; `serve` reads [upstream_tls] instead).
#[derive(clap::Args, Debug, Default)]
struct TlsFlags {
    /// rediss://: trust only the CAs in this PEM file (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// rediss://: client certificate, for a Redis with tls-auth-clients yes.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// rediss://: the client certificate's private key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// rediss://: do not check Redis's certificate (testing only).
    #[arg(long)]
    insecure: bool,
}

impl TlsFlags {
    fn options(&self) -> tls::ClientOptions {
        tls::ClientOptions {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure_skip_verify: self.insecure,
        }
    }
}

#[derive(Subcommand, Debug)]
enum JournalAction {
    /// Segments, records, bytes, time range, torn tail, corruption
    /// (exit 0 clean, 1 damage found, 2 unreadable).
    Inspect {
        /// A data dir or its journal/ directory.
        dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replay the journal into a Redis, exactly once (checkpointed under
    /// `redoubt:replay:{NODE_ID}`, the key `serve` uses too). Exit 0
    /// drained, 1 paused or disconnected (run again to resume), 2 error.
    Replay {
        /// A data dir or its journal/ directory.
        dir: PathBuf,
        /// The Redis to replay into (a redis+cluster:// URL: slot by
        /// slot, each slot checkpointed under its own key).
        #[arg(long)]
        to: String,
        /// Node id (default: the one kept in the data dir).
        #[arg(long)]
        node_id: Option<String>,
        #[command(flatten)]
        tls: TlsFlags,
    },
    /// Cut a journal at its corrupt record so Redoubt starts again: the
    /// record and everything after it move to journal/quarantine-<ms>/
    /// (kept, not replayed). Exit 0 repaired or nothing to repair, 2 not
    /// done. Stop Redoubt first: a data dir in use is refused.
    Repair {
        /// A data dir or its journal/ directory.
        dir: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the journal as plain RESP for `redis-cli --pipe`.
    Export {
        /// A data dir or its journal/ directory.
        dir: PathBuf,
        /// Output format (only `resp`).
        #[arg(long, default_value = "resp", value_parser = ["resp"])]
        format: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Validate: exit 0 if valid, 2 listing every problem otherwise.
    Check {
        /// Config file (default: ./redoubt.toml if present).
        file: Option<PathBuf>,
    },
    /// Print the effective configuration (file + environment + defaults).
    Print {
        /// Config file (default: ./redoubt.toml if present).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            upstream,
            admin,
            data_dir,
            log_format,
        } => {
            let flags = config::Overrides {
                listen,
                upstream,
                admin,
                data_dir,
            };
            // Before loading, so what loading logs (ignored variables) is seen.
            serve::init_logging(log_format);
            let loaded = config::load(config.as_deref(), &config::process_env(), &flags);
            serve::run(loaded)
        }
        Command::Config { action } => {
            let (file, print) = match action {
                ConfigAction::Check { file } => (file, false),
                ConfigAction::Print { file } => (file, true),
            };
            let loaded = config::load(
                file.as_deref(),
                &config::process_env(),
                &config::Overrides::default(),
            );
            if print {
                print!("{}", config::to_toml(&loaded.config));
            }
            if loaded.problems.is_empty() {
                if !print {
                    let from = loaded
                        .file
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "defaults".into());
                    println!("config ok ({from})");
                }
                ExitCode::SUCCESS
            } else {
                for p in &loaded.problems {
                    eprintln!("config: {p}");
                }
                eprintln!("{} problem(s); nothing was started", loaded.problems.len());
                ExitCode::from(2)
            }
        }
        Command::Doctor {
            url,
            ignore,
            config,
            json,
            tls,
        } => diagnose::doctor(url, ignore, config.as_deref(), json, &tls.options()),
        Command::Triage { files, json } => diagnose::triage(&files, json),
        Command::Journal { action } => match action {
            JournalAction::Inspect { dir, json } => journal_cmd::inspect(&dir, json),
            JournalAction::Export { dir, format: _ } => journal_cmd::export(&dir),
            JournalAction::Repair { dir, json } => journal_cmd::repair(&dir, json),
            JournalAction::Replay {
                dir,
                to,
                node_id,
                tls,
            } => journal_cmd::replay(&dir, &to, node_id.as_deref(), &tls.options()),
        },
        Command::Status { admin, token, json } => status::run(&admin, token.as_deref(), json),
        Command::Incidents { admin, token, json } => incidents::run(&admin, token.as_deref(), json),
    }
}

//! The status page at `/` as a person sees it: the real binary in front of
//! a real `redis-server` (or standalone), the page opened in headless
//! Chromium (Debian's `chromium`; scripts/test.sh installs it) in each
//! state, a screenshot saved in the test's temp dir, and assertions on
//! the DOM once the page's script has run: the state in words, the
//! journal depth, the incident rows, the refusals.
//!
//! Without Chromium the tests print why and pass, except under `CI=true`,
//! where a suite that passes because the browser was absent would prove
//! nothing. Screenshots go to the test's temp dir (gone when it ends), or
//! to `TEST_SCREENSHOT_DIR` to look at them afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use test_support::{free_port, send_command, wait_for, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");
/// Generous: two cores shared with other builds, and a durable write
/// waits for the permissions read and the first sync.
const PATIENCE: Duration = Duration::from_secs(30);

/// The browser, or `None` (with the reason printed) when it is missing
/// and this is not CI.
fn chromium() -> Option<&'static str> {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("chromium");
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium is not installed and CI=true: scripts/test.sh installs it (Debian package `chromium`)");
    }
    eprintln!(
        "SKIPPED: chromium is not installed (Debian package `chromium`; scripts/test.sh installs it), \
         so the status page was not opened in a browser"
    );
    None
}

/// Runs headless Chromium on `url` with `args`, with its own profile
/// under `dir` (tests run in parallel; a shared profile is locked). The
/// `timeout` wrapper bounds a browser that hangs.
fn run_chromium(browser: &str, dir: &Path, name: &str, url: &str, args: &[&str]) -> String {
    let profile = dir.join(format!("profile-{name}"));
    let out = Command::new("timeout")
        .args(["--kill-after=5", "90", browser])
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The page's DOM once its script has fetched and rendered (the virtual
/// time budget lets its timers and fetches run before the dump), and a
/// screenshot at `dir/<name>.png`.
fn open_page(browser: &str, dir: &Path, name: &str, url: &str) -> String {
    let shot = dir.join(format!("{name}.png"));
    run_chromium(
        browser,
        dir,
        &format!("{name}-shot"),
        url,
        &[
            "--virtual-time-budget=5000",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    let dom = run_chromium(
        browser,
        dir,
        name,
        url,
        &["--virtual-time-budget=5000", "--dump-dom"],
    );
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page did not load its data:\n{dom}"
    );
    // Nothing runs off the right edge (a long refusal is wrapped).
    assert!(
        dom.contains("data-fits=\"yes\""),
        "something is wider than the window:\n{dom}"
    );
    dom
}

/// Text of the DOM from the element with `id` to the end of `until`
/// (its closing tag), tags removed and entities decoded, lines joined by
/// spaces: what a person reads there.
fn text_at(dom: &str, id: &str, until: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in:\n{dom}"));
    let rest = &dom[start..];
    let rest = &rest[rest.find('>').map_or(0, |i| i + 1)..];
    let end = rest.find(until).unwrap_or(rest.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest[..end].chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

struct Redoubt {
    child: Child,
    port: u16,
    admin: u16,
    /// Its config, data dir and log.
    dir: std::path::PathBuf,
    /// Removed when the test ends, unless the test owns `dir`.
    _tmp: Option<tempfile::TempDir>,
}

impl Drop for Redoubt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` on fresh ports with `toml` as its config and `env` on top,
/// in front of `upstream` or standalone.
fn serve(upstream: Option<&str>, toml: &str, env: &[(&str, &str)]) -> Redoubt {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = serve_in(tmp.path(), upstream, toml, env);
    r._tmp = Some(tmp);
    r
}

/// [`serve`] with its files in `dir`, which outlives it (a restart).
fn serve_in(dir: &Path, upstream: Option<&str>, toml: &str, env: &[(&str, &str)]) -> Redoubt {
    let data = dir.join("data");
    let conf = dir.join("redoubt.toml");
    std::fs::write(&conf, toml).unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", conf.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--data-dir", data.to_str().unwrap()])
        .env_remove("REDOUBT_UPSTREAM")
        .env("REDOUBT_HEALTH_INTERVAL_MS", "50")
        .env("REDOUBT_HEALTH_TIMEOUT_MS", "200")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("redoubt.log")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(u) = upstream {
        cmd.args(["--upstream", u]);
    }
    let child = cmd.spawn().unwrap();
    let r = Redoubt {
        child,
        port,
        admin,
        dir: dir.to_path_buf(),
        _tmp: None,
    };
    for p in [port, admin] {
        wait_for("redoubt to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", p)).is_ok()
        });
    }
    r
}

/// `GET path` on the admin port with optional extra header lines; the
/// status code, the raw headers and the body.
fn get(admin: u16, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).expect("connect to admin");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (code, head.to_string(), body.to_string())
}

fn json(admin: u16, path: &str) -> Value {
    let (code, _, body) = get(admin, path, "");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn state(admin: u16) -> String {
    json(admin, "/status")["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn history_points(admin: u16) -> usize {
    json(admin, "/history")["at_unix_ms"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Where this test's screenshots go: `TEST_SCREENSHOT_DIR/<test>` when
/// set, else a `screens` dir in the test's temp dir.
fn shots_dir(r: &Redoubt, test: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("TEST_SCREENSHOT_DIR") {
        Some(d) => Path::new(&d).join(test),
        None => r.dir.join("screens"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_has(text: &str, want: &str) {
    assert!(text.contains(want), "{want:?} not in {text:?}");
}

#[test]
fn the_page_follows_redis_up_down_recovering_and_up_again() {
    let Some(browser) = chromium() else { return };
    // The replica's first sync at once (not 5 s later), so the outage
    // below has a copy to restore from.
    let mut redis = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    // The outage below is a kill (refused at once), so a long probe
    // timeout costs nothing; a short one lets a busy machine show a
    // passing "down" on the first page.
    let r = serve(
        Some(&redis.url()),
        "[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n",
        &[("REDOUBT_HEALTH_TIMEOUT_MS", "2000")],
    );
    let shots = shots_dir(&r, "states");
    let url = format!("http://127.0.0.1:{}/", r.admin);
    wait_for("Redis up through Redoubt", PATIENCE, || {
        state(r.admin) == "up"
    });
    assert_eq!(send_command(r.port, &["SET", "d:seed", "v"]), "+OK");
    assert_eq!(send_command(r.port, &["GET", "d:seed"]), "$1");
    // A durable write during the outage needs default's permissions read
    // and the replica streaming (what it restores from).
    wait_for("default's permissions and the replica", PATIENCE, || {
        let s = json(r.admin, "/status");
        s["auth"]["users_with_known_permissions"] == 1
            && s["journal"]["replica"]["state"] == "streaming"
            && s["journal"]["replica"]["keys"] == 1
    });
    // Two samples make a first point on the sparklines.
    wait_for("a point in /history", PATIENCE, || {
        history_points(r.admin) >= 2
    });

    let dom = open_page(browser, &shots, "1-up", &url);
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Redis is up — every command goes to Redis"
    );
    // The banner's colour says the state too (green, red, blue).
    assert!(dom.contains("class=\"banner up\""), "{dom}");
    assert_eq!(
        text_at(&dom, "journal-depth", "</span>"),
        "0",
        "nothing journaled"
    );
    assert_has(
        &text_at(&dom, "incidents", "</table>"),
        "No incident recorded.",
    );
    assert_has(&text_at(&dom, "replica-state", "</div>"), "streaming");
    // Redis's own round trip beside the clients' latency.
    assert_has(
        &text_at(&dom, "upstream-rtt", "</span>"),
        "ms (the prober's PING)",
    );
    assert!(
        dom.contains("<polyline"),
        "the sparklines have lines:\n{dom}"
    );

    redis.kill();
    wait_for("Redoubt to see Redis down", PATIENCE, || {
        state(r.admin) == "down"
    });
    assert_eq!(send_command(r.port, &["SET", "d:during", "x"]), "+OK");
    wait_for(
        "the write journaled and the doctor's diagnosis of the outage",
        PATIENCE,
        || {
            let s = json(r.admin, "/status");
            s["journal"]["pending_commands"] == 1
                && s["latest_diagnosis"]["trigger"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("-> down"))
        },
    );
    let dom = open_page(browser, &shots, "2-down", &url);
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Redis is down — serving 1 keyspace locally"
    );
    assert!(dom.contains("class=\"banner down\""), "{dom}");
    assert_has(
        &text_at(&dom, "state-detail", "</p>"),
        "Local: 1 keyspace (d:* durable); other keys are refused.",
    );
    assert_eq!(text_at(&dom, "journal-depth", "</span>"), "1");
    assert_eq!(
        text_at(&dom, "replay-percent", "</div>"),
        "waiting for Redis"
    );
    let incidents = text_at(&dom, "incidents", "</table>");
    assert!(dom.contains("class=\"incident open\""), "{incidents}");
    assert_has(&incidents, "ongoing");
    assert_has(&incidents, "Redis down: ");
    assert_has(&incidents, "journaled 1");
    // The doctor's findings as cards: it could not connect.
    let findings = text_at(&dom, "findings", "<h2>");
    assert!(dom.contains("class=\"card finding "), "{findings}");
    assert_has(&findings, "connection.refused");
    assert_has(&findings, "What to do: ");

    // Redis comes back empty and slow to resync: Redoubt holds Recovering
    // until the resync says what Redis kept, with the journal waiting.
    let port = redis.port();
    drop(redis);
    let redis = RedisServer::start_on_port(port, &["--repl-diskless-sync-delay", "50"]);
    wait_for("Recovering", PATIENCE, || state(r.admin) == "recovering");
    let dom = open_page(browser, &shots, "3-recovering", &url);
    assert_has(&text_at(&dom, "state", "</h1>"), "Recovering — ");
    assert!(dom.contains("class=\"banner recovering\""), "{dom}");
    assert_eq!(text_at(&dom, "journal-depth", "</span>"), "1");
    assert_has(&text_at(&dom, "replay-detail", "</div>"), "1 left");
    assert!(dom.contains("class=\"incident open\""));

    // The resync starts at once: the lost key is put back, the journal
    // replayed, and the incident closes.
    redis.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    wait_for("Up with the journal drained", PATIENCE, || {
        let s = json(r.admin, "/status");
        s["state"] == "up" && s["journal"]["pending_commands"] == 0
    });
    wait_for("the closed incident", PATIENCE, || {
        json(r.admin, "/incidents")["recent"][0]["ended_at_ms"].is_u64()
    });
    let dom = open_page(browser, &shots, "4-up-again", &url);
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Redis is up — every command goes to Redis"
    );
    let incidents = text_at(&dom, "incidents", "</table>");
    assert!(!dom.contains("class=\"incident open\""), "{incidents}");
    assert_has(&incidents, "lasted");
    assert_has(&incidents, "journaled 1 · replayed 1");
    assert_has(&incidents, "restored 1 key");
    assert_eq!(redis.cmd(&["GET", "d:during"]), "x");
}

#[test]
fn the_page_shows_a_standalone_journal_refusing_writes_in_full() {
    let Some(browser) = chromium() else { return };
    let r = serve(None, "", &[("REDOUBT_JOURNAL_MAX_BYTES", "64KiB")]);
    let shots = shots_dir(&r, "standalone-refusing");
    let value = "v".repeat(4096);
    let refused = (0..64)
        .map(|i| send_command(r.port, &["SET", &format!("k{i}"), &value]))
        .find(|reply| reply != "+OK")
        .expect("a 64 KiB journal refuses writes before 256 KiB");
    assert!(refused.starts_with("-ERR journal full"), "{refused}");
    wait_for("the refusal sampled into /history", PATIENCE, || {
        json(r.admin, "/history")["totals"]["writes_refused"]["journal-full"] == 1.0
    });
    let why = json(r.admin, "/status")["journal"]["refusing"]
        .as_str()
        .expect("/status says why writes are refused")
        .to_string();
    assert!(why.starts_with("journal full ("), "{why}");

    let dom = open_page(
        browser,
        &shots,
        "standalone-refusing",
        &format!("http://127.0.0.1:{}/", r.admin),
    );
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Standalone — writes refused"
    );
    // The whole reason, to its last word, and the page still fits.
    assert_eq!(
        text_at(&dom, "refusing", "</div>"),
        format!("Writes are refused: {why}")
    );
    let refusals = text_at(&dom, "refusals", "</dl>");
    assert_has(&refusals, "writes refused: journal-full 1");
    assert_has(&text_at(&dom, "journal-bytes", "</div>"), "of 64.0 KiB");
    assert_has(&text_at(&dom, "replay-percent", "</div>"), "not used");
}

#[test]
fn with_a_token_a_browser_is_asked_for_it_and_basic_auth_opens_the_page() {
    let r = serve(None, "", &[("REDOUBT_ADMIN_TOKEN", "s3cret")]);
    let (code, head, _) = get(r.admin, "/", "");
    assert_eq!(code, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"redoubt\""),
        "{head}"
    );
    // "anyone:s3cret" and "anyone:wrong" in base64.
    let basic = "Authorization: Basic YW55b25lOnMzY3JldA==\r\n";
    let wrong = "Authorization: Basic YW55b25lOndyb25n\r\n";
    let (code, _, body) = get(r.admin, "/", basic);
    assert_eq!(code, 200);
    assert!(body.contains("<title>Redoubt</title>"), "{body}");
    for path in ["/status", "/incidents", "/history", "/metrics"] {
        assert_eq!(get(r.admin, path, basic).0, 200, "{path} with Basic");
        assert_eq!(
            get(r.admin, path, "Authorization: Bearer s3cret\r\n").0,
            200,
            "{path} with Bearer"
        );
        let (code, head, _) = get(r.admin, path, wrong);
        assert_eq!(code, 401, "{path} with a wrong password");
        assert!(
            !head.to_ascii_lowercase().contains("www-authenticate"),
            "only the page prompts: {head}"
        );
    }
    assert_eq!(get(r.admin, "/", wrong).0, 401);

    // The browser: credentials given once, its own requests to /status
    // and the rest carry them.
    let Some(browser) = chromium() else { return };
    let shots = shots_dir(&r, "token");
    let dom = open_page(
        browser,
        &shots,
        "with-token",
        &format!("http://anyone:s3cret@127.0.0.1:{}/", r.admin),
    );
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Standalone — serving every command from the local store"
    );
}

#[test]
fn a_corrupt_journal_refusal_is_shown_whole() {
    let Some(browser) = chromium() else { return };
    let tmp = tempfile::tempdir().unwrap();
    {
        let r = serve_in(tmp.path(), None, "", &[]);
        let value = "v".repeat(1000);
        for k in ["k1", "k2", "k3"] {
            assert_eq!(send_command(r.port, &["SET", k, &value]), "+OK");
        }
    }
    // A flipped byte in the middle record: not a torn tail (records
    // follow it), so the journal refuses writes until an operator acts.
    let segments: Vec<_> = std::fs::read_dir(tmp.path().join("data/journal"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segments[0], &bytes).unwrap();

    let r = serve_in(tmp.path(), None, "", &[]);
    let why = json(r.admin, "/status")["journal"]["refusing"]
        .as_str()
        .expect("a corrupt journal refuses writes")
        .to_string();
    assert!(why.contains("corrupt"), "{why}");
    let dom = open_page(
        browser,
        &shots_dir(&r, "corrupt-journal"),
        "corrupt-journal",
        &format!("http://127.0.0.1:{}/", r.admin),
    );
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Standalone — writes refused"
    );
    assert_eq!(
        text_at(&dom, "refusing", "</div>"),
        format!(
            "Writes are refused: {}",
            why.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    );
}

#[test]
fn without_local_keyspaces_the_page_says_commands_are_refused_while_redis_is_down() {
    let Some(browser) = chromium() else { return };
    let mut redis = RedisServer::new();
    let r = serve(Some(&redis.url()), "", &[]);
    wait_for("Redis up through Redoubt", PATIENCE, || {
        state(r.admin) == "up"
    });
    redis.kill();
    wait_for("Redoubt to see Redis down", PATIENCE, || {
        state(r.admin) == "down"
    });
    assert!(send_command(r.port, &["GET", "k"]).starts_with("-UNAVAILABLE"));
    let dom = open_page(
        browser,
        &shots_dir(&r, "no-keyspaces"),
        "down-no-keyspaces",
        &format!("http://127.0.0.1:{}/", r.admin),
    );
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Redis is down — commands are refused (no durable or cache keyspace)"
    );
    assert_has(&text_at(&dom, "state-detail", "</p>"), "connection refused");
    assert_eq!(text_at(&dom, "journal-depth", "</span>"), "none");
    assert_has(&text_at(&dom, "incidents", "</table>"), "ongoing");
}

/// Recovering with the replay under way, and a remediation attempt in the
/// incident: Redis (stopped, then continued) comes back with its data but
/// refuses writes (`min-replicas-to-write` with no replica), so the replay
/// pauses with two records left, then goes on once Redis takes writes.
#[test]
fn the_page_shows_a_replay_paused_and_the_remediation_tried() {
    let Some(browser) = chromium() else { return };
    let redis = RedisServer::new();
    let r = serve(
        Some(&redis.url()),
        "[replica]\nmode = \"off\"\n[[keyspace]]\npattern = \"d:*\"\npolicy = \"durable\"\n[remediation]\non_down = [\"true\"]\nafter_ms = 100\nmax_attempts = 1\n",
        &[],
    );
    let shots = shots_dir(&r, "replay-paused");
    let url = format!("http://127.0.0.1:{}/", r.admin);
    // Up, and the default user's permissions read: a durable write during
    // the outage is checked against them.
    wait_for("Redis up through Redoubt", PATIENCE, || {
        let s = json(r.admin, "/status");
        s["state"] == "up" && s["auth"]["users_with_known_permissions"] == 1
    });
    redis.pause();
    wait_for("Redoubt to see Redis down", PATIENCE, || {
        state(r.admin) == "down"
    });
    assert_eq!(send_command(r.port, &["SET", "d:1", "x"]), "+OK");
    assert_eq!(send_command(r.port, &["SET", "d:2", "y"]), "+OK");
    wait_for("the remediation attempt", PATIENCE, || {
        json(r.admin, "/incidents")["open"]["remediation"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    // Back with its data, refusing every write (NOREPLICAS): the setting
    // is sent while Redis is stopped, so it runs as soon as Redis goes
    // on, before Redoubt's prober has seen two good probes.
    let mut setting = TcpStream::connect(redis.addr()).unwrap();
    let args = ["CONFIG", "SET", "min-replicas-to-write", "1"];
    let mut raw = format!("*{}\r\n", args.len());
    for a in args {
        raw.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    setting.write_all(raw.as_bytes()).unwrap();
    redis.resume();
    wait_for("the replay paused", PATIENCE, || {
        let s = json(r.admin, "/status");
        s["state"] == "recovering" && s["journal"]["replay"]["paused"].is_string()
    });
    let dom = open_page(browser, &shots, "1-replay-paused", &url);
    assert_eq!(
        text_at(&dom, "state", "</h1>"),
        "Recovering — replay paused"
    );
    let detail = text_at(&dom, "replay-detail", "</div>");
    assert_has(&detail, "2 left");
    assert_has(&detail, "NOREPLICAS");
    let incidents = text_at(&dom, "incidents", "</table>");
    assert_has(&incidents, "remediation");

    redis.cmd(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    wait_for("Up with the journal drained", PATIENCE, || {
        let s = json(r.admin, "/status");
        s["state"] == "up" && s["journal"]["pending_commands"] == 0
    });
    assert_eq!(redis.cmd(&["GET", "d:2"]), "y");
}

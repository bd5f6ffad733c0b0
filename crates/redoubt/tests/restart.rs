//! A supervisor's restart: `kill -9` and start again at once, on the same
//! data dir and ports, while clients write. The killed process may still
//! be inside an fsync holding the data dir's lock; the new one must wait
//! for it instead of refusing, and nothing acknowledged may be lost.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::{free_port, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_redoubt");

/// Kill-and-restart rounds.
const ROUNDS: usize = 20;
/// Concurrent writers: with several, a kill usually lands while the
/// journal's writer thread is inside an fsync.
const WRITERS: usize = 4;
/// Acknowledged writes per round before the kill.
const WRITES_PER_ROUND: usize = 300;
/// Longer than the lock's patience with an exiting predecessor (30 s),
/// so a refusal shows as an exit, not as a timeout here.
const START_DEADLINE: Duration = Duration::from_secs(45);

/// A running Redoubt, killed and reaped on drop (a failing test leaves no
/// process behind).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts standalone Redoubt with `fsync = "always"` and waits until it
/// listens; panics with its log if it exits instead.
fn start(data: &Path, port: u16, admin: u16, log: &Path) -> Server {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--data-dir")
        .arg(data)
        .env_remove("REDOUBT_UPSTREAM")
        .env("REDOUBT_JOURNAL_FSYNC", "always")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the log file"))
        .spawn()
        .expect("spawn redoubt");
    let mut server = Server(child);
    // Its log, not a connection, says it is up: right after a kill the
    // port may still be the killed process's listener.
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("redoubt serving standalone") {
            break;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("redoubt exited ({status}) instead of starting:\n{text}");
        }
        assert!(
            start.elapsed() < START_DEADLINE,
            "redoubt did not start within {START_DEADLINE:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "redoubt said it serves but does not accept on port {port}"
    );
    server
}

/// Writers SETting distinct keys until their connection breaks; every
/// acknowledged (key, value) is recorded.
fn spawn_writers(
    port: u16,
    round: usize,
    acked: &Arc<Mutex<Vec<(String, String)>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (acked, stop) = (acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("redis url");
                let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
                    return;
                };
                let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (k, v) = (format!("r{round}:w{w}:{i}"), format!("v{round}.{w}.{i}"));
                    match redis::cmd("SET").arg(&k).arg(&v).query::<String>(&mut con) {
                        Ok(r) if r == "OK" => acked.lock().unwrap().push((k, v)),
                        // The kill: this write may or may not have been
                        // journaled, and was not acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged write reads back its value.
fn check_all_readable(port: u16, acked: &[(String, String)]) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    for chunk in acked.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for ((k, v), g) in chunk.iter().zip(got) {
            assert_eq!(
                g.as_deref(),
                Some(v.as_str()),
                "acknowledged write {k} lost"
            );
        }
    }
}

#[test]
fn restart_right_after_kill_9_comes_up_every_time_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (port, admin) = (free_port(), free_port());
    let log = |round: usize| -> PathBuf { dir.path().join(format!("redoubt-{round}.log")) };
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut server = start(&data, port, admin, &log(0));
    let mut waited_rounds = 0;
    for round in 0..ROUNDS {
        let before = acked.lock().unwrap().len();
        let stop = Arc::new(AtomicBool::new(false));
        let writers = spawn_writers(port, round, &acked, &stop);
        wait_for(
            "writes acknowledged this round",
            Duration::from_secs(60),
            || acked.lock().unwrap().len() >= before + WRITES_PER_ROUND,
        );
        // SIGKILL, and start the next one at once, as a supervisor would:
        // no wait for the old process to be gone.
        server.0.kill().expect("SIGKILL redoubt");
        let next = start(&data, port, admin, &log(round + 1));
        // Reaped only now, after the new one is up.
        drop(std::mem::replace(&mut server, next));
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }

        let text = std::fs::read_to_string(log(round + 1)).unwrap_or_default();
        if text.contains("waiting for it to release the lock") {
            waited_rounds += 1;
        }
        check_all_readable(port, &acked.lock().unwrap());
    }
    drop(server);
    eprintln!(
        "{ROUNDS} kill -9 restarts, {} acknowledged writes all readable; \
         {waited_rounds} restart(s) waited for the killed process to release the data dir",
        acked.lock().unwrap().len()
    );
}

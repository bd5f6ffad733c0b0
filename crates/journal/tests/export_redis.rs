//! `export_resp` output fed to a real `redis-cli --pipe` against a real
//! `redis-server` gives the journaled data, in the right databases, with
//! transactions applied.

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use journal::{Entry, Fsync, Journal, JournalConfig};
use test_support::RedisServer;

fn cmd(db: u32, args: &[&str]) -> Entry {
    Entry::command(
        db,
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect(),
        0,
    )
}

fn redis_cli(port: u16, db: u32, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "-n", &db.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn export_feeds_redis_cli_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let cfg = JournalConfig {
            fsync: Fsync::No,
            segment_bytes: 200,
            ..JournalConfig::default()
        };
        let (j, _) = Journal::open(tmp.path(), cfg).unwrap();
        j.append_blocking(cmd(0, &["SET", "a", "1"])).unwrap();
        j.append_blocking(cmd(3, &["SET", "b", "binary\r\nvalue"]))
            .unwrap();
        let tx = Entry {
            db: 3,
            commands: vec![
                vec![Bytes::from("INCR"), Bytes::from("c")],
                vec![Bytes::from("INCRBY"), Bytes::from("c"), Bytes::from("41")],
            ],
            time_ms: 0,
        };
        j.append_blocking(tx).unwrap();
        j.append_blocking(cmd(0, &["RPUSH", "l", "x", "y"]))
            .unwrap();
        j.append_blocking(cmd(0, &["PEXPIREAT", "a", "4102444800000"]))
            .unwrap();
        j.append_blocking(cmd(0, &["DEL", "l"])).unwrap();
        j.append_blocking(cmd(0, &["RPUSH", "l", "z"])).unwrap();
        assert!(j.segments().len() > 1, "the export spans segments");
    }
    let mut resp = Vec::new();
    let report = journal::export_resp(tmp.path(), &mut resp).unwrap();
    assert_eq!((report.entries, report.commands), (7, 8));
    assert!(report.corruption.is_none() && report.torn_tail.is_none());

    let redis = RedisServer::new();
    let mut pipe = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    pipe.stdin.take().unwrap().write_all(&resp).unwrap();
    let out = pipe.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // 8 commands + 3 SELECTs + MULTI + EXEC.
    assert!(text.contains("errors: 0, replies: 13"), "{text}");

    assert_eq!(redis_cli(redis.port(), 0, &["GET", "a"]), "1");
    assert_eq!(
        redis_cli(redis.port(), 0, &["PEXPIRETIME", "a"]),
        "4102444800000"
    );
    assert_eq!(redis_cli(redis.port(), 3, &["STRLEN", "b"]), "13");
    assert_eq!(redis_cli(redis.port(), 3, &["GET", "c"]), "42");
    assert_eq!(redis_cli(redis.port(), 0, &["LRANGE", "l", "0", "-1"]), "z");
    assert_eq!(
        redis_cli(redis.port(), 0, &["EXISTS", "b"]),
        "0",
        "db 3's key is not in db 0"
    );
}

//! Scripting behaviour that a reply comparison cannot show: the effects a
//! script journals (and that replaying them rebuilds its writes), BUSY and
//! SCRIPT KILL across sessions, and the caller's key hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use resp::Frame;
use store::{Executed, KeyAccess, KeyHook, Session, Store, StoreConfig};

fn args(v: &[&str]) -> Vec<Bytes> {
    v.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

async fn run(store: &Store, s: &mut Session, v: &[&str]) -> Executed {
    store.execute(s, args(v)).await
}

/// An effect's words, the command name upper-cased (a script's commands
/// are journaled as the script spelled them).
fn words(e: &store::Effect) -> Vec<String> {
    e.args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let w = String::from_utf8_lossy(a).into_owned();
            if i == 0 {
                w.to_ascii_uppercase()
            } else {
                w
            }
        })
        .collect()
}

fn error_text(f: &Frame) -> String {
    String::from_utf8_lossy(f.error_text().unwrap_or_default()).into_owned()
}

/// Replays `effects` on a fresh store and returns it.
fn replay(effects: &[store::Effect]) -> Store {
    let copy = Store::new(StoreConfig::default());
    for e in effects {
        let r = copy.apply(e.db, &e.args);
        assert!(!matches!(r, Frame::Error(_)), "{r:?} for {:?}", words(e));
    }
    copy
}

#[tokio::test]
async fn a_script_journals_its_commands_effects_as_one_transaction() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    let out = run(
        &store,
        &mut s,
        &[
            "EVAL",
            "redis.call('set', KEYS[1], ARGV[1], 'EX', 100); redis.call('incr', 'n'); redis.call('rpush', 'l', 'a', 'b'); redis.call('get', 'n'); return 'done'",
            "1",
            "k",
            "v",
        ],
    )
    .await;
    assert_eq!(out.reply, Frame::bulk("done"));
    assert!(out.atomic);
    let shown: Vec<Vec<String>> = out.effects.iter().map(words).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(shown[0][0], "SET");
    assert_eq!(shown[0][3], "PXAT", "relative expiry made absolute");
    assert_eq!(shown[1], ["INCR", "n"]);
    assert_eq!(shown[2], ["RPUSH", "l", "a", "b"]);
    let copy = replay(&out.effects);
    assert_eq!(
        copy.export(0, b"k").map(|(v, _)| v),
        store.export(0, b"k").map(|(v, _)| v)
    );
    assert_eq!(
        copy.export(0, b"l").map(|(v, _)| v),
        store.export(0, b"l").map(|(v, _)| v)
    );
    assert_eq!(
        copy.export(0, b"n").map(|(v, _)| v),
        store.export(0, b"n").map(|(v, _)| v)
    );

    // One write is not a transaction; a read journals nothing.
    let one = run(
        &store,
        &mut s,
        &["EVAL", "return redis.call('del', 'n')", "0"],
    )
    .await;
    assert_eq!(one.effects.len(), 1);
    assert!(!one.atomic);
    let read = run(
        &store,
        &mut s,
        &["EVAL", "return redis.call('get', 'k')", "0"],
    )
    .await;
    assert!(read.effects.is_empty());
}

#[tokio::test]
async fn a_script_failing_half_way_keeps_and_journals_its_earlier_writes() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(&store, &mut s, &["SET", "str", "x"]).await;
    let out = run(
        &store,
        &mut s,
        &[
            "EVAL",
            "redis.call('set', 'a', 1); redis.call('select', 1); redis.call('set', 'b', 2); redis.call('select', 0); redis.call('lpush', 'str', 'x'); redis.call('set', 'c', 3)",
            "0",
        ],
    )
    .await;
    assert!(
        error_text(&out.reply).starts_with("WRONGTYPE"),
        "{:?}",
        out.reply
    );
    let shown: Vec<(usize, Vec<String>)> = out.effects.iter().map(|e| (e.db, words(e))).collect();
    assert_eq!(
        shown,
        vec![
            (0, vec!["SET".to_string(), "a".into(), "1".into()]),
            (1, vec!["SET".to_string(), "b".into(), "2".into()]),
        ]
    );
    assert!(out.atomic);
    assert_eq!(s.db(), 0, "SELECT inside a script does not move the caller");
    assert!(store.export(0, b"c").is_none());
    let copy = replay(&out.effects);
    assert!(copy.export(0, b"a").is_some());
    assert!(copy.export(1, b"b").is_some());
}

#[tokio::test]
async fn scripts_inside_multi_keep_their_effects() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(&store, &mut s, &["MULTI"]).await;
    run(
        &store,
        &mut s,
        &[
            "EVAL",
            "redis.call('set', 'a', 1); redis.call('set', 'b', 2)",
            "0",
        ],
    )
    .await;
    run(&store, &mut s, &["SET", "c", "3"]).await;
    let out = run(&store, &mut s, &["EXEC"]).await;
    assert_eq!(out.effects.len(), 3);
    assert!(out.atomic);
}

fn thread_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

/// Runs `script` on its own thread (it holds the store while it runs).
fn spawn_script(store: &Store, script: &'static str) -> std::thread::JoinHandle<Executed> {
    spawn_command(store, &["EVAL", script, "0"])
}

/// Runs `cmd` (a script that may not end) on a client of its own thread.
fn spawn_command(store: &Store, cmd: &[&str]) -> std::thread::JoinHandle<Executed> {
    let (store, cmd) = (store.clone(), args(cmd));
    std::thread::spawn(move || {
        let rt = thread_runtime();
        let mut s = store.session();
        rt.block_on(store.execute(&mut s, cmd))
    })
}

/// Polls with PING until the running EVAL makes it BUSY.
async fn wait_busy(store: &Store, s: &mut Session) {
    wait_busy_with(
        store,
        s,
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    )
    .await
}

/// Polls with PING until the running script makes it BUSY with `text`.
async fn wait_busy_with(store: &Store, s: &mut Session, text: &str) {
    for _ in 0..500 {
        let r = run(store, s, &["PING"]).await.reply;
        if error_text(&r).starts_with("BUSY") {
            assert_eq!(error_text(&r), text);
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never BUSY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_script_makes_others_busy_until_script_kill() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    assert_eq!(
        run(
            &store,
            &mut s,
            &["CONFIG", "SET", "busy-reply-threshold", "20"]
        )
        .await
        .reply,
        Frame::simple("OK")
    );
    assert_eq!(
        run(&store, &mut s, &["CONFIG", "GET", "lua-time-limit"])
            .await
            .reply,
        Frame::Array(vec![Frame::bulk("lua-time-limit"), Frame::bulk("20")])
    );
    assert_eq!(
        error_text(&run(&store, &mut s, &["SCRIPT", "KILL"]).await.reply),
        "NOTBUSY No scripts in execution right now."
    );
    let script = spawn_script(&store, "while true do end");
    wait_busy(&store, &mut s).await;
    assert_eq!(
        error_text(&run(&store, &mut s, &["FUNCTION", "KILL"]).await.reply),
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    );
    assert_eq!(
        run(&store, &mut s, &["SCRIPT", "KILL"]).await.reply,
        Frame::simple("OK")
    );
    let out = match script.join() {
        Ok(o) => o,
        Err(_) => panic!("script thread panicked"),
    };
    assert!(
        error_text(&out.reply)
            .starts_with("ERR Script killed by user with SCRIPT KILL... script: "),
        "{:?}",
        out.reply
    );
    assert!(
        error_text(&out.reply).ends_with("on @user_script:1."),
        "{:?}",
        out.reply
    );
    assert_eq!(
        run(&store, &mut s, &["PING"]).await.reply,
        Frame::simple("PONG")
    );

    // pcall cannot swallow the kill.
    let script = spawn_script(
        &store,
        "while true do pcall(function() while true do end end) end",
    );
    wait_busy(&store, &mut s).await;
    assert_eq!(
        run(&store, &mut s, &["SCRIPT", "KILL"]).await.reply,
        Frame::simple("OK")
    );
    let out = match script.join() {
        Ok(o) => o,
        Err(_) => panic!("script thread panicked"),
    };
    assert!(
        error_text(&out.reply).starts_with("ERR Script killed"),
        "{:?}",
        out.reply
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_script_that_wrote_cannot_be_killed() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(
        &store,
        &mut s,
        &["CONFIG", "SET", "busy-reply-threshold", "10"],
    )
    .await;
    let script = spawn_script(
        &store,
        "redis.call('set', 'x', 1); local i = 0; while i < 30000000 do i = i + 1 end; return i",
    );
    wait_busy(&store, &mut s).await;
    assert!(
        error_text(&run(&store, &mut s, &["SCRIPT", "KILL"]).await.reply)
            .starts_with("UNKILLABLE Sorry the script already executed write commands")
    );
    let out = match script.join() {
        Ok(o) => o,
        Err(_) => panic!("script thread panicked"),
    };
    assert_eq!(out.reply, Frame::Integer(30_000_000));
    assert_eq!(out.effects.len(), 1);
}

fn deny_prefix(prefix: &'static str, calls: Arc<AtomicUsize>) -> KeyHook {
    Arc::new(move |_db, key: &[u8]| {
        calls.fetch_add(1, Ordering::SeqCst);
        if key.starts_with(prefix.as_bytes()) {
            KeyAccess::Deny("TRYAGAIN key is not available locally".into())
        } else {
            KeyAccess::Local
        }
    })
}

#[tokio::test]
async fn a_denied_key_undoes_the_whole_script() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(&store, &mut s, &["SET", "a", "old"]).await;
    run(&store, &mut s, &["RPUSH", "l", "x"]).await;
    let before = store.used_memory();
    let calls = Arc::new(AtomicUsize::new(0));
    s.set_key_hook(Some(deny_prefix("remote:", calls.clone())));
    let out = run(
        &store,
        &mut s,
        &[
            "EVAL",
            "redis.call('set', 'a', 'new'); redis.call('get', 'a'); redis.call('rpush', 'l', 'y'); redis.call('set', 'fresh', 1); return redis.pcall('get', 'remote:x')",
            "0",
        ],
    )
    .await;
    assert_eq!(
        out.reply,
        Frame::error("TRYAGAIN key is not available locally")
    );
    assert!(out.effects.is_empty());
    // Asked once per key per run: a, l, fresh, remote:x.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        run(&store, &mut s, &["GET", "a"]).await.reply,
        Frame::bulk("old")
    );
    assert_eq!(
        run(&store, &mut s, &["LRANGE", "l", "0", "-1"]).await.reply,
        Frame::Array(vec![Frame::bulk("x")])
    );
    assert_eq!(
        run(&store, &mut s, &["EXISTS", "fresh"]).await.reply,
        Frame::Integer(0)
    );
    assert_eq!(store.used_memory(), before);

    // Without touching a denied key the script runs as usual.
    let ok = run(
        &store,
        &mut s,
        &["EVAL", "return redis.call('set', 'a', 'v2')", "0"],
    )
    .await;
    assert_eq!(ok.reply, Frame::simple("OK"));
    assert_eq!(ok.effects.len(), 1);
}

#[tokio::test]
async fn a_seeding_hook_fills_keys_before_the_script_reads_them() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(&store, &mut s, &["SET", "gone", "local"]).await;
    let hook: KeyHook = Arc::new(|_db, key: &[u8]| match key {
        b"s" => KeyAccess::Seed(Some((
            Arc::new(store::value::Value::Str(Bytes::from_static(b"seeded"))),
            None,
        ))),
        b"gone" => KeyAccess::Seed(None),
        _ => KeyAccess::Local,
    });
    s.set_key_hook(Some(hook));
    let out = run(
        &store,
        &mut s,
        &[
            "EVAL",
            "return {redis.call('get', 's'), redis.call('exists', 'gone'), redis.call('append', 's', '!')}",
            "0",
        ],
    )
    .await;
    assert_eq!(
        out.reply,
        Frame::Array(vec![
            Frame::bulk("seeded"),
            Frame::Integer(0),
            Frame::Integer(7)
        ])
    );
    s.set_key_hook(None);
    assert_eq!(
        run(&store, &mut s, &["GET", "s"]).await.reply,
        Frame::bulk("seeded!")
    );
}

#[tokio::test]
async fn functions_are_journaled_and_survive_replay_snapshots_and_dump() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    let lib = "#!lua name=lib\nredis.register_function('setk', function(keys, args) return redis.call('set', keys[1], args[1]) end)";
    let load = run(&store, &mut s, &["FUNCTION", "LOAD", lib]).await;
    assert_eq!(load.reply, Frame::bulk("lib"));
    assert_eq!(load.effects.len(), 1, "FUNCTION LOAD is an effect itself");
    let call = run(&store, &mut s, &["FCALL", "setk", "1", "k", "v"]).await;
    assert_eq!(call.reply, Frame::simple("OK"));
    let shown: Vec<Vec<String>> = call.effects.iter().map(words).collect();
    assert_eq!(shown, vec![vec!["SET".to_string(), "k".into(), "v".into()]]);

    // The journal rebuilds the library and the data.
    let mut journal = load.effects.clone();
    journal.extend(call.effects.clone());
    let copy = replay(&journal);
    let mut cs = copy.session();
    assert_eq!(
        run(&copy, &mut cs, &["FCALL", "setk", "1", "k2", "w"])
            .await
            .reply,
        Frame::simple("OK")
    );

    // So does compaction's snapshot.
    let snap: Vec<store::Effect> = store.snapshot().commands().collect();
    assert_eq!(words(&snap[0])[..3], ["FUNCTION", "LOAD", "REPLACE"]);
    let copy = replay(&snap);
    let mut cs = copy.session();
    assert_eq!(
        run(&copy, &mut cs, &["GET", "k"]).await.reply,
        Frame::bulk("v")
    );
    assert_eq!(
        run(&copy, &mut cs, &["FCALL", "setk", "1", "k", "x"])
            .await
            .reply,
        Frame::simple("OK")
    );

    // DUMP and RESTORE round-trip.
    let dump = run(&store, &mut s, &["FUNCTION", "DUMP"]).await.reply;
    let Frame::Bulk(payload) = dump else {
        panic!("{dump:?}")
    };
    run(&store, &mut s, &["FUNCTION", "FLUSH"]).await;
    assert!(error_text(
        &run(&store, &mut s, &["FCALL", "setk", "1", "k", "v"])
            .await
            .reply
    )
    .starts_with("ERR Function not found"));
    let restore = store
        .execute(
            &mut s,
            vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"RESTORE"),
                payload.clone(),
            ],
        )
        .await;
    assert_eq!(restore.reply, Frame::simple("OK"));
    assert_eq!(restore.effects.len(), 1);
    let again = store
        .execute(
            &mut s,
            vec![
                Bytes::from_static(b"FUNCTION"),
                Bytes::from_static(b"RESTORE"),
                payload,
            ],
        )
        .await;
    assert_eq!(again.reply, Frame::error("ERR Library lib already exists"));
    assert_eq!(
        run(&store, &mut s, &["FCALL", "setk", "1", "k", "v"])
            .await
            .reply,
        Frame::simple("OK")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_function_is_stopped_by_function_kill() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(
        &store,
        &mut s,
        &["CONFIG", "SET", "busy-reply-threshold", "20"],
    )
    .await;
    let lib = "#!lua name=slow\nredis.register_function('spin', function() while true do end end)";
    assert_eq!(
        run(&store, &mut s, &["FUNCTION", "LOAD", lib]).await.reply,
        Frame::bulk("slow")
    );
    // Twice: a killed function leaves the next one just as killable.
    for _ in 0..2 {
        let runner = spawn_command(&store, &["FCALL", "spin", "0"]);
        let busy = "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.";
        wait_busy_with(&store, &mut s, busy).await;
        assert_eq!(
            error_text(&run(&store, &mut s, &["SCRIPT", "KILL"]).await.reply),
            busy
        );
        assert_eq!(
            run(&store, &mut s, &["FUNCTION", "KILL"]).await.reply,
            Frame::simple("OK")
        );
        let out = match runner.join() {
            Ok(o) => o,
            Err(_) => panic!("function thread panicked"),
        };
        assert_eq!(
            error_text(&out.reply),
            "ERR Script killed by user with SCRIPT KILL... script: spin, on @user_function:2."
        );
    }
}

#[tokio::test]
async fn a_refusal_after_a_seed_puts_the_seeded_key_back_too() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(&store, &mut s, &["SET", "s", "orig", "PX", "100000"]).await;
    run(&store, &mut s, &["SET", "gone", "here"]).await;
    let before = store.used_memory();
    let expiry = store.export(0, b"s").and_then(|(_, at)| at);
    let hook: KeyHook = Arc::new(|_db, key: &[u8]| match key {
        b"s" => KeyAccess::Seed(Some((
            Arc::new(store::value::Value::Str(Bytes::from_static(b"seeded"))),
            None,
        ))),
        b"gone" => KeyAccess::Seed(None),
        k if k.starts_with(b"remote:") => KeyAccess::Deny("TRYAGAIN not here".into()),
        _ => KeyAccess::Local,
    });
    s.set_key_hook(Some(hook));
    let out = run(
        &store,
        &mut s,
        &[
            "EVAL",
            "redis.call('append', 's', '!'); redis.call('set', 'gone', 'new'); return redis.call('get', 'remote:x')",
            "0",
        ],
    )
    .await;
    assert_eq!(out.reply, Frame::error("TRYAGAIN not here"));
    assert!(out.effects.is_empty());
    s.set_key_hook(None);
    assert_eq!(
        run(&store, &mut s, &["GET", "s"]).await.reply,
        Frame::bulk("orig")
    );
    assert_eq!(store.export(0, b"s").and_then(|(_, at)| at), expiry);
    assert_eq!(
        run(&store, &mut s, &["GET", "gone"]).await.reply,
        Frame::bulk("here")
    );
    assert_eq!(store.used_memory(), before);
}

/// FUNCTION STATS is answered while a function is busy, naming it (Redis
/// flags it allow-busy; Redis's unit/functions "test function kill"
/// reads it before sending FUNCTION KILL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_stats_answers_while_a_function_is_busy() {
    let store = Store::new(StoreConfig::default());
    let mut s = store.session();
    run(
        &store,
        &mut s,
        &["CONFIG", "SET", "busy-reply-threshold", "10"],
    )
    .await;
    let lib = "#!lua name=test\nredis.register_function('test', function(KEYS, ARGV) local a = 1 while true do a = a + 1 end end)";
    run(&store, &mut s, &["FUNCTION", "LOAD", lib]).await;
    let caller = spawn_command(&store, &["FCALL", "test", "0"]);
    wait_busy_with(
        &store,
        &mut s,
        "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
    )
    .await;
    let stats = run(&store, &mut s, &["FUNCTION", "STATS"]).await.reply;
    // Killed before any assertion, so a failure cannot leave it running.
    let killed = run(&store, &mut s, &["FUNCTION", "KILL"]).await.reply;
    let text = format!("{stats:?}");
    assert!(
        text.contains(r#"Bulk(b"name"), Bulk(b"test"), Bulk(b"command"), Array([Bulk(b"FCALL"), Bulk(b"test"), Bulk(b"0")]), Bulk(b"duration_ms"), Integer("#)
            && text.contains(r#"Bulk(b"libraries_count"), Integer(1), Bulk(b"functions_count"), Integer(1)"#),
        "{text}"
    );
    assert_eq!(killed, Frame::simple("OK"));
    let out = match caller.join() {
        Ok(o) => o,
        Err(_) => panic!("caller thread panicked"),
    };
    assert!(out.reply.is_error());
    assert_eq!(
        run(&store, &mut s, &["PING"]).await.reply,
        Frame::simple("PONG")
    );
}

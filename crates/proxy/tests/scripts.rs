//! Scripts through an outage: the scripts clients sent are remembered, a
//! Redis that comes back without its script cache gets them again, and
//! (with the replica's exact copy) scripts on durable keys run locally.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

fn keyspaces() -> Keyspaces {
    Keyspaces::new(vec![("bull:*".into(), Policy::Durable)])
}

const INCR_BY_ARGV: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_restarts_empty_gets_the_scripts_clients_sent_again() {
    let mut redis = RedisServer::start(&[]);
    let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), false).await;
    s.wait_knows("default");
    let mut c = s.f.raw().await;
    assert_eq!(
        c.cmd(&["EVAL", INCR_BY_ARGV, "1", "counter", "2"]).await,
        Frame::Integer(2)
    );
    let loaded = c.cmd(&["SCRIPT", "LOAD", "return 'loaded'"]).await;
    let Frame::Bulk(sha_loaded) = loaded else {
        panic!("SCRIPT LOAD answers a SHA: {loaded:?}")
    };
    let sha_loaded = String::from_utf8(sha_loaded.to_vec()).unwrap();
    let sha_eval = redis.cmd(&["SCRIPT", "LOAD", INCR_BY_ARGV]);
    assert_eq!(s.outage.scripts().len(), 2);

    // Redis restarts with an empty script cache, as every restart does.
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    redis.start_again();
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    test_support::wait_for(
        "the scripts to be loaded again",
        Duration::from_secs(10),
        || {
            redis
                .cmd_raw(&["EVALSHA", &sha_loaded, "0"])
                .ok()
                .as_deref()
                == Some("loaded")
        },
    );
    assert_eq!(
        redis
            .cmd_raw(&["EVALSHA", &sha_eval, "1", "probe", "0"])
            .unwrap(),
        ":0",
        "every remembered script is loaded, straight to Redis too"
    );
    // A client that only knows the SHA is served, through Redoubt too.
    assert_eq!(
        c.cmd(&["EVALSHA", &sha_eval, "1", "counter", "3"]).await,
        Frame::Integer(3)
    );
    assert_eq!(
        c.cmd(&["EVALSHA", &sha_loaded, "0"]).await,
        Frame::bulk("loaded")
    );
}

/// A producer's script, as BullMQ's `addJob` does it: a new id from a
/// counter, the job's hash under a key built from it (not declared), and
/// the id pushed on the wait list.
const ADD_JOB: &str = "local id = redis.call('INCR', KEYS[1]) \
redis.call('HSET', KEYS[2] .. id, 'data', ARGV[1], 'state', 'waiting') \
redis.call('LPUSH', KEYS[3], id) \
return id";

/// A worker's script: take the oldest waiting job and mark it active.
const TAKE_JOB: &str = "local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) \
if id then redis.call('HSET', KEYS[3] .. id, 'state', 'active') end \
return id";

/// Writes a durable key, then one outside the durable keyspaces.
const STRAYS: &str = "redis.call('SET', KEYS[1], 'written') \
redis.call('SET', ARGV[1], 'x') \
return 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_scripts_run_on_the_exact_copy_during_an_outage_and_replay_once() {
    let mut redis = aof_redis();
    let s = start_local(&redis.url(), keyspaces(), "q", Default::default(), false).await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    let mut c = s.f.raw().await;
    let load = |f: Frame| match f {
        Frame::Bulk(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("SCRIPT LOAD answers a SHA: {other:?}"),
    };
    let add = load(c.cmd(&["SCRIPT", "LOAD", ADD_JOB]).await);
    let take = load(c.cmd(&["SCRIPT", "LOAD", TAKE_JOB]).await);
    let keys_add = ["3", "bull:q:id", "bull:q:", "bull:q:wait"];
    let keys_take = ["3", "bull:q:wait", "bull:q:active", "bull:q:"];
    let evalsha = |sha: &str, keys: &[&str], argv: &[&str]| {
        let mut v = vec!["EVALSHA".to_string(), sha.to_string()];
        v.extend(keys.iter().map(|s| s.to_string()));
        v.extend(argv.iter().map(|s| s.to_string()));
        v
    };
    for i in 1..=3 {
        let cmd = evalsha(&add, &keys_add, &[&format!("job-{i}")]);
        let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        assert_eq!(c.cmd(&cmd).await, Frame::Integer(i));
    }
    let cmd = evalsha(&take, &keys_take, &[]);
    let take_cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
    assert_eq!(c.cmd(&take_cmd).await, Frame::bulk("1"));
    wait_caught_up(&redis, &replica).await;

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Producers go on: ids continue from Redis's counter, not from 1.
    for i in 4..=5 {
        let cmd = evalsha(&add, &keys_add, &[&format!("job-{i}")]);
        let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        assert_eq!(c.cmd(&cmd).await, Frame::Integer(i), "job {i}");
    }
    // The worker goes on with the oldest waiting job.
    assert_eq!(c.cmd(&take_cmd).await, Frame::bulk("2"));
    assert_eq!(
        c.cmd(&["HGET", "bull:q:2", "state"]).await,
        Frame::bulk("active")
    );
    assert_eq!(
        c.cmd(&["HGET", "bull:q:5", "data"]).await,
        Frame::bulk("job-5")
    );
    // A script that strays outside the durable keyspaces is refused whole:
    // its first write is undone and nothing is journaled.
    let pending = s.journal.pending_entries();
    let refused = c
        .cmd(&["EVAL", STRAYS, "1", "bull:q:flag", "other:x"])
        .await;
    let text = err_text(&refused);
    assert!(
        text.starts_with("UNAVAILABLE") && text.contains("other:x"),
        "{text}"
    );
    assert_eq!(c.cmd(&["GET", "bull:q:flag"]).await, Frame::NullBulk);
    assert_eq!(s.journal.pending_entries(), pending);
    // A script never seen cannot run by its SHA: the client sends EVAL.
    let unknown = c
        .cmd(&["EVALSHA", "0123456789012345678901234567890123456789", "0"])
        .await;
    assert_eq!(
        err_text(&unknown),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('GET', KEYS[1])",
            "1",
            "bull:q:id"
        ])
        .await,
        Frame::bulk("5")
    );

    redis.start_again();
    test_support::wait_for("the replay", Duration::from_secs(30), || {
        s.journal.pending_entries() == 0
    });
    // Redis has every job once, in order, and the worker's move.
    assert_eq!(redis.cmd(&["GET", "bull:q:id"]), "5");
    assert_eq!(redis.cmd(&["LLEN", "bull:q:wait"]), ":3");
    assert_eq!(redis.cmd(&["LLEN", "bull:q:active"]), ":2");
    assert_eq!(redis.cmd(&["RPOP", "bull:q:wait"]), "3");
    assert_eq!(redis.cmd(&["HGET", "bull:q:5", "data"]), "job-5");
    assert_eq!(redis.cmd(&["HGET", "bull:q:2", "state"]), "active");
    assert_eq!(redis.cmd(&["EXISTS", "bull:q:flag", "other:x"]), ":0");
    // And the next job continues the sequence, through Redis.
    let cmd = evalsha(&add, &keys_add, &["job-6"]);
    let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
    assert_eq!(c.cmd(&cmd).await, Frame::Integer(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redoubts_sharing_a_queue_never_hand_out_the_same_job_id() {
    use proxy::writer::Writer;
    let mut redis = aof_redis();
    let instance = |node: &'static str, writer: std::sync::Arc<Writer>| {
        let url = redis.url();
        async move {
            let s = start_local(&url, keyspaces(), node, Default::default(), false).await;
            s.wait_knows("default");
            attach_replica(&s, &url, keyspaces()).await;
            writer.spawn_lease(
                upstream::UpstreamUrl::parse(&url).unwrap(),
                node.into(),
                s.f.health.clone(),
                {
                    let j = s.journal.clone();
                    move || j.pending_entries() > 0
                },
            );
            s.outage.attach_writer(writer);
            s
        }
    };
    let (wa, wb) = (Writer::alone(), Writer::alone());
    let a = instance("node-a", wa.clone()).await;
    test_support::wait_for("node-a to hold the lease", Duration::from_secs(5), || {
        redis
            .cmd(&["GET", proxy::writer::LEASE_KEY])
            .starts_with("node-a ")
    });
    let b = instance("node-b", wb.clone()).await;
    test_support::wait_for(
        "node-b to see the lease taken",
        Duration::from_secs(5),
        || !wb.holds(),
    );
    let (mut ca, mut cb) = (a.f.raw().await, b.f.raw().await);
    let add = |n: &str| {
        vec![
            "EVAL".to_string(),
            ADD_JOB.to_string(),
            "3".into(),
            "bull:q:id".into(),
            "bull:q:".into(),
            "bull:q:wait".into(),
            n.to_string(),
        ]
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let cmd = add(&format!("before-{i}"));
        let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        ids.push(c.cmd(&cmd).await);
    }

    redis.kill();
    a.f.wait_state(State::Down, Duration::from_secs(5)).await;
    b.f.wait_state(State::Down, Duration::from_secs(5)).await;
    for i in 0..4 {
        let cmd = add(&format!("during-{i}"));
        let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
        // The lease holder adds; the other refuses rather than hand out
        // an id the holder may hand out too.
        ids.push(ca.cmd(&cmd).await);
        let refused = cb.cmd(&cmd).await;
        let text = err_text(&refused);
        assert!(text.starts_with("UNAVAILABLE"), "{text}");
    }
    assert_eq!(
        ids,
        (1..=8).map(Frame::Integer).collect::<Vec<_>>(),
        "ids continue from Redis's counter, each handed out once"
    );
    redis.start_again();
    test_support::wait_for("node-a's replay", Duration::from_secs(30), || {
        a.journal.pending_entries() == 0
    });
    assert_eq!(b.journal.pending_entries(), 0, "node-b journaled nothing");
    assert_eq!(redis.cmd(&["GET", "bull:q:id"]), "8");
    assert_eq!(redis.cmd(&["LLEN", "bull:q:wait"]), ":8");
    assert_eq!(redis.cmd(&["HGET", "bull:q:8", "data"]), "during-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_during_an_outage_may_touch_only_what_its_user_may() {
    let mut redis = aof_redis();
    redis.cmd(&["ACL", "SETUSER", "app", "on", ">pw", "~bull:q:*", "+@all"]);
    redis.cmd(&["SET", "bull:other:secret", "not app's"]);
    let s = start_local(&redis.url(), keyspaces(), "acl", Default::default(), false).await;
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    let mut c = s.f.raw().await;
    assert_eq!(c.cmd(&["AUTH", "app", "pw"]).await, Frame::simple("OK"));
    // While Up, Redis judges the script's GET of a key app may not read.
    let reads_other = "redis.call('SET', KEYS[1], 'x') return redis.call('GET', ARGV[1])";
    let up = err_text(
        &c.cmd(&["EVAL", reads_other, "1", "bull:q:a", "bull:other:secret"])
            .await,
    );
    assert!(up.contains("can't access at least one of the keys"), "{up}");
    s.wait_knows("app");
    redis.cmd(&["DEL", "bull:q:a"]);
    wait_caught_up(&redis, &replica).await;

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Touched, not declared: that command fails as in Redis, in its words
    // (the write before it stands, as in Redis).
    let down = err_text(
        &c.cmd(&["EVAL", reads_other, "1", "bull:q:a", "bull:other:secret"])
            .await,
    );
    assert_eq!(down, up);
    assert_eq!(c.cmd(&["GET", "bull:q:a"]).await, Frame::bulk("x"));
    // Declared: refused before it runs.
    let declared = err_text(
        &c.cmd(&[
            "EVAL",
            "return redis.call('GET', KEYS[1])",
            "1",
            "bull:other:secret",
        ])
        .await,
    );
    assert!(declared.starts_with("NOPERM"), "{declared}");
    // What app may touch runs.
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('INCR', KEYS[1])",
            "1",
            "bull:q:n"
        ])
        .await,
        Frame::Integer(1)
    );
}

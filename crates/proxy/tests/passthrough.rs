//! Pass-through correctness against a real redis-server, with redis-rs and
//! raw RESP.

mod common;

use common::*;
use redis::AsyncCommands;
use resp::Frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_types_round_trip_through_the_proxy() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut c = f.client().await;
    let _: () = c.set("s", "v").await.unwrap();
    assert_eq!(c.get::<_, String>("s").await.unwrap(), "v");
    assert_eq!(c.incr::<_, _, i64>("n", 5).await.unwrap(), 5);
    let _: () = c
        .hset_multiple("h", &[("a", "1"), ("b", "2")])
        .await
        .unwrap();
    assert_eq!(c.hget::<_, _, String>("h", "b").await.unwrap(), "2");
    let _: () = c.rpush("l", &["x", "y", "z"]).await.unwrap();
    assert_eq!(
        c.lrange::<_, Vec<String>>("l", 0, -1).await.unwrap(),
        ["x", "y", "z"]
    );
    let _: () = c.sadd("set", &["m1", "m2"]).await.unwrap();
    assert_eq!(c.scard::<_, i64>("set").await.unwrap(), 2);
    let _: () = c
        .zadd_multiple("z", &[(2.0, "b"), (1.0, "a")])
        .await
        .unwrap();
    assert_eq!(
        c.zrange::<_, Vec<String>>("z", 0, -1).await.unwrap(),
        ["a", "b"]
    );
    // The data really is in Redis, not somewhere in between.
    assert_eq!(redis.cmd(&["GET", "s"]), "v");
    assert_eq!(redis.cmd(&["LLEN", "l"]), ":3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_transactions_and_watch() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut c = f.client().await;
    let v: i64 = redis::cmd("EVAL")
        .arg("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        .arg(1)
        .arg("e")
        .arg(7)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, 7);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 42")
        .query_async(&mut c)
        .await
        .unwrap();
    let v: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(0)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, 42);

    let mut r = f.raw().await;
    assert_eq!(r.cmd(&["MULTI"]).await, Frame::simple("OK"));
    assert_eq!(r.cmd(&["INCR", "t"]).await, Frame::simple("QUEUED"));
    assert_eq!(r.cmd(&["INCR", "t"]).await, Frame::simple("QUEUED"));
    assert_eq!(
        r.cmd(&["EXEC"]).await,
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)])
    );
    // Arity errors abort the transaction, as in Redis.
    r.cmd(&["MULTI"]).await;
    assert!(err_text(&r.cmd(&["GET"]).await).contains("wrong number of arguments"));
    assert!(err_text(&r.cmd(&["EXEC"]).await).starts_with("EXECABORT"));

    // WATCH: a concurrent change makes EXEC return nil.
    assert_eq!(r.cmd(&["WATCH", "w"]).await, Frame::simple("OK"));
    redis.cmd(&["SET", "w", "changed"]);
    r.cmd(&["MULTI"]).await;
    r.cmd(&["SET", "w", "mine"]).await;
    assert_eq!(r.cmd(&["EXEC"]).await, Frame::NullArray);
    assert_eq!(redis.cmd(&["GET", "w"]), "changed");
    // And without interference it commits.
    r.cmd(&["WATCH", "w"]).await;
    r.cmd(&["MULTI"]).await;
    r.cmd(&["SET", "w", "mine"]).await;
    assert_eq!(
        r.cmd(&["EXEC"]).await,
        Frame::Array(vec![Frame::simple("OK")])
    );
    assert_eq!(redis.cmd(&["GET", "w"]), "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blpop_is_woken_by_a_push_from_another_client() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut waiter = f.raw().await;
    let addr = f.addr();
    let pusher = tokio::spawn(async move {
        let mut p = Raw::connect(&addr).await;
        // Push only once the BLPOP is really blocked in Redis.
        loop {
            if let Frame::Integer(n) = p
                .cmd(&["INFO", "clients"])
                .await
                .as_bytes()
                .map(|b| {
                    let t = String::from_utf8_lossy(b).to_string();
                    let n = t
                        .lines()
                        .find_map(|l| l.strip_prefix("blocked_clients:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    Frame::Integer(n)
                })
                .unwrap_or(Frame::Integer(0))
            {
                if n > 0 {
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        p.cmd(&["RPUSH", "q", "job"]).await
    });
    let got = waiter.cmd(&["BLPOP", "q", "5"]).await;
    assert_eq!(
        got,
        Frame::Array(vec![Frame::bulk("q"), Frame::bulk("job")])
    );
    pusher.await.unwrap();
    // A timed-out BLPOP answers nil within its block time.
    assert_eq!(
        waiter.cmd(&["BLPOP", "empty", "0.1"]).await,
        Frame::NullArray
    );
    // And the session still works normally afterwards.
    assert_eq!(waiter.cmd(&["PING"]).await, Frame::simple("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_receives_published_messages() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut sub = f.raw().await;
    let ack = sub.cmd(&["SUBSCRIBE", "news"]).await;
    assert_eq!(
        ack,
        Frame::Array(vec![
            Frame::bulk("subscribe"),
            Frame::bulk("news"),
            Frame::Integer(1)
        ])
    );
    let mut c = f.client().await;
    let receivers: i64 = c.publish("news", "hello").await.unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(
        sub.read().await.unwrap(),
        Frame::Array(vec![
            Frame::bulk("message"),
            Frame::bulk("news"),
            Frame::bulk("hello")
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_setname_and_hello3_are_per_session() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut a = f.raw().await;
    let mut b = f.raw().await;
    assert_eq!(a.cmd(&["SELECT", "3"]).await, Frame::simple("OK"));
    assert_eq!(a.cmd(&["SET", "k", "in3"]).await, Frame::simple("OK"));
    assert_eq!(b.cmd(&["SET", "k", "in0"]).await, Frame::simple("OK"));
    assert_eq!(redis.cmd(&["GET", "k"]), "in0");
    let mut r3 = std::process::Command::new("redis-cli");
    let out = r3
        .args(["-p", &redis.port().to_string(), "-n", "3", "GET", "k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in3");
    assert_eq!(
        err_text(&a.cmd(&["SELECT", "99"]).await),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err_text(&a.cmd(&["SELECT", "x"]).await),
        "ERR value is not an integer or out of range"
    );

    assert_eq!(
        a.cmd(&["CLIENT", "SETNAME", "alpha"]).await,
        Frame::simple("OK")
    );
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]).await, Frame::bulk("alpha"));
    assert_eq!(b.cmd(&["CLIENT", "GETNAME"]).await, Frame::NullBulk);
    let ida = a.cmd(&["CLIENT", "ID"]).await;
    let idb = b.cmd(&["CLIENT", "ID"]).await;
    assert_ne!(ida, idb);
    // CLIENT LIST shows Redoubt's clients, names included (tools such as
    // BullMQ find their connections by name), not its pooled connections.
    let list = String::from_utf8(
        b.cmd(&["CLIENT", "LIST"])
            .await
            .as_bytes()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("name=alpha") && l.contains("db=3")),
        "{list}"
    );
    let Frame::Integer(id) = ida else {
        panic!("CLIENT ID is an integer")
    };
    let only = b.cmd(&["CLIENT", "LIST", "ID", &id.to_string()]).await;
    assert!(String::from_utf8_lossy(only.as_bytes().unwrap()).starts_with(&format!("id={id} ")));

    let hello = a.cmd(&["HELLO", "3"]).await;
    let Frame::Map(pairs) = hello else {
        panic!("HELLO 3 answers a map, got {hello:?}")
    };
    assert!(pairs.contains(&(Frame::bulk("proto"), Frame::Integer(3))));
    // RESP3 replies now come through natively: a hash is a map.
    a.cmd(&["HSET", "h", "f", "v"]).await;
    assert_eq!(
        a.cmd(&["HGETALL", "h"]).await,
        Frame::Map(vec![(Frame::bulk("f"), Frame::bulk("v"))])
    );
    // b is still on db 0 and RESP2: it sees nothing there, and a flat
    // array once it selects db 3.
    assert_eq!(b.cmd(&["HGETALL", "h"]).await, Frame::Array(vec![]));
    b.cmd(&["SELECT", "3"]).await;
    assert_eq!(
        b.cmd(&["HGETALL", "h"]).await,
        Frame::Array(vec![Frame::bulk("f"), Frame::bulk("v")])
    );
    assert!(err_text(&a.cmd(&["HELLO", "4"]).await).starts_with("NOPROTO"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_acl_user_wrong_password_and_noauth() {
    let redis = RedisServer::start(&["--requirepass", "topsecret"]);
    redis.cmd(&["AUTH", "topsecret"]); // fixture connection check
    let admin = |args: &[&str]| {
        let mut full = vec![
            "-p".to_string(),
            redis.port().to_string(),
            "-a".into(),
            "topsecret".into(),
            "--no-auth-warning".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let out = std::process::Command::new("redis-cli")
            .args(&full)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        admin(&["ACL", "SETUSER", "app", "on", ">apppass", "~app:*", "+@all"]),
        "OK"
    );
    let f = start_with(
        &format!("redis://:topsecret@127.0.0.1:{}", redis.port()),
        fast_health(),
        Default::default(),
    )
    .await;
    f.wait_state(upstream::State::Up, std::time::Duration::from_secs(5))
        .await;

    // Without AUTH a session is Redis's default user: Redis says NOAUTH,
    // even though Redoubt's own URL carries the password.
    let mut anon = f.raw().await;
    assert!(err_text(&anon.cmd(&["GET", "x"]).await).starts_with("NOAUTH"));
    assert!(err_text(&anon.cmd(&["AUTH", "wrong"]).await).starts_with("WRONGPASS"));
    assert!(err_text(&anon.cmd(&["GET", "x"]).await).starts_with("NOAUTH"));

    let mut app = f.raw().await;
    assert_eq!(
        app.cmd(&["AUTH", "app", "apppass"]).await,
        Frame::simple("OK")
    );
    assert_eq!(app.cmd(&["SET", "app:1", "ok"]).await, Frame::simple("OK"));
    // The ACL is Redis's, applied to this session's own identity.
    assert!(err_text(&app.cmd(&["SET", "other", "no"]).await).starts_with("NOPERM"));
    assert_eq!(admin(&["GET", "app:1"]), "ok");

    let mut def = f.raw().await;
    assert_eq!(def.cmd(&["AUTH", "topsecret"]).await, Frame::simple("OK"));
    assert_eq!(def.cmd(&["GET", "app:1"]).await, Frame::bulk("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_values_pass_intact() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut c = f.client().await;
    let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let _: () = c.set("big", big.as_slice()).await.unwrap();
    let back: Vec<u8> = c.get("big").await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "16 MiB value changed in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pipelining_clients_each_read_their_own_writes() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut tasks = Vec::new();
    for client in 0..100 {
        let addr = f.addr();
        tasks.push(tokio::spawn(async move {
            let mut r = Raw::connect(&addr).await;
            for round in 0..20 {
                // SET then GET of the same key, pipelined in one write.
                let key = format!("c{client}");
                let val = format!("v{client}-{round}");
                let mut out = bytes::BytesMut::new();
                resp::frame::encode_command(&mut out, &["SET", &key, &val]);
                resp::frame::encode_command(&mut out, &["GET", &key]);
                resp::frame::encode_command(&mut out, &["INCR", &format!("n{client}")]);
                r.send(&out).await;
                assert_eq!(r.read().await.unwrap(), Frame::simple("OK"));
                assert_eq!(
                    r.read().await.unwrap(),
                    Frame::bulk(&val),
                    "client {client} round {round}"
                );
                assert_eq!(r.read().await.unwrap(), Frame::Integer(round + 1));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_talks_through_the_proxy() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let port = f.proxy.local_addr().port().to_string();
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .arg("-p")
            .arg(&port)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // redis-cli runs blocking IO; keep it off the async workers.
    let (a, b, c) = tokio::task::spawn_blocking(move || {
        (
            cli(&["SET", "cli", "yes"]),
            cli(&["GET", "cli"]),
            cli(&["--no-raw", "LPUSH", "cl", "a"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (a.as_str(), b.as_str(), c.as_str()),
        ("OK", "yes", "(integer) 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_blocked_frees_its_redis_connection() {
    let redis = RedisServer::new();
    let fx = start(&redis).await;
    let blocking: [&[&str]; 2] = [
        &["BLPOP", "gone:list", "0"],
        &["BRPOPLPUSH", "gone:list", "gone:other", "0"],
    ];
    for args in blocking {
        let mut raw = fx.raw().await;
        raw.send_cmd(args).await;
        wait_blocked(&redis, 1);
        drop(raw);
        // Redis unblocks the connection when Redoubt closes it.
        wait_blocked(&redis, 0);
    }
    // A value pushed now is not taken by a client that is gone.
    let mut c = fx.client().await;
    let _: i64 = c.lpush("gone:list", "v").await.unwrap();
    let len: i64 = c.llen("gone:list").await.unwrap();
    assert_eq!(len, 1);
}

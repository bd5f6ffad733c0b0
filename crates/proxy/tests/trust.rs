//! The data path as an adversarial client meets it: nothing a client
//! sends gets past Redis's own access rules, crashes a session, or keeps a
//! client slot; Redis's own behaviour shows through unchanged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proxy::access::AuthMode;
use proxy::policy::{Keyspaces, Policy};
use proxy::LimitsConfig;
use resp::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream::State;

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOAUTH: &str = "NOAUTH Authentication required.";

fn acl(redis: &RedisServer, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER"];
    args.extend_from_slice(rules);
    redis.cmd(&args);
}

/// Redoubt logged in upstream as an admin, with durable `sess:*`,
/// `other:*`, `public:*` and cache `cache:*`.
async fn local(redis: &RedisServer) -> Local {
    acl(redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    let keyspaces = Keyspaces::new(vec![
        ("sess:*".into(), Policy::Durable),
        ("other:*".into(), Policy::Durable),
        ("public:*".into(), Policy::Durable),
        ("cache:*".into(), Policy::Cache),
    ]);
    let url = format!("redis://admin:adminpw@{}", redis.addr());
    start_local(&url, keyspaces, "trust-node", AuthMode::Passthrough, true).await
}

async fn logged_in(f: &Fixture, user: &str, pass: &str) -> Raw {
    let mut c = f.raw().await;
    assert_eq!(c.cmd(&["AUTH", user, pass]).await, Frame::simple("OK"));
    c
}

/// Polls `probe` until it returns true, at most `within`: for effects that
/// follow a periodic refresh, with no event to await.
async fn eventually<F, Fut>(what: &str, within: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    while Instant::now() < end {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_patterns_during_an_outage_are_refused_as_redis_refuses_them() {
    let mut redis = RedisServer::new();
    acl(&redis, &["app", "on", ">pw", "~sess:*", "+@all"]);
    acl(&redis, &["other", "on", ">pw", "~other:*", "+@all"]);
    acl(&redis, &["default", "resetkeys", "~public:*"]);
    let s = local(&redis).await;
    let mut app = logged_in(&s.f, "app", "pw").await;
    let mut anon = s.f.raw().await;
    // While Up, Redis judges; keep its words.
    assert_eq!(
        app.cmd(&["SET", "sess:secret", "app's"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        anon.cmd(&["RPUSH", "public:l", "secret"]).await,
        Frame::Integer(1)
    );
    let redis_get = err_text(
        &anon
            .cmd(&["SORT_RO", "public:l", "BY", "nosort", "GET", "sess:*"])
            .await,
    );
    let redis_by = err_text(&anon.cmd(&["SORT", "public:l", "BY", "sess:*"]).await);
    assert_eq!(
        redis_get,
        "ERR GET option of SORT denied due to insufficient ACL permissions."
    );
    s.wait_knows("default");
    s.wait_knows("app");

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(
        anon.cmd(&["RPUSH", "public:l2", "secret"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        app.cmd(&["RPUSH", "sess:l", "secret"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        err_text(
            &anon
                .cmd(&["SORT_RO", "public:l2", "BY", "nosort", "GET", "sess:*"])
                .await
        ),
        redis_get
    );
    assert_eq!(
        err_text(&anon.cmd(&["SORT", "public:l2", "BY", "sess:*"]).await),
        redis_by
    );
    assert_eq!(
        err_text(
            &app.cmd(&["SORT_RO", "sess:l", "BY", "nosort", "GET", "other:*"])
                .await
        ),
        redis_get
    );
    // STORE's destination is a key the user must be allowed to write.
    assert!(err_text(
        &app.cmd(&["SORT", "sess:l", "ALPHA", "STORE", "other:dst"])
            .await
    )
    .starts_with("NOPERM"));
    // Without patterns the permission check passes, and the outage
    // policy decides.
    assert!(!err_text(&app.cmd(&["SORT", "sess:l", "ALPHA"]).await).starts_with("NOPERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_redis_no_longer_accepts_is_refused_through_redoubt() {
    let redis = RedisServer::new();
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    acl(&redis, &["app", "on", ">pw", "~sess:*", "+@all"]);
    let url = format!("redis://admin:adminpw@{}", redis.addr());
    let f = start_with(&url, fast_health(), LimitsConfig::default()).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;

    let mut first = logged_in(&f, "app", "pw").await;
    assert_eq!(
        first.cmd(&["SET", "sess:1", "a"]).await,
        Frame::simple("OK")
    );
    // The password changes: the pooled connection that logged in with the
    // old one proves nothing.
    acl(&redis, &["app", "resetpass", ">newpw"]);
    let mut c = f.raw().await;
    assert_eq!(err_text(&c.cmd(&["AUTH", "app", "pw"]).await), WRONGPASS);
    assert_eq!(c.cmd(&["AUTH", "app", "newpw"]).await, Frame::simple("OK"));
    // Disabled: refused at once too.
    acl(&redis, &["app", "off"]);
    let mut c = f.raw().await;
    assert_eq!(err_text(&c.cmd(&["AUTH", "app", "newpw"]).await), WRONGPASS);

    // `default` loses `nopass` at run time: a client that never sends AUTH
    // is refused as Redis refuses it, once the ACL refresh has seen it.
    let mut anon = f.raw().await;
    assert_eq!(anon.cmd(&["SET", "k", "v"]).await, Frame::simple("OK"));
    acl(&redis, &["default", "resetpass", ">x"]);
    assert_eq!(
        redis.cmd_raw(&["SET", "k", "v"]).unwrap(),
        format!("-{NOAUTH}")
    );
    let access = f.proxy.access().unwrap().clone();
    test_support::wait_for(
        "the ACL refresh to see default's password",
        Duration::from_secs(15),
        || {
            access
                .hello_refusal(&proxy::access::Identity::Default)
                .is_some()
        },
    );
    // The pooled connections that logged in as `default` before are
    // closed; give the closing a moment to finish on the refresh task.
    eventually(
        "the old unauthenticated pool to be closed",
        Duration::from_secs(5),
        || {
            let up = f.upstream.clone();
            async move { up.shared_connections() == 0 }
        },
    )
    .await;
    let mut late = f.raw().await;
    assert_eq!(err_text(&late.cmd(&["SET", "k", "w"]).await), NOAUTH);
    assert!(err_text(&late.cmd(&["CLIENT", "LIST"]).await) == NOAUTH);
    assert!(err_text(&late.cmd(&["HELLO", "3"]).await).starts_with("NOAUTH HELLO must be called"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_commands_answered_by_redoubt_pass_redis_permission_checks() {
    let redis = RedisServer::new();
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    acl(
        &redis,
        &["getonly", "on", ">pw", "~*", "-@all", "+get", "+auth"],
    );
    let url = format!("redis://admin:adminpw@{}", redis.addr());
    let f = start_with(&url, fast_health(), LimitsConfig::default()).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let access = f.proxy.access().unwrap().clone();
    let mut c = logged_in(&f, "getonly", "pw").await;
    test_support::wait_for("getonly's ACL", Duration::from_secs(5), || {
        access.knows("getonly")
    });
    for (cmd, name) in [
        (&["CLIENT", "LIST"][..], "client|list"),
        (&["CLIENT", "INFO"], "client|info"),
        (&["CLIENT", "SETNAME", "x"], "client|setname"),
        (&["SELECT", "1"], "select"),
    ] {
        assert_eq!(
            err_text(&c.cmd(cmd).await),
            format!("NOPERM this user has no permissions to run the '{name}' command"),
            "{cmd:?}"
        );
    }
    // Allowed to every user, as in Redis.
    assert!(matches!(c.cmd(&["HELLO", "2"]).await, Frame::Array(_)));
    assert_eq!(c.cmd(&["GET", "nokey"]).await, Frame::NullBulk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_command_then_close_gives_the_client_slot_back() {
    let redis = RedisServer::new();
    let limits = LimitsConfig {
        max_clients: 5,
        ..Default::default()
    };
    let f = start_with(&redis.url(), fast_health(), limits).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    for _ in 0..10 {
        let mut c = f.raw().await;
        c.send(b"*2\r\n").await;
        c.stream.shutdown().await.unwrap();
        // Redoubt closes its side once the session has ended (or it was
        // refused over the limit): every one of them has been accepted
        // before the count is checked.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.stream.read_to_end(&mut rest))
            .await
            .expect("the session ends on the client's EOF")
            .unwrap();
        drop(c);
    }
    eventually(
        "every slot to be given back",
        Duration::from_secs(5),
        || {
            let n = f.proxy.clients();
            async move { n == 0 }
        },
    )
    .await;
    let mut c = f.raw().await;
    assert_eq!(c.cmd(&["PING"]).await, Frame::simple("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_during_an_outage_get_redis_errors_not_panics() {
    let mut redis = RedisServer::new();
    let s = local(&redis).await;
    s.wait_knows("default");
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    let mut c = s.f.raw().await;
    assert_eq!(
        err_text(&c.cmd(&["EXPIRE", "cache:x"]).await),
        "ERR wrong number of arguments for 'expire' command"
    );
    assert_eq!(
        err_text(&c.cmd(&["SETEX", "cache:y", "10"]).await),
        "ERR wrong number of arguments for 'setex' command"
    );
    assert_eq!(c.cmd(&["GET", "cache:y"]).await, Frame::NullBulk);
    for cmd in [
        &["SET", "sess:x", "v", "EX", "9223372036854775807"][..],
        &["SETEX", "sess:x", "9223372036854775807", "v"],
        &["EXPIRE", "sess:x", "9223372036854775807"],
    ] {
        let r = c.cmd(cmd).await;
        assert!(
            err_text(&r).contains("invalid expire time"),
            "{cmd:?}: {r:?}"
        );
    }
    assert_eq!(c.cmd(&["PING"]).await, Frame::simple("PONG"));
    assert_eq!(
        s.f.proxy.clients(),
        1,
        "the session is alive and counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behaviour_shows_through_reply_for_reply() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut direct = Raw::connect(&redis.addr()).await;
    let mut via = f.raw().await;
    let cases: Vec<Vec<Vec<&str>>> = vec![
        vec![vec!["UNSUBSCRIBE"], vec!["PUNSUBSCRIBE", "a", "b"]],
        // SELECT under WATCH: the write to db 1 does not touch db 5's key.
        vec![
            vec!["SELECT", "5"],
            vec!["WATCH", "x"],
            vec!["SELECT", "1"],
            vec!["SET", "x", "10"],
            vec!["SELECT", "5"],
            vec!["MULTI"],
            vec!["PING"],
            vec!["EXEC"],
            vec!["SELECT", "0"],
        ],
        // Refused at queue time: the transaction is aborted.
        vec![vec!["MULTI"], vec!["SAVE"], vec!["PING"], vec!["EXEC"]],
        vec![vec!["MULTI"], vec!["GET"], vec!["PING"], vec!["EXEC"]],
        vec![vec!["MULTI"], vec!["SET", "a", "1"], vec!["EXEC"]],
    ];
    for case in cases {
        for cmd in &case {
            let d = direct.cmd(cmd).await;
            let v = via.cmd(cmd).await;
            assert_eq!(v, d, "{cmd:?} in {case:?}");
        }
    }
    // RESP3: the confirmation is a push, as Redis sends it.
    let mut direct3 = Raw::connect(&redis.addr()).await;
    let mut via3 = f.raw().await;
    direct3.cmd(&["HELLO", "3"]).await;
    via3.cmd(&["HELLO", "3"]).await;
    assert_eq!(
        via3.cmd(&["UNSUBSCRIBE", "c"]).await,
        direct3.cmd(&["UNSUBSCRIBE", "c"]).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_blocked_on_one_list_are_served_in_the_order_they_blocked() {
    // Redis's own test ("BRPOPLPUSH with multiple blocked clients"): the
    // first client blocked gets the element first; its destination holds a
    // string, so it gets WRONGTYPE and the element goes to the second.
    // Which of two clients sending at the same instant blocks first is not
    // defined through any multi-threaded proxy, so each sends once the one
    // before is blocked, as Redis reports.
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut r = f.raw().await;
    for round in 0..30 {
        r.cmd(&["DEL", "blist", "target1", "target2"]).await;
        r.cmd(&["SET", "target1", "nolist"]).await;
        // Fresh clients each round: each needs a connection of its own.
        let mut rd1 = f.raw().await;
        let mut rd2 = f.raw().await;
        for (i, (rd, target)) in [(&mut rd1, "target1"), (&mut rd2, "target2")]
            .into_iter()
            .enumerate()
        {
            rd.send_cmd(&["BRPOPLPUSH", "blist", target, "0"]).await;
            wait_blocked(&redis, i + 1);
        }
        r.cmd(&["LPUSH", "blist", "foo"]).await;
        let first = tokio::time::timeout(Duration::from_secs(5), rd1.read())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the first client got nothing"))
            .unwrap();
        assert!(
            err_text(&first).starts_with("WRONGTYPE"),
            "round {round}: {first:?}"
        );
        let second = tokio::time::timeout(Duration::from_secs(5), rd2.read())
            .await
            .unwrap_or_else(|_| panic!("round {round}: the second client got nothing"))
            .unwrap();
        assert_eq!(second, Frame::bulk("foo"), "round {round}");
        assert_eq!(redis.cmd(&["LLEN", "target2"]), ":1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_names_a_redoubt_client_and_never_one_of_redis_own() {
    // Redis's own test ("client unblock tests"): a client blocks, another
    // unblocks it by the id the first was told by CLIENT ID.
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut r = f.raw().await;
    let mut rd = f.raw().await;
    let Frame::Integer(id) = rd.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID is an integer")
    };
    let id = id.to_string();
    for (how, unblock, reply) in [
        (None, Frame::Integer(1), Frame::NullArray),
        (Some("TIMEOUT"), Frame::Integer(1), Frame::NullArray),
        (
            Some("ERROR"),
            Frame::Integer(1),
            Frame::error("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
        ),
    ] {
        rd.send_cmd(&["BLPOP", "l", "0"]).await;
        wait_blocked(&redis, 1);
        let mut cmd = vec!["CLIENT", "UNBLOCK", id.as_str()];
        cmd.extend(how);
        assert_eq!(r.cmd(&cmd).await, unblock, "{how:?}");
        let got = tokio::time::timeout(Duration::from_secs(5), rd.read())
            .await
            .unwrap_or_else(|_| panic!("{how:?}: the blocked client got nothing"))
            .unwrap();
        assert_eq!(got, reply, "{how:?}");
    }
    // Inside a transaction too.
    rd.send_cmd(&["BLPOP", "l", "0"]).await;
    wait_blocked(&redis, 1);
    assert_eq!(r.cmd(&["MULTI"]).await, Frame::simple("OK"));
    assert_eq!(
        r.cmd(&["CLIENT", "UNBLOCK", &id]).await,
        Frame::simple("QUEUED")
    );
    assert_eq!(
        r.cmd(&["EXEC"]).await,
        Frame::Array(vec![Frame::Integer(1)])
    );
    let got = tokio::time::timeout(Duration::from_secs(5), rd.read())
        .await
        .expect("unblocked from a transaction")
        .unwrap();
    assert_eq!(got, Frame::NullArray);
    // A client that is not blocked, one that does not exist, and Redis's
    // own errors, as Redis answers them.
    let mut direct = Raw::connect(&redis.addr()).await;
    for args in [
        vec!["CLIENT", "UNBLOCK", id.as_str()],
        vec!["CLIENT", "UNBLOCK", "987654"],
        vec!["CLIENT", "UNBLOCK", "x"],
        vec!["CLIENT", "UNBLOCK", "1", "LATER"],
    ] {
        assert_eq!(r.cmd(&args).await, direct.cmd(&args).await, "{args:?}");
    }
    // The id of a connection of Redis's own (here: a direct client blocked
    // there) is not one of Redoubt's clients: it stays blocked.
    let mut other = Raw::connect(&redis.addr()).await;
    let Frame::Integer(other_id) = other.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID is an integer")
    };
    other.send_cmd(&["BLPOP", "m", "0"]).await;
    wait_blocked(&redis, 1);
    assert_eq!(
        r.cmd(&["CLIENT", "UNBLOCK", &other_id.to_string()]).await,
        Frame::Integer(0)
    );
    assert_eq!(
        redis.cmd(&["CLIENT", "UNBLOCK", &other_id.to_string()]),
        ":1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_redis_is_not_down_and_its_script_can_be_killed_through_redoubt() {
    let redis = RedisServer::start(&["--busy-reply-threshold", "100"]);
    let f = start(&redis).await;
    let mut states = f.health.subscribe();
    let seen_down = tokio::spawn(async move {
        loop {
            if states.borrow_and_update().state == State::Down {
                return true;
            }
            if states.changed().await.is_err() {
                return false;
            }
        }
    });
    // Transactions opened before the script, through Redoubt and straight
    // to Redis: what Redis refuses while busy aborts them alike.
    let mut tx = f.raw().await;
    let mut direct_tx = Raw::connect(&redis.addr()).await;
    for t in [&mut tx, &mut direct_tx] {
        assert_eq!(t.cmd(&["MULTI"]).await, Frame::simple("OK"));
    }
    // A script that never ends, sent straight to Redis.
    let mut runner = Raw::connect(&redis.addr()).await;
    let mut out = bytes::BytesMut::new();
    resp::frame::encode_command(&mut out, &["EVAL", "while true do end", "0"]);
    runner.send(&out).await;
    let mut rx = f.health.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|h| h.busy.is_some()))
        .await
        .expect("the prober sees BUSY")
        .unwrap();
    let mut c = f.raw().await;
    assert!(err_text(&c.cmd(&["GET", "k"]).await).starts_with("BUSY"));
    let queued = direct_tx.cmd(&["SET", "k", "1"]).await;
    assert!(err_text(&queued).starts_with("BUSY"), "{queued:?}");
    assert_eq!(
        tx.cmd(&["SET", "k", "1"]).await,
        queued,
        "queued while busy"
    );
    assert_eq!(c.cmd(&["SCRIPT", "KILL"]).await, Frame::simple("OK"));
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|h| h.busy.is_none()))
        .await
        .expect("BUSY clears")
        .unwrap();
    assert_eq!(c.cmd(&["PING"]).await, Frame::simple("PONG"));
    assert!(err_text(&runner.read().await.unwrap()).contains("killed"));
    let aborted = direct_tx.cmd(&["EXEC"]).await;
    assert!(err_text(&aborted).starts_with("EXECABORT"), "{aborted:?}");
    assert_eq!(tx.cmd(&["EXEC"]).await, aborted);
    assert_eq!(redis.cmd(&["EXISTS", "k"]), ":0");
    seen_down.abort();
    assert!(
        !matches!(seen_down.await, Ok(true)),
        "a busy Redis answered every probe: never Down"
    );
}

/// The commands the ACL differential sends, for every user.
const DIFFERENTIAL: &[&[&str]] = &[
    &["SET", "sess:1", "a"],
    &["GET", "sess:1"],
    &["SET", "other:1", "b"],
    &["GET", "other:1"],
    &["SET", "public:1", "c"],
    &["GET", "public:1"],
    &["MGET", "sess:1", "other:1"],
    &["MSET", "sess:2", "x", "public:2", "y"],
    &["INCR", "sess:n"],
    &["DEL", "public:1"],
    &["HSET", "sess:h", "f", "v"],
    &["HGETALL", "other:h"],
    &["RPUSH", "sess:l", "1"],
    &["SORT_RO", "sess:l", "BY", "nosort", "GET", "other:*"],
    &["SORT", "sess:l", "ALPHA", "STORE", "other:dst"],
    &["EXPIRE", "sess:1", "100"],
    &["COPY", "sess:1", "other:copy"],
    &["CLIENT", "LIST"],
    &["CLIENT", "INFO"],
    &["PING"],
];

/// Connects straight to Redis or through Redoubt as `user` (`None`: no
/// AUTH, Redis's `default`).
async fn session(addr: &str, user: Option<&str>) -> Raw {
    let mut c = Raw::connect(addr).await;
    if let Some(u) = user {
        assert_eq!(c.cmd(&["AUTH", u, "pw"]).await, Frame::simple("OK"), "{u}");
    }
    c
}

fn refusal(f: &Frame) -> Option<String> {
    match f {
        Frame::Error(e) => {
            let t = String::from_utf8_lossy(e).into_owned();
            (t.starts_with("NOPERM") || t.starts_with("NOAUTH") || t.contains("insufficient ACL"))
                .then_some(t)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_redis_refuses_a_user_redoubt_refuses_too_up_and_during_an_outage() {
    let mut redis = RedisServer::new();
    acl(
        &redis,
        &[
            "app",
            "on",
            ">pw",
            "~sess:*",
            "%R~public:*",
            "+@all",
            "-@dangerous",
        ],
    );
    acl(
        &redis,
        &["reader", "on", ">pw", "%R~sess:*", "+@read", "+@connection"],
    );
    acl(
        &redis,
        &["getset", "on", ">pw", "~*", "-@all", "+get", "+set"],
    );
    acl(
        &redis,
        &["writer", "on", ">pw", "%W~sess:*", "~public:*", "+@all"],
    );
    acl(&redis, &["default", "resetkeys", "~public:*"]);
    let s = local(&redis).await;
    let users = [
        None,
        Some("app"),
        Some("reader"),
        Some("getset"),
        Some("writer"),
    ];

    // While Up: every refusal through Redoubt is Redis's own, word for word.
    let mut refused_by_redis = Vec::new();
    for user in users {
        let mut direct = session(&redis.addr(), user).await;
        let mut via = session(&s.f.addr(), user).await;
        s.wait_knows(user.unwrap_or("default"));
        for cmd in DIFFERENTIAL {
            let d = direct.cmd(cmd).await;
            let v = via.cmd(cmd).await;
            assert_eq!(refusal(&v), refusal(&d), "{user:?} {cmd:?}: {v:?} vs {d:?}");
            if let Some(text) = refusal(&d) {
                refused_by_redis.push((user, *cmd, text));
            }
        }
    }
    assert!(
        refused_by_redis.len() > 20,
        "the users are restricted enough to test something"
    );

    // During an outage Redoubt answers from local data: it must still
    // refuse all of it.
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    for user in users {
        let mut via = session(&s.f.addr(), user).await;
        for (u, cmd, text) in refused_by_redis.iter().filter(|(u, ..)| *u == user) {
            let v = via.cmd(cmd).await;
            match &v {
                Frame::Error(e) => {
                    let e = String::from_utf8_lossy(e);
                    assert!(
                        e == *text || e.starts_with("UNAVAILABLE"),
                        "{u:?} {cmd:?}: Redis said {text}, Redoubt {e}"
                    );
                }
                other => {
                    panic!("{u:?} {cmd:?}: Redis refused ({text}), Redoubt answered {other:?}")
                }
            }
        }
    }
}

/// A small deterministic generator (the seed is printed on failure).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.next() as usize % from.len()]
    }
}

const NAMES: &[&str] = &[
    "GET",
    "SET",
    "SETEX",
    "PSETEX",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "INCR",
    "INCRBY",
    "DECRBY",
    "APPEND",
    "GETEX",
    "GETDEL",
    "DEL",
    "HSET",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "LPUSH",
    "RPUSH",
    "LRANGE",
    "LPOP",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "ZINCRBY",
    "MSET",
    "MGET",
    "SORT",
    "SORT_RO",
    "EXISTS",
    "TTL",
    "PTTL",
    "PERSIST",
    "TYPE",
    "RENAME",
    "COPY",
    "BLPOP",
    "CLIENT",
    "SELECT",
    "HELLO",
    "PING",
    "ECHO",
    "INFO",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "UNSUBSCRIBE",
    "OBJECT",
    "SCAN",
    "NOSUCHCMD",
];
const ARGS: &[&str] = &[
    "sess:a",
    "sess:b",
    "cache:a",
    "other:x",
    "public:p",
    "sess:*",
    "0",
    "1",
    "-1",
    "10",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "KEEPTTL",
    "NX",
    "XX",
    "GET",
    "BY",
    "STORE",
    "LIMIT",
    "ALPHA",
    "WITHSCORES",
    "REV",
    "LIST",
    "INFO",
    "SETNAME",
    "3",
    "AUTH",
    "",
];

/// Sends `rounds` random commands (any arity, odd numbers and options)
/// and checks that every one gets a reply and the session survives.
async fn fuzz_session(addr: &str, seed: u64, rounds: usize) {
    let mut rng = Lcg(seed);
    let mut c = Raw::connect(addr).await;
    for i in 0..rounds {
        let mut cmd = vec![rng.pick(NAMES)];
        let n = rng.next() % 6;
        for _ in 0..n {
            cmd.push(rng.pick(ARGS));
        }
        if cmd[0] == "BLPOP" {
            // Never block the run: a timeout of 0.01 s.
            cmd.push("0.01");
        }
        let mut out = bytes::BytesMut::new();
        resp::frame::encode_command(&mut out, &cmd);
        c.send(&out).await;
        let mut reply = c.read().await;
        // SUBSCRIBE-style replies and RESP3 pushes may come as several
        // frames; one reply is enough to show the session answers.
        if reply.is_none() {
            panic!("seed {seed} round {i}: {cmd:?} closed the connection");
        }
        if let Some(Frame::Error(e)) = &reply {
            let text = String::from_utf8_lossy(e);
            assert!(
                !text.is_empty() && !text.contains("panicked"),
                "seed {seed} round {i}: {cmd:?}: {text}"
            );
        }
        reply.take();
        // Reset state a command may have left (MULTI, WATCH, RESP3, db).
        if i % 16 == 15 {
            c.send(b"*1\r\n$5\r\nRESET\r\n").await;
            loop {
                match c.read().await {
                    Some(Frame::Simple(s)) if &s[..] == b"RESET" => break,
                    Some(_) => {}
                    None => panic!("seed {seed} round {i}: the session closed"),
                }
            }
        }
    }
    c.send(b"*1\r\n$5\r\nRESET\r\n*1\r\n$4\r\nPING\r\n").await;
    loop {
        match c.read().await {
            Some(Frame::Simple(s)) if &s[..] == b"PONG" => break,
            Some(_) => {}
            None => panic!("seed {seed}: the session did not survive"),
        }
    }
}

fn seed() -> u64 {
    std::env::var("TRUST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commands_in_every_state_never_break_a_session_or_leak_a_slot() {
    let mut redis = RedisServer::new();
    let s = local(&redis).await;
    s.wait_knows("default");
    let seed = seed();
    eprintln!("TRUST_SEED={seed}");
    // Up.
    fuzz_session(&s.f.addr(), seed, 3000).await;
    // WritesDown: Redis refuses writes (maxmemory reached).
    redis.cmd(&["SET", "filler", "xxxxxxxxxxxxxxxxxxxxxxxx"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    s.f.wait_state(State::WritesDown, Duration::from_secs(5))
        .await;
    fuzz_session(&s.f.addr(), seed ^ 3, 1000).await;
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    // Down: durable and cache keyspaces served locally.
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    fuzz_session(&s.f.addr(), seed ^ 1, 3000).await;
    // Recovering, then Up again.
    redis.start_again();
    // A restart without persistence forgets Redoubt's own ACL user.
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    fuzz_session(&s.f.addr(), seed ^ 2, 500).await;
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    eventually(
        "every client slot to be given back",
        Duration::from_secs(5),
        || {
            let n = s.f.proxy.clients();
            async move { n == 0 }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_commands_never_break_a_standalone_session_or_leak_a_slot() {
    // Standalone runs on a current-thread runtime of its own.
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        journal::Journal::open(dir.path(), journal::JournalConfig::default()).unwrap();
    let journal = std::sync::Arc::new(journal);
    let store = store::Store::new(store::StoreConfig::default());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let settings = proxy::standalone::StandaloneSettings {
                listen: "127.0.0.1:0".into(),
                limits: LimitsConfig::default(),
                journal_max_bytes: 1 << 30,
                compact_ratio: 4.0,
                compact_min_bytes: 64 << 20,
                users: Vec::new(),
                tls: None,
            };
            let h = proxy::standalone::Standalone::start(settings, store, journal)
                .await
                .unwrap();
            addr_tx.send(h.local_addr().to_string()).unwrap();
            let _ = stop_rx.await;
            // Every session is closed now: each must give its slot back.
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.clients() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let clients = h.clients();
            h.shutdown(Duration::from_secs(1)).await;
            clients
        })
    });
    let addr = addr_rx.recv().unwrap();
    let seed = seed();
    eprintln!("TRUST_SEED={seed}");
    fuzz_session(&addr, seed ^ 4, 3000).await;
    stop_tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), 0, "client slots given back");
}

//! Access control (`[auth]`) with real Redis ACL users: what a session may
//! log in as and touch while Redoubt answers from local data.

mod common;

use std::time::Duration;

use common::*;
use proxy::access::{AuthMode, LocalUser};
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOAUTH: &str = "NOAUTH Authentication required.";
const NOT_CHECKABLE: &str = "UNAVAILABLE redis is down and these credentials cannot be checked now (only logins redis accepted recently are known): command not executed; retry when redis is back";

/// Redoubt in front of `redis`, logged in upstream as `url_user` (an
/// admin), with durable `sess:*`, `other:*`, `public:*` and cache
/// `cache:*` keyspaces.
async fn setup(redis: &RedisServer, url_user: Option<(&str, &str)>, auth: AuthMode) -> Local {
    let keyspaces = Keyspaces::new(vec![
        ("sess:*".into(), Policy::Durable),
        ("other:*".into(), Policy::Durable),
        ("public:*".into(), Policy::Durable),
        ("cache:*".into(), Policy::Cache),
    ]);
    let url = match url_user {
        Some((u, p)) => format!("redis://{u}:{p}@{}", redis.addr()),
        None => redis.url(),
    };
    start_local(&url, keyspaces, "access-node", auth, true).await
}

/// Test helpers on the shared fixture.
trait LogIn {
    async fn logged_in(&self, user: &str, pass: &str) -> Raw;
}

impl LogIn for Local {
    async fn logged_in(&self, user: &str, pass: &str) -> Raw {
        let mut c = self.f.raw().await;
        assert_eq!(c.cmd(&["AUTH", user, pass]).await, Frame::simple("OK"));
        c
    }
}

/// Sends `MULTI`, `cmds`, `EXEC`; checks the `+OK`/`+QUEUED`s and returns
/// EXEC's reply.
async fn block(c: &mut Raw, cmds: Vec<Vec<&str>>) -> Frame {
    let mut out = bytes::BytesMut::new();
    resp::frame::encode_command(&mut out, &["MULTI"]);
    for cmd in &cmds {
        resp::frame::encode_command(&mut out, cmd);
    }
    resp::frame::encode_command(&mut out, &["EXEC"]);
    c.send(&out).await;
    assert_eq!(c.read().await.unwrap(), Frame::simple("OK"));
    for _ in &cmds {
        assert_eq!(c.read().await.unwrap(), Frame::simple("QUEUED"));
    }
    c.read().await.unwrap()
}

fn acl(redis: &RedisServer, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER"];
    args.extend_from_slice(rules);
    redis.cmd(&args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_users_keep_their_own_keys_during_an_outage_and_nothing_else() {
    let mut redis = RedisServer::new();
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    acl(&redis, &["app", "on", ">apppw", "~sess:*", "+@all"]);
    // Unauthenticated clients (Redis's `default`) may only touch public:*.
    acl(&redis, &["default", "resetkeys", "~public:*"]);
    let s = setup(&redis, Some(("admin", "adminpw")), AuthMode::Passthrough).await;

    // While Up, Redis judges: the app user logs in and is refused others'
    // keys; remember Redis's exact words.
    let mut app = s.logged_in("app", "apppw").await;
    assert_eq!(app.cmd(&["SET", "sess:1", "a"]).await, Frame::simple("OK"));
    let redis_says = err_text(&app.cmd(&["GET", "other:1"]).await);
    assert_eq!(redis_says, NOPERM_KEY);
    // An unauthenticated session is `default`, not Redoubt's admin.
    let mut anon = s.f.raw().await;
    assert_eq!(err_text(&anon.cmd(&["GET", "sess:1"]).await), NOPERM_KEY);
    assert_eq!(
        anon.cmd(&["SET", "public:1", "p"]).await,
        Frame::simple("OK")
    );
    // An admin read puts a cache key in the near-cache.
    let mut admin = s.logged_in("admin", "adminpw").await;
    assert_eq!(
        admin.cmd(&["SET", "cache:page", "<html>"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        admin.cmd(&["GET", "cache:page"]).await,
        Frame::bulk("<html>")
    );
    s.wait_knows("default");
    s.wait_knows("app");

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // The app user's own keys work locally; others' get Redis's NOPERM,
    // from the durable store and from the near-cache alike.
    assert_eq!(app.cmd(&["SET", "sess:2", "b"]).await, Frame::simple("OK"));
    assert_eq!(app.cmd(&["GET", "sess:2"]).await, Frame::bulk("b"));
    for cmd in [
        &["SET", "other:1", "x"][..],
        &["GET", "other:1"],
        &["DEL", "other:1"],
        &["GET", "cache:page"],
        &["MSET", "sess:3", "ok", "other:3", "no"],
    ] {
        assert_eq!(err_text(&app.cmd(cmd).await), redis_says, "{cmd:?}");
    }
    assert_eq!(
        admin.cmd(&["GET", "cache:page"]).await,
        Frame::bulk("<html>"),
        "the admin still reads it"
    );
    // A transaction is served whole or refused whole: one key the user
    // may not touch refuses all of it.
    assert_eq!(
        block(
            &mut app,
            vec![vec!["SET", "sess:5", "x"], vec!["SET", "other:5", "y"]]
        )
        .await,
        Frame::Error(redis_says.clone().into())
    );
    assert!(err_text(&app.cmd(&["GET", "sess:5"]).await).contains("value unknown locally"));
    assert_eq!(
        block(
            &mut app,
            vec![vec!["SET", "sess:6", "a"], vec!["GET", "sess:6"]]
        )
        .await,
        Frame::Array(vec![Frame::simple("OK"), Frame::bulk("a")])
    );
    // Unauthenticated: default's keys only.
    assert_eq!(
        anon.cmd(&["SET", "public:2", "q"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        err_text(&anon.cmd(&["SET", "sess:9", "x"]).await),
        NOPERM_KEY
    );
    assert_eq!(anon.cmd(&["PING"]).await, Frame::simple("PONG"));

    // Reconnecting during the outage: credentials Redis accepted log in
    // again; a wrong password and a never-seen user get the same answer,
    // so an outage does not tell which user names exist.
    let mut again = s.logged_in("app", "apppw").await;
    assert_eq!(again.cmd(&["GET", "sess:2"]).await, Frame::bulk("b"));
    let mut hello = s.f.raw().await;
    match hello.cmd(&["HELLO", "3", "AUTH", "app", "apppw"]).await {
        Frame::Map(_) => {}
        other => panic!("HELLO 3 AUTH during the outage: {other:?}"),
    }
    assert_eq!(hello.cmd(&["GET", "sess:2"]).await, Frame::bulk("b"));
    let mut wrong = s.f.raw().await;
    let known_user = err_text(&wrong.cmd(&["AUTH", "app", "nope"]).await);
    assert_eq!(known_user, NOT_CHECKABLE);
    assert_eq!(
        err_text(&wrong.cmd(&["SET", "sess:4", "x"]).await),
        NOPERM_KEY,
        "a failed login leaves the session as it was: default"
    );
    let unknown_user = err_text(&wrong.cmd(&["AUTH", "ghost", "pw"]).await);
    assert_eq!(unknown_user, known_user);
    assert!(
        err_text(&wrong.cmd(&["AUTH", "apppw"]).await)
            .starts_with("ERR AUTH <password> called without any password configured"),
        "as Redis answers while default needs no password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_default_user_makes_unauthenticated_sessions_log_in_first() {
    let mut redis = RedisServer::new();
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    acl(&redis, &["app", "on", ">apppw", "~sess:*", "+@all"]);
    acl(&redis, &["default", "off"]);
    let s = setup(&redis, Some(("admin", "adminpw")), AuthMode::Passthrough).await;
    let mut anon = s.f.raw().await;
    assert_eq!(
        err_text(&anon.cmd(&["GET", "sess:1"]).await),
        NOAUTH,
        "Redis refuses it: Redoubt did not lend its own identity"
    );
    let mut app = s.logged_in("app", "apppw").await;
    assert_eq!(app.cmd(&["SET", "sess:1", "a"]).await, Frame::simple("OK"));
    s.wait_knows("default");

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(err_text(&anon.cmd(&["SET", "sess:1", "x"]).await), NOAUTH);
    assert_eq!(err_text(&anon.cmd(&["PING"]).await), NOAUTH);
    assert_eq!(app.cmd(&["SET", "sess:1", "b"]).await, Frame::simple("OK"));
    assert_eq!(app.cmd(&["GET", "sess:1"]).await, Frame::bulk("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_permissions_refuse_local_data_rather_than_guess() {
    let mut redis = RedisServer::new();
    // Redoubt's own identity may not run ACL: nobody's permissions can be
    // read.
    acl(&redis, &["redoubt", "on", ">rpw", "~*", "+@all", "-acl"]);
    acl(&redis, &["app", "on", ">apppw", "~sess:*", "+@all"]);
    let s = setup(&redis, Some(("redoubt", "rpw")), AuthMode::Passthrough).await;
    let mut app = s.logged_in("app", "apppw").await;
    assert_eq!(app.cmd(&["SET", "sess:1", "a"]).await, Frame::simple("OK"));

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    let text = err_text(&app.cmd(&["SET", "sess:2", "b"]).await);
    assert!(
        text.starts_with("UNAVAILABLE")
            && text.contains("permissions of user 'app' are unknown")
            && text.contains("NOPERM")
            && text.ends_with("command not executed"),
        "{text}"
    );
    // Logging in still works from the credential memory.
    let mut again = s.logged_in("app", "apppw").await;
    assert_eq!(again.cmd(&["PING"]).await, Frame::simple("PONG"));
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_logs_in_to_redoubts_users_and_keeps_working_during_an_outage() {
    let mut redis = RedisServer::new();
    acl(&redis, &["admin", "on", ">adminpw", "~*", "&*", "+@all"]);
    // Redis serves nobody without a password: local-mode sessions reach it
    // only through Redoubt's identity.
    acl(&redis, &["default", "off"]);
    let users = vec![LocalUser::new("app", &sha256_hex("s3cret")).unwrap()];
    let s = setup(&redis, Some(("admin", "adminpw")), AuthMode::Local(users)).await;

    let mut c = s.f.raw().await;
    assert_eq!(err_text(&c.cmd(&["GET", "sess:1"]).await), NOAUTH);
    assert_eq!(err_text(&c.cmd(&["PING"]).await), NOAUTH);
    assert!(err_text(&c.cmd(&["HELLO", "3"]).await).starts_with("NOAUTH HELLO must be called"));
    assert_eq!(err_text(&c.cmd(&["AUTH", "app", "wrong"]).await), WRONGPASS);
    assert_eq!(
        err_text(&c.cmd(&["AUTH", "s3cret"]).await),
        WRONGPASS,
        "no local default user"
    );
    assert_eq!(c.cmd(&["AUTH", "app", "s3cret"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["SET", "sess:1", "a"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["GET", "sess:1"]).await, Frame::bulk("a"));
    assert_eq!(
        redis.cmd_raw(&["GET", "sess:1"]).unwrap(),
        format!("-{NOAUTH}")
    );
    match c.cmd(&["CLIENT", "INFO"]).await {
        Frame::Bulk(b) => assert!(String::from_utf8_lossy(&b).contains(" user=app ")),
        other => panic!("CLIENT INFO: {other:?}"),
    }
    // RESET logs out.
    assert_eq!(c.cmd(&["RESET"]).await, Frame::simple("RESET"));
    assert_eq!(err_text(&c.cmd(&["GET", "sess:1"]).await), NOAUTH);

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    let mut c2 = s.f.raw().await;
    assert_eq!(err_text(&c2.cmd(&["SET", "sess:2", "b"]).await), NOAUTH);
    match c2.cmd(&["HELLO", "3", "AUTH", "app", "s3cret"]).await {
        Frame::Map(_) => {}
        other => panic!("HELLO 3 AUTH in local mode during the outage: {other:?}"),
    }
    assert_eq!(c2.cmd(&["SET", "sess:2", "b"]).await, Frame::simple("OK"));
    assert_eq!(c2.cmd(&["GET", "sess:2"]).await, Frame::bulk("b"));
    let mut c3 = s.f.raw().await;
    assert_eq!(err_text(&c3.cmd(&["AUTH", "app", "nope"]).await), WRONGPASS);
}

//! `rediss://` against a real `redis-server --tls-port`: data connections,
//! mutual TLS, the replication link's stream, and each way a TLS
//! connection fails named as such.

use std::time::Duration;

use bytes::Bytes;
use test_support::pki::TestPki;
use test_support::RedisServer;
use tls::{ClientOptions, Failure, TlsClient};
use upstream::{Conn, ConnectError, Handshake, UpstreamUrl};

const T: Duration = Duration::from_secs(5);

fn url(redis: &RedisServer, client: ClientOptions) -> UpstreamUrl {
    UpstreamUrl::parse(&redis.tls_url())
        .unwrap()
        .with_tls(TlsClient::new(&client).unwrap())
}

fn trusting(pki: &TestPki) -> ClientOptions {
    ClientOptions {
        ca_file: Some(pki.ca.clone()),
        ..ClientOptions::default()
    }
}

async fn connect_err(url: &UpstreamUrl) -> ConnectError {
    Conn::connect(&url.endpoint(), &url.control_handshake(2, "t"), T)
        .await
        .expect_err("connect must fail")
}

fn failure(e: ConnectError) -> Failure {
    match e {
        ConnectError::Tls { failure, .. } => failure,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn commands_travel_over_tls_with_the_ca_file() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, false, &[]);
    let url = url(&redis, trusting(&pki));
    let conn = Conn::connect(&url.endpoint(), &Handshake::default(), T)
        .await
        .unwrap();
    assert_eq!(
        conn.call(&["SET", "k", "over-tls"], T).await.unwrap(),
        resp::Frame::Simple(Bytes::from_static(b"OK"))
    );
    // A pipelined batch larger than a TLS record (16 KiB) in both ways.
    let big = "v".repeat(100_000);
    let mut raw = bytes::BytesMut::new();
    for i in 0..50 {
        resp::frame::encode_command(&mut raw, &["SET", &format!("b{i}"), &big]);
        resp::frame::encode_command(&mut raw, &["GET", &format!("b{i}")]);
    }
    let reply = tokio::time::timeout(T, conn.send(raw.freeze(), 100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.received, 100);
    assert!(!reply.lost);
    assert_eq!(redis.cmd(&["GET", "k"]), "over-tls");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, true, &[]);
    let with_cert = url(
        &redis,
        ClientOptions {
            cert_file: Some(pki.client.cert.clone()),
            key_file: Some(pki.client.key.clone()),
            ..trusting(&pki)
        },
    );
    let conn = Conn::connect(
        &with_cert.endpoint(),
        &with_cert.control_handshake(2, "t"),
        T,
    )
    .await
    .unwrap();
    assert!(conn.call(&["PING"], T).await.is_ok());
    let without = url(&redis, trusting(&pki));
    let f = failure(connect_err(&without).await);
    assert_eq!(f, Failure::ClientCertRequired, "{f}");
}

#[tokio::test]
async fn each_certificate_problem_is_named() {
    let pki = TestPki::new();
    for (cert, want) in [
        (&pki.untrusted, "unknown-ca"),
        (&pki.wrong_name, "name-mismatch"),
        (&pki.expired, "expired"),
    ] {
        let redis = RedisServer::start_tls(&pki, cert, false, &[]);
        let f = failure(connect_err(&url(&redis, trusting(&pki))).await);
        assert_eq!(f.id(), want, "{f}");
        let e = connect_err(&url(&redis, trusting(&pki))).await.to_string();
        assert!(e.contains("TLS: the server's certificate"), "{e}");
    }
}

#[tokio::test]
async fn insecure_skip_verify_takes_any_certificate() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.wrong_name, false, &[]);
    let url = url(
        &redis,
        ClientOptions {
            insecure_skip_verify: true,
            ..ClientOptions::default()
        },
    );
    let conn = Conn::connect(&url.endpoint(), &Handshake::default(), T)
        .await
        .unwrap();
    assert!(conn.call(&["PING"], T).await.is_ok());
}

#[tokio::test]
async fn plain_to_a_tls_port_and_tls_to_a_plain_port_fail_with_a_hint() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, false, &[]);
    // Plain RESP to the TLS port: Redis drops it without a word.
    let plain = UpstreamUrl::parse(&format!("redis://127.0.0.1:{}", redis.tls_port())).unwrap();
    let e = connect_err(&plain).await.to_string();
    assert!(e.contains("use rediss://"), "{e}");
    // TLS to the plain port: Redis answers the ClientHello as a bad
    // inline command, or waits for a newline that never comes.
    let tls_to_plain = UpstreamUrl::parse(&format!("rediss://127.0.0.1:{}", redis.port()))
        .unwrap()
        .with_tls(TlsClient::new(&trusting(&pki)).unwrap());
    let e = Conn::connect(
        &tls_to_plain.endpoint(),
        &Handshake::default(),
        Duration::from_millis(500),
    )
    .await
    .expect_err("no TLS on a plain port");
    match e {
        ConnectError::Tls { failure, .. } => {
            assert!(
                matches!(failure, Failure::NotTls | Failure::Closed),
                "{failure}"
            )
        }
        ConnectError::Timeout(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_replication_link_streams_over_tls() {
    use upstream::replication::{spawn_link, LinkConfig, LinkEvent};
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, false, &["--repl-diskless-sync", "no"]);
    let url = url(&redis, trusting(&pki));
    redis.cmd(&["SET", "before", "1"]);
    let dir = tempfile_dir();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let link = spawn_link(
        LinkConfig {
            addr: url.endpoint(),
            handshake: url.control_handshake(2, "redoubt-replica"),
            listening_port: 6380,
            rdb_path: dir.join("sync.rdb"),
            connect_timeout: T,
            read_timeout: Duration::from_secs(30),
            max_rdb_bytes: 1 << 30,
        },
        tx,
    );
    let mut full = false;
    let mut seen = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        match ev {
            LinkEvent::FullSync { .. } => {
                full = true;
                redis.cmd(&["SET", "after", "2"]);
            }
            LinkEvent::Command { args, .. } if args.iter().any(|a| &a[..] == b"after") => {
                seen = true;
                break;
            }
            _ => {}
        }
    }
    link.abort();
    assert!(full && seen, "full sync {full}, streamed write {seen}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("redoubt-tls-link-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

//! The admin server under connections that do not behave: it must keep
//! its file descriptors bounded (they are shared with the RESP listener),
//! close what idles, and still answer a well-formed request. And the
//! token check: any case of `Bearer`, nothing but the exact token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin::{AdminLimits, AdminState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upstream::{HealthHandle, State};

fn state(token: Option<&str>) -> AdminState {
    AdminState {
        health: HealthHandle::fixed(State::Standalone),
        local_keyspaces: false,
        metrics: Arc::new(|| "redoubt_up 1\n".to_string()),
        status: Arc::new(|| serde_json::json!({ "state": "standalone" })),
        incidents: Arc::new(|| serde_json::json!({ "recent": [] })),
        token: token.map(str::to_string),
        replay: None,
        writes_refused: None,
    }
}

/// Open descriptors of this process (tests and server alike).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// One request on a fresh connection; the status code and body.
async fn request(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Reads until the server closes the connection (EOF or reset).
async fn closed(s: &mut TcpStream) {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_bound_keep_descriptors_bounded_and_time_out() {
    let limits = AdminLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
    };
    let server = admin::serve("127.0.0.1:0", limits, state(None))
        .await
        .unwrap();
    let addr = server.local_addr;
    let baseline = open_fds();

    // 40 connections that never send a byte.
    const CLIENTS: usize = 40;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opened = Instant::now();
    for _ in 0..CLIENTS {
        let s = TcpStream::connect(addr).await.unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut s = s;
            closed(&mut s).await;
            // The client's end stays open, so the count below is fair.
            let _ = tx.send((Instant::now(), s));
        });
    }
    let mut kept = Vec::new();
    // All beyond the bound are closed at once, well before the header
    // timeout could have closed anything.
    for _ in 0..CLIENTS - limits.max_connections {
        let Ok(Some((at, s))) = tokio::time::timeout(limits.header_timeout, rx.recv()).await else {
            panic!(
                "connections beyond the bound of {} were not closed at once",
                limits.max_connections
            );
        };
        assert!(
            at - opened < limits.header_timeout,
            "a connection beyond the bound was not closed at once ({:?})",
            at - opened
        );
        kept.push(s);
    }
    // The clients' own descriptors are all still open; what the server
    // holds on top of them is at most the bound.
    let server_side = open_fds().saturating_sub(baseline + CLIENTS);
    assert!(
        server_side <= limits.max_connections,
        "the server holds {server_side} descriptors for {CLIENTS} idle connections; bound {}",
        limits.max_connections
    );

    // The ones it kept are closed by the header timeout, not before.
    for _ in 0..limits.max_connections {
        let (at, _) = rx.recv().await.unwrap();
        let after = at - opened;
        assert!(
            after >= limits.header_timeout - Duration::from_millis(100),
            "an idle connection was closed after {after:?}, before the header timeout"
        );
    }
    // With the idlers gone, a well-formed request is answered.
    assert_eq!(request(addr, "/healthz", None).await, (200, "ok\n".into()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_request_is_answered_while_idle_connections_wait() {
    let limits = AdminLimits {
        max_connections: 8,
        ..AdminLimits::default()
    };
    let server = admin::serve("127.0.0.1:0", limits, state(None))
        .await
        .unwrap();
    let mut idle = Vec::new();
    for _ in 0..limits.max_connections - 1 {
        idle.push(TcpStream::connect(server.local_addr).await.unwrap());
    }
    let (code, body) = request(server.local_addr, "/status", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("standalone"), "{body}");
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_reads_is_cut_after_the_idle_timeout_and_frees_its_slot() {
    let limits = AdminLimits {
        max_connections: 1,
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(500),
    };
    // More than the kernel buffers on both ends hold, so the write stalls.
    const BIG: usize = 32 << 20;
    let mut st = state(None);
    st.metrics = Arc::new(|| "#".repeat(BIG));
    let server = admin::serve("127.0.0.1:0", limits, st).await.unwrap();
    let addr = server.local_addr;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    // The one slot is taken until the stalled connection is cut: new
    // connections are closed at once, then one is answered.
    let deadline = start + Duration::from_secs(20);
    let freed_after = loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        if raw.starts_with(b"HTTP/1.1 200") {
            break start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection still holds the only slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        freed_after >= limits.idle_timeout,
        "the slot came back after {freed_after:?}, before the idle timeout"
    );
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got).await;
    assert!(
        got.len() < BIG,
        "the stalled response was cut, not delivered whole"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_case_of_bearer_is_accepted_and_a_wrong_token_refused() {
    let server = admin::serve("127.0.0.1:0", AdminLimits::default(), state(Some("s3cret")))
        .await
        .unwrap();
    let addr = server.local_addr;
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        assert_eq!(request(addr, "/status", Some(auth)).await.0, 200, "{auth}");
    }
    for auth in [
        Some("Bearer wrong"),
        Some("bearer s3cre"),
        Some("Basic s3cret"),
        None,
    ] {
        let (code, body) = request(addr, "/status", auth).await;
        assert_eq!(code, 401, "{auth:?}: {body}");
        assert!(
            body.contains("Authorization: Bearer"),
            "says what to send: {body}"
        );
    }
    // Health and readiness stay open to probes.
    assert_eq!(request(addr, "/healthz", None).await.0, 200);
    assert_eq!(request(addr, "/readyz", None).await.0, 200);
    server.stop().await;
}

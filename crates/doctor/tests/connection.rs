//! When Redis cannot be diagnosed, the doctor says why (exit code 3),
//! within its time budget.

use std::time::{Duration, Instant};

use doctor::{diagnose, DoctorOptions, Report, Severity};
use test_support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[track_caller]
fn assert_undiagnosable(r: &Report, id: &str) {
    assert!(!r.diagnosable, "{}", r.render_text(false));
    let f = r
        .get(id)
        .unwrap_or_else(|| panic!("{id} missing:\n{}", r.render_text(false)));
    assert_eq!(f.severity, Severity::Critical);
    assert!(!f.causes.is_empty() && !f.fix.is_empty());
    assert_eq!(r.exit_code(), 3);
}

#[tokio::test]
async fn refused_port_is_diagnosed_as_refused() {
    let port = test_support::refused_port();
    let r = diagnose(
        &format!("redis://127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.refused");
    assert!(r
        .get("connection.refused")
        .unwrap()
        .detail
        .contains(&port.to_string()));
}

#[tokio::test]
async fn unresolvable_host_is_a_dns_failure() {
    let r = diagnose(
        "redis://nonexistent.invalid:6379",
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.dns");
}

#[tokio::test]
async fn missing_password_is_noauth_and_wrong_password_is_wrongpass() {
    let s = RedisServer::start(&["--requirepass", "s3cret"]);
    let r = diagnose(&s.url(), &DoctorOptions::default()).await;
    assert_undiagnosable(&r, "connection.noauth");
    let r = diagnose(
        &format!("redis://:nope@{}", s.addr()),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.wrongpass");
    // The password never appears in the report.
    assert!(!r.render_text(false).contains("nope") && !r.to_json().to_string().contains("nope"));
    let r = diagnose(
        &format!("redis://:s3cret@{}", s.addr()),
        &DoctorOptions::default(),
    )
    .await;
    assert!(r.diagnosable, "{}", r.render_text(false));
    assert!(!r.to_json().to_string().contains("s3cret"));
}

#[tokio::test]
async fn acl_user_and_password_in_the_url_authenticate() {
    let s = RedisServer::new();
    s.cmd(&["ACL", "SETUSER", "ops", "on", ">pw", "~*", "+@all"]);
    let r = diagnose(
        &format!("redis://ops:pw@{}", s.addr()),
        &DoctorOptions::default(),
    )
    .await;
    assert!(r.diagnosable, "{}", r.render_text(false));
    let r = diagnose(
        &format!("redis://ops:bad@{}", s.addr()),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.wrongpass");
}

#[tokio::test]
async fn user_without_info_permission_is_noperm() {
    let s = RedisServer::new();
    s.cmd(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "~*",
        "+@read",
        "+ping",
        "+client|setname",
    ]);
    let r = diagnose(
        &format!("redis://app:pw@{}", s.addr()),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.noperm");
}

#[tokio::test]
async fn stopped_server_times_out_within_budget() {
    let s = RedisServer::new();
    s.pause();
    let opts = DoctorOptions {
        command_timeout: Duration::from_millis(300),
        ..DoctorOptions::default()
    };
    let t = Instant::now();
    let r = diagnose(&s.url(), &opts).await;
    let took = t.elapsed();
    s.resume();
    assert_undiagnosable(&r, "connection.timeout");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn total_budget_bounds_a_silent_peer() {
    // Accepts and reads forever, never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let opts = DoctorOptions {
        total_timeout: Duration::from_millis(400),
        command_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let t = Instant::now();
    let r = diagnose(&format!("redis://127.0.0.1:{port}"), &opts).await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_undiagnosable(&r, "connection.timeout");
}

/// A peer that writes `reply` to the first connection, then closes it.
async fn fake_server(reply: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(reply).await;
        let _ = s.shutdown().await;
    });
    port
}

#[tokio::test]
async fn tls_port_answering_an_alert_is_a_tls_problem() {
    // A TLS 1.2 alert record (fatal, decode_error): what a TLS server
    // answers to plain-text bytes.
    let port = fake_server(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
    let r = diagnose(
        &format!("redis://127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.tls");
}

#[tokio::test]
async fn http_server_is_not_redis() {
    let port = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let r = diagnose(
        &format!("redis://127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.not-redis");
}

#[tokio::test]
async fn protected_mode_denial_is_explained() {
    // Protected mode only refuses non-loopback clients, which a test on
    // loopback cannot be; the peer replays Redis's refusal instead.
    let port = fake_server(b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set\r\n").await;
    let r = diagnose(
        &format!("redis://127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.denied");
}

#[tokio::test]
async fn peer_closing_without_reply_is_reported() {
    let port = fake_server(b"").await;
    let r = diagnose(
        &format!("redis://127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.closed");
}

#[tokio::test]
async fn unsupported_and_bad_urls_are_explained() {
    let r = diagnose(
        "rediss+cluster://:pw@cache.example:6379",
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.unsupported-scheme");
    assert!(!r.target.contains("pw"), "{}", r.target);
    // A cluster none of whose named nodes answers: no primary to diagnose.
    let port = test_support::refused_port();
    let r = diagnose(
        &format!("redis+cluster://:pw@127.0.0.1:{port}"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.no-primary");
    assert!(!r.target.contains("pw"), "{}", r.target);
    // Sentinels that cannot be reached name no primary: said as such.
    let port = test_support::refused_port();
    let r = diagnose(
        &format!("redis+sentinel://:pw@127.0.0.1:{port}/mymaster"),
        &DoctorOptions::default(),
    )
    .await;
    assert_undiagnosable(&r, "connection.no-primary");
    assert!(!r.target.contains("pw"), "{}", r.target);
    assert!(
        r.findings
            .iter()
            .any(|f| f.detail.contains("no primary known")),
        "{:?}",
        r.findings
    );
    // host:port is a Redis address (as redis-cli users write it); a
    // port that is not one is still a bad URL.
    let r = diagnose("127.0.0.1:99999", &DoctorOptions::default()).await;
    assert_undiagnosable(&r, "connection.bad-url");
}

#[tokio::test]
async fn unreachable_report_renders_causes_and_first_step() {
    let r = diagnose(
        &format!("redis://127.0.0.1:{}", test_support::refused_port()),
        &DoctorOptions::default(),
    )
    .await;
    let text = r.render_text(false);
    assert!(text.contains("could not diagnose"), "{text}");
    assert!(
        text.contains("cause 1: redis-server is not running"),
        "{text}"
    );
    assert!(text.contains("fix: "), "{text}");
    let j = r.to_json();
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["diagnosable"], false);
    assert_eq!(j["findings"][0]["id"], "connection.refused");
    assert!(j["findings"][0]["causes"].as_array().unwrap().len() >= 2);
}

//! `rediss://` diagnosis against a real `redis-server --tls-port`: a good
//! TLS Redis is diagnosed like any other, and each way TLS fails is named
//! in words with its causes and first step.

use doctor::{diagnose, DoctorOptions, Report, Severity};
use test_support::pki::{CertFiles, TestPki};
use test_support::RedisServer;
use tls::{ClientOptions, TlsClient};

fn opts(pki: &TestPki, client_cert: bool) -> DoctorOptions {
    let (cert_file, key_file) = if client_cert {
        (Some(pki.client.cert.clone()), Some(pki.client.key.clone()))
    } else {
        (None, None)
    };
    DoctorOptions {
        tls: Some(
            TlsClient::new(&ClientOptions {
                ca_file: Some(pki.ca.clone()),
                cert_file,
                key_file,
                insecure_skip_verify: false,
            })
            .unwrap(),
        ),
        ..DoctorOptions::default()
    }
}

#[track_caller]
fn assert_named(r: &Report, id: &str, words: &str) {
    let text = r.render_text(false);
    assert!(!r.diagnosable, "{text}");
    let f = r.get(id).unwrap_or_else(|| panic!("{id} missing:\n{text}"));
    assert_eq!(f.severity, Severity::Critical);
    assert!(!f.causes.is_empty() && !f.fix.is_empty());
    assert!(
        f.title.contains(words) || f.detail.contains(words),
        "{id} does not say '{words}':\n{text}"
    );
    assert_eq!(r.exit_code(), 3);
}

async fn diagnose_cert(pki: &TestPki, cert: &CertFiles) -> Report {
    let redis = RedisServer::start_tls(pki, cert, false, &[]);
    diagnose(&redis.tls_url(), &opts(pki, false)).await
}

#[tokio::test]
async fn a_tls_redis_is_diagnosed_through_tls() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, true, &[]);
    let r = diagnose(&redis.tls_url(), &opts(&pki, true)).await;
    assert!(r.diagnosable, "{}", r.render_text(false));
    assert!(r.target.starts_with("rediss://"), "{}", r.target);
}

#[tokio::test]
async fn an_unknown_ca_is_named() {
    let pki = TestPki::new();
    let r = diagnose_cert(&pki, &pki.untrusted).await;
    assert_named(
        &r,
        "connection.tls-unknown-ca",
        "not signed by a CA we trust",
    );
}

#[tokio::test]
async fn a_name_mismatch_is_named_with_the_names_the_certificate_carries() {
    let pki = TestPki::new();
    let r = diagnose_cert(&pki, &pki.wrong_name).await;
    assert_named(
        &r,
        "connection.tls-name-mismatch",
        "is for wrong.example, not for '127.0.0.1'",
    );
}

#[tokio::test]
async fn an_expired_certificate_is_named() {
    let pki = TestPki::new();
    let r = diagnose_cert(&pki, &pki.expired).await;
    assert_named(&r, "connection.tls-expired", "has expired");
}

#[tokio::test]
async fn a_missing_client_certificate_is_named() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, true, &[]);
    let r = diagnose(&redis.tls_url(), &opts(&pki, false)).await;
    assert_named(&r, "connection.tls-client-cert", "client certificate");
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_is_named() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, false, &[]);
    let r = diagnose(
        &format!("redis://127.0.0.1:{}", redis.tls_port()),
        &DoctorOptions::default(),
    )
    .await;
    assert_named(&r, "connection.tls", "speaks TLS, not plain RESP");
    assert!(r.get("connection.tls").unwrap().fix.contains("rediss://"));
}

#[tokio::test]
async fn tls_to_a_plain_port_is_named() {
    let pki = TestPki::new();
    let redis = RedisServer::start_tls(&pki, &pki.server, false, &[]);
    let r = diagnose(
        &format!("rediss://127.0.0.1:{}", redis.port()),
        &DoctorOptions {
            // Redis may sit on the ClientHello waiting for a newline: the
            // handshake's own timeout is what ends it then.
            connect_timeout: std::time::Duration::from_millis(500),
            ..opts(&pki, false)
        },
    )
    .await;
    assert_named(&r, "connection.plain-port", "speaks plain RESP, not TLS");
}

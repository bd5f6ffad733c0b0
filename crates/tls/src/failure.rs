//! [`Failure`]: why a TLS connection failed, in words a person can act on.
//!
//! rustls's errors travel inside `io::Error`s through tokio-rustls; they
//! are unwrapped here once, so the prober's reason, the doctor's findings
//! and the logs say the same thing.

use std::fmt;
use std::io;

use rustls::{AlertDescription, CertificateError};

/// One way a TLS connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server's certificate is not signed by a CA we trust.
    UnknownCa,
    /// The certificate does not carry the host name we connected to.
    NameMismatch {
        /// The name we expected.
        expected: String,
        /// The names the certificate carries.
        presented: Vec<String>,
    },
    /// The certificate's validity ended.
    Expired,
    /// The certificate is not valid yet (or our clock is behind).
    NotYetValid,
    /// The server did not answer in TLS: a plain-text port.
    NotTls,
    /// The server closed the connection during the handshake.
    Closed,
    /// The server wants a client certificate and we sent none.
    ClientCertRequired,
    /// The server refused our client certificate.
    ClientCertRejected,
    /// Anything else, in rustls's words.
    Other(String),
}

impl Failure {
    /// Classifies an error from a TLS stream or handshake.
    pub fn from_io(e: &io::Error) -> Failure {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Failure::from_rustls(tls);
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::Other(e.to_string()),
        }
    }

    /// Whether an I/O error carries a TLS error at all (as opposed to a
    /// plain socket failure).
    pub fn is_tls_error(e: &io::Error) -> bool {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .is_some()
    }

    /// Classifies a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> Failure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Failure::UnknownCa
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Failure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Failure::NotYetValid
                }
                CertificateError::NotValidForName => Failure::NameMismatch {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => Failure::NameMismatch {
                    expected: expected.to_str().into_owned(),
                    presented: presented.iter().map(|n| bare_name(n)).collect(),
                },
                other => Failure::Other(format!("certificate refused: {other:?}")),
            },
            // Bytes that are not a TLS record: the server speaks something
            // else on this port (a plain Redis answers `-ERR …`).
            E::InvalidMessage(_) => Failure::NotTls,
            E::AlertReceived(AlertDescription::CertificateRequired) => Failure::ClientCertRequired,
            // OpenSSL (Redis's TLS) answers a missing client certificate
            // under TLS 1.2 with a plain handshake failure.
            E::AlertReceived(AlertDescription::HandshakeFailure) => Failure::ClientCertRequired,
            E::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied,
            ) => Failure::ClientCertRejected,
            other => Failure::Other(other.to_string()),
        }
    }

    /// A short stable id (`unknown-ca`, `name-mismatch`, …) for logs,
    /// tests and the doctor's finding ids.
    pub fn id(&self) -> &'static str {
        match self {
            Failure::UnknownCa => "unknown-ca",
            Failure::NameMismatch { .. } => "name-mismatch",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not-yet-valid",
            Failure::NotTls => "not-tls",
            Failure::Closed => "closed",
            Failure::ClientCertRequired => "client-cert-required",
            Failure::ClientCertRejected => "client-cert-rejected",
            Failure::Other(_) => "other",
        }
    }
}

/// `DnsName("redis.example")` → `redis.example`: rustls writes the names
/// a certificate carries as their Rust debug form.
fn bare_name(n: &str) -> String {
    match (n.find('('), n.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            n[open + 1..close].trim_matches('"').to_string()
        }
        _ => n.to_string(),
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::UnknownCa => f.write_str(
                "TLS: the server's certificate is not signed by a CA we trust (unknown CA)",
            ),
            Failure::NameMismatch {
                expected,
                presented,
            } if !presented.is_empty() => write!(
                f,
                "TLS: the server's certificate is for {}, not for '{expected}' (name mismatch)",
                presented.join(", ")
            ),
            Failure::NameMismatch { expected, .. } => write!(
                f,
                "TLS: the server's certificate does not name '{expected}' (name mismatch)"
            ),
            Failure::Expired => f.write_str("TLS: the server's certificate has expired"),
            Failure::NotYetValid => f.write_str(
                "TLS: the server's certificate is not valid yet (or this machine's clock is behind)",
            ),
            Failure::NotTls => {
                f.write_str("TLS: the server did not answer in TLS (a plain-text port?)")
            }
            Failure::Closed => f.write_str("TLS: the server closed the connection during the handshake"),
            Failure::ClientCertRequired => f.write_str(
                "TLS: the server requires a client certificate and none was sent (set upstream_tls.cert_file and key_file)",
            ),
            Failure::ClientCertRejected => {
                f.write_str("TLS: the server refused our client certificate")
            }
            Failure::Other(why) => write!(f, "TLS: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_debug_wrapping() {
        assert_eq!(bare_name("DnsName(\"redis.example\")"), "redis.example");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("plain"), "plain");
    }

    #[test]
    fn every_failure_has_an_id_and_words() {
        let all = [
            Failure::UnknownCa,
            Failure::NameMismatch {
                expected: "h".into(),
                presented: vec!["x".into()],
            },
            Failure::Expired,
            Failure::NotYetValid,
            Failure::NotTls,
            Failure::Closed,
            Failure::ClientCertRequired,
            Failure::ClientCertRejected,
            Failure::Other("why".into()),
        ];
        let ids: std::collections::HashSet<_> = all.iter().map(Failure::id).collect();
        assert_eq!(ids.len(), all.len());
        for f in &all {
            assert!(f.to_string().starts_with("TLS: "), "{f}");
        }
    }
}

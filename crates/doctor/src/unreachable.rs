//! Diagnosis when Redis cannot be diagnosed: each way of failing to get
//! a usable connection, with its likely causes and the first thing to try.
//! A table, like the checks, so every row is tested and worded once.

use crate::conn::ConnError;
use crate::finding::Finding;
use crate::severity::Severity;

/// One way of not reaching Redis.
#[derive(Debug, Clone, Copy)]
pub struct Problem {
    /// Stable id, `connection.*`.
    pub id: &'static str,
    /// What happened.
    pub title: &'static str,
    /// Likely causes, most likely first.
    pub causes: &'static [&'static str],
    /// The first thing to do.
    pub first_step: &'static str,
}

/// Every connection problem the doctor can name.
pub fn problems() -> &'static [Problem] {
    PROBLEMS
}

static PROBLEMS: &[Problem] = &[
    Problem {
        id: "connection.bad-url",
        title: "The Redis URL cannot be parsed",
        causes: &["a typo in the URL", "a password with unescaped '@', ':' or '/' (percent-encode them)"],
        first_step: "Write it as redis://[user:password@]host:port[/db].",
    },
    Problem {
        id: "connection.unsupported-scheme",
        title: "This URL scheme is not supported yet",
        causes: &["Cluster URLs (and Sentinel over TLS) are not spoken by Redoubt yet"],
        first_step: "Diagnose each primary itself through its redis:// or rediss:// URL until support lands.",
    },
    Problem {
        id: "connection.no-primary",
        title: "The Sentinels name no primary for this master",
        causes: &[
            "no Sentinel in the URL answers (not running, wrong host or port, or they ask for a password: set [sentinel] password)",
            "the master's name is not one the Sentinels monitor (a typo, or `sentinel monitor` is missing)",
        ],
        first_step: "Ask a Sentinel directly: `redis-cli -p 26379 SENTINEL get-master-addr-by-name NAME`.",
    },
    Problem {
        id: "connection.dns",
        title: "The host name does not resolve",
        causes: &[
            "wrong host or service name, or the container is not on the same network",
            "the DNS server is unreachable or slow (a transient failure)",
        ],
        first_step: "Run `getent hosts NAME` on the machine the application runs on.",
    },
    Problem {
        id: "connection.refused",
        title: "Nothing listens on that address: connection refused",
        causes: &[
            "redis-server is not running (crashed, killed by the OOM killer, or not started after a reboot)",
            "wrong host or port",
            "Redis is bound to another interface (bind)",
        ],
        first_step: "Check whether the process runs (`systemctl status redis`, `docker ps`) and read the end of its log with `redoubt triage`.",
    },
    Problem {
        id: "connection.unreachable",
        title: "The network path to Redis is broken",
        causes: &["no route to the host (wrong IP, host down)", "a firewall rejects the connection"],
        first_step: "Test the path with `nc -vz HOST PORT` from this machine.",
    },
    Problem {
        id: "connection.timeout",
        title: "Redis did not answer in time",
        causes: &[
            "the server is stalled: a long command or script, a slow fork, swapping, or the process is stopped",
            "a firewall or security group silently drops the packets",
            "the host is overloaded",
        ],
        first_step: "Try `redis-cli -h HOST -p PORT PING`; if the port accepts but never answers, look at the process (CPU, swap, `kill -CONT` if stopped) and at SLOWLOG once it answers.",
    },
    Problem {
        id: "connection.tls",
        title: "The port speaks TLS, not plain RESP",
        causes: &["the server (or a proxy in front) requires TLS on this port (Redis's tls-port, a managed Redis)", "the port belongs to another TLS service"],
        first_step: "Use rediss://HOST:PORT (with upstream_tls.ca_file when the server's CA is private).",
    },
    Problem {
        id: "connection.plain-port",
        title: "The port speaks plain RESP, not TLS",
        causes: &["the URL says rediss:// but this is Redis's plain port (its TLS port is tls-port in redis.conf)", "TLS is not enabled on this server"],
        first_step: "Use redis://HOST:PORT for this port, or rediss:// with the server's tls-port.",
    },
    Problem {
        id: "connection.tls-unknown-ca",
        title: "The server's TLS certificate is not signed by a CA we trust (unknown CA)",
        causes: &[
            "the server's certificate comes from a private CA that upstream_tls.ca_file does not name (or the system does not trust)",
            "a self-signed certificate",
            "a TLS-intercepting proxy between here and Redis",
        ],
        first_step: "Point upstream_tls.ca_file at the CA that signed Redis's certificate (`openssl s_client -connect HOST:PORT -showcerts` shows who signed it).",
    },
    Problem {
        id: "connection.tls-name-mismatch",
        title: "The server's TLS certificate is for another name (name mismatch)",
        causes: &[
            "the URL names an IP address or alias the certificate does not list",
            "another server than the one meant answers at this address",
        ],
        first_step: "Connect with a host name the certificate lists in its subjectAltName (`openssl s_client -connect HOST:PORT` shows it), or reissue the certificate with this name.",
    },
    Problem {
        id: "connection.tls-expired",
        title: "The server's TLS certificate has expired (or is not valid yet)",
        causes: &["the certificate was not renewed in time", "this machine's clock is wrong"],
        first_step: "Renew the certificate on the server (then `CONFIG SET tls-cert-file …` or restart Redis); check this machine's `date`.",
    },
    Problem {
        id: "connection.tls-client-cert",
        title: "Redis wants a client certificate, and none (or one it does not trust) was sent",
        causes: &[
            "the server has tls-auth-clients yes and upstream_tls.cert_file / key_file are not set",
            "the client certificate is not signed by the CA in the server's tls-ca-cert-file",
        ],
        first_step: "Set upstream_tls.cert_file and key_file to a certificate signed by the CA in Redis's tls-ca-cert-file.",
    },
    Problem {
        id: "connection.tls-handshake",
        title: "The TLS handshake failed",
        causes: &["no TLS version or cipher in common", "a certificate that cannot be parsed"],
        first_step: "Run `openssl s_client -connect HOST:PORT` to see the server's side of the handshake.",
    },
    Problem {
        id: "connection.tls-config",
        title: "The TLS settings cannot be used",
        causes: &["a CA, certificate or key file that is missing or unreadable", "no system root certificates (the ca-certificates package)"],
        first_step: "Fix the file named in the detail; `redoubt config check` lists every problem of [upstream_tls].",
    },
    Problem {
        id: "connection.not-redis",
        title: "Something other than Redis answered",
        causes: &["wrong port: another service (HTTP, a database) listens there", "a proxy in front of Redis that speaks another protocol"],
        first_step: "Check which program owns the port (`ss -ltnp | grep PORT`).",
    },
    Problem {
        id: "connection.closed",
        title: "The server closed the connection without a reply",
        causes: &[
            "the port requires TLS and drops plain-text clients",
            "a proxy or load balancer in front of Redis refused the connection",
            "Redis is shutting down",
        ],
        first_step: "Connect with `redis-cli -h HOST -p PORT PING` and read the server or proxy log.",
    },
    Problem {
        id: "connection.noauth",
        title: "Redis requires a password and none was given",
        causes: &["the URL lacks the password", "requirepass or ACL users were recently enabled on the server"],
        first_step: "Put the password in the URL: redis://:PASSWORD@host:port (or user:PASSWORD for an ACL user).",
    },
    Problem {
        id: "connection.wrongpass",
        title: "Redis rejected the user name or password",
        causes: &["wrong or rotated password", "the ACL user is disabled or does not exist"],
        first_step: "Compare with the server's configuration; ACL LOG on the server shows the failed attempts.",
    },
    Problem {
        id: "connection.denied",
        title: "Redis refuses remote clients: protected mode",
        causes: &["Redis has no password and is not bound to loopback only, so it only accepts local clients"],
        first_step: "Set a password (requirepass or ACL users) on the server, then connect with it; do not just turn protected mode off.",
    },
    Problem {
        id: "connection.max-clients",
        title: "Redis refused the connection: max number of clients reached",
        causes: &[
            "a connection leak, or one connection per request",
            "maxclients lowered by the process's file-descriptor limit",
            "idle connections piling up with timeout 0",
        ],
        first_step: "From an existing session, CLIENT LIST grouped by addr shows who holds the connections.",
    },
    Problem {
        id: "connection.noperm",
        title: "The doctor's user may not read INFO",
        causes: &["the URL's ACL user is restricted (as an application user should be)"],
        first_step: "Run the doctor as a user allowed +info +config|get +client|list +slowlog +latency +scan +type +ttl +acl|list +acl|dryrun.",
    },
    Problem {
        id: "connection.io",
        title: "The connection failed",
        causes: &["network reset", "the server crashed mid-reply"],
        first_step: "Retry; if it repeats, check the server log with `redoubt triage`.",
    },
];

/// The problem row for an id; every id used in this crate exists.
pub(crate) fn problem(id: &str) -> &'static Problem {
    PROBLEMS
        .iter()
        .find(|p| p.id == id)
        .unwrap_or(&PROBLEMS[PROBLEMS.len() - 1])
}

/// A critical finding for problem `id`, with `detail` the measured facts.
pub(crate) fn finding(id: &str, detail: String) -> Finding {
    let p = problem(id);
    Finding {
        id: p.id.to_string(),
        severity: Severity::Critical,
        title: p.title.to_string(),
        detail,
        fix: p.first_step.to_string(),
        causes: p.causes.iter().map(|c| c.to_string()).collect(),
    }
}

/// Which problem a transport error is.
pub(crate) fn classify(err: &ConnError) -> &'static str {
    match err {
        ConnError::Dns(_) => "connection.dns",
        ConnError::Connect(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection.refused",
            std::io::ErrorKind::TimedOut => "connection.timeout",
            _ => "connection.unreachable",
        },
        ConnError::Timeout(_) => "connection.timeout",
        // TLS records start with a content type 0x14..=0x17 and version
        // major 3: an alert (0x15) or handshake (0x16) is what a TLS
        // server sends back to a plain-text client.
        ConnError::NotResp { first }
            if first.len() >= 2 && (0x14..=0x17).contains(&first[0]) && first[1] == 3 =>
        {
            "connection.tls"
        }
        ConnError::NotResp { .. } => "connection.not-redis",
        ConnError::Closed => "connection.closed",
        ConnError::Io(_) => "connection.io",
        ConnError::Tls(f) => match f {
            tls::Failure::UnknownCa => "connection.tls-unknown-ca",
            tls::Failure::NameMismatch { .. } => "connection.tls-name-mismatch",
            tls::Failure::Expired | tls::Failure::NotYetValid => "connection.tls-expired",
            tls::Failure::NotTls => "connection.plain-port",
            tls::Failure::Closed => "connection.closed",
            tls::Failure::ClientCertRequired | tls::Failure::ClientCertRejected => {
                "connection.tls-client-cert"
            }
            tls::Failure::Other(_) => "connection.tls-handshake",
        },
    }
}

/// Which problem an error reply to the handshake is, if it is one that
/// stops the diagnosis.
pub(crate) fn classify_reply(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    let id = if upper.starts_with("NOAUTH") {
        "connection.noauth"
    } else if upper.starts_with("WRONGPASS")
        || upper.contains("INVALID PASSWORD")
        || upper.contains("INVALID USERNAME-PASSWORD")
    {
        "connection.wrongpass"
    } else if upper.starts_with("DENIED") {
        "connection.denied"
    } else if upper.contains("MAX NUMBER OF CLIENTS") {
        "connection.max-clients"
    } else if upper.starts_with("NOPERM") {
        "connection.noperm"
    } else {
        return None;
    };
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_row_is_complete_and_unique() {
        let mut ids = std::collections::HashSet::new();
        for p in problems() {
            assert!(p.id.starts_with("connection."), "{}", p.id);
            assert!(ids.insert(p.id), "duplicate {}", p.id);
            assert!(
                !p.title.is_empty() && !p.causes.is_empty() && !p.first_step.is_empty(),
                "{}",
                p.id
            );
            assert_eq!(problem(p.id).id, p.id);
        }
    }

    #[test]
    fn transport_errors_map_to_problems() {
        use std::io::{Error, ErrorKind};
        let cases: Vec<(ConnError, &str)> = vec![
            (ConnError::Dns("x".into()), "connection.dns"),
            (
                ConnError::Connect(Error::from(ErrorKind::ConnectionRefused)),
                "connection.refused",
            ),
            (
                ConnError::Connect(Error::from(ErrorKind::TimedOut)),
                "connection.timeout",
            ),
            (
                ConnError::Connect(Error::other("no route")),
                "connection.unreachable",
            ),
            (
                ConnError::Timeout(std::time::Duration::from_secs(1)),
                "connection.timeout",
            ),
            (
                ConnError::NotResp {
                    first: vec![0x15, 0x03, 0x01, 0x00, 0x02],
                },
                "connection.tls",
            ),
            (
                ConnError::NotResp {
                    first: b"HTTP/1.1 400".to_vec(),
                },
                "connection.not-redis",
            ),
            (ConnError::Closed, "connection.closed"),
            (
                ConnError::Io(Error::from(ErrorKind::ConnectionReset)),
                "connection.io",
            ),
        ];
        for (e, id) in cases {
            assert_eq!(classify(&e), id, "{e:?}");
            assert_eq!(problem(id).id, id);
        }
    }

    #[test]
    fn handshake_error_replies_map_to_problems() {
        let cases = [
            ("NOAUTH Authentication required.", Some("connection.noauth")),
            (
                "WRONGPASS invalid username-password pair or user is disabled.",
                Some("connection.wrongpass"),
            ),
            ("ERR invalid password", Some("connection.wrongpass")),
            (
                "DENIED Redis is running in protected mode because ...",
                Some("connection.denied"),
            ),
            (
                "ERR max number of clients reached",
                Some("connection.max-clients"),
            ),
            (
                "NOPERM this user has no permissions to run the 'info' command",
                Some("connection.noperm"),
            ),
            ("LOADING Redis is loading the dataset in memory", None),
        ];
        for (text, id) in cases {
            assert_eq!(classify_reply(text), id, "{text}");
        }
    }
}

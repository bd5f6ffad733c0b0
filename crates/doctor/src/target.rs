//! The Redis a diagnosis is about, parsed from a `redis://` or
//! `rediss://` URL (a `redis+sentinel://` URL's primary is found first,
//! in `diagnose`).

use std::net::IpAddr;

use thiserror::Error;

/// Default port when the URL names none.
pub const DEFAULT_PORT: u16 = upstream::url::DEFAULT_PORT;

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// A scheme Redoubt knows but does not speak yet (sentinel, cluster).
    #[error("scheme {0}:// is not supported yet")]
    Unsupported(String),
    /// Anything else that is not `redis://[user:pass@]host[:port][/db]`.
    #[error("invalid Redis URL: {0}")]
    Invalid(String),
    /// A `redis+sentinel://` URL whose Sentinels name no primary (or
    /// cannot be reached).
    #[error("{0}; check that the sentinels run and monitor this master (redis-cli -p 26379 SENTINEL masters)")]
    NoPrimary(String),
}

/// A parsed `redis[s]://[user:pass@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal (brackets removed for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user, when the URL names one.
    pub user: Option<String>,
    /// Password, when the URL carries one.
    pub password: Option<String>,
    /// Database number for `SELECT`.
    pub db: u32,
    /// `rediss://`: TLS.
    pub tls: bool,
}

impl Target {
    /// Parses a URL with the proxy's own parser ([`upstream::UpstreamUrl`]),
    /// so `redoubt doctor URL` accepts exactly what `--upstream URL` does.
    /// Percent-escapes in user and password are decoded.
    ///
    /// Without a scheme, `host[:port]` is read as `redis://host[:port]`,
    /// as `redis-cli -h host -p port` users write it.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        use upstream::UrlError as E;
        let with_scheme;
        let url = if url.contains("://") {
            url
        } else {
            with_scheme = format!("redis://{url}");
            &with_scheme
        };
        match upstream::UpstreamUrl::parse(url) {
            Ok(u) if u.sentinel.is_some() => Err(UrlError::Invalid(
                "a redis+sentinel:// URL names Sentinels, not a Redis; its primary is asked for first"
                    .into(),
            )),
            Ok(u) if u.cluster.is_some() => Err(UrlError::Invalid(
                "a redis+cluster:// URL names some nodes of a cluster; the primary of slot 0 is asked for first"
                    .into(),
            )),
            Ok(u) => Ok(Target {
                host: u.host,
                port: u.port,
                user: u.user,
                password: u.password,
                db: u.db,
                tls: u.tls,
            }),
            Err(E::NotSupportedYet(scheme)) => Err(UrlError::Unsupported(scheme)),
            Err(e @ (E::BadScheme(_) | E::Invalid { .. })) => Err(UrlError::Invalid(e.to_string())),
        }
    }

    /// `host:port`, bracketing IPv6 literals.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL without the password, safe to print and store.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let db = if self.db == 0 {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{}{db}", self.addr())
    }

    /// True when the host is this machine (loopback literal or
    /// `localhost`): only then do host checks (THP, swap, ...) describe the
    /// machine Redis runs on.
    pub fn is_local(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        self.host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url_parses_user_password_and_db() {
        let t = Target::parse("redis://app:p%40ss@10.0.0.5:6380/2").unwrap();
        assert_eq!(t.host, "10.0.0.5");
        assert_eq!(t.port, 6380);
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.db, 2);
        assert_eq!(t.redacted(), "redis://app:***@10.0.0.5:6380/2");
        assert!(!t.is_local());
    }

    #[test]
    fn password_only_and_default_port() {
        let t = Target::parse("redis://:secret@localhost").unwrap();
        assert_eq!(t.user, None);
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert_eq!(t.port, DEFAULT_PORT);
        assert!(t.is_local());
    }

    #[test]
    fn ipv6_literal_is_bracketed_and_local() {
        let t = Target::parse("redis://[::1]:7000").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.addr(), "[::1]:7000");
        assert!(t.is_local());
    }

    #[test]
    fn rediss_is_tls() {
        let t = Target::parse("rediss://:pw@h:6380").unwrap();
        assert!(t.tls);
        assert_eq!(t.redacted(), "rediss://:***@h:6380");
    }

    #[test]
    fn cluster_and_sentinel_urls_are_no_target_themselves() {
        // Their primary is asked for first (diagnose.rs).
        assert!(matches!(
            Target::parse("redis+cluster://h"),
            Err(UrlError::Invalid(_))
        ));
        assert!(matches!(
            Target::parse("rediss+cluster://h"),
            Err(UrlError::Unsupported(_))
        ));
        assert!(matches!(
            Target::parse("redis+sentinel://h:26379/m"),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_is_invalid() {
        for u in [
            "localhost:99999",
            "http://h",
            "redis://h:99999",
            "redis://h:1/x",
            "redis://:1",
        ] {
            assert!(matches!(Target::parse(u), Err(UrlError::Invalid(_))), "{u}");
        }
    }

    #[test]
    fn host_and_port_without_a_scheme_are_a_redis_url() {
        let t = Target::parse("10.0.0.5:7000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 7000));
        assert_eq!(Target::parse("localhost").unwrap().port, DEFAULT_PORT);
        assert_eq!(Target::parse("[::1]:7001").unwrap().addr(), "[::1]:7001");
    }

    #[test]
    fn truncated_percent_escape_is_kept_literally() {
        let t = Target::parse("redis://:ab%4@h").unwrap();
        assert_eq!(t.password.as_deref(), Some("ab%4"));
    }
}

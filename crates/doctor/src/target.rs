//! The Redis a diagnosis is about, parsed from a `redis://` URL.

use std::net::IpAddr;

use thiserror::Error;

/// Default port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    /// A scheme Redoubt knows but does not speak yet (`rediss://`, sentinel, cluster).
    #[error("scheme {0}:// is not supported yet")]
    Unsupported(String),
    /// Anything else that is not `redis://[user:pass@]host[:port][/db]`.
    #[error("invalid Redis URL: {0}")]
    Invalid(String),
}

/// A parsed `redis://[user:pass@]host[:port][/db]`.
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
}

impl Target {
    /// Parses a URL. Percent-escapes in user and password are decoded,
    /// since passwords often contain `@` or `:`.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            UrlError::Invalid(format!(
                "{url:?} has no scheme (expected redis://host:port)"
            ))
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => {}
            s @ ("rediss" | "redis+sentinel" | "redis+cluster" | "redis+tls") => {
                return Err(UrlError::Unsupported(s.into()))
            }
            s => {
                return Err(UrlError::Invalid(format!(
                    "unknown scheme {s:?} (expected redis://)"
                )))
            }
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (non_empty(percent_decode(u)), non_empty(percent_decode(p))),
                None => (non_empty(percent_decode(ui)), None),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() {
            return Err(UrlError::Invalid(format!("{url:?} has no host")));
        }
        let db_text = path.split(['?', '#']).next().unwrap_or("");
        let db = if db_text.is_empty() {
            0
        } else {
            db_text
                .parse()
                .map_err(|_| UrlError::Invalid(format!("database {db_text:?} is not a number")))?
        };
        Ok(Target {
            host,
            port,
            user,
            password,
            db,
        })
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
        format!("redis://{auth}{}{db}", self.addr())
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

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn split_host_port(hp: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError::Invalid(format!("unclosed '[' in {hp:?}")))?;
        (h, after.strip_prefix(':'))
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    };
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| {
            UrlError::Invalid(format!("port {p:?} is not a number from 1 to 65535"))
        })?,
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Work on bytes: slicing the str could split a multi-byte character.
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn tls_and_sentinel_schemes_are_not_supported_yet() {
        for u in [
            "rediss://h:6379",
            "redis+sentinel://h:26379",
            "redis+cluster://h",
        ] {
            assert!(
                matches!(Target::parse(u), Err(UrlError::Unsupported(_))),
                "{u}"
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for u in [
            "localhost:6379",
            "http://h",
            "redis://h:99999",
            "redis://h:1/x",
            "redis://:1",
        ] {
            assert!(matches!(Target::parse(u), Err(UrlError::Invalid(_))), "{u}");
        }
    }

    #[test]
    fn truncated_percent_escape_is_kept_literally() {
        let t = Target::parse("redis://:ab%4@h").unwrap();
        assert_eq!(t.password.as_deref(), Some("ab%4"));
    }
}

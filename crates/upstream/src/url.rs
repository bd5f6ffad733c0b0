//! Upstream address parsing, and the [`Endpoint`] a URL connects to.

use std::sync::Arc;

use thiserror::Error;

use crate::cluster::Cluster;
use crate::endpoint::Endpoint;
use crate::sentinel::{Sentinel, SentinelSpec};

/// Port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;
/// A Sentinel's port when `redis+sentinel://` names none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A parsed `redis://` or `rediss://[user:pass@]host:port[/db]`, or
/// `redis+sentinel://[user:pass@]host1:port1,host2:port2/master[/db]`
/// (the user and password are Redis's; the Sentinels' own are given with
/// [`with_sentinel_auth`](Self::with_sentinel_auth)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port (default 6379).
    pub port: u16,
    /// ACL user, if given.
    pub user: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// Database index (default 0).
    pub db: u32,
    /// `rediss://`: every connection is TLS.
    pub tls: bool,
    /// The TLS settings (`[upstream_tls]`), once [`with_tls`](Self::with_tls)
    /// gave them; a `rediss://` URL without them trusts the system's roots.
    tls_client: Option<tls::TlsClient>,
    /// `redis+sentinel://`: the primary is wherever these Sentinels say;
    /// `host` and `port` are the first Sentinel's.
    pub sentinel: Option<Arc<Sentinel>>,
    /// `redis+cluster://`: a Redis Cluster, first reached through the
    /// nodes named; `host` and `port` are the first one's.
    pub cluster: Option<Arc<Cluster>>,
}

/// Why an upstream URL was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A scheme we plan to support but do not yet.
    #[error("scheme '{0}://' is not supported yet; use redis://, rediss://host:port, redis+sentinel://host:26379,host2:26379/mastername or redis+cluster://host:port,host2:port")]
    NotSupportedYet(String),
    /// Anything else that is not `redis://`.
    #[error("unknown scheme in '{0}'; expected redis:// or rediss://[user:pass@]host:port[/db]")]
    BadScheme(String),
    /// Malformed host, port or db.
    #[error("invalid upstream URL '{url}': {why}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
}

impl UpstreamUrl {
    /// Parses an upstream URL.
    pub fn parse(url: &str) -> Result<UpstreamUrl, UrlError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(UrlError::BadScheme(url.to_string()));
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis" => false,
            "rediss" => true,
            "redis+sentinel" => return parse_sentinel(url, rest),
            "redis+cluster" => return parse_cluster(url, rest),
            "rediss+cluster" | "rediss+sentinel" | "redis+tls" | "unix" => {
                return Err(UrlError::NotSupportedYet(scheme.to_ascii_lowercase()))
            }
            _ => return Err(UrlError::BadScheme(url.to_string())),
        };
        let invalid = |why: &str| UrlError::Invalid {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            // `?options` and `#fragment` after the db are accepted and ignored.
            Some((hp, path)) => match path.split(['?', '#']).next().unwrap_or("") {
                "" => (hp, 0),
                db => (hp, db.parse().map_err(|_| invalid("db must be a number"))?),
            },
            None => (hostpart, 0),
        };
        let (host, port) = host_port(hostport, DEFAULT_PORT).map_err(|w| invalid(&w))?;
        let (user, password) = user_password(auth);
        Ok(UpstreamUrl {
            host,
            port,
            user,
            password,
            db,
            tls,
            tls_client: None,
            sentinel: None,
            cluster: None,
        })
    }

    /// This Sentinel URL with the Sentinels' own credentials (`[sentinel]`
    /// in the configuration); no effect on other URLs.
    pub fn with_sentinel_auth(mut self, auth: Option<crate::Credentials>) -> UpstreamUrl {
        if let Some(s) = &self.sentinel {
            let mut spec = s.spec().clone();
            spec.auth = auth;
            self.sentinel = Some(Sentinel::new(spec, self.redis_credentials()));
        }
        self
    }

    fn redis_credentials(&self) -> Option<crate::Credentials> {
        self.password.clone().map(|password| crate::Credentials {
            user: self.user.clone(),
            password,
        })
    }

    /// This URL with its TLS settings (used only by a `rediss://` URL).
    pub fn with_tls(mut self, client: tls::TlsClient) -> UpstreamUrl {
        self.tls_client = Some(client);
        self
    }

    /// Where connections go: the address, and for `rediss://` the TLS
    /// settings and the host name the certificate must carry (also sent
    /// as SNI).
    pub fn endpoint(&self) -> Endpoint {
        if let Some(s) = &self.sentinel {
            return Endpoint::followed(s.clone());
        }
        if let Some(c) = &self.cluster {
            return Endpoint::cluster(c.clone());
        }
        if !self.tls {
            return Endpoint::plain(self.addr());
        }
        let client = match &self.tls_client {
            Some(c) => Ok(c.clone()),
            None => crate::endpoint::system_tls(),
        };
        Endpoint::tls(self.addr(), &self.host, client)
    }

    /// `host:port` for connecting (for a Sentinel URL, the primary's now).
    pub fn addr(&self) -> String {
        if self.sentinel.is_some() || self.cluster.is_some() {
            return self.endpoint().addr();
        }
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The handshake of one of Redoubt's own control connections (prober,
    /// tracking, replica link, lease): this URL's credentials, database 0,
    /// protocol `proto`, and `CLIENT SETNAME name` so operators can tell
    /// them apart in `CLIENT LIST`.
    pub fn control_handshake(&self, proto: u8, name: &str) -> crate::Handshake {
        crate::Handshake {
            auth: self.redis_credentials(),
            db: 0,
            proto,
            name: Some(name.to_string()),
        }
    }

    /// The URL without its password, for logs and status pages.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        if let Some(s) = &self.sentinel {
            let spec = s.spec();
            return format!(
                "redis+sentinel://{auth}{}/{}/{}",
                spec.sentinels.join(","),
                spec.master,
                self.db
            );
        }
        if let Some(c) = &self.cluster {
            return format!("redis+cluster://{auth}{}", c.seeds().join(","));
        }
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{auth}{}/{}", self.addr(), self.db)
    }
}

/// What a URL naming several hosts (Sentinels, cluster nodes) has:
/// `[user:pass@]h1[:p1],h2[:p2]…[/path]`.
struct Hosts<'a> {
    /// The credentials, and the first host as `host` and `port`.
    base: UpstreamUrl,
    /// Every host as `host:port`.
    addrs: Vec<String>,
    /// What follows the first `/`, if anything does.
    path: Option<&'a str>,
}

fn parse_hosts<'a>(
    url: &str,
    rest: &'a str,
    default_port: u16,
    none_named: &str,
) -> Result<Hosts<'a>, UrlError> {
    let invalid = |why: &str| UrlError::Invalid {
        url: url.to_string(),
        why: why.to_string(),
    };
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hosts, path) = match hostpart.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (hostpart, None),
    };
    let named = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| host_port(h, default_port).map_err(|w| invalid(&w)))
        .collect::<Result<Vec<_>, _>>()?;
    let Some((host, port)) = named.first().cloned() else {
        return Err(invalid(none_named));
    };
    let addrs = named
        .iter()
        .map(|(h, p)| crate::sentinel::join_host_port(h, &p.to_string()))
        .collect();
    let (user, password) = user_password(auth);
    Ok(Hosts {
        base: UpstreamUrl {
            host,
            port,
            user,
            password,
            db: 0,
            tls: false,
            tls_client: None,
            sentinel: None,
            cluster: None,
        },
        addrs,
        path,
    })
}

/// `redis+sentinel://[user:pass@]host1[:port1],host2[:port2]/master[/db]`.
fn parse_sentinel(url: &str, rest: &str) -> Result<UpstreamUrl, UrlError> {
    let invalid = |why: &str| UrlError::Invalid {
        url: url.to_string(),
        why: why.to_string(),
    };
    let Hosts {
        base: mut u,
        addrs: sentinels,
        path,
    } = parse_hosts(url, rest, DEFAULT_SENTINEL_PORT, "no sentinel is named")?;
    let Some(path) = path else {
        return Err(invalid(
            "the master's name is missing: redis+sentinel://host:26379,host2:26379/mastername",
        ));
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let (master, db) = match path.split_once('/') {
        Some((m, "")) => (m, 0),
        Some((m, db)) => (m, db.parse().map_err(|_| invalid("db must be a number"))?),
        None => (path, 0),
    };
    if master.is_empty() {
        return Err(invalid("the master's name is empty"));
    }
    u.db = db;
    u.sentinel = Some(Sentinel::new(
        SentinelSpec {
            sentinels,
            master: decode(master),
            auth: None,
        },
        u.redis_credentials(),
    ));
    Ok(u)
}

/// `redis+cluster://[user:pass@]host1[:port1][,host2[:port2]…][/0]`.
fn parse_cluster(url: &str, rest: &str) -> Result<UpstreamUrl, UrlError> {
    let Hosts {
        base: mut u,
        addrs: seeds,
        path,
    } = parse_hosts(url, rest, DEFAULT_PORT, "no cluster node is named")?;
    match path.unwrap_or("").split(['?', '#']).next().unwrap_or("") {
        "" | "0" => {}
        _ => {
            return Err(UrlError::Invalid {
                url: url.to_string(),
                why: "Redis Cluster has only database 0; leave the /db out".into(),
            })
        }
    }
    u.cluster = Some(Cluster::new(seeds, u.redis_credentials()));
    Ok(u)
}

/// `host[:port]` or `[v6][:port]`.
fn host_port(hostport: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in IPv6 host".to_string())?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err("host is empty".into());
    }
    let port = if port.is_empty() {
        default
    } else {
        port.parse()
            .map_err(|_| "port must be a number from 1 to 65535".to_string())?
    };
    Ok((host, port))
}

fn user_password(auth: Option<&str>) -> (Option<String>, Option<String>) {
    match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => (
                (!u.is_empty()).then(|| decode(u)),
                (!p.is_empty()).then(|| decode(p)),
            ),
            None => (Some(decode(a)).filter(|u| !u.is_empty()), None),
        },
    }
}

/// Percent-decoding for user and password (`%40` for `@`).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
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
    fn parses_full_and_minimal_urls() {
        let u = UpstreamUrl::parse("redis://app:p%40ss@10.0.0.1:6390/3").unwrap();
        assert_eq!(
            u,
            UpstreamUrl {
                host: "10.0.0.1".into(),
                port: 6390,
                user: Some("app".into()),
                password: Some("p@ss".into()),
                db: 3,
                tls: false,
                tls_client: None,
                sentinel: None,
                cluster: None,
            }
        );
        let u = UpstreamUrl::parse("redis://localhost").unwrap();
        assert_eq!((u.port, u.db, u.user, u.password), (6379, 0, None, None));
        let u = UpstreamUrl::parse("redis://:secret@h:1").unwrap();
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (None, Some("secret"))
        );
        assert_eq!(u.redacted(), "redis://:***@h:1/0");
    }

    #[test]
    fn rediss_is_tls_with_the_host_as_server_name() {
        let u = UpstreamUrl::parse("rediss://app:pw@redis.example:6380/1").unwrap();
        assert!(u.tls);
        assert_eq!(u.redacted(), "rediss://app:***@redis.example:6380/1");
        let e = u.endpoint();
        assert!(e.is_tls());
        assert_eq!(e.addr(), "redis.example:6380");
        assert!(!UpstreamUrl::parse("redis://h").unwrap().endpoint().is_tls());
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_and_db() {
        let u =
            UpstreamUrl::parse("redis+sentinel://app:pw@s1:5000,s2,[::1]:5001/mymaster/2").unwrap();
        let s = u.sentinel.clone().unwrap();
        assert_eq!(s.spec().sentinels, ["s1:5000", "s2:26379", "[::1]:5001"]);
        assert_eq!(s.spec().master, "mymaster");
        assert_eq!((u.db, u.user.as_deref()), (2, Some("app")));
        assert_eq!(
            u.redacted(),
            "redis+sentinel://app:***@s1:5000,s2:26379,[::1]:5001/mymaster/2"
        );
        assert!(u.endpoint().addr().contains("not known yet"));
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel:///m",
        ] {
            assert!(
                matches!(UpstreamUrl::parse(bad), Err(UrlError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cluster_url_names_its_seed_nodes_and_only_database_0() {
        let u = UpstreamUrl::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2,[::1]:7002")
            .expect("parses");
        let c = u.cluster.as_ref().expect("a cluster");
        assert_eq!(c.seeds(), ["10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002"]);
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(
            u.redacted(),
            "redis+cluster://u:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
        );
        assert!(UpstreamUrl::parse("redis+cluster://h:1/0").is_ok());
        let e = UpstreamUrl::parse("redis+cluster://h:1/3").unwrap_err();
        assert!(e.to_string().contains("only database 0"), "{e}");
        assert!(UpstreamUrl::parse("redis+cluster:///").is_err());
    }

    #[test]
    fn unsupported_schemes_say_not_supported_yet() {
        for s in ["rediss+sentinel://h:1/m", "rediss+cluster://h:1"] {
            let e = UpstreamUrl::parse(s).unwrap_err();
            assert!(e.to_string().contains("not supported yet"), "{e}");
        }
        assert!(matches!(
            UpstreamUrl::parse("http://h"),
            Err(UrlError::BadScheme(_))
        ));
        assert!(matches!(
            UpstreamUrl::parse("redis://h:99999"),
            Err(UrlError::Invalid { .. })
        ));
        assert!(matches!(
            UpstreamUrl::parse("redis://h:1/x"),
            Err(UrlError::Invalid { .. })
        ));
    }
}

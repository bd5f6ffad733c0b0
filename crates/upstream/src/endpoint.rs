//! [`Endpoint`]: where a connection to Redis goes and how (plain or TLS).
//! Every connection to Redis is opened by [`Endpoint::connect`].

use std::fmt;
use std::sync::{Arc, OnceLock};

use tls::{ConnectFailure, Failure, TlsClient};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::conn::ConnectError;
use crate::sentinel::Sentinel;

/// An address, and for TLS the settings and the name to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    addr: String,
    host: String,
    /// `Err`: TLS was asked for but its settings could not be built; every
    /// connect fails with this reason.
    tls: Option<Result<TlsClient, String>>,
    /// Set for a `redis+sentinel://` upstream: the address is the
    /// primary's at the moment of each connect.
    primary: Option<Arc<Sentinel>>,
    /// Set for a `redis+cluster://` upstream: [`Endpoint::connect`] goes
    /// to the cluster's default node, and a [`crate::Conn`] is a router.
    cluster: Option<Arc<Cluster>>,
}

/// Resolves once the primary moved away from where a connection went
/// ([`Endpoint::moved`]); never for a fixed address.
pub struct Moved(Option<watch::Receiver<Option<String>>>);

impl Moved {
    /// Waits for the move.
    pub async fn wait(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// Whether this can ever resolve (a followed address).
    pub fn is_followed(&self) -> bool {
        self.0.is_some()
    }
}

impl Endpoint {
    /// Plain TCP to `addr` (`host:port`).
    pub fn plain(addr: impl Into<String>) -> Endpoint {
        let addr = addr.into();
        Endpoint {
            host: host_of(&addr),
            addr,
            tls: None,
            primary: None,
            cluster: None,
        }
    }

    /// A Redis Cluster reached through its slot map.
    pub fn cluster(cluster: Arc<Cluster>) -> Endpoint {
        Endpoint {
            addr: String::new(),
            host: String::new(),
            tls: None,
            primary: None,
            cluster: Some(cluster),
        }
    }

    /// The cluster, for a `redis+cluster://` endpoint.
    pub fn cluster_of(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Wherever `sentinel` says the primary is, at each connect.
    pub fn followed(sentinel: Arc<Sentinel>) -> Endpoint {
        Endpoint {
            addr: String::new(),
            host: String::new(),
            tls: None,
            primary: Some(sentinel),
            cluster: None,
        }
    }

    /// Taken before connecting: resolves once the primary moves away from
    /// the address the connection went to, so the connection is closed
    /// and the next one goes to the new primary.
    pub fn moved(&self) -> Moved {
        Moved(self.primary.as_ref().map(|s| s.watch_primary()))
    }

    /// TLS to `addr`, verifying the certificate against `host`.
    pub fn tls(addr: impl Into<String>, host: &str, client: Result<TlsClient, String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            host: host.to_string(),
            tls: Some(client),
            primary: None,
            cluster: None,
        }
    }

    /// `host:port` (for a followed endpoint, the primary's now).
    pub fn addr(&self) -> String {
        if let Some(c) = &self.cluster {
            return c.default_node();
        }
        match &self.primary {
            Some(s) => s
                .primary()
                .unwrap_or_else(|| format!("(primary of '{}', not known yet)", s.spec().master)),
            None => self.addr.clone(),
        }
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection: TCP, then the TLS handshake when asked for.
    pub async fn connect(&self) -> Result<tls::Stream, ConnectError> {
        let client = match &self.tls {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(why)) => {
                return Err(ConnectError::Tls {
                    addr: self.addr.clone(),
                    failure: Failure::Other(why.clone()),
                })
            }
        };
        let (addr, host) = match &self.primary {
            None if self.cluster.is_some() => {
                let addr = self.addr();
                let host = host_of(&addr);
                (addr, host)
            }
            Some(s) => {
                let Some(addr) = s.primary() else {
                    return Err(ConnectError::Io {
                        addr: format!("sentinel master '{}'", s.spec().master),
                        why: s.unknown_why(),
                    });
                };
                let host = host_of(&addr);
                (addr, host)
            }
            None => (self.addr.clone(), self.host.clone()),
        };
        tls::connect(addr.as_str(), &host, client)
            .await
            .map_err(|e| match e {
                ConnectFailure::Tcp(e) => ConnectError::from_io(&addr, e),
                ConnectFailure::Tls(failure) => ConnectError::Tls { addr, failure },
            })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr())
    }
}

impl From<String> for Endpoint {
    fn from(addr: String) -> Self {
        Endpoint::plain(addr)
    }
}

impl From<&str> for Endpoint {
    fn from(addr: &str) -> Self {
        Endpoint::plain(addr)
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> String {
    let h = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    h.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// TLS with the system's roots, for a `rediss://` URL given no settings;
/// built once (reading the system's store is not free).
pub(crate) fn system_tls() -> Result<TlsClient, String> {
    static SYSTEM: OnceLock<Result<TlsClient, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| TlsClient::new(&tls::ClientOptions::default()).map_err(|e| e.to_string()))
        .clone()
}

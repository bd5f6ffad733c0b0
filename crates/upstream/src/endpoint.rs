//! [`Endpoint`]: where a connection to Redis goes and how (plain or TLS).
//! Every connection to Redis is opened by [`Endpoint::connect`].

use std::fmt;
use std::sync::OnceLock;

use tls::{ConnectFailure, Failure, TlsClient};

use crate::conn::ConnectError;

/// An address, and for TLS the settings and the name to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    addr: String,
    host: String,
    /// `Err`: TLS was asked for but its settings could not be built; every
    /// connect fails with this reason.
    tls: Option<Result<TlsClient, String>>,
}

impl Endpoint {
    /// Plain TCP to `addr` (`host:port`).
    pub fn plain(addr: impl Into<String>) -> Endpoint {
        let addr = addr.into();
        Endpoint {
            host: host_of(&addr),
            addr,
            tls: None,
        }
    }

    /// TLS to `addr`, verifying the certificate against `host`.
    pub fn tls(addr: impl Into<String>, host: &str, client: Result<TlsClient, String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            host: host.to_string(),
            tls: Some(client),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
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
        tls::connect(self.addr.as_str(), &self.host, client)
            .await
            .map_err(|e| match e {
                ConnectFailure::Tcp(e) => ConnectError::from_io(&self.addr, e),
                ConnectFailure::Tls(failure) => ConnectError::Tls {
                    addr: self.addr.clone(),
                    failure,
                },
            })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
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

//! The server side: [`ServerOptions`] (`[tls]`) and [`Acceptor`], which
//! runs the handshake of each client accepted on the TLS listener.
//!
//! The configuration sits behind a lock that is only read to clone an
//! `Arc` at each handshake, so [`Acceptor::reload`] (SIGHUP) swaps in a new
//! certificate for the next handshakes while connections already open keep
//! theirs.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::failure::Failure;
use crate::stream::Stream;
use crate::{pem, provider, TlsError};

/// The TLS listener's certificate (`[tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Our certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this
    /// file.
    pub client_ca_file: Option<PathBuf>,
}

/// Runs server handshakes with the current configuration.
#[derive(Debug)]
pub struct Acceptor {
    options: ServerOptions,
    current: RwLock<Arc<ServerConfig>>,
}

impl Acceptor {
    /// Reads the files and builds the first configuration.
    pub fn new(options: ServerOptions) -> Result<Acceptor, TlsError> {
        let config = build(&options)?;
        Ok(Acceptor {
            options,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again. On success later handshakes use the new
    /// certificate; on failure the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.options)?;
        if let Ok(mut g) = self.current.write() {
            *g = config;
        }
        Ok(())
    }

    /// The options it reads.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The server handshake on an accepted socket.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Stream, Failure> {
        let config = match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map(|s| Stream::Tls(Box::new(s.into())))
            .map_err(|e| Failure::from_io(&e))
    }
}

fn build(o: &ServerOptions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &o.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(pem::roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(pem::certs(&o.cert_file)?, pem::key(&o.key_file)?)
        .map_err(|e| {
            TlsError::Config(format!(
                "certificate {} and key {}: {e}",
                o.cert_file.display(),
                o.key_file.display()
            ))
        })?;
    Ok(Arc::new(config))
}

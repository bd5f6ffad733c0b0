//! The client side: [`ClientOptions`] as configured, [`TlsClient`] built
//! from them, and [`connect`], the one way Redoubt opens a connection to
//! Redis.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::TlsConnector;

use crate::failure::Failure;
use crate::stream::Stream;
use crate::{pem, provider, TlsError};

/// How to talk TLS to Redis (`[upstream_tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Trust only the CAs in this PEM file; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Our certificate chain, for Redis's `tls-auth-clients yes`.
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests and emergencies only: it
    /// gives up knowing who is at the other end.
    pub insecure_skip_verify: bool,
}

/// A rustls client configuration ready to connect with. Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    options: ClientOptions,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("options", &self.options)
            .finish()
    }
}

/// Two clients are the same when built from the same options.
impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// Reads the files `options` names and builds the configuration.
    pub fn new(options: &ClientOptions) -> Result<TlsClient, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if options.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        } else {
            let roots = match &options.ca_file {
                Some(p) => pem::roots(p)?,
                None => pem::system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&options.cert_file, &options.key_file) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(pem::certs(c)?, pem::key(k)?)
                .map_err(|e| {
                    TlsError::Config(format!(
                        "client certificate {} and key {}: {e}",
                        c.display(),
                        k.display()
                    ))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "a client certificate needs both cert_file and key_file".into(),
                ))
            }
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            options: options.clone(),
        })
    }

    /// The options it was built from.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Runs the TLS handshake on a connected socket, naming `host` (SNI,
    /// and the name the certificate must carry).
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> Result<Stream, Failure> {
        let name = server_name(host)?;
        self.connector
            .connect(name, tcp)
            .await
            .map(|s| Stream::Tls(Box::new(s.into())))
            .map_err(|e| Failure::from_io(&e))
    }
}

/// `host` as rustls wants it: a DNS name or an IP address (brackets of an
/// IPv6 literal removed).
fn server_name(host: &str) -> Result<ServerName<'static>, Failure> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string()).map_err(|_| {
        Failure::Other(format!(
            "'{host}' is not a host name TLS can check a certificate against"
        ))
    })
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The TCP connection could not be made.
    Tcp(io::Error),
    /// TCP connected, the TLS handshake failed.
    Tls(Failure),
}

/// Connects to `addr` over TCP (no Nagle: commands are small and
/// pipelined), then, with `tls`, runs the handshake for `host`. The one
/// function every connection to Redis goes through.
pub async fn connect(
    addr: impl ToSocketAddrs,
    host: &str,
    tls: Option<&TlsClient>,
) -> Result<Stream, ConnectFailure> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(ConnectFailure::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectFailure::Tcp)?;
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(c) => c.handshake(tcp, host).await.map_err(ConnectFailure::Tls),
    }
}

/// `insecure_skip_verify`: any certificate is taken. Handshake signatures
/// are still checked, so the session is at least with the holder of the
/// key it presented.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! TLS for Redoubt, on both sides: `rediss://` upstreams and the `[tls]`
//! client listener.
//!
//! Every connection Redoubt makes to Redis — probes, data connections, the
//! replica link, the replay, the doctor — is opened by [`connect`], which
//! returns a [`Stream`]: plain TCP or TLS. `Stream` is an enum rather than
//! a boxed trait object so the plain path costs one branch and nothing on
//! the heap.
//!
//! # Layout
//! - [`stream`]: [`Stream`] and its split halves.
//! - [`client`]: [`ClientOptions`] (`[upstream_tls]`), [`TlsClient`] (the
//!   rustls client configuration built from them), and [`connect`].
//! - [`server`]: [`ServerOptions`] (`[tls]`) and [`Acceptor`], whose
//!   certificate can be reloaded while connections stay open.
//! - [`pem`]: certificates, keys and roots read from PEM files, with
//!   errors that name the file.
//! - [`failure`]: [`Failure`], why a handshake failed, in words (unknown
//!   CA, name mismatch, expired, not a TLS port, …).
//! - [`read_buffers`]: emptied read buffers lent to the next read on the
//!   same thread.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod failure;
pub mod pem;
pub mod read_buffers;
pub mod server;
pub mod stream;

pub use client::{connect, ClientOptions, ConnectFailure, TlsClient};
pub use failure::Failure;
pub use server::{Acceptor, ServerOptions};
pub use stream::{send, ReadHalf, ReuniteError, SendError, Stream, WriteHalf};

/// Why TLS settings could not be turned into a configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file, as configured.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the combination (a key that does not match its
    /// certificate, no usable roots, …).
    #[error("{0}")]
    Config(String),
}

/// The crypto provider every configuration here uses: ring, which builds
/// with a C compiler alone (aws-lc-rs would need cmake). rustls deprecates
/// it for lacking post-quantum key exchange, which Redis's OpenSSL does
/// not offer by default either.
#[allow(deprecated)]
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

//! Certificates, private keys and root stores from PEM files, each error
//! naming the file and what was expected in it.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

fn file_error(path: &Path, why: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Every certificate in a PEM file (a chain: the leaf first).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        file_error(
            path,
            format!("holds no usable private key (expected -----BEGIN PRIVATE KEY----- or RSA/EC PRIVATE KEY): {e}"),
        )
    })
}

/// A root store of the certificates in a PEM file (one or more CAs).
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| file_error(path, format!("a certificate is not a usable CA: {e}")))?;
    }
    Ok(store)
}

/// The system's roots (the platform store, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set).
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(TlsError::Config(format!(
            "no system root certificates found{why}; install the ca-certificates package or set upstream_tls.ca_file"
        )));
    }
    Ok(store)
}

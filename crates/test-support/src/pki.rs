//! Certificates made for a test, in a temporary directory: a CA, a server
//! certificate for 127.0.0.1 and localhost, a client certificate, and the
//! bad ones the doctor must explain (expired, for another name, from
//! another CA). Nothing is kept in the repository.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// One certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A test PKI on disk. The directory is removed on drop.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA every good certificate is signed by.
    pub ca: PathBuf,
    /// A CA nobody trusts, and its key pair's files.
    pub other_ca: PathBuf,
    /// Server certificate for 127.0.0.1, ::1 and localhost.
    pub server: CertFiles,
    /// A second server certificate for the same names (a renewed one: for
    /// reload tests), with another serial and key.
    pub server_renewed: CertFiles,
    /// Client certificate (`extendedKeyUsage = clientAuth`).
    pub client: CertFiles,
    /// Server certificate for the right names whose validity ended in 2021.
    pub expired: CertFiles,
    /// Server certificate for `wrong.example` only.
    pub wrong_name: CertFiles,
    /// Server certificate for the right names signed by `other_ca`.
    pub untrusted: CertFiles,
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).expect("self-sign the CA");
    Ca { cert, key }
}

fn leaf(
    dir: &Path,
    file: &str,
    issuer: &Ca,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> CertFiles {
    let key = KeyPair::generate().expect("generate a key");
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![usage];
    if expired {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    } else {
        p.not_before = date_time_ymd(2024, 1, 1);
        p.not_after = date_time_ymd(2099, 1, 1);
    }
    let cert = p
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("sign a leaf");
    let files = CertFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write a certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write a key");
    files
}

const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

impl TestPki {
    /// Makes every certificate (a few milliseconds).
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let d = dir.path();
        let good = ca("Redoubt test CA");
        let other = ca("Someone else's CA");
        let ca_path = d.join("ca.crt");
        std::fs::write(&ca_path, good.cert.pem()).expect("write the CA");
        let other_path = d.join("other-ca.crt");
        std::fs::write(&other_path, other.cert.pem()).expect("write the other CA");
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        TestPki {
            ca: ca_path,
            other_ca: other_path,
            server: leaf(d, "server", &good, SERVER_NAMES, server.clone(), false),
            server_renewed: leaf(
                d,
                "server-renewed",
                &good,
                SERVER_NAMES,
                server.clone(),
                false,
            ),
            client: leaf(
                d,
                "client",
                &good,
                &["redoubt-client"],
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
            ),
            expired: leaf(d, "expired", &good, SERVER_NAMES, server.clone(), true),
            wrong_name: leaf(
                d,
                "wrong-name",
                &good,
                &["wrong.example"],
                server.clone(),
                false,
            ),
            untrusted: leaf(d, "untrusted", &other, SERVER_NAMES, server, false),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

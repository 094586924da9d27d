//! TLS for the circles' listeners: a certificate chain and its private key,
//! read from PEM files and checked once into a rustls server configuration
//! ([`TlsConfig`]) that every circle of a host shares. The crypto provider is
//! `ring`, named explicitly, so the configuration never depends on a process
//! default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The one application protocol the listeners speak: a WebSocket upgrade is
/// an HTTP/1.1 request.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A checked server certificate and key. Cheap to clone (one shared rustls
/// configuration); its `Debug` names only the files it came from.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads the certificate chain (`cert`: PEM, the server's certificate
    /// first, then any intermediates) and its private key (`key`: PEM,
    /// PKCS#8, PKCS#1 or SEC1). A file that cannot be read, holds no
    /// certificate or no key, or a key that is not the certificate's is
    /// [`Error::Tls`] naming the file and what is wrong.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let config = server_config(&cert_pem, &key_pem, cert, key)?;
        Ok(TlsConfig {
            config: Arc::new(config),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// The certificate file, for messages.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The rustls configuration the listeners are given (a copy sharing
    /// the certificate and key).
    pub(crate) fn rustls(&self) -> rustls::ServerConfig {
        (*self.config).clone()
    }
}

fn tls_error(file: &Path, problem: impl Into<String>) -> Error {
    Error::Tls {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| tls_error(file, format!("cannot be read: {e}")))
}

fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(cert, format!("is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(tls_error(
            cert,
            "holds no certificate (expected a PEM block `BEGIN CERTIFICATE`)",
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => tls_error(
            key,
            "holds no private key (expected a PEM block `BEGIN PRIVATE KEY`, \
             `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)",
        ),
        other => tls_error(key, format!("is not valid PEM: {other}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, format!("cannot be used: {e}")))?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => tls_error(
                key,
                format!(
                    "is not the private key of the certificate in {}",
                    cert.display()
                ),
            ),
            rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => {
                tls_error(
                    cert,
                    format!("holds a certificate that cannot be used: {e}"),
                )
            }
            other => tls_error(
                key,
                format!("cannot be used with {}: {other}", cert.display()),
            ),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn files(cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert).expect("write cert");
        std::fs::write(&key_path, key).expect("write key");
        Files {
            _dir: dir,
            cert: cert_path,
            key: key_path,
        }
    }

    fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen")
    }

    fn refused(result: Result<TlsConfig>) -> (PathBuf, String) {
        match result.expect_err("must be refused") {
            Error::Tls { file, problem } => (file, problem),
            other => panic!("not a TLS error: {other}"),
        }
    }

    #[test]
    fn a_matching_certificate_and_key_load_and_debug_shows_only_paths() {
        let pair = self_signed();
        let f = files(&pair.cert.pem(), &pair.signing_key.serialize_pem());
        let tls = TlsConfig::from_pem_files(&f.cert, &f.key).expect("loads");
        assert_eq!(tls.rustls().alpn_protocols, vec![b"http/1.1".to_vec()]);
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains("cert.pem"), "{shown}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key_file() {
        let (one, other) = (self_signed(), self_signed());
        let f = files(&one.cert.pem(), &other.signing_key.serialize_pem());
        let (file, problem) = refused(TlsConfig::from_pem_files(&f.cert, &f.key));
        assert_eq!(file, f.key);
        assert!(
            problem.contains("not the private key of the certificate"),
            "{problem}"
        );
    }

    #[test]
    fn missing_unreadable_or_swapped_files_name_the_file_and_the_problem() {
        let pair = self_signed();
        let (cert, key) = (pair.cert.pem(), pair.signing_key.serialize_pem());
        let f = files("not a certificate\n", &key);
        let (file, problem) = refused(TlsConfig::from_pem_files(&f.cert, &f.key));
        assert_eq!(file, f.cert);
        assert!(problem.contains("holds no certificate"), "{problem}");

        let f = files(&cert, &cert);
        let (file, problem) = refused(TlsConfig::from_pem_files(&f.cert, &f.key));
        assert_eq!(file, f.key);
        assert!(problem.contains("holds no private key"), "{problem}");

        let f = files(&cert, &key);
        let gone = f.cert.with_file_name("absent.pem");
        let (file, problem) = refused(TlsConfig::from_pem_files(&gone, &f.key));
        assert_eq!(file, gone);
        assert!(problem.contains("cannot be read"), "{problem}");

        let f = files(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
        );
        let (file, problem) = refused(TlsConfig::from_pem_files(&f.cert, &f.key));
        assert_eq!(file, f.cert);
        assert!(problem.contains("cannot be used"), "{problem}");
    }
}

//! TLS on the client side of `cmd`: reading a CA file (`play --ca`,
//! `--redis-ca`), the rustls configuration `play` connects to `wss://`
//! with, and turning a failed TLS handshake into a sentence a user can act
//! on. The server side (`--tls-cert`, `--tls-key`) is
//! `server_ws::TlsConfig`.
//!
//! One crypto provider for the whole process: `ring`, installed as the
//! process default by [`install_provider`] (redis-rs builds its rustls
//! configurations from the default) and named explicitly here.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::UsageError;

/// Makes `ring` the process's rustls provider, before any TLS is set up.
pub fn install_provider() {
    // Err only when a provider is already installed: then it stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA file: its PEM text and the certificates in it (at least one).
pub struct CaFile {
    /// The file's bytes, as given.
    pub pem: Vec<u8>,
    /// The certificates it holds.
    pub certs: Vec<CertificateDer<'static>>,
}

/// Reads the CA certificates of `flag` (e.g. `--ca`) from `path`: a file
/// that cannot be read or holds no certificate is a usage error naming the
/// flag and the file.
pub fn read_ca(flag: &str, path: &Path) -> anyhow::Result<CaFile> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| UsageError(format!("{flag} {shown} cannot be read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError(format!("{flag} {shown} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(UsageError(format!(
            "{flag} {shown} holds no certificate (expected a PEM block `BEGIN CERTIFICATE`)"
        ))
        .into());
    }
    Ok(CaFile { pem, certs })
}

/// The configuration `play` connects to `wss://` with: the system's root
/// certificates plus, with `--ca`, the certificates of that file (a private
/// CA, or a self-signed server certificate itself).
pub fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    // The system store may be missing or partly unreadable; what loads is used.
    let system = rustls_native_certs::load_native_certs();
    let _ = roots.add_parsable_certificates(system.certs);
    if let Some(path) = ca {
        for cert in read_ca("--ca", path)?.certs {
            roots.add(cert).map_err(|e| {
                UsageError(format!(
                    "--ca {} holds a certificate that cannot be trusted as a CA: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error inside a failed connection, if TLS is what failed.
fn rustls_error(error: &tokio_tungstenite::tungstenite::Error) -> Option<&rustls::Error> {
    use tokio_tungstenite::tungstenite::{Error, error::TlsError};
    match error {
        Error::Tls(TlsError::Rustls(e)) => Some(e),
        Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// What to say when the TLS handshake with `url` failed; `None` when the
/// failure was not TLS.
pub fn handshake_failure(
    url: &str,
    error: &tokio_tungstenite::tungstenite::Error,
) -> Option<String> {
    use rustls::CertificateError;
    let e = rustls_error(error)?;
    let fix = "pass the CA that signed it, or the self-signed certificate itself, with --ca PEM";
    Some(match e {
        // A signature none of the trusted CAs' keys could have made (an EC
        // certificate against RSA roots) is reported as an unsupported
        // algorithm: to the user it is a certificate no trusted CA signed.
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. },
        ) => format!(
            "the certificate of {url} is not trusted: no CA this machine or --ca trusts \
             signed it; {fix}"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!(
                "the certificate of {url} is not trusted: it is not made out for this host name; \
             connect with a name the certificate lists"
            )
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("the certificate of {url} is not trusted: it has expired"),
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            format!(
                "the certificate of {url} is not trusted: it is a CA certificate \
                 (basicConstraints CA:TRUE) serving as the server's own; make the server's \
                 certificate with CA:FALSE (openssl req -x509 … -addext \
                 basicConstraints=critical,CA:FALSE), or sign one with that CA"
            )
        }
        rustls::Error::InvalidCertificate(_) => {
            format!("the certificate of {url} is not trusted ({e}); {fix}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "TLS with {url} failed: the server did not answer in TLS (is it serving ws:// \
             rather than wss://?)"
        ),
        other => format!("TLS with {url} failed: {other}"),
    })
}

//! A self-signed certificate for a TLS circle, and a client connector that
//! trusts given roots.

use std::sync::Arc;

use tokio_tungstenite::Connector;

/// A certificate for `localhost` and `127.0.0.1`, in PEM files of its own.
pub struct Certificate {
    _dir: tempfile::TempDir,
    pub config: server_ws::TlsConfig,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

pub fn certificate() -> Certificate {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let pair = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, pair.cert.pem()).expect("write cert");
    std::fs::write(&key, pair.signing_key.serialize_pem()).expect("write key");
    let config = server_ws::TlsConfig::from_pem_files(&cert, &key).expect("tls config");
    Certificate {
        _dir: dir,
        config,
        der: pair.cert.der().clone(),
    }
}

/// A client connector trusting `roots` alone.
pub fn trusting(roots: Vec<rustls::pki_types::CertificateDer<'static>>) -> Connector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    Connector::Rustls(Arc::new(config))
}

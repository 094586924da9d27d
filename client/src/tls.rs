//! A private CA for `rediss://` connections: redis-rs then trusts the
//! certificates given here instead of the system's roots.

use std::sync::Arc;

/// PEM certificates of the CA (or CAs) that every `rediss://` connection of
/// a [`crate::Client`] or worker broker trusts, instead of the system's
/// roots. Cheap to clone; its `Debug` shows only the size.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCa {
    pem: Arc<[u8]>,
}

impl RedisCa {
    /// The CA certificates in PEM (one or more `BEGIN CERTIFICATE` blocks).
    /// They are parsed when a connection is set up; a caller that reads
    /// them from a file checks them first to name the file in its error.
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> RedisCa {
        RedisCa {
            pem: Arc::from(pem.into()),
        }
    }

    /// The certificates as redis-rs takes them.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.pem.to_vec()),
        }
    }
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisCa({} bytes of PEM)", self.pem.len())
    }
}

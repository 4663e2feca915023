//! TLS material: the server certificate clients see, and the trust used towards backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("invalid certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "no certificate found (expected PEM `CERTIFICATE` blocks)",
        ));
    }
    Ok(certs)
}

/// A TLS acceptor that can be replaced while connections use it (a renewed certificate is
/// loaded without a restart; connections already established keep theirs).
#[derive(Default)]
pub struct SharedAcceptor(arc_swap::ArcSwapOption<TlsAcceptor>);

impl std::fmt::Debug for SharedAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedAcceptor")
            .field(&self.0.load().is_some())
            .finish()
    }
}

impl SharedAcceptor {
    /// Holds `acceptor` (or none: TLS not configured).
    pub fn new(acceptor: Option<TlsAcceptor>) -> Self {
        Self(arc_swap::ArcSwapOption::from(acceptor.map(Arc::new)))
    }

    /// The acceptor in force.
    pub fn get(&self) -> Option<TlsAcceptor> {
        self.0.load_full().map(|a| (*a).clone())
    }

    /// Whether TLS is configured.
    pub fn is_some(&self) -> bool {
        self.0.load().is_some()
    }

    /// Replaces the acceptor for connections from now on.
    pub fn set(&self, acceptor: Option<TlsAcceptor>) {
        self.0.store(acceptor.map(Arc::new));
    }
}

/// Installs the process-wide crypto provider (aws-lc-rs). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Loads a certificate chain and its private key (PEM) into a TLS acceptor for clients.
pub fn server_acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    install_crypto_provider();
    let chain = certificates(certificate)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(key, format!("cannot read private key: {e}")))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Like [`server_acceptor`], offering HTTP/2 and HTTP/1.1 by ALPN (RFC 7301) for the HTTPS
/// front door.
pub fn http_acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    install_crypto_provider();
    let chain = certificates(certificate)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(key, format!("cannot read private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS client configuration for backends that trusts the CA certificates in `ca_file`.
pub fn backend_client_config(ca_file: &Path) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca_file, format!("unusable CA certificate: {e}")))?;
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A TLS connector for backends that trusts the CA certificates in `ca_file` (PEM).
///
/// Backends are verified like any TLS server: by the host name of their endpoint. Mailbox
/// servers often use certificates from a private CA; that CA goes in `ca_file`.
pub fn backend_connector(ca_file: &Path) -> Result<TlsConnector, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| file_error(ca_file, format!("unusable CA certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

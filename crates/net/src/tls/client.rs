//! The client side: how mailfront verifies the servers it dials (backends by CA and name; its
//! own admin listener by the certificate it is configured with) and the certificate it shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use super::{TlsError, certificates, file_error, install_crypto_provider};

/// How mailfront speaks TLS to backends (mailbox servers, the outbound relay): whom it trusts,
/// the name their certificates must carry, and the certificate it presents if they ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTrust {
    /// CA certificates (PEM) that backend certificates must chain to.
    pub ca_file: PathBuf,
    /// The name every backend certificate must carry, instead of each endpoint's host (for
    /// servers sharing one internal certificate, or endpoints given by address). The endpoint's
    /// host is still sent as SNI.
    pub verify_name: Option<String>,
    /// A client certificate and key presented to backends that require one (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl BackendTrust {
    /// Trust in the CAs of `ca_file`, each backend verified by its endpoint's host, no client
    /// certificate.
    pub fn ca(ca_file: &Path) -> Self {
        Self {
            ca_file: ca_file.to_owned(),
            verify_name: None,
            client: None,
        }
    }
}

/// A TLS client configuration for backends.
///
/// Backends are verified like any TLS server: by a name their certificate must carry (the
/// endpoint's host, or `verify_name`), chaining to the CAs of `ca_file`. Mailbox servers often
/// use certificates from a private CA; that CA goes in `ca_file`.
pub fn backend_client_config(trust: &BackendTrust) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&trust.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| file_error(&trust.ca_file, format!("unusable CA certificate: {e}")))?;
    }
    let builder = match &trust.verify_name {
        None => rustls::ClientConfig::builder().with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::Policy(format!("`{name}` is not a valid TLS name")))?;
            let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::Policy(format!("backend trust: {e}")))?;
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedName { webpki, name }))
        }
    };
    with_client_certificate(builder, trust.client.as_ref())
}

/// A TLS connector for backends (see [`backend_client_config`]).
pub fn backend_connector(trust: &BackendTrust) -> Result<TlsConnector, TlsError> {
    Ok(TlsConnector::from(Arc::new(backend_client_config(trust)?)))
}

/// Verifies a backend's certificate as the web PKI verifier does, but for one configured name
/// whatever host was dialled.
#[derive(Debug)]
struct FixedName {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A client configuration that accepts exactly one server certificate: the first of the PEM
/// file `certificate` (the node's own, for `mailfront admin` talking to its node). The handshake
/// signatures are still verified; names and CAs do not matter.
pub fn pinned_client_config(
    certificate: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let pinned = certificates(certificate)?.remove(0);
    let algorithms =
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pinned, algorithms }));
    with_client_certificate(builder, client)
}

/// Finishes a client configuration: with a client certificate and key, or without.
fn with_client_certificate(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let Some((certificate, key)) = client else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(certificate)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_error(key, format!("cannot read private key: {e}")))?;
    builder
        .with_client_auth_cert(chain, der)
        .map_err(|e| file_error(key, format!("does not fit {}: {e}", certificate.display())))
}

/// Accepts one certificate, byte for byte.
#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in the configuration".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

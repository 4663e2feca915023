//! Connections to the target: TCP from a chosen source address, optionally TLS.
//!
//! Certificates are not verified: a benchmark lab uses its own self-signed ones, and what is
//! measured is the cost of the handshake and the encryption, which verification does not change
//! on the server side.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// A byte stream to the target, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected stream.
pub type Stream = Box<dyn Io>;

/// How to reach the target; shared by every worker.
pub struct Dialer {
    target: SocketAddr,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    tls: Option<TlsConnector>,
}

impl Dialer {
    /// A dialer for `target`, from `sources` in turn (the system's choice if empty), with TLS if
    /// `tls`.
    pub fn new(target: SocketAddr, sources: Vec<IpAddr>, tls: bool) -> Result<Self, rustls::Error> {
        let tls = match tls {
            true => Some(TlsConnector::from(Arc::new(client_config()?))),
            false => None,
        };
        Ok(Self {
            target,
            sources,
            next_source: AtomicUsize::new(0),
            tls,
        })
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection (TCP connect, then the TLS handshake if configured).
    pub async fn connect(&self) -> std::io::Result<Stream> {
        let tcp = self.connect_tcp().await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(connector) => {
                let name = ServerName::IpAddress(self.target.ip().into());
                Ok(Box::new(connector.connect(name, tcp).await?))
            }
        }
    }

    async fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        if self.sources.is_empty() {
            return TcpStream::connect(self.target).await;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
        let source = self.sources.get(i).copied().unwrap_or(self.target.ip());
        let socket = if source.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(source, 0))?;
        socket.connect(self.target).await
    }
}

fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // Every connection makes a full handshake: whether a peer resumes sessions depends on its
    // configuration, and the benchmark compares the front doors, not their session caches.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Accepts any certificate (see the module documentation), but still checks the handshake's
/// signatures so that the server does the work a real handshake costs it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

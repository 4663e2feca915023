//! TLS material: the server certificates clients see (chosen by SNI) and the policy they are
//! offered under; the client side ([`client`]: trust towards backends, the admin client's pin).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod client;
pub mod tickets;

pub use client::{BackendTrust, backend_client_config, backend_connector, pinned_client_config};
/// rustls itself, for the blocking clients that drive a connection by hand.
pub use rustls;
pub use rustls::ClientConfig;
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
    /// The TLS policy cannot be applied (an unknown cipher suite, an unreadable ticket key file).
    #[error("{0}")]
    Policy(String),
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

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The chain, end-entity certificate first.
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// A DER-encoded OCSP response for the end-entity certificate, stapled to every handshake
    /// (RFC 6066 `status_request`); kept fresh by whoever writes the file (`openssl ocsp …
    /// -respout`), which is reloaded like the certificate.
    pub ocsp: Option<PathBuf>,
}

/// The certificates clients see: one for the names each lists (chosen by the name the client
/// asks for, SNI, RFC 6066), and a default for clients that name none or another; and the
/// policy they are offered under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertificates {
    /// For clients without SNI, or asking for a name no entry lists.
    pub default: CertificateFiles,
    /// Names (lowercase; `*.example.com` covers one label) and their certificate.
    pub by_name: Vec<(Vec<String>, CertificateFiles)>,
    /// Versions, cipher suites, session tickets.
    pub policy: TlsPolicy,
}

/// What clients may negotiate, and how sessions resume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// Only TLS 1.3 (otherwise TLS 1.2 and 1.3).
    pub tls13_only: bool,
    /// The cipher suites offered, by IANA name (`TLS13_AES_256_GCM_SHA384`, …), the first that
    /// the client also offers chosen; empty: rustls's defaults, in the client's order.
    pub cipher_suites: Vec<String>,
    /// A key file (`keyfile`) sealing session tickets, shared by every node: a session resumes
    /// on any node. None: each node resumes its own sessions only.
    pub ticket_keys: Option<PathBuf>,
}

impl ServerCertificates {
    /// One certificate for every client.
    pub fn single(certificate: &Path, key: &Path) -> Self {
        Self {
            default: CertificateFiles {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
                ocsp: None,
            },
            by_name: Vec::new(),
            policy: TlsPolicy::default(),
        }
    }
}

/// Loads a chain and key, checking that they belong together.
fn certified_key(files: &CertificateFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(&files.certificate)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("cannot read private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        file_error(
            &files.key,
            format!("does not fit {}: {e}", files.certificate.display()),
        )
    })?;
    certified.ocsp = files.ocsp.as_deref().map(ocsp_response).transpose()?;
    Ok(Arc::new(certified))
}

/// Reads a stapled OCSP response. Only its shape is checked (a DER `SEQUENCE`): a PEM or empty
/// file, the usual mistakes, would otherwise be sent to every client as garbage.
fn ocsp_response(path: &Path) -> Result<Vec<u8>, TlsError> {
    let der = std::fs::read(path)
        .map_err(|e| file_error(path, format!("cannot read OCSP response: {e}")))?;
    if der.first() != Some(&0x30) || der.len() < 8 {
        return Err(file_error(
            path,
            "not a DER-encoded OCSP response (write one with `openssl ocsp … -respout FILE`)",
        ));
    }
    Ok(der)
}

/// Chooses the certificate by the client's SNI name: an exact name first, then a wildcard for
/// the name's parent, then the default.
#[derive(Debug)]
struct ByName {
    names: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ByName {
    fn load(certificates: &ServerCertificates) -> Result<Self, TlsError> {
        let mut names = HashMap::new();
        for (listed, files) in &certificates.by_name {
            let key = certified_key(files)?;
            for name in listed {
                names.insert(name.to_ascii_lowercase(), Arc::clone(&key));
            }
        }
        Ok(Self {
            names,
            default: certified_key(&certificates.default)?,
        })
    }

    fn choose(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        self.names
            .get(&name)
            .or_else(|| wildcard.and_then(|w| self.names.get(&w)))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.choose(hello.server_name())))
    }
}

/// The crypto provider with only the suites `names` lists, in that order.
fn provider_with(names: &[String]) -> Result<rustls::crypto::CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let known: Vec<&str> = provider
        .cipher_suites
        .iter()
        .filter_map(|s| s.suite().as_str())
        .collect();
    let mut chosen = Vec::with_capacity(names.len());
    for name in names {
        let suite = provider
            .cipher_suites
            .iter()
            .find(|s| s.suite().as_str() == Some(name.as_str()))
            .ok_or_else(|| {
                TlsError::Policy(format!(
                    "cipher suite `{name}` is not one of {}",
                    known.join(", ")
                ))
            })?;
        chosen.push(*suite);
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// The server configuration for `certificates`; with `client_ca`, client certificates are asked
/// for and, when presented, must chain to it (a client presenting none is let through: the
/// caller decides what it may do).
fn server_config(
    certificates: &ServerCertificates,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    install_crypto_provider();
    let policy = &certificates.policy;
    let resolver = ByName::load(certificates)?;
    let versions: &[&rustls::SupportedProtocolVersion] = if policy.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider_with(
        &policy.cipher_suites,
    )?))
    .with_protocol_versions(versions)
    .map_err(|e| {
        TlsError::Policy(format!(
            "the cipher suites leave no way to speak the allowed TLS versions: {e}"
        ))
    })?
    .with_client_cert_verifier(client_verifier(client_ca)?)
    .with_cert_resolver(Arc::new(resolver));
    // An operator who lists suites states a preference: ours, not the client's, decides.
    config.ignore_client_order = !policy.cipher_suites.is_empty();
    if let Some(path) = &policy.ticket_keys {
        let tickets = tickets::SharedTickets::load(path).map_err(TlsError::Policy)?;
        config.ticketer = Arc::new(tickets);
    }
    Ok(config)
}

/// Client certificates verified against the CAs of `client_ca`, optional in the handshake;
/// without a file, none asked for.
fn client_verifier(
    client_ca: Option<&Path>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let Some(file) = client_ca else {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .map_err(|e| file_error(file, format!("unusable CA certificate: {e}")))?;
    }
    rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| file_error(file, format!("cannot verify clients with it: {e}")))
}

/// A TLS acceptor for clients presenting `certificates` (chosen by SNI).
pub fn server_acceptor(certificates: &ServerCertificates) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(
        certificates,
        None,
    )?)))
}

/// A TLS acceptor for the admin listener (HTTP/1.1): `certificates`, and with `client_ca`
/// client certificates asked for and verified (see [`presented_client_certificate`]).
pub fn admin_acceptor(
    certificates: &ServerCertificates,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let mut config = server_config(certificates, client_ca)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Whether the client of an accepted connection presented a certificate. The acceptor's
/// verifier has checked any certificate presented (an invalid one fails the handshake), so
/// presented means verified.
pub fn presented_client_certificate<IO>(stream: &tokio_rustls::server::TlsStream<IO>) -> bool {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|chain| !chain.is_empty())
}

/// Like [`server_acceptor`], offering HTTP/2 and HTTP/1.1 by ALPN (RFC 7301) for the HTTPS
/// front door.
pub fn http_acceptor(certificates: &ServerCertificates) -> Result<TlsAcceptor, TlsError> {
    let mut config = server_config(certificates, None)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, written as PEM files in `dir` under `stem`.
    fn self_signed(dir: &Path, stem: &str, names: &[&str]) -> CertificateFiles {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let pair = rcgen::generate_simple_self_signed(names).unwrap();
        let files = CertificateFiles {
            certificate: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
            ocsp: None,
        };
        std::fs::write(&files.certificate, pair.cert.pem()).unwrap();
        std::fs::write(&files.key, pair.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn the_name_a_client_asks_for_chooses_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let default = self_signed(dir.path(), "mail", &["mail.example.com"]);
        let other = self_signed(dir.path(), "auto", &["autodiscover.example.com"]);
        let certificates = ServerCertificates {
            policy: TlsPolicy::default(),
            default,
            by_name: vec![(
                vec![
                    "autodiscover.example.com".to_owned(),
                    "*.example.net".to_owned(),
                ],
                other,
            )],
        };
        let chooser = ByName::load(&certificates).unwrap();
        let picks_other = |name: Option<&str>| !Arc::ptr_eq(chooser.choose(name), &chooser.default);
        let table = [
            (None, false),
            (Some("mail.example.com"), false),
            (Some("autodiscover.example.com"), true),
            (Some("AutoDiscover.Example.COM"), true),
            (Some("imap.example.net"), true),
            (Some("a.b.example.net"), false),
            (Some("example.net"), false),
            (Some("unknown.org"), false),
        ];
        for (name, other) in table {
            assert_eq!(picks_other(name), other, "{name:?}");
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let one = self_signed(dir.path(), "one", &["one.example.com"]);
        let two = self_signed(dir.path(), "two", &["two.example.com"]);
        let crossed = CertificateFiles {
            certificate: one.certificate,
            key: two.key.clone(),
            ocsp: None,
        };
        let error = ByName::load(&ServerCertificates::single(
            &crossed.certificate,
            &crossed.key,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("two.key") && error.contains("does not fit"),
            "{error}"
        );
    }

    #[test]
    fn an_ocsp_response_is_stapled_and_a_wrong_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = self_signed(dir.path(), "mail", &["mail.example.com"]);
        let response = dir.path().join("mail.ocsp");
        // The outer SEQUENCE of an OCSPResponse with responseStatus `successful` (no bytes).
        std::fs::write(&response, [0x30, 0x06, 0x0a, 0x01, 0x00, 0xa0, 0x01, 0x00]).unwrap();
        files.ocsp = Some(response.clone());
        let key = certified_key(&files).unwrap();
        assert_eq!(
            key.ocsp.as_deref(),
            Some(&std::fs::read(&response).unwrap()[..])
        );
        for wrong in [&b""[..], b"-----BEGIN OCSP RESPONSE-----\n"] {
            std::fs::write(&response, wrong).unwrap();
            let error = certified_key(&files).unwrap_err().to_string();
            assert!(
                error.contains("mail.ocsp") && error.contains("DER"),
                "{error}"
            );
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn unknown_suites_are_named_and_impossible_combinations_refused() {
        let error = provider_with(&["TLS_RSA_WITH_RC4_128_MD5".to_owned()]).unwrap_err();
        assert!(
            error.to_string().contains("TLS13_AES_256_GCM_SHA384"),
            "{error}"
        );
        let only13 = provider_with(&["TLS13_AES_256_GCM_SHA384".to_owned()]).unwrap();
        assert_eq!(only13.cipher_suites.len(), 1);
        // TLS 1.2 suites only, with TLS 1.3 required: nothing could be negotiated.
        let provider =
            provider_with(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_owned()]).unwrap();
        assert!(
            rustls::ServerConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .is_err()
        );
    }
}

//! TLS towards clients (the certificates and policy of `[tls]`) and towards backends
//! (`[backend_tls]`).

use mailfront_net::tls::{
    self, BackendTrust, CertificateFiles, ClientConfig, ServerCertificates, TlsAcceptor,
    TlsConnector, TlsPolicy,
};

use crate::config::{BackendTlsConfig, Config, TlsConfig, TlsVersion};

/// The certificates of `[tls]` (the default and those of `[[tls.sni]]`) and its policy.
fn certificates(tls: &TlsConfig) -> ServerCertificates {
    let mut certificates = ServerCertificates::single(&tls.certificate, &tls.key);
    certificates.default.ocsp = tls.ocsp.clone();
    certificates.by_name = tls
        .sni
        .iter()
        .map(|entry| {
            let files = CertificateFiles {
                certificate: entry.certificate.clone(),
                key: entry.key.clone(),
                ocsp: entry.ocsp.clone(),
            };
            (entry.names.clone(), files)
        })
        .collect();
    certificates.policy = TlsPolicy {
        tls13_only: tls.min_version == TlsVersion::Tls13,
        cipher_suites: tls.cipher_suites.clone(),
        ticket_keys: tls.ticket_keys.clone(),
    };
    certificates
}

/// The TLS acceptor for clients, if `[tls]` is configured.
pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    config
        .tls
        .as_ref()
        .map(|t| tls::server_acceptor(&certificates(t)).map_err(|e| format!("tls: {e}")))
        .transpose()
}

/// The TLS acceptor for HTTPS (ALPN h2 and http/1.1), if `[tls]` is configured.
pub fn http_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    config
        .tls
        .as_ref()
        .map(|t| tls::http_acceptor(&certificates(t)).map_err(|e| format!("tls: {e}")))
        .transpose()
}

/// The TLS acceptor of the admin listener, if `[admin] tls` is on: the certificates of `[tls]`,
/// and client certificates verified against `[admin] client_ca`.
pub fn admin_acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    let (Some(admin), Some(t)) = (&config.admin, &config.tls) else {
        return Ok(None);
    };
    if !admin.tls {
        return Ok(None);
    }
    tls::admin_acceptor(&certificates(t), admin.client_ca.as_deref())
        .map(Some)
        .map_err(|e| format!("admin: {e}"))
}

/// How `[backend_tls]` says to speak TLS to backends.
fn backend_trust(config: &BackendTlsConfig) -> BackendTrust {
    BackendTrust {
        ca_file: config.ca_file.clone(),
        verify_name: config.verify_name.clone(),
        client: config.certificate.clone().zip(config.key.clone()),
    }
}

/// The TLS client configuration towards backends, if `[backend_tls]` is configured.
pub fn backend_client_config(config: &Config) -> Result<Option<ClientConfig>, String> {
    config
        .backend_tls
        .as_ref()
        .map(|t| {
            tls::backend_client_config(&backend_trust(t)).map_err(|e| format!("backend_tls: {e}"))
        })
        .transpose()
}

/// The TLS connector towards backends, if `[backend_tls]` is configured.
pub fn connector(config: &Config) -> Result<Option<TlsConnector>, String> {
    Ok(backend_client_config(config)?.map(|c| TlsConnector::from(std::sync::Arc::new(c))))
}

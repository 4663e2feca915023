//! `[tls]` and `[backend_tls]`: the certificate clients see, and the trust towards backends.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]`: the certificates clients see. `certificate` and `key` are the default; each
/// `[[tls.sni]]` entry is chosen instead for the names it lists (the name a client asks for in
/// its TLS hello, SNI).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// A DER-encoded OCSP response for the certificate, stapled to handshakes; reloaded when
    /// it changes (refresh it from cron with `openssl ocsp … -respout`).
    pub ocsp: Option<PathBuf>,
    /// Certificates for other names.
    #[serde(default)]
    pub sni: Vec<SniCertificateConfig>,
    /// The oldest TLS version a client may use.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// The cipher suites offered, by IANA name, in order of preference (the first the client
    /// also offers is chosen); empty: rustls's defaults, in the client's order.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// A key file sealing TLS session tickets, the same on every node, so that a client resumes
    /// its session on any node (same format as the cookie keys; `mailfront cookie-key` prints
    /// an entry). Without it each node resumes its own sessions only.
    pub ticket_keys: Option<PathBuf>,
}

/// A TLS version, as `[tls] min_version` names it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246) and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446) only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[[tls.sni]]`: a certificate for the names it lists.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificateConfig {
    /// Host names, e.g. `autodiscover.example.com`; `*.example.com` covers one label.
    pub names: Vec<String>,
    /// Certificate chain (PEM).
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// A DER-encoded OCSP response for the certificate, stapled to handshakes.
    pub ocsp: Option<PathBuf>,
}

impl TlsConfig {
    /// Every file it names: the default's, each entry's (certificates, keys, OCSP responses),
    /// the ticket keys.
    pub fn files(&self) -> Vec<&PathBuf> {
        let mut files = vec![&self.certificate, &self.key];
        files.extend(&self.ocsp);
        for entry in &self.sni {
            files.push(&entry.certificate);
            files.push(&entry.key);
            files.extend(&entry.ocsp);
        }
        files.extend(&self.ticket_keys);
        files
    }

    /// Checks the names: each a host name (or a one-label wildcard), in lowercase, listed once.
    pub(super) fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, entry) in self.sni.iter().enumerate() {
            let key = format!("tls.sni[{i}].names");
            if entry.names.is_empty() {
                return Err(format!("{key}: list at least one name"));
            }
            for name in &entry.names {
                if !is_host_pattern(name) {
                    return Err(format!(
                        "{key}: `{name}` is not a lowercase host name (or `*.` and one)"
                    ));
                }
                if !seen.insert(name.as_str()) {
                    return Err(format!("{key}: `{name}` is listed twice"));
                }
            }
        }
        Ok(())
    }
}

/// `mail.example.com` or `*.example.com`: lowercase letters, digits and hyphens in labels of
/// 1 to 63 characters, at least two labels.
fn is_host_pattern(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = host.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `[backend_tls]`: TLS towards backends (mailbox servers, the outbound relay).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// CA certificates (PEM) that backend certificates must chain to.
    pub ca_file: PathBuf,
    /// The name every backend certificate must carry, instead of each endpoint's host: for
    /// servers sharing one internal certificate, or endpoints given by IP address.
    pub verify_name: Option<String>,
    /// A client certificate chain (PEM) for backends that require one (mutual TLS).
    pub certificate: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

impl BackendTlsConfig {
    /// Checks that a client certificate comes with its key and that `verify_name` is a name.
    pub(super) fn validate(&self) -> Result<(), String> {
        match (&self.certificate, &self.key) {
            (Some(_), None) => {
                return Err("backend_tls.key: needed with backend_tls.certificate".into());
            }
            (None, Some(_)) => {
                return Err("backend_tls.certificate: needed with backend_tls.key".into());
            }
            _ => {}
        }
        if let Some(name) = &self.verify_name {
            let is_address = name.parse::<std::net::IpAddr>().is_ok();
            if !is_address && (name.starts_with("*.") || !is_host_pattern(name)) {
                return Err(format!(
                    "backend_tls.verify_name: `{name}` is not a lowercase host name or an IP address"
                ));
            }
        }
        Ok(())
    }
}

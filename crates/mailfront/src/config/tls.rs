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
    /// Certificates for other names.
    #[serde(default)]
    pub sni: Vec<SniCertificateConfig>,
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
}

impl TlsConfig {
    /// Every file it names: the default's, then each entry's.
    pub fn files(&self) -> Vec<&PathBuf> {
        let mut files = vec![&self.certificate, &self.key];
        for entry in &self.sni {
            files.push(&entry.certificate);
            files.push(&entry.key);
        }
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

/// `[backend_tls]`: trust towards backends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// CA certificates (PEM) that backend certificates must chain to.
    pub ca_file: PathBuf,
}

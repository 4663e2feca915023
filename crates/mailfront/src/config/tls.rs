//! `[tls]` and `[backend_tls]`: the certificate clients see, and the trust towards backends.

use std::path::PathBuf;

use serde::Deserialize;

/// `[tls]`: the certificate clients see.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[backend_tls]`: trust towards backends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// CA certificates (PEM) that backend certificates must chain to.
    pub ca_file: PathBuf,
}

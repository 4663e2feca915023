//! `[admin]`: the admin listener.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[admin]`: the admin listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens (loopback by default: `127.0.0.1:9090`).
    #[serde(default = "admin_address")]
    pub address: SocketAddr,
    /// A file holding the bearer token every admin request but `/health` must carry; required
    /// when the address is not a loopback address, unless `client_ca` is set.
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS, with the certificates of `[tls]`.
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM): every request but `/health` must come over a connection whose
    /// client presented a certificate they signed (mutual TLS). Beside a token, both are needed.
    pub client_ca: Option<PathBuf>,
}

fn admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

impl AdminConfig {
    /// Checks that an admin listener reachable from elsewhere than this machine needs a token or
    /// a client certificate, and that TLS has a certificate (`[tls]`) to serve.
    pub(super) fn validate(&self, has_certificate: bool) -> Result<(), String> {
        if self.tls && !has_certificate {
            return Err("admin.tls: needs the certificate of [tls]".to_owned());
        }
        if self.client_ca.is_some() && !self.tls {
            return Err("admin.client_ca: client certificates need admin.tls = true".to_owned());
        }
        if !self.address.ip().is_loopback() && self.token_file.is_none() && self.client_ca.is_none()
        {
            return Err(format!(
                "admin.token_file: required (or admin.client_ca) when the admin listener is not on loopback ({})",
                self.address
            ));
        }
        Ok(())
    }
}

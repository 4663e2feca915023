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
    /// when the address is not a loopback address.
    pub token_file: Option<PathBuf>,
}

fn admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

impl AdminConfig {
    /// Checks that an admin listener reachable from elsewhere than this machine needs a token.
    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.address.ip().is_loopback() && self.token_file.is_none() {
            return Err(format!(
                "admin.token_file: required when the admin listener is not on loopback ({})",
                self.address
            ));
        }
        Ok(())
    }
}

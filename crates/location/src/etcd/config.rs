//! `[location]` with `backend = "etcd"`: the keys and their checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{DEFAULT_PREFIX, DEFAULT_TIMEOUT};

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// `[location]` with `backend = "etcd"`: where the etcd cluster is and how to talk to it.
///
/// Relative paths are taken as they are; the binary resolves them against the configuration
/// file's folder before handing the configuration over.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// The cluster's client URLs, for example `["http://127.0.0.1:2379"]`; all `http://` or all
    /// `https://`. Requests are balanced over them.
    pub endpoints: Vec<String>,
    /// The prefix of the per-database keys (default `/mailfront/databases/`); ends with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The longest wait for each etcd request, for connecting, and for a keep-alive ping's
    /// answer (default 5 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The etcd user to authenticate as (optional; needs `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// A file whose first line is the etcd user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the etcd servers' certificates; required for
    /// `https://` endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// A configuration for `endpoints` with every other key at its default.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: default_prefix(),
            timeout: DEFAULT_TIMEOUT,
            username: None,
            password_file: None,
            ca_file: None,
        }
    }

    /// Checks what the types alone do not. The message starts with the key
    /// (`location.endpoints: …`).
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("location.endpoints: at least one endpoint is needed".to_owned());
        }
        let mut https = None;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let key = format!("location.endpoints[{i}]");
            let (secure, authority) = if let Some(rest) = endpoint.strip_prefix("https://") {
                (true, rest)
            } else if let Some(rest) = endpoint.strip_prefix("http://") {
                (false, rest)
            } else {
                return Err(format!(
                    "{key}: `{endpoint}` must start with http:// or https://"
                ));
            };
            if authority.contains('@') {
                // Never echo what may be a password.
                return Err(format!(
                    "{key}: credentials do not belong in the URL; use location.username and location.password_file"
                ));
            }
            let authority = authority.strip_suffix('/').unwrap_or(authority);
            let host_port = authority.rsplit_once(':');
            if authority.contains('/')
                || !host_port.is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                })
            {
                return Err(format!(
                    "{key}: `{endpoint}` must be a URL with a host and a port, like http://127.0.0.1:2379"
                ));
            }
            match https {
                None => https = Some(secure),
                Some(first) if first != secure => {
                    return Err(
                        "location.endpoints: mix of http:// and https:// endpoints".to_owned()
                    );
                }
                Some(_) => {}
            }
        }
        let https = https.unwrap_or(false);
        if https && self.ca_file.is_none() {
            return Err("location.ca_file: required with https:// endpoints".to_owned());
        }
        if !https && self.ca_file.is_some() {
            return Err("location.ca_file: only used with https:// endpoints".to_owned());
        }
        if self.prefix.is_empty() || !self.prefix.ends_with('/') {
            return Err(format!(
                "location.prefix: `{}` must end with `/` (keys are <prefix><DATABASE>)",
                self.prefix
            ));
        }
        if self.timeout.is_zero() {
            return Err("location.timeout: must be longer than zero".to_owned());
        }
        match (&self.username, &self.password_file) {
            (Some(user), _) if user.trim().is_empty() => {
                Err("location.username: must not be empty".to_owned())
            }
            (Some(_), None) => Err("location.password_file: required with username".to_owned()),
            (None, Some(_)) => Err("location.username: required with password_file".to_owned()),
            _ => Ok(()),
        }
    }
}

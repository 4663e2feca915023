//! Talking to etcd: the connection options read once from the configuration (files included),
//! one request with the configured timeout, the range read of the whole prefix, and short
//! descriptions of the client's errors.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, TlsOptions};
use mailfront_model::Secret;

use super::{EtcdConfig, EtcdError};

/// The shortest interval between two HTTP/2 keep-alive pings. etcd closes connections that ping
/// more often than its `--grpc-keepalive-min-time` (default 5 s) with "too many pings".
const KEEPALIVE_MIN_INTERVAL: Duration = Duration::from_secs(10);

/// A short description of an etcd-client error: the gRPC code and message, and the innermost
/// cause (for example "Unavailable: tcp connect error (Connection refused (os error 111))").
pub(super) fn describe(error: &etcd_client::Error) -> String {
    // etcd_client::Error has no `source()`: start from the error it wraps.
    let (head, mut next): (String, Option<&(dyn std::error::Error + 'static)>) = match error {
        etcd_client::Error::GRpcStatus(status) => (
            format!("{:?}: {}", status.code(), status.message()),
            std::error::Error::source(status),
        ),
        etcd_client::Error::TransportError(transport) => {
            (error.to_string(), std::error::Error::source(transport))
        }
        other => (other.to_string(), None),
    };
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    while let Some(cause) = next {
        innermost = Some(cause);
        next = cause.source();
    }
    match innermost.map(ToString::to_string) {
        Some(cause) if !head.contains(&cause) => format!("{head} ({cause})"),
        _ => head,
    }
}

/// What a connection needs, read once from the configuration (files included).
#[derive(Clone)]
pub(super) struct Prepared {
    endpoints: Vec<String>,
    /// The prefix of the per-database keys.
    pub(super) prefix: String,
    timeout: Duration,
    options: ConnectOptions,
}

impl Prepared {
    /// Checks the configuration and reads the files it names (password, CA certificate).
    pub(super) fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        config.validate().map_err(EtcdError::Config)?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(config.timeout.max(KEEPALIVE_MIN_INTERVAL), config.timeout)
            // Pings without a stream count against the client at etcd (gRPC's
            // PermitWithoutStream is off): ping only while a watch or a request is open.
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let (Some(user), Some(path)) = (&config.username, &config.password_file) {
            let text = std::fs::read_to_string(path).map_err(|source| EtcdError::ReadFile {
                key: "password_file",
                path: path.clone(),
                source,
            })?;
            let password = Secret::new(text.lines().next().unwrap_or_default().to_owned());
            if password.expose().is_empty() {
                return Err(EtcdError::Config(format!(
                    "location.password_file: {} has an empty first line",
                    path.display()
                )));
            }
            options = options
                .with_user(user.clone(), password.expose().clone())
                .with_auto_token_refresh(true);
        }
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|source| EtcdError::ReadFile {
                key: "ca_file",
                path: path.clone(),
                source,
            })?;
            options =
                options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        }
        Ok(Self {
            endpoints: config.endpoints.clone(),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            options,
        })
    }

    /// Runs one request with the configured timeout.
    pub(super) async fn call<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(EtcdError::Store {
                operation,
                message: describe(&error),
            }),
            Err(_) => Err(EtcdError::Timeout {
                operation,
                after: self.timeout,
            }),
        }
    }

    /// Connects to the cluster.
    pub(super) async fn connect(&self) -> Result<Client, EtcdError> {
        self.call(
            "connect",
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
    }

    /// Reads the whole prefix: every `(key, value)` and the store revision of the read.
    pub(super) async fn list(
        &self,
        client: &mut Client,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, i64), EtcdError> {
        let response = self
            .call(
                "range read",
                client.get(
                    self.prefix.as_bytes(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        let revision = response
            .header()
            .map(|header| header.revision())
            .ok_or_else(|| EtcdError::Store {
                operation: "range read",
                message: "the answer has no header".to_owned(),
            })?;
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect();
        Ok((kvs, revision))
    }
}

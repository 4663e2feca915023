//! Connecting to a mailbox server and logging in there on the user's behalf.

use std::io;
use std::time::Duration;

use mailfront_model::BackendTls;
use mailfront_protocol::{BackendAction, BackendFailure, BackendLogin};
use mailfront_routing::Endpoint;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Stream;

/// Why a backend session could not be opened. All of them are temporary failures for the
/// client; the distinction is for the log (and for trying another backend where that is right).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {endpoint} failed: {source}")]
    Connect {
        /// `host:port`.
        endpoint: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The backend did not answer in time.
    #[error("{endpoint} did not answer within {timeout:?} ({stage})")]
    Timeout {
        /// `host:port`.
        endpoint: String,
        /// What we were waiting for.
        stage: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The TLS handshake failed.
    #[error("TLS to {endpoint} failed: {source}")]
    Tls {
        /// `host:port`.
        endpoint: String,
        /// The error.
        source: io::Error,
    },
    /// Reading or writing failed during login.
    #[error("I/O with {endpoint} failed during login: {source}")]
    Io {
        /// `host:port`.
        endpoint: String,
        /// The error.
        source: io::Error,
    },
    /// The login itself failed.
    #[error("login at {endpoint} failed: {source}")]
    Login {
        /// `host:port`.
        endpoint: String,
        /// What the login machine said.
        source: BackendFailure,
    },
    /// TLS is configured for the endpoint but no backend trust (CA) is configured.
    #[error("{endpoint} needs TLS but no backend CA is configured")]
    NoTlsConfig {
        /// `host:port`.
        endpoint: String,
    },
}

/// A backend session after login.
#[derive(Debug)]
pub struct BackendSession {
    /// The connection, logged in.
    pub stream: Stream,
    /// Post-login capabilities (IMAP), if the backend sent them.
    pub capabilities: Option<String>,
    /// Backend bytes that arrived after the login reply.
    pub leftover: Vec<u8>,
}

/// Time limits for opening a backend session.
#[derive(Clone, Copy, Debug)]
pub struct BackendTimeouts {
    /// TCP connect (and TLS handshake).
    pub connect: Duration,
    /// From connected to logged in.
    pub login: Duration,
}

async fn handshake(
    stream: &mut Stream,
    connector: Option<&TlsConnector>,
    endpoint: &Endpoint,
    name: &str,
) -> Result<(), BackendError> {
    let connector = connector.ok_or_else(|| BackendError::NoTlsConfig {
        endpoint: name.to_owned(),
    })?;
    let server_name =
        ServerName::try_from(endpoint.host.clone()).map_err(|e| BackendError::Tls {
            endpoint: name.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
    stream
        .connect_tls(connector, server_name)
        .await
        .map_err(|source| BackendError::Tls {
            endpoint: name.to_owned(),
            source,
        })
}

/// Connects to `endpoint` and runs the login machine to completion, within `timeouts`.
pub async fn open<L: BackendLogin>(
    endpoint: &Endpoint,
    connector: Option<&TlsConnector>,
    mut login: L,
    timeouts: BackendTimeouts,
) -> Result<BackendSession, BackendError> {
    let name = format!("{}:{}", endpoint.host, endpoint.port);
    let timeout = |stage, timeout| BackendError::Timeout {
        endpoint: name.clone(),
        stage,
        timeout,
    };
    let connect = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| BackendError::Connect {
                endpoint: name.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut stream = Stream::Plain(tcp);
        if endpoint.tls == BackendTls::Implicit {
            handshake(&mut stream, connector, endpoint, &name).await?;
        }
        Ok::<_, BackendError>(stream)
    };
    let mut stream = tokio::time::timeout(timeouts.connect, connect)
        .await
        .map_err(|_| timeout("connect", timeouts.connect))??;

    let io_error = |source| BackendError::Io {
        endpoint: name.clone(),
        source,
    };
    let dialogue = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match login.next_action() {
                BackendAction::Send(bytes) => {
                    stream.write_all(&bytes).await.map_err(io_error)?;
                    stream.flush().await.map_err(io_error)?;
                }
                BackendAction::Read => {
                    let n = stream.read(&mut buf).await.map_err(io_error)?;
                    match buf.get(..n) {
                        Some([]) | None => login.eof(),
                        Some(bytes) => login.feed(bytes),
                    }
                }
                BackendAction::StartTls => {
                    handshake(&mut stream, connector, endpoint, &name).await?;
                    login.tls_established();
                }
                BackendAction::Ready {
                    capabilities,
                    leftover,
                } => {
                    return Ok(BackendSession {
                        stream: std::mem::take(&mut stream),
                        capabilities,
                        leftover,
                    });
                }
                BackendAction::Failed(source) => {
                    return Err(BackendError::Login {
                        endpoint: name.clone(),
                        source,
                    });
                }
            }
        }
    };
    tokio::time::timeout(timeouts.login, dialogue)
        .await
        .map_err(|_| timeout("login", timeouts.login))?
}

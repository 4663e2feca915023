//! Connecting to a mailbox server and logging in there on the user's behalf.

use std::io;
use std::time::Duration;

use mailfront_model::BackendTls;
use mailfront_net::Stream;
use mailfront_net::conn::{ClientTlsError, Conn, ConnEnd, TlsRole};
use mailfront_net::connect::{ConnectError, Dial, connect};
use mailfront_net::pump::{Interrupt, Until, pump};
use mailfront_protocol::{BackendFailure, BackendLogin, LoginEvent};
use mailfront_routing::Endpoint;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

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

/// Closes a backend connection and waits, at most 1 s, until the mailbox server has closed its
/// side too: after that it no longer counts the user as logged in. A move of the user's group
/// waits for the session to leave the registry, so it must not leave before this.
pub async fn close_and_drain(stream: &mut Stream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drained = async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
}

/// How this node reaches mailbox servers: the trust for TLS towards them, and time limits.
#[derive(Clone)]
pub struct Backends {
    /// The TLS connector (the backends' CA), required if any endpoint uses TLS.
    pub tls: Option<TlsConnector>,
    /// Connect and login limits.
    pub timeouts: BackendTimeouts,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("tls", &self.tls.is_some())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// Time limits for opening a backend session.
#[derive(Clone, Copy, Debug)]
pub struct BackendTimeouts {
    /// TCP connect (and TLS handshake).
    pub connect: Duration,
    /// From connected to logged in.
    pub login: Duration,
}

/// The error a failed connection becomes, naming the endpoint.
fn connect_error(endpoint: &str, error: ConnectError, timeout: Duration) -> BackendError {
    let endpoint = endpoint.to_owned();
    match error {
        ConnectError::Connect(source) => BackendError::Connect { endpoint, source },
        ConnectError::Timeout(_) => BackendError::Timeout {
            endpoint,
            stage: "connect",
            timeout,
        },
        ConnectError::Tls(ClientTlsError::NoTrust) => BackendError::NoTlsConfig { endpoint },
        ConnectError::Tls(ClientTlsError::Handshake(source)) => {
            BackendError::Tls { endpoint, source }
        }
        ConnectError::Tls(other) => BackendError::Tls {
            endpoint,
            source: io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        },
    }
}

/// Connects to `endpoint` and runs the login machine to completion, within the time limits:
/// `timeouts.connect` for the connection (and an implicit-TLS handshake), `timeouts.login` for
/// the dialogue after it.
pub async fn open<L: BackendLogin>(
    endpoint: &Endpoint,
    backends: &Backends,
    mut login: L,
) -> Result<BackendSession, BackendError> {
    let connector = backends.tls.as_ref();
    let timeouts = backends.timeouts;
    let name = format!("{}:{}", endpoint.host, endpoint.port);
    if endpoint.tls != BackendTls::None && connector.is_none() {
        return Err(BackendError::NoTlsConfig { endpoint: name });
    }
    let dial = Dial {
        host: &endpoint.host,
        port: endpoint.port,
        tls: endpoint.tls,
        connector,
    };
    let stream = connect(dial, timeouts.connect)
        .await
        .map_err(|e| connect_error(&name, e, timeouts.connect))?;
    let mut conn = Conn::new(stream);
    let role = TlsRole::Client {
        connector,
        host: &endpoint.host,
    };
    let mut pace = Until(Instant::now() + timeouts.login);
    loop {
        match pump(&mut login, &mut conn, role, &mut pace).await {
            Ok(LoginEvent::Ready {
                capabilities,
                leftover,
            }) => {
                return Ok(BackendSession {
                    stream: conn.into_stream(),
                    capabilities,
                    leftover,
                });
            }
            Ok(LoginEvent::Failed(source)) => {
                return Err(BackendError::Login {
                    endpoint: name,
                    source,
                });
            }
            Err(Interrupt::Closed) => login.eof(),
            Err(Interrupt::TimedOut | Interrupt::Failed(ConnEnd::WriteTimeout)) => {
                return Err(BackendError::Timeout {
                    endpoint: name,
                    stage: "login",
                    timeout: timeouts.login,
                });
            }
            Err(Interrupt::Failed(ConnEnd::Tls(why))) => {
                return Err(BackendError::Tls {
                    endpoint: name,
                    source: io::Error::other(why),
                });
            }
            Err(Interrupt::Failed(ConnEnd::Error(source))) => {
                return Err(BackendError::Io {
                    endpoint: name,
                    source,
                });
            }
            Err(Interrupt::Failed(ConnEnd::Closed)) => login.eof(),
        }
    }
}

//! One side of a session before relaying — the client's or a backend's: buffered writes, reads
//! within a deadline, TLS upgrades in either role. The [`crate::pump`] drives every sans-I/O
//! machine over one of these, so that slow, silent and vanishing peers are treated the same way
//! on every protocol.

use std::io;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Stream;

/// Why talking to a peer stopped.
#[derive(Debug)]
pub enum ConnEnd {
    /// The peer closed the connection.
    Closed,
    /// Reading or writing failed.
    Error(io::Error),
    /// A write did not complete in time (the peer stopped reading).
    WriteTimeout,
    /// The TLS handshake failed or took too long, or no certificate or trust is configured.
    Tls(String),
}

impl ConnEnd {
    /// A short word for the session log (the client's side of a session).
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnEnd::Closed => "client-closed",
            ConnEnd::Error(_) => "client-error",
            ConnEnd::WriteTimeout => "write-timeout",
            ConnEnd::Tls(_) => "tls-failed",
        }
    }
}

impl std::fmt::Display for ConnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnEnd::Closed => f.write_str("the connection was closed"),
            ConnEnd::Error(error) => write!(f, "{error}"),
            ConnEnd::WriteTimeout => f.write_str("a write did not complete in time"),
            ConnEnd::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

/// What a read brought.
#[derive(Debug)]
pub enum Received<'a> {
    /// Bytes.
    Data(&'a [u8]),
    /// The deadline passed first.
    TimedOut,
}

/// The TLS role of a connection, for a STARTTLS upgrade.
#[derive(Clone, Copy)]
pub enum TlsRole<'a> {
    /// We are the server (towards a client); `None`: no certificate is configured.
    Server(Option<&'a TlsAcceptor>),
    /// We are the client (towards a mailbox server), verifying it by `host`; `None`: no trust
    /// is configured.
    Client {
        /// The trust for the server's certificate.
        connector: Option<&'a TlsConnector>,
        /// The name the certificate must carry.
        host: &'a str,
    },
}

/// A connection with an output buffer and a read buffer.
#[derive(Debug)]
pub struct Conn {
    /// The connection.
    pub stream: Stream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    /// Wraps a connection.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            out: Vec::new(),
            buf: vec![0u8; 4096],
        }
    }

    /// Queues bytes; they are written by the next [`Conn::flush`].
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Whether bytes are queued.
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes everything queued, within `timeout`.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ConnEnd> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(error)) => Err(ConnEnd::Error(error)),
            Err(_) => Err(ConnEnd::WriteTimeout),
        }
    }

    /// Reads what arrives before `deadline`.
    pub async fn read(&mut self, deadline: Instant) -> Result<Received<'_>, ConnEnd> {
        match tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await {
            Ok(Ok(0)) => Err(ConnEnd::Closed),
            Ok(Ok(n)) => Ok(Received::Data(self.buf.get(..n).unwrap_or_default())),
            Ok(Err(error)) => Err(ConnEnd::Error(error)),
            Err(_) => Ok(Received::TimedOut),
        }
    }

    /// Performs a TLS handshake in `role`, within `timeout`.
    pub async fn start_tls(&mut self, role: TlsRole<'_>, timeout: Duration) -> Result<(), ConnEnd> {
        match role {
            TlsRole::Server(acceptor) => self.accept_tls(acceptor, timeout).await,
            TlsRole::Client { connector, host } => {
                match tokio::time::timeout(timeout, client_tls(&mut self.stream, connector, host))
                    .await
                {
                    Ok(result) => result.map_err(|e| ConnEnd::Tls(e.to_string())),
                    Err(_) => Err(ConnEnd::Tls(format!("no handshake within {timeout:?}"))),
                }
            }
        }
    }

    /// Performs the server side of a TLS handshake within `timeout`.
    pub async fn accept_tls(
        &mut self,
        acceptor: Option<&TlsAcceptor>,
        timeout: Duration,
    ) -> Result<(), ConnEnd> {
        let Some(acceptor) = acceptor else {
            tracing::error!("TLS requested on a listener without a certificate");
            return Err(ConnEnd::Tls("no certificate configured".to_owned()));
        };
        match tokio::time::timeout(timeout, self.stream.accept_tls(acceptor)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                Err(ConnEnd::Tls(e.to_string()))
            }
            Err(_) => Err(ConnEnd::Tls(format!("no handshake within {timeout:?}"))),
        }
    }

    /// Shuts the connection down, briefly waiting for the peer.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// Gives up the buffers and returns the connection (for the relay).
    pub fn into_stream(self) -> Stream {
        self.stream
    }
}

/// Why a client-side TLS handshake could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// No trust (CA) is configured for TLS towards backends.
    #[error("TLS needed but no [backend_tls] configured")]
    NoTrust,
    /// The host is not a name a certificate can carry.
    #[error("`{0}` is not a valid TLS server name")]
    BadName(String),
    /// The handshake failed.
    #[error("{0}")]
    Handshake(io::Error),
}

/// Performs the client side of a TLS handshake on `stream`, verifying the server as `host`.
pub async fn client_tls(
    stream: &mut Stream,
    connector: Option<&TlsConnector>,
    host: &str,
) -> Result<(), ClientTlsError> {
    let connector = connector.ok_or(ClientTlsError::NoTrust)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ClientTlsError::BadName(host.to_owned()))?;
    stream
        .connect_tls(connector, name)
        .await
        .map_err(ClientTlsError::Handshake)
}

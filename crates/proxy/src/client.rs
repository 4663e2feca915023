//! The client's side of a session before relaying: buffered writes, reads within a deadline,
//! TLS upgrades. Shared by the line-protocol driver and the transport driver, so that both treat
//! slow, silent and vanishing clients the same way.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::Stream;

/// Why talking to the client stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// The client closed the connection.
    Closed,
    /// Reading or writing failed.
    Error,
    /// A write did not complete in time (the client stopped reading).
    WriteTimeout,
    /// The TLS handshake failed or took too long, or no certificate is configured.
    Tls,
}

impl ClientEnd {
    /// A short word for the session log.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientEnd::Closed => "client-closed",
            ClientEnd::Error => "client-error",
            ClientEnd::WriteTimeout => "write-timeout",
            ClientEnd::Tls => "tls-failed",
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

/// A client connection with an output buffer and a read buffer.
#[derive(Debug)]
pub struct ClientIo {
    /// The connection.
    pub stream: Stream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl ClientIo {
    /// Wraps a freshly accepted connection.
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            out: Vec::new(),
            buf: vec![0u8; 4096],
        }
    }

    /// Queues bytes; they are written by the next [`ClientIo::flush`].
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Writes everything queued, within `timeout`.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ClientEnd> {
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
            Ok(Err(_)) => Err(ClientEnd::Error),
            Err(_) => Err(ClientEnd::WriteTimeout),
        }
    }

    /// Reads what arrives before `deadline`.
    pub async fn read(&mut self, deadline: Instant) -> Result<Received<'_>, ClientEnd> {
        match tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await {
            Ok(Ok(0)) => Err(ClientEnd::Closed),
            Ok(Ok(n)) => Ok(Received::Data(self.buf.get(..n).unwrap_or_default())),
            Ok(Err(_)) => Err(ClientEnd::Error),
            Err(_) => Ok(Received::TimedOut),
        }
    }

    /// Performs the server side of a TLS handshake within `timeout`.
    pub async fn start_tls(
        &mut self,
        acceptor: Option<&TlsAcceptor>,
        timeout: Duration,
    ) -> Result<(), ClientEnd> {
        let Some(acceptor) = acceptor else {
            tracing::error!("TLS requested on a listener without a certificate");
            return Err(ClientEnd::Tls);
        };
        match tokio::time::timeout(timeout, self.stream.accept_tls(acceptor)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                Err(ClientEnd::Tls)
            }
            Err(_) => Err(ClientEnd::Tls),
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

//! Connecting to a mailbox server (or any upstream): TCP, and TLS from the first byte where the
//! endpoint asks for it. Every backend connection of mailfront — logins, deliveries, health
//! probes — is made here.

use std::io;
use std::time::Duration;

use mailfront_model::BackendTls;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Stream;
use crate::conn::{ClientTlsError, client_tls};

/// Where to connect, and how.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    /// Host name or address.
    pub host: &'a str,
    /// TCP port.
    pub port: u16,
    /// TLS towards the endpoint (only [`BackendTls::Implicit`] is done here; STARTTLS is the
    /// protocol machine's step).
    pub tls: BackendTls,
    /// The trust for TLS, if configured.
    pub connector: Option<&'a TlsConnector>,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable).
    #[error("{0}")]
    Connect(io::Error),
    /// Nothing within the time allowed (connect, or the TLS handshake).
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// Implicit TLS failed.
    #[error("TLS: {0}")]
    Tls(ClientTlsError),
}

/// Connects within `timeout` (the TLS handshake of an implicit-TLS endpoint included), with
/// `TCP_NODELAY` set: mail protocols are request and reply, and Nagle would hold back the last
/// short segment of every reply.
pub async fn connect(dial: Dial<'_>, timeout: Duration) -> Result<Stream, ConnectError> {
    let connecting = async {
        let tcp = TcpStream::connect((dial.host, dial.port))
            .await
            .map_err(ConnectError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut stream = Stream::Plain(tcp);
        if dial.tls == BackendTls::Implicit {
            client_tls(&mut stream, dial.connector, dial.host)
                .await
                .map_err(ConnectError::Tls)?;
        }
        Ok(stream)
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

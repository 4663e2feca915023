//! A TCP connection that may be upgraded to TLS in place (STARTTLS, either side).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// A connection to a client or a backend: plain TCP, or TLS over TCP.
#[derive(Debug, Default)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (as server towards clients, as client towards backends).
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken apart during an upgrade that failed; every operation errors.
    #[default]
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Stream {
    /// Whether the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The TLS version and cipher suite (`TLSv1.3`, `TLS13_AES_256_GCM_SHA384`), if the
    /// connection is protected by TLS.
    pub fn tls_parameters(&self) -> Option<(String, String)> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let state = tls.get_ref().1;
        let version = match state.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = state.negotiated_cipher_suite()?.suite();
        let cipher = suite
            .as_str()
            .map_or_else(|| format!("{suite:?}"), str::to_owned);
        Some((version, cipher))
    }

    /// Performs a TLS handshake as the server (implicit TLS or after STARTTLS).
    pub async fn accept_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::take(self) else {
            return Err(io::Error::other(
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = acceptor.accept(tcp).await?;
        *self = Stream::Tls(Box::new(TlsStream::Server(tls)));
        Ok(())
    }

    /// Performs a TLS handshake as the client (towards a backend).
    pub async fn connect_tls(
        &mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let Stream::Plain(tcp) = std::mem::take(self) else {
            return Err(io::Error::other(
                "TLS requested on a connection that is not plain TCP",
            ));
        };
        let tls = connector.connect(name, tcp).await?;
        *self = Stream::Tls(Box::new(TlsStream::Client(tls)));
        Ok(())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

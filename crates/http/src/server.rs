//! Accepting HTTPS connections and serving them with hyper (HTTP/1.1 and HTTP/2).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use mailfront_net::gate::{Arrival, Connection, Gate};
use mailfront_net::listen::accept_loop;
use mailfront_net::tls::SharedAcceptor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::HttpFrontDoor;

/// Serves HTTPS (or plain HTTP without `acceptor`, behind a TLS-terminating balancer) on
/// `listener` until `shutdown` turns true.
pub async fn serve(
    front: Arc<HttpFrontDoor>,
    listener: TcpListener,
    name: String,
    acceptor: Arc<SharedAcceptor>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, name, shutdown, move |tcp, peer| {
        let front = Arc::clone(&front);
        let acceptor = acceptor.clone();
        let gate = Arc::clone(&gate);
        tokio::spawn(async move {
            // No room (or a bad PROXY header): close before TLS; clients retry.
            let Arrival::Admitted(Connection {
                tcp,
                client: peer,
                slots: _slots,
            }) = gate.admit(tcp, peer).await
            else {
                return;
            };
            let (handshake_timeout, header_timeout) = (
                front.config().handshake_timeout,
                front.config().header_timeout,
            );
            let service = service_fn(move |request| Arc::clone(&front).handle(request, peer));
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_buf_size(64 * 1024)
                .header_read_timeout(header_timeout);
            builder.http2().max_header_list_size(64 * 1024);
            let tcp = Lingering { tcp: Some(tcp) };
            let result = match acceptor.get() {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(client = %peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await
                }
            };
            if let Err(error) = result {
                tracing::debug!(client = %peer, %error, "HTTP connection ended with an error");
            }
        });
    })
    .await;
}

/// How long a closed connection's remaining input is read and dropped, at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of it, at most.
const LINGER_BYTES: usize = 256 * 1024;

/// A client connection that is closed gracefully when hyper is done with it: our side is shut
/// down (FIN) and what the client is still sending is read and dropped for a moment. Closing a
/// socket with unread input makes the kernel answer with a reset, and a reset can destroy our
/// last reply in the client's receive queue before it is read: a client still sending an
/// oversized header block would never see its `431` (nginx's `lingering_close` for the same).
struct Lingering {
    tcp: Option<TcpStream>,
}

impl Lingering {
    fn tcp(&mut self) -> io::Result<&mut TcpStream> {
        self.tcp
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if let (Some(tcp), Ok(runtime)) = (self.tcp.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(linger(tcp));
        }
    }
}

/// Shuts our side down and drops what the client still sends, for a moment.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 4096];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => break,
        }
    }
}

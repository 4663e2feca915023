//! Accepting HTTPS connections and serving them with hyper (HTTP/1.1 and HTTP/2).

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use mailfront_proxy::gate::{Admitted, Entry, Gate};
use mailfront_proxy::listener::accept_loop;
use mailfront_proxy::tls::SharedAcceptor;
use tokio::net::TcpListener;
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
            let Entry::Admitted(Admitted {
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

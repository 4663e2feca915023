//! Accepting connections on a listener and starting a session for each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::LineProtocol;
use crate::admission::Gateway;
use crate::driver::{ListenerContext, serve};
use crate::transport::{self, TransportContext};

/// Accepts connections until `shutdown` turns true, handing each to `session`.
pub async fn accept_loop<F>(
    listener: TcpListener,
    name: String,
    mut shutdown: watch::Receiver<bool>,
    session: F,
) where
    F: Fn(TcpStream, SocketAddr),
{
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    session(tcp, peer);
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = %name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

/// Serves a line protocol (IMAP, POP3, submission) on `listener`.
pub async fn run<P: LineProtocol>(
    listener: TcpListener,
    protocol: Arc<P>,
    gateway: Arc<Gateway>,
    context: Arc<ListenerContext>,
    shutdown: watch::Receiver<bool>,
) {
    let name = context.name.clone();
    accept_loop(listener, name, shutdown, move |tcp, peer| {
        tokio::spawn(serve(
            Arc::clone(&protocol),
            Arc::clone(&gateway),
            Arc::clone(&context),
            tcp,
            peer,
        ));
    })
    .await;
}

/// Serves the front-end transport (inbound or outbound SMTP) on `listener`.
pub async fn run_transport(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    context: Arc<TransportContext>,
    shutdown: watch::Receiver<bool>,
) {
    let name = context.name.clone();
    accept_loop(listener, name, shutdown, move |tcp, peer| {
        tokio::spawn(transport::serve(
            Arc::clone(&context),
            Arc::clone(&gateway),
            tcp,
            peer,
        ));
    })
    .await;
}

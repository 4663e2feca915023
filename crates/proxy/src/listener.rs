//! Accepting connections on a listener and starting a session for each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use mailfront_protocol::ClientTls;

use crate::LineProtocol;
use crate::admission::Gateway;
use crate::driver::{ListenerContext, serve};
use crate::gate::{Entry, Gate};
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

/// Says `notice` (the protocol's "too busy") and closes; never waits long on a slow client.
/// On an implicit-TLS listener the client expects a TLS handshake, not plain text, and a
/// handshake is the last thing to spend on when overloaded: close without a word.
async fn turn_away(mut tcp: TcpStream, notice: &[u8], tls: ClientTls) {
    if tls == ClientTls::Implicit {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tcp.write_all(notice).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Serves a line protocol (IMAP, POP3, submission) on `listener` (a non-blocking std socket,
/// taken by the runtime this runs on).
pub async fn run<P: LineProtocol>(
    listener: std::net::TcpListener,
    protocol: Arc<P>,
    gateway: Arc<Gateway>,
    context: Arc<ListenerContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let name = context.name.clone();
    // Registered with the event loop of the runtime this loop runs on (a session worker's).
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listener = %name, %error, "cannot register the listening socket");
            return;
        }
    };
    accept_loop(listener, name, shutdown, move |tcp, peer| {
        let (protocol, gateway, context, gate) =
            (Arc::clone(&protocol), Arc::clone(&gateway), Arc::clone(&context), Arc::clone(&gate));
        tokio::spawn(async move {
            // Boxed, like the login states: a task is as large as its largest state, and the
            // PROXY header read is not needed for the life of the session.
            match Box::pin(gate.admit(tcp, peer)).await {
                Entry::Admitted(connection) => serve(protocol, gateway, context, connection).await,
                Entry::Busy { tcp, client } => {
                    tracing::info!(listener = %context.name, %client, "connection refused: too many connections");
                    turn_away(tcp, protocol.busy_notice(), context.tls).await;
                }
                Entry::Dropped => {}
            }
        });
    })
    .await;
}

/// Serves the front-end transport (inbound or outbound SMTP) on `listener`.
pub async fn run_transport(
    listener: std::net::TcpListener,
    gateway: Arc<Gateway>,
    context: Arc<TransportContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let name = context.name.clone();
    // Registered with the event loop of the runtime this loop runs on (a session worker's).
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listener = %name, %error, "cannot register the listening socket");
            return;
        }
    };
    accept_loop(listener, name, shutdown, move |tcp, peer| {
        let (gateway, context, gate) = (Arc::clone(&gateway), Arc::clone(&context), Arc::clone(&gate));
        tokio::spawn(async move {
            // Boxed, like the login states: a task is as large as its largest state, and the
            // PROXY header read is not needed for the life of the session.
            match Box::pin(gate.admit(tcp, peer)).await {
                Entry::Admitted(connection) => transport::serve(context, gateway, connection).await,
                Entry::Busy { tcp, client } => {
                    tracing::info!(listener = %context.name, %client, "connection refused: too many connections");
                    turn_away(
                        tcp,
                        b"421 4.7.0 Too many connections, try again later\r\n",
                        context.settings.tls,
                    )
                    .await;
                }
                Entry::Dropped => {}
            }
        });
    })
    .await;
}

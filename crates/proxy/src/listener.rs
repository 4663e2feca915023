//! Accepting connections on a line-protocol or mail-transfer listener and starting a session
//! for each connection the gate admits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mailfront_net::gate::{Arrival, Connection, Gate};
use mailfront_net::listen::accept_loop;
use mailfront_protocol::ClientTls;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::driver::{ListenerContext, serve};
use crate::mail_transfer::{self, MailTransferContext};
use crate::{LineProtocol, NodeServices};

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

/// What a listener needs to know to turn a connection away in its protocol.
struct Refusing {
    name: String,
    notice: &'static [u8],
    tls: ClientTls,
}

/// Accepts on `listener` (a non-blocking std socket, registered with the runtime this runs on)
/// until `shutdown`, passes each connection through `gate`, and runs `session` for those it
/// admits; those it has no room for hear `refusing.notice`.
async fn serve_admitted<F, Fut>(
    listener: std::net::TcpListener,
    refusing: Refusing,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
    session: F,
) where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Registered with the event loop of the runtime this loop runs on (a session worker's).
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listener = %refusing.name, %error, "cannot register the listening socket");
            return;
        }
    };
    let refusing = Arc::new(refusing);
    let session = Arc::new(session);
    accept_loop(listener, refusing.name.clone(), shutdown, move |tcp, peer| {
        let (refusing, gate, session) =
            (Arc::clone(&refusing), Arc::clone(&gate), Arc::clone(&session));
        tokio::spawn(async move {
            // Boxed, like the login states: a task is as large as its largest state, and the
            // PROXY header read is not needed for the life of the session.
            match Box::pin(gate.admit(tcp, peer)).await {
                Arrival::Admitted(connection) => session(connection).await,
                Arrival::Busy { tcp, client } => {
                    tracing::info!(listener = %refusing.name, %client, "connection refused: too many connections");
                    turn_away(tcp, refusing.notice, refusing.tls).await;
                }
                Arrival::Dropped => {}
            }
        });
    })
    .await;
}

/// Serves a line protocol (IMAP, POP3, submission) on `listener`.
pub async fn run<P: LineProtocol>(
    listener: std::net::TcpListener,
    protocol: Arc<P>,
    services: Arc<NodeServices>,
    context: Arc<ListenerContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let refusing = Refusing {
        name: context.name.clone(),
        notice: protocol.busy_notice(),
        tls: context.tls,
    };
    serve_admitted(listener, refusing, gate, shutdown, move |connection| {
        serve(
            Arc::clone(&protocol),
            Arc::clone(&services),
            Arc::clone(&context),
            connection,
        )
    })
    .await;
}

/// Serves the front-end transport (inbound or outbound SMTP) on `listener`.
pub async fn run_mail_transfer(
    listener: std::net::TcpListener,
    services: Arc<NodeServices>,
    context: Arc<MailTransferContext>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) {
    let refusing = Refusing {
        name: context.name.clone(),
        notice: mailfront_protocol::smtp::BUSY_NOTICE,
        tls: context.settings.tls,
    };
    serve_admitted(listener, refusing, gate, shutdown, move |connection| {
        mail_transfer::serve(Arc::clone(&context), Arc::clone(&services), connection)
    })
    .await;
}

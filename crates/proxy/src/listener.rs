//! Accepting connections on a listener and starting a session for each.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::LineProtocol;
use crate::admission::Gateway;
use crate::driver::{ListenerContext, serve};

/// Accepts connections until `shutdown` turns true, serving each with the session driver.
pub async fn run<P: LineProtocol>(
    listener: TcpListener,
    protocol: Arc<P>,
    gateway: Arc<Gateway>,
    context: Arc<ListenerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(serve(
                        Arc::clone(&protocol),
                        Arc::clone(&gateway),
                        Arc::clone(&context),
                        tcp,
                        peer,
                    ));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = %context.name, %error, "accept failed");
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

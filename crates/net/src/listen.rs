//! Accepting connections on a listening socket.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

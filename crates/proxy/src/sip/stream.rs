//! SIP over TCP and TLS: one task per connection, messages cut by Content-Length, pipelined
//! requests answered in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailfront_net::Stream;
use mailfront_protocol::sip::{
    Frame, FramingError, Ignored, Received, Step, StreamFramer, Unparseable, answer, read_request,
    render,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Outcome, SipContext, decide, ignored, immediate, log_request};
use crate::NodeServices;

/// Why a TCP or TLS connection ended, for the debug log.
#[derive(Debug)]
enum ConnectionEnd {
    Closed,
    Idle,
    Shutdown,
    Error,
    Framing,
    NotSip,
    Tls,
}

/// What to do about one frame.
enum Answer {
    /// Write these bytes back.
    Write(Vec<u8>),
    /// Nothing to write (an ACK, an ignored message).
    Nothing,
    /// Close: the stream is not SIP.
    End(ConnectionEnd),
}

/// Serves one TCP or TLS connection.
pub(super) async fn serve_connection(
    services: Arc<NodeServices>,
    context: Arc<SipContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let end = connection(&services, &context, tcp, peer, shutdown).await;
    tracing::debug!(listener = %context.name, client = %peer, end = ?end, "sip connection ended");
}

async fn connection(
    services: &NodeServices,
    context: &SipContext,
    tcp: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> ConnectionEnd {
    let idle = context.settings.idle_timeout;
    let mut stream = Stream::Plain(tcp);
    if let Some(acceptor) = &context.acceptor.get() {
        match tokio::time::timeout(idle, stream.accept_tls(acceptor)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(listener = %context.name, client = %peer, %error, "TLS handshake failed");
                return ConnectionEnd::Tls;
            }
            Err(_) => return ConnectionEnd::Tls,
        }
    }
    let mut framer = StreamFramer::new(context.settings.limits);
    let mut buf = vec![0u8; 8192];
    // Each message must arrive whole within `idle` of the previous one: a read of a few bytes
    // does not push the deadline, so a client dribbling a request cannot hold the connection.
    let mut deadline = Instant::now() + idle;
    loop {
        loop {
            let frame = match framer.next_frame() {
                Ok(Some(frame)) => {
                    deadline = Instant::now() + idle;
                    frame
                }
                Ok(None) => break,
                Err(error) => {
                    framing_lost(context, &mut stream, peer, &error).await;
                    return ConnectionEnd::Framing;
                }
            };
            let bytes = match answer_frame(services, context, peer, frame).await {
                Answer::Write(bytes) => bytes,
                Answer::Nothing => continue,
                Answer::End(end) => return end,
            };
            if write(&mut stream, &bytes, idle).await.is_err() {
                return ConnectionEnd::Error;
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => read,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return ConnectionEnd::Shutdown;
                }
                continue;
            }
        };
        match read {
            Ok(Ok(0)) => return ConnectionEnd::Closed,
            Ok(Ok(n)) => framer.push(buf.get(..n).unwrap_or_default()),
            Ok(Err(_)) => return ConnectionEnd::Error,
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return ConnectionEnd::Idle;
            }
        }
    }
}

/// The framing is lost (an unreadable Content-Length, a message over the limit): answer if
/// the protocol has an answer, then close.
async fn framing_lost(
    context: &SipContext,
    stream: &mut Stream,
    peer: SocketAddr,
    error: &FramingError,
) {
    let limits = context.settings.limits;
    if let Some((reply, echo)) = error.reply(&limits) {
        let tag = echo.stateless_tag(&context.tag_key);
        let idle = context.settings.idle_timeout;
        let _ = write(stream, &render(&reply, &echo, peer, &tag), idle).await;
        let outcome = Outcome::reply(reply, &error.to_string());
        log_request(context, context.transport(), peer, "-", &echo, &outcome);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// The answer to one frame: a ping's pong, a malformed request's error, a request's reply.
async fn answer_frame(
    services: &NodeServices,
    context: &SipContext,
    peer: SocketAddr,
    frame: Frame,
) -> Answer {
    let transport = context.transport();
    let message = match frame {
        // RFC 5626 §3.5.1: a double-CRLF ping is answered with a single CRLF.
        Frame::Ping => return Answer::Write(b"\r\n".to_vec()),
        Frame::Message(message) => message,
    };
    let request = match read_request(&message, &context.settings.limits) {
        Received::Ignore(Ignored::Unparseable(Unparseable::NotSip)) => {
            // The stream is not SIP: the framing cannot be trusted.
            let why = Ignored::Unparseable(Unparseable::NotSip);
            ignored(context, transport, peer, why);
            return Answer::End(ConnectionEnd::NotSip);
        }
        Received::Ignore(why) => {
            ignored(context, transport, peer, why);
            return Answer::Nothing;
        }
        Received::Reject {
            method,
            reply,
            echo,
        } => {
            let tag = echo.stateless_tag(&context.tag_key);
            let outcome = Outcome::reply(reply.clone(), "malformed request");
            log_request(context, transport, peer, &method, &echo, &outcome);
            return Answer::Write(render(&reply, &echo, peer, &tag));
        }
        Received::Request(request) => request,
    };
    let step = request.step();
    let outcome = match (immediate(&step), &step) {
        (Some(outcome), _) => outcome,
        (None, Step::Lookup(target)) => decide(services, context, &request, target).await,
        (None, _) => return Answer::Nothing,
    };
    log_request(
        context,
        transport,
        peer,
        &request.method,
        &request.echo,
        &outcome,
    );
    match &outcome.reply {
        Some(reply) => {
            let tag = request.echo.stateless_tag(&context.tag_key);
            Answer::Write(answer(&request, reply, peer, &tag))
        }
        None => Answer::Nothing,
    }
}

async fn write(stream: &mut Stream, bytes: &[u8], timeout: Duration) -> Result<(), ()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

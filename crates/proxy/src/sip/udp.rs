//! SIP over UDP: one socket, one receive loop, lookups in tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mailfront_protocol::sip::{Received, Reply, Request, Step, answer, read_request, render};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};

use super::{Outcome, SipContext, decide, ignored, immediate, log_request};
use crate::NodeServices;

/// Serves the UDP side until `shutdown` turns true.
pub(super) async fn run_udp(
    socket: Arc<UdpSocket>,
    services: Arc<NodeServices>,
    context: Arc<SipContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = context.settings.limits.max_message_size;
    // One byte more than the limit: a datagram that fills it is over the limit (the kernel
    // truncates what does not fit, silently).
    let mut buf = vec![0u8; limit.saturating_add(1).min(65_536)];
    let in_flight = Arc::new(Semaphore::new(context.settings.max_in_flight));
    loop {
        let (n, source) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(listener = %context.name, %error, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        if n > limit {
            services.metrics.sip_dropped.inc();
            oversized(&context, source, n);
            continue;
        }
        let Some(request) =
            first_look(&socket, &context, buf.get(..n).unwrap_or_default(), source).await
        else {
            continue;
        };
        let step = request.step();
        if let Some(outcome) = immediate(&step) {
            respond_udp(&socket, &context, &request, source, &outcome).await;
            continue;
        }
        let Step::Lookup(target) = step else {
            continue;
        };
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            context.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            let reply = Reply::ServiceUnavailable {
                retry_after: context.settings.retry_after,
            };
            let outcome = Outcome::reply(reply, "overloaded: sip.max_in_flight lookups running");
            respond_udp(&socket, &context, &request, source, &outcome).await;
            continue;
        };
        let (socket, services, context) = (
            Arc::clone(&socket),
            Arc::clone(&services),
            Arc::clone(&context),
        );
        tokio::spawn(async move {
            let outcome = decide(&services, &context, &request, &target).await;
            respond_udp(&socket, &context, &request, source, &outcome).await;
            drop(permit);
        });
    }
}

/// Counts a datagram over `sip.max_message_size`; logs it at the 1st, 2nd, 4th, 8th, … and
/// every 1000th, so that a flood cannot flood the log.
fn oversized(context: &SipContext, source: SocketAddr, size: usize) {
    let dropped = context
        .stats
        .oversized_datagrams
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    if dropped.is_power_of_two() || dropped.is_multiple_of(1000) {
        tracing::warn!(
            listener = %context.name,
            client = %source,
            size,
            limit = context.settings.limits.max_message_size,
            dropped_total = dropped,
            "sip datagram dropped: larger than sip.max_message_size"
        );
    }
}

/// Reads a datagram: a request to act on, or `None` once a malformed request was answered or
/// a message not worth an answer dropped.
async fn first_look(
    socket: &UdpSocket,
    context: &SipContext,
    datagram: &[u8],
    source: SocketAddr,
) -> Option<Request> {
    match read_request(datagram, &context.settings.limits) {
        Received::Ignore(why) => {
            ignored(context, "udp", source, why);
            None
        }
        Received::Reject {
            method,
            reply,
            echo,
        } => {
            let tag = echo.stateless_tag(&context.tag_key);
            let bytes = render(&reply, &echo, source, &tag);
            send_datagram(socket, context, &bytes, echo.udp_destination(source)).await;
            let outcome = Outcome::reply(reply, "malformed request");
            log_request(context, "udp", source, &method, &echo, &outcome);
            None
        }
        Received::Request(request) => Some(request),
    }
}

async fn respond_udp(
    socket: &UdpSocket,
    context: &SipContext,
    request: &Request,
    source: SocketAddr,
    outcome: &Outcome,
) {
    if let Some(reply) = &outcome.reply {
        let tag = request.echo.stateless_tag(&context.tag_key);
        let bytes = answer(request, reply, source, &tag);
        send_datagram(
            socket,
            context,
            &bytes,
            request.echo.udp_destination(source),
        )
        .await;
    }
    log_request(
        context,
        "udp",
        source,
        &request.method,
        &request.echo,
        outcome,
    );
}

async fn send_datagram(socket: &UdpSocket, context: &SipContext, bytes: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, to).await {
        tracing::debug!(listener = %context.name, to = %to, %error, "sip response not sent");
    }
}

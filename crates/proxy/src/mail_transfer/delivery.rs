//! Delivering one message to one mailbox server: choosing it, opening the LMTP/SMTP
//! transaction, streaming the content, and reading the server's verdict.

use std::time::Duration;

use mailfront_model::{DeliveryExtensions, DeliveryProtocol, ServerName};
use mailfront_net::conn::{Conn, ConnEnd, TlsRole};
use mailfront_net::connect::{Dial, connect};
use mailfront_net::pump::{Interrupt, Until, pump};
use mailfront_protocol::smtp::command::RcptParams;
use mailfront_protocol::smtp::data::DotStuffer;
use mailfront_protocol::smtp::delivery::{DeliveryClient, DeliveryEvent, Origin, verdict};
use mailfront_protocol::smtp::receiver::{Envelope, Recipient};
use mailfront_protocol::smtp::reply::Reply;
use mailfront_routing::Endpoint;
use mailfront_routing::delivery::{MailboxRecipient, delivery_candidates};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::recipients::{self, Resolved};
use super::{MailTransferContext, NonMailboxRecipients, TransferMode};
use crate::NodeServices;

/// A delivery in progress at one backend.
pub(super) struct OpenDelivery {
    /// The server's name (logs).
    pub server: String,
    conn: Conn,
    client: DeliveryClient,
    stuffer: DotStuffer,
    buf: Vec<u8>,
    /// Set when writing content failed; the rest is dropped and this is the reply.
    broken: Option<Reply>,
    /// Content bytes received so far.
    pub size: u64,
}

/// Where a message may go, in order, and the recipients as the mailbox servers know them.
struct Targets {
    servers: Vec<(String, Endpoint, DeliveryProtocol)>,
    recipients: Vec<Recipient>,
}

/// Opens a delivery of `envelope` at the first candidate server that accepts it.
pub(super) async fn open(
    context: &MailTransferContext,
    services: &NodeServices,
    envelope: &Envelope,
    origin: &Origin,
) -> Result<OpenDelivery, Reply> {
    let targets = match &context.mode {
        TransferMode::Outbound { relay, .. } => Targets {
            servers: vec![("relay".to_owned(), relay.clone(), DeliveryProtocol::Smtp)],
            recipients: envelope.recipients.clone(),
        },
        TransferMode::Inbound {
            accepted_domains,
            non_mailbox,
        } => inbound_targets(services, accepted_domains, non_mailbox, envelope).await?,
    };
    let helo = services.resolver.topology().node.name.clone();
    let delivered = Envelope {
        from: envelope.from.clone(),
        params: envelope.params.clone(),
        recipients: targets.recipients,
    };
    let health = services.resolver.health();
    for (name, endpoint, protocol) in targets.servers {
        let server = ServerName::new(&name);
        let client = DeliveryClient::new(protocol, endpoint.tls, helo.clone(), delivered.clone())
            .with_origin(origin.clone());
        let learn = |offers| {
            if let TransferMode::Inbound { .. } = context.mode {
                health.learn_delivery_offers(&server, offers);
            }
        };
        match try_open(services, &endpoint, client, context.delivery).await {
            Ok((conn, client)) => {
                learn(client.offers());
                health.mark_up(&server);
                return Ok(OpenDelivery {
                    server: name,
                    conn,
                    client,
                    stuffer: DotStuffer::new(),
                    buf: Vec::new(),
                    broken: None,
                    size: 0,
                });
            }
            Err(OpenFailure::Unreachable(why)) => {
                tracing::warn!(backend = %name, error = %why, "delivery server unreachable; trying the next candidate");
                health.mark_down(&server);
            }
            Err(OpenFailure::Refused(reply, offers)) => {
                learn(offers);
                tracing::warn!(backend = %name, reply = %reply.summary(), "delivery server refused the envelope; trying the next candidate");
            }
        }
    }
    Err(Reply::no_server())
}

/// The candidate servers of an inbound message (the seeds' front-end transport rules), with
/// its recipients resolved again now: the freshest location decides, and aliases become the
/// mailbox's own address.
async fn inbound_targets(
    services: &NodeServices,
    accepted_domains: &[String],
    non_mailbox: &NonMailboxRecipients,
    envelope: &Envelope,
) -> Result<Targets, Reply> {
    let mut resolved: Vec<(Resolved, &Recipient)> = Vec::with_capacity(envelope.recipients.len());
    for recipient in &envelope.recipients {
        match recipients::resolve(services, accepted_domains, non_mailbox, &recipient.address).await
        {
            Ok(r) => resolved.push((r, recipient)),
            Err(reply) if reply.is_transient() => return Err(reply),
            Err(_) => return Err(Reply::recipient_changed()),
        }
    }
    // Recipients that are not mailboxes choose nothing; with none that is, the rules pick a
    // random server of this site.
    let mailboxes: Vec<MailboxRecipient<'_>> = resolved
        .iter()
        .filter_map(|(r, _)| r.active.as_ref())
        .map(|active| MailboxRecipient { active })
        .collect();
    let topology = services.resolver.topology();
    let health = services.resolver.health();
    let candidates = delivery_candidates(
        &topology,
        &mailboxes,
        &|s| health.may_deliver(s),
        rand::random(),
    );
    let servers = candidates
        .into_iter()
        .filter_map(|name| {
            let server = topology.server(&name)?;
            let endpoint = server.endpoints.delivery.clone()?;
            Some((
                name.to_string(),
                endpoint,
                server.endpoints.delivery_protocol,
            ))
        })
        .collect();
    let mut recipients: Vec<Recipient> = Vec::new();
    for (r, asked) in resolved {
        if !recipients.iter().any(|known| known.address == r.address) {
            let params = original_recipient(&asked.address, &r.address, &asked.params);
            recipients.push(Recipient {
                address: r.address,
                params,
            });
        }
    }
    Ok(Targets {
        servers,
        recipients,
    })
}

/// The RCPT parameters for a recipient the client named `asked` and the mailbox server knows as
/// `address`: the client's, and when an alias became the mailbox's own address and the client
/// asked for notifications without naming the original recipient, that one (RFC 3461 §4.2: a
/// notification then names the address the sender used).
fn original_recipient(asked: &str, address: &str, params: &RcptParams) -> RcptParams {
    let mut params = params.clone();
    if params.notify.is_some() && params.orcpt.is_none() && asked != address && asked.is_ascii() {
        params.orcpt = Some(format!("rfc822;{}", xtext(asked)));
    }
    params
}

/// `text` as xtext (RFC 3461 §4): `+`, `=` and characters outside `!`..`~` as `+XX`.
fn xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

enum OpenFailure {
    Unreachable(String),
    /// Refused before the content; what the server announced (for the listener's EHLO).
    Refused(Reply, DeliveryExtensions),
}

/// Connects to `endpoint` and runs the delivery client up to the content, within the
/// connect timeout and then `timeout`.
async fn try_open(
    services: &NodeServices,
    endpoint: &Endpoint,
    mut client: DeliveryClient,
    timeout: Duration,
) -> Result<(Conn, DeliveryClient), OpenFailure> {
    let connector = services.backends.tls.as_ref();
    let dial = Dial {
        host: &endpoint.host,
        port: endpoint.port,
        tls: endpoint.tls,
        connector,
    };
    let stream = connect(dial, services.backends.timeouts.connect)
        .await
        .map_err(|e| OpenFailure::Unreachable(e.to_string()))?;
    let mut conn = Conn::new(stream);
    let role = TlsRole::Client {
        connector,
        host: &endpoint.host,
    };
    let mut pace = Until(Instant::now() + timeout);
    loop {
        match pump(&mut client, &mut conn, role, &mut pace).await {
            Ok(DeliveryEvent::ReadyForContent) => return Ok((conn, client)),
            Ok(DeliveryEvent::Refused(reply)) => {
                let _ = conn.stream.write_all(&client.quit()).await;
                return Err(OpenFailure::Refused(reply, client.offers()));
            }
            Ok(DeliveryEvent::Failed(why)) => return Err(OpenFailure::Unreachable(why)),
            Ok(DeliveryEvent::Finished(_)) => {
                return Err(OpenFailure::Unreachable("finished before content".into()));
            }
            Err(Interrupt::Closed) => client.eof(),
            Err(Interrupt::TimedOut) => {
                return Err(OpenFailure::Unreachable(format!(
                    "no answer within {timeout:?}"
                )));
            }
            Err(Interrupt::Failed(end)) => return Err(OpenFailure::Unreachable(end.to_string())),
        }
    }
}

impl OpenDelivery {
    /// Streams content bytes to the server (dot-stuffed); a failure is remembered and becomes
    /// the message's reply, and the rest of the content is dropped.
    pub(super) async fn write(&mut self, content: &[u8], timeout: Duration) {
        if self.broken.is_some() {
            return;
        }
        self.size += content.len() as u64;
        self.buf.clear();
        self.stuffer.encode(content, &mut self.buf);
        match tokio::time::timeout(timeout, self.conn.stream.write_all(&self.buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(backend = %self.server, error = %e, "delivery server failed during content");
                self.broken = Some(Reply::connection_lost());
            }
            Err(_) => {
                self.broken = Some(Reply::server_too_slow());
            }
        }
    }

    /// Ends the content and reads the server's verdict, within `timeout`.
    pub(super) async fn finish(mut self, timeout: Duration) -> Reply {
        if let Some(reply) = self.broken.take() {
            return reply;
        }
        self.buf.clear();
        self.stuffer.finish(&mut self.buf);
        self.conn.queue(&self.buf);
        self.client.finish();
        // The end of the content is queued: the pump writes it before it reads the verdict.
        let role = TlsRole::Client {
            connector: None,
            host: "",
        };
        let mut pace = Until(Instant::now() + timeout);
        let why = loop {
            match pump(&mut self.client, &mut self.conn, role, &mut pace).await {
                Ok(DeliveryEvent::Finished(results)) => {
                    let _ = self.conn.stream.write_all(&self.client.quit()).await;
                    return verdict(&results);
                }
                Ok(DeliveryEvent::Failed(why)) => break why,
                Ok(other) => break format!("unexpected event: {other:?}"),
                Err(Interrupt::Closed) => self.client.eof(),
                Err(Interrupt::TimedOut | Interrupt::Failed(ConnEnd::WriteTimeout)) => {
                    return Reply::not_confirmed_in_time();
                }
                Err(Interrupt::Failed(end)) => break end.to_string(),
            }
        };
        tracing::warn!(backend = %self.server, error = %why, "delivery failed after the content");
        // The backend may or may not have delivered; the sender retries (a duplicate at worst,
        // never a loss).
        Reply::not_confirmed()
    }

    /// Gives up: dropping the connection before the end-of-data line means the server delivers
    /// nothing.
    pub(super) fn abort(self) {
        tracing::debug!(backend = %self.server, "delivery aborted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_asking_for_notifications_keeps_its_original_recipient() {
        let notify = RcptParams {
            notify: Some("SUCCESS".into()),
            orcpt: None,
        };
        let changed = original_recipient("Al+ias=1@example.com", "alice@example.com", &notify);
        assert_eq!(
            changed.orcpt.as_deref(),
            Some("rfc822;Al+2Bias+3D1@example.com")
        );
        // Unchanged, not asked for, or already named: as the client sent it.
        let same = original_recipient("alice@example.com", "alice@example.com", &notify);
        assert_eq!(same, notify);
        let silent = RcptParams::default();
        assert_eq!(
            original_recipient("a@example.com", "b@example.com", &silent),
            silent
        );
        let named = RcptParams {
            notify: Some("FAILURE".into()),
            orcpt: Some("rfc822;x@y".into()),
        };
        assert_eq!(
            original_recipient("a@example.com", "b@example.com", &named),
            named
        );
    }
}

//! Listeners: their sockets, names and gates, and the settings of each protocol they serve.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use mailfront_metrics::Metrics;
use mailfront_model::{Cidr, Protocol};
use mailfront_net::gate::{ClientCounts, Gate};
use mailfront_net::tls::SharedAcceptor;
use mailfront_protocol::OAuthOffer;
use mailfront_protocol::imap::ImapSettings;
use mailfront_protocol::pop3::Pop3Settings;
use mailfront_protocol::smtp::receiver::ReceiverSettings;
use mailfront_protocol::smtp::submission::SubmissionSettings;
use mailfront_protocol::{ClientTls, Limits};
use mailfront_proxy::driver::ListenerContext;
use mailfront_proxy::mail_transfer::{MailTransferContext, NonMailboxRecipients, TransferMode};
use mailfront_proxy::sip::SipContext;
use mailfront_routing::Endpoint;
use tokio::net::TcpListener;

use crate::config::{Config, ListenerConfig, ListenerProtocol, ListenerTls};

/// How long a trusted source has to send its PROXY header when `proxy_protocol.timeout` is not
/// set.
const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of a listener in logs and metrics: its `name`, or protocol and address.
pub fn listener_name(listener: &ListenerConfig) -> String {
    listener
        .name
        .clone()
        .unwrap_or_else(|| format!("{}@{}", listener.protocol, listener.address))
}

/// Whether a listener's sessions run on the session workers, one socket per worker
/// (`SO_REUSEPORT`): the mail protocols do; HTTPS and SIP keep one socket on the main runtime.
pub fn per_worker(protocol: ListenerProtocol) -> bool {
    matches!(
        protocol,
        ListenerProtocol::Imap
            | ListenerProtocol::Pop3
            | ListenerProtocol::Submission
            | ListenerProtocol::Smtp
            | ListenerProtocol::Outbound
    )
}

/// The TLS a listener offers, as the protocol machines name it.
pub fn client_tls(tls: ListenerTls) -> ClientTls {
    match tls {
        ListenerTls::None => ClientTls::None,
        ListenerTls::Starttls => ClientTls::StartTls,
        ListenerTls::Implicit => ClientTls::Implicit,
    }
}

/// The pre-login bounds of `[limits]`.
pub fn limits(config: &Config) -> Limits {
    Limits {
        max_line_length: config.limits.max_line_length,
        max_literal_size: config.limits.max_literal_size,
        max_commands_before_auth: config.limits.max_commands_before_auth,
        max_auth_failures: config.limits.max_auth_failures,
    }
}

/// The greeting of the IMAP and POP3 listeners.
fn greeting(config: &Config) -> String {
    format!("{} ready.", config.node.name)
}

/// The settings of an IMAP listener.
pub fn imap_settings(config: &Config, listener: &ListenerConfig) -> ImapSettings {
    ImapSettings {
        tls: client_tls(listener.tls),
        allow_plaintext_auth: listener.allow_plaintext_auth,
        limits: limits(config),
        greeting: greeting(config),
        oauth: oauth_offer(config, Protocol::Imap),
    }
}

/// What a listener of `protocol` offers of OAuth: with `[oauth]`, the bearer mechanisms and the
/// provider's discovery URL and scope for the error challenge.
pub fn oauth_offer(config: &Config, protocol: Protocol) -> Option<OAuthOffer> {
    let oauth = config.oauth.as_ref()?;
    Some(OAuthOffer {
        configuration: mailfront_oauth::provider::discovery_url(&oauth.issuer),
        scope: oauth.scopes.get(&protocol).cloned(),
    })
}

/// The settings of a POP3 listener.
pub fn pop3_settings(config: &Config, listener: &ListenerConfig) -> Pop3Settings {
    Pop3Settings {
        tls: client_tls(listener.tls),
        allow_plaintext_auth: listener.allow_plaintext_auth,
        limits: limits(config),
        greeting: greeting(config),
        oauth: oauth_offer(config, Protocol::Pop3),
    }
}

/// The settings of a submission listener.
pub fn submission_settings(config: &Config, listener: &ListenerConfig) -> SubmissionSettings {
    SubmissionSettings {
        tls: client_tls(listener.tls),
        allow_plaintext_auth: listener.allow_plaintext_auth,
        limits: limits(config),
        hostname: config.node.name.clone(),
        max_message_size: config.transport.max_message_size,
        oauth: oauth_offer(config, Protocol::Submission),
    }
}

/// What the session driver of a line-protocol listener (IMAP, POP3, submission) needs.
pub fn listener_context(
    config: &Config,
    listener: &ListenerConfig,
    acceptor: &Arc<SharedAcceptor>,
) -> ListenerContext {
    let t = &config.timeouts;
    ListenerContext {
        name: listener_name(listener),
        tls: client_tls(listener.tls),
        acceptor: Arc::clone(acceptor),
        pre_auth_idle: t.pre_auth_idle,
        login: t.login,
        post_auth_idle: t.post_auth_idle,
    }
}

/// What the transport driver of an `smtp` or `outbound` listener needs. Fails if an outbound
/// listener's sources cannot be found (see [`transport_mode`]).
pub fn mail_transfer_context(
    config: &Config,
    listener: &ListenerConfig,
    acceptor: &Arc<SharedAcceptor>,
) -> Result<MailTransferContext, String> {
    Ok(MailTransferContext {
        name: listener_name(listener),
        settings: ReceiverSettings {
            tls: client_tls(listener.tls),
            hostname: config.node.name.clone(),
            max_message_size: config.transport.max_message_size,
            max_recipients: config.transport.max_recipients,
            max_line_length: config.limits.max_line_length,
            chunking: config.transport.chunking,
            // Learned per session from the delivery servers (mail_transfer::session_settings).
            passes_on: Default::default(),
        },
        acceptor: Arc::clone(acceptor),
        mode: transport_mode(config, listener.protocol)?,
        idle: config.timeouts.smtp_idle,
        delivery: config.timeouts.delivery,
    })
}

/// What a transport listener does: inbound for the accepted domains, or outbound to the relay.
pub fn transport_mode(config: &Config, protocol: ListenerProtocol) -> Result<TransferMode, String> {
    if protocol == ListenerProtocol::Smtp {
        return Ok(TransferMode::Inbound {
            accepted_domains: config
                .transport
                .accepted_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            non_mailbox: NonMailboxRecipients::new(&config.transport.non_mailbox_recipients),
        });
    }
    let outbound = config
        .outbound
        .as_ref()
        .ok_or("an outbound listener needs an [outbound] relay")?;
    let allowed_sources = match &outbound.allowed_sources {
        Some(list) => list.clone(),
        None => server_addresses(config)?,
    };
    Ok(TransferMode::Outbound {
        relay: Endpoint {
            host: outbound.relay.host.clone(),
            port: outbound.relay.port,
            tls: outbound.relay.tls.into(),
        },
        allowed_sources,
    })
}

/// The mailbox servers' own addresses, as their hosts resolve now (each once).
fn server_addresses(config: &Config) -> Result<Vec<Cidr>, String> {
    let mut sources = Vec::new();
    for (i, server) in config.server.iter().enumerate() {
        let addresses = (server.host.as_str(), 0)
            .to_socket_addrs()
            .map_err(|e| format!("server[{i}].host: cannot resolve `{}`: {e}", server.host))?;
        for address in addresses {
            let cidr = Cidr {
                addr: address.ip(),
                prefix: if address.is_ipv4() { 32 } else { 128 },
            };
            if !sources.contains(&cidr) {
                sources.push(cidr);
            }
        }
    }
    Ok(sources)
}

/// What the SIP driver of a SIP listener needs: its limits and timers, and the acceptor for
/// implicit TLS (none for plain UDP and TCP).
pub fn sip_context(
    config: &Config,
    listener: &ListenerConfig,
    mail_tls: &Arc<SharedAcceptor>,
) -> SipContext {
    let sip_tls = match listener.tls {
        ListenerTls::Implicit => Arc::clone(mail_tls),
        _ => Arc::default(),
    };
    SipContext::new(listener_name(listener), config.sip.settings(), sip_tls)
}

/// The gate of a listener: PROXY headers from `[proxy_protocol]`'s sources if the listener
/// expects them, and its connection limits. `clients` counts connections per client address
/// across every listener of the node.
pub fn gate(
    config: &Config,
    listener: &ListenerConfig,
    clients: &Arc<ClientCounts>,
    metrics: &Arc<Metrics>,
) -> Gate {
    let proxy_timeout = config
        .proxy_protocol
        .timeout
        .unwrap_or(DEFAULT_PROXY_TIMEOUT);
    Gate::new(
        listener_name(listener),
        listener
            .proxy_protocol
            .then(|| (config.proxy_protocol.trusted.clone(), proxy_timeout)),
        listener
            .max_connections
            .unwrap_or(config.limits.max_connections),
        Arc::clone(clients),
        config.limits.max_connections_per_client,
        Arc::clone(metrics),
    )
}

/// Binds `count` listening sockets to `address`, with `SO_REUSEPORT` when there are several
/// (the kernel spreads incoming connections over them); if the port is 0, every socket gets the
/// port the first one was given. Plain std sockets (non-blocking), for any runtime to take.
pub fn bind_listeners(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut address = address;
    if count > 1 {
        // SO_REUSEPORT would let this group join another process's sockets on the same port (a
        // second node started by mistake would then take a share of the connections): a plain
        // bind first proves that nobody listens there, and resolves port 0.
        let probe = std::net::TcpListener::bind(address)?;
        address = probe.local_addr()?;
    }
    for _ in 0..count.max(1) {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(address)?;
        let listener = socket.listen(1024)?.into_std()?;
        address = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// The one socket of an HTTPS or SIP listener (listener `i`), registered with the runtime this
/// runs on (the main one).
pub fn main_runtime_listener(
    sockets: &mut Vec<std::net::TcpListener>,
    i: usize,
) -> Result<TcpListener, String> {
    let socket = sockets
        .pop()
        .ok_or_else(|| format!("listener[{i}]: no socket"))?;
    TcpListener::from_std(socket).map_err(|e| format!("listener[{i}]: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_group_shares_one_port_and_no_second_group_joins_it() {
        let group = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let address = group[0].local_addr().unwrap();
        assert_eq!(group.len(), 2);
        assert!(group.iter().all(|s| s.local_addr().unwrap() == address));
        // A second node on the same address must fail, not silently take half the clients.
        let again = bind_listeners(address, 2).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
        assert!(bind_listeners(address, 1).is_err());
        // Connections to the port are accepted (by one of the group).
        let client = std::net::TcpStream::connect(address).unwrap();
        drop(client);
    }
}

//! `[[listener]]` and `[proxy_protocol]`: where clients connect, and who may tell mailfront
//! who they are.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use mailfront_model::{Cidr, Protocol};
use serde::Deserialize;

use super::Config;

/// TLS offered on a listener.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// No TLS.
    None,
    /// STARTTLS offered (the default).
    #[default]
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// IMAP clients.
    Imap,
    /// POP3 clients.
    Pop3,
    /// Message submission by authenticated users.
    Submission,
    /// Inbound SMTP (the front-end transport).
    Smtp,
    /// Outbound SMTP from the mailbox servers, relayed to the outbound relay host.
    Outbound,
    /// SIP: UDP and TCP on one address (`tls = "none"`, the default for SIP), or TLS over TCP
    /// (`tls = "implicit"`). Telephony is redirected, never proxied.
    Sip,
    /// HTTPS (the services of `[http]`).
    Https,
}

impl ListenerProtocol {
    /// The protocol whose server endpoints the listener's sessions go to.
    pub fn protocol(self) -> Protocol {
        match self {
            ListenerProtocol::Imap => Protocol::Imap,
            ListenerProtocol::Pop3 => Protocol::Pop3,
            ListenerProtocol::Submission => Protocol::Submission,
            ListenerProtocol::Smtp | ListenerProtocol::Outbound => Protocol::Smtp,
            ListenerProtocol::Sip => Protocol::Sip,
            ListenerProtocol::Https => Protocol::Http,
        }
    }

    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Imap => "imap",
            ListenerProtocol::Pop3 => "pop3",
            ListenerProtocol::Submission => "submission",
            ListenerProtocol::Smtp => "smtp",
            ListenerProtocol::Outbound => "outbound",
            ListenerProtocol::Sip => "sip",
            ListenerProtocol::Https => "https",
        }
    }
}

impl std::fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name for logs (default: protocol and address).
    pub name: Option<String>,
    /// What the listener serves.
    pub protocol: ListenerProtocol,
    /// Address to listen on.
    pub address: SocketAddr,
    /// TLS offered.
    #[serde(default)]
    pub tls: ListenerTls,
    /// Accept passwords on a connection without TLS (off by default).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Expect a PROXY protocol (v1 or v2) header from the trusted sources of
    /// `[proxy_protocol]` (a load balancer); connections from anywhere else are refused.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Most concurrent connections on this listener (default `limits.max_connections`).
    pub max_connections: Option<usize>,
}

/// The listener kinds mailfront can serve today.
pub const SERVED_PROTOCOLS: &[ListenerProtocol] = &[
    ListenerProtocol::Imap,
    ListenerProtocol::Pop3,
    ListenerProtocol::Submission,
    ListenerProtocol::Smtp,
    ListenerProtocol::Outbound,
    ListenerProtocol::Sip,
    ListenerProtocol::Https,
];

/// `[proxy_protocol]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Addresses or ranges (the load balancers) allowed to send PROXY headers.
    pub trusted: Vec<Cidr>,
    /// How long a trusted source has to send its header.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Checks the `[[listener]]` tables (at least one) and what each needs elsewhere: a
/// certificate for TLS, a server with an endpoint for its protocol, the section of its kind.
pub(super) fn validate(config: &Config) -> Result<(), String> {
    if config.listener.is_empty() {
        return Err("listener: at least one [[listener]] is required".into());
    }
    let mut addresses = BTreeSet::new();
    for (i, listener) in config.listener.iter().enumerate() {
        let key = format!("listener[{i}]");
        if !SERVED_PROTOCOLS.contains(&listener.protocol) {
            return Err(format!(
                "{key}.protocol: `{}` listeners are not supported yet",
                listener.protocol
            ));
        }
        if !addresses.insert(listener.address) {
            return Err(format!(
                "{key}.address: {} is used by another listener",
                listener.address
            ));
        }
        if listener.protocol == ListenerProtocol::Sip && listener.tls == ListenerTls::Starttls {
            return Err(format!(
                "{key}.tls: SIP has no STARTTLS; use \"none\" (UDP and TCP) or \"implicit\" (TLS over TCP)"
            ));
        }
        if listener.tls != ListenerTls::None && config.tls.is_none() {
            return Err(format!("{key}.tls: needs a certificate in [tls]"));
        }
        validate_protocol(config, &key, listener.protocol)?;
    }
    Ok(())
}

/// Checks that a listener's `protocol` (`key` is `listener[i]`) has what it serves: a server
/// with an endpoint for it, and its section.
fn validate_protocol(config: &Config, key: &str, protocol: ListenerProtocol) -> Result<(), String> {
    let has_endpoint = config.server.iter().any(|s| match protocol {
        ListenerProtocol::Imap => s.imap.is_some(),
        ListenerProtocol::Pop3 => s.pop3.is_some(),
        ListenerProtocol::Submission => s.submission.is_some(),
        ListenerProtocol::Smtp => s.delivery.is_some(),
        ListenerProtocol::Outbound => true,
        ListenerProtocol::Sip => s.sip.is_some(),
        ListenerProtocol::Https => s.http.is_some(),
    });
    if !has_endpoint {
        return Err(format!(
            "{key}.protocol: no server has a {protocol} endpoint"
        ));
    }
    if protocol == ListenerProtocol::Smtp && config.transport.accepted_domains.is_empty() {
        return Err(format!(
            "{key}.protocol: an smtp listener needs transport.accepted_domains (the domains it takes mail for)"
        ));
    }
    if protocol == ListenerProtocol::Https && config.http.is_none() {
        return Err(format!(
            "{key}.protocol: an https listener needs an [http] section"
        ));
    }
    if protocol == ListenerProtocol::Outbound && config.outbound.is_none() {
        return Err(format!(
            "{key}.protocol: an outbound listener needs an [outbound] relay"
        ));
    }
    Ok(())
}

/// Checks that a listener expecting PROXY headers has sources to expect them from.
pub(super) fn validate_proxy_protocol(config: &Config) -> Result<(), String> {
    if let Some((i, _)) = config
        .listener
        .iter()
        .enumerate()
        .find(|(_, l)| l.proxy_protocol)
        && config.proxy_protocol.trusted.is_empty()
    {
        return Err(format!(
            "listener[{i}].proxy_protocol: needs proxy_protocol.trusted (the load balancers' addresses)"
        ));
    }
    Ok(())
}

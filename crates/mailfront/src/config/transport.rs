//! `[transport]` and `[outbound]`: mail coming in for the organisation's mailboxes, and mail
//! from the mailbox servers leaving through the front door.

use mailfront_model::Cidr;
use serde::Deserialize;

use super::servers::EndpointTls;
use super::{Config, nonempty};

/// `[transport]`: the front-end transport (inbound SMTP).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Domains whose mail is accepted for the directory's mailboxes; everything else is relaying.
    pub accepted_domains: Vec<String>,
    /// Largest message in bytes (announced as SIZE; submission announces it too).
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Offer CHUNKING (BDAT).
    pub chunking: bool,
    /// Addresses taken though the directory has no mailbox for them — role addresses such as
    /// `postmaster` (RFC 5321 §4.5.1), lists a mailbox server expands: a local part alone names
    /// it at every accepted domain, a whole address names one address in an accepted domain. A
    /// mailbox of the same address wins. Such a recipient goes along with the message's mailbox
    /// recipients; a message with none goes to a random delivery server of this node's site.
    /// Default: none.
    pub non_mailbox_recipients: Vec<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            accepted_domains: Vec::new(),
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            chunking: true,
            non_mailbox_recipients: Vec::new(),
        }
    }
}

/// `[outbound]`: mail leaving the organisation through the front door.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The relay host that takes outbound mail.
    pub relay: RelayConfig,
    /// Addresses or ranges allowed to send (default: the mailbox servers' addresses).
    pub allowed_sources: Option<Vec<Cidr>>,
}

/// `[outbound.relay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS towards the relay.
    #[serde(default)]
    pub tls: EndpointTls,
}

/// Checks `[transport]` and `[outbound]`.
pub(super) fn validate(config: &Config) -> Result<(), String> {
    let transport = &config.transport;
    for (i, domain) in transport.accepted_domains.iter().enumerate() {
        if domain.trim().is_empty() || domain.contains(['@', ' ']) {
            return Err(format!(
                "transport.accepted_domains[{i}]: `{domain}` is not a domain"
            ));
        }
    }
    for (i, entry) in transport.non_mailbox_recipients.iter().enumerate() {
        let key = format!("transport.non_mailbox_recipients[{i}]");
        let domain = match entry.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => Some(domain),
            Some(_) => return Err(format!("{key}: `{entry}` has no local part")),
            None => None,
        };
        if entry.trim().is_empty()
            || !entry.is_ascii()
            || entry
                .chars()
                .any(|c| c.is_ascii_control() || matches!(c, ' ' | '<' | '>'))
        {
            return Err(format!(
                "{key}: `{entry}` is not a local part or an address"
            ));
        }
        if let Some(domain) = domain
            && !transport
                .accepted_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Err(format!(
                "{key}: `{entry}` is not in transport.accepted_domains"
            ));
        }
    }
    if transport.max_message_size == 0 {
        return Err("transport.max_message_size: must be at least 1".into());
    }
    if transport.max_recipients == 0 {
        return Err("transport.max_recipients: must be at least 1".into());
    }
    if let Some(outbound) = &config.outbound {
        nonempty("outbound.relay.host", &outbound.relay.host)?;
        if outbound.relay.port == 0 {
            return Err("outbound.relay.port: must not be 0".into());
        }
        if outbound.relay.tls != EndpointTls::None && config.backend_tls.is_none() {
            return Err("outbound.relay.tls: TLS to the relay needs [backend_tls] ca_file".into());
        }
    }
    Ok(())
}

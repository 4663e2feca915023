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
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            accepted_domains: Vec::new(),
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 100,
            chunking: true,
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

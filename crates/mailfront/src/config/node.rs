//! `[node]` and `[[site]]`: this mailfront, and the sites it and the servers are in.

use std::collections::{BTreeMap, BTreeSet};

use mailfront_model::Version;
use serde::Deserialize;

use super::{Config, nonempty};

/// `[node]`: this mailfront.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Name (logs, health pages).
    pub name: String,
    /// Site the node is in.
    pub site: String,
    /// Mailbox version this node serves natively.
    pub version: Version,
}

/// `[[site]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name.
    pub name: String,
    /// HTTP service name → the URL clients use in this site.
    #[serde(default)]
    pub external_urls: BTreeMap<String, String>,
    /// Other site → cost of reaching it (lower is nearer).
    #[serde(default)]
    pub costs: BTreeMap<String, u32>,
    /// What a node of another site does with an IMAP login whose mailbox is active here:
    /// `proxy` it (the default), or send a `referral` to `imap_host` (RFC 2221).
    #[serde(default)]
    pub mail_redirect: MailRedirect,
    /// The IMAP host (`host` or `host:port`) this site's clients use (needed by `referral`).
    pub imap_host: Option<String>,
}

/// `[[site]] mail_redirect`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailRedirect {
    /// Proxy the session to the site's server.
    #[default]
    Proxy,
    /// Answer the login with `NO [REFERRAL imap://…]` (IMAP LOGIN-REFERRALS).
    Referral,
}

/// The sites that keys may name: those of the `[[site]]` tables, or any site at all when there
/// are none (every site named exists implicitly then).
pub(super) struct KnownSites<'a> {
    explicit: bool,
    names: BTreeSet<&'a str>,
}

impl KnownSites<'_> {
    /// Checks that `site`, the value of `key`, is a known site.
    pub(super) fn check(&self, key: &str, site: &str) -> Result<(), String> {
        if self.explicit && !self.names.contains(site) {
            Err(format!(
                "{key}: unknown site `{site}` (define it in a [[site]] table)"
            ))
        } else {
            Ok(())
        }
    }
}

/// Checks `[node]` and the `[[site]]` tables; returns the sites that other keys may name.
/// `imap.example.com` or `imap.example.com:1993`: what an IMAP URL's host part may carry.
fn is_host_and_port(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

pub(super) fn validate(config: &Config) -> Result<KnownSites<'_>, String> {
    nonempty("node.name", &config.node.name)?;
    nonempty("node.site", &config.node.site)?;

    let mut names = BTreeSet::new();
    for (i, site) in config.site.iter().enumerate() {
        nonempty(&format!("site[{i}].name"), &site.name)?;
        if !names.insert(site.name.as_str()) {
            return Err(format!(
                "site[{i}].name: site `{}` is defined twice",
                site.name
            ));
        }
    }
    let sites = KnownSites {
        explicit: !config.site.is_empty(),
        names,
    };
    sites.check("node.site", &config.node.site)?;
    for (i, site) in config.site.iter().enumerate() {
        for (service, url) in &site.external_urls {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "site[{i}].external_urls.{service}: `{url}` is not an http(s) URL"
                ));
            }
        }
        for other in site.costs.keys() {
            sites.check(&format!("site[{i}].costs.{other}"), other)?;
        }
        match (&site.imap_host, site.mail_redirect) {
            (None, MailRedirect::Referral) => {
                return Err(format!(
                    "site[{i}].imap_host: needed with mail_redirect = \"referral\" (where to refer)"
                ));
            }
            (Some(host), _) if !is_host_and_port(host) => {
                return Err(format!(
                    "site[{i}].imap_host: `{host}` is not a host name (optionally with :port)"
                ));
            }
            _ => {}
        }
    }
    Ok(sites)
}

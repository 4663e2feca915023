//! Entries as the server sends them, and how an entry becomes a [`Principal`].

use std::collections::HashMap;

use ldap3::asn1::{PL, StructureTag};
use mailfront_model::{DatabaseName, Principal, Protocol, ProtocolSet, Version};

use super::config::LdapAttributes;

/// The protocol tag of a SearchResultEntry (RFC 4511 §4.5.2: `[APPLICATION 4]`).
const SEARCH_RESULT_ENTRY: u64 = 4;

/// An entry as the server returned it: attribute names lowercased, values as UTF-8 text (values
/// that are not UTF-8 are left out: no attribute mailfront reads is binary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// The entry's DN.
    pub(super) dn: String,
    /// Attribute name (lowercase) → values.
    pub(super) attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    /// The values of attribute `name` (any case); none for an empty name.
    pub(super) fn values(&self, name: &str) -> &[String] {
        if name.is_empty() {
            return &[];
        }
        self.attrs
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The first value of attribute `name` that is not blank, trimmed.
    pub(super) fn first(&self, name: &str) -> Option<&str> {
        self.values(name)
            .iter()
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
    }
}

/// Reads a SearchResultEntry (RFC 4511 §4.5.2) without panicking on a malformed one (ldap3's
/// own `SearchEntry::construct` panics on a malformed entry, and the server is a peer).
pub(super) fn parse_entry(tag: StructureTag) -> Option<Entry> {
    if tag.id != SEARCH_RESULT_ENTRY {
        return None;
    }
    let PL::C(parts) = tag.payload else {
        return None;
    };
    let mut parts = parts.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut pair = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(pair.next()?.expect_primitive()?).ok()?;
        let values = pair.next()?.expect_constructed()?;
        let slot = attrs.entry(name.to_ascii_lowercase()).or_default();
        for value in values {
            if let Some(bytes) = value.expect_primitive()
                && let Ok(text) = String::from_utf8(bytes)
            {
                slot.push(text);
            }
        }
    }
    Some(Entry { dn, attrs })
}

/// What makes an entry unusable: which attribute, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EntryProblem {
    /// The key of `[directory.attributes]` (`address`, `version`, …).
    pub(super) key: &'static str,
    /// The LDAP attribute that key names.
    pub(super) attribute: String,
    /// What is wrong (`missing`, …).
    pub(super) problem: String,
}

/// Whether `address` looks like `local@domain` (one `@`, no spaces or control characters).
fn valid_address(address: &str) -> bool {
    matches!(address.split_once('@'), Some((local, domain))
        if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
        && !address.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Whether an `enabled` value says "disabled".
fn is_disabled_value(value: &str) -> bool {
    ["false", "0", "no"]
        .iter()
        .any(|v| value.trim().eq_ignore_ascii_case(v))
}

/// Maps an entry to a principal, or says which required attribute is missing or unusable.
pub(super) fn principal_from_entry(
    entry: &Entry,
    names: &LdapAttributes,
) -> Result<Principal, EntryProblem> {
    let (address, aliases) = addresses(entry, names)?;
    let mailbox_guid = entry
        .first(&names.mailbox_guid)
        .ok_or_else(|| missing("mailbox_guid", &names.mailbox_guid))?
        .to_owned();
    let database = entry
        .first(&names.database)
        .ok_or_else(|| missing("database", &names.database))?;
    let version_text = entry
        .first(&names.version)
        .ok_or_else(|| missing("version", &names.version))?;
    let version: Version = version_text
        .parse()
        .map_err(|e| problem("version", &names.version, format!("{e}")))?;
    let tenant = names
        .tenant
        .as_deref()
        .and_then(|name| entry.first(name))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| {
            address
                .rsplit_once('@')
                .map(|(_, domain)| domain.to_owned())
                .unwrap_or_default()
        });
    let protocols = protocols(entry, names);
    Ok(Principal {
        address,
        aliases,
        display_name: entry.first(&names.display_name).map(str::to_owned),
        mailbox_guid,
        tenant,
        database: DatabaseName::new(database),
        version,
        protocols,
        sip_extension: entry.first(&names.sip_extension).map(str::to_owned),
    })
}

/// `attribute` (for the `[directory.attributes]` key `key`) is unusable: `problem`.
fn problem(key: &'static str, attribute: &str, problem: String) -> EntryProblem {
    EntryProblem {
        key,
        attribute: attribute.to_owned(),
        problem,
    }
}

/// `attribute` (for the key `key`) is required but absent.
fn missing(key: &'static str, attribute: &str) -> EntryProblem {
    problem(key, attribute, "missing".into())
}

/// The primary address (the first value of the address attribute, required) and the aliases:
/// the further values of the address attribute, then those of the aliases attribute; each
/// once, lowercase, and only if it is an address.
fn addresses(entry: &Entry, names: &LdapAttributes) -> Result<(String, Vec<String>), EntryProblem> {
    let mut addresses = entry
        .values(&names.address)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty());
    let address = addresses
        .next()
        .ok_or_else(|| missing("address", &names.address))?;
    if !valid_address(&address) {
        return Err(problem(
            "address",
            &names.address,
            format!("`{address}` is not an address (local@domain)"),
        ));
    }
    // Further values of the address attribute are addresses of the same mailbox too.
    let mut aliases: Vec<String> = Vec::new();
    let more = entry
        .values(&names.aliases)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase());
    for alias in addresses.chain(more) {
        if valid_address(&alias) && alias != address && !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    Ok((address, aliases))
}

/// The protocols the entry lists (every protocol when it lists none; unknown ones are logged
/// and ignored), or none at all when the entry is disabled.
fn protocols(entry: &Entry, names: &LdapAttributes) -> ProtocolSet {
    let listed = entry.values(&names.protocols);
    let mut protocols = if listed.is_empty() {
        ProtocolSet::ALL
    } else {
        let mut set = ProtocolSet::NONE;
        for value in listed {
            match value.trim().parse::<Protocol>() {
                Ok(protocol) => set = set.with(protocol),
                Err(_) => tracing::warn!(
                    dn = %entry.dn,
                    attribute = %names.protocols,
                    value = %value,
                    "unknown protocol in directory entry; ignored"
                ),
            }
        }
        set
    };
    let disabled = names
        .enabled
        .as_deref()
        .and_then(|name| entry.first(name))
        .is_some_and(is_disabled_value);
    if disabled {
        protocols = ProtocolSet::NONE;
    }
    protocols
}

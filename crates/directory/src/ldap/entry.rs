//! Entries as the server sends them, and how an entry becomes a [`Principal`].

use std::collections::HashMap;

use ldap3::asn1::{PL, StructureTag};
use mailfront_model::{DatabaseName, Principal, Protocol, ProtocolSet, Version};

use super::ad;
use super::config::{LdapAttributes, Profile};

/// The protocol tag of a SearchResultEntry (RFC 4511 §4.5.2: `[APPLICATION 4]`).
const SEARCH_RESULT_ENTRY: u64 = 4;

/// An entry as the server returned it: attribute names lowercased; values as UTF-8 text
/// (values that are not UTF-8 are left out), except for the attributes read as binary, whose
/// values are kept as bytes (a binary GUID may or may not happen to be valid UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Entry {
    /// The entry's DN.
    pub(super) dn: String,
    /// Attribute name (lowercase) → text values.
    pub(super) attrs: HashMap<String, Vec<String>>,
    /// Attribute name (lowercase) → raw values, for the attributes read as binary only.
    pub(super) binary: HashMap<String, Vec<Vec<u8>>>,
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

    /// The raw values of attribute `name` (any case), if it is one read as binary.
    pub(super) fn binary_values(&self, name: &str) -> &[Vec<u8>] {
        if name.is_empty() {
            return &[];
        }
        self.binary
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
/// own `SearchEntry::construct` panics on a malformed entry, and the server is a peer). The
/// values of the attributes named in `binary` (any case) are kept as bytes.
pub(super) fn parse_entry(tag: StructureTag, binary: &[String]) -> Option<Entry> {
    if tag.id != SEARCH_RESULT_ENTRY {
        return None;
    }
    let PL::C(parts) = tag.payload else {
        return None;
    };
    let mut parts = parts.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    let mut raw: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut pair = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(pair.next()?.expect_primitive()?)
            .ok()?
            .to_ascii_lowercase();
        let values = pair.next()?.expect_constructed()?;
        if binary.iter().any(|b| b.eq_ignore_ascii_case(&name)) {
            let slot = raw.entry(name).or_default();
            slot.extend(
                values
                    .into_iter()
                    .filter_map(StructureTag::expect_primitive),
            );
            continue;
        }
        let slot = attrs.entry(name).or_default();
        for value in values {
            if let Some(bytes) = value.expect_primitive()
                && let Ok(text) = String::from_utf8(bytes)
            {
                slot.push(text);
            }
        }
    }
    Some(Entry {
        dn,
        attrs,
        binary: raw,
    })
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

/// How entries become principals: the attribute names, how the profile writes values, and the
/// version of an entry without one.
#[derive(Debug, Clone)]
pub(super) struct Mapping {
    /// `[directory.attributes]`.
    pub(super) names: LdapAttributes,
    /// The profile, which decides how GUIDs and the database are written.
    pub(super) profile: Profile,
    /// The version of an entry without the version attribute (`default_version`).
    pub(super) default_version: Option<Version>,
}

impl Mapping {
    /// The openldap profile with `names`, and no default version.
    #[cfg(test)]
    pub(super) fn plain(names: LdapAttributes) -> Self {
        Self {
            names,
            profile: Profile::OpenLdap,
            default_version: None,
        }
    }

    /// Whether GUID attributes hold 16 binary bytes in Microsoft's order (else text).
    pub(super) fn binary_guids(&self) -> bool {
        self.profile == Profile::ActiveDirectory
    }

    /// The attributes whose values are read as bytes.
    pub(super) fn binary_attributes(&self) -> Vec<String> {
        if !self.binary_guids() {
            return Vec::new();
        }
        [&self.names.mailbox_guid, &self.names.mailbox_guid_fallback]
            .into_iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect()
    }
}

/// Maps an entry to a principal, or says which required attribute is missing or unusable.
pub(super) fn principal_from_entry(
    entry: &Entry,
    mapping: &Mapping,
) -> Result<Principal, EntryProblem> {
    let names = &mapping.names;
    let (address, aliases) = addresses(entry, names)?;
    let mailbox_guid = mailbox_guid(entry, mapping)?;
    let database_value = entry
        .first(&names.database)
        .ok_or_else(|| missing("database", &names.database))?;
    let database = match mapping.profile {
        Profile::OpenLdap => database_value.to_owned(),
        // homeMDB: `CN=DB01,CN=Databases,…`; the database is the first RDN's value.
        Profile::ActiveDirectory => ad::first_rdn_value(database_value)
            .map_err(|e| problem("database", &names.database, e))?,
    };
    let version = match (entry.first(&names.version), mapping.default_version) {
        (Some(text), _) => text
            .parse()
            .map_err(|e| problem("version", &names.version, format!("{e}")))?,
        (None, Some(version)) => version,
        (None, None) => return Err(missing("version", &names.version)),
    };
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
    let protocols = protocols(entry, names)?;
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

/// The primary address and the aliases. The primary address is the `SMTP:` value of the
/// proxy addresses attribute if there is one, else the first value of the address attribute
/// (one of the two is required). The aliases are the further values of the address attribute
/// (all of them when the primary came from the proxy addresses), those of the aliases
/// attribute, then the `smtp:` proxy addresses; each once, lowercase, and only if it is an
/// address.
fn addresses(entry: &Entry, names: &LdapAttributes) -> Result<(String, Vec<String>), EntryProblem> {
    let proxies = ad::parse_proxy_addresses(
        entry
            .values(&names.proxy_addresses)
            .iter()
            .map(String::as_str),
    );
    let mut addresses = entry
        .values(&names.address)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .peekable();
    let (address, key, attribute) = match proxies.primary {
        Some(primary) => (
            primary.to_ascii_lowercase(),
            "proxy_addresses",
            &names.proxy_addresses,
        ),
        None => (
            addresses
                .next()
                .ok_or_else(|| missing("address", &names.address))?,
            "address",
            &names.address,
        ),
    };
    if !valid_address(&address) {
        return Err(problem(
            key,
            attribute,
            format!("`{address}` is not an address (local@domain)"),
        ));
    }
    // Further values of the address attribute are addresses of the same mailbox too.
    let mut aliases: Vec<String> = Vec::new();
    let more = entry
        .values(&names.aliases)
        .iter()
        .map(|a| a.trim().to_ascii_lowercase());
    let secondary = proxies.secondary.iter().map(|a| a.to_ascii_lowercase());
    for alias in addresses.chain(more).chain(secondary) {
        if valid_address(&alias) && alias != address && !aliases.contains(&alias) {
            aliases.push(alias);
        }
    }
    Ok((address, aliases))
}

/// The mailbox GUID, as text: from the GUID attribute, else from the fallback attribute. In
/// the AD profile the values are 16 bytes in Microsoft's order, rendered in the canonical
/// lowercase form; elsewhere they are text, taken as they are.
fn mailbox_guid(entry: &Entry, mapping: &Mapping) -> Result<String, EntryProblem> {
    let names = &mapping.names;
    let candidates = [
        ("mailbox_guid", &names.mailbox_guid),
        ("mailbox_guid_fallback", &names.mailbox_guid_fallback),
    ];
    for (key, attribute) in candidates {
        if mapping.binary_guids() {
            if let Some(bytes) = entry.binary_values(attribute).first() {
                return ad::guid_text_from_ms_bytes(bytes).map_err(|e| problem(key, attribute, e));
            }
        } else if let Some(text) = entry.first(attribute) {
            return Ok(text.to_owned());
        }
    }
    Err(missing("mailbox_guid", &names.mailbox_guid))
}

/// The protocols the entry lists (every protocol when it lists none; unknown ones are logged
/// and ignored), or none at all when the entry is disabled (by the `enabled` flag or the
/// account control bit). An account control value that is not an integer is a problem: the
/// The protocols the values of `attribute` name (unknown names logged and ignored), or every
/// protocol when the entry has none (or the attribute is not read).
pub(super) fn listed_protocols(entry: &Entry, attribute: &str) -> ProtocolSet {
    let listed = entry.values(attribute);
    if listed.is_empty() {
        return ProtocolSet::ALL;
    }
    let mut set = ProtocolSet::NONE;
    for value in listed {
        match value.trim().parse::<Protocol>() {
            Ok(protocol) => set = set.with(protocol),
            Err(_) => tracing::warn!(
                dn = %entry.dn,
                attribute = %attribute,
                value = %value,
                "unknown protocol in directory entry; ignored"
            ),
        }
    }
    set
}

/// entry may be disabled, so it must not be used.
fn protocols(entry: &Entry, names: &LdapAttributes) -> Result<ProtocolSet, EntryProblem> {
    let mut protocols = listed_protocols(entry, &names.protocols);
    let disabled = names
        .enabled
        .as_deref()
        .and_then(|name| entry.first(name))
        .is_some_and(is_disabled_value);
    let disabled_by_control = match entry.first(&names.account_control) {
        Some(value) => ad::account_disabled(value)
            .map_err(|e| problem("account_control", &names.account_control, e))?,
        None => false,
    };
    if disabled || disabled_by_control {
        protocols = ProtocolSet::NONE;
    }
    Ok(protocols)
}

//! Active Directory's ways of writing what mailfront reads, as pure functions: binary GUIDs in
//! Microsoft's byte order, `proxyAddresses`, the database DN of `homeMDB`, and
//! `userAccountControl`. Used by the `active-directory` profile (see [`Profile`](super::Profile)).

/// The length of a binary GUID (`objectGUID`, `msExchMailboxGuid`).
pub(super) const GUID_LEN: usize = 16;

/// `userAccountControl`'s ACCOUNTDISABLE bit ([MS-ADTS] 2.2.16).
const ACCOUNT_DISABLE: i64 = 0x2;

/// How a GUID's text (`00112233-4455-6677-8899-aabbccddeeff`) maps to AD's 16 bytes: the first
/// three fields are stored little-endian, the last two as they are written (the Microsoft GUID
/// layout, `GUID` in [MS-DTYP] 2.3.4). Index `i` of the result is text byte `MS_ORDER[i]`.
const MS_ORDER: [usize; GUID_LEN] = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];

/// The canonical text of a binary GUID in Microsoft's layout: lowercase, hyphenated
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`). Anything but 16 bytes is refused with what is
/// wrong, for the log.
pub(super) fn guid_text_from_ms_bytes(bytes: &[u8]) -> Result<String, String> {
    let bytes: &[u8; GUID_LEN] = bytes.try_into().map_err(|_| {
        format!(
            "a binary GUID has {GUID_LEN} bytes, this value has {}",
            bytes.len()
        )
    })?;
    let mut text = String::with_capacity(36);
    for (i, source) in MS_ORDER.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let byte = bytes.get(*source).copied().unwrap_or_default();
        text.push_str(&format!("{byte:02x}"));
    }
    Ok(text)
}

/// The 16 bytes AD stores for a GUID given as text: 32 hex digits, either bare or hyphenated
/// as 8-4-4-4-12 (any case). `None` for anything else.
pub(super) fn ms_bytes_from_guid_text(text: &str) -> Option<[u8; GUID_LEN]> {
    let hyphenated = text.len() == 36
        && text
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    if !hyphenated && text.len() != 32 {
        return None;
    }
    let digits: Vec<u8> = text
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    if digits.len() != 2 * GUID_LEN {
        return None;
    }
    let mut in_text_order = [0u8; GUID_LEN];
    for (slot, pair) in in_text_order.iter_mut().zip(digits.chunks(2)) {
        let [high, low] = pair else { return None };
        *slot = high << 4 | low;
    }
    let mut bytes = [0u8; GUID_LEN];
    for (slot, source) in bytes.iter_mut().zip(MS_ORDER) {
        *slot = in_text_order.get(source).copied().unwrap_or_default();
    }
    Some(bytes)
}

/// `bytes` as a filter assertion value, every byte escaped (`\33\22…`, RFC 4515 §3): the only
/// way to put arbitrary octets into a filter.
pub(super) fn escape_filter_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// What a `proxyAddresses` attribute says about a mailbox's SMTP addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ProxyAddresses {
    /// The `SMTP:` value (uppercase prefix: the primary address), if there is one. With
    /// several (a broken entry), the first.
    pub(super) primary: Option<String>,
    /// The `smtp:` values (lowercase prefix: further addresses), in order.
    pub(super) secondary: Vec<String>,
}

/// Splits `proxyAddresses` values: `SMTP:` is the primary address, `smtp:` the others; the
/// prefix's case is what distinguishes them. Other types (`X500:`, `SIP:`, `x400:`…) and empty
/// addresses are ignored. Addresses are trimmed, not otherwise checked.
pub(super) fn parse_proxy_addresses<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> ProxyAddresses {
    let mut parsed = ProxyAddresses::default();
    for value in values {
        let value = value.trim();
        let Some((kind, address)) = value.split_once(':') else {
            continue;
        };
        let address = address.trim();
        if address.is_empty() {
            continue;
        }
        match kind {
            "SMTP" if parsed.primary.is_none() => parsed.primary = Some(address.to_owned()),
            "SMTP" | "smtp" => parsed.secondary.push(address.to_owned()),
            _ => {}
        }
    }
    parsed
}

/// The value of the first RDN of `dn` (`CN=DB01,CN=Databases,…` → `DB01`), with RFC 4514
/// escapes undone (`\,`, `\2C`…). A multi-valued RDN gives its first value. Refused, with what
/// is wrong: no `=`, an empty value, a `#` (BER-encoded) value, a bad escape, or a value that
/// is not UTF-8 once unescaped.
pub(super) fn first_rdn_value(dn: &str) -> Result<String, String> {
    let (_, rest) = dn
        .split_once('=')
        .ok_or_else(|| format!("`{dn}` is not a DN"))?;
    if rest.starts_with('#') {
        return Err(format!(
            "`{dn}`: a BER-encoded (#…) RDN value is not supported"
        ));
    }
    let mut value: Vec<u8> = Vec::new();
    let mut bytes = rest.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b'+' | b';' => break,
            b'\\' => {
                let first = bytes
                    .next()
                    .ok_or_else(|| format!("`{dn}`: a `\\` ends the value"))?;
                if first.is_ascii_hexdigit() {
                    let second = bytes
                        .next()
                        .filter(u8::is_ascii_hexdigit)
                        .ok_or_else(|| format!("`{dn}`: `\\` needs two hex digits"))?;
                    value.push(hex_value(first) << 4 | hex_value(second));
                } else {
                    value.push(first);
                }
            }
            b => value.push(b),
        }
    }
    let value = String::from_utf8(value).map_err(|_| format!("`{dn}`: the RDN is not UTF-8"))?;
    // Unescaped surrounding spaces are not part of the value (RFC 4514 §3 allows none; be lenient
    // with a DN written by hand).
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("`{dn}`: the first RDN has no value"));
    }
    Ok(value.to_owned())
}

fn hex_value(digit: u8) -> u8 {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
        .unwrap_or_default()
}

/// Whether a `userAccountControl` value (a decimal integer, as AD sends it) has the
/// ACCOUNTDISABLE bit (0x2) set. A value that is not an integer is refused: whether the account
/// is disabled cannot be known, so the entry must not be used.
pub(super) fn account_disabled(value: &str) -> Result<bool, String> {
    let flags: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an integer"))?;
    Ok(flags & ACCOUNT_DISABLE != 0)
}

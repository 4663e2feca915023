//! The Request-URI (RFC 3261 §19.1, RFC 3966 for `tel:`) and whom it asks for.

use std::fmt;

/// The scheme of a Request-URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`.
    Sip,
    /// `sips:`.
    Sips,
    /// `tel:` (RFC 3966), as gateways send for telephone numbers.
    Tel,
    /// Anything else (`mailto:`, `im:`, …): answered `416 Unsupported URI Scheme`
    /// (RFC 3261 §8.2.2.1).
    Other,
}

/// The parts of a Request-URI mailfront uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestUri {
    /// The scheme.
    pub scheme: Scheme,
    /// The user part, percent-decoded (the number, for `tel:`); `None` when the URI names no
    /// user (`sip:cas.example.com`).
    pub user: Option<String>,
    /// The host, lowercase, without brackets or port; `None` for `tel:` and other schemes.
    pub host: Option<String>,
}

/// Whom a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A telephone extension: a user part of digits, optionally after a `+`.
    Extension(String),
    /// An address: `user@host`, the host taken as the mail domain.
    Address(String),
}

impl Target {
    /// The extension or address.
    pub fn as_str(&self) -> &str {
        match self {
            Target::Extension(text) | Target::Address(text) => text,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longer user parts name nobody (and are not worth a directory query).
const MAX_USER_LEN: usize = 256;

/// Decodes `%XX` escapes; `None` if an escape is broken, the result is not UTF-8, or it holds a
/// control character.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    (!decoded.chars().any(char::is_control)).then_some(decoded)
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses a Request-URI. `Err(())`: not a URI at all, or a `sip:`/`sips:`/`tel:` URI that does
/// not follow its grammar (answered `400`).
#[allow(clippy::result_unit_err)]
pub fn parse_request_uri(text: &str) -> Result<RequestUri, ()> {
    let (scheme, rest) = text.split_once(':').ok_or(())?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(());
    }
    let scheme = if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else {
        return Ok(RequestUri {
            scheme: Scheme::Other,
            user: None,
            host: None,
        });
    };
    if scheme == Scheme::Tel {
        // telephone-subscriber (RFC 3966 §3): the number, then `;parameters`.
        let number = rest.split(';').next().unwrap_or_default();
        let number = percent_decode(number).ok_or(())?;
        if number.is_empty() {
            return Err(());
        }
        return Ok(RequestUri {
            scheme,
            user: Some(number),
            host: None,
        });
    }
    // sip:user:password@host:port;uri-parameters?headers — `@` cannot appear unescaped in the
    // user, the password, the parameters or the headers, so at most one is there.
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    if hostpart.contains('@') {
        return Err(());
    }
    let hostport = hostpart.split([';', '?']).next().unwrap_or_default();
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) => (
                hostport.get(..=end).unwrap_or_default(),
                hostport.get(end + 1..).unwrap_or_default(),
            ),
            None => return Err(()),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, _)) => (host, hostport.get(host.len()..).unwrap_or_default()),
            None => (hostport, ""),
        }
    };
    if !valid_host(host) {
        return Err(());
    }
    if !port.is_empty()
        && port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(());
    }
    let user = match userinfo {
        None => None,
        Some(userinfo) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let user = percent_decode(user).ok_or(())?;
            if user.is_empty() {
                return Err(());
            }
            Some(user)
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(RequestUri {
        scheme,
        user,
        host: Some(host.to_ascii_lowercase()),
    })
}

/// Whether `text` is an extension: digits, optionally after one `+`.
fn is_extension(text: &str) -> bool {
    let digits = text.strip_prefix('+').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

impl RequestUri {
    /// Whether mailfront serves this scheme (`sip:`, `sips:`, `tel:`).
    pub fn is_supported(&self) -> bool {
        self.scheme != Scheme::Other
    }

    /// Whom the URI asks for: an [`Target::Extension`] when the user part is all digits (or
    /// `+` and digits; telephone-subscriber parameters such as `;phone-context=` are dropped, and
    /// so are RFC 3966 visual separators in a `tel:` number); otherwise an [`Target::Address`]
    /// `user@host`. `None` when the URI names nobody mailfront could look up (no user part, an
    /// address without a host, a user part with `@` in it or longer than 256 bytes).
    pub fn target(&self) -> Option<Target> {
        let user = self.user.as_deref()?;
        if user.len() > MAX_USER_LEN {
            return None;
        }
        let number = user.split(';').next().unwrap_or_default();
        let number: String = if self.scheme == Scheme::Tel {
            number
                .chars()
                .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
                .collect()
        } else {
            number.to_owned()
        };
        if is_extension(&number) {
            return Some(Target::Extension(number));
        }
        let host = self.host.as_deref()?;
        if user.contains('@') || user.contains(char::is_whitespace) {
            return None;
        }
        Some(Target::Address(format!("{user}@{host}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Option<Target> {
        parse_request_uri(uri).unwrap().target()
    }

    #[test]
    fn extensions_and_addresses() {
        let ext = |s: &str| Some(Target::Extension(s.to_owned()));
        let addr = |s: &str| Some(Target::Address(s.to_owned()));
        assert_eq!(target("sip:4001@cas.example.com"), ext("4001"));
        assert_eq!(target("sip:4001@127.0.0.1:5060;transport=udp"), ext("4001"));
        assert_eq!(target("SIPS:+4930123@cas.example.com"), ext("+4930123"));
        assert_eq!(
            target("sip:4001;phone-context=example.com@cas.example.com;user=phone"),
            ext("4001")
        );
        assert_eq!(target("tel:+1-408-555-0100"), ext("+14085550100"));
        assert_eq!(target("tel:4001;phone-context=example.com"), ext("4001"));
        assert_eq!(target("sip:alice@Example.COM"), addr("alice@example.com"));
        assert_eq!(
            target("sip:Alice@example.com:5060"),
            addr("Alice@example.com")
        );
        assert_eq!(
            target("sip:al%69ce@example.com?Subject=x"),
            addr("alice@example.com")
        );
        assert_eq!(
            target("sip:alice:secret@example.com"),
            addr("alice@example.com")
        );
        assert_eq!(target("sip:alice@[::1]:5060"), addr("alice@::1"));
        assert_eq!(target("sip:4001x@example.com"), addr("4001x@example.com"));
        assert_eq!(target("sip:+@example.com"), addr("+@example.com"));
        // Nobody to look up.
        assert_eq!(target("sip:cas.example.com"), None);
        assert_eq!(target("sip:a%40b@example.com"), None);
        assert_eq!(
            target(&format!("sip:{}@example.com", "a".repeat(300))),
            None
        );
        assert_eq!(target("tel:alice"), None);
    }

    #[test]
    fn schemes() {
        assert_eq!(parse_request_uri("sip:x@h").unwrap().scheme, Scheme::Sip);
        assert_eq!(parse_request_uri("sips:x@h").unwrap().scheme, Scheme::Sips);
        assert_eq!(parse_request_uri("tel:4001").unwrap().scheme, Scheme::Tel);
        let mailto = parse_request_uri("mailto:alice@example.com").unwrap();
        assert_eq!(mailto.scheme, Scheme::Other);
        assert!(!mailto.is_supported());
        assert_eq!(mailto.target(), None);
    }

    #[test]
    fn malformed_uris() {
        for bad in [
            "",
            "4001",
            ":x",
            "1sip:x@h",
            "sip:",
            "sip:@h",
            "sip:x@",
            "sip:x@h@h",
            "sip:x@h:port",
            "sip:x@h:99999",
            "sip:x@[::1",
            "sip:x@h_h",
            "sip:x%4@h",
            "sip:x%ff@h",
            "sip:x%0a@h",
            "sip:x y@h",
            "tel:",
            "tel:;x=y",
        ] {
            assert_eq!(parse_request_uri(bad), Err(()), "{bad}");
        }
    }
}

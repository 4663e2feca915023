//! The little languages of the LDAP keys: the server URL, and the filter and DN templates with
//! their escaping (RFC 4515 for filter values, RFC 4514 for DN values).

/// The parts of an LDAP URL mailfront uses.
#[derive(Debug)]
pub(super) struct Endpoint {
    host: String,
    /// `ldaps://`: TLS from the first byte.
    pub(super) implicit_tls: bool,
}

impl Endpoint {
    /// Whether the host is this machine (`localhost` or a loopback address).
    pub(super) fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Accepts `ldap://host[:port][/]` and `ldaps://…`; no DN, attributes or extensions (RFC 4516
/// URL parts that would mean something else here).
pub(super) fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (implicit_tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "ldaps://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "ldap://") {
        (false, rest)
    } else {
        return Err(format!("`{url}` is not an ldap:// or ldaps:// URL"));
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if hostport
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "`{url}`: only a host and a port are allowed (no DN, query or user)"
        ));
    }
    let host = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) => hostport.get(..=end).unwrap_or_default(),
            None => return Err(format!("`{url}`: unclosed `[` in the host")),
        }
    } else {
        hostport.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    if let Some(port) = hostport.get(host.len()..).filter(|p| !p.is_empty()) {
        let valid = port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p != 0);
        if !valid {
            return Err(format!("`{url}`: invalid port"));
        }
    }
    Ok(Endpoint {
        host: host.to_owned(),
        implicit_tls,
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// Escapes a string for use as an assertion value in a search filter (RFC 4515 §3): `*`, `(`,
/// `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`. Everything else, UTF-8 included,
/// is left as it is.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a string for use as an attribute value in a DN (RFC 4514 §2.4): `"`, `+`, `,`, `;`,
/// `<`, `>` and `\` get a backslash, and so do a leading space or `#` and a trailing space; NUL
/// becomes `\00`.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c => out.push(c),
        }
    }
    out
}

/// A filter or DN template, parsed once: literal text and `{name}` placeholders.
#[derive(Debug, Clone)]
pub(super) struct Template(Vec<Piece>);

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Login,
    Local,
    Domain,
}

impl Template {
    /// Parses `text`, whose placeholders must be among `allowed` (`login`, `local`, `domain`).
    pub(super) fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let (literal, tail) = rest.split_at(start);
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal.to_owned()));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let name = tail.get(1..end).unwrap_or_default();
            if !allowed.contains(&name) {
                let expected: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                return Err(format!(
                    "unknown placeholder `{{{name}}}` (expected {})",
                    expected.join(", ")
                ));
            }
            pieces.push(match name {
                "login" => Piece::Login,
                "local" => Piece::Local,
                _ => Piece::Domain,
            });
            rest = tail.get(end + 1..).unwrap_or_default();
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in `{text}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// Whether the template has any placeholder.
    pub(super) fn uses_placeholders(&self) -> bool {
        self.0.iter().any(|p| !matches!(p, Piece::Literal(_)))
    }

    /// The filter for `login` (each placeholder escaped for a filter value).
    pub(super) fn expand(&self, login: &str) -> String {
        self.render(login, escape_filter_value)
    }

    /// The DN for `login` (each placeholder escaped for a DN attribute value).
    pub(super) fn expand_dn(&self, login: &str) -> String {
        self.render(login, escape_dn_value)
    }

    /// The text for `login`, each placeholder escaped with `escape`.
    fn render(&self, login: &str, escape: fn(&str) -> String) -> String {
        let (local, domain) = login.rsplit_once('@').unwrap_or((login, ""));
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Login => out.push_str(&escape(login)),
                Piece::Local => out.push_str(&escape(local)),
                Piece::Domain => out.push_str(&escape(domain)),
            }
        }
        out
    }
}

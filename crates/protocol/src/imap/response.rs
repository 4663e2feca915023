//! Just enough IMAP response reading for a backend login: tagged status, response code,
//! untagged CAPABILITY. Works on one framed message (first line only; literals are ignored).

/// The parts of a response line the backend login looks at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResponseLine<'a> {
    /// `* <keyword> <rest>` (OK, NO, BAD, BYE, PREAUTH, CAPABILITY, ID, …).
    Untagged { keyword: &'a str, rest: &'a str },
    /// `+ <text>`.
    Continuation,
    /// `<tag> <status> <rest>`.
    Tagged {
        tag: &'a str,
        status: &'a str,
        rest: &'a str,
    },
}

/// Parses the first line of a framed message. `None` for lines that are not UTF-8 or do not
/// have the shape of a response.
pub(crate) fn parse_line(message: &[u8]) -> Option<ResponseLine<'_>> {
    let end = message
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(message.len());
    let line = std::str::from_utf8(message.get(..end)?).ok()?;
    if line == "+" || line.starts_with("+ ") {
        return Some(ResponseLine::Continuation);
    }
    let (first, rest) = line.split_once(' ')?;
    let (second, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if first == "*" {
        return Some(ResponseLine::Untagged {
            keyword: second,
            rest,
        });
    }
    Some(ResponseLine::Tagged {
        tag: first,
        status: second,
        rest,
    })
}

/// The capability list in a `[CAPABILITY …]` response code at the start of `text`.
pub(crate) fn capability_code(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('[')?;
    let (code, _) = inner.split_once(']')?;
    let (name, list) = code.split_once(' ')?;
    name.eq_ignore_ascii_case("CAPABILITY").then_some(list)
}

/// Whether a space-separated capability list contains `name` (case-insensitive).
pub(crate) fn has_capability(list: &str, name: &str) -> bool {
    list.split(' ').any(|c| c.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line(b"* OK [CAPABILITY IMAP4rev1 ID] Dovecot ready.\r\n"),
            Some(ResponseLine::Untagged {
                keyword: "OK",
                rest: "[CAPABILITY IMAP4rev1 ID] Dovecot ready."
            })
        );
        assert_eq!(
            parse_line(b"mf2 NO [AUTHENTICATIONFAILED] x\r\n"),
            Some(ResponseLine::Tagged {
                tag: "mf2",
                status: "NO",
                rest: "[AUTHENTICATIONFAILED] x"
            })
        );
        assert_eq!(parse_line(b"+ \r\n"), Some(ResponseLine::Continuation));
        assert_eq!(parse_line(b"+\r\n"), Some(ResponseLine::Continuation));
        assert_eq!(parse_line(b"garbage\r\n"), None);
        assert_eq!(parse_line(b"\xff \xff\r\n"), None);
        assert_eq!(
            parse_line(b"mf1 OK\r\n"),
            Some(ResponseLine::Tagged {
                tag: "mf1",
                status: "OK",
                rest: ""
            })
        );
    }

    #[test]
    fn capability_codes() {
        assert_eq!(
            capability_code("[CAPABILITY IMAP4rev1 IDLE] Logged in"),
            Some("IMAP4rev1 IDLE")
        );
        assert_eq!(capability_code("[ALERT] hi"), None);
        assert_eq!(capability_code("Logged in"), None);
        assert_eq!(capability_code("[CAPABILITY"), None);
        assert!(has_capability("IMAP4rev1 sasl-ir ID", "SASL-IR"));
        assert!(!has_capability("IMAP4rev1 SASL-IRX", "SASL-IR"));
    }
}

//! Responses: which status for which case, and the header fields RFC 3261 §8.2.6 requires.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;

use super::message::Header;
use super::via::{self, Via};
use crate::quoted::{find_unquoted, split_unquoted};

/// The methods mailfront answers, for `Allow` (RFC 3261 §20.5). BYE is answered `481`: a
/// redirect never makes a dialog, so there is none to end.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

/// What mailfront answers. Each variant is one status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `200 OK` to OPTIONS, with `Allow` and `Accept` (RFC 3261 §11.2). Session border
    /// controllers send OPTIONS as a keep-alive and health probe.
    Options,
    /// `302 Moved Temporarily` with `Contact: <uri>`: the voice-mail endpoint of the server
    /// hosting the active copy of the user's database (routing rule 1).
    Redirect {
        /// The SIP URI.
        contact: String,
    },
    /// `400 Bad Request`, the defect in the reason phrase.
    BadRequest(super::Defect),
    /// `404 Not Found`: no such user, or a user without voice mail (the same bytes on
    /// purpose: a caller cannot tell whether a mailbox exists behind an address or extension).
    NotFound,
    /// `405 Method Not Allowed` with `Allow` (RFC 3261 §8.2.1).
    MethodNotAllowed,
    /// `416 Unsupported URI Scheme` (RFC 3261 §8.2.2.1).
    UnsupportedUriScheme,
    /// `481 Call/Transaction Does Not Exist`: CANCEL (RFC 3261 §9.2: mailfront is stateless,
    /// §8.2.7, so no transaction is ever found), BYE (§15.1.2) and requests inside a dialog
    /// (§12.2.2: a To tag, and mailfront never makes a dialog).
    NoTransaction,
    /// `503 Service Unavailable` with `Retry-After` in seconds: the directory or the location
    /// store could not answer, or the active server cannot take calls.
    ServiceUnavailable {
        /// Seconds.
        retry_after: u32,
    },
    /// `505 Version Not Supported` (RFC 3261 §21.5.7): not `SIP/2.0`.
    VersionNotSupported,
    /// `513 Message Too Large` (RFC 3261 §21.4.22): a TCP message over `max_message_size`.
    MessageTooLarge,
}

impl Reply {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Options => 200,
            Reply::Redirect { .. } => 302,
            Reply::BadRequest(_) => 400,
            Reply::NotFound => 404,
            Reply::MethodNotAllowed => 405,
            Reply::UnsupportedUriScheme => 416,
            Reply::NoTransaction => 481,
            Reply::ServiceUnavailable { .. } => 503,
            Reply::VersionNotSupported => 505,
            Reply::MessageTooLarge => 513,
        }
    }

    /// The reason phrase (RFC 3261 §21).
    pub fn reason_phrase(&self) -> String {
        match self {
            Reply::Options => "OK".to_owned(),
            Reply::Redirect { .. } => "Moved Temporarily".to_owned(),
            Reply::BadRequest(defect) => defect.reason_phrase(),
            Reply::NotFound => "Not Found".to_owned(),
            Reply::MethodNotAllowed => "Method Not Allowed".to_owned(),
            Reply::UnsupportedUriScheme => "Unsupported URI Scheme".to_owned(),
            Reply::NoTransaction => "Call/Transaction Does Not Exist".to_owned(),
            Reply::ServiceUnavailable { .. } => "Service Unavailable".to_owned(),
            Reply::VersionNotSupported => "Version Not Supported".to_owned(),
            Reply::MessageTooLarge => "Message Too Large".to_owned(),
        }
    }

    /// A short word for the log line.
    pub fn decision(&self) -> &'static str {
        match self {
            Reply::Options => "options",
            Reply::Redirect { .. } => "redirect",
            Reply::BadRequest(_) => "bad-request",
            Reply::NotFound => "not-found",
            Reply::MethodNotAllowed => "method-not-allowed",
            Reply::UnsupportedUriScheme => "unsupported-scheme",
            Reply::NoTransaction => "no-transaction",
            Reply::ServiceUnavailable { .. } => "unavailable",
            Reply::VersionNotSupported => "bad-version",
            Reply::MessageTooLarge => "too-large",
        }
    }
}

/// The header fields a response copies from its request (RFC 3261 §8.2.6.2): every Via in
/// order, From, To, Call-ID and CSeq. Fields the request lacked are left out (only a `400` can
/// be sent for such a request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Echo {
    /// Each Via header line, in order (a line may hold several comma-separated values).
    pub via: Vec<String>,
    /// From.
    pub from: Option<String>,
    /// To.
    pub to: Option<String>,
    /// Call-ID.
    pub call_id: Option<String>,
    /// CSeq.
    pub cseq: Option<String>,
}

impl Echo {
    /// The fields to copy, from a request's header fields (the first of each single field).
    pub fn from_headers(headers: &[Header]) -> Echo {
        let first = |name: &str| {
            headers
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.value.clone())
        };
        Echo {
            via: headers
                .iter()
                .filter(|h| h.name == "Via")
                .map(|h| h.value.clone())
                .collect(),
            from: first("From"),
            to: first("To"),
            call_id: first("Call-ID"),
            cseq: first("CSeq"),
        }
    }

    /// The top Via value, parsed.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let line = self.via.first()?;
        Via::parse(via::first_value(line).0)
    }

    /// The To tag for a response to this request. RFC 3261 §8.2.7: a stateless UAS must give
    /// the same tag to the same request (a retransmission), so the tag is a keyed hash of the
    /// fields that identify the request (Call-ID, From with its tag, CSeq, the top Via with its
    /// branch). With a [`std::hash::RandomState`] made once per process, the tag is unguessable
    /// outside it (§19.3 asks for 32 random bits; this has 64).
    pub fn stateless_tag(&self, key: &impl BuildHasher) -> String {
        let mut hasher = key.build_hasher();
        self.call_id.hash(&mut hasher);
        self.from.hash(&mut hasher);
        self.cseq.hash(&mut hasher);
        self.via.first().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// Where a response to this request, received over UDP from `source`, goes (RFC 3261
    /// §18.2.2, RFC 3581): see [`Via::udp_destination`]. Without a readable Via, the source.
    pub fn udp_destination(&self, source: SocketAddr) -> SocketAddr {
        self.top_via()
            .map_or(source, |via| via.udp_destination(source))
    }

    /// The From value, for the log.
    pub fn from_for_log(&self) -> &str {
        self.from.as_deref().unwrap_or("-")
    }

    /// The Call-ID, for the log.
    pub fn call_id_for_log(&self) -> &str {
        self.call_id.as_deref().unwrap_or("-")
    }
}

/// The params part of a From or To value: after the `>` of a name-addr, or after the first
/// `;` of a bare addr-spec (RFC 3261 §20: header parameters follow the URI).
fn header_params(value: &str) -> &str {
    match find_unquoted(value, '<') {
        Some(open) => {
            let after = value.get(open..).unwrap_or_default();
            match after.find('>') {
                Some(close) => after.get(close + 1..).unwrap_or_default(),
                None => "",
            }
        }
        None => value
            .find(';')
            .and_then(|i| value.get(i..))
            .unwrap_or_default(),
    }
}

/// The `tag` parameter of a From or To value.
pub fn tag_of(value: &str) -> Option<&str> {
    split_unquoted(header_params(value), ';')
        .into_iter()
        .filter_map(|param| {
            let (name, tag) = param.split_once('=')?;
            name.trim().eq_ignore_ascii_case("tag").then(|| tag.trim())
        })
        .next()
}

/// A value without characters that could end a header line early.
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

/// The response bytes. `source` is where the request came from (it decides `received` and
/// `rport` in the top Via, RFC 3261 §18.2.1); `tag` is added to the To field when the request's
/// To has none (§8.2.6.2; use [`Echo::stateless_tag`]). Header fields: every Via, From, To,
/// Call-ID, CSeq, then `Contact` (302), `Allow` (405, and with `Accept` 200 to OPTIONS),
/// `Retry-After` (503), and `Content-Length: 0`.
pub fn render(reply: &Reply, echo: &Echo, source: SocketAddr, tag: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {} {}\r\n", reply.status(), reply.reason_phrase());
    for (i, line) in echo.via.iter().enumerate() {
        let line = if i == 0 {
            let (first, rest) = via::first_value(line);
            match Via::parse(first) {
                Some(top) => format!("{}{rest}", top.stamped(source)),
                None => line.clone(),
            }
        } else {
            line.clone()
        };
        out.push_str(&format!("Via: {}\r\n", clean(&line)));
    }
    if let Some(from) = &echo.from {
        out.push_str(&format!("From: {}\r\n", clean(from)));
    }
    if let Some(to) = &echo.to {
        let to = clean(to);
        if tag_of(&to).is_some() {
            out.push_str(&format!("To: {to}\r\n"));
        } else {
            out.push_str(&format!("To: {to};tag={}\r\n", clean(tag)));
        }
    }
    if let Some(call_id) = &echo.call_id {
        out.push_str(&format!("Call-ID: {}\r\n", clean(call_id)));
    }
    if let Some(cseq) = &echo.cseq {
        out.push_str(&format!("CSeq: {}\r\n", clean(cseq)));
    }
    match reply {
        Reply::Redirect { contact } => {
            let contact: String = clean(contact)
                .chars()
                .filter(|c| !matches!(c, '<' | '>'))
                .collect();
            out.push_str(&format!("Contact: <{contact}>\r\n"));
        }
        Reply::MethodNotAllowed => out.push_str(&format!("Allow: {ALLOW}\r\n")),
        Reply::Options => {
            out.push_str(&format!("Allow: {ALLOW}\r\nAccept: application/sdp\r\n"));
        }
        Reply::ServiceUnavailable { retry_after } => {
            out.push_str(&format!("Retry-After: {retry_after}\r\n"));
        }
        _ => {}
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// Whether `c` may stand unescaped in the user part of a SIP URI (RFC 3261 §25.1 `unreserved`
/// and `user-unreserved`).
fn user_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '_'
                | '.'
                | '!'
                | '~'
                | '*'
                | '\''
                | '('
                | ')'
                | '&'
                | '='
                | '+'
                | '$'
                | ','
                | ';'
                | '?'
                | '/'
        )
}

fn escape_user(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if user_char(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The Contact of a redirect, from a server's voice-mail URI (`sip = "…"` in its
/// configuration): `{user}` is replaced by the user part the caller dialed, `{extension}` by the
/// user's extension from the directory (or, if the user has none, the dialed user part); both
/// escaped for the user part of a SIP URI. A URI without placeholders is used as it is.
pub fn contact_uri(template: &str, dialed: &str, extension: Option<&str>) -> String {
    template
        .replace("{user}", &escape_user(dialed))
        .replace("{extension}", &escape_user(extension.unwrap_or(dialed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_tags() {
        assert_eq!(tag_of("<sip:a@b>;tag=x1"), Some("x1"));
        assert_eq!(tag_of("\"A <b>; tag=no\" <sip:a@b;tag=uri-param>"), None);
        assert_eq!(tag_of("\"A\" <sip:a@b> ; TAG = y "), Some("y"));
        assert_eq!(tag_of("sip:a@b;tag=z"), Some("z"));
        assert_eq!(tag_of("sip:a@b"), None);
        assert_eq!(tag_of("<sip:a@b"), None);
    }

    #[test]
    fn contact_templates() {
        assert_eq!(
            contact_uri(
                "sip:{extension}@mbx1.example.com:5070",
                "alice",
                Some("4001")
            ),
            "sip:4001@mbx1.example.com:5070"
        );
        assert_eq!(
            contact_uri("sip:{user}@mbx1;transport=tcp", "4001", Some("4001")),
            "sip:4001@mbx1;transport=tcp"
        );
        assert_eq!(
            contact_uri("sip:{extension}@mbx1", "alice", None),
            "sip:alice@mbx1"
        );
        assert_eq!(contact_uri("sip:um@mbx1", "alice", None), "sip:um@mbx1");
        assert_eq!(
            contact_uri("sip:{user}@mbx1", "a b<>@%ü", None),
            "sip:a%20b%3C%3E%40%25%C3%BC@mbx1"
        );
    }

    #[test]
    fn stateless_tags_repeat_for_a_retransmission_only() {
        let key =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let echo = Echo {
            via: vec!["SIP/2.0/UDP h;branch=z9hG4bK1".into()],
            from: Some("<sip:a@b>;tag=1".into()),
            to: Some("<sip:c@d>".into()),
            call_id: Some("c1".into()),
            cseq: Some("1 INVITE".into()),
        };
        let tag = echo.stateless_tag(&key);
        assert_eq!(tag.len(), 16);
        assert_eq!(echo.clone().stateless_tag(&key), tag);
        let mut other = echo.clone();
        other.via = vec!["SIP/2.0/UDP h;branch=z9hG4bK2".into()];
        assert_ne!(other.stateless_tag(&key), tag);
        let random = std::hash::RandomState::new();
        assert_eq!(echo.stateless_tag(&random), echo.stateless_tag(&random));
    }
}

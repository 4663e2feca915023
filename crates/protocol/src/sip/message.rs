//! One SIP message (RFC 3261 §7), parsed without I/O and within bounds.
//!
//! [`parse`] reads the start line and the header fields of one complete message — a UDP
//! datagram, or one frame cut from a TCP or TLS stream by [`super::framer::StreamFramer`]. It
//! never panics and never reads past [`SipLimits`]. A message that is not SIP at all (or is a
//! response) is [`Unparseable`]; a request with something wrong inside is still returned, with
//! the first [`Defect`] found, so that the reply can copy the header fields that were readable
//! (RFC 3261 §8.2.6.2 needs them to reach the client's transaction).

use std::fmt;

/// Bounds on one SIP message (house rule 3: each has a default, a configuration key and a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipLimits {
    /// Largest message (start line, header fields and body), in bytes (`sip.max_message_size`).
    /// A UDP datagram over it is dropped and counted; a TCP message over it is answered
    /// `513 Message Too Large` and the connection closed.
    pub max_message_size: usize,
    /// Most header fields (lines, not counting folded continuations) (`sip.max_headers`).
    pub max_headers: usize,
    /// Longest line, start line included, in bytes without the line ending
    /// (`sip.max_line_length`).
    pub max_line_length: usize,
}

impl Default for SipLimits {
    /// 64 KiB, 128 header fields, 8 KiB lines.
    ///
    /// 64 KiB holds any UDP datagram (65,507 bytes of IPv4 payload at most), so by default no
    /// datagram is dropped for its size: RFC 3261 §18.1.1 already keeps UDP requests near the
    /// path MTU (larger ones go over TCP), and mailfront reads only the header fields, so the
    /// limit bounds memory, not function. An INVITE with an SDP offer is 1–4 KB.
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            max_headers: 128,
            max_line_length: 8 * 1024,
        }
    }
}

/// A header field: its name (compact forms expanded, well-known names in their canonical
/// spelling) and its value (surrounding whitespace removed, folded lines joined with one space).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The name, e.g. `Via`, `Call-ID`, or an unknown name as the peer spelled it.
    pub name: String,
    /// The value.
    pub value: String,
}

/// A request as read from the wire: syntax only, nothing checked against RFC 3261's rules for
/// requests yet (that is [`super::read_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The method, case as received (methods are case-sensitive, RFC 3261 §7.1).
    pub method: String,
    /// The Request-URI, as received.
    pub request_uri: String,
    /// The SIP-Version, as received (`SIP/2.0`).
    pub version: String,
    /// The header fields, in order.
    pub headers: Vec<Header>,
    /// The length of the body: the Content-Length, or (without one) the rest of the datagram.
    pub body_len: usize,
    /// The first thing found wrong, if anything.
    pub defect: Option<Defect>,
}

impl Message {
    /// The value of the first header field called `name` (any case; compact forms are already
    /// expanded).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The values of every header field called `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// Bytes that are not a SIP request at all: nothing can be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unparseable {
    /// Nothing but line endings (a keep-alive).
    #[error("empty message")]
    Empty,
    /// The start line is neither a request line nor a status line.
    #[error("not a SIP message")]
    NotSip,
    /// A response (`SIP/2.0 200 OK`): mailfront sends no requests, so none is expected.
    #[error("a response, not a request")]
    Response,
    /// Larger than `max_message_size`.
    #[error("message too large")]
    TooLarge,
    /// The start line is longer than `max_line_length`.
    #[error("start line too long")]
    StartLineTooLong,
}

/// What is wrong with a request that is SIP but cannot be served: each is answered
/// `400 Bad Request` with the problem in the reason phrase (RFC 3261 §21.4.1 allows the reason
/// phrase to say which header is at fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// A header field every request must have (RFC 3261 §8.1.1) is missing.
    #[error("missing {0}")]
    MissingHeader(&'static str),
    /// A header field that may appear only once appears more than once.
    #[error("more than one {0}")]
    DuplicateHeader(&'static str),
    /// A header field's value does not parse.
    #[error("malformed {0}")]
    MalformedHeader(&'static str),
    /// A header line without a name and a colon, or with a control character inside.
    #[error("malformed header line")]
    MalformedHeaderLine,
    /// A header line that is not UTF-8.
    #[error("header not UTF-8")]
    HeaderNotUtf8,
    /// A header line longer than `max_line_length`.
    #[error("header line too long")]
    LineTooLong,
    /// More header fields than `max_headers`.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The datagram ends before the Content-Length says the body does (RFC 3261 §18.3).
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// The CSeq method is not the request's method (RFC 3261 §8.1.1.5).
    #[error("CSeq method does not match")]
    CSeqMismatch,
    /// The Request-URI does not parse.
    #[error("malformed Request-URI")]
    MalformedRequestUri,
}

impl Defect {
    /// The reason phrase of the `400` reply, e.g. `Bad Request (missing Call-ID)`.
    pub fn reason_phrase(&self) -> String {
        format!("Bad Request ({self})")
    }
}

/// RFC 3261 §7.3.3 compact forms, and the canonical spelling of the names mailfront reads.
const NAMES: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("call-id", "Call-ID"),
    ("contact", "Contact"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
    ("cseq", "CSeq"),
    ("from", "From"),
    ("max-forwards", "Max-Forwards"),
    ("to", "To"),
    ("via", "Via"),
];

/// The canonical name of a header field (compact forms expanded).
pub fn canonical_name(name: &str) -> String {
    NAMES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |(_, canonical)| (*canonical).to_owned())
}

/// RFC 3261 §25.1 `token`.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

/// The line starting at `pos` without its ending (LF, optionally preceded by CR), and the
/// position after the ending (or the end of `bytes`).
fn line_at(bytes: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = bytes.get(pos..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let line = rest.get(..lf).unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line, pos + lf + 1)
        }
        None => (rest, bytes.len()),
    }
}

/// Skips line endings before the start line (RFC 3261 §7.5: they are ignored on streams, and
/// keep-alives send them on datagrams).
pub(crate) fn skip_line_endings(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len())
}

fn note(defect: &mut Option<Defect>, found: Defect) {
    if defect.is_none() {
        *defect = Some(found);
    }
}

/// Parses a Content-Length value: digits only, at most 10 of them.
pub(crate) fn content_length_value(value: &str) -> Option<usize> {
    let value = value.trim();
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses one complete message. See the module documentation.
pub fn parse(bytes: &[u8], limits: &SipLimits) -> Result<Message, Unparseable> {
    if bytes.len() > limits.max_message_size {
        return Err(Unparseable::TooLarge);
    }
    let mut pos = skip_line_endings(bytes);
    if pos >= bytes.len() {
        return Err(Unparseable::Empty);
    }
    let (start, next) = line_at(bytes, pos);
    pos = next;
    if start.len() > limits.max_line_length {
        return Err(Unparseable::StartLineTooLong);
    }
    let start = std::str::from_utf8(start).map_err(|_| Unparseable::NotSip)?;
    if start
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return Err(Unparseable::Response);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 §7.1): exactly one space
    // between the three parts.
    let mut parts = start.split(' ');
    let (Some(method), Some(request_uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Unparseable::NotSip);
    };
    let is_sip_version = version
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if !is_token(method) || request_uri.is_empty() || !is_sip_version {
        return Err(Unparseable::NotSip);
    }

    let mut headers: Vec<Header> = Vec::new();
    let mut defect = None;
    // Whether the last header line was kept (a folded continuation belongs to it).
    let mut last_kept = false;
    let mut ended = false;
    while pos < bytes.len() {
        let (line, next) = line_at(bytes, pos);
        pos = next;
        if line.is_empty() {
            ended = true;
            break;
        }
        if line.len() > limits.max_line_length {
            note(&mut defect, Defect::LineTooLong);
            last_kept = false;
            continue;
        }
        // A CR or NUL inside a line could split the header when it is echoed in a reply.
        if line.iter().any(|&b| b == b'\r' || b == 0) {
            note(&mut defect, Defect::MalformedHeaderLine);
            last_kept = false;
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            note(&mut defect, Defect::HeaderNotUtf8);
            last_kept = false;
            continue;
        };
        if text.starts_with([' ', '\t']) {
            // Folding (RFC 3261 §7.3.1): the line continues the previous header field.
            match headers.last_mut() {
                Some(last) if last_kept => {
                    if !last.value.is_empty() {
                        last.value.push(' ');
                    }
                    last.value.push_str(text.trim());
                }
                _ => note(&mut defect, Defect::MalformedHeaderLine),
            }
            continue;
        }
        last_kept = false;
        let Some((name, value)) = text.split_once(':') else {
            note(&mut defect, Defect::MalformedHeaderLine);
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            note(&mut defect, Defect::MalformedHeaderLine);
            continue;
        }
        if headers.len() >= limits.max_headers {
            note(&mut defect, Defect::TooManyHeaders);
            continue;
        }
        headers.push(Header {
            name: canonical_name(name),
            value: value.trim_matches([' ', '\t']).to_owned(),
        });
        last_kept = true;
    }
    // A datagram that ends inside the header fields (no empty line) is taken as having no body:
    // lenient, and harmless since mailfront ignores bodies.
    let available = if ended { bytes.len() - pos } else { 0 };
    let mut content_length: Option<usize> = None;
    for value in headers
        .iter()
        .filter(|h| h.name == "Content-Length")
        .map(|h| h.value.as_str())
    {
        match (content_length_value(value), content_length) {
            (None, _) => note(&mut defect, Defect::MalformedHeader("Content-Length")),
            (Some(n), Some(before)) if n != before => {
                note(&mut defect, Defect::DuplicateHeader("Content-Length"));
            }
            (Some(n), _) => content_length = Some(n),
        }
    }
    let body_len = match content_length {
        Some(n) if n > available => {
            note(&mut defect, Defect::BodyTruncated);
            available
        }
        // RFC 3261 §18.3: bytes after the body are discarded.
        Some(n) => n,
        None => available,
    };
    Ok(Message {
        method: method.to_owned(),
        request_uri: request_uri.to_owned(),
        version: version.to_owned(),
        headers,
        body_len,
        defect,
    })
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:4001@cas.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1\r\n\
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-0\r\n\
f: <sip:carol@example.com>;tag=abc\r\n\
t: <sip:4001@cas.example.com>\r\n\
i: call-1@192.0.2.7\r\n\
CSeq: 1 INVITE\r\n\
Subject: a folded\r\n \tsubject\r\n\
Max-Forwards: 70\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\n";

    #[test]
    fn reads_a_request_with_compact_forms_and_folding() {
        let message = parse(INVITE, &SipLimits::default()).unwrap();
        assert_eq!(message.method, "INVITE");
        assert_eq!(message.request_uri, "sip:4001@cas.example.com");
        assert_eq!(message.version, "SIP/2.0");
        assert_eq!(message.defect, None);
        assert_eq!(
            message.headers_named("via").collect::<Vec<_>>(),
            [
                "SIP/2.0/UDP 192.0.2.7:5071;branch=z9hG4bK-1",
                "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-0"
            ]
        );
        assert_eq!(
            message.header("From"),
            Some("<sip:carol@example.com>;tag=abc")
        );
        assert_eq!(message.header("call-id"), Some("call-1@192.0.2.7"));
        assert_eq!(message.header("Subject"), Some("a folded subject"));
        assert_eq!(message.header("Content-Type"), Some("application/sdp"));
        // Content-Length 4 of the 5 body bytes: the rest of the datagram is discarded.
        assert_eq!(message.body_len, 4);
    }

    #[test]
    fn bare_line_feeds_and_leading_line_endings_are_tolerated() {
        let message = parse(
            b"\r\n\r\nOPTIONS sip:cas SIP/2.0\nVia: SIP/2.0/UDP h\nContent-Length: 0\n\n",
            &SipLimits::default(),
        )
        .unwrap();
        assert_eq!(message.method, "OPTIONS");
        assert_eq!(message.header("Via"), Some("SIP/2.0/UDP h"));
        assert_eq!(message.defect, None);
    }

    #[test]
    fn what_is_not_a_request_is_unparseable() {
        let limits = SipLimits::default();
        let cases: &[(&[u8], Unparseable)] = &[
            (b"", Unparseable::Empty),
            (b"\r\n\r\n", Unparseable::Empty),
            (b"SIP/2.0 200 OK\r\n\r\n", Unparseable::Response),
            (b"sip/2.0 180 Ringing\r\n\r\n", Unparseable::Response),
            (b"GET / HTTP/1.1\r\n\r\n", Unparseable::NotSip),
            (b"INVITE sip:x SIP/2.0 extra\r\n\r\n", Unparseable::NotSip),
            (b"INVITE  sip:x SIP/2.0\r\n\r\n", Unparseable::NotSip),
            (b"INVITE sip:x\r\n\r\n", Unparseable::NotSip),
            (b"IN(VITE sip:x SIP/2.0\r\n\r\n", Unparseable::NotSip),
            (b"INVITE sip:\xff SIP/2.0\r\n\r\n", Unparseable::NotSip),
            (b"\x00\x01\x02", Unparseable::NotSip),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse(input, &limits),
                Err(*expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = SipLimits {
            max_message_size: 200,
            max_headers: 3,
            max_line_length: 40,
        };
        let big = [b'x'; 201];
        assert_eq!(parse(&big, &limits), Err(Unparseable::TooLarge));
        let long_start = format!("INVITE sip:{} SIP/2.0\r\n\r\n", "1".repeat(30));
        assert_eq!(
            parse(long_start.as_bytes(), &limits),
            Err(Unparseable::StartLineTooLong)
        );
        let many = b"BYE sip:x SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let message = parse(many, &limits).unwrap();
        assert_eq!(message.headers.len(), 3);
        assert_eq!(message.defect, Some(Defect::TooManyHeaders));
        let long_line = format!("BYE sip:x SIP/2.0\r\nA: {}\r\nB: 2\r\n\r\n", "a".repeat(40));
        let message = parse(long_line.as_bytes(), &limits).unwrap();
        assert_eq!(message.defect, Some(Defect::LineTooLong));
        assert_eq!(message.header("B"), Some("2"));
    }

    #[test]
    fn defects_are_named() {
        let limits = SipLimits::default();
        let cases: &[(&[u8], Defect)] = &[
            (
                b"BYE sip:x SIP/2.0\r\nno colon here\r\n\r\n",
                Defect::MalformedHeaderLine,
            ),
            (
                b"BYE sip:x SIP/2.0\r\nBad Name: x\r\n\r\n",
                Defect::MalformedHeaderLine,
            ),
            (
                b"BYE sip:x SIP/2.0\r\n folded first\r\n\r\n",
                Defect::MalformedHeaderLine,
            ),
            (
                b"BYE sip:x SIP/2.0\r\nA: x\ry\r\n\r\n",
                Defect::MalformedHeaderLine,
            ),
            (
                b"BYE sip:x SIP/2.0\r\nA: \xff\r\n\r\n",
                Defect::HeaderNotUtf8,
            ),
            (
                b"BYE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
                Defect::MalformedHeader("Content-Length"),
            ),
            (
                b"BYE sip:x SIP/2.0\r\nl: 12345678901\r\n\r\n",
                Defect::MalformedHeader("Content-Length"),
            ),
            (
                b"BYE sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
                Defect::DuplicateHeader("Content-Length"),
            ),
            (
                b"BYE sip:x SIP/2.0\r\nl: 10\r\n\r\nshort",
                Defect::BodyTruncated,
            ),
        ];
        for (input, expected) in cases {
            let message = parse(input, &limits).unwrap();
            assert_eq!(
                message.defect,
                Some(*expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            Defect::MissingHeader("Call-ID").reason_phrase(),
            "Bad Request (missing Call-ID)"
        );
    }

    #[test]
    fn never_panics_on_any_prefix_or_mutation() {
        let limits = SipLimits {
            max_message_size: 400,
            max_headers: 6,
            max_line_length: 60,
        };
        for end in 0..=INVITE.len() {
            let _ = parse(INVITE.get(..end).unwrap(), &limits);
        }
        for i in 0..INVITE.len() {
            for byte in [0u8, b'\r', b'\n', b':', b' ', 0xff, b';'] {
                let mut mutated = INVITE.to_vec();
                mutated[i] = byte;
                let _ = parse(&mutated, &limits);
            }
        }
    }
}

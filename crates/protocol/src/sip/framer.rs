//! Cutting a TCP or TLS byte stream into SIP messages (RFC 3261 §18.3: on a stream, the
//! Content-Length says where the body, and so the message, ends).
//!
//! Bytes go in with [`StreamFramer::push`] in whatever pieces the network delivers; complete
//! messages come out of [`StreamFramer::next_frame`], several per read when a client pipelines,
//! none while one is still arriving. Line endings before a message are skipped (§7.5); a
//! double CRLF between messages is an RFC 5626 §3.5.1 keep-alive ping, answered with a single
//! CRLF. The buffer never holds much more than `max_message_size`: a header block that has not
//! ended by then, or a Content-Length that would pass it, is an error, and the connection ends
//! (with a reply where the header fields are known).

use super::message::{self, Defect, SipLimits, content_length_value};
use super::response::{Echo, Reply};

/// What the stream delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One complete message: start line, header fields, empty line and body.
    Message(Vec<u8>),
    /// A keep-alive ping (a double CRLF, RFC 5626 §3.5.1): answer with a single CRLF.
    Ping,
}

/// The stream cannot be cut into messages any more; the connection must end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header fields did not end within `max_message_size` bytes.
    #[error("header fields larger than the message size limit")]
    HeadersTooLarge,
    /// The Content-Length makes the message larger than `max_message_size`.
    #[error("message larger than the size limit")]
    TooLarge {
        /// The start line and header fields, for the reply.
        head: Vec<u8>,
    },
    /// The Content-Length is unreadable, or there are two that differ: where the message ends
    /// is unknown.
    #[error("unreadable Content-Length")]
    BadContentLength {
        /// The start line and header fields, for the reply.
        head: Vec<u8>,
    },
}

impl FramingError {
    /// What to answer before closing, with the fields to copy: `513` or `400`; nothing when the
    /// header fields are not known, or belong to an ACK (never answered, RFC 3261 §17.1.1.3).
    pub fn reply(&self, limits: &SipLimits) -> Option<(Reply, Echo)> {
        let (reply, head) = match self {
            FramingError::HeadersTooLarge => return None,
            FramingError::TooLarge { head } => (Reply::MessageTooLarge, head),
            FramingError::BadContentLength { head } => (
                Reply::BadRequest(Defect::MalformedHeader("Content-Length")),
                head,
            ),
        };
        let limits = SipLimits {
            max_message_size: head.len(),
            ..*limits
        };
        let parsed = message::parse(head, &limits).ok()?;
        if parsed.method == "ACK" {
            return None;
        }
        Some((reply, Echo::from_headers(&parsed.headers)))
    }
}

/// The stream framer. See the module documentation.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limits: SipLimits,
    /// How far `buf` has been searched for the end of the header fields.
    scanned: usize,
    /// The current message's header length and total length, once known.
    lengths: Option<(usize, usize)>,
    /// CRLFs seen since the last message (two make a ping).
    line_endings: u8,
}

/// The length of the header block (start line through the empty line) if it has ended,
/// searching from `from`. LF alone is tolerated as a line ending.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    for (offset, &byte) in tail.iter().enumerate() {
        if byte != b'\n' {
            continue;
        }
        let at = from + offset;
        match (buf.get(at + 1), buf.get(at + 2)) {
            (Some(b'\n'), _) => return Some(at + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(at + 3),
            _ => {}
        }
    }
    None
}

/// The Content-Length of a header block (0 when absent, RFC 3261 §18.3 requires it on streams
/// but a missing one is taken as no body, like most servers do); `None` if unreadable or
/// conflicting.
fn content_length(head: &[u8]) -> Option<usize> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue; // a folded continuation, not a field of its own
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = std::str::from_utf8(line.get(colon + 1..).unwrap_or_default()).ok()?;
        let value = content_length_value(value)?;
        if found.is_some_and(|before| before != value) {
            return None;
        }
        found = Some(value);
    }
    Some(found.unwrap_or(0))
}

impl StreamFramer {
    /// A framer for messages within `limits`.
    pub fn new(limits: SipLimits) -> Self {
        Self {
            buf: Vec::new(),
            limits,
            scanned: 0,
            lengths: None,
            line_endings: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
    }

    /// The next complete frame; `Ok(None)` until one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.lengths.is_none() {
            // Line endings before a message: skipped, and two CRLFs are a ping.
            loop {
                match (self.buf.first(), self.buf.get(1)) {
                    (Some(b'\n'), _) => self.drop_front(1),
                    (Some(b'\r'), Some(b'\n')) => {
                        self.drop_front(2);
                        self.line_endings += 1;
                        if self.line_endings == 2 {
                            self.line_endings = 0;
                            return Ok(Some(Frame::Ping));
                        }
                    }
                    (Some(b'\r'), None) => return Ok(None),
                    (Some(b'\r'), Some(_)) => self.drop_front(1),
                    _ => break,
                }
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            self.line_endings = 0;
            let Some(head_len) = header_end(&self.buf, self.scanned) else {
                if self.buf.len() > self.limits.max_message_size {
                    return Err(FramingError::HeadersTooLarge);
                }
                // The end may straddle this read and the next: look again from 2 bytes back.
                self.scanned = self.buf.len().saturating_sub(2);
                return Ok(None);
            };
            let head = self.buf.get(..head_len).unwrap_or_default();
            let Some(body_len) = content_length(head) else {
                return Err(FramingError::BadContentLength {
                    head: head.to_vec(),
                });
            };
            let total = head_len.saturating_add(body_len);
            if total > self.limits.max_message_size {
                return Err(FramingError::TooLarge {
                    head: head.to_vec(),
                });
            }
            self.lengths = Some((head_len, total));
        }
        let Some((_, total)) = self.lengths else {
            return Ok(None);
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buf.drain(..total).collect();
        self.lengths = None;
        self.scanned = 0;
        Ok(Some(Frame::Message(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &[u8] = b"INVITE sip:4001@cas SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=1\r\nContent-Length: 5\r\n\r\nv=0\r\n";
    const SECOND: &[u8] = b"OPTIONS sip:cas SIP/2.0\nl:0\n\n";

    fn stream() -> Vec<u8> {
        let mut all = b"\r\n".to_vec();
        all.extend_from_slice(FIRST);
        all.extend_from_slice(b"\r\n\r\n");
        all.extend_from_slice(SECOND);
        all.extend_from_slice(b"BYE sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nab");
        all
    }

    fn frames(framer: &mut StreamFramer, input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame().unwrap() {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn messages_at_every_split() {
        let input = stream();
        for chunk in 1..=input.len() {
            let mut framer = StreamFramer::new(SipLimits::default());
            let got = frames(&mut framer, &input, chunk);
            assert_eq!(
                got,
                vec![
                    Frame::Message(FIRST.to_vec()),
                    Frame::Ping,
                    Frame::Message(SECOND.to_vec()),
                ],
                "chunk {chunk}"
            );
            // The third message waits for its last body byte.
            let third = b"BYE sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nab";
            assert_eq!(framer.buffered(), third.len(), "chunk {chunk}");
            framer.push(b"c");
            assert!(
                matches!(framer.next_frame(), Ok(Some(Frame::Message(m))) if m.ends_with(b"abc"))
            );
        }
    }

    #[test]
    fn split_at_every_byte_pair() {
        // Two cuts anywhere: every three-piece delivery of two pipelined messages.
        let mut input = FIRST.to_vec();
        input.extend_from_slice(SECOND);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut framer = StreamFramer::new(SipLimits::default());
                let mut got = Vec::new();
                for piece in [&input[..a], &input[a..b], &input[b..]] {
                    framer.push(piece);
                    while let Some(frame) = framer.next_frame().unwrap() {
                        got.push(frame);
                    }
                }
                assert_eq!(
                    got,
                    vec![
                        Frame::Message(FIRST.to_vec()),
                        Frame::Message(SECOND.to_vec())
                    ]
                );
            }
        }
    }

    #[test]
    fn a_missing_content_length_is_no_body() {
        let mut framer = StreamFramer::new(SipLimits::default());
        let got = frames(
            &mut framer,
            b"OPTIONS sip:cas SIP/2.0\r\nVia: x\r\n\r\nOPTIONS",
            64,
        );
        assert_eq!(
            got,
            vec![Frame::Message(
                b"OPTIONS sip:cas SIP/2.0\r\nVia: x\r\n\r\n".to_vec()
            )]
        );
        assert_eq!(framer.buffered(), 7);
    }

    #[test]
    fn size_limits() {
        let limits = SipLimits {
            max_message_size: 100,
            ..SipLimits::default()
        };
        let mut framer = StreamFramer::new(limits);
        framer.push(&[b'a'; 100]);
        assert_eq!(framer.next_frame(), Ok(None));
        framer.push(b"a");
        assert_eq!(framer.next_frame(), Err(FramingError::HeadersTooLarge));

        let head = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nCall-ID: c\r\nl: 60\r\n\r\n";
        let mut framer = StreamFramer::new(limits);
        framer.push(head);
        let error = framer.next_frame().unwrap_err();
        assert_eq!(
            error,
            FramingError::TooLarge {
                head: head.to_vec()
            }
        );
        let (reply, echo) = error.reply(&limits).unwrap();
        assert_eq!(reply, Reply::MessageTooLarge);
        assert_eq!(echo.call_id.as_deref(), Some("c"));

        // Exactly at the limit is fine.
        let mut framer = StreamFramer::new(SipLimits {
            max_message_size: 38,
            ..limits
        });
        framer.push(b"BYE sip:x SIP/2.0\r\nl: 10\r\n\r\n0123456789");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn unreadable_content_lengths_end_the_stream() {
        for head in [
            &b"BYE sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n"[..],
            b"BYE sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n",
            b"BYE sip:x SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            let mut framer = StreamFramer::new(SipLimits::default());
            framer.push(head);
            let error = framer.next_frame().unwrap_err();
            assert!(
                matches!(error, FramingError::BadContentLength { .. }),
                "{error:?}"
            );
            let (reply, _) = error.reply(&SipLimits::default()).unwrap();
            assert_eq!(reply.status(), 400);
        }
        // An ACK is never answered, even here.
        let mut framer = StreamFramer::new(SipLimits::default());
        framer.push(b"ACK sip:x SIP/2.0\r\nl: x\r\n\r\n");
        assert_eq!(
            framer
                .next_frame()
                .unwrap_err()
                .reply(&SipLimits::default()),
            None
        );
    }
}

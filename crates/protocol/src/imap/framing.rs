//! Splits IMAP input into messages (a line, and for each literal it announces, the literal's
//! bytes and the rest of the line), within fixed bounds, before any IMAP parsing.
//!
//! Framing first and parsing second keeps message boundaries exact even for malformed input (a
//! literal's bytes are never mistaken for a command), and lets every allocation be bounded: a line
//! longer than the limit, a literal larger than allowed, or a message that grows past its limit is
//! refused before it is buffered.

use crate::line::LineReader;

/// The bounds a [`Framer`] enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest line (without its line ending), in bytes.
    pub max_line: usize,
    /// Largest literal, in bytes.
    pub max_literal: u32,
    /// Largest whole message (lines and literals), in bytes.
    pub max_message: usize,
}

/// A literal announced at the end of a line (RFC 3501 §4.3, RFC 7888).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Literal {
    /// Announced length in bytes.
    pub length: u32,
    /// `{N}` (the sender waits for a continuation) rather than `{N+}` (it does not).
    pub sync: bool,
}

/// What the framer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message, with every line ending normalised to CRLF.
    Message(Vec<u8>),
    /// The message so far ends with a literal announcement. The owner must call
    /// [`Framer::accept_literal`] (and, for a synchronising literal, send a continuation
    /// request) or [`Framer::reject_literal`].
    Literal(Literal),
}

/// Input that cannot be framed within the limits. The connection cannot be resynchronised
/// reliably after these, so the owner closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line is longer than [`FrameLimits::max_line`].
    #[error("line too long")]
    LineTooLong,
    /// A message is larger than [`FrameLimits::max_message`], or a non-synchronising literal is
    /// larger than [`FrameLimits::max_literal`] (its bytes are already on the way).
    #[error("message too large")]
    MessageTooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Line,
    /// A literal was announced; waiting for the owner's decision.
    Decision(Literal),
    /// Reading this many more literal bytes.
    LiteralBytes(u32),
}

/// A bounded, sans-I/O IMAP message framer. Feed it bytes with [`Framer::push`], take frames with
/// [`Framer::next_frame`].
#[derive(Debug)]
pub struct Framer {
    limits: FrameLimits,
    input: LineReader,
    message: Vec<u8>,
    expect: Expect,
}

impl Framer {
    /// A framer with these limits.
    pub fn new(limits: FrameLimits) -> Self {
        Self {
            limits,
            input: LineReader::new(limits.max_line),
            message: Vec::new(),
            expect: Expect::Line,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.push(bytes);
    }

    /// How many received bytes are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.input.len() + self.message.len()
    }

    /// Drops everything received and not yet framed (after STARTTLS: bytes sent before the TLS
    /// handshake must never be processed after it, CVE-2011-0411).
    pub fn clear(&mut self) {
        self.input.clear();
        self.message.clear();
        self.message.shrink_to_fit();
        self.expect = Expect::Line;
    }

    /// Takes the received bytes that were not framed yet (pipelined after the last frame), to
    /// pass them on verbatim.
    pub fn take_unframed(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.message);
        rest.extend(self.input.take_all());
        self.expect = Expect::Line;
        rest
    }

    /// Reads one raw line (without its line ending), ignoring literal syntax: for protocol
    /// continuations such as AUTHENTICATE responses. `Ok(None)`: no complete line yet.
    pub fn next_raw_line(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        debug_assert_eq!(self.expect, Expect::Line);
        self.take_line()
    }

    fn take_line(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.input.next_line().map_err(|_| FrameError::LineTooLong)
    }

    /// The next frame, `Ok(None)` if more input is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.expect {
                Expect::Decision(literal) => return Ok(Some(Frame::Literal(literal))),
                Expect::LiteralBytes(0) => self.expect = Expect::Line,
                Expect::LiteralBytes(remaining) => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let taken = self.input.take_bytes(remaining as usize);
                    let take = taken.len();
                    self.message.extend(taken);
                    // `take` is at most `remaining`, a u32.
                    self.expect = Expect::LiteralBytes(remaining - take as u32);
                }
                Expect::Line => {
                    let Some(line) = self.take_line()? else {
                        return Ok(None);
                    };
                    if self.message.len() + line.len() + 2 > self.limits.max_message {
                        self.message.clear();
                        return Err(FrameError::MessageTooLarge);
                    }
                    let literal = announced_literal(&line);
                    self.message.extend_from_slice(&line);
                    self.message.extend_from_slice(b"\r\n");
                    match literal {
                        None => {
                            let message = std::mem::take(&mut self.message);
                            return Ok(Some(Frame::Message(message)));
                        }
                        Some(None) => {
                            // An announcement whose length does not fit in 32 bits.
                            self.message.clear();
                            return Err(FrameError::MessageTooLarge);
                        }
                        Some(Some(literal)) => {
                            self.expect = Expect::Decision(literal);
                            return Ok(Some(Frame::Literal(literal)));
                        }
                    }
                }
            }
        }
    }

    /// Accepts the announced literal: its bytes become part of the message. Fails if the literal
    /// is over the limits (the owner should then have rejected it).
    pub fn accept_literal(&mut self) -> Result<(), FrameError> {
        let Expect::Decision(literal) = self.expect else {
            return Ok(());
        };
        if literal.length > self.limits.max_literal
            || self.message.len() + literal.length as usize > self.limits.max_message
        {
            self.message.clear();
            self.expect = Expect::Line;
            return Err(FrameError::MessageTooLarge);
        }
        self.expect = Expect::LiteralBytes(literal.length);
        Ok(())
    }

    /// Whether the announced literal fits the limits.
    pub fn literal_fits(&self, literal: Literal) -> bool {
        literal.length <= self.limits.max_literal
            && self.message.len() + literal.length as usize <= self.limits.max_message
    }

    /// Rejects a synchronising literal: the message so far is dropped and the framer expects a
    /// new line (the sender will not send the literal without a continuation request). Returns
    /// the dropped message so the owner can find its tag.
    pub fn reject_literal(&mut self) -> Vec<u8> {
        self.expect = Expect::Line;
        std::mem::take(&mut self.message)
    }
}

/// `Some(Some(literal))` if the line ends with `{N}` or `{N+}`, `Some(None)` if it ends with a
/// well-formed announcement whose length is too large for 32 bits, `None` otherwise.
fn announced_literal(line: &[u8]) -> Option<Option<Literal>> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = inner.get(open + 1..)?;
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(digits) => (digits, false),
        None => (spec, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = std::str::from_utf8(digits).ok()?.parse::<u32>().ok();
    Some(length.map(|length| Literal { length, sync }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_line: 64,
        max_literal: 16,
        max_message: 128,
    };

    /// Runs the framer over `input` delivered in `chunks`, accepting every literal.
    fn frames(input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut framer = Framer::new(LIMITS);
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame().unwrap() {
                if let Frame::Literal(_) = frame {
                    framer.accept_literal().unwrap();
                }
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn same_frames_at_every_split() {
        let input = b"a1 NOOP\r\na2 LOGIN {5}\r\nalice {3+}\r\npw!\r\na3 CAPABILITY\na4 X\r\n";
        let whole = frames(input, input.len());
        assert_eq!(
            whole,
            vec![
                Frame::Message(b"a1 NOOP\r\n".to_vec()),
                Frame::Literal(Literal {
                    length: 5,
                    sync: true
                }),
                Frame::Literal(Literal {
                    length: 3,
                    sync: false
                }),
                Frame::Message(b"a2 LOGIN {5}\r\nalice {3+}\r\npw!\r\n".to_vec()),
                Frame::Message(b"a3 CAPABILITY\r\n".to_vec()),
                Frame::Message(b"a4 X\r\n".to_vec()),
            ]
        );
        for chunk in 1..input.len() {
            assert_eq!(frames(input, chunk), whole, "chunk size {chunk}");
        }
        // Every two-way split too (different first and second halves).
        for at in 0..=input.len() {
            let mut framer = Framer::new(LIMITS);
            let mut out = Vec::new();
            for piece in [&input[..at], &input[at..]] {
                framer.push(piece);
                while let Some(frame) = framer.next_frame().unwrap() {
                    if let Frame::Literal(_) = frame {
                        framer.accept_literal().unwrap();
                    }
                    out.push(frame);
                }
            }
            assert_eq!(out, whole, "split at {at}");
        }
    }

    #[test]
    fn literal_bytes_are_never_commands() {
        // The literal contains what looks like a command and a line ending.
        let out = frames(b"a LOGIN {9}\r\nx\r\nb NOOP p\r\n", 1);
        assert_eq!(
            out.last(),
            Some(&Frame::Message(
                b"a LOGIN {9}\r\nx\r\nb NOOP p\r\n".to_vec()
            ))
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn long_line_is_refused_before_it_is_buffered() {
        let mut framer = Framer::new(LIMITS);
        framer.push(&[b'a'; 66]);
        assert_eq!(framer.next_frame(), Err(FrameError::LineTooLong));
        let mut framer = Framer::new(LIMITS);
        framer.push(&[b'a'; 65]);
        framer.push(b"\r\n");
        assert_eq!(framer.next_frame(), Err(FrameError::LineTooLong));
        // Exactly at the limit is fine.
        let mut framer = Framer::new(LIMITS);
        framer.push(&[b'a'; 64]);
        framer.push(b"\r\n");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn oversized_literals() {
        let mut framer = Framer::new(LIMITS);
        framer.push(b"a LOGIN {17}\r\n");
        let Ok(Some(Frame::Literal(literal))) = framer.next_frame() else {
            panic!()
        };
        assert!(!framer.literal_fits(literal));
        // A refused synchronising literal: the owner replies BAD; the framer goes on with lines.
        assert_eq!(framer.reject_literal(), b"a LOGIN {17}\r\n");
        framer.push(b"b NOOP\r\n");
        assert_eq!(
            framer.next_frame(),
            Ok(Some(Frame::Message(b"b NOOP\r\n".to_vec())))
        );
        // Accepting an oversized literal anyway is an error, not an allocation.
        framer.push(b"c LOGIN {4294967295}\r\n");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Literal(_)))));
        assert_eq!(framer.accept_literal(), Err(FrameError::MessageTooLarge));
        // A length beyond 32 bits.
        framer.push(b"d LOGIN {99999999999}\r\n");
        assert_eq!(framer.next_frame(), Err(FrameError::MessageTooLarge));
    }

    #[test]
    fn message_limit_counts_all_parts() {
        let mut framer = Framer::new(LIMITS);
        let mut input = Vec::new();
        for _ in 0..10 {
            input.extend_from_slice(b"aaaaaaaaaa {1+}\r\nx");
        }
        input.extend_from_slice(b"\r\n");
        framer.push(&input);
        let result = loop {
            match framer.next_frame() {
                Ok(Some(Frame::Literal(_))) => {
                    if let Err(e) = framer.accept_literal() {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        assert_eq!(result, Err(FrameError::MessageTooLarge));
    }

    #[test]
    fn clear_and_take_unframed() {
        let mut framer = Framer::new(LIMITS);
        framer.push(b"a STARTTLS\r\nb LOGIN x y\r\n");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
        framer.clear();
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.next_frame(), Ok(None));
        framer.push(b"a LOGIN x y\r\nb SELECT INBOX\r\nc FE");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
        assert_eq!(framer.take_unframed(), b"b SELECT INBOX\r\nc FE");
    }

    #[test]
    fn raw_lines_ignore_literal_syntax() {
        let mut framer = Framer::new(LIMITS);
        framer.push(b"AGFsaWNl{5}\r\nrest");
        assert_eq!(framer.next_raw_line(), Ok(Some(b"AGFsaWNl{5}".to_vec())));
        assert_eq!(framer.next_raw_line(), Ok(None));
    }

    #[test]
    fn announcements() {
        assert_eq!(
            announced_literal(b"a {5}"),
            Some(Some(Literal {
                length: 5,
                sync: true
            }))
        );
        assert_eq!(
            announced_literal(b"a {5+}"),
            Some(Some(Literal {
                length: 5,
                sync: false
            }))
        );
        assert_eq!(announced_literal(b"a {}"), None);
        assert_eq!(announced_literal(b"a {+}"), None);
        assert_eq!(announced_literal(b"a {x}"), None);
        assert_eq!(announced_literal(b"}"), None);
        assert_eq!(announced_literal(b"a {4294967296}"), Some(None));
    }
}

//! Message content on the wire: reading a client's DATA, writing DATA to a backend.
//!
//! This is where SMTP smuggling is stopped (CVE-2023-51764 and relatives). A client's DATA ends
//! only at an exact `CRLF . CRLF`; every other way of writing a lone dot line (`LF . LF`,
//! `CR . CR`, `LF . CRLF`, `CRLF . LF`) is content. Bare CR and bare LF in the content are
//! turned into CRLF, and the content is dot-stuffed again by [`DotStuffer`] when it goes to the
//! backend, so the backend sees exactly one end of data: ours.

/// The decoder's position in the line it is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line; `after_crlf` if the previous line ended with a real CRLF (or this
    /// is the first line).
    LineStart { after_crlf: bool },
    /// Saw `.` at the start of a line.
    Dot { after_crlf: bool },
    /// Saw `.` CR at the start of a line.
    DotCr { after_crlf: bool },
    /// Inside a line.
    Mid,
    /// Saw CR inside a line.
    Cr,
    /// The end of data was read.
    Ended,
}

/// Decodes a client's DATA into canonical content (CRLF line endings, dots unstuffed).
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    size: u64,
}

impl Default for DataDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DataDecoder {
    /// A decoder at the start of the content (right after the DATA command's 354).
    pub fn new() -> Self {
        Self {
            state: State::LineStart { after_crlf: true },
            size: 0,
        }
    }

    /// Whether the end of data has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Ended
    }

    /// Content bytes produced so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Decodes as much of `input` as belongs to the content, appending canonical content to
    /// `out`. Returns how many input bytes were consumed: all of them, unless the end of data
    /// was reached, after which the rest is the next command.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let start = out.len();
        for (i, &b) in input.iter().enumerate() {
            self.step(b, out);
            if self.state == State::Ended {
                self.size += (out.len() - start) as u64;
                return i + 1;
            }
        }
        self.size += (out.len() - start) as u64;
        input.len()
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        self.state = match (self.state, b) {
            (State::Ended, _) => State::Ended,
            (State::LineStart { after_crlf }, b'.') => State::Dot { after_crlf },
            (State::LineStart { .. } | State::Mid, b'\r') => State::Cr,
            (State::LineStart { .. } | State::Mid, b'\n') => {
                out.extend_from_slice(b"\r\n");
                State::LineStart { after_crlf: false }
            }
            (State::LineStart { .. } | State::Mid, other) => {
                out.push(other);
                State::Mid
            }
            (State::Dot { after_crlf }, b'\r') => State::DotCr { after_crlf },
            (State::Dot { .. }, b'\n') => {
                // `.` LF: a dot line that is not an end of data; keep it as content.
                out.extend_from_slice(b".\r\n");
                State::LineStart { after_crlf: false }
            }
            (State::Dot { .. }, other) => {
                // Dot-unstuffing (RFC 5321 §4.5.2): the leading dot goes.
                out.push(other);
                State::Mid
            }
            (State::DotCr { after_crlf: true }, b'\n') => State::Ended,
            (State::DotCr { after_crlf: false }, b'\n') => {
                // `LF . CRLF`: smuggling shape; content.
                out.extend_from_slice(b".\r\n");
                State::LineStart { after_crlf: true }
            }
            (State::DotCr { .. }, other) => {
                // `. CR x`: a bare CR ends the dot line.
                out.extend_from_slice(b".\r\n");
                self.state = State::LineStart { after_crlf: false };
                self.step(other, out);
                return;
            }
            (State::Cr, b'\n') => {
                out.extend_from_slice(b"\r\n");
                State::LineStart { after_crlf: true }
            }
            (State::Cr, other) => {
                // A bare CR ends the line; the byte starts the next one.
                out.extend_from_slice(b"\r\n");
                self.state = State::LineStart { after_crlf: false };
                self.step(other, out);
                return;
            }
        };
    }
}

/// Encodes canonical content for a backend's DATA: dot-stuffs line starts, turns any bare CR
/// or LF into CRLF (BDAT content is not checked by the client side), and writes the end.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// An encoder at the start of the content.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes a piece of content.
    pub fn encode(&mut self, content: &[u8], out: &mut Vec<u8>) {
        out.reserve(content.len() + content.len() / 64 + 4);
        for &b in content {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                b'.' if self.at_line_start => {
                    out.extend_from_slice(b"..");
                    self.at_line_start = false;
                }
                other => {
                    out.push(other);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// The end of data: a final CRLF if the content did not end with one, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in `chunk`-sized pieces; returns content and the unconsumed rest.
    fn decode(input: &[u8], chunk: usize) -> (Vec<u8>, Vec<u8>, bool) {
        let mut decoder = DataDecoder::new();
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            if decoder.is_done() {
                rest.extend_from_slice(piece);
                continue;
            }
            let used = decoder.decode(piece, &mut out);
            rest.extend_from_slice(&piece[used..]);
        }
        (out, rest, decoder.is_done())
    }

    #[test]
    fn plain_message_at_every_split() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n";
        for chunk in 1..=input.len() {
            let (out, rest, done) = decode(input, chunk);
            assert!(done);
            assert_eq!(
                out, b"Subject: x\r\n\r\n.leading dot\r\nend\r\n",
                "chunk {chunk}"
            );
            assert_eq!(rest, b"QUIT\r\n");
        }
    }

    #[test]
    fn empty_message() {
        let (out, rest, done) = decode(b".\r\n", 1);
        assert!(done && out.is_empty() && rest.is_empty());
    }

    #[test]
    fn smuggling_shapes_are_content() {
        let smuggled = "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n";
        for separator in [
            "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r",
        ] {
            let input = format!("Subject: a\r\n\r\nbody{separator}{smuggled}.\r\n");
            for chunk in [1, 2, 3, 7, input.len()] {
                let (out, rest, done) = decode(input.as_bytes(), chunk);
                assert!(done, "{separator:?}");
                assert!(
                    rest.is_empty(),
                    "{separator:?}: the smuggled commands were not content"
                );
                let text = String::from_utf8(out.clone()).unwrap();
                assert!(text.contains("MAIL FROM:<evil@x>"), "{separator:?}");
                // Canonical: every line ends CRLF, no bare CR or LF remains.
                assert!(
                    !text.replace("\r\n", "").contains(['\r', '\n']),
                    "{separator:?}: {text:?}"
                );
                // Re-encoded for the backend: exactly one end of data, at the very end.
                let mut wire = Vec::new();
                let mut stuffer = DotStuffer::new();
                stuffer.encode(&out, &mut wire);
                stuffer.finish(&mut wire);
                let wire = String::from_utf8(wire).unwrap();
                assert_eq!(
                    wire.matches("\r\n.\r\n").count(),
                    1,
                    "{separator:?}: {wire:?}"
                );
                assert!(wire.ends_with("\r\n.\r\n"));
            }
        }
    }

    #[test]
    fn stuffer_round_trip() {
        let content = b".starts with a dot\r\nmiddle . dot\r\n.\r\n..\r\nno final newline";
        let mut wire = Vec::new();
        let mut stuffer = DotStuffer::new();
        for piece in content.chunks(3) {
            stuffer.encode(piece, &mut wire);
        }
        stuffer.finish(&mut wire);
        assert_eq!(
            wire,
            b"..starts with a dot\r\nmiddle . dot\r\n..\r\n...\r\nno final newline\r\n.\r\n"
                .to_vec()
        );
        // Decoding the wire form gives back the content (with the final line ended).
        let (out, rest, done) = decode(&wire, 5);
        assert!(done && rest.is_empty());
        assert_eq!(
            out,
            b".starts with a dot\r\nmiddle . dot\r\n.\r\n..\r\nno final newline\r\n"
        );
    }

    #[test]
    fn stuffer_canonicalises_bare_line_endings() {
        let mut wire = Vec::new();
        let mut stuffer = DotStuffer::new();
        stuffer.encode(b"a\n.\nb\r.\rc\r", &mut wire);
        stuffer.encode(b"\n", &mut wire);
        stuffer.finish(&mut wire);
        assert_eq!(wire, b"a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n");
    }

    #[test]
    fn size_counts_content() {
        let mut decoder = DataDecoder::new();
        let mut out = Vec::new();
        decoder.decode(b"12345\r\n..x\r\n.\r\n", &mut out);
        assert_eq!(decoder.size(), out.len() as u64);
        assert_eq!(out, b"12345\r\n.x\r\n");
    }
}

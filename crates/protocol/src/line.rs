//! A bounded line reader: the framing shared by the line protocols (POP3, SMTP, IMAP's raw
//! continuation lines and, beneath IMAP's literal handling, its command lines).
//!
//! A line ends with LF, optionally preceded by CR; the ending is not part of the line. A line
//! longer than the limit is an error as soon as it is known to be too long, before its end has
//! arrived, so a client cannot make us buffer without bound.

use std::collections::VecDeque;

/// A line over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line too long")]
pub struct LineTooLong;

/// Received bytes, cut into lines on demand.
#[derive(Debug)]
pub struct LineReader {
    input: VecDeque<u8>,
    /// How many leading bytes of `input` are known to hold no LF: a line arriving one byte per
    /// segment is scanned once, not once per byte (found by fuzzing: quadratic time otherwise).
    scanned: usize,
    max_line: usize,
}

impl LineReader {
    /// A reader whose lines may be at most `max_line` bytes long (without the line ending).
    pub fn new(max_line: usize) -> Self {
        Self {
            input: VecDeque::new(),
            scanned: 0,
            max_line,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Drops everything buffered (after STARTTLS, CVE-2011-0411) and releases the memory.
    pub fn clear(&mut self) {
        self.scanned = 0;
        self.input.clear();
        self.input.shrink_to_fit();
    }

    /// Takes everything buffered, to pass it on verbatim.
    pub fn take_all(&mut self) -> Vec<u8> {
        self.scanned = 0;
        let all = self.input.drain(..).collect();
        self.input.shrink_to_fit();
        all
    }

    /// Takes up to `n` raw bytes (for literals and message data).
    pub fn take_bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.input.len());
        self.scanned = self.scanned.saturating_sub(n);
        self.input.drain(..n).collect()
    }

    /// Puts bytes back at the front (what a content decoder did not consume).
    pub fn unread(&mut self, bytes: &[u8]) {
        self.scanned = 0;
        for &b in bytes.iter().rev() {
            self.input.push_front(b);
        }
    }

    /// The next line without its line ending; `Ok(None)` if no complete line is buffered yet.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        let Some(newline) = self
            .input
            .iter()
            .skip(self.scanned)
            .position(|&b| b == b'\n')
            .map(|i| i + self.scanned)
        else {
            self.scanned = self.input.len();
            // One byte of slack for a CR whose LF has not arrived yet.
            if self.input.len() > self.max_line + 1 {
                return Err(LineTooLong);
            }
            return Ok(None);
        };
        self.scanned = 0;
        let mut line: Vec<u8> = self.input.drain(..=newline).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max_line {
            return Err(LineTooLong);
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_at_every_split() {
        let input = b"USER alice\r\nPASS x\nQUIT\r\npartial";
        for chunk in 1..=input.len() {
            let mut reader = LineReader::new(16);
            let mut lines = Vec::new();
            for piece in input.chunks(chunk) {
                reader.push(piece);
                while let Some(line) = reader.next_line().unwrap() {
                    lines.push(line);
                }
            }
            assert_eq!(
                lines,
                vec![b"USER alice".to_vec(), b"PASS x".to_vec(), b"QUIT".to_vec()]
            );
            assert_eq!(reader.take_all(), b"partial");
        }
    }

    #[test]
    fn a_line_sent_byte_by_byte_is_scanned_once() {
        // 64 KiB, one byte at a time: quadratic scanning would take seconds here.
        let mut reader = LineReader::new(1 << 17);
        for _ in 0..(1 << 16) {
            reader.push(b"a");
            assert_eq!(reader.next_line(), Ok(None));
        }
        reader.push(b"\r\nb");
        assert_eq!(reader.next_line().unwrap().map(|l| l.len()), Some(1 << 16));
        reader.unread(b"\n");
        assert_eq!(reader.next_line(), Ok(Some(Vec::new())));
        assert_eq!(reader.take_bytes(1), b"b");
    }

    #[test]
    fn limit_is_enforced_early_and_exactly() {
        let mut reader = LineReader::new(4);
        reader.push(b"abcd\r\n");
        assert_eq!(reader.next_line(), Ok(Some(b"abcd".to_vec())));
        reader.push(b"abcde\r\n");
        assert_eq!(reader.next_line(), Err(LineTooLong));
        let mut reader = LineReader::new(4);
        reader.push(b"abcd\r");
        assert_eq!(reader.next_line(), Ok(None));
        reader.push(b"x");
        assert_eq!(reader.next_line(), Err(LineTooLong));
    }

    #[test]
    fn take_bytes_and_clear() {
        let mut reader = LineReader::new(8);
        reader.push(b"0123456789");
        assert_eq!(reader.take_bytes(4), b"0123");
        assert_eq!(reader.take_bytes(100), b"456789");
        reader.push(b"x");
        reader.unread(b"ab");
        assert_eq!(reader.take_bytes(3), b"abx");
        reader.push(b"x");
        reader.clear();
        assert!(reader.is_empty());
    }
}

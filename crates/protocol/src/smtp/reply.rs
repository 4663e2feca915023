//! SMTP replies: written by our front ends, read from backends.

use crate::ClientTls;
use crate::line::LineReader;

/// A reply: a code and its text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line (with the enhanced status code, if any, as its first word).
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx.
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The wire form: `code-text` lines and a final `code text` line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == count { ' ' } else { '-' };
            // Text comes from us or from a backend line, which is split on LF but may hold a
            // bare CR or other control characters (found by fuzzing): they become spaces, so
            // the reply cannot be broken into two and carries nothing unprintable (RFC 5321
            // §4.2: text is printable US-ASCII, SP and HT).
            let text = text.replace(|c: char| c.is_control() && c != '\t', " ");
            out.extend_from_slice(format!("{}{}{}\r\n", self.code, sep, text).as_bytes());
        }
        out
    }

    /// One line of text for logs.
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// Replies both of mailfront's SMTP servers (submission and transport) give.
impl Reply {
    /// The start of an EHLO reply (RFC 5321 §4.1.1.1): the greeting, and the extensions both
    /// servers offer; the server adds its own.
    pub(crate) fn ehlo(hostname: &str, client: &str, max_message_size: u64) -> Reply {
        let lines = vec![
            format!("{hostname} greets {client}"),
            "PIPELINING".to_owned(),
            format!("SIZE {max_message_size}"),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        Reply { code: 250, lines }
    }

    /// The answer to STARTTLS (RFC 3207) on a listener with `tls`, on a connection that is
    /// (`secure`) or is not encrypted yet: `Ok` with the go-ahead, `Err` with the refusal.
    pub(crate) fn starttls(tls: ClientTls, secure: bool) -> Result<Reply, Reply> {
        if secure {
            Err(Reply::new(503, "5.5.1 TLS already active"))
        } else if tls != ClientTls::StartTls {
            Err(Reply::new(502, "5.5.1 STARTTLS not available on this port"))
        } else {
            Ok(Reply::new(220, "2.0.0 Ready to start TLS"))
        }
    }
}

/// Reads replies from a peer (a backend), line by line, bounded.
#[derive(Debug)]
pub struct ReplyReader {
    lines: LineReader,
    partial: Option<Reply>,
}

/// A reply that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply: {0}")]
pub struct MalformedReply(pub String);

impl ReplyReader {
    /// A reader for lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            lines: LineReader::new(max_line),
            partial: None,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    /// Drops buffered input (after STARTTLS).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.partial = None;
    }

    /// Takes the buffered, unread bytes.
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.lines.take_all()
    }

    /// The next complete reply, if one is buffered.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, MalformedReply> {
        loop {
            let Some(line) = self
                .lines
                .next_line()
                .map_err(|_| MalformedReply("line too long".into()))?
            else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(&line).into_owned();
            let code = text
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| MalformedReply(text.chars().take(100).collect()))?;
            let sep = text.as_bytes().get(3).copied();
            let body = text.get(4..).unwrap_or("").to_owned();
            let reply = self.partial.get_or_insert_with(|| Reply {
                code,
                lines: Vec::new(),
            });
            if reply.code != code {
                return Err(MalformedReply(format!(
                    "code changed within a reply: {text}"
                )));
            }
            if reply.lines.len() > 100 {
                return Err(MalformedReply("reply has too many lines".into()));
            }
            reply.lines.push(body);
            match sep {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(self.partial.take()),
                Some(_) => return Err(MalformedReply(text.chars().take(100).collect())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_cr_from_a_backend_never_splits_a_reply() {
        let mut reader = ReplyReader::new(512);
        reader.push(b"550 5.1.1 no\rsuch\0user\r\n");
        let reply = reader.next_reply().unwrap().unwrap();
        assert_eq!(reply.to_bytes(), b"550 5.1.1 no such user\r\n");
    }

    #[test]
    fn write_and_read_back() {
        let reply = Reply {
            code: 250,
            lines: vec![
                "mail.example.com".into(),
                "PIPELINING".into(),
                "SIZE 100".into(),
            ],
        };
        let bytes = reply.to_bytes();
        assert_eq!(
            bytes,
            b"250-mail.example.com\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        for chunk in 1..=bytes.len() {
            let mut reader = ReplyReader::new(512);
            let mut got = None;
            for piece in bytes.chunks(chunk) {
                reader.push(piece);
                if let Some(r) = reader.next_reply().unwrap() {
                    got = Some(r);
                }
            }
            assert_eq!(got.as_ref(), Some(&reply));
        }
        assert_eq!(Reply::new(354, "go").to_bytes(), b"354 go\r\n");
    }

    #[test]
    fn malformed() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"250-a\r\n251 b\r\n",
            b"250xhi\r\n",
            b"999 x\r\n",
        ] {
            let mut reader = ReplyReader::new(512);
            reader.push(bad);
            let result = (0..3)
                .map(|_| reader.next_reply())
                .find(|r| r.is_err() || matches!(r, Ok(Some(_))));
            assert!(matches!(result, Some(Err(_))), "{bad:?}: {result:?}");
        }
        let mut reader = ReplyReader::new(512);
        reader.push(b"220\r\n");
        assert_eq!(reader.next_reply().unwrap().unwrap().code, 220);
    }
}

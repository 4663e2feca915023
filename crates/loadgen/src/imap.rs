//! A minimal IMAP client: just what the scenarios send (LOGIN, SELECT, NOOP, FETCH, IDLE,
//! LOGOUT), reading replies line by line and skipping literals it does not keep.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::conn::Stream;

/// Why an IMAP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// The connection failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The server answered with something other than OK.
    #[error("unexpected reply: {0}")]
    Refused(String),
}

/// Longest reply line kept (longer ones are an error: the scenarios expect short lines).
const MAX_LINE: usize = 64 * 1024;

/// One IMAP connection.
pub struct ImapClient {
    stream: BufReader<Stream>,
    line: Vec<u8>,
    tag: u32,
    timeout: Duration,
}

impl ImapClient {
    /// Wraps a connected stream and reads the greeting.
    pub async fn open(stream: Stream, timeout: Duration) -> Result<Self, ImapError> {
        let mut client = Self {
            stream: BufReader::with_capacity(16 * 1024, stream),
            line: Vec::with_capacity(256),
            tag: 0,
            timeout,
        };
        client.read_line().await?;
        if !client.line.starts_with(b"* OK") {
            return Err(ImapError::Refused(client.line_text()));
        }
        Ok(client)
    }

    /// The connection alone, for a session that will only be held open (IDLE): the read buffer
    /// is dropped.
    pub fn into_stream(self) -> Stream {
        self.stream.into_inner()
    }

    /// `LOGIN` with quoted strings (the bench users' names and passwords need no escaping).
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), ImapError> {
        self.command(&format!("LOGIN \"{user}\" \"{password}\""))
            .await?;
        Ok(())
    }

    /// `SELECT INBOX`.
    pub async fn select_inbox(&mut self) -> Result<(), ImapError> {
        self.command("SELECT INBOX").await?;
        Ok(())
    }

    /// `NOOP`.
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        self.command("NOOP").await?;
        Ok(())
    }

    /// `FETCH 1 BODY.PEEK[]`: the bytes of literals read (the message).
    pub async fn fetch_first(&mut self) -> Result<u64, ImapError> {
        self.command("FETCH 1 BODY.PEEK[]").await
    }

    /// `IDLE`, up to the server's continuation.
    pub async fn idle(&mut self) -> Result<(), ImapError> {
        self.tag += 1;
        let line = format!("i{} IDLE\r\n", self.tag);
        self.send(line.as_bytes()).await?;
        loop {
            self.read_line().await?;
            if self.line.starts_with(b"+") {
                return Ok(());
            }
            if !self.line.starts_with(b"* ") {
                return Err(ImapError::Refused(self.line_text()));
            }
        }
    }

    /// `LOGOUT`; a server that closes right after its BYE is fine.
    pub async fn logout(&mut self) -> Result<(), ImapError> {
        match self.command("LOGOUT").await {
            Ok(_) | Err(ImapError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends a tagged command and reads to its tagged reply, which must be OK; returns the
    /// bytes of the literals in between.
    async fn command(&mut self, command: &str) -> Result<u64, ImapError> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        let line = format!("{tag} {command}\r\n");
        self.send(line.as_bytes()).await?;
        let mut literal_bytes = 0;
        loop {
            self.read_line().await?;
            if let Some(n) = literal_length(&self.line) {
                self.skip(n).await?;
                literal_bytes += n;
                continue;
            }
            if self.line.starts_with(tag.as_bytes()) && self.line.get(tag.len()) == Some(&b' ') {
                let status = self.line.get(tag.len() + 1..).unwrap_or_default();
                if status.starts_with(b"OK") {
                    return Ok(literal_bytes);
                }
                return Err(ImapError::Refused(self.line_text()));
            }
        }
    }

    /// Writes and flushes (a TLS stream may otherwise keep the record it made).
    async fn send(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    async fn read_line(&mut self) -> Result<(), ImapError> {
        self.line.clear();
        let read = tokio::time::timeout(self.timeout, async {
            (&mut self.stream)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut self.line)
                .await
        })
        .await
        .map_err(|_| ImapError::Timeout(self.timeout))??;
        if read == 0 {
            return Err(ImapError::Closed);
        }
        if !self.line.ends_with(b"\n") {
            return Err(ImapError::Refused("reply line too long".into()));
        }
        Ok(())
    }

    /// Reads and drops `n` bytes of a literal.
    async fn skip(&mut self, n: u64) -> Result<(), ImapError> {
        let copied = tokio::time::timeout(
            self.timeout.max(Duration::from_secs(1)) * 10,
            tokio::io::copy(&mut (&mut self.stream).take(n), &mut tokio::io::sink()),
        )
        .await
        .map_err(|_| ImapError::Timeout(self.timeout))??;
        if copied < n {
            return Err(ImapError::Closed);
        }
        Ok(())
    }

    fn line_text(&self) -> String {
        String::from_utf8_lossy(&self.line).trim_end().to_owned()
    }
}

/// The length `n` of a line ending in a literal announcement `{n}` (CRLF or LF).
fn literal_length(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = inner.get(open + 1..)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(
            literal_length(b"* 1 FETCH (BODY[] {31457280}\r\n"),
            Some(31_457_280)
        );
        assert_eq!(literal_length(b"* 1 FETCH (BODY[] {12}\n"), Some(12));
        assert_eq!(literal_length(b"a1 OK done\r\n"), None);
        assert_eq!(literal_length(b"* OK {x}\r\n"), None);
        assert_eq!(literal_length(b"* OK {12}"), None);
    }
}

//! A minimal SMTP client for the delivery scenario: EHLO once, then MAIL, RCPT, DATA per message.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::conn::Stream;

/// Why an SMTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The connection failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// A reply with another code than expected.
    #[error("expected {expected}, got: {got}")]
    Unexpected {
        /// The code expected.
        expected: u16,
        /// The reply's last line.
        got: String,
    },
}

/// One SMTP connection, greeted and EHLO'd.
pub struct SmtpClient {
    stream: BufReader<Stream>,
    line: Vec<u8>,
    timeout: Duration,
}

impl SmtpClient {
    /// Reads the greeting and says EHLO.
    pub async fn open(stream: Stream, timeout: Duration) -> Result<Self, SmtpError> {
        let mut client = Self {
            stream: BufReader::with_capacity(4096, stream),
            line: Vec::with_capacity(256),
            timeout,
        };
        client.expect(220).await?;
        client.send(b"EHLO bench.example.net\r\n").await?;
        client.expect(250).await?;
        Ok(client)
    }

    /// Delivers one message: `content` must be dot-stuffed already and end with CRLF.
    pub async fn deliver(&mut self, rcpt: &str, content: &[u8]) -> Result<(), SmtpError> {
        self.send(b"MAIL FROM:<bench@example.net>\r\n").await?;
        self.expect(250).await?;
        self.send(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await?;
        self.expect(250).await?;
        self.send(b"DATA\r\n").await?;
        self.expect(354).await?;
        self.send(content).await?;
        self.send(b".\r\n").await?;
        self.expect(250).await
    }

    /// QUIT, without waiting long for the answer.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.expect(221).await;
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.stream.get_mut();
        stream.write_all(bytes).await?;
        // A TLS stream may otherwise keep the record it made.
        stream.flush().await?;
        Ok(())
    }

    /// Reads a whole (possibly multi-line) reply and checks its code.
    async fn expect(&mut self, expected: u16) -> Result<(), SmtpError> {
        loop {
            self.line.clear();
            let read = tokio::time::timeout(self.timeout, async {
                (&mut self.stream)
                    .take(4096)
                    .read_until(b'\n', &mut self.line)
                    .await
            })
            .await
            .map_err(|_| SmtpError::Timeout(self.timeout))??;
            if read == 0 {
                return Err(SmtpError::Closed);
            }
            // "250-…" continues, "250 …" (or a bare "250") ends the reply.
            if self.line.get(3).is_some_and(|&b| b == b'-') {
                continue;
            }
            let code = std::str::from_utf8(self.line.get(..3).unwrap_or_default())
                .ok()
                .and_then(|c| c.parse::<u16>().ok());
            if code == Some(expected) {
                return Ok(());
            }
            return Err(SmtpError::Unexpected {
                expected,
                got: String::from_utf8_lossy(&self.line).trim_end().to_owned(),
            });
        }
    }
}

/// A message of about `size` bytes: a few headers and 78-byte lines, none starting with a dot,
/// ending with CRLF (ready for DATA as it is).
pub fn message(size: usize) -> Vec<u8> {
    let mut out =
        b"From: bench@example.net\r\nTo: sink@example.com\r\nSubject: mailfront-bench\r\n\r\n"
            .to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    while out.len() < size {
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_ready_for_data() {
        for size in [0, 100, 10 * 1024] {
            let m = message(size);
            assert!(m.ends_with(b"\r\n"));
            assert!(
                m.len() >= size && m.len() < size.max(80) + 160,
                "{size}: {}",
                m.len()
            );
            assert!(!m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."));
        }
    }
}

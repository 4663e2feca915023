//! SMTP command lines (RFC 5321 §4.1, with ESMTP parameters), parsed without I/O.

use std::fmt;

use crate::quoted::find_unquoted;

/// Longest path (`<local@domain>`), RFC 5321 §4.5.3.1.3.
pub const MAX_PATH: usize = 256;

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `LHLO domain` (LMTP).
    Lhlo(String),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The reverse path (empty for the null sender `<>`).
        from: String,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path>`.
    Rcpt {
        /// The forward path.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The mechanism name as sent.
        mechanism: Vec<u8>,
        /// The initial response (base64 text), if any.
        initial: Option<Vec<u8>>,
    },
    /// `VRFY string`.
    Vrfy,
    /// `EXPN string`.
    Expn,
    /// `HELP [string]`.
    Help,
}

/// ESMTP parameters of MAIL FROM that mailfront understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=7BIT` or `BODY=8BITMIME` (RFC 6152).
    pub body: Option<Body>,
}

/// The `BODY=` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// 7BIT.
    SevenBit,
    /// 8BITMIME.
    EightBitMime,
}

impl fmt::Display for MailParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(body) = self.body {
            f.write_str(match body {
                Body::SevenBit => " BODY=7BIT",
                Body::EightBitMime => " BODY=8BITMIME",
            })?;
        }
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        Ok(())
    }
}

/// Why a command line was not accepted; each maps to one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Unknown verb: `500 5.5.2`.
    #[error("unrecognized command")]
    Unrecognized,
    /// Bad arguments: `501 5.5.4`.
    #[error("syntax error in parameters")]
    Syntax,
    /// Bad address: `501 5.1.3` (RCPT) or `501 5.1.7` (MAIL).
    #[error("bad address syntax")]
    Address,
    /// An ESMTP parameter we do not offer: `555 5.5.4`.
    #[error("unsupported parameter")]
    Parameter,
}

fn split_verb(line: &[u8]) -> (Vec<u8>, &[u8]) {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (verb, rest) = line.split_at(end);
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    (verb.to_ascii_uppercase(), rest)
}

fn text(bytes: &[u8]) -> Result<&str, CommandError> {
    std::str::from_utf8(bytes).map_err(|_| CommandError::Syntax)
}

fn domain(argument: &[u8]) -> Result<String, CommandError> {
    let name = text(argument)?.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control() || c == ' ') {
        return Err(CommandError::Syntax);
    }
    Ok(name.to_owned())
}

/// Parses `<path>` at the start of `rest`; returns the address and what follows.
fn path(rest: &str) -> Result<(String, &str), CommandError> {
    // Be lenient about a space after the colon (`MAIL FROM: <a@b>`), as most servers are.
    let rest = rest.trim_start();
    let inner_start = rest.strip_prefix('<').ok_or(CommandError::Address)?;
    // The address may contain a quoted local part with `>` inside; find the closing bracket
    // outside quotes.
    let close = find_unquoted(inner_start, '>').ok_or(CommandError::Address)?;
    let (inner, after) = inner_start.split_at(close);
    let after = after.strip_prefix('>').unwrap_or(after);
    // A source route (`@a,@b:user@domain`) is obsolete and ignored (RFC 5321 §4.1.1.3).
    // Only a well-formed route is stripped: its hops are domain names (found by fuzzing: a
    // quote inside a "route" changed how the rest of the line was read).
    let address = match inner.strip_prefix('@') {
        Some(route) => {
            let (route, address) = route.split_once(':').ok_or(CommandError::Address)?;
            let hops_valid = route.split(',').enumerate().all(|(i, hop)| {
                let hop = if i == 0 {
                    Some(hop)
                } else {
                    hop.strip_prefix('@')
                };
                hop.is_some_and(|h| {
                    !h.is_empty()
                        && h.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']')
                        })
                })
            });
            if !hops_valid {
                return Err(CommandError::Address);
            }
            address
        }
        None => inner,
    };
    if address.len() > MAX_PATH || address.chars().any(|c| c.is_control()) {
        return Err(CommandError::Address);
    }
    if !address.is_empty() {
        let (local, domain) = address.rsplit_once('@').ok_or(CommandError::Address)?;
        if local.is_empty() || domain.is_empty() || domain.contains(' ') {
            return Err(CommandError::Address);
        }
        if local.contains(' ') && !(local.starts_with('"') && local.ends_with('"')) {
            return Err(CommandError::Address);
        }
    }
    Ok((address.to_owned(), after))
}

fn mail_params(rest: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            params.size = Some(value.parse().map_err(|_| CommandError::Syntax)?);
        } else if key.eq_ignore_ascii_case("BODY") {
            params.body = Some(if value.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if value.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(CommandError::Parameter);
            });
        } else if key.eq_ignore_ascii_case("AUTH") {
            // RFC 4954 §5: the AUTH= parameter may be ignored by a server that does not trust it.
        } else {
            return Err(CommandError::Parameter);
        }
    }
    Ok(params)
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let (verb, rest) = split_verb(line);
    let no_args = |command: Command| {
        if rest.iter().all(|&b| b == b' ') {
            Ok(command)
        } else {
            Err(CommandError::Syntax)
        }
    };
    match verb.as_slice() {
        b"EHLO" => Ok(Command::Ehlo(domain(rest)?)),
        b"HELO" => Ok(Command::Helo(domain(rest)?)),
        b"LHLO" => Ok(Command::Lhlo(domain(rest)?)),
        b"MAIL" => {
            let rest = text(rest)?;
            let prefix = rest.get(..5).ok_or(CommandError::Syntax)?;
            if !prefix.eq_ignore_ascii_case("FROM:") {
                return Err(CommandError::Syntax);
            }
            let (from, params) = path(rest.get(5..).unwrap_or_default())?;
            Ok(Command::Mail {
                from,
                params: mail_params(params)?,
            })
        }
        b"RCPT" => {
            let rest = text(rest)?;
            let prefix = rest.get(..3).ok_or(CommandError::Syntax)?;
            if !prefix.eq_ignore_ascii_case("TO:") {
                return Err(CommandError::Syntax);
            }
            let (to, params) = path(rest.get(3..).unwrap_or_default())?;
            if to.is_empty() {
                return Err(CommandError::Address);
            }
            // No RCPT parameters are offered (no DSN).
            if !params.trim().is_empty() {
                return Err(CommandError::Parameter);
            }
            Ok(Command::Rcpt { to })
        }
        b"DATA" => no_args(Command::Data),
        b"BDAT" => {
            let rest = text(rest)?;
            let mut words = rest.split(' ').filter(|w| !w.is_empty());
            let size = words
                .next()
                .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|w| w.parse().ok())
                .ok_or(CommandError::Syntax)?;
            let last = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("LAST") => true,
                Some(_) => return Err(CommandError::Syntax),
            };
            if words.next().is_some() {
                return Err(CommandError::Syntax);
            }
            Ok(Command::Bdat { size, last })
        }
        b"RSET" => no_args(Command::Rset),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => no_args(Command::Quit),
        b"STARTTLS" => no_args(Command::StartTls),
        b"AUTH" => {
            let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
            let mechanism = words.next().ok_or(CommandError::Syntax)?.to_vec();
            let initial = words.next().map(<[u8]>::to_vec);
            if words.next().is_some() {
                return Err(CommandError::Syntax);
            }
            Ok(Command::Auth { mechanism, initial })
        }
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" => Ok(Command::Expn),
        b"HELP" => Ok(Command::Help),
        _ => Err(CommandError::Unrecognized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let ok = |line: &str| parse(line.as_bytes()).unwrap();
        assert_eq!(
            ok("EHLO client.example.org"),
            Command::Ehlo("client.example.org".into())
        );
        assert_eq!(ok("helo x"), Command::Helo("x".into()));
        assert_eq!(
            ok("MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME"),
            Command::Mail {
                from: "a@b.c".into(),
                params: MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime)
                }
            }
        );
        assert_eq!(
            ok("mail from: <>"),
            Command::Mail {
                from: String::new(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            ok("RCPT TO:<alice@example.com>"),
            Command::Rcpt {
                to: "alice@example.com".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay.net:alice@example.com>"),
            Command::Rcpt {
                to: "alice@example.com".into()
            }
        );
        assert_eq!(
            ok("RCPT TO:<@a.net,@[192.0.2.1]:alice@example.com>"),
            Command::Rcpt {
                to: "alice@example.com".into()
            }
        );
        // A "route" with a quote in it is not one (found by fuzzing).
        assert_eq!(
            parse(b"RCPT TO:<@\"$:$<:@qqq\"\"\"x.q>"),
            Err(CommandError::Address)
        );
        assert_eq!(parse(b"RCPT TO:<@:a@b>"), Err(CommandError::Address));
        assert_eq!(parse(b"RCPT TO:<@a,b:c@d>"), Err(CommandError::Address));
        assert_eq!(
            ok("RCPT TO:<\"a >b\"@example.com>"),
            Command::Rcpt {
                to: "\"a >b\"@example.com".into()
            }
        );
        assert_eq!(
            ok("BDAT 100 LAST"),
            Command::Bdat {
                size: 100,
                last: true
            }
        );
        assert_eq!(
            ok("BDAT 0"),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        assert_eq!(
            ok("AUTH PLAIN AGFAYgBj"),
            Command::Auth {
                mechanism: b"PLAIN".to_vec(),
                initial: Some(b"AGFAYgBj".to_vec())
            }
        );
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(
            MailParams {
                size: Some(5),
                body: Some(Body::SevenBit)
            }
            .to_string(),
            " BODY=7BIT SIZE=5"
        );
    }

    #[test]
    fn errors() {
        let err = |line: &[u8]| parse(line).unwrap_err();
        assert_eq!(err(b"FOO"), CommandError::Unrecognized);
        assert_eq!(err(b""), CommandError::Unrecognized);
        assert_eq!(err(b"EHLO"), CommandError::Syntax);
        assert_eq!(err(b"MAIL TO:<a@b>"), CommandError::Syntax);
        assert_eq!(err(b"MAIL FROM:a@b"), CommandError::Address);
        assert_eq!(err(b"MAIL FROM:<a@b"), CommandError::Address);
        assert_eq!(err(b"RCPT TO:<>"), CommandError::Address);
        assert_eq!(err(b"RCPT TO:<no-at-sign>"), CommandError::Address);
        assert_eq!(err(b"RCPT TO:<a\x01b@c>"), CommandError::Address);
        assert_eq!(err(b"RCPT TO:<a@b> NOTIFY=NEVER"), CommandError::Parameter);
        assert_eq!(err(b"MAIL FROM:<a@b> SIZE=big"), CommandError::Syntax);
        assert_eq!(
            err(b"MAIL FROM:<a@b> BODY=BINARYMIME"),
            CommandError::Parameter
        );
        assert_eq!(err(b"MAIL FROM:<a@b> RET=FULL"), CommandError::Parameter);
        assert_eq!(err(b"BDAT"), CommandError::Syntax);
        assert_eq!(err(b"BDAT -1"), CommandError::Syntax);
        assert_eq!(err(b"BDAT 99999999999999999999999"), CommandError::Syntax);
        assert_eq!(err(b"BDAT 1 FIRST"), CommandError::Syntax);
        assert_eq!(err(b"DATA now"), CommandError::Syntax);
        assert_eq!(err(b"MAIL FROM:<\xff@b>"), CommandError::Syntax);
        let long = format!("RCPT TO:<{}@b>", "a".repeat(300));
        assert_eq!(err(long.as_bytes()), CommandError::Address);
    }
}

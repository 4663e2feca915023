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
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The forward path.
        to: String,
        /// ESMTP parameters.
        params: RcptParams,
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
    /// `RET=FULL` or `RET=HDRS` (DSN, RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=` (DSN, RFC 3461 §4.4): the envelope's identifier, still xtext-encoded as sent.
    pub envid: Option<String>,
    /// `SMTPUTF8` (RFC 6531 §3.4): addresses and headers may be UTF-8.
    pub smtputf8: bool,
}

impl MailParams {
    /// Whether the client asked for delivery status notifications (RFC 3461) on MAIL.
    pub fn uses_dsn(&self) -> bool {
        self.ret.is_some() || self.envid.is_some()
    }
}

/// The `RET=` parameter (RFC 3461 §4.3): what a failure notice returns of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// Its headers only.
    Hdrs,
}

/// ESMTP parameters of RCPT TO that mailfront understands: those of DSN (RFC 3461).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461 §4.1): `NEVER`, or some of `SUCCESS`, `FAILURE`, `DELAY` joined by
    /// commas; upper case.
    pub notify: Option<String>,
    /// `ORCPT=` (RFC 3461 §4.2): `addr-type;xtext`, as sent.
    pub orcpt: Option<String>,
}

impl fmt::Display for RcptParams {
    /// The parameters as they follow the path on a RCPT line (each with a leading space).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(notify) = &self.notify {
            write!(f, " NOTIFY={notify}")?;
        }
        if let Some(orcpt) = &self.orcpt {
            write!(f, " ORCPT={orcpt}")?;
        }
        Ok(())
    }
}

impl RcptParams {
    /// Whether the client asked for delivery status notifications for this recipient.
    pub fn uses_dsn(&self) -> bool {
        self.notify.is_some() || self.orcpt.is_some()
    }
}

/// Longest `ENVID` value (RFC 3461 §4.4: 100 characters).
const MAX_ENVID: usize = 100;
/// Longest `ORCPT` value (RFC 3461 §4.2: 500 characters).
const MAX_ORCPT: usize = 500;

/// Whether `value` is xtext (RFC 3461 §4: printable ASCII but `+` and `=`, with `+XX` for any
/// octet), or under SMTPUTF8 also UTF-8 (RFC 6533 §3: utf-8-xtext).
fn is_xtext(value: &str, utf8: bool) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                let hex = |j: usize| {
                    bytes
                        .get(j)
                        .is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                };
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b != b'=' => i += 1,
            0x80.. if utf8 => i += 1,
            _ => return false,
        }
    }
    !value.is_empty()
}

/// A `NOTIFY=` value in canonical form (RFC 3461 §4.1), or `None` if it is not one.
fn notify_value(value: &str) -> Option<String> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Some("NEVER".to_owned());
    }
    let mut seen: Vec<&str> = Vec::new();
    for word in value.split(',') {
        let word = ["SUCCESS", "FAILURE", "DELAY"]
            .into_iter()
            .find(|w| w.eq_ignore_ascii_case(word))?;
        if seen.contains(&word) {
            return None;
        }
        seen.push(word);
    }
    Some(seen.join(","))
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
        if let Some(ret) = self.ret {
            f.write_str(match ret {
                Ret::Full => " RET=FULL",
                Ret::Hdrs => " RET=HDRS",
            })?;
        }
        if let Some(envid) = &self.envid {
            write!(f, " ENVID={envid}")?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
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
        } else if key.eq_ignore_ascii_case("RET") && params.ret.is_none() {
            params.ret = Some(if value.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if value.eq_ignore_ascii_case("HDRS") {
                Ret::Hdrs
            } else {
                return Err(CommandError::Syntax);
            });
        } else if key.eq_ignore_ascii_case("ENVID") && params.envid.is_none() {
            // Checked once SMTPUTF8 (which may follow) is known.
            params.envid = Some(value.to_owned());
        } else if word.eq_ignore_ascii_case("SMTPUTF8") {
            params.smtputf8 = true;
        } else {
            return Err(CommandError::Parameter);
        }
    }
    if let Some(envid) = &params.envid
        && (envid.len() > MAX_ENVID || !is_xtext(envid, params.smtputf8))
    {
        return Err(CommandError::Syntax);
    }
    Ok(params)
}

/// RCPT parameters. Whether SMTPUTF8 is in force is the transaction's business: an ORCPT is
/// allowed UTF-8 here, and the receiver refuses non-ASCII without SMTPUTF8.
fn rcpt_params(rest: &str) -> Result<RcptParams, CommandError> {
    let mut params = RcptParams::default();
    for word in rest.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        if key.eq_ignore_ascii_case("NOTIFY") && params.notify.is_none() {
            params.notify = Some(notify_value(value).ok_or(CommandError::Syntax)?);
        } else if key.eq_ignore_ascii_case("ORCPT") && params.orcpt.is_none() {
            let valid = value.len() <= MAX_ORCPT
                && value.split_once(';').is_some_and(|(kind, address)| {
                    !kind.is_empty()
                        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && is_xtext(address, true)
                });
            if !valid {
                return Err(CommandError::Syntax);
            }
            params.orcpt = Some(value.to_owned());
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
            Ok(Command::Rcpt {
                to,
                params: rcpt_params(params)?,
            })
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
                    body: Some(Body::EightBitMime),
                    ..MailParams::default()
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
                to: "alice@example.com".into(),
                params: RcptParams::default(),
            }
        );
        assert_eq!(
            ok("RCPT TO:<@relay.net:alice@example.com>"),
            Command::Rcpt {
                to: "alice@example.com".into(),
                params: RcptParams::default(),
            }
        );
        assert_eq!(
            ok("RCPT TO:<@a.net,@[192.0.2.1]:alice@example.com>"),
            Command::Rcpt {
                to: "alice@example.com".into(),
                params: RcptParams::default(),
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
                to: "\"a >b\"@example.com".into(),
                params: RcptParams::default(),
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
                body: Some(Body::SevenBit),
                ..MailParams::default()
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
        assert_eq!(err(b"RCPT TO:<a@b> FOO=BAR"), CommandError::Parameter);
        assert_eq!(err(b"MAIL FROM:<a@b> SIZE=big"), CommandError::Syntax);
        assert_eq!(
            err(b"MAIL FROM:<a@b> BODY=BINARYMIME"),
            CommandError::Parameter
        );
        assert_eq!(
            err(b"MAIL FROM:<a@b> MT-PRIORITY=3"),
            CommandError::Parameter
        );
        assert_eq!(err(b"BDAT"), CommandError::Syntax);
        assert_eq!(err(b"BDAT -1"), CommandError::Syntax);
        assert_eq!(err(b"BDAT 99999999999999999999999"), CommandError::Syntax);
        assert_eq!(err(b"BDAT 1 FIRST"), CommandError::Syntax);
        assert_eq!(err(b"DATA now"), CommandError::Syntax);
        assert_eq!(err(b"MAIL FROM:<\xff@b>"), CommandError::Syntax);
        let long = format!("RCPT TO:<{}@b>", "a".repeat(300));
        assert_eq!(err(long.as_bytes()), CommandError::Address);
    }

    #[test]
    fn dsn_and_smtputf8_parameters() {
        let ok = |line: &str| parse(line.as_bytes()).unwrap();
        assert_eq!(
            ok("MAIL FROM:<a@b.c> RET=hdrs ENVID=QQ+2B314 SMTPUTF8"),
            Command::Mail {
                from: "a@b.c".into(),
                params: MailParams {
                    ret: Some(Ret::Hdrs),
                    envid: Some("QQ+2B314".into()),
                    smtputf8: true,
                    ..MailParams::default()
                }
            }
        );
        assert_eq!(
            ok("RCPT TO:<x@y.z> notify=failure,Delay ORCPT=rfc822;x+40y.z"),
            Command::Rcpt {
                to: "x@y.z".into(),
                params: RcptParams {
                    notify: Some("FAILURE,DELAY".into()),
                    orcpt: Some("rfc822;x+40y.z".into()),
                }
            }
        );
        assert_eq!(
            MailParams {
                ret: Some(Ret::Full),
                envid: Some("e1".into()),
                smtputf8: true,
                ..MailParams::default()
            }
            .to_string(),
            " RET=FULL ENVID=e1 SMTPUTF8"
        );
        let err = |line: &str| parse(line.as_bytes()).unwrap_err();
        let cases = [
            ("MAIL FROM:<a@b> RET=ALL", CommandError::Syntax),
            ("MAIL FROM:<a@b> RET=FULL RET=HDRS", CommandError::Parameter),
            ("MAIL FROM:<a@b> ENVID=a=b", CommandError::Syntax),
            ("MAIL FROM:<a@b> ENVID=a+zz", CommandError::Syntax),
            ("MAIL FROM:<a@b> ENVID=", CommandError::Syntax),
            ("MAIL FROM:<a@b> ENVID=\u{e9}", CommandError::Syntax),
            ("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", CommandError::Syntax),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,SUCCESS", CommandError::Syntax),
            ("RCPT TO:<a@b> NOTIFY=", CommandError::Syntax),
            ("RCPT TO:<a@b> ORCPT=a@b", CommandError::Syntax),
            ("RCPT TO:<a@b> ORCPT=;a@b", CommandError::Syntax),
            (
                "RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER",
                CommandError::Parameter,
            ),
        ];
        for (line, error) in cases {
            assert_eq!(err(line), error, "{line}");
        }
        // Under SMTPUTF8 an ENVID may be UTF-8 (RFC 6533).
        assert!(parse("MAIL FROM:<a@b> SMTPUTF8 ENVID=\u{e9}t\u{e9}".as_bytes()).is_ok());
        let long = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101));
        assert_eq!(err(&long), CommandError::Syntax);
    }
}

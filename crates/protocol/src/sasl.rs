//! The SASL mechanisms mailfront accepts from clients and uses towards backends: PLAIN
//! (RFC 4616) and the non-standard but ubiquitous LOGIN (draft-murchison-sasl-login); from
//! clients also the OAuth bearer-token mechanisms OAUTHBEARER (RFC 7628) and XOAUTH2, whose
//! messages [`crate::bearer`] reads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mailfront_model::Secret;

/// A SASL exchange that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The response is not valid base64.
    #[error("invalid base64")]
    Base64,
    /// A PLAIN message without the two NUL separators, or with an empty user name.
    #[error("malformed PLAIN message")]
    MalformedPlain,
    /// A user name that is not UTF-8 or contains control characters.
    #[error("invalid user name")]
    InvalidName,
    /// An OAUTHBEARER or XOAUTH2 message that is not one, or whose token is not a bearer
    /// token ([`crate::bearer`]).
    #[error("malformed bearer token message")]
    MalformedBearer,
}

/// Decodes a base64 SASL response. A lone `=` is an empty response (RFC 4959, SASL-IR).
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, SaslError> {
    if text == b"=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| SaslError::Base64)
}

/// Encodes bytes as base64 for a SASL exchange (an empty string as `=`).
pub fn encode_base64(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "=".to_owned();
    }
    STANDARD.encode(bytes)
}

/// A user name as typed by a client: UTF-8, without control characters (no CR, LF or NUL can
/// reach a backend command or a log line through it).
pub fn user_name(bytes: &[u8]) -> Result<String, SaslError> {
    let name = std::str::from_utf8(bytes).map_err(|_| SaslError::InvalidName)?;
    if name.chars().any(char::is_control) {
        return Err(SaslError::InvalidName);
    }
    Ok(name.to_owned())
}

/// A decoded PLAIN message.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    /// The authorization identity (who to act as), if given.
    pub authzid: Option<String>,
    /// The authentication identity (whose password this is).
    pub authcid: String,
    /// The password.
    pub password: Secret<Vec<u8>>,
}

/// Decodes the (already base64-decoded) PLAIN message `authzid NUL authcid NUL password`.
pub fn decode_plain(message: &[u8]) -> Result<Plain, SaslError> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedPlain);
    };
    if authcid.is_empty() || password.contains(&0) {
        return Err(SaslError::MalformedPlain);
    }
    let authzid = if authzid.is_empty() {
        None
    } else {
        Some(user_name(authzid)?)
    };
    Ok(Plain {
        authzid,
        authcid: user_name(authcid)?,
        password: Secret::new(password.to_vec()),
    })
}

/// Encodes a PLAIN message and its base64 form.
pub fn encode_plain(authzid: &str, authcid: &str, password: &[u8]) -> Secret<String> {
    let mut message = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    message.extend_from_slice(authzid.as_bytes());
    message.push(0);
    message.extend_from_slice(authcid.as_bytes());
    message.push(0);
    message.extend_from_slice(password);
    let encoded = STANDARD.encode(&message);
    zeroize_vec(&mut message);
    Secret::new(encoded)
}

fn zeroize_vec(bytes: &mut Vec<u8>) {
    // Overwrite before freeing; a plain loop is enough for this purpose.
    bytes.iter_mut().for_each(|b| *b = 0);
    bytes.clear();
}

/// A mechanism clients may use with mailfront.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (draft-murchison-sasl-login).
    Login,
    /// OAUTHBEARER (RFC 7628): an OAuth 2.0 access token.
    OAuthBearer,
    /// XOAUTH2 (Google's): an OAuth 2.0 access token.
    XOAuth2,
}

impl Mechanism {
    /// The mechanism named `name` (case-insensitive), if we offer it.
    pub fn from_name(name: &[u8]) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Mechanism::Login)
        } else if name.eq_ignore_ascii_case(b"OAUTHBEARER") {
            Some(Mechanism::OAuthBearer)
        } else if name.eq_ignore_ascii_case(b"XOAUTH2") {
            Some(Mechanism::XOAuth2)
        } else {
            None
        }
    }

    /// The name as written in the log and in capability lists.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// Whether the mechanism carries an OAuth access token rather than a password.
    pub fn is_token(self) -> bool {
        matches!(self, Mechanism::OAuthBearer | Mechanism::XOAuth2)
    }
}

/// What a server-side SASL exchange needs next, or how it ended.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (base64; may be empty) and pass the client's next line to
    /// [`Exchange::respond`].
    Challenge(&'static str),
    /// The exchange is complete.
    Done(crate::Credentials),
    /// The client cancelled with `*`.
    Cancelled,
    /// The client's response is not valid base64.
    BadBase64,
    /// The decoded response is unusable (malformed PLAIN, a user name with control characters):
    /// answer as for bad credentials.
    Malformed,
}

#[derive(Debug)]
enum ExchangeState {
    PlainResponse,
    /// The one OAUTHBEARER or XOAUTH2 message.
    BearerResponse(Mechanism),
    LoginUser,
    LoginPassword(String),
    Finished,
}

/// The server side of a PLAIN, LOGIN, OAUTHBEARER or XOAUTH2 exchange, for every protocol: each decides only how a
/// challenge and a result are written on its wire.
#[derive(Debug)]
pub struct Exchange {
    state: ExchangeState,
}

impl Exchange {
    /// Starts an exchange. `initial` is the decoded initial response (SASL-IR, RFC 4959), if the
    /// client sent one.
    pub fn start(mechanism: Mechanism, initial: Option<Vec<u8>>) -> (Exchange, Step) {
        let mut exchange = Exchange {
            state: match mechanism {
                Mechanism::Plain => ExchangeState::PlainResponse,
                Mechanism::Login => ExchangeState::LoginUser,
                Mechanism::OAuthBearer | Mechanism::XOAuth2 => {
                    ExchangeState::BearerResponse(mechanism)
                }
            },
        };
        let step = match initial {
            Some(response) => exchange.decoded(response),
            None => match mechanism {
                Mechanism::Login => Step::Challenge(LOGIN_USERNAME_CHALLENGE),
                Mechanism::Plain | Mechanism::OAuthBearer | Mechanism::XOAuth2 => {
                    Step::Challenge("")
                }
            },
        };
        (exchange, step)
    }

    /// The client's response line (base64, or `*` to cancel).
    pub fn respond(&mut self, line: &[u8]) -> Step {
        if line == b"*" {
            self.state = ExchangeState::Finished;
            return Step::Cancelled;
        }
        match decode_base64(line) {
            Ok(decoded) => self.decoded(decoded),
            Err(_) => {
                self.state = ExchangeState::Finished;
                Step::BadBase64
            }
        }
    }

    fn decoded(&mut self, response: Vec<u8>) -> Step {
        match std::mem::replace(&mut self.state, ExchangeState::Finished) {
            ExchangeState::PlainResponse => match decode_plain(&response) {
                Ok(plain) => Step::Done(crate::Credentials {
                    authcid: plain.authcid,
                    authzid: plain.authzid,
                    password: plain.password,
                    mechanism: "PLAIN",
                }),
                Err(_) => Step::Malformed,
            },
            ExchangeState::BearerResponse(mechanism) => {
                let bearer = match mechanism {
                    Mechanism::XOAuth2 => crate::bearer::decode_xoauth2(&response),
                    _ => crate::bearer::decode_oauthbearer(&response),
                };
                match bearer {
                    // The token names the user; the name the client gave is only a claim.
                    Ok(bearer) => Step::Done(crate::Credentials {
                        authcid: bearer.user.unwrap_or_default(),
                        authzid: None,
                        password: bearer.token,
                        mechanism: mechanism.name(),
                    }),
                    Err(_) => Step::Malformed,
                }
            }
            ExchangeState::LoginUser => match user_name(&response) {
                Ok(user) => {
                    self.state = ExchangeState::LoginPassword(user);
                    Step::Challenge(LOGIN_PASSWORD_CHALLENGE)
                }
                Err(_) => Step::Malformed,
            },
            ExchangeState::LoginPassword(user) => Step::Done(crate::Credentials {
                authcid: user,
                authzid: None,
                password: Secret::new(response),
                mechanism: "LOGIN",
            }),
            ExchangeState::Finished => Step::Malformed,
        }
    }
}

/// The LOGIN mechanism's server challenge for the user name, base64 of `Username:`.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The LOGIN mechanism's server challenge for the password, base64 of `Password:`.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges() {
        let (_, step) = Exchange::start(Mechanism::Plain, Some(b"\0alice\0pw".to_vec()));
        assert!(
            matches!(step, Step::Done(c) if c.authcid == "alice" && c.password.expose() == b"pw")
        );

        let (mut ex, step) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(step, Step::Challenge("")));
        assert!(matches!(ex.respond(b"AGFsaWNlAHB3"), Step::Done(c) if c.mechanism == "PLAIN"));

        let (mut ex, step) = Exchange::start(Mechanism::Login, None);
        assert!(matches!(step, Step::Challenge(LOGIN_USERNAME_CHALLENGE)));
        assert!(matches!(
            ex.respond(b"YWxpY2U="),
            Step::Challenge(LOGIN_PASSWORD_CHALLENGE)
        ));
        assert!(
            matches!(ex.respond(b"cHc="), Step::Done(c) if c.authcid == "alice" && c.mechanism == "LOGIN")
        );

        let (mut ex, _) = Exchange::start(Mechanism::Login, Some(b"alice".to_vec()));
        assert!(matches!(ex.respond(b"cHc="), Step::Done(_)));

        let (mut ex, _) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(ex.respond(b"*"), Step::Cancelled));
        let (mut ex, _) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(ex.respond(b"!!"), Step::BadBase64));
        let (mut ex, _) = Exchange::start(Mechanism::Plain, None);
        assert!(matches!(ex.respond(b"YWxpY2U="), Step::Malformed));
        let (_, step) = Exchange::start(Mechanism::Login, Some(b"al\nice".to_vec()));
        assert!(matches!(step, Step::Malformed));
        assert_eq!(Mechanism::from_name(b"plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name(b"CRAM-MD5"), None);
    }

    #[test]
    fn plain_round_trip() {
        let encoded = encode_plain("", "alice@example.com", b"pw");
        let decoded = decode_plain(&decode_base64(encoded.expose().as_bytes()).unwrap()).unwrap();
        assert_eq!(decoded.authzid, None);
        assert_eq!(decoded.authcid, "alice@example.com");
        assert_eq!(decoded.password.expose(), b"pw");
    }

    #[test]
    fn plain_with_authzid() {
        let decoded = decode_plain(b"bob\0alice\0pw").unwrap();
        assert_eq!(decoded.authzid.as_deref(), Some("bob"));
        assert_eq!(decoded.authcid, "alice");
    }

    #[test]
    fn malformed_plain() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0\0pw",
            b"\0alice\0pw\0x",
            b"\0al\rice\0pw",
            b"\0\xff\xfe\0pw",
            b"\x01\0alice\0pw",
        ] {
            assert!(decode_plain(bad).is_err(), "{bad:?}");
        }
        // An empty password is well-formed (and simply will not verify).
        assert!(decode_plain(b"\0alice\0").is_ok());
    }

    #[test]
    fn base64_edges() {
        assert_eq!(decode_base64(b"="), Ok(vec![]));
        assert_eq!(decode_base64(b"YQ=="), Ok(b"a".to_vec()));
        assert_eq!(decode_base64(b"YQ"), Err(SaslError::Base64));
        assert_eq!(decode_base64(b"Y Q=="), Err(SaslError::Base64));
        assert_eq!(decode_base64(b"*"), Err(SaslError::Base64));
        assert_eq!(encode_base64(b""), "=");
        assert_eq!(
            decode_base64(LOGIN_USERNAME_CHALLENGE.as_bytes()),
            Ok(b"Username:".to_vec())
        );
        assert_eq!(
            decode_base64(LOGIN_PASSWORD_CHALLENGE.as_bytes()),
            Ok(b"Password:".to_vec())
        );
    }
}

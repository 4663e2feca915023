//! OAuth 2.0 bearer tokens in SASL, sans I/O: OAUTHBEARER (RFC 7628) and Google's XOAUTH2, the
//! two mechanisms mail clients use to present an access token instead of a password.
//!
//! Both are one client message (usually the initial response). On a refused token the server
//! does not fail at once: it sends an error challenge (a JSON object, [`error_challenge`]), the
//! client answers with a dummy response (`%x01` for OAUTHBEARER, RFC 7628 §3.2.3; an empty one
//! for XOAUTH2), and only then does the server fail the exchange. The front ends run that dance;
//! this module reads the messages and writes the challenge.

use mailfront_model::Secret;

use crate::sasl::{SaslError, user_name};

/// Longest token accepted (a JWT with a few claims is 1–2 KiB; providers stay far below this).
pub const MAX_TOKEN: usize = 16 * 1024;

/// The separator of OAUTHBEARER's key-value pairs and of XOAUTH2's fields.
const KVSEP: u8 = 0x01;

/// A token as a client presented it.
#[derive(Debug, PartialEq, Eq)]
pub struct Bearer {
    /// Who the client says it is (OAUTHBEARER's GS2 `a=`, XOAUTH2's `user=`), if it said; the
    /// token decides who it really is.
    pub user: Option<String>,
    /// The access token (the text after `Bearer `).
    pub token: Secret<Vec<u8>>,
}

/// Reads an OAUTHBEARER client response (RFC 7628 §3.1): `n,a=<user>,` (or `n,,`), then
/// `%x01`-separated `key=value` pairs (`host`, `port`, `auth=Bearer <token>`), ending in
/// `%x01%x01`.
pub fn decode_oauthbearer(message: &[u8]) -> Result<Bearer, SaslError> {
    // GS2 header: channel binding flag ("n" or "y"; "p=" is refused: no channel binding here),
    // then the authorization identity, each followed by a comma.
    let rest = message
        .strip_prefix(b"n,")
        .or_else(|| message.strip_prefix(b"y,"))
        .ok_or(SaslError::MalformedBearer)?;
    let (authzid, rest) = split_once(rest, b',').ok_or(SaslError::MalformedBearer)?;
    let user = match authzid {
        [] => None,
        [b'a', b'=', name @ ..] => Some(gs2_name(name)?),
        _ => return Err(SaslError::MalformedBearer),
    };
    let pairs = rest
        .strip_prefix(&[KVSEP])
        .and_then(|r| r.strip_suffix(&[KVSEP, KVSEP]))
        .ok_or(SaslError::MalformedBearer)?;
    let mut token = None;
    for pair in pairs.split(|&b| b == KVSEP) {
        let (key, value) = split_once(pair, b'=').ok_or(SaslError::MalformedBearer)?;
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
            return Err(SaslError::MalformedBearer);
        }
        if key == b"auth" {
            if token.is_some() {
                return Err(SaslError::MalformedBearer);
            }
            token = Some(bearer_token(value)?);
        }
        // host, port and extensions are informative (RFC 7628 §3.1): not checked.
    }
    Ok(Bearer {
        user,
        token: token.ok_or(SaslError::MalformedBearer)?,
    })
}

/// Reads an XOAUTH2 client response: `user=<user>%x01auth=Bearer <token>%x01%x01`.
pub fn decode_xoauth2(message: &[u8]) -> Result<Bearer, SaslError> {
    let fields = message
        .strip_suffix(&[KVSEP, KVSEP])
        .ok_or(SaslError::MalformedBearer)?;
    let mut parts = fields.split(|&b| b == KVSEP);
    let (Some(user), Some(auth), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SaslError::MalformedBearer);
    };
    let user = user
        .strip_prefix(b"user=")
        .ok_or(SaslError::MalformedBearer)?;
    let auth = auth
        .strip_prefix(b"auth=")
        .ok_or(SaslError::MalformedBearer)?;
    Ok(Bearer {
        user: if user.is_empty() {
            None
        } else {
            Some(user_name(user)?)
        },
        token: bearer_token(auth)?,
    })
}

/// `Bearer <token>` (the scheme in any case, RFC 6750 §2.1): the token, which must be b64token
/// characters (RFC 6750 §2.1) and at most [`MAX_TOKEN`] bytes.
fn bearer_token(value: &[u8]) -> Result<Secret<Vec<u8>>, SaslError> {
    let scheme = value.get(..7).ok_or(SaslError::MalformedBearer)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(SaslError::MalformedBearer);
    }
    let token = value.get(7..).unwrap_or_default();
    let b64token = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    // b64token: token characters, then any `=` padding, and at least one character first.
    let body = token
        .iter()
        .rposition(|&b| b != b'=')
        .and_then(|last| token.get(..=last))
        .unwrap_or_default();
    if body.is_empty() || token.len() > MAX_TOKEN || !body.iter().all(b64token) {
        return Err(SaslError::MalformedBearer);
    }
    Ok(Secret::new(token.to_vec()))
}

/// `bytes` before and after the first `separator`.
fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((bytes.get(..at)?, bytes.get(at + 1..)?))
}

/// A GS2 `saslname` (RFC 5801 §4): `=2C` for `,` and `=3D` for `=`, nothing else escaped.
fn gs2_name(name: &[u8]) -> Result<String, SaslError> {
    let mut out = Vec::with_capacity(name.len());
    let mut rest = name;
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'=' => {
                let (escaped, tail) = match tail {
                    [b'2', b'C', tail @ ..] => (b',', tail),
                    [b'3', b'D', tail @ ..] => (b'=', tail),
                    _ => return Err(SaslError::MalformedBearer),
                };
                out.push(escaped);
                rest = tail;
            }
            b',' => return Err(SaslError::MalformedBearer),
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    if out.is_empty() {
        return Err(SaslError::MalformedBearer);
    }
    user_name(&out)
}

/// The error challenge of a refused token (RFC 7628 §3.2.2): `{"status":"invalid_token",
/// "scope":"…","openid-configuration":"…"}` — the status, the scope the client should ask for,
/// and where the provider's discovery document is, so that a client can get a new token.
/// Returned as JSON text; the front end base64-encodes it into its challenge. Values are
/// escaped as JSON strings.
pub fn error_challenge(status: &str, scope: Option<&str>, configuration: Option<&str>) -> String {
    let mut json = format!("{{\"status\":{}", json_string(status));
    if let Some(scope) = scope {
        json.push_str(&format!(",\"scope\":{}", json_string(scope)));
    }
    if let Some(configuration) = configuration {
        json.push_str(&format!(
            ",\"openid-configuration\":{}",
            json_string(configuration)
        ));
    }
    json.push('}');
    json
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a response is the client's dummy answer to an error challenge: `%x01` (OAUTHBEARER,
/// RFC 7628 §3.2.3) or empty (XOAUTH2). Anything else there is a protocol error; the exchange
/// fails either way.
pub fn is_dummy_response(response: &[u8]) -> bool {
    response.is_empty() || response == [KVSEP]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

    fn ok(bearer: Result<Bearer, SaslError>) -> (Option<String>, String) {
        let bearer = bearer.unwrap();
        (
            bearer.user,
            String::from_utf8(bearer.token.expose().clone()).unwrap(),
        )
    }

    #[test]
    fn oauthbearer_messages() {
        let message = format!(
            "n,a=alice@example.com,\x01host=mail.example.com\x01port=993\x01auth=Bearer {TOKEN}\x01\x01"
        );
        assert_eq!(
            ok(decode_oauthbearer(message.as_bytes())),
            (Some("alice@example.com".into()), TOKEN.into())
        );
        let minimal = format!("n,,\x01auth=bearer {TOKEN}\x01\x01");
        assert_eq!(
            ok(decode_oauthbearer(minimal.as_bytes())),
            (None, TOKEN.into())
        );
        let escaped = format!("n,a=a=2Cb=3Dc@x,\x01auth=Bearer {TOKEN}\x01\x01");
        assert_eq!(
            ok(decode_oauthbearer(escaped.as_bytes())).0.as_deref(),
            Some("a,b=c@x")
        );
        for bad in [
            String::new(),
            format!("p=tls-unique,,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,a=alice\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,,\x01auth=Bearer {TOKEN}\x01"),
            format!("n,,auth=Bearer {TOKEN}\x01\x01"),
            "n,,\x01host=x\x01\x01".to_owned(),
            format!("n,,\x01auth=Basic {TOKEN}\x01\x01"),
            "n,,\x01auth=Bearer \x01\x01".to_owned(),
            "n,,\x01auth=Bearer a b\x01\x01".to_owned(),
            format!("n,,\x01auth=Bearer {TOKEN}\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,,\x01noequals\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,a=,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,a=x=41,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,a=al\ni,\x01auth=Bearer {TOKEN}\x01\x01"),
            format!("n,,\x01auth=Bearer {}\x01\x01", "a".repeat(MAX_TOKEN + 1)),
        ] {
            assert!(decode_oauthbearer(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn xoauth2_messages() {
        let message = format!("user=alice@example.com\x01auth=Bearer {TOKEN}\x01\x01");
        assert_eq!(
            ok(decode_xoauth2(message.as_bytes())),
            (Some("alice@example.com".into()), TOKEN.into())
        );
        // Padding is part of a b64token.
        let padded = "user=\x01auth=Bearer abc==\x01\x01";
        assert_eq!(
            ok(decode_xoauth2(padded.as_bytes())),
            (None, "abc==".into())
        );
        for bad in [
            "".to_owned(),
            format!("user=a\x01auth=Bearer {TOKEN}\x01"),
            format!("auth=Bearer {TOKEN}\x01\x01"),
            format!("user=a\x01auth=Bearer {TOKEN}\x01x=y\x01\x01"),
            format!("user=a\x01Bearer {TOKEN}\x01\x01"),
            "user=a\x01auth=Bearer ==\x01\x01".to_owned(),
            format!("user=a\x02b\x01auth=Bearer {TOKEN}\x01\x01"),
        ] {
            assert!(decode_xoauth2(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_error_challenge_is_json_and_the_dummy_answer_is_known() {
        assert_eq!(
            error_challenge(
                "invalid_token",
                Some("openid email imap"),
                Some("https://id.example.com/.well-known/openid-configuration")
            ),
            r#"{"status":"invalid_token","scope":"openid email imap","openid-configuration":"https://id.example.com/.well-known/openid-configuration"}"#
        );
        assert_eq!(
            error_challenge("a\"b\\c\n", None, None),
            r#"{"status":"a\"b\\c\u000a"}"#
        );
        assert!(is_dummy_response(b"\x01") && is_dummy_response(b""));
        assert!(!is_dummy_response(b"x"));
    }
}

//! The forms-login session, sealed with a key that every node of the array shares.
//!
//! This is the spec's trick for statelessness ("Session Affinity"): any node can open any
//! node's cookie, so the load balancer needs no affinity. A session is sealed with
//! XChaCha20-Poly1305 (random 192-bit nonces, so keys need no nonce bookkeeping) under the
//! newest key of the key file and opened with whichever listed key its key id names; removing a
//! key from the file retires every cookie sealed with it.
//!
//! Wire form: `base64url(version ‖ key id (u32 BE) ‖ nonce (24) ‖ ciphertext)`, where the
//! plaintext is `issued (u64 BE) ‖ expires (u64 BE) ‖ user (UTF-8)` and the associated data
//! names the purpose, so a token minted for one use cannot be replayed as another.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};
use mailfront_net::keyfile::Ciphers;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Sessions are small; anything longer than this is not one of ours.
const MAX_SEALED_LEN: usize = 4096;

/// What a sealed value is for (bound into the AEAD's associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The forms-login session cookie.
    Session,
    /// A bearer token (the same session, presented in `Authorization: Bearer`).
    Bearer,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"mailfront/session/v1",
            Purpose::Bearer => b"mailfront/bearer/v1",
        }
    }
}

/// A logged-in user, as sealed in a cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user's primary address.
    pub user: String,
    /// When the session was issued (seconds since the Unix epoch).
    pub issued: u64,
    /// When it expires (seconds since the Unix epoch).
    pub expires: u64,
}

impl Session {
    /// A session for `user` issued `now`, valid for `lifetime`.
    pub fn new(user: &str, now: SystemTime, lifetime: Duration) -> Self {
        let issued = unix(now);
        Self {
            user: user.to_owned(),
            issued,
            expires: issued.saturating_add(lifetime.as_secs()),
        }
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a sealed value was not accepted. Every case means "not logged in" to the client; the
/// distinction is for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not something we sealed (bad encoding, wrong version, too short or long).
    #[error("malformed")]
    Malformed,
    /// Sealed with a key that is not (or no longer) in the key file.
    #[error("unknown or retired key")]
    UnknownKey,
    /// Opening failed: altered, or sealed for another purpose.
    #[error("tampered")]
    Tampered,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

/// The keys of the key file: the newest (last) seals, every listed one opens.
///
/// ```toml
/// # mailfront cookie keys: shared by every node; the last one seals new cookies.
/// [[key]]
/// id = 1
/// secret = "base64 of 32 random bytes"   # mailfront cookie-key --id 1
/// ```
#[derive(Debug)]
pub struct CookieKeys {
    keys: Ciphers,
}

impl CookieKeys {
    /// Parses a key file's text. Errors name the key (`key[1].secret: …`) and never the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self {
            keys: Ciphers::parse(text)?,
        })
    }

    /// Reads and parses a key file.
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(Self {
            keys: Ciphers::load(path)?,
        })
    }

    /// A new key entry for the key file, with `id`.
    pub fn generate_entry(id: u32) -> String {
        mailfront_net::keyfile::generate_entry(id)
    }

    /// The ids, oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.ids()
    }

    /// Seals a session with the newest key.
    pub fn seal(&self, session: &Session, purpose: Purpose) -> String {
        let Some((id, cipher)) = self.keys.newest() else {
            // `parse` refuses an empty file; an empty value is simply never accepted.
            return String::new();
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut nonce[..]);
        let mut plaintext = Vec::with_capacity(16 + session.user.len());
        plaintext.extend_from_slice(&session.issued.to_be_bytes());
        plaintext.extend_from_slice(&session.expires.to_be_bytes());
        plaintext.extend_from_slice(session.user.as_bytes());
        let Ok(ciphertext) = cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: purpose.aad(),
            },
        ) else {
            return String::new();
        };
        let mut out = Vec::with_capacity(1 + 4 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed session and checks its expiry against `now`.
    pub fn open(
        &self,
        sealed: &str,
        purpose: Purpose,
        now: SystemTime,
    ) -> Result<Session, CookieError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(CookieError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| CookieError::Malformed)?;
        let (&version, rest) = raw.split_first().ok_or(CookieError::Malformed)?;
        if version != VERSION {
            return Err(CookieError::Malformed);
        }
        let (id, rest) = rest.split_at_checked(4).ok_or(CookieError::Malformed)?;
        let (nonce, ciphertext) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CookieError::Malformed)?;
        let id = u32::from_be_bytes(id.try_into().map_err(|_| CookieError::Malformed)?);
        let cipher = self.keys.get(id).ok_or(CookieError::UnknownKey)?;
        let plaintext = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.aad(),
                },
            )
            .map_err(|_| CookieError::Tampered)?;
        let (issued, rest) = plaintext
            .split_at_checked(8)
            .ok_or(CookieError::Malformed)?;
        let (expires, user) = rest.split_at_checked(8).ok_or(CookieError::Malformed)?;
        let issued = u64::from_be_bytes(issued.try_into().map_err(|_| CookieError::Malformed)?);
        let expires = u64::from_be_bytes(expires.try_into().map_err(|_| CookieError::Malformed)?);
        let user = String::from_utf8(user.to_vec()).map_err(|_| CookieError::Malformed)?;
        if unix(now) >= expires {
            return Err(CookieError::Expired);
        }
        Ok(Session {
            user,
            issued,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn keys(entries: &[(u32, u8)]) -> CookieKeys {
        let text: String = entries
            .iter()
            .map(|(id, fill)| {
                format!(
                    "[[key]]\nid = {id}\nsecret = \"{}\"\n",
                    STANDARD.encode([*fill; 32])
                )
            })
            .collect();
        CookieKeys::parse(&text).unwrap()
    }

    #[test]
    fn round_trip_and_rotation() {
        let now = SystemTime::now();
        let old = keys(&[(1, 1)]);
        let rotated = keys(&[(1, 1), (2, 2)]);
        let retired = keys(&[(2, 2)]);
        let session = Session::new("alice@example.com", now, Duration::from_secs(3600));

        let by_old = old.seal(&session, Purpose::Session);
        assert_eq!(
            rotated.open(&by_old, Purpose::Session, now),
            Ok(session.clone())
        );
        assert_eq!(
            retired.open(&by_old, Purpose::Session, now),
            Err(CookieError::UnknownKey)
        );

        let by_new = rotated.seal(&session, Purpose::Session);
        assert_eq!(
            retired.open(&by_new, Purpose::Session, now),
            Ok(session.clone())
        );
        // Two seals of the same session differ (random nonces).
        assert_ne!(rotated.seal(&session, Purpose::Session), by_new);
    }

    #[test]
    fn tampering_expiry_and_purpose() {
        let now = SystemTime::now();
        let k = keys(&[(7, 9)]);
        let session = Session::new("alice@example.com", now, Duration::from_secs(60));
        let sealed = k.seal(&session, Purpose::Session);
        // Flip one bit anywhere in the ciphertext part.
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            k.open(&URL_SAFE_NO_PAD.encode(&raw), Purpose::Session, now),
            Err(CookieError::Tampered)
        );
        assert_eq!(
            k.open(&sealed, Purpose::Bearer, now),
            Err(CookieError::Tampered)
        );
        assert_eq!(
            k.open(&sealed, Purpose::Session, now + Duration::from_secs(61)),
            Err(CookieError::Expired)
        );
        for garbage in ["", "x", "!!!", "AQAAAAc", &"A".repeat(5000)] {
            assert!(
                k.open(garbage, Purpose::Session, now).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn key_file_errors_name_the_key_and_hide_the_secret() {
        assert!(CookieKeys::parse("").unwrap_err().contains("key"));
        let short = CookieKeys::parse("[[key]]\nid = 1\nsecret = \"c2hvcnQ=\"\n").unwrap_err();
        assert!(
            short.starts_with("key[0].secret") && !short.contains("c2hvcnQ"),
            "{short}"
        );
        let twice = format!(
            "{}{}",
            CookieKeys::generate_entry(1),
            CookieKeys::generate_entry(1)
        );
        assert!(
            CookieKeys::parse(&twice)
                .unwrap_err()
                .starts_with("key[1].id")
        );
        let good = CookieKeys::parse(&format!(
            "{}{}",
            CookieKeys::generate_entry(1),
            CookieKeys::generate_entry(2)
        ))
        .unwrap();
        assert_eq!(good.ids(), vec![1, 2]);
        assert!(!format!("{good:?}").contains("secret"));
    }
}

//! The forms-login cookie (`mailfront_http::cookie::CookieKeys`): opening arbitrary tokens with
//! a fixed key set never panics and never yields an expired session; sealing a session built
//! from the input and opening it gives the same session back (or `Expired`), not with another
//! purpose, not with a key set lacking its key, and not after any single byte of it changed.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::Input;
use mailfront_http::cookie::{CookieError, CookieKeys, Purpose, Session};

const KEYS: &str = "[[key]]\nid = 1\nsecret = \"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\"\n\
                    [[key]]\nid = 7\nsecret = \"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\"\n";
const OTHER: &str = "[[key]]\nid = 1\nsecret = \"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\"\n";

fuzz_target!(|data: &[u8]| {
    let keys = CookieKeys::parse(KEYS).expect("keys");
    let Input {
        flags,
        mut rng,
        payload,
    } = Input::new(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let purpose = if flags & 1 != 0 {
        Purpose::Bearer
    } else {
        Purpose::Session
    };
    let text = String::from_utf8_lossy(payload);
    if let Ok(session) = keys.open(&text, purpose, now) {
        assert!(session.expires > 1_800_000_000);
    }

    // Seal and open.
    let user: String = text.chars().take(500).collect();
    let issued = rng.next() % 4_000_000_000;
    let session = Session {
        user,
        issued,
        expires: issued.saturating_add(rng.next() % 100_000),
    };
    let sealed = keys.seal(&session, purpose);
    assert!(
        sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let opened = keys.open(&sealed, purpose, now);
    if session.expires > 1_800_000_000 {
        assert_eq!(opened, Ok(session.clone()));
    } else {
        assert_eq!(opened, Err(CookieError::Expired));
    }
    let other_purpose = match purpose {
        Purpose::Session => Purpose::Bearer,
        Purpose::Bearer => Purpose::Session,
    };
    assert_eq!(
        keys.open(&sealed, other_purpose, now),
        Err(CookieError::Tampered)
    );
    let retired = CookieKeys::parse(OTHER).expect("keys");
    assert_eq!(
        retired.open(&sealed, purpose, now),
        Err(CookieError::UnknownKey)
    );
    // Change one character of the token.
    let mut altered = sealed.clone().into_bytes();
    let at = rng.below(altered.len() as u64) as usize;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let replacement = alphabet[rng.below(64) as usize];
    if altered[at] != replacement {
        altered[at] = replacement;
        let altered = String::from_utf8(altered).unwrap();
        // A change in the last character may only touch its unused low bits: base64 without
        // padding ignores them (the decoder refuses non-canonical ones); anything else fails.
        if let Ok(got) = keys.open(&altered, purpose, SystemTime::UNIX_EPOCH) {
            panic!("an altered token opened: {got:?}");
        }
    }
});

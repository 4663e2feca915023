//! OAuth access-token checks (`mailfront_oauth::token::check`): the payload as a token, and the
//! payload's two halves as a header and claims that the target signs itself with a fixed Ed25519
//! key, so that the claims path behind the signature is reached too. Invariants: no panic; an
//! accepted token names a clean, non-empty user and has the issuer, audience and scope asked
//! for; a header naming `none` or an HMAC algorithm is never accepted.
#![no_main]

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, assert_clean_name};
use mailfront_oauth::token::{ASYMMETRIC, Policy, UserClaim, check};

/// A throwaway Ed25519 key (PKCS#8), made for this target only.
const KEY: [u8; 48] = [
    48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32, 38, 140, 140, 37, 244, 249, 132, 119,
    233, 97, 254, 3, 241, 23, 30, 100, 198, 135, 35, 185, 106, 97, 78, 217, 175, 207, 102, 1, 186,
    174, 105, 36,
];
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"P-3gInvlUJPfum1SPi1X9czpkQIe4klcIGC2089uwU8"}]}"#;

fuzz_target!(|data: &[u8]| {
    let Input { flags, payload, .. } = Input::new(data);
    let keys: JwkSet = serde_json::from_str(JWKS).expect("the target's key set");
    let policy = Policy {
        issuer: "https://id.example".to_owned(),
        audiences: vec!["https://mail.example".to_owned()],
        algorithms: ASYMMETRIC.to_vec(),
        clock_skew: std::time::Duration::from_secs(60),
        user_claim: match flags % 3 {
            0 => UserClaim::Email,
            1 => UserClaim::PreferredUsername,
            _ => UserClaim::Sub,
        },
    };
    let scope = (flags & 4 != 0).then_some("imap");
    let accepted = |token: &[u8]| {
        if let Ok(accepted) = check(token, &keys, &policy, scope) {
            assert!(!accepted.user.is_empty());
            assert_clean_name(&accepted.user);
            if let Some(scope) = scope {
                assert!(accepted.scopes.iter().any(|s| s == scope));
            }
            true
        } else {
            false
        }
    };
    // The payload as a token: nothing signed by us, so nothing may pass.
    assert!(!accepted(payload), "an unsigned token was accepted");

    // The payload's halves as claims signed by the key the set holds.
    let half = payload.len() / 2;
    let (header_bytes, claims_bytes) = payload.split_at(half);
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(claims_bytes) else {
        return;
    };
    let mut header = Header::new(Algorithm::EdDSA);
    // The first half names the key (trimmed, so that a seed can pad it to the middle).
    header.kid = Some(String::from_utf8_lossy(header_bytes).trim().to_owned());
    let Ok(token) = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&KEY)) else {
        return;
    };
    if accepted(token.as_bytes()) {
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(claims["iss"], "https://id.example");
    }
});

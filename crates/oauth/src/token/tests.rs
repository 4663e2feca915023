//! Token checks over keys made here (ES256 and Ed25519 from rcgen), one case per refusal.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "https://mail.example.com";

struct Signer {
    kid: &'static str,
    algorithm: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn es256(kid: &'static str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // Uncompressed point: 0x04, x, y.
    let point = pair.public_key_raw();
    Signer {
        kid,
        algorithm: Algorithm::ES256,
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
    }
}

fn ed25519(kid: &'static str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        kid,
        algorithm: Algorithm::EdDSA,
        key: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw())}),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a1b2", "email": "alice@example.com",
           "email_verified": true, "scope": "openid email imap", "exp": now() + 300,
           "iat": now(), "jti": "t-1"})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(signer.algorithm);
    header.kid = Some(signer.kid.to_owned());
    encode(&header, claims, &signer.key).unwrap()
}

fn keys(signers: &[&Signer]) -> JwkSet {
    serde_json::from_value(
        json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}),
    )
    .unwrap()
}

fn policy() -> Policy {
    Policy {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        algorithms: ASYMMETRIC.to_vec(),
        clock_skew: Duration::from_secs(30),
        user_claim: UserClaim::Email,
    }
}

/// `header.claims.` with any header, and a signature that is not one.
fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(b"not a signature")
    )
}

#[test]
fn a_good_token_names_its_user() {
    let (ec, ed) = (es256("ec1"), ed25519("ed1"));
    let set = keys(&[&ec, &ed]);
    for signer in [&ec, &ed] {
        let accepted = check(
            sign(signer, &claims()).as_bytes(),
            &set,
            &policy(),
            Some("imap"),
        )
        .unwrap();
        assert_eq!(accepted.user, "alice@example.com");
        assert_eq!(accepted.scopes, ["openid", "email", "imap"]);
        assert_eq!(accepted.id.as_deref(), Some("t-1"));
    }
    // Audience as a list; the user by another claim; scope as `scp`.
    let mut other = claims();
    other["aud"] = json!(["https://other.example", AUDIENCE]);
    other["preferred_username"] = json!("alice");
    other.as_object_mut().unwrap().remove("scope");
    other["scp"] = json!(["pop3"]);
    let policy = Policy {
        user_claim: UserClaim::PreferredUsername,
        ..policy()
    };
    let accepted = check(sign(&ec, &other).as_bytes(), &set, &policy, Some("pop3")).unwrap();
    assert_eq!(accepted.user, "alice");
}

#[test]
fn every_refusal_has_its_reason() {
    let (ec, ed) = (es256("ec1"), ed25519("ed1"));
    let set = keys(&[&ec, &ed]);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        sign(&ec, &c)
    };
    let good = sign(&ec, &claims());
    // Another claims part under the same signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut changed = claims();
    changed["email"] = json!("mallory@example.com");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(changed.to_string().as_bytes()),
        parts[2]
    );
    let other_ec = es256("ec1");
    let ec_public_pem_like = ec.jwk.to_string();
    let hs256_with_public_key = encode(
        &Header {
            kid: Some("ec1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(),
        &EncodingKey::from_secret(ec_public_pem_like.as_bytes()).unwrap(),
    )
    .unwrap();
    let ed_as_es = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ed1".into());
        encode(&header, &claims(), &ec.key).unwrap()
    };
    let cases: Vec<(&str, String, Option<&str>, TokenError)> = vec![
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 60)),
            None,
            TokenError::Expired,
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now() + 600)),
            None,
            TokenError::NotYetValid,
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://other.example")),
            None,
            TokenError::WrongAudience,
        ),
        (
            "wrong issuer",
            with(&|c| c["iss"] = json!("https://evil.example")),
            None,
            TokenError::WrongIssuer,
        ),
        ("bad signature", tampered, None, TokenError::BadSignature),
        (
            "signed by another key with the same kid",
            sign(&other_ec, &claims()),
            None,
            TokenError::BadSignature,
        ),
        (
            "unknown kid",
            sign(&es256("rotated"), &claims()),
            None,
            TokenError::UnknownKey(Some("rotated".into())),
        ),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "ec1"}), &claims()),
            None,
            TokenError::Algorithm("none".into()),
        ),
        (
            "HS256 with the public key as secret",
            hs256_with_public_key,
            None,
            TokenError::Algorithm("HS256".into()),
        ),
        (
            "an EdDSA key for an ES256 token",
            ed_as_es,
            None,
            TokenError::KeyMismatch(Some("ed1".into())),
        ),
        (
            "scope not granted",
            good.clone(),
            Some("submission"),
            TokenError::MissingScope("submission".into()),
        ),
        (
            "email not verified",
            with(&|c| c["email_verified"] = json!(false)),
            None,
            TokenError::EmailNotVerified,
        ),
        (
            "no email",
            with(&|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
            None,
            TokenError::NoUser("email"),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            None,
            TokenError::MissingClaim("exp".into()),
        ),
        ("two parts", "a.b".into(), None, TokenError::Malformed),
        ("junk", "\u{0}\u{1}..".into(), None, TokenError::Malformed),
        (
            "header not JSON",
            format!("{}.e30.c2ln", b64(b"{alg")),
            None,
            TokenError::Malformed,
        ),
    ];
    for (name, token, scope, expected) in cases {
        assert_eq!(
            check(token.as_bytes(), &set, &policy(), scope),
            Err(expected),
            "{name}"
        );
    }
    // An algorithm not configured is refused even when the key would fit.
    let only_rsa = Policy {
        algorithms: vec![Algorithm::RS256],
        ..policy()
    };
    assert_eq!(
        check(good.as_bytes(), &set, &only_rsa, None),
        Err(TokenError::Algorithm("ES256".into()))
    );
    // HMAC stays refused even if someone configures it.
    let hmac = Policy {
        algorithms: vec![Algorithm::HS256],
        ..policy()
    };
    assert!(matches!(
        check(good.as_bytes(), &set, &hmac, None),
        Err(TokenError::Algorithm(_))
    ));
    // The clock skew: expired 10 s ago is still fine with 30 s of skew.
    let recent = with(&|c| c["exp"] = json!(now() - 10));
    assert!(check(recent.as_bytes(), &set, &policy(), None).is_ok());
}

#[test]
fn without_a_kid_only_a_single_key_is_used() {
    let ec = es256("ec1");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = None;
    let token = encode(&header, &claims(), &ec.key).unwrap();
    assert!(check(token.as_bytes(), &keys(&[&ec]), &policy(), None).is_ok());
    let ed = ed25519("ed1");
    assert_eq!(
        check(token.as_bytes(), &keys(&[&ec, &ed]), &policy(), None),
        Err(TokenError::UnknownKey(None))
    );
}

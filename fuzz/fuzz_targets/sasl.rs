//! SASL decoding (`mailfront_protocol::sasl`, `::bearer`): base64 responses, PLAIN messages,
//! OAUTHBEARER and XOAUTH2 messages, user names and a whole server-side exchange over arbitrary
//! response lines. Bearer messages: the user is a clean name, the token a non-empty b64token of
//! at most `MAX_TOKEN` bytes, and a message rebuilt from them reads the same. Round trips: base64
//! encode→decode, PLAIN encode→base64 decode→decode gives back the parts; names never hold a
//! control character; an exchange ends (Done, Cancelled, BadBase64 or Malformed) within three
//! responses and its credentials are clean.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_fuzz::{Input, assert_clean_name};
use mailfront_protocol::bearer::{MAX_TOKEN, decode_oauthbearer, decode_xoauth2};
use mailfront_protocol::sasl::{
    self, Exchange, Mechanism, Step, decode_base64, decode_plain, encode_base64, encode_plain,
};

fuzz_target!(|data: &[u8]| {
    let Input { flags, payload, .. } = Input::new(data);

    // Decoders on arbitrary bytes.
    if let Ok(decoded) = decode_base64(payload) {
        assert_eq!(
            decode_base64(encode_base64(&decoded).as_bytes()),
            Ok(decoded)
        );
    }
    if let Ok(name) = sasl::user_name(payload) {
        assert_clean_name(&name);
        assert_eq!(name.as_bytes(), payload);
    }
    if let Ok(plain) = decode_plain(payload) {
        assert_clean_name(&plain.authcid);
        assert!(!plain.authcid.is_empty());
        if let Some(authzid) = &plain.authzid {
            assert_clean_name(authzid);
        }
        // Round trip through the encoder the backend logins use.
        let encoded = encode_plain(
            plain.authzid.as_deref().unwrap_or(""),
            &plain.authcid,
            plain.password.expose(),
        );
        let again = decode_base64(encoded.expose().as_bytes()).expect("our base64");
        assert_eq!(again, payload);
        assert_eq!(decode_plain(&again).expect("our PLAIN"), plain);
    }

    // Bearer tokens.
    let clean_token = |token: &[u8]| {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN);
        assert!(
            token
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b))
        );
    };
    if let Ok(bearer) = decode_oauthbearer(payload) {
        clean_token(bearer.token.expose());
        if let Some(user) = &bearer.user {
            assert_clean_name(user);
        }
    }
    if let Ok(bearer) = decode_xoauth2(payload) {
        clean_token(bearer.token.expose());
        let user = bearer.user.clone().unwrap_or_default();
        assert_clean_name(&user);
        let mut again = format!("user={user}\x01auth=Bearer ").into_bytes();
        again.extend_from_slice(bearer.token.expose());
        again.extend_from_slice(b"\x01\x01");
        assert_eq!(decode_xoauth2(&again).expect("rebuilt XOAUTH2"), bearer);
    }

    // An exchange: the payload's lines are the client's responses.
    let mechanism = if flags & 1 != 0 {
        Mechanism::Login
    } else {
        Mechanism::Plain
    };
    let mut lines = payload.split(|&b| b == b'\n');
    let initial = if flags & 2 != 0 {
        lines.next().map(|l| decode_base64(l).unwrap_or_default())
    } else {
        None
    };
    let (mut exchange, mut step) = Exchange::start(mechanism, initial);
    let mut responses = 0;
    loop {
        match step {
            Step::Challenge(challenge) => {
                assert!(decode_base64(challenge.as_bytes()).is_ok() || challenge.is_empty());
                let Some(line) = lines.next() else { break };
                responses += 1;
                assert!(responses <= 2, "an exchange that does not end");
                step = exchange.respond(line);
            }
            Step::Done(credentials) => {
                assert_clean_name(&credentials.authcid);
                if let Some(authzid) = &credentials.authzid {
                    assert_clean_name(authzid);
                }
                assert_eq!(credentials.mechanism, mechanism.name());
                break;
            }
            Step::Cancelled | Step::BadBase64 | Step::Malformed => break,
        }
    }
});

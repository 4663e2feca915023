//! The users file of the file directory (`mailfront_directory::file::parse`) on arbitrary text.
//! Invariants: no panic; a valid file's user count and plaintext list are consistent; parsing
//! is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_directory::file::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(users) => {
            assert!(users.plaintext_passwords().len() <= users.len());
            assert_eq!(users.is_empty(), users.len() == 0);
            for address in users.plaintext_passwords() {
                assert_eq!(address, &address.to_ascii_lowercase());
                let _ = users.in_tenant(address.rsplit('@').next().unwrap_or_default());
            }
        }
        // toml 0.8 gives some syntax errors (control characters) an empty message.
        Err(message) => assert_eq!(parse(text).err(), Some(message)),
    }
});

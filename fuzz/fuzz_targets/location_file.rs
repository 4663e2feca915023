//! The location map file (`mailfront_location::file::parse`) on arbitrary text. Invariants: no
//! panic; parsing is deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfront_location::file::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(map) => assert_eq!(format!("{map:?}"), format!("{:?}", parse(text).unwrap())),
        // toml 0.8 gives some syntax errors (control characters) an empty message.
        Err(message) => assert_eq!(parse(text).err(), Some(message)),
    }
});

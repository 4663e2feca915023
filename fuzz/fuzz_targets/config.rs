//! The configuration loader without files (`mailfront::config::Config::parse_str`: TOML,
//! typed deserialisation, path resolution, validation) on arbitrary text. Invariants: no panic
//! and no hang; the outcome does not depend on anything but the text (parsing twice agrees);
//! a valid configuration's warnings can be computed, and it validates again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailfront::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/etc/mailfront");
    match Config::parse_str(text, base) {
        Ok(config) => {
            let _ = config.warnings();
            assert_eq!(config.validate(), Ok(()));
            assert!(Config::parse_str(text, base).is_ok());
        }
        Err(message) => {
            assert!(!message.is_empty());
            assert_eq!(Config::parse_str(text, base).err(), Some(message));
        }
    }
});

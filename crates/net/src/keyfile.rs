//! Files of shared secret keys: the HTTPS cookie keys and the TLS ticket keys have the same form,
//! shared by every node of an array, the newest (last) key sealing and every listed key opening.
//!
//! ```toml
//! [[key]]
//! id = 1
//! secret = "base64 of 32 random bytes"   # mailfront cookie-key --id 1 prints an entry
//! ```

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u32,
    secret: String,
}

/// One key of a key file.
pub struct SecretKey {
    /// Its id (travels with what it seals, so that the right key opens it).
    pub id: u32,
    /// The 32 secret bytes.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SecretKey").field("id", &self.id).finish()
    }
}

/// Parses a key file's text, oldest key first. Errors name the entry (`key[1].secret: …`) and
/// never the secret.
pub fn parse(text: &str) -> Result<Vec<SecretKey>, String> {
    let file: KeyFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    if file.key.is_empty() {
        return Err("key: the file lists no key".to_owned());
    }
    let mut keys: Vec<SecretKey> = Vec::with_capacity(file.key.len());
    for (i, entry) in file.key.iter().enumerate() {
        let bytes = STANDARD
            .decode(entry.secret.trim())
            .map_err(|_| format!("key[{i}].secret: not base64"))?;
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("key[{i}].secret: must be 32 bytes (is {})", bytes.len()))?;
        if keys.iter().any(|k| k.id == entry.id) {
            return Err(format!("key[{i}].id: id {} is listed twice", entry.id));
        }
        keys.push(SecretKey {
            id: entry.id,
            secret,
        });
    }
    Ok(keys)
}

/// Reads and parses a key file; errors name the file.
pub fn load(path: &Path) -> Result<Vec<SecretKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A new entry for a key file, with `id` and 32 random bytes.
pub fn generate_entry(id: u32) -> String {
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut secret[..]);
    format!(
        "[[key]]\nid = {id}\nsecret = \"{}\"\n",
        STANDARD.encode(secret)
    )
}

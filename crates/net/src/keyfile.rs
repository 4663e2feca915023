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
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
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

/// The keys of a key file as XChaCha20-Poly1305 ciphers: the newest (last) seals, every listed
/// one opens what names its id. Cookies and TLS tickets each put their own format around them.
pub struct Ciphers {
    keys: Vec<(u32, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for Ciphers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ids only, never the keys.
        f.debug_struct("Ciphers").field("ids", &self.ids()).finish()
    }
}

impl Ciphers {
    /// The ciphers of `keys`, in their order.
    pub fn new(keys: Vec<SecretKey>) -> Self {
        let keys = keys
            .into_iter()
            .map(|k| (k.id, XChaCha20Poly1305::new(Key::from_slice(&k.secret))))
            .collect();
        Self { keys }
    }

    /// Parses a key file's text ([`parse`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse(text).map(Self::new)
    }

    /// Reads and parses a key file ([`load`]).
    pub fn load(path: &Path) -> Result<Self, String> {
        load(path).map(Self::new)
    }

    /// The newest key: the one that seals.
    pub fn newest(&self) -> Option<(u32, &XChaCha20Poly1305)> {
        self.keys.last().map(|(id, cipher)| (*id, cipher))
    }

    /// The key with `id`, to open what it sealed.
    pub fn get(&self, id: u32) -> Option<&XChaCha20Poly1305> {
        self.keys
            .iter()
            .find(|(key_id, _)| *key_id == id)
            .map(|(_, cipher)| cipher)
    }

    /// The ids, oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }
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

//! The crypt(3) base64 alphabet, shared by the SHA-crypt and bcrypt parsers,
//! the SHA-crypt salts we make and the `{CRYPT}` format detection.

/// Alphabet of the crypt(3) base64 variant (used by SHA-crypt and bcrypt salts).
pub(crate) const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `c` is in the crypt(3) base64 alphabet (`[./0-9A-Za-z]`).
pub(crate) fn is_crypt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '/'
}

/// The position of `c` in [`CRYPT_ALPHABET`], if it is in it.
pub(crate) fn crypt_char_index(c: u8) -> Option<usize> {
    CRYPT_ALPHABET.iter().position(|&a| a == c)
}

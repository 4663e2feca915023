//! Random bytes for salts, from the operating system.

use rand::RngCore as _;
use rand::rngs::OsRng;

use crate::PasswordHashError;

/// `N` random bytes from the operating system's generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], PasswordHashError> {
    let mut buf = [0u8; N];
    OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|_| PasswordHashError::Random)?;
    Ok(buf)
}

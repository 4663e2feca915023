//! Mailbox and node versions, compared numerically.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dotted version such as `15`, `15.1` or `15.1.2` (missing parts are zero).
///
/// mailfront compares a mailbox's version with its own node's version to decide on legacy
/// redirects (docs/architecture.md, routing rule 2), so the order is numeric per part: `15.10 > 15.9`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

/// A version string that is not one to three dot-separated numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version `{0}` (expected one to three dot-separated numbers, like 15 or 15.1.2)")]
pub struct VersionError(pub String);

impl Version {
    /// Builds a version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError(s.to_owned());
        let mut parts = [0u32; 3];
        let mut count = 0;
        for (slot, part) in parts.iter_mut().zip(s.split('.')) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            *slot = part.parse().map_err(|_| err())?;
            count += 1;
        }
        if count == 0 || s.split('.').count() > 3 {
            return Err(err());
        }
        let [major, minor, patch] = parts;
        Ok(Version {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_numerically() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert_eq!(v("15"), Version::new(15, 0, 0));
        assert_eq!(v("15.1.2"), Version::new(15, 1, 2));
        assert!(v("15.10") > v("15.9"));
        assert!(v("8.3") < v("15"));
        for bad in ["", ".", "15.", "a", "1.2.3.4", "-1", "1..2", "99999999999"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} should not parse");
        }
    }
}

//! Groups: how users of a shared-storage fleet are put in "databases" of their own.
//!
//! A fleet whose backends share one mail store has no mailbox databases, but a user must still
//! be served by one backend at a time. mailfront puts each user in a group, `g<N>`, and treats
//! the group as a database everywhere (the location map, the session registry, failover).

use crate::DatabaseName;

/// The default number of groups.
pub const DEFAULT_GROUPS: u32 = 256;

/// The group of the user whose primary address is `address`: `g<N>`, N = FNV-1a (64-bit) of
/// the address in ASCII lowercase, modulo `groups`.
///
/// FNV-1a is fixed by its definition (offset basis 0xcbf29ce484222325, prime 0x100000001b3), so
/// every node, platform and version puts a user in the same group; a test pins known values.
/// Changing it, or `groups`, moves users: it is part of the on-disk contract.
pub fn group_of(address: &str, groups: u32) -> DatabaseName {
    DatabaseName::new(format!("g{}", group_index(address, groups)))
}

/// The "database" of a user pinned to a server (`mailfront admin pin`): `pin:<address>`, the
/// address in lowercase. A pin's record in the location store wins over the user's group.
pub fn pin_of(address: &str) -> DatabaseName {
    DatabaseName::new(format!("{PIN_PREFIX}{}", address.to_ascii_lowercase()))
}

/// The address a pin's database name is for (`None`: not a pin).
pub fn pinned_user(name: &DatabaseName) -> Option<&str> {
    name.as_str().strip_prefix(PIN_PREFIX)
}

const PIN_PREFIX: &str = "pin:";

/// The number N of [`group_of`]'s `g<N>`.
pub fn group_index(address: &str, groups: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in address.bytes().map(|b| b.to_ascii_lowercase()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // `groups` is validated ≥ 1 at load; 1 keeps a zero from dividing here anyway.
    u32::try_from(hash % u64::from(groups.max(1))).unwrap_or(0)
}

/// Every group name, `g0` … `g<groups-1>`.
pub fn all_groups(groups: u32) -> Vec<DatabaseName> {
    (0..groups)
        .map(|n| DatabaseName::new(format!("g{n}")))
        .collect()
}

/// The number of a group's name (`g17` → 17): `g` and a decimal number without leading zeros.
pub fn group_number(name: &DatabaseName) -> Option<u32> {
    name.as_str()
        .strip_prefix('g')
        .filter(|n| !n.starts_with('0') || *n == "0")
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
}

/// Whether `name` is a group's name with a number below `groups`.
pub fn is_group(name: &DatabaseName, groups: u32) -> bool {
    group_number(name).is_some_and(|n| n < groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_of_a_user_is_pinned_on_every_platform_and_ignores_case() {
        // FNV-1a 64: the empty string hashes to the offset basis; "a" to the published vector
        // 0xaf63dc4c8601ec8c (here reduced modulo a prime and 2^32 - 1).
        assert_eq!(
            u64::from(group_index("", u32::MAX)),
            0xcbf2_9ce4_8422_2325u64 % 4_294_967_295
        );
        assert_eq!(group_index("a", 1_000_003), 783_675);
        assert_eq!(group_index("a", u32::MAX), 895_863_001);
        let pinned = [
            ("alice@example.com", 256, "g70"),
            ("Alice@Example.COM", 256, "g70"),
            ("bob@example.com", 256, "g153"),
            ("user01@example.com", 256, "g216"),
            ("alice@example.com", 7, "g6"),
            ("anyone@example.com", 1, "g0"),
        ];
        for (address, groups, group) in pinned {
            assert_eq!(
                group_of(address, groups).as_str(),
                group,
                "{address} of {groups}"
            );
        }
    }

    #[test]
    fn group_names_are_recognised_exactly() {
        let table = [
            ("g0", true),
            ("g255", true),
            ("g256", false),
            ("g07", false),
            ("g", false),
            ("G1", false),
            ("DB01", false),
            ("g-1", false),
            ("g+1", false),
        ];
        for (name, is) in table {
            assert_eq!(is_group(&DatabaseName::new(name), 256), is, "{name}");
        }
    }
}

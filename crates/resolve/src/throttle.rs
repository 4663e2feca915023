//! Login throttling: failures from one client address (IPv6 grouped per /64) or against one user
//! name make the next failure slower, and past a threshold the address or name is blocked for a
//! while. The client never sees which: every refusal has the same reply; only its timing grows.
//! Successful logins are never slowed (they are not checked against the escalation), and
//! trusted networks are not throttled at all.
//!
//! Counting is per node. A block is what an array shares: when an address or a name becomes
//! blocked here, [`Throttle::failed`] also hands a [`Block`] to the publisher set with
//! [`Throttle::publish_blocks_to`] (the manager's `blocks` module writes it to etcd), and a block
//! another node published is applied here with [`Throttle::apply`] — same reply, same delay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use mailfront_model::Cidr;
use tokio::time::Instant;

/// Throttling settings (`[throttle]`).
#[derive(Clone, Debug)]
pub struct ThrottleSettings {
    /// Whether throttling applies at all.
    pub enabled: bool,
    /// The delay of the first failure; each further one doubles it, up to `max_delay`.
    pub base_delay: Duration,
    /// The longest delay of a refusal.
    pub max_delay: Duration,
    /// Failures from one address before it is blocked.
    pub block_after: u32,
    /// Failures against one user name (from anywhere) before it is blocked.
    pub block_user_after: u32,
    /// How long a block lasts.
    pub block_for: Duration,
    /// Failures are forgotten after this long without another.
    pub forget_after: Duration,
    /// Addresses that are never throttled (monitoring, trusted relays).
    pub trusted: Vec<Cidr>,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
            block_after: 10,
            block_user_after: 30,
            block_for: Duration::from_secs(600),
            forget_after: Duration::from_secs(900),
            trusted: Vec::new(),
        }
    }
}

/// What a failure counts against, and what a block blocks.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Key {
    /// An IPv4 address, or an IPv6 /64 (the unit a single customer usually holds).
    Address(u128),
    /// A lowercased user name.
    User(String),
}

impl Key {
    /// The key as a store key's last part: `a/<32 hex digits>` or `u/<name>` with every byte
    /// outside `[a-z0-9.@_-]` as `%XX` (a name is whatever a client typed).
    pub fn encode(&self) -> String {
        match self {
            Key::Address(bits) => format!("a/{bits:032x}"),
            Key::User(name) => {
                let mut out = String::from("u/");
                for byte in name.bytes() {
                    if byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || matches!(byte, b'.' | b'@' | b'_' | b'-')
                    {
                        out.push(char::from(byte));
                    } else {
                        out.push_str(&format!("%{byte:02X}"));
                    }
                }
                out
            }
        }
    }

    /// The key [`Key::encode`] made, or `None` for anything else.
    pub fn decode(text: &str) -> Option<Key> {
        if let Some(hex) = text.strip_prefix("a/") {
            if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            return u128::from_str_radix(hex, 16).ok().map(Key::Address);
        }
        let encoded = text.strip_prefix("u/")?;
        let mut bytes = Vec::with_capacity(encoded.len());
        let mut rest = encoded.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            if byte == b'%' {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = tail.get(2..)?;
            } else {
                bytes.push(byte);
                rest = tail;
            }
        }
        let name = String::from_utf8(bytes).ok()?;
        (!name.is_empty() && name == name.to_lowercase()).then_some(Key::User(name))
    }
}

/// The keys a failure from `ip` for `user` counts against: the address, and the name unless it
/// is empty (a token login whose client named nobody: the token's user is not known yet).
fn keys_of(ip: IpAddr, user: &str) -> Vec<Key> {
    let mut keys = vec![address_key(ip)];
    if !user.is_empty() {
        keys.push(Key::User(user.to_lowercase()));
    }
    keys
}

/// A block that began on this node, for the other nodes of the array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// What is blocked.
    pub key: Key,
    /// For how long from now (`block_for`).
    pub lasts: Duration,
}

/// The key failures from `ip` count against.
pub fn address_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::Address(u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Address(u128::from(u32::from(v4))),
            None => Key::Address((u128::from(v6) >> 64) << 64 | 1 << 63),
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// What throttling says before a login is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Check the credentials.
    Allowed,
    /// Refuse without checking (the address or the name is blocked).
    Blocked,
}

/// Most entries kept; beyond it, the stalest are forgotten first.
const MAX_ENTRIES: usize = 200_000;

/// The throttle of one node.
#[derive(Debug)]
pub struct Throttle {
    settings: ThrottleSettings,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Where blocks that begin here go (none: they stay on this node).
    publisher: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Block>>>,
}

impl Throttle {
    /// A throttle with these settings.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            settings,
            entries: Mutex::new(HashMap::new()),
            publisher: Mutex::new(None),
        }
    }

    /// Sends every block that begins on this node to `publisher` from now on.
    pub fn publish_blocks_to(&self, publisher: tokio::sync::mpsc::UnboundedSender<Block>) {
        *self
            .publisher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(publisher);
    }

    /// Applies a block another node published: `key` is blocked for `lasts` from now (or
    /// longer, if it already is). Trusted addresses stay exempt ([`Throttle::check`]).
    pub fn apply(&self, key: Key, lasts: Duration) {
        if !self.settings.enabled {
            return;
        }
        let now = Instant::now();
        let until = now + lasts;
        let mut entries = self.lock();
        let entry = entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        entry.blocked_until = Some(entry.blocked_until.map_or(until, |u| u.max(until)));
    }

    /// The settings in force.
    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    fn applies(&self, ip: IpAddr) -> bool {
        self.settings.enabled && !self.settings.trusted.iter().any(|c| c.contains(ip))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live(&self, entry: &Entry, now: Instant) -> bool {
        entry.blocked_until.is_some_and(|until| until > now)
            || now.duration_since(entry.last) < self.settings.forget_after
    }

    /// Whether a login from `ip` for `user` may be checked at all.
    pub fn check(&self, ip: IpAddr, user: &str) -> Verdict {
        if !self.applies(ip) {
            return Verdict::Allowed;
        }
        let now = Instant::now();
        let entries = self.lock();
        let blocked = keys_of(ip, user)
            .iter()
            .filter_map(|k| entries.get(k))
            .any(|e| e.blocked_until.is_some_and(|until| until > now));
        if blocked {
            Verdict::Blocked
        } else {
            Verdict::Allowed
        }
    }

    /// Records a failed login and returns how long its refusal must take (from the start of
    /// the attempt): the base delay, doubled for each earlier failure, up to the maximum; zero
    /// for a trusted address or with throttling off (the plain failure delay then applies).
    pub fn failed(&self, ip: IpAddr, user: &str) -> Duration {
        if !self.applies(ip) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| {
                e.blocked_until.is_some_and(|until| until > now)
                    || now.duration_since(e.last) < self.settings.forget_after / 4
            });
        }
        let mut worst = 0;
        let mut began = Vec::new();
        for key in keys_of(ip, user) {
            let limit = match key {
                Key::Address(_) => self.settings.block_after,
                Key::User(_) => self.settings.block_user_after,
            };
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            if now.duration_since(entry.last) >= self.settings.forget_after {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
            if entry.failures >= limit {
                let was_blocked = entry.blocked_until.is_some_and(|until| until > now);
                entry.blocked_until = Some(now + self.settings.block_for);
                if !was_blocked {
                    began.push(Block {
                        key: key.clone(),
                        lasts: self.settings.block_for,
                    });
                }
            }
            worst = worst.max(entry.failures);
        }
        drop(entries);
        if !began.is_empty()
            && let Some(publisher) = self
                .publisher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .as_ref()
        {
            for block in began {
                // A closed channel means the publisher is gone: the block stays local.
                let _ = publisher.send(block);
            }
        }
        self.delay_for(worst)
    }

    /// The delay of the `n`-th failure in a row (1-based).
    fn delay_for(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        self.settings
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.settings.max_delay)
            .max(self.settings.base_delay)
    }

    /// The delay a blocked attempt's refusal takes (the longest).
    pub fn blocked_delay(&self) -> Duration {
        self.settings.max_delay.max(self.settings.base_delay)
    }

    /// Records a successful login: the user name's failures are forgotten (the address's are
    /// not — one correct password on a shared address does not clear an attack from it).
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if !self.applies(ip) {
            return;
        }
        self.lock().remove(&Key::User(user.to_lowercase()));
    }

    /// How many addresses and names are being tracked (for tests and status).
    pub fn tracked(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|e| self.live(e, now)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ThrottleSettings {
        ThrottleSettings {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
            block_after: 5,
            block_user_after: 8,
            block_for: Duration::from_secs(60),
            forget_after: Duration::from_secs(120),
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            enabled: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn escalates_then_blocks_then_forgets() {
        let t = Throttle::new(settings());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let delays: Vec<u64> = (0..4).map(|_| t.failed(ip, "alice").as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 15]);
        assert_eq!(t.check(ip, "alice"), Verdict::Allowed);
        t.failed(ip, "mallory");
        assert_eq!(t.check(ip, "anyone"), Verdict::Blocked);
        // Another address is not blocked (alice has 4 failures, under her limit).
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.check(other, "alice"), Verdict::Allowed);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.check(ip, "anyone"), Verdict::Allowed);
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(t.failed(ip, "x").as_secs(), 2, "old failures are forgotten");
    }

    #[test]
    fn keys_survive_the_store_and_nothing_else_is_a_key() {
        let keys = [
            address_key("192.0.2.1".parse().unwrap()),
            address_key("2001:db8:0:1::5".parse().unwrap()),
            Key::User("alice@example.com".into()),
            Key::User("b\u{f6}b smith/%x\n".into()),
        ];
        for key in keys {
            let encoded = key.encode();
            // Printable, and one level under the prefix whatever the name holds.
            assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded}");
            assert!(!encoded[2..].contains('/'), "{encoded}");
            assert_eq!(Key::decode(&encoded), Some(key), "{encoded}");
        }
        assert_eq!(
            Key::User("a/b".into()).encode(),
            "u/a%2Fb",
            "no second level"
        );
        for junk in [
            "", "a/", "a/12", "u/", "u/%zz", "u/%4", "x/abc", "u/ALICE", "u/%FF",
        ] {
            assert_eq!(Key::decode(junk), None, "{junk:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_that_begins_here_is_published_once_and_one_from_elsewhere_applies() {
        let t = Throttle::new(settings());
        let (sender, mut published) = tokio::sync::mpsc::unbounded_channel();
        t.publish_blocks_to(sender);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..6 {
            t.failed(ip, &format!("user{i}"));
        }
        // The fifth failure blocked the address; the sixth did not begin a new block.
        assert_eq!(
            published.try_recv(),
            Ok(Block {
                key: address_key(ip),
                lasts: Duration::from_secs(60)
            })
        );
        assert!(published.try_recv().is_err());
        // Another node's block: refused here at once, with no failure of ours.
        let other = Throttle::new(settings());
        let remote: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(other.check(remote, "bob"), Verdict::Allowed);
        other.apply(address_key(remote), Duration::from_secs(30));
        other.apply(Key::User("carol".into()), Duration::from_secs(30));
        assert_eq!(other.check(remote, "bob"), Verdict::Blocked);
        assert_eq!(
            other.check("203.0.113.1".parse().unwrap(), "Carol"),
            Verdict::Blocked
        );
        // A trusted address stays exempt; the block ends when it says.
        other.apply(
            address_key("10.9.9.9".parse().unwrap()),
            Duration::from_secs(30),
        );
        assert_eq!(
            other.check("10.9.9.9".parse().unwrap(), "x"),
            Verdict::Allowed
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(other.check(remote, "bob"), Verdict::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn user_names_are_blocked_across_addresses() {
        let t = Throttle::new(settings());
        for i in 0..8u8 {
            t.failed(IpAddr::from([198, 51, 100, i]), "Alice@Example.com");
        }
        assert_eq!(
            t.check(IpAddr::from([203, 0, 113, 9]), "alice@example.com"),
            Verdict::Blocked
        );
        // A success elsewhere clears the name (not the addresses).
        t.succeeded(IpAddr::from([203, 0, 113, 9]), "alice@example.com");
        assert_eq!(
            t.check(IpAddr::from([203, 0, 113, 9]), "alice@example.com"),
            Verdict::Allowed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_is_grouped_per_64_and_trusted_networks_are_exempt() {
        let t = Throttle::new(settings());
        for i in 0..5u16 {
            t.failed(
                IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, i]),
                &format!("u{i}"),
            );
        }
        assert_eq!(
            t.check("2001:db8:0:1::ffff".parse().unwrap(), "x"),
            Verdict::Blocked
        );
        assert_eq!(
            t.check("2001:db8:0:2::1".parse().unwrap(), "x"),
            Verdict::Allowed
        );
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..20 {
            assert_eq!(t.failed(trusted, "y"), Duration::ZERO);
        }
        assert_eq!(t.check(trusted, "y"), Verdict::Allowed);
        // Disabled: nothing escalates.
        let off = Throttle::new(ThrottleSettings {
            enabled: false,
            ..settings()
        });
        for _ in 0..20 {
            off.failed("192.0.2.9".parse().unwrap(), "z");
        }
        assert_eq!(
            off.check("192.0.2.9".parse().unwrap(), "z"),
            Verdict::Allowed
        );
    }
}

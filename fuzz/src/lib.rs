//! Shared pieces of mailfront's fuzz targets: how a target reads its settings and its chunking
//! from the fuzz input, the drivers that run a state machine the way the session driver does,
//! and the invariants every target checks (see `fuzz/README.md`).
//!
//! Most targets take their input as `[flags][seed: 8 bytes][payload…]`: `flags` picks settings
//! (TLS mode, plaintext authentication, small or default limits…), `seed` drives a small PRNG
//! that decides the chunking of the payload and the driver's answers (authentication results,
//! recipient checks…), and the payload is the peer's byte stream, contiguous, so that mutations
//! and the seed corpus stay readable. Inputs shorter than the header are padded with zeros.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod front;
pub mod smtp;

/// The `[flags][seed][payload]` split described in the crate documentation.
pub struct Input<'a> {
    /// Setting bits.
    pub flags: u8,
    /// The PRNG for chunk sizes and answers.
    pub rng: Rng,
    /// The peer's bytes.
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits fuzz data.
    pub fn new(data: &'a [u8]) -> Self {
        let flags = data.first().copied().unwrap_or(0);
        let mut seed = [0u8; 8];
        for (i, b) in data.iter().skip(1).take(8).enumerate() {
            seed[i] = *b;
        }
        let payload = data.get(9..).unwrap_or_default();
        Input {
            flags,
            rng: Rng::new(u64::from_le_bytes(seed)),
            payload,
        }
    }
}

/// A tiny deterministic PRNG (SplitMix64): the same input always runs the same way.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    chunking: Chunking,
}

/// How a payload is cut into the pieces a driver feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// All at once.
    Whole,
    /// One byte at a time.
    Bytes,
    /// 1 to 8 bytes.
    Small,
    /// 1 to 300 bytes.
    Large,
}

impl Rng {
    /// A generator; the seed's low two bits choose the chunking.
    pub fn new(seed: u64) -> Self {
        let chunking = match seed & 3 {
            0 => Chunking::Whole,
            1 => Chunking::Bytes,
            2 => Chunking::Small,
            _ => Chunking::Large,
        };
        Rng {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            chunking,
        }
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// The size of the next piece of a payload with `left` bytes left (at least 1 if `left > 0`).
    pub fn chunk(&mut self, left: usize) -> usize {
        let size = match self.chunking {
            Chunking::Whole => left,
            Chunking::Bytes => 1,
            Chunking::Small => 1 + self.below(8) as usize,
            Chunking::Large => 1 + self.below(300) as usize,
        };
        size.min(left)
    }

    /// Cuts `bytes` into pieces.
    pub fn pieces<'b>(&mut self, bytes: &'b [u8]) -> Vec<&'b [u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = self.chunk(bytes.len() - at);
            out.push(&bytes[at..at + n]);
            at += n;
        }
        out
    }
}

/// Asserts that `bytes` are protocol lines: non-empty, UTF-8, every line ended by CRLF, no bare
/// CR or LF and no NUL (nothing a peer sent can split or end a reply line early).
pub fn assert_crlf_lines(bytes: &[u8]) {
    assert!(!bytes.is_empty(), "an empty send");
    assert!(
        std::str::from_utf8(bytes).is_ok(),
        "a reply that is not UTF-8: {bytes:?}"
    );
    assert!(
        bytes.ends_with(b"\r\n"),
        "a reply not ended by CRLF: {bytes:?}"
    );
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR in {bytes:?}"),
            b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF in {bytes:?}"),
            0 => panic!("NUL in a reply: {bytes:?}"),
            _ => {}
        }
    }
}

/// Asserts that a name that reaches a backend command or a log line has no control character.
pub fn assert_clean_name(name: &str) {
    assert!(
        !name.chars().any(char::is_control),
        "a control character in a name: {name:?}"
    );
}

/// The position of the first occurrence of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

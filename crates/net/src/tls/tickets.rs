//! TLS session tickets sealed with keys every node shares, so that a client resumes its TLS
//! session on whichever node of the array the load balancer picks (the seeds' "same certificate
//! on every CAS" idea, applied to resumption). Without shared keys each node resumes only its
//! own sessions.
//!
//! A ticket is `id (4 bytes, big-endian) ‖ nonce (24) ‖ XChaCha20-Poly1305(state)`, the id and a
//! label authenticated as associated data. The newest key seals; every key of the file opens, so
//! keys rotate like the cookie keys: add a new key on every node, reload, and remove the old one
//! after a ticket lifetime.

use std::path::Path;

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};
use rustls::server::ProducesTickets;

use crate::keyfile;

/// Authenticated with every ticket, so that a ticket is never mistaken for another sealed thing.
const LABEL: &[u8] = b"mailfront tls ticket v1";
const NONCE_LEN: usize = 24;
/// The lifetime clients are told; keys, not this hint, bound how long a ticket opens.
const LIFETIME_SECONDS: u32 = 6 * 60 * 60;

/// Seals and opens tickets with the keys of a key file.
#[derive(Debug)]
pub struct SharedTickets {
    keys: keyfile::Ciphers,
}

impl SharedTickets {
    /// The tickets of the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        Ok(Self {
            keys: keyfile::Ciphers::load(path)?,
        })
    }

    fn aad(id: u32) -> Vec<u8> {
        [LABEL, &id.to_be_bytes()].concat()
    }
}

impl ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECONDS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, cipher) = self.keys.newest()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut nonce[..]);
        let aad = Self::aad(id);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .ok()?;
        Some([&id.to_be_bytes()[..], &nonce, &sealed].concat())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let id = u32::from_be_bytes(ticket.get(..4)?.try_into().ok()?);
        let nonce = ticket.get(4..4 + NONCE_LEN)?;
        let sealed = ticket.get(4 + NONCE_LEN..)?;
        let cipher = self.keys.get(id)?;
        let aad = Self::aad(id);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickets(ids: &[u32]) -> SharedTickets {
        let text: String = ids.iter().map(|id| keyfile::generate_entry(*id)).collect();
        from_text(&text)
    }

    fn from_text(text: &str) -> SharedTickets {
        SharedTickets {
            keys: keyfile::Ciphers::parse(text).unwrap(),
        }
    }

    #[test]
    fn a_ticket_opens_with_the_same_keys_and_not_otherwise() {
        let node_a = tickets(&[1]);
        let ticket = node_a.encrypt(b"session state").unwrap();
        assert_eq!(
            node_a.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        // Another node with the same file: the same keys.
        let text = keyfile::generate_entry(1);
        let (one, two) = (from_text(&text), from_text(&text));
        assert!(two.decrypt(&one.encrypt(b"x").unwrap()).is_some());
        // A node with other keys (same id) opens nothing.
        assert_eq!(tickets(&[1]).decrypt(&ticket), None);
    }

    #[test]
    fn tampered_short_and_unknown_tickets_open_to_nothing() {
        let node = tickets(&[1]);
        let ticket = node.encrypt(b"state").unwrap();
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert_eq!(node.decrypt(&bad), None, "byte {i} flipped");
        }
        for len in 0..ticket.len() {
            assert_eq!(node.decrypt(&ticket[..len]), None, "cut at {len}");
        }
    }

    #[test]
    fn keys_rotate_the_newest_seals_and_the_older_still_opens() {
        let text_old = keyfile::generate_entry(1);
        let text_new = format!("{text_old}{}", keyfile::generate_entry(2));
        let before = from_text(&text_old);
        let after = from_text(&text_new);
        let old_ticket = before.encrypt(b"old").unwrap();
        assert_eq!(after.decrypt(&old_ticket).as_deref(), Some(&b"old"[..]));
        let new_ticket = after.encrypt(b"new").unwrap();
        assert_eq!(&new_ticket[..4], &2u32.to_be_bytes());
        assert_eq!(before.decrypt(&new_ticket), None);
    }
}
